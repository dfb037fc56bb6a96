//! The standalone backend against a real temporary directory: YAML in, exports out;
//! imports in, MCS objects out.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use shoal_node::core::{
    Conflict, ConflictKind, ImportChange, ImportedCluster, ImportedService, TrafficReason,
};
use shoal_node::runtime::backend::{
    ExportChange, ServiceExport, ServiceImport, StandaloneBackend, StandaloneLimits, watch,
};
use shoal_proto::{
    Affinity, ClusterId, ClusterKey, Endpoint, EndpointConditions, ExportRecord,
    InternalTrafficPolicy, IpAddress, IpFamily, NetworkMode, PortProtocol, ServiceKey, ServicePort,
    ServiceProperties, ServiceType, SessionAffinity,
};

fn cluster(name: &str) -> ClusterId {
    ClusterId::new(name).unwrap()
}

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("shop", name).unwrap()
}

fn open(dir: &Path) -> StandaloneBackend {
    StandaloneBackend::open(dir, cluster("east"), NetworkMode::Flat).unwrap()
}

fn write_in(dir: &Path, file: &str, yaml: &str) {
    std::fs::write(dir.join("in").join(file), yaml).unwrap();
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80, protocol: TCP}
  - {name: grpc, port: 9090, appProtocol: grpc}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-x1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: ["10.0.0.1"]
  conditions: {ready: true}
  zone: zone-a
  hostname: web-0
- addresses: ["10.0.0.2"]
  conditions: {ready: false, serving: true, terminating: true}
ports:
- {name: http, port: 8080}
"#;

const WEB_EXPORT: &str = r#"
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: web, namespace: shop, creationTimestamp: "2024-01-01T00:00:10Z"}
"#;

/// Exported in `v1beta1`, as WEB_EXPORT is in `v1alpha1`: both are read.
const DB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: db, namespace: shop}
"#;

fn exported(changes: &[ExportChange]) -> BTreeMap<ServiceKey, shoal_node::core::ExportSpec> {
    changes
        .iter()
        .map(|c| match c {
            ExportChange::Export(spec) => (spec.service.clone(), spec.clone()),
            ExportChange::Unexport(key) => panic!("unexpected unexport of {key}"),
        })
        .collect()
}

#[test]
fn yaml_in_becomes_export_specs() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "web.yaml", WEB);
    write_in(dir.path(), "web-export.yml", WEB_EXPORT);
    write_in(dir.path(), "db.yaml", DB);
    let specs = exported(&backend.scan(5_000).unwrap());
    assert_eq!(specs.len(), 2);

    let web = &specs[&key("web")];
    assert_eq!(web.service_type, ServiceType::ClusterSetIp);
    assert_eq!(web.export_created_ms, 1_704_067_210_000);
    let ports: Vec<_> = web
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port))
        .collect();
    assert_eq!(ports, [("grpc", 9090), ("http", 80)]);
    assert_eq!(web.ports[0].app_protocol.as_deref(), Some("grpc"));
    assert_eq!(web.endpoints.len(), 2);
    let first = &web.endpoints[0];
    assert_eq!(first.addresses, [IpAddress::V4([10, 0, 0, 1])]);
    assert_eq!(first.zone.as_deref(), Some("zone-a"));
    assert_eq!(first.hostname.as_deref(), Some("web-0"));
    let c = first.conditions;
    assert_eq!((c.ready, c.serving, c.terminating), (true, true, false));
    let c = web.endpoints[1].conditions;
    assert_eq!((c.ready, c.serving, c.terminating), (false, true, true));

    // What the API server would have defaulted: no affinity, policy Cluster; and no
    // families, as the Service names neither families nor cluster IPs.
    assert_eq!(
        web.properties,
        ServiceProperties {
            internal_traffic_policy: Some(InternalTrafficPolicy::Cluster),
            ..ServiceProperties::default()
        }
    );

    let db = &specs[&key("db")];
    assert_eq!(db.service_type, ServiceType::Headless);
    assert_eq!(
        db.export_created_ms, 5_000,
        "no creationTimestamp: first seen"
    );
    assert!(db.endpoints.is_empty());

    assert_eq!(backend.scan(9_000).unwrap(), [], "nothing changed");
    assert_eq!(backend.stats().scans, 2);
    assert_eq!(backend.stats().exports, 2);
}

