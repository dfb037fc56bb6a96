//! The driver: one task that owns the core [`Node`] and feeds it, one input at a time,
//! from the transport, its timer, the backend and the API, then carries out the
//! commands that come out, in order.
//!
//! **Architecture invariant:** a `Persist` command is written (and flushed when it
//! asks) before any later command runs, so nothing is sent that is not stored. A store
//! that fails to write stops the driver: a node that cannot persist must not speak.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foca::State;
use shoal_proto::{ClusterId, LeaseName, MemberId, ServiceKey};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::api::{
    ApiError, ApiRequest, ImportView, LeaseOp, LeaseView, MetricsSnapshot, PeerMetrics, PeerView,
    ServiceView, StatusView,
};
use super::backend::{ExportChange, StandaloneBackend};
use super::certs::ClusterIdentity;
use super::config::RuntimeConfig;
use super::store::Store;
use super::transport::{Inbound, Transport};
use crate::core::{
    Command, Event, ExportSpec, ImportedService, LeaseError, LeaseRequest, Liveness, Node,
    PersistedState, Time,
};

/// How often the whole desired export set is fed again (level-triggered), and the
/// whole output directory rewritten from the imports, whatever changed.
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// Upper bounds of the propagation-lag histogram, in seconds.
pub const LAG_BUCKETS_SECONDS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Why the driver stopped. The process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store could not write: state past the failed write was not acted upon.
    #[error("store: {0}")]
    Store(#[from] super::store::StoreError),
    /// The core refused its configuration or key. Nothing started.
    #[error("core: {0}")]
    Core(#[from] crate::core::ConfigError),
    #[error("backend: {0}")]
    Backend(#[from] super::backend::BackendError),
}

impl DriverError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            DriverError::Store(_) => "store",
            DriverError::Core(_) => "core",
            DriverError::Backend(_) => "backend",
        }
    }
}

/// Counters the driver keeps beside the core's.
#[derive(Debug, Default)]
struct DriverStats {
    lag_buckets: [u64; LAG_BUCKETS_SECONDS.len()],
    lag_sum_seconds: f64,
    lag_count: u64,
    lag_last_seconds: Option<f64>,
    backend_errors: u64,
    exports_refused: u64,
}

/// Everything the driver owns.
pub struct Driver {
    node: Node,
    store: Store,
    transport: Transport,
    transport_rx: mpsc::Receiver<Inbound>,
    backend: StandaloneBackend,
    config: RuntimeConfig,
    started: Instant,
    timer: Option<Time>,
    /// The last address each member was reached at, for sends the core leaves open.
    addrs: BTreeMap<MemberId, SocketAddr>,
    /// Leases this node asked for and keeps renewing.
    wanted: BTreeSet<LeaseName>,
    stats: DriverStats,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A seed for the core's RNG: it needs variety between processes, not secrecy.
fn rng_seed(identity: &ClusterIdentity, replica: u16) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut seed = nanos ^ u64::from(std::process::id()).rotate_left(32) ^ u64::from(replica);
    for b in identity.cluster.as_str().bytes() {
        seed = seed.rotate_left(5) ^ u64::from(b);
    }
    seed
}

