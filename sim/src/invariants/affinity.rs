//! Traffic policy (DESIGN.md, "Traffic policy"): under affinity `local`, `remote` and
//! `nearest`, traffic leaves an origin that stopped being ready, and comes back, within
//! a bound, and no import is ever left without traffic while one of its origins is
//! ready.
//!
//! The world feeds every `ApplyImports` of an affinity service into an
//! [`AffinityCheck`] (what the sinks write: which origins are active), and tells it the
//! ground truth: what each cluster really exports (the readiness its publisher was
//! fed), which clusters are dead, and the true latency of every link. Three checks:
//!
//! - **Safety, after every event**, against the importer's own view (its liveness of
//!   each cluster, the records it imports): an origin is *ready* when its cluster is
//!   up for the node (or is the node's own) and its record has a ready endpoint. If
//!   one is, every active origin must be ready, and the policy's choice must hold:
//!   `local` only the local origin when it is ready, else the ready remotes; `remote`
//!   the ready remotes, else the local origin; `nearest` exactly one. If none is,
//!   every origin stays active: an import never has none while it has origins.
//! - **Liveness with a bound**, against ground truth: a node must not keep an origin
//!   active once it is *surely unready* while another is *surely ready*. A change of
//!   an origin's endpoints is *settled* at `max(change, revival, node since) + ready
//!   bound`: a change travels once its cluster runs (one published just before its
//!   cluster died may never have left it). An origin is surely unready once its
//!   endpoints' going not ready is settled (if its cluster did not die first), or from
//!   `death + down bound` after its cluster died (for a node started after the death,
//!   which counts a cluster it has not heard from up until it withdraws it:
//!   `node since + grace + down bound`, the withdrawal's deadline). It is surely ready
//!   when it is exported with ready endpoints, settled, its cluster is not dead, and
//!   the node's own view has its cluster up (a cluster the node cannot reach, or
//!   wrongly suspects, is no ground for blame here: `withdrawal` owns that). Under `local` the
//!   node must be back on its own origin alone once that is surely ready; under
//!   `remote` off its own origin once a remote one is. "Node since" is its start or
//!   last reconnect, as in `withdrawal`: a node that just started serves its stored
//!   view until it learns better.
//! - **Nearest**, against true round trips: the active origin of a `nearest` import
//!   must be within the margin of the surely ready origin with the lowest true round
//!   trip. The core ranks by a smoothed round trip (EWMA, 1/8 per sample) of SWIM's
//!   direct probes, so the check allows what the estimate can honestly be: between
//!   the shortest and the longest round trip the link allows now (latency plus
//!   jitter), give or take the part of each latency change the estimate has not yet
//!   followed ([`ewma_lag_us`], from the samples SWIM's round robin guarantees since
//!   the change). Then the core keeps its choice `a` over the lowest `b` only while
//!   `est(a) <= max(est(b) + margin, est(b) * 8 / 7)`, so a true round trip of `a`
//!   above that, with `est(b)` at its highest, is a wrong choice. Judged once a
//!   second, only while no fault is active and when the node has measured every
//!   candidate.
//!
//! The bounds come from the configuration: the ready bound is two push hops of the
//! largest round trip plus [`REPAIR_ROUNDS`] anti-entropy periods
//! ([`ready_bound_us`]); the down bound is SWIM's detection bound
//! ([`super::withdrawal::detection_bound_us`]): traffic leaves a cluster when it is
//! declared down, before its withdrawal.

use std::collections::BTreeSet;

use shoal_node::core::ImportedService;
use shoal_proto::{Affinity, ClusterId};

/// Anti-entropy periods allowed to repair a record change a push missed.
pub const REPAIR_ROUNDS: u64 = 3;
/// A push reaches every member in two hops: to a gateway of each cluster, and from it
/// to its siblings.
const PUSH_HOPS: u64 = 2;
/// The weight the core keeps of its smoothed round trip at each sample (7/8).
const EWMA_KEEP: f64 = 7.0 / 8.0;
/// Samples that may be missing from what SWIM's round robin guarantees in a window (a
/// ping or its ack lost).
const SAMPLES_LOST_MAX: u64 = 2;

