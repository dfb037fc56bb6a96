//! Traffic policy: which origins of an import take traffic, per the service's
//! affinity (DESIGN.md, "Traffic policy").
//!
//! Every import lists all its origins (the ServiceImport's `status.clusters` names
//! them all); each one is marked active or not, and the import says why
//! ([`TrafficReason`]). Sinks write only the active origins' endpoints. The choice is
//! made whenever an import changes, when a cluster goes down or comes back, and, for
//! affinity `nearest`, when a round trip is measured.
//!
//! - `select`: the rule itself, a pure function of the origins, their liveness and
//!   their round-trip times.
//! - `rtt`: the smoothed round-trip time to each cluster, from SWIM's direct probes.

mod rtt;
mod select;

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_proto::{Affinity, ClusterId, ServiceKey};

use super::imports::ImportedCluster;
use super::membership::Liveness;
use super::node::Node;

pub(super) use rtt::RttTable;
use select::{Origin, select};

/// Why an import's active origins are the ones they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrafficReason {
    /// Affinity `none`: every origin is active.
    AllOrigins,
    /// Affinity `local`, and this cluster has a ready endpoint: only its own.
    Local,
    /// Affinity `local`, and this cluster has no ready endpoint: the remote origins
    /// that have one (failover), until a local endpoint is ready again.
    LocalFailover,
    /// Affinity `remote`: the live remote origins with a ready endpoint.
    Remote,
    /// Affinity `remote`, and no live remote origin has a ready endpoint: this
    /// cluster's own.
    RemoteFailover,
    /// Affinity `nearest`: this one origin, the ready one with the lowest smoothed
    /// round trip (this cluster's own counts as zero), kept until another is lower by
    /// the margin or it stops being ready.
    Nearest { cluster: ClusterId },
    /// No live origin has a ready endpoint: every origin stays active, with its
    /// endpoints' conditions as they are, rather than leaving the service empty.
    NoneReady,
}

impl TrafficReason {
    /// The cluster a `nearest` choice fell on.
    pub fn nearest(&self) -> Option<&ClusterId> {
        match self {
            TrafficReason::Nearest { cluster } => Some(cluster),
            _ => None,
        }
    }

    /// A short name for APIs and logs.
    pub fn name(&self) -> &'static str {
        match self {
            TrafficReason::AllOrigins => "all-origins",
            TrafficReason::Local => "local",
            TrafficReason::LocalFailover => "local-failover",
            TrafficReason::Remote => "remote",
            TrafficReason::RemoteFailover => "remote-failover",
            TrafficReason::Nearest { .. } => "nearest",
            TrafficReason::NoneReady => "none-ready",
        }
    }
}

impl std::fmt::Display for TrafficReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrafficReason::Nearest { cluster } => write!(f, "nearest ({cluster})"),
            other => f.write_str(other.name()),
        }
    }
}

/// The traffic-policy state a node keeps beside its imports.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    pub(super) rtt: RttTable,
    /// Imports whose affinity is `nearest`: the ones a new round trip may change.
    nearest: BTreeSet<ServiceKey>,
    /// A round trip was measured in this step: the `nearest` imports are chosen again
    /// at its end.
    reselect_nearest: bool,
}

impl Traffic {
    /// Notes an import's affinity as it is stored (`None`: the import is gone).
    pub(super) fn track(&mut self, service: &ServiceKey, affinity: Option<Affinity>) {
        if affinity == Some(Affinity::Nearest) {
            self.nearest.insert(service.clone());
        } else {
            self.nearest.remove(service);
        }
    }

    /// A SWIM ack from `cluster` took `sample`.
    pub(super) fn observe_rtt(&mut self, cluster: &ClusterId, sample: std::time::Duration) {
        self.rtt.observe(cluster, sample);
        if !self.nearest.is_empty() {
            self.reselect_nearest = true;
        }
    }

    /// The `nearest` imports to choose again, once per step with a new round trip.
    pub(super) fn take_reselect(&mut self) -> Vec<ServiceKey> {
        if !std::mem::take(&mut self.reselect_nearest) {
            return Vec::new();
        }
        self.nearest.iter().cloned().collect()
    }
}

/// An origin takes traffic only while its cluster is up (or not yet heard from since
/// start) and it has a ready endpoint. A down cluster is still imported until its
/// withdrawal, but no policy other than `none` sends traffic to it.
fn origin_ready(liveness: Liveness, local: bool, source: &ImportedCluster) -> bool {
    let up = local || matches!(liveness, Liveness::Alive | Liveness::Unknown { .. });
    up && source
        .record
        .record
        .endpoints
        .iter()
        .any(|e| e.conditions.ready)
}

impl Node {
    /// Chooses the active origins of the import of `service` again, under its
    /// affinity, keeping an earlier `nearest` choice within the margin. Under `none`,
    /// once chosen, nothing is looked at: every origin is active, and new ones come in
    /// active. Otherwise O(origins).
    pub(super) fn select_traffic(&mut self, service: &ServiceKey) {
        let Some(index) = self.imports.index_mut(service) else {
            return;
        };
        let affinity = index.properties().affinity;
        if affinity == Affinity::None && *index.traffic() == TrafficReason::AllOrigins {
            return;
        }
        let own = &self.config.member.cluster;
        let origins: Vec<Origin<'_>> = index
            .sources()
            .iter()
            .map(|source| {
                let cluster = source.cluster();
                let local = cluster == own;
                let liveness = self.clusters.liveness(cluster);
                Origin {
                    cluster,
                    local,
                    ready: origin_ready(liveness, local, source),
                    rtt: if local {
                        Some(Duration::ZERO)
                    } else {
                        self.traffic.rtt.get(cluster)
                    },
                }
            })
            .collect();
        let margin = Duration::from_millis(self.config.nearest_margin_ms);
        let previous = index.traffic().nearest();
        let (active, reason) = select(affinity, &origins, previous, margin);
        index.set_traffic(&active, reason);
    }
}
