//! The import index against a naive derivation, written here and only here: every
//! export looked at again on each change, exactly as the MCS rules read.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use shoal_proto::{
    ClusterKey, Endpoint, EndpointConditions, ExportRecord, IpAddress, NetworkMode, PortProtocol,
};

use super::*;

/// Every cluster the tests sign for.
const CLUSTERS: [&str; 13] = [
    "a", "b", "c", "c0", "c1", "o0", "o1", "o2", "o3", "o4", "o5", "o6", "o7",
];

fn ids() -> OriginIds {
    let mut ring = KeyRing::new();
    for name in CLUSTERS {
        let cluster = ClusterId::new(name).unwrap();
        let key = ClusterKey::from_seed(cluster.clone(), [1; 32]);
        ring.insert(cluster, key.public()).unwrap();
    }
    OriginIds::new(&ring)
}

/// The index after putting `records` in the order given.
fn index_of(ids: &OriginIds, records: &[&Arc<SignedRecord>]) -> ServiceIndex {
    let mut index = ServiceIndex::new(records[0].record.service.clone());
    let mut changes = SourceChanges::default();
    for record in records {
        let id = ids.id(&record.record.origin).unwrap();
        index.put(ids, id, record, &mut changes);
    }
    index
}

fn indexed(records: &[&Arc<SignedRecord>]) -> ImportedService {
    index_of(&ids(), records).import().unwrap()
}

fn record(origin: &str, created: u64, ty: ServiceType, port: u16) -> Arc<SignedRecord> {
    record_targeting(origin, created, ty, port, port)
}

fn record_targeting(
    origin: &str,
    created: u64,
    ty: ServiceType,
    port: u16,
    target_port: u16,
) -> Arc<SignedRecord> {
    let cluster = ClusterId::new(origin).unwrap();
    let record = ExportRecord {
        origin: cluster,
        service: ServiceKey::new("default", "web").unwrap(),
        version: 1,
        export_created_ms: created,
        published_ms: 0,
        service_type: ty,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: PortProtocol::Tcp,
            port,
            target_port,
            app_protocol: None,
        }],
        endpoints: vec![Endpoint {
            addresses: vec![IpAddress::V4([10, 0, 0, created as u8])],
            conditions: EndpointConditions {
                ready: true,
                serving: true,
                terminating: false,
            },
            zone: None,
            hostname: None,
        }],
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
        tombstone: false,
    };
    unsigned(record)
}

/// The index never verifies: unsigned records keep the tests fast.
fn unsigned(record: ExportRecord) -> Arc<SignedRecord> {
    Arc::new(SignedRecord {
        record,
        signature: [0; 64],
    })
}

fn with_properties(
    record: &Arc<SignedRecord>,
    change: impl FnOnce(&mut ServiceProperties),
) -> Arc<SignedRecord> {
    let mut record = record.record.clone();
    change(&mut record.properties);
    unsigned(record)
}

/// The MCS conformance suite's pair: c0 exports tcp/42 and udp/42, c1 tcp/42 and
/// sctp/142. The import is the union, and each export lacking a union port is in
/// conflict; the incremental path defers to the full derivation.
#[test]
fn a_port_one_export_lacks_is_in_the_union_and_a_conflict_on_it() {
    let port = |name: &str, protocol, number| ServicePort {
        name: name.into(),
        protocol,
        port: number,
        target_port: number,
        app_protocol: None,
    };
    let with_ports = |origin: &str, created, ports: Vec<ServicePort>| {
        let mut record = record(origin, created, ServiceType::ClusterSetIp, 42)
            .record
            .clone();
        record.ports = ports;
        unsigned(record)
    };
    let a = with_ports(
        "c0",
        10,
        vec![
            port("tcp", PortProtocol::Tcp, 42),
            port("udp", PortProtocol::Udp, 42),
        ],
    );
    let b = with_ports(
        "c1",
        20,
        vec![
            port("sctp", PortProtocol::Sctp, 142),
            port("tcp", PortProtocol::Tcp, 42),
        ],
    );
    let service = a.record.service.clone();
    let import = indexed(&[&a, &b]);
    let names: Vec<&str> = import.ports.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sctp", "tcp", "udp"]);
    let conflicts: Vec<(&str, String)> = import
        .conflicts
        .iter()
        .map(|c| (c.cluster.as_str(), c.kind.to_string()))
        .collect();
    assert_eq!(
        conflicts,
        [
            ("c0", "port \"sctp\"".to_owned()),
            ("c1", "port \"udp\"".to_owned())
        ]
    );
    assert!(indexed(&[&a]).conflicts.is_empty());
    assert_eq!(
        indexed(&[&b, &a]),
        import,
        "the order of arrival does not matter"
    );
    assert_eq!(derive(&service, [&a, &b]).unwrap(), import);
}

