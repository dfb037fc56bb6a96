//! Invariant 1, convergence: once the network heals and stays healed, every live
//! node's view equals the union of the latest records, within a bound.
//!
//! The expected view, per (origin, service): the origin's latest publication while its
//! publisher is alive (it holds it durably and must spread it); for an origin whose
//! publisher is dead, the newest version any live node holds. Origins that equivocate
//! are left out: they have no single latest record. Views are compared through the
//! core's order-independent digest (root hash and count). Once views agree, every
//! live node's imports must draw each service from exactly the live origins that
//! export it, so a cluster withdrawn during the faults must be back.

use std::sync::Arc;

use shoal_node::core::Node;
use shoal_proto::SignedRecord;

use crate::keyspace::KeySpace;

/// Most differing items named in a failure message.
const DIFF_SHOWN_MAX: usize = 5;

/// What the convergence check needs to know about the world now.
#[derive(Debug)]
pub struct LiveState<'a> {
    /// Every live node, by index.
    pub nodes: Vec<(usize, &'a Node)>,
    /// Per cluster: its publisher runs.
    pub publisher_alive: Vec<bool>,
    /// Per cluster: at least one replica runs.
    pub cluster_alive: Vec<bool>,
}

#[derive(Debug)]
pub struct Convergence {
    published: Vec<Option<Arc<SignedRecord>>>,
    excluded: Vec<bool>,
    /// First instant every live view matched, in the liveness phase.
    pub converged_at: Option<u64>,
}

impl Convergence {
    pub fn new(keys: &KeySpace, clusters: usize) -> Self {
        Self {
            published: vec![None; keys.len()],
            excluded: vec![false; clusters],
            converged_at: None,
        }
    }

    /// Leaves an equivocating origin out of the comparison.
    pub fn exclude(&mut self, cluster: usize) {
        self.excluded[cluster] = true;
    }

    pub fn is_excluded(&self, cluster: usize) -> bool {
        self.excluded[cluster]
    }

    /// The origin published (and durably stored) `record`.
    pub fn published(&mut self, index: usize, record: &Arc<SignedRecord>) {
        let slot = &mut self.published[index];
        if slot
            .as_ref()
            .is_none_or(|r| r.record.version < record.record.version)
        {
            *slot = Some(Arc::clone(record));
        }
    }

    /// The latest record the origin published for a key.
    pub fn latest(&self, index: usize) -> Option<&Arc<SignedRecord>> {
        self.published[index].as_ref()
    }

    /// The expected record per key, `None` where nothing is expected.
    pub fn expected(
        &self,
        keys: &KeySpace,
        live: &LiveState<'_>,
    ) -> Vec<Option<Arc<SignedRecord>>> {
        let mut expected = vec![None; keys.len()];
        for (index, slot) in expected.iter_mut().enumerate() {
            let (origin, service) = keys.split(index);
            if self.excluded[origin] {
                continue;
            }
            if live.publisher_alive[origin] {
                *slot = self.published[index].clone();
                continue;
            }
            let origin_id = match self.published[index].as_ref() {
                Some(r) => r.record.origin.clone(),
                None => continue,
            };
            *slot = live
                .nodes
                .iter()
                .filter_map(|(_, n)| n.record(&origin_id, service))
                .max_by_key(|r| r.record.version)
                .cloned();
        }
        expected
    }

    /// `Ok` when every live view and import matches the expected state.
    pub fn check(&self, keys: &KeySpace, live: &LiveState<'_>) -> Result<(), String> {
        let expected = self.expected(keys, live);
        let (mut root, mut len) = (0u64, 0u64);
        for r in expected.iter().flatten() {
            root ^= r.digest_hash();
            len += 1;
        }
        for (index, node) in &live.nodes {
            let (node_root, node_len) = self.honest_digest(keys, node);
            if (node_root, node_len) != (root, len) {
                return Err(format!(
                    "node {index} ({}) holds {node_len} records, {len} expected; {}",
                    node.member(),
                    describe_difference(&expected, node)
                ));
            }
        }
        for (index, node) in &live.nodes {
            self.check_imports(keys, &expected, live, *index, node)?;
        }
        Ok(())
    }

    /// The node's view digest without the excluded origins.
    fn honest_digest(&self, keys: &KeySpace, node: &Node) -> (u64, u64) {
        let (mut root, mut len) = node.view_digest();
        for (index, _) in self
            .published
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_some())
        {
            let (origin, service) = keys.split(index);
            if !self.excluded[origin] {
                continue;
            }
            let id = &self.published[index]
                .as_ref()
                .expect("filtered")
                .record
                .origin;
            if let Some(r) = node.record(id, service) {
                root ^= r.digest_hash();
                len -= 1;
            }
        }
        (root, len)
    }

    fn check_imports(
        &self,
        keys: &KeySpace,
        expected: &[Option<Arc<SignedRecord>>],
        live: &LiveState<'_>,
        index: usize,
        node: &Node,
    ) -> Result<(), String> {
        let per = keys.services().len();
        for (s, service) in keys.services().iter().enumerate() {
            let want: Vec<&shoal_proto::ClusterId> = (0..live.cluster_alive.len())
                .filter(|c| live.cluster_alive[*c] && !self.excluded[*c])
                .filter_map(|c| expected[c * per + s].as_ref())
                .filter(|r| !r.record.tombstone)
                .map(|r| &r.record.origin)
                .collect();
            let have: Vec<&shoal_proto::ClusterId> = node
                .imports()
                .get(service)
                .map(|i| i.sources.iter().map(|s| s.cluster()).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter(|c| keys.cluster_index(c).is_none_or(|i| !self.excluded[i]))
                .collect();
            if want != have {
                let missing: Vec<String> = want
                    .iter()
                    .filter(|c| !have.contains(c))
                    .take(DIFF_SHOWN_MAX)
                    .map(|c| c.to_string())
                    .collect();
                let extra: Vec<String> = have
                    .iter()
                    .filter(|c| !want.contains(c))
                    .take(DIFF_SHOWN_MAX)
                    .map(|c| c.to_string())
                    .collect();
                return Err(format!(
                    "node {index} ({}) imports {service} without {missing:?} and with {extra:?} ({} of {} sources)",
                    node.member(),
                    have.len(),
                    want.len()
                ));
            }
        }
        Ok(())
    }
}

/// The first few keys where the node's view differs from the expected one.
fn describe_difference(expected: &[Option<Arc<SignedRecord>>], node: &Node) -> String {
    let mut out = Vec::new();
    for r in expected.iter().flatten() {
        let held = node.record(&r.record.origin, &r.record.service);
        if held.map(|h| h.record.version) != Some(r.record.version) {
            out.push(format!(
                "{}/{}: holds {:?}, expected v{}",
                r.record.origin,
                r.record.service,
                held.map(|h| h.record.version),
                r.record.version
            ));
        }
        if out.len() >= DIFF_SHOWN_MAX {
            break;
        }
    }
    if out.is_empty() {
        return "it holds records not expected".into();
    }
    out.join("; ")
}
