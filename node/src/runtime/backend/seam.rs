//! The seam between the driver and a backend: what the driver asks of the standalone
//! backend, the Kubernetes backend, and the in-memory one its tests use.
//!
//! A backend tells the driver about this cluster's exports and about local
//! leadership ([`BackendEvent`]), and takes the imports to write. It never blocks the
//! driver: slow IO (an API server, a directory of files) runs in the backend's own
//! tasks.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::ServiceKey;

use super::desired::ExportInvalid;
use super::standalone::ExportChange;
use crate::core::{ExportSpec, ImportChange, ImportedService};

/// This cluster's exports: each ServiceExport, valid or why not.
pub type ExportSet = BTreeMap<ServiceKey, Result<ExportSpec, ExportInvalid>>;
/// Every import of this cluster.
pub type Imports = BTreeMap<ServiceKey, Arc<ImportedService>>;

/// How often the whole export set is fed again and the whole output rewritten
/// (level-triggered), whatever changed.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(30);

/// What a backend tells the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendEvent {
    /// This cluster's exports changed: these are the changes since the last event.
    Exports(Vec<ExportChange>),
    /// Time for a full resync: feed every export again and rewrite every import.
    Resync,
    /// This replica became (`true`) or stopped being (`false`) its cluster's local
    /// leader, the one replica that publishes and writes.
    Leadership(bool),
    /// The backend cannot go on (for example, the cluster names itself differently
    /// from the configuration). The driver stops.
    Fatal(String),
}

/// The imports to write, and whether they are complete enough to delete by.
#[derive(Clone, Copy, Debug)]
pub struct ImportsUpdate<'a> {
    pub all: &'a Imports,
    /// The imports that changed (empty for a full resync).
    pub changes: &'a [ImportChange],
    /// Whether the view may be trusted to be complete: imports it lacks may be deleted.
    pub settled: bool,
}

/// One quorum lease as this node sees it, to mirror into the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSeen {
    pub name: String,
    pub holder: Option<String>,
    pub token: Option<u64>,
    pub lease_ms: u64,
}

/// Counters a backend keeps, by (name, label), for `/metrics` as
/// `shoal_backend_<name>_total{label}`.
pub type BackendCounters = Vec<((&'static str, &'static str), u64)>;

/// What the driver needs of a backend.
pub trait Backend: Send {
    /// Waits for the next event. Cancel-safe: the driver calls it inside `select!`.
    fn next_event(&mut self) -> impl Future<Output = BackendEvent> + Send;

    /// This cluster's exports, valid or not; `None` until the source has read them in
    /// full (a cold cache publishes nothing and unexports nothing).
    fn exports(&self) -> Option<&ExportSet>;

    /// Writes the imports that changed (and what follows from them, such as the
    /// exports' status).
    fn apply_imports(&mut self, update: ImportsUpdate<'_>);

    /// Writes every import, and removes what no import explains (if `settled`).
    fn resync_imports(&mut self, update: ImportsUpdate<'_>);

    /// Mirrors the quorum leases this node knows of.
    fn mirror_leases(&mut self, leases: &[LeaseSeen]);

    fn counters(&self) -> BackendCounters;

    /// Lets go of what the backend holds (the local leader Lease), before exit.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}

/// The changes from `before` (nothing, before the first snapshot) to `after`: valid
/// exports that are new or different, and previously valid ones now gone or invalid.
pub fn export_changes(before: Option<&ExportSet>, after: &ExportSet) -> Vec<ExportChange> {
    let empty = ExportSet::new();
    let before = before.unwrap_or(&empty);
    let keys: std::collections::BTreeSet<&ServiceKey> = before.keys().chain(after.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let was = before.get(key).and_then(|r| r.as_ref().ok());
        let is = after.get(key).and_then(|r| r.as_ref().ok());
        match (was, is) {
            (Some(a), Some(b)) if a == b => {}
            (_, Some(spec)) => changes.push(ExportChange::Export(spec.clone())),
            (Some(_), None) => changes.push(ExportChange::Unexport(key.clone())),
            (None, None) => {}
        }
    }
    changes
}
