//! QUIC with mutual TLS between Shoal nodes.
//!
//! - `tls`: rustls (ring) and quinn configuration; classifying refused handshakes.
//! - `header`: the claimed-sender header in front of every datagram and frame.
//! - `connection`: accepting connections and reading what peers send.
//! - `outbound`: one task per remote address: dial on demand, queue, send.
//! - `queue`: queues bounded in bytes as well as in messages.
//! - `sealed`: SWIM datagrams outside QUIC, under keys exported from each connection.
//! - `socket`: the one UDP socket, split between quinn and sealed datagrams; what can
//!   be neither is dropped there and counted (`not_quic`).
//! - `chaos`: fault injection (cuts and loss), when the config enables it.
//! - `stats`: counters, per-peer bytes and RTT, rejects by reason, and quinn's
//!   handshake counters.
//!
//! Everything but SWIM travels as one frame per uni stream ([`Channel::Stream`]). SWIM
//! ([`Channel::Datagram`]) travels sealed (see `sealed`): plain UDP on the same socket,
//! encrypted and authenticated with a key both ends export from their mutual-TLS QUIC
//! connection, so that a probe costs two packets, not three (a QUIC DATAGRAM is
//! ack-eliciting). Until a key is ready, and for datagrams too large to seal, SWIM goes
//! as a QUIC datagram. A peer's cluster is the one its certificate names; the replica
//! is the one its header (or sealed packet) claims.
//!
//! **One connection per pair.** Whichever side dials first, both send on that
//! connection. If both dial at once, the connection dialed by the lower member id wins
//! and the other one idles out. Each side opens a connection with a hello naming its
//! process instance (random at start), and reads nothing else on it before the peer's
//! hello: a new instance at an address means that peer restarted, and connections and
//! sealed keys of the old one are dropped at once instead of at the idle timeout.
//!
//! **Architecture invariant:** nothing a peer sends can panic the node or grow memory
//! without bound: every malformed or excess input is counted by reason and dropped.

mod chaos;
mod connection;
mod header;
mod outbound;
mod queue;
mod rate;
mod sealed;
mod socket;
mod stats;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quinn::VarInt;
use shoal_proto::codec::FRAME_BYTES_MAX;
use shoal_proto::{Channel, ClusterId, MemberId};
use tokio::task::JoinSet;

use crate::runtime::api::{ApiError, ChaosOp, ChaosView};
use crate::runtime::certs::ClusterIdentity;

pub use queue::QueueReceiver;
pub use stats::{PEERS_TRACKED_MAX, PeerStats, TransportStats};
pub use tls::{ALPN, DATAGRAM_BUFFER_BYTES, INITIAL_MTU};

use chaos::Chaos;
use header::HEADER_BYTES_MAX;
use outbound::{Outgoing, Queued};
use queue::{ByteBudget, QueueSender};
use rate::PeerRates;
use sealed::SealedKeys;
use socket::DemuxSocket;
use stats::Counters;

/// How long `shutdown` waits for peers to acknowledge the close.
pub const SHUTDOWN_DRAIN_MS: u64 = 1_000;
/// The longest reading or sending one frame may take (less if the idle timeout is).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest sealed datagram: QUIC's initial packet size less IPv6 and UDP headers,
/// so that it crosses any path QUIC's first packets cross. Larger ones go through QUIC.
pub const SEALED_PACKET_BYTES_MAX: usize = INITIAL_MTU as usize - 48;
/// QUIC application close code: this node is shutting down.
pub const CLOSE_SHUTDOWN: u32 = 0;
/// QUIC application close code: the peer claimed another cluster than its certificate's.
pub const CLOSE_IDENTITY_MISMATCH: u32 = 1;

