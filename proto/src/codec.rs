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

/// bincode's limit counts memory it reserves, not bytes read: a 1-byte varint counts 8,
/// and a vector reserves `len × size_of::<T>()` before reading its elements. A value
/// that encodes in `N` bytes therefore needs a larger decode budget. 16× covers the
/// worst ratio among the wire types (a `RecordRef` is 48 bytes in memory and 3 on the
/// wire), and is also the most a forged input can make a decode allocate.
pub const DECODE_BUDGET_FACTOR: usize = 16;
pub const DATAGRAM_DECODE_BUDGET: usize = DECODE_BUDGET_FACTOR * DATAGRAM_BYTES_MAX;
pub const FRAME_DECODE_BUDGET: usize = DECODE_BUDGET_FACTOR * FRAME_BYTES_MAX;
pub const RECORD_DECODE_BUDGET: usize = DECODE_BUDGET_FACTOR * RECORD_BYTES_MAX;

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

/// Why a value could not be encoded; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("encoded value exceeds the {limit}-byte limit")]
    TooLarge { limit: usize },
    /// The value breaks a bound its decoder enforces (see `Message::check_bounds`).
    #[error("over a decoding bound: {0}")]
    OverBound(String),
    #[error("encoding failed: {0}")]
    Other(String),
}

type Limited<const N: usize> = Configuration<LittleEndian, Varint, config::Limit<N>>;
type Standard = Configuration<LittleEndian, Varint, config::NoLimit>;

const fn limited<const N: usize>() -> Limited<N> {
    config::standard().with_limit::<N>()
}

/// Encodes `value` canonically. Fails if the result would exceed `N` bytes.
pub fn encode_limited<T: Encode, const N: usize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let standard: Standard = config::standard();
    let bytes =
        bincode::encode_to_vec(value, standard).map_err(|e| EncodeError::Other(e.to_string()))?;
    if bytes.len() > N {
        return Err(EncodeError::TooLarge { limit: N });
    }
    Ok(bytes)
}

/// Decodes exactly one `T` from at most `N` bytes, reserving at most `BUDGET` bytes of
/// memory however large the lengths the input claims (see [`DECODE_BUDGET_FACTOR`]).
pub fn decode_limited<T: Decode<()>, const N: usize, const BUDGET: usize>(
    bytes: &[u8],
) -> Result<T, DecodeError> {
    if bytes.len() > N {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit: N,
        });
    }
    let (value, read) = bincode::decode_from_slice::<T, _>(bytes, limited::<BUDGET>())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - read));
    }
    Ok(value)
}
