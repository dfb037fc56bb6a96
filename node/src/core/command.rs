//! What the core asks its driver to do, and what it persists.

use std::collections::{BTreeMap, BTreeSet};
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

/// A change to one service's import. `None` removes the import. The import shares its
/// sources with the node's, so a change costs O(1) to hand out however many clusters
/// export the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportChange {
    pub service: ServiceKey,
    pub import: Option<Arc<ImportedService>>,
    /// The origins this change added to the import's sources, removed from them, or
    /// gave a new record: a consumer need not compare the sources to find out.
    pub sources: SourceChanges<ClusterId>,
}

impl ImportChange {
    /// The import of `service` as it stands, naming no source changes: for a sink
    /// that writes its whole desired state again (a resync), which reads only the
    /// import.
    pub fn restate(service: ServiceKey, import: Option<Arc<ImportedService>>) -> Self {
        Self {
            service,
            import,
            sources: SourceChanges::default(),
        }
    }

    /// One change that has the effect of `self` followed by `later` (of the same
    /// service).
    pub fn then(mut self, later: ImportChange) -> ImportChange {
        debug_assert_eq!(self.service, later.service);
        self.sources.then(later.sources);
        self.import = later.import;
        self
    }
}

/// Which origins one change, or several in a row, added to an import's sources
/// (`gained`), removed (`lost`), or kept with a new record (`updated`). An origin is in
/// at most one of the three.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceChanges<T: Ord> {
    pub gained: BTreeSet<T>,
    pub lost: BTreeSet<T>,
    pub updated: BTreeSet<T>,
}

impl<T: Ord> Default for SourceChanges<T> {
    fn default() -> Self {
        Self {
            gained: BTreeSet::new(),
            lost: BTreeSet::new(),
            updated: BTreeSet::new(),
        }
    }
}

impl<T: Ord> SourceChanges<T> {
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty() && self.updated.is_empty()
    }

    /// `origin` entered the sources. Lost earlier in the run, it was there before and
    /// is there after, perhaps with another record.
    pub fn gain(&mut self, origin: T) {
        if self.lost.remove(&origin) {
            self.updated.insert(origin);
        } else {
            self.gained.insert(origin);
        }
    }

    /// `origin` left the sources. Gained earlier in the run, it was never there.
    pub fn lose(&mut self, origin: T) {
        if !self.gained.remove(&origin) {
            self.updated.remove(&origin);
            self.lost.insert(origin);
        }
    }

    /// `origin` stayed, with a new record.
    pub fn update(&mut self, origin: T) {
        if !self.gained.contains(&origin) {
            self.updated.insert(origin);
        }
    }

    /// Appends a later run of changes.
    pub fn then(&mut self, later: SourceChanges<T>) {
        // Within one run an origin is in one set only, so the order does not matter.
        later.gained.into_iter().for_each(|o| self.gain(o));
        later.lost.into_iter().for_each(|o| self.lose(o));
        later.updated.into_iter().for_each(|o| self.update(o));
    }

    pub fn map<U: Ord>(self, f: impl Fn(T) -> U) -> SourceChanges<U> {
        SourceChanges {
            gained: self.gained.into_iter().map(&f).collect(),
            lost: self.lost.into_iter().map(&f).collect(),
            updated: self.updated.into_iter().map(&f).collect(),
        }
    }
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
