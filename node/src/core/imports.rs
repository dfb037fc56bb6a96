//! The MCS imports, derived from the view and cluster liveness.
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

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_proto::{
    ClusterId, ServiceKey, ServicePort, ServiceProperties, ServiceType, SignedRecord,
};

use super::command::{Command, ImportChange};
use super::node::Node;
use super::traffic::TrafficReason;

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
    /// The records whose endpoints are imported, sorted by origin.
    pub sources: Vec<ImportedCluster>,
    /// Exports that disagree with the oldest export, sorted by origin.
    pub conflicts: Vec<Conflict>,
    /// Why the active sources are the ones they are (the oldest export's affinity,
    /// applied to the sources' readiness and round trips).
    pub traffic: TrafficReason,
}

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
/// in a fixed order: both derivations list an origin's conflicts in this order.
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
    pub fn exports_from(&self, cluster: &ClusterId) -> bool {
        self.sources.iter().any(|s| s.cluster() == cluster)
    }
}

/// A record's age for the MCS conflict rule: the oldest export wins, ties broken by
/// cluster id.
fn age(record: &SignedRecord) -> (u64, &ClusterId) {
    (record.record.export_created_ms, &record.record.origin)
}

/// Derives one service's import from the records of live origins, given in origin
/// order. Tombstones are skipped. Returns `None` when no live origin exports the
/// service. O(origins × ports): no sorting, so it stays cheap for large ClusterSets.
pub fn derive<'a>(
    service: &ServiceKey,
    records: impl IntoIterator<Item = &'a Arc<SignedRecord>>,
) -> Option<ImportedService> {
    let exports: Vec<&Arc<SignedRecord>> = records
        .into_iter()
        .filter(|r| !r.record.tombstone)
        .collect();
    debug_assert!(
        exports
            .windows(2)
            .all(|w| w[0].record.origin < w[1].record.origin)
    );
    let oldest = exports.iter().min_by(|a, b| age(a).cmp(&age(b)))?;
    let service_type = oldest.record.service_type;
    let properties = &oldest.record.properties;
    let same_type = || {
        exports
            .iter()
            .filter(|r| r.record.service_type == service_type)
    };
    let mut winners: BTreeMap<&str, (&ServicePort, (u64, &ClusterId))> = BTreeMap::new();
    for signed in same_type() {
        for port in &signed.record.ports {
            let candidate = (port, age(signed));
            winners
                .entry(port.name.as_str())
                .and_modify(|held| {
                    if candidate.1 < held.1 {
                        *held = candidate;
                    }
                })
                .or_insert(candidate);
        }
    }
    let mut conflicts = Vec::new();
    for signed in &exports {
        let record = &signed.record;
        if record.service_type != service_type {
            let kind = ConflictKind::Type {
                exported: record.service_type,
                imported: service_type,
            };
            conflicts.push(Conflict {
                cluster: record.origin.clone(),
                kind,
            });
            continue;
        }
        for port in &record.ports {
            let winner = winners.get(port.name.as_str()).map(|w| w.0);
            let kind = ConflictKind::Port {
                name: port.name.clone(),
            };
            let seen = conflicts
                .iter()
                .any(|c: &Conflict| c.cluster == record.origin && c.kind == kind);
            if !winner.is_some_and(|w| agrees(w, port)) && !seen {
                conflicts.push(Conflict {
                    cluster: record.origin.clone(),
                    kind,
                });
            }
        }
        // A port of the union this export lacks is a conflict too (the MCS rule: the
        // union is exposed, and every export that differs is in conflict).
        for name in winners.keys() {
            if !record.ports.iter().any(|p| p.name == *name) {
                conflicts.push(Conflict {
                    cluster: record.origin.clone(),
                    kind: ConflictKind::Port {
                        name: (*name).to_owned(),
                    },
                });
            }
        }
        for kind in property_conflicts(properties, &record.properties) {
            conflicts.push(Conflict {
                cluster: record.origin.clone(),
                kind,
            });
        }
    }
    Some(ImportedService {
        service: service.clone(),
        service_type,
        properties: properties.clone(),
        ports: winners
            .into_values()
            .map(|(port, _)| port.clone())
            .collect(),
        sources: same_type()
            .map(|r| ImportedCluster {
                record: Arc::clone(r),
                active: true,
            })
            .collect(),
        conflicts,
        traffic: TrafficReason::AllOrigins,
    })
}

// ----- staging: keeping a node's imports up to date within a step -----

