//! The DNS server's counters: one per query outcome, and a few about its bounds.
//! Shared between the server's tasks and the driver (which reads them for `/metrics`)
//! as atomics: counting never waits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::runtime::api::DnsMetrics;

/// What became of one query (or one datagram that was not one), the label of
/// `shoal_dns_queries_total{outcome}`. Each query counts once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// NOERROR with records.
    Answered,
    /// NOERROR with records, cut to the UDP payload size and marked truncated (the
    /// client asks again over TCP).
    Truncated,
    /// NOERROR without records: the name exists, not with the type asked.
    NoData,
    /// NXDOMAIN: no such name in the zone.
    NxDomain,
    /// REFUSED: a name outside the zone, or a class other than IN.
    Refused,
    /// Over the client's rate: dropped (UDP) or REFUSED (TCP).
    RateLimited,
    /// Not a DNS query (too short, undecodable, a response, not exactly one question,
    /// more records than a query carries): dropped without an answer.
    Malformed,
    /// NOTIMP: an opcode other than QUERY.
    NotImplemented,
    /// SERVFAIL: the zone was not built yet (no imports received since start).
    NotReady,
    /// SERVFAIL: the answer could not be encoded.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Answered,
        Outcome::Truncated,
        Outcome::NoData,
        Outcome::NxDomain,
        Outcome::Refused,
        Outcome::RateLimited,
        Outcome::Malformed,
        Outcome::NotImplemented,
        Outcome::NotReady,
        Outcome::Error,
    ];

    pub fn metric_label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::Truncated => "truncated",
            Outcome::NoData => "nodata",
            Outcome::NxDomain => "nxdomain",
            Outcome::Refused => "refused",
            Outcome::RateLimited => "rate_limited",
            Outcome::Malformed => "malformed",
            Outcome::NotImplemented => "not_implemented",
            Outcome::NotReady => "not_ready",
            Outcome::Error => "error",
        }
    }
}

/// The counters. Totals since start, except the zone gauges.
#[derive(Debug, Default)]
pub struct DnsStats {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    /// Answers that left records out ([`super::zone::ANSWERS_MAX`]).
    pub(super) answers_capped: AtomicU64,
    /// Clients the rate table forgot to make room ([`super::rate::CLIENTS_MAX`]).
    pub(super) clients_evicted: AtomicU64,
    /// TCP connections closed at once: every slot, or the client's share, in use.
    pub(super) tcp_refused: AtomicU64,
    /// TCP connections closed for sending nothing within the idle timeout.
    pub(super) tcp_timeouts: AtomicU64,
    /// Answers that could not be sent (a socket error).
    pub(super) send_errors: AtomicU64,
    /// Zones built since start.
    pub(super) zone_builds: AtomicU64,
    /// Names in the zone now.
    pub(super) zone_names: AtomicU64,
    /// Endpoint hostnames in the zone now that are no DNS label, and so not served.
    pub(super) zone_hostnames_skipped: AtomicU64,
}

impl DnsStats {
    pub fn count(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Queries with `outcome` since start.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].load(Ordering::Relaxed)
    }

    /// Zones built since start.
    pub fn zone_builds(&self) -> u64 {
        self.zone_builds.load(Ordering::Relaxed)
    }

    /// A plain copy, for `/metrics`.
    pub fn snapshot(&self) -> DnsMetrics {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DnsMetrics {
            queries: Outcome::ALL
                .iter()
                .map(|o| (o.metric_label().to_owned(), self.outcome(*o)))
                .collect::<BTreeMap<_, _>>(),
            answers_capped: load(&self.answers_capped),
            clients_evicted: load(&self.clients_evicted),
            tcp_refused: load(&self.tcp_refused),
            tcp_timeouts: load(&self.tcp_timeouts),
            send_errors: load(&self.send_errors),
            zone_builds: load(&self.zone_builds),
            zone_names: load(&self.zone_names),
            zone_hostnames_skipped: load(&self.zone_hostnames_skipped),
        }
    }
}
