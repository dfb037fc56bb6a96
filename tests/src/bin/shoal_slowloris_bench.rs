//! `shoal-slowloris-bench`: one real `shoal` node (standalone backend) under a slowloris
//! flood, measured. It asserts nothing; it prints figures.
//!
//! The node runs with the default `[http]` limits and a health listener. For each entry
//! of `--addresses`, `--clients` slow clients open connections to the API listener from
//! that many loopback addresses (127.1.0.x), send one byte of a request head that never
//! ends per second, and reconnect once closed. After a ramp, `/healthz` is probed on the
//! health listener and on the API listener, every `--probe-ms` each, with a
//! `--probe-timeout-ms` client timeout (the kubelet's default is 1 s), for `--load-s`.
//! A phase without load comes first, for comparison.
//!
//! Printed per phase and listener: probes, answered 200 in time, refused (503 or
//! closed at once), timed out, other errors, and p50/p99/max latency of the answered
//! ones; then the deltas of the node's own counters (`shoal_http_connections_total`,
//! `shoal_http_timeouts_total`, `shoal_http_connection_errors_total`). The table goes to
//! stdout, then one JSON line; `--json` prints only the JSON line. Progress goes to
//! stderr. Every wait for a condition has a deadline.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::mesh::shoal_binary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

/// Most slow clients one run may open.
const CLIENTS_MAX: u16 = 5_000;
/// How long the node may take to answer `/readyz` on both listeners.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `/metrics` may take to answer once a flood has stopped.
const METRICS_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a condition is checked again.
const RECHECK: Duration = Duration::from_millis(50);
/// Between starting a flood and probing (an observation window: the flood's clients
/// connect over its first second and fill the slots).
const RAMP: Duration = Duration::from_secs(3);
/// How often each slow client sends a byte, and reconnects once closed.
const SLOW_BYTE_EVERY: Duration = Duration::from_secs(1);
/// One exchange of the bench's own small client (metrics, readiness), at most.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// File descriptors the bench needs beyond one per slow client.
const SPARE_FDS: u64 = 256;

#[derive(Debug, Parser)]
#[command(about = "A shoal node under a slowloris flood: /healthz latency on both listeners")]
struct Args {
    /// Slow clients per flood phase.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=i64::from(CLIENTS_MAX)))]
    clients: u16,
    /// The flood phases: how many loopback source addresses the clients share, one
    /// phase per value.
    #[arg(long, value_delimiter = ',', default_values_t = [1u8, 50], value_parser = clap::value_parser!(u8).range(1..=250))]
    addresses: Vec<u8>,
    /// Probing time per phase, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
    load_s: u64,
    /// Between probes on each listener, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    probe_ms: u64,
    /// A probe's client timeout, in milliseconds.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    probe_timeout_ms: u64,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
    /// Keep the node's directory (config, certificates, log) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// The wall clock: the bench measures a real process in real time.
#[allow(clippy::disallowed_methods)] // the one place the bench reads the clock
fn now() -> Instant {
    Instant::now()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_files(u64::from(args.clients) + SPARE_FDS)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let dir = tempfile::tempdir().context("no temporary directory")?;
    let mut node = Node::start(dir.path())?;
    let outcome = runtime.block_on(run(&node, &args));
    node.stop();
    if args.keep {
        eprintln!("keeping {}", dir.keep().display());
    }
    let phases = match outcome {
        Ok(phases) => phases,
        Err(e) => {
            eprintln!("the bench stopped early: {e:#}\n{}", node.log_tail());
            return Err(e);
        }
    };
    if !args.json {
        print_table(&phases, &args);
    }
    println!("{}", to_json(&phases, &args));
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to `needed` if it is below (up to the hard limit).
fn raise_open_files(needed: u64) -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|soft| soft >= needed) {
        return Ok(());
    }
    if limit.maximum.is_some_and(|hard| hard < needed) {
        bail!(
            "{needed} file descriptors are needed, the hard limit is {:?}",
            limit.maximum
        );
    }
    let raised = Rlimit {
        current: Some(needed),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).context("cannot raise RLIMIT_NOFILE")
}

