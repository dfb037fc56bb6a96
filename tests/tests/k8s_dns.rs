//! `clusterset.local` through unmodified CoreDNS: two clusters with Shoal on the
//! Kubernetes backend, and beside each cluster CoreDNS v1.14.7 with the `kubernetes`
//! block and the RBAC of `deploy/coredns/` (see `shoal_tests::k8s::coredns`). c1
//! exports a ClusterSetIP Service and a headless one; both CoreDNS servers must answer
//! for them from the ServiceImports and EndpointSlices Shoal wrote, and follow a
//! scale-up and a scale-down. Every query goes to 127.0.0.1; the pod IPs (10.x) are
//! only compared, never reached.
// Real processes on the wall clock; a failed step panics with what it saw.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use shoal_tests::dns::{Answer, RecordType, ResponseCode};
use shoal_tests::k8s::wait::POLL_INTERVAL;
use shoal_tests::k8s::{Cluster, CoreDns, wait_for};
use shoal_tests::mesh::{Mesh, MeshConfig, apply};

/// How long an export may take to reach every importer and its CoreDNS (loopback;
/// the MCS conformance suite allows 20 s for the import alone).
const PROPAGATE: Duration = Duration::from_secs(60);
/// The exporting cluster.
const SOURCE: &str = "c1";
/// The ClusterSetIP service's port, and its name (the SRV record's `_http`).
const WEB_PORT: u16 = 80;
/// The headless service's target port (what its endpoints' SRV records carry).
const DB_PORT: u16 = 5432;

const WORKLOAD: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: example.invalid/web:1
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: web, namespace: shop}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: pg, protocol: TCP}]
---
# A StatefulSet gives each pod spec.hostname = its name and spec.subdomain = the
# headless Service, so the EndpointSlice controller sets each endpoint's hostname
# (endpointslice util.ShouldSetHostname); a Deployment's pods would share one.
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
        - name: db
          image: example.invalid/db:1
          ports: [{name: pg, containerPort: 5432}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: db, namespace: shop}
"#;

/// The importing cluster needs the namespace too (MCS namespace sameness).
const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";

