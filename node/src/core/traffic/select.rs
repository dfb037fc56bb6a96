//! The affinity rule: given an import's origins, which take traffic.

use std::time::Duration;

use shoal_proto::{Affinity, ClusterId};

use super::TrafficReason;

/// What the rule knows of one origin of an import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::core) struct Origin<'a> {
    pub cluster: &'a ClusterId,
    /// The origin is this node's own cluster.
    pub local: bool,
    /// Its cluster is up (or not yet heard from since start, and served from the
    /// stored view), and its record has at least one ready endpoint.
    pub ready: bool,
    /// The smoothed round trip to it; zero for the local cluster, `None` before the
    /// first measurement.
    pub rtt: Option<Duration>,
}

/// Which origins are active (a flag per origin, in the order given) and why.
///
/// `previous` is the cluster the import's `nearest` choice fell on before, if any:
/// another ready origin replaces it only when its round trip is lower by `margin` and
/// by an eighth of the previous one's.
pub(in crate::core) fn select(
    affinity: Affinity,
    origins: &[Origin<'_>],
    previous: Option<&ClusterId>,
    margin: Duration,
) -> (Vec<bool>, TrafficReason) {
    let ready = |want_local: bool| -> Vec<bool> {
        origins
            .iter()
            .map(|o| o.ready && o.local == want_local)
            .collect()
    };
    let any = |flags: &[bool]| flags.iter().any(|f| *f);
    let all = || (vec![true; origins.len()], TrafficReason::NoneReady);
    match affinity {
        Affinity::None => (vec![true; origins.len()], TrafficReason::AllOrigins),
        Affinity::Local | Affinity::Remote => {
            let local = affinity == Affinity::Local;
            let (preferred, fallback) = (ready(local), ready(!local));
            let (failover, reason) = if local {
                (TrafficReason::LocalFailover, TrafficReason::Local)
            } else {
                (TrafficReason::RemoteFailover, TrafficReason::Remote)
            };
            if any(&preferred) {
                (preferred, reason)
            } else if any(&fallback) {
                (fallback, failover)
            } else {
                all()
            }
        }
        Affinity::Nearest => match nearest(origins, previous, margin) {
            Some(i) => {
                let mut flags = vec![false; origins.len()];
                flags[i] = true;
                let cluster = origins[i].cluster.clone();
                (flags, TrafficReason::Nearest { cluster })
            }
            None => all(),
        },
    }
}

/// The index of the ready origin to send traffic to under `nearest`.
fn nearest(
    origins: &[Origin<'_>],
    previous: Option<&ClusterId>,
    margin: Duration,
) -> Option<usize> {
    // Unmeasured origins rank after every measured one, then by cluster id (the
    // origins come in cluster order, and `min_by_key` keeps the first of equals).
    let rank = |o: &Origin<'_>| o.rtt.unwrap_or(Duration::MAX);
    let best = origins
        .iter()
        .enumerate()
        .filter(|(_, o)| o.ready)
        .min_by_key(|(_, o)| rank(o))?
        .0;
    let held = origins
        .iter()
        .position(|o| o.ready && Some(o.cluster) == previous);
    match held {
        Some(held) if held != best => {
            let current = rank(&origins[held]);
            let needed = margin.max(current / 8);
            let better = rank(&origins[best]).saturating_add(needed) < current;
            Some(if better { best } else { held })
        }
        _ => Some(best),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(name: &str) -> ClusterId {
        ClusterId::new(name).unwrap()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    struct Case {
        ids: Vec<ClusterId>,
        ready: Vec<bool>,
        rtt: Vec<Option<Duration>>,
    }

    /// Origins c0 (local), c1, c2 with the given readiness and round trips.
    fn case(ready: [bool; 3], rtt: [Option<u64>; 3]) -> Case {
        Case {
            ids: vec![id("c0"), id("c1"), id("c2")],
            ready: ready.to_vec(),
            rtt: rtt.iter().map(|r| r.map(ms)).collect(),
        }
    }

    impl Case {
        fn origins(&self) -> Vec<Origin<'_>> {
            (0..self.ids.len())
                .map(|i| Origin {
                    cluster: &self.ids[i],
                    local: i == 0,
                    ready: self.ready[i],
                    rtt: self.rtt[i],
                })
                .collect()
        }

        fn pick(&self, affinity: Affinity, previous: Option<&str>) -> (Vec<bool>, TrafficReason) {
            let previous = previous.map(id);
            select(affinity, &self.origins(), previous.as_ref(), ms(2))
        }
    }

    const LOCAL: [Option<u64>; 3] = [Some(0), Some(30), Some(60)];

    #[test]
    fn none_takes_every_origin_ready_or_not() {
        let c = case([false, true, false], LOCAL);
        let expected = (vec![true, true, true], TrafficReason::AllOrigins);
        assert_eq!(c.pick(Affinity::None, None), expected);
    }

    #[test]
    fn local_keeps_to_a_ready_local_endpoint_and_fails_over_to_ready_remotes() {
        let up = case([true, true, true], LOCAL);
        let only_local = (vec![true, false, false], TrafficReason::Local);
        assert_eq!(up.pick(Affinity::Local, None), only_local);
        let local_dead = case([false, true, false], LOCAL);
        let failover = (vec![false, true, false], TrafficReason::LocalFailover);
        assert_eq!(local_dead.pick(Affinity::Local, None), failover);
        let none = case([false, false, false], LOCAL);
        let all = (vec![true, true, true], TrafficReason::NoneReady);
        assert_eq!(none.pick(Affinity::Local, None), all);
    }

    #[test]
    fn remote_prefers_ready_remotes_and_falls_back_to_local() {
        let up = case([true, true, false], LOCAL);
        let remote = (vec![false, true, false], TrafficReason::Remote);
        assert_eq!(up.pick(Affinity::Remote, None), remote);
        let remotes_dead = case([true, false, false], LOCAL);
        let fallback = (vec![true, false, false], TrafficReason::RemoteFailover);
        assert_eq!(remotes_dead.pick(Affinity::Remote, None), fallback);
    }

    #[test]
    fn nearest_takes_the_lowest_round_trip_then_the_next_on_failure() {
        let remote_only = case([false, true, true], [None, Some(30), Some(20)]);
        let c2 = TrafficReason::Nearest { cluster: id("c2") };
        assert_eq!(
            remote_only.pick(Affinity::Nearest, None),
            (vec![false, false, true], c2)
        );
        let c2_dead = case([false, true, false], [None, Some(30), Some(20)]);
        let c1 = TrafficReason::Nearest { cluster: id("c1") };
        assert_eq!(
            c2_dead.pick(Affinity::Nearest, Some("c2")),
            (vec![false, true, false], c1)
        );
        // The local cluster is the nearest of all while it is ready.
        let local = TrafficReason::Nearest { cluster: id("c0") };
        assert_eq!(
            case([true, true, true], LOCAL).pick(Affinity::Nearest, Some("c1")),
            (vec![true, false, false], local)
        );
    }

    #[test]
    fn nearest_moves_only_past_the_margin() {
        let c1 = TrafficReason::Nearest { cluster: id("c1") };
        let c2 = TrafficReason::Nearest { cluster: id("c2") };
        // c2 is 3 ms lower than c1 at 20 ms: less than an eighth of 20 ms (2.5 ms)
        // would not do, 3 ms does.
        let past = case([false, true, true], [None, Some(20), Some(17)]);
        assert_eq!(past.pick(Affinity::Nearest, Some("c1")).1, c2);
        // 2 ms lower: within both the 2 ms margin and an eighth of 20 ms.
        let within = case([false, true, true], [None, Some(20), Some(18)]);
        assert_eq!(within.pick(Affinity::Nearest, Some("c1")).1, c1);
        // Without a previous choice the lowest wins outright.
        assert_eq!(within.pick(Affinity::Nearest, None).1, c2);
        // At 100 ms an eighth (12.5 ms) is the margin.
        let far = case([false, true, true], [None, Some(100), Some(88)]);
        assert_eq!(far.pick(Affinity::Nearest, Some("c1")).1, c1);
        let farther = case([false, true, true], [None, Some(100), Some(87)]);
        assert_eq!(farther.pick(Affinity::Nearest, Some("c1")).1, c2);
    }

    #[test]
    fn nearest_ranks_an_unmeasured_origin_last_and_leaves_it_for_a_measured_one() {
        let c = case([false, true, true], [None, None, Some(50)]);
        let c2 = TrafficReason::Nearest { cluster: id("c2") };
        assert_eq!(c.pick(Affinity::Nearest, Some("c1")).1, c2.clone());
        assert_eq!(c.pick(Affinity::Nearest, None).1, c2);
        let unmeasured = case([false, true, true], [None, None, None]);
        let c1 = TrafficReason::Nearest { cluster: id("c1") };
        assert_eq!(unmeasured.pick(Affinity::Nearest, None).1, c1);
    }
}
