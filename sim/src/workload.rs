//! The exports every cluster's publisher feeds its core, and how they change.
//!
//! Each cluster exports `services` services with `endpoints` endpoints each. All but
//! one service name are shared by every cluster, so imports merge across the
//! ClusterSet; the last one is one of three `extra-*` names, so some services are
//! exported by only some clusters. A few clusters declare a conflicting port, and a
//! few others conflicting properties (session affinity, traffic distribution and an
//! exported label): the MCS rules keep their endpoints and mark the conflict. At
//! random times (exponential gaps) a cluster changes one export: an endpoint is
//! replaced, changes readiness, or is added or removed; now and then a service is
//! unexported, and exported again later.
//!
//! The `affinity` scenario adds one service per traffic policy (`local`, `remote`,
//! `nearest`), exported by the clusters its plan names. Random changes never touch
//! them: only the scenario's actions do, turning all of a cluster's endpoints of one
//! such service not ready and ready again ([`Workload::set_ready`]).

use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use shoal_node::core::ExportSpec;
use shoal_proto::{
    Affinity, Endpoint, EndpointConditions, InternalTrafficPolicy, IpAddress, IpFamily,
    NetworkMode, PortProtocol, ServiceKey, ServicePort, ServiceProperties, ServiceType,
    SessionAffinity,
};

use crate::spec::RunSpec;

/// Names of services that only some clusters export.
const EXTRA_NAMES: usize = 3;
/// Unix milliseconds around which exports were created.
const EXPORT_EPOCH_MS: u64 = 1_700_000_000_000;
/// Share of changes that unexport (or export again) a whole service.
const UNEXPORT_SHARE: f64 = 0.05;
/// Share of clusters whose first service declares a conflicting port.
const PORT_CONFLICT_SHARE: f64 = 0.1;
/// Share of clusters whose first service declares conflicting properties.
const PROPERTY_CONFLICT_SHARE: f64 = 0.1;

/// The `affinity` scenario's services: one per traffic policy other than `none`.
pub const AFFINITY_SERVICES: [(&str, Affinity); 3] = [
    ("affinity-local", Affinity::Local),
    ("affinity-remote", Affinity::Remote),
    ("affinity-nearest", Affinity::Nearest),
];

/// One change a publisher must feed its core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Export(ExportSpec),
    Unexport(ServiceKey),
}

#[derive(Clone, Debug)]
struct Entry {
    spec: ExportSpec,
    exported: bool,
}

/// The desired exports of every cluster (what its Kubernetes API says).
#[derive(Clone, Debug)]
pub struct Workload {
    services: Vec<ServiceKey>,
    clusters: Vec<Vec<Entry>>,
    endpoints: usize,
    next_octet: Vec<u32>,
    /// [cluster]: how many of its entries (the first ones) change at random; the rest
    /// are the affinity services.
    random_entries: Vec<usize>,
    /// [cluster][affinity service]: its entry, if the cluster exports it.
    affinity_entries: Vec<Vec<Option<usize>>>,
    /// Mean time between two changes of one cluster's exports, in microseconds.
    pub change_mean_us: u64,
}