impl Node {
    pub(super) fn mark_origin_dirty(&mut self, origin: &ClusterId) {
        let services = self.view.services_of(origin);
        self.dirty_imports.extend(services);
    }

    /// Notes that `record` replaced `held` in the view. When the import can be brought
    /// up to date without looking at the other origins, it is patched in place: one
    /// source swapped or inserted, and for an export that loses a conflict, its conflict
    /// entries. Anything else is derived again at the end of the step.
    pub(super) fn stage_import(
        &mut self,
        held: Option<Arc<SignedRecord>>,
        record: &Arc<SignedRecord>,
    ) {
        let service = &record.record.service;
        match self.patch_import(held.as_ref(), record) {
            Patch::Unchanged => {}
            Patch::Patched => {
                self.patched_imports.insert(service.clone());
            }
            Patch::Derive => {
                self.dirty_imports.insert(service.clone());
            }
        }
    }

    fn patch_import(
        &mut self,
        held: Option<&Arc<SignedRecord>>,
        record: &Arc<SignedRecord>,
    ) -> Patch {
        let new = &record.record;
        if !self.clusters.liveness(&new.origin).imported() {
            // A withdrawn origin contributes nothing; it is derived in when it is back.
            return Patch::Unchanged;
        }
        if new.tombstone || self.dirty_imports.contains(&new.service) {
            return Patch::Derive;
        }
        let Some(import) = self.imports.get_mut(&new.service) else {
            return Patch::Derive;
        };
        let edit = match held.filter(|h| !h.record.tombstone) {
            Some(held) => plan_replacement(import, held, record),
            None => plan_insertion(import, record),
        };
        match edit {
            Some(Edit::Nothing) => Patch::Unchanged,
            Some(edit) => {
                edit.apply(Arc::make_mut(import), record);
                Patch::Patched
            }
            None => Patch::Derive,
        }
    }

    pub(super) fn recompute_imports(&mut self) {
        let reselect = self.traffic.take_reselect();
        if self.dirty_imports.is_empty() && self.patched_imports.is_empty() && reselect.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        let patched = std::mem::take(&mut self.patched_imports);
        for service in &patched {
            if !self.dirty_imports.contains(service) {
                self.reselect_traffic(service);
                let import = self.imports.get(service).cloned();
                changes.push(ImportChange {
                    service: service.clone(),
                    import,
                });
            }
        }
        // A new round trip may move a `nearest` choice of an import nothing else touched.
        for service in reselect {
            let touched = self.dirty_imports.contains(&service) || patched.contains(&service);
            if !touched && self.reselect_traffic(&service) {
                let import = self.imports.get(&service).cloned();
                changes.push(ImportChange { service, import });
            }
        }
        for service in std::mem::take(&mut self.dirty_imports) {
            let derived = self.derive_import(&service).map(Arc::new);
            if self.imports.get(&service) == derived.as_ref() {
                continue;
            }
            let affinity = derived.as_ref().map(|i| i.properties.affinity);
            self.traffic.track(&service, affinity);
            match &derived {
                Some(import) => self.imports.insert(service.clone(), Arc::clone(import)),
                None => self.imports.remove(&service),
            };
            changes.push(ImportChange {
                service,
                import: derived,
            });
        }
        if !changes.is_empty() {
            self.stats.import_changes += changes.len() as u64;
            self.commands.push(Command::ApplyImports { changes });
        }
    }

    /// The import of `service` as it should be: derived from the live origins, with
    /// its active origins chosen.
    pub(super) fn derive_import(&self, service: &ServiceKey) -> Option<ImportedService> {
        let live = self.clusters.imported(self.view.service_records(service));
        let mut import = derive(service, live)?;
        self.select_traffic(&mut import);
        Some(import)
    }
}

/// What [`Node::stage_import`] did with a record.
enum Patch {
    /// The import does not hold the record and is not affected by it.
    Unchanged,
    /// The import was patched in place.
    Patched,
    /// The import must be derived again from all origins.
    Derive,
}

/// An in-place change to one import, planned before touching it, so that an import
/// shared with an earlier [`ImportChange`] is copied only when it really changes.
enum Edit {
    Nothing,
    /// Replace the source at this index with the new record.
    Swap(usize),
    /// Add a new origin's export.
    Insert {
        /// Where its source goes; `None` when it loses on the service type.
        source: Option<usize>,
        /// Port names no one defined before, in the record's order.
        ports: Vec<ServicePort>,
        /// Its conflicts, in derivation order, and where they go.
        conflicts: Vec<Conflict>,
        conflicts_at: usize,
    },
}

