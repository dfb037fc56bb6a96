#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]
// Tests own their tasks: the fake driver, the server and the slow clients run on the
// test's runtime.
#![allow(clippy::disallowed_methods)]
//! The HTTP server against slow clients and floods, on loopback: 500 slow clients on the
//! API listener while `/healthz` on the health listener answers within 1 s throughout;
//! the header-read and idle timeouts; the global and per-client caps, which close a
//! connection at once instead of leaving it in the backlog; a graceful shutdown.
//!
//! Client addresses other than 127.0.0.1 are other loopback addresses (127.0.0.0/8 is
//! all loopback on Linux), bound before connecting.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_node::runtime::api::{ApiRequest, MetricsSnapshot, StatusView};
use shoal_node::runtime::http::{HEALTH_LIMITS, Listeners, ServerLimits, client, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Every wait for a condition ends within this.
const DEADLINE: Duration = Duration::from_secs(10);
/// How often a condition is checked again.
const RECHECK: Duration = Duration::from_millis(20);

// ---- the harness ---------------------------------------------------------------------

fn status_view() -> StatusView {
    StatusView {
        cluster: "east".into(),
        replica: 0,
        generation: 1,
        publisher: true,
        listen: "127.0.0.1:7100".into(),
        uptime_ms: 1_000,
        isolated: false,
        stale_for_ms: None,
        records: 0,
        own_version: 0,
        clusters_alive: 1,
        clusters_down: 0,
    }
}

/// Answers `Status` and `Metrics` at once, unless `held` is given: then each `Status`
/// reply is handed to the test, which answers it when it likes. Drops the rest.
async fn fake_driver(
    mut requests: mpsc::Receiver<ApiRequest>,
    held: Option<mpsc::UnboundedSender<oneshot::Sender<StatusView>>>,
) {
    while let Some(request) = requests.recv().await {
        match (request, &held) {
            (ApiRequest::Status(reply), Some(held)) => {
                let _ = held.send(reply);
            }
            (ApiRequest::Status(reply), None) => {
                let _ = reply.send(status_view());
            }
            (ApiRequest::Metrics(reply), _) => {
                let _ = reply.send(MetricsSnapshot::default());
            }
            _ => {}
        }
    }
}

struct Server {
    api: SocketAddr,
    health: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(limits: ServerLimits) -> Self {
        Self::start_holding(limits, None).await
    }

    async fn start_holding(
        limits: ServerLimits,
        held: Option<mpsc::UnboundedSender<oneshot::Sender<StatusView>>>,
    ) -> Self {
        let (driver, requests) = mpsc::channel(64);
        tokio::spawn(fake_driver(requests, held));
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (api_addr, health_addr) = (api.local_addr().unwrap(), health.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            api,
            health: Some(health),
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_with(listeners, driver, shutdown, limits));
        Self {
            api: api_addr,
            health: health_addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the server and checks that it returns cleanly.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = timeout(DEADLINE, &mut self.task).await;
        result.expect("the server stops").unwrap().unwrap();
    }

    /// The API listener's `/metrics`, fetched from `from`. A refusal is retried: a
    /// connection's slot is freed just after its client sees it close.
    async fn metrics(&self, from: Ipv4Addr) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match get_from(from, self.api, "/metrics").await {
                Ok((200, body)) => return body,
                other => assert!(Instant::now() < deadline, "no /metrics: {other:?}"),
            }
            tokio::time::sleep(RECHECK).await;
        }
    }

    /// One sample of the API listener's `/metrics` (0 when absent).
    async fn metric(&self, from: Ipv4Addr, sample: &str) -> u64 {
        sample_value(&self.metrics(from).await, sample)
    }

    /// Waits until `sample` is at least `n`; returns its value.
    async fn metric_reaches(&self, from: Ipv4Addr, sample: &str, n: u64) -> u64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let value = self.metric(from, sample).await;
            if value >= n {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{sample} stayed at {value}, below {n}"
            );
            tokio::time::sleep(RECHECK).await;
        }
    }
}

