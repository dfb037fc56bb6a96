//! Membership events and failure semantics: cluster liveness transitions, withdrawal
//! after the grace period (put off while the cluster is still heard from, never while
//! this node is cut off from everyone), and re-admission.

use std::time::Duration;

use foca::OwnedNotification;
use shoal_proto::{ClusterId, MemberId, Message};

use super::command::{Command, Durability, Event, StoreOp};
use super::membership::{Liveness, Swim, SwimId, SwimOutput, Transition};
use super::node::Node;
use super::time::Time;
use super::timers::TimerKind;

impl Node {
    pub(super) fn with_swim(
        &mut self,
        now: Time,
        call: impl FnOnce(&mut Swim, &mut SwimOutput) -> Result<(), foca::Error>,
    ) {
        let mut out = SwimOutput::default();
        if call(&mut self.swim, &mut out).is_err() {
            self.stats.swim_errors += 1;
        }
        for (after, timer) in out.timers {
            self.timers.schedule(now + after, TimerKind::Swim(timer));
        }
        for (to, packet) in out.sends {
            self.send(&to.0.member, Some(to.0.addr), &Message::Swim(packet));
        }
        for note in out.notes {
            self.handle_membership(now, note);
        }
    }

    pub(super) fn handle_membership(&mut self, now: Time, note: OwnedNotification<SwimId>) {
        match note {
            OwnedNotification::MemberUp(id) if !self.trust.contains(&id.0.member.cluster) => {
                // Gossip may name members of clusters outside the ClusterSet; the
                // transport would refuse them anyway. They are never push targets.
                self.stats.untrusted_members += 1;
            }
            OwnedNotification::MemberUp(id) => {
                self.members.insert(&id);
                self.commands
                    .push(Command::Notify(Event::MemberUp(id.0.member.clone())));
                let t = self.clusters.replica_up(
                    &id.0.member.cluster,
                    id.0.member.replica,
                    id.0.generation,
                );
                self.apply_transition(now, t, Some(&id.0.member));
            }
            OwnedNotification::MemberDown(id) => {
                if !self.members.remove(&id) {
                    return;
                }
                self.commands
                    .push(Command::Notify(Event::MemberDown(id.0.member.clone())));
                let t = self.clusters.replica_down(
                    &id.0.member.cluster,
                    id.0.member.replica,
                    id.0.generation,
                    now,
                );
                self.apply_transition(now, t, None);
            }
            OwnedNotification::Rename(_, new) => {
                if self.members.get(&new.0.member).is_some() {
                    self.members.insert(&new);
                }
            }
            OwnedNotification::Rejoin(new) => {
                self.generation = new.0.generation;
                self.persist(
                    vec![StoreOp::PutGeneration(self.generation)],
                    Durability::Flush,
                );
            }
            OwnedNotification::Active | OwnedNotification::Idle | OwnedNotification::Defunct => {}
        }
        self.update_isolation();
    }

    pub(super) fn update_isolation(&mut self) {
        let isolated = !self.members.has_remote(&self.config.member.cluster);
        if isolated != self.isolated {
            self.isolated = isolated;
            let event = if isolated {
                Event::Isolated
            } else {
                Event::Connected
            };
            self.commands.push(Command::Notify(event));
        }
    }

    pub(super) fn apply_transition(
        &mut self,
        now: Time,
        transition: Transition,
        via: Option<&MemberId>,
    ) {
        match transition {
            Transition::None => {}
            Transition::Down(cluster) => {
                let at = now + self.config.withdraw_grace();
                self.timers
                    .schedule(at, TimerKind::Withdraw(cluster.clone()));
                self.commands
                    .push(Command::Notify(Event::ClusterDown(cluster)));
            }
            Transition::Up {
                cluster,
                was_withdrawn,
                refuted,
            } => {
                if was_withdrawn {
                    self.stats.restorations += 1;
                    if refuted {
                        self.stats.withdrawals_refuted += 1;
                    }
                    self.mark_origin_dirty(&cluster);
                    self.commands
                        .push(Command::Notify(Event::ClusterRestored(cluster)));
                }
                // A join or a heal: repair what was missed at once. When many clusters
                // come back together (a healed partition, a cold start), one round with
                // one of them pulls what they all hold; the periodic rounds do the rest.
                let quiet = self.config.anti_entropy_period() / 4;
                let due = self
                    .last_triggered_anti_entropy
                    .is_none_or(|at| now >= at + quiet);
                if let (Some(member), true) = (via, due) {
                    self.last_triggered_anti_entropy = Some(now);
                    self.start_anti_entropy(Some(member.clone()));
                }
            }
        }
    }

    pub(super) fn withdraw_if_still_down(&mut self, now: Time, cluster: ClusterId) {
        let grace = self.config.withdraw_grace();
        let since = match self.clusters.liveness(&cluster) {
            Liveness::Down { since } | Liveness::Unknown { since } => since,
            Liveness::Alive | Liveness::Withdrawn { .. } => return,
        };
        if matches!(self.clusters.liveness(&cluster), Liveness::Down { .. }) && now < since + grace
        {
            return; // A later outage; its own timer is pending.
        }
        if self.isolated {
            // Cut off from every remote cluster, this node cannot tell who is dead: it
            // keeps serving its last view (stale) and looks again later.
            self.timers.schedule(
                now + grace.max(Duration::from_secs(1)),
                TimerKind::Withdraw(cluster),
            );
            return;
        }
        if self
            .last_heard
            .get(&cluster)
            .is_some_and(|heard| *heard > since)
        {
            // The cluster has spoken since it was declared down (a healed partition,
            // before SWIM readmits it): it is alive. Look again shortly.
            self.stats.withdrawals_postponed += 1;
            let again = (grace / 4).max(Duration::from_millis(500));
            self.timers
                .schedule(now + again, TimerKind::Withdraw(cluster));
            return;
        }
        if self.clusters.withdraw(&cluster, now) {
            self.stats.withdrawals += 1;
            self.mark_origin_dirty(&cluster);
            self.commands
                .push(Command::Notify(Event::ClusterWithdrawn(cluster)));
        }
    }
}
