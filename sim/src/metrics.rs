//! Measurements that are not invariants: how fast records spread, and what it costs.
//!
//! **Propagation** is measured from a record's creation at its origin to its arrival in
//! the view of every node that counts; a node holding a newer version counts as having
//! it. Our choice (DESIGN allows either): only records created while no partition or
//! clog is active are sampled, and if one starts before the record has reached every
//! node, the sample is discarded (counted as censored). The nodes that count are those
//! alive at creation, other than the origin; one that crashes meanwhile stops counting.
//! Loss (the `lossy` scenario) is not a partition: it is measured.

use std::collections::BTreeMap;

use crate::network::faults::NodeSet;

/// Message kinds that carry membership, not records: SWIM datagrams, and the member
/// lists that anti-entropy exchanges.
pub const MEMBERSHIP_KINDS: [&str; 2] = ["swim", "members"];

/// Most records being tracked at once; beyond it new ones are not sampled.
pub const PROPAGATIONS_PENDING_MAX: usize = 1 << 20;

#[derive(Debug)]
struct Pending {
    version: u64,
    created_us: u64,
    waiting: NodeSet,
    remaining: u32,
    last_us: u64,
}

/// Records on their way to every node.
#[derive(Debug, Default)]
pub struct Propagation {
    pending: BTreeMap<usize, Vec<Pending>>,
    open: usize,
    pub samples_ms: Vec<f64>,
    pub censored: u64,
}

impl Propagation {
    /// A record was created at `now`; `counted` are the nodes it must reach.
    pub fn created(&mut self, key: usize, version: u64, now: u64, nodes: usize, counted: &[usize]) {
        if counted.is_empty() || self.open >= PROPAGATIONS_PENDING_MAX {
            return;
        }
        let waiting = NodeSet::from_nodes(nodes, counted.iter().copied());
        self.pending.entry(key).or_default().push(Pending {
            version,
            created_us: now,
            waiting,
            remaining: counted.len() as u32,
            last_us: now,
        });
        self.open += 1;
    }

    /// `node` now holds version `version` of `key`.
    pub fn arrived(&mut self, key: usize, version: u64, node: usize, now: u64) {
        let Some(list) = self.pending.get_mut(&key) else {
            return;
        };
        for p in list.iter_mut().filter(|p| p.version <= version) {
            if p.waiting.contains(node) {
                p.waiting.remove(node);
                p.remaining -= 1;
                p.last_us = now;
            }
        }
        self.collect_done(key);
    }

    /// `node` crashed: it no longer counts.
    pub fn node_down(&mut self, node: usize) {
        let keys: Vec<usize> = self.pending.keys().copied().collect();
        for key in keys {
            for p in self.pending.get_mut(&key).into_iter().flatten() {
                if p.waiting.contains(node) {
                    p.waiting.remove(node);
                    p.remaining -= 1;
                }
            }
            self.collect_done(key);
        }
    }

    /// A partition or clog started: discard every sample in flight.
    pub fn censor_all(&mut self) {
        self.censored += self.open as u64;
        self.pending.clear();
        self.open = 0;
    }

    fn collect_done(&mut self, key: usize) {
        let Some(list) = self.pending.get_mut(&key) else {
            return;
        };
        let before = list.len();
        list.retain(|p| {
            if p.remaining == 0 {
                self.samples_ms
                    .push((p.last_us - p.created_us) as f64 / 1_000.0);
                false
            } else {
                true
            }
        });
        self.open -= before - list.len();
        if list.is_empty() {
            self.pending.remove(&key);
        }
    }
}

/// Bytes the nodes sent, by message kind.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_by_kind: BTreeMap<&'static str, u64>,
    pub messages_sent: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    /// Messages the byzantine members injected (not part of the protocol's cost).
    pub injected: u64,
    /// Encoded sizes of every record an origin published.
    pub record_bytes_total: u64,
    pub records_published: u64,
}

impl Traffic {
    pub fn sent(&mut self, kind: &'static str, bytes: usize) {
        self.messages_sent += 1;
        *self.bytes_by_kind.entry(kind).or_default() += bytes as u64;
    }

    pub fn dropped(&mut self, why: &'static str) {
        *self.dropped.entry(why).or_default() += 1;
    }

    /// SWIM datagrams and the member lists anti-entropy exchanges.
    pub fn membership_bytes(&self) -> u64 {
        self.bytes_by_kind
            .iter()
            .filter(|(k, _)| MEMBERSHIP_KINDS.contains(k))
            .map(|(_, v)| v)
            .sum()
    }

    /// Everything else: pushes, relays, digests, pulls.
    pub fn record_traffic_bytes(&self) -> u64 {
        self.bytes_by_kind
            .iter()
            .filter(|(k, _)| !MEMBERSHIP_KINDS.contains(k))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn mean_record_bytes(&self) -> f64 {
        if self.records_published == 0 {
            return 0.0;
        }
        self.record_bytes_total as f64 / self.records_published as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_completes_when_every_counted_node_holds_the_version_or_newer() {
        let mut p = Propagation::default();
        p.created(7, 3, 1_000, 4, &[1, 2, 3]);
        p.arrived(7, 3, 1, 2_000);
        p.arrived(7, 2, 2, 3_000);
        p.node_down(3);
        assert!(p.samples_ms.is_empty(), "node 2 holds an older version");
        p.arrived(7, 4, 2, 5_000);
        assert_eq!(p.samples_ms, [4.0]);
        p.created(7, 5, 6_000, 4, &[1]);
        p.censor_all();
        assert_eq!(p.censored, 1);
    }
}
