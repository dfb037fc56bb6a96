//! `shoal-k8s-bench`: Shoal's Kubernetes backend through real API servers, measured.
//!
//! Starts a [`Mesh`] (N real control planes, R `shoal` replicas each) and prints, beside
//! their targets, three figures; it asserts none of them:
//!
//! 1. Export-to-import latency: `--services` Services with a one-replica Deployment each
//!    in c0, then a ServiceExport each, one after another; from each export's creation
//!    until the last cluster shows its ServiceImport (with `spec.ips`) and an
//!    EndpointSlice with its endpoint. Both ends are observed through watches
//!    (`kubectl get --watch` children), so nothing is quantized by a poll interval.
//! 2. API requests per minute at steady state, from every cluster's audit log, by verb
//!    and resource; Lease renewals and watches apart.
//! 3. Writes per endpoint change: one exported Deployment in c0 scaled up `--changes`
//!    times; the writes each importer's audit log shows per change and per changed
//!    source EndpointSlice.
//!
//! The table goes to stdout, then one JSON line; `--json` prints only the JSON line.
//! Progress goes to stderr. Every wait has a deadline, and the bench stops by itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::k8s::{CLUSTERS_MAX, Cluster, wait_for};
use shoal_tests::mesh::{Audited, Mesh, MeshConfig, apply, audited, is_write, kubectl};

/// The namespace of the bench's workload, in every cluster.
const NAMESPACE: &str = "shoal-bench";
/// Most services one run may export.
const SERVICES_MAX: usize = 500;
/// Most scale steps in phase 3.
const CHANGES_MAX: usize = 100;
/// Most events buffered from all watches together; a reader blocks beyond it.
const EVENTS_MAX: usize = 65_536;
/// How long the watches may take to be established.
const WATCH_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long c0's controllers may take to give every Service its ready endpoint.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the last export may take to be imported everywhere.
const PROPAGATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long Shoal's writes must pause before the steady-state window opens…
const QUIET_FOR: Duration = Duration::from_secs(5);
/// …and the deadline for that pause.
const QUIET_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the audit logs are read while waiting for the pause.
const QUIET_PROBE: Duration = Duration::from_secs(1);
/// How long one scale step may take to reach every importer.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// After a change has reached every importer, how long its trailing writes are still
/// counted as its own (an observation window, not a wait for a condition).
const CHANGE_SETTLE: Duration = Duration::from_secs(2);
/// Targets, printed beside the figures.
const TARGET_P99_MS: f64 = 300.0;
const TARGET_STEADY_OTHER: u64 = 0;
const TARGET_WRITES_PER_SLICE: f64 = 1.0;

#[derive(Debug, Parser)]
#[command(about = "Shoal's Kubernetes backend on real control planes: latency, requests, writes")]
struct Args {
    /// Clusters (contexts c0, c1, …); c0 exports, the last one is measured for latency.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=CLUSTERS_MAX as i64))]
    clusters: u16,
    /// `shoal` replicas per cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    replicas: u16,
    /// Services exported from c0.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=SERVICES_MAX as i64))]
    services: u16,
    /// Length of the steady-state window, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    steady_s: u64,
    /// Scale steps of one exported Deployment.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=CHANGES_MAX as i64))]
    changes: u16,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
    /// Keep the mesh's directory (node configs and logs) and print where it is.
    #[arg(long)]
    keep: bool,
}

/// The wall clock: the bench measures real processes in real time.
#[allow(clippy::disallowed_methods)] // the one place the bench reads the clock
fn now() -> Instant {
    Instant::now()
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let started = now();
    let mut report = Report::default();
    eprintln!(
        "starting {} clusters x {} replicas",
        args.clusters, args.replicas
    );
    let mut mesh = Mesh::start(&MeshConfig::new(usize::from(args.clusters), args.replicas))
        .context("starting the mesh")?;
    report.phase("mesh start", started);
    if args.keep {
        eprintln!("keeping the mesh directory {}", mesh.keep().display());
    }
    report.machine = machine(&mesh);
    let outcome = run(&mesh, &args, &mut report);
    report.wall = started.elapsed();
    if let Err(e) = &outcome {
        eprintln!("the bench stopped early: {e:#}\n{}", mesh.log_tails(20));
    }
    if !args.json {
        print_table(&report, &args);
    }
    println!("{}", report.to_json(&args));
    outcome
}

