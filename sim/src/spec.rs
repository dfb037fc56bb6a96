//! What one run is: the parameters that, with the seed, fix its whole trace.

use std::fmt;
use std::str::FromStr;

use shoal_node::core::Time;

/// Most clusters one run may simulate (the ClusterSet size limit of the wire format).
pub const CLUSTERS_MAX: usize = 4_096;
/// Most replicas per cluster.
pub const REPLICAS_MAX: usize = 8;
/// Most services each cluster exports.
pub const SERVICES_MAX: usize = 64;
/// Most endpoints per exported service.
pub const ENDPOINTS_MAX: usize = 200;
/// Longest run, in virtual seconds.
pub const DURATION_S_MAX: u64 = 24 * 3_600;
/// Shortest run: room for a start, a safety phase and a liveness phase.
pub const DURATION_S_MIN: u64 = 30;

/// A named fault schedule. See `scenario` for what each one does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    Steady,
    Churn,
    PartitionHeal,
    Oneway,
    Lossy,
    CrashRestart,
    Byzantine,
    Chaos,
    Affinity,
    LeasePartition,
    LeasePause,
    LeaseRing,
    LeaseRestart,
    LeaseDrift,
    LeaseDriftBeyond,
}

impl Scenario {
    /// Every scenario, in the order `sweep --scenario all` cycles through them.
    pub const ALL: [Scenario; 9] = [
        Scenario::Steady,
        Scenario::Churn,
        Scenario::PartitionHeal,
        Scenario::Oneway,
        Scenario::Lossy,
        Scenario::CrashRestart,
        Scenario::Byzantine,
        Scenario::Chaos,
        Scenario::Affinity,
    ];

    /// The lease scenarios that must keep lease safety (`sweep --scenario lease`).
    pub const LEASE: [Scenario; 5] = [
        Scenario::LeasePartition,
        Scenario::LeasePause,
        Scenario::LeaseRing,
        Scenario::LeaseRestart,
        Scenario::LeaseDrift,
    ];

    /// Whether the run exercises the quorum lease.
    pub fn is_lease(self) -> bool {
        matches!(
            self,
            Scenario::LeasePartition
                | Scenario::LeasePause
                | Scenario::LeaseRing
                | Scenario::LeaseRestart
                | Scenario::LeaseDrift
                | Scenario::LeaseDriftBeyond
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Churn => "churn",
            Scenario::PartitionHeal => "partition-heal",
            Scenario::Oneway => "oneway",
            Scenario::Lossy => "lossy",
            Scenario::CrashRestart => "crash-restart",
            Scenario::Byzantine => "byzantine",
            Scenario::Chaos => "chaos",
            Scenario::Affinity => "affinity",
            Scenario::LeasePartition => "lease-partition",
            Scenario::LeasePause => "lease-pause",
            Scenario::LeaseRing => "lease-ring",
            Scenario::LeaseRestart => "lease-restart",
            Scenario::LeaseDrift => "lease-drift",
            Scenario::LeaseDriftBeyond => "lease-drift-beyond",
        }
    }

    /// Virtual seconds a run lasts when `--duration-s` is not given.
    pub fn default_duration_s(self) -> u64 {
        match self {
            Scenario::Steady => 90,
            Scenario::Chaos | Scenario::Affinity => 150,
            _ => 120,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown scenario name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scenario {0:?}; known: steady, churn, partition-heal, oneway, lossy, crash-restart, byzantine, chaos, affinity, lease-partition, lease-pause, lease-ring, lease-restart, lease-drift, lease-drift-beyond"
)]
pub struct UnknownScenario(pub String);

impl FromStr for Scenario {
    type Err = UnknownScenario;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let named = Scenario::ALL
            .into_iter()
            .chain(Scenario::LEASE)
            .chain([Scenario::LeaseDriftBeyond]);
        named
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

/// The parameters of one run. Same spec, same trace, bit for bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    pub clusters: usize,
    pub replicas: usize,
    pub services: usize,
    pub endpoints: usize,
    pub seed: u64,
    pub scenario: Scenario,
    /// Virtual seconds; `None` takes the scenario's default.
    pub duration_s: Option<u64>,
}

/// A run parameter out of range. Nothing was run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`--{field}` must be in {min}..={max}, got {value}")]
pub struct SpecError {
    pub field: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

impl RunSpec {
    /// The defaults of the CLI contract: 2 replicas, 3 services, 3 endpoints.
    pub fn new(clusters: usize, seed: u64, scenario: Scenario) -> Self {
        Self {
            clusters,
            replicas: 2,
            services: 3,
            endpoints: 3,
            seed,
            scenario,
            duration_s: None,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        let check = |field, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(SpecError {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        check("clusters", self.clusters as u64, 1, CLUSTERS_MAX as u64)?;
        check("replicas", self.replicas as u64, 1, REPLICAS_MAX as u64)?;
        check("services", self.services as u64, 1, SERVICES_MAX as u64)?;
        check("endpoints", self.endpoints as u64, 1, ENDPOINTS_MAX as u64)?;
        check(
            "duration-s",
            self.duration_s(),
            DURATION_S_MIN,
            DURATION_S_MAX,
        )
    }

    pub fn duration_s(&self) -> u64 {
        self.duration_s
            .unwrap_or_else(|| self.scenario.default_duration_s())
    }

    pub fn duration(&self) -> Time {
        Time::from_millis(self.duration_s() * 1_000)
    }

    pub fn nodes(&self) -> usize {
        self.clusters * self.replicas
    }

    /// The arguments of `shoal-sim run` that reproduce this run.
    pub fn run_args(&self) -> Vec<String> {
        let mut args = vec![
            "run".to_owned(),
            "--clusters".to_owned(),
            self.clusters.to_string(),
            "--replicas".to_owned(),
            self.replicas.to_string(),
            "--services".to_owned(),
            self.services.to_string(),
            "--endpoints".to_owned(),
            self.endpoints.to_string(),
            "--seed".to_owned(),
            self.seed.to_string(),
            "--scenario".to_owned(),
            self.scenario.name().to_owned(),
        ];
        if let Some(d) = self.duration_s {
            args.extend(["--duration-s".to_owned(), d.to_string()]);
        }
        args
    }

    /// The exact command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p shoal-sim -- {}",
            self.run_args().join(" ")
        )
    }
}
