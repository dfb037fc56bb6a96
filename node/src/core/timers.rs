//! Timers as data: absolute deadlines, fired in (deadline, insertion) order.

use std::collections::BTreeMap;

use shoal_proto::{ClusterId, LeaseName};

use super::membership::SwimId;
use super::time::Time;

/// Most timers pending at once: SWIM keeps a handful per member, plus one per cluster.
pub(super) const TIMERS_MAX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TimerKind {
    Swim(foca::Timer<SwimId>),
    AntiEntropy,
    /// The cluster's grace period ends soon: probe its last known replicas once more.
    LastChance(ClusterId),
    /// The cluster's grace period ends: withdraw it if it is still down.
    Withdraw(ClusterId),
    /// Persist when a remote member was last heard from.
    LastContact,
    /// A lease round's deadline: if it has not finished, try again.
    LeaseRound {
        lease: LeaseName,
        round: u64,
    },
    /// Renew the lease, or try again to acquire it.
    LeaseRetry(LeaseName),
    /// The holder's own validity ends, unless it was renewed meanwhile.
    LeaseExpiry(LeaseName),
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    queue: BTreeMap<(Time, u64), TimerKind>,
    seq: u64,
}

impl Timers {
    pub(super) fn schedule(&mut self, at: Time, kind: TimerKind) {
        assert!(self.queue.len() < TIMERS_MAX, "timer queue bound exceeded");
        self.seq += 1;
        self.queue.insert((at, self.seq), kind);
    }

    pub(super) fn pop_due(&mut self, now: Time) -> Option<TimerKind> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }

    pub(super) fn next(&self) -> Option<Time> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }
}