/// The three phases, each adding its figures to `report`.
fn run(mesh: &Mesh, args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let services: Vec<String> = (0..args.services).map(|i| format!("svc-{i:03}")).collect();
    let phase = now();
    eprintln!("creating {} Services and Deployments in c0", services.len());
    create_workload(mesh, &services)?;
    report.phase("workload ready in c0", phase);

    let far = mesh.planes().clusters().len() - 1;
    let watches = Watches::new_started(mesh, &services[0])?;
    let mut seen = Observed {
        far,
        ..Observed::default()
    };
    let deadline = now() + WATCH_START_TIMEOUT;
    let all = watches.streams();
    if !watches.pump_until(&mut seen, deadline, |s| s.established == all) {
        bail!(
            "watches not established within {WATCH_START_TIMEOUT:?}: {:?} of {all:?} ({:?})",
            seen.established,
            seen.closed
        );
    }

    wait_publishers(mesh)?;
    let phase = now();
    eprintln!("exporting {} services from c0", services.len());
    report.latency = Some(measure_exports(mesh, &watches, &mut seen, &services)?);
    report.phase("exports imported in the last cluster", phase);

    let phase = now();
    eprintln!("waiting until every cluster imports everything and Shoal is quiet");
    wait_imported_everywhere(mesh, services.len())?;
    report.quiet_after = Some(wait_quiet(mesh)?);
    report.phase("imported everywhere, then quiet", phase);

    let phase = now();
    eprintln!("counting requests for {} s", args.steady_s);
    report.steady = Some(measure_steady(mesh, Duration::from_secs(args.steady_s)));
    report.phase("steady-state window", phase);

    let phase = now();
    eprintln!("scaling {} {} times", services[0], args.changes);
    report.changes = Some(measure_changes(
        mesh,
        &watches,
        &mut seen,
        &services[0],
        usize::from(args.changes),
    )?);
    report.phase("endpoint changes", phase);
    Ok(())
}

// ----- the workload --------------------------------------------------------------------

fn workload_yaml(services: &[String]) -> String {
    services
        .iter()
        .map(|name| {
            format!(
                r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: web
          image: example.invalid/web:1
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http, protocol: TCP}}]
---
"#
            )
        })
        .collect()
}

fn export_yaml(name: &str) -> String {
    format!(
        "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n\
         metadata: {{name: {name}, namespace: {NAMESPACE}}}\n"
    )
}

/// The namespace in every cluster, the workload in c0, and waits until the
/// EndpointSlice controller has given every Service its ready endpoint.
fn create_workload(mesh: &Mesh, services: &[String]) -> anyhow::Result<()> {
    let namespace = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n");
    for cluster in mesh.planes().clusters() {
        apply(cluster, &namespace)?;
    }
    let c0 = mesh.cluster(0);
    apply(c0, &workload_yaml(services))?;
    wait_for(
        "every Service's EndpointSlice with its ready endpoint in c0",
        WORKLOAD_TIMEOUT,
        || {
            let slices = c0
                .kubectl_json(&[
                    "get",
                    "endpointslices",
                    "-n",
                    NAMESPACE,
                    "-l",
                    "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io",
                    "-o",
                    "json",
                ])
                .map_err(|e| e.to_string())?;
            let ready: BTreeSet<&str> = items(&slices)
                .filter(|s| ready_endpoints(s) > 0)
                .filter_map(|s| label(s, "kubernetes.io/service-name"))
                .collect();
            if ready.len() == services.len() {
                Ok(())
            } else {
                Err(format!("{} of {} ready", ready.len(), services.len()))
            }
        },
    )?;
    Ok(())
}

// ----- watches ----------------------------------------------------------------------------

/// What one watch follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    /// c0's ServiceExports: when each was created.
    Exports,
    /// The last cluster's ServiceImports.
    Imports,
    /// Shoal's EndpointSlices in an importing cluster (index).
    Slices(usize),
    /// c0's own EndpointSlices of the scaled Service.
    Source,
}

#[derive(Debug)]
enum Seen {
    /// kubectl's watch request was answered 200: every later change will arrive.
    Established,
    /// One watch event (`ADDED`, `MODIFIED`, `DELETED`).
    Event { kind: String, object: Value },
    /// The watch ended (it should not, within the bench).
    Closed(String),
}

#[derive(Debug)]
struct Tagged {
    stream: Stream,
    /// When the reader had it: the time the watch delivered it.
    at: Instant,
    seen: Seen,
}

/// `kubectl get --watch` children, their events merged into one channel.
#[derive(Debug)]
struct Watches {
    children: Vec<(Stream, Child)>,
    tx: SyncSender<Tagged>,
    rx: Receiver<Tagged>,
}

impl Watches {
    fn new() -> Self {
        let (tx, rx) = sync_channel(EVENTS_MAX);
        Self {
            children: Vec::new(),
            tx,
            rx,
        }
    }

    /// The watches every phase reads: c0's exports, the last cluster's imports, each
    /// importer's Shoal EndpointSlices, and c0's own slices of the Service phase 3 scales.
    fn new_started(mesh: &Mesh, scaled: &str) -> anyhow::Result<Self> {
        let mut watches = Watches::new();
        let far = mesh.planes().clusters().len() - 1;
        watches.start(
            Stream::Exports,
            mesh.cluster(0),
            &["serviceexports.multicluster.x-k8s.io", "-n", NAMESPACE],
        )?;
        watches.start(
            Stream::Imports,
            mesh.cluster(far),
            &["serviceimports.multicluster.x-k8s.io", "-n", NAMESPACE],
        )?;
        for index in 1..=far {
            watches.start(
                Stream::Slices(index),
                mesh.cluster(index),
                &[
                    "endpointslices",
                    "-n",
                    NAMESPACE,
                    "-l",
                    "endpointslice.kubernetes.io/managed-by=shoal.dev",
                ],
            )?;
        }
        let source = format!(
            "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io,\
             kubernetes.io/service-name={scaled}"
        );
        watches.start(
            Stream::Source,
            mesh.cluster(0),
            &["endpointslices", "-n", NAMESPACE, "-l", &source],
        )?;
        Ok(watches)
    }

