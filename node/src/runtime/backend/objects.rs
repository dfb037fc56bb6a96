//! The MCS custom resources (`multicluster.x-k8s.io/v1beta1`, KEP-1645, as
//! `sigs.k8s.io/mcs-api` v0.5 defines them) as serde structs, the well-known labels,
//! the condition reasons, and the deterministic names Shoal gives the objects it
//! derives.
//!
//! The built-in kinds (Service, EndpointSlice) come from `k8s-openapi`; the CRDs are
//! not part of it, so they are declared here, camelCase as in the CRD schemas. The
//! mcs-api CRDs serve `v1beta1` (their storage version) and `v1alpha1` with one
//! schema: Shoal writes `v1beta1` and reads either.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Serialize};
use shoal_proto::ids::DNS_LABEL_BYTES_MAX;
use shoal_proto::{ClusterId, ServiceKey};

/// The API group and version of the MCS resources Shoal writes.
pub const MCS_API_VERSION: &str = "multicluster.x-k8s.io/v1beta1";
/// The API versions of the MCS resources Shoal reads: both that the mcs-api CRDs serve.
pub const MCS_API_VERSIONS_READ: [&str; 2] = [
    "multicluster.x-k8s.io/v1beta1",
    "multicluster.x-k8s.io/v1alpha1",
];
/// The API group of the MCS resources.
pub const MCS_GROUP: &str = "multicluster.x-k8s.io";
/// The label naming the multi-cluster service an object belongs to.
pub const LABEL_SERVICE_NAME: &str = "multicluster.kubernetes.io/service-name";
/// The label naming the cluster an EndpointSlice's endpoints come from.
pub const LABEL_SOURCE_CLUSTER: &str = "multicluster.kubernetes.io/source-cluster";
/// The EndpointSlice label naming the controller that owns the slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The label tying an EndpointSlice to its Service.
pub const LABEL_KUBE_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Shoal's controller name, the value of [`LABEL_MANAGED_BY`].
pub const MANAGER: &str = "shoal.dev";
/// The Service annotation that exports a Service without a ServiceExport.
pub const ANNOTATION_GLOBAL: &str = "shoal.dev/global";
/// Hash characters in derived names (50 bits, as many as the MCS reference uses).
pub const NAME_HASH_CHARS: usize = 10;
/// Most endpoints in one derived EndpointSlice (the Kubernetes default).
pub const ENDPOINTS_PER_SLICE_MAX: usize = 100;

/// Declares that the Service of the same namespace/name is exported to the ClusterSet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExport {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceExportSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceExportStatus>,
}

/// The labels and annotations to put on the ServiceImport of the exported service in
/// every cluster (the oldest export's, when exports disagree).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExportSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported_annotations: BTreeMap<String, String>,
}

/// The conditions Shoal reports on an export (`Valid`, `Ready`, `Conflict`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExportStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A service imported from the clusters of the ClusterSet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImport {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ServiceImportSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceImportStatus>,
}

/// What a consumer needs to reach an imported service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportSpec {
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub type_: String,
    pub ports: Vec<ServiceImportPort>,
    /// The ClusterSet IP. Empty where no allocator exists (the standalone backend).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// `IPv4` and/or `IPv6`, primary first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<String>,
    /// `None` or `ClientIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    /// `Cluster` or `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_traffic_policy: Option<String>,
    /// A routing preference such as `PreferClose`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
}

/// Session affinity settings, as in a Service (`sessionAffinityConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAffinityConfig {
    #[serde(rename = "clientIP", default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<ClientIpConfig>,
}

/// ClientIP session affinity settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientIpConfig {
    /// How long a client stays with one endpoint: 1 to 86,400 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}

/// One port of an imported service: a service port, not an endpoint port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    pub port: i32,
}

/// The clusters an import is derived from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceImportStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterStatus>,
}

/// One exporting cluster of an import.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub cluster: String,
}

// ----- condition reasons (mcs-api v1beta1, `serviceexport.go`) -----

/// `Valid=True`.
pub const REASON_VALID: &str = "Valid";
/// `Valid=False`: no Service of the export's namespace/name.
pub const REASON_NO_SERVICE: &str = "NoService";
/// `Valid=False`: the Service's type cannot be exported (ExternalName).
pub const REASON_INVALID_SERVICE_TYPE: &str = "InvalidServiceType";
/// `Ready=True`: the ClusterSet imports this cluster's endpoints.
pub const REASON_EXPORTED: &str = "Exported";
/// `Ready=False` (or `Unknown`): not exported yet.
pub const REASON_PENDING: &str = "Pending";
/// `Ready=False`: the export failed; the message says why.
pub const REASON_FAILED: &str = "Failed";
/// `Conflict=False`.
pub const REASON_NO_CONFLICTS: &str = "NoConflicts";
/// `Conflict=True` reasons, comma-joined when several apply.
pub const REASON_PORT_CONFLICT: &str = "PortConflict";
pub const REASON_TYPE_CONFLICT: &str = "TypeConflict";
pub const REASON_SESSION_AFFINITY_CONFLICT: &str = "SessionAffinityConflict";
pub const REASON_SESSION_AFFINITY_CONFIG_CONFLICT: &str = "SessionAffinityConfigConflict";
pub const REASON_LABELS_CONFLICT: &str = "LabelsConflict";
pub const REASON_ANNOTATIONS_CONFLICT: &str = "AnnotationsConflict";
pub const REASON_INTERNAL_TRAFFIC_POLICY_CONFLICT: &str = "InternalTrafficPolicyConflict";
pub const REASON_TRAFFIC_DISTRIBUTION_CONFLICT: &str = "TrafficDistributionConflict";
pub const REASON_IP_FAMILY_CONFLICT: &str = "IPFamilyConflict";
/// Shoal's own: the exports disagree on the `shoal.dev/affinity` traffic policy.
pub const REASON_AFFINITY_CONFLICT: &str = "AffinityConflict";

