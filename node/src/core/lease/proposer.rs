//! The proposer: acquiring, renewing and releasing a lease for this cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_proto::{ClusterId, FencingToken, Grant, LeaseMessage, LeaseName, MemberId};

use super::super::command::{Command, Event};
use super::super::node::Node;
use super::super::time::Time;
use super::super::timers::TimerKind;
use super::{LEASES_MAX, LeaseError};

/// The lease as one node sees it (the HTTP API's JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    pub holder: Option<ClusterId>,
    pub token: Option<FencingToken>,
    pub expires_in_ms: Option<u64>,
    /// This cluster holds the lease now: it may write, with `token`.
    pub write_ready: bool,
}

/// This cluster's hold on a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::core) struct Held {
    pub(in crate::core) token: FencingToken,
    /// The end of the holder's own validity, on this node's clock.
    pub(in crate::core) valid_until: Time,
}

#[derive(Debug, Default)]
enum Phase {
    #[default]
    Idle,
    Preparing {
        round: u64,
        /// When the round's Prepare went out: the holder's validity counts from here,
        /// so that a promise given before then (and perhaps forgotten by a voter that
        /// restarted without its disk, and waited one lease) cannot extend it.
        started: Time,
        promises: BTreeMap<ClusterId, Option<(Grant, u64)>>,
        rejects: BTreeSet<ClusterId>,
    },
    Proposing {
        round: u64,
        grant: Grant,
        /// Carried over from `Preparing`.
        started: Time,
        accepted: BTreeSet<ClusterId>,
        rejects: BTreeSet<ClusterId>,
    },
}

/// One lease this cluster wants, or holds.
#[derive(Debug, Default)]
pub(in crate::core) struct Proposer {
    /// Acquire and keep renewing until released.
    want: bool,
    phase: Phase,
    /// The highest round seen in any promise or reject.
    max_round: u64,
    pub(in crate::core) held: Option<Held>,
}

impl Phase {
    fn round(&self) -> Option<u64> {
        match self {
            Phase::Idle => None,
            Phase::Preparing { round, .. } | Phase::Proposing { round, .. } => Some(*round),
        }
    }
}

impl Node {
    pub(super) fn acquire(&mut self, now: Time, lease: LeaseName) -> Result<(), LeaseError> {
        let proposers = &mut self.leases.proposers;
        if !proposers.contains_key(&lease) && proposers.len() >= LEASES_MAX {
            return Err(LeaseError::TooMany);
        }
        let proposer = proposers.entry(lease.clone()).or_default();
        if proposer.want {
            return Ok(());
        }
        proposer.want = true;
        if matches!(proposer.phase, Phase::Idle) {
            self.start_round(now, lease);
        }
        Ok(())
    }

    pub(super) fn release(&mut self, now: Time, lease: &LeaseName) {
        let Some(proposer) = self.leases.proposers.get_mut(lease) else {
            return;
        };
        proposer.want = false;
        proposer.phase = Phase::Idle;
        if let Some(held) = proposer.held.take() {
            self.commands.push(Command::Notify(Event::LeaseReleased {
                lease: lease.clone(),
            }));
            let release = LeaseMessage::Release {
                lease: lease.clone(),
                token: held.token,
            };
            self.send_to_voters(now, &release);
        }
    }

    /// This replica stopped publishing: every lease it wants or holds is released, as
    /// [`LeaseRequest::Release`](super::LeaseRequest) would (see `publisher`).
    pub(in crate::core) fn release_all_leases(&mut self, now: Time) {
        let leases: Vec<LeaseName> = self.leases.proposers.keys().cloned().collect();
        for lease in leases {
            self.release(now, &lease);
        }
    }

