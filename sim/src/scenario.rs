//! Fault schedules: one function per scenario, each building a [`Plan`].
//!
//! Every run has the same phases. Nodes start in the first half second (all at once
//! in `steady`). Publishers
//! feed their initial exports at `exports_at`. The **safety phase** runs from
//! `faults_from` to `heal_at` with the scenario's faults (safety invariants are
//! checked after every event, all run long). At `heal_at` every fault is lifted,
//! crashed nodes restart (except clusters killed for good), and the workload stops.
//! The **liveness phase** follows: views must converge before `end`.

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use crate::byzantine::Roles;
use crate::network::LinkParams;
use crate::network::faults::{Fault, NodeSet};
use crate::spec::{RunSpec, Scenario};
use crate::topology::Topology;

const S: u64 = 1_000_000;
/// Longest liveness phase: the convergence bound after healing.
pub const LIVENESS_MAX_US: u64 = 60 * S;
/// Nodes of fault scenarios start within this long: a node may announce to a seed
/// that is not up yet.
const START_SPREAD_US: u64 = 500_000;
/// Mean gap between two export changes of one cluster.
const CHANGE_MEAN_US: u64 = 20 * S;

/// One step of a fault schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    AddFault {
        id: u32,
        fault: Fault,
        label: String,
    },
    RemoveFault {
        id: u32,
    },
    SetLinks(LinkParams),
    Crash {
        node: usize,
    },
    /// Crash right after the node's next lazy write, before it is flushed; restart
    /// `down_us` later.
    CrashOnLazyWrite {
        node: usize,
        down_us: u64,
    },
    Restart {
        node: usize,
    },
    /// Crash every replica, never to restart.
    KillCluster {
        cluster: usize,
    },
    /// Cut the cluster holding the lease now (if any) off from every other cluster,
    /// until `until_us` (or healing).
    IsolateLeaseHolder {
        until_us: u64,
    },
    /// Stop the lease holder's process for `pause_us` (a GC pause), with a write
    /// decided just before the pause still to be sent.
    PauseLeaseHolder {
        pause_us: u64,
    },
    /// The lease holder's clock steps forward.
    JumpLeaseHolderClock {
        by_us: i64,
    },
    /// The lease holder's clock now runs at this rate error.
    DriftLeaseHolderClock {
        drift_ppm: i64,
    },
    /// A crashed node's disk is lost: it restarts with an empty store.
    LoseDisk {
        node: usize,
    },
    /// Every endpoint of `cluster`'s affinity service `service` (an index into
    /// `workload::AFFINITY_SERVICES`) turns ready, or not ready.
    SetReady {
        cluster: usize,
        service: usize,
        ready: bool,
    },
    /// Links between regions `a` and `b` now take `extra_one_way_us` more one way than
    /// the region model says. Not a fault: healing keeps it.
    SetLatency {
        a: usize,
        b: usize,
        extra_one_way_us: u64,
    },
    Heal,
}

/// A whole run's schedule.
#[derive(Clone, Debug)]
pub struct Plan {
    pub actions: Vec<(u64, Action)>,
    /// Nodes start at random instants in `0..start_spread_us`; zero starts them all at
    /// once, so that no announcement reaches a seed that is not up yet.
    pub start_spread_us: u64,
    /// Links from the start, and again after healing.
    pub base_links: LinkParams,
    pub roles: Roles,
    /// The `affinity` scenario's services, when the run has them.
    pub affinity: Option<AffinityPlan>,
    pub change_mean_us: u64,
    pub exports_at_us: u64,
    pub faults_from_us: u64,
    pub heal_at_us: u64,
    pub end_us: u64,
}

/// Who exports the `affinity` scenario's services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffinityPlan {
    /// [service of `workload::AFFINITY_SERVICES`][cluster]: the cluster exports it.
    pub exporters: Vec<Vec<bool>>,
}

struct Builder<'a> {
    plan: Plan,
    topo: &'a Topology,
    next_id: u32,
}

