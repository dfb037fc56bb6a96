//! Accepting connections and reading what peers send: the hello, then datagrams and
//! one frame per uni stream; and sealed datagrams from the socket. Every frame's claimed
//! sender is checked against the certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quinn::{ReadToEndError, VarInt};
use shoal_proto::{Channel, ClusterId, MemberId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::header::{self, FrameKind, HEADER_BYTES_MAX};
use super::queue::Refused;
use super::sealed::{self, NOTICE_INTERVAL, OpenError, SealedKey, SealedKeys};
use super::socket::Taken;
use super::{
    CLOSE_IDENTITY_MISMATCH, CLOSE_SHUTDOWN, ConnectionSlot, Inbound, PeerConn, Shared,
    TransportError, lock, tls,
};

/// Bytes of a hello frame's payload: the process instance.
const HELLO_PAYLOAD_BYTES: usize = 8;

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
    let peer = establish(&shared, conn, cluster, addr, false).await;
    shared.note_accepted(addr, &peer);
    debug!(peer = %addr, cluster = %peer.cluster, "connection accepted");
    serve(shared, peer, addr, slot).await;
}

/// A connection with a peer whose certificate names `cluster` is up: stores the
/// sealed-datagram key exported from it, then says hello. Both happen before anything
/// else is sent on it, so that the hello is the first stream the peer reads, and the
/// peer may seal with the key as soon as it has read the hello.
pub(super) async fn establish(
    shared: &Shared,
    conn: quinn::Connection,
    cluster: ClusterId,
    addr: SocketAddr,
    dialed: bool,
) -> PeerConn {
    let not_after = tls::peer_not_after(&conn);
    let key = SealedKey::export(&conn, dialed, cluster.clone(), not_after);
    let sealed_id = key.map(|key| {
        let id = key.id();
        lock(&shared.sealed).insert(addr, key, shared.limits.connections_max);
        id
    });
    if sealed_id.is_none() {
        shared.counters.reject("sealed_export_failed");
    }
    let peer = PeerConn::new(conn, cluster, dialed, sealed_id);
    send_hello(shared, &peer.conn).await;
    peer
}

