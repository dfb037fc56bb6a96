//! The per-peer bound on bytes per second received: one token bucket per remote
//! address. A datagram over the budget is dropped (SWIM tolerates loss); a stream frame
//! over it is held, stream open, until the bucket has paid for it, so QUIC's stream
//! limit and flow control push back on the sender and nothing reliable is lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// May go below zero: a frame larger than what is left is charged whole, and the
    /// debt is the wait.
    tokens: f64,
    at: Instant,
}

/// The buckets of every remote address, bounded.
#[derive(Debug)]
pub(crate) struct PeerRates {
    bytes_per_s: f64,
    /// What a bucket holds when full: a second's worth, and at least one largest frame.
    burst: f64,
    addresses_max: usize,
    buckets: HashMap<SocketAddr, Bucket>,
}

impl PeerRates {
    pub(crate) fn new(bytes_per_s: u64, largest_frame: usize, addresses_max: usize) -> Self {
        let bytes_per_s = bytes_per_s as f64;
        PeerRates {
            bytes_per_s,
            burst: bytes_per_s.max(largest_frame as f64),
            addresses_max: addresses_max.max(1),
            buckets: HashMap::new(),
        }
    }

    fn bucket(&mut self, addr: SocketAddr, now: Instant) -> &mut Bucket {
        if !self.buckets.contains_key(&addr) && self.buckets.len() >= self.addresses_max {
            // A full bucket is the same as no bucket: forgetting those loses nothing.
            let (rate, burst) = (self.bytes_per_s, self.burst);
            self.buckets
                .retain(|_, b| refilled(b, now, rate, burst) < burst);
            if self.buckets.len() >= self.addresses_max {
                let richest = self
                    .buckets
                    .iter()
                    .max_by(|a, b| a.1.tokens.total_cmp(&b.1.tokens))
                    .map(|(addr, _)| *addr);
                if let Some(richest) = richest {
                    self.buckets.remove(&richest);
                }
            }
        }
        let burst = self.burst;
        let bucket = self.buckets.entry(addr).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = refilled(bucket, now, self.bytes_per_s, burst);
        bucket.at = now;
        bucket
    }

    /// Takes `bytes` for a datagram from `addr` if the budget holds them; false means
    /// drop it.
    pub(crate) fn admit(&mut self, addr: SocketAddr, bytes: usize, now: Instant) -> bool {
        let bucket = self.bucket(addr, now);
        if bucket.tokens < bytes as f64 {
            return false;
        }
        bucket.tokens -= bytes as f64;
        true
    }

    /// Charges `bytes` for a frame from `addr`, whole; returns how long to hold it
    /// before handling it (zero while the budget lasts).
    pub(crate) fn charge(&mut self, addr: SocketAddr, bytes: usize, now: Instant) -> Duration {
        let rate = self.bytes_per_s;
        let bucket = self.bucket(addr, now);
        bucket.tokens -= bytes as f64;
        if bucket.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-bucket.tokens / rate)
    }
}

fn refilled(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn datagrams_beyond_the_budget_are_refused_until_it_refills() {
        let mut rates = PeerRates::new(1_000, 100, 8);
        let t0 = Instant::now();
        assert!(rates.admit(addr(1), 600, t0));
        assert!(rates.admit(addr(1), 400, t0));
        assert!(!rates.admit(addr(1), 1, t0), "the burst is spent");
        assert!(rates.admit(addr(2), 1_000, t0), "another peer has its own");
        assert!(!rates.admit(addr(1), 300, t0 + Duration::from_millis(200)));
        assert!(rates.admit(addr(1), 300, t0 + Duration::from_millis(300)));
        assert!(
            rates.admit(addr(1), 1_000, t0 + Duration::from_secs(60)),
            "refills to the burst, not beyond"
        );
        assert!(!rates.admit(addr(1), 1, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn frames_beyond_the_budget_wait_for_what_they_cost() {
        let mut rates = PeerRates::new(1_000, 4_000, 8);
        let t0 = Instant::now();
        assert_eq!(
            rates.charge(addr(1), 4_000, t0),
            Duration::ZERO,
            "one largest frame"
        );
        assert_eq!(rates.charge(addr(1), 500, t0), Duration::from_millis(500));
        assert_eq!(
            rates.charge(addr(1), 500, t0 + Duration::from_millis(500)),
            Duration::from_millis(500),
            "the debt is paid first"
        );
    }

    #[test]
    fn buckets_are_bounded() {
        let mut rates = PeerRates::new(1_000, 100, 2);
        let t0 = Instant::now();
        rates.charge(addr(1), 900, t0);
        rates.charge(addr(2), 100, t0);
        rates.charge(addr(3), 100, t0);
        assert_eq!(rates.buckets.len(), 2);
        assert!(
            rates.buckets.contains_key(&addr(1)),
            "the most indebted stays"
        );
        assert!(!rates.buckets.contains_key(&addr(2)));
    }
}
