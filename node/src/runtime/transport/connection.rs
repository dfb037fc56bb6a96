//! Accepting connections and reading what peers send: datagrams, and one frame per uni
//! stream. Every frame's claimed sender is checked against the certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quinn::{ReadToEndError, VarInt};
use shoal_proto::MemberId;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::header::{self, FrameKind, HEADER_BYTES_MAX};
use super::{
    CLOSE_IDENTITY_MISMATCH, ConnectionSlot, Inbound, PeerConn, Shared, TransportError, lock, tls,
};

/// Accepts connections until the endpoint closes; each gets a slot or is refused.
pub(super) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let Some(slot) = shared.try_slot() else {
            shared.counters.reject("connections_full");
            debug!(peer = %incoming.remote_address(), "connection refused: limit reached");
            incoming.refuse();
            continue;
        };
        let task = accept_one(shared.clone(), incoming, slot);
        shared.spawn(task);
    }
}

async fn accept_one(shared: Arc<Shared>, incoming: quinn::Incoming, slot: ConnectionSlot) {
    let addr = incoming.remote_address();
    let conn = match handshake(&shared, incoming).await {
        Ok(conn) => conn,
        Err(e) => {
            shared.counters.reject(e.metric_label());
            debug!(peer = %addr, reason = e.metric_label(), error = %e, "handshake refused");
            return;
        }
    };
    let Some(cluster) = tls::peer_cluster(&conn) else {
        shared.counters.reject("bad_certificate");
        debug!(peer = %addr, "peer certificate names no cluster");
        conn.close(VarInt::from_u32(CLOSE_IDENTITY_MISMATCH), b"no cluster");
        return;
    };
    shared.counters.connected(false);
    let peer = PeerConn::new(conn, cluster, false);
    shared.note_accepted(addr, &peer);
    debug!(peer = %addr, cluster = %peer.cluster, "connection accepted");
    serve(shared, peer, addr, slot).await;
}

/// Says hello on `conn`: this process's instance, so that the peer can tell a restart.
/// A hello that cannot be sent is counted; the connection still serves.
pub(super) async fn send_hello(shared: &Shared, conn: &quinn::Connection) {
    let frame = header::encode(
        FrameKind::Hello,
        &shared.local,
        &shared.instance.to_le_bytes(),
    );
    let send = async {
        let mut stream = conn.open_uni().await.ok()?;
        stream.write_all(&frame).await.ok()?;
        stream.finish().ok()
    };
    if tokio::time::timeout(shared.idle_timeout(), send)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        shared.counters.reject("hello_failed");
    }
}

async fn handshake(
    shared: &Shared,
    incoming: quinn::Incoming,
) -> Result<quinn::Connection, TransportError> {
    let addr = incoming.remote_address();
    let refused = |e: quinn::ConnectionError| TransportError::Handshake {
        addr,
        reason: tls::handshake_reason(&e, false),
        detail: e.to_string(),
    };
    let connecting = incoming.accept().map_err(refused)?;
    match tokio::time::timeout(shared.handshake_timeout(), connecting).await {
        Ok(result) => result.map_err(refused),
        Err(_) => Err(TransportError::Handshake {
            addr,
            reason: "handshake_timeout",
            detail: "no handshake within the limit".into(),
        }),
    }
}

