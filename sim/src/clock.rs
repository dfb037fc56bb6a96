//! Each node's notion of time, as one function of (node, true time).
//!
//! A node's clock runs at a rate within `drift_ppm` of true time, from an offset, and
//! may jump forward. The world only ever converts through [`NodeClock::local`] and
//! [`NodeClock::true_of`]. Lease scenarios give every node a drift within the lease's
//! bound; `lease-drift-beyond` goes past it.

use shoal_node::core::Time;

/// A node's clock: local = true + offset, scaled by (1 + drift).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeClock {
    offset_us: i64,
    drift_ppm: i64,
}

impl NodeClock {
    pub fn drifting(drift_ppm: i64) -> Self {
        Self {
            offset_us: 0,
            drift_ppm,
        }
    }

    /// The clock steps forward by `by_us` (a suspended process whose clock ran on).
    pub fn jump(&mut self, by_us: i64) {
        self.offset_us = self.offset_us.saturating_add(by_us);
    }

    /// From true time `true_us` on, the clock runs at `drift_ppm`; what it reads now
    /// does not change.
    pub fn set_drift(&mut self, true_us: u64, drift_ppm: i64) {
        let before = self.local(true_us).as_micros() as i64;
        self.drift_ppm = drift_ppm;
        let after = self.local(true_us).as_micros() as i64;
        self.offset_us = self.offset_us.saturating_add(before - after);
    }

    /// What the node reads when the true time is `true_us`.
    pub fn local(&self, true_us: u64) -> Time {
        let drift = (true_us as i128 * self.drift_ppm as i128 / 1_000_000) as i64;
        let local = (true_us as i64)
            .saturating_add(self.offset_us)
            .saturating_add(drift);
        Time::from_micros(local.max(0) as u64)
    }

    /// The first true time at which the node's clock reads `local` or later.
    pub fn true_of(&self, local: Time) -> u64 {
        let shifted = local.as_micros() as i128 - self.offset_us as i128;
        let scaled = shifted * 1_000_000 / (1_000_000 + self.drift_ppm as i128);
        let mut t = scaled.max(0) as u64;
        // Integer division may land a microsecond or two short.
        while self.local(t) < local && t < u64::MAX {
            t += 1;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_drift_keeps_the_reading_and_changes_the_rate() {
        let mut clock = NodeClock::drifting(100_000);
        let before = clock.local(10_000_000);
        clock.set_drift(10_000_000, -100_000);
        assert_eq!(clock.local(10_000_000), before);
        assert_eq!(
            clock.local(11_000_000).as_micros() - before.as_micros(),
            900_000
        );
    }

    #[test]
    fn local_and_true_time_invert_each_other() {
        let clock = NodeClock::default();
        assert_eq!(clock.true_of(clock.local(1_234_567)), 1_234_567);
        let drifting = NodeClock {
            offset_us: 5_000,
            drift_ppm: 100,
        };
        let t = drifting.true_of(drifting.local(10_000_000));
        assert!(t.abs_diff(10_000_000) <= 1, "{t}");
    }
}
