//! Membership: SWIM through foca, and cluster liveness on top of it.
//!
//! foca tracks replicas. A cluster is alive while any of its replicas is; when the
//! last one goes down the cluster is `Down`, and after the grace period the node
//! withdraws it (see `node`). Members of clusters outside the ClusterSet are ignored.
//!
//! - `identity`: the SWIM identity and its size-limited codec.
//! - `liveness`: cluster liveness from replica membership.
//! - `probes`: SWIM ack latency, refuted suspicions and raised suspicions, read from
//!   the SWIM messages this node sends and receives.

mod identity;
mod liveness;
mod probes;

use std::collections::BTreeMap;
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, OwnedNotification, Runtime, Timer};
use rand::rngs::ChaCha8Rng;
use shoal_proto::codec::DATAGRAM_BYTES_MAX;
use shoal_proto::{ClusterId, MemberId, ReplicaId, SwimIdentity};

pub use identity::{SwimCodec, SwimId};
pub use liveness::Liveness;
pub(super) use liveness::{Clusters, Transition};
pub(super) use probes::Probes;

use super::config::Config;

/// Room kept in a datagram for the `Message::Swim` envelope around foca's packet.
const SWIM_ENVELOPE_BYTES: usize = 16;

/// What one foca interaction produced.
#[derive(Debug, Default)]
pub(super) struct SwimOutput {
    pub(super) sends: Vec<(SwimId, Vec<u8>)>,
    pub(super) timers: Vec<(Duration, Timer<SwimId>)>,
    pub(super) notes: Vec<OwnedNotification<SwimId>>,
}

impl Runtime<SwimId> for SwimOutput {
    fn notify(&mut self, notification: foca::Notification<'_, SwimId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: SwimId, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<SwimId>, after: Duration) {
        self.timers.push((after, event));
    }
}

pub(super) type Swim = Foca<SwimId, SwimCodec, ChaCha8Rng, NoCustomBroadcast>;

/// foca's configuration from ours.
pub(super) fn foca_config(config: &Config) -> foca::Config {
    let members =
        std::num::NonZeroU32::new(config.members_expected.max(1)).expect("max(1) is non-zero");
    let mut foca = foca::Config::new_wan(members);
    let s = &config.swim;
    foca.probe_period = Duration::from_millis(s.probe_period_ms);
    foca.probe_rtt = Duration::from_millis(s.probe_rtt_ms);
    foca.suspect_to_down_after = Duration::from_millis(s.suspect_to_down_ms);
    foca.remove_down_after = Some(Duration::from_millis(s.remove_down_after_ms));
    foca.max_packet_size = NonZeroUsize::new(DATAGRAM_BYTES_MAX - SWIM_ENVELOPE_BYTES)
        .expect("datagram limit exceeds the envelope");
    foca.num_indirect_probes = NonZeroUsize::new(3).expect("3 is non-zero");
    foca.max_transmissions = foca
        .max_transmissions
        .max(NonZeroU8::new(6).expect("non-zero"));
    foca.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(s.gossip_period_ms),
        num_members: NonZeroUsize::new(s.gossip_fanout).expect("validated: fanout >= 1"),
    });
    foca.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(s.announce_period_ms),
        num_members: NonZeroUsize::new(1).expect("non-zero"),
    });
    foca.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(s.announce_down_period_ms),
        num_members: NonZeroUsize::new(2).expect("non-zero"),
    });
    foca
}

/// The members foca currently considers active, by member id, and an order-independent
/// hash of them for the membership push-pull.
#[derive(Debug, Default)]
pub(super) struct Members {
    up: BTreeMap<MemberId, SwimIdentity>,
    hash: u64,
    /// The last identity of each member seen go down and not up since: where to
    /// probe a down cluster before withdrawing it. At most [`MEMBERS_DOWN_MAX`].
    down: BTreeMap<MemberId, SwimIdentity>,
}

/// Most down members remembered for last-chance probes; beyond it, none are added.
const MEMBERS_DOWN_MAX: usize = 1 << 16;

impl Members {
    pub(super) fn insert(&mut self, id: &SwimId) {
        self.down.remove(&id.0.member);
        if let Some(old) = self.up.insert(id.0.member.clone(), id.0.clone()) {
            self.hash ^= old.digest_hash();
        }
        self.hash ^= id.0.digest_hash();
    }

    /// Removes the member if `id` is its current identity.
    pub(super) fn remove(&mut self, id: &SwimId) -> bool {
        match self.up.get(&id.0.member) {
            Some(current) if current.generation <= id.0.generation => {
                self.hash ^= current.digest_hash();
                self.up.remove(&id.0.member);
                if self.down.len() < MEMBERS_DOWN_MAX {
                    self.down.insert(id.0.member.clone(), id.0.clone());
                }
                true
            }
            _ => false,
        }
    }

    pub(super) fn hash(&self) -> u64 {
        self.hash
    }

    pub(super) fn get(&self, member: &MemberId) -> Option<&SwimIdentity> {
        self.up.get(member)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &SwimIdentity> {
        self.up.values()
    }

    /// One member per other cluster (its lowest replica), the targets of a push.
    pub(super) fn gateways(&self, local: &ClusterId) -> Vec<MemberId> {
        let mut last: Option<&ClusterId> = None;
        let mut out = Vec::new();
        for member in self.up.keys() {
            if &member.cluster != local && last != Some(&member.cluster) {
                out.push(member.clone());
                last = Some(&member.cluster);
            }
        }
        out
    }

    /// The replicas of `cluster` last seen going down, with their last identity.
    pub(super) fn down_replicas(&self, cluster: &ClusterId) -> impl Iterator<Item = &SwimIdentity> {
        self.down.range(replica_range(cluster)).map(|(_, id)| id)
    }

    /// The other replicas of this cluster: one range of the ordered map.
    pub(super) fn siblings(&self, me: &MemberId) -> Vec<MemberId> {
        self.up
            .range(replica_range(&me.cluster))
            .map(|(m, _)| m)
            .filter(|m| *m != me)
            .cloned()
            .collect()
    }

    /// Whether any member of another cluster is up. Members are ordered by cluster, so
    /// the local ones are contiguous: only the ends need a look.
    /// The last identity of every member seen down and not up since.
    pub(in crate::core) fn down_identities(&self) -> impl Iterator<Item = &SwimIdentity> {
        self.down.values()
    }

    pub(super) fn has_remote(&self, local: &ClusterId) -> bool {
        let first = self.up.keys().next();
        let last = self.up.keys().next_back();
        [first, last]
            .into_iter()
            .flatten()
            .any(|m| &m.cluster != local)
    }
}

/// Every member id of `cluster`, as a range of the ordered member map.
fn replica_range(cluster: &ClusterId) -> std::ops::RangeInclusive<MemberId> {
    let first = MemberId {
        cluster: cluster.clone(),
        replica: ReplicaId(0),
    };
    let last = MemberId {
        cluster: cluster.clone(),
        replica: ReplicaId(u16::MAX),
    };
    first..=last
}
