#![allow(clippy::unwrap_used, clippy::disallowed_methods)]
//! The sled store: round trips, undecodable values, and a loop of kill -9 that must
//! never lose what was acknowledged.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_node::core::{Durability, StoreOp, VoterRecord};
use shoal_node::runtime::store::Store;
use shoal_proto::{
    ClusterId, ClusterKey, ExportRecord, Grant, LeaseName, MemberId, NetAddr, NetworkMode,
    ReplicaId, ServiceKey, ServiceType, SignedRecord, SwimIdentity,
};

fn signed(version: u64) -> Arc<SignedRecord> {
    let key = ClusterKey::from_seed(ClusterId::new("east").unwrap(), [3; 32]);
    Arc::new(key.sign_unchecked(ExportRecord {
        origin: ClusterId::new("east").unwrap(),
        service: ServiceKey::new("default", &format!("svc-{}", version % 7)).unwrap(),
        version,
        export_created_ms: 1,
        published_ms: 2,
        service_type: ServiceType::ClusterSetIp,
        ports: Vec::new(),
        endpoints: Vec::new(),
        network: NetworkMode::Flat,
        properties: shoal_proto::ServiceProperties::default(),
        tombstone: false,
    }))
}

/// Opens the store again. sled's background flusher releases the file lock of a
/// dropped store a moment later, so a reopen in the same process retries, up to a
/// deadline, while the lock is held.
fn reopen(
    dir: &std::path::Path,
) -> (
    Store,
    shoal_node::core::PersistedState,
    shoal_node::runtime::store::LoadReport,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Ok(opened) => return opened,
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::yield_now();
            }
            Err(e) => panic!("cannot reopen the store: {e}"),
        }
    }
}

/// Retries `open` while another handle in this process still holds the file lock.
fn until_unlocked<T, E: std::fmt::Display>(open: impl Fn() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::yield_now();
            }
            Err(e) => panic!("cannot open: {e}"),
        }
    }
}

fn lease() -> LeaseName {
    LeaseName::new("payments-write-leader").unwrap()
}

fn vote(promised: u64) -> VoterRecord {
    VoterRecord {
        promised,
        accepted: Some((
            promised,
            Grant {
                holder: ClusterId::new("east").unwrap(),
                token: shoal_proto::FencingToken(promised),
                lease_ms: 4_000,
            },
        )),
    }
}

#[test]
fn every_op_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let peer = SwimIdentity {
        member: MemberId {
            cluster: ClusterId::new("west").unwrap(),
            replica: ReplicaId(1),
        },
        addr: NetAddr::from("127.0.0.1:7100".parse::<std::net::SocketAddr>().unwrap()),
        generation: 9,
    };
    {
        let (store, state, report) = Store::open(dir.path()).unwrap();
        assert_eq!(state, Default::default());
        assert_eq!(report.records, 0);
        store
            .apply(
                &[
                    StoreOp::PutRecord(signed(5)),
                    StoreOp::PutOwnVersion(5),
                    StoreOp::PutGeneration(3),
                    StoreOp::PutLastContact(1_234),
                    StoreOp::PutPeers(vec![peer.clone()]),
                    StoreOp::PutLeaseVote(lease(), vote(11)),
                ],
                Durability::Flush,
            )
            .unwrap();
    }
    let (_, state, report) = reopen(dir.path());
    assert_eq!(report.records, 1);
    assert_eq!(report.undecodable, 0);
    assert_eq!(state.own_version, 5);
    assert_eq!(state.generation, 3);
    assert_eq!(state.last_contact_ms, Some(1_234));
    assert_eq!(state.peers, vec![peer]);
    let record = signed(5);
    let key = (record.record.origin.clone(), record.record.service.clone());
    assert_eq!(state.records.get(&key), Some(&record));
    assert_eq!(
        state.lease_votes,
        Some(BTreeMap::from([(lease(), vote(11))]))
    );
}

#[test]
fn a_store_that_never_held_votes_reports_none() {
    let dir = tempfile::tempdir().unwrap();
    let (store, state, _) = Store::open(dir.path()).unwrap();
    assert_eq!(state.lease_votes, None);
    store
        .apply(&[StoreOp::PutOwnVersion(1)], Durability::Flush)
        .unwrap();
    drop(store);
    let (_, state, _) = reopen(dir.path());
    assert_eq!(
        state.lease_votes, None,
        "votes are None until one was stored"
    );
}

#[test]
fn undecodable_values_are_dropped_counted_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _, _) = Store::open(dir.path()).unwrap();
        store
            .apply(
                &[StoreOp::PutRecord(signed(1)), StoreOp::PutOwnVersion(1)],
                Durability::Flush,
            )
            .unwrap();
    }
    {
        // Corrupt the store behind its back.
        let db = until_unlocked(|| sled::open(dir.path()));
        db.open_tree("records")
            .unwrap()
            .insert("east/default/garbage", &[0xff, 0xff, 0xff][..])
            .unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("generation", &[1, 2][..])
            .unwrap();
        db.flush().unwrap();
    }
    let (_, state, report) = reopen(dir.path());
    assert_eq!(report.undecodable, 2);
    assert_eq!(report.records, 1, "the good record survives");
    assert_eq!(state.own_version, 1);
    assert_eq!(state.generation, 0);
    let (_, _, again) = reopen(dir.path());
    assert_eq!(again.undecodable, 0, "bad values were deleted");
}

#[test]
fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format", &99u32.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let err = Store::open(dir.path()).unwrap_err();
        if err.metric_label() != "sled" || Instant::now() > deadline {
            break err;
        }
    };
    assert_eq!(err.metric_label(), "format", "{err}");
}

const CHILD_ENV: &str = "SHOAL_STORE_KILL_CHILD_DIR";

/// The child side of the kill loop: writes and acknowledges until killed.
#[test]
fn store_kill_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only acts when the kill loop starts it
    };
    let (store, state, _) = Store::open(std::path::Path::new(&dir)).unwrap();
    let mut n = state.own_version;
    let stdout = std::io::stdout();
    loop {
        n += 1;
        let mut ops = vec![StoreOp::PutOwnVersion(n), StoreOp::PutRecord(signed(n))];
        if n % 3 == 0 {
            ops.push(StoreOp::PutLeaseVote(lease(), vote(n)));
        }
        store.apply(&ops, Durability::Flush).unwrap();
        let mut out = stdout.lock();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_write() {
    const KILLS: u64 = 20;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = 0u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store_kill_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kill after a seeded number of acknowledgements, 1 to 40.
        let wanted = 1 + rng % 40;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let Some(n) = line
                .unwrap()
                .strip_prefix("ack ")
                .map(|n| n.parse::<u64>().unwrap())
            else {
                continue;
            };
            assert!(n > acked, "round {round}: ack {n} after ack {acked}");
            acked = n;
            seen += 1;
            if seen >= wanted || Instant::now() > deadline {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (_, state, report) = reopen(dir.path());
        assert_eq!(report.undecodable, 0, "round {round}");
        assert!(
            state.own_version >= acked,
            "round {round}: acknowledged {acked}, store holds {}",
            state.own_version
        );
        let last = signed(acked);
        let key = (last.record.origin.clone(), last.record.service.clone());
        let held = state.records.get(&key).unwrap();
        assert!(held.record.version >= acked, "round {round}");
        if acked >= 3 {
            let votes = state.lease_votes.as_ref().expect("votes were stored");
            assert!(votes[&lease()].promised >= acked / 3 * 3, "round {round}");
        }
        acked = state.own_version;
    }
    assert!(
        acked >= KILLS,
        "every round acknowledged at least one write"
    );
}
