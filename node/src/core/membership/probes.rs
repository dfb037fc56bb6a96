//! What this node learns from the SWIM messages it sends and receives, beside foca:
//! how long each direct ping waited for its ack, whether foca raised this node's own
//! incarnation (it refuted a suspicion), and when its own probes put a member under
//! suspicion. foca keeps none of this where a driver can read it.

use std::collections::VecDeque;
use std::time::Duration;

use foca::{Header, Incarnation, Message, ProbeNumber};
use shoal_proto::MemberId;

use super::identity::{SwimCodec, SwimId};
use crate::core::stats::Stats;
use crate::core::time::Time;

/// Most direct pings awaiting an ack. foca sends one per probe period, so a handful
/// are ever pending; beyond the bound the oldest is forgotten and counted
/// (`swim_pings_evicted`).
pub(in crate::core) const PINGS_PENDING_MAX: usize = 64;

/// Most suspicions remembered, to count each once although foca schedules its
/// suspect-to-down timer again whenever it probes a member already suspect. Beyond
/// the bound the oldest is forgotten: a later repeat of it would count again.
const SUSPICIONS_REMEMBERED_MAX: usize = 256;

/// A direct ping this node sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PendingPing {
    member: MemberId,
    probe: ProbeNumber,
    sent: Time,
}

/// One suspicion raised by this node's own probe: the member's identity (with its
/// generation) and the incarnation it was suspected in.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Suspicion {
    member: MemberId,
    generation: u32,
    incarnation: Incarnation,
    since: Time,
}

/// Probe bookkeeping, fed every SWIM header that goes out or comes in.
#[derive(Debug)]
pub(in crate::core) struct Probes {
    /// In the order sent, so the stale ones are at the front.
    pending: VecDeque<PendingPing>,
    /// foca ignores an ack that comes after the next probe started.
    ack_deadline: Duration,
    suspicions: VecDeque<Suspicion>,
    /// A suspicion lasts until foca's suspect-to-down timer fires.
    suspicion_lasts: Duration,
    /// This node's generation and incarnation in the last packet it sent.
    own: Option<(u32, Incarnation)>,
}

impl Probes {
    pub(in crate::core) fn new(probe_period: Duration, suspect_to_down: Duration) -> Self {
        Probes {
            pending: VecDeque::new(),
            ack_deadline: probe_period,
            suspicions: VecDeque::new(),
            suspicion_lasts: suspect_to_down + probe_period,
            own: None,
        }
    }

    /// A packet foca sends: a direct ping starts waiting for its ack, and a higher
    /// incarnation of this node's identity than the last packet's is a refutation.
    pub(in crate::core) fn sent(&mut self, now: Time, packet: &[u8], stats: &mut Stats) {
        let Ok(header) = SwimCodec::peek_header(packet) else {
            return; // foca encoded it; only a bug makes it unreadable.
        };
        self.note_own_incarnation(&header, stats);
        if let Message::Ping(probe) = header.message {
            self.expire(now, stats);
            if self.pending.len() >= PINGS_PENDING_MAX {
                self.pending.pop_front();
                stats.swim_pings_evicted += 1;
            }
            self.pending.push_back(PendingPing {
                member: header.dst.0.member,
                probe,
                sent: now,
            });
        }
    }

    /// A packet that came in (its sender already checked): an ack of a pending ping
    /// adds its latency to the histogram, and is returned (the round trip to the
    /// sender's cluster, for traffic policy).
    pub(in crate::core) fn received(
        &mut self,
        now: Time,
        header: &Header<SwimId>,
        stats: &mut Stats,
    ) -> Option<Duration> {
        let Message::Ack(probe) = header.message else {
            return None;
        };
        self.expire(now, stats);
        let from = &header.src.0.member;
        let matching = self
            .pending
            .iter()
            .position(|p| p.probe == probe && p.member == *from);
        let ping = matching.and_then(|i| self.pending.remove(i))?;
        let latency = now.since(ping.sent);
        stats.swim_ack.record(from, latency);
        Some(latency)
    }

    /// foca scheduled `ChangeSuspectToDown` for `member` in `incarnation`: its probe of
    /// the member failed. Counts the suspicion unless it is one already counted.
    pub(in crate::core) fn suspected(
        &mut self,
        now: Time,
        member: &SwimId,
        incarnation: Incarnation,
        stats: &mut Stats,
    ) {
        while self
            .suspicions
            .front()
            .is_some_and(|s| now >= s.since + self.suspicion_lasts)
        {
            self.suspicions.pop_front();
        }
        let suspicion = Suspicion {
            member: member.0.member.clone(),
            generation: member.0.generation,
            incarnation,
            since: now,
        };
        let same = |s: &Suspicion| {
            (&s.member, s.generation, s.incarnation)
                == (
                    &suspicion.member,
                    suspicion.generation,
                    suspicion.incarnation,
                )
        };
        if self.suspicions.iter().any(same) {
            return;
        }
        stats.members_suspected += 1;
        if self.suspicions.len() >= SUSPICIONS_REMEMBERED_MAX {
            self.suspicions.pop_front();
        }
        self.suspicions.push_back(suspicion);
    }

