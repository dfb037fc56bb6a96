//! The sockets: one UDP socket and one TCP listener on the same address, and the task
//! that rebuilds the zone when the imports change. Every query goes through the rate
//! table, then `message::handle`; this module only moves bytes and counts.
//!
//! - UDP: one task reads datagrams one at a time into a fixed buffer (a query larger
//!   than [`UDP_QUERY_BYTES_MAX`] arrives cut, fails to decode and is counted
//!   `malformed`), answers and reads the next: no task per datagram, no queue but the
//!   kernel's.
//! - TCP: at most `tcp_connections_max` connections, and
//!   [`TCP_CONNECTIONS_PER_CLIENT_MAX`] from one address; one more is closed at once.
//!   A connection must send each query's length prefix within the idle timeout and the
//!   query within the same timeout again; it answers at most
//!   [`TCP_QUERIES_PER_CONNECTION_MAX`] queries, each answer written within the timeout.
//! - The zone: the driver publishes each new version of the imports into a `watch`
//!   (the latest wins: a burst of changes costs one build); the builder task builds the
//!   zone on the blocking pool and publishes it into another `watch`, which every query
//!   reads (a reference count, never a wait on a build).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::build::build;
use super::message::handle;
use super::rate::{CLIENTS_MAX, ClientRates};
use super::stats::DnsStats;
use super::zone::Zone;
use super::{DnsError, DnsLimits, ImportsFeed};
use crate::runtime::backend::Imports;

/// The largest UDP query read. Queries are a header and one name (at most 255 bytes)
/// plus an OPT; the rest is slack.
pub const UDP_QUERY_BYTES_MAX: usize = 4_096;
/// The largest TCP query read; a longer length prefix closes the connection.
pub const TCP_QUERY_BYTES_MAX: usize = 4_096;
/// Most TCP connections from one client address at once.
pub const TCP_CONNECTIONS_PER_CLIENT_MAX: usize = 8;
/// Most queries answered on one TCP connection before it is closed.
pub const TCP_QUERIES_PER_CONNECTION_MAX: u32 = 1_024;
/// Tries to find a port free for both UDP and TCP when `listen` has port 0.
const BIND_ATTEMPTS_MAX: usize = 16;
/// The pause after a failed `accept` or `recv` (for example out of file descriptors),
/// so the loop does not spin while the condition lasts.
const SOCKET_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The bound sockets, not yet serving.
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    limits: DnsLimits,
}

/// What the server's tasks share.
#[derive(Debug)]
struct Shared {
    limits: DnsLimits,
    stats: Arc<DnsStats>,
    rates: Mutex<ClientRates>,
    zone: watch::Receiver<Option<Arc<Zone>>>,
    /// TCP connections per client address.
    tcp_clients: Mutex<HashMap<IpAddr, usize>>,
}

impl Shared {
    /// Takes one query from `ip`'s budget; false: over the limit.
    fn admit(&self, ip: IpAddr) -> bool {
        let mut rates = self.rates.lock().unwrap_or_else(PoisonError::into_inner);
        let before = rates.evicted;
        let admitted = rates.admit(ip, Instant::now());
        let evicted = rates.evicted - before;
        drop(rates);
        if evicted > 0 {
            self.stats
                .clients_evicted
                .fetch_add(evicted, Ordering::Relaxed);
        }
        admitted
    }

    /// Answers `bytes` from `src` and counts the outcome.
    fn answer(&self, bytes: &[u8], src: SocketAddr, protocol: Protocol) -> Option<Vec<u8>> {
        let limited = !self.admit(src.ip());
        let zone = self.zone.borrow().clone();
        let handled = handle(bytes, src, protocol, zone.as_deref(), limited);
        self.stats.count(handled.outcome);
        if handled.capped {
            self.stats.answers_capped.fetch_add(1, Ordering::Relaxed);
        }
        handled.reply
    }
}

/// The running server: its tasks, stopped by [`DnsRunning::shutdown`] or when dropped.
#[derive(Debug)]
pub struct DnsRunning {
    tasks: JoinSet<()>,
    stats: Arc<DnsStats>,
    addr: SocketAddr,
}

