//! Protocol configuration: plain data with units in the names, presets, and
//! `validate()` with messages that name the bad field.

use std::time::Duration;

use shoal_proto::{MemberId, NetAddr};

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
    /// Whether this replica is its cluster's local leader, the one that publishes the
    /// cluster's records. Exactly one replica per cluster should publish.
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
}

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

    /// Inside one region, or on loopback.
    pub fn lan() -> Self {
        Self {
            probe_period_ms: 500,
            probe_rtt_ms: 150,
            suspect_to_down_ms: 1_500,
            gossip_period_ms: 100,
            gossip_fanout: 3,
            announce_period_ms: 10_000,
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
        }
    }

    /// A preset for clusters on one network (and the local demo).
    pub fn lan(member: MemberId, addr: NetAddr, members_expected: u32) -> Self {
        Self {
            swim: SwimTiming::lan(),
            withdraw_grace_ms: 2_000,
            anti_entropy_period_ms: 1_000,
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
        if let Some(seed) = self.seeds.iter().find(|s| s.member == self.member) {
            return Err(ConfigError {
                field: "seeds",
                reason: format!("lists this replica itself ({})", seed.member),
            });
        }
        Ok(())
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
