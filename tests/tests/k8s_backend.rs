//! The Kubernetes backend against real control planes (kube-apiserver v1.36.3 with
//! RBAC, the real EndpointSlice controller over kwok's pods): three clusters, two
//! `shoal` replicas each, every replica reaching its API server with the token of the
//! ServiceAccount in deploy/rbac.yaml. What Shoal asks of each API server is read from
//! that server's audit log.
// Real processes on the wall clock; a failed step panics with what it saw.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::k8s::{Cluster, wait_for};
use shoal_tests::mesh::{Mesh, MeshConfig, SHOAL_NAMESPACE, apply, audited, is_write, kubectl};

/// How long an export may take to reach every importer (loopback; the target is
/// well under a second, the MCS conformance suite allows 20 s).
const PROPAGATE: Duration = Duration::from_secs(30);
/// The local leader Lease of the mesh (4 s), plus room for a loaded machine.
const TAKEOVER: Duration = Duration::from_secs(20);

fn workload(replicas: u32, port: u16) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: web
          image: example.invalid/web:1
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: {port}, targetPort: http, protocol: TCP}}]
"#
    )
}

const EXPORT: &str = r#"
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: web, namespace: shop}
"#;

fn namespace(mesh: &Mesh) {
    for cluster in mesh.planes().clusters() {
        apply(
            cluster,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        )
        .unwrap();
    }
}

fn json(cluster: &Cluster, args: &[&str]) -> Value {
    cluster
        .kubectl_json(args)
        .unwrap_or_else(|e| panic!("{}: {e}", cluster.context()))
}

/// The pod IPs of `app=web` in `cluster`, once `count` are Running with an IP.
fn pod_ips(cluster: &Cluster, count: usize) -> BTreeSet<String> {
    wait_for("pods Running with IPs", PROPAGATE, || {
        let pods = cluster
            .kubectl_json(&["get", "pods", "-n", "shop", "-l", "app=web", "-o", "json"])
            .map_err(|e| e.to_string())?;
        let ips: BTreeSet<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
            .collect();
        if ips.len() == count {
            Ok(ips)
        } else {
            Err(format!("{} of {count} Running with an IP", ips.len()))
        }
    })
    .unwrap()
}

/// What an importing cluster holds for shop/web, as the objects Shoal wrote.
#[derive(Debug)]
struct Imported {
    import: Value,
    service: Value,
    slices: Vec<Value>,
}

