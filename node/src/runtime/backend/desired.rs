//! Pure translations between Kubernetes objects and the core's types, shared by the
//! standalone backend and the Kubernetes backend. No IO here.
//!
//! - [`export_spec`]: a `ServiceExport`, its Service and the Service's EndpointSlices
//!   become the [`ExportSpec`] the core publishes (the MCS source rules).
//! - [`desired_import`]: an [`ImportedService`] becomes the objects written into this
//!   cluster: a `ServiceImport`, a derived Service and EndpointSlices (the MCS sink).
//! - [`export_conditions`]: the `Valid`, `Ready` and `Conflict` conditions of an export.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig as KubeClientIpConfig, Service, ServicePort as KubeServicePort, ServiceSpec,
    SessionAffinityConfig as KubeSessionAffinityConfig,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint as KubeEndpoint, EndpointConditions as KubeConditions, EndpointPort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use shoal_proto::record::{
    APP_PROTOCOL_BYTES_MAX, ENDPOINTS_PER_RECORD_MAX, LABEL_BYTES_MAX, PORTS_PER_RECORD_MAX,
};
use shoal_proto::{
    Affinity, ClusterId, Endpoint, EndpointConditions, IdError, InternalTrafficPolicy, IpAddress,
    IpFamily, NetworkMode, PortProtocol, RecordError, ServiceKey, ServicePort, ServiceProperties,
    ServiceType, SessionAffinity, SignedRecord,
};

use super::objects::{
    AddressFamily, ClientIpConfig, ClusterStatus, ENDPOINTS_PER_SLICE_MAX, LABEL_KUBE_SERVICE_NAME,
    LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER, MANAGER, MCS_API_VERSION,
    REASON_AFFINITY_CONFLICT, REASON_ANNOTATIONS_CONFLICT, REASON_EXPORTED, REASON_FAILED,
    REASON_INTERNAL_TRAFFIC_POLICY_CONFLICT, REASON_INVALID_SERVICE_TYPE,
    REASON_IP_FAMILY_CONFLICT, REASON_LABELS_CONFLICT, REASON_NO_CONFLICTS, REASON_NO_SERVICE,
    REASON_PENDING, REASON_PORT_CONFLICT, REASON_SESSION_AFFINITY_CONFIG_CONFLICT,
    REASON_SESSION_AFFINITY_CONFLICT, REASON_TRAFFIC_DISTRIBUTION_CONFLICT, REASON_TYPE_CONFLICT,
    REASON_VALID, ServiceExport, ServiceImport, ServiceImportPort, ServiceImportSpec,
    ServiceImportStatus, SessionAffinityConfig, derived_service_name, slice_name,
};
use crate::core::{ConflictKind, ExportSpec, ImportedService};

/// The annotation naming the cluster that wrote a derived object.
pub const ANNOTATION_WRITTEN_BY: &str = "shoal.dev/written-by";
/// On a ServiceImport whose affinity is not `none`: why its active origins are the
/// ones they are (`local`, `local-failover`, `remote`, `remote-failover`, `nearest`,
/// `none-ready`; see [`TrafficReason`](crate::core::TrafficReason)).
pub const ANNOTATION_TRAFFIC: &str = "shoal.dev/traffic";
/// Beside [`ANNOTATION_TRAFFIC`]: the active origins, comma-joined in cluster order,
/// the first [`ACTIVE_NAMED_MAX`] by name and the rest counted.
pub const ANNOTATION_ACTIVE_CLUSTERS: &str = "shoal.dev/active-clusters";
/// Most active origins [`ANNOTATION_ACTIVE_CLUSTERS`] names.
pub const ACTIVE_NAMED_MAX: usize = 32;
/// The namespace of an object that names none (as `kubectl` assumes).
pub const DEFAULT_NAMESPACE: &str = "default";
/// The ClientIP session affinity timeout the API server gives a Service that sets
/// none: three hours.
pub const CLIENT_IP_TIMEOUT_SECONDS_DEFAULT: u32 = 10_800;

/// Everything written into a cluster for one imported service.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredImport {
    pub service_import: ServiceImport,
    /// The Service the EndpointSlices belong to: `derived-<hash>`, without a selector.
    pub derived_service: Service,
    /// One source cluster per slice, at most [`ENDPOINTS_PER_SLICE_MAX`] endpoints each,
    /// sorted by name.
    pub slices: Vec<EndpointSlice>,
}