#[test]
fn removing_the_service_export_unexports() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "web.yaml", WEB);
    write_in(dir.path(), "export.yaml", WEB_EXPORT);
    assert_eq!(backend.scan(1).unwrap().len(), 1);
    std::fs::remove_file(dir.path().join("in/export.yaml")).unwrap();
    assert_eq!(
        backend.scan(2).unwrap(),
        [ExportChange::Unexport(key("web"))]
    );
    assert_eq!(backend.scan(3).unwrap(), []);
}

#[test]
fn invalid_yaml_is_counted_and_skipped_without_losing_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "a-web.yaml", &format!("{WEB}---{WEB_EXPORT}"));
    write_in(
        dir.path(),
        "b-db.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: db",
    );
    let specs = exported(&backend.scan(1).unwrap());
    assert_eq!(specs.keys().collect::<Vec<_>>(), [&key("web")]);
    assert_eq!(backend.stats().invalid.get("invalid_yaml"), Some(&1));

    // The half-written file is read again once it is complete.
    write_in(dir.path(), "b-db.yaml", DB);
    let specs = exported(&backend.scan(2).unwrap());
    assert_eq!(specs.keys().collect::<Vec<_>>(), [&key("db")]);

    // A valid file that becomes half-written keeps its last good contents.
    write_in(dir.path(), "b-db.yaml", "apiVersion: v1\nkind: [");
    assert_eq!(backend.scan(3).unwrap(), []);
    assert_eq!(backend.stats().invalid.get("invalid_yaml"), Some(&2));
    assert!(backend.exports()[&key("db")].is_ok());
}

#[test]
fn an_export_without_its_service_is_invalid_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "export.yaml", WEB_EXPORT);
    assert_eq!(backend.scan(1).unwrap(), []);
    assert_eq!(backend.stats().invalid.get("no_service"), Some(&1));
    backend.write_export_status(&BTreeMap::new()).unwrap();
    let status = read_status(dir.path(), "web");
    let valid = condition(&status, "Valid");
    assert_eq!((valid.0.as_str(), valid.1.as_str()), ("False", "NoService"));
    // Once the Service appears, the export is published.
    write_in(dir.path(), "web.yaml", WEB);
    assert_eq!(backend.scan(2).unwrap().len(), 1);
}

// ----- imports out -----

fn endpoints(n: u32) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            addresses: vec![IpAddress::V4((0x0a01_0000 + i).to_be_bytes())],
            conditions: EndpointConditions {
                ready: true,
                serving: true,
                terminating: false,
            },
            zone: None,
            hostname: None,
        })
        .collect()
}

fn source(origin: &str, port: u16, created_ms: u64, endpoints: Vec<Endpoint>) -> ImportedCluster {
    let origin = cluster(origin);
    let record = ExportRecord {
        origin: origin.clone(),
        service: key("web"),
        version: 1,
        export_created_ms: created_ms,
        published_ms: 0,
        service_type: ServiceType::ClusterSetIp,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: PortProtocol::Tcp,
            port,
            target_port: port,
            app_protocol: None,
        }],
        endpoints,
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
        tombstone: false,
    };
    let signed = ClusterKey::from_seed(origin, [3; 32]).sign(record).unwrap();
    ImportedCluster {
        record: Arc::new(signed.into_inner()),
        active: true,
    }
}

fn import(sources: Vec<ImportedCluster>) -> Arc<ImportedService> {
    let ports = sources
        .first()
        .expect("a source")
        .record
        .record
        .ports
        .clone();
    let properties = sources
        .first()
        .expect("a source")
        .record
        .record
        .properties
        .clone();
    Arc::new(ImportedService {
        service: key("web"),
        service_type: ServiceType::ClusterSetIp,
        ports,
        properties,
        sources: sources.into(),
        conflicts: Vec::new().into(),
        traffic: TrafficReason::AllOrigins,
    })
}

