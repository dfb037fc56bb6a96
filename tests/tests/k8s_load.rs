//! The Kubernetes backend never holds up the driver: two real control planes, one
//! `shoal` replica each. c0 is handed 2,000 exported Services (each without a
//! selector, with its own EndpointSlice of two endpoints) through its API server, and
//! then loses that API server for a while. Throughout, c1 must see c0 alive on every
//! sample, c0's `/readyz` must keep answering, c1's imports never shrink, and nothing
//! is withdrawn; in the end c1 imports all 2,000, and one more export made after the
//! outage.
// Real processes on the wall clock (phase timings are printed); a failed step panics
// with what it saw.
#![allow(clippy::disallowed_methods)]

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_tests::k8s::{Cluster, Timeout, wait_for};
use shoal_tests::load::{
    assert_nothing_withdrawn, family_total, imported_from, observe, service_yaml, states_of,
};
use shoal_tests::mesh::{Mesh, MeshConfig, Node, apply};

/// Exported Services created in c0 before its API server's outage (one more is
/// created after it).
const SERVICES: usize = 2_000;
/// Services per `kubectl apply` (three objects each: Service, ServiceExport, slice).
const SERVICES_PER_APPLY: usize = 500;
/// How long c0's API server stays down (at least; until then its node has also
/// counted a failed API call).
const OUTAGE: Duration = Duration::from_secs(10);
/// The deadline for c0's node to count a failed API call once its server is down.
const OUTAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long c0's API server may take to be ready again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// How long c0's node may take to lead again once its API server is back.
const LEAD_AGAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long c1 may take to import all of c0's exports after the outage.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(240);
/// The backend counters of failed API calls (`shoal_backend_<name>_total{label}`).
const API_FAILURE_FAMILIES: [&str; 3] = [
    "shoal_backend_watch_errors_total",
    "shoal_backend_errors_total",
    "shoal_backend_start_errors_total",
];

/// The failed API calls `node`'s Kubernetes backend has counted.
fn api_failures(node: &Node) -> Result<u64, String> {
    let text = node.metrics()?;
    Ok(API_FAILURE_FAMILIES
        .iter()
        .map(|family| family_total(&text, family))
        .sum())
}

/// Applies `yaml` to `cluster` server-side, as [`apply`] does, but without kubectl's
/// own field validation, which costs kubectl about 15 ms of CPU per object and made
/// the apply four times slower on a 2-core machine. The API server still validates every
/// object against its schema, and the test checks that every service arrives.
fn apply_bulk(cluster: &Cluster, yaml: &str) {
    let mut child = cluster
        .kubectl()
        .args(["apply", "--server-side", "--field-manager=shoal-tests"])
        .args(["--validate=false", "--output=name", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(yaml.as_bytes())
        .expect("kubectl reads the objects");
    let output = child.wait_with_output().expect("kubectl finishes");
    assert!(
        output.status.success(),
        "{}: kubectl apply: {}",
        cluster.context(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Creates the namespace `load` in both clusters, then the 2,000 services in c0.
fn create_services(mesh: &Mesh) {
    for cluster in mesh.planes().clusters() {
        apply(
            cluster,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: load}\n",
        )
        .expect("the namespace");
    }
    for first in (0..SERVICES).step_by(SERVICES_PER_APPLY) {
        let mut yaml = String::new();
        for index in first..(first + SERVICES_PER_APPLY).min(SERVICES) {
            service_yaml(&mut yaml, index);
        }
        apply_bulk(mesh.cluster(0), &yaml);
    }
}

/// Stops c0's API server for at least [`OUTAGE`], and until c0's node has counted a
/// failed API call; then starts it again.
fn api_server_outage(mesh: &mut Mesh) {
    let failed_before = api_failures(&mesh.nodes[0]).expect("c0's metrics");
    mesh.planes_mut().stop_apiserver(0);
    let down = Instant::now();
    let busy = &mesh.nodes[0];
    let failed = wait_for("c0's node counts failed API calls", OUTAGE_TIMEOUT, || {
        let failed = api_failures(busy)?.saturating_sub(failed_before);
        match (failed, down.elapsed()) {
            (0, _) => Err("no failed API call yet".to_owned()),
            (n, held) if held < OUTAGE => Err(format!("{n} failed, down {held:?}")),
            (n, _) => Ok(n),
        }
    })
    .expect("c0's node notices its API server is gone");
    let publisher = busy.metric("shoal_publisher").expect("c0's metrics");
    eprintln!(
        "c0's API server down {:?}: {failed} failed API calls, shoal_publisher {publisher}",
        down.elapsed()
    );
    mesh.planes_mut()
        .start_apiserver(0, RESTART_TIMEOUT)
        .expect("c0's API server restarts");
    eprintln!("c0's API server back after {:?}", down.elapsed());
}

/// Once c0's API server is back: c0's node leads again, and one more export, made
/// now, reaches c1 with all the others (so c0's watches work again). The result of
/// waiting for c1's imports, for the caller to check once the observer has stopped.
fn after_the_outage(mesh: &Mesh) -> Result<usize, Timeout> {
    let busy = &mesh.nodes[0];
    wait_for("c0's node leads again", LEAD_AGAIN_TIMEOUT, || {
        match busy.metric("shoal_publisher")? {
            1 => Ok(()),
            n => Err(format!("shoal_publisher {n}")),
        }
    })
    .expect("c0's node leads once its API server is back");
    let mut late = String::new();
    service_yaml(&mut late, SERVICES);
    apply(mesh.cluster(0), &late).expect("c0 takes the late service");
    let imported = wait_for("c1 imports every export of c0", IMPORT_TIMEOUT, || {
        let n = imported_from(&mesh.nodes[1], "c0")?;
        (n == SERVICES + 1)
            .then_some(n)
            .ok_or(format!("{n} imported"))
    });
    let relists = busy
        .metrics()
        .map(|text| family_total(&text, "shoal_backend_relists_total"));
    eprintln!("c0's watches relisted {relists:?} times in all");
    imported
}

#[test]
fn two_thousand_exports_and_an_api_server_outage_never_make_a_peer_suspect_the_node() {
    let started = Instant::now();
    let mut mesh = Mesh::start(&MeshConfig::new(2, 1)).expect("the mesh starts");
    wait_for("c1 sees c0 alive", Duration::from_secs(30), || {
        let states = states_of(&mesh.nodes[1], "c0")?;
        (states == ["alive"])
            .then_some(())
            .ok_or(format!("{states:?}"))
    })
    .expect("the two nodes meet");
    eprintln!("mesh up after {:?}", started.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let observer = observe(
        Arc::clone(&stop),
        mesh.nodes[1].http,
        mesh.nodes[0].http,
        "c0",
    );
    let phase = Instant::now();
    create_services(&mesh);
    eprintln!("{SERVICES} services applied in {:?}", phase.elapsed());
    api_server_outage(&mut mesh);
    let phase = Instant::now();
    let imported = after_the_outage(&mesh);
    eprintln!("imports complete {:?} after the outage", phase.elapsed());
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().expect("the observer finishes");
    eprintln!(
        "{} samples; most imports seen {}; slowest /readyz {:?}; total {:?}",
        seen.samples,
        seen.imports_max,
        seen.readyz_slowest,
        started.elapsed()
    );
    imported.expect("all 2,000 exports, and the one made after the outage, reach c1");
    seen.assert_clean();
    assert_nothing_withdrawn(&mesh);
}
