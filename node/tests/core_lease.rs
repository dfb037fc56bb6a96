#![allow(clippy::unwrap_used)]
//! The quorum lease, one input in, the exact commands out. The node under test is
//! "east"/0: its cluster's publisher (a proposer) and east's voter; "west"/0 and
//! "south"/0, the other voters, are played by the test unless said otherwise.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_node::core::{
    Command, Config, Durability, Event, LEASES_MAX, LeaseConfig, LeaseError, LeaseRequest,
    LeaseStatus, Node, PersistedState, StoreOp, Time, VoterRecord,
};
use shoal_proto::wire::Channel;
use shoal_proto::{FencingToken, Grant, LeaseMessage, LeaseName, MemberId, Message};
use support::*;

const VOTERS: [&str; 3] = ["east", "west", "south"];
/// `LeaseConfig::lan`'s lease.
const LEASE_MS: u64 = 4_000;

fn lease() -> LeaseName {
    LeaseName::new("payments-write-leader").unwrap()
}

fn ms(ms: u64) -> Time {
    Time::from_millis(ms)
}

fn us(us: u64) -> Time {
    Time::from_micros(us)
}

fn lease_config() -> LeaseConfig {
    LeaseConfig::lan(VOTERS.iter().map(|name| cluster(name)).collect())
}

/// Voter state that makes a voter take part at once.
fn ready() -> Option<BTreeMap<LeaseName, VoterRecord>> {
    Some(BTreeMap::new())
}

/// Replica 0 of `name`: its cluster's publisher and, with `lease_config`, a voter.
fn lease_node(name: &str, now: Time, votes: Option<BTreeMap<LeaseName, VoterRecord>>) -> Node {
    let i = VOTERS.iter().position(|v| *v == name).unwrap() as u8 + 1;
    let mut config = Config::lan(member(name, 0), addr(i), 3);
    config.lease = lease_config();
    config.publisher = true;
    let store = PersistedState {
        lease_votes: votes,
        ..PersistedState::default()
    };
    let mut node = Node::new(config, key(name), ring(&VOTERS), now, 7, store).unwrap();
    node.take_commands();
    node
}

/// The node restarted at `now` from `store`.
fn restart(node: &Node, now: Time, store: PersistedState) -> Node {
    let name = node.config().member.cluster.as_str().to_owned();
    let config = node.config().clone();
    let mut node = Node::new(config, key(&name), ring(&VOTERS), now, 8, store).unwrap();
    node.take_commands();
    node
}

fn grant(holder: &str, token: u64) -> Grant {
    Grant {
        holder: cluster(holder),
        token: FencingToken(token),
        lease_ms: LEASE_MS,
    }
}

fn prepare(round: u64) -> LeaseMessage {
    LeaseMessage::Prepare {
        lease: lease(),
        round,
    }
}

fn promise(round: u64, open: Option<(Grant, u64)>) -> LeaseMessage {
    LeaseMessage::Promise {
        lease: lease(),
        round,
        open,
    }
}

fn propose(round: u64, grant: Grant) -> LeaseMessage {
    LeaseMessage::Propose {
        lease: lease(),
        round,
        grant,
    }
}

fn accepted(round: u64) -> LeaseMessage {
    LeaseMessage::Accepted {
        lease: lease(),
        round,
    }
}

fn reject(round: u64, promised: u64) -> LeaseMessage {
    LeaseMessage::Reject {
        lease: lease(),
        round,
        promised,
    }
}

fn release(token: u64) -> LeaseMessage {
    LeaseMessage::Release {
        lease: lease(),
        token: FencingToken(token),
    }
}

fn frame(message: &LeaseMessage) -> Vec<u8> {
    Message::Lease(message.clone()).encode().unwrap()
}

/// `message` arrives at `node` from `from`; the commands that come out.
fn deliver(node: &mut Node, now: Time, from: &MemberId, message: LeaseMessage) -> Vec<Command> {
    node.handle_packet(now, from, Channel::Stream, &frame(&message));
    node.take_commands()
}

/// The send of `message` to `to`/0, as the core emits it (no address known).
fn send(to: &str, message: LeaseMessage) -> Command {
    Command::Send {
        to: member(to, 0),
        addr: None,
        channel: Channel::Stream,
        kind: message.kind(),
        bytes: frame(&message),
    }
}