/// Why an export cannot be published. Nothing is published for it; its `Valid`
/// condition says why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExportInvalid {
    /// The ServiceExport has no Service of the same namespace/name.
    #[error("no Service {0} to export")]
    NoService(String),
    /// The namespace or name is not a DNS label.
    #[error("invalid name: {0}")]
    Name(#[from] IdError),
    /// The MCS API cannot export this Service type (ExternalName).
    #[error("Service type {0} cannot be exported")]
    ServiceType(String),
    /// A port is malformed: protocol, number or a duplicate name.
    #[error("invalid port: {0}")]
    Port(String),
    /// More ports than a record carries.
    #[error("{0} ports, more than the {PORTS_PER_RECORD_MAX} a record carries")]
    TooManyPorts(usize),
    /// More endpoints than a record carries.
    #[error("{0} endpoints, more than the {ENDPOINTS_PER_RECORD_MAX} a record carries")]
    TooManyEndpoints(usize),
    /// A port name, app protocol, zone or hostname is longer than a record allows.
    #[error("{what} is {len} bytes long, more than {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// An endpoint address is not an IP address.
    #[error("endpoint address {0:?} is not an IP address")]
    Address(String),
    /// A field of the Service holds a value the API server would not accept.
    #[error("spec.{field}: {problem}")]
    ServiceSpec {
        field: &'static str,
        problem: String,
    },
    /// The Service's properties or the ServiceExport's exported labels and annotations
    /// break a record bound, or are not valid Kubernetes metadata.
    #[error("{0}")]
    Properties(RecordError),
    /// The affinity annotation holds a value that is not `none`, `local`, `remote` or
    /// `nearest`.
    #[error("annotation {annotation}: {value:?} is not none, local, remote or nearest")]
    Affinity {
        annotation: &'static str,
        value: String,
    },
}

/// How a bad property is reported: as a limit, as bad metadata, or as a bad Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PropertyFault {
    Limit,
    Metadata,
    Spec,
}

fn property_fault(error: &RecordError) -> PropertyFault {
    match error {
        RecordError::MetadataKey(_) | RecordError::LabelValue(_) => PropertyFault::Metadata,
        RecordError::IpFamilies(_)
        | RecordError::TimeoutWithoutClientIp
        | RecordError::ClientIpTimeout(_) => PropertyFault::Spec,
        _ => PropertyFault::Limit,
    }
}

impl ExportInvalid {
    /// The `reason` of the `Valid=False` condition. mcs-api v1beta1 defines
    /// `NoService` and `InvalidServiceType`; for what they do not cover Shoal adds
    /// `InvalidName`, `InvalidPort`, `InvalidAddress`, `InvalidServiceSpec` (a Service
    /// field the API server would refuse), `InvalidExportedMetadata` (an exported label
    /// or annotation it would refuse), `InvalidAffinity` (an affinity annotation Shoal
    /// does not know) and `ExceedsLimits` (beyond what a record carries).
    pub fn reason(&self) -> &'static str {
        match self {
            ExportInvalid::NoService(_) => REASON_NO_SERVICE,
            ExportInvalid::ServiceType(_) => REASON_INVALID_SERVICE_TYPE,
            ExportInvalid::Name(_) => "InvalidName",
            ExportInvalid::Port(_) => "InvalidPort",
            ExportInvalid::Address(_) => "InvalidAddress",
            ExportInvalid::ServiceSpec { .. } => "InvalidServiceSpec",
            ExportInvalid::Affinity { .. } => "InvalidAffinity",
            ExportInvalid::Properties(e) => match property_fault(e) {
                PropertyFault::Limit => "ExceedsLimits",
                PropertyFault::Metadata => "InvalidExportedMetadata",
                PropertyFault::Spec => "InvalidServiceSpec",
            },
            ExportInvalid::TooManyPorts(_)
            | ExportInvalid::TooManyEndpoints(_)
            | ExportInvalid::TooLong { .. } => "ExceedsLimits",
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            ExportInvalid::NoService(_) => "no_service",
            ExportInvalid::Name(_) => "invalid_name",
            ExportInvalid::ServiceType(_) => "invalid_service_type",
            ExportInvalid::Port(_) => "invalid_port",
            ExportInvalid::TooManyPorts(_) => "too_many_ports",
            ExportInvalid::TooManyEndpoints(_) => "too_many_endpoints",
            ExportInvalid::TooLong { .. } => "too_long",
            ExportInvalid::Address(_) => "invalid_address",
            ExportInvalid::ServiceSpec { .. } => "invalid_service_spec",
            ExportInvalid::Affinity { .. } => "invalid_affinity",
            ExportInvalid::Properties(e) => match property_fault(e) {
                PropertyFault::Limit => "properties_exceed_limits",
                PropertyFault::Metadata => "invalid_exported_metadata",
                PropertyFault::Spec => "invalid_service_spec",
            },
        }
    }
}

/// The namespace/name of an object; a missing namespace is [`DEFAULT_NAMESPACE`].
pub fn object_key(meta: &ObjectMeta) -> Result<ServiceKey, ExportInvalid> {
    let namespace = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    let name = meta.name.as_deref().unwrap_or_default();
    Ok(ServiceKey::new(namespace, name)?)
}

/// Whether `slice` is one of `service`'s own EndpointSlices (not one Shoal derived).
pub fn slice_of(slice: &EndpointSlice, service: &ServiceKey) -> bool {
    let meta = &slice.metadata;
    let labels = meta.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE) == service.namespace.as_str()
        && label(LABEL_KUBE_SERVICE_NAME) == Some(service.name.as_str())
        && label(LABEL_MANAGED_BY) != Some(MANAGER)
}

