//! The command line: `run`, `sweep` and `bench`.
//!
//! ```text
//! shoal-sim run --clusters N [--replicas R] [--services S] [--endpoints E]
//!               --seed SEED --scenario NAME [--duration-s D] [--json] [--plot FILE.svg]
//! shoal-sim sweep --seeds K --scenario NAME|all [--clusters N ...] [--start-seed S]
//! shoal-sim bench [--skip-large]
//! ```
//! Exit status: 0 when every run passed (no violation, converged), 1 when one did not,
//! 2 on a usage error.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use crate::spec::{RunSpec, Scenario, SpecError, UnknownScenario};
use crate::sweep::{self, SweepConfig};
use crate::{RunOptions, bench, plot};

pub const USAGE: &str = "usage:
  shoal-sim run --clusters N [--replicas R] [--services S] [--endpoints E] --seed SEED
                --scenario NAME [--duration-s D] [--json] [--plot FILE.svg] [--progress]
  shoal-sim sweep --seeds K --scenario NAME|all|lease [--clusters N] [--replicas R] [--services S]
                  [--endpoints E] [--duration-s D] [--start-seed S] [--threads T]
  shoal-sim bench [--skip-large]
scenarios: steady churn partition-heal oneway lossy crash-restart byzantine chaos affinity
           lease-partition lease-pause lease-ring lease-restart lease-drift lease-drift-beyond
(sweep: --scenario all cycles the first nine, --scenario lease the five safe lease ones)";

/// Options that take no value.
const SWITCHES: [&str; 4] = ["json", "skip-large", "help", "progress"];

/// A command line the simulator cannot run. Nothing was run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no command given")]
    NoCommand,
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("missing required option --{0}")]
    Missing(&'static str),
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    #[error("--{0} needs a value")]
    NoValue(String),
    #[error("--{flag}: {value:?} is not a valid number")]
    NotANumber { flag: String, value: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Scenario(#[from] UnknownScenario),
}

/// Parsed `--name value` pairs and switches.
#[derive(Debug, Default)]
pub struct Args {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
}

impl Args {
    pub fn parse(raw: &[String]) -> Result<Self, CliError> {
        let mut args = Args::default();
        let mut it = raw.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(CliError::Unexpected(arg.clone()));
            };
            if SWITCHES.contains(&name) {
                args.switches.push(name.to_owned());
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| CliError::NoValue(name.to_owned()))?;
            args.values.insert(name.to_owned(), value.clone());
        }
        Ok(args)
    }

    pub fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn number(&self, name: &str) -> Result<Option<u64>, CliError> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| CliError::NotANumber {
                    flag: name.to_owned(),
                    value: v.to_owned(),
                })
            })
            .transpose()
    }

    fn required(&self, name: &'static str) -> Result<u64, CliError> {
        self.number(name)?.ok_or(CliError::Missing(name))
    }

    /// Checks that only `known` options were given.
    fn only(&self, known: &[&str]) -> Result<(), CliError> {
        let given = self.values.keys().chain(self.switches.iter());
        match given.into_iter().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(CliError::Unexpected(format!("--{k}"))),
            None => Ok(()),
        }
    }
}

/// The size options shared by `run` and `sweep`, over `base`.
fn sizes(args: &Args, mut base: RunSpec) -> Result<RunSpec, CliError> {
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    if let Some(v) = args.number("clusters")? {
        base.clusters = usize_of(v);
    }
    if let Some(v) = args.number("replicas")? {
        base.replicas = usize_of(v);
    }
    if let Some(v) = args.number("services")? {
        base.services = usize_of(v);
    }
    if let Some(v) = args.number("endpoints")? {
        base.endpoints = usize_of(v);
    }
    if let Some(v) = args.number("duration-s")? {
        base.duration_s = Some(v);
    }
    Ok(base)
}