impl Driver {
    /// Opens the store, starts the core from it, and binds nothing: the transport is
    /// passed in already bound.
    pub fn start(
        config: RuntimeConfig,
        identity: Arc<ClusterIdentity>,
        transport: Transport,
        transport_rx: mpsc::Receiver<Inbound>,
    ) -> Result<Self, DriverError> {
        let (store, stored, report) = Store::open(&config.data_dir.join("store"))?;
        info!(
            records = report.records,
            undecodable = report.undecodable,
            own_version = stored.own_version,
            generation = stored.generation,
            "store opened"
        );
        let backend = StandaloneBackend::open(
            &config.backend_dir(),
            identity.cluster.clone(),
            config.network,
        )?;
        let persisted = PersistedState {
            wall_clock_ms: wall_clock_ms(),
            ..stored.clone()
        };
        let started = Instant::now();
        let node = Node::new(
            config.core.clone(),
            identity.signing_key.clone(),
            identity.trust.clone(),
            Time::ZERO,
            rng_seed(&identity, config.replica.0),
            persisted,
        )?;
        let mut driver = Driver {
            node,
            store,
            transport,
            transport_rx,
            backend,
            config,
            started,
            timer: None,
            addrs: BTreeMap::new(),
            wanted: BTreeSet::new(),
            stats: DriverStats::default(),
        };
        driver.drop_unverified(&stored)?;
        for seed in &driver.config.core.seeds {
            driver.addrs.insert(seed.member.clone(), seed.addr.into());
        }
        // Feed the current exports, and make out/ match the restored imports.
        driver.poll_backend(true);
        driver.carry_out()?;
        Ok(driver)
    }

    /// Deletes from the store what the core dropped at start (it failed verification).
    fn drop_unverified(&mut self, stored: &PersistedState) -> Result<(), DriverError> {
        let mut dropped = 0u64;
        for ((origin, service), record) in &stored.records {
            let held = self.node.record(origin, service);
            if held.is_none_or(|h| h.record.version != record.record.version) {
                self.store.remove_record(origin, service)?;
                dropped += 1;
            }
        }
        if dropped > 0 {
            warn!(
                dropped,
                "stored records failed verification and were deleted"
            );
        }
        Ok(())
    }

