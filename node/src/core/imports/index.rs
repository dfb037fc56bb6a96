//! One service's import, kept by an index of its live exports.
//!
//! The import depends on the other origins only through a *reference*: the service
//! type and properties of the oldest export, and the union of ports with each one's
//! winning definition (the oldest same-type export that defines it). An origin's
//! standing (a source or left out, and its conflicts) is a function of its own record
//! and the reference. So one origin's new record, or its removal, updates the ordered
//! sets the reference is read from (O(ports × log origins)), and then:
//! - with the reference unchanged, only that origin's source and conflicts change;
//! - with it changed (a new oldest export that differs, a new union port, a new winning
//!   definition), every origin's conflicts are worked out again, and on a new service
//!   type the sources too. That is O(origins), and only when what the whole import
//!   agrees on changes.
//!
//! Nothing is copied whole: the sources are a persistent map, and an import handed
//! out shares them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_proto::{ServiceKey, ServicePort, ServiceProperties, ServiceType, SignedRecord};

use super::origin_id::{OriginId, OriginIds};
use super::sources::{ImportedCluster, Sources};
use super::{Conflict, ConflictKind, ImportedService, agrees, property_conflicts};
use crate::core::command::SourceChanges;
use crate::core::traffic::TrafficReason;

/// An export's age for the MCS conflict rule: the oldest export wins, ties broken by
/// cluster id (an [`OriginId`] sorts like the name).
type Age = (u64, OriginId);

fn age(id: OriginId, record: &SignedRecord) -> Age {
    (record.record.export_created_ms, id)
}

/// The exports that define one port, by age, with their definitions.
type PortDefinitions = BTreeMap<Age, ServicePort>;

#[derive(Debug)]
pub(in crate::core) struct ServiceIndex {
    service: ServiceKey,
    /// Every live export: no tombstone, no withdrawn origin.
    exports: BTreeMap<OriginId, Arc<SignedRecord>>,
    /// The exports by age; the first is the oldest.
    by_age: BTreeSet<Age>,
    /// Per service type and port name, the exports of that type defining the port.
    ports: BTreeMap<ServiceType, BTreeMap<String, PortDefinitions>>,
    /// What each origin's export disagrees on; origins without conflicts are absent.
    conflicts: BTreeMap<OriginId, Vec<ConflictKind>>,
    // The reference and the import built from it, as of the last change.
    service_type: ServiceType,
    properties: ServiceProperties,
    union: Vec<ServicePort>,
    sources: Sources,
    conflict_list: Arc<[Conflict]>,
    traffic: TrafficReason,
    /// The import changed since it was last handed out.
    changed: bool,
}

impl ServiceIndex {
    pub(in crate::core) fn new(service: ServiceKey) -> Self {
        Self {
            service,
            exports: BTreeMap::new(),
            by_age: BTreeSet::new(),
            ports: BTreeMap::new(),
            conflicts: BTreeMap::new(),
            service_type: ServiceType::ClusterSetIp,
            properties: ServiceProperties::default(),
            union: Vec::new(),
            sources: Sources::default(),
            conflict_list: Arc::from([]),
            traffic: TrafficReason::AllOrigins,
            changed: false,
        }
    }

    pub(in crate::core) fn is_empty(&self) -> bool {
        self.exports.is_empty()
    }

    pub(in crate::core) fn sources(&self) -> &Sources {
        &self.sources
    }

    pub(in crate::core) fn properties(&self) -> &ServiceProperties {
        &self.properties
    }

    pub(in crate::core) fn traffic(&self) -> &TrafficReason {
        &self.traffic
    }

    /// Marks the active origins (a flag per source, in source order) and why. Copies
    /// only the paths to the origins whose flag changes.
    pub(in crate::core) fn set_traffic(&mut self, active: &[bool], reason: TrafficReason) {
        debug_assert_eq!(active.len(), self.sources.len());
        let ids: Vec<OriginId> = self.sources.ids().collect();
        for (id, active) in ids.into_iter().zip(active) {
            self.changed |= self.sources.set_active(id, *active);
        }
        if self.traffic != reason {
            self.traffic = reason;
            self.changed = true;
        }
    }