/// The export of `service` under the MCS source rules. `slices` may hold any
/// EndpointSlices; those of the Service (by the `kubernetes.io/service-name` label, in
/// its namespace, not derived by Shoal) are used. In [`NetworkMode::Island`] the
/// endpoints are the Service's LoadBalancer ingress IPs instead.
///
/// The export's age is its `creationTimestamp`, or `now_ms` when it has none. Headless
/// when `clusterIP: None`. Only the first address of an endpoint is used (Kubernetes
/// consumers may do the same); endpoints are sorted and deduplicated by address.
/// Each port's target port is the one the Service's EndpointSlices give for that port
/// name and protocol (the endpoints controller resolves named target ports per pod);
/// without one, a numeric `targetPort`, else the port itself (Kubernetes' default). In
/// island mode the gateway listens on the service port, so that is the target.
///
/// The properties follow the API server's defaults where a field is unset (as it may
/// be in the standalone backend's YAML): `sessionAffinity` `None`, and with `ClientIP`
/// a timeout of [`CLIENT_IP_TIMEOUT_SECONDS_DEFAULT`]; `sessionAffinityConfig` is
/// ignored without `ClientIP` (the API server drops it); `internalTrafficPolicy`
/// `Cluster`; `ipFamilies` the families of `clusterIPs` (none for a headless Service
/// that names none). The exported labels and annotations are the ServiceExport's.
pub fn export_spec(
    service: &Service,
    export: &ServiceExport,
    slices: &[EndpointSlice],
    network: NetworkMode,
    now_ms: u64,
) -> Result<ExportSpec, ExportInvalid> {
    let key = object_key(&export.metadata)?;
    if object_key(&service.metadata)? != key {
        return Err(ExportInvalid::NoService(key.to_string()));
    }
    let empty = ServiceSpec::default();
    let spec = service.spec.as_ref().unwrap_or(&empty);
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(ExportInvalid::ServiceType("ExternalName".into()));
    }
    let service_type = match spec.cluster_ip.as_deref() {
        Some("None") => ServiceType::Headless,
        _ => ServiceType::ClusterSetIp,
    };
    let ports = export_ports(spec.ports.as_deref().unwrap_or_default())?;
    let properties = export_properties(service, export)?;
    let ports = match network {
        NetworkMode::Flat => with_slice_target_ports(ports, &key, slices),
        NetworkMode::Island => ports
            .into_iter()
            .map(|p| ServicePort {
                target_port: p.port,
                ..p
            })
            .collect(),
    };
    let endpoints = match network {
        NetworkMode::Flat => slice_endpoints(&key, slices)?,
        NetworkMode::Island => ingress_endpoints(service)?,
    };
    check_endpoints(&endpoints)?;
    let export_created_ms = export
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now_ms, |t| u64::try_from(t.0.as_millisecond()).unwrap_or(0));
    Ok(ExportSpec {
        service: key,
        export_created_ms,
        service_type,
        ports,
        endpoints,
        network,
        properties,
    })
}

fn export_properties(
    service: &Service,
    export: &ServiceExport,
) -> Result<ServiceProperties, ExportInvalid> {
    let empty = ServiceSpec::default();
    let spec = service.spec.as_ref().unwrap_or(&empty);
    let (session_affinity, client_ip_timeout_seconds) = session_affinity(spec)?;
    let exported = export.spec.clone().unwrap_or_default();
    let properties = ServiceProperties {
        ip_families: ip_families(spec)?,
        session_affinity,
        client_ip_timeout_seconds,
        internal_traffic_policy: Some(internal_traffic_policy(spec)?),
        traffic_distribution: spec.traffic_distribution.clone(),
        exported_labels: exported.exported_labels,
        exported_annotations: exported.exported_annotations,
        affinity: affinity(&export.metadata, &service.metadata)?,
    };
    properties.validate().map_err(ExportInvalid::Properties)?;
    Ok(properties)
}

/// The annotations that set a service's affinity, the first found winning: Shoal's
/// own, then Cilium's (so that a Service annotated for Cluster Mesh keeps its policy).
pub const AFFINITY_ANNOTATIONS: [&str; 2] = ["shoal.dev/affinity", "service.cilium.io/affinity"];

/// The service's affinity: from the ServiceExport's annotations, else the Service's,
/// each by [`AFFINITY_ANNOTATIONS`] order; `none` when neither sets one.
fn affinity(export: &ObjectMeta, service: &ObjectMeta) -> Result<Affinity, ExportInvalid> {
    let found = [export, service].into_iter().find_map(|meta| {
        let annotations = meta.annotations.as_ref()?;
        AFFINITY_ANNOTATIONS
            .iter()
            .find_map(|key| annotations.get(*key).map(|value| (*key, value)))
    });
    let Some((annotation, value)) = found else {
        return Ok(Affinity::None);
    };
    Affinity::from_name(value).ok_or_else(|| ExportInvalid::Affinity {
        annotation,
        value: value.clone(),
    })
}

fn spec_error(field: &'static str, problem: String) -> ExportInvalid {
    ExportInvalid::ServiceSpec { field, problem }
}

