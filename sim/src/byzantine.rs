//! Byzantine members: clusters whose nodes run the normal core (they take part in
//! SWIM and gossip honestly) while the simulator injects extra messages on their
//! behalf, as a compromised cluster could.
//!
//! - The **forger** pushes records that claim another origin: signed with its own key
//!   (`ClusterKey::sign_unchecked`), or a genuine record with altered contents under
//!   its original signature. Verification must reject both.
//! - The **replayer** keeps old records it has seen and pushes them again later, once
//!   they are stale. Merging must drop them.
//! - The **equivocator** signs, for its own origin, a second record with the same
//!   version as one it just published, and sends it to other peers than the first.
//!   Both are authentic, so no view may hold anything unsigned; but there is no single
//!   latest record, so convergence leaves this origin out.

use std::sync::Arc;

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use shoal_proto::{
    ClusterKey, Endpoint, EndpointConditions, ExportRecord, IpAddress, Message, NetworkMode,
    PortProtocol, ServicePort, ServiceProperties, ServiceType, SignedRecord,
};

use crate::keyspace::KeySpace;
use crate::topology::Topology;

/// Old records the replayer remembers.
pub const SEEN_MAX: usize = 256;
/// Nodes each forged or replayed push goes to.
const TARGETS_PER_INJECTION: usize = 3;

/// Which clusters misbehave, and how. Cluster indexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub forger: Option<usize>,
    pub replayer: Option<usize>,
    pub equivocator: Option<usize>,
}

impl Roles {
    pub fn is_byzantine(&self, cluster: usize) -> bool {
        [self.forger, self.replayer, self.equivocator].contains(&Some(cluster))
    }
}

/// One message a byzantine node sends outside its core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    pub from: usize,
    pub to: usize,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Byzantine {
    pub roles: Roles,
    seen: Vec<Arc<SignedRecord>>,
    seen_next: usize,
    pub forged_sent: u64,
    pub replayed_sent: u64,
    pub equivocations_sent: u64,
}

impl Byzantine {
    pub fn new(roles: Roles) -> Self {
        Self {
            roles,
            ..Self::default()
        }
    }

    /// A record entered the view of a node of `cluster`: the replayer remembers it.
    pub fn observe(&mut self, cluster: usize, record: &Arc<SignedRecord>) {
        if self.roles.replayer != Some(cluster) {
            return;
        }
        if self.seen.len() < SEEN_MAX {
            self.seen.push(Arc::clone(record));
        } else {
            self.seen[self.seen_next] = Arc::clone(record);
            self.seen_next = (self.seen_next + 1) % SEEN_MAX;
        }
    }

    /// Forged records for a random victim, pushed to a few random nodes.
    /// `latest(index)` is the victim's latest genuine record for a key.
    pub fn forge<'a>(
        &mut self,
        rng: &mut ChaCha8Rng,
        topo: &Topology,
        keys: &KeySpace,
        latest: impl Fn(usize) -> Option<&'a Arc<SignedRecord>>,
    ) -> Vec<Injection> {
        let Some(forger) = self.roles.forger else {
            return Vec::new();
        };
        let victim = rng.random_range(0..topo.clusters.len());
        if victim == forger {
            return Vec::new();
        }
        let service = rng.random_range(0..keys.services().len());
        let index = victim * keys.services().len() + service;
        let genuine = latest(index);
        let forged = match genuine {
            Some(g) if rng.random_bool(0.5) => tamper(g),
            _ => {
                let version = genuine.map_or(0, |g| g.record.version) + rng.random_range(1..4);
                let record = ExportRecord {
                    origin: topo.clusters[victim].id.clone(),
                    service: keys.services()[service].clone(),
                    version,
                    export_created_ms: 0,
                    published_ms: 0,
                    service_type: ServiceType::ClusterSetIp,
                    ports: vec![http_port()],
                    endpoints: vec![attacker_endpoint(6, rng.random())],
                    network: NetworkMode::Flat,
                    properties: ServiceProperties::default(),
                    tombstone: false,
                };
                topo.clusters[forger].key.sign_unchecked(record)
            }
        };
        self.forged_sent += 1;
        spray(rng, topo, forger, &forged)
    }

    /// An old record pushed again to a few random nodes.
    pub fn replay(&mut self, rng: &mut ChaCha8Rng, topo: &Topology) -> Vec<Injection> {
        let Some(replayer) = self.roles.replayer else {
            return Vec::new();
        };
        if self.seen.is_empty() {
            return Vec::new();
        }
        let old = Arc::clone(&self.seen[rng.random_range(0..self.seen.len())]);
        self.replayed_sent += 1;
        spray(rng, topo, replayer, &old)
    }

    /// The equivocator just published `record`: sign another with the same version
    /// and send it to the gateways of a random half of the other clusters.
    pub fn equivocate(
        &mut self,
        rng: &mut ChaCha8Rng,
        topo: &Topology,
        record: &SignedRecord,
    ) -> Vec<Injection> {
        let Some(eq) = self.roles.equivocator else {
            return Vec::new();
        };
        if record.record.tombstone || topo.cluster_index(&record.record.origin) != Some(eq) {
            return Vec::new();
        }
        let mut twin = record.record.clone();
        twin.endpoints.push(attacker_endpoint(7, rng.random()));
        let key: &ClusterKey = &topo.clusters[eq].key;
        let Ok(twin) = key.sign(twin) else {
            return Vec::new();
        };
        let bytes = push_bytes(twin.get());
        self.equivocations_sent += 1;
        let from = topo.publisher_of(eq);
        (0..topo.clusters.len())
            .filter(|c| *c != eq && rng.random_bool(0.5))
            .map(|c| Injection {
                from,
                to: topo.publisher_of(c),
                bytes: bytes.clone(),
            })
            .collect()
    }
}

/// A genuine record with other endpoints, an attacker's label and a higher version,
/// under its old signature.
fn tamper(genuine: &SignedRecord) -> SignedRecord {
    let mut tampered = genuine.clone();
    tampered.record.version += 1;
    tampered.record.tombstone = false;
    tampered.record.ports = vec![http_port()];
    tampered.record.endpoints = vec![attacker_endpoint(6, 66)];
    let labels = &mut tampered.record.properties.exported_labels;
    labels.insert("attacker".to_owned(), "yes".to_owned());
    tampered
}

fn spray(
    rng: &mut ChaCha8Rng,
    topo: &Topology,
    cluster: usize,
    record: &SignedRecord,
) -> Vec<Injection> {
    let bytes = push_bytes(record);
    let from = topo.publisher_of(cluster);
    (0..TARGETS_PER_INJECTION)
        .map(|_| rng.random_range(0..topo.nodes()))
        .filter(|to| topo.cluster_of(*to) != cluster)
        .map(|to| Injection {
            from,
            to,
            bytes: bytes.clone(),
        })
        .collect()
}

fn push_bytes(record: &SignedRecord) -> Vec<u8> {
    Message::Push {
        records: vec![record.clone()],
        relay: true,
    }
    .encode()
    .expect("one record fits a frame")
}

fn http_port() -> ServicePort {
    ServicePort {
        name: "http".into(),
        protocol: PortProtocol::Tcp,
        port: 80,
        target_port: 80,
        app_protocol: None,
    }
}

fn attacker_endpoint(first_octet: u8, last: u8) -> Endpoint {
    Endpoint {
        addresses: vec![IpAddress::V4([first_octet, first_octet, first_octet, last])],
        conditions: EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        },
        zone: None,
        hostname: None,
    }
}
