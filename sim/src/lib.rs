//! Shoal's deterministic simulator: the protocol core (`shoal_node::core`) driven in
//! virtual time through a simulated network and simulated disks, with faults, and
//! checked against the invariants of DESIGN.md after every event.
//!
//! A run is a pure function of its [`RunSpec`]: one event queue ordered by (time,
//! sequence), one RNG seeded by the spec's seed from which everything derives (keys,
//! regions, workload, faults, every node's core seed, every network decision), no hash
//! map iteration, no real clock, no thread. The same spec gives the same trace, bit for
//! bit, and its `trace_hash` proves it.
//!
//! Table of contents:
//! - [`spec`]: what a run is (clusters, replicas, seed, scenario...) and its replay command.
//! - [`engine`]: virtual time and the event queue.
//! - [`clock`]: each node's clock as a function of true time: drift and jumps.
//! - [`topology`]: clusters, regions, keys, nodes and their core configurations.
//! - [`keyspace`]: dense indexes for (origin, service).
//! - [`network`]: latency by region, loss, duplication, reordering, partitions, clogs.
//! - [`disk`]: what survives a crash (flushed and lazy writes).
//! - [`workload`]: exports and their changes.
//! - [`byzantine`]: forger, replayer and equivocator.
//! - [`lease`]: the lease workload's voters, competitors and fenced store.
//! - [`scenario`]: one function per scenario, building a fault schedule.
//! - [`invariants`]: one file per invariant.
//! - [`metrics`]: propagation latency and traffic.
//! - [`world`]: the state of a run and its event loop.
//! - [`report`]: the JSON report and percentiles.
//! - [`plot`]: the SVG timeline.
//! - [`sweep`], [`bench`], [`cli`]: the commands.
//!
//! **Architecture invariant:** the simulator never re-implements protocol logic. It
//! only carries out the commands the core returns, and judges the outcome from ground
//! truth it alone knows (true keys, true crashes, true partitions).

pub mod bench;
pub mod byzantine;
pub mod cli;
pub mod clock;
pub mod disk;
pub mod engine;
pub mod invariants;
pub mod keyspace;
pub mod lease;
pub mod metrics;
pub mod network;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod spec;
pub mod sweep;
pub mod topology;
pub mod workload;
pub mod world;

pub use report::RunReport;
pub use spec::{RunSpec, Scenario};
pub use world::RunOptions;

/// What one run produced.
#[derive(Debug)]
pub struct RunOutcome {
    pub report: RunReport,
    /// Present when [`RunOptions::timeline`] was set.
    pub timeline: Option<plot::Timeline>,
}

/// Runs one simulation to the end.
pub fn run(spec: &RunSpec, options: RunOptions) -> RunOutcome {
    // Wall time is measured around the run, never read inside it.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let world = world::World::new(spec, options);
    let (mut report, timeline) = world.run();
    report.wall_ms = started.elapsed().as_millis() as u64;
    report.peak_rss_mib = report::peak_rss_mib();
    RunOutcome { report, timeline }
}