    fn streams(&self) -> BTreeSet<Stream> {
        self.children.iter().map(|(s, _)| *s).collect()
    }

    /// Starts `kubectl get <args> --watch` against `cluster`. `-v=6` makes kubectl log
    /// each response, which is how the watch's `200 OK` is known.
    fn start(&mut self, stream: Stream, cluster: &Cluster, args: &[&str]) -> anyhow::Result<()> {
        let mut command = cluster.kubectl();
        command
            .arg("-v=6")
            .arg("get")
            .args(args)
            .args(["--watch", "--output-watch-events", "-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {stream:?} watch"))?;
        let stdout = child.stdout.take().context("kubectl's stdout is piped")?;
        let stderr = child.stderr.take().context("kubectl's stderr is piped")?;
        self.children.push((stream, child));
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("watch-{stream:?}"))
            .spawn(move || read_events(stream, stdout, &tx))
            .context("starting a watch reader")?;
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("watch-log-{stream:?}"))
            .spawn(move || read_log(stream, stderr, &tx))
            .context("starting a watch log reader")?;
        Ok(())
    }

    /// The next event, or `None` once `deadline` has passed.
    fn next(&self, deadline: Instant) -> Option<Tagged> {
        let left = deadline.saturating_duration_since(now());
        self.rx.recv_timeout(left).ok()
    }

    /// Applies events to `seen` until `done(seen)` holds (true) or `deadline` passes
    /// (false).
    fn pump_until(
        &self,
        seen: &mut Observed,
        deadline: Instant,
        done: impl Fn(&Observed) -> bool,
    ) -> bool {
        while !done(seen) {
            match self.next(deadline) {
                Some(tagged) => seen.apply(tagged),
                None => return done(seen),
            }
        }
        true
    }

    /// Applies every event that arrives before `until`.
    fn pump_for(&self, seen: &mut Observed, until: Instant) {
        while let Some(tagged) = self.next(until) {
            seen.apply(tagged);
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_events(stream: Stream, stdout: std::process::ChildStdout, tx: &SyncSender<Tagged>) {
    let values = serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
    for value in values {
        let at = now();
        let seen = match value {
            Ok(mut event) => Seen::Event {
                kind: event["type"].as_str().unwrap_or_default().to_owned(),
                object: event["object"].take(),
            },
            Err(e) => Seen::Closed(format!("unreadable output: {e}")),
        };
        let last = matches!(seen, Seen::Closed(_));
        if tx.send(Tagged { stream, at, seen }).is_err() || last {
            return;
        }
    }
    let _ = tx.send(Tagged {
        stream,
        at: now(),
        seen: Seen::Closed("kubectl's output ended".to_owned()),
    });
}

fn read_log(stream: Stream, stderr: std::process::ChildStderr, tx: &SyncSender<Tagged>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { return };
        if line.contains("watch=true") && line.contains("200 OK") {
            let established = Tagged {
                stream,
                at: now(),
                seen: Seen::Established,
            };
            if tx.send(established).is_err() {
                return;
            }
        }
    }
}

/// What the watches have shown so far.
#[derive(Debug, Default)]
struct Observed {
    established: BTreeSet<Stream>,
    closed: Vec<(Stream, String)>,
    /// c0: each ServiceExport's first `ADDED`.
    export_added: BTreeMap<String, Instant>,
    /// The last cluster: when each ServiceImport was first seen, and first seen with
    /// `spec.ips`.
    import_seen: BTreeMap<String, Instant>,
    import_ips: BTreeMap<String, Instant>,
    /// The last cluster: when each service first had a Shoal slice with a ready endpoint.
    slice_ready: BTreeMap<String, Instant>,
    /// Shoal's slices per importer, by name, as last seen.
    slices: BTreeMap<usize, BTreeMap<String, Value>>,
    /// c0's own slices of the scaled Service, and the time of each change to them.
    source: BTreeMap<String, Value>,
    source_changes: Vec<Instant>,
    far: usize,
}

impl Observed {
    fn apply(&mut self, tagged: Tagged) {
        let Tagged { stream, at, seen } = tagged;
        let (kind, object) = match seen {
            Seen::Established => {
                self.established.insert(stream);
                return;
            }
            Seen::Closed(why) => {
                self.closed.push((stream, why));
                return;
            }
            Seen::Event { kind, object } => (kind, object),
        };
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return;
        };
        let deleted = kind == "DELETED";
        match stream {
            Stream::Exports => {
                self.export_added.entry(name).or_insert(at);
            }
            Stream::Imports if !deleted => {
                self.import_seen.entry(name.clone()).or_insert(at);
                if object["spec"]["ips"]
                    .as_array()
                    .is_some_and(|ips| !ips.is_empty())
                {
                    self.import_ips.entry(name).or_insert(at);
                }
            }
            Stream::Imports => {}
            Stream::Slices(index) => {
                if let Some(service) = label(&object, "multicluster.kubernetes.io/service-name")
                    && index == self.far
                    && !deleted
                    && ready_endpoints(&object) > 0
                {
                    self.slice_ready.entry(service.to_owned()).or_insert(at);
                }
                let slices = self.slices.entry(index).or_default();
                if deleted {
                    slices.remove(&name);
                } else {
                    slices.insert(name, object);
                }
            }
            Stream::Source => {
                self.source_changes.push(at);
                if deleted {
                    self.source.remove(&name);
                } else {
                    self.source.insert(name, object);
                }
            }
        }
    }

    /// Ready endpoints of `service` from c0 in importer `index`'s Shoal slices.
    fn imported_endpoints(&self, index: usize, service: &str) -> usize {
        self.slices
            .get(&index)
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(|s| label(s, "multicluster.kubernetes.io/service-name") == Some(service))
            .filter(|s| label(s, "multicluster.kubernetes.io/source-cluster") == Some("c0"))
            .map(ready_endpoints)
            .sum()
    }

    fn source_endpoints(&self) -> usize {
        self.source.values().map(ready_endpoints).sum()
    }

    /// When `service` was fully imported in the last cluster: the later of its
    /// ServiceImport with `spec.ips` and its slice with a ready endpoint.
    fn imported_at(&self, service: &str) -> Option<Instant> {
        let import = self.import_ips.get(service)?;
        let slice = self.slice_ready.get(service)?;
        Some(*import.max(slice))
    }
}