/// Every bound of the transport. Units are in the names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportLimits {
    /// Uni streams a peer may have open at once on one connection (one frame each).
    pub uni_streams_per_connection_max: u32,
    pub stream_receive_window_bytes: u32,
    pub connection_receive_window_bytes: u32,
    /// Largest payload of a stream frame, header excluded.
    pub frame_bytes_max: usize,
    /// A connection with no traffic for this long is closed (and dialed again when
    /// next needed); also bounds reading or sending one frame, with [`FRAME_TIMEOUT`].
    /// Long by default: SWIM runs sealed, outside the connection, so only streams keep
    /// it open, and a handshake costs far more than an idle connection (which costs
    /// nothing on the wire). A restarted peer's connection is dropped at once anyway
    /// (hello, stateless reset), and a dead peer's holds only its slot until then.
    pub idle_timeout_ms: u64,
    /// Keep-alive pings on an otherwise idle connection; 0 (the default) sends none.
    /// Sealed SWIM datagrams share the connection's socket and ports, so they keep a
    /// NAT's mapping alive, but they do not keep the QUIC connection open: without
    /// stream traffic it closes after `idle_timeout_ms` (its sealed key lives on) and
    /// is dialed again when a frame needs it.
    pub keepalive_ms: u64,
    /// Messages received and not yet taken by the driver.
    pub inbound_queue_max: usize,
    /// Payload bytes received and not yet taken by the driver. At least
    /// `frame_bytes_max`.
    pub inbound_queue_bytes_max: usize,
    /// Messages queued for one remote address.
    pub outbound_queue_max: usize,
    /// Bytes queued for one remote address. At least `frame_bytes_max`.
    pub outbound_queue_bytes_max: usize,
    /// Bytes queued for all remote addresses together. At least
    /// `outbound_queue_bytes_max`.
    pub outbound_bytes_max: usize,
    /// Connections (accepted plus dialed) and remote addresses with a send queue.
    pub connections_max: usize,
    /// Bytes per second received from one remote address, frames and datagrams alike
    /// (bursts of a second's worth, or of one largest frame). A datagram beyond it is
    /// dropped and counted (`rate_limited`); a frame beyond it is held, its stream
    /// open, until the budget has paid for it, which pushes back on the sender.
    pub peer_bytes_per_s_max: u64,
    pub handshake_timeout_ms: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            uni_streams_per_connection_max: 64,
            stream_receive_window_bytes: 2 * FRAME_BYTES_MAX as u32,
            connection_receive_window_bytes: 8 * FRAME_BYTES_MAX as u32,
            frame_bytes_max: FRAME_BYTES_MAX,
            idle_timeout_ms: 600_000,
            keepalive_ms: 0,
            inbound_queue_max: 4_096,
            inbound_queue_bytes_max: 64 * FRAME_BYTES_MAX,
            outbound_queue_max: 4_096,
            outbound_queue_bytes_max: 8 * FRAME_BYTES_MAX,
            outbound_bytes_max: 128 * FRAME_BYTES_MAX,
            connections_max: 1_024,
            peer_bytes_per_s_max: 16 * 1024 * 1024,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TransportLimits {
    /// Checks every bound is usable; the message names the bad field.
    pub fn validate(&self) -> Result<(), TransportError> {
        let zero = [
            (
                "uni_streams_per_connection_max",
                self.uni_streams_per_connection_max == 0,
            ),
            (
                "stream_receive_window_bytes",
                self.stream_receive_window_bytes == 0,
            ),
            (
                "connection_receive_window_bytes",
                self.connection_receive_window_bytes == 0,
            ),
            ("frame_bytes_max", self.frame_bytes_max == 0),
            ("idle_timeout_ms", self.idle_timeout_ms == 0),
            ("inbound_queue_max", self.inbound_queue_max == 0),
            ("outbound_queue_max", self.outbound_queue_max == 0),
            ("connections_max", self.connections_max == 0),
            ("peer_bytes_per_s_max", self.peer_bytes_per_s_max == 0),
            ("handshake_timeout_ms", self.handshake_timeout_ms == 0),
        ];
        if let Some((field, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(TransportError::Limits(format!("{field} must be above 0")));
        }
        let at_least = [
            (
                "inbound_queue_bytes_max",
                self.inbound_queue_bytes_max,
                "frame_bytes_max",
                self.frame_bytes_max,
            ),
            (
                "outbound_queue_bytes_max",
                self.outbound_queue_bytes_max,
                "frame_bytes_max",
                self.frame_bytes_max,
            ),
            (
                "outbound_bytes_max",
                self.outbound_bytes_max,
                "outbound_queue_bytes_max",
                self.outbound_queue_bytes_max,
            ),
        ];
        if let Some((field, value, floor, min)) = at_least.iter().find(|(_, v, _, m)| v < m) {
            return Err(TransportError::Limits(format!(
                "{field} ({value}) must be at least {floor} ({min}): one largest frame must fit"
            )));
        }
        if self.keepalive_ms != 0 && self.keepalive_ms >= self.idle_timeout_ms {
            return Err(TransportError::Limits(format!(
                "keepalive_ms ({}) must be below idle_timeout_ms ({})",
                self.keepalive_ms, self.idle_timeout_ms
            )));
        }
        Ok(())
    }
}

/// What the transport needs to start.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// UDP address to listen on (and dial from).
    pub listen: SocketAddr,
    /// This node's membership id; its cluster must be the identity's.
    pub local: MemberId,
    pub identity: Arc<ClusterIdentity>,
    pub limits: TransportLimits,
    /// Whether [`Transport::chaos`] may inject faults.
    pub chaos_enabled: bool,
}

