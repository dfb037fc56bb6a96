//! The Kubernetes backend: exports read from, and imports written to, this cluster's
//! API server (kube-rs).
//!
//! - `source`: watches ServiceExports, Services and EndpointSlices and derives this
//!   cluster's exports; nothing is published before the initial lists complete.
//! - `sink`: writes ServiceImports, derived Services and EndpointSlices by server-side
//!   apply, the exports' status, and the mirrored quorum leases; deletes what it owns
//!   and no longer wants. Only the local leader writes.
//! - `leader`: the local leader election between the replicas of one cluster.
//! - `about`: the About API's ClusterProperties (cluster id, ClusterSet).
//! - `resources`: the custom resources made known to kube.
//! - `errors`: what an API error means, and the jittered backoff.
//!
//! Each runs as its own task; [`KubernetesBackend`] is the driver's side of them, and
//! never waits on the API server.
//!
//! **Architecture invariant:** the API server failing is not the cluster dying. While
//! it cannot be reached, the source keeps its last complete view (so the published
//! records stand), the sink keeps what it wrote, and nothing is deleted because of an
//! error.

pub mod about;
pub mod errors;
pub mod leader;
pub mod resources;
pub mod sink;
pub mod source;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use shoal_proto::{ClusterId, NetworkMode};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use self::errors::{Backoff, ErrorClass, classify};
use self::leader::{Elector, LeaderTiming};
use self::resources::McsVersion;
use self::sink::{Apis, SinkInput};
use self::source::ExportSnapshot;
use self::stats::KubeStats;
use super::objects::ServiceExport;
use super::seam::{
    Backend, BackendCounters, BackendEvent, ExportSet, ImportsUpdate, LeaseSeen, RESYNC_PERIOD,
    export_changes,
};
use super::standalone::ExportChange;

/// The name of the Lease the replicas of a cluster elect their leader with.
pub const LEADER_LEASE: &str = "shoal-leader";

/// How to reach the API server and what to call things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSettings {
    /// A kubeconfig file; `None` with no context: in-cluster configuration.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Shoal's own namespace: the leader Lease and the mirrored quorum leases.
    pub namespace: String,
    /// This replica's leader-election identity (its pod name).
    pub identity: String,
    pub leader: LeaderTiming,
    pub cluster: ClusterId,
    /// The ClusterSet's name, for the About API.
    pub clusterset: String,
    pub network: NetworkMode,
}

/// Why the backend could not start. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    #[error("Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

impl KubeError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            KubeError::Kubeconfig { .. } => "kubeconfig",
            KubeError::Config(_) => "config",
            KubeError::Client(_) => "client",
        }
    }
}

