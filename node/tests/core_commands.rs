#![allow(clippy::unwrap_used)]
//! One input in, the exact commands out.

mod support;

use std::sync::Arc;

use shoal_node::core::{
    Command, Config, Durability, Event, InputError, Node, PersistedState, Seed, StoreOp, Time,
};
use shoal_proto::wire::Channel;
use shoal_proto::wire::OriginWant;
use shoal_proto::{ExportRecord, MemberId, Message, ServiceProperties, ServiceType, SignedRecord};
use support::*;

fn record_from(origin: &str, version: u64, octet: u8) -> SignedRecord {
    let s = spec("web", 1_000, octet);
    key(origin).sign_unchecked(s.into_record(cluster(origin), version))
}

/// The announce a fresh "west" replica, seeded with "east", sends first.
fn west_announces_to_east() -> Vec<u8> {
    let mut config = Config::lan(member("west", 0), addr(2), 3);
    config.seeds = vec![Seed {
        member: member("east", 0),
        addr: addr(1),
    }];
    let trust = ring(&["east", "west", "south"]);
    let mut west = Node::new(
        config,
        key("west"),
        trust,
        Time::from_millis(1),
        3,
        PersistedState::default(),
    )
    .unwrap();
    west.take_commands()
        .into_iter()
        .find_map(|c| match c {
            Command::Send { bytes, .. } => Some(bytes),
            _ => None,
        })
        .unwrap()
}

fn push(records: Vec<SignedRecord>, relay: bool) -> Vec<u8> {
    Message::Push { records, relay }.encode().unwrap()
}

#[test]
fn a_new_node_persists_its_generation_then_announces_to_its_seeds() {
    let mut config = Config::lan(member("east", 0), addr(1), 3);
    config.seeds = vec![Seed {
        member: member("west", 0),
        addr: addr(2),
    }];
    let mut node = Node::new(
        config,
        key("east"),
        ring(&["east", "west"]),
        Time::from_millis(1),
        7,
        PersistedState::default(),
    )
    .unwrap();
    let commands = node.take_commands();
    assert_eq!(
        commands[0],
        Command::Persist {
            ops: vec![StoreOp::PutGeneration(1)],
            durability: Durability::Flush
        }
    );
    match &commands[1] {
        Command::Send {
            to,
            addr: Some(a),
            channel: Channel::Datagram,
            kind: "swim",
            ..
        } => {
            assert_eq!((to, *a), (&member("west", 0), addr(2)));
        }
        other => panic!("expected the announce, got {other:?}"),
    }
    assert!(matches!(commands[2], Command::SetTimer { .. }));
    assert_eq!(commands.len(), 3);
}

#[test]
fn exporting_persists_durably_then_imports_its_own_service() {
    let mut node = lone_east(true);
    node.handle_export(Time::from_millis(5), spec("web", 1_000, 1))
        .unwrap();
    let commands = node.take_commands();
    let record = node
        .record(&cluster("east"), &service("web"))
        .unwrap()
        .clone();
    assert_eq!(record.record.version, 1);
    assert_eq!(
        commands[0],
        Command::Persist {
            ops: vec![
                StoreOp::PutOwnVersion(1),
                StoreOp::PutRecord(Arc::clone(&record))
            ],
            durability: Durability::Flush,
        }
    );
    let Command::ApplyImports { changes } = &commands[1] else {
        panic!("{:?}", commands[1])
    };
    assert_eq!(changes.len(), 1);
    let import = changes[0].import.as_ref().unwrap();
    assert_eq!(import.service_type, ServiceType::ClusterSetIp);
    assert_eq!(import.sources.len(), 1);
    assert_eq!(commands.len(), 2, "no peers, no timer change: {commands:?}");
}

#[test]
fn an_unchanged_export_emits_nothing_and_a_change_bumps_the_version() {
    let mut node = lone_east(true);
    node.handle_export(Time::from_millis(5), spec("web", 1_000, 1))
        .unwrap();
    node.take_commands();
    node.handle_export(Time::from_millis(6), spec("web", 1_000, 1))
        .unwrap();
    assert_eq!(node.take_commands(), vec![]);
    node.handle_export(Time::from_millis(7), spec("web", 1_000, 2))
        .unwrap();
    let commands = node.take_commands();
    assert!(
        matches!(&commands[0], Command::Persist { ops, .. } if ops[0] == StoreOp::PutOwnVersion(2))
    );
    assert_eq!(node.own_version(), 2);
}

#[test]
fn only_the_publisher_may_export() {
    let mut node = lone_east(false);
    assert_eq!(
        node.handle_export(Time::from_millis(5), spec("web", 1, 1)),
        Err(InputError::NotPublisher)
    );
    assert_eq!(node.take_commands(), vec![]);
}

