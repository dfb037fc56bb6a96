//! The small header in front of every datagram and stream frame: who the sender claims
//! to be, and which channel the payload belongs to.
//!
//! Layout: `version (1) | kind (1) | cluster length L (1) | cluster id (L) | replica (2, LE)`
//! then the payload. The decoder reads at most [`HEADER_BYTES_MAX`] bytes and checks the
//! cluster id is a DNS label; the receiver then compares it with the certificate's.

use shoal_proto::ids::DNS_LABEL_BYTES_MAX;
use shoal_proto::{Channel, ClusterId, MemberId, ReplicaId};

/// The only header version spoken.
pub(crate) const HEADER_VERSION: u8 = 1;
/// Largest header: version, kind, length, the longest cluster id, replica.
pub(crate) const HEADER_BYTES_MAX: usize = 3 + DNS_LABEL_BYTES_MAX + 2;

/// What a frame carries and how it travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A datagram sent as a QUIC datagram.
    Datagram = 0,
    /// A stream frame, alone on its uni stream.
    Stream = 1,
    /// A datagram larger than the path allowed, carried on a uni stream.
    DatagramOnStream = 2,
    /// The first frame each side sends on a connection: its process instance, a
    /// little-endian u64 (see the module docs of `transport`). Never delivered.
    Hello = 3,
}

impl FrameKind {
    /// The channel the payload is delivered as.
    pub(crate) fn channel(self) -> Channel {
        match self {
            FrameKind::Datagram | FrameKind::DatagramOnStream => Channel::Datagram,
            FrameKind::Stream | FrameKind::Hello => Channel::Stream,
        }
    }
}

/// Why a header was refused. The frame is dropped and counted; nothing else changes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("frame shorter than its header")]
    Truncated,
    #[error("unknown header version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("claimed cluster id is not a DNS label")]
    Cluster,
}

/// Prefixes `payload` with the header naming `from`.
pub(crate) fn encode(kind: FrameKind, from: &MemberId, payload: &[u8]) -> Vec<u8> {
    let cluster = from.cluster.as_str().as_bytes();
    let cluster_len =
        u8::try_from(cluster.len()).expect("a ClusterId is at most a 63-byte DNS label");
    let mut frame = Vec::with_capacity(3 + cluster.len() + 2 + payload.len());
    frame.extend_from_slice(&[HEADER_VERSION, kind as u8, cluster_len]);
    frame.extend_from_slice(cluster);
    frame.extend_from_slice(&from.replica.0.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Splits a frame into its kind, the claimed sender and the payload.
pub(crate) fn decode(frame: &[u8]) -> Result<(FrameKind, MemberId, &[u8]), HeaderError> {
    let [version, kind, cluster_len, rest @ ..] = frame else {
        return Err(HeaderError::Truncated);
    };
    if *version != HEADER_VERSION {
        return Err(HeaderError::Version(*version));
    }
    let kind = match kind {
        0 => FrameKind::Datagram,
        1 => FrameKind::Stream,
        2 => FrameKind::DatagramOnStream,
        3 => FrameKind::Hello,
        other => return Err(HeaderError::Kind(*other)),
    };
    let cluster_len = usize::from(*cluster_len);
    if cluster_len > DNS_LABEL_BYTES_MAX {
        return Err(HeaderError::Cluster);
    }
    let Some((cluster, rest)) = rest.split_at_checked(cluster_len) else {
        return Err(HeaderError::Truncated);
    };
    let Some(([lo, hi], payload)) = rest.split_first_chunk::<2>() else {
        return Err(HeaderError::Truncated);
    };
    let cluster = std::str::from_utf8(cluster).map_err(|_| HeaderError::Cluster)?;
    let cluster = ClusterId::new(cluster).map_err(|_| HeaderError::Cluster)?;
    let from = MemberId {
        cluster,
        replica: ReplicaId(u16::from_le_bytes([*lo, *hi])),
    };
    Ok((kind, from, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_member as member;

    #[test]
    fn round_trips() {
        let from = member(&"a".repeat(DNS_LABEL_BYTES_MAX), 513);
        let frame = encode(FrameKind::DatagramOnStream, &from, b"payload");
        assert_eq!(frame.len(), HEADER_BYTES_MAX + 7);
        let (kind, decoded, payload) = decode(&frame).unwrap();
        assert_eq!(kind, FrameKind::DatagramOnStream);
        assert_eq!(decoded, from);
        assert_eq!(payload, b"payload");
        let empty = encode(FrameKind::Stream, &from, b"");
        let (_, _, payload) = decode(&empty).unwrap();
        assert!(payload.is_empty());
    }

    #[test]
    fn refuses_malformed_headers() {
        let frame = encode(FrameKind::Datagram, &member("east", 1), b"x");
        assert_eq!(decode(&frame[..2]), Err(HeaderError::Truncated));
        assert_eq!(decode(&frame[..8]), Err(HeaderError::Truncated));
        let mut bad = frame.clone();
        bad[0] = 9;
        assert_eq!(decode(&bad), Err(HeaderError::Version(9)));
        let mut bad = frame.clone();
        bad[1] = 7;
        assert_eq!(decode(&bad), Err(HeaderError::Kind(7)));
        let mut bad = frame.clone();
        bad[2] = 200;
        assert_eq!(decode(&bad), Err(HeaderError::Cluster));
        let mut bad = frame;
        bad[3] = b'E';
        assert_eq!(decode(&bad), Err(HeaderError::Cluster));
    }
}
