//! The driver: one task that owns the core [`Node`] and feeds it, one input at a time,
//! from the transport, its timer, the backend and the API, then carries out the
//! commands that come out, in order.
//!
//! - this module: the loop, and what the backend's events mean to the core;
//! - `commands`: carrying out the core's commands (persist, send, apply imports);
//! - `views`: the API's requests and the JSON views they answer with.
//!
//! The driver works with any [`Backend`]: the standalone one (files), the Kubernetes
//! one (an API server), or the in-memory one its tests use.
//!
//! **Architecture invariant:** a `Persist` command is written (and flushed when it
//! asks) before any later command runs, so nothing is sent that is not stored. A store
//! that fails to write stops the driver: a node that cannot persist must not speak.

mod commands;
mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_proto::{ClusterId, LeaseName, MemberId, ServiceKey};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::api::ApiRequest;
use super::backend::{Backend, BackendEvent, ExportChange, ImportsUpdate};
use super::certs::ClusterIdentity;
use super::config::RuntimeConfig;
use super::dns::ImportsFeed;
use super::store::Store;
use super::transport::{Inbound, InboundQueue, Transport};
use crate::core::{ExportSpec, Node, PersistedState, Time};

pub use self::commands::LAG_BUCKETS_SECONDS;

/// Why the driver stopped. The process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store could not write: state past the failed write was not acted upon.
    #[error("store: {0}")]
    Store(#[from] super::store::StoreError),
    /// The core refused its configuration or key. Nothing started.
    #[error("core: {0}")]
    Core(#[from] crate::core::ConfigError),
    /// The backend cannot go on (it said why).
    #[error("backend: {0}")]
    Backend(String),
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
    exports_refused: u64,
    leadership_changes: u64,
    /// Steps that took [`SLOW_STEP`] or longer.
    slow_steps: u64,
}

/// A driver step this long is logged and counted (`shoal_driver_slow_steps_total`):
/// SWIM's answers wait on it, and the `lan` preset allows 150 ms for one.
const SLOW_STEP: Duration = Duration::from_millis(50);

/// Everything the driver owns.
pub struct Driver<B> {
    node: Node,
    store: Store,
    transport: Transport,
    transport_rx: InboundQueue,
    backend: B,
    config: RuntimeConfig,
    started: Instant,
    timer: Option<Time>,
    /// Whether the view was restored from the store at start.
    restored: bool,
    /// Whether the backend has been told that the view settled.
    settled_told: bool,
    /// Whether the backend has reported a complete export set since start.
    exports_known: bool,
    /// When this node first reached another cluster since start.
    first_contact: Option<Instant>,
    /// The last address each member was reached at, for sends the core leaves open.
    addrs: BTreeMap<MemberId, SocketAddr>,
    /// Leases this node asked for and keeps renewing.
    wanted: BTreeSet<LeaseName>,
    /// Export changes not yet fed to the core, the latest per service. They are fed
    /// [`FEED_BATCH_MAX`] at a time between other inputs, so that a backend reporting
    /// thousands of exports at once never holds up SWIM, timers or the API.
    unfed: BTreeMap<ServiceKey, ExportChange>,
    stats: DriverStats,
    /// The standalone DNS server's feed: every new version of the imports goes there.
    dns: Option<ImportsFeed>,
}

/// Most export changes fed to the core in one turn of the driver's loop. Each costs a
/// signature and a store write; the batch shares one flush.
pub const FEED_BATCH_MAX: usize = 64;
/// Most packets handled in one step of the driver's loop (one store flush for all the
/// records they bring, and every answer sent after it).
const INBOUND_BATCH_MAX: usize = 32;
/// How long one turn may spend feeding exports before it lets other inputs in.
const FEED_BATCH_BUDGET: Duration = Duration::from_millis(5);

impl<B> std::fmt::Debug for Driver<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn wall_clock_ms() -> u64 {
    #[allow(clippy::disallowed_methods)] // the driver owns the wall clock
    let now = SystemTime::now();
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A seed for the core's RNG: it needs variety between processes, not secrecy.
fn rng_seed(identity: &ClusterIdentity, replica: u16) -> u64 {
    let nanos = u64::from(std::process::id()) ^ wall_clock_ms().rotate_left(20);
    let mut seed = nanos ^ u64::from(replica);
    for b in identity.cluster.as_str().bytes() {
        seed = seed.rotate_left(5) ^ u64::from(b);
    }
    seed
}

impl<B: Backend> Driver<B> {
    /// Opens the store and starts the core from it. The transport is passed in already
    /// bound, and the backend already started.
    pub fn start(
        config: RuntimeConfig,
        identity: Arc<ClusterIdentity>,
        transport: Transport,
        transport_rx: InboundQueue,
        backend: B,
    ) -> Result<Self, DriverError> {
        let (store, stored, report) = Store::open(&config.data_dir.join("store"))?;
        info!(
            records = report.records,
            undecodable = report.undecodable,
            own_version = stored.own_version,
            generation = stored.generation,
            "store opened"
        );
        let persisted = PersistedState {
            wall_clock_ms: wall_clock_ms(),
            ..stored.clone()
        };
        // Tokio's clock: the monotonic clock, or a test's paused one.
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
            restored: report.records > 0,
            config,
            started,
            timer: None,
            first_contact: None,
            exports_known: false,
            settled_told: false,
            addrs: BTreeMap::new(),
            wanted: BTreeSet::new(),
            unfed: BTreeMap::new(),
            stats: DriverStats::default(),
            dns: None,
        };
        driver.drop_unverified(&stored)?;
        for seed in &driver.config.core.seeds {
            driver.addrs.insert(seed.member.clone(), seed.addr.into());
        }
        driver.carry_out()?;
        Ok(driver)
    }

    /// Hands every version of the imports to the DNS server behind `feed` too, from
    /// the first one [`Self::run`] writes.
    pub fn with_dns(mut self, feed: ImportsFeed) -> Self {
        self.dns = Some(feed);
        self
    }

    /// Gives the DNS server the current imports (a copy of the map, never a wait).
    fn publish_dns(&self) {
        if let Some(dns) = &self.dns {
            dns.publish(self.node.imports());
        }
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

    /// Runs until `shutdown` resolves, the store fails, or the backend gives up.
    pub async fn run(
        mut self,
        mut api: mpsc::Receiver<ApiRequest>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DriverError> {
        tokio::pin!(shutdown);
        // What the restored view imports is written at once.
        self.resync();
        self.carry_out()?;
        let result = loop {
            let deadline = self.timer_instant();
            let input = tokio::select! {
                // In this order: SWIM's packets and timers first, queued exports last,
                // so that feeding thousands of exports never delays an ack by more than
                // one batch.
                biased;
                () = &mut shutdown => break Ok(()),
                Some(inbound) = self.transport_rx.recv() => {
                    let started = Instant::now();
                    self.on_inbound(inbound);
                    // What else has arrived is handled in the same step: its records
                    // share one store flush.
                    for _ in 1..INBOUND_BATCH_MAX {
                        let Ok(inbound) = self.transport_rx.try_recv() else {
                            break;
                        };
                        self.on_inbound(inbound);
                    }
                    ("packet", started)
                }
                () = tokio::time::sleep_until(deadline) => {
                    let started = Instant::now();
                    self.timer = None;
                    let now = self.now();
                    self.node.handle_timeout(now);
                    ("timer", started)
                }
                Some(request) = api.recv() => {
                    let started = Instant::now();
                    self.on_api(request);
                    ("api", started)
                }
                event = self.backend.next_event() => {
                    let started = Instant::now();
                    if let Err(e) = self.on_backend(event) {
                        break Err(e);
                    }
                    ("backend", started)
                }
                () = std::future::ready(()), if !self.unfed.is_empty() => {
                    let started = Instant::now();
                    self.feed_batch(started);
                    ("exports", started)
                }
            };
            self.carry_out()?;
            self.note_step(input);
            if !self.unfed.is_empty() {
                // The feed branch is always ready: let every other task run, and other
                // inputs arrive, before the next batch.
                tokio::task::yield_now().await;
            }
        };
        info!("shutting down");
        self.backend.shutdown().await;
        self.store.flush()?;
        self.transport.shutdown().await;
        result
    }

    /// Times one step (an input and its commands): a slow one holds up SWIM's answers.
    fn note_step(&mut self, (input, started): (&'static str, Instant)) {
        let took = started.elapsed();
        if took >= SLOW_STEP {
            self.stats.slow_steps += 1;
            warn!(
                input,
                took_ms = took.as_millis() as u64,
                "a driver step was slow"
            );
        }
    }

    fn timer_instant(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3_600);
        let Some(at) = self.timer else {
            return far;
        };
        self.started + Duration::from_micros(at.as_micros())
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let now = self.now();
        self.node
            .handle_packet(now, &inbound.from, inbound.channel, &inbound.bytes);
    }

    fn on_backend(&mut self, event: BackendEvent) -> Result<(), DriverError> {
        match event {
            BackendEvent::Exports(changes) => {
                changes.into_iter().for_each(|c| self.queue_feed(c));
                if !self.exports_known && self.backend.exports().is_some() {
                    // The first complete export set: own records it does not explain
                    // (a restart, a lost store) are unexported now, not at the next
                    // periodic resync.
                    self.exports_known = true;
                    self.resync();
                }
            }
            BackendEvent::Resync => self.resync(),
            BackendEvent::Leadership(leader) => self.set_publisher(leader),
            BackendEvent::Fatal(reason) => return Err(DriverError::Backend(reason)),
        }
        Ok(())
    }

    fn set_publisher(&mut self, publisher: bool) {
        if publisher == self.node.is_publisher() {
            return;
        }
        self.stats.leadership_changes += 1;
        let now = self.now();
        self.node.set_publisher(now, publisher);
        if publisher {
            info!(cluster = %self.config.cluster, "this replica publishes for its cluster");
            self.resync();
        } else {
            info!(cluster = %self.config.cluster, "this replica stopped publishing");
            self.wanted.clear();
            self.unfed.clear();
        }
    }

    /// Queues `change` for [`Self::feed_batch`]; it replaces an unfed change of the
    /// same service.
    fn queue_feed(&mut self, change: ExportChange) {
        if !self.node.is_publisher() {
            return;
        }
        let service = match &change {
            ExportChange::Export(spec) => spec.service.clone(),
            ExportChange::Unexport(service) => service.clone(),
        };
        self.unfed.insert(service, change);
    }

    /// Feeds queued export changes to the core: at most [`FEED_BATCH_MAX`], and no more
    /// once [`FEED_BATCH_BUDGET`] has passed since `started`.
    fn feed_batch(&mut self, started: Instant) {
        for _ in 0..FEED_BATCH_MAX {
            let Some((_, change)) = self.unfed.pop_first() else {
                break;
            };
            self.feed(change);
            if started.elapsed() >= FEED_BATCH_BUDGET {
                break;
            }
        }
    }

    fn feed(&mut self, change: ExportChange) {
        if !self.node.is_publisher() {
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

    /// Level-triggered: feeds every current export again (the core ignores what it
    /// already published), unexports own records no current export explains (after a
    /// lost store, the peers returned them), and rewrites every import. Until the
    /// backend has read its exports in full, no export is fed or unexported.
    fn resync(&mut self) {
        if self.node.is_publisher()
            && let Some(exports) = self.backend.exports()
        {
            let current: Vec<ExportSpec> = exports
                .values()
                .filter_map(|spec| spec.as_ref().ok().cloned())
                .collect();
            let local = self.config.cluster.clone();
            let orphans: Vec<ServiceKey> = self
                .node
                .records()
                .filter(|r| r.record.origin == local && !r.record.tombstone)
                .map(|r| r.record.service.clone())
                .filter(|s| !matches!(exports.get(s), Some(Ok(_))))
                .collect();
            for spec in current {
                self.queue_feed(ExportChange::Export(spec));
            }
            for service in orphans {
                self.queue_feed(ExportChange::Unexport(service));
            }
        }
        let settled = self.settled();
        let imports = self.node.imports().clone();
        self.backend.resync_imports(ImportsUpdate {
            all: &imports,
            changes: &[],
            settled,
        });
        self.publish_dns();
    }

    /// Whether the imports may be trusted to be complete: the view came from the
    /// store, or this node has reached another cluster and had two anti-entropy
    /// periods to exchange records since, or there is no other cluster to wait for.
    fn settled(&self) -> bool {
        if self.restored {
            return true;
        }
        let local: &ClusterId = &self.config.cluster;
        if self.node.trusted_clusters().all(|c| c == local) {
            return true;
        }
        let wait = Duration::from_millis(self.config.core.anti_entropy_period_ms * 2);
        self.first_contact.is_some_and(|at| at.elapsed() >= wait)
    }

    /// Notes when this node first reaches another cluster, and tells the backend
    /// once the view has settled (so that it may delete what the view lacks).
    fn note_contact(&mut self) {
        if self.first_contact.is_none() && !self.node.is_isolated() {
            self.first_contact = Some(Instant::now());
        }
        if !self.settled_told && self.settled() {
            self.settled_told = true;
            info!("the view has settled: imports it lacks may now be deleted");
            let imports = self.node.imports().clone();
            self.backend.resync_imports(ImportsUpdate {
                all: &imports,
                changes: &[],
                settled: true,
            });
        }
    }

    /// The quorum leases this node wants, as it sees them, for the backend to mirror.
    fn mirror_leases(&mut self) {
        let now = self.now();
        let lease_ms = self.config.core.lease.lease_ms;
        let seen: Vec<super::backend::LeaseSeen> = self
            .wanted
            .iter()
            .map(|lease| {
                let status = self.node.lease_status(now, lease);
                super::backend::LeaseSeen {
                    name: lease.to_string(),
                    holder: status.holder.map(|c| c.to_string()),
                    token: status.token.map(|t| t.0),
                    lease_ms,
                }
            })
            .collect();
        self.backend.mirror_leases(&seen);
    }
}
