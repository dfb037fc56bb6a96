//! Traffic policy (affinity) in the Kubernetes backend, against two real control
//! planes with one `shoal` replica each. `rebel-base` (a Deployment of kwok pods, a
//! Service and a ServiceExport) runs in c0 and c1; each cluster imports it, and only
//! the *active* origins' EndpointSlices sit under its derived Service, while the
//! ServiceImport's `status.clusters` keeps naming every origin.
//!
//! - No annotation (`none`): both origins' slices in each cluster.
//! - `shoal.dev/affinity: local` on c0's export (the oldest) first: the policy stands
//!   at once everywhere, and c1's export, which still says `none`, puts both exports in
//!   `Conflict=True` `AffinityConflict`; once c1's says `local` too, the conflict
//!   clears. Each cluster keeps to its own slices (`shoal.dev/traffic: local`).
//! - Every local endpoint gone (c0's Deployment scaled to 0): c0's derived Service gets
//!   c1's slices (`local-failover`); scaled back, c0's own again (`local`). The times
//!   are printed, never asserted.
//! - `shoal.dev/affinity: sideways` on c0's export: `Valid=False` `InvalidAffinity`,
//!   and the export is unexported as one that disappears is (the driver's rule, see
//!   `node/tests/runtime_driver.rs`): c0 leaves every ServiceImport's
//!   `status.clusters`, c1's export keeps serving both clusters (c0 fails over to it).
//!   A valid value again brings c0 back.
// Real processes on the wall clock; a failed step panics with what it saw.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use shoal_tests::k8s::{Cluster, wait_for};
use shoal_tests::mesh::{Mesh, MeshConfig, apply, kubectl, repo_root, shoal_binary};

/// How long a change may take to show in an importer's objects (loopback, the lan
/// preset: well under a second is typical; this is room for a loaded machine).
const PROPAGATE: Duration = Duration::from_secs(30);
/// Pods of `rebel-base` per cluster.
const PODS: usize = 2;
const NAME: &str = "rebel-base";
const NAMESPACE: &str = "default";
const EXPORT: &str = "serviceexports.multicluster.x-k8s.io";

fn workload() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {NAME}, namespace: {NAMESPACE}}}
spec:
  replicas: {PODS}
  selector: {{matchLabels: {{app: {NAME}}}}}
  template:
    metadata: {{labels: {{app: {NAME}}}}}
    spec:
      containers:
        - name: {NAME}
          image: example.invalid/{NAME}:1
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {NAME}, namespace: {NAMESPACE}}}
spec:
  selector: {{app: {NAME}}}
  ports: [{{name: http, port: 80, targetPort: http, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {{name: {NAME}, namespace: {NAMESPACE}}}
"#
    )
}

/// Fails when the `shoal` binary under test is older than a file of the node's
/// sources: `cargo nextest run -p shoal-tests` builds the library, not the binary, so
/// a stale binary would test old code. `$SHOAL_BIN` is taken as it is.
fn check_binary_is_current() {
    if std::env::var_os("SHOAL_BIN").is_some() {
        return;
    }
    let shoal = shoal_binary().unwrap();
    let built = modified(&shoal);
    let mut newest = (SystemTime::UNIX_EPOCH, repo_root());
    for dir in ["node/src", "proto/src"] {
        newest_file(&repo_root().join(dir), &mut newest);
    }
    newest_file(&repo_root().join("node/Cargo.toml"), &mut newest);
    assert!(
        newest.0 <= built,
        "{} is older than {}: build it first (cargo build -p shoal-node --bin shoal)",
        shoal.display(),
        newest.1.display()
    );
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn newest_file(path: &Path, newest: &mut (SystemTime, std::path::PathBuf)) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            newest_file(&entry.unwrap().path(), newest);
        }
    } else if path.extension().is_some_and(|e| e == "rs" || e == "toml") {
        let at = modified(path);
        if at > newest.0 {
            *newest = (at, path.to_owned());
        }
    }
}

/// The IPs of `rebel-base`'s pods in `cluster`, once exactly `count` exist, all Running
/// with an IP and none terminating.
fn pod_ips(cluster: &Cluster, count: usize) -> BTreeSet<String> {
    let selector = format!("app={NAME}");
    wait_for(&format!("{count} pods Running"), PROPAGATE, || {
        let list = cluster
            .kubectl_json(&[
                "get", "pods", "-n", NAMESPACE, "-l", &selector, "-o", "json",
            ])
            .map_err(|e| e.to_string())?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let ips: BTreeSet<String> = items
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
            .collect();
        if ips.len() == count && items.len() == count {
            Ok(ips)
        } else {
            Err(format!("{} pods, Running with IPs {ips:?}", items.len()))
        }
    })
    .unwrap_or_else(|e| panic!("{}: {e}", cluster.context()))
}

