//! A minimal driver for core tests: nodes, a fixed one-way delay, and timers. The
//! real driver for protocol experiments is the simulator (`shoal-sim`); this one only
//! exists so core tests can watch a few nodes talk.
#![allow(dead_code, clippy::unwrap_used, clippy::type_complexity)]

use std::collections::{BTreeMap, BTreeSet};

use shoal_node::core::{Command, Config, ExportSpec, Node, PersistedState, Time};
use shoal_proto::wire::Channel;
use shoal_proto::{
    ClusterId, ClusterKey, Endpoint, EndpointConditions, IpAddress, KeyRing, MemberId, NetAddr,
    NetworkMode, PortProtocol, ReplicaId, ServiceKey, ServicePort, ServiceProperties, ServiceType,
};

pub fn cluster(name: &str) -> ClusterId {
    ClusterId::new(name).unwrap()
}

pub fn member(name: &str, replica: u16) -> MemberId {
    MemberId {
        cluster: cluster(name),
        replica: ReplicaId(replica),
    }
}

pub fn addr(i: u8) -> NetAddr {
    NetAddr::from(std::net::SocketAddr::from(([127, 0, 0, i], 7946)))
}

pub fn key(name: &str) -> ClusterKey {
    let mut seed = [0u8; 32];
    for (i, b) in name.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed[31] = 0x5a;
    ClusterKey::from_seed(cluster(name), seed)
}

pub fn ring(names: &[&str]) -> KeyRing {
    let mut ring = KeyRing::new();
    for name in names {
        ring.insert(cluster(name), key(name).public()).unwrap();
    }
    ring
}

pub fn service(name: &str) -> ServiceKey {
    ServiceKey::new("default", name).unwrap()
}

pub fn spec(name: &str, created_ms: u64, last_octet: u8) -> ExportSpec {
    ExportSpec {
        service: service(name),
        export_created_ms: created_ms,
        service_type: ServiceType::ClusterSetIp,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: PortProtocol::Tcp,
            port: 80,
            target_port: 80,
            app_protocol: None,
        }],
        endpoints: vec![Endpoint {
            addresses: vec![IpAddress::V4([10, 0, 0, last_octet])],
            conditions: EndpointConditions {
                ready: true,
                serving: true,
                terminating: false,
            },
            zone: Some("zone-a".into()),
            hostname: None,
        }],
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
    }
}

/// Nodes on a network with a fixed one-way delay, driven in time order.
pub struct Mesh {
    pub now: Time,
    pub nodes: BTreeMap<MemberId, Node>,
    pub stores: BTreeMap<MemberId, PersistedState>,
    pub down: BTreeSet<MemberId>,
    in_flight: BTreeMap<(Time, u64), (MemberId, MemberId, Channel, Vec<u8>)>,
    wakes: BTreeMap<MemberId, Time>,
    seq: u64,
    pub delay_us: u64,
    /// One-way delays between two clusters (either order) that differ from `delay_us`.
    pub cluster_delay_us: BTreeMap<(ClusterId, ClusterId), u64>,
    pub log: Vec<(MemberId, Command)>,
}

impl Mesh {
    /// Clusters `names`, each with `replicas` replicas; every node seeds from the first.
    pub fn new(names: &[&str], replicas: u16) -> Self {
        let mut mesh = Mesh {
            now: Time::from_millis(1),
            nodes: BTreeMap::new(),
            stores: BTreeMap::new(),
            down: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            wakes: BTreeMap::new(),
            seq: 0,
            delay_us: 2_000,
            cluster_delay_us: BTreeMap::new(),
            log: Vec::new(),
        };
        let trust = ring(names);
        let total = names.len() as u32 * u32::from(replicas);
        let mut i = 0u8;
        for name in names {
            for r in 0..replicas {
                i += 1;
                let m = member(name, r);
                let mut config = Config::lan(m.clone(), addr(i), total);
                config.publisher = r == 0;
                if m != member(names[0], 0) {
                    config.seeds = vec![shoal_node::core::Seed {
                        member: member(names[0], 0),
                        addr: addr(1),
                    }];
                }
                let node = Node::new(
                    config,
                    key(name),
                    trust.clone(),
                    mesh.now,
                    u64::from(i),
                    PersistedState::default(),
                )
                .unwrap();
                mesh.stores.insert(m.clone(), PersistedState::default());
                mesh.nodes.insert(m.clone(), node);
                mesh.drain(&m);
            }
        }
        mesh
    }

    pub fn node(&mut self, m: &MemberId) -> &mut Node {
        self.nodes.get_mut(m).unwrap()
    }

    pub fn export(&mut self, m: &MemberId, spec: ExportSpec) {
        let now = self.now;
        self.node(m).handle_export(now, spec).unwrap();
        self.drain(m);
    }

