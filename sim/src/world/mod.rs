//! The world: every node, the network, the disks and the checkers, driven by one
//! event queue in virtual time with one seeded RNG.
//!
//! - `mod.rs` (here): the state, construction, and the event loop.
//! - `node_io`: starting nodes and carrying out their commands (persist, send, timers,
//!   imports), and delivering messages.
//! - `actions`: the fault schedule (faults, crashes, restarts, healing), the workload
//!   and the byzantine injections.
//! - `observe`: what the checkers see after each event: records entering views,
//!   import changes, ground-truth reachability, periodic deep checks, convergence.
//! - `affinity`: the `affinity` scenario's ground truth and when its checks run.
//! - `timeline`: the log that `--plot` draws.
//!
//! **Architecture invariant:** nothing here iterates a hash map, reads a clock or
//! spawns a thread; every random choice comes from `World::rng`, seeded by the run's
//! seed. The same spec therefore gives the same trace, bit for bit.

mod actions;
mod affinity;
mod finish;
mod lease;
mod node_io;
mod observe;
mod timeline;

use std::cell::RefCell;
use std::rc::Rc;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use shoal_node::core::{Node, Stats, WeakRecordCache};
use shoal_proto::wire::Channel;

use crate::byzantine::Byzantine;
use crate::clock::NodeClock;
use crate::disk::Disk;
use crate::engine::EventQueue;
use crate::invariants::Violations;
use crate::invariants::authenticity::Authenticity;
use crate::invariants::convergence::Convergence;
use crate::invariants::determinism::{TraceHash, hash_bytes};
use crate::invariants::withdrawal::{ImportTracker, Withdrawal, detection_bound_us};
use crate::keyspace::KeySpace;
use crate::metrics::{Propagation, Traffic};
use crate::network::Network;
use crate::scenario::{self, Action, Plan};
use crate::spec::RunSpec;
use crate::topology::Topology;
use crate::workload::Workload;

pub use timeline::TimelineLog;

/// How often a sample of nodes gets the deep (O(view)) checks.
const DEEP_CHECK_PERIOD_US: u64 = 1_000_000;
/// Nodes deep-checked per period.
const DEEP_CHECKS_PER_PERIOD: usize = 3;
/// How often convergence is checked in the liveness phase.
const CONVERGENCE_PERIOD_US: u64 = 250_000;
/// How long the run goes on once views have converged.
const SETTLE_US: u64 = 2_000_000;
/// How often `--progress` reports.
const PROGRESS_PERIOD_US: u64 = 1_000_000;

/// Options that change what is recorded, never what happens.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Keep the timeline for `--plot`.
    pub timeline: bool,
    /// Print the virtual time and event count to stderr every virtual second.
    pub progress: bool,
}

/// A message on its way.
#[derive(Debug)]
struct Delivery {
    from: u32,
    to: u32,
    channel: Channel,
    /// Incarnations at send time: a stream dies with either end's process.
    from_incarnation: u32,
    to_incarnation: u32,
    bytes: Vec<u8>,
}

#[derive(Debug)]
enum Event {
    Start { node: u32 },
    Deliver(Delivery),
    Wake { node: u32 },
    Flush { node: u32, incarnation: u32 },
    Exports,
    Change { cluster: u32 },
    Act(Box<Action>),
    CrashNow { node: u32, down_us: u64 },
    ByzantineTick,
    DeepCheck,
    Converge,
    WithdrawalCheck { cluster: u32 },
    LeaseTick,
    StoreWrite { token: u64 },
    LeaseLiveness,
    AffinityCheck,
    AffinityTick,
    End,
}

impl Event {
    /// (kind, node, payload) for the trace hash.
    fn trace_key(&self) -> (u8, u32, u64) {
        match self {
            Event::Start { node } => (0, *node, 0),
            Event::Deliver(d) => (1, d.to, hash_bytes(&d.bytes) ^ u64::from(d.from)),
            Event::Wake { node } => (2, *node, 0),
            Event::Flush { node, incarnation } => (3, *node, u64::from(*incarnation)),
            Event::Exports => (4, 0, 0),
            Event::Change { cluster } => (5, *cluster, 0),
            Event::Act(action) => (6, 0, hash_bytes(format!("{action:?}").as_bytes())),
            Event::CrashNow { node, down_us } => (7, *node, *down_us),
            Event::ByzantineTick => (8, 0, 0),
            Event::DeepCheck => (9, 0, 0),
            Event::Converge => (10, 0, 0),
            Event::WithdrawalCheck { cluster } => (11, *cluster, 0),
            Event::End => (12, 0, 0),
            Event::LeaseTick => (13, 0, 0),
            Event::StoreWrite { token } => (14, 0, *token),
            Event::LeaseLiveness => (15, 0, 0),
            Event::AffinityCheck => (16, 0, 0),
            Event::AffinityTick => (17, 0, 0),
        }
    }
}

