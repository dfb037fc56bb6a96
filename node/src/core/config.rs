//! Protocol configuration: plain data with units in the names, presets, and
//! `validate()` with messages that name the bad field.

use std::time::Duration;

use shoal_proto::{ClusterId, MemberId, NetAddr};

/// A well-known member to announce to at start. Its generation is unknown, so SWIM
/// addresses it by member id only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    pub member: MemberId,
    pub addr: NetAddr,
}

/// SWIM failure-detector timing (see foca's `Config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwimTiming {
    /// How often each member probes one other member. Range: 100 ms to 60 s.
    pub probe_period_ms: u64,
    /// How long to wait for a direct ack before asking others to probe. Must be less
    /// than `probe_period_ms`, and above the largest round trip.
    pub probe_rtt_ms: u64,
    /// How long a suspected member has to refute before it is declared down.
    pub suspect_to_down_ms: u64,
    /// How often membership updates are gossiped, and to how many members.
    pub gossip_period_ms: u64,
    pub gossip_fanout: usize,
    /// How often to re-announce to one random member, which heals split memberships.
    pub announce_period_ms: u64,
    /// How often to announce to two members believed down. After a partition heals,
    /// both sides believe the other down; this is how they find each other again.
    pub announce_down_period_ms: u64,
    /// How long a down member is remembered before it may rejoin with the same identity.
    pub remove_down_after_ms: u64,
}

/// The core's configuration. Secrets (the signing key) are not here: they are passed to
/// [`crate::core::Node::new`] separately and never printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica.
    pub member: MemberId,
    /// Where this replica listens; carried in membership so peers can reach it.
    pub addr: NetAddr,
    /// Members to announce to at start and after isolation.
    pub seeds: Vec<Seed>,
    /// Whether this replica starts as its cluster's local leader, the one that
    /// publishes the cluster's records. Exactly one replica per cluster should publish;
    /// the runtime's leader election moves the role with
    /// [`crate::core::Node::set_publisher`].
    pub publisher: bool,
    /// Expected number of members (all replicas of all clusters): sizes SWIM's
    /// dissemination. Range: 1 to 100,000.
    pub members_expected: u32,
    pub swim: SwimTiming,
    /// How long a cluster may be down before its endpoints are withdrawn. Range: 0 to
    /// 1 hour. Zero withdraws at once.
    pub withdraw_grace_ms: u64,
    /// How often to run anti-entropy with one random member. Range: 100 ms to 10 min.
    pub anti_entropy_period_ms: u64,
    /// Affinity `nearest`: how much lower another origin's smoothed round-trip time
    /// must be than the current one's before traffic moves to it (it must also be
    /// lower by an eighth of the current one's), so that jitter does not make the
    /// choice flap. Range: 0 to 10 s.
    pub nearest_margin_ms: u64,
    pub lease: LeaseConfig,
}

/// The quorum lease. The voters are fixed here and never derived from membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The voting clusters (their replica 0 votes). Empty: no leases. At most 64.
    pub voters: Vec<ClusterId>,
    /// How long a grant lasts, timed by each voter from when it receives it. A voter
    /// refuses a grant longer than its own `lease_ms`. Range: 500 ms to 1 hour.
    pub lease_ms: u64,
    /// How long after a grant's proposal the holder renews it. Range: 100 ms to half of
    /// `lease_ms`, so that a lost renewal round can be retried before the lease ends.
    pub renew_ms: u64,
    /// How long one round (prepare, then propose) may take before it is retried.
    /// Range: 10 ms to `renew_ms`.
    pub round_timeout_ms: u64,
    /// The bound on any clock's rate error, in parts per million (100 ppm = 0.01%).
    /// The holder's own validity is `lease_ms × (1 − ρ) / (1 + ρ)`. Range: 0 to
    /// 100,000 (10%).
    pub drift_ppm: u32,
}

impl LeaseConfig {
    /// Across regions: a 10 s lease renewed every 3 s.
    pub fn wan(voters: Vec<ClusterId>) -> Self {
        Self {
            voters,
            lease_ms: 10_000,
            renew_ms: 3_000,
            round_timeout_ms: 1_000,
            drift_ppm: 1_000,
        }
    }

    /// On one network: a 4 s lease renewed every second.
    pub fn lan(voters: Vec<ClusterId>) -> Self {
        Self {
            voters,
            lease_ms: 4_000,
            renew_ms: 1_000,
            round_timeout_ms: 300,
            drift_ppm: 1_000,
        }
    }

    /// How long the holder may act on a grant, from when it sent the round's Prepare: the
    /// lease shortened so that, with every clock within the drift bound, it ends in
    /// true time before any voter's timer does.
    pub fn holder_validity(&self) -> Duration {
        let rho = u128::from(self.drift_ppm);
        let lease_us = u128::from(self.lease_ms) * 1_000;
        let us = lease_us * (1_000_000 - rho) / (1_000_000 + rho);
        Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.voters.len() > LEASE_VOTERS_MAX {
            return Err(ConfigError {
                field: "lease.voters",
                reason: format!("{} voters, more than {LEASE_VOTERS_MAX}", self.voters.len()),
            });
        }
        let mut sorted = self.voters.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError {
                field: "lease.voters",
                reason: format!("lists {} twice", w[0]),
            });
        }
        out_of_range("lease.lease_ms", self.lease_ms, 500, 3_600_000)?;
        out_of_range("lease.renew_ms", self.renew_ms, 100, self.lease_ms / 2)?;
        out_of_range(
            "lease.round_timeout_ms",
            self.round_timeout_ms,
            10,
            self.renew_ms,
        )?;
        out_of_range("lease.drift_ppm", u64::from(self.drift_ppm), 0, 100_000)
    }
}

