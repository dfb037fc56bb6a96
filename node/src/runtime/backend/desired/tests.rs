use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
use shoal_proto::{ClusterKey, ExportRecord};

use super::*;
use crate::core::{Conflict, ImportedCluster};

fn cluster(name: &str) -> ClusterId {
    ClusterId::new(name).unwrap()
}

fn key() -> ServiceKey {
    ServiceKey::new("shop", "web").unwrap()
}

fn http(port: u16) -> ServicePort {
    ServicePort {
        name: "http".into(),
        protocol: PortProtocol::Tcp,
        port,
        target_port: port,
        app_protocol: None,
    }
}

fn endpoint(ip: IpAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip],
        conditions: EndpointConditions {
            ready,
            serving: ready,
            terminating: !ready,
        },
        zone: Some("zone-a".into()),
        hostname: None,
    }
}

fn v4(i: u32) -> IpAddress {
    IpAddress::V4((0x0a00_0000 + i).to_be_bytes())
}

fn source(origin: &str, ty: ServiceType, port: u16, endpoints: Vec<Endpoint>) -> ImportedCluster {
    source_with_port(origin, ty, http(port), endpoints)
}

fn source_with_port(
    origin: &str,
    ty: ServiceType,
    port: ServicePort,
    endpoints: Vec<Endpoint>,
) -> ImportedCluster {
    let origin = cluster(origin);
    let record = ExportRecord {
        origin: origin.clone(),
        service: key(),
        version: 1,
        export_created_ms: 1,
        published_ms: 0,
        service_type: ty,
        ports: vec![port],
        endpoints,
        network: NetworkMode::Flat,
        tombstone: false,
    };
    let signed = ClusterKey::from_seed(origin, [7; 32]).sign_unchecked(record);
    ImportedCluster {
        record: Arc::new(signed),
    }
}

fn import(ty: ServiceType, sources: Vec<ImportedCluster>) -> ImportedService {
    ImportedService {
        service: key(),
        service_type: ty,
        ports: vec![http(80)],
        sources,
        conflicts: Vec::new(),
    }
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

#[test]
fn slices_carry_the_mcs_labels() {
    let eps = vec![endpoint(v4(1), true)];
    let imported = import(
        ServiceType::ClusterSetIp,
        vec![source("east", ServiceType::ClusterSetIp, 80, eps)],
    );
    let desired = desired_import(&cluster("west"), &imported);
    let derived = desired.derived_service.metadata.name.clone().unwrap();
    assert!(derived.starts_with("derived-"));
    assert_eq!(desired.slices.len(), 1);
    let meta = &desired.slices[0].metadata;
    assert_eq!(meta.name.as_deref(), Some("web-east-0"));
    assert_eq!(meta.namespace.as_deref(), Some("shop"));
    assert_eq!(label(meta, LABEL_SERVICE_NAME), Some("web"));
    assert_eq!(label(meta, LABEL_SOURCE_CLUSTER), Some("east"));
    assert_eq!(label(meta, LABEL_MANAGED_BY), Some("shoal.dev"));
    assert_eq!(label(meta, LABEL_KUBE_SERVICE_NAME), Some(derived.as_str()));
    let spec = &desired.service_import.spec;
    assert_eq!(spec.type_, "ClusterSetIP");
    assert!(spec.ips.is_empty());
    assert_eq!(spec.ports[0].port, 80);
    let status = desired.service_import.status.as_ref().unwrap();
    assert_eq!(status.clusters[0].cluster, "east");
    let svc_spec = desired.derived_service.spec.as_ref().unwrap();
    assert_eq!(svc_spec.selector, None);
    assert_eq!(svc_spec.cluster_ip, None);
}

#[test]
fn a_source_over_100_endpoints_splits_deterministically() {
    let eps: Vec<Endpoint> = (0..250).rev().map(|i| endpoint(v4(i), true)).collect();
    let imported = import(
        ServiceType::ClusterSetIp,
        vec![source("east", ServiceType::ClusterSetIp, 80, eps)],
    );
    let desired = desired_import(&cluster("west"), &imported);
    let names: Vec<_> = desired
        .slices
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["web-east-0", "web-east-1", "web-east-2"]);
    let sizes: Vec<_> = desired.slices.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(desired.slices[0].endpoints[0].addresses, ["10.0.0.0"]);
    assert_eq!(desired, desired_import(&cluster("west"), &imported));
}

