//! The fault schedule, the workload and the byzantine injections.

use rand::RngExt;
use shoal_proto::wire::Channel;

use super::{CONVERGENCE_PERIOD_US, Event, Phase, World};
use crate::network::faults::Fault;
use crate::report::add_stats;
use crate::scenario::Action;

/// Gap between two byzantine injections: uniform in this range.
const BYZANTINE_GAP_US: std::ops::Range<u64> = 500_000..2_000_000;

impl World {
    pub(super) fn act(&mut self, action: Action) {
        match action {
            Action::AddFault { id, fault, label } => self.add_fault(id, fault, label),
            Action::RemoveFault { id } => {
                self.net.faults.remove(id, self.now);
                self.timeline.fault_ended(id, self.now);
                self.recompute_reachability();
            }
            Action::SetLinks(params) => {
                self.net.params = params;
                let lossy = params.loss > self.plan.base_links.loss;
                self.timeline.links(lossy, self.now);
            }
            Action::Crash { node } => self.crash(node),
            Action::CrashOnLazyWrite { node, down_us } => {
                if self.alive(node) {
                    self.nodes[node].crash_on_lazy = Some(down_us);
                }
            }
            Action::Restart { node } => self.boot(node),
            Action::KillCluster { cluster } => {
                self.killed[cluster] = true;
                for node in self.topo.nodes_of(cluster) {
                    self.crash(node);
                }
            }
            Action::IsolateLeaseHolder { until_us } => self.isolate_lease_holder(until_us),
            Action::PauseLeaseHolder { pause_us } => self.pause_lease_holder(pause_us),
            Action::JumpLeaseHolderClock { by_us } => self.jump_lease_holder_clock(by_us),
            Action::DriftLeaseHolderClock { drift_ppm } => {
                self.drift_lease_holder_clock(drift_ppm);
            }
            Action::LoseDisk { node } => {
                if !self.alive(node) {
                    self.nodes[node].disk.wipe();
                }
            }
            Action::SetReady {
                cluster,
                service,
                ready,
            } => self.set_ready(cluster, service, ready),
            Action::SetLatency {
                a,
                b,
                extra_one_way_us,
            } => self.set_latency(a, b, extra_one_way_us),
            Action::Heal => self.heal(),
        }
    }

    pub(super) fn add_fault(&mut self, id: u32, fault: Fault, label: String) {
        let rows = self.fault_rows(&fault);
        self.timeline.fault_started(id, label, rows, self.now);
        self.net.faults.add(id, fault);
        self.propagation.censor_all();
        self.recompute_reachability();
    }

    /// The clusters a fault touches, for the timeline.
    fn fault_rows(&self, fault: &Fault) -> Vec<usize> {
        let mut rows: Vec<usize> = match fault {
            Fault::Split { side } => side.iter().collect(),
            Fault::OneWay { from, to } => from.iter().chain(to.iter()).collect(),
            Fault::Isolate { node } => vec![*node],
            Fault::Clog { a, b, .. } => a.iter().chain(b.iter()).collect(),
        };
        rows.iter_mut().for_each(|n| *n = self.topo.cluster_of(*n));
        rows.dedup();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// Kills a node's process: its core and unflushed writes are gone.
    pub(super) fn crash(&mut self, n: usize) {
        let Some(core) = self.nodes[n].core.take() else {
            return;
        };
        add_stats(&mut self.retired, core.stats());
        drop(core);
        let node = &mut self.nodes[n];
        node.disk.crash();
        node.incarnation += 1;
        node.wake_at = None;
        node.queued_wake = None;
        node.flush_queued = false;
        node.crash_on_lazy = None;
        self.crashes += 1;
        for c in self.tracker.clear_node(n) {
            self.withdrawal.node_done(c, n, self.now, false);
        }
        self.propagation.node_down(n);
        let cluster = self.topo.cluster_of(n);
        let member = self.topo.members[n].to_string();
        self.timeline.node_down(cluster, n, member, self.now);
        let cluster_dead = self.topo.nodes_of(cluster).all(|m| !self.alive(m));
        self.affinity_crashed(n, cluster_dead);
        if cluster_dead {
            let importers = (0..self.topo.nodes())
                .filter(|m| self.alive(*m) && self.tracker.imports(*m, cluster))
                .collect();
            self.withdrawal.died(cluster, self.now, importers);
            let at = self.now + self.withdrawal.bound_us();
            self.queue.push(
                at,
                Event::WithdrawalCheck {
                    cluster: cluster as u32,
                },
            );
        }
        self.recompute_reachability();
    }

    /// Crash now, restart `down_us` later (or at healing).
    pub(super) fn crash_for(&mut self, n: usize, down_us: u64) {
        self.crash(n);
        let at = self.now + down_us;
        if at < self.plan.heal_at_us {
            let restart = Box::new(Action::Restart { node: n });
            self.queue.push(at, Event::Act(restart));
        }
    }

    /// Lifts every fault, restarts crashed nodes (not killed clusters), stops the
    /// workload and the byzantine members, and starts the liveness phase.
    fn heal(&mut self) {
        self.net.faults.clear(self.now);
        self.net.params = self.plan.base_links;
        self.timeline.heal(self.now);
        self.workload_on = false;
        self.phase = Phase::Liveness;
        for n in 0..self.topo.nodes() {
            self.nodes[n].crash_on_lazy = None;
            self.boot(n);
        }
        self.recompute_reachability();
        for n in 0..self.topo.nodes() {
            self.deep_check(n);
        }
        let at = self.now + CONVERGENCE_PERIOD_US;
        self.queue.push(at, Event::Converge);
    }

    /// Every publisher feeds its initial exports; changes start.
    pub(super) fn initial_exports(&mut self) {
        self.workload_on = self.phase == Phase::Safety;
        for cluster in 0..self.topo.clusters.len() {
            let publisher = self.topo.publisher_of(cluster);
            self.sync_affinity_truth(cluster);
            for change in self.workload.current(cluster) {
                self.feed(publisher, change);
            }
            let at = self.now + self.workload.next_gap_us(&mut self.rng);
            let cluster = cluster as u32;
            self.queue.push(at, Event::Change { cluster });
        }
    }

    /// One cluster's exports change; its publisher (if up) feeds the change.
    pub(super) fn change_exports(&mut self, cluster: usize) {
        if !self.workload_on {
            return;
        }
        let change = self.workload.mutate(&mut self.rng, cluster);
        self.feed(self.topo.publisher_of(cluster), change);
        let at = self.now + self.workload.next_gap_us(&mut self.rng);
        let cluster = cluster as u32;
        self.queue.push(at, Event::Change { cluster });
    }

    /// The forger and the replayer strike; the equivocator acts on publication.
    pub(super) fn byzantine_tick(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let convergence = &self.convergence;
        let mut injections = self
            .byzantine
            .forge(&mut self.rng, &self.topo, &self.keys, |i| {
                convergence.latest(i)
            });
        injections.extend(self.byzantine.replay(&mut self.rng, &self.topo));
        self.inject(injections);
        let at = self.now + self.rng.random_range(BYZANTINE_GAP_US);
        self.queue.push(at, Event::ByzantineTick);
    }

    pub(super) fn inject(&mut self, injections: Vec<crate::byzantine::Injection>) {
        for i in injections {
            if self.alive(i.from) {
                self.traffic.injected += 1;
                self.transmit(i.from, i.to, Channel::Stream, i.bytes);
            }
        }
    }
}
