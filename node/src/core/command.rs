//! What the core asks its driver to do, and what it persists.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_proto::wire::Channel;
use shoal_proto::{
    ClusterId, FencingToken, LeaseName, MemberId, NetAddr, ServiceKey, SignedRecord, SwimIdentity,
};

use super::imports::ImportedService;
use super::lease::VoterRecord;
use super::time::Time;

/// One instruction to the driver. Carry them out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Write these ops to the store, atomically. With [`Durability::Flush`], flush
    /// before carrying out any later command.
    Persist {
        ops: Vec<StoreOp>,
        durability: Durability,
    },
    /// Send an encoded message. `addr` is where the member was last known to listen,
    /// when the core knows it.
    Send {
        to: MemberId,
        addr: Option<NetAddr>,
        channel: Channel,
        kind: &'static str,
        bytes: Vec<u8>,
    },
    /// The imports of these services changed: apply them to the sinks (Kubernetes, files).
    ApplyImports { changes: Vec<ImportChange> },
    /// Call [`crate::core::Node::handle_timeout`] at `at` (replaces any earlier request).
    SetTimer { at: Time },
    /// Something an operator should hear about.
    Notify(Event),
}

/// Whether a persisted write must survive a crash before the step goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Flush before any later command: the write is acknowledged or relied upon.
    Flush,
    /// Write now; a background flush makes it durable later. A crash may lose it.
    Lazy,
}

/// One write to the node's store. Keys: records by (origin, service); the rest are
/// singletons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Shared with the view: records are immutable once verified.
    PutRecord(Arc<SignedRecord>),
    /// The highest version this cluster has used for its own records.
    PutOwnVersion(u64),
    /// This replica's membership generation, bumped at every start.
    PutGeneration(u32),
    /// When a remote member was last heard from (driver milliseconds), for the age of
    /// a stale view after a restart.
    PutLastContact(u64),
    /// A sample of members recently up, to announce to after a restart or while
    /// isolated, when the configured seeds may be gone.
    PutPeers(Vec<SwimIdentity>),
    /// A lease voter's promise and accepted grant, written before its reply.
    PutLeaseVote(LeaseName, VoterRecord),
}

/// What a node finds in its store at start. The core verifies every record again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistedState {
    pub records: BTreeMap<(ClusterId, ServiceKey), Arc<SignedRecord>>,
    pub own_version: u64,
    pub generation: u32,
    /// When a remote member was last heard from, in wall-clock milliseconds.
    pub last_contact_ms: Option<u64>,
    pub peers: Vec<SwimIdentity>,
    /// A lease voter's state; `None` when the store holds none (a new voter, or one
    /// that lost its disk), which makes the voter wait one lease duration.
    pub lease_votes: Option<BTreeMap<LeaseName, VoterRecord>>,
    /// Not from the store: wall-clock time at start, Unix milliseconds, from the
    /// driver. A store that holds no own version (a new one, or one that was lost)
    /// starts the cluster's record versions here, and one without a generation starts
    /// generations at these seconds. Peers hold what this cluster signed before its
    /// store was lost: a version signed again with other contents would be rejected as
    /// equivocation, and a generation they saw down is never admitted again. This
    /// assumes fewer than 1,000 publications per second, and a restart at least a
    /// second after the previous start.
    pub wall_clock_ms: u64,
}

impl PersistedState {
    /// Applies ops as the store would, for drivers that keep the state in memory.
    pub fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::PutRecord(signed) => {
                let key = (signed.record.origin.clone(), signed.record.service.clone());
                self.records.insert(key, Arc::clone(signed));
            }
            StoreOp::PutOwnVersion(v) => self.own_version = *v,
            StoreOp::PutGeneration(g) => self.generation = *g,
            StoreOp::PutLastContact(ms) => self.last_contact_ms = Some(*ms),
            StoreOp::PutPeers(peers) => self.peers = peers.clone(),
            StoreOp::PutLeaseVote(lease, record) => {
                self.lease_votes
                    .get_or_insert_default()
                    .insert(lease.clone(), record.clone());
            }
        }
    }
}

/// A change to one service's import. `None` removes the import. The import is shared
/// with the node, so a change costs O(1) however many clusters export the service; a
/// sink that keeps it makes the node's next patch copy it once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportChange {
    pub service: ServiceKey,
    pub import: Option<Arc<ImportedService>>,
}

/// Notable events, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    MemberUp(MemberId),
    MemberDown(MemberId),
    /// Every replica of the cluster is down; its endpoints go after the grace period.
    ClusterDown(ClusterId),
    /// The grace period ended: the cluster's endpoints left the imports.
    ClusterWithdrawn(ClusterId),
    /// A cluster came back; its endpoints are imported again.
    ClusterRestored(ClusterId),
    /// An origin signed two different records with the same version.
    Equivocation {
        origin: ClusterId,
        service: ServiceKey,
        version: u64,
    },
    /// No remote member is reachable: the view is served as stale.
    Isolated,
    /// Remote members are reachable again.
    Connected,
    /// This cluster now holds the lease, with this fencing token.
    LeaseAcquired {
        lease: LeaseName,
        token: FencingToken,
    },
    /// This cluster's hold on the lease ended without a renewal: stop writing.
    LeaseLost {
        lease: LeaseName,
    },
    /// This cluster gave the lease up.
    LeaseReleased {
        lease: LeaseName,
    },
}