pub fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&raw) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal-sim: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(raw: &[String]) -> Result<ExitCode, CliError> {
    let (command, rest) = raw.split_first().ok_or(CliError::NoCommand)?;
    let args = Args::parse(rest)?;
    if args.switch("help") || command == "help" || command == "--help" {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    }
    match command.as_str() {
        "run" => cmd_run(&args),
        "sweep" => cmd_sweep(&args),
        "bench" => {
            args.only(&["skip-large"])?;
            Ok(bench::run_bench(args.switch("skip-large")))
        }
        other => Err(CliError::UnknownCommand(other.to_owned())),
    }
}

fn cmd_run(args: &Args) -> Result<ExitCode, CliError> {
    args.only(&[
        "clusters",
        "replicas",
        "services",
        "endpoints",
        "seed",
        "scenario",
        "duration-s",
        "json",
        "plot",
        "progress",
    ])?;
    let clusters = args.required("clusters")?;
    let seed = args.required("seed")?;
    let scenario: Scenario = args
        .text("scenario")
        .ok_or(CliError::Missing("scenario"))?
        .parse()?;
    let spec = sizes(args, RunSpec::new(clusters as usize, seed, scenario))?;
    spec.validate()?;
    let plot_path = args.text("plot");
    let outcome = crate::run(
        &spec,
        RunOptions {
            timeline: plot_path.is_some(),
            progress: args.switch("progress"),
        },
    );
    let report = outcome.report;
    if args.switch("json") {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.summary());
    }
    let mut ok = report.passed();
    if let (Some(path), Some(timeline)) = (plot_path, outcome.timeline)
        && let Err(e) = plot::write_svg(Path::new(path), &timeline)
    {
        eprintln!("shoal-sim: {e}");
        ok = false;
    }
    if !report.passed() {
        eprintln!(
            "shoal-sim: FAILED seed {} ({} violations, converged: {}). Replay with:\n  {}",
            spec.seed,
            report.violations,
            report.converged,
            spec.replay_command()
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn cmd_sweep(args: &Args) -> Result<ExitCode, CliError> {
    args.only(&[
        "seeds",
        "scenario",
        "clusters",
        "replicas",
        "services",
        "endpoints",
        "duration-s",
        "start-seed",
        "threads",
    ])?;
    let seeds = args.required("seeds")?;
    let scenario = match args.text("scenario").ok_or(CliError::Missing("scenario"))? {
        "all" => Scenario::ALL.to_vec(),
        "lease" => Scenario::LEASE.to_vec(),
        name => vec![name.parse::<Scenario>()?],
    };
    let base = sizes(args, sweep::default_spec())?;
    let config = SweepConfig {
        base,
        seeds,
        start_seed: args.number("start-seed")?.unwrap_or(1),
        scenario,
        threads: args.number("threads")?.unwrap_or(2).clamp(1, 64) as usize,
    };
    for s in config.specs() {
        s.validate()?;
    }
    let summary = sweep::sweep(&config);
    print!("{}", summary.render());
    Ok(if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_values_and_switches() {
        let args = Args::parse(&strings(&[
            "--clusters",
            "6",
            "--json",
            "--scenario",
            "chaos",
        ]))
        .unwrap();
        assert_eq!(args.number("clusters").unwrap(), Some(6));
        assert!(args.switch("json"));
        assert_eq!(args.text("scenario"), Some("chaos"));
        assert!(Args::parse(&strings(&["--seed"])).is_err());
        assert!(Args::parse(&strings(&["stray"])).is_err());
    }

    #[test]
    fn a_spec_replays_through_its_own_arguments() {
        let mut spec = RunSpec::new(6, 42, Scenario::Chaos);
        spec.duration_s = Some(60);
        let args = spec.run_args();
        let parsed = Args::parse(&args[1..]).unwrap();
        let scenario: Scenario = parsed.text("scenario").unwrap().parse().unwrap();
        let again = sizes(
            &parsed,
            RunSpec::new(6, parsed.required("seed").unwrap(), scenario),
        )
        .unwrap();
        assert_eq!(again, spec);
    }
}
