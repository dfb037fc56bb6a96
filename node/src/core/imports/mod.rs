//! The MCS imports, kept from the view and cluster liveness.
//!
//! For each service, the import is the union of what every live origin exports, under
//! the MCS rules (KEP-1645): namespace sameness (the same namespace/name is the same
//! service everywhere), the union of ports, and on a conflict the oldest export wins.
//! An origin whose service type conflicts with the winner contributes nothing; an
//! origin with a conflicting port contributes its endpoints, and the winner's port
//! definition stands. The other properties (IP families, session affinity and its
//! config, internal traffic policy, traffic distribution, exported labels, exported
//! annotations and Shoal's affinity) are the oldest export's; an export that differs
//! in one still contributes its endpoints. Every disagreement is reported as a
//! conflict. Which origins take traffic is `traffic`'s choice, made on each import.
//!
//! - `index`: one service's import, kept by an index with O(log origins) insert and
//!   remove of one origin's export.
//! - `sources`: an import's origins, a persistent map shared with the sinks.
//! - `origin_id`: origins as integers that sort like their names.
//! - `staging`: how a step feeds records and liveness into the indexes and emits the
//!   changed imports.
//!
//! **Architecture invariant:** an import is never derived from scratch or copied whole
//! on the hot path. One origin's change costs O(log origins) unless it changes what the
//! whole import agrees on (its type, properties or union of ports).

mod index;
mod origin_id;
mod sources;
mod staging;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_proto::{
    ClusterId, KeyRing, ServiceKey, ServicePort, ServiceProperties, ServiceType, SignedRecord,
};

use super::command::{ImportChange, SourceChanges};
use super::traffic::TrafficReason;
use index::ServiceIndex;
use origin_id::{OriginId, OriginIds};
pub use sources::{ImportedCluster, Sources};

/// One service as imported into a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedService {
    pub service: ServiceKey,
    pub service_type: ServiceType,
    /// The union of ports by name, sorted by name.
    pub ports: Vec<ServicePort>,
    /// The oldest export's properties: IP families, session affinity, traffic policy
    /// and distribution, exported labels and annotations.
    pub properties: ServiceProperties,
    /// The records whose endpoints are imported, in origin order.
    pub sources: Sources,
    /// Exports that disagree with the oldest export, in origin order.
    pub conflicts: Arc<[Conflict]>,
    /// Why the active sources are the ones they are (the oldest export's affinity,
    /// applied to the sources' readiness and round trips).
    pub traffic: TrafficReason,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub cluster: ClusterId,
    pub kind: ConflictKind,
}

/// What an export disagrees on. Only a type conflict leaves the export out of the
/// import; on every other one its endpoints are imported and the older definition
/// stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// The origin exports another service type than the oldest export; it is left out.
    Type {
        exported: ServiceType,
        imported: ServiceType,
    },
    /// The origin defines a port differently from an older export; the older stands.
    Port { name: String },
    /// Other IP families than the oldest export's.
    IpFamily,
    /// Another session affinity than the oldest export's.
    SessionAffinity,
    /// Another ClientIP timeout than the oldest export's.
    SessionAffinityConfig,
    /// Another internal traffic policy than the oldest export's.
    InternalTrafficPolicy,
    /// Another traffic distribution than the oldest export's.
    TrafficDistribution,
    /// Other exported labels than the oldest export's.
    Labels,
    /// Other exported annotations than the oldest export's.
    Annotations,
    /// Another traffic policy (`shoal.dev/affinity`) than the oldest export's.
    Affinity,
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConflictKind::Type { exported, .. } => write!(f, "type {exported:?}"),
            ConflictKind::Port { name } => write!(f, "port {name:?}"),
            ConflictKind::IpFamily => f.write_str("IP families"),
            ConflictKind::SessionAffinity => f.write_str("session affinity"),
            ConflictKind::SessionAffinityConfig => f.write_str("session affinity config"),
            ConflictKind::InternalTrafficPolicy => f.write_str("internal traffic policy"),
            ConflictKind::TrafficDistribution => f.write_str("traffic distribution"),
            ConflictKind::Labels => f.write_str("exported labels"),
            ConflictKind::Annotations => f.write_str("exported annotations"),
            ConflictKind::Affinity => f.write_str("affinity"),
        }
    }
}

/// The properties in which `exported` differs from `imported` (the oldest export's),
/// in a fixed order.
fn property_conflicts(
    imported: &ServiceProperties,
    exported: &ServiceProperties,
) -> impl Iterator<Item = ConflictKind> {
    let (a, b) = (imported, exported);
    [
        (a.ip_families != b.ip_families, ConflictKind::IpFamily),
        (
            a.session_affinity != b.session_affinity,
            ConflictKind::SessionAffinity,
        ),
        (
            a.client_ip_timeout_seconds != b.client_ip_timeout_seconds,
            ConflictKind::SessionAffinityConfig,
        ),
        (
            a.internal_traffic_policy != b.internal_traffic_policy,
            ConflictKind::InternalTrafficPolicy,
        ),
        (
            a.traffic_distribution != b.traffic_distribution,
            ConflictKind::TrafficDistribution,
        ),
        (a.exported_labels != b.exported_labels, ConflictKind::Labels),
        (
            a.exported_annotations != b.exported_annotations,
            ConflictKind::Annotations,
        ),
        (a.affinity != b.affinity, ConflictKind::Affinity),
    ]
    .into_iter()
    .filter_map(|(differs, kind)| differs.then_some(kind))
}

impl ImportedService {
    /// Whether `cluster`'s endpoints are in the import. O(origins).
    pub fn exports_from(&self, cluster: &ClusterId) -> bool {
        self.sources.find(cluster).is_some()
    }
}