/// A standby replica of east (east/1) whose store counted to `own_version`, holding
/// the record of `web` its sibling published at version 40.
fn standby_with_siblings_record(own_version: u64, wall_clock_ms: u64) -> Node {
    let mut config = Config::lan(member("east", 1), addr(4), 3);
    config.publisher = false;
    let store = PersistedState {
        own_version,
        wall_clock_ms,
        ..PersistedState::default()
    };
    let trust = ring(&["east", "west", "south"]);
    let mut node = Node::new(config, key("east"), trust, Time::from_millis(1), 7, store).unwrap();
    let siblings = spec("web", 1_000, 1).into_record(cluster("east"), 40);
    let siblings = key("east").sign(siblings).unwrap().into_inner();
    node.handle_packet(
        Time::from_millis(5),
        &member("east", 0),
        Channel::Stream,
        &push(vec![siblings], false),
    );
    node.take_commands();
    node
}

#[test]
fn a_new_publisher_counts_on_from_its_predecessors_versions_durably() {
    let mut node = standby_with_siblings_record(7, 0);
    assert_eq!(
        node.own_version(),
        7,
        "a standby does not take over versions"
    );
    assert_eq!(
        node.handle_export(Time::from_millis(6), spec("db", 1_000, 1)),
        Err(InputError::NotPublisher)
    );
    node.take_commands();

    node.set_publisher(Time::from_millis(10), true);
    assert_eq!(
        node.take_commands(),
        vec![Command::Persist {
            ops: vec![StoreOp::PutOwnVersion(40)],
            durability: Durability::Flush,
        }]
    );
    assert!(node.is_publisher());
    assert_eq!(node.stats().publisher_gained, 1);
    node.check_invariants().unwrap();
    // Told again: nothing to do.
    node.set_publisher(Time::from_millis(11), true);
    assert_eq!(node.take_commands(), vec![]);
    // The predecessor's export stands as it is; a new one follows its versions.
    node.handle_export(Time::from_millis(12), spec("web", 1_000, 1))
        .unwrap();
    assert_eq!(node.take_commands(), vec![]);
    node.handle_export(Time::from_millis(13), spec("db", 1_000, 1))
        .unwrap();
    assert_eq!(
        node.record(&cluster("east"), &service("db"))
            .unwrap()
            .record
            .version,
        41
    );

    // With a wall clock, versions also move up to its milliseconds, above anything
    // the predecessor may still have in flight.
    let mut node = standby_with_siblings_record(7, 1_700_000_000_000);
    node.set_publisher(Time::from_millis(10), true);
    assert_eq!(
        node.take_commands(),
        vec![Command::Persist {
            ops: vec![StoreOp::PutOwnVersion(1_700_000_000_009)],
            durability: Durability::Flush,
        }]
    );
}

#[test]
fn a_replica_that_stops_publishing_refuses_exports() {
    let mut node = lone_east(true);
    node.handle_export(Time::from_millis(5), spec("web", 1_000, 1))
        .unwrap();
    node.take_commands();
    node.set_publisher(Time::from_millis(6), false);
    assert_eq!(
        node.take_commands(),
        vec![],
        "no lease held: nothing to say"
    );
    assert_eq!(
        node.handle_export(Time::from_millis(7), spec("web", 1_000, 2)),
        Err(InputError::NotPublisher)
    );
    assert_eq!(
        node.handle_unexport(Time::from_millis(7), service("web")),
        Err(InputError::NotPublisher)
    );
    assert_eq!(node.take_commands(), vec![]);
    assert_eq!(node.own_version(), 1);
}

#[test]
fn unexport_publishes_a_tombstone_that_removes_the_import() {
    let mut node = lone_east(true);
    node.handle_export(Time::from_millis(5), spec("web", 1_000, 1))
        .unwrap();
    node.take_commands();
    node.handle_unexport(Time::from_millis(6), service("web"))
        .unwrap();
    let commands = node.take_commands();
    let tomb = node.record(&cluster("east"), &service("web")).unwrap();
    assert!(tomb.record.tombstone);
    assert_eq!(tomb.record.version, 2);
    let Command::ApplyImports { changes } = &commands[1] else {
        panic!("{commands:?}")
    };
    assert_eq!(changes[0].import, None);
}

#[test]
fn a_pushed_record_is_verified_persisted_and_imported() {
    let mut node = lone_east(true);
    let record = record_from("west", 3, 9);
    node.handle_packet(
        Time::from_millis(5),
        &member("west", 0),
        Channel::Stream,
        &push(vec![record.clone()], true),
    );
    let commands = node.take_commands();
    assert_eq!(
        commands[0],
        Command::Persist {
            ops: vec![StoreOp::PutRecord(Arc::new(record))],
            durability: Durability::Flush
        }
    );
    assert!(matches!(&commands[1], Command::ApplyImports { changes } if changes.len() == 1));
    assert_eq!(commands.len(), 2);
    assert_eq!(node.stats().records_accepted, 1);
}