impl Builder<'_> {
    fn at(&mut self, at_us: u64, action: Action) {
        self.plan.actions.push((at_us, action));
    }

    /// A fault from `from_us` until `to_us` (or until healing, whichever is first).
    fn fault(&mut self, from_us: u64, to_us: u64, fault: Fault, label: impl Into<String>) {
        self.next_id += 1;
        let id = self.next_id;
        let label = label.into();
        self.at(from_us, Action::AddFault { id, fault, label });
        if to_us < self.plan.heal_at_us {
            self.at(to_us, Action::RemoveFault { id });
        }
    }

    /// One node down from `from_us` for `down_us` (restarted at healing at the latest).
    fn outage(&mut self, node: usize, from_us: u64, down_us: u64) {
        self.at(from_us, Action::Crash { node });
        if from_us + down_us < self.plan.heal_at_us {
            self.at(from_us + down_us, Action::Restart { node });
        }
    }

    fn nodes_of_clusters(&self, clusters: &[usize]) -> NodeSet {
        NodeSet::from_nodes(
            self.topo.nodes(),
            clusters.iter().flat_map(|c| self.topo.nodes_of(*c)),
        )
    }

    fn safety_span(&self) -> (u64, u64) {
        (self.plan.faults_from_us, self.plan.heal_at_us)
    }

    /// The safety span of a lease scenario: from one lease after the first requests,
    /// when a holder has had time to appear.
    fn lease_span(&self) -> (u64, u64) {
        let from = (self.plan.exports_at_us + LEASE_US).min(self.plan.heal_at_us);
        (from.max(self.plan.faults_from_us), self.plan.heal_at_us)
    }
}

/// Builds the plan of `spec.scenario`.
pub fn plan(spec: &RunSpec, topo: &Topology, rng: &mut ChaCha8Rng) -> Plan {
    let end_us = spec.duration_s() * S;
    let liveness = LIVENESS_MAX_US.min(end_us / 2);
    let exports_at_us = (5 * S + topo.nodes() as u64 * 5_000).min(end_us / 6);
    let heal_at_us = end_us - liveness;
    let mut b = Builder {
        plan: Plan {
            actions: Vec::new(),
            start_spread_us: START_SPREAD_US,
            base_links: LinkParams::BACKGROUND,
            roles: Roles::default(),
            affinity: None,
            change_mean_us: CHANGE_MEAN_US,
            exports_at_us,
            faults_from_us: (exports_at_us + 5 * S).min(heal_at_us),
            heal_at_us,
            end_us,
        },
        topo,
        next_id: 0,
    };
    match spec.scenario {
        Scenario::Steady => steady(&mut b),
        Scenario::Churn => churn(&mut b, rng),
        Scenario::PartitionHeal => partition_heal(&mut b, rng),
        Scenario::Oneway => oneway(&mut b, rng),
        Scenario::Lossy => lossy(&mut b),
        Scenario::CrashRestart => crash_restart(&mut b, rng),
        Scenario::Byzantine => byzantine(&mut b, rng),
        Scenario::Chaos => chaos(&mut b, rng),
        Scenario::Affinity => affinity(&mut b, rng),
        Scenario::LeasePartition => lease_partition(&mut b, rng),
        Scenario::LeasePause => lease_pause(&mut b),
        Scenario::LeaseRing => lease_ring(&mut b),
        Scenario::LeaseRestart => lease_restart(&mut b, rng),
        Scenario::LeaseDrift => lease_drift(&mut b, rng),
        Scenario::LeaseDriftBeyond => lease_drift_beyond(&mut b),
    }
    let heal = b.plan.heal_at_us;
    b.at(heal, Action::Heal);
    b.plan.actions.sort_by_key(|(at, _)| *at);
    b.plan
}

/// No faults at all: not even background loss, nor a node starting before its seeds.
fn steady(b: &mut Builder<'_>) {
    b.plan.base_links = LinkParams::CLEAN;
    b.plan.start_spread_us = 0;
}

