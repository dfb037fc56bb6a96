//! Dense indexes for (origin, service) pairs, so that per-node tables in the
//! simulator (the disk model, version high-water marks) are flat vectors rather than
//! maps keyed by strings: at 1,000 clusters and 2,000 nodes this is the difference
//! between megabytes and gigabytes.

use std::collections::BTreeMap;

use shoal_proto::{ClusterId, ServiceKey, SignedRecord};

/// Maps every (origin cluster, service) the run can produce to `0..len()`.
#[derive(Clone, Debug)]
pub struct KeySpace {
    clusters: BTreeMap<ClusterId, u32>,
    cluster_ids: Vec<ClusterId>,
    services: BTreeMap<ServiceKey, u32>,
    service_keys: Vec<ServiceKey>,
}

impl KeySpace {
    pub fn new<'a>(
        clusters: impl IntoIterator<Item = &'a ClusterId>,
        services: &[ServiceKey],
    ) -> Self {
        let cluster_ids: Vec<ClusterId> = clusters.into_iter().cloned().collect();
        let clusters = cluster_ids
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u32))
            .collect();
        let service_map = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        Self {
            clusters,
            cluster_ids,
            services: service_map,
            service_keys: services.to_vec(),
        }
    }

    pub fn len(&self) -> usize {
        self.clusters.len() * self.service_keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn services(&self) -> &[ServiceKey] {
        &self.service_keys
    }

    pub fn service_index(&self, service: &ServiceKey) -> Option<usize> {
        self.services.get(service).map(|s| *s as usize)
    }

    /// The index of a cluster. The simulator's own names (`c0042`) are parsed and
    /// confirmed in O(1); other names are looked up.
    pub fn cluster_index(&self, cluster: &ClusterId) -> Option<usize> {
        if let Some(i) = crate::topology::parse_cluster_name(cluster.as_str())
            && self.cluster_ids.get(i) == Some(cluster)
        {
            return Some(i);
        }
        self.clusters.get(cluster).map(|c| *c as usize)
    }

    /// The cluster indexes of an import's sources, in the import's (origin) order.
    pub fn source_indices(&self, import: Option<&shoal_node::core::ImportedService>) -> Vec<u32> {
        import
            .map(|i| {
                i.sources
                    .iter()
                    .filter_map(|src| self.cluster_index(src.cluster()))
                    .map(|c| c as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The dense index of (origin, service), if both are known.
    pub fn index(&self, origin: &ClusterId, service: &ServiceKey) -> Option<usize> {
        let c = self.cluster_index(origin)?;
        let s = self.service_index(service)?;
        Some(c * self.service_keys.len() + s)
    }

    pub fn index_of(&self, record: &SignedRecord) -> Option<usize> {
        self.index(&record.record.origin, &record.record.service)
    }

    /// The (cluster index, service) of a dense index.
    pub fn split(&self, index: usize) -> (usize, &ServiceKey) {
        let per = self.service_keys.len();
        (index / per, &self.service_keys[index % per])
    }
}
