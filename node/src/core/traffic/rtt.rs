//! The smoothed round-trip time to each cluster, as SWIM's direct probes measure it.
//!
//! Each acked direct ping is one sample; a cluster's estimate follows its replicas'
//! samples with the weight TCP gives a new sample (RFC 6298: 1/8), so one slow probe
//! moves it little and a lasting change moves it within a few probes.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_proto::ClusterId;

/// Most clusters tracked. Samples come only from authenticated members, so the trust
/// ring bounds the table already; this bounds it even for a huge ring.
pub(in crate::core) const RTT_CLUSTERS_MAX: usize = 4_096;

/// How much a new sample weighs, as 1/`SAMPLE_WEIGHT_INVERSE`.
const SAMPLE_WEIGHT_INVERSE: u64 = 8;

#[derive(Debug, Default)]
pub(in crate::core) struct RttTable {
    smoothed_micros: BTreeMap<ClusterId, u64>,
}

impl RttTable {
    pub(in crate::core) fn observe(&mut self, cluster: &ClusterId, sample: Duration) {
        let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
        if let Some(smoothed) = self.smoothed_micros.get_mut(cluster) {
            // srtt += (sample − srtt) / 8, in integers and without overflow.
            let next = (*smoothed / SAMPLE_WEIGHT_INVERSE) * (SAMPLE_WEIGHT_INVERSE - 1)
                + (*smoothed % SAMPLE_WEIGHT_INVERSE) * (SAMPLE_WEIGHT_INVERSE - 1)
                    / SAMPLE_WEIGHT_INVERSE
                + sample / SAMPLE_WEIGHT_INVERSE;
            *smoothed = next;
            return;
        }
        if self.smoothed_micros.len() < RTT_CLUSTERS_MAX {
            self.smoothed_micros.insert(cluster.clone(), sample);
        }
    }

    /// The smoothed round trip to `cluster`; `None` before its first sample.
    pub(in crate::core) fn get(&self, cluster: &ClusterId) -> Option<Duration> {
        self.smoothed_micros
            .get(cluster)
            .map(|us| Duration::from_micros(*us))
    }

    pub(in crate::core) fn iter(&self) -> impl Iterator<Item = (&ClusterId, Duration)> {
        self.smoothed_micros
            .iter()
            .map(|(c, us)| (c, Duration::from_micros(*us)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_first_sample_is_the_estimate_and_later_ones_weigh_an_eighth() {
        let mut table = RttTable::default();
        let west = ClusterId::new("west").unwrap();
        assert_eq!(table.get(&west), None);
        table.observe(&west, ms(80));
        assert_eq!(table.get(&west), Some(ms(80)));
        table.observe(&west, ms(160));
        assert_eq!(table.get(&west), Some(ms(90)));
        // A lasting change is followed: after enough samples the estimate is close.
        for _ in 0..40 {
            table.observe(&west, ms(10));
        }
        let now = table.get(&west).unwrap();
        assert!(now < ms(11), "{now:?}");
    }
}
