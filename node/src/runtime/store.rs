//! The sled store: what the core persists, and what it finds at start.
//!
//! Three trees: `records` (the view, keyed by origin and service), `meta` (the
//! singletons: own version, generation, last contact, peers, the format version), and
//! `lease_votes` (a voter's promise and accepted grant per lease). Values use the
//! canonical codec, and every decode has a size limit.
//!
//! **Durability:** [`Store::apply`] writes a `Persist` command's ops in one transaction,
//! and with [`Durability::Flush`] flushes before it returns. sled's background flush is
//! not relied upon for anything acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use shoal_proto::codec::{
    DecodeError, EncodeError, FRAME_BYTES_MAX, FRAME_DECODE_BUDGET, RECORD_BYTES_MAX,
    RECORD_DECODE_BUDGET, decode_limited, encode_limited,
};
use shoal_proto::{ClusterId, LeaseName, ServiceKey, SignedRecord, SwimIdentity};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::core::{Durability, PersistedState, StoreOp, VoterRecord};

/// The on-disk format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest stored lease vote, encoded.
const VOTE_BYTES_MAX: usize = 4 * 1024;
/// Largest stored peer list, encoded.
const PEERS_BYTES_MAX: usize = FRAME_BYTES_MAX;

const KEY_FORMAT: &[u8] = b"format";
const KEY_OWN_VERSION: &[u8] = b"own_version";
const KEY_GENERATION: &[u8] = b"generation";
const KEY_LAST_CONTACT: &[u8] = b"last_contact_ms";
const KEY_PEERS: &[u8] = b"peers";
/// Present once the store has held a lease vote: without it, `lease_votes` is `None`
/// and a voter waits one lease duration before taking part.
const KEY_HAS_VOTES: &[u8] = b"has_lease_votes";

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed to open, read, write or flush. A failed write left no part of its
    /// batch applied; a failed flush may have lost what was not yet durable.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The store was written by another format version. Nothing was changed.
    #[error("the store at {path} has format {found}, this build reads format {FORMAT_VERSION}")]
    Format { path: String, found: String },
    /// A value could not be encoded (it breaks a size bound). Nothing was written.
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: EncodeError,
    },
}

impl StoreError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Sled(_) => "sled",
            StoreError::Format { .. } => "format",
            StoreError::Encode { .. } => "encode",
        }
    }
}

/// What [`Store::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub records: u64,
    /// Values that did not decode: dropped, logged and deleted from the store.
    pub undecodable: u64,
    pub lease_votes: u64,
}

/// The node's sled database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    records: sled::Tree,
    meta: sled::Tree,
    votes: sled::Tree,
}

fn record_key(origin: &ClusterId, service: &ServiceKey) -> Vec<u8> {
    // Labels are DNS labels: no '/' inside them.
    format!("{origin}/{}/{}", service.namespace, service.name).into_bytes()
}

fn encode<T: bincode::Encode, const N: usize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    encode_limited::<T, N>(value).map_err(|source| StoreError::Encode { what, source })
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