#[test]
fn duplicates_and_older_versions_are_dropped_without_commands() {
    let mut node = lone_east(true);
    let from = member("west", 0);
    node.handle_packet(
        Time::from_millis(5),
        &from,
        Channel::Stream,
        &push(vec![record_from("west", 3, 9)], false),
    );
    node.take_commands();
    node.handle_packet(
        Time::from_millis(6),
        &from,
        Channel::Stream,
        &push(vec![record_from("west", 3, 9)], false),
    );
    node.handle_packet(
        Time::from_millis(7),
        &from,
        Channel::Stream,
        &push(vec![record_from("west", 2, 8)], false),
    );
    assert_eq!(node.take_commands(), vec![]);
    assert_eq!(
        (node.stats().records_duplicate, node.stats().records_stale),
        (1, 1)
    );
    assert_eq!(
        node.record(&cluster("west"), &service("web"))
            .unwrap()
            .record
            .version,
        3
    );
}

#[test]
fn equivocation_is_rejected_and_alarmed() {
    let mut node = lone_east(true);
    let from = member("west", 0);
    node.handle_packet(
        Time::from_millis(5),
        &from,
        Channel::Stream,
        &push(vec![record_from("west", 3, 9)], false),
    );
    node.take_commands();
    node.handle_packet(
        Time::from_millis(6),
        &from,
        Channel::Stream,
        &push(vec![record_from("west", 3, 10)], false),
    );
    assert_eq!(
        node.take_commands(),
        vec![Command::Notify(Event::Equivocation {
            origin: cluster("west"),
            service: service("web"),
            version: 3
        })]
    );
    assert_eq!(node.stats().records_equivocation, 1);
    let held = node.record(&cluster("west"), &service("web")).unwrap();
    assert_eq!(
        held.record.endpoints[0].addresses[0],
        shoal_proto::IpAddress::V4([10, 0, 0, 9])
    );
}

#[test]
fn a_record_authored_for_another_origin_is_rejected_as_forged() {
    let mut node = lone_east(true);
    // "south" signs a record claiming to come from "west": relaying is fine, authoring is not.
    let mut forged = record_from("west", 4, 9);
    forged.signature = key("south").sign_unchecked(forged.record.clone()).signature;
    node.handle_packet(
        Time::from_millis(5),
        &member("south", 0),
        Channel::Stream,
        &push(vec![forged], false),
    );
    assert_eq!(node.take_commands(), vec![]);
    assert_eq!(node.stats().records_forged, 1);
    assert!(node.record(&cluster("west"), &service("web")).is_none());
}

#[test]
fn a_relayed_record_from_a_third_cluster_is_accepted() {
    let mut node = lone_east(true);
    node.handle_packet(
        Time::from_millis(5),
        &member("south", 0),
        Channel::Stream,
        &push(vec![record_from("west", 4, 9)], false),
    );
    assert_eq!(node.stats().records_accepted, 1);
}

#[test]
fn malformed_input_is_counted_and_dropped() {
    let mut node = lone_east(true);
    let from = member("west", 0);
    // A push claiming 2^40 records inside a few bytes.
    let mut forged_len = vec![1u8, 0xfd];
    forged_len.extend_from_slice(&(1u64 << 40).to_le_bytes());
    for bytes in [&b""[..], &[0xff; 64][..], &forged_len[..]] {
        node.handle_packet(Time::from_millis(5), &from, Channel::Stream, bytes);
        node.handle_packet(Time::from_millis(5), &from, Channel::Datagram, bytes);
    }
    // A push is not a datagram.
    node.handle_packet(
        Time::from_millis(5),
        &from,
        Channel::Datagram,
        &push(vec![], false),
    );
    assert_eq!(node.take_commands(), vec![]);
    assert_eq!(node.stats().decode_errors, 7);
}

#[test]
fn a_swim_packet_claiming_another_sender_is_dropped() {
    // Node A's announce, delivered as if it came from someone else.
    let announce = west_announces_to_east();
    let mut node = lone_east(true);
    node.handle_packet(
        Time::from_millis(5),
        &member("south", 0),
        Channel::Datagram,
        &announce,
    );
    assert_eq!(node.stats().sender_mismatches, 1);
    assert!(node.members_up().is_empty());
    node.handle_packet(
        Time::from_millis(5),
        &member("west", 0),
        Channel::Datagram,
        &announce,
    );
    assert_eq!(node.members_up(), vec![member("west", 0)]);
}