/// How long a node may take to act on an origin's endpoints turning ready or not
/// ready: `PUSH_HOPS` hops of the largest round trip, then `REPAIR_ROUNDS`
/// anti-entropy periods for a push that was lost.
pub fn ready_bound_us(anti_entropy_period_ms: u64, largest_rtt_us: u64) -> u64 {
    PUSH_HOPS * largest_rtt_us + REPAIR_ROUNDS * anti_entropy_period_ms * 1_000
}

/// What the smoothed round trip may still lag behind latency changes: each change
/// (`elapsed_us` ago, of `delta_rtt_us`) decays by 7/8 per sample, and SWIM probes
/// each member once per round of its shuffled member list, so `replicas` members of a
/// cluster give at least `replicas` samples per whole round after the first.
pub fn ewma_lag_us(
    changes: impl IntoIterator<Item = (u64, u64)>,
    probe_round_us: u64,
    replicas: u64,
) -> u64 {
    changes
        .into_iter()
        .map(|(elapsed_us, delta_rtt_us)| {
            let rounds = elapsed_us / probe_round_us.max(1);
            let samples = (rounds.saturating_sub(1) * replicas).saturating_sub(SAMPLES_LOST_MAX);
            let samples = i32::try_from(samples).unwrap_or(i32::MAX);
            (delta_rtt_us as f64 * EWMA_KEEP.powi(samples)).ceil() as u64
        })
        .sum()
}

/// The bounds of the checks, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffinityBounds {
    /// An origin's endpoints turned ready or not ready: see [`ready_bound_us`].
    pub ready_us: u64,
    /// An origin's cluster died: SWIM's detection bound.
    pub down_us: u64,
    /// The withdraw grace period. A node (re)started after a cluster died has not
    /// heard from it since its start, and counts it up (`Unknown`) until it withdraws
    /// it: its bound is the withdrawal's, `grace_us + down_us` after its start.
    pub grace_us: u64,
    /// `nearest_margin_ms` of the configuration.
    pub margin_us: u64,
    /// One round of SWIM probes: every other member probed once.
    pub probe_round_us: u64,
}

/// One origin of an import, as the sinks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginState {
    pub cluster: usize,
    pub active: bool,
    /// Its record has a ready endpoint.
    pub ready: bool,
}

/// An import of an affinity service, as the sinks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportState {
    pub affinity: Affinity,
    pub origins: Vec<OriginState>,
}

impl ImportState {
    /// The state of `import`; `index_of` names a source's cluster (unknown ones are
    /// left out).
    pub fn of(import: &ImportedService, index_of: impl Fn(&ClusterId) -> Option<usize>) -> Self {
        let origins = import
            .sources
            .iter()
            .filter_map(|src| {
                let cluster = index_of(src.cluster())?;
                let endpoints = &src.record.record.endpoints;
                Some(OriginState {
                    cluster,
                    active: src.active,
                    ready: endpoints.iter().any(|e| e.conditions.ready),
                })
            })
            .collect();
        Self {
            affinity: import.properties.affinity,
            origins,
        }
    }

    fn active_clusters(&self) -> Vec<usize> {
        let active = self.origins.iter().filter(|o| o.active);
        active.map(|o| o.cluster).collect()
    }

    fn is_active(&self, cluster: usize) -> bool {
        self.origins
            .iter()
            .any(|o| o.cluster == cluster && o.active)
    }
}

/// What the checks know of the importing node at one instant.
pub struct Importer<'a> {
    pub node: usize,
    pub cluster: usize,
    /// Its start or last reconnect.
    pub since_us: u64,
    /// Its own view: cluster `c` is up (alive, or not yet heard from since start).
    pub up: &'a dyn Fn(usize) -> bool,
}