fn imported(cluster: &Cluster) -> Result<Imported, String> {
    let import = cluster
        .kubectl_json(&[
            "get",
            "serviceimports.multicluster.x-k8s.io",
            "web",
            "-n",
            "shop",
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let services = cluster
        .kubectl_json(&[
            "get",
            "services",
            "-n",
            "shop",
            "-l",
            "app.kubernetes.io/managed-by=shoal.dev",
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let service = services["items"]
        .as_array()
        .and_then(|s| s.first().cloned())
        .ok_or("no derived Service")?;
    let slices = cluster
        .kubectl_json(&[
            "get", "endpointslices", "-n", "shop", "-l",
            "multicluster.kubernetes.io/service-name=web,endpointslice.kubernetes.io/managed-by=shoal.dev",
            "-o", "json",
        ])
        .map_err(|e| e.to_string())?;
    let slices = slices["items"].as_array().cloned().unwrap_or_default();
    Ok(Imported {
        import,
        service,
        slices,
    })
}

fn addresses(slices: &[Value], source: &str) -> BTreeSet<String> {
    slices
        .iter()
        .filter(|s| s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == source)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `cluster` imports shop/web from exactly `sources` with these pod IPs.
fn wait_imported(cluster: &Cluster, expected: &BTreeMap<String, BTreeSet<String>>) -> Imported {
    wait_for("the import", PROPAGATE, || {
        let got = imported(cluster)?;
        let ips = got.service["spec"]["clusterIPs"].clone();
        if got.import["spec"]["ips"] != ips {
            return Err(format!(
                "ips {} vs the Service's {ips}",
                got.import["spec"]["ips"]
            ));
        }
        let clusters: BTreeSet<String> = got.import["status"]["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["cluster"].as_str().map(str::to_owned))
            .collect();
        let want: BTreeSet<String> = expected.keys().cloned().collect();
        if clusters != want {
            return Err(format!("status.clusters {clusters:?}"));
        }
        for (source, ips) in expected {
            let have = addresses(&got.slices, source);
            if &have != ips {
                return Err(format!("{source}: {have:?}, want {ips:?}"));
            }
        }
        Ok(got)
    })
    .unwrap_or_else(|e| panic!("{}: {e}", cluster.context()))
}

fn resource_versions(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (kind, selector) in [
        (
            "serviceimports.multicluster.x-k8s.io",
            "app.kubernetes.io/managed-by=shoal.dev",
        ),
        ("services", "app.kubernetes.io/managed-by=shoal.dev"),
        (
            "endpointslices",
            "endpointslice.kubernetes.io/managed-by=shoal.dev",
        ),
    ] {
        let list = json(cluster, &["get", kind, "-A", "-l", selector, "-o", "json"]);
        for item in list["items"].as_array().into_iter().flatten() {
            let name = format!(
                "{kind}/{}/{}",
                item["metadata"]["namespace"].as_str().unwrap_or_default(),
                item["metadata"]["name"].as_str().unwrap_or_default()
            );
            let rv = item["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            out.insert(name, rv.to_owned());
        }
    }
    out
}

fn conditions(cluster: &Cluster, name: &str) -> BTreeMap<String, (String, String)> {
    let export = json(
        cluster,
        &[
            "get",
            "serviceexports.multicluster.x-k8s.io",
            name,
            "-n",
            "shop",
            "-o",
            "json",
        ],
    );
    export["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("type"), (s("status"), s("reason")))
        })
        .collect()
}

/// Shoal's writes in `cluster`'s audit log after the first `skip` requests, leaving
/// out Lease renewals.
fn writes_since(cluster: &Cluster, skip: usize) -> Vec<String> {
    audited(cluster)
        .into_iter()
        .skip(skip)
        .filter(|r| is_write(r) && r.resource != "leases")
        .map(|r| {
            format!(
                "{} {}{} {}/{} -> {}",
                r.verb,
                r.resource,
                r.subresource.map(|s| format!("/{s}")).unwrap_or_default(),
                r.namespace.unwrap_or_default(),
                r.name.unwrap_or_default(),
                r.code
            )
        })
        .collect()
}

fn sources(pairs: &[(&str, &BTreeSet<String>)]) -> BTreeMap<String, BTreeSet<String>> {
    pairs
        .iter()
        .map(|(c, ips)| ((*c).to_owned(), (*ips).clone()))
        .collect()
}

#[test]
fn exports_become_exact_imports_scale_by_one_slice_unexport_and_conflict_under_rbac() {
    let mut mesh = Mesh::start(&MeshConfig::new(3, 2)).expect("the mesh starts");
    let (c0, c1, c2) = (mesh.cluster(0), mesh.cluster(1), mesh.cluster(2));
    namespace(&mesh);
    apply(c0, &workload(2, 80)).unwrap();
    let ips = pod_ips(c0, 2);
    apply(c0, EXPORT).unwrap();

    // The exact objects, in every importer (c0 imports its own endpoints too).
    let expected = sources(&[("c0", &ips)]);
    for cluster in [c1, c2] {
        let got = wait_imported(cluster, &expected);
        let spec = &got.import["spec"];
        assert_eq!(spec["type"], "ClusterSetIP");
        assert_eq!(
            spec["ports"],
            serde_json::json!([{"name": "http", "protocol": "TCP", "port": 80}])
        );
        let cidr_prefix = format!("10.{}.", 96 + cluster.index());
        let ip = spec["ips"][0].as_str().unwrap();
        assert!(
            ip.starts_with(&cidr_prefix),
            "{ip}: allocated by {}'s API server",
            cluster.context()
        );
        let service = &got.service;
        let derived = service["metadata"]["name"].as_str().unwrap();
        assert!(derived.starts_with("derived-"), "{derived}");
        assert!(service["spec"]["selector"].is_null(), "no selector");
        assert_eq!(service["spec"]["ports"][0]["port"], 80);
        assert_eq!(got.slices.len(), 1, "{:?}", got.slices);
        let slice = &got.slices[0];
        let labels = &slice["metadata"]["labels"];
        assert_eq!(labels["kubernetes.io/service-name"], derived);
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "shoal.dev"
        );
        assert_eq!(labels["multicluster.kubernetes.io/source-cluster"], "c0");
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(
            slice["ports"],
            serde_json::json!([{"name": "http", "protocol": "TCP", "port": 8080}]),
            "the origin's target port"
        );
    }
    wait_for("c0's export Ready", PROPAGATE, || {
        let c = conditions(c0, "web");
        let ready = c.get("Ready").cloned().unwrap_or_default();
        let valid = c.get("Valid").cloned().unwrap_or_default();
        if ready == ("True".into(), "Exported".into()) && valid == ("True".into(), "Valid".into()) {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    })
    .unwrap();

    // Scaling writes exactly one EndpointSlice in each importer, and nothing else.
    let before: Vec<usize> = [c1, c2].iter().map(|c| audited(c).len()).collect();
    let versions: Vec<_> = [c1, c2].iter().map(|c| resource_versions(c)).collect();
    kubectl(
        c0,
        &["scale", "deployment", "web", "-n", "shop", "--replicas=3"],
    )
    .unwrap();
    let ips = pod_ips(c0, 3);
    let expected = sources(&[("c0", &ips)]);
    for (i, cluster) in [c1, c2].into_iter().enumerate() {
        wait_imported(cluster, &expected);
        let after = resource_versions(cluster);
        let changed: Vec<&String> = after
            .iter()
            .filter(|(k, v)| versions[i].get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            changed.len(),
            1,
            "{}: changed {changed:?}",
            cluster.context()
        );
        assert!(changed[0].starts_with("endpointslices/"), "{changed:?}");
        let writes = writes_since(cluster, before[i]);
        assert_eq!(
            writes.len(),
            1,
            "{}: one write per changed slice: {writes:?}",
            cluster.context()
        );
        assert!(
            writes[0].starts_with("patch endpointslices shop/"),
            "{writes:?}"
        );
    }

    // What kubectl shows.
    let table = kubectl(c1, &["get", "serviceimports", "-A"]).unwrap();
    eprintln!("kubectl get serviceimports -A\n{table}");
    let row = table
        .lines()
        .find(|l| l.contains("web"))
        .expect("a row for web");
    assert!(
        row.starts_with("shop") && row.contains("ClusterSetIP"),
        "{table}"
    );
    let leases = kubectl(c1, &["get", "leases", "-n", SHOAL_NAMESPACE]).unwrap();
    let leader = mesh.leader_of(1).expect("c1 has a local leader");
    assert!(
        leases.contains("shoal-leader") && leases.contains(&leader),
        "{leases}"
    );

    // Unexport removes everything within seconds.
    kubectl(
        c0,
        &[
            "delete",
            "serviceexports.multicluster.x-k8s.io",
            "web",
            "-n",
            "shop",
        ],
    )
    .unwrap();
    for cluster in [c0, c1, c2] {
        wait_for("the import removed", Duration::from_secs(15), || {
            let left = resource_versions(cluster);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{}: {e}", cluster.context()));
    }

    // A port conflict: c0 exports again first, then c1 the same name with another port.
    apply(c0, EXPORT).unwrap();
    wait_imported(c2, &expected);
    apply(c1, &workload(1, 9090)).unwrap();
    let c1_ips = pod_ips(c1, 1);
    apply(c1, EXPORT).unwrap();
    for (cluster, name) in [(c0, "c0"), (c1, "c1")] {
        wait_for("Conflict=True PortConflict", PROPAGATE, || {
            let c = conditions(cluster, "web");
            match c.get("Conflict") {
                Some((s, r)) if s == "True" && r == "PortConflict" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let both = sources(&[("c0", &ips), ("c1", &c1_ips)]);
    let got = wait_imported(c2, &both);
    assert_eq!(
        got.import["spec"]["ports"][0]["port"], 80,
        "the older export's port stands"
    );

    // Under RBAC, with the ServiceAccount of deploy/rbac.yaml: not one request refused.
    for cluster in mesh.planes().clusters() {
        let refused: Vec<_> = audited(cluster)
            .into_iter()
            .filter(|r| r.code == 403)
            .collect();
        assert!(refused.is_empty(), "{}: {refused:?}", cluster.context());
        assert!(
            !audited(cluster).is_empty(),
            "the audit log sees Shoal's requests"
        );
    }
    for node in &mesh.nodes {
        let denied = node
            .metric("shoal_backend_errors_total{label=\"denied\"}")
            .unwrap();
        assert_eq!(denied, 0, "{}", node.identity);
    }

    about_api_and_lease_mirror(&mesh);
    another_field_manager_is_counted_and_shown(&mesh);
    a_cluster_that_names_itself_otherwise_refuses_the_node(&mut mesh);
}

/// The About API's properties, created; a quorum lease mirrored into a Lease.
fn about_api_and_lease_mirror(mesh: &Mesh) {
    let c1 = mesh.cluster(1);
    let property = |name: &str| {
        json(
            c1,
            &["get", "clusterproperties.about.k8s.io", name, "-o", "json"],
        )["spec"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(property("cluster.clusterset.k8s.io"), "c1");
    assert_eq!(property("clusterset.k8s.io"), "shoal-test");

    let leader = mesh.leader_of(1).expect("c1 has a local leader");
    let node = mesh.nodes.iter().find(|n| n.identity == leader).unwrap();
    let token = wait_for("the quorum lease held", PROPAGATE, || {
        let answer = node.post("/v1/leases/payments")?;
        let view: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
        match (view["write_ready"].as_bool(), view["token"].as_u64()) {
            (Some(true), Some(token)) => Ok(token),
            _ => Err(view.to_string()),
        }
    })
    .unwrap();
    let lease = wait_for("the quorum lease mirrored", PROPAGATE, || {
        let lease = c1
            .kubectl_json(&[
                "get",
                "lease",
                "payments",
                "-n",
                SHOAL_NAMESPACE,
                "-o",
                "json",
            ])
            .map_err(|e| e.to_string())?;
        if lease["spec"]["holderIdentity"] == "c1" {
            Ok(lease)
        } else {
            Err(lease["spec"].to_string())
        }
    })
    .unwrap();
    let annotation = &lease["metadata"]["annotations"]["shoal.dev/fencing-token"];
    assert_eq!(annotation.as_str(), Some(token.to_string().as_str()));
    assert!(lease["spec"]["renewTime"].is_string());
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    let leases = kubectl(c1, &["get", "leases", "-n", SHOAL_NAMESPACE]).unwrap();
    eprintln!("kubectl get leases -n {SHOAL_NAMESPACE}\n{leases}");
    assert!(
        leases
            .lines()
            .any(|l| l.starts_with("payments") && l.contains("c1")),
        "{leases}"
    );
}

/// A field another manager owns makes Shoal's apply fail with 409: counted, shown on
/// the export's status, and the other manager's value is left alone (no force).
fn another_field_manager_is_counted_and_shown(mesh: &Mesh) {
    let (c0, c1) = (mesh.cluster(0), mesh.cluster(1));
    let intruder = "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceImport\n\
                    metadata: {name: web, namespace: shop}\nspec: {type: Headless}\n";
    let mut command = c1.kubectl();
    command.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=intruder",
        "-f",
        "-",
    ]);
    let out = pipe(command, intruder);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A new port changes the ServiceImport Shoal wants, so it applies it again.
    let two_ports = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
                     spec:\n  selector: {app: web}\n  ports:\n\
                     \x20   - {name: http, port: 80, targetPort: http, protocol: TCP}\n\
                     \x20   - {name: metrics, port: 9100, protocol: TCP}\n";
    apply(c0, two_ports).unwrap();
    wait_for("a 409 shown on c1's export", PROPAGATE, || {
        let c = conditions(c1, "web");
        match c.get("shoal.dev/Applied") {
            Some((s, r)) if s == "False" && r == "FieldManagerConflict" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    let sample = "shoal_backend_conflicts_total{label=\"serviceimports\"}";
    let counted: u64 = mesh.nodes_of(1).map(|n| n.metric(sample).unwrap()).sum();
    assert!(counted >= 1, "the 409 is counted");
    let import = json(
        c1,
        &[
            "get",
            "serviceimports.multicluster.x-k8s.io",
            "web",
            "-n",
            "shop",
            "-o",
            "json",
        ],
    );
    assert_eq!(
        import["spec"]["type"], "Headless",
        "the other manager's field is not forced"
    );
}

/// A node whose cluster's About API names another cluster id refuses to start.
fn a_cluster_that_names_itself_otherwise_refuses_the_node(mesh: &mut Mesh) {
    let index = mesh
        .nodes
        .iter()
        .position(|n| n.identity == "c2-1")
        .unwrap();
    mesh.nodes[index].stop();
    kubectl(
        mesh.cluster(2),
        &[
            "patch",
            "clusterproperties.about.k8s.io",
            "cluster.clusterset.k8s.io",
            "--type=merge",
            "-p",
            r#"{"spec":{"value":"impostor"}}"#,
        ],
    )
    .unwrap();
    let shoal = mesh.shoal().to_owned();
    let node = &mut mesh.nodes[index];
    node.start(&shoal).unwrap();
    let status = wait_for("the node exits", PROPAGATE, || {
        node.exited().ok_or_else(|| "running".to_owned())
    })
    .unwrap();
    assert!(!status.success(), "{status}");
    let tail = shoal_tests::k8s::log_tail(&node.log, 5);
    assert!(
        tail.contains("impostor") && tail.contains("\"c2\""),
        "the error names both values:\n{tail}"
    );
}

fn pipe(mut command: std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn leader_failover_and_an_api_server_outage_lose_nothing_and_withdraw_nothing() {
    let mut mesh = Mesh::start(&MeshConfig::new(3, 2)).expect("the mesh starts");
    namespace(&mesh);
    apply(mesh.cluster(0), &workload(2, 80)).unwrap();
    let ips = pod_ips(mesh.cluster(0), 2);
    apply(mesh.cluster(0), EXPORT).unwrap();
    let expected = sources(&[("c0", &ips)]);
    for i in 1..3 {
        wait_imported(mesh.cluster(i), &expected);
    }
    let withdrawals = |mesh: &Mesh| -> u64 {
        mesh.nodes
            .iter()
            .filter(|n| n.cluster != 0)
            .map(|n| n.metric("shoal_withdrawals_total").unwrap())
            .sum()
    };
    let withdrawn_before = withdrawals(&mesh);

    // kill -9 the leader of c0: the other replica takes over within the Lease.
    let leader = mesh.leader_of(0).expect("c0 has a leader");
    let killed = mesh
        .nodes
        .iter()
        .position(|n| n.identity == leader)
        .unwrap();
    let killed_at = Instant::now();
    mesh.nodes[killed].kill();
    let successor = wait_for("another replica leads c0", TAKEOVER, || {
        // Meanwhile every importer keeps c0's endpoints.
        for i in 1..3 {
            let got = imported(mesh.cluster(i))?;
            if addresses(&got.slices, "c0") != ips {
                return Err(format!("c{i} lost c0's endpoints"));
            }
        }
        match mesh.leader_of(0) {
            Some(h) if h != leader => Ok(h),
            other => Err(format!("holder {other:?}")),
        }
    })
    .unwrap();
    eprintln!(
        "c0: {leader} killed, {successor} leads after {:?}",
        killed_at.elapsed()
    );
    // The new leader publishes: a change still reaches the importers.
    kubectl(
        mesh.cluster(0),
        &["scale", "deployment", "web", "-n", "shop", "--replicas=3"],
    )
    .unwrap();
    let ips = pod_ips(mesh.cluster(0), 3);
    let expected = sources(&[("c0", &ips)]);
    for i in 1..3 {
        wait_imported(mesh.cluster(i), &expected);
    }
    assert_eq!(
        withdrawals(&mesh),
        withdrawn_before,
        "no peer withdrew c0 in the handover"
    );

    // c1's API server down for 60 s: c1's nodes stay in the mesh, nothing is deleted.
    let c1_versions = resource_versions(mesh.cluster(1));
    mesh.planes_mut().stop_apiserver(1);
    let outage = Instant::now();
    let down_for = Duration::from_secs(60);
    // Throughout the outage the other clusters keep their imports, and no one withdraws.
    while outage.elapsed() < down_for {
        let got = imported(mesh.cluster(2)).expect("c2 keeps its import");
        assert_eq!(addresses(&got.slices, "c0"), ips);
        assert_eq!(withdrawals(&mesh), withdrawn_before);
        for node in mesh.nodes.iter_mut().filter(|n| n.cluster == 1) {
            assert!(
                node.running(),
                "{} keeps running without its API server",
                node.identity
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let skip = audited(mesh.cluster(1)).len();
    mesh.planes_mut()
        .start_apiserver(1, Duration::from_secs(60))
        .expect("c1's API server restarts");
    // Back: a replica leads c1 again and its watches have relisted.
    let relists = |mesh: &Mesh| -> u64 {
        mesh.nodes
            .iter()
            .filter(|n| n.cluster == 1)
            .map(|n| {
                n.metric("shoal_backend_relists_total{label=\"endpointslices\"}")
                    .unwrap_or(0)
            })
            .sum()
    };
    let relisted = relists(&mesh);
    wait_for(
        "c1 relisted and leads again",
        Duration::from_secs(90),
        || {
            let leads = mesh
                .nodes
                .iter()
                .filter(|n| n.cluster == 1)
                .any(|n| n.metric("shoal_publisher").unwrap_or(0) == 1);
            if leads && relists(&mesh) > relisted {
                Ok(())
            } else {
                Err(format!("leads {leads}, relists {}", relists(&mesh)))
            }
        },
    )
    .unwrap();
    // Then a quiet stretch: nothing written, nothing deleted (Lease renewals aside).
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(10) {
        let writes = writes_since(mesh.cluster(1), skip);
        assert!(writes.is_empty(), "writes after the outage: {writes:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        resource_versions(mesh.cluster(1)),
        c1_versions,
        "every object as it was"
    );
    assert_eq!(withdrawals(&mesh), withdrawn_before);
}
