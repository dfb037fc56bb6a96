#![allow(clippy::unwrap_used)]
//! Each invariant checker can fail: fed a broken state, it says so. (A checker that
//! never fails proves nothing.)

use std::sync::Arc;

use shoal_node::core::{Command, Config, Durability, ExportSpec, Node, PersistedState, Time};
use shoal_proto::Affinity;
use shoal_proto::wire::Channel;
use shoal_proto::{
    ClusterId, ClusterKey, Endpoint, EndpointConditions, ExportRecord, IpAddress, KeyRing,
    MemberId, Message, NetworkMode, PortProtocol, ReplicaId, ServiceKey, ServicePort,
    ServiceProperties, ServiceType, SignedRecord,
};
use shoal_sim::disk::Disk;
use shoal_sim::invariants::affinity::{
    AffinityBounds, AffinityCheck, ImportState, Importer, OriginState, RttTruth,
};
use shoal_sim::invariants::authenticity::Authenticity;
use shoal_sim::invariants::convergence::{Convergence, LiveState};
use shoal_sim::invariants::determinism::check_same_trace;
use shoal_sim::invariants::monotonicity;
use shoal_sim::invariants::withdrawal::Withdrawal;
use shoal_sim::keyspace::KeySpace;
use shoal_sim::topology::addr;

fn cluster(name: &str) -> ClusterId {
    ClusterId::new(name).unwrap()
}

fn key(name: &str) -> ClusterKey {
    ClusterKey::from_seed(cluster(name), [name.len() as u8 + name.as_bytes()[0]; 32])
}

fn ring() -> KeyRing {
    let mut ring = KeyRing::new();
    for name in ["a", "b"] {
        ring.insert(cluster(name), key(name).public()).unwrap();
    }
    ring
}

fn web() -> ServiceKey {
    ServiceKey::new("default", "web").unwrap()
}

fn endpoint(last: u8) -> Endpoint {
    Endpoint {
        addresses: vec![IpAddress::V4([10, 0, 0, last])],
        conditions: EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        },
        zone: None,
        hostname: None,
    }
}

fn record(origin: &str, version: u64) -> ExportRecord {
    ExportRecord {
        origin: cluster(origin),
        service: web(),
        version,
        export_created_ms: 1,
        published_ms: 0,
        service_type: ServiceType::ClusterSetIp,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: PortProtocol::Tcp,
            port: 80,
            target_port: 80,
            app_protocol: None,
        }],
        endpoints: vec![endpoint(1)],
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
        tombstone: false,
    }
}

fn node(name: &str, index: usize, persisted: PersistedState) -> Node {
    let member = MemberId {
        cluster: cluster(name),
        replica: ReplicaId(0),
    };
    let config = Config::wan(member, addr(index), 2);
    Node::new(
        config,
        key(name),
        ring(),
        Time::from_millis(1),
        9,
        persisted,
    )
    .unwrap()
}

fn keys() -> KeySpace {
    KeySpace::new([&cluster("a"), &cluster("b")], &[web()])
}

/// Carries out a node's persist commands on `disk`; returns its push frames.
fn drain(node: &mut Node, disk: &mut Disk) -> Vec<Vec<u8>> {
    let mut pushes = Vec::new();
    for command in node.take_commands() {
        match command {
            Command::Persist { ops, durability } => disk.write(&keys(), &ops, durability),
            Command::Send {
                kind: "push",
                bytes,
                ..
            } => pushes.push(bytes),
            _ => {}
        }
    }
    pushes
}

fn export(node: &mut Node, last: u8) {
    let spec = ExportSpec {
        service: web(),
        export_created_ms: 1,
        service_type: ServiceType::ClusterSetIp,
        ports: Vec::new(),
        endpoints: vec![endpoint(last)],
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
    };
    node.handle_export(Time::from_millis(2), spec).unwrap();
}

