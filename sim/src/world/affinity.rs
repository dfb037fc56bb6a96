//! The `affinity` scenario's side of the world: ground truth for the traffic-policy
//! checks (readiness as fed to publishers, deaths, latency changes), the imports the
//! sinks hold, and when the checks run (after every step of a node, at every deadline,
//! and once a second for `nearest`).

use shoal_node::core::{ImportedService, Liveness, Node};

use super::{Event, World};
use crate::invariants::affinity::{
    AffinityBounds, AffinityCheck, ImportState, Importer, RttTruth, ewma_lag_us, ready_bound_us,
};
use crate::invariants::withdrawal::detection_bound_us;
use crate::scenario::Action;
use crate::workload::AFFINITY_SERVICES;

/// How often `nearest` choices are judged against true round trips.
const NEAREST_CHECK_PERIOD_US: u64 = 1_000_000;

/// The checker and what it needs from the world.
#[derive(Debug)]
pub(super) struct AffinityWorld {
    pub(super) check: AffinityCheck,
    /// [affinity service]: its index in the key space.
    services: Vec<usize>,
    /// Every latency change: (when, region, region, change of the round trip).
    latency_changes: Vec<(u64, usize, usize, u64)>,
}

impl AffinityWorld {
    fn service_of(&self, index: usize) -> Option<usize> {
        self.services.iter().position(|s| *s == index)
    }
}

impl World {
    /// Builds the checker, with its bounds from the first node's configuration.
    pub(super) fn set_up_affinity(&mut self) {
        let services: Vec<usize> = (0..AFFINITY_SERVICES.len())
            .filter_map(|k| self.workload.affinity_service(k))
            .collect();
        if services.len() != AFFINITY_SERVICES.len() {
            return;
        }
        let config = &self.topo.configs[0];
        let bounds = AffinityBounds {
            ready_us: ready_bound_us(config.anti_entropy_period_ms, self.largest_rtt_us()),
            down_us: detection_bound_us(&config.swim, self.topo.nodes()),
            grace_us: config.withdraw_grace_ms * 1_000,
            margin_us: config.nearest_margin_ms * 1_000,
            probe_round_us: self.topo.nodes().saturating_sub(1).max(1) as u64
                * config.swim.probe_period_ms
                * 1_000,
        };
        let node_cluster = (0..self.topo.nodes())
            .map(|n| self.topo.cluster_of(n))
            .collect();
        let names = AFFINITY_SERVICES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        let clusters = self.topo.clusters.len();
        self.affinity = Some(Box::new(AffinityWorld {
            check: AffinityCheck::new(bounds, clusters, node_cluster, names),
            services,
            latency_changes: Vec::new(),
        }));
        self.queue
            .push(self.plan.exports_at_us, Event::AffinityTick);
    }

