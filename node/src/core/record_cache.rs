//! A cache of verified records: verify each distinct record once, keep it in memory once.
//!
//! Verification is a pure function of (origin key, record, signature), so remembering its
//! result changes nothing but cost. A hit requires the exact same record and signature
//! under the same origin key; the cached value is a [`Verified`] that proto minted when
//! the record was first checked, so the type-level proof is kept.
//!
//! A node uses [`NoRecordCache`] unless its driver installs another. The simulator shares
//! one [`WeakRecordCache`] across all its nodes, so a record gossiped to a thousand nodes
//! is verified and allocated once.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use shoal_proto::{SignedRecord, Verified, VerifiedWeak};

/// Most entries before dead ones are swept, and the floor of the sweep threshold.
const SWEEP_FLOOR: usize = 1_024;

pub trait RecordCache: std::fmt::Debug {
    /// The record, if it was verified before under `origin_key` with this exact content.
    fn lookup(
        &mut self,
        origin_key: &[u8; 32],
        record: &SignedRecord,
    ) -> Option<Verified<Arc<SignedRecord>>>;
    /// Remembers a record that just verified under `origin_key`.
    fn remember(&mut self, origin_key: [u8; 32], record: &Verified<Arc<SignedRecord>>);
}

/// Remembers nothing: every record is verified on arrival.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecordCache;

impl RecordCache for NoRecordCache {
    fn lookup(&mut self, _: &[u8; 32], _: &SignedRecord) -> Option<Verified<Arc<SignedRecord>>> {
        None
    }

    fn remember(&mut self, _: [u8; 32], _: &Verified<Arc<SignedRecord>>) {}
}

/// Weak handles keyed by (origin key, signature): records stay alive only while some
/// view holds them, and dead entries are swept when the map doubles.
#[derive(Debug, Default)]
pub struct WeakRecordCache {
    entries: BTreeMap<([u8; 32], [u8; 64]), VerifiedWeak>,
    sweep_at: usize,
}

impl WeakRecordCache {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl RecordCache for WeakRecordCache {
    fn lookup(
        &mut self,
        origin_key: &[u8; 32],
        record: &SignedRecord,
    ) -> Option<Verified<Arc<SignedRecord>>> {
        let cached = self
            .entries
            .get(&(*origin_key, record.signature))?
            .upgrade()?;
        (**cached == *record).then_some(cached)
    }

    fn remember(&mut self, origin_key: [u8; 32], record: &Verified<Arc<SignedRecord>>) {
        self.entries
            .insert((origin_key, record.signature), record.downgrade());
        if self.entries.len() >= self.sweep_at.max(SWEEP_FLOOR) {
            self.entries.retain(|_, weak| weak.is_alive());
            self.sweep_at = self.entries.len() * 2;
        }
    }
}

/// One cache shared by several nodes driven on one thread (the simulator).
impl<C: RecordCache> RecordCache for Rc<RefCell<C>> {
    fn lookup(
        &mut self,
        origin_key: &[u8; 32],
        record: &SignedRecord,
    ) -> Option<Verified<Arc<SignedRecord>>> {
        self.borrow_mut().lookup(origin_key, record)
    }

    fn remember(&mut self, origin_key: [u8; 32], record: &Verified<Arc<SignedRecord>>) {
        self.borrow_mut().remember(origin_key, record);
    }
}
