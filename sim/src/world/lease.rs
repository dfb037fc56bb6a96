//! The lease workload and its checks: competitors acquire, holders write to the
//! fenced store, faults aimed at the holder, and invariants 5 and 6 after every event.

use rand::RngExt;
use shoal_node::core::LeaseRequest;
use shoal_proto::FencingToken;

use super::{Event, World};
use crate::clock::NodeClock;
use crate::invariants::lease_safety::{Holding, LeaseSafety};
use crate::lease::{self, FencedStore};
use crate::network::faults::{Fault, NodeSet};
use crate::spec::Scenario;

/// Fault ids the world makes itself, apart from the plan's.
const WORLD_FAULT_IDS: u32 = 1 << 30;

/// The lease side of a run (lease scenarios only).
#[derive(Debug)]
pub(super) struct LeaseWorld {
    pub(super) safety: LeaseSafety,
    pub(super) store: FencedStore,
    /// The cluster holding the lease at the last event, with its token.
    holder: Option<(usize, FencingToken)>,
    /// When a fault hit the holder, and which cluster it was: the start of a takeover.
    cut: Option<(u64, usize)>,
    pub(super) takeover_ms: Vec<f64>,
    held_after_heal: bool,
    next_fault_id: u32,
}

impl LeaseWorld {
    pub(super) fn new() -> Self {
        Self {
            safety: LeaseSafety::new(),
            store: FencedStore::default(),
            holder: None,
            cut: None,
            takeover_ms: Vec::new(),
            held_after_heal: false,
            next_fault_id: WORLD_FAULT_IDS,
        }
    }
}

impl World {
    /// Lease scenarios: voters and lease timing in every config, and clocks that drift
    /// within the bound (beyond it for `lease-drift-beyond`).
    pub(super) fn set_up_lease(&mut self) {
        let ids: Vec<_> = self.topo.clusters.iter().map(|c| c.id.clone()).collect();
        let config = lease::config(&ids);
        let bound = i64::from(config.drift_ppm);
        for n in 0..self.topo.nodes() {
            self.topo.configs[n].lease = config.clone();
            let drift = match self.spec.scenario {
                Scenario::LeaseDriftBeyond => lease::DRIFT_BEYOND_PPM,
                _ => self.rng.random_range(-bound..=bound),
            };
            self.nodes[n].clock = NodeClock::drifting(drift);
        }
        self.lease = Some(LeaseWorld::new());
        let liveness_at = self.plan.heal_at_us + 3 * config.lease_ms * 1_000;
        if liveness_at < self.plan.end_us {
            self.queue.push(liveness_at, Event::LeaseLiveness);
        }
        self.queue.push(self.plan.exports_at_us, Event::LeaseTick);
    }

    fn competes(&self, n: usize) -> bool {
        self.topo.is_publisher(n)
            && self.topo.cluster_of(n) < lease::competitor_count(self.topo.clusters.len())
    }

    /// A competitor's publisher asks for the lease (at the start, and after a restart).
    pub(super) fn request_lease(&mut self, n: usize) {
        if self.lease.is_none() || !self.competes(n) || !self.workload_started() {
            return;
        }
        let mut refused = None;
        self.with_node(n, |core, now| {
            refused = core
                .handle_lease_request(now, LeaseRequest::Acquire(lease::lease_name()))
                .err();
        });
        if let Some(e) = refused {
            self.violations.report(
                self.now,
                "driver",
                format!("node {n} refused a lease request: {e}"),
            );
        }
    }

    /// Every write period: each holder that reports write-ready writes.
    pub(super) fn lease_tick(&mut self) {
        if self.now == self.plan.exports_at_us {
            for n in 0..self.topo.nodes() {
                self.request_lease(n);
            }
        }
        for n in 0..self.topo.nodes() {
            if !self.competes(n) || self.paused(n) {
                continue;
            }
            let local = self.nodes[n].clock.local(self.now);
            let Some(core) = &self.nodes[n].core else {
                continue;
            };
            let status = core.lease_status(local, &lease::lease_name());
            if let (true, Some(token)) = (status.write_ready, status.token) {
                self.queue.push(
                    self.now + lease::STORE_DELAY_US,
                    Event::StoreWrite { token: token.0 },
                );
            }
        }
        self.queue
            .push(self.now + lease::WRITE_PERIOD_US, Event::LeaseTick);
    }

