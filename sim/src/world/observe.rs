//! What the checkers see: records entering views, import changes, ground-truth
//! reachability, periodic deep checks and convergence.

use std::sync::Arc;

use rand::RngExt;
use shoal_node::core::{ImportChange, Liveness};
use shoal_proto::codec::{self, RECORD_BYTES_MAX};
use shoal_proto::{ClusterId, SignedRecord};

use super::{CONVERGENCE_PERIOD_US, DEEP_CHECK_PERIOD_US, DEEP_CHECKS_PER_PERIOD, Event, Phase};
use super::{SETTLE_US, World};
use crate::invariants::convergence::LiveState;
use crate::invariants::monotonicity;

impl World {
    /// A record entered node `n`'s view (it is in a `Persist` op): authenticity and
    /// monotonicity, then publication or arrival bookkeeping.
    pub(super) fn observe_record(&mut self, n: usize, record: &Arc<SignedRecord>) {
        if let Err(e) = self.authenticity.check(&self.topo.trust, record) {
            let member = &self.topo.members[n];
            self.violations.report(
                self.now,
                "authenticity",
                format!("node {n} ({member}): {e}"),
            );
        }
        let written = self.nodes[n].disk.written_version(&self.keys, record);
        if let Err(e) = monotonicity::check_write(written, record) {
            let member = &self.topo.members[n];
            self.violations.report(
                self.now,
                "monotonicity",
                format!("node {n} ({member}): {e}"),
            );
        }
        let cluster = self.topo.cluster_of(n);
        self.byzantine.observe(cluster, record);
        let Some(index) = self.keys.index_of(record) else {
            return;
        };
        let own = self.topo.is_publisher(n)
            && self.keys.cluster_index(&record.record.origin) == Some(cluster);
        let version = record.record.version;
        let newer = self
            .convergence
            .latest(index)
            .is_none_or(|l| l.record.version < version);
        if own && newer {
            self.published(n, index, record);
        } else {
            self.propagation.arrived(index, version, n, self.now);
        }
    }

    /// Origin `n` published a new version.
    fn published(&mut self, n: usize, index: usize, record: &Arc<SignedRecord>) {
        self.convergence.published(index, record);
        let size = codec::encode_limited::<_, RECORD_BYTES_MAX>(&**record).map_or(0, |b| b.len());
        self.traffic.record_bytes_total += size as u64;
        self.traffic.records_published += 1;
        if self.net.faults.is_empty() && self.member_connected(n) {
            let counted: Vec<usize> = (0..self.topo.nodes())
                .filter(|m| *m != n && self.member_connected(*m))
                .collect();
            let nodes = self.topo.nodes();
            let version = record.record.version;
            self.propagation
                .created(index, version, self.now, nodes, &counted);
        }
        let injections = self.byzantine.equivocate(&mut self.rng, &self.topo, record);
        self.inject(injections);
    }

    pub(super) fn apply_imports(&mut self, n: usize, changes: Vec<ImportChange>) {
        for change in changes {
            let Some(s) = self.keys.service_index(&change.service) else {
                continue;
            };
            let keys = &self.keys;
            let index = |c: &ClusterId| keys.cluster_index(c).map(|c| c as u32);
            let gained = change.sources.gained.iter().filter_map(index);
            let lost = change.sources.lost.iter().filter_map(index);
            let diff = self.tracker.apply(n, s, gained, lost);
            self.affinity_applied(n, s, change.import.as_deref());
            for c in diff.lost {
                self.import_lost(n, c);
            }
            for c in diff.gained {
                self.import_gained(n, c);
            }
        }
        self.timeline
            .import_changed(self.topo.cluster_of(n), self.now);
    }

    /// Node `n` stopped importing cluster `c` altogether.
    fn import_lost(&mut self, n: usize, c: usize) {
        let id = &self.topo.clusters[c].id;
        let withdrawn = self.nodes[n]
            .core
            .as_ref()
            .is_some_and(|core| matches!(core.liveness(id), Liveness::Withdrawn { .. }));
        if withdrawn {
            match self.reach(n, c) {
                Reach::Clear => self.withdrawal.false_withdrawals += 1,
                Reach::Clogged => self.withdrawal.clogged_withdrawals += 1,
                Reach::None => {}
            }
        }
        if let Some(dead) = self.withdrawal.dead_since(c) {
            let since = self.node_since(n).max(dead);
            self.withdrawal.dropped_after(c, self.now - since);
        }
        self.withdrawal.node_done(c, n, self.now, true);
    }

