//! `shoal demo`: three clusters as three `shoal` processes on loopback, driven through
//! their HTTP APIs, with real traffic: a client resolves `rebel-base` through its node's
//! DNS server and sends HTTP requests to the endpoints, real servers on loopback. A
//! timeline is printed as it goes.
//!
//! Every step waits for a condition with a deadline and fails the demo (exit 1) if it
//! does not happen: the demo is also the three-process test's scenario. It writes
//! `summary.json` with what it measured.
//!
//! - `app`: the `rebel-base` HTTP servers, and the kubelet the demo stands in for.
//! - `client`: the DNS-resolving HTTP client.

mod app;
mod client;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use shoal_proto::ClusterId;

use self::app::{Kubelet, Server};
use self::client::{Client, tally};
use super::api::{ChaosOp, Direction, ImportView, LeaseView};
use super::certs;
use super::dns::client::ResponseCode;
use super::http::client as http;

/// The demo's clusters, in order. The first two export `default/rebel-base`, the third
/// `payments/fraud-detection`.
pub const CLUSTERS: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];
/// Requests the client sends in each phase.
const REQUESTS: usize = 20;
/// The lease the demo fences writes with.
pub const LEASE: &str = "payments-write-leader";
/// Longest wait for any one step.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// How often the client retries while it waits for a failover: the failover time is
/// measured to within this.
const FAILOVER_POLL: Duration = Duration::from_millis(10);

/// What the demo measured, written to `summary.json`.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub converged_ms: u64,
    /// Which cluster answered the client's requests in us-east, per phase: affinity
    /// `none`, `local`, the local endpoints dead, and back.
    pub requests_none: BTreeMap<String, u32>,
    pub requests_local: BTreeMap<String, u32>,
    pub requests_failover: BTreeMap<String, u32>,
    pub requests_back: BTreeMap<String, u32>,
    /// From killing us-east's last endpoint to the stand-in kubelet writing it not
    /// ready (readiness detection).
    pub detection_ms: u64,
    /// From killing us-east's last endpoint to the first answer from eu-west.
    pub failover_ms: u64,
    /// From restarting us-east's endpoints to the first answer from us-east again.
    pub failback_ms: u64,
    /// From killing eu-west to its name leaving us-east's DNS (NXDOMAIN).
    pub dns_withdrawn_ms: u64,
    pub withdrawn_cluster: String,
    pub withdrawal_ms: u64,
    pub restored_ms: u64,
    pub first_holder: String,
    pub first_token: u64,
    pub cut_off_cluster: String,
    pub majority_holder: String,
    pub majority_token: u64,
    pub cut_off_write_ready: bool,
    pub stale_write_rejected: bool,
    pub healed_ms: u64,
    pub total_ms: u64,
}

/// One cluster's process and addresses, and its `rebel-base` endpoints if it runs any.
struct Cluster {
    name: &'static str,
    quic: SocketAddr,
    api: SocketAddr,
    dns: SocketAddr,
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    /// Where its `rebel-base` endpoints listen (none in ap-southeast).
    endpoints: Vec<SocketAddr>,
    servers: Vec<Server>,
    kubelet: Option<Kubelet>,
}

/// A data store fenced by the lease: it rejects a write with a lower token than the
/// highest it has seen. This is what an application's store must do.
#[derive(Debug, Default)]
struct FencedStore {
    highest: u64,
    rows: Vec<(u64, String)>,
}

impl FencedStore {
    fn write(&mut self, token: u64, row: &str) -> bool {
        if token < self.highest {
            return false;
        }
        self.highest = token;
        self.rows.push((token, row.to_owned()));
        true
    }
}

struct Timeline {
    start: Instant,
}

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:6.2}s] {}", what.as_ref());
    }

    fn ms(&self, since: Instant) -> u64 {
        u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn free_port() -> anyhow::Result<u16> {
    let socket = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(socket.local_addr()?.port())
}

/// A loopback port free for UDP and TCP both (a DNS server listens on both).
fn free_dns_port() -> anyhow::Result<u16> {
    for _ in 0..32 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").context("no free loopback port")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for both UDP and TCP")
}