fn change(import: Option<Arc<ImportedService>>) -> ImportChange {
    ImportChange::restate(key("web"), import)
}

fn out_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn slice_files(dir: &Path) -> Vec<String> {
    out_files(dir)
        .into_iter()
        .filter(|n| n.starts_with("endpointslice."))
        .collect()
}

#[test]
fn more_than_100_endpoints_split_into_two_slices() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    let imported = import(vec![source("west", 80, 1, endpoints(150))]);
    let report = backend.apply_imports(&[change(Some(imported))]).unwrap();
    assert_eq!(report.written, 4, "import, derived service, two slices");
    let files = slice_files(dir.path());
    assert_eq!(
        files,
        [
            "endpointslice.shop.web-west-0.yaml",
            "endpointslice.shop.web-west-1.yaml"
        ]
    );
    let sizes: Vec<usize> = files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(dir.path().join("out").join(f)).unwrap();
            let slice: EndpointSlice = serde_yaml::from_slice(&bytes).unwrap();
            assert_eq!(slice.address_type, "IPv4");
            let labels = slice.metadata.labels.unwrap();
            assert_eq!(labels["multicluster.kubernetes.io/source-cluster"], "west");
            assert_eq!(
                labels["endpointslice.kubernetes.io/managed-by"],
                "shoal.dev"
            );
            slice.endpoints.map_or(0, |e| e.len())
        })
        .collect();
    assert_eq!(sizes, [100, 50]);
    let bytes = std::fs::read(dir.path().join("out/serviceimport.shop.web.yaml")).unwrap();
    let service_import: ServiceImport = serde_yaml::from_slice(&bytes).unwrap();
    assert_eq!(service_import.api_version, "multicluster.x-k8s.io/v1beta1");
    assert_eq!(service_import.spec.type_, "ClusterSetIP");
    assert_eq!(service_import.status.unwrap().clusters[0].cluster, "west");
}

#[test]
fn out_is_written_atomically_and_not_rewritten_when_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    let imported = import(vec![source("west", 80, 1, endpoints(3))]);
    backend
        .apply_imports(&[change(Some(imported.clone()))])
        .unwrap();
    let files = out_files(dir.path());
    assert_eq!(files.len(), 3);
    assert!(
        files.iter().all(|f| !f.starts_with('.')),
        "no temporaries left"
    );
    let stamp = |f: &str| {
        let meta = std::fs::metadata(dir.path().join("out").join(f)).unwrap();
        (meta.ino(), meta.modified().unwrap())
    };
    let before: Vec<_> = files.iter().map(|f| stamp(f)).collect();

    let report = backend.apply_imports(&[change(Some(imported))]).unwrap();
    assert_eq!(
        (report.written, report.unchanged, report.removed),
        (0, 3, 0)
    );
    let after: Vec<_> = files.iter().map(|f| stamp(f)).collect();
    assert_eq!(before, after, "same inode and mtime: not rewritten");

    // A change replaces the file by a rename: a new inode, never a partial file.
    let slice = "endpointslice.shop.web-west-0.yaml";
    let old_inode = stamp(slice).0;
    let grown = import(vec![source("west", 80, 1, endpoints(4))]);
    let report = backend.apply_imports(&[change(Some(grown))]).unwrap();
    assert_eq!(report.written, 1, "only the slice changed");
    assert_ne!(stamp(slice).0, old_inode);
    assert_eq!(backend.stats().files_unchanged, 3 + 2);
}