/// Replicas crash and restart one after another (rolling: with two or more replicas a
/// cluster never goes wholly down); exports change twice as often.
fn churn(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    b.plan.change_mean_us = CHANGE_MEAN_US / 2;
    let (from, to) = b.safety_span();
    let clusters = b.topo.clusters.len();
    let mut busy_until = vec![0u64; clusters];
    let mut t = from;
    while t + 5 * S < to {
        let node = rng.random_range(0..b.topo.nodes());
        let cluster = b.topo.cluster_of(node);
        let down = rng.random_range(3 * S..15 * S);
        if b.topo.replicas == 1 || busy_until[cluster] <= t {
            busy_until[cluster] = t + down + S;
            b.outage(node, t, down);
        }
        t += rng.random_range(S..4 * S);
    }
}

/// A majority/minority split of clusters for the whole safety phase.
fn partition_heal(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    let minority = minority(b.topo.clusters.len(), rng);
    if minority.is_empty() {
        return;
    }
    let side = b.nodes_of_clusters(&minority);
    let (from, to) = b.safety_span();
    b.fault(from, to, Fault::Split { side }, "majority | minority");
}

/// A minority's messages to the majority are lost (the other way works); later one
/// node can send but not receive, and another receive but not send.
fn oneway(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    let nodes = b.topo.nodes();
    let (from, to) = b.safety_span();
    let mid = from + (to - from) / 2;
    let minority = minority(b.topo.clusters.len(), rng);
    if !minority.is_empty() {
        let from_set = b.nodes_of_clusters(&minority);
        let to_set = NodeSet::from_nodes(nodes, (0..nodes).filter(|n| !from_set.contains(*n)));
        b.fault(
            from,
            mid,
            Fault::OneWay {
                from: from_set,
                to: to_set,
            },
            "minority -> majority cut",
        );
    }
    if nodes >= 3 {
        let deaf = rng.random_range(0..nodes);
        let others = NodeSet::from_nodes(nodes, (0..nodes).filter(|n| *n != deaf));
        let only = NodeSet::from_nodes(nodes, [deaf]);
        let label = format!("{} deaf", b.topo.members[deaf]);
        b.fault(
            mid,
            to,
            Fault::OneWay {
                from: others.clone(),
                to: only,
            },
            label,
        );
        let mute = (deaf + 1 + rng.random_range(0..nodes - 1)) % nodes;
        let only = NodeSet::from_nodes(nodes, [mute]);
        let others = NodeSet::from_nodes(nodes, (0..nodes).filter(|n| *n != mute));
        let label = format!("{} mute", b.topo.members[mute]);
        b.fault(
            mid,
            mid + 15 * S,
            Fault::OneWay {
                from: only,
                to: others,
            },
            label,
        );
    }
}

/// 20% loss with duplication and reordering for the whole safety phase.
fn lossy(b: &mut Builder<'_>) {
    let from = b.plan.faults_from_us;
    b.at(from, Action::SetLinks(LinkParams::LOSSY));
}

/// Nodes crash and restart from their stores, some losing unflushed writes; one
/// cluster is killed for good (its withdrawal is measured) and one for a while.
fn crash_restart(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    let (from, to) = b.safety_span();
    let clusters = b.topo.clusters.len();
    let mut order: Vec<usize> = (0..clusters).collect();
    order.shuffle(rng);
    if clusters >= 3 {
        b.at(from + 2 * S, Action::KillCluster { cluster: order[0] });
    }
    if clusters >= 4 {
        let down = 25 * S;
        for node in b.topo.nodes_of(order[1]) {
            b.outage(node, from + 4 * S, down);
        }
    }
    let spared = usize::from(clusters >= 3) + usize::from(clusters >= 4);
    let pool: Vec<usize> = order[spared..].to_vec();
    let crashes = (b.topo.nodes() / 4).max(2);
    for i in 0..crashes {
        let cluster = pool[rng.random_range(0..pool.len())];
        let node = b.topo.nodes_of(cluster).start + rng.random_range(0..b.topo.replicas);
        let at = rng.random_range(from..to.saturating_sub(10 * S).max(from + 1));
        let down_us = rng.random_range(2 * S..20 * S);
        if i % 2 == 0 {
            b.at(at, Action::CrashOnLazyWrite { node, down_us });
        } else {
            b.outage(node, at, down_us);
        }
    }
}