impl Workload {
    pub fn new(spec: &RunSpec, change_mean_us: u64, rng: &mut ChaCha8Rng) -> Self {
        let shared = spec.services.saturating_sub(1).max(1);
        let mut services: Vec<ServiceKey> =
            (0..shared).map(|i| service(&format!("svc-{i}"))).collect();
        if spec.services > 1 {
            services.extend((0..EXTRA_NAMES).map(|i| service(&format!("extra-{i}"))));
        }
        let mut workload = Workload {
            services,
            clusters: Vec::with_capacity(spec.clusters),
            endpoints: spec.endpoints,
            next_octet: vec![0; spec.clusters],
            random_entries: Vec::with_capacity(spec.clusters),
            affinity_entries: vec![Vec::new(); spec.clusters],
            change_mean_us,
        };
        for c in 0..spec.clusters {
            let mut names: Vec<usize> = (0..shared).collect();
            if spec.services > 1 {
                names.push(shared + rng.random_range(0..EXTRA_NAMES));
            }
            let conflict = rng.random_bool(PORT_CONFLICT_SHARE);
            let differs = rng.random_bool(PROPERTY_CONFLICT_SHARE);
            let entries = names
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let port = if conflict && i == 0 { 8080 } else { 80 };
                    let created = EXPORT_EPOCH_MS + rng.random_range(0..1_000_000);
                    let mut spec = workload.fresh_spec(c, s, port, created);
                    spec.properties = properties(differs && i == 0);
                    Entry {
                        spec,
                        exported: true,
                    }
                })
                .collect::<Vec<Entry>>();
            workload.random_entries.push(entries.len());
            workload.clusters.push(entries);
        }
        workload
    }

    /// Adds the [`AFFINITY_SERVICES`]: `exporters[k][c]` says whether cluster `c`
    /// exports service `k`, with every endpoint ready. Random changes leave them alone.
    pub fn add_affinity_services(&mut self, exporters: &[Vec<bool>]) {
        for (k, (name, affinity)) in AFFINITY_SERVICES.iter().enumerate() {
            let s = self.services.len();
            self.services.push(service(name));
            for c in 0..self.clusters.len() {
                let exports = exporters.get(k).and_then(|e| e.get(c)).copied();
                let slot = self.affinity_entries[c].len();
                self.affinity_entries[c].push(None);
                if exports != Some(true) {
                    continue;
                }
                let mut spec = self.fresh_spec(c, s, 80, EXPORT_EPOCH_MS + c as u64);
                spec.properties.affinity = *affinity;
                self.affinity_entries[c][slot] = Some(self.clusters[c].len());
                self.clusters[c].push(Entry {
                    spec,
                    exported: true,
                });
            }
        }
    }

    /// The index (in [`Workload::services`]) of affinity service `k`, if added.
    pub fn affinity_service(&self, k: usize) -> Option<usize> {
        let first = self.services.len().checked_sub(AFFINITY_SERVICES.len())?;
        let added = self.affinity_entries.first().is_some_and(|e| e.len() > k);
        added.then_some(first + k)
    }

    /// Whether `cluster` exports affinity service `k`, and whether it has a ready
    /// endpoint: (exported, ready).
    pub fn affinity_state(&self, cluster: usize, k: usize) -> (bool, bool) {
        let Some(i) = self.affinity_entry(cluster, k) else {
            return (false, false);
        };
        let entry = &self.clusters[cluster][i];
        let ready = entry.spec.endpoints.iter().any(|e| e.conditions.ready);
        (entry.exported, entry.exported && ready)
    }

    /// Every endpoint of `cluster`'s affinity service `k` becomes ready (or not
    /// ready): the export to feed, if the cluster exports it.
    pub fn set_ready(&mut self, cluster: usize, k: usize, ready: bool) -> Option<Change> {
        let i = self.affinity_entry(cluster, k)?;
        let entry = &mut self.clusters[cluster][i];
        for e in &mut entry.spec.endpoints {
            e.conditions.ready = ready;
            e.conditions.serving = ready;
        }
        Some(Change::Export(entry.spec.clone()))
    }

    fn affinity_entry(&self, cluster: usize, k: usize) -> Option<usize> {
        self.affinity_entries
            .get(cluster)?
            .get(k)
            .copied()
            .flatten()
    }

    /// Every service name any cluster may export.
    pub fn services(&self) -> &[ServiceKey] {
        &self.services
    }

    /// The whole desired state of one cluster, as a publisher feeds it at start.
    pub fn current(&self, cluster: usize) -> Vec<Change> {
        self.clusters[cluster]
            .iter()
            .map(|e| match e.exported {
                true => Change::Export(e.spec.clone()),
                false => Change::Unexport(e.spec.service.clone()),
            })
            .collect()
    }

    /// Changes one of `cluster`'s exports at random and returns the change.
    pub fn mutate(&mut self, rng: &mut ChaCha8Rng, cluster: usize) -> Change {
        let i = rng.random_range(0..self.random_entries[cluster]);
        let toggle = rng.random_bool(UNEXPORT_SHARE);
        let entry = &mut self.clusters[cluster][i];
        if toggle && entry.exported {
            entry.exported = false;
            return Change::Unexport(entry.spec.service.clone());
        }
        let mut endpoints = entry.spec.endpoints.clone();
        let exported = entry.exported;
        if exported {
            self.change_endpoints(rng, cluster, &mut endpoints);
        }
        let entry = &mut self.clusters[cluster][i];
        entry.exported = true;
        entry.spec.endpoints = endpoints;
        Change::Export(entry.spec.clone())
    }

    /// The gap before a cluster's next change: exponential around the mean.
    pub fn next_gap_us(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        ((-u.ln()) * self.change_mean_us as f64) as u64 + 1
    }

    fn change_endpoints(&mut self, rng: &mut ChaCha8Rng, cluster: usize, eps: &mut Vec<Endpoint>) {
        let roll = rng.random_range(0..10);
        let k = rng.random_range(0..eps.len().max(1));
        if eps.is_empty() || (roll < 2 && eps.len() < 2 * self.endpoints) {
            let e = self.endpoint(cluster);
            eps.push(e);
        } else if roll < 4 && eps.len() > 1 {
            eps.remove(k);
        } else if roll < 7 {
            eps[k].conditions.ready = !eps[k].conditions.ready;
            eps[k].conditions.serving = eps[k].conditions.ready;
        } else {
            eps[k] = self.endpoint(cluster);
        }
    }

    fn fresh_spec(
        &mut self,
        cluster: usize,
        service: usize,
        port: u16,
        created: u64,
    ) -> ExportSpec {
        ExportSpec {
            service: self.services[service].clone(),
            export_created_ms: created,
            service_type: ServiceType::ClusterSetIp,
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: PortProtocol::Tcp,
                port,
                target_port: port,
                app_protocol: None,
            }],
            endpoints: (0..self.endpoints)
                .map(|_| self.endpoint(cluster))
                .collect(),
            network: NetworkMode::Flat,
            properties: properties(false),
        }
    }

    /// A new pod address in the cluster's range 10.x.y.0/24 (cycling through it).
    fn endpoint(&mut self, cluster: usize) -> Endpoint {
        let octet = self.next_octet[cluster];
        self.next_octet[cluster] = (octet + 1) % 250;
        Endpoint {
            addresses: vec![IpAddress::V4([
                10,
                ((cluster >> 8) & 255) as u8,
                (cluster & 255) as u8,
                (octet + 1) as u8,
            ])],
            conditions: EndpointConditions {
                ready: true,
                serving: true,
                terminating: false,
            },
            zone: Some("zone-a".into()),
            hostname: None,
        }
    }
}

/// What every cluster declares for a service, or (`differing`) a variant that is in
/// conflict with it on session affinity, its config, the traffic distribution and an
/// exported label.
fn properties(differing: bool) -> ServiceProperties {
    let part_of = if differing { "sim-other" } else { "sim" };
    let mut properties = ServiceProperties {
        ip_families: vec![IpFamily::Ipv4],
        internal_traffic_policy: Some(InternalTrafficPolicy::Cluster),
        exported_labels: [("app.kubernetes.io/part-of".to_owned(), part_of.to_owned())].into(),
        ..ServiceProperties::default()
    };
    if differing {
        properties.session_affinity = SessionAffinity::ClientIp;
        properties.client_ip_timeout_seconds = Some(10_800);
        properties.traffic_distribution = Some("PreferClose".to_owned());
    }
    properties
}

fn service(name: &str) -> ServiceKey {
    ServiceKey::new("default", name).expect("workload names are DNS labels")
}
