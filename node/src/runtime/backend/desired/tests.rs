use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
use shoal_proto::{ClusterKey, ExportRecord};

use super::super::objects::ServiceExportSpec;

use super::*;
use crate::core::{Conflict, ImportedCluster, TrafficReason};

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
        properties: ServiceProperties::default(),
        tombstone: false,
    };
    let signed = ClusterKey::from_seed(origin, [7; 32]).sign_unchecked(record);
    ImportedCluster {
        record: Arc::new(signed),
        active: true,
    }
}

fn import(ty: ServiceType, sources: Vec<ImportedCluster>) -> ImportedService {
    ImportedService {
        service: key(),
        service_type: ty,
        ports: vec![http(80)],
        properties: ServiceProperties::default(),
        sources: sources.into(),
        conflicts: Vec::new().into(),
        traffic: TrafficReason::AllOrigins,
    }
}

/// The endpoints of a slice (Kubernetes makes the list optional).
fn endpoints_of(slice: &EndpointSlice) -> &[KubeEndpoint] {
    slice.endpoints.as_deref().unwrap_or_default()
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
    let sizes: Vec<_> = desired
        .slices
        .iter()
        .map(|s| endpoints_of(s).len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(endpoints_of(&desired.slices[0])[0].addresses, ["10.0.0.0"]);
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
                endpoints_of(s)[0].addresses[0].clone(),
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
    let not_ready = endpoints_of(&desired.slices[2])[0]
        .conditions
        .clone()
        .unwrap();
    assert_eq!(not_ready.ready, Some(false));
    assert_eq!(not_ready.serving, Some(false));
    assert_eq!(not_ready.terminating, Some(true));
    assert_eq!(
        endpoints_of(&desired.slices[2])[0].zone.as_deref(),
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
        endpoints: Some(
            addresses
                .iter()
                .map(|a| KubeEndpoint {
                    addresses: vec![(*a).to_owned()],
                    conditions: conditions.clone(),
                    ..KubeEndpoint::default()
                })
                .collect(),
        ),
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
    }]
    .into();
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
    }]
    .into();
    let conditions = export_conditions(Ok(()), Some(&imported), &cluster("west"));
    let ready = find(&conditions, CONDITION_READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Failed")
    );
    assert!(
        ready.message.contains("another service type"),
        "{}",
        ready.message
    );
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
    let ready = find(&conditions, CONDITION_READY);
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Failed")
    );
    assert_eq!(
        ready.message,
        "the export is invalid: Service type ExternalName cannot be exported"
    );

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

// ----- the properties: IP families, session affinity, traffic, exported metadata -----

fn properties() -> ServiceProperties {
    ServiceProperties {
        ip_families: vec![IpFamily::Ipv6, IpFamily::Ipv4],
        session_affinity: SessionAffinity::ClientIp,
        client_ip_timeout_seconds: Some(3_600),
        internal_traffic_policy: Some(InternalTrafficPolicy::Local),
        traffic_distribution: Some("PreferClose".into()),
        exported_labels: BTreeMap::from([
            ("tier".to_owned(), "backend".to_owned()),
            // Shoal's own label is not Shoal's to give away.
            (LABEL_SERVICE_NAME.to_owned(), "spoofed".to_owned()),
        ]),
        exported_annotations: BTreeMap::from([
            ("example.com/owner".to_owned(), "shop team".to_owned()),
            (ANNOTATION_WRITTEN_BY.to_owned(), "spoofed".to_owned()),
        ]),
        affinity: Affinity::Local,
    }
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_service_import_carries_the_oldest_exports_properties_exactly() {
    let mut imported = import(
        ServiceType::ClusterSetIp,
        vec![source("east", ServiceType::ClusterSetIp, 80, Vec::new())],
    );
    imported.properties = properties();
    imported.traffic = TrafficReason::LocalFailover;
    let desired = desired_import(&cluster("west"), &imported);
    let expected = ServiceImport {
        api_version: "multicluster.x-k8s.io/v1beta1".into(),
        kind: "ServiceImport".into(),
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            labels: Some(strings(&[
                ("multicluster.kubernetes.io/service-name", "web"),
                ("tier", "backend"),
            ])),
            annotations: Some(strings(&[
                ("example.com/owner", "shop team"),
                ("shoal.dev/active-clusters", "east"),
                ("shoal.dev/traffic", "local-failover"),
                ("shoal.dev/written-by", "west"),
            ])),
            ..ObjectMeta::default()
        },
        spec: ServiceImportSpec {
            type_: "ClusterSetIP".into(),
            ports: vec![ServiceImportPort {
                name: "http".into(),
                protocol: "TCP".into(),
                app_protocol: None,
                port: 80,
            }],
            ips: Vec::new(),
            ip_families: vec!["IPv6".into(), "IPv4".into()],
            session_affinity: Some("ClientIP".into()),
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIpConfig {
                    timeout_seconds: Some(3_600),
                }),
            }),
            internal_traffic_policy: Some("Local".into()),
            traffic_distribution: Some("PreferClose".into()),
        },
        status: Some(ServiceImportStatus {
            clusters: vec![ClusterStatus {
                cluster: "east".into(),
            }],
        }),
    };
    assert_eq!(desired.service_import, expected);
    // The field names are the CRD's.
    let json = serde_json::to_value(&desired.service_import.spec).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "ClusterSetIP",
            "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
            "ipFamilies": ["IPv6", "IPv4"],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 3600}},
            "internalTrafficPolicy": "Local",
            "trafficDistribution": "PreferClose",
        })
    );
}