/// Where a cluster's `rebel-base` endpoints listen: two loopback addresses of its own
/// (`127.0.10.x` in us-east, `127.0.20.x` in eu-west), on the application's port.
fn endpoints_of(name: &str, port: u16) -> Vec<SocketAddr> {
    let net = match name {
        "us-east" => 10,
        "eu-west" => 20,
        _ => return Vec::new(),
    };
    (1..=2)
        .map(|host| SocketAddr::from(([127, 0, net, host], port)))
        .collect()
}

/// Runs the demo in `dir` (created; must be empty or absent). Returns the summary.
pub async fn run(dir: &Path, shoal: &Path) -> anyhow::Result<Summary> {
    let timeline = Timeline {
        start: Instant::now(),
    };
    let mut clusters = prepare(dir)?;
    timeline.say(format!(
        "certificates and configs for {} in {}",
        CLUSTERS.join(", "),
        dir.display()
    ));
    let result = scenario(&timeline, &mut clusters, shoal, dir).await;
    for cluster in &mut clusters {
        stop(cluster);
    }
    let mut summary = result?;
    summary.total_ms = timeline.ms(timeline.start);
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(dir.join("summary.json"), json)?;
    Ok(summary)
}

/// Certificates, configs and the exports each cluster starts with.
fn prepare(dir: &Path) -> anyhow::Result<Vec<Cluster>> {
    let certs_dir = dir.join("certs");
    std::fs::create_dir_all(&certs_dir)?;
    certs::init_ca(&certs_dir, 30)?;
    let app_port = free_port()?;
    let mut clusters = Vec::new();
    for name in CLUSTERS {
        let cluster = ClusterId::new(name)?;
        certs::issue(&certs_dir, &cluster, &certs_dir, 30)?;
        let cdir = dir.join(name);
        std::fs::create_dir_all(cdir.join("standalone").join("in"))?;
        clusters.push(Cluster {
            name,
            quic: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            api: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            dns: SocketAddr::from(([127, 0, 0, 1], free_dns_port()?)),
            config: cdir.join("shoal.toml"),
            dir: cdir,
            child: None,
            endpoints: endpoints_of(name, app_port),
            servers: Vec::new(),
            kubelet: None,
        });
    }
    for c in &clusters {
        std::fs::write(&c.config, config_text(c, &clusters))?;
        write_exports(c, None)?;
    }
    Ok(clusters)
}

/// Writes the cluster's Services and ServiceExports into `in/`; `affinity` annotates
/// the ServiceExport of `rebel-base`.
fn write_exports(c: &Cluster, affinity: Option<&str>) -> anyhow::Result<()> {
    let exports = match c.endpoints.first() {
        Some(endpoint) => rebel_base(day_of(c.name), endpoint.port(), affinity),
        None => fraud_detection(),
    };
    std::fs::write(c.dir.join("standalone/in/exports.yaml"), exports)?;
    Ok(())
}

/// The day of January its ServiceExport was created: us-east's is the oldest.
fn day_of(name: &str) -> u8 {
    match name {
        "us-east" => 1,
        _ => 2,
    }
}

/// Starts the cluster's `rebel-base` servers and its stand-in kubelet.
async fn start_app(c: &mut Cluster) -> anyhow::Result<()> {
    c.servers.clear();
    for endpoint in c.endpoints.clone() {
        c.servers.push(Server::start(endpoint, c.name).await?);
    }
    if c.kubelet.is_none() && !c.endpoints.is_empty() {
        let in_dir = c.dir.join("standalone/in");
        c.kubelet = Some(Kubelet::start(in_dir, "rebel-base", c.endpoints.clone())?);
    }
    Ok(())
}

