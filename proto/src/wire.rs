//! Wire messages between Shoal nodes.
//!
//! Membership (SWIM) travels as [`Message::Swim`] in datagrams; everything else travels
//! on streams, one message per frame. The transport authenticates the sending cluster
//! (mutual TLS); the messages themselves never claim who sent them, except the SWIM
//! header, which the core checks against the authenticated cluster.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::codec::{
    self, DATAGRAM_BYTES_MAX, DATAGRAM_DECODE_BUDGET, DecodeError, EncodeError, FRAME_BYTES_MAX,
    FRAME_DECODE_BUDGET,
};
use crate::ids::{ClusterId, MemberId, NetAddr, ServiceKey};
use crate::lease::{LEASE_MS_MAX, LeaseMessage};
use crate::sign::SignedRecord;

/// Most records in one push or pull answer.
pub const RECORDS_PER_MESSAGE_MAX: usize = 256;
/// Most origins summarised in one digest, or asked for in one pull: the ClusterSet
/// size limit.
pub const ORIGINS_PER_MESSAGE_MAX: usize = 4_096;
/// Most records a view holds from one origin (one per exported service, tombstones
/// included). A record of a further service is refused and counted.
pub const RECORDS_PER_ORIGIN_MAX: usize = 4_096;
/// Most (service, version) pairs a pull may list for one origin: all of its records.
pub const REFS_PER_ORIGIN_MAX: usize = RECORDS_PER_ORIGIN_MAX;
/// The largest encoded [`RecordRef`]: two 63-byte labels with their lengths, and a
/// 9-byte varint version.
pub const RECORD_REF_BYTES_MAX: usize = 2 * (1 + 63) + 9;
/// The largest encoded [`OriginWant`] without its refs: the origin and the refs' count.
pub const ORIGIN_WANT_BYTES_BASE: usize = 1 + 63 + 5;

// One origin's whole `have` list fits one frame, with room for the message around it.
const _: () = assert!(
    ORIGIN_WANT_BYTES_BASE + REFS_PER_ORIGIN_MAX * RECORD_REF_BYTES_MAX < FRAME_BYTES_MAX - 64
);
/// Most members in one membership exchange: every replica of a full ClusterSet.
pub const MEMBERS_PER_MESSAGE_MAX: usize = 16_384;
/// The largest encoded [`SwimIdentity`]: a 63-byte cluster id with its length, a
/// 3-byte varint replica, an 18-byte address with its length, a 5-byte varint
/// generation.
pub const SWIM_IDENTITY_BYTES_MAX: usize = (1 + 63) + 3 + (1 + 18) + 5;
/// Most members a sender puts in one list so that it surely fits a frame.
pub const MEMBERS_PER_FRAME: usize = {
    let fitting = (FRAME_BYTES_MAX - 64) / SWIM_IDENTITY_BYTES_MAX;
    if fitting < MEMBERS_PER_MESSAGE_MAX {
        fitting
    } else {
        MEMBERS_PER_MESSAGE_MAX
    }
};

/// A message breaks a per-message bound (too many records, origins, refs or members,
/// or too long a lease). Decoding drops it; encoding refuses to build it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OverBound(String);

/// What a SWIM member is: a replica, where it listens, and a generation that grows
/// with every restart so that a restarted replica wins over its old self.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Encode, Decode,
)]
pub struct SwimIdentity {
    pub member: MemberId,
    pub addr: NetAddr,
    pub generation: u32,
}

/// An anti-entropy summary of everything a node holds from one origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OriginSummary {
    pub origin: ClusterId,
    /// Highest record version held from this origin.
    pub max_version: u64,
    /// Order-independent hash of (service, version, signature) over the origin's records.
    pub hash: u64,
    pub records: u32,
}

/// One record's identity and version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode)]
pub struct RecordRef {
    pub service: ServiceKey,
    pub version: u64,
}

/// A request for the records of `origin` that are newer than, or missing from, `have`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct OriginWant {
    pub origin: ClusterId,
    pub have: Vec<RecordRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub enum Message {
    /// A SWIM packet (foca header, updates), encoded by the core's membership codec.
    Swim(Vec<u8>),
    /// Records pushed because they changed, or sent in answer to a pull. With `relay`,
    /// the receiver forwards them to the other replicas of its own cluster.
    Push {
        records: Vec<SignedRecord>,
        relay: bool,
    },
    /// Anti-entropy, step 1: the sender's whole view in one hash, and its membership
    /// (the members it believes up, itself included) in another.
    DigestRoot {
        root: u64,
        records: u64,
        members: u64,
    },
    /// Anti-entropy, step 2: the views differ; here is the answerer's per-origin summary.
    DigestOrigins { entries: Vec<OriginSummary> },
    /// Anti-entropy, step 3: send me what I lack of these origins.
    Pull { wants: Vec<OriginWant> },
    /// Membership push-pull (as memberlist's): the members the sender believes up,
    /// itself included, sent when membership hashes differ. With `reply`, the receiver
    /// answers with its own list.
    Members {
        members: Vec<SwimIdentity>,
        reply: bool,
    },
    /// The quorum lease (PaxosLease), between proposers and voters.
    Lease(LeaseMessage),
}

/// Which bounded channel a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Unreliable, at most [`DATAGRAM_BYTES_MAX`] bytes.
    Datagram,
    /// Reliable and ordered, at most [`FRAME_BYTES_MAX`] bytes a frame.
    Stream,
}

