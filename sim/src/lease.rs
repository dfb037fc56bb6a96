//! The lease workload: which clusters vote, which compete, and the fenced store the
//! holders write to.

use shoal_node::core::LeaseConfig;
use shoal_proto::{ClusterId, FencingToken, LeaseName};

/// The lease every lease scenario competes for.
pub const LEASE_NAME: &str = "payments-write-leader";
/// Most voters: the first clusters, up to this many.
pub const VOTERS_MAX: usize = 5;
/// Clusters that keep asking for the lease: the first ones, up to this many.
pub const COMPETITORS_MAX: usize = 3;
/// How often a holder writes to the fenced store.
pub const WRITE_PERIOD_US: u64 = 500_000;
/// One-way delay from any node to the fenced store.
pub const STORE_DELAY_US: u64 = 40_000;
/// Clock drift beyond the bound, for `lease-drift-beyond`: up to 10%.
pub const DRIFT_BEYOND_PPM: i64 = 100_000;

pub fn lease_name() -> LeaseName {
    LeaseName::new(LEASE_NAME).expect("a valid name")
}

pub fn voter_count(clusters: usize) -> usize {
    clusters.min(VOTERS_MAX)
}

pub fn competitor_count(clusters: usize) -> usize {
    clusters.min(COMPETITORS_MAX)
}

/// The WAN lease preset over the first clusters.
pub fn config(cluster_ids: &[ClusterId]) -> LeaseConfig {
    let voters = cluster_ids[..voter_count(cluster_ids.len())].to_vec();
    LeaseConfig::wan(voters)
}

/// A data store guarded by the lease: it rejects a write whose token is lower than
/// the highest it has seen, as an application's store must.
#[derive(Clone, Debug, Default)]
pub struct FencedStore {
    highest: Option<FencingToken>,
    pub accepted: u64,
    pub rejected: u64,
    /// Tokens of accepted writes, in order, for the independent check.
    log_last: Option<FencingToken>,
    /// Accepted writes with a token lower than an earlier accepted one (must be 0).
    pub stale_accepted: u64,
}

impl FencedStore {
    /// A write arrives with `token`. Returns whether it was accepted.
    pub fn write(&mut self, token: FencingToken) -> bool {
        if self.highest.is_some_and(|h| token < h) {
            self.rejected += 1;
            return false;
        }
        self.highest = Some(token);
        self.accepted += 1;
        // Checked apart from the rule above, against the log of accepted writes.
        if self.log_last.is_some_and(|last| token < last) {
            self.stale_accepted += 1;
        }
        self.log_last = Some(token);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_rejects_a_lower_token_and_accepts_equal_or_higher() {
        let mut store = FencedStore::default();
        assert!(store.write(FencingToken(3)));
        assert!(store.write(FencingToken(3)));
        assert!(!store.write(FencingToken(2)));
        assert!(store.write(FencingToken(7)));
        assert!(!store.write(FencingToken(3)));
        assert_eq!(
            (store.accepted, store.rejected, store.stale_accepted),
            (3, 2, 0)
        );
    }
}