/// A forger, a replayer and an equivocator among otherwise honest clusters.
fn byzantine(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    b.plan.roles = pick_roles(b.topo.clusters.len(), rng);
}

/// A random mix: splits, one-way cuts, isolated nodes, clogged links, loss bursts,
/// crashes and cluster outages, one after another and overlapping; byzantine members
/// half of the time.
fn chaos(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    if rng.random_bool(0.5) {
        b.plan.roles = pick_roles(b.topo.clusters.len(), rng);
    }
    let (from, to) = b.safety_span();
    let mut t = from;
    while t + 5 * S < to {
        let length = rng.random_range(5 * S..25 * S);
        chaos_episode(b, rng, t, (t + length).min(to));
        t += rng.random_range(3 * S..10 * S);
    }
}

fn chaos_episode(b: &mut Builder<'_>, rng: &mut ChaCha8Rng, start: u64, end: u64) {
    let nodes = b.topo.nodes();
    let clusters = b.topo.clusters.len();
    let random_clusters = |rng: &mut ChaCha8Rng| -> Vec<usize> {
        (0..clusters).filter(|_| rng.random_bool(0.4)).collect()
    };
    match rng.random_range(0..7) {
        0 => {
            let side = b.nodes_of_clusters(&random_clusters(rng));
            b.fault(start, end, Fault::Split { side }, "split");
        }
        1 => {
            let from = b.nodes_of_clusters(&random_clusters(rng));
            let to = b.nodes_of_clusters(&random_clusters(rng));
            b.fault(start, end, Fault::OneWay { from, to }, "one-way");
        }
        2 => {
            let node = rng.random_range(0..nodes);
            let label = format!("{} isolated", b.topo.members[node]);
            b.fault(start, end, Fault::Isolate { node }, label);
        }
        3 => {
            let a = b.nodes_of_clusters(&random_clusters(rng));
            let c = b.nodes_of_clusters(&random_clusters(rng));
            let clog = Fault::Clog {
                a,
                b: c,
                extra_delay_us: rng.random_range(500_000..3 * S),
                loss: rng.random_range(0.3..0.7),
            };
            b.fault(start, end, clog, "clog");
        }
        4 => {
            b.at(start, Action::SetLinks(LinkParams::LOSSY));
            if end < b.plan.heal_at_us {
                b.at(end, Action::SetLinks(b.plan.base_links));
            }
        }
        5 => {
            let cluster = rng.random_range(0..clusters);
            for node in b.topo.nodes_of(cluster) {
                b.outage(node, start, end - start);
            }
        }
        _ => {
            let node = rng.random_range(0..nodes);
            b.outage(node, start, end - start);
        }
    }
}

// ----- affinity: traffic policy under readiness changes, deaths and latency changes -----

/// One way, what the `affinity` scenario's latency changes add to a link...
const AFFINITY_EXTRA_ONE_WAY_US: u64 = 40_000;
/// ...up to this much one way in all: with jitter, a round trip then stays well under
/// the WAN probe timeout (400 ms), so a slower link never looks like a dead one.
const AFFINITY_ONE_WAY_MAX_US: u64 = 150_000;

