#![allow(clippy::unwrap_used)]
//! Traffic policy: which origins of an import take traffic under each affinity. The
//! lone-node tests feed one input and compare the exact commands; the mesh tests watch
//! liveness and round trips move the choice.

mod support;

use std::sync::Arc;

use shoal_node::core::{
    Command, Conflict, ConflictKind, Durability, ExportSpec, ImportChange, ImportedCluster,
    ImportedService, Node, SourceChanges, StoreOp, Time, TrafficReason,
};
use shoal_proto::wire::Channel;
use shoal_proto::{Affinity, Message, SignedRecord};
use support::*;

/// `web`, exported with `affinity`, created at `created_ms`, one endpoint `10.0.0.<octet>`.
fn web(affinity: Affinity, created_ms: u64, octet: u8, ready: bool) -> ExportSpec {
    let mut spec = spec("web", created_ms, octet);
    spec.properties.affinity = affinity;
    spec.endpoints[0].conditions.ready = ready;
    spec
}

/// Delivers `origin`'s signed export of `spec` to `node`, and drops the commands.
fn receive(node: &mut Node, origin: &str, version: u64, spec: ExportSpec) {
    let record = key(origin).sign_unchecked(spec.into_record(cluster(origin), version));
    let bytes = Message::Push {
        records: vec![record],
        relay: false,
    }
    .encode()
    .unwrap();
    let from = member(origin, 0);
    node.handle_packet(Time::from_millis(5), &from, Channel::Stream, &bytes);
    node.take_commands();
}

fn held(node: &Node, origin: &str) -> Arc<SignedRecord> {
    Arc::clone(node.record(&cluster(origin), &service("web")).unwrap())
}

/// The import the node should emit: its sources with these active flags, and `traffic`.
fn expected(node: &Node, active: &[(&str, bool)], traffic: TrafficReason) -> ImportedService {
    let first = held(node, active[0].0);
    let oldest = active
        .iter()
        .map(|(origin, _)| held(node, origin))
        .min_by_key(|r| r.record.export_created_ms)
        .unwrap();
    ImportedService {
        service: service("web"),
        service_type: first.record.service_type,
        ports: first.record.ports.clone(),
        properties: oldest.record.properties.clone(),
        sources: active
            .iter()
            .map(|(origin, active)| ImportedCluster {
                record: held(node, origin),
                active: *active,
            })
            .collect(),
        conflicts: Vec::new().into(),
        traffic,
    }
}

/// East republishes its export of `web`: the commands must be exactly the durable
/// write and the import change to `import`.
fn assert_export_emits(
    node: &mut Node,
    spec: ExportSpec,
    import: impl Fn(&Node) -> ImportedService,
) {
    let version = node.own_version() + 1;
    let exported_before = node
        .record(&cluster("east"), &service("web"))
        .is_some_and(|r| !r.record.tombstone);
    node.handle_export(Time::from_millis(10 + version), spec)
        .unwrap();
    let commands = node.take_commands();
    let record = held(node, "east");
    assert_eq!(record.record.version, version);
    let mut east_changes = SourceChanges::default();
    if exported_before {
        east_changes.updated.insert(cluster("east"));
    } else {
        east_changes.gained.insert(cluster("east"));
    }
    assert_eq!(
        commands,
        vec![
            Command::Persist {
                ops: vec![StoreOp::PutOwnVersion(version), StoreOp::PutRecord(record)],
                durability: Durability::Flush,
            },
            Command::ApplyImports {
                changes: vec![ImportChange {
                    service: service("web"),
                    import: Some(Arc::new(import(node))),
                    sources: east_changes,
                }],
            },
        ]
    );
}

#[test]
fn local_affinity_keeps_to_the_local_endpoint_fails_over_and_comes_back() {
    let mut node = lone_east(true);
    receive(&mut node, "west", 1, web(Affinity::Local, 2_000, 9, true));
    // Only west exports: this cluster has no endpoint of its own, west takes traffic.
    let import = &node.imports()[&service("web")];
    assert_eq!(import.traffic, TrafficReason::LocalFailover);
    assert!(import.sources.first().expect("a source").active);

    assert_export_emits(&mut node, web(Affinity::Local, 1_000, 1, true), |n| {
        expected(n, &[("east", true), ("west", false)], TrafficReason::Local)
    });
    // The local endpoint stops being ready: west takes the traffic.
    assert_export_emits(&mut node, web(Affinity::Local, 1_000, 1, false), |n| {
        expected(
            n,
            &[("east", false), ("west", true)],
            TrafficReason::LocalFailover,
        )
    });
    // Ready again: back to local.
    assert_export_emits(&mut node, web(Affinity::Local, 1_000, 1, true), |n| {
        expected(n, &[("east", true), ("west", false)], TrafficReason::Local)
    });
}

#[test]
fn remote_affinity_prefers_ready_remotes_and_falls_back_to_the_local_endpoint() {
    let mut node = lone_east(true);
    receive(&mut node, "west", 1, web(Affinity::Remote, 2_000, 9, true));
    assert_export_emits(&mut node, web(Affinity::Remote, 1_000, 1, true), |n| {
        expected(n, &[("east", false), ("west", true)], TrafficReason::Remote)
    });
    // West's endpoint is no longer ready: the local one takes the traffic.
    receive(&mut node, "west", 2, web(Affinity::Remote, 2_000, 9, false));
    let import = &node.imports()[&service("web")];
    assert_eq!(import.traffic, TrafficReason::RemoteFailover);
    let active: Vec<bool> = import.sources.iter().map(|s| s.active).collect();
    assert_eq!(active, [true, false]);
}

