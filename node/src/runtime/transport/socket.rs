//! The endpoint's UDP socket, shared by QUIC and sealed datagrams (see `sealed`).
//!
//! Every short-header datagram (0x80 clear) with QUIC's fixed bit (0x40) clear is taken
//! out before quinn sees it and queued, bounded, for the sealed-datagram reader; the
//! rest go to quinn unchanged. The endpoint never greases the fixed bit, so a QUIC
//! short-header packet always has it set; long-header packets (0x80 set) always go to
//! quinn, since a version negotiation packet may have the fixed bit clear.

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

/// A datagram that is not QUIC, and where it came from.
pub(crate) type Taken = (SocketAddr, Vec<u8>);

#[derive(Debug)]
pub(crate) struct DemuxSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    taken: mpsc::Sender<Taken>,
    /// Non-QUIC datagrams dropped because the reader's queue was full.
    dropped: AtomicU64,
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

    /// Takes the non-QUIC datagrams out of one received buffer (which holds several
    /// of `stride` bytes when the kernel coalesced them) and packs the QUIC ones to its
    /// front. Returns the bytes left for quinn.
    fn take_non_quic(&self, meta: &RecvMeta, buf: &mut [u8]) -> usize {
        let stride = meta.stride.max(1);
        let (mut read, mut kept) = (0, 0);
        while read < meta.len {
            let end = (read + stride).min(meta.len);
            let is_quic = buf[read] & (QUIC_LONG_HEADER_BIT | QUIC_FIXED_BIT) != 0;
            if is_quic {
                buf.copy_within(read..end, kept);
                kept += end - read;
            } else if self
                .taken
                .try_send((meta.addr, buf[read..end].to_vec()))
                .is_err()
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            read = end;
        }
        kept
    }
}

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
        loop {
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
            // Everything was sealed: read again (registers the waker if nothing waits).
        }
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

    #[tokio::test]
    async fn coalesced_datagrams_are_split_and_quic_ones_packed_to_the_front() {
        let (socket, mut taken) = socket();
        // Five 3-byte datagrams and a 2-byte tail: QUIC short, sealed, QUIC long, sealed,
        // version negotiation (long, fixed bit clear), QUIC short.
        let mut buf = vec![
            0x40, 1, 1, 0x01, 2, 2, 0xc0, 3, 3, 0x01, 4, 4, 0x80, 6, 6, 0x41, 5,
        ];
        let len = buf.len();
        let kept = socket.take_non_quic(&meta(len, 3), &mut buf);
        assert_eq!(&buf[..kept], &[0x40, 1, 1, 0xc0, 3, 3, 0x80, 6, 6, 0x41, 5]);
        assert_eq!(taken.try_recv().unwrap().1, vec![0x01, 2, 2]);
        assert_eq!(taken.try_recv().unwrap().1, vec![0x01, 4, 4]);
        assert!(taken.try_recv().is_err());
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