impl std::fmt::Debug for Importer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("node", &self.node)
            .field("cluster", &self.cluster)
            .field("since_us", &self.since_us)
            .finish_non_exhaustive()
    }
}

/// The true round trip between an importing node and one origin's cluster, and what
/// the node has measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttTruth {
    pub min_us: u64,
    pub max_us: u64,
    /// What the node's estimate may still lag behind latency changes.
    pub lag_us: u64,
    /// The node has an estimate for the cluster.
    pub measured: bool,
}

impl RttTruth {
    /// The node's own cluster: zero, exactly.
    pub const LOCAL: RttTruth = RttTruth {
        min_us: 0,
        max_us: 0,
        lag_us: 0,
        measured: true,
    };
}

/// An origin's ground truth for one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct OriginTruth {
    exported: bool,
    ready: bool,
    /// When `exported` or `ready` last changed.
    since_us: u64,
}

/// A move the checker is timing: from a change of ground truth to the node's import
/// showing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    node: usize,
    service: usize,
    origin: usize,
    since_us: u64,
    kind: Move,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    /// Traffic leaves an origin whose endpoints are not ready.
    Failover,
    /// Traffic leaves an origin whose cluster died.
    DownFailover,
    /// Under `local`, traffic returns to the local origin, ready again.
    Return,
}

/// Which check reported a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    Truth,
    Nearest,
}

/// The checks' state, the ground truth they judge by, and the measurements.
#[derive(Debug)]
pub struct AffinityCheck {
    bounds: AffinityBounds,
    node_cluster: Vec<usize>,
    service_names: Vec<String>,
    /// [service][cluster].
    truth: Vec<Vec<OriginTruth>>,
    dead_since: Vec<Option<u64>>,
    /// When each cluster last came back from the dead (0: never died).
    alive_since: Vec<u64>,
    /// [node][service]: the import the sinks hold.
    applied: Vec<Vec<Option<ImportState>>>,
    pending: Vec<Pending>,
    /// (check, node, service, origin, instant or cluster): each violation once.
    reported: BTreeSet<(Check, usize, usize, usize, u64)>,
    /// From an origin's endpoints turning not ready to an importer moving off it, ms.
    pub failover_ms: Vec<f64>,
    /// From an origin's cluster dying to an importer moving off it, ms.
    pub down_failover_ms: Vec<f64>,
    /// From the local origin being ready again to a `local` importer back on it, ms.
    pub return_ms: Vec<f64>,
    /// `nearest` imports that moved off an origin still ready (a round trip changed).
    pub nearest_moves: u64,
    /// `nearest` choices judged against true round trips.
    pub nearest_checks: u64,
}

impl AffinityCheck {
    /// `node_cluster[n]`: the cluster of node `n`; `service_names`: the affinity
    /// services, for messages.
    pub fn new(
        bounds: AffinityBounds,
        clusters: usize,
        node_cluster: Vec<usize>,
        service_names: Vec<String>,
    ) -> Self {
        let nodes = node_cluster.len();
        let services = service_names.len();
        Self {
            bounds,
            node_cluster,
            service_names,
            truth: vec![vec![OriginTruth::default(); clusters]; services],
            dead_since: vec![None; clusters],
            alive_since: vec![0; clusters],
            applied: vec![vec![None; services]; nodes],
            pending: Vec::new(),
            reported: BTreeSet::new(),
            failover_ms: Vec::new(),
            down_failover_ms: Vec::new(),
            return_ms: Vec::new(),
            nearest_moves: 0,
            nearest_checks: 0,
        }
    }

    pub fn bounds(&self) -> AffinityBounds {
        self.bounds
    }

    pub fn services(&self) -> usize {
        self.service_names.len()
    }

