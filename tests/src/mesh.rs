//! Shoal on real Kubernetes: [`Mesh`] starts N control planes (see [`crate::k8s`]),
//! installs `deploy/crds/` and `deploy/rbac.yaml` in each, and runs R `shoal`
//! replicas per cluster with the Kubernetes backend, each reaching its API server with
//! the token of the `shoal` ServiceAccount (so RBAC is exercised exactly as deployed).
//! Tests and the benchmark drive it with kubectl and read each node's `/metrics`.
//!
//! [`MeshConfig::standalone`] starts the same mesh without Kubernetes: one replica per
//! cluster with the standalone backend, its exports written as YAML into the node's
//! `in/` ([`Node::standalone_dir`]).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::k8s::{Cluster, ControlPlanes, ControlPlanesConfig, StartError, log_tail, wait_for};
use crate::pods::Launch;

/// The namespace of Shoal's objects (deploy/rbac.yaml).
pub const SHOAL_NAMESPACE: &str = "shoal-system";
/// How long a node may take to answer `/readyz` after it starts.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to start.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub clusters: usize,
    /// Shoal replicas per cluster (a StatefulSet's pods).
    pub replicas: u16,
    /// The local leader Lease: duration, renew deadline, retry period (ms).
    pub leader_ms: (u64, u64, u64),
    /// Real control planes and the Kubernetes backend, or none and the standalone one.
    pub kubernetes: bool,
    /// `[chaos] enabled`: the nodes accept `POST /v1/chaos` (cuts, loss).
    pub chaos: bool,
}

impl MeshConfig {
    pub fn new(clusters: usize, replicas: u16) -> Self {
        Self {
            clusters,
            replicas,
            leader_ms: (4_000, 3_000, 1_000),
            kubernetes: true,
            chaos: false,
        }
    }

    /// `clusters` nodes with the standalone backend, on loopback, no Kubernetes.
    pub fn standalone(clusters: usize) -> Self {
        Self {
            kubernetes: false,
            ..Self::new(clusters, 1)
        }
    }
}

/// One `shoal` process.
#[derive(Debug)]
pub struct Node {
    pub cluster: usize,
    pub replica: u16,
    /// Its leader-election identity, `c<i>-<replica>`.
    pub identity: String,
    pub http: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The standalone backend's directory (`in/`, `out/`), if it has one.
    pub standalone_dir: Option<PathBuf>,
    /// How to start it in place of a Pod (see [`crate::pods`]); `None`: `shoal run
    /// --config <config>`.
    pub launch: Option<Launch>,
    pub(crate) child: Option<Child>,
}

impl Node {
    /// Starts (or restarts) the process.
    pub fn start(&mut self, shoal: &Path) -> std::io::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = match &self.launch {
            // A stand-in's environment is its Pod's, and nothing else.
            Some(launch) => launch.command(),
            None => {
                let mut command = Command::new(shoal);
                // The harness's own SHOAL_* variables are not the node's configuration.
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("SHOAL_") {
                        command.env_remove(name);
                    }
                }
                command.arg("run").arg("--config").arg(&self.config);
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// kill -9: no Lease release, no flush beyond what was flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit (the leader releases its Lease).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = wait_for("shoal exits", Duration::from_secs(15), || {
                match child.try_wait() {
                    Ok(Some(_)) => Ok(()),
                    _ => Err("running".to_owned()),
                }
            });
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id while the process is started (for reading `/proc/<pid>`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// How the process ended, once it has (`None` while it runs or was never started).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// `POST path` with no body; the answer's body.
    pub fn post(&self, path: &str) -> Result<String, String> {
        let url = format!("http://{}{path}", self.http);
        let mut response = agent().post(&url).send_empty().map_err(|e| e.to_string())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    }

    /// `POST path` with a JSON body; the answer's body.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<String, String> {
        let url = format!("http://{}{path}", self.http);
        let mut response = agent()
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .map_err(|e| e.to_string())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    }

    /// `DELETE path`; the answer's body.
    pub fn delete(&self, path: &str) -> Result<String, String> {
        let url = format!("http://{}{path}", self.http);
        let mut response = agent().delete(&url).call().map_err(|e| e.to_string())?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    }

    /// `GET path`; the answer's body.
    pub fn get(&self, path: &str) -> Result<String, String> {
        http_get(self.http, path)
    }

    /// `/metrics`, as Prometheus text.
    pub fn metrics(&self) -> Result<String, String> {
        self.get("/metrics")
    }

    /// The value of one sample of `/metrics`, by its name and labels as printed
    /// (`shoal_backend_writes_total{label="endpointslices"}`); 0 when absent.
    pub fn metric(&self, sample: &str) -> Result<u64, String> {
        let text = self.metrics()?;
        Ok(sample_value(&text, sample))
    }

    /// `/v1/status` as JSON.
    pub fn status(&self) -> Result<Value, String> {
        serde_json::from_str(&self.get("/v1/status")?).map_err(|e| e.to_string())
    }

    pub fn ready(&self) -> Result<(), String> {
        self.get("/readyz").map(drop)
    }
}