impl DnsRunning {
    pub fn stats(&self) -> Arc<DnsStats> {
        Arc::clone(&self.stats)
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops every task (queries in progress are dropped: DNS clients retry).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `listen`; with port 0, on one port free for both.
    pub async fn bind(listen: SocketAddr, limits: DnsLimits) -> Result<Self, DnsError> {
        let attempts = if listen.port() == 0 {
            BIND_ATTEMPTS_MAX
        } else {
            1
        };
        let mut last = None;
        for _ in 0..attempts {
            let udp = UdpSocket::bind(listen)
                .await
                .map_err(|source| DnsError::Bind {
                    protocol: "udp",
                    addr: listen,
                    source,
                })?;
            let addr = udp.local_addr().map_err(|source| DnsError::Bind {
                protocol: "udp",
                addr: listen,
                source,
            })?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(Self { udp, tcp, limits }),
                Err(source) => {
                    last = Some(DnsError::Bind {
                        protocol: "tcp",
                        addr,
                        source,
                    });
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap_or_else(|_| {
            self.tcp
                .local_addr()
                .expect("a bound listener has an address")
        })
    }

    /// Starts serving. The zone answers SERVFAIL until the first imports arrive through
    /// the returned feed.
    pub fn start(self) -> (DnsRunning, ImportsFeed) {
        let addr = self.local_addr();
        let stats = Arc::new(DnsStats::default());
        let (imports_tx, imports_rx) = watch::channel(None);
        let (zone_tx, zone_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            rates: Mutex::new(ClientRates::new(self.limits.rate, CLIENTS_MAX)),
            limits: self.limits,
            stats: Arc::clone(&stats),
            zone: zone_rx,
            tcp_clients: Mutex::new(HashMap::new()),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(build_zones(imports_rx, zone_tx, Arc::clone(&stats)));
        tasks.spawn(serve_udp(self.udp, Arc::clone(&shared)));
        tasks.spawn(serve_tcp(self.tcp, shared));
        info!(dns = %addr, "DNS server for clusterset.local serving");
        let feed = ImportsFeed {
            tx: imports_tx,
            stats: Arc::clone(&stats),
        };
        (DnsRunning { tasks, stats, addr }, feed)
    }
}

/// Builds a zone for each new version of the imports, off the runtime's workers.
async fn build_zones(
    mut imports: watch::Receiver<Option<Arc<Imports>>>,
    zone: watch::Sender<Option<Arc<Zone>>>,
    stats: Arc<DnsStats>,
) {
    let mut serial: u32 = 0;
    while imports.changed().await.is_ok() {
        let Some(latest) = imports.borrow_and_update().clone() else {
            continue;
        };
        serial = serial.wrapping_add(1);
        let built = tokio::task::spawn_blocking(move || build(&latest, serial)).await;
        let Ok(built) = built else {
            warn!("building the DNS zone failed; the previous zone stays");
            continue;
        };
        stats
            .zone_names
            .store(built.names() as u64, Ordering::Relaxed);
        stats
            .zone_hostnames_skipped
            .store(built.hostnames_skipped, Ordering::Relaxed);
        stats.zone_builds.fetch_add(1, Ordering::Relaxed);
        debug!(serial, names = built.names(), "DNS zone built");
        zone.send_replace(Some(Arc::new(built)));
    }
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buffer = vec![0; UDP_QUERY_BYTES_MAX];
    loop {
        let (len, src) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // On Linux a previous answer's ICMP error can surface here; nothing to
                // do but go on.
                debug!(%error, "DNS UDP receive failed");
                tokio::time::sleep(SOCKET_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(reply) = shared.answer(&buffer[..len], src, Protocol::Udp) else {
            continue;
        };
        if let Err(error) = socket.send_to(&reply, src).await {
            debug!(%error, client = %src, "DNS UDP answer not sent");
            shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(
        shared.limits.tcp_connections_max,
    ));
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "DNS TCP accept failed");
                tokio::time::sleep(SOCKET_ERROR_PAUSE).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            shared.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            debug!(client = %peer, "DNS TCP connection refused: every slot in use");
            continue;
        };
        let Some(client) = ClientSlot::take(&shared, peer.ip()) else {
            shared.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            debug!(client = %peer, "DNS TCP connection refused: the client's share in use");
            continue;
        };
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            serve_connection(stream, peer, &shared).await;
            drop((slot, client));
        });
    }
}

/// One of a client's TCP connection slots, given back when dropped.
struct ClientSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ClientSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Self> {
        let mut clients = shared
            .tcp_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = clients.entry(ip).or_default();
        if *held >= TCP_CONNECTIONS_PER_CLIENT_MAX {
            return None;
        }
        *held += 1;
        Some(Self {
            shared: Arc::clone(shared),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self
            .shared
            .tcp_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = clients.get_mut(&self.ip) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                clients.remove(&self.ip);
            }
        }
    }
}

/// Answers the queries of one TCP connection (each framed by a two-byte length, RFC
/// 1035 4.2.2) until it closes, stalls, misbehaves or reaches its bound.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let timeout = shared.limits.tcp_idle_timeout;
    let mut buffer = vec![0; TCP_QUERY_BYTES_MAX];
    for _ in 0..TCP_QUERIES_PER_CONNECTION_MAX {
        let mut prefix = [0; 2];
        match tokio::time::timeout(timeout, stream.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return, // closed
            Err(_) => {
                shared.stats.tcp_timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let len = usize::from(u16::from_be_bytes(prefix));
        if len > TCP_QUERY_BYTES_MAX {
            shared.stats.count(super::stats::Outcome::Malformed);
            debug!(client = %peer, len, "DNS TCP query too long; connection closed");
            return;
        }
        let query = &mut buffer[..len];
        match tokio::time::timeout(timeout, stream.read_exact(query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                shared.stats.tcp_timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let Some(reply) = shared.answer(query, peer, Protocol::Tcp) else {
            // Malformed: a stream that sent garbage may be out of step; close it.
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return; // cannot happen: the encoder bounds a TCP answer at u16::MAX
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        match tokio::time::timeout(timeout, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                debug!(%error, client = %peer, "DNS TCP answer not sent");
                shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                shared.stats.tcp_timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
