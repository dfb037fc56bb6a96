//! The `shoal` binary: the node (`shoal run`), its tools, and the local demo.

// The binary is runtime: it reads clocks and spawns tasks.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_node::runtime::api::{ChaosOp, Direction};
use shoal_node::runtime::backend::kubernetes::leader::LeaderTiming;
use shoal_node::runtime::backend::kubernetes::{self, KubeSettings, KubernetesBackend};
use shoal_node::runtime::backend::{Backend, Standalone, StandaloneBackend};
use shoal_node::runtime::certs::{self, ClusterIdentity};
use shoal_node::runtime::config::{BackendConfig, RuntimeConfig};
use shoal_node::runtime::dns::DnsServer;
use shoal_node::runtime::driver::Driver;
use shoal_node::runtime::http::{self, client};
use shoal_node::runtime::preflight::{self, Prepared};
use shoal_node::runtime::transport::{Transport, TransportConfig};
use shoal_node::runtime::{API_QUEUE_MAX, demo};
use shoal_proto::{ClusterId, MemberId, Message};

const USAGE: &str = "usage:
  shoal demo [--dir DIR]                three clusters on loopback: DNS and HTTP traffic, affinity failover, withdrawal, lease, partition, heal
  shoal run --config FILE               run a node (FILE is TOML; SHOAL_* environment variables override it)
  shoal config check FILE               validate a config file and print what it means
  shoal certs init --dir DIR [--days N] create a ClusterSet CA (ca.crt, ca.key)
  shoal certs issue --ca DIR --cluster ID [--out DIR] [--days N]
                                        issue a cluster's certificate and ed25519 key, signed by the CA
  shoal status [--api ADDR]             peers, services, imports and leases of a running node
  shoal lease get|acquire|release NAME [--api ADDR]
  shoal chaos cut CLUSTER [--direction both|inbound|outbound] [--api ADDR]
  shoal chaos restore CLUSTER | loss RATE [--cluster CLUSTER] | clear | show  [--api ADDR]
  shoal inspect [--datagram]            decode one wire message from stdin (hex or raw bytes) as JSON
  shoal version

ADDR defaults to 127.0.0.1:7101, the default HTTP listen address.";

const DEFAULT_API: &str = "127.0.0.1:7101";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["version"] | ["--version"] => {
            println!("shoal {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        ["inspect"] => inspect(false),
        ["inspect", "--datagram"] => inspect(true),
        ["run", "--config", file] => runtime().and_then(|rt| rt.block_on(run(Path::new(file)))),
        ["config", "check", file] => config_check(Path::new(file)),
        ["certs", "init", rest @ ..] => certs_init(rest),
        ["certs", "issue", rest @ ..] => certs_issue(rest),
        ["status", rest @ ..] => runtime().and_then(|rt| rt.block_on(status(rest))),
        ["lease", op, name, rest @ ..] => {
            runtime().and_then(|rt| rt.block_on(lease(op, name, rest)))
        }
        ["chaos", rest @ ..] => runtime().and_then(|rt| rt.block_on(chaos(rest))),
        ["demo", rest @ ..] => runtime().and_then(|rt| rt.block_on(run_demo(rest))),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `--name value` from a flag list.
fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1])
}

fn api_addr(args: &[&str]) -> anyhow::Result<SocketAddr> {
    let text = flag(args, "--api").unwrap_or(DEFAULT_API);
    text.parse()
        .with_context(|| format!("--api {text:?} is not an address like 127.0.0.1:7101"))
}

fn days(args: &[&str]) -> anyhow::Result<u32> {
    flag(args, "--days")
        .map_or(Ok(365), str::parse)
        .context("--days must be a whole number")
}

