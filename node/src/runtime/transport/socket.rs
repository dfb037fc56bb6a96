//! The endpoint's UDP socket, shared by QUIC and sealed datagrams (see `sealed`).
//!
//! Every received datagram is sorted by its first bytes, before quinn sees it:
//! - short header (0x80 clear) with QUIC's fixed bit (0x40) clear: sealed, queued
//!   (bounded) for the sealed-datagram reader. The endpoint never greases the fixed
//!   bit, so a QUIC short-header packet always has it set.
//! - short header with the fixed bit set, of at least [`SHORT_PACKET_BYTES_MIN`]:
//!   QUIC, to quinn unchanged. quinn drops one that no connection owns without
//!   counting it; the socket cannot tell such garbage from a peer's stateless reset,
//!   which quinn must see.
//! - long header (0x80 set) of QUIC version 1 with the fixed bit set, or a version
//!   negotiation packet (version 0, whose fixed bit is unused), with both connection
//!   ids whole and at most [`CONNECTION_ID_BYTES_MAX`]: QUIC, to quinn.
//! - anything else cannot be QUIC (RFC 9000 §17, RFC 8999 §5): empty, a short header
//!   too short to be valid, another version, a truncated or oversized header. It is
//!   dropped and counted (`not_quic`).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

/// QUIC's header form bit (set: long header) and fixed bit (RFC 9000 §17).
const QUIC_LONG_HEADER_BIT: u8 = 0x80;
const QUIC_FIXED_BIT: u8 = 0x40;
/// The QUIC versions this endpoint speaks: version negotiation, and QUIC v1 (the only
/// one the endpoint is configured for).
const QUIC_VERSION_NEGOTIATION: u32 = 0;
pub(crate) const QUIC_VERSION_1: u32 = 1;
/// Short-header packets below this size are never valid (RFC 9000 §10.3): a header,
/// a packet number and the header-protection sample. Stateless resets are longer too.
pub(crate) const SHORT_PACKET_BYTES_MIN: usize = 21;
/// The longest connection id QUIC v1 allows (RFC 9000 §17.2).
pub(crate) const CONNECTION_ID_BYTES_MAX: usize = 20;
/// Where a long header's destination connection id length is: after the first byte
/// and the 4-byte version.
const LONG_HEADER_DCID_LEN_AT: usize = 5;

/// What one received datagram is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Quic,
    Sealed,
    NotQuic,
}

fn classify(datagram: &[u8]) -> Kind {
    let Some(&first) = datagram.first() else {
        return Kind::NotQuic;
    };
    if first & QUIC_LONG_HEADER_BIT != 0 {
        return classify_long(first, datagram);
    }
    if first & QUIC_FIXED_BIT == 0 {
        Kind::Sealed
    } else if datagram.len() >= SHORT_PACKET_BYTES_MIN {
        Kind::Quic
    } else {
        Kind::NotQuic
    }
}

/// A long header: a version this endpoint speaks, the fixed bit where that version
/// requires it, and whole connection ids of a valid length.
fn classify_long(first: u8, datagram: &[u8]) -> Kind {
    let Some(version) = datagram.get(1..LONG_HEADER_DCID_LEN_AT) else {
        return Kind::NotQuic;
    };
    let version = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    let fixed = first & QUIC_FIXED_BIT != 0;
    match version {
        QUIC_VERSION_NEGOTIATION => {}
        QUIC_VERSION_1 if fixed => {}
        _ => return Kind::NotQuic,
    }
    let cid_len_at = |at: usize| {
        datagram
            .get(at)
            .map(|n| usize::from(*n))
            .filter(|n| *n <= CONNECTION_ID_BYTES_MAX)
    };
    let Some(dcid_len) = cid_len_at(LONG_HEADER_DCID_LEN_AT) else {
        return Kind::NotQuic;
    };
    let scid_len_at = LONG_HEADER_DCID_LEN_AT + 1 + dcid_len;
    match cid_len_at(scid_len_at) {
        Some(scid_len) if datagram.len() >= scid_len_at + 1 + scid_len => Kind::Quic,
        _ => Kind::NotQuic,
    }
}

/// A datagram that is not QUIC, and where it came from.
pub(crate) type Taken = (SocketAddr, Vec<u8>);