// ----- phase 1: export-to-import latency ----------------------------------------------

/// Waits until every cluster has a publishing leader, so that no export waits for an
/// election.
fn wait_publishers(mesh: &Mesh) -> anyhow::Result<()> {
    for index in 0..mesh.planes().clusters().len() {
        wait_for("a publishing leader", PROPAGATE_TIMEOUT, || {
            let leads = mesh
                .nodes_of(index)
                .filter(|n| n.metric("shoal_publisher").unwrap_or(0) == 1)
                .count();
            if leads == 1 {
                Ok(())
            } else {
                Err(format!("{leads} publishers"))
            }
        })
        .with_context(|| format!("c{index}"))?;
    }
    Ok(())
}

#[derive(Debug)]
struct Latency {
    /// From creation to the ServiceImport (with `spec.ips`), to a ready slice, to both.
    import: Summary,
    slice: Summary,
    both: Summary,
    /// How long each `kubectl apply` of a ServiceExport took, mean.
    kubectl_mean: Duration,
    /// Exports whose creation c0's watch delivered before `kubectl apply` had returned.
    watch_first: usize,
    far: usize,
}

fn measure_exports(
    mesh: &Mesh,
    watches: &Watches,
    seen: &mut Observed,
    services: &[String],
) -> anyhow::Result<Latency> {
    let far = seen.far;
    let c0 = mesh.cluster(0);
    let mut returned = BTreeMap::new();
    let mut kubectl_total = Duration::ZERO;
    for name in services {
        let before = now();
        apply(c0, &export_yaml(name))?;
        let after = now();
        kubectl_total += after - before;
        returned.insert(name.clone(), after);
    }
    let deadline = now() + PROPAGATE_TIMEOUT;
    let complete = watches.pump_until(seen, deadline, |s| {
        services.iter().all(|name| s.imported_at(name).is_some())
    });
    if !complete {
        eprintln!(
            "not every export reached c{far} within {PROPAGATE_TIMEOUT:?}; the missing ones are \
             counted as missing (watches ended: {:?})",
            seen.closed
        );
    }
    // Creation: the earlier of kubectl returning and c0's watch delivering it; both
    // follow the write by a few milliseconds at most.
    let created = |name: &str| {
        let returned = returned[name];
        seen.export_added
            .get(name)
            .map_or(returned, |w| (*w).min(returned))
    };
    let since = |at: Option<&Instant>, name: &str| at.map(|at| at.duration_since(created(name)));
    let import = services
        .iter()
        .map(|n| since(seen.import_ips.get(n), n))
        .collect();
    let slice = services
        .iter()
        .map(|n| since(seen.slice_ready.get(n), n))
        .collect();
    let both = services
        .iter()
        .map(|n| since(seen.imported_at(n).as_ref(), n))
        .collect();
    let count = u32::try_from(services.len()).context("services fit in u32")?;
    Ok(Latency {
        import: Summary::of(import),
        slice: Summary::of(slice),
        both: Summary::of(both),
        kubectl_mean: kubectl_total / count.max(1),
        watch_first: services
            .iter()
            .filter(|n| seen.export_added.get(*n).is_some_and(|w| *w < returned[*n]))
            .count(),
        far,
    })
}

