//! What a node shows of itself: identity, view, imports, liveness, stats, and the
//! invariant checks the simulator runs after every event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_proto::{ClusterId, MemberId, ServiceKey, SignedRecord, SwimIdentity};

use super::config::Config;
use super::imports::ImportedService;
use super::membership::Liveness;
use super::node::{InvariantViolation, Node};
use super::stats::Stats;

impl Node {
    pub fn member(&self) -> &MemberId {
        &self.config.member
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This replica's current SWIM identity.
    pub fn own_identity(&self) -> SwimIdentity {
        SwimIdentity {
            member: self.config.member.clone(),
            addr: self.config.addr,
            generation: self.generation,
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn own_version(&self) -> u64 {
        self.own_version
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Every record in the view, by origin then service.
    pub fn records(&self) -> impl Iterator<Item = &Arc<SignedRecord>> {
        self.view.iter()
    }

    pub fn record(&self, origin: &ClusterId, service: &ServiceKey) -> Option<&Arc<SignedRecord>> {
        self.view.get(origin, service)
    }

    /// (root hash, record count) of the view: equal views have equal roots.
    pub fn view_digest(&self) -> (u64, u64) {
        (self.view.root(), self.view.len())
    }

    pub fn imports(&self) -> &BTreeMap<ServiceKey, Arc<ImportedService>> {
        &self.imports
    }

    pub fn liveness(&self, cluster: &ClusterId) -> Liveness {
        self.clusters.liveness(cluster)
    }

    /// Members SWIM considers up, excluding this one.
    pub fn members_up(&self) -> Vec<MemberId> {
        self.members.iter().map(|m| m.member.clone()).collect()
    }

    /// Every remote member SWIM knows of, with its state, sorted by member: `Alive`,
    /// `Suspect` (still treated as up), or `Down` (including members foca has
    /// forgotten but this node remembers for last-chance probes).
    pub fn member_states(&self) -> Vec<(SwimIdentity, foca::State)> {
        let mut states: BTreeMap<MemberId, (SwimIdentity, foca::State)> = BTreeMap::new();
        for member in self.swim.iter_membership_state() {
            let identity = member.id().0.clone();
            states.insert(identity.member.clone(), (identity, member.state()));
        }
        for identity in self.members.down_identities() {
            states
                .entry(identity.member.clone())
                .or_insert_with(|| (identity.clone(), foca::State::Down));
        }
        states.into_values().collect()
    }

    /// Every cluster of the ClusterSet, this one included: the trust ring's.
    pub fn trusted_clusters(&self) -> impl Iterator<Item = &ClusterId> {
        self.trust.clusters()
    }

    /// No remote cluster is reachable: the view is served as stale.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    /// When a remote member was last heard from, as persisted: wall-clock milliseconds
    /// (0 when the driver gave no wall clock).
    pub fn last_contact_ms(&self) -> Option<u64> {
        self.last_contact_ms
    }

    /// Cheap structural checks, suitable after every event: O(log) in the state.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |what: String| InvariantViolation {
            member: self.config.member.clone(),
            what,
        };
        let own_max = self
            .view
            .origin(&self.config.member.cluster)
            .map_or(0, |o| o.max_version);
        if own_max > self.own_version && self.config.publisher {
            return Err(fail(format!(
                "own version {} behind own record {own_max}",
                self.own_version
            )));
        }
        if self.isolated == self.members.has_remote(&self.config.member.cluster) {
            return Err(fail("isolation flag disagrees with membership".into()));
        }
        if self.timers.len() > super::timers::TIMERS_MAX / 2 {
            return Err(fail(format!("{} timers pending", self.timers.len())));
        }
        Ok(())
    }

    /// Full checks: cluster liveness against replicas, every summary and every import.
    /// O(clusters + view).
    pub fn check_invariants_deep(&self) -> Result<(), InvariantViolation> {
        self.check_invariants()?;
        let fail = |what: String| InvariantViolation {
            member: self.config.member.clone(),
            what,
        };
        self.clusters.check().map_err(fail)?;
        self.view.check().map_err(fail)?;
        for import in self.imports.values() {
            if let Some(source) = import
                .sources
                .iter()
                .find(|s| !self.clusters.liveness(s.cluster()).imported())
            {
                let what = format!(
                    "withdrawn {} still exports {}",
                    source.cluster(),
                    import.service
                );
                return Err(fail(what));
            }
        }
        let services: BTreeSet<&ServiceKey> = self.view.iter().map(|r| &r.record.service).collect();
        for service in services {
            if self.dirty_imports.contains(service) || self.patched_imports.contains(service) {
                continue;
            }
            if self.derive_import(service).as_ref() != self.imports.get(service).map(|i| &**i) {
                return Err(fail(format!("import of {service} is out of date")));
            }
        }
        Ok(())
    }
}