    /// Phase 1 of a new round, for an acquisition, a renewal or a retry.
    fn start_round(&mut self, now: Time, lease: LeaseName) {
        let Some(proposer) = self.leases.proposers.get_mut(&lease) else {
            return;
        };
        let round = proposer.max_round + 1;
        proposer.max_round = round;
        proposer.phase = Phase::Preparing {
            round,
            started: now,
            promises: BTreeMap::new(),
            rejects: BTreeSet::new(),
        };
        self.stats.lease_rounds += 1;
        let timeout = Duration::from_millis(self.config.lease.round_timeout_ms);
        self.timers.schedule(
            now + timeout,
            TimerKind::LeaseRound {
                lease: lease.clone(),
                round,
            },
        );
        self.send_to_voters(now, &LeaseMessage::Prepare { lease, round });
    }

    /// A voter that counts: configured, and its replica 0.
    fn counted_voter(&mut self, from: &MemberId) -> Option<ClusterId> {
        if self.is_voter_member(from) {
            Some(from.cluster.clone())
        } else {
            self.stats.lease_not_voter += 1;
            None
        }
    }

    pub(super) fn proposer_promise(
        &mut self,
        now: Time,
        from: &MemberId,
        lease: LeaseName,
        round: u64,
        open: Option<(Grant, u64)>,
    ) {
        let Some(voter) = self.counted_voter(from) else {
            return;
        };
        let majority = self.majority();
        let me = self.config.member.cluster.clone();
        let Some(proposer) = self.leases.proposers.get_mut(&lease) else {
            return;
        };
        let Phase::Preparing {
            round: r,
            started,
            promises,
            ..
        } = &mut proposer.phase
        else {
            return;
        };
        let started = *started;
        if *r != round {
            return;
        }
        promises.insert(voter, open);
        if promises.len() < majority {
            return;
        }
        // Another holder's grant is open at a voter of this majority: it may hold the
        // lease now. Wait until that grant's timer has run out, then try again.
        let blocked = promises
            .values()
            .flatten()
            .filter(|(grant, _)| grant.holder != me)
            .map(|(_, left_ms)| *left_ms)
            .max();
        if let Some(left_ms) = blocked {
            proposer.phase = Phase::Idle;
            self.stats.lease_blocked += 1;
            let backoff = self.lease_backoff();
            self.timers.schedule(
                now + Duration::from_millis(left_ms) + backoff,
                TimerKind::LeaseRetry(lease),
            );
            return;
        }
        // A renewal keeps the token; a new tenure takes this round's.
        let token = proposer
            .held
            .filter(|h| now < h.valid_until)
            .map_or(FencingToken(round), |h| h.token);
        let grant = Grant {
            holder: me,
            token,
            lease_ms: self.config.lease.lease_ms,
        };
        proposer.phase = Phase::Proposing {
            round,
            grant: grant.clone(),
            started,
            accepted: BTreeSet::new(),
            rejects: BTreeSet::new(),
        };
        self.send_to_voters(
            now,
            &LeaseMessage::Propose {
                lease,
                round,
                grant,
            },
        );
    }

    pub(super) fn proposer_accepted(
        &mut self,
        now: Time,
        from: &MemberId,
        lease: LeaseName,
        round: u64,
    ) {
        let Some(voter) = self.counted_voter(from) else {
            return;
        };
        let majority = self.majority();
        let validity = self.config.lease.holder_validity();
        let renew = Duration::from_millis(self.config.lease.renew_ms);
        let Some(proposer) = self.leases.proposers.get_mut(&lease) else {
            return;
        };
        let Phase::Proposing {
            round: r,
            grant,
            started,
            accepted,
            ..
        } = &mut proposer.phase
        else {
            return;
        };
        if *r != round {
            return;
        }
        accepted.insert(voter);
        if accepted.len() < majority {
            return;
        }
        let held = Held {
            token: grant.token,
            valid_until: *started + validity,
        };
        let renew_at = *started + renew;
        if now >= held.valid_until {
            // The round took longer than the validity it would grant: nothing held.
            proposer.phase = Phase::Idle;
            self.stats.lease_round_timeouts += 1;
            let backoff = self.lease_backoff();
            self.timers
                .schedule(now + backoff, TimerKind::LeaseRetry(lease));
            return;
        }
        let fresh = proposer
            .held
            .is_none_or(|h| h.token != held.token || now >= h.valid_until);
        proposer.held = Some(held);
        proposer.phase = Phase::Idle;
        if fresh {
            self.stats.lease_acquisitions += 1;
            self.commands.push(Command::Notify(Event::LeaseAcquired {
                lease: lease.clone(),
                token: held.token,
            }));
        } else {
            self.stats.lease_renewals += 1;
        }
        self.timers
            .schedule(held.valid_until, TimerKind::LeaseExpiry(lease.clone()));
        self.timers.schedule(renew_at, TimerKind::LeaseRetry(lease));
    }

