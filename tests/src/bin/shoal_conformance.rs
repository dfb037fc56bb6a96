//! `shoal-conformance`: the upstream MCS API conformance suite
//! (`sigs.k8s.io/mcs-api/conformance`, tag `conformance/v0.5.0`) against Shoal.
//!
//! Starts a [`Mesh`] of two real control planes (contexts `c0`, `c1`) with one `shoal`
//! replica each (the Kubernetes backend, RBAC as deployed), then runs the suite binary
//! that `tests/k8s/build.sh --conformance` builds with the administrators' kubeconfig.
//!
//! Pods never execute here (kwok makes them Running with an IP; there is no kubelet),
//! so the specs that exec into a pod cannot pass: the DNS specs (label `DNS`) and the
//! connectivity specs (`connectivity.go`, one of which is labelled only `Required` and
//! would pass vacuously, since a failed exec prints nothing) are filtered out before
//! they start and reported as NOT RUN with that reason, never as passed.
//!
//! The suite's own reports are kept in `--report-dir` (default `target/conformance/`):
//! `report.yaml` and `report.html` (upstream's conformance report), `ginkgo.json`,
//! `junit.xml`, `suite.log` (its output), and `summary.txt` (the table printed here).
//! The exit status is 1 when any ServiceImport or EndpointSlice spec did not pass
//! (or did not run), or when the suite's report is missing.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::Value;
use shoal_tests::k8s::binaries::build_script;
use shoal_tests::mesh::{Mesh, MeshConfig, repo_root};

/// The clusters the suite runs against (it needs two for every conflict spec).
const CLUSTERS: usize = 2;
/// Ginkgo's label filter: the specs that need a pod to execute stay out.
const LABEL_FILTER: &str = "!DNS && !Connectivity";
/// Ginkgo's skip regex: `connectivity.go`'s specs, including "should be inaccessible",
/// which carries only the `Required` label. (A spec's full text starts with its
/// containers' texts, joined by spaces: the suite's top containers have none, so
/// the text starts with a space and cannot be anchored.)
const SKIP_REGEX: &str = r"\bConnectivity to ";
/// The upstream suite's tag, for the log.
const SUITE_VERSION: &str = "conformance/v0.5.0";
/// Most characters of a failure message shown in the table.
const MESSAGE_CHARS_MAX: usize = 160;
/// Lines of the suite's output shown when it cannot be read as a report.
const LOG_TAIL_LINES: usize = 60;

#[derive(Debug, Parser)]
#[command(about = "The upstream MCS API conformance suite against Shoal on real control planes")]
struct Cli {
    /// Where the suite's reports go (made if missing; earlier reports are replaced).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// The suite binary; default: what `tests/k8s/build.sh --conformance` prints.
    #[arg(long)]
    suite: Option<PathBuf>,
    /// The whole suite's deadline (Ginkgo's `--ginkgo.timeout`), in seconds.
    #[arg(long, default_value_t = 1_800)]
    timeout_s: u64,
}

/// Which part of the MCS API a spec checks: the upstream file it is declared in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Area {
    ServiceImport,
    EndpointSlice,
    Dns,
    Connectivity,
    Other,
}

impl Area {
    fn of(file: &str) -> Self {
        match file.rsplit('/').next().unwrap_or(file) {
            "service_import.go" => Area::ServiceImport,
            "endpoint_slice.go" => Area::EndpointSlice,
            "clusterip_service_dns.go" | "headless_service_dns.go" => Area::Dns,
            "connectivity.go" => Area::Connectivity,
            _ => Area::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Area::ServiceImport => "ServiceImport",
            Area::EndpointSlice => "EndpointSlice",
            Area::Dns => "DNS",
            Area::Connectivity => "Connectivity",
            Area::Other => "other",
        }
    }

    /// Whether every spec of the area must run and pass for the run to succeed.
    fn gating(self) -> bool {
        matches!(self, Area::ServiceImport | Area::EndpointSlice)
    }

    /// Why the area's specs are filtered out, if they are.
    fn not_run_reason(self) -> Option<&'static str> {
        match self {
            Area::Dns => Some("execs dig in a pod; kwok pods never execute"),
            Area::Connectivity => Some("execs nc in a pod; kwok pods never execute"),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    NotRun,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotRun => "NOT RUN",
        }
    }
}