/// `spec.ipFamilies`, or the families of `spec.clusterIPs` (`spec.clusterIP`) when it
/// is unset.
fn ip_families(spec: &ServiceSpec) -> Result<Vec<IpFamily>, ExportInvalid> {
    if let Some(families) = spec.ip_families.as_ref().filter(|f| !f.is_empty()) {
        return families
            .iter()
            .map(|f| match f.as_str() {
                "IPv4" => Ok(IpFamily::Ipv4),
                "IPv6" => Ok(IpFamily::Ipv6),
                other => Err(spec_error(
                    "ipFamilies",
                    format!("{other:?} is not IPv4 or IPv6"),
                )),
            })
            .collect();
    }
    let ips: Vec<&str> = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        (_, Some(ip)) => vec![ip.as_str()],
        _ => Vec::new(),
    };
    let mut families = Vec::new();
    for ip in ips.into_iter().filter(|ip| !ip.is_empty() && *ip != "None") {
        let parsed: IpAddr = ip
            .parse()
            .map_err(|_| spec_error("clusterIPs", format!("{ip:?} is not an IP address")))?;
        let family = match parsed {
            IpAddr::V4(_) => IpFamily::Ipv4,
            IpAddr::V6(_) => IpFamily::Ipv6,
        };
        if !families.contains(&family) {
            families.push(family);
        }
    }
    Ok(families)
}

fn session_affinity(spec: &ServiceSpec) -> Result<(SessionAffinity, Option<u32>), ExportInvalid> {
    let affinity = match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => return Ok((SessionAffinity::None, None)),
        Some("ClientIP") => SessionAffinity::ClientIp,
        Some(other) => {
            let problem = format!("{other:?} is not None or ClientIP");
            return Err(spec_error("sessionAffinity", problem));
        }
    };
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    let timeout = match timeout {
        None => CLIENT_IP_TIMEOUT_SECONDS_DEFAULT,
        Some(seconds) => u32::try_from(seconds).map_err(|_| {
            let field = "sessionAffinityConfig.clientIP.timeoutSeconds";
            spec_error(
                field,
                format!("{seconds} is not a positive number of seconds"),
            )
        })?,
    };
    Ok((affinity, Some(timeout)))
}

fn internal_traffic_policy(spec: &ServiceSpec) -> Result<InternalTrafficPolicy, ExportInvalid> {
    match spec.internal_traffic_policy.as_deref() {
        None | Some("Cluster") => Ok(InternalTrafficPolicy::Cluster),
        Some("Local") => Ok(InternalTrafficPolicy::Local),
        Some(other) => Err(spec_error(
            "internalTrafficPolicy",
            format!("{other:?} is not Cluster or Local"),
        )),
    }
}