    /// Node `n` started importing cluster `c`: fine, unless `c` is dead for too long.
    fn import_gained(&mut self, n: usize, c: usize) {
        if !self.nodes[n].reachable {
            return;
        }
        let since = self.node_since(n);
        if let Err(e) = self.withdrawal.check_import(self.now, n, c, since) {
            self.violations.report(self.now, "withdrawal", e);
        }
    }

    /// Node `n` runs and its core knows some member of another cluster: it takes part
    /// in dissemination. (A node whose SWIM never joined anyone is not measured for
    /// propagation; it is counted in `stranded_nodes` and fails convergence.)
    fn member_connected(&self, n: usize) -> bool {
        self.nodes[n]
            .core
            .as_ref()
            .is_some_and(|c| !c.is_isolated())
    }

    /// Live nodes whose core sees no other cluster although ground truth says they
    /// can reach one.
    pub(super) fn stranded_nodes(&self) -> u64 {
        (0..self.topo.nodes())
            .filter(|n| self.nodes[*n].reachable && !self.member_connected(*n))
            .count() as u64
    }

    /// Since when node `n` could have known the truth: its start or last reconnect.
    pub(super) fn node_since(&self, n: usize) -> u64 {
        self.nodes[n].started_at.max(self.nodes[n].connected_since)
    }

    /// Ground truth a node could have learned: whether some replica of `c` has run,
    /// and talked with `n` both ways, for at least the core's last-chance window, and
    /// whether the link was clear (not clogged) all that time. A withdrawal within
    /// that window of a heal or a restart is not false: no detector learns of a heal
    /// faster than a round trip, and the core's last probes went out before it.
    fn reach(&self, n: usize, c: usize) -> Reach {
        let since = self.now.saturating_sub(self.last_chance_window_us);
        let mut reach = Reach::None;
        for m in self.topo.nodes_of(c) {
            if self.alive(m)
                && self.nodes[m].started_at <= since
                && self.net.faults.connected_since(n, m, since)
            {
                if self.net.faults.clear_since(n, m, since) {
                    return Reach::Clear;
                }
                reach = Reach::Clogged;
            }
        }
        reach
    }

    fn reaches_live_remote(&self, n: usize) -> bool {
        let cluster = self.topo.cluster_of(n);
        (0..self.topo.nodes()).any(|m| {
            self.topo.cluster_of(m) != cluster && self.alive(m) && self.net.faults.connected(n, m)
        })
    }

    fn set_reachable(&mut self, n: usize, reachable: bool) {
        let was = self.nodes[n].reachable;
        self.nodes[n].reachable = reachable;
        if reachable && !was {
            self.nodes[n].connected_since = self.now;
            self.affinity_node_since();
            let at = self.now + self.withdrawal.bound_us();
            for c in 0..self.topo.clusters.len() {
                if self.withdrawal.dead_since(c).is_some() {
                    self.queue
                        .push(at, Event::WithdrawalCheck { cluster: c as u32 });
                }
            }
        }
    }

    /// After a fault or a crash: who can reach a live replica of another cluster.
    pub(super) fn recompute_reachability(&mut self) {
        for n in 0..self.topo.nodes() {
            let reachable = self.alive(n) && self.reaches_live_remote(n);
            self.set_reachable(n, reachable);
        }
    }

    /// Node `m` just started: it may be the first live remote for others.
    pub(super) fn node_came_up(&mut self, m: usize) {
        let cm = self.topo.cluster_of(m);
        for n in 0..self.topo.nodes() {
            let gains = !self.nodes[n].reachable
                && self.alive(n)
                && self.topo.cluster_of(n) != cm
                && self.net.faults.connected(n, m);
            if gains {
                self.set_reachable(n, true);
            }
        }
        let reachable = self.reaches_live_remote(m);
        self.set_reachable(m, reachable);
    }

