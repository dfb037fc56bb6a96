//! `shoal demo`: three clusters as three `shoal` processes on loopback, driven through
//! their HTTP APIs, with a timeline printed as it goes.
//!
//! Every step waits for a condition with a deadline and fails the demo (exit 1) if it
//! does not happen: the demo is also the three-process test's scenario. It writes
//! `summary.json` with what it measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use shoal_proto::ClusterId;

use super::api::{ChaosOp, Direction, ImportView, LeaseView};
use super::certs;
use super::http::client;

/// The demo's clusters, in order. The first two export `default/rebel-base`, the third
/// `payments/fraud-detection`.
pub const CLUSTERS: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];
/// The lease the demo fences writes with.
pub const LEASE: &str = "payments-write-leader";
/// Longest wait for any one step.
const STEP_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// What the demo measured, written to `summary.json`.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub converged_ms: u64,
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

/// One cluster's process and addresses.
#[derive(Debug)]
struct Cluster {
    name: &'static str,
    quic: SocketAddr,
    api: SocketAddr,
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
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
            config: cdir.join("shoal.toml"),
            dir: cdir,
            child: None,
        });
    }
    for c in &clusters {
        std::fs::write(&c.config, config_text(c, &clusters))?;
        let exports = match c.name {
            "us-east" => rebel_base(10),
            "eu-west" => rebel_base(20),
            _ => fraud_detection(),
        };
        std::fs::write(c.dir.join("standalone/in/exports.yaml"), exports)?;
    }
    Ok(clusters)
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
        voters = voters.join(", "),
    )
}

fn rebel_base(octet: u8) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: rebel-base
  namespace: default
spec:
  type: ClusterIP
  clusterIP: 10.96.0.{octet}
  ports:
  - name: http
    port: 80
    protocol: TCP
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata:
  name: rebel-base
  namespace: default
  creationTimestamp: "2026-01-0{day}T00:00:00Z"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: rebel-base-abc12
  namespace: default
  labels:
    kubernetes.io/service-name: rebel-base
addressType: IPv4
ports:
- name: http
  port: 80
  protocol: TCP
endpoints:
- addresses: ["10.{octet}.1.1"]
  conditions: {{ready: true, serving: true, terminating: false}}
  zone: zone-a
- addresses: ["10.{octet}.1.2"]
  conditions: {{ready: true, serving: true, terminating: false}}
  zone: zone-b
"#,
        day = octet / 10,
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
    client::get(api, "/v1/imports").await.ok()?.json().ok()
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
    client::get(api, &format!("/v1/leases/{LEASE}"))
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
    let started = Instant::now();
    for c in clusters.iter_mut() {
        spawn(c, shoal)?;
        timeline.say(format!(
            "started {} (QUIC {}, API http://{})",
            c.name, c.quic, c.api
        ));
    }
    for c in clusters.iter() {
        let api = c.api;
        wait_for(&format!("{} to be ready", c.name), || async move {
            let r = client::get(api, "/readyz").await.ok()?;
            (r.status == 200).then_some(())
        })
        .await?;
    }
    timeline.say("all three ready; us-east and eu-west export default/rebel-base, ap-southeast exports payments/fraud-detection");

    let apis: Vec<SocketAddr> = clusters.iter().map(|c| c.api).collect();
    let both = ["eu-west", "us-east"];
    wait_for("imports to converge", || converged(&apis, &both)).await?;
    summary.converged_ms = timeline.ms(started);
    timeline.say(format!(
        "imports converged in {} ms: every cluster imports rebel-base from eu-west and us-east, fraud-detection from ap-southeast",
        summary.converged_ms
    ));

    // The lease: everyone asks; one holds.
    for c in clusters.iter() {
        client::post_json(c.api, &format!("/v1/leases/{LEASE}"), &())
            .await
            .with_context(|| format!("acquire on {}", c.name))?;
    }
    let (first, first_token) = wait_for("a lease holder", || holder(&apis)).await?;
    timeline.say(format!(
        "{first} holds {LEASE} with fencing token {first_token}"
    ));
    let mut store = FencedStore::default();
    store.write(first_token, &format!("written by {first}"));
    summary.first_holder = first.clone();
    summary.first_token = first_token;

    // Kill eu-west: its endpoints leave the others' imports after the grace period.
    let killed = 1;
    let killed_at = Instant::now();
    stop(&mut clusters[killed]);
    timeline.say("killed eu-west (SIGKILL)");
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
    let restarted = Instant::now();
    spawn(&mut clusters[killed], shoal)?;
    wait_for("eu-west to come back", || converged(&apis, &both)).await?;
    summary.restored_ms = timeline.ms(restarted);
    timeline.say(format!(
        "restarted eu-west from its store; imports whole again in {} ms",
        summary.restored_ms
    ));

    // Cut the holder's cluster off: only the majority side may hold the lease.
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
    show_yaml(timeline, dir)?;
    Ok(summary)
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
            let r = client::post_json(c.api, "/v1/chaos", &op).await?;
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
