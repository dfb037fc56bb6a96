//! Fixtures shared by the proto integration tests: fixed ids, keys and records.
//!
//! Every test binary includes this module but uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use shoal_proto::{
    ClusterId, ClusterKey, Endpoint, EndpointConditions, ExportRecord, InternalTrafficPolicy,
    IpAddress, IpFamily, KeyRing, NetworkMode, PortProtocol, ServiceKey, ServicePort,
    ServiceProperties, ServiceType, SessionAffinity, SignedRecord,
};

pub fn cluster(name: &str) -> ClusterId {
    ClusterId::new(name).expect("fixture cluster ids are valid")
}

pub fn service(namespace: &str, name: &str) -> ServiceKey {
    ServiceKey::new(namespace, name).expect("fixture service keys are valid")
}

/// The key of `origin`, derived from a fixed seed so that signatures are reproducible.
pub fn key(origin: &str, seed: u8) -> ClusterKey {
    ClusterKey::from_seed(cluster(origin), [seed; 32])
}

pub fn ring(keys: &[&ClusterKey]) -> KeyRing {
    let mut ring = KeyRing::new();
    for key in keys {
        ring.insert(key.cluster().clone(), key.public())
            .expect("fixture keys are strong");
    }
    ring
}

/// Typical properties: dual-stack, ClientIP affinity, one label and one annotation.
pub fn properties() -> ServiceProperties {
    ServiceProperties {
        ip_families: vec![IpFamily::Ipv4, IpFamily::Ipv6],
        session_affinity: SessionAffinity::ClientIp,
        client_ip_timeout_seconds: Some(10_800),
        internal_traffic_policy: Some(InternalTrafficPolicy::Cluster),
        traffic_distribution: Some("PreferClose".to_owned()),
        exported_labels: BTreeMap::from([("app.kubernetes.io/name".to_owned(), "api".to_owned())]),
        exported_annotations: BTreeMap::from([(
            "example.com/owner".to_owned(),
            "payments team".to_owned(),
        )]),
        affinity: shoal_proto::Affinity::Local,
    }
}

/// A typical record: two ports, one IPv4 endpoint and one dual-stack endpoint.
pub fn record(origin: &str, version: u64) -> ExportRecord {
    ExportRecord {
        origin: cluster(origin),
        service: service("payments", "api"),
        version,
        export_created_ms: 1_700_000_000_000,
        published_ms: 0,
        service_type: ServiceType::ClusterSetIp,
        ports: vec![
            ServicePort {
                name: "http".to_owned(),
                protocol: PortProtocol::Tcp,
                port: 8080,
                target_port: 8080,
                app_protocol: Some("http".to_owned()),
            },
            ServicePort {
                name: "dns".to_owned(),
                protocol: PortProtocol::Udp,
                port: 53,
                target_port: 53,
                app_protocol: None,
            },
        ],
        endpoints: vec![
            Endpoint {
                addresses: vec![IpAddress::V4([10, 0, 0, 1])],
                conditions: EndpointConditions {
                    ready: true,
                    serving: true,
                    terminating: false,
                },
                zone: Some("zone-a".to_owned()),
                hostname: None,
            },
            Endpoint {
                addresses: vec![
                    IpAddress::V4([10, 0, 0, 2]),
                    IpAddress::V6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
                ],
                conditions: EndpointConditions {
                    ready: false,
                    serving: true,
                    terminating: true,
                },
                zone: None,
                hostname: Some("api-1".to_owned()),
            },
        ],
        network: NetworkMode::Flat,
        properties: properties(),
        tombstone: false,
    }
}

/// `record(origin, version)` signed by `key`, which must belong to `origin`.
pub fn signed(key: &ClusterKey, version: u64) -> SignedRecord {
    key.sign(record(key.cluster().as_str(), version))
        .expect("fixture records are valid and signed by their origin")
        .into_inner()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "hex text has an odd length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digits"))
        .collect()
}