#[test]
fn the_derived_service_carries_the_properties_a_service_has() {
    let mut imported = import(
        ServiceType::ClusterSetIp,
        vec![source("east", ServiceType::ClusterSetIp, 80, Vec::new())],
    );
    imported.properties = properties();
    let desired = desired_import(&cluster("west"), &imported);
    let name = derived_service_name(&key());
    let expected = Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some("shop".into()),
            labels: Some(strings(&[(
                "multicluster.kubernetes.io/service-name",
                "web",
            )])),
            annotations: Some(strings(&[("shoal.dev/written-by", "west")])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(vec![KubeServicePort {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
                ..KubeServicePort::default()
            }]),
            ip_families: Some(vec!["IPv6".into(), "IPv4".into()]),
            ip_family_policy: Some("RequireDualStack".into()),
            session_affinity: Some("ClientIP".into()),
            session_affinity_config: Some(KubeSessionAffinityConfig {
                client_ip: Some(KubeClientIpConfig {
                    timeout_seconds: Some(3_600),
                }),
            }),
            internal_traffic_policy: Some("Local".into()),
            traffic_distribution: Some("PreferClose".into()),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    assert_eq!(desired.derived_service, expected);

    // One family: single-stack. None named: the API server chooses. No affinity: None
    // and no config.
    imported.properties = ServiceProperties {
        ip_families: vec![IpFamily::Ipv4],
        ..ServiceProperties::default()
    };
    let spec = desired_import(&cluster("west"), &imported)
        .derived_service
        .spec
        .unwrap();
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_owned()]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.session_affinity_config, None);
    assert_eq!(spec.internal_traffic_policy, None);
    imported.properties = ServiceProperties::default();
    let desired = desired_import(&cluster("west"), &imported);
    let spec = desired.derived_service.spec.unwrap();
    assert_eq!((spec.ip_families, spec.ip_family_policy), (None, None));
    let import_spec = desired.service_import.spec;
    assert!(import_spec.ip_families.is_empty());
    assert_eq!(import_spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(import_spec.session_affinity_config, None);
    let meta = desired.service_import.metadata;
    assert_eq!(
        meta.labels,
        Some(strings(&[(
            "multicluster.kubernetes.io/service-name",
            "web"
        )]))
    );
}

fn export_with(spec: ServiceExportSpec) -> ServiceExport {
    ServiceExport {
        spec: Some(spec),
        ..kube_export(None)
    }
}

#[test]
fn an_export_reads_the_services_properties_and_the_exported_metadata() {
    let mut service = kube_service(Some("10.96.0.7"), vec![kube_port("http", 80)]);
    {
        let spec = service.spec.as_mut().unwrap();
        spec.cluster_ips = Some(vec!["fd00::7".into(), "10.96.0.7".into()]);
        spec.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config = Some(KubeSessionAffinityConfig {
            client_ip: Some(KubeClientIpConfig {
                timeout_seconds: Some(3_600),
            }),
        });
        spec.internal_traffic_policy = Some("Local".into());
        spec.traffic_distribution = Some("PreferClose".into());
    }
    let export = export_with(ServiceExportSpec {
        exported_labels: strings(&[("tier", "backend")]),
        exported_annotations: strings(&[("example.com/owner", "shop team")]),
    });
    let spec = export_spec(&service, &export, &[], NetworkMode::Flat, 1).unwrap();
    assert_eq!(
        spec.properties,
        ServiceProperties {
            ip_families: vec![IpFamily::Ipv6, IpFamily::Ipv4],
            session_affinity: SessionAffinity::ClientIp,
            client_ip_timeout_seconds: Some(3_600),
            internal_traffic_policy: Some(InternalTrafficPolicy::Local),
            traffic_distribution: Some("PreferClose".into()),
            exported_labels: strings(&[("tier", "backend")]),
            exported_annotations: strings(&[("example.com/owner", "shop team")]),
            affinity: Affinity::None,
        }
    );
}

