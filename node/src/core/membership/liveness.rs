//! Cluster liveness from replica membership: alive while any replica is up.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::{ClusterId, KeyRing, ReplicaId};

use super::identity::SwimId;
use crate::core::time::Time;

/// A remote cluster's state, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// At least one replica is up.
    Alive,
    /// Not yet heard from since this node started; imported until the grace period
    /// after start runs out.
    Unknown { since: Time },
    /// Every replica is down; still imported until the grace period runs out.
    Down { since: Time },
    /// Down for longer than the grace period: its endpoints are not imported.
    Withdrawn { since: Time },
}

impl Liveness {
    pub fn imported(self) -> bool {
        !matches!(self, Liveness::Withdrawn { .. })
    }
}

#[derive(Debug)]
struct ClusterState {
    replicas_up: BTreeSet<ReplicaId>,
    /// Each replica's identity when it last went down, to refuse that generation again
    /// and to tell a comeback without a restart (the cluster was alive all along) from
    /// a restart.
    went_down: BTreeMap<ReplicaId, WentDown>,
    liveness: Liveness,
}

/// The identity a replica last went down in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WentDown {
    generation: u32,
    /// The generation its process started with: the same when it comes back renewed
    /// (it never stopped), higher when it comes back restarted.
    started: u32,
}

/// A change of a cluster's liveness caused by one membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::core) enum Transition {
    None,
    /// The last replica went down.
    Down(ClusterId),
    /// A replica came up in a cluster that was not alive. `was_withdrawn` tells whether
    /// its endpoints must come back; `refuted`, whether it came back without restarting
    /// (the process it last went down in, renewed by foca).
    Up {
        cluster: ClusterId,
        was_withdrawn: bool,
        refuted: bool,
    },
}

#[derive(Debug)]
pub(in crate::core) struct Clusters {
    local: ClusterId,
    states: BTreeMap<ClusterId, ClusterState>,
}

impl Clusters {
    /// Every trusted remote cluster starts `Unknown`; the local one is always alive.
    pub(in crate::core) fn new(local: ClusterId, trust: &KeyRing, now: Time) -> Self {
        let states = trust
            .clusters()
            .filter(|c| **c != local)
            .map(|c| {
                let state = ClusterState {
                    replicas_up: BTreeSet::new(),
                    went_down: BTreeMap::new(),
                    liveness: Liveness::Unknown { since: now },
                };
                (c.clone(), state)
            })
            .collect();
        Self { local, states }
    }

    pub(in crate::core) fn liveness(&self, cluster: &ClusterId) -> Liveness {
        if *cluster == self.local {
            return Liveness::Alive;
        }
        self.states
            .get(cluster)
            .map_or(Liveness::Withdrawn { since: Time::ZERO }, |s| s.liveness)
    }

    /// Keeps the records whose origin is imported. `records` must be in origin order:
    /// a merge join with the (ordered) cluster states, one pass, no lookups.
    pub(in crate::core) fn imported<'a, R: AsRef<shoal_proto::SignedRecord> + 'a>(
        &'a self,
        records: impl Iterator<Item = &'a R> + 'a,
    ) -> impl Iterator<Item = &'a R> + 'a {
        let mut states = self.states.iter().peekable();
        records.filter(move |r| {
            let origin = &r.as_ref().record.origin;
            if *origin == self.local {
                return true;
            }
            while states.next_if(|(c, _)| *c < origin).is_some() {}
            match states.peek() {
                Some((c, s)) if *c == origin => s.liveness.imported(),
                _ => false,
            }
        })
    }

    pub(in crate::core) fn iter(&self) -> impl Iterator<Item = (&ClusterId, Liveness)> {
        self.states.iter().map(|(c, s)| (c, s.liveness))
    }

    /// Whether this node saw `replica` of `cluster` go down in `generation` or later.
    pub(in crate::core) fn seen_down(
        &self,
        cluster: &ClusterId,
        replica: ReplicaId,
        generation: u32,
    ) -> bool {
        self.states
            .get(cluster)
            .and_then(|s| s.went_down.get(&replica))
            .is_some_and(|down| down.generation >= generation)
    }

    pub(in crate::core) fn replica_up(&mut self, id: &SwimId) -> Transition {
        let (cluster, replica) = (&id.0.member.cluster, id.0.member.replica);
        let Some(state) = self.states.get_mut(cluster) else {
            return Transition::None;
        };
        state.replicas_up.insert(replica);
        let was = state.liveness;
        if was == Liveness::Alive {
            return Transition::None;
        }
        state.liveness = Liveness::Alive;
        let refuted = state
            .went_down
            .get(&replica)
            .is_some_and(|down| down.started == id.started());
        Transition::Up {
            cluster: cluster.clone(),
            was_withdrawn: matches!(was, Liveness::Withdrawn { .. }),
            refuted,
        }
    }

    pub(in crate::core) fn replica_down(&mut self, id: &SwimId, now: Time) -> Transition {
        let (cluster, replica) = (&id.0.member.cluster, id.0.member.replica);
        let Some(state) = self.states.get_mut(cluster) else {
            return Transition::None;
        };
        state.replicas_up.remove(&replica);
        let went_down = WentDown {
            generation: id.0.generation,
            started: id.started(),
        };
        state.went_down.insert(replica, went_down);
        if !state.replicas_up.is_empty() || state.liveness != Liveness::Alive {
            return Transition::None;
        }
        state.liveness = Liveness::Down { since: now };
        Transition::Down(cluster.clone())
    }

    /// Marks a down (or never seen) cluster withdrawn. Returns false if it is alive.
    pub(in crate::core) fn withdraw(&mut self, cluster: &ClusterId, now: Time) -> bool {
        let Some(state) = self.states.get_mut(cluster) else {
            return false;
        };
        match state.liveness {
            Liveness::Down { .. } | Liveness::Unknown { .. } => {
                state.liveness = Liveness::Withdrawn { since: now };
                true
            }
            Liveness::Alive | Liveness::Withdrawn { .. } => false,
        }
    }

    pub(in crate::core) fn check(&self) -> Result<(), String> {
        for (cluster, state) in &self.states {
            let alive = state.liveness == Liveness::Alive;
            if alive == state.replicas_up.is_empty() {
                return Err(format!(
                    "cluster {cluster}: liveness {:?} but {} replicas up",
                    state.liveness,
                    state.replicas_up.len()
                ));
            }
        }
        Ok(())
    }
}