/// Nearest-rank percentiles of durations; `None`s are counted as missing.
#[derive(Debug)]
struct Summary {
    count: usize,
    missing: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(samples: Vec<Option<Duration>>) -> Self {
        let missing = samples.iter().filter(|s| s.is_none()).count();
        let mut values: Vec<Duration> = samples.into_iter().flatten().collect();
        values.sort();
        let rank = |p: f64| -> Duration {
            if values.is_empty() {
                return Duration::ZERO;
            }
            let index = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
            values[index]
        };
        Summary {
            count: values.len(),
            missing,
            p50: rank(0.50),
            p99: rank(0.99),
            max: values.last().copied().unwrap_or_default(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "missing": self.missing,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

// ----- between phases --------------------------------------------------------------------

/// Waits until every cluster (c0 imports its own exports too) holds a ServiceImport and
/// a Shoal slice with a ready endpoint for every service.
fn wait_imported_everywhere(mesh: &Mesh, services: usize) -> anyhow::Result<()> {
    for cluster in mesh.planes().clusters() {
        wait_for("every service imported", PROPAGATE_TIMEOUT, || {
            let imports = cluster
                .kubectl_json(&[
                    "get",
                    "serviceimports.multicluster.x-k8s.io",
                    "-n",
                    NAMESPACE,
                    "-o",
                    "json",
                ])
                .map_err(|e| e.to_string())?;
            let slices = cluster
                .kubectl_json(&[
                    "get",
                    "endpointslices",
                    "-n",
                    NAMESPACE,
                    "-l",
                    "endpointslice.kubernetes.io/managed-by=shoal.dev",
                    "-o",
                    "json",
                ])
                .map_err(|e| e.to_string())?;
            let imported = items(&imports)
                .filter(|i| i["spec"]["ips"].as_array().is_some_and(|a| !a.is_empty()))
                .count();
            let ready: BTreeSet<&str> = items(&slices)
                .filter(|s| ready_endpoints(s) > 0)
                .filter_map(|s| label(s, "multicluster.kubernetes.io/service-name"))
                .collect();
            if imported == services && ready.len() == services {
                Ok(())
            } else {
                Err(format!(
                    "{imported} imports with ips, {} services with ready slices, of {services}",
                    ready.len()
                ))
            }
        })
        .with_context(|| cluster.context().to_owned())?;
    }
    Ok(())
}

/// Shoal's writes (Leases aside) so far, over every cluster.
fn writes_so_far(mesh: &Mesh) -> usize {
    mesh.planes()
        .clusters()
        .iter()
        .map(|c| {
            audited(c)
                .iter()
                .filter(|r| is_write(r) && r.resource != "leases")
                .count()
        })
        .sum()
}

/// Waits until no cluster's audit log shows a write by Shoal (Leases aside) for
/// [`QUIET_FOR`]; returns how long that took.
fn wait_quiet(mesh: &Mesh) -> anyhow::Result<Duration> {
    let started = now();
    let deadline = started + QUIET_TIMEOUT;
    let mut last = writes_so_far(mesh);
    let mut since = now();
    loop {
        std::thread::sleep(QUIET_PROBE);
        let writes = writes_so_far(mesh);
        if writes != last {
            last = writes;
            since = now();
        } else if since.elapsed() >= QUIET_FOR {
            return Ok(started.elapsed());
        }
        if now() >= deadline {
            bail!("Shoal kept writing for {QUIET_TIMEOUT:?} after every import was complete");
        }
    }
}

// ----- phase 2: requests at steady state -------------------------------------------------

#[derive(Debug)]
struct ClusterRequests {
    context: String,
    /// (verb, resource[/subresource]) → requests.
    by_kind: BTreeMap<(String, String), u64>,
    /// Lease requests by Lease name.
    leases: BTreeMap<String, u64>,
    /// Neither Lease nor watch: what should be 0.
    other: Vec<Audited>,
    total: u64,
    lease_total: u64,
    watch_total: u64,
}

#[derive(Debug)]
struct Steady {
    window: Duration,
    clusters: Vec<ClusterRequests>,
}

fn measure_steady(mesh: &Mesh, window: Duration) -> Steady {
    let before: Vec<usize> = mesh
        .planes()
        .clusters()
        .iter()
        .map(|c| audited(c).len())
        .collect();
    let started = now();
    std::thread::sleep(window);
    let window = started.elapsed();
    let clusters = mesh
        .planes()
        .clusters()
        .iter()
        .zip(before)
        .map(|(cluster, skip)| count_requests(cluster, skip))
        .collect();
    Steady { window, clusters }
}

fn count_requests(cluster: &Cluster, skip: usize) -> ClusterRequests {
    let mut out = ClusterRequests {
        context: cluster.context().to_owned(),
        by_kind: BTreeMap::new(),
        leases: BTreeMap::new(),
        other: Vec::new(),
        total: 0,
        lease_total: 0,
        watch_total: 0,
    };
    for request in audited(cluster).into_iter().skip(skip) {
        out.total += 1;
        *out.by_kind
            .entry((request.verb.clone(), resource_of(&request)))
            .or_default() += 1;
        if request.resource == "leases" {
            out.lease_total += 1;
            let name = request.name.clone().unwrap_or_else(|| "(list)".to_owned());
            *out.leases.entry(name).or_default() += 1;
        } else if request.verb == "watch" {
            out.watch_total += 1;
        } else {
            out.other.push(request);
        }
    }
    out
}

fn resource_of(request: &Audited) -> String {
    match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    }
}

fn per_minute(count: u64, window: Duration) -> f64 {
    count as f64 * 60.0 / window.as_secs_f64().max(f64::EPSILON)
}

// ----- phase 3: writes per endpoint change ------------------------------------------------

#[derive(Debug)]
struct Step {
    replicas: usize,
    /// Versions of c0's own slices of the Service in the step (changed source slices).
    source_changes: usize,
    /// Shoal's writes (Leases aside) per cluster index in the step, and what they were.
    writes: BTreeMap<usize, Vec<String>>,
    /// From c0's slice showing the new count to each importer showing it.
    propagation: BTreeMap<usize, Option<Duration>>,
}

#[derive(Debug)]
struct Changes {
    service: String,
    steps: Vec<Step>,
    importers: Vec<usize>,
}

impl Changes {
    fn importer_writes(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| self.importers.iter().map(|i| s.writes[i].len()))
            .sum()
    }

    fn source_changes(&self) -> usize {
        self.steps.iter().map(|s| s.source_changes).sum()
    }

    fn per_change(&self) -> f64 {
        let denominator = self.steps.len() * self.importers.len();
        self.importer_writes() as f64 / denominator.max(1) as f64
    }

    fn per_slice(&self) -> f64 {
        let denominator = self.source_changes() * self.importers.len();
        self.importer_writes() as f64 / denominator.max(1) as f64
    }
}

fn measure_changes(
    mesh: &Mesh,
    watches: &Watches,
    seen: &mut Observed,
    service: &str,
    changes: usize,
) -> anyhow::Result<Changes> {
    let importers: Vec<usize> = (1..mesh.planes().clusters().len()).collect();
    let mut steps = Vec::new();
    for replicas in (0..changes).map(|step| step + 2) {
        let (step, complete) = scale_step(mesh, watches, seen, service, replicas)?;
        steps.push(step);
        if !complete {
            eprintln!("step to {replicas} replicas did not reach every importer; stopping here");
            break;
        }
    }
    Ok(Changes {
        service: service.to_owned(),
        steps,
        importers,
    })
}

/// Scales `service` in c0 to `replicas`, follows the change until every importer shows
/// it (true) or [`CHANGE_TIMEOUT`] (false), then for [`CHANGE_SETTLE`] more, and counts
/// what was written meanwhile.
fn scale_step(
    mesh: &Mesh,
    watches: &Watches,
    seen: &mut Observed,
    service: &str,
    replicas: usize,
) -> anyhow::Result<(Step, bool)> {
    let clusters = mesh.planes().clusters();
    let importers: Vec<usize> = (1..clusters.len()).collect();
    watches.pump_for(seen, now());
    let before: Vec<usize> = clusters.iter().map(|c| audited(c).len()).collect();
    let source_before = seen.source_changes.len();
    let replicas_arg = format!("--replicas={replicas}");
    kubectl(
        mesh.cluster(0),
        &[
            "scale",
            "deployment",
            service,
            "-n",
            NAMESPACE,
            &replicas_arg,
        ],
    )?;
    let deadline = now() + CHANGE_TIMEOUT;
    let mut source_at = None;
    let mut reached: BTreeMap<usize, Instant> = BTreeMap::new();
    while reached.len() < importers.len() {
        let Some(tagged) = watches.next(deadline) else {
            break;
        };
        let at = tagged.at;
        seen.apply(tagged);
        if source_at.is_none() && seen.source_endpoints() == replicas {
            source_at = Some(at);
        }
        for &index in &importers {
            if seen.imported_endpoints(index, service) == replicas {
                reached.entry(index).or_insert(at);
            }
        }
    }
    watches.pump_for(seen, now() + CHANGE_SETTLE);
    let writes = clusters
        .iter()
        .zip(&before)
        .enumerate()
        .map(|(index, (cluster, &skip))| (index, writes_since(cluster, skip)))
        .collect();
    let propagation = importers
        .iter()
        .map(|i| {
            let took = source_at
                .zip(reached.get(i))
                .map(|(from, to)| to.saturating_duration_since(from));
            (*i, took)
        })
        .collect();
    let step = Step {
        replicas,
        source_changes: seen.source_changes.len() - source_before,
        writes,
        propagation,
    };
    Ok((step, reached.len() == importers.len()))
}

/// Shoal's writes in `cluster`'s audit log after the first `skip` requests, Leases aside.
fn writes_since(cluster: &Cluster, skip: usize) -> Vec<String> {
    audited(cluster)
        .into_iter()
        .skip(skip)
        .filter(|r| is_write(r) && r.resource != "leases")
        .map(|r| {
            format!(
                "{} {} {}",
                r.verb,
                resource_of(&r),
                r.name.unwrap_or_default()
            )
        })
        .collect()
}

// ----- objects -----------------------------------------------------------------------------

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["labels"][key].as_str()
}

/// Endpoints of a slice that are ready (an absent condition counts as ready, as the
/// EndpointSlice API says).
fn ready_endpoints(slice: &Value) -> usize {
    slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["conditions"]["ready"].as_bool() != Some(false))
        .count()
}