#[test]
fn stale_out_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    let big = import(vec![source("west", 80, 1, endpoints(150))]);
    backend.apply_imports(&[change(Some(big))]).unwrap();
    assert_eq!(slice_files(dir.path()).len(), 2);

    let small = import(vec![source("west", 80, 1, endpoints(50))]);
    let report = backend
        .apply_imports(&[change(Some(small.clone()))])
        .unwrap();
    assert_eq!(report.removed, 1);
    assert_eq!(
        slice_files(dir.path()),
        ["endpointslice.shop.web-west-0.yaml"]
    );

    let report = backend.apply_imports(&[change(None)]).unwrap();
    assert_eq!(report.removed, 3);
    assert_eq!(out_files(dir.path()), Vec::<String>::new());

    // A restart: files of an earlier run that the imports no longer explain go.
    backend.apply_imports(&[change(Some(small))]).unwrap();
    drop(backend);
    std::fs::write(dir.path().join("out/leftover.yaml"), "not: ours\n").unwrap();
    std::fs::write(dir.path().join("out/.half.tmp"), "partial").unwrap();
    let mut backend = open(dir.path());
    assert!(
        !dir.path().join("out/.half.tmp").exists(),
        "temporaries go at open"
    );
    let report = backend.sync_all(&BTreeMap::new()).unwrap();
    assert_eq!(report.removed, 4, "three files of web and the leftover");
    assert_eq!(out_files(dir.path()), Vec::<String>::new());
}

#[test]
fn a_restart_keeps_files_that_are_still_right() {
    let dir = tempfile::tempdir().unwrap();
    let imported = import(vec![source("west", 80, 1, endpoints(3))]);
    let mut backend = open(dir.path());
    backend
        .apply_imports(&[change(Some(imported.clone()))])
        .unwrap();
    drop(backend);
    let mut backend = open(dir.path());
    let imports = BTreeMap::from([(key("web"), imported)]);
    let report = backend.sync_all(&imports).unwrap();
    assert_eq!(
        (report.written, report.unchanged, report.removed),
        (0, 3, 0)
    );
}

type ConditionView = (String, String, String);

fn read_status(dir: &Path, name: &str) -> BTreeMap<String, ConditionView> {
    let path = dir.join(format!("out/serviceexport-status.shop.{name}.yaml"));
    let export: ServiceExport = serde_yaml::from_slice(&std::fs::read(path).unwrap()).unwrap();
    export
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| (c.type_, (c.status, c.reason, c.message)))
        .collect()
}

fn condition<'a>(status: &'a BTreeMap<String, ConditionView>, type_: &str) -> &'a ConditionView {
    &status[type_]
}

#[test]
fn a_port_conflict_shows_in_the_status_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "web.yaml", &format!("{WEB}---{WEB_EXPORT}"));
    backend.scan(1_000).unwrap();
    // West's export is older; east (this cluster) defines port http differently.
    let mut imported = ImportedService::clone(&import(vec![
        source("east", 81, 50, endpoints(1)),
        source("west", 80, 10, endpoints(1)),
    ]));
    imported.ports[0].port = 80;
    imported.conflicts = vec![Conflict {
        cluster: cluster("east"),
        kind: ConflictKind::Port {
            name: "http".into(),
        },
    }]
    .into();
    let imports = BTreeMap::from([(key("web"), Arc::new(imported))]);
    backend.write_export_status(&imports).unwrap();
    let status = read_status(dir.path(), "web");
    assert_eq!(condition(&status, "Valid").0, "True");
    assert_eq!(condition(&status, "Ready").1, "Exported");
    let raw =
        std::fs::read_to_string(dir.path().join("out/serviceexport-status.shop.web.yaml")).unwrap();
    assert!(
        raw.starts_with("apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n"),
        "{raw}"
    );
    let conflict = condition(&status, "Conflict");
    assert_eq!(
        (conflict.0.as_str(), conflict.1.as_str()),
        ("True", "PortConflict")
    );
    assert!(
        conflict.2.contains("east on port \"http\""),
        "{}",
        conflict.2
    );

    // Unchanged conditions are not written again, even after a later scan.
    let path = dir.path().join("out/serviceexport-status.shop.web.yaml");
    let before = std::fs::metadata(&path).unwrap().ino();
    backend.scan(60_000).unwrap();
    backend.write_export_status(&imports).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), before);

    // The export goes: so does its status file.
    std::fs::remove_file(dir.path().join("in/web.yaml")).unwrap();
    backend.scan(61_000).unwrap();
    backend.write_export_status(&imports).unwrap();
    assert!(!path.exists());
}

