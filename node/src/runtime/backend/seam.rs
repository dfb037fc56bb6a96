//! The seam between the driver and a backend: what the driver asks of the standalone
//! backend, the Kubernetes backend, and the in-memory one its tests use.
//!
//! A backend tells the driver about this cluster's exports and about local
//! leadership ([`BackendEvent`]), and takes the imports to write. It never blocks the
//! driver: slow IO (an API server) runs in the backend's own tasks.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::ServiceKey;
use tokio::sync::mpsc;
use tracing::warn;

use super::desired::ExportInvalid;
use super::standalone::{ExportChange, StandaloneBackend};
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

/// The standalone backend behind the seam: `in/` is watched for changes and read
/// again in full every [`RESYNC_PERIOD`]; output is written synchronously.
#[derive(Debug)]
pub struct Standalone {
    inner: StandaloneBackend,
    changed: mpsc::Receiver<()>,
    resync: tokio::time::Interval,
    scanned: bool,
    errors: BTreeMap<&'static str, u64>,
}

impl Standalone {
    /// Wraps `inner`, watching `dir` every `poll_ms`. Must be called inside a runtime.
    pub fn new(inner: StandaloneBackend, dir: std::path::PathBuf, poll_ms: u64) -> Self {
        let mut resync = tokio::time::interval(RESYNC_PERIOD);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            inner,
            changed: super::standalone::watch(dir, poll_ms),
            resync,
            scanned: false,
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, label: &'static str, error: &dyn std::fmt::Display) {
        warn!(%error, "standalone backend");
        *self.errors.entry(label).or_default() += 1;
    }

    fn scan(&mut self) -> Vec<ExportChange> {
        match self.inner.scan(wall_clock_ms()) {
            Ok(changes) => {
                self.scanned = true;
                changes
            }
            Err(e) => {
                self.error(e.metric_label(), &e);
                Vec::new()
            }
        }
    }
}

fn wall_clock_ms() -> u64 {
    #[allow(clippy::disallowed_methods)] // exports without a creation time are as old as now
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Backend for Standalone {
    async fn next_event(&mut self) -> BackendEvent {
        tokio::select! {
            Some(()) = self.changed.recv() => BackendEvent::Exports(self.scan()),
            _ = self.resync.tick() => {
                let changes = self.scan();
                if changes.is_empty() { BackendEvent::Resync } else { BackendEvent::Exports(changes) }
            }
        }
    }

    fn exports(&self) -> Option<&ExportSet> {
        self.scanned.then(|| self.inner.exports())
    }

    fn apply_imports(&mut self, update: ImportsUpdate<'_>) {
        if let Err(e) = self.inner.apply_imports(update.changes) {
            self.error(e.metric_label(), &e);
        } else if let Err(e) = self.inner.write_export_status(update.all) {
            self.error(e.metric_label(), &e);
        }
    }

    fn resync_imports(&mut self, update: ImportsUpdate<'_>) {
        if let Err(e) = self.inner.sync_all(update.all) {
            self.error(e.metric_label(), &e);
        }
    }

    /// Files have no leases: nothing to mirror.
    fn mirror_leases(&mut self, _leases: &[LeaseSeen]) {}

    fn counters(&self) -> BackendCounters {
        let stats = self.inner.stats();
        let mut out: BackendCounters = vec![
            (("scans", "standalone"), stats.scans),
            (("files_written", "standalone"), stats.files_written),
            (("files_removed", "standalone"), stats.files_removed),
            (("files_unchanged", "standalone"), stats.files_unchanged),
        ];
        out.extend(stats.invalid.iter().map(|(r, n)| (("skipped", *r), *n)));
        out.extend(self.errors.iter().map(|(r, n)| (("errors", *r), *n)));
        out
    }

    async fn shutdown(&mut self) {}
}