    fn truly_ready(&self, service: usize, cluster: usize) -> bool {
        let t = self.truth[service][cluster];
        t.exported && t.ready && self.dead_since[cluster].is_none()
    }

    /// Ground truth: `cluster`'s publisher now exports `service` (or not), with a
    /// ready endpoint (or not). Starts and voids the measurements this affects.
    pub fn set_origin(
        &mut self,
        now: u64,
        cluster: usize,
        service: usize,
        exported: bool,
        ready: bool,
    ) {
        let before = self.truth[service][cluster];
        if before.exported == exported && before.ready == ready {
            return;
        }
        let was_ready = self.truly_ready(service, cluster);
        self.truth[service][cluster] = OriginTruth {
            exported,
            ready,
            since_us: now,
        };
        let is_ready = self.truly_ready(service, cluster);
        if was_ready && !is_ready {
            self.start_failovers(now, service, cluster, Move::Failover);
        }
        if !was_ready && is_ready {
            self.pending.retain(|p| {
                !(p.origin == cluster && p.service == service && p.kind == Move::Failover)
            });
            self.start_returns(now, service, cluster);
        }
    }

    /// Ground truth: the last replica of `cluster` crashed.
    pub fn cluster_died(&mut self, now: u64, cluster: usize) {
        let ready: Vec<usize> = (0..self.services())
            .filter(|s| self.truly_ready(*s, cluster))
            .collect();
        self.dead_since[cluster] = Some(now);
        for service in ready {
            self.start_failovers(now, service, cluster, Move::DownFailover);
        }
    }

    /// Ground truth: a replica of `cluster` runs again.
    pub fn cluster_revived(&mut self, now: u64, cluster: usize) {
        self.dead_since[cluster] = None;
        self.alive_since[cluster] = now;
        self.pending
            .retain(|p| !(p.origin == cluster && p.kind == Move::DownFailover));
    }

    /// Times the importers that send `service` to `origin`, now not ready, while
    /// another origin is ready.
    fn start_failovers(&mut self, now: u64, service: usize, origin: usize, kind: Move) {
        let nodes: Vec<usize> = (0..self.applied.len())
            .filter(|n| {
                self.applied[*n][service].as_ref().is_some_and(|state| {
                    let other_ready = state
                        .origins
                        .iter()
                        .any(|o| o.cluster != origin && self.truly_ready(service, o.cluster));
                    state.affinity != Affinity::None && state.is_active(origin) && other_ready
                })
            })
            .collect();
        for node in nodes {
            self.pending.push(Pending {
                node,
                service,
                origin,
                since_us: now,
                kind,
            });
        }
    }

    /// Times the `local` importers of `cluster` not on their own origin alone.
    fn start_returns(&mut self, now: u64, service: usize, cluster: usize) {
        let nodes: Vec<usize> = (0..self.applied.len())
            .filter(|n| self.node_cluster[*n] == cluster)
            .filter(|n| {
                self.applied[*n][service].as_ref().is_some_and(|state| {
                    state.affinity == Affinity::Local && state.active_clusters() != [cluster]
                })
            })
            .collect();
        for node in nodes {
            self.pending.push(Pending {
                node,
                service,
                origin: cluster,
                since_us: now,
                kind: Move::Return,
            });
        }
    }

    /// The sinks of `node` now hold `state` for `service` (`None`: not imported).
    pub fn applied(&mut self, now: u64, node: usize, service: usize, state: Option<ImportState>) {
        self.count_nearest_move(node, service, state.as_ref());
        let mut done = Vec::new();
        self.pending.retain(|p| {
            if p.node != node || p.service != service {
                return true;
            }
            let moved = match p.kind {
                Move::Failover | Move::DownFailover => {
                    !state.as_ref().is_some_and(|s| s.is_active(p.origin))
                }
                Move::Return => state
                    .as_ref()
                    .is_some_and(|s| s.active_clusters() == [p.origin]),
            };
            if moved {
                done.push((p.kind, (now - p.since_us) as f64 / 1_000.0));
            }
            !moved
        });
        for (kind, ms) in done {
            match kind {
                Move::Failover => self.failover_ms.push(ms),
                Move::DownFailover => self.down_failover_ms.push(ms),
                Move::Return => self.return_ms.push(ms),
            }
        }
        self.applied[node][service] = state;
    }