#[test]
fn restart_reverifies_the_store_and_continues_versions_and_generations() {
    let mut node = lone_east(true);
    node.handle_export(Time::from_millis(5), spec("web", 1_000, 1))
        .unwrap();
    let mut store = PersistedState::default();
    for command in node.take_commands() {
        if let Command::Persist { ops, .. } = command {
            ops.iter().for_each(|op| store.apply(op));
        }
    }
    store.generation = 4;
    let mut tampered = record_from("west", 2, 1);
    tampered.record.version = 3; // signature no longer matches
    store.apply(&StoreOp::PutRecord(Arc::new(tampered)));
    let config = node.config().clone();
    let mut restarted = Node::new(
        config,
        key("east"),
        ring(&["east", "west", "south"]),
        Time::from_millis(9),
        8,
        store,
    )
    .unwrap();
    assert_eq!(restarted.stats().restore_dropped, 1);
    assert_eq!(restarted.generation(), 5);
    assert_eq!(restarted.own_version(), 1);
    let commands = restarted.take_commands();
    assert_eq!(
        commands[0],
        Command::Persist {
            ops: vec![StoreOp::PutGeneration(5)],
            durability: Durability::Flush
        }
    );
    assert!(
        commands
            .iter()
            .any(|c| matches!(c, Command::ApplyImports { changes } if changes.len() == 1))
    );
    restarted
        .handle_export(Time::from_millis(10), spec("web", 1_000, 2))
        .unwrap();
    assert_eq!(restarted.own_version(), 2);
}

#[test]
fn a_key_that_does_not_match_the_config_is_refused() {
    let config = Config::lan(member("east", 0), addr(1), 3);
    let err = Node::new(
        config.clone(),
        key("west"),
        ring(&["east", "west"]),
        Time::ZERO,
        1,
        PersistedState::default(),
    )
    .unwrap_err();
    assert_eq!(err.field, "key");
    let err = Node::new(
        config,
        key("east"),
        ring(&["west"]),
        Time::ZERO,
        1,
        PersistedState::default(),
    )
    .unwrap_err();
    assert_eq!(err.field, "trust");
}

#[test]
fn config_validation_names_the_field() {
    let mut config = Config::wan(member("east", 0), addr(1), 3);
    config.swim.probe_rtt_ms = config.swim.probe_period_ms;
    assert_eq!(config.validate().unwrap_err().field, "swim.probe_rtt_ms");
    let mut config = Config::wan(member("east", 0), addr(1), 3);
    config.seeds = vec![Seed {
        member: member("east", 0),
        addr: addr(1),
    }];
    assert_eq!(config.validate().unwrap_err().field, "seeds");
}

/// south/0 asks for every record of west's, holding none.
fn pull_everything_of_west(node: &mut Node) {
    let pull = Message::Pull {
        wants: vec![OriginWant {
            origin: cluster("west"),
            have: vec![],
        }],
    };
    node.handle_packet(
        Time::from_millis(6),
        &member("south", 0),
        Channel::Stream,
        &pull.encode().unwrap(),
    );
}

#[test]
fn a_pull_answer_larger_than_a_frame_is_split_without_loss() {
    use shoal_proto::codec::FRAME_BYTES_MAX;
    let mut node = lone_east(true);
    let from = member("west", 0);
    for (i, name) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        let mut s = spec(name, 1_000, 1);
        s.endpoints = (0..1_000u32)
            .map(|e| shoal_proto::Endpoint {
                addresses: vec![shoal_proto::IpAddress::V4(e.to_be_bytes())],
                conditions: shoal_proto::EndpointConditions {
                    ready: true,
                    serving: true,
                    terminating: false,
                },
                zone: Some("z".repeat(63)),
                hostname: Some("h".repeat(63)),
            })
            .collect();
        let record = key("west").sign_unchecked(ExportRecord {
            export_created_ms: 1,
            ..s.into_record(cluster("west"), i as u64 + 1)
        });
        node.handle_packet(
            Time::from_millis(5),
            &from,
            Channel::Stream,
            &push(vec![record], false),
        );
    }
    node.take_commands();
    pull_everything_of_west(&mut node);
    let mut frames = 0;
    let mut records = 0;
    for command in node.take_commands() {
        if let Command::Send {
            kind: "push",
            bytes,
            ..
        } = command
        {
            assert!(bytes.len() <= FRAME_BYTES_MAX);
            let Message::Push { records: r, .. } = Message::decode_frame(&bytes).unwrap() else {
                panic!()
            };
            frames += 1;
            records += r.len();
        }
    }
    assert_eq!(records, 8);
    assert!(frames >= 2, "8 records of ~140 KB cannot share one frame");
    assert_eq!(node.stats().encode_errors, 0);
}

