//! ed25519 signatures over records, and the [`Verified`] wrapper that proves a check.
//!
//! The signed message is a domain-separation tag followed by the record's canonical
//! encoding, so a signature over a record can never be replayed as a signature over
//! anything else. Verification uses `verify_strict`, which rejects small-order keys and
//! non-canonical signatures (no malleability: one record, one valid signature).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use bincode::{Decode, Encode};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, RECORD_BYTES_MAX};
use crate::ids::ClusterId;
use crate::record::{ExportRecord, RecordError};

const RECORD_DOMAIN: &[u8] = b"shoal/export-record/v5\0";

/// A record and its origin's signature, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct SignedRecord {
    pub record: ExportRecord,
    #[serde(with = "signature_hex")]
    pub signature: [u8; 64],
}

/// Why a record was refused. State unchanged: the record is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No key is known for the origin: it is not a member of the ClusterSet.
    #[error("origin {0} is not a member of the ClusterSet")]
    UnknownOrigin(ClusterId),
    /// The signature does not verify with the origin's key: forged or corrupted.
    #[error("bad signature for a record of origin {0}")]
    BadSignature(ClusterId),
    /// The record breaks a structural bound.
    #[error("invalid record: {0}")]
    Invalid(#[from] RecordError),
    /// The record is too large to encode.
    #[error("record too large: {0}")]
    TooLarge(#[from] codec::EncodeError),
}

/// Why a key was not added to a [`KeyRing`]. The ring is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// The key is malformed or of small order.
    #[error("the public key of {0} is malformed or weak")]
    BadKey(ClusterId),
    /// The ring already holds `KEY_RING_CLUSTERS_MAX` clusters.
    #[error("the key ring is full ({KEY_RING_CLUSTERS_MAX} clusters)")]
    Full,
}

/// Most clusters a key ring holds; their indexes stay below 2^31.
pub const KEY_RING_CLUSTERS_MAX: usize = 1 << 31;

/// A value whose signature has been checked. Only [`verify`] and [`ClusterKey::sign`]
/// construct one; the field is private.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub fn get(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl Verified<SignedRecord> {
    /// Moves the verified record behind an `Arc`, keeping the proof.
    pub fn share(self) -> Verified<Arc<SignedRecord>> {
        Verified(Arc::new(self.0))
    }
}

impl Verified<Arc<SignedRecord>> {
    /// A weak handle that upgrades back to a verified record while it is alive.
    pub fn downgrade(&self) -> VerifiedWeak {
        VerifiedWeak(Arc::downgrade(&self.0))
    }
}

/// A weak reference to a verified record, for caches that must not keep records alive.
#[derive(Clone, Debug)]
pub struct VerifiedWeak(Weak<SignedRecord>);

impl VerifiedWeak {
    pub fn upgrade(&self) -> Option<Verified<Arc<SignedRecord>>> {
        self.0.upgrade().map(Verified)
    }

    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

fn signed_message(record: &ExportRecord) -> Result<Vec<u8>, VerifyError> {
    let body = codec::encode_limited::<_, RECORD_BYTES_MAX>(record)?;
    let mut message = Vec::with_capacity(RECORD_DOMAIN.len() + body.len());
    message.extend_from_slice(RECORD_DOMAIN);
    message.extend_from_slice(&body);
    Ok(message)
}

/// A cluster's signing key. Its public half is certified by the ClusterSet CA.
pub struct ClusterKey {
    cluster: ClusterId,
    key: SigningKey,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Clone for ClusterKey {
    fn clone(&self) -> Self {
        Self {
            cluster: self.cluster.clone(),
            key: SigningKey::from_bytes(&self.key.to_bytes()),
        }
    }
}

impl ClusterKey {
    /// Builds a key from its 32-byte secret seed.
    pub fn from_seed(cluster: ClusterId, seed: [u8; 32]) -> Self {
        Self {
            cluster,
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn cluster(&self) -> &ClusterId {
        &self.cluster
    }

    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a record authored by this cluster. A record for another origin is refused:
    /// no cluster may author another's records.
    pub fn sign(&self, record: ExportRecord) -> Result<Verified<SignedRecord>, VerifyError> {
        if record.origin != self.cluster {
            return Err(VerifyError::BadSignature(record.origin));
        }
        record.validate()?;
        let signature = self.key.sign(&signed_message(&record)?).to_bytes();
        Ok(Verified(SignedRecord { record, signature }))
    }

    /// Signs without the origin check. Only for tests and the simulator's byzantine
    /// members, which must be able to produce forgeries that verification then rejects.
    pub fn sign_unchecked(&self, record: ExportRecord) -> SignedRecord {
        let message = signed_message(&record).expect("test records fit the record limit");
        SignedRecord {
            record,
            signature: self.key.sign(&message).to_bytes(),
        }
    }
}

/// The public keys of the ClusterSet's members, each certified by the CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: BTreeMap<ClusterId, (VerifyingKey, u32)>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a member's key. A malformed or small-order key is refused.
    pub fn insert(&mut self, cluster: ClusterId, public: [u8; 32]) -> Result<(), KeyRingError> {
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| KeyRingError::BadKey(cluster.clone()))?;
        if key.is_weak() {
            return Err(KeyRingError::BadKey(cluster));
        }
        let index = match self.keys.get(&cluster) {
            Some((_, index)) => *index,
            None if self.keys.len() < KEY_RING_CLUSTERS_MAX => self.keys.len() as u32,
            None => return Err(KeyRingError::Full),
        };
        self.keys.insert(cluster, (key, index));
        Ok(())
    }

    /// The public key held for `cluster`.
    pub fn public(&self, cluster: &ClusterId) -> Option<[u8; 32]> {
        self.keys.get(cluster).map(|(k, _)| k.to_bytes())
    }

    /// A small number for `cluster`, stable for the life of this ring: the order in
    /// which it was first inserted. Lets hot paths compare members by number.
    pub fn index(&self, cluster: &ClusterId) -> Option<u32> {
        self.keys.get(cluster).map(|(_, index)| *index)
    }

    pub fn contains(&self, cluster: &ClusterId) -> bool {
        self.keys.contains_key(cluster)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &ClusterId> {
        self.keys.keys()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Checks `signed` against its origin's key in `ring`.
pub fn verify(ring: &KeyRing, signed: SignedRecord) -> Result<Verified<SignedRecord>, VerifyError> {
    let origin = &signed.record.origin;
    let (key, _) = ring
        .keys
        .get(origin)
        .ok_or_else(|| VerifyError::UnknownOrigin(origin.clone()))?;
    signed.record.validate()?;
    let message = signed_message(&signed.record)?;
    let signature = Signature::from_bytes(&signed.signature);
    key.verify_strict(&message, &signature)
        .map_err(|_| VerifyError::BadSignature(origin.clone()))?;
    Ok(Verified(signed))
}

mod signature_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = text.as_bytes();
        if bytes.len() != 128 {
            return Err(serde::de::Error::custom("signature must be 128 hex digits"));
        }
        let mut out = [0u8; 64];
        if !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(serde::de::Error::custom("signature must be lowercase hex"));
        }
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(serde::de::Error::custom)?;
            out[i] = u8::from_str_radix(pair, 16).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}
