//! `shoal-sim sweep`: many seeds, one line per failure with its replay command, and a
//! determinism check (the first seed runs twice and must give the same trace).
//!
//! Runs are spread over a few worker threads; each run stays single-threaded and
//! deterministic, and results are reported in seed order whatever the scheduling.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::invariants::determinism::check_same_trace;
use crate::report::RunReport;
use crate::spec::{RunSpec, Scenario};
use crate::{RunOptions, run};

/// Longest excerpt of a failure's first problem on its line.
const DETAIL_CHARS_MAX: usize = 160;

/// The default size of a sweep run: small enough that 200 seeds take a few minutes.
pub fn default_spec() -> RunSpec {
    RunSpec::new(6, 0, Scenario::Steady)
}

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// Sizes and duration; the seed and scenario are set per run.
    pub base: RunSpec,
    pub seeds: u64,
    pub start_seed: u64,
    /// The scenarios the seeds cycle through (one, `all`, or `lease`).
    pub scenario: Vec<Scenario>,
    pub threads: usize,
}

impl SweepConfig {
    /// Every run of the sweep, in order.
    pub fn specs(&self) -> Vec<RunSpec> {
        (0..self.seeds)
            .map(|i| RunSpec {
                seed: self.start_seed + i,
                scenario: self.scenario[(i % self.scenario.len() as u64) as usize],
                ..self.base.clone()
            })
            .collect()
    }
}

/// The outcome of a sweep.
#[derive(Debug)]
pub struct SweepSummary {
    pub reports: Vec<RunReport>,
    pub determinism: Result<(), String>,
    pub wall_ms: u64,
}

impl SweepSummary {
    pub fn failures(&self) -> impl Iterator<Item = &RunReport> {
        self.reports.iter().filter(|r| !r.passed())
    }

    pub fn passed(&self) -> bool {
        self.failures().next().is_none() && self.determinism.is_ok()
    }

    /// One line per failure, then the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in self.failures() {
            let first = r
                .violation_details
                .first()
                .or(r.convergence_error.as_ref())
                .map_or("", String::as_str);
            let first: String = first.chars().take(DETAIL_CHARS_MAX).collect();
            out += &format!(
                "FAIL seed {} {}: {} violations, converged {}, stranded nodes {}; replay: {} # {first}\n",
                r.seed, r.scenario, r.violations, r.converged, r.stranded_nodes, r.replay
            );
        }
        if let Err(e) = &self.determinism {
            out += &format!("FAIL determinism: {e}\n");
        }
        let p99_max = self
            .reports
            .iter()
            .filter_map(|r| r.propagation_ms.p99)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        out += &format!(
            "sweep: {} runs, {} failures, {} violations, {} false withdrawals, p99 propagation max {} ms, determinism {}, {} ms wall\n",
            self.reports.len(),
            self.failures().count(),
            self.reports.iter().map(|r| r.violations).sum::<u64>(),
            self.reports
                .iter()
                .map(|r| r.false_withdrawals)
                .sum::<u64>(),
            p99_max.map_or("-".into(), |v| format!("{v:.1}")),
            if self.determinism.is_ok() {
                "ok"
            } else {
                "FAILED"
            },
            self.wall_ms
        );
        out
    }
}

/// Runs every spec of `config` on `config.threads` workers.
pub fn sweep(config: &SweepConfig) -> SweepSummary {
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let specs = config.specs();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RunReport>>> = Mutex::new(vec![None; specs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..config.threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = specs.get(i) else { break };
                    let report = run(spec, RunOptions::default()).report;
                    if !report.passed() {
                        eprintln!("sweep: seed {} {} failed", spec.seed, spec.scenario);
                    }
                    results.lock().expect("no worker panics holding the lock")[i] = Some(report);
                }
            });
        }
    });
    let reports: Vec<RunReport> = results
        .into_inner()
        .expect("no worker panicked holding the lock")
        .into_iter()
        .flatten()
        .collect();
    let determinism = match (specs.first(), reports.first()) {
        (Some(spec), Some(first)) => {
            let again = run(spec, RunOptions::default()).report;
            check_same_trace(&first.trace_hash, &again.trace_hash)
        }
        _ => Ok(()),
    };
    SweepSummary {
        reports,
        determinism,
        wall_ms: started.elapsed().as_millis() as u64,
    }
}