// ----- the report ------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Report {
    machine: Machine,
    phases: Vec<(String, Duration)>,
    latency: Option<Latency>,
    quiet_after: Option<Duration>,
    steady: Option<Steady>,
    changes: Option<Changes>,
    wall: Duration,
}

impl Report {
    fn phase(&mut self, name: &str, started: Instant) {
        let took = started.elapsed();
        eprintln!("  {name}: {:.1} s", took.as_secs_f64());
        self.phases.push((name.to_owned(), took));
    }
}

#[derive(Debug, Default)]
struct Machine {
    cores: usize,
    cpu: String,
    memory: String,
    kernel: String,
    apiserver: String,
    kubectl: String,
    shoal: String,
}

fn machine(mesh: &Mesh) -> Machine {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let version = mesh
        .cluster(0)
        .kubectl_json(&["version", "-o", "json"])
        .unwrap_or_default();
    let git = |v: &Value| v["gitVersion"].as_str().unwrap_or("?").to_owned();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu: field(&read("/proc/cpuinfo"), "model name"),
        memory: memory_gib(&field(&read("/proc/meminfo"), "MemTotal")),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        apiserver: git(&version["serverVersion"]),
        kubectl: git(&version["clientVersion"]),
        shoal: mesh.shoal().display().to_string(),
    }
}

