//! Plain counters, and the SWIM ack latency histograms. The runtime exports them as
//! Prometheus metrics; the simulator sums them. No metrics dependency here.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_proto::MemberId;

/// Upper bounds, in microseconds, of the buckets of [`LatencyHistogram`]: 1 ms to
/// 2.5 s. Samples above the last bound are counted in `count` only (`+Inf`).
pub const SWIM_ACK_BUCKETS_MICROS: [u64; 11] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
];

/// Peers whose acks get a histogram of their own; acks from peers beyond it are pooled
/// in [`SwimAcks::others`]. Keeps the exported label set small.
pub const SWIM_ACK_PEERS_MAX: usize = 32;

/// A latency histogram with the fixed buckets [`SWIM_ACK_BUCKETS_MICROS`]. Integers
/// only, so the simulator stays exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Samples per bucket (not cumulative): `buckets[i]` counts the samples above
    /// bound `i - 1` and at most bound `i`.
    pub buckets: [u64; SWIM_ACK_BUCKETS_MICROS.len()],
    /// Sum of every sample, in microseconds (saturating).
    pub sum_micros: u64,
    /// Every sample, including those above the last bound.
    pub count: u64,
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = SWIM_ACK_BUCKETS_MICROS.iter().position(|le| micros <= *le) {
            self.buckets[i] += 1;
        }
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }

    /// (upper bound in microseconds, samples at or below it), ascending; `+Inf` is
    /// `count`.
    pub fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut total = 0;
        SWIM_ACK_BUCKETS_MICROS
            .iter()
            .zip(self.buckets.iter())
            .map(move |(le, n)| {
                total += n;
                (*le, total)
            })
    }

    /// Adds `other`'s samples to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.count += other.count;
    }
}

/// Seconds from a direct SWIM ping this node sent to the matching ack: per peer for
/// the first [`SWIM_ACK_PEERS_MAX`] peers that acked, pooled for the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwimAcks {
    by_peer: BTreeMap<MemberId, LatencyHistogram>,
    others: LatencyHistogram,
}

impl SwimAcks {
    pub fn record(&mut self, peer: &MemberId, latency: Duration) {
        if let Some(histogram) = self.by_peer.get_mut(peer) {
            histogram.record(latency);
        } else if self.by_peer.len() < SWIM_ACK_PEERS_MAX {
            let mut histogram = LatencyHistogram::default();
            histogram.record(latency);
            self.by_peer.insert(peer.clone(), histogram);
        } else {
            self.others.record(latency);
        }
    }

    /// The peers with a histogram of their own, in member order.
    pub fn by_peer(&self) -> impl Iterator<Item = (&MemberId, &LatencyHistogram)> {
        self.by_peer.iter()
    }

    /// Acks from peers beyond [`SWIM_ACK_PEERS_MAX`].
    pub fn others(&self) -> &LatencyHistogram {
        &self.others
    }

    /// Every ack, from every peer.
    pub fn total(&self) -> LatencyHistogram {
        let mut total = self.others.clone();
        for histogram in self.by_peer.values() {
            total.merge(histogram);
        }
        total
    }
}

