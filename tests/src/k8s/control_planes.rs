//! [`ControlPlanes`]: starting a run, waiting until every cluster is ready, what tests
//! read from it, and stopping it.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::binaries::{Binaries, Binary, kubectl_program};
use super::cluster::Cluster;
use super::etcd::EtcdPlan;
use super::plan::{ClusterPlan, ClusterPorts};
use super::process::{Processes, Spawn};
use super::run_dir::{create_dir, prepare_dir, write_admin_kubeconfig, write_cluster_files};
use super::{StartError, kubectl, wait};

/// Most clusters in one run (the address ranges are `10.(96+i)` and `10.(200+i)`).
pub const CLUSTERS_MAX: usize = 32;
/// Most fake nodes per cluster (node `n` holds pod range `10.(200+i).n.0/24`).
pub const NODES_PER_CLUSTER_MAX: usize = 200;
/// How long [`ControlPlanes::start`] waits for everything to be ready, by default.
pub const STARTUP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(180);
/// How long one readiness probe through kubectl may take.
const PROBE_REQUEST_TIMEOUT: &str = "--request-timeout=5s";
/// Lines of each log shown when something fails.
const LOG_TAIL_LINES: usize = 30;

/// What to start.
#[derive(Debug, Clone)]
pub struct ControlPlanesConfig {
    /// Number of clusters, `1..=CLUSTERS_MAX`; cluster `i` is kubeconfig context `c{i}`.
    pub clusters: usize,
    /// kwok fake nodes per cluster, `1..=NODES_PER_CLUSTER_MAX`.
    pub nodes_per_cluster: usize,
    /// The run directory (kubeconfig, certificates, etcd data, logs). `None`: a new
    /// temporary directory, removed when the control planes stop (kept when a test
    /// panics, so its logs can be read).
    pub dir: Option<PathBuf>,
    /// Deadline for all of the start, from binaries found to nodes Ready.
    pub startup_timeout: Duration,
}

