//! The end of a run: final checks, then the report and the timeline.

use std::collections::BTreeMap;

use shoal_node::core::Stats;

use super::{Phase, World};
use crate::plot::Timeline;
use crate::report::{
    AffinityReport, ByzantineReport, CoreReport, FaultReport, NetworkReport, Percentiles,
    RunReport, add_stats, round3,
};

impl World {
    pub(super) fn finish(mut self) -> (RunReport, Option<Timeline>) {
        self.phase = Phase::Done;
        let mut stats = self.retired.clone();
        for node in &self.nodes {
            if let Some(core) = &node.core {
                add_stats(&mut stats, core.stats());
            }
        }
        let report = RunReport {
            seed: self.spec.seed,
            scenario: self.spec.scenario.name().to_owned(),
            clusters: self.topo.clusters.len(),
            replicas: self.topo.replicas,
            services: self.spec.services,
            endpoints: self.spec.endpoints,
            duration_s: self.spec.duration_s(),
            converged: self.convergence.converged_at.is_some(),
            converged_after_heal_ms: self
                .convergence
                .converged_at
                .map(|t| t.saturating_sub(self.plan.heal_at_us) / 1_000),
            convergence_error: self.convergence_error.clone(),
            stranded_nodes: self.stranded_nodes(),
            violations: self.violations.count,
            violation_details: self.violations.details.clone(),
            false_withdrawals: self.withdrawal.false_withdrawals,
            clogged_withdrawals: self.withdrawal.clogged_withdrawals,
            withdrawals_refuted: stats.withdrawals_refuted,
            propagation_ms: Percentiles::of(&self.propagation.samples_ms),
            propagation_samples: self.propagation.samples_ms.len(),
            propagation_censored: self.propagation.censored,
            floor_propagation_ms: round3(self.floor_propagation_us() / 1_000.0),
            withdrawal_ms: Percentiles::of(&self.withdrawal.samples_ms),
            withdrawal_drops: self.withdrawal.drops,
            withdrawals_late: self.withdrawal.late,
            trace_hash: self.trace.hex(),
            lease: self.lease.as_ref().map(|l| crate::report::LeaseReport {
                acquisitions: l.safety.acquisitions,
                max_concurrent_holders: l.safety.max_concurrent_holders,
                stale_writes_accepted: l.store.stale_accepted,
                stale_writes_rejected: l.store.rejected,
                writes_accepted: l.store.accepted,
                takeover_ms: Percentiles::of(&l.takeover_ms),
                takeover_target_ms: round3(self.takeover_target_us() / 1_000.0),
                tokens_monotonic: l.safety.tokens_monotonic,
            }),
            affinity: self.affinity_report(),
            events: self.events,
            replay: self.spec.replay_command(),
            network: self.network_report(),
            faults: FaultReport {
                crashes: self.crashes,
                restarts: self.restarts,
                lazy_ops_lost: self.nodes.iter().map(|n| n.disk.lost_ops).sum(),
            },
            byzantine: self.byzantine_report(&stats),
            core: core_report(&stats),
            ..self.traffic_figures(&stats)
        };
        let timeline = self.take_timeline();
        (report, timeline)
    }

    /// Bytes per update and their floor, membership bytes: the cost figures.
    fn traffic_figures(&self, stats: &Stats) -> RunReport {
        let run_s = (self.now as f64 / 1e6).max(1e-6);
        let record_bytes = self.traffic.mean_record_bytes();
        let clusters = self.topo.clusters.len();
        RunReport {
            bytes_per_update: round3(ratio(self.traffic.record_traffic_bytes(), stats.published)),
            floor_bytes_per_update: round3(clusters.saturating_sub(1) as f64 * record_bytes),
            push_bytes_per_update: round3(ratio(
                self.traffic.bytes_by_kind.get("push").copied().unwrap_or(0),
                stats.published,
            )),
            record_bytes_mean: round3(record_bytes),
            updates: stats.published,
            membership_bytes_per_node_per_s: round3(
                self.traffic.membership_bytes() as f64 / self.topo.nodes() as f64 / run_s,
            ),
            bytes_by_kind: self
                .traffic
                .bytes_by_kind
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            ..RunReport::default()
        }
    }

