//! Invariant 2, authenticity: no node ever holds a record that its origin did not sign.
//!
//! Every record that enters any view shows up in a `Persist` op; the world hands each
//! one to [`Authenticity::check`], which verifies it against the origin's true public
//! key (the simulator's own key ring, not the node's). Verified records are remembered
//! by address and by signature, so each distinct record is verified once per run, not
//! once per node. (The memory holds a strong reference to every record in it, so an
//! address cannot be reused by another record while it is remembered.)

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_proto::{KeyRing, SignedRecord, sign};

/// Most verified records remembered; beyond it the memory starts afresh (slower, not
/// less correct).
pub const VERIFIED_MAX: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct Authenticity {
    by_address: BTreeMap<usize, Arc<SignedRecord>>,
    verified: BTreeMap<[u8; 64], Arc<SignedRecord>>,
    /// Records checked, and how many needed a signature verification.
    pub checked: u64,
    pub verifications: u64,
}

impl Authenticity {
    /// Checks one record that entered a view. `Err` describes the forgery.
    pub fn check(&mut self, truth: &KeyRing, record: &Arc<SignedRecord>) -> Result<(), String> {
        self.checked += 1;
        let address = Arc::as_ptr(record) as usize;
        if self.by_address.contains_key(&address) {
            return Ok(());
        }
        let known = self
            .verified
            .get(&record.signature)
            .is_some_and(|known| **known == **record);
        if !known {
            self.verifications += 1;
            if let Err(e) = sign::verify(truth, SignedRecord::clone(record)) {
                return Err(format!(
                    "record {}/{} v{} is not signed by its origin: {e}",
                    record.record.origin, record.record.service, record.record.version
                ));
            }
        }
        if self.by_address.len() >= VERIFIED_MAX {
            self.by_address.clear();
            self.verified.clear();
        }
        self.by_address.insert(address, Arc::clone(record));
        self.verified.insert(record.signature, Arc::clone(record));
        Ok(())
    }
}
