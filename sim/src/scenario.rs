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
    pub change_mean_us: u64,
    pub exports_at_us: u64,
    pub faults_from_us: u64,
    pub heal_at_us: u64,
    pub end_us: u64,
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
