//! `shoal-clusters up`: the tests' real Kubernetes control planes, for people.
//! `shoal-clusters lab`: the same with Shoal on them, the seeds' lab of the end-to-end
//! test (`shoal_tests::lab`), optionally with its faults.
//!
//! `up` starts N clusters on loopback (see `shoal_tests::k8s`), writes
//! `DIR/kubeconfig` with a context per cluster, prints how to use it, and runs until
//! Ctrl-C or SIGTERM; then stops every process it started. `lab` starts three clusters
//! with two Shoal replicas each and the lab's workloads, waits until every cluster
//! imports them, runs the faults if asked (`--faults`: c1 dies and comes back, c0 is
//! partitioned away and healed, c0 is rolled) with a live timeline, and then runs until
//! interrupted, so its clusters can be read with kubectl.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shoal_tests::k8s::{
    CLUSTERS_MAX, ControlPlanes, ControlPlanesConfig, NODES_PER_CLUSTER_MAX,
    STARTUP_TIMEOUT_DEFAULT,
};
use shoal_tests::lab::{Install, Lab};
use tokio::signal::unix::{SignalKind, signal};

/// How often the running processes are checked while up.
const CHECK_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(about = "Real Kubernetes control planes on loopback, as Shoal's tests run them")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Start the clusters and keep them running until interrupted.
    Up {
        /// Number of clusters (contexts c0, c1, …).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=CLUSTERS_MAX as i64))]
        clusters: u16,
        /// kwok fake nodes per cluster.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=NODES_PER_CLUSTER_MAX as i64))]
        nodes: u16,
        /// Run directory: kubeconfig, certificates, etcd data, logs. Must be empty, new,
        /// or a previous run's directory (which is then cleared).
        #[arg(long)]
        dir: PathBuf,
        /// Seconds to wait for everything to be ready.
        #[arg(long, default_value_t = STARTUP_TIMEOUT_DEFAULT.as_secs())]
        startup_timeout_s: u64,
    },
    /// Three clusters with Shoal and the lab's workloads; `--faults` runs the
    /// end-to-end test's faults with a live timeline.
    Lab {
        /// Run the faults (a dead cluster, a partition, a rolling restart).
        #[arg(long)]
        faults: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (clusters, nodes, dir, startup_timeout_s) = match Cli::parse().command {
        Commands::Up {
            clusters,
            nodes,
            dir,
            startup_timeout_s,
        } => (clusters, nodes, dir, startup_timeout_s),
        Commands::Lab { faults } => return lab(faults),
    };
    let config = ControlPlanesConfig {
        clusters: usize::from(clusters),
        nodes_per_cluster: usize::from(nodes),
        dir: Some(dir),
        startup_timeout: Duration::from_secs(startup_timeout_s),
    };
    let mut planes = ControlPlanes::start(&config).context("starting the control planes")?;
    print_usage(&planes);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    let outcome = runtime.block_on(run_until_signal(&mut planes));
    eprintln!("stopping the control planes");
    planes.stop();
    eprintln!("stopped");
    outcome
}

/// `shoal-clusters lab`: the lab, its faults if asked, then up until interrupted.
fn lab(faults: bool) -> anyhow::Result<()> {
    let mut lab = Lab::start(Install::shipped()).context("starting the lab")?;
    lab.timeline.live = true;
    eprint!("{}", lab.timeline.render());
    let steps = |lab: &mut Lab| -> Result<(), String> {
        lab.wait_converged(None, "every cluster imports rebel-base and fraud-detection")?;
        if faults {
            lab.kill_cluster(1)?;
            lab.restart_cluster(1)?;
            lab.partition(0, 2)?;
            lab.heal(0)?;
            lab.roll(0)?;
        }
        Ok(())
    };
    let outcome = steps(&mut lab);
    println!("{}", lab.report());
    if let Err(e) = outcome {
        eprintln!("{}", lab.mesh.log_tails(20));
        anyhow::bail!("the lab failed: {e}");
    }
    print_usage(lab.mesh.planes());
    for node in &lab.mesh.nodes {
        println!(
            "  {}  http://{}/v1/status  log {}",
            node.identity,
            node.http,
            node.log.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    runtime.block_on(run_until_signal(lab.mesh.planes_mut()))
}

fn print_usage(planes: &ControlPlanes) {
    let kubeconfig = planes.kubeconfig().display();
    println!(
        "{} control planes ready in {:.1} s (run directory {}).",
        planes.clusters().len(),
        planes.startup_time().as_secs_f64(),
        planes.dir().display()
    );
    for cluster in planes.clusters() {
        println!(
            "  {}  {}  services {}  pods {}  logs {}",
            cluster.context(),
            cluster.server(),
            cluster.service_cidr(),
            cluster.pod_cidr(),
            cluster.dir().display()
        );
    }
    let last = planes.clusters().len() - 1;
    println!("\n  export KUBECONFIG={kubeconfig}\n  kubectl --context c{last} get nodes\n");
    println!("Press Ctrl-C (or send SIGTERM) to stop everything.");
}

/// Waits for Ctrl-C or SIGTERM, or for a process to exit (an error).
async fn run_until_signal(planes: &mut ControlPlanes) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                result.context("listening for Ctrl-C")?;
                return Ok(());
            }
            _ = terminate.recv() => return Ok(()),
            _ = check.tick() => planes
                .check_running()
                .context("a control plane process stopped on its own")?,
        }
    }
}