impl Message {
    pub fn channel(&self) -> Channel {
        match self {
            Message::Swim(_) => Channel::Datagram,
            _ => Channel::Stream,
        }
    }

    /// A short, fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Swim(_) => "swim",
            Message::Push { .. } => "push",
            Message::DigestRoot { .. } => "digest_root",
            Message::DigestOrigins { .. } => "digest_origins",
            Message::Pull { .. } => "pull",
            Message::Members { .. } => "members",
            Message::Lease(m) => m.kind(),
        }
    }

    /// Checks the per-message bounds that the byte limit alone does not express. The
    /// decoder refuses a frame that breaks one, and the encoder refuses to build one, so
    /// a node never sends what every peer would drop.
    pub fn check_bounds(&self) -> Result<(), OverBound> {
        let too_many = |what: &str, n: usize, max: usize| {
            Err(OverBound(format!("{n} {what}, more than {max}")))
        };
        match self {
            Message::Push { records, .. } if records.len() > RECORDS_PER_MESSAGE_MAX => {
                too_many("records", records.len(), RECORDS_PER_MESSAGE_MAX)
            }
            Message::DigestOrigins { entries } if entries.len() > ORIGINS_PER_MESSAGE_MAX => {
                too_many("origins", entries.len(), ORIGINS_PER_MESSAGE_MAX)
            }
            Message::Pull { wants } if wants.len() > ORIGINS_PER_MESSAGE_MAX => {
                too_many("origins", wants.len(), ORIGINS_PER_MESSAGE_MAX)
            }
            Message::Members { members, .. } if members.len() > MEMBERS_PER_MESSAGE_MAX => {
                too_many("members", members.len(), MEMBERS_PER_MESSAGE_MAX)
            }
            Message::Pull { wants } => {
                match wants.iter().find(|w| w.have.len() > REFS_PER_ORIGIN_MAX) {
                    Some(w) => too_many("record refs", w.have.len(), REFS_PER_ORIGIN_MAX),
                    None => Ok(()),
                }
            }
            Message::Lease(
                LeaseMessage::Propose { grant, .. }
                | LeaseMessage::Promise {
                    open: Some((grant, _)),
                    ..
                },
            ) if grant.lease_ms > LEASE_MS_MAX => Err(OverBound(format!(
                "a lease of {} ms, more than {LEASE_MS_MAX}",
                grant.lease_ms
            ))),
            _ => Ok(()),
        }
    }

    /// Encodes for the message's channel, refusing anything over that channel's byte
    /// limit or over a bound [`Message::check_bounds`] checks.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.check_bounds()
            .map_err(|e| EncodeError::OverBound(e.to_string()))?;
        match self.channel() {
            Channel::Datagram => codec::encode_limited::<_, DATAGRAM_BYTES_MAX>(self),
            Channel::Stream => codec::encode_limited::<_, FRAME_BYTES_MAX>(self),
        }
    }

    /// Decodes a datagram. Only SWIM packets may arrive this way.
    pub fn decode_datagram(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message: Message =
            codec::decode_limited::<_, DATAGRAM_BYTES_MAX, DATAGRAM_DECODE_BUDGET>(bytes)?;
        if message.channel() != Channel::Datagram {
            return Err(DecodeError::Malformed(format!(
                "{} is not a datagram",
                message.kind()
            )));
        }
        Ok(message)
    }

    /// Decodes one stream frame and checks its bounds. SWIM never travels on streams.
    pub fn decode_frame(bytes: &[u8]) -> Result<Self, DecodeError> {
        let message: Message =
            codec::decode_limited::<_, FRAME_BYTES_MAX, FRAME_DECODE_BUDGET>(bytes)?;
        if message.channel() != Channel::Stream {
            return Err(DecodeError::Malformed(format!(
                "{} is not a stream frame",
                message.kind()
            )));
        }
        message
            .check_bounds()
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        Ok(message)
    }

    /// Decodes from either channel, choosing the limit by length.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() <= DATAGRAM_BYTES_MAX
            && let Ok(message @ Message::Swim(_)) = Self::decode_datagram(bytes)
        {
            return Ok(message);
        }
        Self::decode_frame(bytes)
    }
}

impl SignedRecord {
    /// This record's contribution to an anti-entropy hash: its identity, version and
    /// signature. Distinct contents give distinct signatures, so equal hashes mean
    /// equal records with overwhelming probability.
    pub fn digest_hash(&self) -> u64 {
        let mut h = Fnv64::new();
        h.write(self.record.origin.as_str().as_bytes());
        h.write(&[0]);
        h.write(self.record.service.namespace.as_str().as_bytes());
        h.write(&[0]);
        h.write(self.record.service.name.as_str().as_bytes());
        h.write(&self.record.version.to_le_bytes());
        h.write(&self.signature);
        h.finish()
    }

    pub fn reference(&self) -> RecordRef {
        RecordRef {
            service: self.record.service.clone(),
            version: self.record.version,
        }
    }
}

impl SwimIdentity {
    /// This member's contribution to a membership hash.
    pub fn digest_hash(&self) -> u64 {
        let mut h = Fnv64::new();
        h.write(self.member.cluster.as_str().as_bytes());
        h.write(&[0]);
        h.write(&self.member.replica.0.to_le_bytes());
        h.write(&self.addr.ip);
        h.write(&self.addr.port.to_le_bytes());
        h.write(&self.generation.to_le_bytes());
        h.finish()
    }
}

/// FNV-1a, 64 bits, finished with a SplitMix64 mix so that XOR-combined hashes of
/// similar records do not cancel.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
