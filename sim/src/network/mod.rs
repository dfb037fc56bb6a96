//! The simulated network: latency from a region model (plus the latency changes a
//! scenario makes between regions), jitter, loss, duplication, reordering, and the
//! faults in `faults`.
//!
//! - `regions`: nine real regions and the latency model between them.
//! - `faults`: partitions (symmetric and one-way), isolated nodes, clogged links.
//!
//! Channel semantics follow the transport. A **datagram** (SWIM) may be lost,
//! duplicated or reordered. A **stream** frame models a QUIC stream: never duplicated;
//! a lost transmission is retransmitted after a retransmission timeout (1.5 round
//! trips, doubling), so loss shows up as delay. A stream frame is dropped only when
//! the connection breaks: a partition in either direction, or too many retransmissions.
//! Faults are checked here, at send time, and again by the world at delivery time.

pub mod faults;
pub mod regions;

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use shoal_proto::wire::Channel;

use faults::Faults;
use regions::{INTRA_REGION_ONE_WAY_US, LatencyTable, REGIONS};

/// Transmissions of one stream frame before the connection is declared dead.
const STREAM_ATTEMPTS_MAX: u32 = 10;
/// Smallest retransmission timeout (QUIC's timer granularity plus ack delay).
const RTO_MIN_US: u64 = 10_000;

/// Probabilities that shape every link (faults add to them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// A datagram, or one stream transmission, is lost.
    pub loss: f64,
    /// A datagram arrives twice.
    pub duplicate: f64,
    /// A message takes an extra random delay of up to two one-way latencies, so that
    /// it overtakes or is overtaken by others.
    pub reorder: f64,
    /// Latency grows by up to this fraction, uniformly.
    pub jitter: f64,
}

impl LinkParams {
    /// No faults at all: latency and jitter only.
    pub const CLEAN: LinkParams = LinkParams {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        jitter: 0.1,
    };
    /// The background of every fault scenario: the internet is not perfect.
    pub const BACKGROUND: LinkParams = LinkParams {
        loss: 0.005,
        duplicate: 0.002,
        reorder: 0.01,
        jitter: 0.1,
    };
    /// The background loss and duplication, without reordering: every round trip then
    /// lies within the link's latency and jitter, as the `affinity` scenario's check of
    /// affinity `nearest` needs (a reordered ack would count as a round trip of up to
    /// three times the link's).
    pub const BACKGROUND_IN_ORDER: LinkParams = LinkParams {
        reorder: 0.0,
        ..LinkParams::BACKGROUND
    };
    /// The `lossy` scenario: 20% loss with duplication and reordering.
    pub const LOSSY: LinkParams = LinkParams {
        loss: 0.2,
        duplicate: 0.05,
        reorder: 0.1,
        jitter: 0.1,
    };
}

/// Why a message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// A partition cut the link (at send or at delivery).
    Partition,
    /// A datagram was lost.
    Loss,
    /// A stream gave up after too many retransmissions.
    Timeout,
    /// The receiver was down, or the connection died with a restart.
    Down,
}

/// What happens to one message: up to two copies, each with its delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Dropped(DropReason),
    Deliver {
        delay_us: u64,
        duplicate_us: Option<u64>,
    },
}

/// Links between nodes, each node placed in a region.
#[derive(Clone, Debug)]
pub struct Network {
    latency: LatencyTable,
    /// [region][region]: one-way latency added to the model's (a latency change; zero
    /// unless a scenario sets it). Symmetric.
    extra_one_way_us: [[u64; REGIONS.len()]; REGIONS.len()],
    node_region: Vec<usize>,
    pub params: LinkParams,
    pub faults: Faults,
}

impl Network {
    pub fn new(node_region: Vec<usize>, params: LinkParams) -> Self {
        Self {
            latency: LatencyTable::default(),
            extra_one_way_us: [[0; REGIONS.len()]; REGIONS.len()],
            node_region,
            params,
            faults: Faults::default(),
        }
    }

    pub fn region_of(&self, node: usize) -> usize {
        self.node_region[node]
    }

    /// The base one-way latency between two nodes, without jitter.
    pub fn base_one_way_us(&self, from: usize, to: usize) -> u64 {
        let (a, b) = (self.node_region[from], self.node_region[to]);
        self.latency.one_way_us(a, b) + self.extra_one_way_us[a][b]
    }

    /// From now on, links between regions `a` and `b` (both ways) take `extra_us` more
    /// one way than the model says. Returns the previous extra.
    pub fn set_extra_one_way_us(&mut self, a: usize, b: usize, extra_us: u64) -> u64 {
        let before = self.extra_one_way_us[a][b];
        self.extra_one_way_us[a][b] = extra_us;
        self.extra_one_way_us[b][a] = extra_us;
        before
    }

    /// The extra one-way latency between regions `a` and `b`.
    pub fn extra_one_way_us(&self, a: usize, b: usize) -> u64 {
        self.extra_one_way_us[a][b]
    }