#[test]
fn union_of_clusters_with_the_oldest_port_winning() {
    let a = record("a", 20, ServiceType::ClusterSetIp, 80);
    let b = record("b", 10, ServiceType::ClusterSetIp, 8080);
    let import = indexed(&[&a, &b]);
    let origins: Vec<_> = import
        .sources
        .iter()
        .map(|s| s.cluster().as_str())
        .collect();
    assert_eq!(origins, ["a", "b"]);
    assert_eq!(import.ports.len(), 1);
    assert_eq!(import.ports[0].port, 8080, "b's export is older");
    assert_eq!(
        import.conflicts.to_vec(),
        vec![Conflict {
            cluster: a.record.origin.clone(),
            kind: ConflictKind::Port {
                name: "http".into()
            }
        }]
    );
}

#[test]
fn origins_may_target_different_ports_without_a_conflict() {
    let a = record_targeting("a", 5, ServiceType::ClusterSetIp, 80, 8080);
    let b = record_targeting("b", 10, ServiceType::ClusterSetIp, 80, 9090);
    let import = indexed(&[&a, &b]);
    assert!(import.conflicts.is_empty(), "{:?}", import.conflicts);
    assert_eq!(import.sources.len(), 2);
    assert_eq!(
        import.ports, a.record.ports,
        "the oldest export's target port"
    );
}

#[test]
fn a_type_conflict_leaves_the_younger_export_out() {
    let a = record("a", 5, ServiceType::Headless, 80);
    let b = record("b", 10, ServiceType::ClusterSetIp, 80);
    let import = indexed(&[&a, &b]);
    assert_eq!(import.service_type, ServiceType::Headless);
    assert!(import.exports_from(&a.record.origin));
    assert!(!import.exports_from(&b.record.origin));
    assert_eq!(import.conflicts.len(), 1);
}

#[test]
fn property_conflicts_keep_the_endpoints_and_the_oldest_values() {
    use shoal_proto::{InternalTrafficPolicy, IpFamily, SessionAffinity};
    let a = with_properties(&record("a", 5, ServiceType::ClusterSetIp, 80), |p| {
        p.ip_families = vec![IpFamily::Ipv4];
        p.session_affinity = SessionAffinity::ClientIp;
        p.client_ip_timeout_seconds = Some(60);
        p.exported_labels.insert("tier".into(), "web".into());
    });
    let b = with_properties(&record("b", 10, ServiceType::ClusterSetIp, 80), |p| {
        p.ip_families = vec![IpFamily::Ipv6];
        p.internal_traffic_policy = Some(InternalTrafficPolicy::Local);
        p.traffic_distribution = Some("PreferClose".into());
        p.exported_annotations.insert("note".into(), "b".into());
    });
    let c = with_properties(&record("c", 20, ServiceType::ClusterSetIp, 80), |p| {
        *p = a.record.properties.clone();
    });
    let service = a.record.service.clone();
    let import = indexed(&[&a, &b, &c]);
    assert_eq!(
        import.properties, a.record.properties,
        "a's export is oldest"
    );
    assert_eq!(
        import.sources.len(),
        3,
        "no property conflict leaves one out"
    );
    let kinds: Vec<_> = import
        .conflicts
        .iter()
        .map(|c| (c.cluster.as_str(), c.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("b", ConflictKind::IpFamily),
            ("b", ConflictKind::SessionAffinity),
            ("b", ConflictKind::SessionAffinityConfig),
            ("b", ConflictKind::InternalTrafficPolicy),
            ("b", ConflictKind::TrafficDistribution),
            ("b", ConflictKind::Labels),
            ("b", ConflictKind::Annotations),
        ]
    );
    // A younger export that joins last makes the same import.
    assert_eq!(indexed(&[&a, &c, &b]), import);
    // A property change of a younger export puts it in conflict.
    let ids = ids();
    let mut index = index_of(&ids, &[&a, &b, &c]);
    let c2 = with_properties(&c, |p| p.exported_labels.clear());
    let mut changes = SourceChanges::default();
    index.put(&ids, ids.id(&c2.record.origin).unwrap(), &c2, &mut changes);
    let import = index.import().unwrap();
    assert_eq!(import, derive(&service, [&a, &b, &c2]).unwrap());
    assert!(import.conflicts.iter().any(|x| x.cluster.as_str() == "c"));
    assert_eq!(changes.updated.len(), 1);
}