/// `MemTotal` (`24683584 kB`) in GiB.
fn memory_gib(total: &str) -> String {
    total
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .map_or_else(
            |_| total.to_owned(),
            |kib| format!("{:.1} GiB", kib / 1_048_576.0),
        )
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn print_table(report: &Report, args: &Args) {
    let m = &report.machine;
    println!(
        "\nshoal-k8s-bench: {} clusters x {} replicas, {} services",
        args.clusters, args.replicas, args.services
    );
    println!(
        "machine: {} cores ({}), {} RAM, Linux {}, load average at the end {}",
        m.cores,
        m.cpu,
        m.memory,
        m.kernel,
        load_average()
    );
    println!(
        "kube-apiserver {}, kubectl {}, shoal {}",
        m.apiserver, m.kubectl, m.shoal
    );
    if let Some(l) = &report.latency {
        print_latency(l);
    }
    if let Some(s) = &report.steady {
        print_steady(s);
    }
    if let Some(c) = &report.changes {
        print_changes(c);
    }
    println!("\nwall time: {:.1} s", report.wall.as_secs_f64());
    for (name, took) in &report.phases {
        println!("  {name:<40} {:>7.1} s", took.as_secs_f64());
    }
    println!();
}

fn print_latency(l: &Latency) {
    println!(
        "\n1. export -> import latency in c{} (watched), from the ServiceExport's creation in c0",
        l.far
    );
    println!(
        "   {:<34} {:>5} {:>8} {:>9} {:>9} {:>9}",
        "", "n", "missing", "p50 ms", "p99 ms", "max ms"
    );
    for (name, s) in [
        ("ServiceImport with spec.ips", &l.import),
        ("EndpointSlice with its endpoint", &l.slice),
        ("both (the figure)", &l.both),
    ] {
        println!(
            "   {name:<34} {:>5} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            s.count,
            s.missing,
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        );
    }
    let met = l.both.missing == 0 && ms(l.both.p99) <= TARGET_P99_MS;
    println!(
        "   target: p99 <= {TARGET_P99_MS} ms on loopback (MCS conformance allows 20 s): {}",
        verdict(met)
    );
    let count = l.both.count + l.both.missing;
    println!(
        "   creation = the earlier of `kubectl apply` returning and c0's watch delivering the \
         export (the watch was earlier for {} of {count}); exports created back to back, one \
         kubectl apply each ({:.0} ms on average){}",
        l.watch_first,
        ms(l.kubectl_mean),
        if count < 100 {
            "; with fewer than 100 samples, p99 is the max"
        } else {
            ""
        }
    );
}

fn print_steady(s: &Steady) {
    println!(
        "\n2. Shoal's API requests at steady state, over {:.1} s",
        s.window.as_secs_f64()
    );
    println!(
        "   {:<8} {:>10} {:>12} {:>12} {:>14}",
        "cluster", "total/min", "leases/min", "watch/min", "other/min"
    );
    for c in &s.clusters {
        println!(
            "   {:<8} {:>10.1} {:>12.1} {:>12.1} {:>14.1}",
            c.context,
            per_minute(c.total, s.window),
            per_minute(c.lease_total, s.window),
            per_minute(c.watch_total, s.window),
            per_minute(c.other.len() as u64, s.window)
        );
    }
    for c in &s.clusters {
        let kinds: Vec<String> = c
            .by_kind
            .iter()
            .map(|((verb, resource), n)| format!("{verb} {resource} {n}"))
            .collect();
        let leases: Vec<String> = c.leases.iter().map(|(l, n)| format!("{l} {n}")).collect();
        println!(
            "   {}: {}; leases by name: {}",
            c.context,
            kinds.join(", "),
            leases.join(", ")
        );
        for r in c.other.iter().take(20) {
            println!(
                "     other: {} {} {}/{} -> {} at {}",
                r.verb,
                resource_of(r),
                r.namespace.as_deref().unwrap_or(""),
                r.name.as_deref().unwrap_or(""),
                r.code,
                r.at
            );
        }
    }
    let other: u64 = s.clusters.iter().map(|c| c.other.len() as u64).sum();
    println!(
        "   target: {TARGET_STEADY_OTHER} requests besides watches and Lease renewals: {} ({other})",
        verdict(other == TARGET_STEADY_OTHER)
    );
}

fn print_changes(c: &Changes) {
    let names: Vec<String> = c.importers.iter().map(|i| format!("c{i}")).collect();
    println!(
        "\n3. Shoal's writes (Leases aside) per endpoint change: {} scaled up by one, {} times",
        c.service,
        c.steps.len()
    );
    println!(
        "   {:<9} {:>14} {:>10}   {:<16} c0 slice -> importer (ms)",
        "replicas",
        "c0 slice vers",
        "c0 writes",
        format!("writes {}", names.join("/")),
    );
    for step in &c.steps {
        let writes: Vec<String> = c
            .importers
            .iter()
            .map(|i| step.writes[i].len().to_string())
            .collect();
        let took: Vec<String> = c
            .importers
            .iter()
            .map(|i| step.propagation[i].map_or("-".to_owned(), |d| format!("{:.1}", ms(d))))
            .collect();
        println!(
            "   {:<9} {:>14} {:>10}   {:<16} {}",
            step.replicas,
            step.source_changes,
            step.writes.get(&0).map_or(0, Vec::len),
            writes.join("/"),
            took.join("/")
        );
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for step in &c.steps {
        for i in &c.importers {
            for w in &step.writes[i] {
                let kind = w.rsplit_once(' ').map_or(w.as_str(), |(k, _)| k);
                *kinds.entry(kind).or_default() += 1;
            }
        }
    }
    println!("   importer writes by kind: {kinds:?}");
    println!(
        "   {:.2} writes per change per importer; {:.2} per changed source slice ({} importer writes, {} source slice versions)",
        c.per_change(),
        c.per_slice(),
        c.importer_writes(),
        c.source_changes()
    );
    println!(
        "   target: {TARGET_WRITES_PER_SLICE} write per changed slice: {}",
        verdict((c.per_slice() - TARGET_WRITES_PER_SLICE).abs() < 1e-9)
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report {
    fn to_json(&self, args: &Args) -> String {
        let m = &self.machine;
        let latency = self.latency.as_ref().map(|l| {
            json!({
                "cluster": format!("c{}", l.far),
                "import": l.import.to_json(),
                "slice": l.slice.to_json(),
                "both": l.both.to_json(),
                "kubectl_apply_mean_ms": ms(l.kubectl_mean),
                "created_by_watch": l.watch_first,
                "target_p99_ms": TARGET_P99_MS,
            })
        });
        let steady = self.steady.as_ref().map(|s| {
            let clusters: Vec<Value> = s
                .clusters
                .iter()
                .map(|c| {
                    let by_kind: BTreeMap<String, u64> = c
                        .by_kind
                        .iter()
                        .map(|((v, r), n)| (format!("{v} {r}"), *n))
                        .collect();
                    json!({
                        "cluster": c.context,
                        "per_minute": per_minute(c.total, s.window),
                        "leases_per_minute": per_minute(c.lease_total, s.window),
                        "watch_per_minute": per_minute(c.watch_total, s.window),
                        "other": c.other.len(),
                        "other_per_minute": per_minute(c.other.len() as u64, s.window),
                        "by_kind": by_kind,
                        "leases": c.leases,
                    })
                })
                .collect();
            json!({
                "window_s": s.window.as_secs_f64(),
                "clusters": clusters,
                "target_other": TARGET_STEADY_OTHER,
            })
        });
        let changes = self.changes.as_ref().map(|c| {
            let steps: Vec<Value> = c
                .steps
                .iter()
                .map(|s| {
                    let writes: BTreeMap<String, usize> = s
                        .writes
                        .iter()
                        .map(|(i, w)| (format!("c{i}"), w.len()))
                        .collect();
                    let propagation: BTreeMap<String, Option<f64>> = s
                        .propagation
                        .iter()
                        .map(|(i, d)| (format!("c{i}"), d.map(ms)))
                        .collect();
                    json!({
                        "replicas": s.replicas,
                        "source_slice_versions": s.source_changes,
                        "writes": writes,
                        "propagation_ms": propagation,
                    })
                })
                .collect();
            json!({
                "service": c.service,
                "steps": steps,
                "importer_writes": c.importer_writes(),
                "source_slice_versions": c.source_changes(),
                "writes_per_change_per_importer": c.per_change(),
                "writes_per_changed_slice": c.per_slice(),
                "target_writes_per_slice": TARGET_WRITES_PER_SLICE,
            })
        });
        let phases: BTreeMap<&str, f64> = self
            .phases
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_secs_f64()))
            .collect();
        json!({
            "bench": "shoal-k8s",
            "clusters": args.clusters,
            "replicas": args.replicas,
            "services": args.services,
            "machine": {
                "cores": m.cores,
                "cpu": m.cpu,
                "memory": m.memory,
                "kernel": m.kernel,
                "load": load_average(),
                "kube_apiserver": m.apiserver,
                "kubectl": m.kubectl,
                "shoal": m.shoal,
            },
            "export_to_import": latency,
            "quiet_after_s": self.quiet_after.map(|d| d.as_secs_f64()),
            "steady": steady,
            "endpoint_changes": changes,
            "phases_s": phases,
            "wall_s": self.wall.as_secs_f64(),
        })
        .to_string()
    }
}
