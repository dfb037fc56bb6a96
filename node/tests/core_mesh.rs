#![allow(clippy::unwrap_used)]
//! A few nodes talking through the core only: membership, pushes and relays,
//! anti-entropy, withdrawal and restoration. Protocol experiments at scale and under
//! faults live in the simulator.

mod support;

use shoal_node::core::{Command, Event, Liveness};
use support::*;

fn everyone_holds(mesh: &Mesh, origin: &str, version: u64) -> bool {
    mesh.nodes
        .iter()
        .filter(|(m, _)| !mesh.down.contains(*m))
        .all(|(_, n)| {
            n.record(&cluster(origin), &service("web"))
                .is_some_and(|r| r.record.version >= version)
        })
}

/// Every push in the log, as (sender, receiver).
fn pushes(mesh: &Mesh) -> Vec<(shoal_proto::MemberId, shoal_proto::MemberId)> {
    mesh.log
        .iter()
        .filter_map(|(from, c)| match c {
            Command::Send {
                to, kind: "push", ..
            } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn members_find_each_other_and_a_change_reaches_every_replica() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 2);
    mesh.run_for_ms(5_000);
    for node in mesh.nodes.values() {
        assert_eq!(
            node.members_up().len(),
            5,
            "{:?} sees {:?}",
            node.member(),
            node.members_up()
        );
    }
    mesh.log.clear();
    mesh.export(&member("west", 0), spec("web", 1_000, 1));
    mesh.run_for_ms(50);
    assert!(everyone_holds(&mesh, "west", 1));
    // One push per other cluster's gateway with relay, one to the sibling, and each
    // gateway relays to its sibling: five pushes for five receivers.
    let pushes = pushes(&mesh);
    assert_eq!(pushes.len(), 5, "{pushes:?}");
    assert!(
        pushes.contains(&(member("east", 0), member("east", 1))),
        "the gateway relays to its sibling"
    );
    for node in mesh.nodes.values() {
        node.check_invariants_deep().unwrap();
    }
}

#[test]
fn anti_entropy_repairs_a_replica_that_missed_pushes() {
    // Two replicas: east stays up while east/0 is away, so its return is no cluster
    // join (which would be pushed every cluster's records): only anti-entropy repairs.
    let mut mesh = Mesh::new(&["east", "west"], 2);
    mesh.run_for_ms(3_000);
    let east = member("east", 0);
    mesh.kill(&east);
    mesh.export(&member("west", 0), spec("web", 1_000, 1));
    mesh.run_for_ms(100);
    assert!(
        mesh.nodes[&east]
            .record(&cluster("west"), &service("web"))
            .is_none()
    );
    mesh.restart(&east);
    mesh.run_for_ms(12_000);
    assert!(everyone_holds(&mesh, "west", 1));
    assert!(
        mesh.nodes
            .values()
            .map(|n| n.stats().anti_entropy_rounds)
            .sum::<u64>()
            > 0
    );
    let digests: Vec<_> = mesh.nodes.values().map(|n| n.view_digest()).collect();
    assert!(digests.iter().all(|d| *d == digests[0]));
}

#[test]
fn a_cluster_that_comes_up_is_pushed_every_clusters_own_records_at_once() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 1);
    mesh.run_for_ms(3_000);
    let east = member("east", 0);
    mesh.kill(&east);
    mesh.export(&member("west", 0), spec("web", 1_000, 1));
    mesh.export(&member("south", 0), spec("web", 2_000, 2));
    mesh.run_for_ms(8_000);
    mesh.log.clear();
    mesh.restart(&east);
    let deadline = mesh.now.as_millis() + 5_000;
    while !(everyone_holds(&mesh, "west", 1) && everyone_holds(&mesh, "south", 1)) {
        assert!(mesh.now.as_millis() < deadline, "east never caught up");
        mesh.run_for_ms(10);
    }
    // Each origin pushed its own records to the newcomer.
    let pushes: Vec<_> = pushes(&mesh)
        .into_iter()
        .filter(|(_, to)| *to == east)
        .map(|(from, _)| from.cluster.to_string())
        .collect();
    assert!(
        pushes.iter().any(|c| c == "west") && pushes.iter().any(|c| c == "south"),
        "{pushes:?}"
    );
}