    fn count_nearest_move(&mut self, node: usize, service: usize, next: Option<&ImportState>) {
        let Some(before) = &self.applied[node][service] else {
            return;
        };
        let active = before.active_clusters();
        let (Some(next), &[held]) = (next, active.as_slice()) else {
            return;
        };
        let moved = next.affinity == Affinity::Nearest && !next.is_active(held);
        if moved && self.truly_ready(service, held) {
            self.nearest_moves += 1;
        }
    }

    /// `node` crashed: its sinks hold nothing, and its moves are no longer timed.
    pub fn node_down(&mut self, node: usize) {
        for state in &mut self.applied[node] {
            *state = None;
        }
        self.pending.retain(|p| p.node != node);
    }

    /// Safety: the import of `service` at the importer follows its policy, as far as
    /// the importer's own view tells.
    pub fn check_view(&self, importer: &Importer<'_>, service: usize) -> Result<(), String> {
        let Some(state) = &self.applied[importer.node][service] else {
            return Ok(());
        };
        if state.origins.is_empty() {
            return Ok(());
        }
        let local = |o: &OriginState| o.cluster == importer.cluster;
        let ready: Vec<bool> = state
            .origins
            .iter()
            .map(|o| o.ready && (local(o) || (importer.up)(o.cluster)))
            .collect();
        let active: Vec<bool> = state.origins.iter().map(|o| o.active).collect();
        let locals: Vec<bool> = state.origins.iter().map(local).collect();
        let fine = match expected(state.affinity, &locals, &ready) {
            Some(expected) => active == expected,
            // `nearest` with a ready origin: exactly one, and a ready one.
            None => {
                let chosen: Vec<usize> = (0..active.len()).filter(|i| active[*i]).collect();
                chosen.len() == 1 && ready[chosen[0]]
            }
        };
        if fine {
            return Ok(());
        }
        let names = |flags: &[bool]| self.names(state, flags);
        Err(format!(
            "node {} imports {} (affinity {:?}) from active [{}] while its own view has ready [{}]",
            importer.node,
            self.service_names[service],
            state.affinity,
            names(&active),
            names(&ready)
        ))
    }

    fn names(&self, state: &ImportState, flags: &[bool]) -> String {
        let chosen = state.origins.iter().zip(flags).filter(|(_, f)| **f);
        let names: Vec<String> = chosen
            .map(|(o, _)| crate::topology::cluster_name(o.cluster))
            .collect();
        names.join(", ")
    }

    /// When origin `o` of `service` is surely unready for the importer: the earliest
    /// instant one of its causes (endpoints not ready, cluster dead) is past its bound.
    fn unready_deadline(&self, importer: &Importer<'_>, service: usize, o: usize) -> Option<u64> {
        let since = importer.since_us;
        let dead = self.dead_since[o].map(|d| {
            if d < since {
                since + self.bounds.grace_us + self.bounds.down_us
            } else {
                d + self.bounds.down_us
            }
        });
        let t = self.truth[service][o];
        let endpoints = (!(t.exported && t.ready))
            .then(|| self.settled_at(importer, service, o))
            // A change its cluster had no time to push before dying counts only as
            // the death.
            .filter(|at| self.dead_since[o].is_none_or(|d| d >= *at));
        endpoints.into_iter().chain(dead).min()
    }