/// Counters since the node started (not persisted).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Bytes sent in SWIM datagrams (membership), part of `bytes_out`.
    pub membership_bytes_out: u64,
    /// Input that failed to decode or broke a bound; dropped.
    pub decode_errors: u64,
    /// A SWIM header whose sender is not the authenticated cluster; dropped.
    pub sender_mismatches: u64,
    /// SWIM input foca refused; dropped.
    pub swim_errors: u64,
    /// Ack latency of the direct SWIM pings this node sent (exported as its own
    /// histogram family, not as a counter).
    #[serde(skip)]
    pub swim_ack: SwimAcks,
    /// Direct SWIM pings that got no ack within foca's probe period (foca ignores a
    /// later one); forgotten. Includes pings to members that are in fact down.
    pub swim_acks_missed: u64,
    /// Direct SWIM pings forgotten unanswered because
    /// `membership::probes::PINGS_PENDING_MAX` were pending.
    pub swim_pings_evicted: u64,
    /// Times this node learned that it was suspected and refuted it (foca raised its
    /// incarnation).
    pub suspicions_refuted: u64,
    /// Times this node's own probe of a remote member failed (its ping and the
    /// indirect pings all went unanswered) and foca put the member under suspicion,
    /// once per (member, generation, incarnation). A member that refuted while the
    /// probe ran still counts once. Suspicions learned only from other members'
    /// gossip are not counted.
    pub members_suspected: u64,
    pub records_accepted: u64,
    /// Records found already verified in the record cache.
    pub verify_cache_hits: u64,
    pub records_duplicate: u64,
    /// Older than held: dropped, never re-gossiped (replays land here).
    pub records_stale: u64,
    /// Same version, different bytes: rejected and alarmed.
    pub records_equivocation: u64,
    /// Records of a further service from an origin already at `RECORDS_PER_ORIGIN_MAX`
    /// records, received or found in the store at start: dropped.
    pub records_over_bound: u64,
    /// Records of this cluster's, newer than this publisher's own version, that came
    /// back from peers after it lost its store: versions moved above them.
    pub own_records_recovered: u64,
    /// Republishing after such a recovery failed (a bug: the content was valid).
    pub own_records_recovered_failed: u64,
    /// The signature does not verify with the origin's key (forgeries land here).
    pub records_forged: u64,
    pub records_unknown_origin: u64,
    pub records_invalid: u64,
    /// Records found in the store at start that failed verification; dropped.
    pub restore_dropped: u64,
    /// Records this node authored.
    pub published: u64,
    /// Exports of a new service refused because this cluster was at
    /// `RECORDS_PER_ORIGIN_MAX` records.
    pub exports_over_bound: u64,
    /// Times this replica became its cluster's publisher (the local leader election).
    pub publisher_gained: u64,
    /// Times this replica stopped being its cluster's publisher.
    pub publisher_lost: u64,
    pub pushes_sent: u64,
    pub relays_sent: u64,
    pub anti_entropy_rounds: u64,
    pub anti_entropy_in_sync: u64,
    pub pulls_sent: u64,
    /// Announces sent to seeds and remembered peers while cut off from every cluster.
    pub rejoin_attempts: u64,
    /// Members announced to because a peer's list named them (membership push-pull).
    pub members_announced: u64,
    pub pull_records_sent: u64,
    /// Members of clusters outside the ClusterSet named by gossip; ignored.
    pub untrusted_members: u64,
    /// A member generation this node saw go down, reported alive again by second-hand
    /// gossip after foca forgot it (or by a peer that missed the news); declared down
    /// again instead.
    pub zombies_refused: u64,
    pub import_changes: u64,
    pub withdrawals: u64,
    /// Withdrawals put off because the cluster was heard from after it was declared down.
    pub withdrawals_postponed: u64,
    /// Announces to a down cluster's last known replicas shortly before its grace
    /// period ends (one per replica).
    pub last_chance_probes: u64,
    pub restorations: u64,
    /// A withdrawn cluster came back without having restarted: the replica that came
    /// back is the process last seen going down, renewed by foca (same start
    /// generation), so the cluster was alive while withdrawn (a false positive of
    /// failure detection, or a partition). A restarted replica counts in
    /// `restorations` only.
    pub withdrawals_refuted: u64,
    /// A message could not be encoded within its channel's limit; not sent.
    pub encode_errors: u64,
    /// Lease rounds started (acquisitions, renewals and retries).
    pub lease_rounds: u64,
    pub lease_acquisitions: u64,
    pub lease_renewals: u64,
    /// Holds that ended without a renewal.
    pub lease_lost: u64,
    /// Rounds that found another holder's grant open at a voter, and waited.
    pub lease_blocked: u64,
    pub lease_round_timeouts: u64,
    /// Lease messages from, or to, a member that is not a configured voter; dropped.
    pub lease_not_voter: u64,
    /// Lease messages this voter ignored while it waits out one lease duration after
    /// starting without its promises.
    pub lease_voter_waiting: u64,
    /// A proposal naming another cluster than its sender as holder; dropped.
    pub lease_forged: u64,
    /// A proposal whose lease is longer than this voter's own `lease_ms`; dropped.
    pub lease_grant_too_long: u64,
    /// Lease messages about a lease beyond [`crate::core::LEASES_MAX`]; dropped.
    pub lease_bound_drops: u64,
}