    /// Whether the import changed since this was last called.
    pub(in crate::core) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// `record` is origin `id`'s live export now (new, or newer than the one held).
    pub(in crate::core) fn put(
        &mut self,
        ids: &OriginIds,
        id: OriginId,
        record: &Arc<SignedRecord>,
        changes: &mut SourceChanges<OriginId>,
    ) {
        if self
            .exports
            .get(&id)
            .is_some_and(|held| Arc::ptr_eq(held, record))
        {
            return;
        }
        let held = self.exports.insert(id, Arc::clone(record));
        if let Some(held) = held {
            if same_standing(&held, record) {
                // Only endpoints (or the version) changed: the reference and this
                // origin's conflicts stand; its source, if it is one, takes the record.
                self.changed |= self.settle_source(id, changes);
                return;
            }
            self.unindex(id, &held);
        }
        self.index(id, record);
        self.settle(ids, id, changes);
    }

    /// Origin `id` no longer exports the service (a tombstone, or a withdrawal).
    pub(in crate::core) fn remove(
        &mut self,
        ids: &OriginIds,
        id: OriginId,
        changes: &mut SourceChanges<OriginId>,
    ) {
        if let Some(held) = self.exports.remove(&id) {
            self.unindex(id, &held);
            self.settle(ids, id, changes);
        }
    }

    /// The import as it stands; `None` without a live export.
    pub(in crate::core) fn import(&self) -> Option<ImportedService> {
        if self.is_empty() {
            return None;
        }
        Some(ImportedService {
            service: self.service.clone(),
            service_type: self.service_type,
            ports: self.union.clone(),
            properties: self.properties.clone(),
            sources: self.sources.clone(),
            conflicts: Arc::clone(&self.conflict_list),
            traffic: self.traffic.clone(),
        })
    }

    fn index(&mut self, id: OriginId, record: &SignedRecord) {
        let age = age(id, record);
        self.by_age.insert(age);
        let by_name = self.ports.entry(record.record.service_type).or_default();
        for port in &record.record.ports {
            let definitions = match by_name.get_mut(port.name.as_str()) {
                Some(definitions) => definitions,
                None => by_name.entry(port.name.clone()).or_default(),
            };
            // A record naming a port twice: its first definition counts.
            definitions.entry(age).or_insert_with(|| port.clone());
        }
    }

    fn unindex(&mut self, id: OriginId, record: &SignedRecord) {
        let age = age(id, record);
        self.by_age.remove(&age);
        let ty = record.record.service_type;
        let Some(by_name) = self.ports.get_mut(&ty) else {
            return;
        };
        for port in &record.record.ports {
            if let Some(definitions) = by_name.get_mut(port.name.as_str()) {
                definitions.remove(&age);
                if definitions.is_empty() {
                    by_name.remove(port.name.as_str());
                }
            }
        }
        if by_name.is_empty() {
            self.ports.remove(&ty);
        }
    }

    /// Brings the import up to date after origin `id`'s export changed.
    fn settle(&mut self, ids: &OriginIds, id: OriginId, changes: &mut SourceChanges<OriginId>) {
        let Some(&(_, oldest)) = self.by_age.first() else {
            for gone in self.sources.ids() {
                changes.lose(gone);
            }
            self.sources = Sources::default();
            self.conflicts.clear();
            self.conflict_list = Arc::from([]);
            self.union.clear();
            self.changed = true;
            return;
        };
        let oldest = &self.exports[&oldest].record;
        let service_type = oldest.service_type;
        let winners = || {
            self.ports
                .get(&service_type)
                .into_iter()
                .flat_map(|by_name| by_name.values())
                .filter_map(|definitions| definitions.first_key_value().map(|(_, port)| port))
        };
        let retyped = service_type != self.service_type || self.sources.is_empty();
        let same_union = winners().eq(self.union.iter());
        let same = !retyped && same_union && oldest.properties == self.properties;
        if !same_union {
            self.union = winners().cloned().collect();
        }
        if !same {
            self.properties = oldest.properties.clone();
        }
        self.service_type = service_type;
        if retyped {
            self.rebuild_sources(changes);
        } else {
            self.changed |= self.settle_source(id, changes);
        }
        if same {
            if self.settle_conflicts(id) {
                self.list_conflicts(ids);
                self.changed = true;
            }
        } else {
            self.changed = true;
            let all: Vec<OriginId> = self.exports.keys().copied().collect();
            self.conflicts.remove(&id);
            for origin in all {
                self.settle_conflicts(origin);
            }
            self.list_conflicts(ids);
        }
    }