#[test]
fn authenticity_rejects_forged_and_tampered_records() {
    let truth = ring();
    let mut checker = Authenticity::default();
    let genuine = Arc::new(key("a").sign(record("a", 1)).unwrap().into_inner());
    assert!(checker.check(&truth, &genuine).is_ok());
    let forged = Arc::new(key("b").sign_unchecked(record("a", 2)));
    assert!(
        checker.check(&truth, &forged).is_err(),
        "b signed a record of a"
    );
    let mut tampered = SignedRecord::clone(&genuine);
    tampered.record.endpoints = vec![endpoint(66)];
    assert!(
        checker.check(&truth, &Arc::new(tampered)).is_err(),
        "same signature, other bytes"
    );
}

#[test]
fn monotonicity_catches_a_version_going_back() {
    let older = key("a").sign(record("a", 4)).unwrap().into_inner();
    assert!(monotonicity::check_write(5, &older).is_err());
    assert!(monotonicity::check_write(4, &older).is_ok());
}

#[test]
fn monotonicity_catches_a_restart_that_lost_durable_records() {
    let mut disk = Disk::default();
    let mut a = node("a", 0, PersistedState::default());
    export(&mut a, 1);
    drain(&mut a, &mut disk);
    disk.crash();
    let good = node("a", 0, disk.persisted(&keys()));
    assert!(monotonicity::check_restore(&disk, &good).is_ok());
    let amnesiac = node("a", 0, PersistedState::default());
    assert!(monotonicity::check_restore(&disk, &amnesiac).is_err());
    assert!(
        monotonicity::check_view_stored(&keys(), &Disk::default(), &good).is_err(),
        "a view holding what the store never saw"
    );
}

#[test]
fn withdrawal_catches_a_dead_cluster_still_imported() {
    let mut w = Withdrawal::new(2, 10_000_000, 5_000_000);
    w.died(1, 0, vec![0]);
    assert!(w.check_import(14_000_000, 0, 1, 0).is_ok());
    assert!(w.check_import(16_000_000, 0, 1, 0).is_err());
}

const S: u64 = 1_000_000;

/// Three clusters, one node each, one service with `affinity`, every origin exported
/// and ready from t = 0. Ready bound 5 s, down bound 20 s.
fn affinity_check() -> AffinityCheck {
    let bounds = AffinityBounds {
        ready_us: 5 * S,
        down_us: 20 * S,
        grace_us: 10 * S,
        margin_us: 10_000,
        probe_round_us: 2 * S,
    };
    let mut check = AffinityCheck::new(bounds, 3, vec![0, 1, 2], vec!["web".into()]);
    for c in 0..3 {
        check.set_origin(0, c, 0, true, true);
    }
    check
}

/// An import of `affinity` whose origins 0, 1, 2 are active as `active` says, each
/// record with a ready endpoint.
fn import_state(affinity: Affinity, active: [bool; 3]) -> ImportState {
    ImportState {
        affinity,
        origins: (0..3)
            .map(|c| OriginState {
                cluster: c,
                active: active[c],
                ready: true,
            })
            .collect(),
    }
}

fn importer<'a>(node: usize, up: &'a dyn Fn(usize) -> bool) -> Importer<'a> {
    Importer {
        node,
        cluster: node,
        since_us: 0,
        up,
    }
}