/// A client for `settings`: the kubeconfig and context given, or in-cluster.
pub async fn client(settings: &KubeSettings) -> Result<Client, KubeError> {
    let config = match (&settings.kubeconfig, &settings.context) {
        (None, None) => Config::incluster().map_err(|e| KubeError::Config(e.to_string()))?,
        (path, context) => {
            let options = KubeConfigOptions {
                context: context.clone(),
                ..KubeConfigOptions::default()
            };
            let kubeconfig = match path {
                Some(path) => {
                    Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                None => Kubeconfig::read().map_err(|source| KubeError::Kubeconfig {
                    path: "$KUBECONFIG".to_owned(),
                    source,
                })?,
            };
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path
                        .as_ref()
                        .map_or_else(|| "$KUBECONFIG".to_owned(), |p| p.display().to_string()),
                    source,
                })?
        }
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// The MCS API version the cluster serves: `v1beta1`, else `v1alpha1`.
async fn mcs_version(client: &Client) -> Result<McsVersion, kube::Error> {
    let lp = ListParams::default().limit(1);
    let mut last = None;
    for version in [McsVersion::V1beta1, McsVersion::V1alpha1] {
        let api: Api<ServiceExport> = Api::all_with(client.clone(), &version);
        match api.list(&lp).await {
            Ok(_) => return Ok(version),
            Err(e) if classify(&e) == ErrorClass::NotFound => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("both versions were tried"))
}

/// The driver's side of the Kubernetes backend's tasks.
pub struct KubernetesBackend {
    exports_rx: watch::Receiver<Option<Arc<ExportSnapshot>>>,
    /// The latest snapshot's exports, as the seam hands them to the driver.
    current: Option<ExportSet>,
    /// The source's snapshot `current` was made from.
    snapshot: Option<Arc<ExportSnapshot>>,
    leading_rx: watch::Receiver<bool>,
    leading: bool,
    /// The source's and the elector's channels closed (their tasks ended).
    source_gone: bool,
    elector_gone: bool,
    sink_tx: watch::Sender<SinkInput>,
    fatal_rx: mpsc::Receiver<String>,
    stop_tx: watch::Sender<bool>,
    resync: tokio::time::Interval,
    stats: Arc<KubeStats>,
    leader_task: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("leading", &self.leading)
            .field("exports", &self.current.as_ref().map(BTreeMap::len))
            .finish_non_exhaustive()
    }
}

impl KubernetesBackend {
    /// Starts the backend's tasks. Returns at once: the About API check, the MCS
    /// version discovery and the watches retry in the background until the API server
    /// answers, so a node whose API server is down still takes part in the mesh.
    pub fn start(settings: KubeSettings, client: Client) -> Self {
        let stats = Arc::new(KubeStats::default());
        let (exports_tx, exports_rx) = watch::channel(None);
        let (leading_tx, leading_rx) = watch::channel(false);
        let (sink_tx, sink_rx) = watch::channel(SinkInput::default());
        let (fatal_tx, fatal_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let elector = Elector::new(settings.identity.clone(), settings.leader);
        let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
        #[allow(clippy::disallowed_methods)] // the backend's tasks are runtime tasks
        let leader_task = tokio::spawn(leader::run(
            leases,
            settings.namespace.clone(),
            LEADER_LEASE.to_owned(),
            elector,
            leading_tx,
            stop_rx,
        ));
        #[allow(clippy::disallowed_methods)]
        let start = tokio::spawn(start_watches(
            settings,
            client,
            exports_tx,
            exports_rx.clone(),
            sink_rx,
            fatal_tx,
            Arc::clone(&stats),
        ));
        let mut resync = tokio::time::interval(RESYNC_PERIOD);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            exports_rx,
            current: None,
            snapshot: None,
            leading_rx,
            leading: false,
            source_gone: false,
            elector_gone: false,
            sink_tx,
            fatal_rx,
            stop_tx,
            resync,
            stats,
            leader_task: Some(leader_task),
            tasks: vec![start],
        }
    }

    pub fn stats(&self) -> &KubeStats {
        &self.stats
    }

    /// Takes the latest export snapshot and returns the changes from the last one. The
    /// source shares an unchanged export's `Arc` between snapshots, so only the
    /// exports that changed are compared and copied: the driver's cost follows the
    /// change, not the number of exports.
    fn take_snapshot(&mut self) -> Vec<ExportChange> {
        let Some(snapshot) = self.exports_rx.borrow_and_update().clone() else {
            return Vec::new();
        };
        let previous = self.snapshot.replace(Arc::clone(&snapshot));
        let empty = ExportSnapshot::new();
        let previous = previous.as_deref().unwrap_or(&empty);
        let mut before = ExportSet::new();
        let mut after = ExportSet::new();
        for (key, export) in snapshot.iter() {
            let old = previous.get(key);
            if old.is_some_and(|old| Arc::ptr_eq(old, export)) {
                continue;
            }
            if let Some(old) = old {
                before.insert(key.clone(), old.spec.clone());
            }
            after.insert(key.clone(), export.spec.clone());
        }
        for (key, old) in previous.iter().filter(|(k, _)| !snapshot.contains_key(*k)) {
            before.insert(key.clone(), old.spec.clone());
        }
        let changes = export_changes(Some(&before), &after);
        let current = self.current.get_or_insert_with(ExportSet::new);
        for key in before.keys().filter(|k| !after.contains_key(*k)) {
            current.remove(key);
        }
        current.extend(after);
        changes
    }

    fn send_imports(&mut self, update: ImportsUpdate<'_>) {
        let leader = self.leading;
        self.sink_tx.send_modify(|input| {
            input.leader = leader;
            input.imports = Arc::new(update.all.clone());
            input.settled = update.settled;
        });
    }
}

/// Discovers the MCS version and checks the About API, retrying what may pass, then
/// runs the source and the sink.
async fn start_watches(
    settings: KubeSettings,
    client: Client,
    exports_tx: watch::Sender<Option<Arc<ExportSnapshot>>>,
    exports_rx: watch::Receiver<Option<Arc<ExportSnapshot>>>,
    sink_rx: watch::Receiver<SinkInput>,
    fatal: mpsc::Sender<String>,
    stats: Arc<KubeStats>,
) {
    let mut backoff = Backoff::default();
    let version = loop {
        match mcs_version(&client).await {
            Ok(version) => break version,
            Err(e) => {
                let class = classify(&e);
                stats.count("start_errors", class.metric_label());
                if class == ErrorClass::NotFound {
                    let message = "the MCS CRDs are not installed: kubectl apply -f deploy/crds/";
                    let _ = fatal.send(message.to_owned()).await;
                    return;
                }
                warn!(error = %e, "cannot reach the API server; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    info!(version = version.as_str(), "MCS API found");
    backoff.reset();
    loop {
        match about::check(&client, settings.cluster.as_str(), &settings.clusterset).await {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                warn!(error = %e, "About API check failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                let _ = fatal.send(e.to_string()).await;
                return;
            }
        }
    }
    let apis = Apis {
        client: client.clone(),
        version,
        namespace: settings.namespace.clone(),
    };
    #[allow(clippy::disallowed_methods)]
    let sink = tokio::spawn(sink::run(
        apis,
        settings.cluster.clone(),
        sink_rx,
        exports_rx,
        Arc::clone(&stats),
    ));
    source::run(client, version, settings.network, exports_tx, stats).await;
    sink.abort();
}

impl Backend for KubernetesBackend {
    async fn next_event(&mut self) -> BackendEvent {
        loop {
            tokio::select! {
                changed = self.exports_rx.changed(), if !self.source_gone => {
                    if changed.is_err() {
                        // The source stopped: only a fatal error, reported next, does that.
                        self.source_gone = true;
                        continue;
                    }
                    let changes = self.take_snapshot();
                    if !changes.is_empty() {
                        return BackendEvent::Exports(changes);
                    }
                }
                changed = self.leading_rx.changed(), if !self.elector_gone => {
                    if changed.is_err() {
                        self.elector_gone = true;
                        continue;
                    }
                    let leads = *self.leading_rx.borrow_and_update();
                    if leads != self.leading {
                        self.leading = leads;
                        self.sink_tx.send_modify(|input| input.leader = leads);
                        return BackendEvent::Leadership(leads);
                    }
                }
                Some(message) = self.fatal_rx.recv() => return BackendEvent::Fatal(message),
                _ = self.resync.tick() => return BackendEvent::Resync,
            }
        }
    }

    fn exports(&self) -> Option<&ExportSet> {
        self.current.as_ref()
    }

    fn apply_imports(&mut self, update: ImportsUpdate<'_>) {
        self.send_imports(update);
    }

    fn resync_imports(&mut self, update: ImportsUpdate<'_>) {
        self.send_imports(update);
    }

    fn mirror_leases(&mut self, leases: &[LeaseSeen]) {
        self.sink_tx.send_if_modified(|input| {
            if input.leases == leases {
                return false;
            }
            input.leases = leases.to_vec();
            true
        });
    }

    fn counters(&self) -> BackendCounters {
        self.stats.snapshot()
    }

    async fn shutdown(&mut self) {
        let _ = self.stop_tx.send(true);
        if let Some(task) = self.leader_task.take() {
            // The leader releases its Lease; bounded, so a dead API server cannot hold
            // the exit up.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for KubernetesBackend {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if let Some(task) = self.leader_task.take() {
            task.abort();
        }
    }
}

/// Runs CPU-bound `work` (a plan or a refresh over thousands of exports) so that it holds up no
/// other task: on the multi-threaded runtime the worker hands its queued tasks (the
/// driver's among them) to another thread first. A single-threaded runtime (a test's)
/// runs it in place.
pub(crate) fn off_worker<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}
