//! Keeping a node's imports current within a step: records and liveness changes go
//! into the indexes as they happen; at the end of the step the touched imports choose
//! their active origins and the changed ones are emitted in one command.

use std::sync::Arc;

use shoal_proto::{ClusterId, SignedRecord};

use super::super::command::Command;
use super::super::node::Node;

impl Node {
    /// `record` entered the view. A withdrawn origin contributes nothing; it is put
    /// back when the cluster is.
    pub(in crate::core) fn stage_import(&mut self, record: &Arc<SignedRecord>) {
        if self.clusters.liveness(&record.record.origin).imported() {
            self.imports.put(record);
        }
    }

    /// `origin`'s liveness changed: its exports join or leave the imports, and the
    /// imports it exports to choose their active origins again.
    pub(in crate::core) fn stage_origin(&mut self, origin: &ClusterId) {
        let imported = self.clusters.liveness(origin).imported();
        let Some(records) = self.view.origin(origin) else {
            return;
        };
        // Both mark the service touched, even when its import holds the record already.
        for (service, record) in &records.services {
            if imported {
                self.imports.put(record);
            } else {
                self.imports.remove(origin, service);
            }
        }
    }

    /// Ends a step's import work: every touched import chooses its active origins, and
    /// the ones that changed go out in one `ApplyImports`.
    pub(in crate::core) fn emit_imports(&mut self) {
        for service in self.traffic.take_reselect() {
            self.imports.touch(&service);
        }
        let pending = self.imports.take_pending();
        if pending.is_empty() {
            return;
        }
        let mut changes = Vec::new();
        for (service, sources) in pending {
            self.select_traffic(&service);
            if let Some(change) = self.imports.publish(service, sources) {
                let affinity = change.import.as_ref().map(|i| i.properties.affinity);
                self.traffic.track(&change.service, affinity);
                changes.push(change);
            }
        }
        if !changes.is_empty() {
            self.stats.import_changes += changes.len() as u64;
            self.commands.push(Command::ApplyImports { changes });
        }
    }
}