#[test]
fn affinity_catches_an_import_without_traffic_or_off_its_policy() {
    let mut check = affinity_check();
    let all_up = |_: usize| true;
    let node0 = importer(0, &all_up);
    check.applied(
        S,
        0,
        0,
        Some(import_state(Affinity::Remote, [false, true, true])),
    );
    assert!(check.check_view(&node0, 0).is_ok());
    check.applied(S, 0, 0, Some(import_state(Affinity::Remote, [false; 3])));
    assert!(
        check.check_view(&node0, 0).is_err(),
        "no active origin while all are ready"
    );
    check.applied(
        S,
        0,
        0,
        Some(import_state(Affinity::Local, [true, true, false])),
    );
    assert!(
        check.check_view(&node0, 0).is_err(),
        "a remote one beside a ready local one"
    );
    check.applied(
        S,
        0,
        0,
        Some(import_state(Affinity::Nearest, [false, true, true])),
    );
    assert!(
        check.check_view(&node0, 0).is_err(),
        "nearest takes one origin"
    );
    // In node 0's view cluster 1 is down: its origin must not take traffic.
    let one_down = |c: usize| c != 1;
    check.applied(
        S,
        0,
        0,
        Some(import_state(Affinity::Nearest, [false, true, false])),
    );
    assert!(check.check_view(&importer(0, &one_down), 0).is_err());
    assert!(check.check_view(&node0, 0).is_ok());
}

#[test]
fn affinity_catches_traffic_kept_on_an_origin_no_longer_ready() {
    let mut check = affinity_check();
    let all_up = |_: usize| true;
    let node0 = importer(0, &all_up);
    check.applied(
        S,
        0,
        0,
        Some(import_state(Affinity::Remote, [false, true, true])),
    );
    // Cluster 1's endpoints turn not ready at 10 s; node 0 never moves.
    check.set_origin(10 * S, 1, 0, true, false);
    assert!(
        check.check_truth(15 * S - 1, &node0, 0).is_empty(),
        "within the bound"
    );
    let found = check.check_truth(15 * S, &node0, 0);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("c0001"), "{found:?}");
    assert!(
        check.check_truth(16 * S, &node0, 0).is_empty(),
        "reported once"
    );
    // Had cluster 0's node been cut off from cluster 2 (down in its view), no origin
    // would be surely ready: not judged.
    let only_own = |c: usize| c == 0;
    let mut fresh = affinity_check();
    fresh.applied(
        S,
        0,
        0,
        Some(import_state(Affinity::Remote, [false, true, true])),
    );
    fresh.set_origin(10 * S, 1, 0, true, false);
    fresh.set_origin(10 * S, 0, 0, true, false);
    assert!(
        fresh
            .check_truth(30 * S, &importer(0, &only_own), 0)
            .is_empty()
    );
    // Moving off is timed as a failover.
    check.applied(
        17 * S,
        0,
        0,
        Some(import_state(Affinity::Remote, [false, false, true])),
    );
    assert_eq!(check.failover_ms, [7_000.0]);
}

#[test]
fn affinity_catches_a_dead_cluster_kept_and_a_local_import_that_never_returns() {
    let mut check = affinity_check();
    let all_up = |_: usize| true;
    check.applied(
        S,
        0,
        0,
        Some(import_state(Affinity::Local, [false, true, true])),
    );
    // Node 0's own endpoints were not ready; they are again at 2 s.
    check.set_origin(0, 0, 0, true, false);
    check.set_origin(2 * S, 0, 0, true, true);
    let node0 = importer(0, &all_up);
    assert!(check.check_truth(7 * S - 1, &node0, 0).is_empty());
    assert_eq!(
        check.check_truth(7 * S, &node0, 0).len(),
        1,
        "still on the remotes"
    );
    // Node 1 sends `nearest` traffic to cluster 2, killed at 10 s.
    check.applied(
        S,
        1,
        0,
        Some(import_state(Affinity::Nearest, [false, false, true])),
    );
    check.cluster_died(10 * S, 2);
    let node1 = importer(1, &all_up);
    assert!(
        check.check_truth(30 * S - 1, &node1, 0).is_empty(),
        "within SWIM's bound"
    );
    assert_eq!(check.check_truth(30 * S, &node1, 0).len(), 1);
}