#[test]
fn a_dead_cluster_is_withdrawn_after_the_grace_period_and_restored_when_it_returns() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 2);
    mesh.run_for_ms(4_000);
    mesh.export(&member("south", 0), spec("web", 1_000, 7));
    mesh.run_for_ms(100);
    let east = member("east", 0);
    assert!(mesh.nodes[&east].imports()[&service("web")].exports_from(&cluster("south")));

    mesh.kill(&member("south", 0));
    mesh.kill(&member("south", 1));
    let grace = mesh.nodes[&east].config().withdraw_grace_ms;
    let deadline = mesh.now.as_millis() + 10_000;
    while !matches!(
        mesh.nodes[&east].liveness(&cluster("south")),
        Liveness::Down { .. }
    ) {
        assert!(
            mesh.now.as_millis() < deadline,
            "south never detected as down"
        );
        mesh.run_for_ms(10);
    }
    assert!(
        mesh.nodes[&east].imports().contains_key(&service("web")),
        "still imported during the grace period"
    );
    mesh.run_for_ms(grace + 2_000);
    for (m, node) in &mesh.nodes {
        if m.cluster.as_str() != "south" {
            assert!(matches!(
                node.liveness(&cluster("south")),
                Liveness::Withdrawn { .. }
            ));
            assert!(
                !node.imports().contains_key(&service("web")),
                "{m} still imports south"
            );
        }
    }
    assert!(
        mesh.log
            .iter()
            .any(|(_, c)| *c == Command::Notify(Event::ClusterWithdrawn(cluster("south"))))
    );

    mesh.restart(&member("south", 0));
    mesh.run_for_ms(5_000);
    assert!(mesh.nodes[&east].imports()[&service("web")].exports_from(&cluster("south")));
    assert!(mesh.nodes[&east].stats().restorations >= 1);
}

#[test]
fn a_rolling_restart_never_makes_the_cluster_look_dead() {
    let mut mesh = Mesh::new(&["east", "west"], 2);
    mesh.run_for_ms(4_000);
    for replica in [0, 1] {
        let m = member("west", replica);
        mesh.kill(&m);
        mesh.run_for_ms(6_000);
        mesh.restart(&m);
        mesh.run_for_ms(6_000);
    }
    let east = &mesh.nodes[&member("east", 0)];
    assert_eq!(east.liveness(&cluster("west")), Liveness::Alive);
    assert_eq!(east.stats().withdrawals, 0);
    assert!(
        !mesh
            .log
            .iter()
            .any(|(_, c)| matches!(c, Command::Notify(Event::ClusterDown(_))))
    );
}

#[test]
fn an_isolated_node_keeps_serving_its_last_view() {
    let mut mesh = Mesh::new(&["east", "west"], 1);
    mesh.run_for_ms(3_000);
    mesh.export(&member("west", 0), spec("web", 1_000, 1));
    mesh.run_for_ms(100);
    mesh.kill(&member("west", 0));
    // east alone cannot tell whether west died or east was cut off: with no remote
    // member left it serves its last view rather than withdrawing everything.
    mesh.run_for_ms(30_000);
    let east = &mesh.nodes[&member("east", 0)];
    assert!(east.is_isolated());
    assert!(east.imports().contains_key(&service("web")));
    assert_eq!(east.stats().withdrawals, 0);
}

/// The endpoint address octet of `origin`'s record for "web" at `node`.
fn web_octet(node: &shoal_node::core::Node, origin: &str) -> Option<u8> {
    let record = node.record(&cluster(origin), &service("web"))?;
    match record.record.endpoints.first()?.addresses.first()? {
        shoal_proto::IpAddress::V4(octets) => Some(octets[3]),
        shoal_proto::IpAddress::V6(octets) => Some(octets[15]),
    }
}

#[test]
fn a_publisher_that_lost_its_store_moves_its_versions_above_what_peers_hold() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 1);
    mesh.run_for_ms(3_000);
    let east = member("east", 0);
    for octet in 1..=5 {
        mesh.export(&east, spec("web", 1_000, octet));
    }
    mesh.run_for_ms(500);
    assert!(everyone_holds(&mesh, "east", 5));

    // The disk is gone: the restarted publisher counts its versions from zero, and
    // its first export now (version 1) is older than what every peer holds.
    mesh.kill(&east);
    mesh.stores
        .insert(east.clone(), shoal_node::core::PersistedState::default());
    mesh.restart(&east);
    mesh.export(&east, spec("web", 1_000, 9));
    assert_eq!(mesh.node(&east).own_version(), 1);
    mesh.run_for_ms(10_000);

    for (m, node) in &mesh.nodes {
        assert_eq!(
            web_octet(node, "east"),
            Some(9),
            "{m} holds east's new content"
        );
        let version = node
            .record(&cluster("east"), &service("web"))
            .unwrap()
            .record
            .version;
        assert!(version > 5, "{m} holds version {version}");
        node.check_invariants_deep().unwrap();
    }
    let east_node = &mesh.nodes[&east];
    assert!(east_node.own_version() > 5);
    assert_eq!(east_node.stats().own_records_recovered, 1);
    assert_eq!(mesh.stores[&east].own_version, east_node.own_version());
}

