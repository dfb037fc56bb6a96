//! The SWIM identity (a replica, its address and generation) and the bincode codec
//! foca uses for it. Every decode is size-limited.

use bincode::config::{self, Configuration, LittleEndian, Varint};
use bytes::{Buf, BufMut};
use foca::{Codec, Header, Identity, Member};
use serde::{Deserialize, Serialize};
use shoal_proto::codec::DATAGRAM_BYTES_MAX;
use shoal_proto::{MemberId, SwimIdentity};

/// foca's view of a member. The address (`Identity::Addr`) is the member id, so a
/// restarted replica (higher generation) replaces its old self.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SwimId(pub SwimIdentity);

impl Identity for SwimId {
    type Addr = MemberId;

    fn renew(&self) -> Option<Self> {
        let generation = self.0.generation.checked_add(1)?;
        Some(SwimId(SwimIdentity {
            generation,
            ..self.0.clone()
        }))
    }

    fn addr(&self) -> MemberId {
        self.0.member.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.0.generation > adversary.0.generation
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

/// bincode 2 with a datagram-sized limit on every decode.
#[derive(Clone, Copy, Debug, Default)]
pub struct SwimCodec;

impl SwimCodec {
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
        Self::take(buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<SwimId>,
        buf: impl BufMut,
    ) -> Result<(), Self::Error> {
        Self::put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<SwimId>, Self::Error> {
        Self::take(buf)
    }
}