#[test]
fn no_live_export_means_no_import() {
    let a = record("a", 5, ServiceType::Headless, 80);
    let ids = ids();
    let mut index = index_of(&ids, &[&a]);
    let mut changes = SourceChanges::default();
    index.remove(&ids, ids.id(&a.record.origin).unwrap(), &mut changes);
    assert_eq!(index.import(), None);
    assert_eq!(changes.lost.len(), 1);
}

// ----- the naive derivation -----

/// A record's age for the MCS conflict rule.
fn age(record: &SignedRecord) -> (u64, &ClusterId) {
    (record.record.export_created_ms, &record.record.origin)
}

fn derive<'a>(
    service: &ServiceKey,
    records: impl IntoIterator<Item = &'a Arc<SignedRecord>>,
) -> Option<ImportedService> {
    let exports: Vec<&Arc<SignedRecord>> = records
        .into_iter()
        .filter(|r| !r.record.tombstone)
        .collect();
    debug_assert!(
        exports
            .windows(2)
            .all(|w| w[0].record.origin < w[1].record.origin)
    );
    let oldest = exports.iter().min_by(|a, b| age(a).cmp(&age(b)))?;
    let service_type = oldest.record.service_type;
    let properties = &oldest.record.properties;
    let same_type = || {
        exports
            .iter()
            .filter(|r| r.record.service_type == service_type)
    };
    let mut winners: BTreeMap<&str, (&ServicePort, (u64, &ClusterId))> = BTreeMap::new();
    for signed in same_type() {
        for port in &signed.record.ports {
            let candidate = (port, age(signed));
            winners
                .entry(port.name.as_str())
                .and_modify(|held| {
                    if candidate.1 < held.1 {
                        *held = candidate;
                    }
                })
                .or_insert(candidate);
        }
    }
    let mut conflicts = Vec::new();
    for signed in &exports {
        let record = &signed.record;
        if record.service_type != service_type {
            let kind = ConflictKind::Type {
                exported: record.service_type,
                imported: service_type,
            };
            conflicts.push(Conflict {
                cluster: record.origin.clone(),
                kind,
            });
            continue;
        }
        for port in &record.ports {
            let winner = winners.get(port.name.as_str()).map(|w| w.0);
            let kind = ConflictKind::Port {
                name: port.name.clone(),
            };
            let seen = conflicts
                .iter()
                .any(|c: &Conflict| c.cluster == record.origin && c.kind == kind);
            if !winner.is_some_and(|w| agrees(w, port)) && !seen {
                conflicts.push(Conflict {
                    cluster: record.origin.clone(),
                    kind,
                });
            }
        }
        // A port of the union this export lacks is a conflict too (the MCS rule: the
        // union is exposed, and every export that differs is in conflict).
        for name in winners.keys() {
            if !record.ports.iter().any(|p| p.name == *name) {
                conflicts.push(Conflict {
                    cluster: record.origin.clone(),
                    kind: ConflictKind::Port {
                        name: (*name).to_owned(),
                    },
                });
            }
        }
        for kind in property_conflicts(properties, &record.properties) {
            conflicts.push(Conflict {
                cluster: record.origin.clone(),
                kind,
            });
        }
    }
    Some(ImportedService {
        service: service.clone(),
        service_type,
        properties: properties.clone(),
        ports: winners
            .into_values()
            .map(|(port, _)| port.clone())
            .collect(),
        sources: same_type()
            .map(|r| ImportedCluster {
                record: Arc::clone(r),
                active: true,
            })
            .collect(),
        conflicts: conflicts.into(),
        traffic: TrafficReason::AllOrigins,
    })
}

// ----- the index against the naive derivation, on random histories -----