/// What peers sent, for the driver to take.
pub type InboundQueue = QueueReceiver<Inbound>;

/// One message from an authenticated peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The cluster the peer's certificate names, and the replica its header claims.
    pub from: MemberId,
    /// The channel it was sent as (a datagram too large for the path still says
    /// `Datagram`).
    pub channel: Channel,
    /// The payload, header removed.
    pub bytes: Vec<u8>,
    pub received: std::time::Instant,
}

/// Why the transport could not start, or why a connection failed (the latter are
/// counted as rejects by [`TransportError::metric_label`], never returned to callers).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound; nothing is running.
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TLS material could not be turned into a configuration; nothing is running.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A limit is unusable; nothing is running.
    #[error("transport limits: {0}")]
    Limits(String),
    /// The local member's cluster is not the certificate's; nothing is running.
    #[error("local member {member} is not of the certificate's cluster")]
    Identity { member: MemberId },
    /// quinn refused to start a connection; the message was dropped.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    /// The handshake failed or was refused (`reason` says why); no connection exists.
    #[error("handshake with {addr}: {reason}: {detail}")]
    Handshake {
        addr: SocketAddr,
        reason: &'static str,
        detail: String,
    },
    /// Every connection slot is taken; the connection was refused or not dialed.
    #[error("connection limit reached")]
    ConnectionsFull,
}

impl TransportError {
    /// A low-cardinality label for metrics and reject counters.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TransportError::Bind { .. } => "bind",
            TransportError::Tls(_) => "tls",
            TransportError::Limits(_) => "limits",
            TransportError::Identity { .. } => "identity",
            TransportError::Connect { .. } => "connect_failed",
            TransportError::Handshake { reason, .. } => reason,
            TransportError::ConnectionsFull => "connections_full",
        }
    }
}

/// A handle on the running transport; clones share it. Call [`Transport::shutdown`] to
/// stop its tasks: they hold the transport alive until then.
#[derive(Clone, Debug)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// State shared by the handle and the tasks.
struct Shared {
    endpoint: quinn::Endpoint,
    /// The endpoint's socket, also carrying sealed datagrams.
    socket: Arc<DemuxSocket>,
    /// Sealed-datagram keys, by remote address.
    sealed: Mutex<SealedKeys>,
    /// What each remote address may still send this second.
    rates: Mutex<PeerRates>,
    local: MemberId,
    local_addr: SocketAddr,
    limits: TransportLimits,
    client: quinn::ClientConfig,
    inbound: QueueSender<Inbound>,
    /// Bytes queued for sending, over every remote address.
    outbound_bytes: ByteBudget,
    counters: Counters,
    chaos: Option<Mutex<Chaos>>,
    peers: Mutex<HashMap<SocketAddr, QueueSender<Queued>>>,
    /// The latest accepted connection from each remote address.
    accepted: Mutex<HashMap<SocketAddr, PeerConn>>,
    /// This process's instance, sent in every hello.
    instance: u64,
    /// The latest instance each remote address said hello with.
    instances: Mutex<HashMap<SocketAddr, u64>>,
    slots: Arc<AtomicUsize>,
    tasks: Mutex<JoinSet<()>>,
    runtime: tokio::runtime::Handle,
    closing: AtomicBool,
}