impl ControlPlanesConfig {
    /// `clusters` clusters of two fake nodes each, in a temporary directory.
    pub fn new(clusters: usize) -> Self {
        ControlPlanesConfig {
            clusters,
            nodes_per_cluster: 2,
            dir: None,
            startup_timeout: STARTUP_TIMEOUT_DEFAULT,
        }
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), StartError> {
        if !(1..=CLUSTERS_MAX).contains(&self.clusters) {
            return Err(StartError::Config(format!(
                "clusters is {}; it must be 1..={CLUSTERS_MAX}",
                self.clusters
            )));
        }
        if !(1..=NODES_PER_CLUSTER_MAX).contains(&self.nodes_per_cluster) {
            return Err(StartError::Config(format!(
                "nodes_per_cluster is {}; it must be 1..={NODES_PER_CLUSTER_MAX}",
                self.nodes_per_cluster
            )));
        }
        if self.startup_timeout.is_zero() {
            return Err(StartError::Config(
                "startup_timeout is 0; it must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// N real Kubernetes control planes on loopback, sharing one etcd, each with kwok fake
/// nodes; all stopped when dropped. Starting blocks (for tens of seconds): from async
/// code, call [`ControlPlanes::start`] in `tokio::task::spawn_blocking` or accept
/// blocking the test's runtime thread.
pub struct ControlPlanes {
    // Fields drop in order: the processes stop before the temporary directory goes.
    processes: Processes,
    clusters: Vec<Cluster>,
    etcd: EtcdPlan,
    dir: PathBuf,
    kubeconfig: PathBuf,
    binaries: Binaries,
    startup_time: Duration,
    temp: Option<TempDir>,
}

impl std::fmt::Debug for ControlPlanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlanes")
            .field("dir", &self.dir)
            .field("clusters", &self.clusters)
            .field("etcd", &self.etcd.client_url())
            .finish_non_exhaustive()
    }
}

impl ControlPlanes {
    /// Starts etcd and every cluster, and returns once each API server is ready, each
    /// cluster's `default` ServiceAccount exists, its controller manager and scheduler
    /// report healthy, and each fake node is Ready and schedulable.
    pub fn start(config: &ControlPlanesConfig) -> Result<Self, StartError> {
        config.validate()?;
        let started = wait::now();
        let deadline = started + config.startup_timeout;
        let binaries = Binaries::locate()?;
        let (dir, temp) = prepare_dir(config.dir.as_deref())?;
        let ports = reserve_ports(2 + 3 * config.clusters)?;
        let etcd = EtcdPlan::new(&dir, ports[0], ports[1]);
        let kubeconfig = dir.join("kubeconfig");
        let plans = ports[2..].chunks_exact(3).enumerate().map(|(i, p)| {
            let ports = ClusterPorts {
                apiserver: p[0],
                controller_manager: p[1],
                scheduler: p[2],
            };
            ClusterPlan::new(i, &dir, &etcd.client_url(), ports, config.nodes_per_cluster)
        });
        let clusters = plans
            .map(|plan| write_cluster_files(plan, &kubeconfig))
            .collect::<Result<Vec<_>, _>>()?;
        write_admin_kubeconfig(&kubeconfig, &clusters)?;
        let mut planes = ControlPlanes {
            processes: Processes::default(),
            clusters,
            etcd,
            dir,
            kubeconfig,
            binaries,
            startup_time: Duration::ZERO,
            temp,
        };
        planes.start_etcd(started, deadline)?;
        planes.start_apiservers(started, deadline)?;
        planes.start_cluster_components(started, deadline)?;
        planes.startup_time = wait::now() - started;
        tracing::info!(
            clusters = planes.clusters.len(),
            startup_ms = planes.startup_time.as_millis(),
            dir = %planes.dir.display(),
            "control planes ready"
        );
        Ok(planes)
    }

    /// The clusters, by index.
    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's kubeconfig: one context per cluster, `c0`, `c1`, …, `c0` current.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The shared etcd's client URL (`http://127.0.0.1:<port>`).
    pub fn etcd_url(&self) -> String {
        self.etcd.client_url()
    }

    /// The directory the binaries were run from.
    pub fn binaries_dir(&self) -> &Path {
        self.binaries.dir()
    }

    /// How long [`ControlPlanes::start`] took until everything was ready.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// Every running process: (`etcd` or `c{i}/<component>`, pid).
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }

    /// Fails with [`StartError::Exited`] if any process has exited since the start.
    pub fn check_running(&mut self) -> Result<(), StartError> {
        self.processes.check_running()
    }

    /// The last `lines` lines of every process's log, each under a header.
    pub fn log_tails(&self, lines: usize) -> String {
        self.processes.log_tails(lines)
    }

    /// Stops everything now (dropping does the same).
    pub fn stop(self) {}

    /// Stops cluster `index`'s kube-apiserver (SIGTERM, then SIGKILL after the grace),
    /// as an outage: its clients see connections refused until
    /// [`ControlPlanes::start_apiserver`].
    pub fn stop_apiserver(&mut self, index: usize) {
        let name = format!(
            "{}/{}",
            self.clusters[index].context(),
            Binary::KubeApiserver.file_name()
        );
        self.processes.stop_where(|n| n == name);
    }

    /// Starts cluster `index`'s kube-apiserver again, with the same flags, port and
    /// store, and waits until it is ready.
    pub fn start_apiserver(&mut self, index: usize, timeout: Duration) -> Result<(), StartError> {
        let started = wait::now();
        let cluster = &self.clusters[index];
        self.processes.spawn(spawn_of(
            &self.binaries,
            &cluster.plan,
            Binary::KubeApiserver,
            cluster.plan.apiserver_args(),
        ))?;
        let cluster = &self.clusters[index];
        let what = format!("{} kube-apiserver /readyz", cluster.context());
        wait_ready(
            &mut self.processes,
            started,
            started + timeout,
            &what,
            || probe_apiserver_ready(cluster),
        )
    }

    fn start_etcd(&mut self, started: Instant, deadline: Instant) -> Result<(), StartError> {
        create_dir(&self.etcd.dir)?;
        self.processes.spawn(Spawn {
            name: "etcd".to_owned(),
            binary: self.binaries.path(Binary::Etcd),
            args: self.etcd.args(),
            env: Vec::new(),
            log: self.etcd.log(),
        })?;
        let etcd = &self.etcd;
        wait_ready(
            &mut self.processes,
            started,
            deadline,
            "etcd /health",
            || etcd.probe_health(),
        )?;
        tracing::info!(url = %etcd.client_url(), "etcd ready");
        Ok(())
    }

    fn start_apiservers(&mut self, started: Instant, deadline: Instant) -> Result<(), StartError> {
        for cluster in &self.clusters {
            self.processes.spawn(spawn_of(
                &self.binaries,
                &cluster.plan,
                Binary::KubeApiserver,
                cluster.plan.apiserver_args(),
            ))?;
        }
        for cluster in &self.clusters {
            let what = format!("{} kube-apiserver /readyz", cluster.context());
            wait_ready(&mut self.processes, started, deadline, &what, || {
                probe_apiserver_ready(cluster)
            })?;
            tracing::info!(cluster = %cluster.context(), server = %cluster.server(), "kube-apiserver ready");
        }
        Ok(())
    }

    fn start_cluster_components(
        &mut self,
        started: Instant,
        deadline: Instant,
    ) -> Result<(), StartError> {
        for cluster in &self.clusters {
            let plan = &cluster.plan;
            create_dir(&plan.path("kwok-home"))?;
            let mut kwok = spawn_of(&self.binaries, plan, Binary::Kwok, plan.kwok_args());
            // kwok also reads ~/.kwok/kwok.yaml: give it a home of its own.
            kwok.env.push(("HOME".to_owned(), plan.path("kwok-home")));
            let controller_manager = plan.controller_manager_args();
            let scheduler = plan.scheduler_args();
            for spawn in [
                spawn_of(
                    &self.binaries,
                    plan,
                    Binary::KubeControllerManager,
                    controller_manager,
                ),
                spawn_of(&self.binaries, plan, Binary::KubeScheduler, scheduler),
                kwok,
            ] {
                self.processes.spawn(spawn)?;
            }
        }
        for cluster in &self.clusters {
            let nodes = cluster.plan.path("nodes.json");
            let nodes = nodes.to_string_lossy();
            let what = format!("{} fake nodes created", cluster.context());
            let apply = [
                "apply",
                "--server-side",
                "--field-manager=shoal-tests",
                "-f",
                &nodes,
            ];
            wait_ready(&mut self.processes, started, deadline, &what, || {
                probe_kubectl(cluster, &apply)
            })?;
        }
        for cluster in &self.clusters {
            wait_cluster_ready(&mut self.processes, cluster, started, deadline)?;
        }
        Ok(())
    }
}

impl Drop for ControlPlanes {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!(
            "control planes in {}: last lines of each log\n{}",
            self.dir.display(),
            self.processes.log_tails(LOG_TAIL_LINES)
        );
        if let Some(temp) = self.temp.take() {
            self.processes.stop_all();
            // The logs, certificates and kubeconfigs stay for reading; the etcd data
            // (tens of MiB of preallocated WAL) goes.
            let _ = fs::remove_dir_all(self.etcd.data_dir());
            eprintln!("kept the run directory {}", temp.keep().display());
        }
    }
}

/// Waits until `cluster`'s controllers, scheduler and fake nodes are ready.
fn wait_cluster_ready(
    processes: &mut Processes,
    cluster: &Cluster,
    started: Instant,
    deadline: Instant,
) -> Result<(), StartError> {
    let context = cluster.context();
    let what = format!("{context} ServiceAccount default/default");
    let get = [
        "get",
        "serviceaccount",
        "default",
        "--namespace=default",
        "--output=name",
    ];
    wait_ready(processes, started, deadline, &what, || {
        probe_kubectl(cluster, &get)
    })?;
    let ports = cluster.plan.ports;
    for (component, port, path) in [
        (
            "kube-controller-manager",
            ports.controller_manager,
            "/healthz",
        ),
        ("kube-scheduler", ports.scheduler, "/readyz"),
    ] {
        let what = format!("{context} {component} {path}");
        wait_ready(processes, started, deadline, &what, || {
            probe_component_health(port, path)
        })?;
    }
    let what = format!("{context} fake nodes Ready");
    wait_ready(processes, started, deadline, &what, || {
        probe_nodes_ready(cluster)
    })?;
    tracing::info!(cluster = %context, nodes = cluster.node_names().len(), "cluster ready");
    Ok(())
}

/// Polls `probe` until it holds, any process exits, or `deadline` passes.
fn wait_ready<T>(
    processes: &mut Processes,
    started: Instant,
    deadline: Instant,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, StartError> {
    let outcome = wait::wait_until(deadline, || {
        processes.check_running()?;
        Ok::<_, StartError>(probe())
    })?;
    match outcome {
        Ok(value) => {
            tracing::debug!(
                what,
                elapsed_ms = (wait::now() - started).as_millis(),
                "ready"
            );
            Ok(value)
        }
        Err(last) => Err(StartError::Timeout {
            what: what.to_owned(),
            waited_ms: (wait::now() - started).as_millis(),
            last,
            logs: processes.log_tails(LOG_TAIL_LINES),
        }),
    }
}

/// `Ok` once `cluster`'s API server answers `ok` on `/readyz`.
fn probe_apiserver_ready(cluster: &Cluster) -> Result<(), String> {
    let body = cluster
        .kubectl_stdout(&[PROBE_REQUEST_TIMEOUT, "get", "--raw", "/readyz"])
        .map_err(|e| e.to_string())?;
    if body.trim() == "ok" {
        Ok(())
    } else {
        Err(body)
    }
}

/// `Ok` once `kubectl <args>` succeeds against `cluster`.
fn probe_kubectl(cluster: &Cluster, args: &[&str]) -> Result<(), String> {
    let mut command = cluster.kubectl();
    command.arg(PROBE_REQUEST_TIMEOUT).args(args);
    kubectl::run(&mut command)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `Ok` once the component serving on `port` answers `ok` on `path`. Its serving
/// certificate is a self-signed one it made in memory, so it is not verified; the
/// health paths are open to anonymous requests, so the token is a placeholder.
fn probe_component_health(port: u16, path: &str) -> Result<(), String> {
    let mut command = Command::new(kubectl_program());
    command
        .args(["--kubeconfig", "/dev/null", "--token=anonymous"])
        .arg(format!("--server=https://127.0.0.1:{port}"))
        .args(["--insecure-skip-tls-verify=true", PROBE_REQUEST_TIMEOUT])
        .args(["get", "--raw", path])
        .stdin(std::process::Stdio::null());
    let body = kubectl::run(&mut command).map_err(|e| e.to_string())?;
    if body.trim() == "ok" {
        Ok(())
    } else {
        Err(body)
    }
}

/// The taint every new Node carries until the node lifecycle controller sees it Ready.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// `Ok` once every fake node of `cluster` has condition Ready=True and no longer has
/// the not-ready taint, so that pods can be scheduled onto it.
fn probe_nodes_ready(cluster: &Cluster) -> Result<(), String> {
    let nodes = cluster
        .kubectl_json(&[PROBE_REQUEST_TIMEOUT, "get", "nodes", "--output=json"])
        .map_err(|e| e.to_string())?;
    let ready: Vec<&str> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|node| {
            node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter(|node| {
            !node["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == NOT_READY_TAINT)
        })
        .filter_map(|node| node["metadata"]["name"].as_str())
        .collect();
    let missing: Vec<&String> = cluster
        .node_names()
        .iter()
        .filter(|name| !ready.contains(&name.as_str()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not Ready or still tainted {NOT_READY_TAINT}: {missing:?}"
        ))
    }
}

fn spawn_of(binaries: &Binaries, plan: &ClusterPlan, binary: Binary, args: Vec<String>) -> Spawn {
    Spawn {
        name: format!("{}/{}", plan.context, binary.file_name()),
        binary: binaries.path(binary),
        args,
        env: Vec::new(),
        log: plan.log_of(binary.file_name()),
    }
}

/// `count` distinct free ports on 127.0.0.1: held open together so none repeats, then
/// released for the components to bind.
fn reserve_ports(count: usize) -> Result<Vec<u16>, StartError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::Ports)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::Ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_planes_can_move_into_spawn_blocking() {
        fn send_and_sync<T: Send + Sync + 'static>() {}
        send_and_sync::<ControlPlanes>();
        send_and_sync::<Cluster>();
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(ControlPlanesConfig::new(1).validate().is_ok());
        assert!(ControlPlanesConfig::new(0).validate().is_err());
        assert!(
            ControlPlanesConfig::new(CLUSTERS_MAX + 1)
                .validate()
                .is_err()
        );
        let mut config = ControlPlanesConfig::new(2);
        config.nodes_per_cluster = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn reserved_ports_are_distinct() {
        let ports = reserve_ports(8).expect("free loopback ports");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len());
    }
}
