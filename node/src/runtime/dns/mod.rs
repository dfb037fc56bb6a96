//! The standalone DNS server: `clusterset.local.` answered from the imports, for nodes
//! without Kubernetes (where CoreDNS answers it from the objects Shoal writes). The
//! names are CoreDNS's multicluster names, plus `<cluster>.<svc>.<ns>.svc.clusterset.local`;
//! every answer lives 5 s.
//!
//! - `zone`: the answer index, immutable, one lookup per query (pure).
//! - `build`: the index from the imports: which names, which endpoints (pure).
//! - `message`: one query's bytes to one answer's bytes: hickory-server decodes and
//!   encodes (truncating to the UDP payload), the header is checked first (pure).
//! - `rate`: the per-client token buckets, bounded (takes `now`).
//! - `stats`: the counters behind `shoal_dns_*`.
//! - `server`: the UDP socket, the TCP listener, the zone builder task.
//! - `client`: a small synchronous client, for the demo and the tests.
//!
//! The driver hands each new version of the imports to an [`ImportsFeed`]; it never
//! waits for the DNS server, which builds its zone on the blocking pool.
//!
//! **Architecture invariant:** the DNS server decides no traffic rule itself: which
//! origins a service name answers with is the core's `active` flag on each import
//! source, and the cluster-scoped names answer for exactly the sources the import lists.

mod build;
pub mod client;
mod message;
mod rate;
mod server;
mod stats;
mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use build::build;
pub use message::{ADDITIONALS_MAX, UDP_PAYLOAD_MAX, handle};
pub use rate::{CLIENTS_MAX, ClientRates, RateLimit};
pub use server::{
    DnsRunning, DnsServer, TCP_CONNECTIONS_PER_CLIENT_MAX, TCP_QUERIES_PER_CONNECTION_MAX,
    TCP_QUERY_BYTES_MAX, UDP_QUERY_BYTES_MAX,
};
pub use stats::{DnsStats, Outcome};
pub use zone::{ANSWERS_MAX, Lookup, QueryType, Rdata, SrvTarget, TTL_SECONDS, ZONE, Zone};

use crate::runtime::api::DnsMetrics;
use crate::runtime::backend::Imports;

/// The default `dns.listen`: loopback, and a port that needs no privilege (53 needs
/// `CAP_NET_BIND_SERVICE`), outside the 7100s Shoal's own examples use, and the usual
/// choice for a server a local resolver forwards one zone to
/// (`server=/clusterset.local/127.0.0.1#8053`).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8053";

/// The server's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsLimits {
    /// Each client's query budget (UDP and TCP together).
    pub rate: RateLimit,
    /// TCP connections at once.
    pub tcp_connections_max: usize,
    /// How long a TCP connection may wait for its next query (and each read and write
    /// of one) before it is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsLimits {
    fn default() -> Self {
        Self {
            rate: RateLimit::per_second(100, 200),
            tcp_connections_max: 64,
            tcp_idle_timeout: Duration::from_secs(5),
        }
    }
}

/// `[dns]` once validated: where to serve and within which bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    pub limits: DnsLimits,
}

/// The DNS server could not start. Nothing is served; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// `dns.listen` could not be bound (in use, or not an address of this host).
    #[error("cannot bind {protocol} {addr}: {source}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl DnsError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            DnsError::Bind { .. } => "bind",
        }
    }
}

/// The driver's end: where each new version of the imports goes, and the counters it
/// reports in `/metrics`.
#[derive(Debug)]
pub struct ImportsFeed {
    tx: watch::Sender<Option<Arc<Imports>>>,
    stats: Arc<DnsStats>,
}

impl ImportsFeed {
    /// Hands `imports` to the zone builder, replacing a version it has not built yet.
    /// Costs a copy of the map (one reference count per import), never a wait.
    pub fn publish(&self, imports: &Imports) {
        self.tx.send_replace(Some(Arc::new(imports.clone())));
    }

    pub fn metrics(&self) -> DnsMetrics {
        self.stats.snapshot()
    }
}

#[cfg(test)]
mod tests;