    /// Forgets the pings whose ack can no longer count, and counts them missed.
    fn expire(&mut self, now: Time, stats: &mut Stats) {
        while self
            .pending
            .front()
            .is_some_and(|p| now >= p.sent + self.ack_deadline)
        {
            self.pending.pop_front();
            stats.swim_acks_missed += 1;
        }
    }

    /// How many direct pings await their ack.
    #[cfg(test)]
    pub(in crate::core) fn pings_pending(&self) -> usize {
        self.pending.len()
    }

    /// foca raises its incarnation only to refute a suspicion of itself, and resets it
    /// when it takes a new identity (a new generation).
    fn note_own_incarnation(&mut self, header: &Header<SwimId>, stats: &mut Stats) {
        let current = (header.src.0.generation, header.src_incarnation);
        match self.own {
            Some((generation, incarnation)) if generation == current.0 => {
                if current.1 > incarnation {
                    stats.suspicions_refuted += 1;
                    self.own = Some(current);
                }
            }
            _ => self.own = Some(current),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use foca::Codec;
    use shoal_proto::{ClusterId, KeyRing, NetAddr, ReplicaId, SwimIdentity};

    use super::*;
    use crate::core::stats::SWIM_ACK_BUCKETS_MICROS;

    const PERIOD: Duration = Duration::from_millis(1_000);
    const SUSPECT_TO_DOWN: Duration = Duration::from_millis(1_500);

    fn id(cluster: &str, generation: u32) -> SwimId {
        let identity = SwimIdentity {
            member: MemberId {
                cluster: ClusterId::new(cluster).unwrap(),
                replica: ReplicaId(0),
            },
            addr: NetAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 7946))),
            generation,
        };
        SwimId::new(identity, &KeyRing::new())
    }

    fn header(
        src: SwimId,
        incarnation: Incarnation,
        dst: SwimId,
        message: Message<SwimId>,
    ) -> Header<SwimId> {
        Header {
            src,
            src_incarnation: incarnation,
            dst,
            message,
        }
    }

    fn packet(header: &Header<SwimId>) -> Vec<u8> {
        let mut codec = SwimCodec::new(std::sync::Arc::new(KeyRing::new()));
        let mut buf = Vec::new();
        codec.encode_header(header, &mut buf).unwrap();
        buf
    }

    fn ping(to: &str, probe: ProbeNumber) -> Vec<u8> {
        packet(&header(id("east", 1), 0, id(to, 1), Message::Ping(probe)))
    }

    fn ack(from: &str, probe: ProbeNumber) -> Header<SwimId> {
        header(id(from, 1), 0, id("east", 1), Message::Ack(probe))
    }

    fn ms(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn west() -> MemberId {
        id("west", 1).0.member
    }

    #[test]
    fn an_ack_records_the_time_since_its_ping_in_its_bucket() {
        let mut probes = Probes::new(PERIOD, SUSPECT_TO_DOWN);
        let mut stats = Stats::default();
        probes.sent(ms(10_000), &ping("west", 7), &mut stats);
        // An ack of another probe number, or from another member, is not this ping's.
        probes.received(ms(10_001), &ack("west", 6), &mut stats);
        probes.received(ms(10_001), &ack("south", 7), &mut stats);
        assert_eq!(stats.swim_ack.total().count, 0);
        let at = Time::from_micros(10_003_500);
        probes.received(at, &ack("west", 7), &mut stats);
        // A duplicate ack finds nothing pending.
        probes.received(at, &ack("west", 7), &mut stats);

        let (peer, histogram) = stats.swim_ack.by_peer().next().unwrap();
        assert_eq!(*peer, west());
        let mut buckets = [0; SWIM_ACK_BUCKETS_MICROS.len()];
        buckets[2] = 1; // 3.5 ms: above 2.5 ms, at most 5 ms
        let expected = crate::core::stats::LatencyHistogram {
            buckets,
            sum_micros: 3_500,
            count: 1,
        };
        assert_eq!(*histogram, expected);
        let cumulative: Vec<(u64, u64)> = histogram.cumulative().take(4).collect();
        assert_eq!(
            cumulative,
            vec![(1_000, 0), (2_500, 0), (5_000, 1), (10_000, 1)]
        );
        assert_eq!(stats.swim_acks_missed, 0);
    }

    #[test]
    fn a_ping_unanswered_for_a_probe_period_is_missed_and_its_late_ack_ignored() {
        let mut probes = Probes::new(PERIOD, SUSPECT_TO_DOWN);
        let mut stats = Stats::default();
        probes.sent(ms(10_000), &ping("west", 1), &mut stats);
        probes.received(ms(10_999), &ack("south", 1), &mut stats);
        assert_eq!(
            stats.swim_acks_missed, 0,
            "not stale before the period ends"
        );
        probes.sent(ms(11_000), &ping("west", 2), &mut stats);
        assert_eq!(stats.swim_acks_missed, 1);
        probes.received(ms(11_001), &ack("west", 1), &mut stats);
        assert_eq!(stats.swim_ack.total().count, 0, "the late ack is ignored");
        probes.received(ms(11_002), &ack("west", 2), &mut stats);
        assert_eq!(stats.swim_ack.total().count, 1);
        assert_eq!(stats.swim_ack.total().sum_micros, 2_000);
    }

    #[test]
    fn pending_pings_are_bounded_and_the_oldest_is_evicted() {
        let mut probes = Probes::new(PERIOD, SUSPECT_TO_DOWN);
        let mut stats = Stats::default();
        let count = u8::try_from(PINGS_PENDING_MAX).unwrap() + 1;
        for probe in 0..count {
            probes.sent(ms(10_000), &ping("west", probe), &mut stats);
        }
        assert_eq!(stats.swim_pings_evicted, 1);
        assert_eq!(probes.pending.len(), PINGS_PENDING_MAX);
        probes.received(ms(10_001), &ack("west", 0), &mut stats);
        assert_eq!(stats.swim_ack.total().count, 0, "probe 0 was evicted");
        probes.received(ms(10_001), &ack("west", 1), &mut stats);
        assert_eq!(stats.swim_ack.total().count, 1);
    }

    #[test]
    fn acks_beyond_the_peer_bound_are_pooled() {
        let mut stats = Stats::default();
        let latency = Duration::from_millis(3);
        for i in 0..=crate::core::stats::SWIM_ACK_PEERS_MAX {
            let peer = id(&format!("c{i}"), 1).0.member;
            stats.swim_ack.record(&peer, latency);
        }
        let tracked = stats.swim_ack.by_peer().count();
        assert_eq!(tracked, crate::core::stats::SWIM_ACK_PEERS_MAX);
        assert_eq!(stats.swim_ack.others().count, 1);
        let total = stats.swim_ack.total();
        assert_eq!(total.count, tracked as u64 + 1);
        assert_eq!(total.sum_micros, 3_000 * total.count);
    }

    #[test]
    fn a_raised_incarnation_is_a_refutation_and_a_new_generation_is_not() {
        let mut probes = Probes::new(PERIOD, SUSPECT_TO_DOWN);
        let mut stats = Stats::default();
        let gossip = |generation, incarnation| {
            packet(&header(
                id("east", generation),
                incarnation,
                id("west", 1),
                Message::Gossip,
            ))
        };
        for (generation, incarnation, refuted) in [
            (1, 0, 0),
            (1, 0, 0),
            (1, 1, 1),
            (1, 3, 2), // suspected in a higher incarnation than its own: refuted once
            (1, 3, 2),
            (2, 0, 2), // renewed after being declared down: a rejoin, not a refutation
            (2, 1, 3),
        ] {
            probes.sent(ms(1_000), &gossip(generation, incarnation), &mut stats);
            assert_eq!(
                stats.suspicions_refuted, refuted,
                "generation {generation}, incarnation {incarnation}"
            );
        }
    }

    #[test]
    fn each_suspicion_counts_once_while_it_lasts() {
        let mut probes = Probes::new(PERIOD, SUSPECT_TO_DOWN);
        let mut stats = Stats::default();
        let west = id("west", 1);
        probes.suspected(ms(10_000), &west, 0, &mut stats);
        // foca probes the suspect member again and schedules the timer once more.
        probes.suspected(ms(11_000), &west, 0, &mut stats);
        assert_eq!(stats.members_suspected, 1);
        // Refuted (a higher incarnation), then suspected again; or a new generation.
        probes.suspected(ms(11_500), &west, 1, &mut stats);
        probes.suspected(ms(11_500), &id("west", 2), 0, &mut stats);
        assert_eq!(stats.members_suspected, 3);
        // Long after the first suspicion ended (down, or refuted and forgotten).
        probes.suspected(ms(12_500), &west, 0, &mut stats);
        assert_eq!(stats.members_suspected, 4);
    }
}