/// Most lease voters: a majority of them answers every round.
pub const LEASE_VOTERS_MAX: usize = 64;

/// A configuration field out of range. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config field `{field}`: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn out_of_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(ConfigError {
        field,
        reason: format!("{value} is outside {min}..={max}"),
    })
}

impl SwimTiming {
    /// Across regions: round trips up to a few hundred milliseconds, and a killed
    /// cluster detected within about five seconds.
    pub fn wan() -> Self {
        Self {
            probe_period_ms: 1_000,
            probe_rtt_ms: 400,
            suspect_to_down_ms: 2_000,
            gossip_period_ms: 250,
            gossip_fanout: 3,
            announce_period_ms: 30_000,
            announce_down_period_ms: 5_000,
            remove_down_after_ms: 60_000,
        }
    }

    /// Inside one region, or on loopback: each member probed about once a second, as
    /// memberlist's LAN profile does, and a killed cluster detected within about
    /// four seconds.
    pub fn lan() -> Self {
        Self {
            probe_period_ms: 1_000,
            probe_rtt_ms: 150,
            suspect_to_down_ms: 1_500,
            gossip_period_ms: 100,
            gossip_fanout: 3,
            announce_period_ms: 30_000,
            announce_down_period_ms: 2_000,
            remove_down_after_ms: 30_000,
        }
    }
}

impl Config {
    /// A preset for clusters spread over regions.
    pub fn wan(member: MemberId, addr: NetAddr, members_expected: u32) -> Self {
        Self {
            member,
            addr,
            seeds: Vec::new(),
            publisher: true,
            members_expected,
            swim: SwimTiming::wan(),
            withdraw_grace_ms: 10_000,
            anti_entropy_period_ms: 2_000,
            nearest_margin_ms: 10,
            lease: LeaseConfig::wan(Vec::new()),
        }
    }

    /// A preset for clusters on one network (and the local demo).
    pub fn lan(member: MemberId, addr: NetAddr, members_expected: u32) -> Self {
        Self {
            swim: SwimTiming::lan(),
            withdraw_grace_ms: 500,
            // Pushes carry changes, and a join or heal pushes and repairs at once; the
            // periodic round only backs them up, and costs a frame and its ACK.
            anti_entropy_period_ms: 5_000,
            nearest_margin_ms: 2,
            lease: LeaseConfig::lan(Vec::new()),
            ..Self::wan(member, addr, members_expected)
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.swim;
        out_of_range(
            "members_expected",
            u64::from(self.members_expected),
            1,
            100_000,
        )?;
        out_of_range("swim.probe_period_ms", s.probe_period_ms, 100, 60_000)?;
        out_of_range(
            "swim.probe_rtt_ms",
            s.probe_rtt_ms,
            1,
            s.probe_period_ms.saturating_sub(1),
        )?;
        out_of_range(
            "swim.suspect_to_down_ms",
            s.suspect_to_down_ms,
            100,
            600_000,
        )?;
        out_of_range("swim.gossip_period_ms", s.gossip_period_ms, 10, 60_000)?;
        out_of_range("swim.gossip_fanout", s.gossip_fanout as u64, 1, 16)?;
        out_of_range(
            "swim.announce_period_ms",
            s.announce_period_ms,
            100,
            3_600_000,
        )?;
        out_of_range(
            "swim.remove_down_after_ms",
            s.remove_down_after_ms,
            1_000,
            86_400_000,
        )?;
        out_of_range("withdraw_grace_ms", self.withdraw_grace_ms, 0, 3_600_000)?;
        out_of_range(
            "anti_entropy_period_ms",
            self.anti_entropy_period_ms,
            100,
            600_000,
        )?;
        out_of_range("nearest_margin_ms", self.nearest_margin_ms, 0, 10_000)?;
        if let Some(seed) = self.seeds.iter().find(|s| s.member == self.member) {
            return Err(ConfigError {
                field: "seeds",
                reason: format!("lists this replica itself ({})", seed.member),
            });
        }
        self.lease.validate()
    }

    pub(crate) fn withdraw_grace(&self) -> Duration {
        Duration::from_millis(self.withdraw_grace_ms)
    }

    /// How long before a withdrawal the node starts announcing itself to the down
    /// cluster's last known replicas: three probe round trips, one per attempt, so
    /// that a cluster reachable again (a healed partition that SWIM has not re-merged
    /// yet) is heard from in time and its withdrawal put off. At most half the grace
    /// period.
    pub fn last_chance_window(&self) -> Duration {
        Duration::from_millis(3 * self.swim.probe_rtt_ms).min(self.withdraw_grace() / 2)
    }

    pub(crate) fn anti_entropy_period(&self) -> Duration {
        Duration::from_millis(self.anti_entropy_period_ms)
    }
}
