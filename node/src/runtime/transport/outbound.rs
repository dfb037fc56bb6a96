//! Sending: one task per remote address owns a bounded queue and sends on the one
//! connection with that peer: the one it dialed us on if there is one, else one dialed
//! on demand (and redialed after a failure once a backoff has passed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shoal_proto::{Channel, ClusterId, MemberId};
use tokio::time::Instant;
use tracing::debug;

use super::header::{self, FrameKind};
use super::queue::{self, Charge, QueueReceiver, Refused};
use super::{PeerConn, Shared, TransportError, connection, lock, tls};
use crate::runtime::certs::server_name_of;

/// Backoff after the first failed dial of an address.
pub const CONNECT_BACKOFF_MIN_MS: u64 = 100;
/// Longest backoff between dials of a dead address.
pub const CONNECT_BACKOFF_MAX_MS: u64 = 5_000;

/// One message waiting to be sent.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) to: MemberId,
    pub(super) channel: Channel,
    pub(super) bytes: Vec<u8>,
}

/// A queued message, with its bytes charged against what every address may queue.
pub(super) type Queued = (Outgoing, Charge);

/// Queues `message` on the task for `addr`, starting one if there is none. The
/// message's bytes count against the address's queue and against the bytes queued for
/// every address; over either bound, it is dropped and counted.
pub(super) fn enqueue(shared: &Arc<Shared>, addr: SocketAddr, message: Outgoing) {
    let mut peers = lock(&shared.peers);
    let sender = match peers.get(&addr) {
        Some(sender) if !sender.is_closed() => sender.clone(),
        _ => {
            peers.remove(&addr);
            if peers.len() >= shared.limits.connections_max {
                shared.counters.reject("connections_full");
                return;
            }
            let (sender, receiver) = queue::bounded(
                shared.limits.outbound_queue_max,
                shared.limits.outbound_queue_bytes_max,
            );
            peers.insert(addr, sender.clone());
            shared.spawn(PeerLink::new(shared.clone(), addr).run(receiver));
            sender
        }
    };
    drop(peers);
    let len = message.bytes.len();
    let Some(charge) = shared.outbound_bytes.try_charge(len) else {
        shared.counters.reject("outbound_bytes_full");
        return;
    };
    match sender.try_send((message, charge), len) {
        Ok(()) => {}
        Err(Refused::Messages) => shared.counters.reject("outbound_queue_full"),
        Err(Refused::Bytes) => shared.counters.reject("outbound_queue_bytes_full"),
        Err(Refused::Closed) => shared.counters.reject("outbound_closed"),
    }
}

/// The task sending to one remote address.
struct PeerLink {
    shared: Arc<Shared>,
    addr: SocketAddr,
    link: Option<PeerConn>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl PeerLink {
    fn new(shared: Arc<Shared>, addr: SocketAddr) -> Self {
        Self {
            shared,
            addr,
            link: None,
            retry_at: None,
            backoff: Duration::from_millis(CONNECT_BACKOFF_MIN_MS),
        }
    }

    /// Sends queued messages in order; ends after an idle timeout with nothing queued.
    async fn run(mut self, mut queue: QueueReceiver<Queued>) {
        let idle = self.shared.idle_timeout();
        loop {
            match tokio::time::timeout(idle, queue.recv()).await {
                Ok(Some((message, _charge))) => self.deliver(message).await,
                Ok(None) => break,
                Err(_) => {
                    queue.close();
                    while let Ok((message, _charge)) = queue.try_recv() {
                        self.deliver(message).await;
                    }
                    break;
                }
            }
        }
        let mut peers = lock(&self.shared.peers);
        if peers
            .get(&self.addr)
            .is_some_and(|sender| sender.is_closed())
        {
            peers.remove(&self.addr);
        }
    }

    async fn deliver(&mut self, message: Outgoing) {
        let Some(conn) = self.connection(&message.to).await else {
            return;
        };
        let local = &self.shared.local;
        let result = match message.channel {
            Channel::Datagram => self.send_datagram(&conn, local, &message.bytes).await,
            Channel::Stream => {
                let frame = header::encode(FrameKind::Stream, local, &message.bytes);
                self.send_on_stream(&conn, &frame).await
            }
        };
        match result {
            Ok(()) => self.shared.counters.sent(
                &message.to,
                message.channel == Channel::Datagram,
                message.bytes.len(),
                Some(conn.rtt()),
            ),
            Err(reason) => {
                self.shared.counters.reject(reason);
                debug!(peer = %message.to, addr = %self.addr, reason, "send failed");
                if conn.close_reason().is_some() {
                    self.link = None;
                }
            }
        }
    }

    async fn send_datagram(
        &self,
        conn: &quinn::Connection,
        local: &MemberId,
        payload: &[u8],
    ) -> Result<(), &'static str> {
        let frame = header::encode(FrameKind::Datagram, local, payload);
        if conn
            .max_datagram_size()
            .is_some_and(|max| frame.len() <= max)
        {
            return conn
                .send_datagram(Bytes::from(frame))
                .map_err(|_| "send_failed");
        }
        self.shared.counters.datagram_on_stream();
        let frame = header::encode(FrameKind::DatagramOnStream, local, payload);
        self.send_on_stream(conn, &frame).await
    }

