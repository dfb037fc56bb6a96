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

impl LastChance {
    /// The round is of the outage that began at `since` and recent enough to decide on
    /// at `now`: it began at most two windows ago. An older round (this node was cut
    /// off when the withdrawal was due, and it was put off) says nothing about a
    /// partition that healed since.
    fn current(&self, since: Time, now: Time, window: Duration) -> bool {
        self.first >= since && now <= self.first + window + window
    }
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
            if let foca::Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } = &timer
            {
                self.probes
                    .suspected(now, member_id, *incarnation, &mut self.stats);
            }
            self.timers.schedule(now + after, TimerKind::Swim(timer));
        }
        for (to, packet) in out.sends {
            self.probes.sent(now, &packet, &mut self.stats);
            self.send(&to.0.member, Some(to.0.addr), &Message::Swim(packet));
        }
        for note in out.notes {
            self.handle_membership(now, note);
        }
    }

    pub(super) fn handle_membership(&mut self, now: Time, note: OwnedNotification<SwimId>) {
        match note {
            OwnedNotification::MemberUp(id) if !self.trust.contains(&id.0.member.cluster) => {
                // Gossip may name members of clusters outside this node's ClusterSet
                // (a peer with a wider clusterset_dir relays them). The transport
                // refuses their handshakes in both directions (`not_member`), so no
                // packet reaches or leaves them. They are counted and never push
                // targets.
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
                let t = self.clusters.replica_up(&id);
                self.apply_transition(now, t, Some(&id.0.member));
            }
            OwnedNotification::MemberDown(id) => {
                if !self.members.remove(&id) {
                    return;
                }
                self.commands
                    .push(Command::Notify(Event::MemberDown(id.0.member.clone())));
                let t = self.clusters.replica_down(&id, now);
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
                // Its origins stop taking traffic (under every affinity but `none`).
                self.stage_origin(&cluster);
                self.commands
                    .push(Command::Notify(Event::ClusterDown(cluster)));
            }
            Transition::Up {
                cluster,
                was_withdrawn,
                refuted,
            } => {
                // Back from down: its origins may take traffic again (and after a
                // withdrawal, they are imported again).
                self.stage_origin(&cluster);
                if was_withdrawn {
                    self.stats.restorations += 1;
                    if refuted {
                        self.stats.withdrawals_refuted += 1;
                    }
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
        let window = self.config.last_chance_window();
        let probe = self.last_chance.entry(cluster.clone()).or_insert(fresh);
        if !probe.current(since, now, window) {
            *probe = fresh; // left from an earlier outage, or from long ago in this one
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
            .is_some_and(|p| p.current(since, now, window) && now >= p.first + window);
        if !probed {
            // No last-chance probe went out in time for this outage: this node was
            // cut off when it was due (and the withdrawal was put off since), or has
            // just restarted. Probe now, decide later.
            self.probe_before_withdrawal(now, cluster.clone());
            self.timers
                .schedule(now + window, TimerKind::Withdraw(cluster));
            return;
        }
        if self.clusters.withdraw(&cluster, now) {
            self.stats.withdrawals += 1;
            self.stage_origin(&cluster);
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

    /// South's only replica is declared down and withdrawn. It comes back as generation
    /// 6 either way: renewed by foca (the same process, alive all along: the withdrawal
    /// was false) or restarted (a new process). Both are restorations; only the renewal
    /// refutes the withdrawal.
    #[test]
    fn a_renewed_comeback_refutes_the_withdrawal_and_a_restart_does_not() {
        use foca::Identity;
        for renewed in [true, false] {
            let east = id("east", 1, 1);
            let south = id("south", 3, 5);
            let config = Config::wan(east.0.member.clone(), east.0.addr, 3);
            let grace = config.withdraw_grace();
            let mut node = Node::new(
                config,
                key("east"),
                trust(),
                Time::ZERO,
                7,
                PersistedState::default(),
            )
            .unwrap();
            let west = OwnedNotification::MemberUp(id("west", 2, 1));
            node.handle_membership(Time::from_millis(500), west);
            let up = OwnedNotification::MemberUp(south.clone());
            node.handle_membership(Time::from_millis(1_000), up);
            let down_at = Time::from_millis(2_000);
            node.handle_membership(down_at, OwnedNotification::MemberDown(south.clone()));

            let cluster = south.0.member.cluster.clone();
            let mut now = down_at;
            while !matches!(node.liveness(&cluster), Liveness::Withdrawn { .. }) {
                assert!(now < down_at + grace * 2, "south never withdrawn");
                now = now + Duration::from_millis(100);
                node.handle_timeout(now);
            }
            assert_eq!(node.stats().withdrawals, 1);

            let comeback = if renewed {
                south.renew().unwrap()
            } else {
                id("south", 3, 6)
            };
            assert_eq!(comeback.0.generation, 6);
            node.take_commands();
            node.handle_membership(now, OwnedNotification::MemberUp(comeback));
            assert_eq!(node.liveness(&cluster), Liveness::Alive);
            let stats = node.stats();
            assert_eq!(stats.restorations, 1, "renewed: {renewed}");
            assert_eq!(stats.withdrawals_refuted, u64::from(renewed));
            let restored = Command::Notify(Event::ClusterRestored(cluster));
            assert!(node.take_commands().contains(&restored));
        }
    }

    /// East's node and a bare foca for west, with a fixed one-way delay between them.
    /// West only answers (its own timers never fire), and only while `west_answers`.
    struct Pair {
        node: Node,
        west: Swim,
        west_id: SwimId,
        east_id: SwimId,
        now: Time,
        /// (arrival, sequence) to (to west, packet for west or datagram for east).
        in_flight: std::collections::BTreeMap<(Time, u64), (bool, Vec<u8>)>,
        seq: u64,
        delay: Duration,
        west_answers: bool,
        /// Direct pings east sent west.
        pings: u64,
    }

    impl Pair {
        fn new(delay: Duration) -> Self {
            let trust = trust();
            let (east_id, west_id) = (id("east", 1, 1), id("west", 2, 1));
            let config = Config::wan(east_id.0.member.clone(), east_id.0.addr, 2);
            let node = Node::new(
                config,
                key("east"),
                trust.clone(),
                Time::ZERO,
                7,
                PersistedState::default(),
            )
            .unwrap();
            let west = Foca::new(
                west_id.clone(),
                foca_config(&Config::wan(west_id.0.member.clone(), west_id.0.addr, 2)),
                ChaCha8Rng::seed_from_u64(9),
                SwimCodec::new(Arc::new(trust)),
            );
            let mut pair = Pair {
                node,
                west,
                west_id,
                east_id,
                now: Time::ZERO,
                in_flight: std::collections::BTreeMap::new(),
                seq: 0,
                delay,
                west_answers: true,
                pings: 0,
            };
            pair.node.take_commands();
            let east = pair.east_id.clone();
            pair.west_says(|swim, out| swim.announce(east, out));
            pair
        }

        /// West's foca does something; what it sends east goes into flight.
        fn west_says(
            &mut self,
            call: impl FnOnce(&mut Swim, &mut SwimOutput) -> Result<(), foca::Error>,
        ) {
            let mut out = SwimOutput::default();
            call(&mut self.west, &mut out).unwrap();
            for (to, packet) in out.sends {
                if to.0.member == self.east_id.0.member {
                    let bytes = Message::Swim(packet).encode().unwrap();
                    self.fly(false, bytes);
                }
            }
        }

        fn fly(&mut self, to_west: bool, bytes: Vec<u8>) {
            self.seq += 1;
            let at = self.now + self.delay;
            self.in_flight.insert((at, self.seq), (to_west, bytes));
        }

        /// East's SWIM sends to west go into flight; its other commands are dropped.
        fn route_east(&mut self) {
            for command in self.node.take_commands() {
                let Command::Send {
                    to,
                    kind: "swim",
                    bytes,
                    ..
                } = command
                else {
                    continue;
                };
                let Ok(Message::Swim(packet)) = Message::decode_datagram(&bytes) else {
                    panic!("not a SWIM datagram");
                };
                assert_eq!(to, self.west_id.0.member);
                let header = SwimCodec::peek_header(&packet).unwrap();
                if matches!(header.message, foca::Message::Ping(_)) {
                    self.pings += 1;
                }
                self.fly(true, packet);
            }
        }

        /// Delivers packets and fires east's timers in time order until `until`.
        fn run_until(&mut self, until: Time) {
            loop {
                let packet = self.in_flight.keys().next().map(|(at, _)| *at);
                let timer = self.node.poll_timeout();
                let next = match (packet, timer) {
                    (Some(p), Some(t)) => p.min(t),
                    (Some(p), None) => p,
                    (None, Some(t)) => t,
                    (None, None) => break,
                };
                if next > until {
                    break;
                }
                self.now = next;
                if packet == Some(next) {
                    let (_, (to_west, bytes)) = self.in_flight.pop_first().unwrap();
                    if to_west && self.west_answers {
                        self.west_says(|swim, out| swim.handle_data(&bytes, out));
                    } else if !to_west {
                        let west = self.west_id.0.member.clone();
                        self.node
                            .handle_packet(next, &west, Channel::Datagram, &bytes);
                    }
                } else {
                    self.node.handle_timeout(next);
                }
                self.route_east();
            }
            self.now = until;
        }
    }

    /// Every direct ping east sends is acked after exactly two one-way delays, 3.5 ms:
    /// each lands in the (2.5 ms, 5 ms] bucket of west's histogram, and the sum is
    /// exact. Nothing is missed, suspected or refuted.
    #[test]
    fn each_ack_adds_its_round_trip_to_the_peers_histogram() {
        let mut pair = Pair::new(Duration::from_micros(1_750));
        pair.run_until(Time::from_millis(10_500));
        let stats = pair.node.stats();
        let peers: Vec<_> = stats.swim_ack.by_peer().collect();
        assert_eq!(peers.len(), 1);
        let (peer, histogram) = peers[0];
        assert_eq!(*peer, pair.west_id.0.member);
        assert!(
            pair.pings >= 9,
            "east probes west once a second: {}",
            pair.pings
        );
        let mut buckets = [0; super::super::stats::SWIM_ACK_BUCKETS_MICROS.len()];
        buckets[2] = pair.pings;
        assert_eq!(histogram.buckets, buckets);
        assert_eq!(histogram.count, pair.pings);
        assert_eq!(histogram.sum_micros, 3_500 * pair.pings);
        assert_eq!(stats.swim_acks_missed, 0);
        assert_eq!(stats.members_suspected, 0);
        assert_eq!(stats.suspicions_refuted, 0);
    }

    /// West gossips that east is suspect in its current incarnation: east refutes it
    /// once. The same suspicion again, now of an older incarnation, needs no refutal.
    #[test]
    fn a_suspicion_of_this_node_is_refuted_and_counted_once() {
        let mut pair = Pair::new(Duration::from_micros(1_750));
        pair.run_until(Time::from_millis(3_000));
        assert_eq!(pair.node.members_up(), vec![pair.west_id.0.member.clone()]);
        let suspect = Member::new(pair.east_id.clone(), 0, foca::State::Suspect);
        for round in 0..2 {
            let at = Time::from_millis(3_000 + 1_000 * round);
            pair.run_until(at);
            let update = suspect.clone();
            pair.west_says(|swim, out| {
                swim.apply_many(std::iter::once(update), true, &mut *out)?;
                swim.gossip(out)
            });
            pair.run_until(at + Duration::from_millis(500));
            assert_eq!(pair.node.stats().suspicions_refuted, 1, "round {round}");
        }
        assert_eq!(pair.node.stats().members_suspected, 0);
    }

    /// West stops answering: east's next probe puts it under suspicion (counted once,
    /// although east probes the suspect again before declaring it down), and every
    /// ping east sent it is either missed or still within its probe period.
    #[test]
    fn a_silent_member_is_suspected_once_and_its_pings_are_missed() {
        let mut pair = Pair::new(Duration::from_micros(1_750));
        pair.run_until(Time::from_millis(3_000));
        let answered = pair.pings;
        assert_eq!(pair.node.stats().swim_ack.total().count, answered);
        pair.west_answers = false;
        let west = pair.west_id.0.member.clone();
        let mut now = Time::from_millis(3_000);
        while pair.node.members_up().contains(&west) {
            assert!(now < Time::from_millis(10_000), "west never went down");
            now = now + Duration::from_millis(100);
            pair.run_until(now);
        }
        let stats = pair.node.stats();
        assert_eq!(stats.members_suspected, 1);
        assert_eq!(stats.swim_ack.total().count, answered);
        let silent = pair.pings - answered;
        assert!(silent >= 2, "probed while suspect too: {silent}");
        let pending = pair.node.probes.pings_pending() as u64;
        assert!(stats.swim_acks_missed >= 1);
        assert_eq!(stats.swim_acks_missed + pending, silent);
    }
}
