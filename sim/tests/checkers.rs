#![allow(clippy::unwrap_used)]
//! Each invariant checker can fail: fed a broken state, it says so. (A checker that
//! never fails proves nothing.)

use std::sync::Arc;

use shoal_node::core::{Command, Config, Durability, ExportSpec, Node, PersistedState, Time};
use shoal_proto::wire::Channel;
use shoal_proto::{
    ClusterId, ClusterKey, Endpoint, EndpointConditions, ExportRecord, IpAddress, KeyRing,
    MemberId, Message, NetworkMode, PortProtocol, ReplicaId, ServiceKey, ServicePort,
    ServiceProperties, ServiceType, SignedRecord,
};
use shoal_sim::disk::Disk;
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