/// Says hello, then reads datagrams and uni streams until the connection ends, holding
/// its slot. Streams are read concurrently; QUIC's stream limit bounds how many.
pub(super) async fn serve(
    shared: Arc<Shared>,
    peer: PeerConn,
    addr: SocketAddr,
    _slot: ConnectionSlot,
) {
    send_hello(&shared, &peer.conn).await;
    let shared = &shared;
    let (conn, cluster) = (&peer.conn, &peer.cluster);
    let open = Arc::new(AtomicU64::new(0));
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            datagram = conn.read_datagram() => match datagram {
                Ok(bytes) => {
                    if !receive(shared, &peer, addr, &bytes, false) {
                        break;
                    }
                }
                Err(e) => {
                    debug!(cluster = %cluster, error = %e, "connection ended");
                    break;
                }
            },
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    let on_connection = open.fetch_add(1, Ordering::AcqRel) + 1;
                    shared.counters.stream_opened(on_connection);
                    let reader = StreamReader {
                        shared: shared.clone(),
                        peer: peer.clone(),
                        addr,
                        open: open.clone(),
                    };
                    streams.spawn(reader.read(recv));
                }
                Err(e) => {
                    debug!(cluster = %cluster, error = %e, "connection ended");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// Reads one frame from one uni stream.
struct StreamReader {
    shared: Arc<Shared>,
    peer: PeerConn,
    addr: SocketAddr,
    open: Arc<AtomicU64>,
}

impl StreamReader {
    async fn read(self, mut recv: quinn::RecvStream) {
        let limit = HEADER_BYTES_MAX + self.shared.limits.frame_bytes_max;
        let read = tokio::time::timeout(self.shared.idle_timeout(), recv.read_to_end(limit)).await;
        // Free the stream (and its credit) before the frame is handled.
        drop(recv);
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.counters.stream_closed();
        let reason = match read {
            Ok(Ok(frame)) => {
                receive(&self.shared, &self.peer, self.addr, &frame, true);
                return;
            }
            Ok(Err(ReadToEndError::TooLong)) => "frame_too_large",
            Ok(Err(ReadToEndError::Read(_))) => "stream_reset",
            Err(_) => "frame_timeout",
        };
        self.shared.counters.reject(reason);
        debug!(cluster = %self.peer.cluster, reason, "frame dropped");
    }
}

/// Checks one frame and queues its payload for the driver. Returns false when the peer
/// lied about its identity: the connection is then closed.
fn receive(
    shared: &Shared,
    peer: &PeerConn,
    addr: SocketAddr,
    frame: &[u8],
    on_stream: bool,
) -> bool {
    let (conn, cluster) = (&peer.conn, &peer.cluster);
    let (kind, claimed, payload) = match header::decode(frame) {
        Ok(decoded) => decoded,
        Err(e) => {
            shared.counters.reject("bad_header");
            debug!(cluster = %cluster, error = %e, "frame dropped");
            return true;
        }
    };
    let kind_fits = match kind {
        FrameKind::Datagram => !on_stream,
        FrameKind::Stream | FrameKind::DatagramOnStream | FrameKind::Hello => on_stream,
    };
    if !kind_fits {
        shared.counters.reject("bad_header");
        return true;
    }
    if claimed.cluster != *cluster {
        shared.counters.reject("identity_mismatch");
        warn!(cluster = %cluster, claimed = %claimed, "peer claims another cluster; closing");
        conn.close(
            VarInt::from_u32(CLOSE_IDENTITY_MISMATCH),
            b"identity mismatch",
        );
        return false;
    }
    if payload.len() > shared.limits.frame_bytes_max {
        shared.counters.reject("frame_too_large");
        return true;
    }
    if let Some(chaos) = &shared.chaos
        && lock(chaos).drops_inbound(cluster)
    {
        shared.counters.reject("chaos");
        return true;
    }
    if kind == FrameKind::Hello {
        match <[u8; 8]>::try_from(payload) {
            Ok(bytes) if u64::from_le_bytes(bytes) != 0 => {
                shared.note_instance(addr, peer, u64::from_le_bytes(bytes));
            }
            _ => shared.counters.reject("bad_hello"),
        }
        return true;
    }
    let from = MemberId {
        cluster: cluster.clone(),
        replica: claimed.replica,
    };
    deliver(shared, conn, from, kind, payload);
    true
}

fn deliver(
    shared: &Shared,
    conn: &quinn::Connection,
    from: MemberId,
    kind: FrameKind,
    payload: &[u8],
) {
    let datagram = kind == FrameKind::Datagram;
    let message = Inbound {
        from: from.clone(),
        channel: kind.channel(),
        bytes: payload.to_vec(),
        received: tokio::time::Instant::now().into_std(),
    };
    match shared.inbound.try_send(message) {
        Ok(()) => shared
            .counters
            .received(&from, datagram, payload.len(), conn.rtt()),
        Err(TrySendError::Full(_)) => shared.counters.reject("inbound_queue_full"),
        Err(TrySendError::Closed(_)) => shared.counters.reject("inbound_closed"),
    }
}
