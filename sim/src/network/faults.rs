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

/// The faults active now.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    active: BTreeMap<u32, Fault>,
}

impl Faults {
    pub fn add(&mut self, id: u32, fault: Fault) {
        assert!(
            self.active.len() < FAULTS_ACTIVE_MAX,
            "too many active faults"
        );
        self.active.insert(id, fault);
    }

    pub fn remove(&mut self, id: u32) -> Option<Fault> {
        self.active.remove(&id)
    }

    pub fn clear(&mut self) {
        self.active.clear();
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

    /// The worst clog on the link, if any.
    pub fn clog(&self, from: usize, to: usize) -> Option<Clog> {
        let mut worst: Option<Clog> = None;
        for fault in self.active.values() {
            let Fault::Clog {
                a,
                b,
                extra_delay_us,
                loss,
            } = fault
            else {
                continue;
            };
            let hit = (a.contains(from) && b.contains(to)) || (b.contains(from) && a.contains(to));
            if hit {
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
        faults.remove(1);
        faults.add(3, Fault::Isolate { node: 3 });
        assert!(faults.blocked(0, 3) && faults.blocked(3, 0));
        assert!(faults.connected(0, 1));
        assert_eq!(
            NodeSet::from_nodes(130, [0, 64, 129])
                .iter()
                .collect::<Vec<_>>(),
            [0, 64, 129]
        );
    }
}
