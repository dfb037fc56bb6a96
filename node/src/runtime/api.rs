//! The contract between the driver and its front ends (the HTTP API, `shoal status`,
//! the demo): requests the driver answers, and the JSON views it answers with.
//!
//! Every view is plain data, built by the driver from the core's accessors and the
//! transport's counters at the moment of the request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A question or order for the driver. The HTTP server sends these over a bounded
/// channel; a full channel answers 503.
#[derive(Debug)]
pub enum ApiRequest {
    Status(oneshot::Sender<StatusView>),
    Peers(oneshot::Sender<Vec<PeerView>>),
    /// This cluster's own exports, as published.
    Services(oneshot::Sender<Vec<ServiceView>>),
    Imports(oneshot::Sender<Vec<ImportView>>),
    Lease {
        name: String,
        op: LeaseOp,
        reply: oneshot::Sender<Result<LeaseView, ApiError>>,
    },
    Leases(oneshot::Sender<Vec<LeaseView>>),
    Metrics(oneshot::Sender<MetricsSnapshot>),
    Chaos {
        op: ChaosOp,
        reply: oneshot::Sender<Result<ChaosView, ApiError>>,
    },
}

/// What to do with a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseOp {
    Get,
    /// Acquire, and keep renewing until released.
    Acquire,
    Release,
}

/// A refused request. `status` is the HTTP status the API answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: 409,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: 503,
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub cluster: String,
    pub replica: u16,
    pub generation: u32,
    /// Whether this replica publishes its cluster's records.
    pub publisher: bool,
    pub listen: String,
    pub uptime_ms: u64,
    /// No remote member is reachable: the imports are the last view, served stale.
    pub isolated: bool,
    /// How long ago a remote member was last heard from, when known.
    pub stale_for_ms: Option<u64>,
    pub records: u64,
    pub own_version: u64,
    pub clusters_alive: u32,
    pub clusters_down: u32,
}

/// One remote member as SWIM and the transport see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub cluster: String,
    pub replica: u16,
    pub addr: String,
    /// `alive`, `suspect` or `down` (the member); the cluster may be `withdrawn`.
    pub state: String,
    pub rtt_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub version: u64,
    /// `ClusterSetIP` or `Headless`.
    pub service_type: String,
    pub ports: Vec<String>,
    pub endpoints: u32,
    pub ready_endpoints: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportView {
    pub namespace: String,
    pub name: String,
    pub service_type: String,
    pub ports: Vec<String>,
    /// Source cluster to its number of endpoints.
    pub clusters: BTreeMap<String, u32>,
    pub endpoints: u32,
    /// Clusters whose export conflicts with the oldest one, and why.
    pub conflicts: Vec<String>,
    /// The traffic policy (`none`, `local`, `remote` or `nearest`).
    pub affinity: String,
    /// The clusters that take traffic under it, in cluster order.
    pub active: Vec<String>,
    /// Why those: `all-origins`, `local`, `local-failover`, `remote`,
    /// `remote-failover`, `nearest (<cluster>)` or `none-ready`.
    pub traffic: String,
}

/// The lease as this node sees it: the HTTP API's `/v1/leases/{name}` JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub name: String,
    pub holder: Option<String>,
    pub token: Option<u64>,
    pub expires_in_ms: Option<u64>,
    /// This cluster holds the lease now and may write with `token`.
    pub write_ready: bool,
    /// This node asked for the lease and keeps renewing it.
    pub wanted: bool,
}

/// Everything `/metrics` prints. Counters are totals since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Members by state (`alive`, `suspect`, `down`).
    pub members: BTreeMap<String, u64>,
    pub clusters_alive: u64,
    pub clusters_down: u64,
    pub records: u64,
    pub imports: u64,
    /// The core's `Stats` counters by name, and the transport's totals (`transport_*`).
    pub core_counters: BTreeMap<String, u64>,
    /// Per remote cluster: RTT (seconds), bytes in and out.
    pub peers: Vec<PeerMetrics>,
    /// Rejected or dropped input, by reason (transport and core).
    pub rejects: BTreeMap<String, u64>,
    /// Seconds from a record's creation at its origin to its arrival here: the most
    /// recent, and a histogram (upper bound in seconds to cumulative count).
    pub propagation_lag_last_seconds: Option<f64>,
    pub propagation_lag_buckets: Vec<(f64, u64)>,
    pub propagation_lag_sum_seconds: f64,
    pub propagation_lag_count: u64,
    /// Per lease: 1 while this cluster holds it, and its token.
    pub leases: Vec<LeaseView>,
    pub isolated: bool,
    /// The backend's counters: (name, label, count), printed as
    /// `shoal_backend_<name>_total{label}`.
    #[serde(default)]
    pub backend: Vec<(String, String, u64)>,
    /// Whether this replica publishes for its cluster (the local leader).
    #[serde(default)]
    pub publisher: bool,
    /// How many times this replica's leadership changed since start.
    #[serde(default)]
    pub leadership_changes: u64,
    /// SWIM ack latency: seconds from each direct ping this node sent to its ack, per
    /// peer (at most `SWIM_ACK_PEERS_MAX`, then pooled under cluster `*`).
    #[serde(default)]
    pub swim_ack: Vec<SwimAckMetrics>,
    /// The standalone DNS server's counters; `None` when it is not running.
    #[serde(default)]
    pub dns: Option<DnsMetrics>,
}

/// The DNS server's counters, printed as `shoal_dns_*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsMetrics {
    /// Queries by outcome (`answered`, `nxdomain`, `rate_limited`, `malformed`, ...).
    pub queries: BTreeMap<String, u64>,
    pub answers_capped: u64,
    pub clients_evicted: u64,
    pub tcp_refused: u64,
    pub tcp_timeouts: u64,
    pub send_errors: u64,
    pub zone_builds: u64,
    pub zone_names: u64,
    pub zone_hostnames_skipped: u64,
}

/// One peer's SWIM ack latency histogram, or the pool of the peers beyond the bound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwimAckMetrics {
    /// The peer's cluster, or `*` for the pool.
    pub cluster: String,
    /// The peer's replica, or `None` for the pool.
    pub replica: Option<u16>,
    /// (upper bound in seconds, cumulative count), ascending, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerMetrics {
    pub cluster: String,
    pub replica: u16,
    pub rtt_seconds: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A fault to inject into this node's transport (only when the config enables chaos).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChaosOp {
    /// Drop traffic to and/or from every replica of `cluster`.
    Cut {
        cluster: String,
        direction: Direction,
    },
    /// Undo every cut of `cluster`.
    Restore { cluster: String },
    /// Drop this fraction (0.0 to 1.0) of outgoing datagrams and stream frames to
    /// `cluster`, or to everyone when `cluster` is `None`.
    Loss { cluster: Option<String>, rate: f64 },
    /// Undo every fault.
    Clear,
    /// Only report the current faults.
    Show,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Drop what this node sends to the cluster.
    Outbound,
    /// Drop what this node receives from the cluster.
    Inbound,
    Both,
}

/// The faults in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChaosView {
    /// Cluster to the directions cut (`outbound`, `inbound`).
    pub cuts: BTreeMap<String, Vec<Direction>>,
    /// Cluster (or `*`) to the loss rate.
    pub loss: BTreeMap<String, f64>,
    pub dropped_total: u64,
}