fn sample_value(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn api_sample(family: &str, label: &str, value: &str) -> String {
    format!("{family}{{listener=\"api\",{label}=\"{value}\"}}")
}

fn timeouts(kind: &str) -> String {
    api_sample("shoal_http_timeouts_total", "kind", kind)
}

fn connections(outcome: &str) -> String {
    api_sample("shoal_http_connections_total", "outcome", outcome)
}

fn loopback(a: u8, b: u8, c: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, a, b, c)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(from, 0)))?;
    socket.connect(to).await
}

/// `GET path` from `from` with `Connection: close`: the status and the body.
async fn get_from(from: Ipv4Addr, to: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = connect_from(from, to).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = timeout(DEADLINE, exchange).await??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// Sends `GET path` on a kept-alive connection and reads one response (by its
/// `content-length`); returns its status.
async fn keep_alive_get(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = timeout(DEADLINE, stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "closed mid-response after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    let mut body = vec![0u8; length];
    timeout(DEADLINE, stream.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    head[9..12].parse().unwrap()
}

/// Reads until the server closes `stream` (end of stream or reset); what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match timeout(DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server did not close the connection; it sent {got:?}"),
        }
    }
}

/// A refusal of a connection that sent nothing: a 503, then closed at once.
fn assert_refused(got: &[u8]) {
    assert!(
        got.starts_with(b"HTTP/1.1 503") && got.ends_with(b"too many connections\n"),
        "a refused connection got {:?}",
        String::from_utf8_lossy(got)
    );
}

// ---- the flood -----------------------------------------------------------------------

/// Slow clients and the addresses they come from: `HEAVY_CLIENTS` from one address,
/// first, so the per-client cap (8) refuses some of them, then the rest from 50 other
/// addresses, so the global cap (64) refuses most of them.
const SLOW_CLIENTS: usize = 500;
const HEAVY_CLIENTS: usize = 20;
const SLOW_CLIENT_ADDRESSES: usize = 50;
/// The others start over one second after this, once the heavy address holds its slots.
const OTHERS_AFTER: Duration = Duration::from_millis(200);
/// Each slow client sends one byte of a head that never ends this often, and
/// reconnects at the same pace once closed.
const SLOW_BYTE_EVERY: Duration = Duration::from_secs(1);
/// How long `/healthz` is probed on the health listener during the flood, how often,
/// and the answer's bound (the issue's: "answering within 1 s throughout").
const PROBE_FOR: Duration = Duration::from_secs(10);
const PROBE_EVERY: Duration = Duration::from_millis(100);
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// File descriptors the flood needs in this process: the clients' and the server's ends.
const FLOOD_FDS: u64 = 2 * SLOW_CLIENTS as u64 + 256;

/// The byte a slow client sends `n`th: a request line and headers, then a header value
/// that never ends.
fn slow_byte(n: usize) -> u8 {
    const PREFIX: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
    PREFIX.get(n).copied().unwrap_or(b'a')
}