    pub(super) fn store_write(&mut self, token: u64) {
        if let Some(lease) = &mut self.lease {
            let rank = lease.safety.rank(FencingToken(token));
            lease.store.write(FencingToken(token), rank);
        }
    }

    pub(super) fn paused(&self, n: usize) -> bool {
        self.now < self.nodes[n].paused_until
    }

    /// After every event: who holds the lease at this true instant.
    pub(super) fn check_lease(&mut self) {
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let name = lease::lease_name();
        let mut holders = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let Some((token, valid_until)) = node.core.as_ref().and_then(|c| c.lease_held(&name))
            else {
                continue;
            };
            let until_us = node.clock.true_of(valid_until);
            if until_us > self.now {
                let cluster = self.topo.cluster_of(n);
                holders.push(Holding {
                    cluster,
                    token,
                    until_us,
                });
            }
        }
        for problem in lease.safety.observe(&holders) {
            self.violations.report(self.now, "lease safety", problem);
        }
        for (cluster, _) in lease.safety.fresh.clone() {
            // The new holder fences the store at once, as an application should.
            if let Some(h) = holders.iter().find(|h| h.cluster == cluster) {
                let token = h.token.0;
                self.queue.push(
                    self.now + lease::STORE_DELAY_US,
                    Event::StoreWrite { token },
                );
            }
            if let Some((at, from)) = lease.cut
                && from != cluster
            {
                lease.takeover_ms.push((self.now - at) as f64 / 1_000.0);
                lease.cut = None;
            }
        }
        lease.holder = holders.first().map(|h| (h.cluster, h.token));
        if self.now >= self.plan.heal_at_us && !holders.is_empty() {
            lease.held_after_heal = true;
        }
    }

    /// Invariant 6: with the network healed, a holder within 3 lease durations.
    pub(super) fn check_lease_liveness(&mut self) {
        if self.convergence.converged_at.is_some() {
            self.queue.push(self.now, Event::End);
        }
        if let Some(lease) = &self.lease
            && !lease.held_after_heal
        {
            self.violations.report(
                self.now,
                "lease liveness",
                "no holder within 3 lease durations of healing",
            );
        }
    }

    fn holder(&self) -> Option<usize> {
        self.lease.as_ref()?.holder.map(|(c, _)| c)
    }

    pub(super) fn isolate_lease_holder(&mut self, until_us: u64) {
        let Some(cluster) = self.holder() else {
            return;
        };
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        lease.cut = Some((self.now, cluster));
        lease.next_fault_id += 1;
        let id = lease.next_fault_id;
        let side = NodeSet::from_nodes(self.topo.nodes(), self.topo.nodes_of(cluster));
        self.add_fault(id, Fault::Split { side }, "lease holder cut off".into());
        if until_us < self.plan.heal_at_us {
            self.queue.push(
                until_us,
                Event::Act(Box::new(crate::scenario::Action::RemoveFault { id })),
            );
        }
    }

    pub(super) fn pause_lease_holder(&mut self, pause_us: u64) {
        let Some(cluster) = self.holder() else {
            return;
        };
        let n = self.topo.publisher_of(cluster);
        let token = self.lease.as_ref().and_then(|l| l.holder).map(|(_, t)| t.0);
        if let Some(lease) = self.lease.as_mut() {
            lease.cut = Some((self.now, cluster));
        }
        self.nodes[n].paused_until = self.now + pause_us;
        // The write it decided just before the pause goes out when it resumes.
        if let Some(token) = token {
            let at = self.now + pause_us + lease::STORE_DELAY_US;
            self.queue.push(at, Event::StoreWrite { token });
        }
    }

    pub(super) fn drift_lease_holder_clock(&mut self, drift_ppm: i64) {
        let Some(cluster) = self.holder() else {
            return;
        };
        let n = self.topo.publisher_of(cluster);
        self.nodes[n].clock.set_drift(self.now, drift_ppm);
    }

    pub(super) fn jump_lease_holder_clock(&mut self, by_us: i64) {
        let Some(cluster) = self.holder() else {
            return;
        };
        let n = self.topo.publisher_of(cluster);
        self.nodes[n].clock.jump(by_us);
        // Deadlines now fall earlier in true time: let the core look at once.
        self.with_node(n, |core, now| core.handle_timeout(now));
    }
}
