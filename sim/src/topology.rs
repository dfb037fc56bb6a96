//! Who takes part in a run: clusters, their regions and keys, and their replicas
//! (the nodes), each with its fake address and its core configuration.
//!
//! Node `n` is replica `n % replicas` of cluster `n / replicas`. Replica 0 of each
//! cluster is its publisher (the local leader). Addresses are inside 127.0.0.0/8 but
//! are only data: nothing is ever sent on a real network.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use shoal_node::core::{Config, Seed};
use shoal_proto::{ClusterId, ClusterKey, KeyRing, MemberId, NetAddr, ReplicaId};

use crate::network::regions::REGIONS;
use crate::spec::RunSpec;

/// Port every simulated node "listens" on.
const PORT: u16 = 7946;
/// Replica 0 of this many random other clusters seed each node, besides its siblings.
const REMOTE_SEEDS: usize = 3;

/// One cluster of the ClusterSet.
#[derive(Clone, Debug)]
pub struct ClusterInfo {
    pub id: ClusterId,
    pub region: usize,
    pub key: ClusterKey,
}

/// The whole ClusterSet of a run.
#[derive(Debug)]
pub struct Topology {
    pub clusters: Vec<ClusterInfo>,
    pub replicas: usize,
    pub members: Vec<MemberId>,
    pub configs: Vec<Config>,
    pub trust: Arc<KeyRing>,
    index: BTreeMap<ClusterId, usize>,
}

impl Topology {
    /// Builds clusters (ids, regions round-robin from a seeded order, keys from the
    /// seed) and every node's configuration.
    pub fn build(spec: &RunSpec, rng: &mut ChaCha8Rng) -> Self {
        let mut order: Vec<usize> = (0..REGIONS.len()).collect();
        order.shuffle(rng);
        let mut clusters = Vec::with_capacity(spec.clusters);
        let mut trust = KeyRing::new();
        let mut index = BTreeMap::new();
        for c in 0..spec.clusters {
            let id = ClusterId::new(cluster_name(c)).expect("generated names are DNS labels");
            let key = ClusterKey::from_seed(id.clone(), rng.random());
            trust
                .insert(id.clone(), key.public())
                .expect("a freshly derived ed25519 key is valid");
            index.insert(id.clone(), c);
            clusters.push(ClusterInfo {
                id,
                region: order[c % order.len()],
                key,
            });
        }
        let members = (0..spec.nodes())
            .map(|n| MemberId {
                cluster: clusters[n / spec.replicas].id.clone(),
                replica: ReplicaId((n % spec.replicas) as u16),
            })
            .collect();
        let mut topology = Topology {
            clusters,
            replicas: spec.replicas,
            members,
            configs: Vec::new(),
            trust: Arc::new(trust),
            index,
        };
        topology.configs = (0..spec.nodes())
            .map(|n| topology.make_config(n, rng))
            .collect();
        topology
    }

    pub fn nodes(&self) -> usize {
        self.members.len()
    }

    /// The index of a cluster: its name is parsed and confirmed in O(1).
    pub fn cluster_index(&self, id: &ClusterId) -> Option<usize> {
        if let Some(c) = parse_cluster_name(id.as_str())
            && self.clusters.get(c).is_some_and(|info| info.id == *id)
        {
            return Some(c);
        }
        self.index.get(id).copied()
    }

    pub fn node_index(&self, member: &MemberId) -> Option<usize> {
        let c = self.cluster_index(&member.cluster)?;
        let r = usize::from(member.replica.0);
        (r < self.replicas).then_some(c * self.replicas + r)
    }

    pub fn cluster_of(&self, node: usize) -> usize {
        node / self.replicas
    }

    pub fn nodes_of(&self, cluster: usize) -> Range<usize> {
        cluster * self.replicas..(cluster + 1) * self.replicas
    }

    pub fn publisher_of(&self, cluster: usize) -> usize {
        cluster * self.replicas
    }

    pub fn is_publisher(&self, node: usize) -> bool {
        node.is_multiple_of(self.replicas)
    }

    /// The region of every node, by node index.
    pub fn node_regions(&self) -> Vec<usize> {
        (0..self.nodes())
            .map(|n| self.clusters[self.cluster_of(n)].region)
            .collect()
    }

    fn make_config(&self, node: usize, rng: &mut ChaCha8Rng) -> Config {
        let cluster = self.cluster_of(node);
        let mut config = Config::wan(
            self.members[node].clone(),
            addr(node),
            u32::try_from(self.nodes()).expect("node count is bounded"),
        );
        config.publisher = self.is_publisher(node);
        let mut others: Vec<usize> = (0..self.clusters.len()).filter(|c| *c != cluster).collect();
        let (picked, _) = others.partial_shuffle(rng, REMOTE_SEEDS);
        let mut seed_nodes: Vec<usize> = picked.iter().map(|c| self.publisher_of(*c)).collect();
        seed_nodes.extend(self.nodes_of(cluster).filter(|n| *n != node));
        config.seeds = seed_nodes
            .into_iter()
            .map(|n| Seed {
                member: self.members[n].clone(),
                addr: addr(n),
            })
            .collect();
        config
    }
}

/// The name of cluster `c`: `c0000`, `c0001`, ...
pub fn cluster_name(c: usize) -> String {
    format!("c{c:04}")
}

/// The number in a name made by [`cluster_name`], if it is one.
pub fn parse_cluster_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix('c')?.as_bytes();
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    digits.iter().try_fold(0usize, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
    })
}

/// A node's fake address: 127.{n>>16}.{(n>>8)&255}.{n&255}:7946.
pub fn addr(node: usize) -> NetAddr {
    let ip = std::net::Ipv4Addr::new(
        127,
        ((node >> 16) & 255) as u8,
        ((node >> 8) & 255) as u8,
        (node & 255) as u8,
    );
    NetAddr::from(std::net::SocketAddr::new(ip.into(), PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_parse_back_to_their_index() {
        for c in [0, 7, 42, 999, 4_095] {
            assert_eq!(parse_cluster_name(&cluster_name(c)), Some(c));
        }
        for bad in ["", "c", "x0001", "c00a1", "c-1", "c1234567890"] {
            assert_eq!(parse_cluster_name(bad), None, "{bad}");
        }
    }
}