impl Edit {
    fn apply(self, import: &mut ImportedService, record: &Arc<SignedRecord>) {
        let source = ImportedCluster {
            record: Arc::clone(record),
            active: true,
        };
        match self {
            Edit::Nothing => {}
            Edit::Swap(i) => import.sources[i] = source,
            Edit::Insert {
                source: at,
                ports,
                conflicts,
                conflicts_at,
            } => {
                if let Some(i) = at {
                    import.sources.insert(i, source);
                }
                for port in ports {
                    let i = import
                        .ports
                        .binary_search_by(|p| p.name.cmp(&port.name))
                        .unwrap_or_else(|i| i);
                    import.ports.insert(i, port);
                }
                import
                    .conflicts
                    .splice(conflicts_at..conflicts_at, conflicts);
            }
        }
    }
}

/// The origin's previous record `held` is replaced by `record`. Without a change of
/// type, ports, properties or age, no other origin's standing can change: the source is
/// swapped (or, for an export already left out on its type, nothing changes at all).
fn plan_replacement(
    import: &ImportedService,
    held: &Arc<SignedRecord>,
    record: &Arc<SignedRecord>,
) -> Option<Edit> {
    let (old, new) = (&held.record, &record.record);
    if old.service_type != new.service_type
        || old.ports != new.ports
        || old.properties != new.properties
    {
        return None;
    }
    // With no conflicts at all, every export agrees on the type, on every port and on
    // every property, so which one is the oldest does not matter.
    if old.export_created_ms != new.export_created_ms && !import.conflicts.is_empty() {
        return None;
    }
    match import
        .sources
        .binary_search_by(|s| s.cluster().cmp(&new.origin))
    {
        Ok(i) if Arc::ptr_eq(&import.sources[i].record, held) => Some(Edit::Swap(i)),
        Err(_) if new.service_type != import.service_type => Some(Edit::Nothing),
        _ => None,
    }
}

/// Whether two exports of a port agree under the MCS rules: same name, protocol, port
/// and app protocol. The target port is each origin's own business: its endpoints
/// listen there, and its EndpointSlices in an importing cluster say so.
fn agrees(a: &ServicePort, b: &ServicePort) -> bool {
    (&a.name, a.protocol, a.port, &a.app_protocol) == (&b.name, b.protocol, b.port, &b.app_protocol)
}

/// A new origin exports the service (or exports it again after a tombstone). Younger
/// than the oldest export, it cannot change the type or the properties. Each of its
/// ports then agrees with the winner, loses to an older winner (a conflict), or names a
/// port no one defined (the union grows); each property agrees with the oldest export's
/// or is a conflict. A port it would win is left to a full derivation.
fn plan_insertion(import: &ImportedService, record: &Arc<SignedRecord>) -> Option<Edit> {
    let new = &record.record;
    let slot = import
        .sources
        .binary_search_by(|s| s.cluster().cmp(&new.origin))
        .err()?;
    let mine = age(record);
    let oldest = import.sources.iter().map(|s| age(&s.record)).min()?;
    if mine <= oldest || import.conflicts.iter().any(|c| c.cluster == new.origin) {
        return None;
    }
    let conflicts_at = import.conflicts.partition_point(|c| c.cluster < new.origin);
    if new.service_type != import.service_type {
        let kind = ConflictKind::Type {
            exported: new.service_type,
            imported: import.service_type,
        };
        return Some(Edit::Insert {
            source: None,
            ports: Vec::new(),
            conflicts: vec![Conflict {
                cluster: new.origin.clone(),
                kind,
            }],
            conflicts_at,
        });
    }
    let ports: Vec<ServicePort> = Vec::new();
    let mut conflicts: Vec<Conflict> = Vec::new();
    for port in &new.ports {
        let name = port.name.as_str();
        if ports.iter().any(|p| p.name == name) {
            return None;
        }
        match import.ports.binary_search_by(|p| p.name.as_str().cmp(name)) {
            Ok(i) if agrees(&import.ports[i], port) => {}
            Ok(_) => {
                let winner = import
                    .sources
                    .iter()
                    .filter(|s| s.record.record.ports.iter().any(|p| p.name == name))
                    .map(|s| age(&s.record))
                    .min()?;
                if winner >= mine {
                    return None;
                }
                let kind = ConflictKind::Port { name: name.into() };
                if !conflicts.iter().any(|c| c.kind == kind) {
                    conflicts.push(Conflict {
                        cluster: new.origin.clone(),
                        kind,
                    });
                }
            }
            // A port the import lacks puts every other export in conflict: derive it
            // whole.
            Err(_) => return None,
        }
    }
    // A port of the import this export lacks is a conflict on it: derive it whole.
    if import
        .ports
        .iter()
        .any(|p| !new.ports.iter().any(|n| n.name == p.name))
    {
        return None;
    }
    conflicts.extend(
        property_conflicts(&import.properties, &new.properties).map(|kind| Conflict {
            cluster: new.origin.clone(),
            kind,
        }),
    );
    Some(Edit::Insert {
        source: Some(slot),
        ports,
        conflicts,
        conflicts_at,
    })
}

