//! Fault injection: cut a cluster off in one or both directions, or drop a fraction of
//! what is sent. Only built when the config enables chaos; the API answers 403 otherwise.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use shoal_proto::ClusterId;

use crate::runtime::api::{ApiError, ChaosOp, ChaosView, Direction};

/// Most clusters with a fault at once (cuts and losses each).
pub(crate) const CHAOS_CLUSTERS_MAX: usize = 1_024;
/// The key [`ChaosView::loss`] shows for a loss applied to every cluster.
const EVERYONE: &str = "*";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cut {
    outbound: bool,
    inbound: bool,
}

/// The faults in force, and what they dropped.
#[derive(Debug)]
pub(crate) struct Chaos {
    cuts: BTreeMap<ClusterId, Cut>,
    /// `None` is every cluster; a cluster's own entry wins over it.
    loss: BTreeMap<Option<ClusterId>, f64>,
    dropped_total: u64,
    rng: SmallRng,
}

impl Chaos {
    /// No faults. `seed` drives the loss decisions.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            cuts: BTreeMap::new(),
            loss: BTreeMap::new(),
            dropped_total: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Whether to drop a message this node sends to `cluster`; counts it if so.
    pub(crate) fn drops_outbound(&mut self, cluster: &ClusterId) -> bool {
        let cut = self.cuts.get(cluster).is_some_and(|cut| cut.outbound);
        let rate = self
            .loss
            .get(&Some(cluster.clone()))
            .or_else(|| self.loss.get(&None))
            .copied()
            .unwrap_or(0.0);
        let lost = rate > 0.0 && (rate >= 1.0 || self.rng.random::<f64>() < rate);
        self.count(cut || lost)
    }

    /// Whether to drop a message this node receives from `cluster`; counts it if so.
    pub(crate) fn drops_inbound(&mut self, cluster: &ClusterId) -> bool {
        let cut = self.cuts.get(cluster).is_some_and(|cut| cut.inbound);
        self.count(cut)
    }

    fn count(&mut self, dropped: bool) -> bool {
        if dropped {
            self.dropped_total += 1;
        }
        dropped
    }

    /// Carries out `op` and shows the faults then in force.
    pub(crate) fn apply(&mut self, op: &ChaosOp) -> Result<ChaosView, ApiError> {
        match op {
            ChaosOp::Cut { cluster, direction } => {
                let cluster = parse_cluster(cluster)?;
                if !self.cuts.contains_key(&cluster) && self.cuts.len() >= CHAOS_CLUSTERS_MAX {
                    return Err(ApiError::conflict("too many clusters cut"));
                }
                let cut = self.cuts.entry(cluster).or_default();
                cut.outbound |= matches!(direction, Direction::Outbound | Direction::Both);
                cut.inbound |= matches!(direction, Direction::Inbound | Direction::Both);
            }
            ChaosOp::Restore { cluster } => {
                self.cuts.remove(&parse_cluster(cluster)?);
            }
            ChaosOp::Loss { cluster, rate } => self.set_loss(cluster.as_deref(), *rate)?,
            ChaosOp::Clear => {
                self.cuts.clear();
                self.loss.clear();
            }
            ChaosOp::Show => {}
        }
        Ok(self.view())
    }

    fn set_loss(&mut self, cluster: Option<&str>, rate: f64) -> Result<(), ApiError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ApiError::bad_request(format!(
                "loss rate {rate} is not between 0.0 and 1.0"
            )));
        }
        let key = cluster.map(parse_cluster).transpose()?;
        if rate == 0.0 {
            self.loss.remove(&key);
            return Ok(());
        }
        if !self.loss.contains_key(&key) && self.loss.len() >= CHAOS_CLUSTERS_MAX {
            return Err(ApiError::conflict("too many loss rules"));
        }
        self.loss.insert(key, rate);
        Ok(())
    }

    /// The faults in force.
    pub(crate) fn view(&self) -> ChaosView {
        let cuts = self
            .cuts
            .iter()
            .map(|(cluster, cut)| {
                let mut directions = Vec::new();
                if cut.outbound {
                    directions.push(Direction::Outbound);
                }
                if cut.inbound {
                    directions.push(Direction::Inbound);
                }
                (cluster.to_string(), directions)
            })
            .collect();
        let loss = self
            .loss
            .iter()
            .map(|(cluster, rate)| {
                let key = cluster
                    .as_ref()
                    .map_or(EVERYONE.to_owned(), |c| c.to_string());
                (key, *rate)
            })
            .collect();
        ChaosView {
            cuts,
            loss,
            dropped_total: self.dropped_total,
        }
    }
}

fn parse_cluster(text: &str) -> Result<ClusterId, ApiError> {
    ClusterId::new(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn east() -> ClusterId {
        ClusterId::new("east").unwrap()
    }

    #[test]
    fn cuts_by_direction_and_restores() {
        let mut chaos = Chaos::new(7);
        let op = ChaosOp::Cut {
            cluster: "east".into(),
            direction: Direction::Inbound,
        };
        let view = chaos.apply(&op).unwrap();
        assert_eq!(view.cuts["east"], vec![Direction::Inbound]);
        assert!(chaos.drops_inbound(&east()));
        assert!(!chaos.drops_outbound(&east()));
        let op = ChaosOp::Cut {
            cluster: "east".into(),
            direction: Direction::Outbound,
        };
        let view = chaos.apply(&op).unwrap();
        assert_eq!(
            view.cuts["east"],
            vec![Direction::Outbound, Direction::Inbound]
        );
        assert!(chaos.drops_outbound(&east()));
        let view = chaos
            .apply(&ChaosOp::Restore {
                cluster: "east".into(),
            })
            .unwrap();
        assert!(view.cuts.is_empty());
        assert_eq!(view.dropped_total, 2);
        assert!(!chaos.drops_inbound(&east()));
    }

    #[test]
    fn loss_drops_about_its_rate_and_validates() {
        let mut chaos = Chaos::new(7);
        let op = ChaosOp::Loss {
            cluster: None,
            rate: 0.5,
        };
        assert_eq!(chaos.apply(&op).unwrap().loss["*"], 0.5);
        let dropped = (0..1_000).filter(|_| chaos.drops_outbound(&east())).count();
        assert!((350..650).contains(&dropped), "{dropped}");
        let op = ChaosOp::Loss {
            cluster: Some("east".into()),
            rate: 0.0,
        };
        chaos.apply(&op).unwrap();
        let op = ChaosOp::Loss {
            cluster: Some("east".into()),
            rate: 1.5,
        };
        assert_eq!(chaos.apply(&op).unwrap_err().status, 400);
        let op = ChaosOp::Cut {
            cluster: "Not A Label".into(),
            direction: Direction::Both,
        };
        assert_eq!(chaos.apply(&op).unwrap_err().status, 400);
        let view = chaos.apply(&ChaosOp::Clear).unwrap();
        assert!(view.loss.is_empty() && view.cuts.is_empty());
    }
}