#[test]
fn unset_properties_take_the_api_servers_defaults() {
    let read = |change: &dyn Fn(&mut ServiceSpec)| {
        let mut service = kube_service(None, vec![kube_port("http", 80)]);
        change(service.spec.as_mut().unwrap());
        export_spec(&service, &kube_export(None), &[], NetworkMode::Flat, 1).map(|s| s.properties)
    };
    assert_eq!(
        read(&|_| {}).unwrap(),
        ServiceProperties {
            internal_traffic_policy: Some(InternalTrafficPolicy::Cluster),
            ..ServiceProperties::default()
        },
        "affinity None, policy Cluster, no families named and no IP to infer them from"
    );
    let client_ip = read(&|s| s.session_affinity = Some("ClientIP".into())).unwrap();
    assert_eq!(
        (
            client_ip.session_affinity,
            client_ip.client_ip_timeout_seconds
        ),
        (SessionAffinity::ClientIp, Some(10_800))
    );
    // The API server drops a config without ClientIP affinity; so does Shoal.
    let dropped = read(&|s| {
        s.session_affinity = Some("None".into());
        s.session_affinity_config = Some(KubeSessionAffinityConfig::default());
    })
    .unwrap();
    assert_eq!(dropped.client_ip_timeout_seconds, None);
    // Families from the cluster IPs, in order, when the Service names none.
    let single = read(&|s| s.cluster_ip = Some("10.96.0.7".into())).unwrap();
    assert_eq!(single.ip_families, [IpFamily::Ipv4]);
    let dual = read(&|s| s.cluster_ips = Some(vec!["fd00::7".into(), "10.96.0.7".into()])).unwrap();
    assert_eq!(dual.ip_families, [IpFamily::Ipv6, IpFamily::Ipv4]);
    let headless = read(&|s| s.cluster_ip = Some("None".into())).unwrap();
    assert!(headless.ip_families.is_empty());
}

#[test]
fn properties_the_api_server_would_refuse_make_the_export_invalid() {
    type Change = fn(&mut ServiceSpec);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "sessionAffinity",
            |s| s.session_affinity = Some("Sticky".into()),
            "InvalidServiceSpec",
        ),
        (
            "ipFamilies",
            |s| s.ip_families = Some(vec!["IPv5".into()]),
            "InvalidServiceSpec",
        ),
        (
            "duplicate ipFamilies",
            |s| s.ip_families = Some(vec!["IPv4".into(), "IPv4".into()]),
            "InvalidServiceSpec",
        ),
        (
            "clusterIPs",
            |s| s.cluster_ip = Some("ten".into()),
            "InvalidServiceSpec",
        ),
        (
            "internalTrafficPolicy",
            |s| s.internal_traffic_policy = Some("Node".into()),
            "InvalidServiceSpec",
        ),
        (
            "a zero timeout",
            |s| {
                s.session_affinity = Some("ClientIP".into());
                s.session_affinity_config = Some(KubeSessionAffinityConfig {
                    client_ip: Some(KubeClientIpConfig {
                        timeout_seconds: Some(0),
                    }),
                });
            },
            "InvalidServiceSpec",
        ),
        (
            "a timeout over a day",
            |s| {
                s.session_affinity = Some("ClientIP".into());
                s.session_affinity_config = Some(KubeSessionAffinityConfig {
                    client_ip: Some(KubeClientIpConfig {
                        timeout_seconds: Some(86_401),
                    }),
                });
            },
            "InvalidServiceSpec",
        ),
        (
            "a negative timeout",
            |s| {
                s.session_affinity = Some("ClientIP".into());
                s.session_affinity_config = Some(KubeSessionAffinityConfig {
                    client_ip: Some(KubeClientIpConfig {
                        timeout_seconds: Some(-1),
                    }),
                });
            },
            "InvalidServiceSpec",
        ),
        (
            "a long traffic distribution",
            |s| s.traffic_distribution = Some("P".repeat(64)),
            "ExceedsLimits",
        ),
    ];
    for (what, change, reason) in cases {
        let mut service = kube_service(None, vec![kube_port("http", 80)]);
        change(service.spec.as_mut().unwrap());
        let err = export_spec(&service, &kube_export(None), &[], NetworkMode::Flat, 1).unwrap_err();
        assert_eq!(err.reason(), reason, "{what}: {err}");
    }

    let service = kube_service(None, vec![kube_port("http", 80)]);
    let exported = |labels: BTreeMap<String, String>, annotations: BTreeMap<String, String>| {
        let export = export_with(ServiceExportSpec {
            exported_labels: labels,
            exported_annotations: annotations,
        });
        export_spec(&service, &export, &[], NetworkMode::Flat, 1).unwrap_err()
    };
    let bad_key = exported(strings(&[("-tier", "backend")]), BTreeMap::new());
    assert_eq!(bad_key.reason(), "InvalidExportedMetadata");
    assert!(bad_key.to_string().contains("\"-tier\""), "{bad_key}");
    let bad_value = exported(strings(&[("tier", "back end")]), BTreeMap::new());
    assert_eq!(bad_value.reason(), "InvalidExportedMetadata");
    assert_eq!(bad_value.metric_label(), "invalid_exported_metadata");
    let many: BTreeMap<String, String> =
        (0..65).map(|i| (format!("l{i}"), String::new())).collect();
    let too_many = exported(many, BTreeMap::new());
    assert_eq!(
        too_many,
        ExportInvalid::Properties(RecordError::TooManyLabels(65))
    );
    assert_eq!(too_many.reason(), "ExceedsLimits");
    let big = strings(&[("note", &"x".repeat(16 * 1024))]);
    let too_big = exported(BTreeMap::new(), big);
    assert_eq!(too_big.reason(), "ExceedsLimits");
    assert_eq!(too_big.metric_label(), "properties_exceed_limits");
}