    /// The shortest and the longest round trip a datagram and its answer can take
    /// between two nodes now: twice the base latency, plus at most the jitter each way
    /// (and the reordering delay each way, when links reorder).
    pub fn round_trip_range_us(&self, a: usize, b: usize) -> (u64, u64) {
        let spread = |from, to| {
            let base = self.base_one_way_us(from, to);
            let jitter = self.spread_us(from, to, base);
            let reorder = if self.params.reorder > 0.0 {
                2 * base
            } else {
                0
            };
            base + jitter + reorder
        };
        let min = self.base_one_way_us(a, b) + self.base_one_way_us(b, a);
        (min, spread(a, b) + spread(b, a))
    }

    /// The most jitter adds to one message between two nodes.
    fn spread_us(&self, from: usize, to: usize, base: u64) -> u64 {
        if self.node_region[from] == self.node_region[to] {
            INTRA_REGION_ONE_WAY_US
        } else {
            (base as f64 * self.params.jitter) as u64
        }
    }

    /// Decides the fate of one message sent now from `from` to `to`.
    pub fn transmit(&self, rng: &mut ChaCha8Rng, from: usize, to: usize, channel: Channel) -> Fate {
        match channel {
            Channel::Datagram => self.transmit_datagram(rng, from, to),
            Channel::Stream => self.transmit_stream(rng, from, to),
        }
    }

    fn transmit_datagram(&self, rng: &mut ChaCha8Rng, from: usize, to: usize) -> Fate {
        if self.faults.blocked(from, to) {
            return Fate::Dropped(DropReason::Partition);
        }
        let clog = self.faults.clog(from, to);
        let loss = combine(self.params.loss, clog.map_or(0.0, |c| c.loss));
        if rng.random_bool(loss) {
            return Fate::Dropped(DropReason::Loss);
        }
        let extra = clog.map_or(0, |c| c.extra_delay_us);
        let delay_us = self.sample_delay(rng, from, to) + extra;
        let duplicate_us = rng
            .random_bool(self.params.duplicate)
            .then(|| self.sample_delay(rng, from, to) + extra);
        Fate::Deliver {
            delay_us,
            duplicate_us,
        }
    }

    fn transmit_stream(&self, rng: &mut ChaCha8Rng, from: usize, to: usize) -> Fate {
        if !self.faults.connected(from, to) {
            return Fate::Dropped(DropReason::Partition);
        }
        let clog = self.faults.clog(from, to);
        let loss = combine(self.params.loss, clog.map_or(0.0, |c| c.loss));
        let extra = clog.map_or(0, |c| c.extra_delay_us);
        let rtt_us = 2 * (self.base_one_way_us(from, to) + extra);
        let mut rto_us = (rtt_us * 3 / 2).max(RTO_MIN_US);
        let mut waited_us = 0;
        let mut attempts = 1;
        while rng.random_bool(loss) {
            if attempts == STREAM_ATTEMPTS_MAX {
                return Fate::Dropped(DropReason::Timeout);
            }
            attempts += 1;
            waited_us += rto_us;
            rto_us *= 2;
        }
        Fate::Deliver {
            delay_us: waited_us + self.sample_delay(rng, from, to) + extra,
            duplicate_us: None,
        }
    }

    /// One-way latency with jitter, plus a reordering delay now and then.
    fn sample_delay(&self, rng: &mut ChaCha8Rng, from: usize, to: usize) -> u64 {
        let base = self.base_one_way_us(from, to);
        let spread = self.spread_us(from, to, base);
        let mut delay = base + rng.random_range(0..=spread);
        if self.params.reorder > 0.0 && rng.random_bool(self.params.reorder) {
            delay += rng.random_range(0..=2 * base);
        }
        delay
    }
}

/// The probability that either of two independent losses happens.
fn combine(a: f64, b: f64) -> f64 {
    (1.0 - (1.0 - a) * (1.0 - b)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::faults::{Fault, NodeSet};
    use super::*;

    #[test]
    fn streams_turn_loss_into_delay_and_datagrams_into_drops() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut net = Network::new(vec![0, 4], LinkParams::LOSSY);
        let mut lost = 0;
        for _ in 0..1_000 {
            match net.transmit(&mut rng, 0, 1, Channel::Stream) {
                Fate::Deliver { duplicate_us, .. } => assert_eq!(duplicate_us, None),
                Fate::Dropped(_) => lost += 1,
            }
            if net.transmit(&mut rng, 0, 1, Channel::Datagram) == Fate::Dropped(DropReason::Loss) {
                lost += 1_000;
            }
        }
        assert!(lost % 1_000 == 0, "no stream frame lost");
        assert!(
            (100..300).contains(&(lost / 1_000)),
            "about 20% of datagrams lost"
        );
        net.faults.add(
            1,
            Fault::OneWay {
                from: NodeSet::from_nodes(2, [1]),
                to: NodeSet::from_nodes(2, [0]),
            },
        );
        assert_eq!(
            net.transmit(&mut rng, 0, 1, Channel::Stream),
            Fate::Dropped(DropReason::Partition),
            "a one-way partition breaks the connection both ways"
        );
    }
}