    /// Origin `id`'s source: present with its record if it exports the import's type.
    /// Returns whether it changed.
    fn settle_source(&mut self, id: OriginId, changes: &mut SourceChanges<OriginId>) -> bool {
        match self.exports.get(&id) {
            Some(record) if record.record.service_type == self.service_type => {
                let active = self.sources.get(id).is_none_or(|s| s.active);
                let source = ImportedCluster {
                    record: Arc::clone(record),
                    active,
                };
                match self.sources.insert(id, source) {
                    Some(_) => changes.update(id),
                    None => changes.gain(id),
                }
                true
            }
            _ => {
                let gone = self.sources.remove(id).is_some();
                if gone {
                    changes.lose(id);
                }
                gone
            }
        }
    }

    /// The service type changed (or the import is new): every source again.
    fn rebuild_sources(&mut self, changes: &mut SourceChanges<OriginId>) {
        let old = std::mem::take(&mut self.sources);
        for (id, record) in &self.exports {
            if record.record.service_type != self.service_type {
                continue;
            }
            let held = old.get(*id);
            match held {
                Some(held) if Arc::ptr_eq(&held.record, record) => {}
                Some(_) => changes.update(*id),
                None => changes.gain(*id),
            }
            let source = ImportedCluster {
                record: Arc::clone(record),
                active: held.is_none_or(|h| h.active),
            };
            self.sources.insert(*id, source);
        }
        for id in old.ids().filter(|id| !self.sources.contains(*id)) {
            changes.lose(id);
        }
    }

    /// Works origin `id`'s conflicts out again; returns whether they changed.
    fn settle_conflicts(&mut self, id: OriginId) -> bool {
        let kinds = self
            .exports
            .get(&id)
            .map(|record| self.conflicts_of(record))
            .unwrap_or_default();
        let changed = self.conflicts.get(&id).map_or(&[][..], Vec::as_slice) != kinds.as_slice();
        if kinds.is_empty() {
            self.conflicts.remove(&id);
        } else {
            self.conflicts.insert(id, kinds);
        }
        changed
    }

    /// What `record` disagrees on with the reference, in a fixed order: a type
    /// conflict alone; else its ports that differ from the winning definition (in the
    /// record's order), the union's ports it lacks (in name order), its properties.
    fn conflicts_of(&self, record: &SignedRecord) -> Vec<ConflictKind> {
        let record = &record.record;
        if record.service_type != self.service_type {
            return vec![ConflictKind::Type {
                exported: record.service_type,
                imported: self.service_type,
            }];
        }
        let mut kinds = Vec::new();
        for port in &record.ports {
            let winner = self
                .union
                .binary_search_by(|p| p.name.as_str().cmp(&port.name))
                .ok()
                .map(|i| &self.union[i]);
            let kind = ConflictKind::Port {
                name: port.name.clone(),
            };
            if !winner.is_some_and(|w| agrees(w, port)) && !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        for union_port in &self.union {
            if !record.ports.iter().any(|p| p.name == union_port.name) {
                kinds.push(ConflictKind::Port {
                    name: union_port.name.clone(),
                });
            }
        }
        kinds.extend(property_conflicts(&self.properties, &record.properties));
        kinds
    }

    /// The import's conflict list, in origin order, from the per-origin conflicts.
    fn list_conflicts(&mut self, ids: &OriginIds) {
        self.conflict_list = self
            .conflicts
            .iter()
            .flat_map(|(id, kinds)| {
                let cluster = ids.cluster(*id);
                kinds.iter().map(move |kind| Conflict {
                    cluster: cluster.clone(),
                    kind: kind.clone(),
                })
            })
            .collect();
    }
}

/// Whether `new` stands where `old` stood: the same type, ports, properties and age,
/// so that only its endpoints (or version) differ.
fn same_standing(old: &SignedRecord, new: &SignedRecord) -> bool {
    let (a, b) = (&old.record, &new.record);
    (a.service_type, a.export_created_ms, &a.ports, &a.properties)
        == (b.service_type, b.export_created_ms, &b.ports, &b.properties)
}
