//! Backend work never starves SWIM: two standalone `shoal` processes on loopback, and
//! one of them is handed a pathological `in/` file (100,000 nested `[`) and 2,000
//! exports at once, plus an export too large to be valid. Throughout, its peer must see
//! it alive on every sample, nothing may be withdrawn, and its own `/readyz` must keep
//! answering. The invalid export's status must be written at once, not when some
//! import changes.

use std::fmt::Write as _;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shoal_tests::k8s::wait_for;
use shoal_tests::load::{
    assert_nothing_withdrawn, imported_from, observe, states_of, write_atomically, write_load,
};
use shoal_tests::mesh::{Mesh, MeshConfig};

/// Exports handed to the busy node.
const EXPORTS: usize = 2_000;

/// A service with 1,001 endpoints in one slice: more than an export may carry.
fn oversized_yaml() -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: huge, namespace: load}\n\
         spec:\n  ports:\n  - {name: http, port: 80, protocol: TCP}\n---\n\
         apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n\
         metadata: {name: huge, namespace: load}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: huge-abcde\n  namespace: load\n\
         \x20 labels: {kubernetes.io/service-name: huge}\n\
         addressType: IPv4\nports:\n- {name: http, port: 80, protocol: TCP}\nendpoints:\n",
    );
    for i in 0..1_001 {
        writeln!(
            out,
            "- addresses: [\"10.200.{}.{}\"]\n  conditions: {{ready: true}}",
            i / 250,
            i % 250 + 1
        )
        .expect("writing to a String");
    }
    out
}

#[test]
fn a_pathological_input_and_2000_exports_never_make_a_peer_suspect_the_node() {
    let mesh = Mesh::start(&MeshConfig::standalone(2)).expect("the mesh starts");
    let (busy, peer) = (&mesh.nodes[0], &mesh.nodes[1]);
    wait_for("c1 sees c0 alive", Duration::from_secs(30), || {
        let states = states_of(peer, "c0")?;
        (states == ["alive"])
            .then_some(())
            .ok_or(format!("{states:?}"))
    })
    .expect("the two nodes meet");

    let stop = Arc::new(AtomicBool::new(false));
    let observer = observe(Arc::clone(&stop), peer.http, busy.http, "c0");
    let standalone = busy.standalone_dir.as_ref().expect("a standalone node");
    let in_dir = standalone.join("in");
    write_atomically(&in_dir, "huge.yaml", &oversized_yaml()).expect("write huge.yaml");
    write_load(&in_dir, EXPORTS).expect("write the load");

    let imported = wait_for(
        "c1 imports every export of c0",
        Duration::from_secs(180),
        || {
            let n = imported_from(peer, "c0")?;
            (n == EXPORTS).then_some(n).ok_or(format!("{n} imported"))
        },
    );
    // The peer keeps probing the busy node: the observer watches five more of its
    // probes answered after the load, so a suspicion raised late is seen too.
    let acks = || peer.metric("shoal_swim_ack_seconds_count{cluster=\"c0\",replica=\"0\"}");
    let acked = acks().expect("the peer's metrics");
    let probed = wait_for(
        "five more probes of c0 answered",
        Duration::from_secs(60),
        || {
            let now = acks()?;
            (now >= acked + 5)
                .then_some(())
                .ok_or(format!("{} answered", now - acked))
        },
    );
    // The status of the invalid export: written by the scan that found it.
    let status = standalone.join("out/serviceexport-status.load.huge.yaml");
    let status = wait_for(
        "the oversized export's status",
        Duration::from_secs(30),
        || fs::read_to_string(&status).map_err(|e| e.to_string()),
    );
    stop.store(true, Ordering::Relaxed);
    let seen = observer.join().expect("the observer finishes");
    imported.expect("all 2,000 exports reach the peer");
    probed.expect("the peer probes c0 after the load");
    let status = status.expect("the invalid export has a status");
    assert!(
        status.contains("status: 'False'") || status.contains("status: \"False\""),
        "{status}"
    );
    assert!(
        status.contains("endpoints"),
        "the reason names the endpoints: {status}"
    );
    seen.assert_clean();
    assert_nothing_withdrawn(&mesh);
    let suspected = peer
        .metric("shoal_members_suspected_total")
        .expect("metrics");
    assert_eq!(suspected, 0, "the peer's probes suspected a member");
    let refuted = busy
        .metric("shoal_suspicions_refuted_total")
        .expect("metrics");
    assert_eq!(refuted, 0, "the busy node refuted a suspicion of itself");
    let deep = busy
        .metric("shoal_backend_skipped_total{label=\"too_deep\"}")
        .expect("metrics");
    assert!(deep >= 1, "the deep file is counted as skipped");
}
