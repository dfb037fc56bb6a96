//! The export record: one origin cluster's statement about one exported service.
//!
//! Each (origin, service) has exactly one writer, its origin, so records merge by
//! version alone. See DESIGN.md, "Records and the view".

use std::collections::BTreeMap;

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
/// Most IP families a service has: one of each.
pub const IP_FAMILIES_MAX: usize = 2;
/// Longest ClientIP session affinity timeout, as Kubernetes bounds it: one day.
pub const CLIENT_IP_TIMEOUT_SECONDS_MAX: u32 = 86_400;
/// Longest traffic distribution (Kubernetes' values, such as `PreferClose`, are
/// shorter; the bound leaves room for new ones).
pub const TRAFFIC_DISTRIBUTION_BYTES_MAX: usize = 63;
/// Most exported labels one record carries.
pub const EXPORTED_LABELS_MAX: usize = 64;
/// Most exported annotations one record carries.
pub const EXPORTED_ANNOTATIONS_MAX: usize = 64;
/// Longest label or annotation key, as Kubernetes bounds a qualified name: a DNS
/// subdomain prefix (253), `/`, and a name (63).
pub const METADATA_KEY_BYTES_MAX: usize = 253 + 1 + 63;
/// Longest label value, as Kubernetes bounds it.
pub const LABEL_VALUE_BYTES_MAX: usize = 63;
/// Most bytes of exported annotations per record, keys and values together.
/// Kubernetes allows 256 KiB per object; a record carries at most 16 KiB, so that a
/// record at every bound at once still fits [`crate::codec::RECORD_BYTES_MAX`].
pub const ANNOTATIONS_BYTES_MAX: usize = 16 * 1024;

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

/// An IP family of a service (`spec.ipFamilies` in Kubernetes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub enum IpFamily {
    Ipv4,
    Ipv6,
}

/// Session affinity, as in a Kubernetes Service.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
)]
pub enum SessionAffinity {
    #[default]
    None,
    /// Connections from one client IP go to one endpoint.
    ClientIp,
}

/// How nodes route traffic they receive on the service's virtual IP
/// (`spec.internalTrafficPolicy`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub enum InternalTrafficPolicy {
    /// To every endpoint of the service.
    Cluster,
    /// Only to endpoints on the node the traffic arrived at.
    Local,
}

/// Which origins of a service an importing cluster sends traffic to (Shoal's traffic
/// policy; see DESIGN.md, "Traffic policy"). Set on an export with the annotation
/// `shoal.dev/affinity`, or Cilium's `service.cilium.io/affinity`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
)]
pub enum Affinity {
    /// Every live origin.
    #[default]
    None,
    /// The importing cluster's own endpoints while one is ready; the remote origins
    /// only while none is (failover).
    Local,
    /// The remote origins while one has a ready endpoint; otherwise the local ones.
    Remote,
    /// The ready origin with the lowest round-trip time as the importing node
    /// measures it, then the next one; a margin keeps it from flapping on jitter.
    Nearest,
}

impl Affinity {
    /// The annotation values, as Cilium spells them (`nearest` is Shoal's own).
    pub const NAMES: [(&'static str, Affinity); 4] = [
        ("none", Affinity::None),
        ("local", Affinity::Local),
        ("remote", Affinity::Remote),
        ("nearest", Affinity::Nearest),
    ];

    /// Parses an annotation value; case matters, as in Cilium.
    pub fn from_name(name: &str) -> Option<Affinity> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, affinity)| *affinity)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("none", |(n, _)| n)
    }
}

impl std::fmt::Display for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The properties of an export that the MCS API merges across clusters, besides the
/// type and the ports: under its conflict rule the oldest export defines each of them,
/// and an export that differs from it in one is in conflict on that one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
pub struct ServiceProperties {
    /// The service's IP families, primary first; empty when the origin does not say.
    pub ip_families: Vec<IpFamily>,
    pub session_affinity: SessionAffinity,
    /// The ClientIP affinity timeout (`sessionAffinityConfig.clientIP.timeoutSeconds`).
    /// Only with [`SessionAffinity::ClientIp`].
    pub client_ip_timeout_seconds: Option<u32>,
    pub internal_traffic_policy: Option<InternalTrafficPolicy>,
    /// A routing preference such as `PreferClose` (`spec.trafficDistribution`).
    pub traffic_distribution: Option<String>,
    /// The ServiceExport's `exportedLabels`: labels for the ServiceImport.
    pub exported_labels: BTreeMap<String, String>,
    /// The ServiceExport's `exportedAnnotations`: annotations for the ServiceImport.
    pub exported_annotations: BTreeMap<String, String>,
    /// Shoal's traffic policy for the service, from its `shoal.dev/affinity` (or
    /// `service.cilium.io/affinity`) annotation. Like the other properties, the oldest
    /// export's stands.
    pub affinity: Affinity,
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
    /// IP families, session affinity, traffic policy and distribution, and the
    /// export's labels and annotations: what the MCS API merges besides type and ports.
    pub properties: ServiceProperties,
    /// The service is no longer exported by `origin`. Endpoints and ports are empty,
    /// and the properties are the defaults.
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
    #[error("a tombstone must carry no ports, no endpoints and default properties")]
    TombstoneWithContent,
    #[error("version 0 is reserved for 'never seen'")]
    ZeroVersion,
    /// More than one of a family (at most the first three are shown).
    #[error("IP families {0:?}: at most one of each family is allowed")]
    IpFamilies(Vec<IpFamily>),
    #[error("a ClientIP timeout is set without ClientIP session affinity")]
    TimeoutWithoutClientIp,
    #[error("a ClientIP timeout of {0} s is outside 1 to {CLIENT_IP_TIMEOUT_SECONDS_MAX} s")]
    ClientIpTimeout(u32),
    #[error(
        "the traffic distribution is {0} bytes long, more than {TRAFFIC_DISTRIBUTION_BYTES_MAX}"
    )]
    TrafficDistributionTooLong(usize),
    #[error("{0} exported labels, more than {EXPORTED_LABELS_MAX}")]
    TooManyLabels(usize),
    #[error("{0} exported annotations, more than {EXPORTED_ANNOTATIONS_MAX}")]
    TooManyAnnotations(usize),
    /// Not a Kubernetes qualified name (the key is shown cut to 64 bytes).
    #[error(
        "{0:?} is not a valid label or annotation key: an optional DNS subdomain prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; {METADATA_KEY_BYTES_MAX} bytes at most"
    )]
    MetadataKey(String),
    /// Not a Kubernetes label value (the value is shown cut to 64 bytes).
    #[error(
        "{0:?} is not a valid label value: at most {LABEL_VALUE_BYTES_MAX} letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )]
    LabelValue(String),
    #[error("exported annotations take {0} bytes, more than {ANNOTATIONS_BYTES_MAX}")]
    AnnotationsTooLarge(usize),
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
        if self.tombstone
            && (!self.ports.is_empty()
                || !self.endpoints.is_empty()
                || self.properties != ServiceProperties::default())
        {
            return Err(RecordError::TombstoneWithContent);
        }
        self.properties.validate()?;
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

