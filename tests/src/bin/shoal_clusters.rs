//! `shoal-clusters up`: the tests' real Kubernetes control planes, for people.
//!
//! Starts N clusters on loopback (see `shoal_tests::k8s`), writes `DIR/kubeconfig`
//! with a context per cluster, prints how to use it, and runs until Ctrl-C or SIGTERM;
//! then stops every process it started.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shoal_tests::k8s::{
    CLUSTERS_MAX, ControlPlanes, ControlPlanesConfig, NODES_PER_CLUSTER_MAX,
    STARTUP_TIMEOUT_DEFAULT,
};
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Commands::Up {
        clusters,
        nodes,
        dir,
        startup_timeout_s,
    } = Cli::parse().command;
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