/// One slow client: connects, sends a byte per `SLOW_BYTE_EVERY`, and reconnects when
/// the server closes it, until aborted.
async fn slow_client(from: Ipv4Addr, to: SocketAddr, first: Instant, closed: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval_at(first, SLOW_BYTE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; 256];
    loop {
        tick.tick().await;
        let Ok(mut stream) = connect_from(from, to).await else {
            continue;
        };
        let mut sent = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if stream.write_all(&[slow_byte(sent)]).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The slow clients, on a runtime of their own (as other machines would be), so they
/// take nothing from the server's runtime but the sockets' work.
struct Flood {
    runtime: Option<tokio::runtime::Runtime>,
    /// How often the server closed a slow client (which then reconnected).
    closed: Arc<AtomicU64>,
}

impl Flood {
    fn start(api: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let closed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let heavy = loopback(1, 1, 1);
        for _ in 0..HEAVY_CLIENTS {
            runtime.spawn(slow_client(heavy, api, start, Arc::clone(&closed)));
        }
        let others = SLOW_CLIENTS - HEAVY_CLIENTS;
        for i in 0..others {
            let from = loopback(1, 0, u8::try_from(i % SLOW_CLIENT_ADDRESSES + 1).unwrap());
            let spread =
                SLOW_BYTE_EVERY * u32::try_from(i).unwrap() / u32::try_from(others).unwrap();
            let first = start + OTHERS_AFTER + spread;
            runtime.spawn(slow_client(from, api, first, Arc::clone(&closed)));
        }
        Self {
            runtime: Some(runtime),
            closed,
        }
    }

    /// Drops every slow client (their sockets close as their tasks go).
    fn stop(self) {
        drop(self);
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        // Never blocks, so it may run on the test's runtime (and while it unwinds).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from /proc (None where it cannot be read).
fn open_files_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    Some(soft.parse().unwrap_or(u64::MAX)) // "unlimited"
}

/// Waits until a fresh connection to the API from `from` is refused: the flood holds
/// every slot.
async fn wait_until_saturated(api: SocketAddr, from: Ipv4Addr) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok((503, _)) | Err(_) = get_from(from, api, "/healthz").await {
            return;
        }
        assert!(Instant::now() < deadline, "the flood never filled the API");
        tokio::time::sleep(RECHECK).await;
    }
}

/// Probes `/healthz` on `addr` every `PROBE_EVERY` for `PROBE_FOR`; the failures (an
/// error, a status other than 200, or no answer within `PROBE_BOUND`), and the count.
async fn probe_health(addr: SocketAddr) -> (Vec<String>, usize) {
    let mut failures = Vec::new();
    let mut probes = 0;
    let start = Instant::now();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    while start.elapsed() < PROBE_FOR {
        tick.tick().await;
        probes += 1;
        let sent = Instant::now();
        let at = sent.duration_since(start);
        match timeout(PROBE_BOUND, client::get(addr, "/healthz")).await {
            Ok(Ok(r)) if r.status == 200 => {}
            Ok(Ok(r)) => failures.push(format!("at {at:?}: status {}", r.status)),
            Ok(Err(e)) => failures.push(format!("at {at:?}: {e}")),
            Err(_) => failures.push(format!("at {at:?}: no answer within {PROBE_BOUND:?}")),
        }
    }
    (failures, probes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_listener_answers_within_a_second_throughout_a_slowloris_flood() {
    if let Some(soft) = open_files_soft_limit() {
        assert!(
            soft >= FLOOD_FDS,
            "this test needs {FLOOD_FDS} file descriptors, RLIMIT_NOFILE is {soft}: raise it (ulimit -n)"
        );
    }
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    assert_eq!(
        (limits.connections_max, limits.connections_per_client_max),
        (64, 8)
    );
    let server = Server::start(limits).await;
    let flood = Flood::start(server.api);
    let outsider = loopback(2, 0, 1);
    wait_until_saturated(server.api, outsider).await;

    let (failures, probes) = probe_health(server.health).await;
    assert!(
        failures.is_empty(),
        "{} of {probes} health probes failed during the flood:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The flood lasted the whole probing, and its clients were being cut and coming back.
    wait_until_saturated(server.api, outsider).await;
    assert!(
        flood.closed.load(Ordering::Relaxed) > 0,
        "no slow client was ever closed"
    );

    flood.stop();
    // The API's own /healthz recovers once the flood stops.
    let deadline = Instant::now() + DEADLINE;
    while !matches!(
        get_from(outsider, server.api, "/healthz").await,
        Ok((200, _))
    ) {
        assert!(
            Instant::now() < deadline,
            "the API's /healthz did not recover"
        );
        tokio::time::sleep(RECHECK).await;
    }
    for (sample, what) in [
        (connections("refused_full"), "refusals at the global cap"),
        (
            connections("refused_per_client"),
            "refusals at the per-client cap",
        ),
        (timeouts("header_read"), "header-read timeouts"),
    ] {
        let n = server.metric(outsider, &sample).await;
        assert!(n > 0, "no {what} ({sample} = {n})");
    }
    let health_refused =
        "shoal_http_connections_total{listener=\"health\",outcome=\"refused_full\"}";
    assert_eq!(server.metric(outsider, health_refused).await, 0);
    server.stop().await;
}

// ---- timeouts ------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_request_head_is_cut_at_the_header_read_timeout() {
    // Nothing but the header timer can end it this early: the idle timeout is far off
    // (the config refuses this order; the server takes it).
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(400),
        idle_timeout: DEADLINE,
        ..ServerLimits::default()
    };
    let server = Server::start(limits).await;
    let mut stream = TcpStream::connect(server.api).await.unwrap();
    // A byte every 50 ms keeps it from ever being idle; the head never ends.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut sent = 0;
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    let deadline = tokio::time::sleep(DEADLINE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if stream.write_all(&[slow_byte(sent)]).await.is_err() {
                    break;
                }
                sent += 1;
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
            () = &mut deadline => panic!("the slow head was never cut ({sent} bytes sent)"),
        }
    }
    assert!(got.is_empty(), "a cut head got {got:?}");
    let local = Ipv4Addr::LOCALHOST;
    assert_eq!(
        server
            .metric_reaches(local, &timeouts("header_read"), 1)
            .await,
        1
    );
    assert_eq!(server.metric(local, &timeouts("idle")).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let server = Server::start(limits).await;
    let mut stream = TcpStream::connect(server.api).await.unwrap();
    // Kept alive across requests…
    assert_eq!(keep_alive_get(&mut stream, "/healthz").await, 200);
    assert_eq!(keep_alive_get(&mut stream, "/v1/status").await, 200);
    // …and closed once idle, long before the header-read timer would.
    assert!(read_until_closed(&mut stream).await.is_empty());
    // A connection that never sends a byte is idle from the start.
    let mut silent = TcpStream::connect(server.api).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_empty());
    let local = Ipv4Addr::LOCALHOST;
    assert_eq!(server.metric_reaches(local, &timeouts("idle"), 2).await, 2);
    assert_eq!(server.metric(local, &timeouts("header_read")).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_connection_is_closed_at_its_lifetime_whatever_it_does() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        connection_lifetime: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let server = Server::start(limits).await;
    let mut stream = TcpStream::connect(server.api).await.unwrap();
    assert_eq!(keep_alive_get(&mut stream, "/healthz").await, 200);
    // Neither idle nor slow enough for the other deadlines: only the lifetime ends it.
    assert!(read_until_closed(&mut stream).await.is_empty());
    let local = Ipv4Addr::LOCALHOST;
    assert_eq!(
        server.metric_reaches(local, &timeouts("lifetime"), 1).await,
        1
    );
    assert_eq!(server.metric(local, &timeouts("idle")).await, 0);
    assert_eq!(server.metric(local, &timeouts("header_read")).await, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_request_waiting_on_the_driver_is_never_idle() {
    let limits = ServerLimits {
        reply_wait: DEADLINE,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let (held_tx, mut held) = mpsc::unbounded_channel();
    let server = Server::start_holding(limits, Some(held_tx)).await;
    let api = server.api;
    let waiting = tokio::spawn(async move {
        let mut stream = TcpStream::connect(api).await.unwrap();
        keep_alive_get(&mut stream, "/v1/status").await
    });
    let reply = timeout(DEADLINE, held.recv()).await.unwrap().unwrap();
    // A silent connection opened after the request started is closed as idle: the
    // idle timeout has passed for the waiting request too.
    let mut silent = TcpStream::connect(server.api).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_empty());
    reply.send(status_view()).unwrap();
    assert_eq!(timeout(DEADLINE, waiting).await.unwrap().unwrap(), 200);
    let local = Ipv4Addr::LOCALHOST;
    assert_eq!(server.metric_reaches(local, &timeouts("idle"), 1).await, 1);
    server.stop().await;
}

// ---- caps ----------------------------------------------------------------------------

#[tokio::test]
async fn the_per_client_cap_refuses_the_next_connection_from_one_address_only() {
    let limits = ServerLimits {
        connections_max: 8,
        connections_per_client_max: 2,
        ..ServerLimits::default()
    };
    let server = Server::start(limits).await;
    let crowded = loopback(0, 0, 1);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(crowded, server.api).await.unwrap();
        assert_eq!(keep_alive_get(&mut stream, "/healthz").await, 200);
        held.push(stream);
    }
    let mut third = connect_from(crowded, server.api).await.unwrap();
    assert_refused(&read_until_closed(&mut third).await);
    // Another address is served while the first is at its cap.
    let mut other = connect_from(loopback(0, 0, 2), server.api).await.unwrap();
    assert_eq!(keep_alive_get(&mut other, "/healthz").await, 200);
    let text = server.metrics(loopback(0, 0, 3)).await;
    assert_eq!(sample_value(&text, &connections("refused_per_client")), 1);
    assert_eq!(sample_value(&text, &connections("refused_full")), 0);
    // The two held, the other address's, and this /metrics request's.
    assert_eq!(sample_value(&text, &connections("accepted")), 4);
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn the_global_cap_refuses_at_once_and_a_closed_connection_frees_its_slot() {
    let limits = ServerLimits {
        connections_max: 1,
        ..ServerLimits::default()
    };
    let server = Server::start(limits).await;
    let mut holder = connect_from(loopback(0, 0, 1), server.api).await.unwrap();
    assert_eq!(keep_alive_get(&mut holder, "/healthz").await, 200);
    let newcomer = loopback(0, 0, 2);
    let mut refused = connect_from(newcomer, server.api).await.unwrap();
    assert_refused(&read_until_closed(&mut refused).await);
    drop(holder);
    let deadline = Instant::now() + DEADLINE;
    while !matches!(
        get_from(newcomer, server.api, "/healthz").await,
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(RECHECK).await;
    }
    assert!(server.metric(newcomer, &connections("refused_full")).await >= 1);
    server.stop().await;
}

// ---- the health listener and shutdown ------------------------------------------------

#[tokio::test]
async fn the_health_listener_serves_health_and_readiness_only() {
    let server = Server::start(ServerLimits::default()).await;
    let local = Ipv4Addr::LOCALHOST;
    assert_eq!(
        get_from(local, server.health, "/healthz").await.unwrap(),
        (200, "ok".into())
    );
    assert_eq!(
        get_from(local, server.health, "/readyz").await.unwrap().0,
        200
    );
    assert_eq!(
        get_from(local, server.health, "/v1/status")
            .await
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        get_from(local, server.health, "/metrics").await.unwrap().0,
        404
    );
    // Both stay on the API listener.
    assert_eq!(
        get_from(local, server.api, "/healthz").await.unwrap().0,
        200
    );
    assert_eq!(get_from(local, server.api, "/readyz").await.unwrap().0, 200);
    let health_accepted = "shoal_http_connections_total{listener=\"health\",outcome=\"accepted\"}";
    assert_eq!(server.metric(local, health_accepted).await, 4);
    assert_eq!(HEALTH_LIMITS, ServerLimits::default().health);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_a_request_in_progress_finish() {
    let limits = ServerLimits {
        reply_wait: DEADLINE,
        ..ServerLimits::default()
    };
    let (held_tx, mut held) = mpsc::unbounded_channel();
    let mut server = Server::start_holding(limits, Some(held_tx)).await;
    let api = server.api;
    let in_progress = tokio::spawn(async move {
        let mut stream = TcpStream::connect(api).await.unwrap();
        keep_alive_get(&mut stream, "/v1/status").await
    });
    let reply = timeout(DEADLINE, held.recv()).await.unwrap().unwrap();
    let _ = server.stop.take().unwrap().send(());
    // Both listeners close.
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(server.api).await.is_ok()
        || TcpStream::connect(server.health).await.is_ok()
    {
        assert!(
            Instant::now() < deadline,
            "a listener still accepts after shutdown"
        );
        tokio::time::sleep(RECHECK).await;
    }
    assert!(
        !server.task.is_finished(),
        "the server left before its request finished"
    );
    reply.send(status_view()).unwrap();
    assert_eq!(timeout(DEADLINE, in_progress).await.unwrap().unwrap(), 200);
    timeout(DEADLINE, &mut server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