/// The services `local`, `remote` and `nearest` (`workload::AFFINITY_SERVICES`), the
/// first two exported by every cluster, `nearest` by about half of them (so that the
/// others choose among remote origins by round trip). In the safety phase, at fixed
/// offsets, with the clusters drawn from the seed:
/// - +0 s: the `nearest` exporter nearest to most other clusters gets slower links to
///   every region (`AFFINITY_EXTRA_ONE_WAY_US`): importers move to the next nearest;
/// - +5 s to +20 s: one cluster's `local` endpoints are not ready: its importers fail
///   over to the remote origins, then return;
/// - +8 s: a `nearest` exporter is killed for good: traffic leaves it within SWIM's
///   detection bound;
/// - +25 s to +40 s: `remote` endpoints are not ready everywhere but in one cluster:
///   every importer sends to that one, and that cluster's importers to their own;
/// - +30 s to +45 s: the origin of `nearest` most importers use is not ready;
/// - +42 s to +72 s: all replicas of a cluster that does not export `nearest` are down
///   (not at +40 s, when that cluster publishes its `remote` endpoints ready again: a
///   record published at the instant of a crash never leaves its cluster);
/// - +45 s: one link between a cluster and its nearest `nearest` exporter gets slower;
/// - +50 s to +60 s: one cluster's endpoints of all three services are not ready.
///
/// Steps that do not fit in the safety phase are left out; each ends before healing.
fn affinity(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    b.plan.base_links = LinkParams::BACKGROUND_IN_ORDER;
    let clusters = b.topo.clusters.len();
    let mut order: Vec<usize> = (0..clusters).collect();
    order.shuffle(rng);
    let exporting = clusters
        .div_ceil(2)
        .max(2)
        .min(clusters.saturating_sub(1))
        .max(1);
    let mut nearest_exporters = vec![false; clusters];
    for c in &order[..exporting] {
        nearest_exporters[*c] = true;
    }
    b.plan.affinity = Some(AffinityPlan {
        exporters: vec![
            vec![true; clusters],
            vec![true; clusters],
            nearest_exporters.clone(),
        ],
    });
    let roles = AffinityRoles::draw(b.topo, &order, &nearest_exporters);
    let (from, to) = b.safety_span();
    let span = |b: &mut Builder<'_>, start_s: u64, end_s: u64, cluster: usize, service: usize| {
        let (start, end) = (from + start_s * S, (from + end_s * S).min(to - 1));
        if start < end {
            let ready = |ready| Action::SetReady {
                cluster,
                service,
                ready,
            };
            b.at(start, ready(false));
            b.at(end, ready(true));
        }
    };
    if let Some(slow) = roles.slow {
        let region = b.topo.clusters[slow].region;
        for r in other_regions(b.topo, region) {
            affinity_latency(b, from, region, r);
        }
    }
    span(b, 5, 20, roles.local, 0);
    if let Some(killed) = roles.killed
        && from + 8 * S < to
    {
        b.at(from + 8 * S, Action::KillCluster { cluster: killed });
    }
    for c in (0..clusters).filter(|c| *c != roles.remote_survivor) {
        span(b, 25, 40, c, 1);
    }
    if let Some(nearest) = roles.nearest {
        span(b, 30, 45, nearest, 2);
    }
    if let Some(down) = roles.outage
        && from + 42 * S < to
    {
        for node in b.topo.nodes_of(down) {
            b.outage(node, from + 42 * S, 30 * S);
        }
    }
    if let Some((a, c)) = roles.slow_pair
        && from + 45 * S < to
    {
        let (ra, rc) = (b.topo.clusters[a].region, b.topo.clusters[c].region);
        affinity_latency(b, from + 45 * S, ra, rc);
    }
    for service in 0..3 {
        span(b, 50, 60, roles.all_unready, service);
    }
}

/// The clusters each step of the `affinity` scenario acts on.
struct AffinityRoles {
    /// Killed for good (a `nearest` exporter), with 3 clusters or more.
    killed: Option<usize>,
    /// The `nearest` exporter that gets slower links.
    slow: Option<usize>,
    /// Its `local` endpoints go not ready for a while.
    local: usize,
    /// The only cluster whose `remote` endpoints stay ready for a while.
    remote_survivor: usize,
    /// Its `nearest` endpoints go not ready for a while.
    nearest: Option<usize>,
    /// All its replicas go down for a while (a cluster not exporting `nearest`), with
    /// 4 clusters or more.
    outage: Option<usize>,
    /// (importer, exporter) whose link gets slower later.
    slow_pair: Option<(usize, usize)>,
    /// Its endpoints of every affinity service go not ready for a while.
    all_unready: usize,
}