/// By hand: the TLS configs hold the private key, which is never printed.
impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.local)
            .field("local_addr", &self.local_addr)
            .field("limits", &self.limits)
            .field("chaos_enabled", &self.chaos.is_some())
            .finish_non_exhaustive()
    }
}

/// An authenticated connection with one peer, dialed or accepted.
#[derive(Clone, Debug)]
struct PeerConn {
    conn: quinn::Connection,
    /// The cluster its certificate names.
    cluster: ClusterId,
    /// The peer's process instance from its hello; 0 until the hello arrives.
    instance: Arc<AtomicU64>,
    /// Whether this node dialed it.
    dialed: bool,
    /// The id of the sealed-datagram key exported from it, if it was stored.
    sealed_id: Option<u16>,
}

impl PeerConn {
    fn new(
        conn: quinn::Connection,
        cluster: ClusterId,
        dialed: bool,
        sealed_id: Option<u16>,
    ) -> Self {
        PeerConn {
            conn,
            cluster,
            instance: Arc::new(AtomicU64::new(0)),
            dialed,
            sealed_id,
        }
    }

    fn instance(&self) -> Option<u64> {
        Some(self.instance.load(Ordering::Acquire)).filter(|i| *i != 0)
    }
}

/// A process instance: nonzero, and different on every start. `RandomState` is keyed
/// from the OS's randomness; the clock and pid make a repeat impossible in practice.
fn new_instance() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut hasher);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish().max(1)
}

/// A held connection slot; dropping it frees the slot.
#[derive(Debug)]
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one short step; a poisoned lock still holds usable state.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn try_slot(&self) -> Option<ConnectionSlot> {
        let max = self.limits.connections_max;
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnectionSlot(self.slots.clone()))
    }

    /// Runs `task` until it ends or the transport shuts down.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(task, &self.runtime);
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.idle_timeout_ms)
    }

    /// How long reading or sending one frame may take.
    fn frame_timeout(&self) -> Duration {
        self.idle_timeout().min(FRAME_TIMEOUT)
    }

    /// A connection from `addr` was accepted and authenticated: it becomes the one
    /// this node also sends on, unless it already has a connection of its own there.
    fn note_accepted(&self, addr: SocketAddr, peer: &PeerConn) {
        let mut accepted = lock(&self.accepted);
        if accepted.len() >= self.limits.connections_max && !accepted.contains_key(&addr) {
            accepted.retain(|_, p| p.conn.close_reason().is_none());
        }
        accepted.insert(addr, peer.clone());
    }

    /// The peer at `addr` said hello on `peer`'s connection as process `instance`. A
    /// new instance means it restarted: the accepted connection from its old instance
    /// is closed, and senders drop theirs when they next look (see `is_current`).
    fn note_instance(&self, addr: SocketAddr, peer: &PeerConn, instance: u64) {
        peer.instance.store(instance, Ordering::Release);
        let previous = {
            let mut instances = lock(&self.instances);
            if instances.len() >= self.limits.connections_max && !instances.contains_key(&addr) {
                let accepted = lock(&self.accepted);
                instances.retain(|a, _| accepted.contains_key(a));
            }
            instances.insert(addr, instance)
        };
        if previous.is_none_or(|p| p == instance) {
            return;
        }
        self.counters.reject("peer_restarted");
        let accepted = lock(&self.accepted);
        if let Some(old) = accepted.get(&addr)
            && old.instance() != Some(instance)
            && old.instance().is_some()
        {
            old.conn
                .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"peer restarted");
        }
    }

    /// Whether `peer` still leads to the live process at `addr`: open, and not a
    /// connection to an instance that has since been replaced.
    fn is_current(&self, addr: SocketAddr, peer: &PeerConn) -> bool {
        if peer.conn.close_reason().is_some() {
            return false;
        }
        match (peer.instance(), lock(&self.instances).get(&addr)) {
            (Some(ours), Some(latest)) => ours == *latest,
            _ => true,
        }
    }

    /// The accepted connection from `addr`, if it is current and its certificate
    /// names `cluster`.
    fn accepted_from(&self, addr: SocketAddr, cluster: &ClusterId) -> Option<PeerConn> {
        let peer = lock(&self.accepted).get(&addr).cloned()?;
        (peer.cluster == *cluster && self.is_current(addr, &peer)).then_some(peer)
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.handshake_timeout_ms)
    }
}