#[test]
fn one_source_cluster_per_slice_and_one_family_per_slice() {
    let v6 = IpAddress::V6(std::net::Ipv6Addr::LOCALHOST.octets());
    let dual = Endpoint {
        addresses: vec![v4(9), v6],
        ..endpoint(v4(9), true)
    };
    let imported = import(
        ServiceType::ClusterSetIp,
        vec![
            source("east", ServiceType::ClusterSetIp, 80, vec![dual]),
            source(
                "west",
                ServiceType::ClusterSetIp,
                80,
                vec![endpoint(v4(2), false)],
            ),
        ],
    );
    let desired = desired_import(&cluster("west"), &imported);
    let shapes: Vec<_> = desired
        .slices
        .iter()
        .map(|s| {
            let m = &s.metadata;
            (
                m.name.clone().unwrap(),
                label(m, LABEL_SOURCE_CLUSTER).unwrap().to_owned(),
                s.address_type.clone(),
                s.endpoints[0].addresses[0].clone(),
            )
        })
        .collect();
    let expect = [
        ("web-east-0", "east", "IPv4", "10.0.0.9"),
        ("web-east-v6-0", "east", "IPv6", "::1"),
        ("web-west-0", "west", "IPv4", "10.0.0.2"),
    ];
    let expect: Vec<_> = expect
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(shapes, expect);
    let not_ready = desired.slices[2].endpoints[0].conditions.clone().unwrap();
    assert_eq!(not_ready.ready, Some(false));
    assert_eq!(not_ready.serving, Some(false));
    assert_eq!(not_ready.terminating, Some(true));
    assert_eq!(
        desired.slices[2].endpoints[0].zone.as_deref(),
        Some("zone-a")
    );
}

#[test]
fn a_headless_import_has_a_headless_derived_service() {
    let imported = import(
        ServiceType::Headless,
        vec![source(
            "east",
            ServiceType::Headless,
            80,
            vec![endpoint(v4(1), true)],
        )],
    );
    let desired = desired_import(&cluster("west"), &imported);
    assert_eq!(desired.service_import.spec.type_, "Headless");
    let spec = desired.derived_service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
}

fn kube_service(cluster_ip: Option<&str>, ports: Vec<KubeServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip.map(str::to_owned),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn kube_port(name: &str, port: i32) -> KubeServicePort {
    KubeServicePort {
        name: Some(name.into()),
        port,
        ..KubeServicePort::default()
    }
}

fn kube_export(created_s: Option<i64>) -> ServiceExport {
    ServiceExport {
        api_version: MCS_API_VERSION.into(),
        kind: "ServiceExport".into(),
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            creation_timestamp: created_s.map(|s| Time(Timestamp::from_second(s).unwrap())),
            ..ObjectMeta::default()
        },
        spec: None,
        status: None,
    }
}

fn kube_slice(
    service: &str,
    addresses: &[&str],
    conditions: Option<KubeConditions>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-abc")),
            namespace: Some("shop".into()),
            labels: Some(BTreeMap::from([(
                LABEL_KUBE_SERVICE_NAME.to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: addresses
            .iter()
            .map(|a| KubeEndpoint {
                addresses: vec![(*a).to_owned()],
                conditions: conditions.clone(),
                ..KubeEndpoint::default()
            })
            .collect(),
        ports: None,
    }
}

#[test]
fn an_export_takes_its_service_and_its_own_slices() {
    let service = kube_service(None, vec![kube_port("http", 80), kube_port("admin", 9000)]);
    let slices = [
        kube_slice("web", &["10.0.0.2", "10.0.0.1"], None),
        kube_slice("other", &["10.9.9.9"], None),
    ];
    let spec = export_spec(
        &service,
        &kube_export(Some(5)),
        &slices,
        NetworkMode::Flat,
        99,
    )
    .unwrap();
    assert_eq!(spec.service, key());
    assert_eq!(spec.export_created_ms, 5_000);
    assert_eq!(spec.service_type, ServiceType::ClusterSetIp);
    let names: Vec<_> = spec.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["admin", "http"], "sorted by name");
    assert_eq!(spec.endpoints.len(), 2);
    assert_eq!(spec.endpoints[0].addresses, [v4(1)]);
    assert!(spec.endpoints[0].conditions.ready && spec.endpoints[0].conditions.serving);
    let undated = export_spec(&service, &kube_export(None), &slices, NetworkMode::Flat, 99);
    assert_eq!(undated.unwrap().export_created_ms, 99);
}

#[test]
fn target_ports_come_from_the_slices_then_the_service_then_the_port() {
    let mut named = kube_port("http", 80);
    named.target_port = Some(IntOrString::String("web".into()));
    let mut numeric = kube_port("admin", 9000);
    numeric.target_port = Some(IntOrString::Int(9443));
    let plain = kube_port("metrics", 9100);
    let service = kube_service(None, vec![named, numeric, plain]);
    let mut slice = kube_slice("web", &["10.0.0.1"], None);
    slice.ports = Some(vec![
        EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        },
        // Another protocol under the same name resolves nothing.
        EndpointPort {
            name: Some("metrics".into()),
            port: Some(7000),
            protocol: Some("UDP".into()),
            app_protocol: None,
        },
    ]);
    let slices = [slice, kube_slice("other", &["10.9.9.9"], None)];
    let spec = export_spec(&service, &kube_export(None), &slices, NetworkMode::Flat, 1).unwrap();
    let targets: Vec<_> = spec
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.target_port))
        .collect();
    assert_eq!(
        targets,
        [
            ("admin", 9000, 9443),
            ("http", 80, 8080),
            ("metrics", 9100, 9100)
        ]
    );

    // In island mode the gateway listens on the service port.
    let island = export_spec(
        &service,
        &kube_export(None),
        &slices,
        NetworkMode::Island,
        1,
    );
    assert!(
        island
            .unwrap()
            .ports
            .iter()
            .all(|p| p.port == p.target_port)
    );

    let mut zero = kube_port("http", 80);
    zero.target_port = Some(IntOrString::Int(0));
    let err = export_spec(
        &kube_service(None, vec![zero]),
        &kube_export(None),
        &[],
        NetworkMode::Flat,
        1,
    )
    .unwrap_err();
    assert_eq!(err.reason(), "InvalidPort");
}