impl AffinityRoles {
    fn draw(topo: &Topology, order: &[usize], exporters: &[bool]) -> Self {
        let clusters = order.len();
        let killed = (clusters >= 3).then(|| order[0]);
        let outage = (clusters >= 4).then(|| order[clusters - 1]);
        let pick = |i: usize| order[i.min(clusters - 1)];
        let candidates: Vec<usize> = (0..clusters)
            .filter(|c| exporters[*c] && Some(*c) != killed)
            .collect();
        let importers: Vec<usize> = (0..clusters).filter(|c| !exporters[*c]).collect();
        let one_way = |a: usize, c: usize, slow: Option<usize>| {
            let (ra, rc) = (topo.clusters[a].region, topo.clusters[c].region);
            let base = crate::network::regions::one_way_us(ra, rc);
            let slower = slow.is_some_and(|s| s == a || s == c) && ra != rc;
            if slower {
                extra_one_way(base) + base
            } else {
                base
            }
        };
        let nearest_of = |importer: usize, slow: Option<usize>| {
            candidates
                .iter()
                .copied()
                .min_by_key(|c| (one_way(importer, *c, slow), *c))
        };
        // The exporter nearest to the most importers (ties: the lower index).
        let most_used = |slow: Option<usize>| {
            let mut uses = vec![0usize; clusters];
            for i in &importers {
                if let Some(c) = nearest_of(*i, slow) {
                    uses[c] += 1;
                }
            }
            candidates
                .iter()
                .copied()
                .max_by_key(|c| (uses[*c], std::cmp::Reverse(*c)))
        };
        let slow = most_used(None);
        let nearest = most_used(slow);
        // Later, one importer's link to its nearest exporter other than the slow one.
        let pair_importer = importers.iter().copied().find(|i| Some(*i) != outage);
        let slow_pair = pair_importer.and_then(|i| {
            let others = candidates.iter().copied().filter(|c| Some(*c) != slow);
            others
                .min_by_key(|c| (one_way(i, *c, slow), *c))
                .map(|c| (i, c))
        });
        Self {
            killed,
            slow,
            local: pick(1),
            remote_survivor: pick(1),
            nearest,
            outage,
            slow_pair,
            all_unready: pick(2),
        }
    }
}

/// The extra one-way latency a link of base latency `base_us` gets: the scenario's
/// extra, capped so that the link stays under [`AFFINITY_ONE_WAY_MAX_US`].
fn extra_one_way(base_us: u64) -> u64 {
    AFFINITY_EXTRA_ONE_WAY_US.min(AFFINITY_ONE_WAY_MAX_US.saturating_sub(base_us))
}

/// At `at_us`, links between regions `a` and `b` get the scenario's extra latency.
fn affinity_latency(b: &mut Builder<'_>, at_us: u64, a: usize, c: usize) {
    let base = crate::network::regions::one_way_us(a, c);
    let extra_one_way_us = extra_one_way(base);
    b.at(
        at_us,
        Action::SetLatency {
            a,
            b: c,
            extra_one_way_us,
        },
    );
}

/// The regions of the clusters other than `region`, each once.
fn other_regions(topo: &Topology, region: usize) -> Vec<usize> {
    let mut regions: Vec<usize> = topo
        .clusters
        .iter()
        .map(|c| c.region)
        .filter(|r| *r != region)
        .collect();
    regions.sort_unstable();
    regions.dedup();
    regions
}

// ----- lease scenarios: the clusters of `lease::competitors` keep asking for the lease -----

/// The lease is granted with 10 s timers (the WAN preset); faults start once a holder
/// has had time to appear.
const LEASE_US: u64 = 10 * S;

/// The holder's cluster is cut off from all others, twice, while other replicas crash
/// and restart (churn during the partition).
fn lease_partition(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    let (from, to) = b.lease_span();
    let mut t = from;
    while t + 3 * LEASE_US < to {
        let until = t + 3 * LEASE_US;
        b.at(t, Action::IsolateLeaseHolder { until_us: until });
        let node = rng.random_range(0..b.topo.nodes());
        b.outage(node, t + S, rng.random_range(2 * S..8 * S));
        t = until + 2 * LEASE_US;
    }
}