impl Store {
    /// Opens (or creates) the store in `dir`, and reads everything the core needs to
    /// start. Values that do not decode are dropped, counted, logged and deleted.
    pub fn open(dir: &Path) -> Result<(Store, PersistedState, LoadReport), StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let store = Store {
            records: db.open_tree("records")?,
            meta: db.open_tree("meta")?,
            votes: db.open_tree("lease_votes")?,
            db,
        };
        store.check_format(dir)?;
        let mut report = LoadReport::default();
        let mut state = PersistedState::default();
        store.load_records(&mut state, &mut report)?;
        store.load_meta(&mut state, &mut report)?;
        store.load_votes(&mut state, &mut report)?;
        if report.undecodable > 0 {
            store.db.flush()?;
        }
        Ok((store, state, report))
    }

    fn check_format(&self, dir: &Path) -> Result<(), StoreError> {
        match self.meta.get(KEY_FORMAT)? {
            None => {
                self.meta
                    .insert(KEY_FORMAT, &FORMAT_VERSION.to_be_bytes()[..])?;
                self.db.flush()?;
                Ok(())
            }
            Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => Ok(()),
            Some(v) => Err(StoreError::Format {
                path: dir.display().to_string(),
                found: format!("{v:?}"),
            }),
        }
    }

    fn load_records(
        &self,
        state: &mut PersistedState,
        report: &mut LoadReport,
    ) -> Result<(), StoreError> {
        for entry in self.records.iter() {
            let (key, value) = entry?;
            let decoded: Result<SignedRecord, DecodeError> =
                decode_limited::<_, RECORD_BYTES_MAX, RECORD_DECODE_BUDGET>(&value);
            match decoded {
                Ok(signed) => {
                    let k = (signed.record.origin.clone(), signed.record.service.clone());
                    state.records.insert(k, Arc::new(signed));
                    report.records += 1;
                }
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), error = %e, "stored record does not decode; deleted");
                    self.records.remove(key)?;
                    report.undecodable += 1;
                }
            }
        }
        Ok(())
    }

    fn load_meta(
        &self,
        state: &mut PersistedState,
        report: &mut LoadReport,
    ) -> Result<(), StoreError> {
        let bad = |key: &[u8], report: &mut LoadReport| -> Result<(), StoreError> {
            tracing::warn!(key = %String::from_utf8_lossy(key), "stored value does not decode; deleted");
            self.meta.remove(key)?;
            report.undecodable += 1;
            Ok(())
        };
        if let Some(v) = self.meta.get(KEY_OWN_VERSION)? {
            match u64_of(&v) {
                Some(n) => state.own_version = n,
                None => bad(KEY_OWN_VERSION, report)?,
            }
        }
        if let Some(v) = self.meta.get(KEY_GENERATION)? {
            match v.as_ref().try_into().ok().map(u32::from_be_bytes) {
                Some(n) => state.generation = n,
                None => bad(KEY_GENERATION, report)?,
            }
        }
        if let Some(v) = self.meta.get(KEY_LAST_CONTACT)? {
            match u64_of(&v) {
                Some(n) => state.last_contact_ms = Some(n),
                None => bad(KEY_LAST_CONTACT, report)?,
            }
        }
        if let Some(v) = self.meta.get(KEY_PEERS)? {
            match decode_limited::<Vec<SwimIdentity>, PEERS_BYTES_MAX, FRAME_DECODE_BUDGET>(&v) {
                Ok(peers) => state.peers = peers,
                Err(_) => bad(KEY_PEERS, report)?,
            }
        }
        Ok(())
    }

    fn load_votes(
        &self,
        state: &mut PersistedState,
        report: &mut LoadReport,
    ) -> Result<(), StoreError> {
        if self.meta.get(KEY_HAS_VOTES)?.is_none() {
            return Ok(());
        }
        let mut votes = BTreeMap::new();
        let mut lost = false;
        for entry in self.votes.iter() {
            let (key, value) = entry?;
            let name = std::str::from_utf8(&key)
                .ok()
                .and_then(|s| LeaseName::new(s).ok());
            let record = decode_limited::<VoterRecord, VOTE_BYTES_MAX, VOTE_BYTES_MAX>(&value);
            match (name, record) {
                (Some(name), Ok(record)) => {
                    votes.insert(name, record);
                    report.lease_votes += 1;
                }
                _ => {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), "stored lease vote does not decode; deleted");
                    self.votes.remove(key)?;
                    report.undecodable += 1;
                    lost = true;
                }
            }
        }
        // A vote that did not survive means a promise may be forgotten: start as a
        // voter without its votes, which waits one lease duration.
        state.lease_votes = (!lost).then_some(votes);
        Ok(())
    }

    /// Writes `ops` atomically; with [`Durability::Flush`], flushes before returning.
    pub fn apply(&self, ops: &[StoreOp], durability: Durability) -> Result<(), StoreError> {
        let mut records = sled::Batch::default();
        let mut meta = sled::Batch::default();
        let mut votes = sled::Batch::default();
        for op in ops {
            match op {
                StoreOp::PutRecord(signed) => records.insert(
                    record_key(&signed.record.origin, &signed.record.service),
                    encode::<_, RECORD_BYTES_MAX>("record", &**signed)?,
                ),
                StoreOp::PutOwnVersion(v) => meta.insert(KEY_OWN_VERSION, &v.to_be_bytes()[..]),
                StoreOp::PutGeneration(g) => meta.insert(KEY_GENERATION, &g.to_be_bytes()[..]),
                StoreOp::PutLastContact(ms) => {
                    meta.insert(KEY_LAST_CONTACT, &ms.to_be_bytes()[..]);
                }
                StoreOp::PutPeers(peers) => {
                    meta.insert(KEY_PEERS, encode::<_, PEERS_BYTES_MAX>("peers", peers)?);
                }
                StoreOp::PutLeaseVote(lease, record) => {
                    votes.insert(
                        lease.as_str().as_bytes(),
                        encode::<_, VOTE_BYTES_MAX>("lease vote", record)?,
                    );
                    meta.insert(KEY_HAS_VOTES, &b"1"[..]);
                }
            }
        }
        (&self.records, &self.meta, &self.votes)
            .transaction(|(r, m, v)| {
                r.apply_batch(&records)?;
                m.apply_batch(&meta)?;
                v.apply_batch(&votes)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::Unsupported("transaction aborted".into()))
                }
            })?;
        if durability == Durability::Flush {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Deletes a stored record (one that failed verification at start). Durable.
    pub fn remove_record(
        &self,
        origin: &ClusterId,
        service: &ServiceKey,
    ) -> Result<(), StoreError> {
        self.records.remove(record_key(origin, service))?;
        self.db.flush()?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