#[test]
fn imported_slices_carry_each_origins_target_port() {
    let port = ServicePort {
        target_port: 8080,
        ..http(80)
    };
    let east = source_with_port(
        "east",
        ServiceType::ClusterSetIp,
        port,
        vec![endpoint(v4(1), true)],
    );
    let west = source(
        "west",
        ServiceType::ClusterSetIp,
        80,
        vec![endpoint(v4(2), true)],
    );
    let both = import(ServiceType::ClusterSetIp, vec![east, west]);
    let desired = desired_import(&cluster("local"), &both);
    let port_of = |origin: &str| {
        let slice = desired
            .slices
            .iter()
            .find(|s| label(&s.metadata, LABEL_SOURCE_CLUSTER) == Some(origin))
            .unwrap();
        slice.ports.as_ref().unwrap()[0].port
    };
    assert_eq!((port_of("east"), port_of("west")), (Some(8080), Some(80)));
    assert_eq!(desired.service_import.spec.ports[0].port, 80);
}

#[test]
fn headless_externalname_and_bounds() {
    let headless = kube_service(Some("None"), vec![kube_port("http", 80)]);
    let spec = export_spec(&headless, &kube_export(None), &[], NetworkMode::Flat, 1).unwrap();
    assert_eq!(spec.service_type, ServiceType::Headless);

    let mut external = kube_service(None, Vec::new());
    external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    let err = export_spec(&external, &kube_export(None), &[], NetworkMode::Flat, 1).unwrap_err();
    assert_eq!(err.reason(), "InvalidServiceType");

    let many: Vec<_> = (0..65)
        .map(|i| kube_port(&format!("p{i}"), 1000 + i))
        .collect();
    let err = export_spec(
        &kube_service(None, many),
        &kube_export(None),
        &[],
        NetworkMode::Flat,
        1,
    )
    .unwrap_err();
    assert_eq!(err, ExportInvalid::TooManyPorts(65));

    let addresses: Vec<String> = (0..1001)
        .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
        .collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let slices = [kube_slice("web", &addresses, None)];
    let service = kube_service(None, vec![kube_port("http", 80)]);
    let err = export_spec(&service, &kube_export(None), &slices, NetworkMode::Flat, 1).unwrap_err();
    assert_eq!(err, ExportInvalid::TooManyEndpoints(1001));
    assert_eq!(err.reason(), "ExceedsLimits");
}

#[test]
fn endpoint_conditions_follow_kubernetes_defaults() {
    let terminating = KubeConditions {
        ready: Some(false),
        serving: Some(true),
        terminating: Some(true),
    };
    let slices = [kube_slice("web", &["10.0.0.1"], Some(terminating))];
    let service = kube_service(None, vec![kube_port("http", 80)]);
    let spec = export_spec(&service, &kube_export(None), &slices, NetworkMode::Flat, 1).unwrap();
    let c = spec.endpoints[0].conditions;
    assert_eq!((c.ready, c.serving, c.terminating), (false, true, true));
}