fn export_ports(ports: &[KubeServicePort]) -> Result<Vec<ServicePort>, ExportInvalid> {
    if ports.len() > PORTS_PER_RECORD_MAX {
        return Err(ExportInvalid::TooManyPorts(ports.len()));
    }
    let mut out: Vec<ServicePort> = Vec::with_capacity(ports.len());
    for port in ports {
        let name = port.name.clone().unwrap_or_default();
        check_len("port name", &name, LABEL_BYTES_MAX)?;
        if out.iter().any(|p| p.name == name) {
            return Err(ExportInvalid::Port(format!("duplicate name {name:?}")));
        }
        let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => PortProtocol::Tcp,
            "UDP" => PortProtocol::Udp,
            "SCTP" => PortProtocol::Sctp,
            other => return Err(ExportInvalid::Port(format!("protocol {other:?}"))),
        };
        let number = port_number(port.port)?;
        let target_port = match &port.target_port {
            Some(IntOrString::Int(n)) => port_number(*n)?,
            Some(IntOrString::String(_)) | None => number,
        };
        if let Some(app) = &port.app_protocol {
            check_len("app protocol", app, APP_PROTOCOL_BYTES_MAX)?;
        }
        out.push(ServicePort {
            name,
            protocol,
            port: number,
            target_port,
            app_protocol: port.app_protocol.clone(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn port_number(number: i32) -> Result<u16, ExportInvalid> {
    u16::try_from(number)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ExportInvalid::Port(format!("port number {number}")))
}

/// Sets each port's target to what the Service's EndpointSlices list for its name and
/// protocol, where one does (the first slice that lists it wins).
fn with_slice_target_ports(
    mut ports: Vec<ServicePort>,
    service: &ServiceKey,
    slices: &[EndpointSlice],
) -> Vec<ServicePort> {
    let slice_ports: Vec<&EndpointPort> = slices
        .iter()
        .filter(|s| slice_of(s, service))
        .flat_map(|s| s.ports.iter().flatten())
        .collect();
    for port in &mut ports {
        let resolved = slice_ports.iter().find_map(|p| {
            let name = p.name.as_deref().unwrap_or_default();
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            (name == port.name && protocol == protocol_name(port.protocol))
                .then_some(p.port)
                .flatten()
                .and_then(|n| port_number(n).ok())
        });
        if let Some(target) = resolved {
            port.target_port = target;
        }
    }
    ports
}

fn check_len(what: &'static str, text: &str, max: usize) -> Result<(), ExportInvalid> {
    if text.len() > max {
        return Err(ExportInvalid::TooLong {
            what,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

fn slice_endpoints(
    service: &ServiceKey,
    slices: &[EndpointSlice],
) -> Result<Vec<Endpoint>, ExportInvalid> {
    let mut out = Vec::new();
    let ip_slices = slices
        .iter()
        .filter(|s| slice_of(s, service))
        .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"));
    for slice in ip_slices {
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(first) = endpoint.addresses.first() else {
                continue;
            };
            let ip: IpAddr = first
                .parse()
                .map_err(|_| ExportInvalid::Address(first.clone()))?;
            out.push(Endpoint {
                addresses: vec![IpAddress::from(ip)],
                conditions: endpoint_conditions(endpoint.conditions.as_ref()),
                zone: endpoint.zone.clone(),
                hostname: endpoint.hostname.clone(),
            });
        }
    }
    out.sort();
    out.dedup_by(|a, b| a.addresses == b.addresses);
    Ok(out)
}

/// Kubernetes semantics: `ready` unset means ready, `serving` unset follows `ready`,
/// `terminating` unset means not terminating.
fn endpoint_conditions(conditions: Option<&KubeConditions>) -> EndpointConditions {
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    EndpointConditions {
        ready,
        serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
    }
}

/// Island mode: remote clusters reach the service through its LoadBalancer addresses.
/// Ingress points named only by hostname are not IP endpoints and are left out.
fn ingress_endpoints(service: &Service) -> Result<Vec<Endpoint>, ExportInvalid> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let mut out = Vec::new();
    for ip in ingress.into_iter().flatten().filter_map(|i| i.ip.as_ref()) {
        let parsed: IpAddr = ip.parse().map_err(|_| ExportInvalid::Address(ip.clone()))?;
        out.push(Endpoint {
            addresses: vec![IpAddress::from(parsed)],
            conditions: EndpointConditions {
                ready: true,
                serving: true,
                terminating: false,
            },
            zone: None,
            hostname: None,
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_endpoints(endpoints: &[Endpoint]) -> Result<(), ExportInvalid> {
    if endpoints.len() > ENDPOINTS_PER_RECORD_MAX {
        return Err(ExportInvalid::TooManyEndpoints(endpoints.len()));
    }
    for endpoint in endpoints {
        if let Some(zone) = &endpoint.zone {
            check_len("zone", zone, LABEL_BYTES_MAX)?;
        }
        if let Some(hostname) = &endpoint.hostname {
            check_len("hostname", hostname, LABEL_BYTES_MAX)?;
        }
    }
    Ok(())
}

// ----- the sink: what an import looks like in the cluster -----

/// The objects that make `import` visible in cluster `local`: a ServiceImport
/// (`spec.ips` stays empty: the standalone backend has no IP allocator; the Kubernetes
/// backend fills it from the derived Service's cluster IP), a derived Service (for
/// both types: `clusterIP: None` when headless, so that the slices always have a
/// Service), and per active source cluster (under the service's affinity) its
/// endpoints in slices of at most [`ENDPOINTS_PER_SLICE_MAX`], one slice family per IP
/// family. The local cluster's own endpoints are included, as the MCS API asks. The
/// ServiceImport's `status.clusters` lists every source, active or not; with an
/// affinity other than `none`, [`ANNOTATION_TRAFFIC`] and
/// [`ANNOTATION_ACTIVE_CLUSTERS`] say which take traffic and why.
///
/// The ServiceImport's spec carries the import's properties (the oldest export's):
/// `ipFamilies`, `sessionAffinity` (always, `None` included, as a Service reads back
/// from the API server), `sessionAffinityConfig`, `internalTrafficPolicy` and
/// `trafficDistribution`; its labels and annotations are the exported ones, under
/// Shoal's own [`LABEL_SERVICE_NAME`] and [`ANNOTATION_WRITTEN_BY`], which an exported
/// key never replaces. The derived Service carries the properties a Service has (see
/// `derived_service`), and no exported labels or annotations.
pub fn desired_import(local: &ClusterId, import: &ImportedService) -> DesiredImport {
    let service = &import.service;
    let derived = derived_service_name(service);
    let mut slices: Vec<EndpointSlice> = import
        .sources
        .iter()
        .filter(|source| source.active)
        .flat_map(|source| source_slices(local, service, &derived, &source.record))
        .collect();
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    DesiredImport {
        service_import: service_import(local, import),
        derived_service: derived_service(local, import, &derived),
        slices,
    }
}

fn meta(local: &ClusterId, service: &ServiceKey, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(service.namespace.to_string()),
        labels: Some(BTreeMap::from([(
            LABEL_SERVICE_NAME.to_owned(),
            service.name.to_string(),
        )])),
        annotations: Some(BTreeMap::from([(
            ANNOTATION_WRITTEN_BY.to_owned(),
            local.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn protocol_name(protocol: PortProtocol) -> &'static str {
    match protocol {
        PortProtocol::Tcp => "TCP",
        PortProtocol::Udp => "UDP",
        PortProtocol::Sctp => "SCTP",
    }
}

fn service_import(local: &ClusterId, import: &ImportedService) -> ServiceImport {
    let type_ = match import.service_type {
        ServiceType::ClusterSetIp => "ClusterSetIP",
        ServiceType::Headless => "Headless",
    };
    let ports = import
        .ports
        .iter()
        .map(|p| ServiceImportPort {
            name: p.name.clone(),
            protocol: protocol_name(p.protocol).to_owned(),
            app_protocol: p.app_protocol.clone(),
            port: i32::from(p.port),
        })
        .collect();
    let clusters = import
        .sources
        .iter()
        .map(|s| ClusterStatus {
            cluster: s.cluster().to_string(),
        })
        .collect();
    let properties = &import.properties;
    let mut metadata = meta(local, &import.service, import.service.name.to_string());
    with_exported(&mut metadata.labels, &properties.exported_labels);
    with_exported(&mut metadata.annotations, &properties.exported_annotations);
    if properties.affinity != Affinity::None {
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(
            ANNOTATION_TRAFFIC.to_owned(),
            import.traffic.name().to_owned(),
        );
        annotations.insert(
            ANNOTATION_ACTIVE_CLUSTERS.to_owned(),
            active_clusters(import),
        );
    }
    ServiceImport {
        api_version: MCS_API_VERSION.to_owned(),
        kind: "ServiceImport".to_owned(),
        metadata,
        spec: ServiceImportSpec {
            type_: type_.to_owned(),
            ports,
            ips: Vec::new(),
            ip_families: family_names(&properties.ip_families),
            session_affinity: Some(affinity_name(properties.session_affinity).to_owned()),
            session_affinity_config: properties.client_ip_timeout_seconds.map(|t| {
                SessionAffinityConfig {
                    client_ip: Some(ClientIpConfig {
                        timeout_seconds: Some(timeout_i32(t)),
                    }),
                }
            }),
            internal_traffic_policy: properties
                .internal_traffic_policy
                .map(|p| policy_name(p).to_owned()),
            traffic_distribution: properties.traffic_distribution.clone(),
        },
        status: Some(ServiceImportStatus { clusters }),
    }
}

/// The value of [`ANNOTATION_ACTIVE_CLUSTERS`]: `a,b,c`, or `a,…,z,+12` past
/// [`ACTIVE_NAMED_MAX`].
fn active_clusters(import: &ImportedService) -> String {
    let active: Vec<&str> = import
        .sources
        .iter()
        .filter(|s| s.active)
        .map(|s| s.cluster().as_str())
        .collect();
    let mut value = active
        .iter()
        .take(ACTIVE_NAMED_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(",");
    if active.len() > ACTIVE_NAMED_MAX {
        value.push_str(&format!(",+{}", active.len() - ACTIVE_NAMED_MAX));
    }
    value
}

/// Adds the exported labels (or annotations) under Shoal's own: an exported key that
/// is also one of Shoal's does not replace it.
fn with_exported(own: &mut Option<BTreeMap<String, String>>, exported: &BTreeMap<String, String>) {
    if exported.is_empty() {
        return;
    }
    let own = own.get_or_insert_with(BTreeMap::new);
    for (key, value) in exported {
        own.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

fn family_names(families: &[IpFamily]) -> Vec<String> {
    families
        .iter()
        .map(|f| match f {
            IpFamily::Ipv4 => "IPv4".to_owned(),
            IpFamily::Ipv6 => "IPv6".to_owned(),
        })
        .collect()
}

fn affinity_name(affinity: SessionAffinity) -> &'static str {
    match affinity {
        SessionAffinity::None => "None",
        SessionAffinity::ClientIp => "ClientIP",
    }
}

fn policy_name(policy: InternalTrafficPolicy) -> &'static str {
    match policy {
        InternalTrafficPolicy::Cluster => "Cluster",
        InternalTrafficPolicy::Local => "Local",
    }
}

/// A record's timeout is at most one day, far within an `i32`.
fn timeout_i32(seconds: u32) -> i32 {
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// The derived Service carries the properties a Service has: IP families (with
/// `RequireDualStack` for two, `SingleStack` for one, and the API server's choice for
/// none), session affinity and its config, internal traffic policy and traffic
/// distribution. An importing cluster that lacks one of the families refuses it, as
/// the MCS API expects (the ServiceImport's `IPFamilyNotSupported`).
fn derived_service(local: &ClusterId, import: &ImportedService, name: &str) -> Service {
    let ports = import
        .ports
        .iter()
        .map(|p| KubeServicePort {
            name: Some(p.name.clone()).filter(|n| !n.is_empty()),
            protocol: Some(protocol_name(p.protocol).to_owned()),
            app_protocol: p.app_protocol.clone(),
            port: i32::from(p.port),
            ..KubeServicePort::default()
        })
        .collect();
    let cluster_ip = match import.service_type {
        ServiceType::ClusterSetIp => None,
        ServiceType::Headless => Some("None".to_owned()),
    };
    let properties = &import.properties;
    let ip_family_policy = match properties.ip_families.len() {
        0 => None,
        1 => Some("SingleStack".to_owned()),
        _ => Some("RequireDualStack".to_owned()),
    };
    let ip_families = Some(family_names(&properties.ip_families)).filter(|f| !f.is_empty());
    Service {
        metadata: meta(local, &import.service, name.to_owned()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip,
            ports: Some(ports),
            ip_families,
            ip_family_policy,
            session_affinity: Some(affinity_name(properties.session_affinity).to_owned()),
            session_affinity_config: properties.client_ip_timeout_seconds.map(|t| {
                KubeSessionAffinityConfig {
                    client_ip: Some(KubeClientIpConfig {
                        timeout_seconds: Some(timeout_i32(t)),
                    }),
                }
            }),
            internal_traffic_policy: properties
                .internal_traffic_policy
                .map(|p| policy_name(p).to_owned()),
            traffic_distribution: properties.traffic_distribution.clone(),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn source_slices(
    local: &ClusterId,
    service: &ServiceKey,
    derived: &str,
    record: &SignedRecord,
) -> Vec<EndpointSlice> {
    let record = &record.record;
    let ports: Vec<EndpointPort> = record
        .ports
        .iter()
        .map(|p| EndpointPort {
            name: Some(p.name.clone()),
            protocol: Some(protocol_name(p.protocol).to_owned()),
            port: Some(i32::from(p.target_port)),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    let mut endpoints: Vec<&Endpoint> = record.endpoints.iter().collect();
    endpoints.sort();
    let mut slices = Vec::new();
    for family in [AddressFamily::V4, AddressFamily::V6] {
        let members: Vec<KubeEndpoint> = endpoints
            .iter()
            .filter_map(|e| kube_endpoint(e, family))
            .collect();
        for (index, chunk) in members.chunks(ENDPOINTS_PER_SLICE_MAX).enumerate() {
            let name = slice_name(service, &record.origin, family, index);
            let mut metadata = meta(local, service, name);
            let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.insert(LABEL_SOURCE_CLUSTER.into(), record.origin.to_string());
            labels.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
            labels.insert(LABEL_KUBE_SERVICE_NAME.into(), derived.to_owned());
            slices.push(EndpointSlice {
                metadata,
                address_type: family.address_type().to_owned(),
                endpoints: Some(chunk.to_vec()),
                ports: Some(ports.clone()),
            });
        }
    }
    slices
}

/// The endpoint's address of this family, as a slice endpoint; `None` when it has none.
fn kube_endpoint(endpoint: &Endpoint, family: AddressFamily) -> Option<KubeEndpoint> {
    let address = endpoint.addresses.iter().find(|a| match a {
        IpAddress::V4(_) => family == AddressFamily::V4,
        IpAddress::V6(_) => family == AddressFamily::V6,
    })?;
    let c = endpoint.conditions;
    Some(KubeEndpoint {
        addresses: vec![address.to_string()],
        conditions: Some(KubeConditions {
            ready: Some(c.ready),
            serving: Some(c.serving),
            terminating: Some(c.terminating),
        }),
        hostname: endpoint.hostname.clone(),
        zone: endpoint.zone.clone(),
        ..KubeEndpoint::default()
    })
}

// ----- the export's conditions -----

/// The ServiceExport condition saying whether the Service can be exported at all.
pub const CONDITION_VALID: &str = "Valid";
/// The ServiceExport condition saying whether the ClusterSet imports its endpoints.
pub const CONDITION_READY: &str = "Ready";
/// The ServiceExport condition saying whether the exports of the service disagree.
pub const CONDITION_CONFLICT: &str = "Conflict";

/// The `Conflict=True` reasons, in the order mcs-api v1beta1 declares them: a
/// condition with several lists them in this order.
const CONFLICT_REASONS: [&str; 10] = [
    REASON_PORT_CONFLICT,
    REASON_TYPE_CONFLICT,
    REASON_SESSION_AFFINITY_CONFLICT,
    REASON_SESSION_AFFINITY_CONFIG_CONFLICT,
    REASON_LABELS_CONFLICT,
    REASON_ANNOTATIONS_CONFLICT,
    REASON_INTERNAL_TRAFFIC_POLICY_CONFLICT,
    REASON_TRAFFIC_DISTRIBUTION_CONFLICT,
    REASON_IP_FAMILY_CONFLICT,
    REASON_AFFINITY_CONFLICT,
];

/// Most conflicts a `Conflict` message names one by one; the rest are counted, so the
/// message stays far below the 32 KiB Kubernetes allows however many clusters export.
pub const CONFLICT_DETAILS_MAX: usize = 16;

/// The mcs-api v1beta1 reason for a conflict of this kind.
pub fn conflict_reason(kind: &ConflictKind) -> &'static str {
    match kind {
        ConflictKind::Port { .. } => REASON_PORT_CONFLICT,
        ConflictKind::Type { .. } => REASON_TYPE_CONFLICT,
        ConflictKind::SessionAffinity => REASON_SESSION_AFFINITY_CONFLICT,
        ConflictKind::SessionAffinityConfig => REASON_SESSION_AFFINITY_CONFIG_CONFLICT,
        ConflictKind::Labels => REASON_LABELS_CONFLICT,
        ConflictKind::Annotations => REASON_ANNOTATIONS_CONFLICT,
        ConflictKind::InternalTrafficPolicy => REASON_INTERNAL_TRAFFIC_POLICY_CONFLICT,
        ConflictKind::TrafficDistribution => REASON_TRAFFIC_DISTRIBUTION_CONFLICT,
        ConflictKind::IpFamily => REASON_IP_FAMILY_CONFLICT,
        ConflictKind::Affinity => REASON_AFFINITY_CONFLICT,
    }
}

/// The `Valid`, `Ready` and `Conflict` conditions of this cluster's export, given
/// whether it is valid and the service's latest import (if any), with the reasons of
/// mcs-api v1beta1.
///
/// - `Valid`: `True`/`Valid`, or `False` with [`ExportInvalid::reason`].
/// - `Ready`: `True`/`Exported` once the import includes this cluster; `False`/`Failed`
///   when the export is invalid or left out of the import on its type (the message
///   says which), `False`/`Pending` until then.
/// - `Conflict`: `True` when any constituent export conflicts (the MCS API recommends
///   raising it on all of them, and its conformance suite checks every one), with the
///   reason of each kind of conflict present, comma-joined in [`CONFLICT_REASONS`]
///   order (`PortConflict`, `TypeConflict`, `SessionAffinityConflict`,
///   `SessionAffinityConfigConflict`, `LabelsConflict`, `AnnotationsConflict`,
///   `InternalTrafficPolicyConflict`, `TrafficDistributionConflict`,
///   `IPFamilyConflict`, and Shoal's `AffinityConflict`); the message says which clusters, on what, and whether this
///   one's definition stands. `False`/`NoConflicts` otherwise, and `Unknown`/`Pending`
///   while there is no import or the export is invalid.
///
/// `lastTransitionTime` is the Unix epoch: the caller stamps it with
/// [`stamp_transitions`].
pub fn export_conditions(
    valid: Result<(), &ExportInvalid>,
    import: Option<&ImportedService>,
    local: &ClusterId,
) -> Vec<Condition> {
    let valid_condition = match valid {
        Ok(()) => condition(
            CONDITION_VALID,
            "True",
            REASON_VALID,
            "the Service can be exported",
        ),
        Err(e) => condition(CONDITION_VALID, "False", e.reason(), &e.to_string()),
    };
    if let Err(e) = valid {
        let message = format!("the export is invalid: {e}");
        return vec![
            valid_condition,
            condition(CONDITION_READY, "False", REASON_FAILED, &message),
            condition(
                CONDITION_CONFLICT,
                "Unknown",
                REASON_PENDING,
                "the export is invalid",
            ),
        ];
    }
    vec![
        valid_condition,
        ready_condition(import, local),
        conflict_condition(import, local),
    ]
}

fn ready_condition(import: Option<&ImportedService>, local: &ClusterId) -> Condition {
    let Some(import) = import else {
        return condition(CONDITION_READY, "False", REASON_PENDING, "not imported yet");
    };
    if import.exports_from(local) {
        return condition(
            CONDITION_READY,
            "True",
            REASON_EXPORTED,
            "the ClusterSet imports this cluster's endpoints",
        );
    }
    let lost_type = import
        .conflicts
        .iter()
        .any(|c| &c.cluster == local && matches!(c.kind, ConflictKind::Type { .. }));
    if lost_type {
        let message =
            "an older export has another service type; this cluster's endpoints are left out";
        return condition(CONDITION_READY, "False", REASON_FAILED, message);
    }
    condition(CONDITION_READY, "False", REASON_PENDING, "not imported yet")
}

fn conflict_condition(import: Option<&ImportedService>, local: &ClusterId) -> Condition {
    let Some(import) = import else {
        return condition(
            CONDITION_CONFLICT,
            "Unknown",
            REASON_PENDING,
            "not imported yet",
        );
    };
    if import.conflicts.is_empty() {
        return condition(
            CONDITION_CONFLICT,
            "False",
            REASON_NO_CONFLICTS,
            "all exports agree",
        );
    }
    let present: Vec<&str> = import
        .conflicts
        .iter()
        .map(|c| conflict_reason(&c.kind))
        .collect();
    let reasons: Vec<&str> = CONFLICT_REASONS
        .into_iter()
        .filter(|r| present.contains(r))
        .collect();
    let mut details: Vec<String> = import
        .conflicts
        .iter()
        .take(CONFLICT_DETAILS_MAX)
        .map(|c| format!("{} on {}", c.cluster, c.kind))
        .collect();
    if import.conflicts.len() > CONFLICT_DETAILS_MAX {
        details.push(format!(
            "and {} more",
            import.conflicts.len() - CONFLICT_DETAILS_MAX
        ));
    }
    let standing = if import.conflicts.iter().any(|c| &c.cluster == local) {
        "an older export's definition stands over this cluster's"
    } else {
        "this cluster's definition stands (the oldest export wins)"
    };
    let message = format!("conflicting exports: {}; {standing}", details.join(", "));
    condition(CONDITION_CONFLICT, "True", &reasons.join(","), &message)
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

/// Sets each condition's `lastTransitionTime`: kept from `previous` when the condition
/// of the same type had the same status, `now_ms` otherwise (as Kubernetes'
/// `meta.SetStatusCondition` does). Second precision, as the API serializes it.
pub fn stamp_transitions(previous: &[Condition], current: &mut [Condition], now_ms: u64) {
    let now_s = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
    let now = Timestamp::from_second(now_s).unwrap_or(Timestamp::UNIX_EPOCH);
    for condition in current {
        let before = previous
            .iter()
            .find(|p| p.type_ == condition.type_ && p.status == condition.status);
        condition.last_transition_time = match before {
            Some(p) => p.last_transition_time.clone(),
            None => Time(now),
        };
    }
}

#[cfg(test)]
mod tests;