/// The IP family of a derived EndpointSlice (its `addressType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressFamily {
    V4,
    V6,
}

impl AddressFamily {
    /// The EndpointSlice `addressType` value.
    pub fn address_type(self) -> &'static str {
        match self {
            AddressFamily::V4 => "IPv4",
            AddressFamily::V6 => "IPv6",
        }
    }
}

/// FNV-1a, 64 bits: a stable hash for names (the std hasher may change between Rust
/// releases, and names must not).
pub fn stable_hash(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator no DNS label contains, so ("a-b", "c") differs from ("a", "b-c").
            hash = (hash ^ u64::from(b'/')).wrapping_mul(PRIME);
        }
        for byte in part.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
    hash
}

/// [`NAME_HASH_CHARS`] lowercase base32hex characters of [`stable_hash`]: valid in any
/// DNS label.
pub fn name_hash(parts: &[&str]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let hash = stable_hash(parts);
    (0..NAME_HASH_CHARS)
        .map(|i| char::from(ALPHABET[((hash >> (64 - 5 * (i + 1))) & 31) as usize]))
        .collect()
}

/// The derived Service of an import: `derived-<hash of namespace/name>`, as the MCS
/// reference controller names it (its hash is SHA-256; Shoal's is FNV-1a, so the names
/// differ, which matters to no consumer: they find it through the ServiceImport and the
/// EndpointSlices' `kubernetes.io/service-name` label).
pub fn derived_service_name(service: &ServiceKey) -> String {
    let hash = name_hash(&[service.namespace.as_str(), service.name.as_str()]);
    format!("derived-{hash}")
}

/// A derived EndpointSlice's name: `<service>-<cluster>-<index>` for IPv4 and
/// `<service>-<cluster>-v6-<index>` for IPv6. When that is longer than a DNS label, the
/// stem is cut and a hash of the full service and cluster names keeps it unique:
/// `<cut stem>-<hash>-<index>`. The same inputs always give the same name.
pub fn slice_name(
    service: &ServiceKey,
    cluster: &ClusterId,
    family: AddressFamily,
    index: usize,
) -> String {
    let suffix = match family {
        AddressFamily::V4 => format!("-{index}"),
        AddressFamily::V6 => format!("-v6-{index}"),
    };
    let stem = format!("{}-{}", service.name, cluster);
    if stem.len() + suffix.len() <= DNS_LABEL_BYTES_MAX {
        return format!("{stem}{suffix}");
    }
    let hash = name_hash(&[service.name.as_str(), cluster.as_str()]);
    let keep = DNS_LABEL_BYTES_MAX - suffix.len() - hash.len() - 1;
    let cut = stem[..keep].trim_end_matches('-');
    format!("{cut}-{hash}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_are_stable_dns_labels() {
        let service = ServiceKey::new("shop", "web").unwrap();
        let name = derived_service_name(&service);
        assert_eq!(name, derived_service_name(&service));
        assert_eq!(name.len(), "derived-".len() + NAME_HASH_CHARS);
        ClusterId::new(name.clone()).expect("a DNS label");
        let other = ServiceKey::new("shop", "api").unwrap();
        assert_ne!(name, derived_service_name(&other));
    }

    #[test]
    fn short_slice_names_are_readable() {
        let service = ServiceKey::new("shop", "web").unwrap();
        let cluster = ClusterId::new("east").unwrap();
        assert_eq!(
            slice_name(&service, &cluster, AddressFamily::V4, 0),
            "web-east-0"
        );
        assert_eq!(
            slice_name(&service, &cluster, AddressFamily::V6, 2),
            "web-east-v6-2"
        );
    }

    #[test]
    fn long_slice_names_are_cut_and_hashed_within_a_label() {
        let long = "s".repeat(60);
        let service = ServiceKey::new("shop", &long).unwrap();
        let a = ClusterId::new("c".repeat(60)).unwrap();
        let b = ClusterId::new(format!("{}d", "c".repeat(59))).unwrap();
        let name_a = slice_name(&service, &a, AddressFamily::V6, 11);
        let name_b = slice_name(&service, &b, AddressFamily::V6, 11);
        assert!(name_a.len() <= DNS_LABEL_BYTES_MAX, "{name_a}");
        ClusterId::new(name_a.clone()).expect("a DNS label");
        assert!(name_a.ends_with("-v6-11"));
        assert_ne!(name_a, name_b, "the hash tells long names apart");
        assert_eq!(name_a, slice_name(&service, &a, AddressFamily::V6, 11));
    }

    #[test]
    fn the_hash_separates_parts() {
        assert_ne!(stable_hash(&["a-b", "c"]), stable_hash(&["a", "b-c"]));
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
    }
}
