//! What a run reports: the JSON object of the CLI contract, percentiles, and a short
//! human summary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_node::core::Stats;

/// p50, p99 and max of a set of samples; all `null` when there are none.
/// Lease figures of one run (invariants 5 and 6).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// Tenures begun: a (cluster, token) pair seen holding for the first time.
    pub acquisitions: u64,
    /// Most clusters holding at one true instant (1 expected).
    pub max_concurrent_holders: usize,
    /// Writes the fenced store accepted from an earlier tenure than one it had
    /// accepted a write from, or from no known tenure (0 expected).
    pub stale_writes_accepted: u64,
    /// Writes the fenced store rejected for a stale token (fencing at work).
    pub stale_writes_rejected: u64,
    pub writes_accepted: u64,
    /// From a fault hitting the holder (cut off, paused) to the next holder.
    pub takeover_ms: Percentiles,
    /// The takeover target after the holder's cluster is cut off: lease × (1 + drift),
    /// plus 2 × the largest RTT between clusters, plus one renewal interval. Printed
    /// by the bench, never asserted.
    pub takeover_target_ms: f64,
    pub tokens_monotonic: bool,
}

/// Traffic-policy figures of one run (the `affinity` scenario), with the bounds the
/// checks held the nodes to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AffinityReport {
    /// How long a node may take to act on an origin's endpoints turning not ready (or
    /// ready): two push hops of the largest round trip, plus three anti-entropy
    /// periods.
    pub ready_bound_ms: u64,
    /// How long a node may take to move traffic off a dead cluster: SWIM's detection
    /// bound (the withdrawal's, without the grace period). A node started after the
    /// death is held to the withdrawal's own deadline, grace + this after its start.
    pub down_bound_ms: u64,
    /// `nearest` moves only to an origin lower by this much (and by an eighth).
    pub nearest_margin_ms: u64,
    /// One round of SWIM probes (every other member once), which paces how fast the
    /// smoothed round trips follow a latency change.
    pub probe_round_ms: u64,
    /// Importers that moved off an origin whose endpoints went not ready, while
    /// another was ready, and how long that took.
    pub failovers: usize,
    pub failover_ms: Percentiles,
    /// The same for an origin whose cluster died.
    pub down_failovers: usize,
    pub down_failover_ms: Percentiles,
    /// `local` importers back on their own origin once it was ready again.
    pub returns: usize,
    pub return_ms: Percentiles,
    /// `nearest` imports that moved off an origin still ready (a round trip changed).
    pub nearest_moves: u64,
    /// `nearest` choices judged against true round trips.
    pub nearest_checks: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = (p * sorted.len() as f64).ceil() as usize;
            round3(sorted[i.clamp(1, sorted.len()) - 1])
        };
        Self {
            p50: Some(rank(0.50)),
            p99: Some(rank(0.99)),
            max: Some(round3(sorted[sorted.len() - 1])),
        }
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1_000.0).round() / 1_000.0
}

/// Messages on the simulated network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkReport {
    pub sent: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub dropped: BTreeMap<String, u64>,
    /// Sent by byzantine members outside their cores.
    pub injected: u64,
}

/// Crashes and restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub crashes: u64,
    pub restarts: u64,
    /// Lazy store writes lost because a node crashed before they were flushed.
    pub lazy_ops_lost: u64,
}

/// Byzantine injections and how the cores dealt with them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ByzantineReport {
    pub forger: Option<String>,
    pub replayer: Option<String>,
    pub equivocator: Option<String>,
    pub forged_sent: u64,
    pub replayed_sent: u64,
    pub equivocations_sent: u64,
    pub records_forged: u64,
    pub records_stale: u64,
    pub records_equivocation: u64,
    pub equivocation_alarms: u64,
}

/// A few of the cores' counters, summed over every node and incarnation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreReport {
    pub records_accepted: u64,
    pub records_duplicate: u64,
    pub pushes_sent: u64,
    pub relays_sent: u64,
    pub anti_entropy_rounds: u64,
    pub anti_entropy_in_sync: u64,
    pub pulls_sent: u64,
    pub pull_records_sent: u64,
    pub withdrawals: u64,
    pub restorations: u64,
    pub decode_errors: u64,
    pub swim_errors: u64,
    pub restore_dropped: u64,
}

/// One run, as `shoal-sim run --json` prints it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub seed: u64,
    pub scenario: String,
    pub clusters: usize,
    pub replicas: usize,
    pub services: usize,
    pub endpoints: usize,
    pub duration_s: u64,
    pub converged: bool,
    /// From healing to the first instant every live view matched.
    pub converged_after_heal_ms: Option<u64>,
    /// Live nodes whose core saw no other cluster at the end although the network
    /// let them reach one: membership never (re)joined.
    pub stranded_nodes: u64,
    /// Why the views had not converged at the end, when they had not.
    pub convergence_error: Option<String>,
    pub violations: u64,
    pub violation_details: Vec<String>,
    pub false_withdrawals: u64,
    /// Withdrawals of a live cluster reachable only over clogged links (seconds of
    /// delay, heavy loss): not counted as false.
    pub clogged_withdrawals: u64,
    pub withdrawals_refuted: u64,
    pub propagation_ms: Percentiles,
    pub propagation_samples: usize,
    /// Samples discarded because a partition or clog began while they were in flight.
    pub propagation_censored: u64,
    /// One-way latency from an origin to its farthest cluster, averaged over origins.
    pub floor_propagation_ms: f64,
    pub withdrawal_ms: Percentiles,
    /// Nodes that dropped a dead cluster, and those that did so later than
    /// grace + 5 s after they could know (the design's target; not a violation).
    pub withdrawal_drops: u64,
    pub withdrawals_late: u64,
    pub bytes_per_update: f64,
    pub floor_bytes_per_update: f64,
    /// The share of `bytes_per_update` carried in `Push` frames: pushes, relays and
    /// pull answers (digests and pull requests excluded).
    pub push_bytes_per_update: f64,
    pub record_bytes_mean: f64,
    /// Record changes published (versions created) over the run.
    pub updates: u64,
    /// SWIM datagrams plus anti-entropy member lists, per node per virtual second.
    pub membership_bytes_per_node_per_s: f64,
    pub trace_hash: String,
    pub events: u64,
    /// The quorum lease, in lease scenarios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseReport>,
    /// Traffic policy, in the `affinity` scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityReport>,
    pub wall_ms: u64,
    /// Peak resident memory of this process (VmHWM), when the OS tells.
    pub peak_rss_mib: Option<f64>,
    pub replay: String,
    pub network: NetworkReport,
    pub bytes_by_kind: BTreeMap<String, u64>,
    pub faults: FaultReport,
    pub byzantine: ByzantineReport,
    pub core: CoreReport,
}

