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
            OwnedNotification::MemberUp(id)
                if self.clusters.seen_down(
                    &id.0.member.cluster,
                    id.0.member.replica,
                    id.0.generation,
                ) =>
            {
                // Down is terminal for a SWIM identity, but foca forgets down members
                // after `remove_down_after`, and a peer that missed the news (or a
                // restarted one it fed) still lists the dead generation as alive. This
                // node remembers longer: it re-declares the identity down, and foca
                // gossips that, which also cures the peers that spread the zombie. A
                // replica that is in fact alive answers by rejoining with a new
                // generation, as it would within foca's own memory.
                self.stats.zombies_refused += 1;
                self.with_swim(now, |swim, out| {
                    swim.apply_many(std::iter::once(foca::Member::down(id)), true, out)
                });
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use foca::{Foca, Member};
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;
    use shoal_proto::wire::Channel;
    use shoal_proto::{ClusterKey, KeyRing, NetAddr, ReplicaId, SwimIdentity};

    use super::super::command::PersistedState;
    use super::super::config::Config;
    use super::super::membership::{Swim, SwimCodec, foca_config};
    use super::*;

    fn id(cluster: &str, last_octet: u8, generation: u32) -> SwimId {
        let identity = SwimIdentity {
            member: MemberId {
                cluster: ClusterId::new(cluster).unwrap(),
                replica: ReplicaId(0),
            },
            addr: NetAddr::from(std::net::SocketAddr::from(([127, 0, 0, last_octet], 7946))),
            generation,
        };
        SwimId::new(identity, &trust())
    }

    fn trust() -> KeyRing {
        let mut trust = KeyRing::new();
        for name in ["east", "west", "south"] {
            trust
                .insert(ClusterId::new(name).unwrap(), key(name).public())
                .unwrap();
        }
        trust
    }

    fn key(cluster: &str) -> ClusterKey {
        ClusterKey::from_seed(ClusterId::new(cluster).unwrap(), [cluster.len() as u8; 32])
    }

    /// A peer that missed the news of a death (or a restarted node it fed) gossips the
    /// dead generation as alive after this node's foca forgot it. This node must not
    /// import the dead cluster again: it declares the identity down once more.
    #[test]
    fn a_generation_seen_down_is_not_resurrected_by_second_hand_gossip() {
        let trust = trust();
        let east = id("east", 1, 1);
        let west = id("west", 2, 1);
        let south = id("south", 3, 1);
        let config = Config::wan(east.0.member.clone(), east.0.addr, 3);
        let mut node = Node::new(
            config.clone(),
            key("east"),
            trust.clone(),
            Time::ZERO,
            7,
            PersistedState::default(),
        )
        .unwrap();

        // East saw south's generation 1 go down, and its foca has since forgotten it.
        let mut now = Time::from_millis(1_000);
        node.handle_membership(now, OwnedNotification::MemberUp(south.clone()));
        now = Time::from_millis(2_000);
        node.handle_membership(now, OwnedNotification::MemberDown(south.clone()));
        assert!(matches!(
            node.liveness(&south.0.member.cluster),
            Liveness::Down { .. }
        ));

        // West still lists south alive and gossips that to east.
        let mut west_swim = Foca::new(
            west.clone(),
            foca_config(&Config::wan(west.0.member.clone(), west.0.addr, 3)),
            ChaCha8Rng::seed_from_u64(9),
            SwimCodec::new(Arc::new(trust.clone())),
        );
        let gossip_to_east = |swim: &mut Swim, news: SwimId| {
            let mut out = SwimOutput::default();
            let updates = [Member::alive(east.clone()), Member::alive(news)];
            swim.apply_many(updates.into_iter(), true, &mut out)
                .unwrap();
            swim.gossip(&mut out).unwrap();
            let (_, packet) = out.sends.into_iter().find(|(to, _)| *to == east).unwrap();
            Message::Swim(packet).encode().unwrap()
        };
        let bytes = gossip_to_east(&mut west_swim, south.clone());
        node.take_commands();
        now = Time::from_millis(3_000);
        node.handle_packet(now, &west.0.member, Channel::Datagram, &bytes);

        assert_eq!(node.stats().zombies_refused, 1);
        assert_eq!(node.members_up(), vec![west.0.member.clone()]);
        assert!(matches!(
            node.liveness(&south.0.member.cluster),
            Liveness::Down { .. }
        ));
        let state = node
            .swim
            .iter_membership_state()
            .find(|m| m.id().0.member == south.0.member)
            .map(|m| m.state());
        assert_eq!(state, Some(foca::State::Down));
        assert!(
            !node
                .take_commands()
                .contains(&Command::Notify(Event::MemberUp(south.0.member.clone())))
        );

        // A later generation of the same replica (a real restart) is welcome.
        let bytes = gossip_to_east(&mut west_swim, id("south", 3, 2));
        now = Time::from_millis(4_000);
        node.handle_packet(now, &west.0.member, Channel::Datagram, &bytes);
        assert_eq!(node.liveness(&south.0.member.cluster), Liveness::Alive);
        assert_eq!(node.stats().zombies_refused, 1);
    }
}
