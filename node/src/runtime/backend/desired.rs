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

use k8s_openapi::api::core::v1::{Service, ServicePort as KubeServicePort, ServiceSpec};
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
    ClusterId, Endpoint, EndpointConditions, IdError, IpAddress, NetworkMode, PortProtocol,
    ServiceKey, ServicePort, ServiceType, SignedRecord,
};

use super::objects::{
    AddressFamily, ClusterStatus, ENDPOINTS_PER_SLICE_MAX, LABEL_KUBE_SERVICE_NAME,
    LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER, MANAGER, MCS_API_VERSION,
    ServiceExport, ServiceImport, ServiceImportPort, ServiceImportSpec, ServiceImportStatus,
    derived_service_name, slice_name,
};
use crate::core::{ConflictKind, ExportSpec, ImportedService};

/// The annotation naming the cluster that wrote a derived object.
pub const ANNOTATION_WRITTEN_BY: &str = "shoal.dev/written-by";
/// The namespace of an object that names none (as `kubectl` assumes).
pub const DEFAULT_NAMESPACE: &str = "default";

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
}

impl ExportInvalid {
    /// The `reason` of the `Valid=False` condition: the MCS reasons where they apply.
    pub fn reason(&self) -> &'static str {
        match self {
            ExportInvalid::NoService(_) => "NoService",
            ExportInvalid::ServiceType(_) => "InvalidServiceType",
            ExportInvalid::Name(_) => "InvalidName",
            ExportInvalid::Port(_) => "InvalidPort",
            ExportInvalid::Address(_) => "InvalidAddress",
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
    })
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
        for endpoint in &slice.endpoints {
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
/// Service), and per source cluster its endpoints in slices of at most
/// [`ENDPOINTS_PER_SLICE_MAX`], one slice family per IP family. The local cluster's own
/// endpoints are included, as the MCS API asks.
pub fn desired_import(local: &ClusterId, import: &ImportedService) -> DesiredImport {
    let service = &import.service;
    let derived = derived_service_name(service);
    let mut slices: Vec<EndpointSlice> = import
        .sources
        .iter()
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
    ServiceImport {
        api_version: MCS_API_VERSION.to_owned(),
        kind: "ServiceImport".to_owned(),
        metadata: meta(local, &import.service, import.service.name.to_string()),
        spec: ServiceImportSpec {
            type_: type_.to_owned(),
            ports,
            ips: Vec::new(),
        },
        status: Some(ServiceImportStatus { clusters }),
    }
}

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
    Service {
        metadata: meta(local, &import.service, name.to_owned()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip,
            ports: Some(ports),
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
                endpoints: chunk.to_vec(),
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

/// The `Valid`, `Ready` and `Conflict` conditions of this cluster's export, given
/// whether it is valid and the service's latest import (if any).
///
/// - `Valid`: `True`/`Valid`, or `False` with [`ExportInvalid::reason`].
/// - `Ready`: `True`/`Exported` once the import includes this cluster; `False` with
///   `Invalid`, `TypeConflict` (left out of the import) or `Pending`.
/// - `Conflict`: `True` with `PortConflict`, `TypeConflict` or both (comma-separated,
///   as the MCS API allows) when any constituent export conflicts (the MCS API
///   recommends raising it on all of them); the message says which clusters and
///   whether this one's definition stands. `False`/`NoConflicts` otherwise, and
///   `Unknown`/`Pending` while there is no import.
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
            "Valid",
            "the Service can be exported",
        ),
        Err(e) => condition(CONDITION_VALID, "False", e.reason(), &e.to_string()),
    };
    if let Err(e) = valid {
        return vec![
            valid_condition,
            condition(CONDITION_READY, "False", "Invalid", &e.to_string()),
            condition(
                CONDITION_CONFLICT,
                "Unknown",
                "Pending",
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
        return condition(CONDITION_READY, "False", "Pending", "not imported yet");
    };
    if import.exports_from(local) {
        return condition(
            CONDITION_READY,
            "True",
            "Exported",
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
        return condition(CONDITION_READY, "False", "TypeConflict", message);
    }
    condition(CONDITION_READY, "False", "Pending", "not imported yet")
}

fn conflict_condition(import: Option<&ImportedService>, local: &ClusterId) -> Condition {
    let Some(import) = import else {
        return condition(CONDITION_CONFLICT, "Unknown", "Pending", "not imported yet");
    };
    if import.conflicts.is_empty() {
        return condition(
            CONDITION_CONFLICT,
            "False",
            "NoConflicts",
            "all exports agree",
        );
    }
    let mut reasons = Vec::new();
    let mut details = Vec::new();
    for conflict in &import.conflicts {
        let (reason, what) = match &conflict.kind {
            ConflictKind::Port { name } => ("PortConflict", format!("port {name:?}")),
            ConflictKind::Type { exported, .. } => ("TypeConflict", format!("type {exported:?}")),
        };
        if !reasons.contains(&reason) {
            reasons.push(reason);
        }
        details.push(format!("{} on {what}", conflict.cluster));
    }
    reasons.sort_unstable();
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