/// A random export of `origin`: ages from a narrow range (so that ties on the
/// creation time happen), mostly ClusterSetIP, ports from a small pool that agrees
/// and disagrees on names, protocols and numbers, and properties from a few variants.
fn random_record(rng: &mut ChaCha8Rng, origin: &str, version: u64) -> Arc<SignedRecord> {
    const POOL: [(&str, PortProtocol, u16); 5] = [
        ("http", PortProtocol::Tcp, 80),
        ("http", PortProtocol::Tcp, 81),
        ("http", PortProtocol::Udp, 80),
        ("grpc", PortProtocol::Tcp, 90),
        ("dns", PortProtocol::Udp, 53),
    ];
    let ty = if rng.random_range(0..5) == 0 {
        ServiceType::Headless
    } else {
        ServiceType::ClusterSetIp
    };
    let mut signed = record(origin, rng.random_range(1..6), ty, 80)
        .record
        .clone();
    signed.version = version;
    signed.ports.clear();
    for (name, protocol, port) in POOL {
        if rng.random_range(0..3) == 0 {
            signed.ports.push(ServicePort {
                name: name.into(),
                protocol,
                port,
                target_port: rng.random_range(8000..8003),
                app_protocol: None,
            });
        }
    }
    signed.endpoints[0].addresses = vec![IpAddress::V4([10, 0, 0, rng.random_range(1..4)])];
    match rng.random_range(0..4) {
        0 => {
            signed
                .properties
                .exported_labels
                .insert("tier".into(), "web".into());
        }
        1 => signed.properties.affinity = shoal_proto::Affinity::Local,
        _ => {}
    }
    unsigned(signed)
}

/// The origins gained, lost and updated from `before` to `after` (sources by origin).
fn naive_changes(
    before: Option<&ImportedService>,
    after: Option<&ImportedService>,
) -> SourceChanges<ClusterId> {
    let sources = |i: Option<&ImportedService>| -> BTreeMap<ClusterId, Arc<SignedRecord>> {
        i.into_iter()
            .flat_map(|i| i.sources.iter())
            .map(|s| (s.cluster().clone(), Arc::clone(&s.record)))
            .collect()
    };
    let (before, after) = (sources(before), sources(after));
    let mut changes = SourceChanges::default();
    for (cluster, record) in &after {
        match before.get(cluster) {
            None => changes.gained.insert(cluster.clone()),
            Some(held) if !Arc::ptr_eq(held, record) => changes.updated.insert(cluster.clone()),
            Some(_) => false,
        };
    }
    for cluster in before.keys().filter(|c| !after.contains_key(*c)) {
        changes.lost.insert(cluster.clone());
    }
    changes
}

/// 100 random histories of 200 puts (a third of them endpoint changes) and removals
/// over eight origins: after every one, the index holds exactly the naive derivation
/// of the live exports, and names the origins gained, lost and updated exactly.
#[test]
fn the_index_agrees_with_the_naive_derivation() {
    let ids = ids();
    let origins = &CLUSTERS[5..];
    for seed in 0..100 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let service = ServiceKey::new("default", "web").unwrap();
        let mut index = ServiceIndex::new(service.clone());
        let mut live: BTreeMap<ClusterId, Arc<SignedRecord>> = BTreeMap::new();
        let mut before: Option<ImportedService> = None;
        for step in 0..200u64 {
            let origin = origins[rng.random_range(0..origins.len())];
            let cluster = ClusterId::new(origin).unwrap();
            let id = ids.id(&cluster).unwrap();
            let mut changes = SourceChanges::default();
            if rng.random_range(0..4) == 0 {
                live.remove(&cluster);
                index.remove(&ids, id, &mut changes);
            } else {
                let record = match live.get(&cluster) {
                    // An endpoint change: everything else stands.
                    Some(held) if rng.random_range(0..3) == 0 => {
                        let mut changed = held.record.clone();
                        changed.version = step + 1;
                        changed.endpoints[0].addresses =
                            vec![IpAddress::V4([10, 0, 1, rng.random_range(1..4)])];
                        unsigned(changed)
                    }
                    _ => random_record(&mut rng, origin, step + 1),
                };
                live.insert(cluster, Arc::clone(&record));
                index.put(&ids, id, &record, &mut changes);
            }
            let naive = derive(&service, live.values());
            let held = index.import();
            assert_eq!(held, naive, "seed {seed}, step {step}");
            let changed = index.take_changed();
            assert_eq!(
                changed,
                held != before,
                "seed {seed}, step {step}: changed flag"
            );
            let changes = changes.map(|id| ids.cluster(id).clone());
            let expected = naive_changes(before.as_ref(), naive.as_ref());
            assert_eq!(
                changes, expected,
                "seed {seed}, step {step}: source changes"
            );
            before = naive;
        }
    }
}

/// Runs of changes compose: gained then lost is nothing, lost then gained is an update.
#[test]
fn source_changes_compose() {
    let mut run = SourceChanges::default();
    run.gain(1);
    run.lose(1);
    run.lose(2);
    run.gain(2);
    run.update(3);
    run.lose(3);
    let mut later = SourceChanges::default();
    later.gain(4);
    later.update(2);
    run.then(later);
    assert!(run.gained.iter().eq([&4]));
    assert!(run.lost.iter().eq([&3]));
    assert!(run.updated.iter().eq([&2]));
}