/// One simulated replica: its core (absent while crashed), store and clock.
#[derive(Debug)]
struct SimNode {
    core: Option<Node>,
    incarnation: u32,
    disk: Disk,
    clock: NodeClock,
    /// The wake-up the core asked for (true time), and the earliest one queued.
    wake_at: Option<u64>,
    queued_wake: Option<u64>,
    flush_phase_us: u64,
    flush_queued: bool,
    started_at: u64,
    /// Ground truth: can reach a live replica of another cluster, and since when.
    reachable: bool,
    connected_since: u64,
    crash_on_lazy: Option<u64>,
    /// A paused process (a GC pause) handles nothing before this true time.
    paused_until: u64,
}

/// The phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness,
    Done,
}

/// Everything one run holds.
#[derive(Debug)]
pub struct World {
    spec: RunSpec,
    plan: Plan,
    progress: bool,
    now: u64,
    queue: EventQueue<Event>,
    rng: ChaCha8Rng,
    topo: Topology,
    keys: KeySpace,
    net: Network,
    nodes: Vec<SimNode>,
    /// Verified records shared by every node's core: each distinct record is verified
    /// and held in memory once (a pure optimisation: verification is a function of the
    /// bytes and the origin key).
    record_cache: Rc<RefCell<WeakRecordCache>>,
    killed: Vec<bool>,
    workload: Workload,
    lease: Option<lease::LeaseWorld>,
    /// The `affinity` scenario's checks, when the run has its services.
    affinity: Option<Box<affinity::AffinityWorld>>,
    workload_on: bool,
    byzantine: Byzantine,
    phase: Phase,
    violations: Violations,
    authenticity: Authenticity,
    tracker: ImportTracker,
    withdrawal: Withdrawal,
    /// The core's last-chance window: how recent a heal may be for a withdrawal not to
    /// count as false.
    last_chance_window_us: u64,
    convergence: Convergence,
    convergence_error: Option<String>,
    trace: TraceHash,
    events: u64,
    propagation: Propagation,
    traffic: Traffic,
    retired: Stats,
    crashes: u64,
    restarts: u64,
    equivocation_alarms: u64,
    timeline: TimelineLog,
}

impl World {
    /// Builds the world of `spec`: topology, workload and plan all derive from the
    /// one RNG seeded with `spec.seed`.
    pub fn new(spec: &RunSpec, options: RunOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let topo = Topology::build(spec, &mut rng);
        let plan = scenario::plan(spec, &topo, &mut rng);
        let mut workload = Workload::new(spec, plan.change_mean_us, &mut rng);
        if let Some(affinity) = &plan.affinity {
            workload.add_affinity_services(&affinity.exporters);
        }
        let keys = KeySpace::new(topo.clusters.iter().map(|c| &c.id), workload.services());
        let net = Network::new(topo.node_regions(), plan.base_links);
        let nodes = (0..topo.nodes())
            .map(|_| SimNode {
                core: None,
                incarnation: 0,
                disk: Disk::default(),
                clock: NodeClock::default(),
                wake_at: None,
                queued_wake: None,
                flush_phase_us: rng.random_range(0..crate::disk::BACKGROUND_FLUSH_US),
                flush_queued: false,
                started_at: 0,
                reachable: false,
                connected_since: 0,
                crash_on_lazy: None,
                paused_until: 0,
            })
            .collect();
        let clusters = topo.clusters.len();
        let grace_us = topo.configs[0].withdraw_grace_ms * 1_000;
        let last_chance_window_us = topo.configs[0].last_chance_window().as_micros() as u64;
        let detection_us = detection_bound_us(&topo.configs[0].swim, topo.nodes());
        let mut convergence = Convergence::new(&keys, clusters);
        if let Some(eq) = plan.roles.equivocator {
            convergence.exclude(eq);
        }
        let mut world = World {
            spec: spec.clone(),
            progress: options.progress,
            now: 0,
            queue: EventQueue::default(),
            tracker: ImportTracker::new(topo.nodes(), clusters, keys.services().len()),
            withdrawal: Withdrawal::new(clusters, grace_us, detection_us),
            last_chance_window_us,
            convergence,
            convergence_error: None,
            byzantine: Byzantine::new(plan.roles),
            timeline: TimelineLog::new(options.timeline),
            killed: vec![false; clusters],
            record_cache: Rc::default(),
            plan,
            rng,
            topo,
            keys,
            net,
            nodes,
            workload,
            lease: None,
            affinity: None,
            workload_on: false,
            phase: Phase::Safety,
            violations: Violations::default(),
            authenticity: Authenticity::default(),
            trace: TraceHash::default(),
            events: 0,
            propagation: Propagation::default(),
            traffic: Traffic::default(),
            retired: Stats::default(),
            crashes: 0,
            restarts: 0,
            equivocation_alarms: 0,
        };
        if world.spec.scenario.is_lease() {
            world.set_up_lease();
        }
        if world.plan.affinity.is_some() {
            world.set_up_affinity();
        }
        world.schedule_start();
        world
    }