#[cfg(test)]
mod tests {
    use shoal_proto::{
        ClusterKey, Endpoint, EndpointConditions, ExportRecord, IpAddress, NetworkMode,
        PortProtocol,
    };

    use super::*;

    fn record(origin: &str, created: u64, ty: ServiceType, port: u16) -> Arc<SignedRecord> {
        record_targeting(origin, created, ty, port, port)
    }

    fn record_targeting(
        origin: &str,
        created: u64,
        ty: ServiceType,
        port: u16,
        target_port: u16,
    ) -> Arc<SignedRecord> {
        let cluster = ClusterId::new(origin).unwrap();
        let key = ClusterKey::from_seed(cluster.clone(), [1; 32]);
        let record = ExportRecord {
            origin: cluster,
            service: ServiceKey::new("default", "web").unwrap(),
            version: 1,
            export_created_ms: created,
            published_ms: 0,
            service_type: ty,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: PortProtocol::Tcp,
                port,
                target_port,
                app_protocol: None,
            }],
            endpoints: vec![Endpoint {
                addresses: vec![IpAddress::V4([10, 0, 0, created as u8])],
                conditions: EndpointConditions {
                    ready: true,
                    serving: true,
                    terminating: false,
                },
                zone: None,
                hostname: None,
            }],
            network: NetworkMode::Flat,
            properties: ServiceProperties::default(),
            tombstone: false,
        };
        Arc::new(key.sign_unchecked(record))
    }

    fn with_properties(
        record: &Arc<SignedRecord>,
        change: impl FnOnce(&mut ServiceProperties),
    ) -> Arc<SignedRecord> {
        let mut record = record.record.clone();
        change(&mut record.properties);
        let key = ClusterKey::from_seed(record.origin.clone(), [1; 32]);
        Arc::new(key.sign_unchecked(record))
    }

    /// The MCS conformance suite's pair: c0 exports tcp/42 and udp/42, c1 tcp/42 and
    /// sctp/142. The import is the union, and each export lacking a union port is in
    /// conflict; the incremental path defers to the full derivation.
    #[test]
    fn a_port_one_export_lacks_is_in_the_union_and_a_conflict_on_it() {
        let port = |name: &str, protocol, number| ServicePort {
            name: name.into(),
            protocol,
            port: number,
            target_port: number,
            app_protocol: None,
        };
        let with_ports = |origin: &str, created, ports: Vec<ServicePort>| {
            let mut record = record(origin, created, ServiceType::ClusterSetIp, 42)
                .record
                .clone();
            record.ports = ports;
            let key = ClusterKey::from_seed(record.origin.clone(), [1; 32]);
            Arc::new(key.sign_unchecked(record))
        };
        let a = with_ports(
            "c0",
            10,
            vec![
                port("tcp", PortProtocol::Tcp, 42),
                port("udp", PortProtocol::Udp, 42),
            ],
        );
        let b = with_ports(
            "c1",
            20,
            vec![
                port("sctp", PortProtocol::Sctp, 142),
                port("tcp", PortProtocol::Tcp, 42),
            ],
        );
        let service = a.record.service.clone();
        let import = derive(&service, [&a, &b]).unwrap();
        let names: Vec<&str> = import.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sctp", "tcp", "udp"]);
        let conflicts: Vec<(&str, String)> = import
            .conflicts
            .iter()
            .map(|c| (c.cluster.as_str(), c.kind.to_string()))
            .collect();
        assert_eq!(
            conflicts,
            [
                ("c0", "port \"sctp\"".to_owned()),
                ("c1", "port \"udp\"".to_owned())
            ]
        );
        let only_a = derive(&service, [&a]).unwrap();
        assert!(only_a.conflicts.is_empty());
        assert!(plan_insertion(&only_a, &b).is_none());
    }

    #[test]
    fn union_of_clusters_with_the_oldest_port_winning() {
        let a = record("a", 20, ServiceType::ClusterSetIp, 80);
        let b = record("b", 10, ServiceType::ClusterSetIp, 8080);
        let service = a.record.service.clone();
        let import = derive(&service, [&a, &b]).unwrap();
        let origins: Vec<_> = import
            .sources
            .iter()
            .map(|s| s.cluster().as_str())
            .collect();
        assert_eq!(origins, ["a", "b"]);
        assert_eq!(import.ports.len(), 1);
        assert_eq!(import.ports[0].port, 8080, "b's export is older");
        assert_eq!(
            import.conflicts,
            vec![Conflict {
                cluster: a.record.origin.clone(),
                kind: ConflictKind::Port {
                    name: "http".into()
                }
            }]
        );
    }

    #[test]
    fn origins_may_target_different_ports_without_a_conflict() {
        let a = record_targeting("a", 5, ServiceType::ClusterSetIp, 80, 8080);
        let b = record_targeting("b", 10, ServiceType::ClusterSetIp, 80, 9090);
        let import = derive(&a.record.service.clone(), [&a, &b]).unwrap();
        assert!(import.conflicts.is_empty(), "{:?}", import.conflicts);
        assert_eq!(import.sources.len(), 2);
        let mut node_import = import.clone();
        node_import.sources.pop();
        node_import.ports = a.record.ports.clone();
        let edit = plan_insertion(&node_import, &b);
        assert!(
            matches!(&edit, Some(Edit::Insert { conflicts, ports, .. }) if conflicts.is_empty() && ports.is_empty()),
            "the incremental path agrees"
        );
    }

    #[test]
    fn a_type_conflict_leaves_the_younger_export_out() {
        let a = record("a", 5, ServiceType::Headless, 80);
        let b = record("b", 10, ServiceType::ClusterSetIp, 80);
        let import = derive(&a.record.service.clone(), [&a, &b]).unwrap();
        assert_eq!(import.service_type, ServiceType::Headless);
        assert!(import.exports_from(&a.record.origin));
        assert!(!import.exports_from(&b.record.origin));
        assert_eq!(import.conflicts.len(), 1);
    }

    #[test]
    fn property_conflicts_keep_the_endpoints_and_the_oldest_values() {
        use shoal_proto::{InternalTrafficPolicy, IpFamily, SessionAffinity};
        let a = with_properties(&record("a", 5, ServiceType::ClusterSetIp, 80), |p| {
            p.ip_families = vec![IpFamily::Ipv4];
            p.session_affinity = SessionAffinity::ClientIp;
            p.client_ip_timeout_seconds = Some(60);
            p.exported_labels.insert("tier".into(), "web".into());
        });
        let b = with_properties(&record("b", 10, ServiceType::ClusterSetIp, 80), |p| {
            p.ip_families = vec![IpFamily::Ipv6];
            p.internal_traffic_policy = Some(InternalTrafficPolicy::Local);
            p.traffic_distribution = Some("PreferClose".into());
            p.exported_annotations.insert("note".into(), "b".into());
        });
        let c = with_properties(&record("c", 20, ServiceType::ClusterSetIp, 80), |p| {
            *p = a.record.properties.clone();
        });
        let service = a.record.service.clone();
        let import = derive(&service, [&a, &b, &c]).unwrap();
        assert_eq!(
            import.properties, a.record.properties,
            "a's export is oldest"
        );
        assert_eq!(
            import.sources.len(),
            3,
            "no property conflict leaves one out"
        );
        let kinds: Vec<_> = import
            .conflicts
            .iter()
            .map(|c| (c.cluster.as_str(), c.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("b", ConflictKind::IpFamily),
                ("b", ConflictKind::SessionAffinity),
                ("b", ConflictKind::SessionAffinityConfig),
                ("b", ConflictKind::InternalTrafficPolicy),
                ("b", ConflictKind::TrafficDistribution),
                ("b", ConflictKind::Labels),
                ("b", ConflictKind::Annotations),
            ]
        );
        // The incremental path agrees for a younger export that joins.
        let without_b = derive(&service, [&a, &c]).unwrap();
        let Some(Edit::Insert { conflicts, .. }) = plan_insertion(&without_b, &b) else {
            panic!("a younger export is inserted in place");
        };
        assert_eq!(conflicts, import.conflicts);
        // A property change is derived again, never patched.
        assert!(
            plan_replacement(
                &import,
                &c,
                &with_properties(&c, |p| p.exported_labels.clear())
            )
            .is_none()
        );
    }

    #[test]
    fn no_live_export_means_no_import() {
        let a = record("a", 5, ServiceType::Headless, 80);
        assert_eq!(derive(&a.record.service.clone(), []), None);
    }
}