#[test]
fn fingerprint_follows_the_input_files() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path());
    let empty = backend.fingerprint().unwrap();
    assert_eq!(backend.fingerprint().unwrap(), empty);
    write_in(dir.path(), "web.yaml", WEB);
    let one = backend.fingerprint().unwrap();
    assert_ne!(one, empty);
    write_in(dir.path(), ".editor-swap.yaml", "x");
    write_in(dir.path(), "notes.txt", "x");
    assert_eq!(
        backend.fingerprint().unwrap(),
        one,
        "only input files count"
    );
}

#[tokio::test]
async fn watch_notifies_when_in_changes() {
    let dir = tempfile::tempdir().unwrap();
    let _backend = open(dir.path());
    let mut changes = watch(dir.path().to_owned(), 10);
    let deadline = Duration::from_secs(10);
    tokio::time::timeout(deadline, changes.recv())
        .await
        .expect("a notification at start")
        .unwrap();
    write_in(dir.path(), "web.yaml", WEB);
    tokio::time::timeout(deadline, changes.recv())
        .await
        .expect("a notification after a change")
        .unwrap();
}

#[test]
fn a_global_service_is_exported_without_a_service_export() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    let global = WEB.replace(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: shop, annotations: {shoal.dev/global: \"true\"}}",
    );
    write_in(dir.path(), "web.yaml", &global);
    write_in(
        dir.path(),
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    );
    let specs = exported(&backend.scan(7).unwrap());
    assert_eq!(specs[&key("web")].endpoints.len(), 2);
    assert_eq!(backend.stats().invalid.get("unsupported_kind"), Some(&1));
}

/// A Service that sets every property (Cilium's affinity annotation among them), and a
/// `v1beta1` ServiceExport with exported labels and annotations.
const API: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
  labels: {internal: "yes"}
  annotations: {service.cilium.io/affinity: remote}
spec:
  clusterIPs: ["fd00::10", "10.96.0.10"]
  ipFamilies: [IPv6, IPv4]
  ipFamilyPolicy: RequireDualStack
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  internalTrafficPolicy: Local
  trafficDistribution: PreferClose
  ports: [{name: http, port: 80}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: api, namespace: shop, creationTimestamp: "2024-01-01T00:00:20Z"}
spec:
  exportedLabels: {tier: backend}
  exportedAnnotations: {example.com/owner: shop team}
"#;

fn api_properties() -> ServiceProperties {
    ServiceProperties {
        ip_families: vec![IpFamily::Ipv6, IpFamily::Ipv4],
        session_affinity: SessionAffinity::ClientIp,
        client_ip_timeout_seconds: Some(600),
        internal_traffic_policy: Some(InternalTrafficPolicy::Local),
        traffic_distribution: Some("PreferClose".into()),
        exported_labels: [("tier".to_owned(), "backend".to_owned())].into(),
        exported_annotations: [("example.com/owner".to_owned(), "shop team".to_owned())].into(),
        affinity: Affinity::Remote,
    }
}

fn out_yaml(dir: &Path, file: &str) -> serde_yaml::Value {
    let bytes = std::fs::read(dir.join("out").join(file)).unwrap();
    serde_yaml::from_slice(&bytes).unwrap()
}

