//! The quorum lease: named leases granted by a majority of the ClusterSet's voters,
//! PaxosLease-style, with fencing tokens.
//!
//! - `voter`: the acceptor side. One voter per voting cluster, its replica 0 (a
//!   StatefulSet ordinal exists at most once). Promises and accepted grants are
//!   persisted before every reply; a voter that starts without them waits one lease
//!   duration before taking part.
//! - `proposer`: the holder side. Acquire (and keep renewing), release, and the
//!   holder's own validity, which ends early by the drift bound.
//!
//! Safety rests on two facts. Voters time a grant from when they receive it, and the
//! holder times it from before it sent the round's Prepare, shortened by the drift
//! bound: the holder's validity ends, in true time, before any voter's timer does, and
//! a promise older than the round (perhaps forgotten by a voter that restarted without
//! its disk and waited one lease) can never stretch it. And a proposer may only
//! propose when none of a majority of voters reports an open grant of another holder.
//! So at most one holder exists at any true instant, given clocks whose rates stay
//! within `drift_ppm` of true time.
//!
//! **Architecture invariant:** the voter set comes from configuration only. It never
//! shrinks with membership, or a partition would shrink the majority.

mod proposer;
mod voter;

use std::collections::BTreeMap;

use shoal_proto::{ClusterId, FencingToken, LeaseMessage, LeaseName, MemberId, Message, ReplicaId};

use super::node::Node;
use super::time::Time;
pub use proposer::LeaseStatus;
pub(super) use proposer::Proposer;
pub(super) use voter::Voter;
pub use voter::VoterRecord;

/// Most named leases a node tracks, as voter or proposer. A message about a lease
/// beyond the bound is dropped and counted.
pub const LEASES_MAX: usize = 1_024;

/// What an application asks of the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRequest {
    /// Acquire the lease for this cluster, and keep renewing it until released.
    Acquire(LeaseName),
    /// Give the lease up (and stop trying to acquire it).
    Release(LeaseName),
}

/// A lease request that cannot be served. State unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("no lease voters are configured")]
    NoVoters,
    #[error("only the cluster's local leader (the publishing replica) may hold leases")]
    NotLocalLeader,
    #[error("more than {LEASES_MAX} leases")]
    TooMany,
}

/// Lease state of one node.
#[derive(Debug, Default)]
pub(super) struct Leases {
    pub(super) voter: Voter,
    pub(super) proposers: BTreeMap<LeaseName, Proposer>,
}

impl Node {
    /// Acquires or releases a lease on behalf of this cluster.
    pub fn handle_lease_request(
        &mut self,
        now: Time,
        request: LeaseRequest,
    ) -> Result<(), LeaseError> {
        if self.config.lease.voters.is_empty() {
            return Err(LeaseError::NoVoters);
        }
        if !self.config.publisher {
            return Err(LeaseError::NotLocalLeader);
        }
        let result = match request {
            LeaseRequest::Acquire(lease) => self.acquire(now, lease),
            LeaseRequest::Release(lease) => {
                self.release(now, &lease);
                Ok(())
            }
        };
        self.finish_step(false);
        result
    }

    pub(super) fn handle_lease_message(
        &mut self,
        now: Time,
        from: &MemberId,
        message: LeaseMessage,
    ) {
        match message {
            LeaseMessage::Prepare { lease, round } => self.voter_prepare(now, from, lease, round),
            LeaseMessage::Propose {
                lease,
                round,
                grant,
            } => self.voter_propose(now, from, lease, round, grant),
            LeaseMessage::Release { lease, token } => self.voter_release(from, lease, token),
            LeaseMessage::Promise { lease, round, open } => {
                self.proposer_promise(now, from, lease, round, open)
            }
            LeaseMessage::Accepted { lease, round } => {
                self.proposer_accepted(now, from, lease, round)
            }
            LeaseMessage::Reject {
                lease,
                round,
                promised,
            } => self.proposer_reject(now, from, lease, round, promised),
        }
    }

    /// The voter replica of `cluster`: its replica 0.
    fn voter_member(cluster: &ClusterId) -> MemberId {
        MemberId {
            cluster: cluster.clone(),
            replica: ReplicaId(0),
        }
    }

    /// Whether `member` is the voter replica of a configured voter.
    pub(super) fn is_voter_member(&self, member: &MemberId) -> bool {
        member.replica == ReplicaId(0) && self.config.lease.voters.contains(&member.cluster)
    }

    fn majority(&self) -> usize {
        self.config.lease.voters.len() / 2 + 1
    }

    /// Sends a lease message to `to`; one addressed to this very replica is handled at
    /// once, as if it had arrived.
    fn send_lease(&mut self, now: Time, to: &MemberId, message: LeaseMessage) {
        if *to == self.config.member {
            let me = self.config.member.clone();
            self.handle_lease_message(now, &me, message);
        } else {
            self.send(to, None, &Message::Lease(message));
        }
    }

    fn send_to_voters(&mut self, now: Time, message: &LeaseMessage) {
        for voter in self.config.lease.voters.clone() {
            self.send_lease(now, &Self::voter_member(&voter), message.clone());
        }
    }

    /// The lease as this node sees it: held by this cluster, or (if this node is a
    /// voter) the grant it has open.
    pub fn lease_status(&self, now: Time, lease: &LeaseName) -> LeaseStatus {
        let mine = self.proposer_status(now, lease);
        if mine.write_ready {
            return mine;
        }
        match self.leases.voter.open(now, lease) {
            Some((grant, left_ms)) => LeaseStatus {
                holder: Some(grant.holder),
                token: Some(grant.token),
                expires_in_ms: Some(left_ms),
                write_ready: false,
            },
            None => mine,
        }
    }

    /// This cluster's hold on `lease`, if any: its token and the local time its own
    /// validity ends. For the simulator's checks.
    pub fn lease_held(&self, lease: &LeaseName) -> Option<(FencingToken, Time)> {
        self.leases
            .proposers
            .get(lease)
            .and_then(|p| p.held.map(|h| (h.token, h.valid_until)))
    }
}
