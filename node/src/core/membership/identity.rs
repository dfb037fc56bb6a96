//! The SWIM identity (a replica, its address and generation, and the generation its
//! process started with) and the bincode codec foca uses for it. Every decode is
//! size-limited.

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

/// foca's view of a member: its identity, the address key derived from it with the
/// trust ring, and the generation its process started with. The address is the member
/// id, so a restarted replica (higher generation) replaces its old self.
///
/// The generation grows both when foca renews the identity (a member declared down
/// that is in fact alive rejoins as generation + 1) and when the replica restarts (a
/// start takes a generation above every one its store saw, see `Node::new`). The start
/// generation tells the two apart: a renewal keeps it, a restart raises it. On the wire
/// go the identity and the renewals since the start (usually 0, one byte); the codec
/// derives the key again on decode.
#[derive(Clone, Debug)]
pub struct SwimId(
    pub SwimIdentity,
    MemberKey,
    /// The generation this member's process started with; at most `generation`.
    u32,
);

impl SwimId {
    /// A process that started with `identity`'s generation: this node at start, or a
    /// peer whose renewals are not known (only ever a destination, never a member).
    pub fn new(identity: SwimIdentity, ring: &KeyRing) -> Self {
        let key = MemberKey::new(&identity.member, ring);
        let started = identity.generation;
        SwimId(identity, key, started)
    }

    /// The generation this member's process started with: equal for two identities of
    /// one process, higher after a restart.
    pub fn started(&self) -> u32 {
        self.2
    }

    /// How many times foca renewed this identity since its process started.
    fn renewals(&self) -> u32 {
        self.0.generation.saturating_sub(self.2)
    }
}

/// The same relation as comparing every field, with the integers first: foca compares
/// identities across its whole member list on every message it sends, and two
/// members' keys differ where their names would have needed a string compare.
impl PartialEq for SwimId {
    fn eq(&self, other: &Self) -> bool {
        (self.1, self.2, self.0.generation) == (other.1, other.2, other.0.generation)
            && self.0 == other.0
    }
}

impl Eq for SwimId {}

/// Field order, as a derive would: identity, key, start generation.
impl Ord for SwimId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.0, self.1, self.2).cmp(&(&other.0, other.1, other.2))
    }
}

impl PartialOrd for SwimId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for SwimId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.0, self.1, self.2).hash(state);
    }
}

impl Identity for SwimId {
    type Addr = MemberKey;

    /// The next generation of the same process: the start generation is kept.
    fn renew(&self) -> Option<Self> {
        let generation = self.0.generation.checked_add(1)?;
        let identity = SwimIdentity {
            generation,
            ..self.0.clone()
        };
        Some(SwimId(identity, self.1, self.2))
    }

    fn addr(&self) -> MemberKey {
        self.1
    }

    /// The higher generation wins: a renewal and a restart both raise it.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.0.generation > adversary.0.generation
    }
}

impl Serialize for SwimId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (&self.0, self.renewals()).serialize(s)
    }
}

/// Decoding without a ring gives untrusted keys; [`SwimCodec`] sets them from its ring.
/// More renewals than generations is malformed.
impl<'de> Deserialize<'de> for SwimId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (identity, renewals) = <(SwimIdentity, u32)>::deserialize(d)?;
        let started = identity
            .generation
            .checked_sub(renewals)
            .ok_or_else(|| serde::de::Error::custom("more renewals than generations"))?;
        let key = MemberKey {
            cluster: untrusted_index(identity.member.cluster.as_str()),
            replica: identity.member.replica.0,
        };
        Ok(SwimId(identity, key, started))
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
        let key = MemberKey::new(&id.0.member, &self.ring);
        SwimId(id.0, key, id.2)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use shoal_proto::{ClusterId, ClusterKey, NetAddr, ReplicaId};

    use super::*;

    fn ring() -> Arc<KeyRing> {
        let mut ring = KeyRing::new();
        let south = ClusterId::new("south").unwrap();
        let key = ClusterKey::from_seed(south.clone(), [5; 32]);
        ring.insert(south, key.public()).unwrap();
        Arc::new(ring)
    }

    fn identity(generation: u32) -> SwimIdentity {
        SwimIdentity {
            member: MemberId {
                cluster: ClusterId::new("south").unwrap(),
                replica: ReplicaId(1),
            },
            addr: NetAddr::from(std::net::SocketAddr::from(([127, 0, 0, 3], 7946))),
            generation,
        }
    }

    fn encode(id: &SwimId) -> Vec<u8> {
        bincode::serde::encode_to_vec(id, limited()).unwrap()
    }

    #[test]
    fn a_renewal_keeps_the_start_generation_and_a_restart_raises_it() {
        let ring = ring();
        let started = SwimId::new(identity(7), &ring);
        let renewed = started.renew().unwrap().renew().unwrap();
        assert_eq!((renewed.0.generation, renewed.started()), (9, 7));
        assert_eq!(renewed.addr(), started.addr());
        assert!(renewed.win_addr_conflict(&started));
        assert!(!started.win_addr_conflict(&renewed));

        // A restart takes a generation above every one the store saw.
        let restarted = SwimId::new(identity(10), &ring);
        assert_eq!(restarted.started(), 10);
        assert!(restarted.win_addr_conflict(&renewed));
        assert!(!renewed.win_addr_conflict(&restarted));
    }

    #[test]
    fn the_codec_carries_the_renewals_since_the_start() {
        let ring = ring();
        let mut codec = SwimCodec::new(Arc::clone(&ring));
        let started = SwimId::new(identity(7), &ring);
        // The identity, then the renewals since the start: 0, one byte.
        let mut expected = bincode::serde::encode_to_vec(identity(7), limited()).unwrap();
        expected.push(0);
        assert_eq!(encode(&started), expected);

        let renewed = started.renew().unwrap().renew().unwrap();
        let mut buf = Vec::new();
        let member = Member::alive(renewed.clone());
        codec.encode_member(&member, &mut buf).unwrap();
        let decoded = codec.decode_member(&buf[..]).unwrap();
        assert_eq!(decoded.id(), &renewed);
        assert_eq!(decoded.id().started(), 7);
    }

    #[test]
    fn more_renewals_than_generations_do_not_decode() {
        let bytes = bincode::serde::encode_to_vec((identity(2), 3u32), limited()).unwrap();
        let decoded = bincode::serde::decode_from_slice::<SwimId, _>(&bytes, limited());
        assert!(decoded.is_err());
        let bytes = bincode::serde::encode_to_vec((identity(2), 2u32), limited()).unwrap();
        let (decoded, _) =
            bincode::serde::decode_from_slice::<SwimId, _>(&bytes, limited()).unwrap();
        assert_eq!(decoded.started(), 0);
    }
}