#[test]
fn island_exports_the_load_balancer_addresses() {
    let mut service = kube_service(None, vec![kube_port("http", 80)]);
    service.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some("192.0.2.7".into()),
                ..LoadBalancerIngress::default()
            }]),
        }),
        ..ServiceStatus::default()
    });
    let slices = [kube_slice("web", &["10.0.0.1"], None)];
    let spec = export_spec(
        &service,
        &kube_export(None),
        &slices,
        NetworkMode::Island,
        1,
    )
    .unwrap();
    assert_eq!(spec.endpoints.len(), 1);
    assert_eq!(spec.endpoints[0].addresses, [IpAddress::V4([192, 0, 2, 7])]);
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn a_port_conflict_is_reported_to_both_sides() {
    let mut imported = import(
        ServiceType::ClusterSetIp,
        vec![
            source("east", ServiceType::ClusterSetIp, 80, Vec::new()),
            source("west", ServiceType::ClusterSetIp, 8080, Vec::new()),
        ],
    );
    imported.conflicts = vec![Conflict {
        cluster: cluster("west"),
        kind: ConflictKind::Port {
            name: "http".into(),
        },
    }];
    let loser = export_conditions(Ok(()), Some(&imported), &cluster("west"));
    assert_eq!(find(&loser, CONDITION_VALID).status, "True");
    assert_eq!(find(&loser, CONDITION_READY).reason, "Exported");
    let conflict = find(&loser, CONDITION_CONFLICT);
    assert_eq!(
        (conflict.status.as_str(), conflict.reason.as_str()),
        ("True", "PortConflict")
    );
    assert!(
        conflict.message.contains("west on port \"http\""),
        "{}",
        conflict.message
    );
    assert!(
        conflict
            .message
            .contains("older export's definition stands")
    );
    let winner = export_conditions(Ok(()), Some(&imported), &cluster("east"));
    assert!(
        find(&winner, CONDITION_CONFLICT)
            .message
            .contains("this cluster's definition stands")
    );
}

#[test]
fn a_type_conflict_leaves_the_export_unready() {
    let mut imported = import(
        ServiceType::Headless,
        vec![source("east", ServiceType::Headless, 80, Vec::new())],
    );
    imported.conflicts = vec![Conflict {
        cluster: cluster("west"),
        kind: ConflictKind::Type {
            exported: ServiceType::ClusterSetIp,
            imported: ServiceType::Headless,
        },
    }];
    let conditions = export_conditions(Ok(()), Some(&imported), &cluster("west"));
    assert_eq!(find(&conditions, CONDITION_READY).reason, "TypeConflict");
    assert_eq!(find(&conditions, CONDITION_CONFLICT).reason, "TypeConflict");
}

#[test]
fn invalid_and_pending_exports() {
    let invalid = ExportInvalid::ServiceType("ExternalName".into());
    let conditions = export_conditions(Err(&invalid), None, &cluster("east"));
    let valid = find(&conditions, CONDITION_VALID);
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "InvalidServiceType")
    );
    assert_eq!(find(&conditions, CONDITION_READY).status, "False");

    let pending = export_conditions(Ok(()), None, &cluster("east"));
    assert_eq!(find(&pending, CONDITION_READY).reason, "Pending");
    assert_eq!(find(&pending, CONDITION_CONFLICT).status, "Unknown");

    let clean = import(
        ServiceType::ClusterSetIp,
        vec![source("east", ServiceType::ClusterSetIp, 80, Vec::new())],
    );
    let ok = export_conditions(Ok(()), Some(&clean), &cluster("east"));
    assert_eq!(find(&ok, CONDITION_CONFLICT).reason, "NoConflicts");
}

#[test]
fn transitions_keep_their_time_while_the_status_holds() {
    let mut first = export_conditions(Ok(()), None, &cluster("east"));
    stamp_transitions(&[], &mut first, 10_000);
    assert!(
        first
            .iter()
            .all(|c| c.last_transition_time.0.as_second() == 10)
    );
    let clean = import(
        ServiceType::ClusterSetIp,
        vec![source("east", ServiceType::ClusterSetIp, 80, Vec::new())],
    );
    let mut second = export_conditions(Ok(()), Some(&clean), &cluster("east"));
    stamp_transitions(&first, &mut second, 20_000);
    assert_eq!(
        find(&second, CONDITION_VALID)
            .last_transition_time
            .0
            .as_second(),
        10
    );
    assert_eq!(
        find(&second, CONDITION_READY)
            .last_transition_time
            .0
            .as_second(),
        20
    );
}