fn config_text(c: &Cluster, all: &[Cluster]) -> String {
    let mut seeds = String::new();
    for other in all.iter().filter(|o| o.name != c.name) {
        let _ = write!(
            seeds,
            "\n[[seeds]]\ncluster = \"{}\"\nreplica = 0\naddr = \"{}\"\n",
            other.name, other.quic
        );
    }
    let voters: Vec<String> = CLUSTERS.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        r#"# Generated by `shoal demo`.
cluster = "{name}"
replica = 0
preset = "lan"
listen = "{quic}"
data_dir = "data"
members_expected = 3
{seeds}
[tls]
ca = "../certs/ca.crt"
cert = "../certs/{name}.crt"
key = "../certs/{name}.key"
clusterset_dir = "../certs"

[http]
listen = "{api}"

[dns]
listen = "{dns}"

[backend]
kind = "standalone"
dir = "standalone"

[lease]
voters = [{voters}]

[chaos]
enabled = true

[log]
filter = "info"
"#,
        name = c.name,
        quic = c.quic,
        api = c.api,
        dns = c.dns,
        voters = voters.join(", "),
    )
}

fn rebel_base(day: u8, target_port: u16, affinity: Option<&str>) -> String {
    let annotations = affinity.map_or_else(String::new, |a| {
        format!("\n  annotations:\n    shoal.dev/affinity: {a}")
    });
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: rebel-base
  namespace: default
spec:
  type: ClusterIP
  clusterIP: 10.96.0.{day}
  ports:
  - name: http
    port: 80
    targetPort: {target_port}
    protocol: TCP
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata:
  name: rebel-base
  namespace: default
  creationTimestamp: "2026-01-0{day}T00:00:00Z"{annotations}
"#
    )
}

fn fraud_detection() -> String {
    r#"apiVersion: v1
kind: Service
metadata:
  name: fraud-detection
  namespace: payments
spec:
  type: ClusterIP
  clusterIP: 10.96.1.7
  ports:
  - name: grpc
    port: 9090
    protocol: TCP
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata:
  name: fraud-detection
  namespace: payments
  creationTimestamp: "2026-01-03T00:00:00Z"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: fraud-detection-x7k2p
  namespace: payments
  labels:
    kubernetes.io/service-name: fraud-detection
addressType: IPv4
ports:
- name: grpc
  port: 9090
  protocol: TCP
endpoints:
- addresses: ["10.30.2.1"]
  conditions: {ready: true, serving: true, terminating: false}
"#
    .to_owned()
}