async fn run(file: &Path) -> anyhow::Result<ExitCode> {
    // Every check before a socket is bound; `shoal config check` runs the same.
    let Prepared { config, identity } = preflight::prepare(file, std::env::vars(), init_logging)?;
    let (transport, inbound) = Transport::bind(TransportConfig {
        listen: config.listen,
        local: MemberId {
            cluster: config.cluster.clone(),
            replica: config.replica,
        },
        identity: Arc::clone(&identity),
        limits: config.transport_limits(),
        chaos_enabled: config.chaos_enabled,
    })
    .await?;
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("http.listen {}", config.http_listen))?;
    let health_listener = match config.http_health_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.health_listen {addr}"))?,
        ),
        None => None,
    };
    let dns = match config.dns {
        Some(dns) => Some(
            DnsServer::bind(dns.listen, dns.limits)
                .await
                .with_context(|| format!("dns.listen {}", dns.listen))?,
        ),
        None => None,
    };
    tracing::info!(
        cluster = %config.cluster,
        replica = config.replica.0,
        quic = %transport.local_addr(),
        http = %config.http_listen,
        health = ?config.http_health_listen,
        dns = ?dns.as_ref().map(DnsServer::local_addr),
        "shoal node starting"
    );
    let listeners = Listeners {
        http: http::Listeners {
            api: http_listener,
            health: health_listener,
        },
        dns,
    };
    match config.backend.clone() {
        BackendConfig::Standalone {
            dir,
            poll_ms,
            limits,
        } => {
            let inner = StandaloneBackend::open(&dir, config.cluster.clone(), config.network)?
                .with_limits(limits);
            let backend = Standalone::new(inner, dir, poll_ms);
            serve(config, identity, transport, inbound, backend, listeners).await
        }
        BackendConfig::Kubernetes {
            kubeconfig,
            context,
            namespace,
            identity: elector,
            leader_lease_ms,
            leader_renew_ms,
            leader_retry_ms,
        } => {
            let settings = KubeSettings {
                kubeconfig,
                context,
                namespace,
                identity: elector,
                leader: LeaderTiming {
                    lease: Duration::from_millis(leader_lease_ms),
                    renew_deadline: Duration::from_millis(leader_renew_ms),
                    retry: Duration::from_millis(leader_retry_ms),
                },
                cluster: config.cluster.clone(),
                clusterset: config.clusterset.clone(),
                network: config.network,
            };
            let client = kubernetes::client(&settings).await?;
            let backend = KubernetesBackend::start(settings, client);
            serve(config, identity, transport, inbound, backend, listeners).await
        }
    }
}

/// The bound sockets besides QUIC's: the HTTP listeners, and the DNS server's if
/// `[dns]` enables it.
struct Listeners {
    http: http::Listeners,
    dns: Option<DnsServer>,
}