/// `GET path` from the node API at `http`; the answer's body, or why there is none
/// (a status other than 2xx included).
pub fn http_get(http: SocketAddr, path: &str) -> Result<String, String> {
    let url = format!("http://{http}{path}");
    let mut response = agent().get(&url).call().map_err(|e| e.to_string())?;
    response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())
}

/// An HTTP client for a node's API on loopback: every request within 5 s.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `sample` in Prometheus text, 0 when absent.
pub fn sample_value(text: &str, sample: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

/// Control planes with Shoal running in each (or Shoal alone, standalone).
pub struct Mesh {
    /// `None` for a standalone mesh.
    pub(crate) planes: Option<ControlPlanes>,
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
    pub(crate) shoal: PathBuf,
    /// The temporary directory, removed on drop unless kept.
    pub(crate) temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("dir", &self.dir)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// Why a mesh did not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("control planes: {0}")]
    Planes(#[from] StartError),
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn setup(what: impl std::fmt::Display) -> MeshError {
    MeshError::Setup(what.to_string())
}

/// The repository's root (this crate is `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The `shoal` binary: `$SHOAL_BIN`, else the one beside this executable
/// (`target/<profile>/shoal`, for tests in `target/<profile>/deps/` and binaries in
/// `target/<profile>/`).
pub fn shoal_binary() -> Result<PathBuf, MeshError> {
    if let Some(path) = std::env::var_os("SHOAL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(setup)?;
    let mut dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let shoal = dir.join("shoal");
    if shoal.exists() {
        Ok(shoal)
    } else {
        Err(setup(format!(
            "{} is missing: build it (cargo build -p shoal-node --bin shoal), or set SHOAL_BIN",
            shoal.display()
        )))
    }
}

pub(crate) fn free_udp_port() -> Result<u16, MeshError> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(setup)?;
    Ok(socket.local_addr().map_err(setup)?.port())
}

pub(crate) fn free_tcp_port() -> Result<u16, MeshError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(setup)?;
    Ok(listener.local_addr().map_err(setup)?.port())
}

/// Runs `kubectl` against `cluster` and fails with its stderr.
pub fn kubectl(cluster: &Cluster, args: &[&str]) -> Result<String, MeshError> {
    cluster.kubectl_stdout(args).map_err(|e| {
        setup(format!(
            "{}: kubectl {}: {e}",
            cluster.context(),
            args.join(" ")
        ))
    })
}

/// Applies `yaml` to `cluster` (server-side, as an administrator).
pub fn apply(cluster: &Cluster, yaml: &str) -> Result<(), MeshError> {
    let mut command = cluster.kubectl();
    command
        .args([
            "apply",
            "--server-side",
            "--field-manager=shoal-tests",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(setup)?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(yaml.as_bytes()).map_err(setup)?;
    }
    let output = child.wait_with_output().map_err(setup)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(setup(format!(
            "{}: kubectl apply: {}",
            cluster.context(),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// Installs `deploy/crds/` and `deploy/rbac.yaml` in every cluster, and returns a
/// token of the `shoal` ServiceAccount of each.
pub(crate) fn install(planes: &ControlPlanes) -> Result<Vec<String>, MeshError> {
    let root = repo_root();
    let crds = root.join("deploy/crds").display().to_string();
    let rbac = root.join("deploy/rbac.yaml").display().to_string();
    let mut tokens = Vec::new();
    for cluster in planes.clusters() {
        kubectl(cluster, &["apply", "--server-side", "-f", &crds])?;
        let established = [
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ];
        kubectl(cluster, &established)?;
        kubectl(cluster, &["apply", "-f", &rbac])?;
        let token = kubectl(
            cluster,
            &[
                "create",
                "token",
                "shoal",
                "--namespace",
                SHOAL_NAMESPACE,
                "--duration=24h",
            ],
        )?;
        tokens.push(token.trim().to_owned());
    }
    Ok(tokens)
}

pub(crate) fn run_shoal(shoal: &Path, args: &[&str]) -> Result<(), MeshError> {
    let output = Command::new(shoal).args(args).output().map_err(setup)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(setup(format!(
            "shoal {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

impl Mesh {
    /// Starts everything and waits until every node answers `/readyz`.
    pub fn start(config: &MeshConfig) -> Result<Self, MeshError> {
        let shoal = shoal_binary()?;
        let planes = match config.kubernetes {
            true => Some(ControlPlanes::start(&ControlPlanesConfig::new(
                config.clusters,
            ))?),
            false => None,
        };
        let temp = tempfile::Builder::new()
            .prefix("shoal-mesh-")
            .tempdir()
            .map_err(setup)?;
        let dir = temp.path().to_owned();
        let certs = dir.join("certs");
        let certs_arg = certs.display().to_string();
        run_shoal(&shoal, &["certs", "init", "--dir", &certs_arg])?;
        let tokens = match &planes {
            Some(planes) => install(planes)?,
            None => Vec::new(),
        };
        for cluster in 0..config.clusters {
            let id = format!("c{cluster}");
            run_shoal(
                &shoal,
                &[
                    "certs",
                    "issue",
                    "--ca",
                    &certs_arg,
                    "--cluster",
                    &id,
                    "--out",
                    &certs_arg,
                ],
            )?;
        }
        let mut nodes = Vec::new();
        let mut quic = Vec::new();
        for cluster in 0..config.clusters {
            for replica in 0..config.replicas {
                quic.push((cluster, replica, free_udp_port()?));
            }
        }
        for &(cluster, replica, port) in &quic {
            let context = format!("c{cluster}");
            let node_dir = dir.join(format!("{context}-{replica}"));
            fs::create_dir_all(&node_dir).map_err(setup)?;
            let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()?));
            let identity = format!("{context}-{replica}");
            let standalone_dir = planes.is_none().then(|| node_dir.join("standalone"));
            let backend = match (&planes, &standalone_dir) {
                (Some(planes), _) => {
                    let kubeconfig = node_dir.join("kubeconfig");
                    let text = token_kubeconfig(&planes.clusters()[cluster], &tokens[cluster]);
                    fs::write(&kubeconfig, text).map_err(setup)?;
                    let (lease, renew, retry) = config.leader_ms;
                    format!(
                        "kind = \"kubernetes\"\nkubeconfig = \"{kubeconfig}\"\n\
                         identity = \"{identity}\"\nleader_lease_ms = {lease}\n\
                         leader_renew_ms = {renew}\nleader_retry_ms = {retry}\n",
                        kubeconfig = kubeconfig.display(),
                    )
                }
                (None, Some(standalone)) => format!(
                    "kind = \"standalone\"\ndir = \"{}\"\npoll_ms = 100\n",
                    standalone.display()
                ),
                (None, None) => unreachable!("a standalone node has a directory"),
            };
            let seeds: Vec<String> = quic
                .iter()
                .filter(|(c, r, _)| (*c, *r) != (cluster, replica))
                .map(|(c, r, p)| {
                    format!(
                        "[[seeds]]\ncluster = \"c{c}\"\nreplica = {r}\naddr = \"127.0.0.1:{p}\"\n"
                    )
                })
                .collect();
            let voters: Vec<String> = (0..config.clusters).map(|c| format!("\"c{c}\"")).collect();
            let toml = format!(
                "cluster = \"{context}\"\nreplica = {replica}\npreset = \"lan\"\n\
                 listen = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\n\
                 members_expected = {members}\nclusterset = \"shoal-test\"\n\n{seeds}\n\
                 [tls]\nca = \"{certs}/ca.crt\"\ncert = \"{certs}/{context}.crt\"\n\
                 key = \"{certs}/{context}.key\"\nclusterset_dir = \"{certs}\"\n\n\
                 [http]\nlisten = \"{http}\"\n\n[backend]\n{backend}\n\
                 [lease]\nvoters = [{voters}]\n\n[chaos]\nenabled = {chaos}\n\n\
                 [log]\nfilter = \"{filter}\"\n",
                chaos = config.chaos,
                data = node_dir.join("data").display(),
                members = quic.len(),
                seeds = seeds.join("\n"),
                certs = certs.display(),
                voters = voters.join(", "),
                // Standalone meshes carry load tests: debug lines would be the load.
                filter = if planes.is_some() {
                    "info,shoal_node=debug"
                } else {
                    "info"
                },
            );
            let config_path = node_dir.join("shoal.toml");
            fs::write(&config_path, toml).map_err(setup)?;
            let mut node = Node {
                cluster,
                replica,
                identity,
                http,
                config: config_path,
                log: node_dir.join("shoal.log"),
                standalone_dir,
                launch: None,
                child: None,
            };
            node.start(&shoal).map_err(setup)?;
            nodes.push(node);
        }
        let mesh = Mesh {
            planes,
            nodes,
            dir,
            shoal,
            temp: Some(temp),
        };
        mesh.wait_ready(NODE_READY_TIMEOUT)?;
        Ok(mesh)
    }

    /// Waits until every node answers `/readyz`; the failing node's log tail if not.
    pub(crate) fn wait_ready(&self, timeout: Duration) -> Result<(), MeshError> {
        for node in &self.nodes {
            wait_for("shoal /readyz", timeout, || node.ready()).map_err(|e| {
                setup(format!(
                    "{}: {e}\n{}",
                    node.identity,
                    log_tail(&node.log, 40)
                ))
            })?;
        }
        Ok(())
    }

    /// The control planes. Panics for a standalone mesh, which has none.
    pub fn planes(&self) -> &ControlPlanes {
        self.planes.as_ref().expect("a mesh on Kubernetes")
    }

    pub fn planes_mut(&mut self) -> &mut ControlPlanes {
        self.planes.as_mut().expect("a mesh on Kubernetes")
    }

    /// Cluster `index`'s control plane. Panics for a standalone mesh, which has none.
    pub fn cluster(&self, index: usize) -> &Cluster {
        &self.planes().clusters()[index]
    }

    pub fn shoal(&self) -> &Path {
        &self.shoal
    }

    /// The nodes of cluster `index`.
    pub fn nodes_of(&self, index: usize) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(move |n| n.cluster == index)
    }

    /// The identity holding cluster `index`'s leader Lease, if any.
    pub fn leader_of(&self, index: usize) -> Option<String> {
        let lease = self
            .cluster(index)
            .kubectl_json(&[
                "get",
                "lease",
                "shoal-leader",
                "--namespace",
                SHOAL_NAMESPACE,
                "--output=json",
            ])
            .ok()?;
        lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
    }

    /// The last lines of every node's log, for a failing test.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}\n{}\n", n.identity, log_tail(&n.log, lines)))
            .collect()
    }

    /// Keeps the mesh's directory (for reading logs after a failure).
    pub fn keep(&mut self) -> PathBuf {
        if let Some(temp) = self.temp.take() {
            return temp.keep();
        }
        self.dir.clone()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::env::var_os("SHOAL_TEST_KEEP").is_some() {
            eprintln!("kept the mesh directory {}", self.keep().display());
        }
        if std::thread::panicking() {
            eprintln!(
                "shoal nodes: last lines of each log\n{}",
                self.log_tails(60)
            );
            let kept = self.keep();
            eprintln!("kept the mesh directory {}", kept.display());
        }
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// A kubeconfig that reaches `cluster` with a bearer token.
fn token_kubeconfig(cluster: &Cluster, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: shoal\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: shoal\ncurrent-context: {name}\n",
        name = cluster.context(),
        server = cluster.server(),
        ca = cluster.ca_path().display(),
    )
}

/// One audited request of Shoal's ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audited {
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub code: u16,
    /// `stageTimestamp`, RFC 3339.
    pub at: String,
}

/// Every request in `cluster`'s audit log, in order.
pub fn audited(cluster: &Cluster) -> Vec<Audited> {
    let text = fs::read_to_string(cluster.audit_log()).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|e| {
            let object = &e["objectRef"];
            let s = |v: &Value| v.as_str().map(str::to_owned);
            Audited {
                verb: s(&e["verb"]).unwrap_or_default(),
                resource: s(&object["resource"]).unwrap_or_default(),
                subresource: s(&object["subresource"]),
                namespace: s(&object["namespace"]),
                name: s(&object["name"]),
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
                at: s(&e["stageTimestamp"]).unwrap_or_default(),
            }
        })
        .collect()
}

/// Whether a request changed (or tried to change) state.
pub fn is_write(request: &Audited) -> bool {
    matches!(
        request.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}
