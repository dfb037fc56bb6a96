//! The per-client query rate: a token bucket per client, kept as its theoretical
//! arrival time (GCRA): exact integer time, one number per client. A client may send
//! `burst` queries at once, then one per `interval`.
//!
//! A client is an IPv4 address, or an IPv6 /64 (one host can pick any address of its
//! /64). The table holds at most [`CLIENTS_MAX`] clients; a new one past that evicts
//! the client with the most tokens left, which loses the least (an idle client's
//! bucket is full, the same as no bucket). Runtime state that takes `now` as a
//! parameter, as `transport::rate` does.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// Most clients whose rate is tracked at once.
pub const CLIENTS_MAX: usize = 4_096;

/// A client's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Queries a client may send at once.
    pub burst: u32,
    /// One more query is allowed per interval (1 s / queries per second).
    pub interval: Duration,
}

impl RateLimit {
    /// `per_second` queries a second (at least 1), and `burst` at once (at least 1).
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            burst: burst.max(1),
            interval: Duration::from_secs(1) / per_second.max(1),
        }
    }
}

/// The key a client is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Client {
    V4([u8; 4]),
    /// The first 64 bits of the address.
    V6Prefix(u64),
}

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Client::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4.octets()),
                None => Client::V6Prefix((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// Every tracked client's theoretical arrival time, bounded.
#[derive(Debug)]
pub struct ClientRates {
    limit: RateLimit,
    clients_max: usize,
    /// Client to its theoretical arrival time: the next query is free once `now`
    /// reaches it, and `burst` queries are allowed while it is at most
    /// `now + (burst - 1) × interval`.
    tat: HashMap<Client, Instant>,
    /// The same pairs, ordered by time: the first one has the most tokens left.
    by_tat: BTreeSet<(Instant, Client)>,
    /// Clients forgotten to make room.
    pub evicted: u64,
}

impl ClientRates {
    pub fn new(limit: RateLimit, clients_max: usize) -> Self {
        Self {
            limit,
            clients_max: clients_max.max(1),
            tat: HashMap::new(),
            by_tat: BTreeSet::new(),
            evicted: 0,
        }
    }

    /// Takes one query from `ip`'s budget at `now`; false means over the limit (the
    /// budget is unchanged).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let client = Client::from(ip);
        let interval = self.limit.interval;
        let allowance = interval * self.limit.burst;
        let tat = match self.tat.get(&client) {
            Some(&tat) => tat,
            None => {
                self.make_room();
                now
            }
        };
        let next = tat.max(now) + interval;
        if next.saturating_duration_since(now) > allowance {
            return false;
        }
        if self.tat.insert(client, next).is_some() {
            self.by_tat.remove(&(tat, client));
        }
        self.by_tat.insert((next, client));
        true
    }

    /// Tracked clients.
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    fn make_room(&mut self) {
        while self.tat.len() >= self.clients_max {
            let Some((tat, client)) = self.by_tat.pop_first() else {
                break;
            };
            self.tat.remove(&client);
            debug_assert!(self.tat.len() == self.by_tat.len(), "{tat:?}");
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let limit = RateLimit {
            burst: 3,
            interval: Duration::from_millis(100),
        };
        let mut rates = ClientRates::new(limit, 8);
        let t0 = Instant::now();
        assert!(rates.admit(ip(1), t0));
        assert!(rates.admit(ip(1), t0));
        assert!(rates.admit(ip(1), t0));
        assert!(!rates.admit(ip(1), t0), "the burst is spent");
        assert!(!rates.admit(ip(1), t0), "a refused query costs nothing");
        assert!(rates.admit(ip(2), t0), "another client has its own budget");
        assert!(!rates.admit(ip(1), t0 + Duration::from_millis(99)));
        assert!(rates.admit(ip(1), t0 + Duration::from_millis(100)));
        assert!(!rates.admit(ip(1), t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(rates.admit(ip(1), later), "refills to the burst");
        }
        assert!(!rates.admit(ip(1), later), "and not beyond");
    }

    #[test]
    fn per_second_spreads_a_second_over_the_queries() {
        assert_eq!(
            RateLimit::per_second(4, 0),
            RateLimit {
                burst: 1,
                interval: Duration::from_millis(250)
            }
        );
    }

    #[test]
    fn an_ipv6_64_is_one_client_and_a_mapped_ipv4_is_its_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::from(a), Client::from(b));
        assert_ne!(Client::from(a), Client::from(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Client::from(mapped), Client::V4([10, 0, 0, 1]));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_client_with_most_tokens() {
        let limit = RateLimit {
            burst: 2,
            interval: Duration::from_secs(1),
        };
        let mut rates = ClientRates::new(limit, 2);
        let t0 = Instant::now();
        assert!(rates.admit(ip(1), t0));
        assert!(rates.admit(ip(1), t0), "client 1 spent its burst");
        assert!(rates.admit(ip(2), t0), "client 2 has a token left");
        assert!(rates.admit(ip(3), t0), "a third client evicts one");
        assert_eq!((rates.len(), rates.evicted), (2, 1));
        assert!(
            !rates.admit(ip(1), t0),
            "the spent client was kept: evicting it would refill it"
        );
        assert!(
            rates.admit(ip(2), t0),
            "client 2 was forgotten: a full bucket"
        );
    }
}