    /// The withdrawal deadline of dead cluster `c` may have passed somewhere.
    pub(super) fn check_withdrawal(&mut self, c: usize) {
        if self.withdrawal.dead_since(c).is_none() {
            return;
        }
        let mut next: Option<u64> = None;
        for n in 0..self.topo.nodes() {
            if !self.alive(n) || !self.nodes[n].reachable || !self.tracker.imports(n, c) {
                continue;
            }
            let since = self.node_since(n);
            match self.withdrawal.check_import(self.now, n, c, since) {
                Err(e) => self.violations.report(self.now, "withdrawal", e),
                Ok(()) => {
                    let deadline = self.withdrawal.deadline(c, since).unwrap_or(0);
                    if deadline > self.now {
                        next = Some(next.map_or(deadline, |t| t.min(deadline)));
                    }
                }
            }
        }
        if let Some(at) = next {
            self.queue
                .push(at, Event::WithdrawalCheck { cluster: c as u32 });
        }
    }

    pub(super) fn deep_check_sample(&mut self) {
        let live: Vec<usize> = (0..self.topo.nodes()).filter(|n| self.alive(*n)).collect();
        for _ in 0..DEEP_CHECKS_PER_PERIOD.min(live.len()) {
            let n = live[self.rng.random_range(0..live.len())];
            self.deep_check(n);
        }
        let at = self.now + DEEP_CHECK_PERIOD_US;
        self.queue.push(at, Event::DeepCheck);
    }

    /// O(view) checks of one node: the core's own, view against store, and the
    /// simulator's import tracking against the core's imports.
    pub(super) fn deep_check(&mut self, n: usize) {
        let Some(core) = &self.nodes[n].core else {
            return;
        };
        let mut found = Vec::new();
        if let Err(v) = core.check_invariants_deep() {
            found.push(("core", v.to_string()));
        }
        if let Err(e) = monotonicity::check_view_stored(&self.keys, &self.nodes[n].disk, core) {
            found.push(("monotonicity", format!("node {n}: {e}")));
        }
        for (s, service) in self.keys.services().iter().enumerate() {
            let mut theirs = self
                .keys
                .source_indices(core.imports().get(service).map(|i| &**i));
            theirs.sort_unstable();
            if theirs != self.tracker.sources(n, s) {
                found.push((
                    "driver",
                    format!("node {n}: import tracking of {service} is off"),
                ));
            }
        }
        for (invariant, detail) in found {
            self.violations.report(self.now, invariant, detail);
        }
    }

    /// In the liveness phase: have all live views converged?
    pub(super) fn check_convergence(&mut self) {
        if self.phase != Phase::Liveness {
            return;
        }
        let clusters = self.topo.clusters.len();
        let live = LiveState {
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.core.as_ref().map(|c| (i, c)))
                .collect(),
            publisher_alive: (0..clusters)
                .map(|c| self.alive(self.topo.publisher_of(c)))
                .collect(),
            cluster_alive: (0..clusters)
                .map(|c| self.topo.nodes_of(c).any(|n| self.alive(n)))
                .collect(),
        };
        let outcome = self.convergence.check(&self.keys, &live);
        drop(live);
        match outcome {
            Ok(()) => {
                self.convergence.converged_at = Some(self.now);
                self.convergence_error = None;
                // A lease run ends at its liveness check instead.
                if self.lease.is_none() {
                    let at = (self.now + SETTLE_US).min(self.plan.end_us);
                    self.queue.push(at, Event::End);
                }
            }
            Err(e) => {
                self.convergence_error = Some(e);
                let at = self.now + CONVERGENCE_PERIOD_US;
                self.queue.push(at, Event::Converge);
            }
        }
    }
}

/// How a node can reach a cluster, by ground truth (see [`World::reach`]).
enum Reach {
    None,
    /// Only over links clogged within the window: seconds of delay and heavy loss,
    /// beyond what the failure detector is tuned to tell from a dead peer.
    Clogged,
    Clear,
}