#[test]
fn with_no_ready_endpoint_anywhere_every_origin_stays_active() {
    let mut node = lone_east(true);
    receive(&mut node, "west", 1, web(Affinity::Local, 2_000, 9, false));
    assert_export_emits(&mut node, web(Affinity::Local, 1_000, 1, false), |n| {
        expected(
            n,
            &[("east", true), ("west", true)],
            TrafficReason::NoneReady,
        )
    });
}

#[test]
fn affinity_none_is_every_origin_and_a_differing_affinity_is_a_conflict() {
    let mut node = lone_east(true);
    // West says `local` but exports later: east's `none` stands, and west conflicts.
    receive(&mut node, "west", 1, web(Affinity::Local, 2_000, 9, false));
    assert_export_emits(&mut node, web(Affinity::None, 1_000, 1, true), |n| {
        let mut import = expected(
            n,
            &[("east", true), ("west", true)],
            TrafficReason::AllOrigins,
        );
        import.conflicts = vec![Conflict {
            cluster: cluster("west"),
            kind: ConflictKind::Affinity,
        }]
        .into();
        import
    });
}

// ----- a mesh: liveness and round trips -----

/// The clusters `at` sends traffic to for `web`, and why (`NoneReady` before any import).
fn active_origins(mesh: &Mesh, at: &str) -> (Vec<String>, TrafficReason) {
    let Some(import) = mesh.nodes[&member(at, 0)].imports().get(&service("web")) else {
        return (Vec::new(), TrafficReason::NoneReady);
    };
    let active = import
        .sources
        .iter()
        .filter(|s| s.active)
        .map(|s| s.cluster().to_string())
        .collect();
    (active, import.traffic.clone())
}

/// Runs the mesh until `done` holds, for at most `deadline_ms` of simulated time.
fn run_until(mesh: &mut Mesh, deadline_ms: u64, done: impl Fn(&Mesh) -> bool) {
    let step_ms = 50;
    for _ in 0..deadline_ms / step_ms {
        if done(mesh) {
            return;
        }
        mesh.run_for_ms(step_ms);
    }
    assert!(done(mesh), "not within {deadline_ms} ms of simulated time");
}

fn nearest(cluster_name: &str) -> TrafficReason {
    TrafficReason::Nearest {
        cluster: cluster(cluster_name),
    }
}

#[test]
fn nearest_follows_the_round_trips_past_the_margin_only() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 1);
    mesh.set_cluster_delay_ms("east", "west", 10);
    mesh.set_cluster_delay_ms("east", "south", 3);
    mesh.export(&member("west", 0), web(Affinity::Nearest, 1_000, 9, true));
    mesh.export(&member("south", 0), web(Affinity::Nearest, 2_000, 7, true));
    run_until(&mut mesh, 30_000, |m| {
        active_origins(m, "east") == (vec!["south".to_owned()], nearest("south"))
    });
    // South's round trip (6 ms) rises to 20 ms, past west's 18 ms but by less than the
    // margin (an eighth of 20 ms, 2.5 ms): the choice stays.
    mesh.set_cluster_delay_ms("east", "south", 10);
    mesh.set_cluster_delay_ms("east", "west", 9);
    run_until(&mut mesh, 60_000, |m| {
        let rtt = m.nodes[&member("east", 0)]
            .round_trips()
            .find(|(c, _)| **c == cluster("south"))
            .map(|(_, d)| d);
        rtt.is_some_and(|d| d.as_micros() >= 19_900)
    });
    mesh.run_for_ms(5_000);
    assert_eq!(active_origins(&mesh, "east").1, nearest("south"));
    // Now clearly farther: west takes over.
    mesh.set_cluster_delay_ms("east", "south", 30);
    run_until(&mut mesh, 30_000, |m| {
        active_origins(m, "east").1 == nearest("west")
    });
    assert_eq!(active_origins(&mesh, "east").0, ["west"]);
}

#[test]
fn a_cluster_that_goes_down_stops_taking_traffic_before_it_is_withdrawn() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 1);
    mesh.export(&member("west", 0), web(Affinity::Remote, 1_000, 9, true));
    mesh.export(&member("south", 0), web(Affinity::Remote, 2_000, 7, true));
    run_until(&mut mesh, 30_000, |m| {
        active_origins(m, "east") == (vec!["south".into(), "west".into()], TrafficReason::Remote)
    });
    mesh.kill(&member("west", 0));
    run_until(&mut mesh, 60_000, |m| {
        let node = &m.nodes[&member("east", 0)];
        matches!(
            node.liveness(&cluster("west")),
            shoal_node::core::Liveness::Down { .. }
        )
    });
    // Down, not withdrawn: west is still imported (listed), but takes no traffic.
    let import = &mesh.nodes[&member("east", 0)].imports()[&service("web")];
    assert!(import.exports_from(&cluster("west")));
    assert_eq!(active_origins(&mesh, "east").0, ["south"]);
    mesh.restart(&member("west", 0));
    run_until(&mut mesh, 60_000, |m| {
        active_origins(m, "east").0 == ["south", "west"]
    });
}
