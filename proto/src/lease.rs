//! The quorum lease's wire vocabulary: PaxosLease ballots, grants and fencing tokens.
//!
//! A lease is granted by a majority of the ClusterSet's voters (fixed in config). A
//! ballot is a round number; a voter promises a round only if it is higher than every
//! round it promised before, so at most one proposer gathers a majority of promises for
//! a round, and the round of a new holder's first grant is higher than every round
//! accepted before it. That round becomes the holder's [`FencingToken`] and is kept
//! through its renewals, so tokens strictly grow across holders.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, LeaseName};

/// Longest lease a grant may carry: one hour.
pub const LEASE_MS_MAX: u64 = 3_600_000;

/// A number that strictly grows across the holders of one lease. A data store that
/// the lease guards must reject a write carrying a lower token than one it has seen.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct FencingToken(pub u64);

/// What a proposer asks the voters to accept: `holder` holds the lease for `lease_ms`,
/// timed by each voter from when it receives the proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Grant {
    pub holder: ClusterId,
    pub token: FencingToken,
    pub lease_ms: u64,
}

/// One step of PaxosLease, always about one named lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub enum LeaseMessage {
    /// Phase 1: promise to ignore rounds up to `round`.
    Prepare { lease: LeaseName, round: u64 },
    /// The voter promised `round`. `open` is the grant it accepted whose timer still
    /// runs, with the milliseconds left on it.
    Promise {
        lease: LeaseName,
        round: u64,
        open: Option<(Grant, u64)>,
    },
    /// Phase 2: accept `grant` in `round`.
    Propose {
        lease: LeaseName,
        round: u64,
        grant: Grant,
    },
    /// The voter accepted the proposal of `round` and started its timer.
    Accepted { lease: LeaseName, round: u64 },
    /// The voter has promised `promised`, at least `round`: try a higher round.
    Reject {
        lease: LeaseName,
        round: u64,
        promised: u64,
    },
    /// The holder gives the lease up before its timer ends.
    Release {
        lease: LeaseName,
        token: FencingToken,
    },
}

impl LeaseMessage {
    pub fn lease(&self) -> &LeaseName {
        match self {
            LeaseMessage::Prepare { lease, .. }
            | LeaseMessage::Promise { lease, .. }
            | LeaseMessage::Propose { lease, .. }
            | LeaseMessage::Accepted { lease, .. }
            | LeaseMessage::Reject { lease, .. }
            | LeaseMessage::Release { lease, .. } => lease,
        }
    }

    /// A short, fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LeaseMessage::Prepare { .. } => "lease_prepare",
            LeaseMessage::Promise { .. } => "lease_promise",
            LeaseMessage::Propose { .. } => "lease_propose",
            LeaseMessage::Accepted { .. } => "lease_accepted",
            LeaseMessage::Reject { .. } => "lease_reject",
            LeaseMessage::Release { .. } => "lease_release",
        }
    }
}
