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
/// Clock drift beyond the bound, for `lease-drift-beyond`: 10%.
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
///
/// Apart from that rule, each accepted write is checked against the ground truth: the
/// order in which tenures really began (their *rank*, from the lease safety checker).
/// A write accepted after a write of a later tenure is stale, whatever its token says;
/// so is a write from a tenure no one ever saw begin. Both counts must stay 0, and
/// they would not if tokens ever disagreed with the order of tenures.
#[derive(Clone, Debug, Default)]
pub struct FencedStore {
    highest: Option<FencingToken>,
    pub accepted: u64,
    pub rejected: u64,
    /// The latest tenure rank among accepted writes.
    rank_max: Option<u64>,
    /// Accepted writes of an earlier tenure than one already accepted, or of no known
    /// tenure (must be 0).
    pub stale_accepted: u64,
}

impl FencedStore {
    /// A write arrives with `token`, from the tenure ranked `rank` (`None`: no tenure
    /// with that token ever began). Returns whether it was accepted.
    pub fn write(&mut self, token: FencingToken, rank: Option<u64>) -> bool {
        if self.highest.is_some_and(|h| token < h) {
            self.rejected += 1;
            return false;
        }
        self.highest = Some(token);
        self.accepted += 1;
        match rank {
            Some(r) if self.rank_max.is_none_or(|m| r >= m) => self.rank_max = Some(r),
            _ => self.stale_accepted += 1,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_rejects_a_lower_token_and_accepts_equal_or_higher() {
        let mut store = FencedStore::default();
        assert!(store.write(FencingToken(3), Some(0)));
        assert!(store.write(FencingToken(3), Some(0)));
        assert!(!store.write(FencingToken(2), Some(0)));
        assert!(store.write(FencingToken(7), Some(1)));
        assert!(!store.write(FencingToken(3), Some(0)));
        assert_eq!(
            (store.accepted, store.rejected, store.stale_accepted),
            (3, 2, 0)
        );
    }

    #[test]
    fn tokens_out_of_tenure_order_make_accepted_writes_stale() {
        let mut store = FencedStore::default();
        // Tenure 1 got a lower token than tenure 0: the token rule cannot see it.
        assert!(store.write(FencingToken(5), Some(1)));
        assert!(store.write(FencingToken(9), Some(0)));
        assert!(store.write(FencingToken(9), None));
        assert_eq!(store.stale_accepted, 2);
    }
}
