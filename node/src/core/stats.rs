//! Plain counters. The runtime exports them as Prometheus metrics; the simulator sums
//! them. No metrics dependency here.

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
    pub records_accepted: u64,
    /// Records found already verified in the record cache.
    pub verify_cache_hits: u64,
    pub records_duplicate: u64,
    /// Older than held: dropped, never re-gossiped (replays land here).
    pub records_stale: u64,
    /// Same version, different bytes: rejected and alarmed.
    pub records_equivocation: u64,
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
    /// A withdrawn cluster came back without having restarted: it was alive while
    /// withdrawn (a false positive of failure detection, or a partition).
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