    /// When the importer must know origin `o`'s current readiness: the ready bound
    /// after the change, after its cluster last came back (a change made while it was
    /// dead, or just before it died, travels only from then), and after the importer's
    /// own start.
    fn settled_at(&self, importer: &Importer<'_>, service: usize, o: usize) -> u64 {
        let t = self.truth[service][o];
        let from = t.since_us.max(self.alive_since[o]).max(importer.since_us);
        from + self.bounds.ready_us
    }

    fn surely_ready(&self, now: u64, importer: &Importer<'_>, service: usize, o: usize) -> bool {
        let settled = self.settled_at(importer, service, o) <= now;
        let up = o == importer.cluster || (importer.up)(o);
        self.truly_ready(service, o) && settled && up
    }

    /// Liveness: at `now`, the import of `service` at the importer has left every
    /// surely unready origin, and (`local`, `remote`) is back on the preferred ones,
    /// wherever ground truth and the bounds leave no doubt. One message per violation
    /// (each reported once).
    pub fn check_truth(
        &mut self,
        now: u64,
        importer: &Importer<'_>,
        service: usize,
    ) -> Vec<String> {
        let Some(state) = &self.applied[importer.node][service] else {
            return Vec::new();
        };
        if state.affinity == Affinity::None {
            return Vec::new();
        }
        let name = &self.service_names[service];
        let n = importer.node;
        let mut found: Vec<(usize, u64, String)> = Vec::new();
        let ready: Vec<usize> = state
            .origins
            .iter()
            .map(|o| o.cluster)
            .filter(|o| self.surely_ready(now, importer, service, *o))
            .collect();
        let Some(&witness) = ready.first() else {
            return Vec::new();
        };
        for o in state.origins.iter().filter(|o| o.active) {
            let Some(deadline) = self.unready_deadline(importer, service, o.cluster) else {
                continue;
            };
            if deadline <= now {
                let late_ms = (now - deadline) / 1_000;
                found.push((o.cluster, deadline, format!(
                    "node {n} still sends {name} to {}, not ready past its bound ({late_ms} ms late), while {} is ready",
                    crate::topology::cluster_name(o.cluster),
                    crate::topology::cluster_name(witness)
                )));
            }
        }
        let local = importer.cluster;
        let active = state.active_clusters();
        match state.affinity {
            Affinity::Local if ready.contains(&local) && active != [local] => {
                let since = self.truth[service][local].since_us;
                found.push((
                    local,
                    since,
                    format!(
                        "node {n} has not returned {name} to its own cluster, ready for {} ms",
                        now.saturating_sub(since) / 1_000
                    ),
                ));
            }
            Affinity::Remote if ready.iter().any(|c| *c != local) && active.contains(&local) => {
                let remote = *ready.iter().find(|c| **c != local).expect("checked");
                let since = self.truth[service][remote].since_us;
                found.push((
                    local,
                    since,
                    format!(
                        "node {n} still sends {name} to its own cluster while {} is ready",
                        crate::topology::cluster_name(remote)
                    ),
                ));
            }
            _ => {}
        }
        let bounds = format!(
            "(bounds: ready {} ms, down {} ms)",
            self.bounds.ready_us / 1_000,
            self.bounds.down_us / 1_000
        );
        found
            .into_iter()
            .filter(|(origin, since, _)| {
                self.reported
                    .insert((Check::Truth, n, service, *origin, *since))
            })
            .map(|(_, _, message)| format!("{message} {bounds}"))
            .collect()
    }