/// The phases: without load, then one flood per `--addresses` value.
async fn run(node: &Node, args: &Args) -> anyhow::Result<Vec<Phase>> {
    node.wait_ready().await?;
    let mut phases = Vec::new();
    eprintln!("probing without load for {} s", args.load_s);
    phases.push(node.phase("no load".to_owned(), 0, args).await?);
    for &addresses in &args.addresses {
        eprintln!(
            "{} slow clients from {addresses} address(es), probing for {} s",
            args.clients, args.load_s
        );
        let name = format!("{} slow / {addresses} addr", args.clients);
        phases.push(node.phase(name, addresses, args).await?);
    }
    Ok(phases)
}

/// One `shoal run` process and its addresses.
struct Node {
    api: SocketAddr,
    health: SocketAddr,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Certificates (`shoal certs`), a config with a health listener, and the process.
    fn start(dir: &Path) -> anyhow::Result<Self> {
        let shoal = shoal_binary().map_err(|e| anyhow::anyhow!("{e}"))?;
        let certs = dir.join("certs");
        let certs_text = certs.to_string_lossy().into_owned();
        shoal_command(&shoal, &["certs", "init", "--dir", &certs_text])?;
        let issue = ["certs", "issue", "--ca", &certs_text, "--cluster", "bench"];
        shoal_command(&shoal, &issue)?;
        std::fs::create_dir_all(dir.join("standalone").join("in"))?;
        let api = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()?));
        let health = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()?));
        let quic = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_port()?));
        let config = dir.join("shoal.toml");
        std::fs::write(&config, config_text(quic, api, health))?;
        let log = dir.join("shoal.log");
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(&shoal);
        // The bench's own SHOAL_* variables are not the node's configuration.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SHOAL_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {}", shoal.display()))?;
        eprintln!("shoal node: api {api}, health {health}");
        Ok(Self {
            api,
            health,
            log,
            child: Some(child),
        })
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = now() + NODE_READY_TIMEOUT;
        for addr in [self.health, self.api] {
            while !matches!(get(addr, "/readyz").await, Ok((200, _))) {
                if now() > deadline {
                    bail!("{addr} not ready within {NODE_READY_TIMEOUT:?}");
                }
                tokio::time::sleep(RECHECK).await;
            }
        }
        Ok(())
    }

    /// `/metrics` from the API listener, retried until it answers.
    async fn metrics(&self) -> anyhow::Result<String> {
        let deadline = now() + METRICS_TIMEOUT;
        loop {
            match get(self.api, "/metrics").await {
                Ok((200, body)) => return Ok(body),
                other if now() > deadline => bail!("no /metrics: {other:?}"),
                _ => tokio::time::sleep(RECHECK).await,
            }
        }
    }

    /// A flood from `addresses` loopback addresses (none for 0), probed on both
    /// listeners; the node's counters as deltas over the phase.
    async fn phase(&self, name: String, addresses: u8, args: &Args) -> anyhow::Result<Phase> {
        let before = counters(&self.metrics().await?);
        let closed = Arc::new(AtomicU64::new(0));
        let mut flood = JoinSet::new();
        if addresses > 0 {
            let start = tokio::time::Instant::now();
            for i in 0..args.clients {
                let from = Ipv4Addr::new(
                    127,
                    1,
                    0,
                    u8::try_from(i % u16::from(addresses)).unwrap_or(0) + 1,
                );
                let first = start + SLOW_BYTE_EVERY * u32::from(i) / u32::from(args.clients);
                flood.spawn(slow_client(from, self.api, first, Arc::clone(&closed)));
            }
            tokio::time::sleep(RAMP).await;
        }
        let (health, api) = tokio::join!(probe(self.health, args), probe(self.api, args));
        flood.shutdown().await;
        let after = counters(&self.metrics().await?);
        Ok(Phase {
            name,
            probes: vec![("health", health), ("api", api)],
            counters: deltas(&before, after),
            slow_closed: closed.load(Ordering::Relaxed),
        })
    }

    /// SIGTERM, and a kill if it has not exited within 10 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && now() < deadline {
            std::thread::sleep(RECHECK);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn shoal_command(shoal: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(shoal).args(args).output()?;
    if !output.status.success() {
        bail!(
            "shoal {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn config_text(quic: SocketAddr, api: SocketAddr, health: SocketAddr) -> String {
    format!(
        r#"# Written by shoal-slowloris-bench: the default [http] limits, with a health listener.
cluster = "bench"
preset = "lan"
listen = "{quic}"
data_dir = "data"

[tls]
ca = "certs/ca.crt"
cert = "certs/bench.crt"
key = "certs/bench.key"
clusterset_dir = "certs"

[http]
listen = "{api}"
health_listen = "{health}"

[backend]
kind = "standalone"
dir = "standalone"

[log]
filter = "warn"
"#
    )
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

// ---- clients -------------------------------------------------------------------------

/// `GET path` with `Connection: close`: everything the server sent until it closed.
async fn exchange(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response)
}

/// The status of an HTTP/1.1 response, and its body.
fn parse_response(response: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(response);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// `GET path`: the status and the body, within `EXCHANGE_TIMEOUT`.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(addr, path)).await??;
    parse_response(&response).with_context(|| format!("not an HTTP response: {response:?}"))
}

/// The byte a slow client sends `n`th: a request line and headers, then a header value
/// that never ends.
fn slow_byte(n: usize) -> u8 {
    const PREFIX: &[u8] = b"GET /v1/status HTTP/1.1\r\nHost: slow\r\nX-Slow: ";
    PREFIX.get(n).copied().unwrap_or(b'a')
}

/// One slow client: from `first` on, connects from `from`, sends a byte per
/// `SLOW_BYTE_EVERY`, and reconnects when closed, until aborted.
async fn slow_client(
    from: Ipv4Addr,
    to: SocketAddr,
    first: tokio::time::Instant,
    closed: Arc<AtomicU64>,
) {
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

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(from, 0)))?;
    socket.connect(to).await
}