/// Says hello on `conn`: this process's instance, so that the peer can tell a restart.
/// A hello that cannot be sent is counted; the peer then closes the connection.
async fn send_hello(shared: &Shared, conn: &quinn::Connection) {
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
    if tokio::time::timeout(shared.frame_timeout(), send)
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

/// Reads the peer's hello, then datagrams and uni streams until the connection ends,
/// holding its slot. Streams are read concurrently; QUIC's stream limit bounds how many.
pub(super) async fn serve(
    shared: Arc<Shared>,
    peer: PeerConn,
    addr: SocketAddr,
    _slot: ConnectionSlot,
) {
    if let Err(reason) = read_hello(&shared, &peer, addr).await {
        shared.counters.reject(reason);
        debug!(cluster = %peer.cluster, peer = %addr, reason, "no valid hello; closing");
        peer.conn
            .close(VarInt::from_u32(CLOSE_IDENTITY_MISMATCH), reason.as_bytes());
        return;
    }
    let shared = &shared;
    let (conn, cluster) = (&peer.conn, &peer.cluster);
    let open = Arc::new(AtomicU64::new(0));
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            datagram = conn.read_datagram() => match datagram {
                Ok(bytes) => {
                    if !lock(&shared.rates).admit(addr, bytes.len(), Instant::now()) {
                        shared.counters.reject("rate_limited");
                    } else if !receive(shared, &peer, &bytes, false) {
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

/// Reads the first uni stream, which must be the peer's hello: its process instance
/// tells a restart, and its replica is the one the connection's sealed key may seal for.
/// Nothing else on the connection is read before it.
async fn read_hello(
    shared: &Shared,
    peer: &PeerConn,
    addr: SocketAddr,
) -> Result<(), &'static str> {
    let read = async {
        // TLS 1.3 ends the client's handshake before the server has checked the
        // client's certificate: a dialer the peer refuses (`not_member`) learns it here,
        // from the connection's close, and counts the peer's reason.
        let mut recv = peer
            .conn
            .accept_uni()
            .await
            .map_err(|e| tls::handshake_reason(&e, peer.dialed))?;
        recv.read_to_end(HEADER_BYTES_MAX + HELLO_PAYLOAD_BYTES)
            .await
            .map_err(|_| "hello_missing")
    };
    let frame = match tokio::time::timeout(shared.handshake_timeout(), read).await {
        Ok(Ok(frame)) => frame,
        Ok(Err(reason)) => return Err(reason),
        Err(_) => return Err("hello_missing"),
    };
    let Ok((FrameKind::Hello, claimed, payload)) = header::decode(&frame) else {
        return Err("bad_hello");
    };
    if claimed.cluster != peer.cluster {
        warn!(cluster = %peer.cluster, claimed = %claimed, "peer claims another cluster; closing");
        return Err("identity_mismatch");
    }
    let instance = <[u8; HELLO_PAYLOAD_BYTES]>::try_from(payload)
        .map(u64::from_le_bytes)
        .ok()
        .filter(|i| *i != 0)
        .ok_or("bad_hello")?;
    shared.note_instance(addr, peer, instance);
    if let Some(id) = peer.sealed_id {
        lock(&shared.sealed).hello(addr, id, claimed.replica, instance);
    }
    Ok(())
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
        let read = tokio::time::timeout(self.shared.frame_timeout(), recv.read_to_end(limit)).await;
        if let Ok(Ok(frame)) = &read {
            // Over the peer's budget: hold the stream until the budget pays for it.
            let now = std::time::Instant::now();
            let wait = lock(&self.shared.rates).charge(self.addr, frame.len(), now);
            if !wait.is_zero() {
                self.shared.counters.throttled();
                tokio::time::sleep(wait).await;
            }
        }
        // Free the stream (and its credit) before the frame is handled.
        drop(recv);
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.shared.counters.stream_closed();
        let reason = match read {
            Ok(Ok(frame)) => {
                receive(&self.shared, &self.peer, &frame, true);
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
fn receive(shared: &Shared, peer: &PeerConn, frame: &[u8], on_stream: bool) -> bool {
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
        FrameKind::Stream | FrameKind::DatagramOnStream => on_stream,
        FrameKind::Hello => {
            shared.counters.reject("bad_hello");
            return true;
        }
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
    let from = MemberId {
        cluster: cluster.clone(),
        replica: claimed.replica,
    };
    let datagram = kind == FrameKind::Datagram;
    deliver(
        shared,
        from,
        kind.channel(),
        datagram,
        payload.to_vec(),
        Some(conn.rtt()),
    );
    true
}

/// Queues one message for the driver. `datagram`: it came as a datagram (QUIC or
/// sealed), for the counters.
fn deliver(
    shared: &Shared,
    from: MemberId,
    channel: Channel,
    datagram: bool,
    bytes: Vec<u8>,
    rtt: Option<Duration>,
) {
    let len = bytes.len();
    let message = Inbound {
        from: from.clone(),
        channel,
        bytes,
        received: tokio::time::Instant::now().into_std(),
    };
    match shared.inbound.try_send(message, len) {
        Ok(()) => shared.counters.received(&from, datagram, len, rtt),
        Err(Refused::Messages) => shared.counters.reject("inbound_queue_full"),
        Err(Refused::Bytes) => shared.counters.reject("inbound_queue_bytes_full"),
        Err(Refused::Closed) => shared.counters.reject("inbound_closed"),
    }
}

/// Opens the sealed datagrams (and acts on the unknown-key notices) the socket took
/// out of the QUIC stream, until the transport stops.
pub(super) async fn read_sealed(shared: Arc<Shared>, mut taken: mpsc::Receiver<Taken>) {
    // When a notice was last sent to each address; bounded like the connections.
    let mut notified: HashMap<SocketAddr, Instant> = HashMap::new();
    while let Some((addr, packet)) = taken.recv().await {
        if packet.first() == Some(&sealed::NOTICE_MARKER) {
            match lock(&shared.sealed).notice(addr, &packet) {
                Some(conn) => {
                    shared.counters.reject("sealed_key_unknown_to_peer");
                    debug!(peer = %addr, "peer cannot open our sealed datagrams; shaking hands again");
                    if let Some(conn) = conn {
                        conn.close(
                            VarInt::from_u32(CLOSE_SHUTDOWN),
                            b"sealed key unknown to peer",
                        );
                    }
                }
                None => shared.counters.reject("sealed_notice_ignored"),
            }
            continue;
        }
        if !lock(&shared.rates).admit(addr, packet.len(), Instant::now()) {
            shared.counters.reject("rate_limited");
            continue;
        }
        let opened = lock(&shared.sealed).open(addr, &packet);
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                shared.counters.reject(e.metric_label());
                if e == OpenError::UnknownKey {
                    send_notice(&shared, &mut notified, addr, &packet);
                }
                continue;
            }
        };
        if let Some(chaos) = &shared.chaos
            && lock(chaos).drops_inbound(&opened.from.cluster)
        {
            shared.counters.reject("chaos");
            continue;
        }
        shared.counters.sealed(false);
        deliver(
            &shared,
            opened.from,
            Channel::Datagram,
            true,
            opened.payload,
            opened.rtt,
        );
    }
}

/// Tells the sender of a sealed datagram no key here opens that its key is unknown,
/// at most once per address per [`NOTICE_INTERVAL`].
fn send_notice(
    shared: &Shared,
    notified: &mut HashMap<SocketAddr, Instant>,
    addr: SocketAddr,
    packet: &[u8],
) {
    let Some(notice) = SealedKeys::notice_for(packet) else {
        return;
    };
    let now = Instant::now();
    if notified
        .get(&addr)
        .is_some_and(|at| now < *at + NOTICE_INTERVAL)
    {
        return;
    }
    if notified.len() >= shared.limits.connections_max {
        notified.retain(|_, at| now < *at + NOTICE_INTERVAL);
        if notified.len() >= shared.limits.connections_max {
            return;
        }
    }
    notified.insert(addr, now);
    if shared.socket.send_raw(addr, &notice).is_err() {
        shared.counters.reject("sealed_send_failed");
    }
}
