//! The API's requests, answered from the core's state and the driver's counters.

use std::collections::BTreeMap;

use foca::State;
use shoal_proto::{ClusterId, LeaseName};

use super::commands::LAG_BUCKETS_SECONDS;
use super::{Driver, wall_clock_ms};
use crate::core::{ImportedService, LeaseError, LeaseRequest, Liveness, Time};
use crate::runtime::api::{
    ApiError, ApiRequest, ImportView, LeaseOp, LeaseView, MetricsSnapshot, PeerMetrics, PeerView,
    ServiceView, StatusView, SwimAckMetrics,
};
use crate::runtime::backend::Backend;

impl<B: Backend> Driver<B> {
    pub(super) fn on_api(&mut self, request: ApiRequest) {
        // A requester that went away is not an error.
        match request {
            ApiRequest::Status(reply) => drop(reply.send(self.status())),
            ApiRequest::Peers(reply) => drop(reply.send(self.peers())),
            ApiRequest::Services(reply) => drop(reply.send(self.services())),
            ApiRequest::Imports(reply) => drop(reply.send(self.imports())),
            ApiRequest::Lease { name, op, reply } => drop(reply.send(self.lease(&name, op))),
            ApiRequest::Leases(reply) => drop(reply.send(self.leases())),
            ApiRequest::Metrics(reply) => drop(reply.send(self.metrics())),
            ApiRequest::Chaos { op, reply } => drop(reply.send(self.transport.chaos(&op))),
        }
    }

    fn cluster_counts(&self) -> (u32, u32) {
        let (mut alive, mut down) = (0, 0);
        for cluster in self.known_clusters() {
            match self.node.liveness(&cluster) {
                Liveness::Alive | Liveness::Unknown { .. } => alive += 1,
                Liveness::Down { .. } | Liveness::Withdrawn { .. } => down += 1,
            }
        }
        (alive, down)
    }

    /// Remote clusters this node trusts.
    fn known_clusters(&self) -> Vec<ClusterId> {
        let local = &self.config.cluster;
        self.node
            .trusted_clusters()
            .filter(|c| *c != local)
            .cloned()
            .collect()
    }