/// How one probe ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ProbeResult {
    /// 200 within the timeout, after this long.
    Ok(Duration),
    /// 503, or closed without an answer: the node refused the connection.
    Refused,
    /// No answer within the timeout.
    TimedOut,
    /// Anything else (another status, a reset, no connection).
    Failed,
}

/// Probes `GET /healthz` on `addr` every `--probe-ms` for `--load-s`.
async fn probe(addr: SocketAddr, args: &Args) -> Vec<ProbeResult> {
    let timeout = Duration::from_millis(args.probe_timeout_ms);
    let until = now() + Duration::from_secs(args.load_s);
    let mut tick = tokio::time::interval(Duration::from_millis(args.probe_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut results = Vec::new();
    while now() < until {
        tick.tick().await;
        let sent = now();
        let answer = tokio::time::timeout(timeout, exchange(addr, "/healthz")).await;
        let result = match answer.map(|r| r.map(|bytes| parse_response(&bytes).map(|(s, _)| s))) {
            Ok(Ok(Some(200))) => ProbeResult::Ok(sent.elapsed()),
            // Closed at once, with the node's 503 or before it could be read.
            Ok(Ok(Some(503) | None)) => ProbeResult::Refused,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => ProbeResult::Refused,
            Ok(Ok(Some(_)) | Err(_)) => ProbeResult::Failed,
            Err(_) => ProbeResult::TimedOut,
        };
        results.push(result);
    }
    results
}

// ---- the report ----------------------------------------------------------------------

/// One phase's figures.
#[derive(Debug)]
struct Phase {
    name: String,
    /// Per listener (`health`, `api`), every probe's result.
    probes: Vec<(&'static str, Vec<ProbeResult>)>,
    /// The node's connection counters that moved, by sample, as deltas.
    counters: Vec<(String, u64)>,
    /// How often a slow client was closed by the node (and reconnected).
    slow_closed: u64,
}

/// The samples of the three HTTP connection families.
fn counters(metrics: &str) -> Vec<(String, u64)> {
    const FAMILIES: [&str; 3] = [
        "shoal_http_connections_total{",
        "shoal_http_timeouts_total{",
        "shoal_http_connection_errors_total{",
    ];
    metrics
        .lines()
        .filter(|l| FAMILIES.iter().any(|f| l.starts_with(f)))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The samples of `after` that grew since `before`, by how much.
fn deltas(before: &[(String, u64)], after: Vec<(String, u64)>) -> Vec<(String, u64)> {
    after
        .into_iter()
        .map(|(sample, n)| {
            let was = before
                .iter()
                .find(|(b, _)| *b == sample)
                .map_or(0, |(_, v)| *v);
            (sample, n.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// How a listener's probes ended, and the latency of those answered 200 in time.
struct Summary {
    total: usize,
    ok: usize,
    refused: usize,
    timed_out: usize,
    failed: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

fn summarize(results: &[ProbeResult]) -> Summary {
    let mut latencies: Vec<f64> = results
        .iter()
        .filter_map(|r| match r {
            ProbeResult::Ok(d) => Some(d.as_secs_f64() * 1_000.0),
            _ => None,
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let rank = |q: f64| -> Option<f64> {
        let i = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
        latencies.get(i).copied()
    };
    let count = |want: ProbeResult| results.iter().filter(|r| **r == want).count();
    Summary {
        total: results.len(),
        ok: latencies.len(),
        refused: count(ProbeResult::Refused),
        timed_out: count(ProbeResult::TimedOut),
        failed: count(ProbeResult::Failed),
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: latencies.last().copied(),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn print_table(phases: &[Phase], args: &Args) {
    println!(
        "\n/healthz probes every {} ms per listener, {} ms client timeout, {} s per phase",
        args.probe_ms, args.probe_timeout_ms, args.load_s
    );
    println!(
        "{:<22} {:<8} {:>6} {:>6} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8}",
        "phase",
        "listener",
        "probes",
        "ok",
        "refused",
        "timeout",
        "error",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for phase in phases {
        for (listener, results) in &phase.probes {
            let s = summarize(results);
            println!(
                "{:<22} {:<8} {:>6} {:>6} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8}",
                phase.name,
                listener,
                s.total,
                s.ok,
                s.refused,
                s.timed_out,
                s.failed,
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.max_ms)
            );
        }
    }
    for phase in phases {
        println!(
            "\n{}: node counters over the phase (slow clients closed: {})",
            phase.name, phase.slow_closed
        );
        for (sample, n) in &phase.counters {
            println!("  {sample} +{n}");
        }
    }
}

fn to_json(phases: &[Phase], args: &Args) -> Value {
    let phases: Vec<Value> = phases
        .iter()
        .map(|p| {
            let listeners: serde_json::Map<String, Value> = p
                .probes
                .iter()
                .map(|(listener, results)| {
                    let s = summarize(results);
                    let figures = json!({
                        "probes": s.total, "ok": s.ok, "refused": s.refused,
                        "timed_out": s.timed_out, "failed": s.failed,
                        "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms,
                    });
                    ((*listener).to_owned(), figures)
                })
                .collect();
            let counters: serde_json::Map<String, Value> = p
                .counters
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({
                "phase": p.name, "listeners": listeners,
                "counters": counters, "slow_closed": p.slow_closed,
            })
        })
        .collect();
    json!({
        "bench": "slowloris",
        "clients": args.clients,
        "probe_ms": args.probe_ms,
        "probe_timeout_ms": args.probe_timeout_ms,
        "load_s": args.load_s,
        "phases": phases,
    })
}