#[derive(Debug)]
pub(crate) struct DemuxSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    taken: mpsc::Sender<Taken>,
    /// Sealed datagrams dropped because the reader's queue was full.
    dropped: AtomicU64,
    /// Datagrams dropped because they cannot be QUIC and are not sealed.
    not_quic: AtomicU64,
}

impl DemuxSocket {
    pub(crate) fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        queue_max: usize,
    ) -> (Self, mpsc::Receiver<Taken>) {
        let (taken, receiver) = mpsc::channel(queue_max);
        let socket = DemuxSocket {
            inner,
            taken,
            dropped: AtomicU64::new(0),
            not_quic: AtomicU64::new(0),
        };
        (socket, receiver)
    }

    /// Sends one datagram outside QUIC. Never waits: a full socket buffer is an error.
    pub(crate) fn send_raw(&self, to: SocketAddr, contents: &[u8]) -> io::Result<()> {
        self.inner.try_send(&Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        })
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn not_quic(&self) -> u64 {
        self.not_quic.load(Ordering::Relaxed)
    }

    /// Takes the non-QUIC datagrams out of one received buffer (which holds several
    /// of `stride` bytes when the kernel coalesced them): sealed ones are queued, the
    /// rest dropped and counted. Packs the QUIC ones to its front and returns the bytes
    /// left for quinn.
    fn take_non_quic(&self, meta: &RecvMeta, buf: &mut [u8]) -> usize {
        let stride = meta.stride.max(1);
        let len = meta.len.min(buf.len());
        if len == 0 {
            self.drop_not_quic(meta.addr, 0);
            return 0;
        }
        let (mut read, mut kept) = (0, 0);
        while read < len {
            let end = (read + stride).min(len);
            match classify(&buf[read..end]) {
                Kind::Quic => {
                    buf.copy_within(read..end, kept);
                    kept += end - read;
                }
                Kind::Sealed => self.take_sealed(meta.addr, &buf[read..end]),
                Kind::NotQuic => self.drop_not_quic(meta.addr, end - read),
            }
            read = end;
        }
        kept
    }

    fn take_sealed(&self, from: SocketAddr, datagram: &[u8]) {
        if self.taken.try_send((from, datagram.to_vec())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drop_not_quic(&self, from: SocketAddr, bytes: usize) {
        self.not_quic.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(peer = %from, bytes, "datagram is neither QUIC nor sealed; dropped");
    }
}

/// Most reads one `poll_recv` makes in a row when nothing read is for QUIC, before it
/// yields to the other tasks.
const RECV_ROUNDS_MAX: usize = 16;

impl AsyncUdpSocket for DemuxSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        for _ in 0..RECV_ROUNDS_MAX {
            let received = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let mut kept = 0;
            for i in 0..received {
                let len = self.take_non_quic(&meta[i], &mut bufs[i]);
                if len == 0 {
                    continue;
                }
                if kept != i {
                    let (front, back) = bufs.split_at_mut(i);
                    front[kept][..len].copy_from_slice(&back[0][..len]);
                    meta[kept] = meta[i];
                }
                meta[kept].len = len;
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was sealed or dropped: read again (registers the waker if
            // nothing waits).
        }
        // A flood of datagrams that are not QUIC must not hold the endpoint's task:
        // yield, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> (DemuxSocket, mpsc::Receiver<Taken>) {
        let runtime = quinn::TokioRuntime;
        let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inner = quinn::Runtime::wrap_udp_socket(&runtime, std).unwrap();
        DemuxSocket::new(inner, 2)
    }

    fn meta(len: usize, stride: usize) -> RecvMeta {
        RecvMeta {
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            len,
            stride,
            ..RecvMeta::default()
        }
    }

    /// A short-header packet of `len` bytes, `tag` after the first byte.
    fn short(tag: u8, len: usize) -> Vec<u8> {
        let mut packet = vec![tag; len];
        packet[0] = 0x40 | (tag & 0x3f);
        packet
    }

    /// A long-header packet: first byte, version, connection ids, then `tag` bytes up
    /// to `len`.
    fn long(first: u8, version: u32, dcid: usize, scid: usize, len: usize, tag: u8) -> Vec<u8> {
        let mut packet = vec![first];
        packet.extend_from_slice(&version.to_be_bytes());
        packet.push(dcid as u8);
        packet.extend(std::iter::repeat_n(0xd0, dcid));
        packet.push(scid as u8);
        packet.extend(std::iter::repeat_n(0x5c, scid));
        packet.resize(len.max(packet.len()), tag);
        packet
    }

    #[tokio::test]
    async fn coalesced_datagrams_are_split_and_quic_ones_packed_to_the_front() {
        let (socket, mut taken) = socket();
        // Seven 24-byte datagrams and a 21-byte tail: QUIC short, sealed, QUIC Initial,
        // sealed, version negotiation (fixed bit clear), another version, QUIC short.
        let stride = 24;
        let datagrams = [
            short(1, stride),
            vec![0x01; stride],
            long(0xc0, QUIC_VERSION_1, 8, 8, stride, 3),
            vec![0x02; stride],
            long(0x80, QUIC_VERSION_NEGOTIATION, 8, 8, stride, 6),
            long(0xc0, 0x1a2a_3a4a, 8, 8, stride, 7),
            short(5, SHORT_PACKET_BYTES_MIN),
        ];
        let mut buf = datagrams.concat();
        let len = buf.len();
        let kept = socket.take_non_quic(&meta(len, stride), &mut buf);
        let quic = [0, 2, 4, 6].map(|i| datagrams[i].clone()).concat();
        assert_eq!(&buf[..kept], &quic[..]);
        assert_eq!(taken.try_recv().unwrap().1, datagrams[1]);
        assert_eq!(taken.try_recv().unwrap().1, datagrams[3]);
        assert!(taken.try_recv().is_err());
        assert_eq!(socket.not_quic(), 1);
    }

    #[tokio::test]
    async fn datagrams_that_cannot_be_quic_are_dropped_and_counted() {
        let (socket, mut taken) = socket();
        let v1 = QUIC_VERSION_1;
        let cid_max = CONNECTION_ID_BYTES_MAX;
        let not_quic = [
            short(1, SHORT_PACKET_BYTES_MIN - 1),
            long(0xc0, 0xff00_001d, 8, 8, 1_200, 0),
            long(0xc0, 0x1a2a_3a4a, 8, 8, 1_200, 0),
            long(0x80, v1, 8, 8, 1_200, 0),
            long(0xc0, v1, cid_max + 1, 8, 1_200, 0),
            long(0xc0, v1, 8, cid_max + 1, 1_200, 0),
            long(0xc0, v1, 8, 8, 0, 0)[..6 + 8 + 1 + 7].to_vec(),
            vec![0xc0, 0, 0, 0, 1],
            vec![0xc0, 0, 0],
            vec![0x80],
        ];
        for (i, datagram) in not_quic.iter().enumerate() {
            let mut buf = datagram.clone();
            let kept = socket.take_non_quic(&meta(buf.len(), buf.len()), &mut buf);
            assert_eq!(kept, 0, "datagram {i} went to quinn");
            assert_eq!(socket.not_quic(), i as u64 + 1, "datagram {i}");
        }
        // An empty datagram.
        let mut empty = vec![0; 4];
        assert_eq!(socket.take_non_quic(&meta(0, 0), &mut empty), 0);
        assert_eq!(socket.not_quic(), not_quic.len() as u64 + 1);
        assert!(taken.try_recv().is_err(), "nothing was taken as sealed");

        let quic = [
            short(1, SHORT_PACKET_BYTES_MIN),
            long(0xc0, v1, cid_max, cid_max, 0, 0),
            long(0x80, QUIC_VERSION_NEGOTIATION, 0, 0, 0, 0),
        ];
        for datagram in quic {
            let mut buf = datagram.clone();
            let kept = socket.take_non_quic(&meta(buf.len(), buf.len()), &mut buf);
            assert_eq!(&buf[..kept], &datagram[..]);
        }
        assert_eq!(socket.not_quic(), not_quic.len() as u64 + 1);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (socket, _taken) = socket();
        for _ in 0..3 {
            let mut buf = vec![0x01, 0, 0];
            assert_eq!(socket.take_non_quic(&meta(3, 3), &mut buf), 0);
        }
        assert_eq!(socket.dropped(), 1);
    }
}