impl ServiceProperties {
    /// Checks the bounds Kubernetes puts on these properties, and that labels and
    /// annotations are what a Kubernetes API server accepts on an object, so that an
    /// importing cluster can always write them.
    pub fn validate(&self) -> Result<(), RecordError> {
        let families = &self.ip_families;
        if families.len() > IP_FAMILIES_MAX || (families.len() == 2 && families[0] == families[1]) {
            let shown = families.iter().take(IP_FAMILIES_MAX + 1).copied().collect();
            return Err(RecordError::IpFamilies(shown));
        }
        match (self.session_affinity, self.client_ip_timeout_seconds) {
            (SessionAffinity::None, Some(_)) => return Err(RecordError::TimeoutWithoutClientIp),
            (SessionAffinity::ClientIp, Some(t)) if t == 0 || t > CLIENT_IP_TIMEOUT_SECONDS_MAX => {
                return Err(RecordError::ClientIpTimeout(t));
            }
            _ => {}
        }
        if let Some(long) = self
            .traffic_distribution
            .as_ref()
            .filter(|t| t.len() > TRAFFIC_DISTRIBUTION_BYTES_MAX)
        {
            return Err(RecordError::TrafficDistributionTooLong(long.len()));
        }
        self.validate_labels()?;
        self.validate_annotations()
    }

    fn validate_labels(&self) -> Result<(), RecordError> {
        if self.exported_labels.len() > EXPORTED_LABELS_MAX {
            return Err(RecordError::TooManyLabels(self.exported_labels.len()));
        }
        for (key, value) in &self.exported_labels {
            if !is_qualified_name(key) {
                return Err(RecordError::MetadataKey(excerpt(key)));
            }
            if !value.is_empty() && !is_label_name(value) {
                return Err(RecordError::LabelValue(excerpt(value)));
            }
        }
        Ok(())
    }

    fn validate_annotations(&self) -> Result<(), RecordError> {
        let annotations = &self.exported_annotations;
        if annotations.len() > EXPORTED_ANNOTATIONS_MAX {
            return Err(RecordError::TooManyAnnotations(annotations.len()));
        }
        let bytes: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > ANNOTATIONS_BYTES_MAX {
            return Err(RecordError::AnnotationsTooLarge(bytes));
        }
        // Kubernetes checks annotation keys in lowercase: a prefix may have capitals.
        match annotations
            .keys()
            .find(|k| !is_qualified_name(&k.to_ascii_lowercase()))
        {
            Some(bad) => Err(RecordError::MetadataKey(excerpt(bad))),
            None => Ok(()),
        }
    }
}

/// Bytes of a bad key or value shown in an error.
const EXCERPT_BYTES_MAX: usize = 64;

fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT_BYTES_MAX {
        return text.to_owned();
    }
    let mut end = EXCERPT_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A Kubernetes qualified name (label and annotation keys): an optional DNS subdomain
/// prefix of at most 253 bytes and `/`, then a name (see [`is_label_name`]).
pub fn is_qualified_name(key: &str) -> bool {
    if key.len() > METADATA_KEY_BYTES_MAX {
        return false;
    }
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

/// 1 to 63 ASCII letters, digits, `-`, `_` and `.`, starting and ending with a letter or
/// digit: a qualified name's name part, and any non-empty label value.
pub fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= LABEL_VALUE_BYTES_MAX
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A lowercase RFC 1123 subdomain: dot-separated labels, at most 253 bytes.
fn is_dns_subdomain(text: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-')
    };
    !text.is_empty() && text.len() <= 253 && text.split('.').all(label)
}