/// What an importing cluster holds for `rebel-base`, from the objects Shoal wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Imported {
    /// `status.clusters`: every origin.
    origins: BTreeSet<String>,
    /// `shoal.dev/traffic` and `shoal.dev/active-clusters` (absent for `none`).
    traffic: Option<String>,
    active: Option<String>,
    /// Endpoint addresses by `source-cluster`, of the slices under the derived Service.
    slices: BTreeMap<String, BTreeSet<String>>,
}

fn imported(cluster: &Cluster) -> Result<Imported, String> {
    let get = |args: &[&str]| cluster.kubectl_json(args).map_err(|e| e.to_string());
    let import = get(&[
        "get",
        "serviceimports.multicluster.x-k8s.io",
        NAME,
        "-n",
        NAMESPACE,
        "-o",
        "json",
    ])?;
    let selector = format!("multicluster.kubernetes.io/service-name={NAME}");
    let services = get(&[
        "get", "services", "-n", NAMESPACE, "-l", &selector, "-o", "json",
    ])?;
    let derived: Vec<&str> = services["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .collect();
    let [derived] = derived[..] else {
        return Err(format!("derived Services {derived:?}, want one"));
    };
    if !derived.starts_with("derived-") {
        return Err(format!("derived Service {derived}"));
    }
    let selector = format!("{selector},endpointslice.kubernetes.io/managed-by=shoal.dev");
    let list = get(&[
        "get",
        "endpointslices",
        "-n",
        NAMESPACE,
        "-l",
        &selector,
        "-o",
        "json",
    ])?;
    let mut slices: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for slice in list["items"].as_array().into_iter().flatten() {
        let labels = &slice["metadata"]["labels"];
        if labels["kubernetes.io/service-name"] != derived {
            return Err(format!(
                "slice {} not under the derived Service {derived}",
                slice["metadata"]["name"]
            ));
        }
        let source = labels["multicluster.kubernetes.io/source-cluster"]
            .as_str()
            .ok_or("a slice without its source cluster")?;
        let ips = slices.entry(source.to_owned()).or_default();
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            ips.extend(endpoint["addresses"][0].as_str().map(str::to_owned));
        }
    }
    let annotation = |key: &str| {
        import["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_owned)
    };
    Ok(Imported {
        origins: import["status"]["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["cluster"].as_str().map(str::to_owned))
            .collect(),
        traffic: annotation("shoal.dev/traffic"),
        active: annotation("shoal.dev/active-clusters"),
        slices,
    })
}

/// What [`imported`] must show: the origins, the traffic annotations (`None` for
/// affinity `none`) and exactly these sources' addresses.
fn expect(
    origins: &[&str],
    traffic: Option<(&str, &str)>,
    slices: &[(&str, &BTreeSet<String>)],
) -> Imported {
    Imported {
        origins: origins.iter().map(|&o| o.to_owned()).collect(),
        traffic: traffic.map(|(t, _)| t.to_owned()),
        active: traffic.map(|(_, a)| a.to_owned()),
        slices: slices
            .iter()
            .map(|&(source, ips)| (source.to_owned(), ips.clone()))
            .collect(),
    }
}

/// Waits until `cluster` shows exactly `want`; returns how long that took from `since`.
fn wait_imported(cluster: &Cluster, what: &str, want: &Imported, since: Instant) -> Duration {
    wait_for(&format!("{}: {what}", cluster.context()), PROPAGATE, || {
        let got = imported(cluster)?;
        if &got == want {
            Ok(since.elapsed())
        } else {
            Err(format!("{got:?}, want {want:?}"))
        }
    })
    .unwrap()
}

/// The ServiceExport's conditions: type -> (status, reason, message).
fn conditions(cluster: &Cluster) -> Result<BTreeMap<String, (String, String, String)>, String> {
    let export = cluster
        .kubectl_json(&["get", EXPORT, NAME, "-n", NAMESPACE, "-o", "json"])
        .map_err(|e| e.to_string())?;
    Ok(export["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("type"), (s("status"), s("reason"), s("message")))
        })
        .collect())
}

/// Waits until `cluster`'s ServiceExport has condition `type_` with `status` and
/// `reason`; returns its message.
fn wait_condition(cluster: &Cluster, type_: &str, status: &str, reason: &str) -> String {
    let what = format!("{}: {type_}={status} {reason}", cluster.context());
    wait_for(&what, PROPAGATE, || {
        let all = conditions(cluster)?;
        match all.get(type_) {
            Some((s, r, message)) if s == status && r == reason => Ok(message.clone()),
            _ => Err(format!("{all:?}")),
        }
    })
    .unwrap()
}

fn annotate(cluster: &Cluster, value: &str) {
    let annotation = format!("shoal.dev/affinity={value}");
    kubectl(
        cluster,
        &[
            "annotate",
            EXPORT,
            NAME,
            "-n",
            NAMESPACE,
            &annotation,
            "--overwrite",
        ],
    )
    .unwrap();
}

fn scale(cluster: &Cluster, replicas: usize) {
    let replicas = format!("--replicas={replicas}");
    kubectl(
        cluster,
        &["scale", "deployment", NAME, "-n", NAMESPACE, &replicas],
    )
    .unwrap();
}

#[test]
fn affinity_local_keeps_to_own_slices_fails_over_when_none_is_ready_and_comes_back() {
    check_binary_is_current();
    let started = Instant::now();
    let mesh = Mesh::start(&MeshConfig::new(2, 1)).expect("the mesh starts");
    let (c0, c1) = (mesh.cluster(0), mesh.cluster(1));
    println!(
        "2 control planes and 2 Shoal nodes ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // c0's export first: it is the oldest (the MCS rule; a tie goes to c0 by name too).
    apply(c0, &workload()).unwrap();
    apply(c1, &workload()).unwrap();
    let ips0 = pod_ips(c0, PODS);
    let ips1 = pod_ips(c1, PODS);

    // 1. No annotation, affinity `none`: every origin's slices, no traffic annotations.
    let both = ["c0", "c1"];
    let all = expect(&both, None, &[("c0", &ips0), ("c1", &ips1)]);
    let now = Instant::now();
    for cluster in [c0, c1] {
        wait_imported(cluster, "affinity none: every origin", &all, now);
    }

    // 2. `local` on the oldest export: it stands everywhere at once, and the other
    //    export, still `none`, is in conflict with it (both exports say so).
    annotate(c0, "local");
    let local0 = expect(&both, Some(("local", "c0")), &[("c0", &ips0)]);
    let local1 = expect(&both, Some(("local", "c1")), &[("c1", &ips1)]);
    let now = Instant::now();
    wait_imported(c0, "affinity local: c0's own slices only", &local0, now);
    wait_imported(c1, "the oldest export's local: c1's own only", &local1, now);
    let stands = wait_condition(c0, "Conflict", "True", "AffinityConflict");
    let loses = wait_condition(c1, "Conflict", "True", "AffinityConflict");
    assert!(
        stands.contains("this cluster's definition stands"),
        "{stands}"
    );
    assert!(
        loses.contains("an older export's definition stands"),
        "{loses}"
    );
    annotate(c1, "local");
    for cluster in [c0, c1] {
        wait_condition(cluster, "Conflict", "False", "NoConflicts");
        wait_condition(cluster, "Valid", "True", "Valid");
    }
    wait_imported(c0, "affinity local: c0's own slices only", &local0, now);
    wait_imported(c1, "affinity local: c1's own slices only", &local1, now);

    // 3. Every local endpoint of c0 gone: c0 fails over to c1's ready endpoints; c1
    //    keeps to its own. c0 is still an origin (it exports, with no endpoint).
    scale(c0, 0);
    let scaled = Instant::now();
    let failover = expect(&both, Some(("local-failover", "c1")), &[("c1", &ips1)]);
    let took = wait_imported(c0, "local-failover: c1's slices", &failover, scaled);
    println!(
        "c0 scaled to 0: its derived Service had c1's slices (local-failover) {} ms after \
         the scale (printed, never asserted; polled every 200 ms)",
        took.as_millis()
    );
    wait_imported(c1, "c1 keeps to its own", &local1, scaled);

    // 4. c0's pods back: its own slices again, c1's gone.
    scale(c0, PODS);
    let scaled = Instant::now();
    let ips0 = pod_ips(c0, PODS);
    let local0 = expect(&both, Some(("local", "c0")), &[("c0", &ips0)]);
    let took = wait_imported(c0, "back to local: c0's own slices", &local0, scaled);
    println!(
        "c0 scaled back to {PODS}: its own slices only again (local) {} ms after the scale \
         (printed, never asserted)",
        took.as_millis()
    );
    wait_imported(c1, "c1 keeps to its own", &local1, scaled);

    // 5. A value Shoal does not know: Valid=False InvalidAffinity, and the invalid
    //    export is unexported, as one that disappears is. c1's export keeps serving:
    //    c0 has no origin of its own left and fails over to c1; c1 keeps to its own.
    annotate(c0, "sideways");
    let now = Instant::now();
    let message = wait_condition(c0, "Valid", "False", "InvalidAffinity");
    assert!(message.contains("sideways"), "{message}");
    wait_condition(c0, "Ready", "False", "Failed");
    let only_c1 = ["c1"];
    let invalid0 = expect(&only_c1, Some(("local-failover", "c1")), &[("c1", &ips1)]);
    let invalid1 = expect(&only_c1, Some(("local", "c1")), &[("c1", &ips1)]);
    wait_imported(
        c0,
        "c0's invalid export withdrawn; c1 serves",
        &invalid0,
        now,
    );
    wait_imported(c1, "c0's invalid export withdrawn", &invalid1, now);

    // A valid value again: c0 exports again and keeps to its own.
    annotate(c0, "local");
    let now = Instant::now();
    wait_condition(c0, "Valid", "True", "Valid");
    wait_imported(c0, "c0 exports again: its own slices", &local0, now);
    wait_imported(c1, "c0 an origin again; c1 keeps to its own", &local1, now);
    println!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}