/// One spec of the suite's JSON report, as the table shows it.
#[derive(Debug)]
struct Spec {
    area: Area,
    text: String,
    labels: Vec<String>,
    verdict: Verdict,
    /// Why it failed or did not run.
    note: String,
    seconds: f64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shoal-conformance: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; `Ok(false)` when a gating spec did not pass.
fn run(cli: Cli) -> anyhow::Result<bool> {
    let report_dir = cli
        .report_dir
        .unwrap_or_else(|| repo_root().join("target/conformance"));
    fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;
    let report_dir = report_dir.canonicalize()?;
    for stale in [
        "report.yaml",
        "report.html",
        "ginkgo.json",
        "junit.xml",
        "summary.txt",
    ] {
        let _ = fs::remove_file(report_dir.join(stale));
    }
    let suite = match cli.suite {
        Some(suite) => suite,
        None => build_suite()?,
    };
    check_filters(&suite, &report_dir)?;
    let started = shoal_tests::k8s::wait::now();
    tracing::info!(clusters = CLUSTERS, "starting the control planes and Shoal");
    let mut mesh = Mesh::start(&MeshConfig::new(CLUSTERS, 1)).context("starting the mesh")?;
    tracing::info!(
        seconds = started.elapsed().as_secs(),
        dir = %mesh.dir.display(),
        "mesh ready"
    );
    let suite_started = shoal_tests::k8s::wait::now();
    let status = run_suite(&suite, &mesh, &report_dir, cli.timeout_s)?;
    let suite_seconds = suite_started.elapsed().as_secs();
    tracing::info!(%status, seconds = suite_seconds, "suite finished");
    let report = report_dir.join("ginkgo.json");
    let specs = match read_specs(&report) {
        Ok(specs) => specs,
        Err(e) => {
            mesh.keep();
            eprintln!(
                "{}",
                shoal_tests::k8s::log_tail(&report_dir.join("suite.log"), LOG_TAIL_LINES)
            );
            return Err(e.context(format!("reading {}", report.display())));
        }
    };
    let table = table(&specs);
    print!("{table}");
    fs::write(report_dir.join("summary.txt"), &table)?;
    let ok = gating_passed(&specs);
    println!(
        "suite: {suite_seconds} s, everything: {} s; reports in {}",
        started.elapsed().as_secs(),
        report_dir.display()
    );
    if !ok {
        let kept = mesh.keep();
        eprintln!(
            "a ServiceImport or EndpointSlice spec did not pass; the mesh's logs are in {}\n{}",
            kept.display(),
            mesh.log_tails(30)
        );
    }
    Ok(ok)
}

/// `tests/k8s/build.sh --conformance`: builds the suite if the cache lacks it; its
/// path is the last line.
fn build_suite() -> anyhow::Result<PathBuf> {
    let output = Command::new("bash")
        .arg(build_script())
        .arg("--conformance")
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/k8s/build.sh --conformance")?;
    if !output.status.success() {
        bail!(
            "tests/k8s/build.sh --conformance exited with {}",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !path.is_file() {
        bail!("tests/k8s/build.sh --conformance printed {path:?}, which is no file");
    }
    Ok(path)
}

/// The suite's filters: the specs that exec into a pod stay out.
fn filter_args() -> [String; 2] {
    [
        format!("--ginkgo.label-filter={LABEL_FILTER}"),
        format!("--ginkgo.skip={SKIP_REGEX}"),
    ]
}

/// A dry run of the suite with [`filter_args`]: fails unless every spec that needs a
/// pod to execute would be skipped (so none can pass vacuously) and every
/// ServiceImport and EndpointSlice spec would run.
fn check_filters(suite: &Path, report_dir: &Path) -> anyhow::Result<()> {
    let report = report_dir.join("dry-run.json");
    let output = Command::new(suite)
        .current_dir(report_dir)
        .args(filter_args())
        .arg("--ginkgo.dry-run")
        .arg(format!("--ginkgo.json-report={}", report.display()))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("dry-running {}", suite.display()))?;
    // The dry run writes upstream's report too; the real run replaces it.
    for stale in ["report.yaml", "report.html"] {
        let _ = fs::remove_file(report_dir.join(stale));
    }
    let specs = read_specs(&report).with_context(|| {
        format!(
            "the suite's dry run ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let _ = fs::remove_file(&report);
    let wrong: Vec<&str> = specs
        .iter()
        .filter(|s| match s.area.not_run_reason() {
            Some(_) => s.verdict != Verdict::NotRun,
            None => s.verdict != Verdict::Pass,
        })
        .map(|s| s.text.as_str())
        .collect();
    if !wrong.is_empty() {
        bail!(
            "the filters {:?} would run a spec that needs a pod to execute, or skip one \
             that needs none: {wrong:?}",
            filter_args()
        );
    }
    Ok(())
}

/// Runs the suite in `report_dir` (it writes `report.yaml` and `report.html` into its
/// working directory), its output copied to stderr and `suite.log`.
fn run_suite(
    suite: &Path,
    mesh: &Mesh,
    report_dir: &Path,
    timeout_s: u64,
) -> anyhow::Result<std::process::ExitStatus> {
    let contexts: Vec<String> = mesh
        .planes()
        .clusters()
        .iter()
        .map(|c| c.context().to_owned())
        .collect();
    let mut command = Command::new(suite);
    command
        .current_dir(report_dir)
        .arg(format!(
            "--kubeconfig={}",
            mesh.planes().kubeconfig().display()
        ))
        .arg(format!("--contexts={}", contexts.join(",")))
        .args(filter_args())
        .arg("--ginkgo.json-report=ginkgo.json")
        .arg("--ginkgo.junit-report=junit.xml")
        .arg(format!("--ginkgo.timeout={timeout_s}s"))
        .arg("--ginkgo.no-color")
        .arg("--ginkgo.v")
        .arg("--project=Shoal")
        .arg(format!("--version={}", env!("CARGO_PKG_VERSION")))
        // The suite's client must reach only these loopback API servers.
        .env_remove("KUBECONFIG")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tracing::info!(suite = %suite.display(), version = SUITE_VERSION, "running the suite");
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", suite.display()))?;
    let log = fs::File::create(report_dir.join("suite.log"))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let copy_stderr = {
        let log = log.try_clone()?;
        std::thread::spawn(move || copy_lines(stderr, log))
    };
    copy_lines(stdout, log);
    let _ = copy_stderr.join();
    Ok(child.wait()?)
}

/// Copies lines from `from` to `log` and to this process's stderr.
fn copy_lines(from: impl std::io::Read, mut log: fs::File) {
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        let _ = writeln!(log, "{line}");
        eprintln!("{line}");
    }
}

/// The `It` specs of Ginkgo's JSON report.
fn read_specs(path: &Path) -> anyhow::Result<Vec<Spec>> {
    let text = fs::read_to_string(path)?;
    let suites: Value = serde_json::from_str(&text)?;
    let suite = suites
        .as_array()
        .and_then(|s| s.first())
        .context("the report holds no suite")?;
    let reports = suite["SpecReports"]
        .as_array()
        .context("the report holds no SpecReports")?;
    // A BeforeSuite failure (say, a missing CRD) fails every spec.
    if let Some(before) = reports
        .iter()
        .find(|r| r["LeafNodeType"] == "BeforeSuite" && r["State"].as_str() != Some("passed"))
    {
        bail!(
            "the suite's BeforeSuite {}: {}",
            before["State"].as_str().unwrap_or("?"),
            failure_message(before)
        );
    }
    let specs: Vec<Spec> = reports
        .iter()
        .filter(|r| r["LeafNodeType"] == "It")
        .map(spec_of)
        .collect();
    if specs.is_empty() {
        bail!("the report holds no spec");
    }
    Ok(specs)
}

fn spec_of(report: &Value) -> Spec {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let file = report["ContainerHierarchyLocations"][0]["FileName"]
        .as_str()
        .or(report["LeafNodeLocation"]["FileName"].as_str())
        .unwrap_or_default();
    let area = Area::of(file);
    let mut texts = strings(&report["ContainerHierarchyTexts"]);
    texts.retain(|t| !t.is_empty());
    texts.push(
        report["LeafNodeText"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let mut labels: Vec<String> = report["ContainerHierarchyLabels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(strings)
        .chain(strings(&report["LeafNodeLabels"]))
        .collect();
    labels.sort();
    labels.dedup();
    let state = report["State"].as_str().unwrap_or("?");
    let (verdict, note) = match (state, area.not_run_reason()) {
        ("passed", _) => (Verdict::Pass, String::new()),
        ("skipped", Some(reason)) => (Verdict::NotRun, reason.to_owned()),
        // A spec that should have run but was skipped fails the run.
        ("skipped", None) => (
            Verdict::Fail,
            format!("skipped: {}", failure_message(report)),
        ),
        (state, _) => (
            Verdict::Fail,
            format!("{state}: {}", failure_message(report)),
        ),
    };
    Spec {
        area,
        text: texts.join(" "),
        labels,
        verdict,
        note,
        seconds: report["RunTime"].as_f64().unwrap_or(0.0) / 1e9,
    }
}

/// The suite's own non-conformance note if it made one, else the failure's first line.
fn failure_message(report: &Value) -> String {
    let non_conformant = report["ReportEntries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["Name"] == "non-conformant")
        .and_then(|e| e["Value"]["Representation"].as_str())
        .filter(|m| !m.is_empty());
    let message = non_conformant
        .or(report["Failure"]["Message"].as_str())
        .unwrap_or_default();
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    line.trim().chars().take(MESSAGE_CHARS_MAX).collect()
}

/// Whether every ServiceImport and EndpointSlice spec passed (and there were some).
fn gating_passed(specs: &[Spec]) -> bool {
    let gating: Vec<&Spec> = specs.iter().filter(|s| s.area.gating()).collect();
    !gating.is_empty() && gating.iter().all(|s| s.verdict == Verdict::Pass)
}

/// The pass / fail / not-run table, by area, then totals.
fn table(specs: &[Spec]) -> String {
    let mut sorted: Vec<&Spec> = specs.iter().collect();
    sorted.sort_by(|a, b| (a.area, &a.text).cmp(&(b.area, &b.text)));
    let mut out =
        String::from("| area | spec | labels | result | s | note |\n|---|---|---|---|---|---|\n");
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for spec in sorted {
        *totals.entry(spec.verdict.name()).or_default() += 1;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} |\n",
            spec.area.name(),
            spec.text.replace('|', "\\|"),
            spec.labels.join(", "),
            spec.verdict.name(),
            spec.seconds,
            spec.note.replace('|', "\\|"),
        ));
    }
    let count = |v: Verdict| totals.get(v.name()).copied().unwrap_or(0);
    // The plain closing line CI reads; "skipped" are the specs that did not run.
    out.push_str(&format!(
        "\nconformance: {} passed, {} failed, {} skipped\n",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::NotRun)
    ));
    out
}