/// The Running pods of `app` in `cluster` with their IPs, by pod name, once there are
/// `count`.
fn pods(cluster: &Cluster, app: &str, count: usize) -> BTreeMap<String, IpAddr> {
    let selector = format!("app={app}");
    wait_for(
        &format!("{count} {app} pods Running with IPs"),
        PROPAGATE,
        || {
            let list = cluster
                .kubectl_json(&["get", "pods", "-n", "shop", "-l", &selector, "-o", "json"])
                .map_err(|e| e.to_string())?;
            let pods: BTreeMap<String, IpAddr> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["status"]["phase"] == "Running"
                        && p["metadata"]["deletionTimestamp"].is_null()
                })
                .filter_map(|p| {
                    let name = p["metadata"]["name"].as_str()?.to_owned();
                    let ip = p["status"]["podIP"].as_str()?.parse().ok()?;
                    Some((name, ip))
                })
                .collect();
            if pods.len() == count && list["items"].as_array().map_or(0, Vec::len) == count {
                Ok(pods)
            } else {
                Err(format!("{pods:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", cluster.context()))
}

/// The ClusterSet IPs of the ServiceImport `name` in `cluster`, once it has some.
fn import_ips(cluster: &Cluster, name: &str) -> BTreeSet<IpAddr> {
    wait_for(&format!("ServiceImport {name} with ips"), PROPAGATE, || {
        let import = cluster
            .kubectl_json(&[
                "get",
                "serviceimports.multicluster.x-k8s.io",
                name,
                "-n",
                "shop",
                "-o",
                "json",
            ])
            .map_err(|e| e.to_string())?;
        let ips: BTreeSet<IpAddr> = import["spec"]["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.as_str()?.parse().ok())
            .collect();
        if ips.is_empty() {
            Err(format!("spec {}", import["spec"]))
        } else {
            Ok(ips)
        }
    })
    .unwrap_or_else(|e| panic!("{}: {e}", cluster.context()))
}

/// The ready endpoint addresses of the slices Shoal wrote in `cluster` for `service`
/// from [`SOURCE`].
fn imported_addresses(cluster: &Cluster, service: &str) -> Result<BTreeSet<IpAddr>, String> {
    let selector = format!(
        "multicluster.kubernetes.io/service-name={service},\
         multicluster.kubernetes.io/source-cluster={SOURCE},\
         endpointslice.kubernetes.io/managed-by=shoal.dev"
    );
    let slices = cluster
        .kubectl_json(&[
            "get",
            "endpointslices",
            "-n",
            "shop",
            "-l",
            &selector,
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    Ok(slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        // CoreDNS answers with ready endpoints only (an absent `ready` counts as ready).
        .filter(|e| e["conditions"]["ready"] != false)
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str()?.parse().ok())
        .collect())
}

fn ask(dns: &CoreDns, name: &str, record_type: RecordType) -> Result<Answer, String> {
    let answer = dns.query(name, record_type).map_err(|e| e.to_string())?;
    if answer.rcode == ResponseCode::NoError {
        Ok(answer)
    } else {
        Err(format!("{name} {record_type}: {}", answer.rcode))
    }
}

/// Waits until `dns` answers the A query for `name` with exactly `want`.
fn wait_a(dns: &CoreDns, who: &str, name: &str, want: &BTreeSet<IpAddr>) -> Duration {
    let start = Instant::now();
    wait_for(&format!("{who}: A {name} = {want:?}"), PROPAGATE, || {
        let answer = ask(dns, name, RecordType::A)?;
        let got: BTreeSet<IpAddr> = answer.addresses.iter().copied().collect();
        if &got == want && got.len() == answer.addresses.len() {
            Ok(())
        } else {
            Err(format!("{:?}", answer.addresses))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n(log: {})", dns.log().display()));
    start.elapsed()
}

/// Waits until `dns` answers SRV `name` with exactly the `(port, target)` pairs `want`.
fn wait_srv(dns: &CoreDns, who: &str, name: &str, want: &BTreeSet<(u16, String)>) {
    wait_for(&format!("{who}: SRV {name} = {want:?}"), PROPAGATE, || {
        let answer = ask(dns, name, RecordType::SRV)?;
        let got: BTreeSet<(u16, String)> = answer
            .srv
            .iter()
            .map(|s| (s.port, s.target.clone()))
            .collect();
        if &got == want {
            Ok(())
        } else {
            Err(format!("{:?}", answer.srv))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n(log: {})", dns.log().display()));
}

fn db_name(pod: &str) -> String {
    format!("{pod}.{SOURCE}.db.shop.svc.clusterset.local.")
}

/// Checks every headless name against c1's `db` pods: one A record per pod for the
/// service, and `<hostname>.c1.db...` for each pod.
fn check_headless(dns: &CoreDns, who: &str, db: &BTreeMap<String, IpAddr>) -> Duration {
    let all: BTreeSet<IpAddr> = db.values().copied().collect();
    let took = wait_a(dns, who, "db.shop.svc.clusterset.local.", &all);
    for (pod, ip) in db {
        wait_a(dns, who, &db_name(pod), &BTreeSet::from([*ip]));
    }
    let srv: BTreeSet<(u16, String)> = db.keys().map(|pod| (DB_PORT, db_name(pod))).collect();
    wait_srv(dns, who, "_pg._tcp.db.shop.svc.clusterset.local.", &srv);
    took
}

/// Scales `db` in c1 from the pods `before` to `replicas`, and waits until every
/// CoreDNS answers with the new pods and NXDOMAIN for the removed ones' hostnames;
/// prints how long each took after the scale, and after its cluster's EndpointSlices
/// (what Shoal wrote) first held the new set. Returns the new pods.
fn scale_db(
    mesh: &Mesh,
    servers: &[(String, CoreDns)],
    before: &BTreeMap<String, IpAddr>,
    replicas: usize,
) -> BTreeMap<String, IpAddr> {
    let source = mesh.cluster(1);
    let scaled = Instant::now();
    source
        .kubectl_stdout(&[
            "scale",
            "statefulset/db",
            "-n",
            "shop",
            &format!("--replicas={replicas}"),
        ])
        .unwrap();
    let db = pods(source, "db", replicas);
    let want: BTreeSet<IpAddr> = db.values().copied().collect();
    for (index, (who, dns)) in servers.iter().enumerate() {
        let cluster = mesh.cluster(index);
        let mut slices_at: Option<Instant> = None;
        wait_for(
            &format!("{who}: the headless A set follows the scale to {replicas}"),
            PROPAGATE,
            || {
                if slices_at.is_none() && imported_addresses(cluster, "db")? == want {
                    slices_at = Some(Instant::now());
                }
                let answer = ask(dns, "db.shop.svc.clusterset.local.", RecordType::A)?;
                let got: BTreeSet<IpAddr> = answer.addresses.iter().copied().collect();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n(log: {})", dns.log().display()));
        let answered = Instant::now();
        println!(
            "{who}: scale to {replicas}: CoreDNS answered {} ms after the scale, {} after \
             Shoal's EndpointSlices held the new set (both polled every {} ms)",
            answered.duration_since(scaled).as_millis(),
            slices_at.map_or("(not seen before the answer)".to_owned(), |at| format!(
                "{} ms",
                answered.saturating_duration_since(at).as_millis()
            )),
            POLL_INTERVAL.as_millis(),
        );
        check_headless(dns, who, &db);
        for gone in before.keys().filter(|pod| !db.contains_key(*pod)) {
            let name = db_name(gone);
            wait_for(&format!("{who}: {name} NXDOMAIN"), PROPAGATE, || {
                let answer = dns.query(&name, RecordType::A).map_err(|e| e.to_string())?;
                match answer.rcode {
                    ResponseCode::NXDomain => Ok(()),
                    _ => Err(format!("{answer:?}")),
                }
            })
            .unwrap_or_else(|e| panic!("{e}\n(log: {})", dns.log().display()));
        }
    }
    db
}

#[test]
fn clusterset_local_answers_come_from_what_shoal_imports_and_follow_a_scale() {
    let mesh = Mesh::start(&MeshConfig::new(2, 1)).expect("the mesh starts");
    let (c0, c1) = (mesh.cluster(0), mesh.cluster(1));
    apply(c0, NAMESPACE).unwrap();
    apply(c1, WORKLOAD).unwrap();
    let servers: Vec<(String, CoreDns)> = [c0, c1]
        .into_iter()
        .map(|c| {
            let dns = CoreDns::start(c).unwrap_or_else(|e| panic!("{}: {e}", c.context()));
            println!(
                "{}: CoreDNS on {} ({})",
                c.context(),
                dns.addr(),
                dns.log().display()
            );
            (c.context().to_owned(), dns)
        })
        .collect();
    let db = pods(c1, "db", 2);
    pods(c1, "web", 2);

    for (index, (who, dns)) in servers.iter().enumerate() {
        let cluster = mesh.cluster(index);
        // ClusterSetIP: the A record is the ServiceImport's spec.ips, and the SRV record
        // of the named port carries the service port.
        let ips = import_ips(cluster, "web");
        let took = wait_a(dns, who, "web.shop.svc.clusterset.local.", &ips);
        println!(
            "{who}: web's ClusterSet IP {ips:?} answered {} ms after its ServiceImport had it \
             (polled every {} ms)",
            took.as_millis(),
            POLL_INTERVAL.as_millis()
        );
        wait_srv(
            dns,
            who,
            "_http._tcp.web.shop.svc.clusterset.local.",
            &BTreeSet::from([(WEB_PORT, "web.shop.svc.clusterset.local.".to_owned())]),
        );
        // Headless: one A record per endpoint (c1's pod IPs), and each pod by hostname.
        check_headless(dns, who, &db);
    }
    let names: Vec<&str> = db.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["db-0", "db-1"],
        "hostnames are the StatefulSet's pod names"
    );

    let db = scale_db(&mesh, &servers, &db, 3);
    scale_db(&mesh, &servers, &db, 1);
}