fn spawn(cluster: &mut Cluster, shoal: &Path) -> anyhow::Result<()> {
    let log = std::fs::File::create(cluster.dir.join("shoal.log"))?;
    let child = Command::new(shoal)
        .arg("run")
        .arg("--config")
        .arg(&cluster.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", shoal.display()))?;
    cluster.child = Some(child);
    Ok(())
}

/// SIGKILL: no goodbye to peers, no flush beyond what was acknowledged.
fn stop(cluster: &mut Cluster) {
    if let Some(mut child) = cluster.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Polls `check` until it returns `Some`, or fails after the step deadline.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {STEP_DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn imports(api: SocketAddr) -> Option<Vec<ImportView>> {
    http::get(api, "/v1/imports").await.ok()?.json().ok()
}

/// Source clusters of one import, as `api` sees it.
async fn sources(api: SocketAddr, namespace: &str, name: &str) -> Option<Vec<String>> {
    let imports = imports(api).await?;
    let import = imports
        .iter()
        .find(|i| i.namespace == namespace && i.name == name);
    Some(import.map_or_else(Vec::new, |i| i.clusters.keys().cloned().collect()))
}

async fn lease(api: SocketAddr) -> Option<LeaseView> {
    http::get(api, &format!("/v1/leases/{LEASE}"))
        .await
        .ok()?
        .json()
        .ok()
}

/// Every given cluster imports rebel-base from `rebel` and fraud-detection from
/// ap-southeast.
async fn converged(apis: &[SocketAddr], rebel: &[&str]) -> Option<()> {
    for api in apis {
        let r = sources(*api, "default", "rebel-base").await?;
        let f = sources(*api, "payments", "fraud-detection").await?;
        if r != rebel.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
            || f != ["ap-southeast".to_owned()]
        {
            return None;
        }
    }
    Some(())
}

async fn scenario(
    timeline: &Timeline,
    clusters: &mut [Cluster],
    shoal: &Path,
    dir: &Path,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    start_all(timeline, clusters, shoal, &mut summary).await?;
    traffic(timeline, clusters, &mut summary).await?;
    let (first, first_token) = acquire_lease(timeline, clusters).await?;
    summary.first_holder = first.clone();
    summary.first_token = first_token;
    let mut store = FencedStore::default();
    store.write(first_token, &format!("written by {first}"));
    withdrawal(timeline, clusters, shoal, &mut summary).await?;
    fence_and_heal(timeline, clusters, &first, store, &mut summary).await?;
    show_yaml(timeline, dir)?;
    Ok(summary)
}

/// Starts the application, then the three nodes; waits for the imports to converge.
async fn start_all(
    timeline: &Timeline,
    clusters: &mut [Cluster],
    shoal: &Path,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for c in clusters.iter_mut().filter(|c| !c.endpoints.is_empty()) {
        start_app(c).await?;
        let endpoints: Vec<String> = c.endpoints.iter().map(ToString::to_string).collect();
        timeline.say(format!(
            "{}: rebel-base endpoints (HTTP servers answering with the cluster's name) on {}; \
             the demo plays the kubelet: it probes /healthz every {} ms and writes each endpoint's \
             ready condition into in/endpoints.yaml",
            c.name,
            endpoints.join(", "),
            app::PROBE_PERIOD.as_millis()
        ));
    }
    for c in clusters.iter_mut() {
        spawn(c, shoal)?;
        timeline.say(format!(
            "started {} (QUIC {}, API http://{}, DNS {})",
            c.name, c.quic, c.api, c.dns
        ));
    }
    for c in clusters.iter() {
        let api = c.api;
        wait_for(&format!("{} to be ready", c.name), || async move {
            let r = http::get(api, "/readyz").await.ok()?;
            (r.status == 200).then_some(())
        })
        .await?;
    }
    timeline.say("all three ready; us-east and eu-west export default/rebel-base, ap-southeast exports payments/fraud-detection");
    let apis: Vec<SocketAddr> = clusters.iter().map(|c| c.api).collect();
    wait_for("imports to converge", || converged(&apis, &BOTH)).await?;
    summary.converged_ms = timeline.ms(started);
    timeline.say(format!(
        "imports converged in {} ms: every cluster imports rebel-base from eu-west and us-east, fraud-detection from ap-southeast",
        summary.converged_ms
    ));
    Ok(())
}

/// The clusters that export rebel-base, in cluster order.
const BOTH: [&str; 2] = ["eu-west", "us-east"];

/// A client in us-east sends requests under affinity `none`, then `local`; us-east's
/// endpoints die and come back.
async fn traffic(
    timeline: &Timeline,
    clusters: &mut [Cluster],
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let (east_ips, west_ips) = (ips(&clusters[0]), ips(&clusters[1]));
    let mut client = Client::new(clusters[0].dns, clusters[0].endpoints[0].port());
    let all: Vec<IpAddr> = west_ips.iter().chain(&east_ips).copied().collect();
    wait_for("us-east's DNS to answer with all four endpoints", || {
        resolves_to(&client, client::REBEL_BASE, &all)
    })
    .await?;
    summary.requests_none = client.requests(REQUESTS).await;
    timeline.say(format!(
        "affinity none: {REQUESTS} requests from us-east to {} → {}",
        client::REBEL_BASE,
        tally(&summary.requests_none)
    ));
    expect_only(&summary.requests_none, &BOTH, "affinity none")?;

    for c in clusters.iter().filter(|c| !c.endpoints.is_empty()) {
        write_exports(c, Some("local"))?;
    }
    timeline.say("annotated both ServiceExports of rebel-base with shoal.dev/affinity: local");
    let east_api = clusters[0].api;
    wait_for("us-east to keep rebel-base local", || {
        traffic_is(east_api, "local")
    })
    .await?;
    wait_for("us-east's DNS to answer with its own endpoints", || {
        resolves_to(&client, client::REBEL_BASE, &east_ips)
    })
    .await?;
    summary.requests_local = client.requests(REQUESTS).await;
    timeline.say(format!(
        "affinity local: {REQUESTS} requests from us-east → {}",
        tally(&summary.requests_local)
    ));
    expect_only(&summary.requests_local, &["us-east"], "affinity local")?;
    let south = Client::new(clusters[2].dns, 0);
    wait_for(
        "ap-southeast's DNS to answer with all four endpoints",
        || resolves_to(&south, client::REBEL_BASE, &all),
    )
    .await?;
    timeline.say(
        "ap-southeast has no rebel-base endpoint of its own: under local it fails over to both remote clusters (all four addresses in its DNS)",
    );
    failover(timeline, clusters, &mut client, summary).await
}

/// us-east's endpoints die: its kubelet marks them not ready, and the client's
/// requests fail over to eu-west; restarted, they take the traffic back.
async fn failover(
    timeline: &Timeline,
    clusters: &mut [Cluster],
    client: &mut Client,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let killed = Instant::now();
    for server in &mut clusters[0].servers {
        server.kill();
    }
    timeline.say("killed both of us-east's rebel-base endpoints");
    first_answer_from(client, "eu-west").await?;
    summary.failover_ms = timeline.ms(killed);
    let kubelet = clusters[0]
        .kubelet
        .as_ref()
        .context("us-east runs the demo's kubelet")?;
    let readiness = kubelet.readiness.borrow().clone();
    if readiness.ready.iter().any(|r| *r) {
        bail!("eu-west answered while us-east's endpoints were still ready: {readiness:?}");
    }
    summary.detection_ms = ms_between(killed, readiness.written);
    timeline.say(format!(
        "failover: the first answer from eu-west came {} ms after the last local endpoint died \
         (the demo's kubelet wrote them not ready after {} ms; Shoal and DNS took the other {} ms)",
        summary.failover_ms,
        summary.detection_ms,
        summary.failover_ms.saturating_sub(summary.detection_ms)
    ));
    summary.requests_failover = client.requests(REQUESTS).await;
    timeline.say(format!(
        "local endpoints dead: {REQUESTS} requests from us-east → {}",
        tally(&summary.requests_failover)
    ));
    expect_only(&summary.requests_failover, &["eu-west"], "failover")?;

    let restarted = Instant::now();
    start_app(&mut clusters[0]).await?;
    timeline.say("restarted us-east's rebel-base endpoints");
    first_answer_from(client, "us-east").await?;
    summary.failback_ms = timeline.ms(restarted);
    summary.requests_back = client.requests(REQUESTS).await;
    timeline.say(format!(
        "back to local {} ms after the restart: {REQUESTS} requests from us-east → {}",
        summary.failback_ms,
        tally(&summary.requests_back)
    ));
    expect_only(&summary.requests_back, &["us-east"], "failback")
}

async fn acquire_lease(timeline: &Timeline, clusters: &[Cluster]) -> anyhow::Result<(String, u64)> {
    let apis: Vec<SocketAddr> = clusters.iter().map(|c| c.api).collect();
    for c in clusters {
        http::post_json(c.api, &format!("/v1/leases/{LEASE}"), &())
            .await
            .with_context(|| format!("acquire on {}", c.name))?;
    }
    let (first, first_token) = wait_for("a lease holder", || holder(&apis)).await?;
    timeline.say(format!(
        "{first} holds {LEASE} with fencing token {first_token}"
    ));
    Ok((first, first_token))
}

/// Kills eu-west, process and endpoints: withdrawn from the imports and from DNS;
/// then restarts it.
async fn withdrawal(
    timeline: &Timeline,
    clusters: &mut [Cluster],
    shoal: &Path,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let killed = 1;
    let apis: Vec<SocketAddr> = clusters.iter().map(|c| c.api).collect();
    let killed_at = Instant::now();
    stop(&mut clusters[killed]);
    clusters[killed].servers.clear();
    clusters[killed].kubelet = None;
    timeline.say("killed eu-west: its node (SIGKILL) and its rebel-base endpoints");
    let others = [apis[0], apis[2]];
    wait_for("eu-west's endpoints to be withdrawn", || {
        converged(&others, &["us-east"])
    })
    .await?;
    summary.withdrawn_cluster = "eu-west".into();
    summary.withdrawal_ms = timeline.ms(killed_at);
    timeline.say(format!(
        "eu-west's endpoints withdrawn everywhere {} ms after it died",
        summary.withdrawal_ms
    ));
    let east = Client::new(clusters[0].dns, 0);
    let by_name = "eu-west.rebel-base.default.svc.clusterset.local.";
    wait_for("eu-west to leave us-east's DNS", || async {
        let resolved = east.resolve(by_name).await.ok()?;
        (resolved.rcode == ResponseCode::NXDomain).then_some(())
    })
    .await?;
    summary.dns_withdrawn_ms = timeline.ms(killed_at);
    let south = Client::new(clusters[2].dns, 0);
    let east_ips = ips(&clusters[0]);
    wait_for(
        "ap-southeast's DNS to answer with us-east's endpoints only",
        || resolves_to(&south, client::REBEL_BASE, &east_ips),
    )
    .await?;
    timeline.say(format!(
        "DNS: {by_name} is NXDOMAIN at us-east ({} ms after the kill); ap-southeast resolves rebel-base to us-east's endpoints only",
        summary.dns_withdrawn_ms
    ));
    let restarted = Instant::now();
    start_app(&mut clusters[killed]).await?;
    spawn(&mut clusters[killed], shoal)?;
    wait_for("eu-west to come back", || converged(&apis, &BOTH)).await?;
    summary.restored_ms = timeline.ms(restarted);
    timeline.say(format!(
        "restarted eu-west from its store; imports whole again in {} ms",
        summary.restored_ms
    ));
    Ok(())
}

/// Cuts the lease holder's cluster off: only the majority side may hold the lease, and
/// the fenced store refuses the stale token. Then heals.
async fn fence_and_heal(
    timeline: &Timeline,
    clusters: &[Cluster],
    first: &str,
    mut store: FencedStore,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let apis: Vec<SocketAddr> = clusters.iter().map(|c| c.api).collect();
    let both = BOTH;
    let (holder_name, holder_token) = wait_for("a lease holder", || holder(&apis)).await?;
    if holder_name != first {
        timeline.say(format!(
            "{holder_name} took {LEASE} over when its holder died, with token {holder_token}"
        ));
        store.write(holder_token, &format!("written by {holder_name}"));
    }
    let cut = clusters
        .iter()
        .position(|c| c.name == holder_name)
        .context("the holder is one of the demo's clusters")?;
    partition(clusters, cut, true).await?;
    timeline.say(format!(
        "cut {holder_name} off from the other two (both directions)"
    ));
    let majority: Vec<SocketAddr> = clusters
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cut)
        .map(|(_, c)| c.api)
        .collect();
    let (new_holder, new_token) =
        wait_for("a holder on the majority side", || holder(&majority)).await?;
    let cut_view = wait_for("the cut-off cluster to stop holding", || async {
        let view = lease(apis[cut]).await?;
        (!view.write_ready).then_some(view)
    })
    .await?;
    timeline.say(format!(
        "{new_holder} (majority side) holds {LEASE} with token {new_token}; {holder_name} reports write_ready = {}",
        cut_view.write_ready
    ));
    let accepted = store.write(new_token, &format!("written by {new_holder}"));
    let stale = store.write(holder_token, &format!("late write by {holder_name}"));
    timeline.say(format!(
        "fenced store: write with token {new_token} {}, write with the stale token {holder_token} {}",
        if accepted { "accepted" } else { "REJECTED" },
        if stale { "ACCEPTED (bug)" } else { "rejected" }
    ));
    if new_token <= holder_token || stale || !accepted {
        bail!("fencing failed: new token {new_token}, old token {holder_token}");
    }
    summary.cut_off_cluster = holder_name.clone();
    summary.majority_holder = new_holder;
    summary.majority_token = new_token;
    summary.cut_off_write_ready = cut_view.write_ready;
    summary.stale_write_rejected = !stale;

    // Heal.
    let healed = Instant::now();
    partition(clusters, cut, false).await?;
    timeline.say(format!("healed the partition around {holder_name}"));
    wait_for("convergence after the heal", || async {
        converged(&apis, &both).await?;
        let holders = holder_count(&apis).await?;
        (holders == 1).then_some(())
    })
    .await?;
    summary.healed_ms = timeline.ms(healed);
    timeline.say(format!(
        "converged {} ms after the heal: one lease holder, imports equal everywhere",
        summary.healed_ms
    ));
    Ok(())
}

/// The one cluster among `apis` that reports write_ready, with its token.
async fn holder(apis: &[SocketAddr]) -> Option<(String, u64)> {
    let mut found = Vec::new();
    for api in apis {
        let view = lease(*api).await?;
        if view.write_ready {
            found.push((view.holder?, view.token?));
        }
    }
    (found.len() == 1).then(|| found.remove(0))
}

async fn holder_count(apis: &[SocketAddr]) -> Option<usize> {
    let mut count = 0;
    for api in apis {
        count += usize::from(lease(*api).await?.write_ready);
    }
    Some(count)
}

/// Cuts (or restores) every link between cluster `cut` and the others, on both ends.
async fn partition(clusters: &[Cluster], cut: usize, on: bool) -> anyhow::Result<()> {
    for (i, c) in clusters.iter().enumerate() {
        let peers: Vec<&str> = if i == cut {
            clusters
                .iter()
                .filter(|o| o.name != c.name)
                .map(|o| o.name)
                .collect()
        } else {
            vec![clusters[cut].name]
        };
        for peer in peers {
            let op = if on {
                ChaosOp::Cut {
                    cluster: peer.to_owned(),
                    direction: Direction::Both,
                }
            } else {
                ChaosOp::Restore {
                    cluster: peer.to_owned(),
                }
            };
            let r = http::post_json(c.api, "/v1/chaos", &op).await?;
            if r.status != 200 {
                bail!("chaos on {} answered {}", c.name, r.status);
            }
        }
    }
    Ok(())
}

/// Points at the generated objects and prints one of each kind.
fn show_yaml(timeline: &Timeline, dir: &Path) -> anyhow::Result<()> {
    let out = dir.join("ap-southeast/standalone/out");
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains("rebel-base") {
            files.insert(name, path);
        }
    }
    timeline.say(format!(
        "generated objects are in {}/*/standalone/out; ap-southeast's for rebel-base:",
        dir.display()
    ));
    for (name, path) in files
        .iter()
        .filter(|(n, _)| n.starts_with("serviceimport") || n.starts_with("endpointslice"))
    {
        println!("--- # {name}");
        print!("{}", std::fs::read_to_string(path)?);
    }
    Ok(())
}

fn ips(c: &Cluster) -> Vec<IpAddr> {
    c.endpoints.iter().map(SocketAddr::ip).collect()
}

fn ms_between(earlier: Instant, later: Instant) -> u64 {
    u64::try_from(later.saturating_duration_since(earlier).as_millis()).unwrap_or(u64::MAX)
}

/// `name` resolves at the client's DNS server to exactly `expected` (in any order).
async fn resolves_to(client: &Client, name: &str, expected: &[IpAddr]) -> Option<()> {
    let mut got = client.resolve(name).await.ok()?.addresses;
    got.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    (got == expected).then_some(())
}

/// The import of rebel-base at `api` gives `reason` for its active origins.
async fn traffic_is(api: SocketAddr, reason: &str) -> Option<()> {
    let imports = imports(api).await?;
    let import = imports
        .iter()
        .find(|i| i.namespace == "default" && i.name == "rebel-base")?;
    (import.traffic == reason).then_some(())
}

/// Sends requests until `cluster` answers, within the step deadline.
async fn first_answer_from(client: &mut Client, cluster: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        if client.request().await.is_ok_and(|who| who == cluster) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {STEP_DEADLINE:?} waiting for an answer from {cluster}");
        }
        tokio::time::sleep(FAILOVER_POLL).await;
    }
}

/// Every answer came from one of `clusters`, and each of them answered.
fn expect_only(
    answers: &BTreeMap<String, u32>,
    clusters: &[&str],
    phase: &str,
) -> anyhow::Result<()> {
    let answered: Vec<&str> = answers.keys().map(String::as_str).collect();
    if answered != clusters {
        bail!(
            "{phase}: expected answers from {} only, got {}",
            clusters.join(" and "),
            tally(answers)
        );
    }
    Ok(())
}