    /// Nearest: at `now`, the active origin of `service` at the importer is within the
    /// margin of the surely ready origin with the lowest true round trip. `rtt(c)` is
    /// the truth of the link to cluster `c`. Not judged (`Ok`) when the choice is
    /// unclear: no surely ready origin, an active one that is not, or one the node has
    /// not measured yet.
    pub fn check_nearest(
        &mut self,
        now: u64,
        importer: &Importer<'_>,
        service: usize,
        rtt: &dyn Fn(usize) -> RttTruth,
    ) -> Result<(), String> {
        let Some(state) = &self.applied[importer.node][service] else {
            return Ok(());
        };
        if state.affinity != Affinity::Nearest {
            return Ok(());
        }
        let candidates: Vec<usize> = state
            .origins
            .iter()
            .map(|o| o.cluster)
            .filter(|o| self.surely_ready(now, importer, service, *o))
            .collect();
        let active = state.active_clusters();
        let &[held] = active.as_slice() else {
            return Ok(());
        };
        let truth: Vec<RttTruth> = candidates.iter().map(|c| rtt(*c)).collect();
        if !candidates.contains(&held) || truth.iter().any(|t| !t.measured) {
            return Ok(());
        }
        let (best, best_rtt) = candidates
            .iter()
            .zip(&truth)
            .min_by_key(|(c, t)| (t.min_us, **c))
            .expect("the held origin is a candidate");
        let held_rtt = rtt(held);
        let highest_best = best_rtt.max_us + best_rtt.lag_us;
        let kept = (highest_best + self.bounds.margin_us).max(highest_best * 8 / 7);
        let accepted = kept + held_rtt.lag_us;
        self.nearest_checks += 1;
        if held_rtt.min_us <= accepted {
            return Ok(());
        }
        let key = (Check::Nearest, importer.node, service, held, *best as u64);
        if !self.reported.insert(key) {
            return Ok(());
        }
        Err(format!(
            "node {} sends {} to {} (round trip at least {} ms) while {} takes at most {} ms (kept only up to {} ms; margin {} ms)",
            importer.node,
            self.service_names[service],
            crate::topology::cluster_name(held),
            held_rtt.min_us / 1_000,
            crate::topology::cluster_name(*best),
            highest_best / 1_000,
            accepted / 1_000,
            self.bounds.margin_us / 1_000
        ))
    }
}

/// The active origins the policy gives, from which are local and which are ready;
/// `None` for `nearest` with a ready origin (any one ready origin alone).
fn expected(affinity: Affinity, local: &[bool], ready: &[bool]) -> Option<Vec<bool>> {
    let all = vec![true; ready.len()];
    let of = |want_local: bool| -> Vec<bool> {
        ready
            .iter()
            .zip(local)
            .map(|(r, l)| *r && *l == want_local)
            .collect()
    };
    let any = |flags: &[bool]| flags.iter().any(|f| *f);
    if affinity == Affinity::None || !any(ready) {
        return Some(all);
    }
    match affinity {
        Affinity::Local | Affinity::Remote => {
            let preferred = of(affinity == Affinity::Local);
            Some(if any(&preferred) {
                preferred
            } else {
                of(affinity != Affinity::Local)
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_decays_by_an_eighth_per_guaranteed_sample() {
        // Within the first two rounds nothing is guaranteed.
        assert_eq!(ewma_lag_us([(15_000_000, 80_000)], 10_000_000, 2), 80_000);
        // Four rounds, two replicas: 6 samples, less 2 that may be lost.
        let lag = ewma_lag_us([(40_000_000, 80_000)], 10_000_000, 2);
        assert_eq!(lag, (80_000.0 * EWMA_KEEP.powi(4)).ceil() as u64);
        assert_eq!(ewma_lag_us([], 10_000_000, 2), 0);
    }

    #[test]
    fn the_policy_gives_the_expected_origins() {
        let local = [true, false, false];
        let none_ready = expected(Affinity::Local, &local, &[false; 3]);
        assert_eq!(none_ready, Some(vec![true; 3]));
        let failover = expected(Affinity::Local, &local, &[false, true, false]);
        assert_eq!(failover, Some(vec![false, true, false]));
        let remote_fallback = expected(Affinity::Remote, &local, &[true, false, false]);
        assert_eq!(remote_fallback, Some(vec![true, false, false]));
        assert_eq!(
            expected(Affinity::Nearest, &local, &[true, true, false]),
            None
        );
    }
}