/// Runs the driver with `backend`, the HTTP API and the DNS server until a signal or a
/// fatal error.
async fn serve<B: Backend + 'static>(
    config: RuntimeConfig,
    identity: Arc<ClusterIdentity>,
    transport: Transport,
    inbound: shoal_node::runtime::transport::InboundQueue,
    backend: B,
    listeners: Listeners,
) -> anyhow::Result<ExitCode> {
    let http_limits = config.http_limits;
    let http_listeners = listeners.http;
    let mut driver = Driver::start(config, identity, transport, inbound, backend)?;
    let mut dns = None;
    if let Some(server) = listeners.dns {
        let (running, feed) = server.start();
        driver = driver.with_dns(feed);
        dns = Some(running);
    }
    let (api_tx, api_rx) = tokio::sync::mpsc::channel(API_QUEUE_MAX);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let shutdown = async move {
        let _ = http_stop.changed().await;
    };
    // The server bounds its own drain (`ServerLimits::drain_bound`).
    let server = tokio::spawn(http::serve_with(
        http_listeners,
        api_tx,
        shutdown,
        http_limits,
    ));
    let result = driver.run(api_rx, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(dns) = dns {
        dns.shutdown().await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging(config: &RuntimeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// `shoal run`'s pre-bind checks, without binding: a failure is returned and printed
/// by `main` exactly as `shoal run` prints it.
fn config_check(file: &Path) -> anyhow::Result<ExitCode> {
    let prepared = preflight::prepare(file, std::env::vars(), |_| {})?;
    let trusted: Vec<String> = prepared
        .identity
        .trust
        .clusters()
        .map(ToString::to_string)
        .collect();
    println!("{}: ok", file.display());
    println!("{}", prepared.config.summary());
    println!("trusted     {}", trusted.join(", "));
    for warning in prepared.warnings() {
        println!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

fn certs_init(args: &[&str]) -> anyhow::Result<ExitCode> {
    let dir = PathBuf::from(flag(args, "--dir").context("certs init needs --dir DIR")?);
    std::fs::create_dir_all(&dir)?;
    certs::init_ca(&dir, days(args)?)?;
    println!("wrote {0}/ca.crt and {0}/ca.key", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn certs_issue(args: &[&str]) -> anyhow::Result<ExitCode> {
    let ca = PathBuf::from(flag(args, "--ca").context("certs issue needs --ca DIR")?);
    let cluster =
        ClusterId::new(flag(args, "--cluster").context("certs issue needs --cluster ID")?)?;
    let out = flag(args, "--out").map_or_else(|| ca.clone(), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    certs::issue(&ca, &cluster, &out, days(args)?)?;
    println!("wrote {0}/{1}.crt and {0}/{1}.key", out.display(), cluster);
    Ok(ExitCode::SUCCESS)
}

async fn status(args: &[&str]) -> anyhow::Result<ExitCode> {
    let api = api_addr(args)?;
    let text = http::table::fetch_and_render(api)
        .await
        .with_context(|| format!("cannot reach the node's API at {api}"))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn lease(op: &str, name: &str, args: &[&str]) -> anyhow::Result<ExitCode> {
    let api = api_addr(args)?;
    let path = format!("/v1/leases/{name}");
    let response = match op {
        "get" => client::get(api, &path).await?,
        "acquire" => client::post_json(api, &path, &()).await?,
        "release" => client::delete(api, &path).await?,
        _ => bail!("lease takes get, acquire or release, not {op:?}"),
    };
    println!("{}", String::from_utf8_lossy(&response.body));
    Ok(if response.status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn chaos(args: &[&str]) -> anyhow::Result<ExitCode> {
    let api = api_addr(args)?;
    let op = match args {
        ["cut", cluster, ..] => ChaosOp::Cut {
            cluster: (*cluster).to_owned(),
            direction: match flag(args, "--direction").unwrap_or("both") {
                "both" => Direction::Both,
                "inbound" => Direction::Inbound,
                "outbound" => Direction::Outbound,
                other => bail!("--direction takes both, inbound or outbound, not {other:?}"),
            },
        },
        ["restore", cluster, ..] => ChaosOp::Restore {
            cluster: (*cluster).to_owned(),
        },
        ["loss", rate, ..] => ChaosOp::Loss {
            cluster: flag(args, "--cluster").map(str::to_owned),
            rate: rate
                .parse()
                .context("loss RATE is a fraction from 0.0 to 1.0")?,
        },
        ["clear", ..] => ChaosOp::Clear,
        ["show", ..] | [] => ChaosOp::Show,
        _ => bail!("chaos takes cut, restore, loss, clear or show"),
    };
    let response = client::post_json(api, "/v1/chaos", &op).await?;
    println!("{}", String::from_utf8_lossy(&response.body));
    Ok(if response.status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_demo(args: &[&str]) -> anyhow::Result<ExitCode> {
    let dir = match flag(args, "--dir") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("shoal-demo-{}", std::process::id())),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} is not empty", dir.display());
    }
    let shoal = std::env::current_exe().context("cannot find this binary")?;
    let summary =
        tokio::time::timeout(std::time::Duration::from_secs(110), demo::run(&dir, &shoal))
            .await
            .context("the demo did not finish within 110 s")??;
    println!(
        "\ndemo done in {:.1} s: converged in {} ms, failed over to eu-west {} ms after \
         us-east's last endpoint died (readiness detected at {} ms), eu-west withdrawn {} ms \
         after it died, {} took the lease over from {} (token {}), the stale write was \
         rejected. Files: {}",
        summary.total_ms as f64 / 1_000.0,
        summary.converged_ms,
        summary.failover_ms,
        summary.detection_ms,
        summary.withdrawal_ms,
        summary.majority_holder,
        summary.cut_off_cluster,
        summary.majority_token,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(datagram: bool) -> anyhow::Result<ExitCode> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("cannot read stdin")?;
    let bytes = decode_hex(&input).unwrap_or(input);
    let decoded = if datagram {
        Message::decode_datagram(&bytes)
    } else {
        Message::decode_frame(&bytes)
    };
    match decoded {
        Ok(message) => {
            println!("{}", serde_json::to_string_pretty(&message)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("shoal inspect: {} bytes do not decode: {e}", bytes.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Hex text (whitespace ignored) to bytes; `None` if the input is not hex.
fn decode_hex(input: &[u8]) -> Option<Vec<u8>> {
    let digits: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}