/// Runs the mesh in 10 ms steps until `condition` holds, failing after `within_ms`.
fn run_until_true(mesh: &mut Mesh, within_ms: u64, what: &str, condition: impl Fn(&Mesh) -> bool) {
    let deadline = mesh.now.as_millis() + within_ms;
    while !condition(mesh) {
        assert!(
            mesh.now.as_millis() < deadline,
            "{what}: not within {within_ms} ms"
        );
        mesh.run_for_ms(10);
    }
}

/// South stops answering for longer than the grace period (a long pause, or a
/// partition of its own) and is withdrawn although its process never stopped. When it
/// answers again, foca renews its identity (a higher generation of the same process):
/// the withdrawal is refuted. After a real death, a restart is a restoration only.
#[test]
fn a_paused_cluster_refutes_its_withdrawal_and_a_restarted_one_does_not() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 1);
    mesh.run_for_ms(4_000);
    let (east, south) = (member("east", 0), member("south", 0));
    let grace = mesh.nodes[&east].config().withdraw_grace_ms;
    let south_is = |withdrawn: bool| {
        let east = east.clone();
        move |mesh: &Mesh| {
            let liveness = mesh.nodes[&east].liveness(&cluster("south"));
            match withdrawn {
                true => matches!(liveness, Liveness::Withdrawn { .. }),
                false => liveness == Liveness::Alive,
            }
        }
    };
    let generation = mesh.nodes[&south].generation();

    // Paused: nothing in or out and no timers, but its state stays.
    mesh.kill(&south);
    run_until_true(&mut mesh, grace + 10_000, "south withdrawn", south_is(true));
    mesh.down.remove(&south);
    let now = mesh.now;
    mesh.node(&south).handle_timeout(now);
    mesh.drain(&south);
    run_until_true(&mut mesh, 10_000, "paused south back", south_is(false));
    assert!(
        mesh.nodes[&south].generation() > generation,
        "south rejoined renewed"
    );
    let stats = mesh.nodes[&east].stats();
    assert_eq!((stats.restorations, stats.withdrawals_refuted), (1, 1));

    // Dead, then restarted from its store.
    mesh.kill(&south);
    run_until_true(
        &mut mesh,
        grace + 10_000,
        "south withdrawn again",
        south_is(true),
    );
    mesh.restart(&south);
    run_until_true(&mut mesh, 10_000, "restarted south back", south_is(false));
    let stats = mesh.nodes[&east].stats();
    assert_eq!((stats.restorations, stats.withdrawals_refuted), (2, 1));
    for node in mesh.nodes.values() {
        node.check_invariants_deep().unwrap();
    }
}

/// With a fixed 2 ms one-way delay, every SWIM ack comes exactly 4 ms after its ping:
/// each node's histogram for each peer holds only (2.5 ms, 5 ms] samples summing to
/// 4 ms apiece. A healthy mesh suspects no one and refutes nothing.
#[test]
fn swim_acks_are_timed_per_peer_and_a_healthy_mesh_suspects_no_one() {
    let mut mesh = Mesh::new(&["east", "west", "south"], 1);
    mesh.run_for_ms(10_000);
    for (m, node) in &mesh.nodes {
        let stats = node.stats();
        let peers: Vec<_> = stats.swim_ack.by_peer().map(|(p, _)| p.clone()).collect();
        let others: Vec<_> = mesh.nodes.keys().filter(|p| *p != m).cloned().collect();
        assert_eq!(peers, others, "{m} timed acks from every peer");
        for (peer, histogram) in stats.swim_ack.by_peer() {
            assert!(histogram.count >= 2, "{m} probed {peer}: {histogram:?}");
            assert_eq!(histogram.sum_micros, 4_000 * histogram.count);
            for (le, at_most) in histogram.cumulative() {
                let expected = if le < 4_000 { 0 } else { histogram.count };
                assert_eq!(at_most, expected, "{m} from {peer}, le {le} µs");
            }
        }
        assert_eq!(stats.swim_ack.others().count, 0);
        assert_eq!(
            (
                stats.swim_acks_missed,
                stats.members_suspected,
                stats.suspicions_refuted
            ),
            (0, 0, 0),
            "{m}"
        );
    }
}