    fn now(&self) -> Time {
        Time::from_micros(u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// Runs until `shutdown` resolves or the store fails.
    pub async fn run(
        mut self,
        mut api: mpsc::Receiver<ApiRequest>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DriverError> {
        tokio::pin!(shutdown);
        // The backend's watcher says when in/ changed (and once at start).
        let mut changed =
            super::backend::watch(self.config.backend_dir(), self.config.backend_poll_ms());
        let mut resync = tokio::time::interval(RESYNC_PERIOD);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.timer_instant();
            tokio::select! {
                () = &mut shutdown => break,
                Some(inbound) = self.transport_rx.recv() => self.on_inbound(inbound),
                () = tokio::time::sleep_until(deadline) => {
                    self.timer = None;
                    let now = self.now();
                    self.node.handle_timeout(now);
                }
                Some(request) = api.recv() => self.on_api(request),
                Some(()) = changed.recv() => self.poll_backend(false),
                _ = resync.tick() => self.poll_backend(true),
            }
            self.carry_out()?;
        }
        info!("shutting down");
        self.store.flush()?;
        self.transport.shutdown().await;
        Ok(())
    }

    fn timer_instant(&self) -> tokio::time::Instant {
        let far = tokio::time::Instant::now() + Duration::from_secs(3_600);
        let Some(at) = self.timer else {
            return far;
        };
        let start = tokio::time::Instant::from_std(self.started);
        start + Duration::from_micros(at.as_micros())
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = self.now();
        self.node
            .handle_packet(now, &inbound.from, inbound.channel, &inbound.bytes);
    }

    /// Feeds the backend's changes to the core. With `full`, every current export is
    /// fed again and own records no export explains are unexported (level-triggered:
    /// a lost store, or a missed change, heals within one resync period).
    fn poll_backend(&mut self, full: bool) {
        let changes = match self.backend.scan(wall_clock_ms()) {
            Ok(changes) => changes,
            Err(e) => {
                self.stats.backend_errors += 1;
                warn!(error = %e, "cannot scan the standalone directory");
                return;
            }
        };
        for change in changes {
            self.feed(change);
        }
        if full {
            // The core ignores an export whose contents it already published.
            let current: Vec<ExportSpec> = self
                .backend
                .exports()
                .values()
                .filter_map(|spec| spec.as_ref().ok().cloned())
                .collect();
            for spec in current {
                self.feed(ExportChange::Export(spec));
            }
            self.resync_exports();
        }
    }

    fn feed(&mut self, change: ExportChange) {
        if !self.config.core.publisher {
            return;
        }
        let now = self.now();
        let (service, result) = match change {
            ExportChange::Export(spec) => {
                (spec.service.clone(), self.node.handle_export(now, spec))
            }
            ExportChange::Unexport(service) => {
                (service.clone(), self.node.handle_unexport(now, service))
            }
        };
        if let Err(e) = result {
            self.stats.exports_refused += 1;
            warn!(service = %service, error = %e, "export refused");
        }
    }

    /// Unexports own records that no current export explains (after a lost store, the
    /// peers returned them), and rewrites the output from the imports.
    fn resync_exports(&mut self) {
        if self.config.core.publisher {
            let local = self.config.cluster.clone();
            let orphans: Vec<ServiceKey> = self
                .node
                .records()
                .filter(|r| r.record.origin == local && !r.record.tombstone)
                .map(|r| r.record.service.clone())
                .filter(|s| !matches!(self.backend.exports().get(s), Some(Ok(_))))
                .collect();
            for service in orphans {
                self.feed(ExportChange::Unexport(service));
            }
        }
        let imports = self.node.imports().clone();
        if let Err(e) = self.backend.sync_all(&imports) {
            self.stats.backend_errors += 1;
            warn!(error = %e, "cannot rewrite the standalone output");
        }
    }

    /// Carries out the core's commands, in order.
    fn carry_out(&mut self) -> Result<(), DriverError> {
        for command in self.node.take_commands() {
            match command {
                Command::Persist { ops, durability } => self.store.apply(&ops, durability)?,
                Command::Send {
                    to,
                    addr,
                    channel,
                    bytes,
                    ..
                } => {
                    if let Some(addr) = addr {
                        self.addrs.insert(to.clone(), addr.into());
                    }
                    match self.addrs.get(&to) {
                        Some(addr) => self.transport.send(&to, *addr, channel, bytes),
                        None => debug!(member = %to, "no address known; message dropped"),
                    }
                }
                Command::ApplyImports { changes } => {
                    self.observe_lag(&changes);
                    if let Err(e) = self.backend.apply_imports(&changes) {
                        self.stats.backend_errors += 1;
                        warn!(error = %e, "cannot write imports; the next resync retries");
                    } else if let Err(e) = self.backend.write_export_status(self.node.imports()) {
                        self.stats.backend_errors += 1;
                        warn!(error = %e, "cannot write export status");
                    }
                }
                Command::SetTimer { at } => self.timer = Some(at),
                Command::Notify(event) => self.log_event(&event),
            }
        }
        Ok(())
    }

    /// Propagation lag: from the origin signing a record (its `published_ms`) to this
    /// node applying the import it changed, on wall clocks.
    fn observe_lag(&mut self, changes: &[crate::core::ImportChange]) {
        let now_ms = wall_clock_ms();
        let local = &self.config.cluster;
        for change in changes {
            let Some(import) = &change.import else {
                continue;
            };
            for source in &import.sources {
                let record = &source.record.record;
                if record.origin == *local || record.published_ms == 0 {
                    continue;
                }
                let lag = now_ms.saturating_sub(record.published_ms) as f64 / 1_000.0;
                if lag > 60.0 {
                    continue; // an old record newly imported (a heal), not a propagation
                }
                self.stats.lag_last_seconds = Some(lag);
                self.stats.lag_sum_seconds += lag;
                self.stats.lag_count += 1;
                for (i, bound) in LAG_BUCKETS_SECONDS.iter().enumerate() {
                    if lag <= *bound {
                        self.stats.lag_buckets[i] += 1;
                    }
                }
            }
        }
    }

    fn log_event(&self, event: &Event) {
        match event {
            Event::MemberUp(m) => info!(member = %m, "member up"),
            Event::MemberDown(m) => info!(member = %m, "member down"),
            Event::ClusterDown(c) => {
                info!(cluster = %c, "cluster down; withdrawal after the grace period")
            }
            Event::ClusterWithdrawn(c) => info!(cluster = %c, "cluster withdrawn"),
            Event::ClusterRestored(c) => info!(cluster = %c, "cluster restored"),
            Event::Equivocation {
                origin,
                service,
                version,
            } => warn!(origin = %origin, service = %service, version, "equivocation rejected"),
            Event::Isolated => warn!("no remote member reachable: serving the last view as stale"),
            Event::Connected => info!("remote members reachable again"),
            Event::LeaseAcquired { lease, token } => {
                info!(lease = %lease, token = token.0, "lease acquired");
            }
            Event::LeaseLost { lease } => warn!(lease = %lease, "lease lost"),
            Event::LeaseReleased { lease } => info!(lease = %lease, "lease released"),
        }
    }

    // ----- the API -----

    fn on_api(&mut self, request: ApiRequest) {
        // A requester that went away is not an error.
        match request {
            ApiRequest::Status(reply) => drop(reply.send(self.status())),
            ApiRequest::Peers(reply) => drop(reply.send(self.peers())),
            ApiRequest::Services(reply) => drop(reply.send(self.services())),
            ApiRequest::Imports(reply) => drop(reply.send(self.imports())),
            ApiRequest::Lease { name, op, reply } => drop(reply.send(self.lease(&name, op))),
            ApiRequest::Leases(reply) => drop(reply.send(self.leases())),
            ApiRequest::Metrics(reply) => drop(reply.send(self.metrics())),
            ApiRequest::Chaos { op, reply } => drop(reply.send(self.transport.chaos(&op))),
        }
    }

    fn cluster_counts(&self) -> (u32, u32) {
        let (mut alive, mut down) = (0, 0);
        for cluster in self.known_clusters() {
            match self.node.liveness(&cluster) {
                Liveness::Alive | Liveness::Unknown { .. } => alive += 1,
                Liveness::Down { .. } | Liveness::Withdrawn { .. } => down += 1,
            }
        }
        (alive, down)
    }

    /// Remote clusters this node trusts.
    fn known_clusters(&self) -> Vec<ClusterId> {
        let local = &self.config.cluster;
        self.node
            .trusted_clusters()
            .filter(|c| *c != local)
            .cloned()
            .collect()
    }

    fn status(&self) -> StatusView {
        let (alive, down) = self.cluster_counts();
        StatusView {
            cluster: self.config.cluster.to_string(),
            replica: self.config.replica.0,
            generation: self.node.generation(),
            publisher: self.config.core.publisher,
            listen: self.transport.local_addr().to_string(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            isolated: self.node.is_isolated(),
            // Both on the wall clock, so that a contact from before a restart counts.
            stale_for_ms: self
                .node
                .last_contact_ms()
                .filter(|ms| *ms != 0)
                .map(|ms| wall_clock_ms().saturating_sub(ms))
                .filter(|_| self.node.is_isolated()),
            records: self.node.records().count() as u64,
            own_version: self.node.own_version(),
            clusters_alive: alive,
            clusters_down: down,
        }
    }

    fn peers(&self) -> Vec<PeerView> {
        let stats = self.transport.stats();
        self.node
            .member_states()
            .into_iter()
            .map(|(identity, state)| {
                let peer = stats.peers.get(&identity.member);
                let state = match state {
                    State::Alive => "alive",
                    State::Suspect => "suspect",
                    State::Down => match self.node.liveness(&identity.member.cluster) {
                        Liveness::Withdrawn { .. } => "withdrawn",
                        _ => "down",
                    },
                };
                PeerView {
                    cluster: identity.member.cluster.to_string(),
                    replica: identity.member.replica.0,
                    addr: identity.addr.to_string(),
                    state: state.to_owned(),
                    rtt_ms: peer.and_then(|p| p.rtt).map(|d| d.as_secs_f64() * 1_000.0),
                    bytes_in: peer.map_or(0, |p| p.bytes_in),
                    bytes_out: peer.map_or(0, |p| p.bytes_out),
                }
            })
            .collect()
    }

    fn services(&self) -> Vec<ServiceView> {
        let local = &self.config.cluster;
        self.node
            .records()
            .filter(|r| r.record.origin == *local && !r.record.tombstone)
            .map(|r| {
                let record = &r.record;
                ServiceView {
                    namespace: record.service.namespace.to_string(),
                    name: record.service.name.to_string(),
                    version: record.version,
                    service_type: service_type_name(record.service_type).to_owned(),
                    ports: record.ports.iter().map(port_name).collect(),
                    endpoints: record.endpoints.len() as u32,
                    ready_endpoints: record
                        .endpoints
                        .iter()
                        .filter(|e| e.conditions.ready)
                        .count() as u32,
                }
            })
            .collect()
    }

    fn imports(&self) -> Vec<ImportView> {
        self.node
            .imports()
            .values()
            .map(|import| import_view(import))
            .collect()
    }

    fn lease(&mut self, name: &str, op: LeaseOp) -> Result<LeaseView, ApiError> {
        let lease = LeaseName::new(name)
            .map_err(|e| ApiError::bad_request(format!("invalid lease name: {e}")))?;
        let now = self.now();
        let request = match op {
            LeaseOp::Get => None,
            LeaseOp::Acquire => Some(LeaseRequest::Acquire(lease.clone())),
            LeaseOp::Release => Some(LeaseRequest::Release(lease.clone())),
        };
        if let Some(request) = request {
            self.node
                .handle_lease_request(now, request)
                .map_err(lease_error)?;
            match op {
                LeaseOp::Acquire => drop(self.wanted.insert(lease.clone())),
                LeaseOp::Release | LeaseOp::Get => drop(self.wanted.remove(&lease)),
            }
        }
        Ok(self.lease_view(now, &lease))
    }

    fn lease_view(&self, now: Time, lease: &LeaseName) -> LeaseView {
        let status = self.node.lease_status(now, lease);
        LeaseView {
            name: lease.to_string(),
            holder: status.holder.map(|c| c.to_string()),
            token: status.token.map(|t| t.0),
            expires_in_ms: status.expires_in_ms,
            write_ready: status.write_ready,
            wanted: self.wanted.contains(lease),
        }
    }

    fn leases(&self) -> Vec<LeaseView> {
        let now = self.now();
        self.wanted
            .iter()
            .map(|lease| self.lease_view(now, lease))
            .collect()
    }

    fn metrics(&self) -> MetricsSnapshot {
        let transport = self.transport.stats();
        let mut members: BTreeMap<String, u64> = ["alive", "suspect", "down"]
            .iter()
            .map(|s| ((*s).to_owned(), 0))
            .collect();
        for (_, state) in self.node.member_states() {
            let key = match state {
                State::Alive => "alive",
                State::Suspect => "suspect",
                State::Down => "down",
            };
            *members.entry(key.to_owned()).or_default() += 1;
        }
        let (alive, down) = self.cluster_counts();
        let mut rejects: BTreeMap<String, u64> = transport
            .rejects
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        let core = self.node.stats();
        for (reason, count) in [
            ("decode_error", core.decode_errors),
            ("record_forged", core.records_forged),
            ("record_unknown_origin", core.records_unknown_origin),
            ("record_invalid", core.records_invalid),
            ("record_stale", core.records_stale),
            ("record_equivocation", core.records_equivocation),
            ("sender_mismatch", core.sender_mismatches),
            ("backend_error", self.stats.backend_errors),
            ("export_refused", self.stats.exports_refused),
        ] {
            rejects.insert(reason.to_owned(), count);
        }
        let mut cumulative = Vec::with_capacity(LAG_BUCKETS_SECONDS.len());
        for (i, bound) in LAG_BUCKETS_SECONDS.iter().enumerate() {
            cumulative.push((*bound, self.stats.lag_buckets[i]));
        }
        MetricsSnapshot {
            members,
            clusters_alive: u64::from(alive),
            clusters_down: u64::from(down),
            records: self.node.records().count() as u64,
            imports: self.node.imports().len() as u64,
            core_counters: core_counters(core)
                .into_iter()
                .chain(transport_counters(&transport))
                .collect(),
            peers: transport
                .peers
                .iter()
                .map(|(member, p)| PeerMetrics {
                    cluster: member.cluster.to_string(),
                    replica: member.replica.0,
                    rtt_seconds: p.rtt.map(|d| d.as_secs_f64()),
                    bytes_in: p.bytes_in,
                    bytes_out: p.bytes_out,
                })
                .collect(),
            rejects,
            propagation_lag_last_seconds: self.stats.lag_last_seconds,
            propagation_lag_buckets: cumulative,
            propagation_lag_sum_seconds: self.stats.lag_sum_seconds,
            propagation_lag_count: self.stats.lag_count,
            leases: self.leases(),
            isolated: self.node.is_isolated(),
        }
    }
}

/// The core's counters by field name.
/// The transport's totals, named `transport_*` beside the core's counters.
fn transport_counters(t: &crate::runtime::transport::TransportStats) -> Vec<(String, u64)> {
    [
        ("datagrams_sent", t.datagrams_sent),
        ("datagrams_received", t.datagrams_received),
        ("datagrams_sealed_sent", t.datagrams_sealed_sent),
        ("datagrams_sealed_received", t.datagrams_sealed_received),
        ("datagrams_on_stream", t.datagrams_on_stream),
        ("frames_sent", t.frames_sent),
        ("frames_received", t.frames_received),
        ("frames_throttled", t.frames_throttled),
        ("connections_dialed", t.connections_dialed),
        ("connections_accepted", t.connections_accepted),
    ]
    .into_iter()
    .map(|(name, n)| (format!("transport_{name}"), n))
    .collect()
}

fn core_counters(stats: &crate::core::Stats) -> BTreeMap<String, u64> {
    match serde_json::to_value(stats) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_u64()?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn lease_error(e: LeaseError) -> ApiError {
    match e {
        LeaseError::NotLocalLeader => ApiError::conflict(e.to_string()),
        LeaseError::NoVoters | LeaseError::TooMany => ApiError::unavailable(e.to_string()),
    }
}

fn service_type_name(t: shoal_proto::ServiceType) -> &'static str {
    match t {
        shoal_proto::ServiceType::ClusterSetIp => "ClusterSetIP",
        shoal_proto::ServiceType::Headless => "Headless",
    }
}

fn port_name(p: &shoal_proto::ServicePort) -> String {
    let protocol = match p.protocol {
        shoal_proto::PortProtocol::Tcp => "TCP",
        shoal_proto::PortProtocol::Udp => "UDP",
        shoal_proto::PortProtocol::Sctp => "SCTP",
    };
    format!("{}:{}/{protocol}", p.name, p.port)
}

fn import_view(import: &ImportedService) -> ImportView {
    let clusters: BTreeMap<String, u32> = import
        .sources
        .iter()
        .map(|s| {
            (
                s.cluster().to_string(),
                s.record.record.endpoints.len() as u32,
            )
        })
        .collect();
    ImportView {
        namespace: import.service.namespace.to_string(),
        name: import.service.name.to_string(),
        service_type: service_type_name(import.service_type).to_owned(),
        ports: import.ports.iter().map(port_name).collect(),
        endpoints: clusters.values().sum(),
        clusters,
        conflicts: import
            .conflicts
            .iter()
            .map(|c| match &c.kind {
                crate::core::ConflictKind::Type { exported, .. } => {
                    format!("{}: type {}", c.cluster, service_type_name(*exported))
                }
                crate::core::ConflictKind::Port { name } => format!("{}: port {name}", c.cluster),
            })
            .collect(),
    }
}