    /// The largest round trip between two clusters the run may see: the region model,
    /// the largest extra latency the plan sets, and jitter both ways.
    fn largest_rtt_us(&self) -> u64 {
        let extra = self
            .plan
            .actions
            .iter()
            .filter_map(|(_, a)| match a {
                Action::SetLatency {
                    extra_one_way_us, ..
                } => Some(*extra_one_way_us),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let table = crate::network::regions::LatencyTable::default();
        let regions: Vec<usize> = self.topo.clusters.iter().map(|c| c.region).collect();
        let one_way = regions
            .iter()
            .flat_map(|a| regions.iter().map(|b| table.one_way_us(*a, *b)))
            .max()
            .unwrap_or(0)
            + extra;
        let jitter = 1.0 + self.plan.base_links.jitter;
        (2.0 * one_way as f64 * jitter).ceil() as u64
    }

    /// The sinks of node `n` now hold `import` for key-space service `index`.
    pub(super) fn affinity_applied(
        &mut self,
        n: usize,
        index: usize,
        import: Option<&ImportedService>,
    ) {
        let Some(aff) = self.affinity.as_mut() else {
            return;
        };
        let Some(k) = aff.service_of(index) else {
            return;
        };
        let keys = &self.keys;
        let state = import.map(|i| ImportState::of(i, |c| keys.cluster_index(c)));
        aff.check.applied(self.now, n, k, state);
    }

    /// After node `n` handled an input: the safety check of its own view and the
    /// bounded checks against ground truth, for every affinity service.
    pub(super) fn check_affinity(&mut self, n: usize) {
        if self.affinity.is_none() {
            return;
        }
        let since = self.node_since(n);
        let Some(core) = self.nodes[n].core.as_ref() else {
            return;
        };
        let aff = self.affinity.as_mut().expect("checked above");
        let topo = &self.topo;
        let up = |c: usize| cluster_up(core, &topo.clusters[c].id);
        let importer = Importer {
            node: n,
            cluster: topo.cluster_of(n),
            since_us: since,
            up: &up,
        };
        let mut found = Vec::new();
        for k in 0..aff.check.services() {
            if let Err(e) = aff.check.check_view(&importer, k) {
                found.push(e);
            }
            found.extend(aff.check.check_truth(self.now, &importer, k));
        }
        for e in found {
            self.violations.report(self.now, "affinity", e);
        }
    }

    /// A deadline of the bounded checks may have passed: every live node is checked.
    pub(super) fn check_affinity_all(&mut self) {
        for n in 0..self.topo.nodes() {
            self.check_affinity(n);
        }
    }

    /// Once a second: `nearest` choices against true round trips, while no fault is
    /// active.
    pub(super) fn affinity_tick(&mut self) {
        if self.net.faults.is_empty() {
            for n in 0..self.topo.nodes() {
                if self.nodes[n].reachable {
                    self.check_nearest(n);
                }
            }
        }
        let at = self.now + NEAREST_CHECK_PERIOD_US;
        self.queue.push(at, Event::AffinityTick);
    }

    fn check_nearest(&mut self, n: usize) {
        let since = self.node_since(n);
        let Some(core) = self.nodes[n].core.as_ref() else {
            return;
        };
        let Some(aff) = self.affinity.as_mut() else {
            return;
        };
        let topo = &self.topo;
        let own = topo.cluster_of(n);
        let measured: Vec<&shoal_proto::ClusterId> = core.round_trips().map(|(c, _)| c).collect();
        let rtt = |c: usize| {
            if c == own {
                return RttTruth::LOCAL;
            }
            let m = topo.publisher_of(c);
            let (min_us, max_us) = self.net.round_trip_range_us(n, m);
            let (rn, rc) = (self.net.region_of(n), self.net.region_of(m));
            let changes = aff
                .latency_changes
                .iter()
                .filter(|(_, a, b, _)| (*a, *b) == (rn, rc) || (*a, *b) == (rc, rn))
                .map(|(at, _, _, delta)| (self.now - at, *delta));
            let replicas = topo
                .nodes_of(c)
                .filter(|m| self.nodes[*m].core.is_some())
                .count()
                .max(1);
            RttTruth {
                min_us,
                max_us,
                lag_us: ewma_lag_us(changes, aff.check.bounds().probe_round_us, replicas as u64),
                measured: measured.contains(&&topo.clusters[c].id),
            }
        };
        let up = |c: usize| cluster_up(core, &topo.clusters[c].id);
        let importer = Importer {
            node: n,
            cluster: own,
            since_us: since,
            up: &up,
        };
        let truths: Vec<RttTruth> = (0..topo.clusters.len()).map(rtt).collect();
        let mut found = Vec::new();
        for k in 0..aff.check.services() {
            if let Err(e) = aff
                .check
                .check_nearest(self.now, &importer, k, &|c| truths[c])
            {
                found.push(e);
            }
        }
        for e in found {
            self.violations.report(self.now, "affinity", e);
        }
    }

    /// Checks at the deadlines a change now sets: `ready` for readiness, `down` for
    /// deaths and (re)starts.
    fn schedule_affinity_checks(&mut self, ready: bool, down: bool) {
        let Some(aff) = self.affinity.as_ref() else {
            return;
        };
        let bounds = aff.check.bounds();
        if ready {
            self.queue
                .push(self.now + bounds.ready_us, Event::AffinityCheck);
        }
        if down {
            self.queue
                .push(self.now + bounds.down_us, Event::AffinityCheck);
        }
    }

    /// A node (re)started or reconnected: its deadlines start now.
    pub(super) fn affinity_node_since(&mut self) {
        self.schedule_affinity_checks(true, true);
    }

    /// Node `n` crashed; if it was its cluster's last replica, the cluster is dead.
    pub(super) fn affinity_crashed(&mut self, n: usize, cluster_dead: bool) {
        let Some(aff) = self.affinity.as_mut() else {
            return;
        };
        aff.check.node_down(n);
        if cluster_dead {
            aff.check.cluster_died(self.now, self.topo.cluster_of(n));
            self.schedule_affinity_checks(false, true);
        }
    }

    pub(super) fn affinity_revived(&mut self, cluster: usize) {
        if let Some(aff) = self.affinity.as_mut() {
            aff.check.cluster_revived(self.now, cluster);
        }
    }

    /// `cluster`'s publisher is about to be fed its exports: ground truth follows them.
    /// (Before the feed: the checks after the publisher's step judge it by the new
    /// truth.)
    pub(super) fn sync_affinity_truth(&mut self, cluster: usize) {
        if !self.alive(self.topo.publisher_of(cluster)) {
            return;
        }
        let Some(aff) = self.affinity.as_mut() else {
            return;
        };
        for k in 0..aff.check.services() {
            let (exported, ready) = self.workload.affinity_state(cluster, k);
            aff.check.set_origin(self.now, cluster, k, exported, ready);
        }
        self.schedule_affinity_checks(true, false);
    }

    /// The scenario turns `cluster`'s endpoints of affinity service `k` ready or not.
    pub(super) fn set_ready(&mut self, cluster: usize, k: usize, ready: bool) {
        let Some(change) = self.workload.set_ready(cluster, k, ready) else {
            return;
        };
        let publisher = self.topo.publisher_of(cluster);
        if self.alive(publisher) {
            self.sync_affinity_truth(cluster);
            self.feed(publisher, change);
        }
    }

    /// Links between regions `a` and `b` now take `extra_us` more one way.
    pub(super) fn set_latency(&mut self, a: usize, b: usize, extra_us: u64) {
        let before = self.net.set_extra_one_way_us(a, b, extra_us);
        let delta_rtt = 2 * before.abs_diff(extra_us);
        if let Some(aff) = self.affinity.as_mut()
            && delta_rtt > 0
        {
            aff.latency_changes.push((self.now, a, b, delta_rtt));
        }
    }
}

/// Cluster `c` is up in `core`'s view: alive, or not heard from yet since its start.
fn cluster_up(core: &Node, c: &shoal_proto::ClusterId) -> bool {
    matches!(core.liveness(c), Liveness::Alive | Liveness::Unknown { .. })
}
