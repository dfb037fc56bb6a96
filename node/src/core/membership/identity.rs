//! The SWIM identity (a replica, its address and generation) and the bincode codec
//! foca uses for it. Every decode is size-limited.

use std::sync::Arc;

use bincode::config::{self, Configuration, LittleEndian, Varint};
use bytes::{Buf, BufMut};
use foca::{Codec, Header, Identity, Member, Message};
use serde::{Deserialize, Serialize};
use shoal_proto::codec::DATAGRAM_BYTES_MAX;
use shoal_proto::{KeyRing, MemberId, SwimIdentity};

/// The address foca compares members by: the cluster's index in this node's trust
/// ring, and the replica. `Copy`, so foca's membership scans compare two integers
/// instead of cloning and comparing names. Clusters outside the ring (named by gossip,
/// never trusted) get a hash of their name with the top bit set, a range no ring index
/// uses; two of them may share an address, which is harmless since they are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberKey {
    cluster: u32,
    replica: u16,
}

impl MemberKey {
    fn new(member: &MemberId, ring: &KeyRing) -> Self {
        let cluster = ring
            .index(&member.cluster)
            .unwrap_or_else(|| untrusted_index(member.cluster.as_str()));
        MemberKey {
            cluster,
            replica: member.replica.0,
        }
    }
}

/// FNV-1a of the name, in the upper half of the index space.
fn untrusted_index(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash | 0x8000_0000
}

/// foca's view of a member: its identity, and the address key derived from it with
/// the trust ring. The address is the member id, so a restarted replica (higher
/// generation) replaces its old self. Only the identity goes on the wire; the codec
/// derives the key again on decode.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SwimId(pub SwimIdentity, MemberKey);

impl SwimId {
    pub fn new(identity: SwimIdentity, ring: &KeyRing) -> Self {
        let key = MemberKey::new(&identity.member, ring);
        SwimId(identity, key)
    }
}

impl Identity for SwimId {
    type Addr = MemberKey;

    fn renew(&self) -> Option<Self> {
        let generation = self.0.generation.checked_add(1)?;
        let identity = SwimIdentity {
            generation,
            ..self.0.clone()
        };
        Some(SwimId(identity, self.1))
    }

    fn addr(&self) -> MemberKey {
        self.1
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.0.generation > adversary.0.generation
    }
}

impl Serialize for SwimId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Decoding without a ring gives untrusted keys; [`SwimCodec`] sets them from its ring.
impl<'de> Deserialize<'de> for SwimId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let identity = SwimIdentity::deserialize(d)?;
        let key = MemberKey {
            cluster: untrusted_index(identity.member.cluster.as_str()),
            replica: identity.member.replica.0,
        };
        Ok(SwimId(identity, key))
    }
}

/// Why a SWIM packet could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SwimCodecError {
    #[error("swim encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("swim decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("swim packet buffer full")]
    BufferFull,
}

type Limited = Configuration<LittleEndian, Varint, config::Limit<DATAGRAM_BYTES_MAX>>;

const fn limited() -> Limited {
    config::standard().with_limit::<DATAGRAM_BYTES_MAX>()
}

/// bincode 2 with a datagram-sized limit on every decode. Holds the trust ring to key
/// decoded identities.
#[derive(Clone, Debug)]
pub struct SwimCodec {
    ring: Arc<KeyRing>,
}

impl SwimCodec {
    pub fn new(ring: Arc<KeyRing>) -> Self {
        SwimCodec { ring }
    }

    fn key(&self, id: SwimId) -> SwimId {
        SwimId::new(id.0, &self.ring)
    }

    fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), SwimCodecError> {
        let bytes = bincode::serde::encode_to_vec(value, limited())?;
        if buf.remaining_mut() < bytes.len() {
            return Err(SwimCodecError::BufferFull);
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn take<T: serde::de::DeserializeOwned>(mut buf: impl Buf) -> Result<T, SwimCodecError> {
        let (value, read) = bincode::serde::decode_from_slice(buf.chunk(), limited())?;
        buf.advance(read);
        Ok(value)
    }

    /// Decodes just the header of a SWIM packet, to check who claims to send it.
    pub fn peek_header(packet: &[u8]) -> Result<Header<SwimId>, SwimCodecError> {
        Self::take(packet)
    }
}

impl Codec<SwimId> for SwimCodec {
    type Error = SwimCodecError;

    fn encode_header(
        &mut self,
        header: &Header<SwimId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        Self::put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<SwimId>, Self::Error> {
        let header: Header<SwimId> = Self::take(buf)?;
        let message = match header.message {
            Message::PingReq {
                target,
                probe_number,
            } => Message::PingReq {
                target: self.key(target),
                probe_number,
            },
            Message::IndirectPing {
                origin,
                probe_number,
            } => Message::IndirectPing {
                origin: self.key(origin),
                probe_number,
            },
            Message::IndirectAck {
                target,
                probe_number,
            } => Message::IndirectAck {
                target: self.key(target),
                probe_number,
            },
            Message::ForwardedAck {
                origin,
                probe_number,
            } => Message::ForwardedAck {
                origin: self.key(origin),
                probe_number,
            },
            other => other,
        };
        Ok(Header {
            src: self.key(header.src),
            src_incarnation: header.src_incarnation,
            dst: self.key(header.dst),
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<SwimId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        Self::put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<SwimId>, Self::Error> {
        let member: Member<SwimId> = Self::take(buf)?;
        let (incarnation, state) = (member.incarnation(), member.state());
        Ok(Member::new(
            self.key(member.id().clone()),
            incarnation,
            state,
        ))
    }
}
