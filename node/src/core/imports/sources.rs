//! An import's origins: a persistent ordered map, so that an import handed to a sink
//! is cloned in O(1) and one origin's change costs O(log origins), however many
//! clusters export the service.

use std::sync::Arc;

use shoal_proto::{ClusterId, SignedRecord};

use super::origin_id::OriginId;

/// One origin's contribution to an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedCluster {
    pub record: Arc<SignedRecord>,
    /// The origin takes traffic under the service's affinity: sinks write its
    /// endpoints. An inactive origin is still listed (a ServiceImport's
    /// `status.clusters` names every origin).
    pub active: bool,
}

impl ImportedCluster {
    pub fn cluster(&self) -> &ClusterId {
        &self.record.record.origin
    }
}

/// The origins whose endpoints an import holds, in cluster order.
///
/// Two `Sources` are equal when they list equal origins in the same order; sharing
/// (an unchanged import) is recognised in O(1).
#[derive(Clone, Default)]
pub struct Sources(imbl::OrdMap<OriginId, ImportedCluster>);

impl Sources {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The origins in cluster order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &ImportedCluster> + '_ {
        self.0.values()
    }

    /// The first origin in cluster order.
    pub fn first(&self) -> Option<&ImportedCluster> {
        self.0.get_min().map(|(_, source)| source)
    }

    /// The source from `cluster`. O(origins): for tests and inspection; the core
    /// looks origins up by id.
    pub fn find(&self, cluster: &ClusterId) -> Option<&ImportedCluster> {
        self.iter().find(|s| s.cluster() == cluster)
    }

    pub(in crate::core) fn get(&self, id: OriginId) -> Option<&ImportedCluster> {
        self.0.get(&id)
    }

    pub(in crate::core) fn contains(&self, id: OriginId) -> bool {
        self.0.contains_key(&id)
    }

    /// Inserts or replaces the source of `id`; returns the one it replaced.
    pub(in crate::core) fn insert(
        &mut self,
        id: OriginId,
        source: ImportedCluster,
    ) -> Option<ImportedCluster> {
        self.0.insert(id, source)
    }

    pub(in crate::core) fn remove(&mut self, id: OriginId) -> Option<ImportedCluster> {
        self.0.remove(&id)
    }

    /// Sets the active flag of `id`; returns whether it changed. Copies only the path
    /// to that one origin.
    pub(in crate::core) fn set_active(&mut self, id: OriginId, active: bool) -> bool {
        if self.0.get(&id).is_none_or(|s| s.active == active) {
            return false;
        }
        if let Some(source) = self.0.get_mut(&id) {
            source.active = active;
        }
        true
    }

    pub(in crate::core) fn ids(&self) -> impl Iterator<Item = OriginId> + '_ {
        self.0.keys().copied()
    }
}

/// Sources built outside a node (sinks' tests, fixtures), in the order given, which
/// must be cluster order.
impl FromIterator<ImportedCluster> for Sources {
    fn from_iter<I: IntoIterator<Item = ImportedCluster>>(iter: I) -> Self {
        let sources: Vec<ImportedCluster> = iter.into_iter().collect();
        assert!(
            sources.windows(2).all(|w| w[0].cluster() < w[1].cluster()),
            "sources come in cluster order, each origin once"
        );
        Self(
            sources
                .into_iter()
                .enumerate()
                .map(|(i, source)| (OriginId::nth(i), source))
                .collect(),
        )
    }
}

impl From<Vec<ImportedCluster>> for Sources {
    fn from(sources: Vec<ImportedCluster>) -> Self {
        sources.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Sources {
    type Item = &'a ImportedCluster;
    type IntoIter =
        imbl::ordmap::Values<'a, OriginId, ImportedCluster, imbl::shared_ptr::DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.values()
    }
}

impl PartialEq for Sources {
    fn eq(&self, other: &Self) -> bool {
        self.0.ptr_eq(&other.0) || self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Sources {}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
