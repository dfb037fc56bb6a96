//! The export record: one origin cluster's statement about one exported service.
//!
//! Each (origin, service) has exactly one writer, its origin, so records merge by
//! version alone. See DESIGN.md, "Records and the view".

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::ids::{ClusterId, ServiceKey};

/// Most ports one service may declare (Kubernetes allows far fewer in practice).
pub const PORTS_PER_RECORD_MAX: usize = 64;
/// Most endpoints one record may carry: ten full EndpointSlices.
pub const ENDPOINTS_PER_RECORD_MAX: usize = 1_000;
/// Most addresses per endpoint (Kubernetes allows one per family).
pub const ADDRESSES_PER_ENDPOINT_MAX: usize = 2;
/// Longest zone, hostname or port name: a DNS label, as Kubernetes requires.
pub const LABEL_BYTES_MAX: usize = 63;
/// Longest app protocol (a qualified name, as in Kubernetes).
pub const APP_PROTOCOL_BYTES_MAX: usize = 253;

/// How the MCS API exposes an imported service.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub enum ServiceType {
    /// A virtual ClusterSet IP load-balances over all endpoints.
    ClusterSetIp,
    /// DNS returns endpoint addresses directly.
    Headless,
}

/// How remote clusters reach this cluster's endpoints.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub enum NetworkMode {
    /// Pod IPs are routable across clusters; endpoints are pod addresses.
    Flat,
    /// Pods are not routable; endpoints are gateway or LoadBalancer addresses.
    Island,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

/// One service port, as in a Kubernetes ServicePort, with the port its endpoints
/// listen on.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct ServicePort {
    pub name: String,
    pub protocol: PortProtocol,
    /// The service's port: what an importing cluster's ServiceImport offers.
    pub port: u16,
    /// Where the origin's endpoints take this port's traffic (the resolved
    /// `targetPort`, as the origin's EndpointSlices give it): what an importing
    /// cluster's EndpointSlices carry.
    pub target_port: u16,
    pub app_protocol: Option<String>,
}

/// An IP address, family-tagged so that the encoding is exact.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub enum IpAddress {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl From<std::net::IpAddr> for IpAddress {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(v4) => Self::V4(v4.octets()),
            std::net::IpAddr::V6(v6) => Self::V6(v6.octets()),
        }
    }
}

impl From<IpAddress> for std::net::IpAddr {
    fn from(ip: IpAddress) -> Self {
        match ip {
            IpAddress::V4(o) => std::net::IpAddr::V4(o.into()),
            IpAddress::V6(o) => std::net::IpAddr::V6(o.into()),
        }
    }
}

impl std::fmt::Display for IpAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::net::IpAddr::from(*self).fmt(f)
    }
}

/// EndpointSlice conditions, with the same meaning as in Kubernetes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct EndpointConditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// One endpoint of an exported service.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct Endpoint {
    pub addresses: Vec<IpAddress>,
    pub conditions: EndpointConditions,
    pub zone: Option<String>,
    pub hostname: Option<String>,
}

/// One origin cluster's statement about one exported service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
pub struct ExportRecord {
    /// The only cluster allowed to author this record.
    pub origin: ClusterId,
    pub service: ServiceKey,
    /// Grows with every change the origin makes, across all its services; persisted
    /// by the origin so that it never repeats after a restart.
    pub version: u64,
    /// When the ServiceExport was created (Unix milliseconds): the MCS conflict rule
    /// lets the oldest export win.
    pub export_created_ms: u64,
    /// When the origin signed this version (Unix milliseconds, its own clock), for
    /// propagation-lag metrics only: nothing orders or expires records by it. 0 when
    /// the origin had no wall clock.
    pub published_ms: u64,
    pub service_type: ServiceType,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    pub network: NetworkMode,
    /// The service is no longer exported by `origin`. Endpoints and ports are empty.
    pub tombstone: bool,
}

/// Why a record's contents are refused. State unchanged: the record is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record declares {0} ports, more than {PORTS_PER_RECORD_MAX}")]
    TooManyPorts(usize),
    #[error("record carries {0} endpoints, more than {ENDPOINTS_PER_RECORD_MAX}")]
    TooManyEndpoints(usize),
    #[error("an endpoint has {0} addresses: 1 to {ADDRESSES_PER_ENDPOINT_MAX} are allowed")]
    AddressCount(usize),
    #[error(
        "a text field is {0} bytes long, over its limit ({LABEL_BYTES_MAX} for labels, {APP_PROTOCOL_BYTES_MAX} for app protocols)"
    )]
    LabelTooLong(usize),
    #[error("a tombstone must carry no ports and no endpoints")]
    TombstoneWithContent,
    #[error("version 0 is reserved for 'never seen'")]
    ZeroVersion,
}

impl ExportRecord {
    /// Checks the bounds a well-formed record respects. Called on every decoded record.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.version == 0 {
            return Err(RecordError::ZeroVersion);
        }
        if self.ports.len() > PORTS_PER_RECORD_MAX {
            return Err(RecordError::TooManyPorts(self.ports.len()));
        }
        if self.endpoints.len() > ENDPOINTS_PER_RECORD_MAX {
            return Err(RecordError::TooManyEndpoints(self.endpoints.len()));
        }
        if self.tombstone && (!self.ports.is_empty() || !self.endpoints.is_empty()) {
            return Err(RecordError::TombstoneWithContent);
        }
        if let Some(long) = self
            .ports
            .iter()
            .filter_map(|p| p.app_protocol.as_ref())
            .find(|a| a.len() > APP_PROTOCOL_BYTES_MAX)
        {
            return Err(RecordError::LabelTooLong(long.len()));
        }
        let port_labels = self.ports.iter().map(|p| &p.name);
        for endpoint in &self.endpoints {
            if endpoint.addresses.is_empty()
                || endpoint.addresses.len() > ADDRESSES_PER_ENDPOINT_MAX
            {
                return Err(RecordError::AddressCount(endpoint.addresses.len()));
            }
        }
        let endpoint_labels = self
            .endpoints
            .iter()
            .flat_map(|e| e.zone.iter().chain(e.hostname.iter()));
        if let Some(long) = port_labels
            .chain(endpoint_labels)
            .find(|l| l.len() > LABEL_BYTES_MAX)
        {
            return Err(RecordError::LabelTooLong(long.len()));
        }
        Ok(())
    }
}
