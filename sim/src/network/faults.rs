//! Network faults: symmetric partitions, one-way partitions, an isolated node, and
//! clogged links. Each active fault has an id so that the schedule can lift it again.

use std::collections::BTreeMap;

/// Most faults active at once.
pub const FAULTS_ACTIVE_MAX: usize = 64;

/// A set of nodes, as a dense bit vector indexed by node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSet {
    bits: Vec<u64>,
}

impl NodeSet {
    pub fn empty(nodes: usize) -> Self {
        Self {
            bits: vec![0; nodes.div_ceil(64)],
        }
    }

    pub fn from_nodes(nodes: usize, members: impl IntoIterator<Item = usize>) -> Self {
        let mut set = Self::empty(nodes);
        for n in members {
            set.insert(n);
        }
        set
    }

    pub fn insert(&mut self, node: usize) {
        self.bits[node / 64] |= 1 << (node % 64);
    }

    pub fn remove(&mut self, node: usize) {
        self.bits[node / 64] &= !(1 << (node % 64));
    }

    pub fn contains(&self, node: usize) -> bool {
        self.bits
            .get(node / 64)
            .is_some_and(|w| w & (1 << (node % 64)) != 0)
    }

    /// Members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }
}

/// One fault on the links between nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Nodes in `side` and nodes outside it cannot reach each other, either way.
    Split { side: NodeSet },
    /// Messages from `from` to `to` are dropped; the other way works.
    OneWay { from: NodeSet, to: NodeSet },
    /// The node reaches no one and no one reaches it.
    Isolate { node: usize },
    /// Between `a` and `b`, both ways: extra delay and heavy loss.
    Clog {
        a: NodeSet,
        b: NodeSet,
        extra_delay_us: u64,
        loss: f64,
    },
}

impl Fault {
    fn blocks(&self, from: usize, to: usize) -> bool {
        match self {
            Fault::Split { side } => side.contains(from) != side.contains(to),
            Fault::OneWay { from: f, to: t } => f.contains(from) && t.contains(to),
            Fault::Isolate { node } => from != to && (*node == from || *node == to),
            Fault::Clog { .. } => false,
        }
    }

    /// Whether this fault is a clog on the link between `a` and `b`, either way.
    fn clogs(&self, x: usize, y: usize) -> bool {
        match self {
            Fault::Clog { a, b, .. } => {
                (a.contains(x) && b.contains(y)) || (b.contains(x) && a.contains(y))
            }
            _ => false,
        }
    }

    /// Whether this fault cuts links (a clog only slows them).
    pub fn is_cut(&self) -> bool {
        !matches!(self, Fault::Clog { .. })
    }
}

/// The clog on a link: extra one-way delay and loss probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clog {
    pub extra_delay_us: u64,
    pub loss: f64,
}

/// How long lifted faults are remembered, for [`Faults::connected_since`].
pub const LIFTED_HORIZON_US: u64 = 120_000_000;

/// The faults active now, and the cuts lifted recently.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    active: BTreeMap<u32, Fault>,
    /// Faults lifted within [`LIFTED_HORIZON_US`], with the time they were lifted.
    lifted: Vec<(u64, Fault)>,
}

impl Faults {
    pub fn add(&mut self, id: u32, fault: Fault) {
        assert!(
            self.active.len() < FAULTS_ACTIVE_MAX,
            "too many active faults"
        );
        self.active.insert(id, fault);
    }

    pub fn remove(&mut self, id: u32, now_us: u64) -> Option<Fault> {
        let fault = self.active.remove(&id)?;
        self.remember_lifted(now_us, fault.clone());
        Some(fault)
    }

    pub fn clear(&mut self, now_us: u64) {
        for (_, fault) in std::mem::take(&mut self.active) {
            self.remember_lifted(now_us, fault);
        }
    }

    fn remember_lifted(&mut self, now_us: u64, fault: Fault) {
        self.lifted
            .retain(|(at, _)| at + LIFTED_HORIZON_US > now_us);
        self.lifted.push((now_us, fault));
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u32, &Fault)> {
        self.active.iter()
    }

    /// A message from `from` to `to` is dropped.
    pub fn blocked(&self, from: usize, to: usize) -> bool {
        self.active.values().any(|f| f.blocks(from, to))
    }

    /// Both directions work: what a QUIC connection needs.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        !self.blocked(a, b) && !self.blocked(b, a)
    }

    /// Both directions have worked without a break since `since_us` (within the
    /// horizon; earlier than that, the link counts as connected).
    pub fn connected_since(&self, a: usize, b: usize, since_us: u64) -> bool {
        self.connected(a, b)
            && !self
                .lifted
                .iter()
                .any(|(at, f)| *at > since_us && (f.blocks(a, b) || f.blocks(b, a)))
    }

    /// No clog has slowed the link, either way, since `since_us` (within the horizon).
    pub fn clear_since(&self, a: usize, b: usize, since_us: u64) -> bool {
        let clogs = |f: &Fault| f.clogs(a, b);
        self.clog(a, b).is_none() && !self.lifted.iter().any(|(at, f)| *at > since_us && clogs(f))
    }

    /// The worst clog on the link, if any.
    pub fn clog(&self, from: usize, to: usize) -> Option<Clog> {
        let mut worst: Option<Clog> = None;
        for fault in self.active.values() {
            let Fault::Clog {
                extra_delay_us,
                loss,
                ..
            } = fault
            else {
                continue;
            };
            if fault.clogs(from, to) {
                let w = worst.get_or_insert(Clog {
                    extra_delay_us: 0,
                    loss: 0.0,
                });
                w.extra_delay_us = w.extra_delay_us.max(*extra_delay_us);
                w.loss = w.loss.max(*loss);
            }
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_blocks_what_it_says() {
        let mut faults = Faults::default();
        faults.add(
            1,
            Fault::OneWay {
                from: NodeSet::from_nodes(4, [0]),
                to: NodeSet::from_nodes(4, [1]),
            },
        );
        assert!(faults.blocked(0, 1));
        assert!(!faults.blocked(1, 0));
        assert!(!faults.connected(1, 0));
        faults.add(
            2,
            Fault::Split {
                side: NodeSet::from_nodes(4, [2]),
            },
        );
        assert!(faults.blocked(2, 3) && faults.blocked(3, 2));
        assert!(!faults.blocked(3, 1));
        faults.remove(1, 1_000);
        faults.add(3, Fault::Isolate { node: 3 });
        assert!(faults.blocked(0, 3) && faults.blocked(3, 0));
        assert!(faults.connected(0, 1));
        assert!(faults.connected_since(0, 1, 1_000));
        assert!(
            !faults.connected_since(0, 1, 999),
            "the one-way cut was lifted at 1,000"
        );
        assert!(!faults.connected_since(2, 3, 0) && !faults.connected_since(0, 2, 0));
        assert_eq!(
            NodeSet::from_nodes(130, [0, 64, 129])
                .iter()
                .collect::<Vec<_>>(),
            [0, 64, 129]
        );
    }
}
