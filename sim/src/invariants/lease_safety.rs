//! Invariant 5, lease safety: at most one holder of a lease at any true instant (given
//! the drift bound), tokens strictly grow across holders, and no write with a stale
//! token is accepted by the fenced store.
//!
//! After every event the world lists the holders: the nodes whose core holds the lease
//! and whose own validity, converted to true time through their clock, has not ended.
//! A hold only begins at an event, so checking at every event sees every overlap.

use std::collections::{BTreeMap, BTreeSet};

use shoal_proto::FencingToken;

/// One holder at an instant: its cluster, token, and the true time its validity ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    pub cluster: usize,
    pub token: FencingToken,
    pub until_us: u64,
}

#[derive(Clone, Debug, Default)]
pub struct LeaseSafety {
    /// Every (cluster, token) tenure seen.
    tenures: BTreeSet<(usize, FencingToken)>,
    /// Each tenure's token to its rank: the order in which tenures began.
    ranks: BTreeMap<FencingToken, u64>,
    /// The highest token seen, and whose.
    highest: Option<(FencingToken, usize)>,
    pub acquisitions: u64,
    pub max_concurrent_holders: usize,
    pub tokens_monotonic: bool,
    /// New tenures seen by the last [`LeaseSafety::observe`]: (cluster, token).
    pub fresh: Vec<(usize, FencingToken)>,
}

impl LeaseSafety {
    pub fn new() -> Self {
        Self {
            tokens_monotonic: true,
            ..Self::default()
        }
    }

    /// Checks the holders at one instant; returns what was violated.
    pub fn observe(&mut self, holders: &[Holding]) -> Vec<String> {
        let mut problems = Vec::new();
        self.fresh.clear();
        let clusters: BTreeSet<usize> = holders.iter().map(|h| h.cluster).collect();
        self.max_concurrent_holders = self.max_concurrent_holders.max(clusters.len());
        if clusters.len() > 1 {
            problems.push(format!("{} holders at once: {holders:?}", clusters.len()));
        }
        for h in holders {
            if !self.tenures.insert((h.cluster, h.token)) {
                continue;
            }
            self.ranks.entry(h.token).or_insert(self.acquisitions);
            self.acquisitions += 1;
            self.fresh.push((h.cluster, h.token));
            if let Some((top, owner)) = self.highest
                && h.token <= top
                && !(owner == h.cluster && h.token == top)
            {
                self.tokens_monotonic = false;
                problems.push(format!(
                    "cluster {} holds token {} after cluster {owner} held {}",
                    h.cluster, h.token.0, top.0
                ));
            }
            if self.highest.is_none_or(|(top, _)| h.token > top) {
                self.highest = Some((h.token, h.cluster));
            }
        }
        problems
    }

    /// The rank of the tenure that holds `token`: 0 for the first tenure seen, and so
    /// on. `None` if no tenure with that token ever began.
    pub fn rank(&self, token: FencingToken) -> Option<u64> {
        self.ranks.get(&token).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(cluster: usize, token: u64) -> Holding {
        Holding {
            cluster,
            token: FencingToken(token),
            until_us: 1,
        }
    }

    #[test]
    fn two_holders_or_a_lower_token_are_violations() {
        let mut safety = LeaseSafety::new();
        assert!(safety.observe(&[hold(0, 3)]).is_empty());
        assert!(
            safety.observe(&[hold(0, 3)]).is_empty(),
            "a renewal keeps its token"
        );
        assert!(safety.observe(&[hold(1, 5)]).is_empty());
        assert_eq!(safety.observe(&[hold(2, 4)]).len(), 1, "token 4 after 5");
        assert!(!safety.tokens_monotonic);
        assert_eq!(safety.observe(&[hold(1, 5), hold(2, 9)]).len(), 1);
        assert_eq!(safety.max_concurrent_holders, 2);
        assert_eq!(safety.acquisitions, 4);
    }
}
