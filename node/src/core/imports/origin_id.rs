//! Origins as small numbers that sort like their names, so that the import index
//! compares integers, not strings, on every insert and remove.

use shoal_proto::{ClusterId, KeyRing};

/// An origin's rank among the trust ring's clusters in name order: comparing two ids
/// compares the names, so a tie broken by id is a tie broken by cluster id on every
/// node (rings that differ still order their common members alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OriginId(u32);

/// The ranks of a trust ring's clusters. The ring is fixed for a node's life; every
/// record in the view is signed by one of its clusters.
#[derive(Debug)]
pub(in crate::core) struct OriginIds {
    /// The ring's clusters in name order: an id is an index.
    clusters: Vec<ClusterId>,
}

impl OriginIds {
    pub(in crate::core) fn new(ring: &KeyRing) -> Self {
        let clusters: Vec<ClusterId> = ring.clusters().cloned().collect();
        debug_assert!(clusters.is_sorted(), "a key ring iterates in name order");
        Self { clusters }
    }

    /// The id of `cluster`, or `None` when the ring does not hold it. O(log clusters).
    pub(in crate::core) fn id(&self, cluster: &ClusterId) -> Option<OriginId> {
        let i = self.clusters.binary_search(cluster).ok()?;
        Some(OriginId(
            u32::try_from(i).expect("a key ring holds fewer than 2^32 clusters"),
        ))
    }

    pub(in crate::core) fn cluster(&self, id: OriginId) -> &ClusterId {
        &self.clusters[id.0 as usize]
    }
}

impl OriginId {
    /// An id for sources built outside a node (sinks' tests, fixtures): the position
    /// in a list already in name order.
    pub(super) fn nth(position: usize) -> Self {
        Self(u32::try_from(position).expect("fewer than 2^32 sources"))
    }
}
