//! The simulated store of one node: what survives a crash.
//!
//! `Persist` ops with [`Durability::Flush`] are durable at once (and flush everything
//! written before them, as a real store's flush does). `Lazy` ops are written but
//! become durable only at the next flush: a later `Flush` op, or the background flush
//! the world runs every [`BACKGROUND_FLUSH_US`]. A crash loses whatever was not
//! flushed. Records are kept as the `Arc`s the core hands out, never copied.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_node::core::{Durability, PersistedState, StoreOp};
use shoal_proto::{ClusterId, ServiceKey, SignedRecord};

use crate::keyspace::KeySpace;

/// How often a node's store flushes lazy writes in the background.
pub const BACKGROUND_FLUSH_US: u64 = 500_000;
/// Most lazy ops buffered; a full buffer is flushed at once.
pub const PENDING_OPS_MAX: usize = 65_536;

/// The durable contents of a store.
#[derive(Clone, Debug, Default)]
struct Image {
    /// Dense by [`KeySpace`] index; allocated at the first record.
    records: Vec<Option<Arc<SignedRecord>>>,
    /// Records whose (origin, service) the key space does not know.
    overflow: BTreeMap<(ClusterId, ServiceKey), Arc<SignedRecord>>,
    own_version: u64,
    generation: u32,
    last_contact_ms: Option<u64>,
    peers: Vec<shoal_proto::SwimIdentity>,
    lease_votes: Option<BTreeMap<shoal_proto::LeaseName, shoal_node::core::VoterRecord>>,
}

impl Image {
    fn apply(&mut self, keys: &KeySpace, op: &StoreOp) {
        match op {
            StoreOp::PutRecord(signed) => match keys.index_of(signed) {
                Some(i) => {
                    if self.records.is_empty() {
                        self.records = vec![None; keys.len()];
                    }
                    self.records[i] = Some(Arc::clone(signed));
                }
                None => {
                    let key = (signed.record.origin.clone(), signed.record.service.clone());
                    self.overflow.insert(key, Arc::clone(signed));
                }
            },
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

/// One node's store: durable image plus lazy writes not yet flushed.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    durable: Image,
    pending: Vec<StoreOp>,
    /// Lazy ops lost in crashes.
    pub lost_ops: u64,
}

impl Disk {
    /// Carries out one `Persist` command.
    pub fn write(&mut self, keys: &KeySpace, ops: &[StoreOp], durability: Durability) {
        match durability {
            Durability::Flush => {
                self.flush(keys);
                for op in ops {
                    self.durable.apply(keys, op);
                }
            }
            Durability::Lazy => {
                self.pending.extend(ops.iter().cloned());
                if self.pending.len() > PENDING_OPS_MAX {
                    self.flush(keys);
                }
            }
        }
    }

    /// Makes every lazy write durable.
    pub fn flush(&mut self, keys: &KeySpace) {
        for op in std::mem::take(&mut self.pending) {
            self.durable.apply(keys, &op);
        }
    }

    /// The process died: lazy writes not yet flushed are gone. Returns how many.
    pub fn crash(&mut self) -> usize {
        let lost = self.pending.len();
        self.lost_ops += lost as u64;
        self.pending.clear();
        lost
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// What a restarting node finds.
    pub fn persisted(&self, keys: &KeySpace) -> PersistedState {
        let mut records = self.durable.overflow.clone();
        for (i, slot) in self.durable.records.iter().enumerate() {
            if let Some(r) = slot {
                let (_, service) = keys.split(i);
                records.insert((r.record.origin.clone(), service.clone()), Arc::clone(r));
            }
        }
        PersistedState {
            records,
            own_version: self.durable.own_version,
            generation: self.durable.generation,
            last_contact_ms: self.durable.last_contact_ms,
            peers: self.durable.peers.clone(),
            lease_votes: self.durable.lease_votes.clone(),
            wall_clock_ms: 0,
        }
    }

    /// The disk is gone (a node restarted on a new volume): records, own versions,
    /// generation, peers and lease votes.
    pub fn wipe(&mut self) {
        self.pending.clear();
        self.durable = Image::default();
    }

    /// Durable records, by key-space index (overflow records are not listed).
    pub fn durable_records(&self) -> impl Iterator<Item = (usize, &Arc<SignedRecord>)> {
        self.durable
            .records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
    }

    /// The newest version written for `record`'s key, durable or not; 0 if none.
    pub fn written_version(&self, keys: &KeySpace, record: &SignedRecord) -> u64 {
        let same_key = |r: &SignedRecord| {
            r.record.origin == record.record.origin && r.record.service == record.record.service
        };
        let pending = self
            .pending
            .iter()
            .filter_map(|op| match op {
                StoreOp::PutRecord(r) if same_key(r) => Some(r.record.version),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let durable = match keys.index_of(record) {
            Some(i) => self.durable.records.get(i).and_then(Option::as_ref),
            None => self
                .durable
                .overflow
                .get(&(record.record.origin.clone(), record.record.service.clone())),
        };
        pending.max(durable.map_or(0, |r| r.record.version))
    }

    pub fn durable_last_contact_ms(&self) -> Option<u64> {
        self.durable.last_contact_ms
    }

    pub fn durable_own_version(&self) -> u64 {
        self.durable.own_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_writes_are_lost_in_a_crash_unless_flushed() {
        let keys = KeySpace::new([], &[]);
        let mut disk = Disk::default();
        disk.write(&keys, &[StoreOp::PutLastContact(5)], Durability::Lazy);
        disk.flush(&keys);
        disk.write(&keys, &[StoreOp::PutLastContact(9)], Durability::Lazy);
        assert_eq!(disk.crash(), 1);
        assert_eq!(disk.persisted(&keys).last_contact_ms, Some(5));
        disk.write(&keys, &[StoreOp::PutLastContact(11)], Durability::Lazy);
        disk.write(&keys, &[StoreOp::PutGeneration(2)], Durability::Flush);
        disk.crash();
        let state = disk.persisted(&keys);
        assert_eq!((state.last_contact_ms, state.generation), (Some(11), 2));
    }
}