/// Whether two exports of a port agree under the MCS rules: same name, protocol, port
/// and app protocol. The target port is each origin's own business: its endpoints
/// listen there, and its EndpointSlices in an importing cluster say so.
fn agrees(a: &ServicePort, b: &ServicePort) -> bool {
    (&a.name, a.protocol, a.port, &a.app_protocol) == (&b.name, b.protocol, b.port, &b.app_protocol)
}

/// A node's imports: an index per service, the imports as last handed out, and the
/// services a step touched.
#[derive(Debug)]
pub(super) struct Imports {
    ids: OriginIds,
    indexes: BTreeMap<ServiceKey, ServiceIndex>,
    current: BTreeMap<ServiceKey, Arc<ImportedService>>,
    /// The services touched in this step, with their source changes so far.
    pending: BTreeMap<ServiceKey, SourceChanges<OriginId>>,
}

impl Imports {
    pub(super) fn new(ring: &KeyRing) -> Self {
        Self {
            ids: OriginIds::new(ring),
            indexes: BTreeMap::new(),
            current: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// The imports as last handed out.
    pub(super) fn current(&self) -> &BTreeMap<ServiceKey, Arc<ImportedService>> {
        &self.current
    }

    /// `record` (its origin imported) is its origin's export of the service now; a
    /// tombstone removes the origin's export. The service is touched either way.
    pub(super) fn put(&mut self, record: &Arc<SignedRecord>) {
        let (origin, service) = (&record.record.origin, &record.record.service);
        if record.record.tombstone {
            self.remove(origin, service);
            return;
        }
        let Some(id) = self.ids.id(origin) else {
            debug_assert!(false, "a verified record's origin {origin} is in the ring");
            return;
        };
        let changes = self.pending.entry(service.clone()).or_default();
        self.indexes
            .entry(service.clone())
            .or_insert_with(|| ServiceIndex::new(service.clone()))
            .put(&self.ids, id, record, changes);
    }

    /// `origin` no longer contributes to `service` (a tombstone, or its withdrawal).
    /// The service, if it has an import, is touched.
    pub(super) fn remove(&mut self, origin: &ClusterId, service: &ServiceKey) {
        let (Some(id), Some(index)) = (self.ids.id(origin), self.indexes.get_mut(service)) else {
            return;
        };
        let changes = self.pending.entry(service.clone()).or_default();
        index.remove(&self.ids, id, changes);
    }

    /// The import of `service` must be looked at again at the end of the step (its
    /// traffic choice may move).
    pub(super) fn touch(&mut self, service: &ServiceKey) {
        if self.indexes.contains_key(service) {
            self.pending.entry(service.clone()).or_default();
        }
    }

    pub(super) fn is_pending(&self, service: &ServiceKey) -> bool {
        self.pending.contains_key(service)
    }

    pub(super) fn take_pending(&mut self) -> BTreeMap<ServiceKey, SourceChanges<OriginId>> {
        std::mem::take(&mut self.pending)
    }

    pub(super) fn index_mut(&mut self, service: &ServiceKey) -> Option<&mut ServiceIndex> {
        self.indexes.get_mut(service)
    }

    /// Hands out the import of `service` if the step changed it: the change, with
    /// the origins it gained, lost and saw a new record from.
    pub(super) fn publish(
        &mut self,
        service: ServiceKey,
        sources: SourceChanges<OriginId>,
    ) -> Option<ImportChange> {
        let index = self.indexes.get_mut(&service)?;
        if !index.take_changed() {
            return None;
        }
        let import = index.import().map(Arc::new);
        match &import {
            Some(import) => {
                self.current.insert(service.clone(), Arc::clone(import));
            }
            None => {
                self.indexes.remove(&service);
                // An import made and unmade within one step was never handed out.
                self.current.remove(&service)?;
            }
        }
        let ids = &self.ids;
        Some(ImportChange {
            service,
            import,
            sources: sources.map(|id| ids.cluster(id).clone()),
        })
    }

    /// Checks the import of `service` against one built afresh from its `live`
    /// exports, in origin order; the traffic choice, which depends on history, aside.
    pub(super) fn check<'a>(
        &self,
        service: &ServiceKey,
        live: impl Iterator<Item = &'a Arc<SignedRecord>>,
    ) -> Result<(), String> {
        let mut fresh = ServiceIndex::new(service.clone());
        let mut ignored = SourceChanges::default();
        for record in live.filter(|r| !r.record.tombstone) {
            let id = self
                .ids
                .id(&record.record.origin)
                .ok_or("an origin outside the ring")?;
            fresh.put(&self.ids, id, record, &mut ignored);
        }
        let fresh = fresh.import();
        let held = self.current.get(service).map(|i| &**i);
        let same = match (&fresh, held) {
            (None, None) => true,
            (Some(a), Some(b)) => same_but_traffic(a, b),
            _ => false,
        };
        if !same {
            return Err(format!(
                "import of {service} is not what its live exports make: {held:?}, not {fresh:?}"
            ));
        }
        Ok(())
    }
}

/// Two imports equal but for which origins take traffic.
fn same_but_traffic(a: &ImportedService, b: &ImportedService) -> bool {
    let records = |i: &ImportedService| -> Vec<Arc<SignedRecord>> {
        i.sources.iter().map(|s| Arc::clone(&s.record)).collect()
    };
    (
        &a.service,
        a.service_type,
        &a.ports,
        &a.properties,
        &a.conflicts,
    ) == (
        &b.service,
        b.service_type,
        &b.ports,
        &b.properties,
        &b.conflicts,
    ) && records(a) == records(b)
}