#[test]
fn affinity_catches_nearest_sending_to_a_far_origin() {
    let mut check = affinity_check();
    let all_up = |_: usize| true;
    let node0 = importer(0, &all_up);
    // Cluster 1 is 40 ms away, cluster 2 is 200 ms away; node 0 does not export.
    check.set_origin(0, 0, 0, false, false);
    let rtt = |c: usize| {
        let ms = [0, 40, 200][c] * 1_000;
        RttTruth {
            min_us: ms,
            max_us: ms * 11 / 10,
            lag_us: 0,
            measured: true,
        }
    };
    let mut state = import_state(Affinity::Nearest, [false, false, true]);
    state.origins.remove(0);
    check.applied(S, 0, 0, Some(state.clone()));
    assert!(check.check_nearest(10 * S, &node0, 0, &rtt).is_err());
    // Within the margin of the nearest: kept.
    let close = |c: usize| RttTruth {
        min_us: [0, 40_000, 48_000][c],
        ..rtt(c)
    };
    assert!(check.check_nearest(10 * S, &node0, 0, &close).is_ok());
    // Not measured yet: not judged.
    let unmeasured = |c: usize| RttTruth {
        measured: c != 1,
        ..rtt(c)
    };
    let mut other = affinity_check();
    other.set_origin(0, 0, 0, false, false);
    other.applied(S, 0, 0, Some(state));
    assert!(other.check_nearest(10 * S, &node0, 0, &unmeasured).is_ok());
    assert_eq!(other.nearest_checks, 0);
}

#[test]
fn convergence_catches_a_view_missing_the_latest_record() {
    let keys = keys();
    let mut disk = Disk::default();
    let mut a = node("a", 0, PersistedState::default());
    let mut b = node("b", 1, PersistedState::default());
    drain(&mut b, &mut Disk::default());
    export(&mut a, 1);
    drain(&mut a, &mut disk);
    let latest = Arc::clone(a.record(&cluster("a"), &web()).unwrap());
    let mut convergence = Convergence::new(&keys, 2);
    convergence.published(keys.index_of(&latest).unwrap(), &latest);
    let live = |a: &Node, b: &Node| -> Result<(), String> {
        let state = LiveState {
            nodes: vec![(0, a), (1, b)],
            publisher_alive: vec![true, true],
            cluster_alive: vec![true, true],
        };
        convergence.check(&keys, &state)
    };
    assert!(live(&a, &b).is_err(), "b lacks a's record");
    let push = Message::Push {
        records: vec![SignedRecord::clone(&latest)],
        relay: false,
    }
    .encode()
    .unwrap();
    b.handle_packet(Time::from_millis(3), a.member(), Channel::Stream, &push);
    assert!(live(&a, &b).is_ok(), "{:?}", live(&a, &b));
}

#[test]
fn determinism_catches_two_different_traces() {
    assert!(check_same_trace("00000000000000aa", "00000000000000aa").is_ok());
    assert!(check_same_trace("00000000000000aa", "00000000000000ab").is_err());
}

#[test]
fn lazy_writes_are_lost_in_a_crash_and_flushed_ones_survive() {
    let mut disk = Disk::default();
    let mut a = node("a", 0, PersistedState::default());
    export(&mut a, 1);
    drain(&mut a, &mut disk);
    let keys = keys();
    disk.write(
        &keys,
        &[shoal_node::core::StoreOp::PutLastContact(1_000)],
        Durability::Lazy,
    );
    disk.flush(&keys);
    disk.write(
        &keys,
        &[shoal_node::core::StoreOp::PutLastContact(2_000)],
        Durability::Lazy,
    );
    assert_eq!(disk.crash(), 1, "one lazy write was not flushed");
    let restarted = node("a", 0, disk.persisted(&keys));
    assert_eq!(
        restarted.last_contact_ms(),
        Some(1_000),
        "the unflushed write is gone"
    );
    let held = restarted
        .record(&cluster("a"), &web())
        .expect("the flushed record survived");
    assert_eq!(held.record.version, 1);
    assert!(restarted.own_version() >= 1);
    assert_eq!(restarted.generation(), 2, "the generation was flushed too");
}