/// A repair that crosses clusters is relayed as a push is: the receiving gateway
/// forwards what is new to it to its siblings, so a repair that beats the eager push
/// to a gateway does not leave the gateway's siblings waiting for their own round.
#[test]
fn a_repair_to_another_cluster_asks_for_a_relay() {
    let mut node = lone_east(true);
    node.handle_packet(
        Time::from_millis(5),
        &member("west", 0),
        Channel::Stream,
        &push(vec![record_from("west", 3, 9)], false),
    );
    node.take_commands();
    pull_everything_of_west(&mut node);
    let pushes: Vec<(MemberId, bool, usize)> = node
        .take_commands()
        .into_iter()
        .filter_map(|command| match command {
            Command::Send {
                to,
                kind: "push",
                bytes,
                ..
            } => match Message::decode_frame(&bytes).unwrap() {
                Message::Push { records, relay } => Some((to, relay, records.len())),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(pushes, [(member("south", 0), true, 1)]);
}

#[test]
fn an_endpoint_change_patches_the_import_in_place() {
    let mut node = lone_east(true);
    let from = member("west", 0);
    node.handle_export(Time::from_millis(4), spec("web", 500, 1))
        .unwrap();
    node.handle_packet(
        Time::from_millis(5),
        &from,
        Channel::Stream,
        &push(vec![record_from("west", 3, 9)], false),
    );
    node.take_commands();
    node.handle_packet(
        Time::from_millis(6),
        &from,
        Channel::Stream,
        &push(vec![record_from("west", 4, 10)], false),
    );
    let commands = node.take_commands();
    let Command::ApplyImports { changes } = &commands[1] else {
        panic!("{commands:?}")
    };
    let import = changes[0].import.as_ref().unwrap();
    let west = import
        .sources
        .iter()
        .find(|s| s.cluster() == &cluster("west"))
        .unwrap();
    assert_eq!(west.record.record.version, 4);
    assert_eq!(import.sources.len(), 2);
    node.check_invariants_deep().unwrap();
    // A change of ports is not a patch: the import is derived again, with the conflict.
    let mut other_port = record_from("west", 5, 10);
    other_port.record.ports[0].port = 8080;
    let other_port = key("west").sign_unchecked(other_port.record);
    node.handle_packet(
        Time::from_millis(7),
        &from,
        Channel::Stream,
        &push(vec![other_port], false),
    );
    let commands = node.take_commands();
    let Command::ApplyImports { changes } = &commands[1] else {
        panic!("{commands:?}")
    };
    let import = changes[0].import.as_ref().unwrap();
    assert_eq!(
        import.ports[0].port, 80,
        "east's export is older and wins the port"
    );
    assert_eq!(import.conflicts.len(), 1);
    node.check_invariants_deep().unwrap();
}

#[test]
fn patched_imports_always_equal_a_full_derivation() {
    for seed in 0..12 {
        check_patches_against_derivation(seed);
    }
}

fn check_patches_against_derivation(seed: u64) {
    use rand::{RngExt, SeedableRng};
    let names = ["east", "west", "south", "north", "up", "down"];
    let mut config = Config::lan(member("east", 0), addr(1), 6);
    config.publisher = true;
    let mut node = Node::new(
        config,
        key("east"),
        ring(&names),
        Time::from_millis(1),
        7,
        PersistedState::default(),
    )
    .unwrap();
    let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(seed);
    let mut versions = [0u64; 6];
    let mut shapes: [Option<shoal_node::core::ExportSpec>; 6] = Default::default();
    for step in 0..600u64 {
        let o = rng.random_range(1..names.len());
        versions[o] += 1;
        let name = ["web", "db"][rng.random_range(0..2)];
        let last_octet = rng.random_range(1..250);
        // Half the time only the endpoints change, the usual case in a real cluster;
        // now and then only the properties.
        let s = match &shapes[o] {
            Some(shape) if shape.service.name.as_str() == name && rng.random_bool(0.6) => {
                let mut s = shape.clone();
                if rng.random_bool(0.8) {
                    s.endpoints = spec(name, 1, last_octet).endpoints;
                } else {
                    s.properties = random_properties(&mut rng);
                }
                s
            }
            _ => random_shape(&mut rng, name, last_octet),
        };
        shapes[o] = Some(s.clone());
        let mut record = s.into_record(cluster(names[o]), versions[o]);
        if rng.random_bool(0.1) {
            record.tombstone = true;
            record.ports.clear();
            record.endpoints.clear();
            record.properties = ServiceProperties::default();
        }
        let record = key(names[o]).sign_unchecked(record);
        let now = Time::from_millis(2 + step);
        node.handle_packet(
            now,
            &member(names[o], 0),
            Channel::Stream,
            &push(vec![record], false),
        );
        node.take_commands();
        node.check_invariants_deep()
            .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
    }
    assert!(node.stats().records_accepted > 300);
}

/// An export of `name` with a random age, type and ports: `http` on 80 or 8080, and
/// sometimes `grpc` on 9000 or 9090, so that exports of every age win and lose ports.
fn random_shape(
    rng: &mut rand::rngs::ChaCha8Rng,
    name: &str,
    last_octet: u8,
) -> shoal_node::core::ExportSpec {
    use rand::RngExt;
    let mut s = spec(name, rng.random_range(1..8), last_octet);
    if rng.random_bool(0.2) {
        s.ports[0].port = 8080;
    }
    if rng.random_bool(0.4) {
        s.ports.push(shoal_proto::ServicePort {
            name: "grpc".into(),
            protocol: shoal_proto::PortProtocol::Tcp,
            port: [9000, 9090][rng.random_range(0..2)],
            target_port: 9090,
            app_protocol: None,
        });
        if rng.random_bool(0.3) {
            s.ports.remove(0);
        }
    }
    if rng.random_bool(0.1) {
        s.service_type = ServiceType::Headless;
    }
    s.properties = random_properties(rng);
    s
}

/// Properties drawn from a few values each, so that exports agree and disagree on
/// every one of them.
fn random_properties(rng: &mut rand::rngs::ChaCha8Rng) -> ServiceProperties {
    use rand::RngExt;
    use shoal_proto::{InternalTrafficPolicy, IpFamily, SessionAffinity};
    let mut p = ServiceProperties::default();
    if rng.random_bool(0.3) {
        p.ip_families = vec![[IpFamily::Ipv4, IpFamily::Ipv6][rng.random_range(0..2)]];
    }
    if rng.random_bool(0.3) {
        p.session_affinity = SessionAffinity::ClientIp;
        p.client_ip_timeout_seconds = [None, Some(60), Some(10_800)][rng.random_range(0..3)];
    }
    if rng.random_bool(0.2) {
        let policy = [InternalTrafficPolicy::Cluster, InternalTrafficPolicy::Local];
        p.internal_traffic_policy = Some(policy[rng.random_range(0..2)]);
    }
    if rng.random_bool(0.2) {
        p.traffic_distribution = Some("PreferClose".into());
    }
    if rng.random_bool(0.3) {
        let tier = ["web", "api"][rng.random_range(0..2)];
        p.exported_labels.insert("tier".into(), tier.into());
    }
    if rng.random_bool(0.2) {
        let note = ["a", "b"][rng.random_range(0..2)];
        p.exported_annotations
            .insert("example.com/note".into(), note.into());
    }
    p
}

#[test]
fn a_digest_with_another_membership_hash_gets_the_member_list() {
    let mut node = lone_east(true);
    let (root, records) = node.view_digest();
    let digest = Message::DigestRoot {
        root,
        records,
        members: 42,
    };
    node.handle_packet(
        Time::from_millis(5),
        &member("west", 0),
        Channel::Stream,
        &digest.encode().unwrap(),
    );
    let commands = node.take_commands();
    let [
        Command::Send {
            to,
            kind: "members",
            bytes,
            ..
        },
    ] = commands.as_slice()
    else {
        panic!("{commands:?}")
    };
    assert_eq!(to, &member("west", 0));
    let Message::Members {
        members,
        reply: true,
    } = Message::decode_frame(bytes).unwrap()
    else {
        panic!()
    };
    assert_eq!(members, vec![node.own_identity()]);
}

#[test]
fn a_member_list_leads_to_announces_to_unknown_trusted_members_only() {
    use shoal_proto::SwimIdentity;
    let mut node = lone_east(true);
    let west = SwimIdentity {
        member: member("west", 0),
        addr: addr(2),
        generation: 1,
    };
    let stranger = SwimIdentity {
        member: member("mars", 0),
        addr: addr(9),
        generation: 1,
    };
    let me_before = SwimIdentity {
        generation: 0,
        ..node.own_identity()
    };
    let list = Message::Members {
        members: vec![west.clone(), stranger, me_before],
        reply: false,
    };
    node.handle_packet(
        Time::from_millis(5),
        &member("south", 0),
        Channel::Stream,
        &list.encode().unwrap(),
    );
    // Second-hand news is not believed: west is announced to, not marked up.
    assert!(node.members_up().is_empty());
    assert_eq!(node.stats().members_announced, 1);
    let commands = node.take_commands();
    let sends: Vec<_> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Send { to, kind, addr, .. } => Some((to.clone(), *kind, *addr)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sends,
        vec![(member("west", 0), "swim", Some(addr(2)))],
        "no reply was asked"
    );

    // West answers first-hand (its own announce); then the same list asks for nothing.
    let announce = west_announces_to_east();
    node.handle_packet(
        Time::from_millis(6),
        &member("west", 0),
        Channel::Datagram,
        &announce,
    );
    assert_eq!(node.members_up(), vec![member("west", 0)]);
    node.take_commands();
    let again = Message::Members {
        members: vec![west],
        reply: true,
    };
    node.handle_packet(
        Time::from_millis(7),
        &member("south", 0),
        Channel::Stream,
        &again.encode().unwrap(),
    );
    assert_eq!(node.stats().members_announced, 1);
    let commands = node.take_commands();
    assert!(
        commands.iter().any(|c| matches!(
            c,
            Command::Send {
                kind: "members",
                ..
            }
        )),
        "a reply was asked"
    );
    assert!(
        !commands
            .iter()
            .any(|c| matches!(c, Command::Send { kind: "swim", .. }))
    );
}

#[test]
fn a_shared_record_cache_verifies_once_and_never_trusts_altered_content() {
    use shoal_node::core::WeakRecordCache;
    use std::cell::RefCell;
    use std::rc::Rc;
    let cache = Rc::new(RefCell::new(WeakRecordCache::default()));
    let mut a = lone_east(true);
    let mut b = lone_east(true);
    a.set_record_cache(Box::new(Rc::clone(&cache)));
    b.set_record_cache(Box::new(Rc::clone(&cache)));
    let record = record_from("west", 3, 9);
    let from = member("west", 0);
    a.handle_packet(
        Time::from_millis(5),
        &from,
        Channel::Stream,
        &push(vec![record.clone()], false),
    );
    b.handle_packet(
        Time::from_millis(5),
        &from,
        Channel::Stream,
        &push(vec![record.clone()], false),
    );
    assert_eq!(
        (a.stats().verify_cache_hits, b.stats().verify_cache_hits),
        (0, 1)
    );
    let (ra, rb) = (
        a.record(&cluster("west"), &service("web")).unwrap(),
        b.record(&cluster("west"), &service("web")).unwrap(),
    );
    assert!(Arc::ptr_eq(ra, rb), "both views share one allocation");
    // Same signature, other content: not a hit, and verification rejects it.
    let mut c = lone_east(true);
    c.set_record_cache(Box::new(Rc::clone(&cache)));
    let mut altered = record;
    altered.record.version = 4;
    c.handle_packet(
        Time::from_millis(5),
        &from,
        Channel::Stream,
        &push(vec![altered], false),
    );
    assert_eq!(
        (c.stats().verify_cache_hits, c.stats().records_forged),
        (0, 1)
    );
    assert_eq!(cache.borrow().len(), 1);
}

#[test]
fn a_store_without_versions_counts_from_the_wall_clock() {
    let config = Config::lan(member("east", 0), addr(1), 3);
    let store = PersistedState {
        wall_clock_ms: 1_700_000_000_123,
        ..PersistedState::default()
    };
    let mut node = Node::new(
        config.clone(),
        key("east"),
        ring(&["east", "west", "south"]),
        Time::from_millis(1),
        7,
        store.clone(),
    )
    .unwrap();
    assert_eq!(node.generation(), 1_700_000_001);
    node.handle_export(Time::from_millis(2), spec("web", 1_000, 1))
        .unwrap();
    assert_eq!(node.own_version(), 1_700_000_000_124);

    // A store that holds versions keeps counting from them, whatever the clock says.
    let kept = PersistedState {
        own_version: 42,
        generation: 7,
        ..store
    };
    let node = Node::new(
        config,
        key("east"),
        ring(&["east", "west", "south"]),
        Time::from_millis(1),
        7,
        kept,
    )
    .unwrap();
    assert_eq!(node.generation(), 8);
    assert_eq!(node.own_version(), 42);
}

/// A service of `origin`'s with a 63-byte name, numbered `i`.
fn long_named_record(origin: &str, i: usize, version: u64) -> SignedRecord {
    let mut s = spec("web", 1_000, 1);
    s.service = shoal_proto::ServiceKey::new("default", &format!("s{i:0>62}")).unwrap();
    key(origin).sign_unchecked(s.into_record(cluster(origin), version))
}

#[test]
fn an_origin_is_held_to_its_records_bound_and_its_whole_want_fits_one_frame() {
    use shoal_proto::codec::FRAME_BYTES_MAX;
    use shoal_proto::wire::{OriginSummary, RECORDS_PER_MESSAGE_MAX, RECORDS_PER_ORIGIN_MAX};
    let mut node = lone_east(true);
    let west = member("west", 0);
    let records: Vec<SignedRecord> = (0..RECORDS_PER_ORIGIN_MAX)
        .map(|i| long_named_record("west", i, i as u64 + 1))
        .collect();
    for chunk in records.chunks(RECORDS_PER_MESSAGE_MAX) {
        node.handle_packet(
            Time::from_millis(5),
            &west,
            Channel::Stream,
            &push(chunk.to_vec(), false),
        );
    }
    node.take_commands();
    assert_eq!(node.stats().records_accepted, RECORDS_PER_ORIGIN_MAX as u64);

    // One more service is dropped and counted; a newer version of a held one is not.
    let over = long_named_record("west", RECORDS_PER_ORIGIN_MAX, 10_000);
    node.handle_packet(
        Time::from_millis(6),
        &west,
        Channel::Stream,
        &push(vec![over], false),
    );
    assert_eq!(node.take_commands(), vec![]);
    assert_eq!(node.stats().records_over_bound, 1);
    let newer = long_named_record("west", 7, 10_001);
    node.handle_packet(
        Time::from_millis(7),
        &west,
        Channel::Stream,
        &push(vec![newer], false),
    );
    assert_eq!(
        node.stats().records_accepted,
        RECORDS_PER_ORIGIN_MAX as u64 + 1
    );
    node.take_commands();

    // A peer whose summary of west differs gets one pull listing all of west's records.
    let digest = Message::DigestOrigins {
        entries: vec![OriginSummary {
            origin: cluster("west"),
            max_version: 1,
            hash: 1,
            records: 1,
        }],
    };
    node.handle_packet(
        Time::from_millis(8),
        &member("south", 0),
        Channel::Stream,
        &digest.encode().unwrap(),
    );
    let pulls: Vec<Message> = node
        .take_commands()
        .into_iter()
        .filter_map(|c| match c {
            Command::Send {
                kind: "pull",
                bytes,
                ..
            } => {
                assert!(bytes.len() <= FRAME_BYTES_MAX);
                Some(Message::decode_frame(&bytes).unwrap())
            }
            _ => None,
        })
        .collect();
    let [Message::Pull { wants }] = &pulls[..] else {
        panic!("one pull: {pulls:?}")
    };
    assert_eq!(wants[0].origin, cluster("west"));
    assert_eq!(wants[0].have.len(), RECORDS_PER_ORIGIN_MAX);
    assert_eq!(node.stats().encode_errors, 0);
}

#[test]
fn a_cluster_at_its_records_bound_refuses_a_new_export_but_updates_held_ones() {
    use shoal_proto::wire::RECORDS_PER_ORIGIN_MAX;
    let mut node = lone_east(true);
    let now = Time::from_millis(5);
    for i in 0..RECORDS_PER_ORIGIN_MAX {
        node.handle_export(now, spec(&format!("s{i}"), 1, 1))
            .unwrap();
    }
    node.take_commands();
    let published = node.stats().published;
    assert_eq!(
        node.handle_export(now, spec("one-more", 1, 1)),
        Err(InputError::TooManyExports(RECORDS_PER_ORIGIN_MAX))
    );
    assert_eq!(node.take_commands(), vec![]);
    assert_eq!(node.stats().exports_over_bound, 1);
    // A held service still changes, and unexporting one leaves its tombstone in the
    // count, so the bound still refuses a new service.
    node.handle_export(now, spec("s1", 1, 2)).unwrap();
    node.handle_unexport(now, service("s2")).unwrap();
    assert_eq!(node.stats().published, published + 2);
    assert!(matches!(
        node.handle_export(now, spec("one-more", 1, 1)),
        Err(InputError::TooManyExports(_))
    ));
}

#[test]
fn a_store_holding_more_than_the_records_bound_restores_the_bound_and_counts_the_rest() {
    use shoal_proto::wire::RECORDS_PER_ORIGIN_MAX;
    let records = (0..=RECORDS_PER_ORIGIN_MAX)
        .map(|i| {
            let record = Arc::new(long_named_record("west", i, i as u64 + 1));
            let key = (record.record.origin.clone(), record.record.service.clone());
            (key, record)
        })
        .collect();
    let node = Node::new(
        Config::lan(member("east", 0), addr(1), 3),
        key("east"),
        ring(&["east", "west", "south"]),
        Time::from_millis(1),
        7,
        PersistedState {
            records,
            ..PersistedState::default()
        },
    )
    .unwrap();
    assert_eq!(node.records().count(), RECORDS_PER_ORIGIN_MAX);
    assert_eq!(node.stats().records_over_bound, 1);
    assert_eq!(node.stats().restore_dropped, 0);
}