    fn schedule_start(&mut self) {
        for node in 0..self.topo.nodes() {
            let at = self.rng.random_range(0..=self.plan.start_spread_us);
            self.queue.push(at, Event::Start { node: node as u32 });
        }
        self.queue.push(self.plan.exports_at_us, Event::Exports);
        for (at, action) in std::mem::take(&mut self.plan.actions) {
            self.queue.push(at, Event::Act(Box::new(action)));
        }
        if self.plan.roles != crate::byzantine::Roles::default() {
            self.queue
                .push(self.plan.faults_from_us, Event::ByzantineTick);
        }
        self.queue.push(DEEP_CHECK_PERIOD_US, Event::DeepCheck);
        self.queue.push(self.plan.end_us, Event::End);
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> (crate::report::RunReport, Option<crate::plot::Timeline>) {
        let mut next_progress = PROGRESS_PERIOD_US;
        while let Some((at, event)) = self.queue.pop() {
            if self.progress && at >= next_progress {
                let pending = self.queue.len();
                eprintln!(
                    "shoal-sim: t={}s, {} events, {pending} pending",
                    at / 1_000_000,
                    self.events
                );
                next_progress += PROGRESS_PERIOD_US;
            }
            self.now = at;
            if !self.step(event) {
                break;
            }
        }
        self.finish()
    }

    /// Handles one event. Returns false when the run is over.
    fn step(&mut self, event: Event) -> bool {
        if let Event::Wake { node } = event
            && self.nodes[node as usize].queued_wake != Some(self.now)
        {
            return true; // superseded by an earlier wake-up
        }
        let paused = match &event {
            Event::Deliver(d) => Some(d.to as usize),
            Event::Wake { node } => Some(*node as usize),
            _ => None,
        };
        if let Some(n) = paused.filter(|n| self.paused(*n)) {
            // A paused process handles nothing; its input waits for it.
            let at = self.nodes[n].paused_until;
            if let Event::Wake { .. } = event {
                self.nodes[n].queued_wake = Some(at);
            }
            self.queue.push(at, event);
            return true;
        }
        let (kind, node, payload) = event.trace_key();
        self.trace.event(self.now, kind, node, payload);
        self.events += 1;
        match event {
            Event::Start { node } => self.boot(node as usize),
            Event::Deliver(delivery) => self.deliver(delivery),
            Event::Wake { node } => self.wake(node as usize),
            Event::Flush { node, incarnation } => self.background_flush(node as usize, incarnation),
            Event::Exports => self.initial_exports(),
            Event::Change { cluster } => self.change_exports(cluster as usize),
            Event::Act(action) => self.act(*action),
            Event::CrashNow { node, down_us } => self.crash_for(node as usize, down_us),
            Event::ByzantineTick => self.byzantine_tick(),
            Event::DeepCheck => self.deep_check_sample(),
            Event::Converge => self.check_convergence(),
            Event::WithdrawalCheck { cluster } => self.check_withdrawal(cluster as usize),
            Event::LeaseTick => self.lease_tick(),
            Event::StoreWrite { token } => self.store_write(token),
            Event::LeaseLiveness => self.check_lease_liveness(),
            Event::AffinityCheck => self.check_affinity_all(),
            Event::AffinityTick => self.affinity_tick(),
            Event::End => return false,
        }
        self.check_lease();
        self.phase != Phase::Done
    }

    fn alive(&self, node: usize) -> bool {
        self.nodes[node].core.is_some()
    }
}