#[test]
fn properties_travel_from_yaml_in_to_v1beta1_yaml_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "api.yaml", API);
    let specs = exported(&backend.scan(1).unwrap());
    let spec = specs[&key("api")].clone();
    assert_eq!(spec.properties, api_properties());

    // East's export, signed and imported as the core would, comes out as objects.
    let record = spec.into_record(cluster("east"), 1);
    let signed = ClusterKey::from_seed(cluster("east"), [3; 32])
        .sign(record)
        .unwrap();
    let record = Arc::new(signed.into_inner());
    let imported = Arc::new(ImportedService {
        service: key("api"),
        service_type: ServiceType::ClusterSetIp,
        ports: record.record.ports.clone(),
        properties: record.record.properties.clone(),
        sources: vec![ImportedCluster {
            record,
            active: true,
        }]
        .into(),
        conflicts: Vec::new().into(),
        // Affinity `remote`, and east is the only origin: its own endpoints serve.
        traffic: TrafficReason::RemoteFailover,
    });
    let change = ImportChange::restate(key("api"), Some(imported));
    backend.apply_imports(&[change]).unwrap();
    let expected: serde_yaml::Value = serde_yaml::from_str(
        r#"
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata:
  name: api
  namespace: shop
  labels: {multicluster.kubernetes.io/service-name: api, tier: backend}
  annotations:
    example.com/owner: shop team
    shoal.dev/written-by: east
    shoal.dev/traffic: remote-failover
    shoal.dev/active-clusters: east
spec:
  type: ClusterSetIP
  ports: [{name: http, protocol: TCP, port: 80}]
  ipFamilies: [IPv6, IPv4]
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  internalTrafficPolicy: Local
  trafficDistribution: PreferClose
status:
  clusters: [{cluster: east}]
"#,
    )
    .unwrap();
    assert_eq!(
        out_yaml(dir.path(), "serviceimport.shop.api.yaml"),
        expected
    );

    let derived = out_files(dir.path())
        .into_iter()
        .find(|f| f.starts_with("service.shop.derived-"))
        .unwrap();
    let service = out_yaml(dir.path(), &derived);
    let spec = &service["spec"];
    assert_eq!(
        spec["ipFamilies"],
        serde_yaml::from_str::<serde_yaml::Value>("[IPv6, IPv4]").unwrap()
    );
    assert_eq!(spec["ipFamilyPolicy"], "RequireDualStack");
    assert_eq!(spec["sessionAffinity"], "ClientIP");
    assert_eq!(
        spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        600
    );
    assert_eq!(spec["internalTrafficPolicy"], "Local");
    assert_eq!(spec["trafficDistribution"], "PreferClose");
    assert_eq!(
        service["metadata"]["labels"].as_mapping().unwrap().len(),
        1,
        "no exported labels on the derived Service"
    );
}

#[test]
fn an_export_with_a_label_kubernetes_refuses_is_invalid_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    let bad = API.replace("{tier: backend}", "{\"-tier\": backend}");
    write_in(dir.path(), "api.yaml", &bad);
    assert_eq!(backend.scan(1).unwrap(), []);
    assert_eq!(
        backend.stats().invalid.get("invalid_exported_metadata"),
        Some(&1)
    );
    backend.write_export_status(&BTreeMap::new()).unwrap();
    let status = read_status(dir.path(), "api");
    let valid = condition(&status, "Valid");
    assert_eq!(
        (valid.0.as_str(), valid.1.as_str()),
        ("False", "InvalidExportedMetadata")
    );
    assert!(valid.2.contains("\"-tier\""), "{}", valid.2);
    let ready = condition(&status, "Ready");
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "Failed"));
}

#[test]
fn a_property_conflict_shows_in_every_exports_status_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "web.yaml", &format!("{WEB}---{WEB_EXPORT}"));
    backend.scan(1_000).unwrap();
    // West's export is older and this cluster (east) agrees with it; a third cluster
    // differs in session affinity and exported labels. East's export is in no conflict,
    // but the condition is raised on it too, as the MCS conformance suite expects.
    let mut imported = ImportedService::clone(&import(vec![
        source("east", 80, 50, endpoints(1)),
        source("north", 80, 70, endpoints(1)),
        source("west", 80, 10, endpoints(1)),
    ]));
    imported.conflicts = vec![
        Conflict {
            cluster: cluster("north"),
            kind: ConflictKind::SessionAffinity,
        },
        Conflict {
            cluster: cluster("north"),
            kind: ConflictKind::Labels,
        },
    ]
    .into();
    let imports = BTreeMap::from([(key("web"), Arc::new(imported))]);
    backend.write_export_status(&imports).unwrap();
    let status = read_status(dir.path(), "web");
    let conflict = condition(&status, "Conflict");
    assert_eq!(
        (conflict.0.as_str(), conflict.1.as_str()),
        ("True", "SessionAffinityConflict,LabelsConflict")
    );
    assert_eq!(
        conflict.2,
        "conflicting exports: north on session affinity, north on exported labels; \
         this cluster's definition stands (the oldest export wins)"
    );
}