/// The holder's process stops for longer than a lease, with a write in flight.
fn lease_pause(b: &mut Builder<'_>) {
    let (from, to) = b.lease_span();
    let mut t = from;
    while t + 3 * LEASE_US < to {
        b.at(
            t,
            Action::PauseLeaseHolder {
                pause_us: LEASE_US * 3 / 2,
            },
        );
        t += 3 * LEASE_US;
    }
}

/// The voters in a ring: each reaches only its two neighbours, so every voter is in a
/// majority with its neighbours, and the majorities overlap.
fn lease_ring(b: &mut Builder<'_>) {
    let voters = crate::lease::voter_count(b.topo.clusters.len());
    let (from, to) = b.safety_span();
    for i in 0..voters {
        for j in i + 1..voters {
            let adjacent = j - i == 1 || (i == 0 && j == voters - 1);
            if adjacent {
                continue;
            }
            let a = b.nodes_of_clusters(&[i]);
            let c = b.nodes_of_clusters(&[j]);
            b.fault(
                from,
                to,
                Fault::OneWay {
                    from: a.clone(),
                    to: c.clone(),
                },
                "ring",
            );
            b.fault(from, to, Fault::OneWay { from: c, to: a }, "ring");
        }
    }
}

/// Voters (each its cluster's publisher) crash and restart, alternately with their disk
/// and without it: then their lease promises and their own record versions are gone.
fn lease_restart(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    let voters = crate::lease::voter_count(b.topo.clusters.len());
    let (from, to) = b.lease_span();
    let mut t = from;
    let mut lose = false;
    while t + 2 * LEASE_US < to {
        let node = b.topo.publisher_of(rng.random_range(0..voters));
        let down = rng.random_range(S..LEASE_US);
        b.at(t, Action::Crash { node });
        if lose {
            b.at(t + 1, Action::LoseDisk { node });
        }
        b.at(t + down, Action::Restart { node });
        lose = !lose;
        t += down + rng.random_range(2 * S..LEASE_US);
    }
}

/// Clocks drift within the bound, and the holder's clock steps forward now and then.
fn lease_drift(b: &mut Builder<'_>, rng: &mut ChaCha8Rng) {
    let (from, to) = b.lease_span();
    let mut t = from;
    while t < to {
        let by_us = rng.random_range(S / 10..LEASE_US / 2) as i64;
        b.at(t, Action::JumpLeaseHolderClock { by_us });
        t += rng.random_range(5 * S..15 * S);
    }
}

/// Past the drift bound: every clock runs 10% fast, then the holder's clock turns 10%
/// slow and its cluster is cut off. Its own validity now outlasts the voters' timers
/// by about a fifth of a lease, and the majority side elects a new holder while the
/// old one still believes it holds: the lease safety checker must report it.
fn lease_drift_beyond(b: &mut Builder<'_>) {
    let (from, to) = b.lease_span();
    let mut t = from;
    while t + 3 * LEASE_US < to {
        b.at(
            t,
            Action::DriftLeaseHolderClock {
                drift_ppm: -crate::lease::DRIFT_BEYOND_PPM,
            },
        );
        b.at(
            t + 1,
            Action::IsolateLeaseHolder {
                until_us: t + 3 * LEASE_US,
            },
        );
        t += 5 * LEASE_US;
    }
}

/// A random minority of clusters: (n - 1) / 2 of them.
fn minority(clusters: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..clusters).collect();
    order.shuffle(rng);
    order.truncate((clusters.saturating_sub(1)) / 2);
    order.sort_unstable();
    order
}

/// Up to three byzantine clusters, always leaving at least one honest one.
fn pick_roles(clusters: usize, rng: &mut ChaCha8Rng) -> Roles {
    let mut order: Vec<usize> = (0..clusters).collect();
    order.shuffle(rng);
    let usable = clusters.saturating_sub(1).min(3);
    let pick = |i: usize| (i < usable).then(|| order[i]);
    Roles {
        forger: pick(0),
        replayer: pick(1),
        equivocator: pick(2),
    }
}