    fn affinity_report(&self) -> Option<AffinityReport> {
        let check = &self.affinity.as_ref()?.check;
        let bounds = check.bounds();
        Some(AffinityReport {
            ready_bound_ms: bounds.ready_us / 1_000,
            down_bound_ms: bounds.down_us / 1_000,
            nearest_margin_ms: bounds.margin_us / 1_000,
            probe_round_ms: bounds.probe_round_us / 1_000,
            failovers: check.failover_ms.len(),
            failover_ms: Percentiles::of(&check.failover_ms),
            down_failovers: check.down_failover_ms.len(),
            down_failover_ms: Percentiles::of(&check.down_failover_ms),
            returns: check.return_ms.len(),
            return_ms: Percentiles::of(&check.return_ms),
            nearest_moves: check.nearest_moves,
            nearest_checks: check.nearest_checks,
        })
    }

    fn byzantine_report(&self, stats: &Stats) -> ByzantineReport {
        let name = |c: Option<usize>| c.map(|c| self.topo.clusters[c].id.to_string());
        let roles = self.byzantine.roles;
        ByzantineReport {
            forger: name(roles.forger),
            replayer: name(roles.replayer),
            equivocator: name(roles.equivocator),
            forged_sent: self.byzantine.forged_sent,
            replayed_sent: self.byzantine.replayed_sent,
            equivocations_sent: self.byzantine.equivocations_sent,
            records_forged: stats.records_forged,
            records_stale: stats.records_stale,
            records_equivocation: stats.records_equivocation,
            equivocation_alarms: self.equivocation_alarms,
        }
    }

    fn network_report(&self) -> NetworkReport {
        NetworkReport {
            sent: self.traffic.messages_sent,
            delivered: self.traffic.delivered,
            duplicated: self.traffic.duplicated,
            dropped: self
                .traffic
                .dropped
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<BTreeMap<_, _>>(),
            injected: self.traffic.injected,
        }
    }

    /// One-way latency from each cluster to its farthest other cluster, averaged.
    /// Lease × (1 + drift) + 2 × the largest RTT between any two clusters + one
    /// renewal interval, from the first node's lease configuration.
    fn takeover_target_us(&self) -> f64 {
        let Some(config) = self.topo.configs.first().map(|c| &c.lease) else {
            return 0.0;
        };
        let table = crate::network::regions::LatencyTable::default();
        let largest_one_way = self
            .topo
            .clusters
            .iter()
            .flat_map(|a| {
                self.topo
                    .clusters
                    .iter()
                    .map(|b| table.one_way_us(a.region, b.region))
            })
            .max()
            .unwrap_or(0);
        let lease_us = config.lease_ms as f64 * 1_000.0;
        lease_us * (1.0 + f64::from(config.drift_ppm) / 1e6)
            + 4.0 * largest_one_way as f64
            + config.renew_ms as f64 * 1_000.0
    }

    fn floor_propagation_us(&self) -> f64 {
        let clusters = self.topo.clusters.len();
        if clusters < 2 {
            return 0.0;
        }
        let regions = crate::network::regions::REGIONS.len();
        let mut count = vec![0usize; regions];
        for c in &self.topo.clusters {
            count[c.region] += 1;
        }
        let table = crate::network::regions::LatencyTable::default();
        let total: u64 = self
            .topo
            .clusters
            .iter()
            .map(|c| {
                (0..regions)
                    .filter(|r| count[*r] > usize::from(*r == c.region))
                    .map(|r| table.one_way_us(c.region, r))
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        total as f64 / clusters as f64
    }

    fn take_timeline(&mut self) -> Option<Timeline> {
        let log = std::mem::take(&mut self.timeline);
        let title = format!(
            "shoal-sim {} - {} clusters x {} replicas, seed {}",
            self.spec.scenario,
            self.topo.clusters.len(),
            self.topo.replicas,
            self.spec.seed
        );
        let labels = self
            .topo
            .clusters
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c.id,
                    crate::network::regions::REGIONS[c.region].name
                )
            })
            .collect();
        log.into_timeline(title, labels, self.now, self.propagation.samples_ms.clone())
    }
}

fn ratio(bytes: u64, updates: u64) -> f64 {
    if updates == 0 {
        return 0.0;
    }
    bytes as f64 / updates as f64
}

fn core_report(s: &shoal_node::core::Stats) -> CoreReport {
    CoreReport {
        records_accepted: s.records_accepted,
        records_duplicate: s.records_duplicate,
        pushes_sent: s.pushes_sent,
        relays_sent: s.relays_sent,
        anti_entropy_rounds: s.anti_entropy_rounds,
        anti_entropy_in_sync: s.anti_entropy_in_sync,
        pulls_sent: s.pulls_sent,
        pull_records_sent: s.pull_records_sent,
        withdrawals: s.withdrawals,
        restorations: s.restorations,
        decode_errors: s.decode_errors,
        swim_errors: s.swim_errors,
        restore_dropped: s.restore_dropped,
    }
}
