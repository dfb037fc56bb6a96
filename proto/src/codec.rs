//! Canonical encoding: bincode 2.0.1, standard configuration (little endian, varint
//! integers), with a byte limit on every decode.
//!
//! A plain `bincode::config::standard()` decoder allocates whatever length a peer
//! claims; with `with_limit::<N>()` a claimed length beyond `N` fails before any
//! allocation. Trailing bytes are an error too: one frame is exactly one value.

use bincode::config::{self, Configuration, LittleEndian, Varint};
use bincode::{Decode, Encode};

/// Largest frame carried on a stream (pushes, pulls, digests): 1 MiB.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// Largest datagram (SWIM): fits a 1,500-byte MTU with QUIC and IP headers.
pub const DATAGRAM_BYTES_MAX: usize = 1_200;
/// Largest single encoded record: 1,000 endpoints fit comfortably.
pub const RECORD_BYTES_MAX: usize = 256 * 1024;

/// Why bytes could not be decoded. State unchanged: the input is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the limit for its kind; nothing was parsed.
    #[error("{len} bytes exceed the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    /// The bytes are malformed, truncated, or claim more than the limit allows.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// A whole value was read but bytes were left over.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Why a value could not be encoded. Only a value over its size limit fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("encoded value exceeds the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("encoding failed: {0}")]
    Other(String),
}

type Limited<const N: usize> = Configuration<LittleEndian, Varint, config::Limit<N>>;

const fn limited<const N: usize>() -> Limited<N> {
    config::standard().with_limit::<N>()
}

/// Encodes `value` canonically. Fails if the result would exceed `N` bytes.
pub fn encode_limited<T: Encode, const N: usize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let bytes = bincode::encode_to_vec(value, limited::<N>())
        .map_err(|e| EncodeError::Other(e.to_string()))?;
    if bytes.len() > N {
        return Err(EncodeError::TooLarge { limit: N });
    }
    Ok(bytes)
}

/// Decodes exactly one `T` from `bytes`, allocating at most about `N` bytes.
pub fn decode_limited<T: Decode<()>, const N: usize>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > N {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit: N,
        });
    }
    let (value, read) = bincode::decode_from_slice::<T, _>(bytes, limited::<N>())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - read));
    }
    Ok(value)
}