    /// Carries out a node's commands: persistence into its store, sends into flight.
    pub fn drain(&mut self, m: &MemberId) {
        let commands = self.nodes.get_mut(m).unwrap().take_commands();
        for command in commands {
            match &command {
                Command::Persist { ops, .. } => {
                    let store = self.stores.get_mut(m).unwrap();
                    ops.iter().for_each(|op| store.apply(op));
                }
                Command::Send {
                    to, channel, bytes, ..
                } => {
                    self.seq += 1;
                    let at = Time::from_micros(self.now.as_micros() + self.delay(m, to));
                    self.in_flight.insert(
                        (at, self.seq),
                        (m.clone(), to.clone(), *channel, bytes.clone()),
                    );
                }
                Command::SetTimer { at } => {
                    self.wakes.insert(m.clone(), *at);
                }
                Command::ApplyImports { .. } | Command::Notify(_) => {}
            }
            self.log.push((m.clone(), command));
        }
    }

    /// Sets the one-way delay between clusters `a` and `b`, both ways.
    pub fn set_cluster_delay_ms(&mut self, a: &str, b: &str, ms: u64) {
        let (a, b) = (cluster(a), cluster(b));
        let pair = if a < b { (a, b) } else { (b, a) };
        self.cluster_delay_us.insert(pair, ms * 1_000);
    }

    fn delay(&self, from: &MemberId, to: &MemberId) -> u64 {
        let (a, b) = (from.cluster.clone(), to.cluster.clone());
        let pair = if a < b { (a, b) } else { (b, a) };
        self.cluster_delay_us
            .get(&pair)
            .copied()
            .unwrap_or(self.delay_us)
    }

    /// Stops a node (a crash): it loses nothing it persisted.
    pub fn kill(&mut self, m: &MemberId) {
        self.down.insert(m.clone());
        self.wakes.remove(m);
    }

    /// Restarts a node from its store.
    pub fn restart(&mut self, m: &MemberId) {
        let old = self.nodes.get(m).unwrap();
        let config = old.config().clone();
        let trust = ring(
            &self
                .nodes
                .keys()
                .map(|m| m.cluster.as_str().to_owned())
                .collect::<BTreeSet<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let store = self.stores[m].clone();
        let node = Node::new(config, key(m.cluster.as_str()), trust, self.now, 99, store).unwrap();
        self.nodes.insert(m.clone(), node);
        self.down.remove(m);
        self.drain(m);
    }

    /// Runs until `until`, delivering messages and firing timers in time order.
    pub fn run_until(&mut self, until: Time) {
        loop {
            let next_msg = self.in_flight.keys().next().map(|(t, _)| *t);
            let next_wake = self.wakes.iter().map(|(m, t)| (*t, m.clone())).min();
            let take_msg = match (next_msg, &next_wake) {
                (Some(a), Some((b, _))) => a <= *b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if take_msg {
                next_msg.unwrap()
            } else {
                next_wake.as_ref().unwrap().0
            };
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            if take_msg {
                let (_, (from, to, channel, bytes)) = self.in_flight.pop_first().unwrap();
                if self.down.contains(&to) || self.down.contains(&from) {
                    continue;
                }
                let now = self.now;
                self.node(&to).handle_packet(now, &from, channel, &bytes);
                self.drain(&to);
            } else {
                let m = next_wake.unwrap().1;
                self.wakes.remove(&m);
                let now = self.now;
                self.node(&m).handle_timeout(now);
                self.drain(&m);
            }
            for node in self.nodes.values() {
                node.check_invariants().unwrap();
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for_ms(&mut self, ms: u64) {
        let until = Time::from_micros(self.now.as_micros() + ms * 1_000);
        self.run_until(until);
    }
}

/// A lone `east` replica 0 (a publisher) in a ring of east, west and south, its start
/// commands taken.
pub fn lone_east(publisher: bool) -> Node {
    let mut config = Config::lan(member("east", 0), addr(1), 3);
    config.publisher = publisher;
    let mut node = Node::new(
        config,
        key("east"),
        ring(&["east", "west", "south"]),
        Time::from_millis(1),
        7,
        PersistedState::default(),
    )
    .unwrap();
    node.take_commands();
    node
}

/// The runtime's identity and transport for `east` replica `replica`, from the
/// certificates in `ca` and `set`, on a free loopback port.
pub async fn east_transport(
    config: &shoal_node::runtime::config::RuntimeConfig,
    ca: &std::path::Path,
    set: &std::path::Path,
    replica: u16,
) -> (
    std::sync::Arc<shoal_node::runtime::certs::ClusterIdentity>,
    shoal_node::runtime::transport::Transport,
    shoal_node::runtime::transport::InboundQueue,
) {
    use shoal_node::runtime::certs::ClusterIdentity;
    use shoal_node::runtime::transport::{Transport, TransportConfig};
    let identity = std::sync::Arc::new(
        ClusterIdentity::load(
            &ca.join("ca.crt"),
            &set.join("east.crt"),
            &set.join("east.key"),
            set,
        )
        .unwrap(),
    );
    let (transport, inbound) = Transport::bind(TransportConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        local: MemberId {
            cluster: cluster("east"),
            replica: ReplicaId(replica),
        },
        identity: std::sync::Arc::clone(&identity),
        limits: config.transport_limits(),
        chaos_enabled: false,
    })
    .await
    .unwrap();
    (identity, transport, inbound)
}