    fn status(&self) -> StatusView {
        let (alive, down) = self.cluster_counts();
        StatusView {
            cluster: self.config.cluster.to_string(),
            replica: self.config.replica.0,
            generation: self.node.generation(),
            publisher: self.node.is_publisher(),
            listen: self.transport.local_addr().to_string(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            isolated: self.node.is_isolated(),
            // Both on the wall clock, so that a contact from before a restart counts.
            stale_for_ms: self
                .node
                .last_contact_ms()
                .filter(|ms| *ms != 0)
                .map(|ms| wall_clock_ms().saturating_sub(ms))
                .filter(|_| self.node.is_isolated()),
            records: self.node.records().count() as u64,
            own_version: self.node.own_version(),
            clusters_alive: alive,
            clusters_down: down,
        }
    }

    fn peers(&self) -> Vec<PeerView> {
        let stats = self.transport.stats();
        self.node
            .member_states()
            .into_iter()
            .map(|(identity, state)| {
                let peer = stats.peers.get(&identity.member);
                let state = match state {
                    State::Alive => "alive",
                    State::Suspect => "suspect",
                    State::Down => match self.node.liveness(&identity.member.cluster) {
                        Liveness::Withdrawn { .. } => "withdrawn",
                        _ => "down",
                    },
                };
                PeerView {
                    cluster: identity.member.cluster.to_string(),
                    replica: identity.member.replica.0,
                    addr: identity.addr.to_string(),
                    state: state.to_owned(),
                    rtt_ms: peer.and_then(|p| p.rtt).map(|d| d.as_secs_f64() * 1_000.0),
                    bytes_in: peer.map_or(0, |p| p.bytes_in),
                    bytes_out: peer.map_or(0, |p| p.bytes_out),
                }
            })
            .collect()
    }

    fn services(&self) -> Vec<ServiceView> {
        let local = &self.config.cluster;
        self.node
            .records()
            .filter(|r| r.record.origin == *local && !r.record.tombstone)
            .map(|r| {
                let record = &r.record;
                ServiceView {
                    namespace: record.service.namespace.to_string(),
                    name: record.service.name.to_string(),
                    version: record.version,
                    service_type: service_type_name(record.service_type).to_owned(),
                    ports: record.ports.iter().map(port_name).collect(),
                    endpoints: record.endpoints.len() as u32,
                    ready_endpoints: record
                        .endpoints
                        .iter()
                        .filter(|e| e.conditions.ready)
                        .count() as u32,
                }
            })
            .collect()
    }

    fn imports(&self) -> Vec<ImportView> {
        self.node
            .imports()
            .values()
            .map(|import| import_view(import))
            .collect()
    }

    fn lease(&mut self, name: &str, op: LeaseOp) -> Result<LeaseView, ApiError> {
        let lease = LeaseName::new(name)
            .map_err(|e| ApiError::bad_request(format!("invalid lease name: {e}")))?;
        let now = self.now();
        let request = match op {
            LeaseOp::Get => None,
            LeaseOp::Acquire => Some(LeaseRequest::Acquire(lease.clone())),
            LeaseOp::Release => Some(LeaseRequest::Release(lease.clone())),
        };
        if let Some(request) = request {
            self.node
                .handle_lease_request(now, request)
                .map_err(lease_error)?;
            match op {
                LeaseOp::Acquire => drop(self.wanted.insert(lease.clone())),
                LeaseOp::Release | LeaseOp::Get => drop(self.wanted.remove(&lease)),
            }
        }
        Ok(self.lease_view(now, &lease))
    }

    fn lease_view(&self, now: Time, lease: &LeaseName) -> LeaseView {
        let status = self.node.lease_status(now, lease);
        LeaseView {
            name: lease.to_string(),
            holder: status.holder.map(|c| c.to_string()),
            token: status.token.map(|t| t.0),
            expires_in_ms: status.expires_in_ms,
            write_ready: status.write_ready,
            wanted: self.wanted.contains(lease),
        }
    }

    fn leases(&self) -> Vec<LeaseView> {
        let now = self.now();
        self.wanted
            .iter()
            .map(|lease| self.lease_view(now, lease))
            .collect()
    }

    fn metrics(&self) -> MetricsSnapshot {
        let transport = self.transport.stats();
        let mut members: BTreeMap<String, u64> = ["alive", "suspect", "down"]
            .iter()
            .map(|s| ((*s).to_owned(), 0))
            .collect();
        for (_, state) in self.node.member_states() {
            let key = match state {
                State::Alive => "alive",
                State::Suspect => "suspect",
                State::Down => "down",
            };
            *members.entry(key.to_owned()).or_default() += 1;
        }
        let (alive, down) = self.cluster_counts();
        let mut rejects: BTreeMap<String, u64> = transport
            .rejects
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect();
        let core = self.node.stats();
        for (reason, count) in [
            ("decode_error", core.decode_errors),
            ("record_forged", core.records_forged),
            ("record_unknown_origin", core.records_unknown_origin),
            ("record_invalid", core.records_invalid),
            ("record_stale", core.records_stale),
            ("record_equivocation", core.records_equivocation),
            ("record_over_bound", core.records_over_bound),
            ("sender_mismatch", core.sender_mismatches),
            ("export_refused", self.stats.exports_refused),
        ] {
            rejects.insert(reason.to_owned(), count);
        }
        let mut cumulative = Vec::with_capacity(LAG_BUCKETS_SECONDS.len());
        for (i, bound) in LAG_BUCKETS_SECONDS.iter().enumerate() {
            cumulative.push((*bound, self.stats.lag_buckets[i]));
        }
        MetricsSnapshot {
            members,
            clusters_alive: u64::from(alive),
            clusters_down: u64::from(down),
            records: self.node.records().count() as u64,
            imports: self.node.imports().len() as u64,
            core_counters: core_counters(core)
                .into_iter()
                .chain(transport_counters(&transport))
                .chain([("driver_slow_steps".to_owned(), self.stats.slow_steps)])
                .collect(),
            peers: transport
                .peers
                .iter()
                .map(|(member, p)| PeerMetrics {
                    cluster: member.cluster.to_string(),
                    replica: member.replica.0,
                    rtt_seconds: p.rtt.map(|d| d.as_secs_f64()),
                    bytes_in: p.bytes_in,
                    bytes_out: p.bytes_out,
                })
                .collect(),
            rejects,
            propagation_lag_last_seconds: self.stats.lag_last_seconds,
            propagation_lag_buckets: cumulative,
            propagation_lag_sum_seconds: self.stats.lag_sum_seconds,
            propagation_lag_count: self.stats.lag_count,
            leases: self.leases(),
            isolated: self.node.is_isolated(),
            backend: self
                .backend
                .counters()
                .into_iter()
                .map(|((name, label), n)| (name.to_owned(), label.to_owned(), n))
                .collect(),
            publisher: self.node.is_publisher(),
            leadership_changes: self.stats.leadership_changes,
            swim_ack: swim_ack_metrics(core),
            dns: self.dns.as_ref().map(|dns| dns.metrics()),
        }
    }
}

/// The core's SWIM ack histograms: one per peer, then the pool of the peers beyond
/// the bound if it has samples. Bounds and sums in seconds.
fn swim_ack_metrics(stats: &crate::core::Stats) -> Vec<SwimAckMetrics> {
    let acks = &stats.swim_ack;
    let pool = Some(acks.others())
        .filter(|h| h.count > 0)
        .map(|h| (None, h));
    let peers = acks.by_peer().map(|(peer, h)| (Some(peer), h));
    peers
        .chain(pool)
        .map(|(peer, h)| SwimAckMetrics {
            cluster: peer.map_or_else(|| "*".to_owned(), |p| p.cluster.to_string()),
            replica: peer.map(|p| p.replica.0),
            buckets: (h.cumulative())
                .map(|(le_micros, n)| (le_micros as f64 / 1e6, n))
                .collect(),
            sum_seconds: h.sum_micros as f64 / 1e6,
            count: h.count,
        })
        .collect()
}

/// The transport's totals, named `transport_*` beside the core's counters, with
/// quinn's handshake counters as `transport_quic_handshakes_<outcome>`.
fn transport_counters(t: &crate::runtime::transport::TransportStats) -> Vec<(String, u64)> {
    [
        ("datagrams_sent", t.datagrams_sent),
        ("datagrams_received", t.datagrams_received),
        ("datagrams_sealed_sent", t.datagrams_sealed_sent),
        ("datagrams_sealed_received", t.datagrams_sealed_received),
        ("datagrams_on_stream", t.datagrams_on_stream),
        ("frames_sent", t.frames_sent),
        ("frames_received", t.frames_received),
        ("frames_throttled", t.frames_throttled),
        ("connections_dialed", t.connections_dialed),
        ("connections_accepted", t.connections_accepted),
        ("quic_handshakes_accepted", t.quic_handshakes_accepted),
        ("quic_handshakes_outgoing", t.quic_handshakes_outgoing),
        ("quic_handshakes_refused", t.quic_handshakes_refused),
        ("quic_handshakes_ignored", t.quic_handshakes_ignored),
    ]
    .into_iter()
    .map(|(name, n)| (format!("transport_{name}"), n))
    .collect()
}

/// The core's counters by field name.
fn core_counters(stats: &crate::core::Stats) -> BTreeMap<String, u64> {
    match serde_json::to_value(stats) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_u64()?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn lease_error(e: LeaseError) -> ApiError {
    match e {
        LeaseError::NotLocalLeader => ApiError::conflict(e.to_string()),
        LeaseError::NoVoters | LeaseError::TooMany => ApiError::unavailable(e.to_string()),
    }
}

fn service_type_name(t: shoal_proto::ServiceType) -> &'static str {
    match t {
        shoal_proto::ServiceType::ClusterSetIp => "ClusterSetIP",
        shoal_proto::ServiceType::Headless => "Headless",
    }
}

fn port_name(p: &shoal_proto::ServicePort) -> String {
    let protocol = match p.protocol {
        shoal_proto::PortProtocol::Tcp => "TCP",
        shoal_proto::PortProtocol::Udp => "UDP",
        shoal_proto::PortProtocol::Sctp => "SCTP",
    };
    format!("{}:{}/{protocol}", p.name, p.port)
}

fn import_view(import: &ImportedService) -> ImportView {
    let clusters: BTreeMap<String, u32> = import
        .sources
        .iter()
        .map(|s| {
            (
                s.cluster().to_string(),
                s.record.record.endpoints.len() as u32,
            )
        })
        .collect();
    ImportView {
        namespace: import.service.namespace.to_string(),
        name: import.service.name.to_string(),
        service_type: service_type_name(import.service_type).to_owned(),
        ports: import.ports.iter().map(port_name).collect(),
        endpoints: clusters.values().sum(),
        clusters,
        conflicts: import
            .conflicts
            .iter()
            .map(|c| match &c.kind {
                crate::core::ConflictKind::Type { exported, .. } => {
                    format!("{}: type {}", c.cluster, service_type_name(*exported))
                }
                crate::core::ConflictKind::Port { name } => format!("{}: port {name}", c.cluster),
                other => format!("{}: {other}", c.cluster),
            })
            .collect(),
        affinity: import.properties.affinity.name().to_owned(),
        active: import
            .sources
            .iter()
            .filter(|s| s.active)
            .map(|s| s.cluster().to_string())
            .collect(),
        traffic: import.traffic.to_string(),
    }
}
