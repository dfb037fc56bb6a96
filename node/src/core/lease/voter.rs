//! The voter (PaxosLease acceptor): promises, accepted grants and their timers.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_proto::{FencingToken, Grant, LeaseMessage, LeaseName, MemberId};

use super::super::command::{Durability, StoreOp};
use super::super::node::Node;
use super::super::time::Time;
use super::LEASES_MAX;

/// What a voter persists per lease, before it replies. Stores encode it with the
/// canonical codec.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct VoterRecord {
    /// The highest round promised.
    pub promised: u64,
    /// The last grant accepted, and its round.
    pub accepted: Option<(u64, Grant)>,
}

#[derive(Debug)]
struct VoterLease {
    record: VoterRecord,
    /// When the accepted grant's timer ends, on this node's clock.
    expires: Option<Time>,
}

#[derive(Debug, Default)]
pub(in crate::core) struct Voter {
    /// Before this time the voter takes no part: it started without its promises.
    ready_at: Time,
    leases: BTreeMap<LeaseName, VoterLease>,
}

impl Voter {
    /// A voter starting from its store. `None`: the store holds no voter state (a new
    /// voter, or one that lost its disk), so it may have promised something it no
    /// longer knows: it waits one lease duration. A restored accepted grant's timer
    /// starts again in full, which only lengthens it.
    pub(in crate::core) fn restore(
        now: Time,
        lease: Duration,
        stored: Option<&BTreeMap<LeaseName, VoterRecord>>,
    ) -> Self {
        let Some(stored) = stored else {
            return Voter {
                ready_at: now + lease,
                leases: BTreeMap::new(),
            };
        };
        let leases = stored
            .iter()
            .take(LEASES_MAX)
            .map(|(name, record)| {
                let expires = record
                    .accepted
                    .as_ref()
                    .map(|(_, g)| now + Duration::from_millis(g.lease_ms));
                let state = VoterLease {
                    record: record.clone(),
                    expires,
                };
                (name.clone(), state)
            })
            .collect();
        Voter {
            ready_at: now,
            leases,
        }
    }

    /// The open grant of `lease` and the milliseconds left on its timer.
    pub(in crate::core) fn open(&self, now: Time, lease: &LeaseName) -> Option<(Grant, u64)> {
        let state = self.leases.get(lease)?;
        let (_, grant) = state.record.accepted.as_ref()?;
        let expires = state.expires?;
        (expires > now).then(|| {
            (
                grant.clone(),
                (expires.as_micros() - now.as_micros()).div_ceil(1_000),
            )
        })
    }

    fn state(&mut self, lease: &LeaseName) -> Option<&mut VoterLease> {
        if !self.leases.contains_key(lease) && self.leases.len() >= LEASES_MAX {
            return None;
        }
        Some(self.leases.entry(lease.clone()).or_insert(VoterLease {
            record: VoterRecord::default(),
            expires: None,
        }))
    }
}

impl Node {
    /// Whether this node votes now; counts the message as dropped if not.
    fn voting(&mut self, now: Time) -> bool {
        if !self.is_voter_member(&self.config.member) {
            self.stats.lease_not_voter += 1;
            return false;
        }
        if now < self.leases.voter.ready_at {
            self.stats.lease_voter_waiting += 1;
            return false;
        }
        true
    }

    fn persist_vote(&mut self, lease: &LeaseName, record: VoterRecord) {
        self.persist(
            vec![StoreOp::PutLeaseVote(lease.clone(), record)],
            Durability::Flush,
        );
    }

    pub(super) fn voter_prepare(
        &mut self,
        now: Time,
        from: &MemberId,
        lease: LeaseName,
        round: u64,
    ) {
        if !self.voting(now) {
            return;
        }
        let Some(state) = self.leases.voter.state(&lease) else {
            self.stats.lease_bound_drops += 1;
            return;
        };
        let promised = state.record.promised;
        let reply = if round > promised {
            state.record.promised = round;
            let record = state.record.clone();
            self.persist_vote(&lease, record);
            let open = self.leases.voter.open(now, &lease);
            LeaseMessage::Promise { lease, round, open }
        } else {
            LeaseMessage::Reject {
                lease,
                round,
                promised,
            }
        };
        self.send_lease(now, from, reply);
    }

    pub(super) fn voter_propose(
        &mut self,
        now: Time,
        from: &MemberId,
        lease: LeaseName,
        round: u64,
        grant: Grant,
    ) {
        if grant.holder != from.cluster {
            // A cluster may only propose itself: anything else is forged.
            self.stats.lease_forged += 1;
            return;
        }
        if grant.lease_ms > self.config.lease.lease_ms {
            // Longer than this voter's own lease: the wait after a restart without
            // its votes (one own lease) would not cover it.
            self.stats.lease_grant_too_long += 1;
            return;
        }
        if !self.voting(now) {
            return;
        }
        let Some(state) = self.leases.voter.state(&lease) else {
            self.stats.lease_bound_drops += 1;
            return;
        };
        let promised = state.record.promised;
        let reply = if round >= promised {
            state.record.promised = round;
            state.expires = Some(now + Duration::from_millis(grant.lease_ms));
            state.record.accepted = Some((round, grant));
            let record = state.record.clone();
            self.persist_vote(&lease, record);
            LeaseMessage::Accepted { lease, round }
        } else {
            LeaseMessage::Reject {
                lease,
                round,
                promised,
            }
        };
        self.send_lease(now, from, reply);
    }

    /// The holder gives up its grant: the timer stops, and the promise stands.
    pub(super) fn voter_release(&mut self, from: &MemberId, lease: LeaseName, token: FencingToken) {
        if !self.is_voter_member(&self.config.member) {
            self.stats.lease_not_voter += 1;
            return;
        }
        let Some(state) = self.leases.voter.leases.get_mut(&lease) else {
            return;
        };
        let held = state
            .record
            .accepted
            .as_ref()
            .is_some_and(|(_, g)| g.holder == from.cluster && g.token == token);
        if held {
            state.record.accepted = None;
            state.expires = None;
            let record = state.record.clone();
            self.persist_vote(&lease, record);
        }
    }
}
