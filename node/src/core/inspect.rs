//! What a node shows of itself: identity, view, imports, liveness, stats, and the
//! invariant checks the simulator runs after every event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

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
        self.imports.current()
    }

    pub fn liveness(&self, cluster: &ClusterId) -> Liveness {
        self.clusters.liveness(cluster)
    }

    /// The smoothed round trip to each remote cluster measured so far (SWIM's direct
    /// probes), in cluster order: what affinity `nearest` ranks origins by.
    pub fn round_trips(&self) -> impl Iterator<Item = (&ClusterId, Duration)> {
        self.traffic.rtt.iter()
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
            // A member of a cluster outside the ClusterSet, named by a peer's gossip, is
            // no member: it is counted (`untrusted_members`), never listed.
            if !self.trust.contains(&identity.member.cluster) {
                continue;
            }
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
        for import in self.imports.current().values() {
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
            if !import.sources.is_empty() && !import.sources.iter().any(|s| s.active) {
                let what = format!("no origin of {} is active", import.service);
                return Err(fail(what));
            }
        }
        // Each import is what an index built afresh from the live exports holds: the
        // incremental path depends on no order of arrival.
        let services: BTreeSet<&ServiceKey> = self.view.iter().map(|r| &r.record.service).collect();
        for service in services {
            if self.imports.is_pending(service) {
                continue;
            }
            let live = self.clusters.imported(self.view.service_records(service));
            self.imports.check(service, live).map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use foca::{Foca, Member};
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;
    use shoal_proto::wire::Channel;
    use shoal_proto::{ClusterKey, KeyRing, Message, NetAddr, ReplicaId};

    use super::super::command::PersistedState;
    use super::super::membership::{SwimCodec, SwimId, SwimOutput, foca_config};
    use super::super::time::Time;
    use super::*;

    fn key(cluster: &str) -> ClusterKey {
        ClusterKey::from_seed(ClusterId::new(cluster).unwrap(), [cluster.len() as u8; 32])
    }

    fn ring(names: &[&str]) -> KeyRing {
        let mut ring = KeyRing::new();
        for name in names {
            ring.insert(ClusterId::new(*name).unwrap(), key(name).public())
                .unwrap();
        }
        ring
    }

    fn id(cluster: &str, octet: u8, ring: &KeyRing) -> SwimId {
        let identity = SwimIdentity {
            member: MemberId {
                cluster: ClusterId::new(cluster).unwrap(),
                replica: ReplicaId(0),
            },
            addr: NetAddr::from(std::net::SocketAddr::from(([127, 0, 0, octet], 7946))),
            generation: 1,
        };
        SwimId::new(identity, ring)
    }

    /// A peer whose ClusterSet directory is wider gossips a member of a cluster outside
    /// this node's: it is counted, and never listed among the members.
    #[test]
    fn a_member_named_by_gossip_outside_the_clusterset_is_never_listed() {
        let trust = ring(&["east", "west"]);
        let wider = ring(&["east", "west", "mallory"]);
        let (east, west) = (id("east", 1, &trust), id("west", 2, &wider));
        let config = Config::wan(east.0.member.clone(), east.0.addr, 3);
        let mut node = Node::new(
            config,
            key("east"),
            trust.clone(),
            Time::ZERO,
            7,
            PersistedState::default(),
        )
        .unwrap();
        let mut west_swim = Foca::new(
            west.clone(),
            foca_config(&Config::wan(west.0.member.clone(), west.0.addr, 3)),
            ChaCha8Rng::seed_from_u64(9),
            SwimCodec::new(Arc::new(wider.clone())),
        );
        let mut out = SwimOutput::default();
        let updates = [
            Member::alive(east.clone()),
            Member::alive(id("mallory", 3, &wider)),
        ];
        west_swim
            .apply_many(updates.into_iter(), true, &mut out)
            .unwrap();
        west_swim.gossip(&mut out).unwrap();
        let (_, packet) = out.sends.into_iter().find(|(to, _)| *to == east).unwrap();
        let bytes = Message::Swim(packet).encode().unwrap();
        node.handle_packet(
            Time::from_millis(1_000),
            &west.0.member,
            Channel::Datagram,
            &bytes,
        );

        assert_eq!(node.stats().untrusted_members, 1);
        let listed: Vec<String> = node
            .member_states()
            .iter()
            .map(|(identity, _)| identity.member.cluster.to_string())
            .collect();
        assert_eq!(listed, ["west"]);
    }
}