impl Transport {
    /// Binds the UDP socket and starts accepting connections. Inbound messages arrive on
    /// the returned queue (bounded by `inbound_queue_max` and `inbound_queue_bytes_max`).
    pub async fn bind(
        config: TransportConfig,
    ) -> Result<(Transport, InboundQueue), TransportError> {
        config.limits.validate()?;
        if config.local.cluster != config.identity.cluster {
            return Err(TransportError::Identity {
                member: config.local,
            });
        }
        let server = tls::server_config(&config.identity, &config.limits)?;
        let client = tls::client_config(&config.identity, &config.limits)?;
        let bind_error = |source| TransportError::Bind {
            addr: config.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(config.listen).map_err(bind_error)?;
        let endpoint_config = endpoint_config(&config.identity, &config.local);
        let runtime = quinn::default_runtime().ok_or_else(|| {
            bind_error(std::io::Error::other("no async runtime for the endpoint"))
        })?;
        let socket = runtime.wrap_udp_socket(socket).map_err(bind_error)?;
        let (socket, taken) = DemuxSocket::new(socket, config.limits.inbound_queue_max);
        let socket = Arc::new(socket);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            socket.clone(),
            runtime,
        )
        .map_err(bind_error)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let outbound_bytes = ByteBudget::new(config.limits.outbound_bytes_max);
        let (inbound, receiver) = queue::bounded(
            config.limits.inbound_queue_max,
            config.limits.inbound_queue_bytes_max,
        );
        let chaos = config
            .chaos_enabled
            .then(|| Mutex::new(Chaos::new(chaos_seed(&config.local, local_addr))));
        let shared = Arc::new(Shared {
            endpoint,
            socket,
            sealed: Mutex::new(SealedKeys::default()),
            rates: Mutex::new(PeerRates::new(
                config.limits.peer_bytes_per_s_max,
                HEADER_BYTES_MAX + config.limits.frame_bytes_max,
                config.limits.connections_max,
            )),
            local: config.local,
            local_addr,
            limits: config.limits,
            client,
            inbound,
            outbound_bytes,
            counters: Counters::default(),
            chaos,
            peers: Mutex::new(HashMap::new()),
            accepted: Mutex::new(HashMap::new()),
            instance: new_instance(),
            instances: Mutex::new(HashMap::new()),
            slots: Arc::new(AtomicUsize::new(0)),
            tasks: Mutex::new(JoinSet::new()),
            runtime: tokio::runtime::Handle::current(),
            closing: AtomicBool::new(false),
        });
        shared.spawn(connection::accept_loop(shared.clone()));
        shared.spawn(connection::read_sealed(shared.clone(), taken));
        tracing::info!(member = %shared.local, listen = %local_addr, "transport listening");
        Ok((Transport { shared }, receiver))
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// This node's membership id, as its headers claim it.
    pub fn local(&self) -> &MemberId {
        &self.shared.local
    }

    /// Queues `bytes` for `to` at `addr`, connecting on demand. Never blocks and never
    /// fails the caller: a full queue, an oversize message, a refused or failed
    /// connection, or a chaos fault is counted as a reject and the message dropped.
    pub fn send(&self, to: &MemberId, addr: SocketAddr, channel: Channel, bytes: Vec<u8>) {
        let shared = &self.shared;
        if shared.closing.load(Ordering::Acquire) {
            shared.counters.reject("shutdown");
            return;
        }
        if bytes.len() > shared.limits.frame_bytes_max {
            shared.counters.reject("send_too_large");
            return;
        }
        if let Some(chaos) = &shared.chaos
            && lock(chaos).drops_outbound(&to.cluster)
        {
            shared.counters.reject("chaos");
            return;
        }
        if channel == Channel::Datagram && self.send_sealed(to, addr, &bytes) {
            return;
        }
        let message = Outgoing {
            to: to.clone(),
            channel,
            bytes,
        };
        outbound::enqueue(shared, addr, message);
    }

    /// Sends a datagram sealed, outside QUIC, if a key with `to` at `addr` allows.
    /// Returns false if none does: the datagram then goes through QUIC.
    fn send_sealed(&self, to: &MemberId, addr: SocketAddr, bytes: &[u8]) -> bool {
        let shared = &self.shared;
        if bytes.len() + sealed::OVERHEAD_BYTES > SEALED_PACKET_BYTES_MAX {
            return false;
        }
        let Some((packet, rtt)) = lock(&shared.sealed).seal(addr, &shared.local, to, bytes) else {
            return false;
        };
        match shared.socket.send_raw(addr, &packet) {
            Ok(()) => {
                shared.counters.sent(to, true, bytes.len(), rtt);
                shared.counters.sealed(true);
            }
            Err(e) => {
                shared.counters.reject("sealed_send_failed");
                tracing::debug!(peer = %to, addr = %addr, error = %e, "sealed datagram not sent");
            }
        }
        true
    }

    /// The counters now, with the socket's drops among the rejects (present once
    /// nonzero, like every reject) and quinn's handshake counters.
    pub fn stats(&self) -> TransportStats {
        let shared = &self.shared;
        let open = shared.slots.load(Ordering::Acquire);
        let mut stats = shared.counters.snapshot(open);
        let socket = [
            ("sealed_queue_full", shared.socket.dropped()),
            ("not_quic", shared.socket.not_quic()),
        ];
        for (reason, n) in socket.into_iter().filter(|(_, n)| *n > 0) {
            stats.rejects.insert(reason, n);
        }
        let quic = shared.endpoint.stats();
        stats.quic_handshakes_accepted = quic.accepted_handshakes;
        stats.quic_handshakes_outgoing = quic.outgoing_handshakes;
        stats.quic_handshakes_refused = quic.refused_handshakes;
        stats.quic_handshakes_ignored = quic.ignored_handshakes;
        stats
    }

    /// Injects or shows faults. Refused with status 403 unless the config enables chaos.
    pub fn chaos(&self, op: &ChaosOp) -> Result<ChaosView, ApiError> {
        let Some(chaos) = &self.shared.chaos else {
            return Err(ApiError {
                status: 403,
                message: "fault injection is not enabled in this node's config".into(),
            });
        };
        let view = lock(chaos).apply(op)?;
        tracing::info!(member = %self.shared.local, ?op, "chaos");
        Ok(view)
    }

    /// Closes every connection, stops every task and waits (bounded) for peers to
    /// acknowledge. Sends after this are counted as `shutdown` and dropped.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.closing.store(true, Ordering::Release);
        shared
            .endpoint
            .close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
        lock(&shared.peers).clear();
        let mut tasks = std::mem::take(&mut *lock(&shared.tasks));
        tasks.shutdown().await;
        let drain = Duration::from_millis(SHUTDOWN_DRAIN_MS);
        let _ = tokio::time::timeout(drain, shared.endpoint.wait_idle()).await;
        tracing::info!(member = %shared.local, "transport stopped");
    }
}

