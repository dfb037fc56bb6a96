//! Membership events and failure semantics: cluster liveness transitions, withdrawal
//! after the grace period (put off while the cluster is still heard from, never while
//! this node is cut off from everyone), and re-admission.

use std::time::Duration;

use foca::OwnedNotification;
use shoal_proto::{ClusterId, MemberId, Message, SwimIdentity};

use super::command::{Command, Durability, Event, StoreOp};
use super::membership::{Liveness, Swim, SwimId, SwimOutput, Transition};
use super::node::Node;
use super::time::Time;
use super::timers::TimerKind;

/// Announces to a down cluster's replicas before withdrawing it: with 20% loss each
/// way, one exchange fails a third of the time, three fail together 1 time in 20.
pub(super) const LAST_CHANCE_ATTEMPTS: u32 = 3;

/// The last-chance probes of one outage: when the first went out, and how many have.
#[derive(Clone, Copy, Debug)]
pub(super) struct LastChance {
    first: Time,
    sent: u32,
}

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
                let grace = self.config.withdraw_grace();
                let at = now + grace;
                let probe_at = now + grace.saturating_sub(self.config.last_chance_window());
                self.timers
                    .schedule(probe_at, TimerKind::LastChance(cluster.clone()));
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
                        .push(Command::Notify(Event::ClusterRestored(cluster.clone())));
                }
                if let Some(member) = via
                    && cluster != self.config.member.cluster
                {
                    self.push_own_records_to(member);
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

    /// Shortly before a withdrawal, announces this node to every replica of `cluster` it
    /// last saw up, [`LAST_CHANCE_ATTEMPTS`] times across the last-chance window. A
    /// partition may have healed before SWIM noticed (foca announces to only two random
    /// down members per period); a live replica answers, and the answer puts the
    /// withdrawal off (see `withdraw_if_still_down`). A dead cluster costs a few
    /// datagrams per replica, once per outage.
    pub(super) fn probe_before_withdrawal(&mut self, now: Time, cluster: ClusterId) {
        let since = match self.clusters.liveness(&cluster) {
            Liveness::Down { since } | Liveness::Unknown { since } => since,
            Liveness::Alive | Liveness::Withdrawn { .. } => return,
        };
        let heard = self.last_heard.get(&cluster).is_some_and(|at| *at > since);
        if heard || self.isolated {
            return;
        }
        let fresh = LastChance {
            first: now,
            sent: 0,
        };
        let probe = self.last_chance.entry(cluster.clone()).or_insert(fresh);
        if probe.first < since {
            *probe = fresh; // left from an earlier outage
        }
        if probe.sent >= LAST_CHANCE_ATTEMPTS {
            return;
        }
        probe.sent += 1;
        if probe.sent < LAST_CHANCE_ATTEMPTS {
            let next = now + self.config.last_chance_window() / LAST_CHANCE_ATTEMPTS;
            self.timers
                .schedule(next, TimerKind::LastChance(cluster.clone()));
        }
        for identity in self.probe_targets(&cluster) {
            self.stats.last_chance_probes += 1;
            let dst = SwimId::new(identity, &self.trust);
            self.with_swim(now, |swim, out| swim.announce(dst, out));
        }
    }

    /// Where `cluster`'s replicas were last known to listen: the identities seen going
    /// down, else (after a restart, when liveness is `Unknown`) the remembered peers
    /// and seeds of that cluster. One per replica.
    fn probe_targets(&self, cluster: &ClusterId) -> Vec<SwimIdentity> {
        let remembered = self.remembered_peers.iter().cloned();
        let seeds = self.config.seeds.iter().map(|s| SwimIdentity {
            member: s.member.clone(),
            addr: s.addr,
            generation: 0,
        });
        let mut targets: Vec<SwimIdentity> = self
            .members
            .down_replicas(cluster)
            .cloned()
            .chain(
                remembered
                    .chain(seeds)
                    .filter(|p| p.member.cluster == *cluster),
            )
            .collect();
        // A stable sort keeps each member's down identity (the latest) first.
        targets.sort_by(|a, b| a.member.cmp(&b.member));
        targets.dedup_by(|a, b| a.member == b.member);
        targets
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
        let window = self.config.last_chance_window();
        let probed = self
            .last_chance
            .get(&cluster)
            .is_some_and(|p| p.first >= since && now >= p.first + window);
        if !probed {
            // No last-chance probe went out in time for this outage: this node was
            // cut off when it was due, or has just restarted. Probe now, decide later.
            self.probe_before_withdrawal(now, cluster.clone());
            self.timers
                .schedule(now + window, TimerKind::Withdraw(cluster));
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

    /// The announces this step sent to `to`.
    fn announces_to(commands: &[Command], to: &MemberId) -> Vec<Vec<u8>> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Send {
                    to: dst,
                    kind: "swim",
                    bytes,
                    ..
                } if dst == to => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    /// East saw south's only replica go down at 2 s, and south in fact sits behind a
    /// partition that heals without SWIM noticing. Shortly before the grace period ends,
    /// east announces itself to south three times; south answers, and the withdrawal
    /// is put off. Without an answer, the withdrawal comes exactly at the grace period.
    #[test]
    fn a_down_cluster_is_probed_before_withdrawal_and_an_answer_puts_it_off() {
        for south_answers in [true, false] {
            let trust = trust();
            let east = id("east", 1, 1);
            let west = id("west", 2, 1);
            let south = id("south", 3, 1);
            let config = Config::wan(east.0.member.clone(), east.0.addr, 3);
            let grace = config.withdraw_grace();
            let window = config.last_chance_window();
            let mut node = Node::new(
                config,
                key("east"),
                trust.clone(),
                Time::ZERO,
                7,
                PersistedState::default(),
            )
            .unwrap();
            node.handle_membership(Time::from_millis(500), OwnedNotification::MemberUp(west));
            node.handle_membership(
                Time::from_millis(1_000),
                OwnedNotification::MemberUp(south.clone()),
            );
            let down_at = Time::from_millis(2_000);
            node.handle_membership(down_at, OwnedNotification::MemberDown(south.clone()));
            node.take_commands();

            let mut south_swim = Foca::new(
                south.clone(),
                foca_config(&Config::wan(south.0.member.clone(), south.0.addr, 3)),
                ChaCha8Rng::seed_from_u64(3),
                SwimCodec::new(Arc::new(trust.clone())),
            );
            let mut probes = 0;
            let first_probe = down_at + (grace - window);
            let step = window / LAST_CHANCE_ATTEMPTS;
            for attempt in 0..LAST_CHANCE_ATTEMPTS {
                let now = first_probe + step * attempt;
                node.handle_timeout(Time::from_micros(now.as_micros() - 1));
                let before = announces_to(&node.take_commands(), &south.0.member);
                assert!(before.is_empty(), "attempt {attempt} came early");
                node.handle_timeout(now);
                let sent = announces_to(&node.take_commands(), &south.0.member);
                if south_answers && attempt > 0 {
                    assert!(sent.is_empty(), "south answered; no more probes");
                    continue;
                }
                assert_eq!(sent.len(), 1, "attempt {attempt}");
                probes += 1;
                if south_answers {
                    let Ok(Message::Swim(packet)) = Message::decode_datagram(&sent[0]) else {
                        panic!("not a SWIM datagram")
                    };
                    let mut out = SwimOutput::default();
                    south_swim.handle_data(&packet, &mut out).unwrap();
                    let (_, reply) = out.sends.into_iter().next().expect("south answers");
                    let reply = Message::Swim(reply).encode().unwrap();
                    node.handle_packet(now, &south.0.member, Channel::Datagram, &reply);
                }
            }
            assert_eq!(node.stats().last_chance_probes, probes);

            node.handle_timeout(down_at + grace);
            let withdrawn = matches!(
                node.liveness(&south.0.member.cluster),
                Liveness::Withdrawn { .. }
            );
            assert_eq!(withdrawn, !south_answers, "south answers: {south_answers}");
            assert_eq!(node.stats().withdrawals_postponed, u64::from(south_answers));
        }
    }
}