#[test]
fn conflict_reasons_are_the_mcs_ones_in_their_order_on_every_export() {
    let mut imported = import(
        ServiceType::ClusterSetIp,
        vec![
            source("east", ServiceType::ClusterSetIp, 80, Vec::new()),
            source("north", ServiceType::ClusterSetIp, 80, Vec::new()),
            source("west", ServiceType::ClusterSetIp, 80, Vec::new()),
        ],
    );
    let conflict = |cluster_name: &str, kind: ConflictKind| Conflict {
        cluster: cluster(cluster_name),
        kind,
    };
    imported.conflicts = vec![
        conflict("north", ConflictKind::IpFamily),
        conflict("north", ConflictKind::Labels),
        conflict(
            "west",
            ConflictKind::Port {
                name: "http".into(),
            },
        ),
        conflict("west", ConflictKind::SessionAffinity),
        conflict("west", ConflictKind::SessionAffinityConfig),
        conflict("west", ConflictKind::InternalTrafficPolicy),
        conflict("west", ConflictKind::TrafficDistribution),
        conflict("west", ConflictKind::Annotations),
        conflict("west", ConflictKind::Labels),
    ]
    .into();
    let expected = "PortConflict,SessionAffinityConflict,SessionAffinityConfigConflict,\
                    LabelsConflict,AnnotationsConflict,InternalTrafficPolicyConflict,\
                    TrafficDistributionConflict,IPFamilyConflict";
    for (local, standing) in [
        (
            "west",
            "an older export's definition stands over this cluster's",
        ),
        (
            "north",
            "an older export's definition stands over this cluster's",
        ),
        (
            "east",
            "this cluster's definition stands (the oldest export wins)",
        ),
    ] {
        let conditions = export_conditions(Ok(()), Some(&imported), &cluster(local));
        let c = find(&conditions, CONDITION_CONFLICT);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", expected),
            "{local}"
        );
        assert!(c.message.ends_with(standing), "{local}: {}", c.message);
        assert_eq!(
            find(&conditions, CONDITION_READY).reason,
            "Exported",
            "{local}"
        );
    }
    let east = export_conditions(Ok(()), Some(&imported), &cluster("east"));
    let message = &find(&east, CONDITION_CONFLICT).message;
    assert!(
        message.starts_with(
            "conflicting exports: north on IP families, north on exported labels, \
             west on port \"http\", west on session affinity, west on session affinity config, "
        ),
        "{message}"
    );

    // However many clusters conflict, the message names a bounded number of them.
    imported.conflicts = (0..100)
        .map(|i| conflict(&format!("c{i}"), ConflictKind::Annotations))
        .collect();
    let conditions = export_conditions(Ok(()), Some(&imported), &cluster("east"));
    let c = find(&conditions, CONDITION_CONFLICT);
    assert_eq!(c.reason, "AnnotationsConflict");
    assert!(c.message.contains(", and 84 more;"), "{}", c.message);
    assert!(c.message.len() < 1_000);
}