/// The durable write of this node's voter record, before its reply.
fn vote(promised: u64, accepted: Option<(u64, Grant)>) -> Command {
    Command::Persist {
        ops: vec![StoreOp::PutLeaseVote(
            lease(),
            VoterRecord { promised, accepted },
        )],
        durability: Durability::Flush,
    }
}

fn notify(event: Event) -> Command {
    Command::Notify(event)
}

/// The lease commands among `commands` (timers also run SWIM and anti-entropy).
fn lease_commands(commands: Vec<Command>) -> Vec<Command> {
    commands
        .into_iter()
        .filter(|c| match c {
            Command::Persist { ops, .. } => {
                ops.iter().any(|op| matches!(op, StoreOp::PutLeaseVote(..)))
            }
            Command::Send { kind, .. } => kind.starts_with("lease_"),
            Command::Notify(event) => matches!(
                event,
                Event::LeaseAcquired { .. } | Event::LeaseLost { .. } | Event::LeaseReleased { .. }
            ),
            _ => false,
        })
        .collect()
}

/// The lease messages `commands` send, decoded, with their destination.
fn sent(commands: &[Command]) -> Vec<(MemberId, LeaseMessage)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Send { to, bytes, .. } => match Message::decode_frame(bytes).unwrap() {
                Message::Lease(m) => Some((to.clone(), m)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn holder_validity() -> Duration {
    lease_config().holder_validity()
}

/// East acquires at 10 ms, west promises at 20 ms (the proposal goes out then) and
/// accepts at 30 ms: east holds with token 1, valid until 20 ms + the holder validity.
fn east_holding() -> Node {
    let mut east = lease_node("east", ms(1), ready());
    let west = member("west", 0);
    east.handle_lease_request(ms(10), LeaseRequest::Acquire(lease()))
        .unwrap();
    deliver(&mut east, ms(20), &west, promise(1, None));
    let commands = deliver(&mut east, ms(30), &west, accepted(1));
    assert_eq!(
        lease_commands(commands),
        vec![notify(Event::LeaseAcquired {
            lease: lease(),
            token: FencingToken(1)
        })]
    );
    east.take_commands();
    east
}

/// `node` runs every timer due before `until`, in order; the commands that came out.
fn run_timers_before(node: &mut Node, until: Time) -> Vec<Command> {
    let mut log = Vec::new();
    while let Some(at) = node.poll_timeout().filter(|at| *at < until) {
        node.handle_timeout(at);
        log.extend(node.take_commands());
    }
    log
}

#[test]
fn acquiring_takes_a_majority_of_promises_then_of_accepts() {
    let mut east = lease_node("east", ms(1), ready());
    let west = member("west", 0);

    // East's own voter promises inline, durably, before any send; the round's
    // deadline is the earliest timer.
    east.handle_lease_request(ms(10), LeaseRequest::Acquire(lease()))
        .unwrap();
    assert_eq!(
        east.take_commands(),
        vec![
            vote(1, None),
            send("west", prepare(1)),
            send("south", prepare(1)),
            Command::SetTimer { at: ms(310) },
        ]
    );
    assert!(!east.lease_status(ms(10), &lease()).write_ready);

    // East's own promise and west's make a majority of three: propose token 1. East's
    // own voter accepts inline, durably first.
    let commands = deliver(&mut east, ms(20), &west, promise(1, None));
    assert_eq!(
        commands,
        vec![
            vote(1, Some((1, grant("east", 1)))),
            send("west", propose(1, grant("east", 1))),
            send("south", propose(1, grant("east", 1))),
        ]
    );
    assert_eq!(
        east.lease_held(&lease()),
        None,
        "not before a majority accepts"
    );

    // West's accept completes the majority.
    let commands = deliver(&mut east, ms(30), &west, accepted(1));
    assert_eq!(
        commands,
        vec![notify(Event::LeaseAcquired {
            lease: lease(),
            token: FencingToken(1)
        })]
    );
    let validity = holder_validity();
    // 4 s × (1 − 0.001) / (1 + 0.001), truncated to the microsecond.
    assert_eq!(validity, Duration::from_micros(3_992_007));
    assert!(validity < Duration::from_millis(LEASE_MS));
    let valid_until = ms(10) + validity;
    assert_eq!(
        east.lease_held(&lease()),
        Some((FencingToken(1), valid_until)),
        "timed from when the round's Prepare went out, not from the propose or the accept"
    );
    assert_eq!(
        east.lease_status(ms(30), &lease()),
        LeaseStatus {
            holder: Some(cluster("east")),
            token: Some(FencingToken(1)),
            expires_in_ms: Some(3_972),
            write_ready: true,
        }
    );
    assert_eq!(
        (east.stats().lease_rounds, east.stats().lease_acquisitions),
        (1, 1)
    );

    // A late accept from south changes nothing.
    let south = member("south", 0);
    assert_eq!(deliver(&mut east, ms(31), &south, accepted(1)), vec![]);
    assert_eq!(east.stats().lease_acquisitions, 1);
}

#[test]
fn answers_from_members_that_are_not_voter_replicas_do_not_count() {
    let mut east = lease_node("east", ms(1), ready());
    east.handle_lease_request(ms(10), LeaseRequest::Acquire(lease()))
        .unwrap();
    east.take_commands();
    // West's replica 1 is not west's voter; a cluster outside the voters neither.
    assert_eq!(
        deliver(&mut east, ms(20), &member("west", 1), promise(1, None)),
        vec![]
    );
    assert_eq!(
        deliver(&mut east, ms(20), &member("north", 0), promise(1, None)),
        vec![]
    );
    assert_eq!(east.stats().lease_not_voter, 2);
    // West's voter still makes the majority.
    let commands = deliver(&mut east, ms(21), &member("west", 0), promise(1, None));
    assert_eq!(
        sent(&commands),
        vec![
            (member("west", 0), propose(1, grant("east", 1))),
            (member("south", 0), propose(1, grant("east", 1))),
        ]
    );
}

#[test]
fn a_voter_keeps_its_promise_drops_forged_proposals_and_reports_its_open_grant() {
    let mut east = lease_node("east", ms(1), ready());
    let (west, south) = (member("west", 0), member("south", 0));

    assert_eq!(
        deliver(&mut east, ms(10), &west, prepare(5)),
        vec![vote(5, None), send("west", promise(5, None))]
    );
    // Not higher than the promise: rejected, and nothing is written.
    assert_eq!(
        deliver(&mut east, ms(11), &south, prepare(5)),
        vec![send("south", reject(5, 5))]
    );
    assert_eq!(
        deliver(&mut east, ms(12), &south, prepare(3)),
        vec![send("south", reject(3, 5))]
    );

    // West proposes south as the holder: forged, dropped without an answer.
    assert_eq!(
        deliver(&mut east, ms(13), &west, propose(5, grant("south", 5))),
        vec![]
    );
    assert_eq!(east.stats().lease_forged, 1);
    assert_eq!(east.lease_status(ms(13), &lease()).holder, None);

    // West proposes itself in the round it was promised: accepted, the timer starts.
    assert_eq!(
        deliver(&mut east, ms(100), &west, propose(5, grant("west", 5))),
        vec![
            vote(5, Some((5, grant("west", 5)))),
            send("west", accepted(5))
        ]
    );
    // A second later, south's higher round is promised, with west's open grant and
    // the 3 s left on its timer.
    assert_eq!(
        deliver(&mut east, ms(1_100), &south, prepare(6)),
        vec![
            vote(6, Some((5, grant("west", 5)))),
            send("south", promise(6, Some((grant("west", 5), 3_000)))),
        ]
    );
    assert_eq!(
        east.lease_status(ms(1_100), &lease()),
        LeaseStatus {
            holder: Some(cluster("west")),
            token: Some(FencingToken(5)),
            expires_in_ms: Some(3_000),
            write_ready: false,
        }
    );
    // A proposal below the promise is rejected and changes nothing.
    assert_eq!(
        deliver(&mut east, ms(1_200), &west, propose(5, grant("west", 5))),
        vec![send("west", reject(5, 6))]
    );
    // The timer ends 4 s after the accept: then the grant is no longer open.
    assert_eq!(
        deliver(&mut east, ms(4_100), &south, prepare(7)),
        vec![
            vote(7, Some((5, grant("west", 5)))),
            send("south", promise(7, None)),
        ]
    );
    assert_eq!(east.lease_status(ms(4_100), &lease()).holder, None);
}

#[test]
fn a_proposer_that_sees_another_holders_open_grant_waits_it_out() {
    let mut east = lease_node("east", ms(1), ready());
    east.handle_lease_request(ms(10), LeaseRequest::Acquire(lease()))
        .unwrap();
    east.take_commands();
    // West reports south's grant with 2.5 s left: east's own promise and west's make a
    // majority, and south may hold the lease now.
    let commands = deliver(
        &mut east,
        ms(20),
        &member("west", 0),
        promise(1, Some((grant("south", 1), 2_500))),
    );
    assert_eq!(commands, vec![], "no proposal");
    assert_eq!(east.stats().lease_blocked, 1);
    assert_eq!(east.lease_held(&lease()), None);

    // Nothing before the open grant's timer has run out (plus a backoff of at least
    // a quarter of the round timeout).
    let retry_earliest = ms(20 + 2_500 + 75);
    let log = run_timers_before(&mut east, retry_earliest);
    assert_eq!(lease_commands(log), vec![]);
    assert_eq!(east.stats().lease_rounds, 1);
    assert_eq!(
        east.stats().lease_round_timeouts,
        0,
        "the round ended when it was blocked"
    );

    // Then a new round, higher than the first (backoff at most 3/4 of the timeout).
    east.handle_timeout(ms(20 + 2_500 + 225));
    assert_eq!(
        lease_commands(east.take_commands()),
        vec![
            vote(2, None),
            send("west", prepare(2)),
            send("south", prepare(2)),
        ]
    );
    assert_eq!(east.stats().lease_rounds, 2);
}

#[test]
fn a_renewal_keeps_the_token() {
    let mut east = east_holding();
    let west = member("west", 0);
    // Renew 1 s after the first round's Prepare went out. East's own voter reports east's own grant
    // open, which does not block east.
    let log = run_timers_before(&mut east, ms(1_010));
    assert_eq!(lease_commands(log), vec![]);
    east.handle_timeout(ms(1_010));
    assert_eq!(
        lease_commands(east.take_commands()),
        vec![
            vote(2, Some((1, grant("east", 1)))),
            send("west", prepare(2)),
            send("south", prepare(2)),
        ]
    );
    let commands = deliver(
        &mut east,
        ms(1_025),
        &west,
        promise(2, Some((grant("east", 1), 3_000))),
    );
    assert_eq!(
        commands,
        vec![
            vote(2, Some((2, grant("east", 1)))),
            send("west", propose(2, grant("east", 1))),
            send("south", propose(2, grant("east", 1))),
        ]
    );
    // Accepted: a renewal, not a new acquisition; the validity counts from the new
    // round's Prepare.
    assert_eq!(deliver(&mut east, ms(1_030), &west, accepted(2)), vec![]);
    assert_eq!(
        east.lease_held(&lease()),
        Some((FencingToken(1), ms(1_010) + holder_validity()))
    );
    assert_eq!(
        (east.stats().lease_acquisitions, east.stats().lease_renewals),
        (1, 1)
    );
    // The first validity's end passes without a loss.
    let first_end = ms(10) + holder_validity();
    let log = run_timers_before(&mut east, first_end);
    east.handle_timeout(first_end);
    let mut log = lease_commands(log);
    log.extend(lease_commands(east.take_commands()));
    assert!(
        !log.contains(&notify(Event::LeaseLost { lease: lease() })),
        "{log:?}"
    );
    assert!(east.lease_status(first_end, &lease()).write_ready);
}

#[test]
fn a_new_holder_after_a_lapse_takes_a_higher_token_than_the_last_holder() {
    let mut east = lease_node("east", ms(1), ready());
    let (west, south) = (member("west", 0), member("south", 0));
    // West held the lease with token 5; east's voter accepted it at 10 ms, so its
    // timer runs until 4,010 ms.
    deliver(&mut east, ms(10), &west, prepare(5));
    deliver(&mut east, ms(10), &west, propose(5, grant("west", 5)));

    // East's first round is below the promises: its own voter rejects it inline.
    east.handle_lease_request(ms(20), LeaseRequest::Acquire(lease()))
        .unwrap();
    assert_eq!(
        sent(&east.take_commands()),
        vec![(west.clone(), prepare(1)), (south.clone(), prepare(1))]
    );
    // West rejects too: no majority can answer yes; east learns round 5.
    deliver(&mut east, ms(25), &west, reject(1, 5));
    east.handle_timeout(ms(25 + 225));
    let commands = lease_commands(east.take_commands());
    assert_eq!(
        sent(&commands),
        vec![(west.clone(), prepare(6)), (south.clone(), prepare(6))]
    );
    // Its own voter reports west's open grant: blocked until it has run out.
    assert_eq!(
        deliver(&mut east, ms(260), &south, promise(6, None)),
        vec![]
    );
    assert_eq!(east.stats().lease_blocked, 1);

    let log = lease_commands(run_timers_before(&mut east, ms(4_250)));
    assert_eq!(
        sent(&log),
        vec![(west.clone(), prepare(7)), (south.clone(), prepare(7))],
        "one round after west's grant ran out"
    );
    let commands = deliver(&mut east, ms(4_260), &south, promise(7, None));
    assert_eq!(
        sent(&commands),
        vec![
            (west.clone(), propose(7, grant("east", 7))),
            (south.clone(), propose(7, grant("east", 7))),
        ]
    );
    assert_eq!(
        deliver(&mut east, ms(4_270), &south, accepted(7)),
        vec![notify(Event::LeaseAcquired {
            lease: lease(),
            token: FencingToken(7)
        })]
    );
    let (token, _) = east.lease_held(&lease()).unwrap();
    assert!(token > FencingToken(5), "{token:?}");
}

#[test]
fn a_holder_without_renewals_loses_the_lease_when_its_validity_ends() {
    let mut east = east_holding();
    let valid_until = ms(10) + holder_validity();
    let log = lease_commands(run_timers_before(&mut east, valid_until));
    // Renewals went out (first at 1,010 ms), and none was answered.
    let renewals: Vec<_> = sent(&log)
        .into_iter()
        .filter(|(_, m)| matches!(m, LeaseMessage::Prepare { .. }))
        .collect();
    assert_eq!(renewals[0], (member("west", 0), prepare(2)));
    assert!(
        !log.contains(&notify(Event::LeaseLost { lease: lease() })),
        "{log:?}"
    );
    let just_before = us(valid_until.as_micros() - 1);
    assert!(east.lease_status(just_before, &lease()).write_ready);
    assert_eq!(
        east.lease_status(just_before, &lease()).expires_in_ms,
        Some(0)
    );

    east.handle_timeout(valid_until);
    assert_eq!(
        lease_commands(east.take_commands()),
        vec![notify(Event::LeaseLost { lease: lease() })]
    );
    assert_eq!(east.lease_held(&lease()), None);
    assert!(!east.lease_status(valid_until, &lease()).write_ready);
    assert_eq!(east.stats().lease_lost, 1);

    // East keeps trying; its next tenure takes that round's token, above its last one.
    let (at, round) = loop {
        let at = east.poll_timeout().expect("east keeps trying");
        assert!(at < ms(5_000), "no new round before 5 s");
        east.handle_timeout(at);
        let log = lease_commands(east.take_commands());
        if let Some((_, LeaseMessage::Prepare { round, .. })) = sent(&log).pop() {
            break (at, round);
        }
    };
    assert!(round > 2, "{round}");
    let commands = deliver(&mut east, at, &member("west", 0), promise(round, None));
    assert_eq!(
        sent(&commands)[0],
        (member("west", 0), propose(round, grant("east", round)))
    );
}

#[test]
fn release_tells_the_voters_and_a_voter_clears_the_holders_grant() {
    let mut east = east_holding();
    east.handle_lease_request(ms(100), LeaseRequest::Release(lease()))
        .unwrap();
    assert_eq!(
        east.take_commands(),
        vec![
            vote(1, None),
            notify(Event::LeaseReleased { lease: lease() }),
            send("west", release(1)),
            send("south", release(1)),
        ]
    );
    assert_eq!(east.lease_held(&lease()), None);
    assert_eq!(
        east.lease_status(ms(100), &lease()),
        LeaseStatus {
            holder: None,
            token: None,
            expires_in_ms: None,
            write_ready: false,
        }
    );
    // No renewal once released.
    let log = run_timers_before(&mut east, ms(5_000));
    assert_eq!(lease_commands(log), vec![]);

    // East as a voter, with west's grant open.
    let mut voter = lease_node("east", ms(1), ready());
    let (west, south) = (member("west", 0), member("south", 0));
    deliver(&mut voter, ms(10), &west, prepare(5));
    deliver(&mut voter, ms(10), &west, propose(5, grant("west", 5)));
    // Another token, or another cluster: not the holder's release.
    assert_eq!(deliver(&mut voter, ms(20), &west, release(4)), vec![]);
    assert_eq!(deliver(&mut voter, ms(20), &south, release(5)), vec![]);
    assert_eq!(
        voter.lease_status(ms(20), &lease()).holder,
        Some(cluster("west"))
    );
    // The holder's release: the grant goes, durably; the promise stands.
    assert_eq!(
        deliver(&mut voter, ms(30), &west, release(5)),
        vec![vote(5, None)]
    );
    assert_eq!(voter.lease_status(ms(30), &lease()).holder, None);
    assert_eq!(
        deliver(&mut voter, ms(40), &south, prepare(6)),
        vec![vote(6, None), send("south", promise(6, None))]
    );
    assert_eq!(
        deliver(&mut voter, ms(41), &south, prepare(5)),
        vec![send("south", reject(5, 6))]
    );
}

#[test]
fn a_replica_that_stops_publishing_lets_go_of_its_lease_at_once() {
    let mut east = east_holding();
    // Its hold ends before any voter hears of it; its own voter clears the grant
    // durably, and the other voters are told to.
    east.set_publisher(ms(100), false);
    assert_eq!(
        east.take_commands(),
        vec![
            vote(1, None),
            notify(Event::LeaseReleased { lease: lease() }),
            send("west", release(1)),
            send("south", release(1)),
        ]
    );
    assert!(!east.is_publisher());
    assert_eq!(east.lease_held(&lease()), None);
    assert!(!east.lease_status(ms(100), &lease()).write_ready);
    assert_eq!(
        east.handle_lease_request(ms(101), LeaseRequest::Acquire(lease())),
        Err(LeaseError::NotLocalLeader)
    );
    assert_eq!(east.take_commands(), vec![]);
    // No renewal, however long it waits.
    let log = run_timers_before(&mut east, ms(10_000));
    assert_eq!(lease_commands(log), vec![]);
    assert_eq!(east.stats().publisher_lost, 1);

    // Publishing again, it acquires afresh: a new tenure, with a higher token.
    east.set_publisher(ms(10_000), true);
    east.take_commands();
    east.handle_lease_request(ms(10_001), LeaseRequest::Acquire(lease()))
        .unwrap();
    let prepares = sent(&east.take_commands());
    assert_eq!(prepares[0], (member("west", 0), prepare(2)));
    let west = member("west", 0);
    deliver(&mut east, ms(10_002), &west, promise(2, None));
    assert_eq!(
        lease_commands(deliver(&mut east, ms(10_003), &west, accepted(2))),
        vec![notify(Event::LeaseAcquired {
            lease: lease(),
            token: FencingToken(2)
        })]
    );
}

#[test]
fn a_round_in_flight_is_abandoned_when_the_replica_stops_publishing() {
    let mut east = lease_node("east", ms(1), ready());
    let west = member("west", 0);
    east.handle_lease_request(ms(10), LeaseRequest::Acquire(lease()))
        .unwrap();
    east.take_commands();
    east.set_publisher(ms(15), false);
    assert_eq!(
        east.take_commands(),
        vec![],
        "nothing held, nothing to release"
    );
    // West's promise completes no majority for a proposer that gave up.
    assert_eq!(deliver(&mut east, ms(20), &west, promise(1, None)), vec![]);
    assert_eq!(east.lease_held(&lease()), None);
    let log = run_timers_before(&mut east, ms(10_000));
    assert_eq!(lease_commands(log), vec![]);
}

#[test]
fn a_voter_without_its_votes_waits_one_lease_and_one_with_them_keeps_its_promises() {
    let west = member("west", 0);
    let south = member("south", 0);
    // Started without voter state (a new voter, or one that lost its disk).
    let mut east = lease_node("east", ms(1), None);
    assert_eq!(deliver(&mut east, ms(2), &west, prepare(5)), vec![]);
    assert_eq!(
        deliver(&mut east, ms(3), &west, propose(5, grant("west", 5))),
        vec![]
    );
    let last_wait = us(ms(1 + LEASE_MS).as_micros() - 1);
    assert_eq!(deliver(&mut east, last_wait, &west, prepare(5)), vec![]);
    assert_eq!(east.stats().lease_voter_waiting, 3);

    // One lease after its start it takes part.
    let mut store = PersistedState::default();
    let commands = deliver(&mut east, ms(1 + LEASE_MS), &west, prepare(5));
    assert_eq!(
        record(commands, &mut store),
        vec![vote(5, None), send("west", promise(5, None))]
    );
    let commands = deliver(&mut east, ms(4_100), &west, propose(5, grant("west", 5)));
    assert_eq!(
        record(commands, &mut store),
        vec![
            vote(5, Some((5, grant("west", 5)))),
            send("west", accepted(5))
        ]
    );
    assert_eq!(east.stats().lease_voter_waiting, 3);

    // Restarted with what it persisted: it answers at once, keeps its promise, and
    // times the accepted grant again in full from the restart.
    let mut east = restart(&east, ms(6_000), store);
    assert_eq!(
        deliver(&mut east, ms(6_000), &south, prepare(5)),
        vec![send("south", reject(5, 5))]
    );
    assert_eq!(
        deliver(&mut east, ms(6_001), &south, prepare(4)),
        vec![send("south", reject(4, 5))]
    );
    assert_eq!(
        deliver(&mut east, ms(6_002), &south, prepare(6)),
        vec![
            vote(6, Some((5, grant("west", 5)))),
            send("south", promise(6, Some((grant("west", 5), 3_998)))),
        ]
    );
    assert_eq!(east.stats().lease_voter_waiting, 0);
}

#[test]
fn lease_requests_need_voters_and_the_local_leader() {
    let mut config = Config::lan(member("east", 0), addr(1), 3);
    config.publisher = true;
    let mut no_voters = Node::new(
        config,
        key("east"),
        ring(&VOTERS),
        ms(1),
        7,
        PersistedState::default(),
    )
    .unwrap();
    no_voters.take_commands();
    assert_eq!(
        no_voters.handle_lease_request(ms(2), LeaseRequest::Acquire(lease())),
        Err(LeaseError::NoVoters)
    );
    assert_eq!(no_voters.take_commands(), vec![]);

    let mut config = Config::lan(member("east", 1), addr(4), 3);
    config.lease = lease_config();
    config.publisher = false;
    let mut follower = Node::new(
        config,
        key("east"),
        ring(&VOTERS),
        ms(1),
        7,
        PersistedState::default(),
    )
    .unwrap();
    follower.take_commands();
    for request in [
        LeaseRequest::Acquire(lease()),
        LeaseRequest::Release(lease()),
    ] {
        assert_eq!(
            follower.handle_lease_request(ms(2), request),
            Err(LeaseError::NotLocalLeader)
        );
    }
    assert_eq!(follower.take_commands(), vec![]);
    assert_eq!(follower.stats().lease_rounds, 0);

    // At most LEASES_MAX leases per node.
    let mut east = lease_node("east", ms(1), ready());
    for i in 0..LEASES_MAX {
        let name = LeaseName::new(format!("lease-{i}")).unwrap();
        east.handle_lease_request(ms(2), LeaseRequest::Acquire(name))
            .unwrap();
    }
    east.take_commands();
    assert_eq!(
        east.handle_lease_request(ms(3), LeaseRequest::Acquire(lease())),
        Err(LeaseError::TooMany)
    );
    assert_eq!(east.take_commands(), vec![]);
}

/// Applies `commands`' writes to `store`, as a driver would; returns the commands.
fn record(commands: Vec<Command>, store: &mut PersistedState) -> Vec<Command> {
    for command in &commands {
        if let Command::Persist { ops, .. } = command {
            ops.iter().for_each(|op| store.apply(op));
        }
    }
    commands
}

/// Delivers `commands`' lease sends from `from`, and the answers they lead to, at
/// `now`, except those to `unreached`, which never arrive.
fn route(
    nodes: &mut BTreeMap<&'static str, Node>,
    now: Time,
    from: &str,
    commands: &[Command],
    unreached: Option<&str>,
) {
    let mut queue: Vec<(String, String, LeaseMessage)> = sent(commands)
        .into_iter()
        .map(|(to, m)| (from.to_owned(), to.cluster.as_str().to_owned(), m))
        .collect();
    while !queue.is_empty() {
        let (sender, to, message) = queue.remove(0);
        if unreached == Some(to.as_str()) {
            continue;
        }
        let node = nodes.get_mut(to.as_str()).unwrap();
        let out = deliver(node, now, &member(&sender, 0), message);
        queue.extend(
            sent(&out)
                .into_iter()
                .map(|(dest, m)| (to.clone(), dest.cluster.as_str().to_owned(), m)),
        );
    }
}

/// Regression: a voter that lost its votes waits one lease from its restart, so a
/// promise it gave before its crash must not start a validity long after. East's
/// process pauses with west's promise queued; west restarts without its votes, waits
/// one lease, then promises and accepts south's round 1; when east resumes it handles
/// the queued promise before its overdue round timer (as the simulator's paused process
/// does) and proposes round 1, which west accepts too (1 >= its promise). Because the
/// holder's validity counts from its round's Prepare, as in PaxosLease, east's has
/// already run out: only south holds the lease.
#[test]
fn a_promise_forgotten_by_a_restarted_voter_cannot_make_a_second_holder() {
    let mut nodes: BTreeMap<&'static str, Node> = VOTERS
        .iter()
        .map(|name| (*name, lease_node(name, ms(1), ready())))
        .collect();

    // East starts round 1; only west hears it, and west's promise is queued at east,
    // whose process is paused from here on.
    let east = nodes.get_mut("east").unwrap();
    east.handle_lease_request(ms(10), LeaseRequest::Acquire(lease()))
        .unwrap();
    let commands = east.take_commands();
    let to_west = sent(&commands)
        .into_iter()
        .find(|(to, _)| to.cluster == cluster("west"))
        .unwrap()
        .1;
    assert_eq!(to_west, prepare(1));
    let west = nodes.get_mut("west").unwrap();
    let out = deliver(west, ms(11), &member("east", 0), to_west);
    let queued_promise = sent(&out).pop().unwrap().1;
    assert_eq!(queued_promise, promise(1, None));

    // West crashes and loses its disk; it restarts at 12 ms and waits one lease.
    let old_west = nodes.remove("west").unwrap();
    nodes.insert(
        "west",
        restart(&old_west, ms(12), PersistedState::default()),
    );

    // South acquires once west takes part again; east (paused) hears nothing.
    let south = nodes.get_mut("south").unwrap();
    south
        .handle_lease_request(ms(5_000), LeaseRequest::Acquire(lease()))
        .unwrap();
    let commands = south.take_commands();
    route(&mut nodes, ms(5_001), "south", &commands, Some("east"));
    assert!(nodes["south"].lease_status(ms(5_002), &lease()).write_ready);

    // East resumes and handles the queued promise before its overdue timers.
    let east = nodes.get_mut("east").unwrap();
    let out = deliver(east, ms(5_003), &member("west", 0), queued_promise);
    route(&mut nodes, ms(5_004), "east", &out, None);

    let holders: Vec<(&str, LeaseStatus)> = nodes
        .iter()
        .map(|(name, node)| (*name, node.lease_status(ms(5_005), &lease())))
        .filter(|(_, status)| status.write_ready)
        .collect();
    assert!(
        holders.len() <= 1,
        "two holders at once (at most one may hold the lease at any instant): {holders:?}"
    );
}

/// Accepts that complete a majority only after the validity they would grant has run
/// out (the round was stalled, say by a pause) make no holder.
#[test]
fn a_majority_reached_after_its_validity_ended_holds_nothing() {
    let mut east = lease_node("east", ms(1), ready());
    let west = member("west", 0);
    east.handle_lease_request(ms(10), LeaseRequest::Acquire(lease()))
        .unwrap();
    deliver(&mut east, ms(20), &west, promise(1, None));
    let late = ms(10) + holder_validity();
    let commands = deliver(&mut east, late, &west, accepted(1));
    assert!(lease_commands(commands).is_empty(), "no LeaseAcquired");
    assert_eq!(east.lease_held(&lease()), None);
    assert!(!east.lease_status(late, &lease()).write_ready);
    assert_eq!(east.stats().lease_acquisitions, 0);
}