    pub(super) fn proposer_reject(
        &mut self,
        now: Time,
        from: &MemberId,
        lease: LeaseName,
        round: u64,
        promised: u64,
    ) {
        let Some(voter) = self.counted_voter(from) else {
            return;
        };
        let voters = self.config.lease.voters.len();
        let majority = self.majority();
        let Some(proposer) = self.leases.proposers.get_mut(&lease) else {
            return;
        };
        proposer.max_round = proposer.max_round.max(promised);
        if proposer.phase.round() != Some(round) {
            return;
        }
        let rejects = match &mut proposer.phase {
            Phase::Preparing { rejects, .. } | Phase::Proposing { rejects, .. } => rejects,
            Phase::Idle => return,
        };
        rejects.insert(voter);
        // A majority can no longer answer yes: try again with a higher round.
        if voters - rejects.len() < majority {
            proposer.phase = Phase::Idle;
            let backoff = self.lease_backoff();
            self.timers
                .schedule(now + backoff, TimerKind::LeaseRetry(lease));
        }
    }

    /// A round did not finish in time (lost messages, or voters out of reach).
    pub(in crate::core) fn lease_round_timeout(&mut self, now: Time, lease: LeaseName, round: u64) {
        let Some(proposer) = self.leases.proposers.get_mut(&lease) else {
            return;
        };
        if proposer.phase.round() != Some(round) {
            return;
        }
        proposer.phase = Phase::Idle;
        self.stats.lease_round_timeouts += 1;
        let backoff = self.lease_backoff();
        self.timers
            .schedule(now + backoff, TimerKind::LeaseRetry(lease));
    }

    /// Time to renew, or to try again.
    pub(in crate::core) fn lease_retry(&mut self, now: Time, lease: LeaseName) {
        let ready = self
            .leases
            .proposers
            .get(&lease)
            .is_some_and(|p| p.want && matches!(p.phase, Phase::Idle));
        if ready {
            self.start_round(now, lease);
        }
    }

    /// The holder's own validity may have ended without a renewal.
    pub(in crate::core) fn lease_expiry(&mut self, now: Time, lease: LeaseName) {
        let Some(proposer) = self.leases.proposers.get_mut(&lease) else {
            return;
        };
        if proposer.held.is_some_and(|h| now >= h.valid_until) {
            proposer.held = None;
            self.stats.lease_lost += 1;
            self.commands
                .push(Command::Notify(Event::LeaseLost { lease }));
        }
    }

    /// A random pause before trying again, so that competing proposers spread out.
    fn lease_backoff(&mut self) -> Duration {
        let timeout = Duration::from_millis(self.config.lease.round_timeout_ms);
        self.jittered(timeout / 2)
    }

    pub(super) fn proposer_status(&self, now: Time, lease: &LeaseName) -> LeaseStatus {
        let held = self
            .leases
            .proposers
            .get(lease)
            .and_then(|p| p.held)
            .filter(|h| now < h.valid_until);
        match held {
            Some(h) => LeaseStatus {
                holder: Some(self.config.member.cluster.clone()),
                token: Some(h.token),
                expires_in_ms: Some((h.valid_until.as_micros() - now.as_micros()) / 1_000),
                write_ready: true,
            },
            None => LeaseStatus {
                holder: None,
                token: None,
                expires_in_ms: None,
                write_ready: false,
            },
        }
    }
}