/// The endpoint's stateless reset key and connection id key, both derived from the
/// cluster's private key and the replica so that a restarted process still recognizes
/// the connection ids of its previous one and answers their packets with a stateless
/// reset the peer accepts. The peer then drops that connection at once instead of
/// sending into it until the idle timeout.
fn endpoint_config(identity: &ClusterIdentity, local: &MemberId) -> quinn::EndpointConfig {
    use ring::hmac;
    let secret = hmac::Key::new(
        hmac::HMAC_SHA256,
        &identity.stateless_reset_secret(local.replica.0),
    );
    let reset_key = hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&secret, b"reset").as_ref());
    let cid_tag = hmac::sign(&secret, b"connection-id");
    let mut cid_key = [0; 8];
    cid_key.copy_from_slice(&cid_tag.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    // Sealed datagrams are told apart by QUIC's fixed bit: QUIC must never clear it.
    config.grease_quic_bit(false);
    // The socket drops every other version before quinn sees it.
    config.supported_versions(vec![socket::QUIC_VERSION_1]);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// A member id for unit tests.
#[cfg(test)]
fn test_member(cluster: &str, replica: u16) -> MemberId {
    MemberId {
        cluster: ClusterId::new(cluster).unwrap(),
        replica: shoal_proto::ReplicaId(replica),
    }
}

/// A seed for loss decisions that differs between nodes and needs no clock.
fn chaos_seed(local: &MemberId, addr: SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (local, addr).hash(&mut hasher);
    hasher.finish()
}