#[test]
fn a_symlink_out_of_in_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("web.yaml"),
        format!("{WEB}---{WEB_EXPORT}"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("web.yaml"),
        dir.path().join("in/web.yaml"),
    )
    .unwrap();
    // A link to a file inside in/ is read.
    write_in(dir.path(), "db-real.yml", DB);
    std::os::unix::fs::symlink(
        dir.path().join("in/db-real.yml"),
        dir.path().join("in/db.yaml"),
    )
    .unwrap();
    let specs = exported(&backend.scan(1).unwrap());
    assert_eq!(specs.keys().collect::<Vec<_>>(), [&key("db")]);
    assert_eq!(backend.stats().invalid.get("symlink_outside"), Some(&1));

    let allowed = StandaloneLimits {
        symlinks_outside: true,
        ..StandaloneLimits::default()
    };
    let mut backend = open(dir.path()).with_limits(allowed);
    let specs = exported(&backend.scan(1).unwrap());
    assert_eq!(specs.len(), 2);
    assert_eq!(backend.stats().invalid.get("symlink_outside"), None);
}

#[test]
fn a_file_nested_too_deep_is_skipped_in_linear_time_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    write_in(dir.path(), "a-web.yaml", &format!("{WEB}---{WEB_EXPORT}"));
    write_in(dir.path(), "b-deep.yaml", &"[ ".repeat(100_000));
    let specs = exported(&backend.scan(1).unwrap());
    assert_eq!(specs.keys().collect::<Vec<_>>(), [&key("web")]);
    assert_eq!(backend.stats().invalid.get("too_deep"), Some(&1));
}

#[test]
fn objects_with_invalid_names_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = open(dir.path());
    let long = "x".repeat(300);
    let yaml: String = ["Bad_Name", "../../etc", &long]
        .iter()
        .map(|name| {
            format!(
                "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n\
                 metadata: {{name: '{name}', namespace: shop}}\n---\n"
            )
        })
        .collect::<String>()
        + "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n\
           metadata: {name: web, namespace: ../x}\n";
    write_in(dir.path(), "bad.yaml", &yaml);
    assert_eq!(backend.scan(1).unwrap(), []);
    assert_eq!(backend.stats().invalid.get("invalid_name"), Some(&4));
    assert!(backend.exports().is_empty());
}

#[test]
fn a_full_out_dir_is_an_error_on_the_exports_status() {
    let dir = tempfile::tempdir().unwrap();
    let limits = StandaloneLimits {
        out_files_max: 4,
        ..StandaloneLimits::default()
    };
    let mut backend = open(dir.path()).with_limits(limits);
    write_in(dir.path(), "web.yaml", &format!("{WEB}---{WEB_EXPORT}"));
    backend.scan(1).unwrap();
    // 150 endpoints: a ServiceImport, a derived Service and two slices fit; 250 need
    // five files and do not.
    let fits = import(vec![source("east", 80, 1, endpoints(150))]);
    backend
        .apply_imports(&[ImportChange::restate(key("web"), Some(fits))])
        .unwrap();
    assert_eq!(slice_files(dir.path()).len(), 2);
    let too_big = import(vec![source("east", 80, 1, endpoints(250))]);
    let all = BTreeMap::from([(key("web"), Arc::clone(&too_big))]);
    backend
        .apply_imports(&[ImportChange::restate(key("web"), Some(too_big))])
        .unwrap();
    backend.write_export_status(&all).unwrap();
    assert_eq!(backend.stats().invalid.get("out_dir_full"), Some(&1));
    assert_eq!(
        slice_files(dir.path()).len(),
        2,
        "the last written import stands"
    );
    let status = read_status(dir.path(), "web");
    let ready = condition(&status, "Ready");
    assert_eq!((ready.0.as_str(), ready.1.as_str()), ("False", "Failed"));
    assert!(ready.2.contains("backend.out_files_max"), "{}", ready.2);
}