// ----- traffic policy: the affinity annotation -----

fn annotated(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(strings(pairs))
}

#[test]
fn the_affinity_comes_from_the_export_then_the_service_shoals_annotation_first() {
    let read = |export: &[(&str, &str)], service: &[(&str, &str)]| {
        let mut kube = kube_service(None, vec![kube_port("http", 80)]);
        kube.metadata.annotations = annotated(service);
        let mut exported = kube_export(None);
        exported.metadata.annotations = annotated(export);
        export_spec(&kube, &exported, &[], NetworkMode::Flat, 1).map(|s| s.properties.affinity)
    };
    assert_eq!(read(&[], &[]).unwrap(), Affinity::None);
    let cilium = [("service.cilium.io/affinity", "remote")];
    assert_eq!(read(&[], &cilium).unwrap(), Affinity::Remote);
    let both = [
        ("service.cilium.io/affinity", "remote"),
        ("shoal.dev/affinity", "nearest"),
    ];
    assert_eq!(read(&[], &both).unwrap(), Affinity::Nearest);
    // The ServiceExport's annotation beats the Service's.
    let local = [("shoal.dev/affinity", "local")];
    assert_eq!(read(&local, &both).unwrap(), Affinity::Local);
}

#[test]
fn an_unknown_affinity_makes_the_export_invalid_with_its_own_reason() {
    let mut kube = kube_service(None, vec![kube_port("http", 80)]);
    kube.metadata.annotations = annotated(&[("shoal.dev/affinity", "Local")]);
    let error = export_spec(&kube, &kube_export(None), &[], NetworkMode::Flat, 1).unwrap_err();
    assert_eq!(
        error,
        ExportInvalid::Affinity {
            annotation: "shoal.dev/affinity",
            value: "Local".into(),
        }
    );
    assert_eq!(error.reason(), "InvalidAffinity");
    assert_eq!(error.metric_label(), "invalid_affinity");
    assert_eq!(
        error.to_string(),
        "annotation shoal.dev/affinity: \"Local\" is not none, local, remote or nearest"
    );
}

#[test]
fn only_active_origins_get_slices_and_the_import_says_which_and_why() {
    let mut sources = vec![
        source(
            "east",
            ServiceType::ClusterSetIp,
            80,
            vec![endpoint(v4(1), true)],
        ),
        source(
            "west",
            ServiceType::ClusterSetIp,
            80,
            vec![endpoint(v4(2), true)],
        ),
    ];
    sources[1].active = false;
    let mut imported = import(ServiceType::ClusterSetIp, sources);
    imported.properties.affinity = Affinity::Local;
    imported.traffic = TrafficReason::Local;
    let desired = desired_import(&cluster("east"), &imported);
    let slices: Vec<_> = desired
        .slices
        .iter()
        .map(|s| s.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(slices, ["web-east-0"]);
    let status = desired.service_import.status.as_ref().unwrap();
    let listed: Vec<_> = status.clusters.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(listed, ["east", "west"], "every origin stays listed");
    let annotations = desired
        .service_import
        .metadata
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(annotations[ANNOTATION_TRAFFIC], "local");
    assert_eq!(annotations[ANNOTATION_ACTIVE_CLUSTERS], "east");

    // Affinity `none` (the default) adds no annotation.
    imported.properties.affinity = Affinity::None;
    let desired = desired_import(&cluster("east"), &imported);
    let annotations = desired.service_import.metadata.annotations.unwrap();
    assert!(!annotations.contains_key(ANNOTATION_TRAFFIC));
}

#[test]
fn the_active_clusters_annotation_names_a_bounded_number() {
    let sources: Vec<_> = (0..ACTIVE_NAMED_MAX + 3)
        .map(|i| {
            source(
                &format!("c{i:03}"),
                ServiceType::ClusterSetIp,
                80,
                Vec::new(),
            )
        })
        .collect();
    let mut imported = import(ServiceType::ClusterSetIp, sources);
    imported.properties.affinity = Affinity::Remote;
    let value = active_clusters(&imported);
    assert!(value.starts_with("c000,c001,"), "{value}");
    assert!(value.ends_with(",c031,+3"), "{value}");
}