impl RunReport {
    /// Exit status 0: no violation and converged.
    pub fn passed(&self) -> bool {
        self.violations == 0 && self.converged
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report is plain data")
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let ms = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let mut out = format!(
            "{} clusters x {} replicas, scenario {}, seed {}: {}\n",
            self.clusters,
            self.replicas,
            self.scenario,
            self.seed,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        out += &format!(
            "  converged: {} ({} ms after heal); violations: {}; false withdrawals: {} ({} over clogged links); refuted: {}\n",
            self.converged,
            self.converged_after_heal_ms
                .map_or("-".into(), |v| v.to_string()),
            self.violations,
            self.false_withdrawals,
            self.clogged_withdrawals,
            self.withdrawals_refuted
        );
        out += &format!(
            "  propagation ms p50/p99/max: {}/{}/{} over {} records (floor {:.1}); withdrawal ms p50/max: {}/{}\n",
            ms(self.propagation_ms.p50),
            ms(self.propagation_ms.p99),
            ms(self.propagation_ms.max),
            self.propagation_samples,
            self.floor_propagation_ms,
            ms(self.withdrawal_ms.p50),
            ms(self.withdrawal_ms.max)
        );
        out += &format!(
            "  bytes/update {:.0} (floor {:.0}, x{:.2}); membership {:.0} B/node/s; {} events in {} ms; trace {}\n",
            self.bytes_per_update,
            self.floor_bytes_per_update,
            ratio(self.bytes_per_update, self.floor_bytes_per_update),
            self.membership_bytes_per_node_per_s,
            self.events,
            self.wall_ms,
            self.trace_hash
        );
        if let Some(a) = &self.affinity {
            out += &format!(
                "  affinity: {} failovers (ms p50/max {}/{}, bound {}), {} after deaths ({}/{}, bound {}), {} returns to local ({}/{}), {} nearest moves, {} nearest checks\n",
                a.failovers,
                ms(a.failover_ms.p50),
                ms(a.failover_ms.max),
                a.ready_bound_ms,
                a.down_failovers,
                ms(a.down_failover_ms.p50),
                ms(a.down_failover_ms.max),
                a.down_bound_ms,
                a.returns,
                ms(a.return_ms.p50),
                ms(a.return_ms.max),
                a.nearest_moves,
                a.nearest_checks
            );
        }
        for detail in &self.violation_details {
            out += &format!("  violation: {detail}\n");
        }
        if let Some(e) = &self.convergence_error {
            out += &format!("  not converged: {e}\n");
        }
        out
    }
}

pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Adds the counters the simulator reports from `s` into `sum`. (Listed one by one:
/// the core may grow counters the simulator does not use.)
pub fn add_stats(sum: &mut Stats, s: &Stats) {
    sum.bytes_out += s.bytes_out;
    sum.membership_bytes_out += s.membership_bytes_out;
    sum.decode_errors += s.decode_errors;
    sum.sender_mismatches += s.sender_mismatches;
    sum.swim_errors += s.swim_errors;
    sum.records_accepted += s.records_accepted;
    sum.records_duplicate += s.records_duplicate;
    sum.records_stale += s.records_stale;
    sum.records_equivocation += s.records_equivocation;
    sum.records_forged += s.records_forged;
    sum.records_unknown_origin += s.records_unknown_origin;
    sum.records_invalid += s.records_invalid;
    sum.restore_dropped += s.restore_dropped;
    sum.published += s.published;
    sum.pushes_sent += s.pushes_sent;
    sum.relays_sent += s.relays_sent;
    sum.anti_entropy_rounds += s.anti_entropy_rounds;
    sum.anti_entropy_in_sync += s.anti_entropy_in_sync;
    sum.pulls_sent += s.pulls_sent;
    sum.pull_records_sent += s.pull_records_sent;
    sum.import_changes += s.import_changes;
    sum.withdrawals += s.withdrawals;
    sum.restorations += s.restorations;
    sum.withdrawals_refuted += s.withdrawals_refuted;
    sum.encode_errors += s.encode_errors;
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round3(kib / 1_024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&samples);
        assert_eq!((p.p50, p.p99, p.max), (Some(50.0), Some(99.0), Some(100.0)));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        assert_eq!(Percentiles::of(&[3.0]).p99, Some(3.0));
    }
}