    async fn send_on_stream(
        &self,
        conn: &quinn::Connection,
        frame: &[u8],
    ) -> Result<(), &'static str> {
        let send = async {
            let mut stream = conn.open_uni().await.map_err(|_| "send_failed")?;
            stream.write_all(frame).await.map_err(|_| "send_failed")?;
            stream.finish().map_err(|_| "send_failed")
        };
        match tokio::time::timeout(self.shared.frame_timeout(), send).await {
            Ok(result) => result,
            Err(_) => Err("send_timeout"),
        }
    }

    /// The connection to send to `to` on: the one in use while it is current; else the
    /// one the peer dialed us on; else one dialed now, if the backoff allows.
    ///
    /// If both sides dialed at once, each holds its own and has accepted the other's.
    /// The lower member id keeps its own; the higher switches to the accepted one,
    /// and its own idles out.
    async fn connection(&mut self, to: &MemberId) -> Option<quinn::Connection> {
        let cluster = &to.cluster;
        if let Some(link) = self.link.take() {
            let current = link.cluster == *cluster && self.shared.is_current(self.addr, &link);
            let yields = link.dialed && self.shared.local > *to;
            if current && !yields {
                let conn = link.conn.clone();
                self.link = Some(link);
                return Some(conn);
            }
            if current {
                // Ours lost to the peer's only if the peer's exists.
                if let Some(theirs) = self.shared.accepted_from(self.addr, cluster) {
                    self.link = Some(theirs);
                } else {
                    self.link = Some(link);
                }
                return self.link.as_ref().map(|l| l.conn.clone());
            }
            if link.dialed && link.conn.close_reason().is_none() {
                link.conn.close(
                    quinn::VarInt::from_u32(super::CLOSE_SHUTDOWN),
                    b"peer restarted",
                );
            }
        }
        if let Some(theirs) = self.shared.accepted_from(self.addr, cluster) {
            let conn = theirs.conn.clone();
            self.link = Some(theirs);
            return Some(conn);
        }
        let now = Instant::now();
        if self.retry_at.is_some_and(|at| now < at) {
            self.shared.counters.reject("connect_backoff");
            return None;
        }
        match self.dial(cluster).await {
            Ok(link) => {
                let conn = link.conn.clone();
                self.link = Some(link);
                self.retry_at = None;
                self.backoff = Duration::from_millis(CONNECT_BACKOFF_MIN_MS);
                Some(conn)
            }
            Err(e) => {
                self.shared.counters.reject(e.metric_label());
                debug!(addr = %self.addr, cluster = %cluster, error = %e, "dial failed");
                self.retry_at = Some(Instant::now() + self.backoff);
                let max = Duration::from_millis(CONNECT_BACKOFF_MAX_MS);
                self.backoff = (self.backoff * 2).min(max);
                None
            }
        }
    }

    /// Dials, checks the certificate names `cluster`, and starts serving what the
    /// peer sends back on the new connection.
    async fn dial(&self, cluster: &ClusterId) -> Result<PeerConn, TransportError> {
        let addr = self.addr;
        let slot = self
            .shared
            .try_slot()
            .ok_or(TransportError::ConnectionsFull)?;
        let connecting = self
            .shared
            .endpoint
            .connect_with(self.shared.client.clone(), addr, &server_name_of(cluster))
            .map_err(|source| TransportError::Connect { addr, source })?;
        let conn = match tokio::time::timeout(self.shared.handshake_timeout(), connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(TransportError::Handshake {
                    addr,
                    reason: tls::handshake_reason(&e, true),
                    detail: e.to_string(),
                });
            }
            Err(_) => {
                return Err(TransportError::Handshake {
                    addr,
                    reason: "handshake_timeout",
                    detail: "no handshake within the limit".into(),
                });
            }
        };
        // The server name check already tied the certificate to `cluster`; this keeps
        // that promise explicit.
        if tls::peer_cluster(&conn).as_ref() != Some(cluster) {
            conn.close(
                quinn::VarInt::from_u32(super::CLOSE_IDENTITY_MISMATCH),
                b"wrong cluster",
            );
            return Err(TransportError::Handshake {
                addr,
                reason: "wrong_cluster",
                detail: format!("certificate does not name {cluster}"),
            });
        }
        self.shared.counters.connected(true);
        debug!(addr = %addr, cluster = %cluster, "connected");
        let peer = connection::establish(&self.shared, conn, cluster.clone(), addr, true).await;
        self.shared.spawn(connection::serve(
            self.shared.clone(),
            peer.clone(),
            addr,
            slot,
        ));
        Ok(peer)
    }
}
