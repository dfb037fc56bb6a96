//! The real driver with the in-memory backend, on paused time: what a backend's events
//! make the core do, and what the driver asks the backend to write.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_node::core::ExportSpec;
use shoal_node::runtime::api::{ApiRequest, ServiceView, StatusView};
use shoal_node::runtime::backend::memory::{MemoryBackend, MemoryHandle, Written};
use shoal_node::runtime::backend::{ExportInvalid, ExportSet};
use shoal_node::runtime::certs::{self, ClusterIdentity};
use shoal_node::runtime::config;
use shoal_node::runtime::driver::Driver;
use shoal_node::runtime::transport::{Transport, TransportConfig};
use shoal_proto::{
    ClusterId, Endpoint, EndpointConditions, IpAddress, MemberId, NetworkMode, PortProtocol,
    ReplicaId, ServiceKey, ServicePort, ServiceProperties, ServiceType,
};
use tokio::sync::{mpsc, oneshot};

/// Virtual time a condition may take (time is paused: waiting costs nothing).
const WAIT: Duration = Duration::from_secs(30);

fn web() -> ServiceKey {
    ServiceKey::new("shop", "web").unwrap()
}

fn spec(octet: u8) -> ExportSpec {
    ExportSpec {
        service: web(),
        export_created_ms: 1,
        service_type: ServiceType::ClusterSetIp,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: PortProtocol::Tcp,
            port: 80,
            target_port: 8080,
            app_protocol: None,
        }],
        endpoints: vec![Endpoint {
            addresses: vec![IpAddress::V4([10, 0, 0, octet])],
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
    }
}

fn exports(specs: &[ExportSpec]) -> ExportSet {
    specs
        .iter()
        .map(|s| (s.service.clone(), Ok(s.clone())))
        .collect()
}

/// A running driver for cluster `east`, replica 1 (not the publisher by config).
struct Running {
    handle: MemoryHandle,
    api: mpsc::Sender<ApiRequest>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

fn config_text(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "cluster = \"east\"\nreplica = 1\npreset = \"lan\"\nlisten = \"127.0.0.1:0\"\n\
         data_dir = \"{d}/data\"\n\n[tls]\nca = \"{d}/ca/ca.crt\"\ncert = \"{d}/set/east.crt\"\n\
         key = \"{d}/set/east.key\"\nclusterset_dir = \"{d}/set\"\n\n[backend]\n\
         kind = \"standalone\"\ndir = \"{d}/standalone\"\n"
    )
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    certs::init_ca(&dir.path().join("ca"), 30).unwrap();
    let east = ClusterId::new("east").unwrap();
    certs::issue(&dir.path().join("ca"), &east, &dir.path().join("set"), 30).unwrap();
    start_in(dir).await
}

/// Starts the driver on the certificates and store already in `dir`.
async fn start_in(dir: tempfile::TempDir) -> Running {
    let ca = dir.path().join("ca");
    let set = dir.path().join("set");
    let config = config::parse(&config_text(dir.path()), Vec::new()).unwrap();
    assert!(
        !config.core.publisher,
        "replica 1 does not publish by config"
    );
    let (identity, transport, inbound) = support::east_transport(&config, &ca, &set, 1).await;
    let (backend, handle) = MemoryBackend::new();
    let driver = Driver::start(config, identity, transport, inbound, backend).unwrap();
    let (api, api_rx) = mpsc::channel(8);
    let (stop, stop_rx) = oneshot::channel::<()>();
    // The core is not Send: the driver runs on this thread, as in `shoal run`.
    let task = tokio::task::spawn_local(async move {
        driver
            .run(api_rx, async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        handle,
        api,
        stop: Some(stop),
        task,
        dir,
    }
}

impl Running {
    /// Waits until what the driver wrote satisfies `condition`.
    async fn written(&self, what: &str, condition: impl Fn(&Written) -> bool) -> Written {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let written = self.handle.written();
            if condition(&written) {
                return written;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {WAIT:?}; last written: {written:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A resync through the backend's event queue: once it is written, every event
    /// queued before it has been handled.
    async fn settle(&self) -> Written {
        let before = self.handle.written().resyncs;
        self.handle.resync().await;
        self.written("the resync", |w| w.resyncs > before).await
    }

    async fn services(&self) -> Vec<ServiceView> {
        let (reply, rx) = oneshot::channel();
        self.api.send(ApiRequest::Services(reply)).await.unwrap();
        rx.await.unwrap()
    }

    async fn status(&self) -> StatusView {
        let (reply, rx) = oneshot::channel();
        self.api.send(ApiRequest::Status(reply)).await.unwrap();
        rx.await.unwrap()
    }

    /// Stops the driver cleanly and hands back its directory (store and certificates).
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
        self.dir
    }
}

fn imports_web(w: &Written) -> bool {
    w.imports.contains_key(&web())
}

#[tokio::test(start_paused = true)]
async fn a_follower_publishes_nothing_until_it_leads() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let node = start().await;
            let first = node.written("the start's resync", |w| w.resyncs >= 1).await;
            assert!(first.imports.is_empty());
            assert!(
                first.settled,
                "a ClusterSet of one cluster has nothing to wait for"
            );
            node.handle.set_exports(exports(&[spec(1)])).await;
            let after = node.settle().await;
            assert!(!imports_web(&after), "a follower publishes nothing");
            assert!(node.services().await.is_empty());
            assert!(!node.status().await.publisher);

            node.handle.set_leader(true).await;
            let led = node.written("the export imported", imports_web).await;
            let import = &led.imports[&web()];
            assert_eq!(import.sources.len(), 1);
            assert_eq!(
                import.sources.first().expect("a source").cluster().as_str(),
                "east"
            );
            assert_eq!(node.services().await.len(), 1);
            assert!(node.status().await.publisher);
            node.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn exports_follow_the_backend_and_stop_with_leadership() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let node = start().await;
            node.handle.set_leader(true).await;
            node.handle.set_exports(exports(&[spec(1)])).await;
            node.written("the export imported", imports_web).await;

            node.handle.set_exports(exports(&[spec(2)])).await;
            let changed = node
                .written("the endpoint change", |w| {
                    w.imports.get(&web()).is_some_and(|i| {
                        i.sources.first().expect("a source").record.record.endpoints[0].addresses[0]
                            == IpAddress::V4([10, 0, 0, 2])
                    })
                })
                .await;
            assert_eq!(changed.imports.len(), 1);

            // An export that turns invalid is unexported, as one that disappears is.
            let mut invalid = BTreeMap::new();
            invalid.insert(web(), Err(ExportInvalid::NoService("shop/web".into())));
            node.handle.set_exports(invalid).await;
            node.written("the invalid export withdrawn", |w| !imports_web(w))
                .await;

            node.handle.set_exports(exports(&[spec(3)])).await;
            node.written("exported again", imports_web).await;
            node.handle.set_leader(false).await;
            node.handle.set_exports(ExportSet::new()).await;
            let after = node.settle().await;
            assert!(
                imports_web(&after),
                "a replica that no longer leads unexports nothing: the new leader decides"
            );
            assert!(!node.status().await.publisher);
            node.stop().await;
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_leader_unexports_nothing_before_the_backend_has_read_its_exports() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let node = start().await;
            node.handle.set_leader(true).await;
            node.handle.set_exports(exports(&[spec(1)])).await;
            node.written("the export imported", imports_web).await;
            let dir = node.stop().await;

            let node = start_in(dir).await;
            node.handle.set_leader(true).await;
            // The backend has sent no export set yet (a cold cache, an API server down): a
            // resync must not read that as "nothing is exported".
            let restored = node.settle().await;
            assert!(imports_web(&restored), "the stored export stands");
            assert_eq!(node.services().await.len(), 1);
            // Once the backend has read its exports in full, what is gone is unexported.
            node.handle.set_exports(ExportSet::new()).await;
            node.written("the export withdrawn", |w| !imports_web(w))
                .await;
            node.stop().await;
        })
        .await;
}

/// Thousands of exports reported at once are fed a batch at a time: between batches
/// the driver answers its other inputs (here the API; SWIM and timers alike), and in
/// the end every export is published.
#[tokio::test(start_paused = true)]
async fn thousands_of_exports_at_once_are_fed_between_other_inputs() {
    const EXPORTS: usize = 2_000;
    tokio::task::LocalSet::new()
        .run_until(async {
            let node = start().await;
            node.handle.set_leader(true).await;
            let many: Vec<ExportSpec> = (0..EXPORTS)
                .map(|i| ExportSpec {
                    service: ServiceKey::new("load", &format!("svc-{i}")).unwrap(),
                    ..spec(1)
                })
                .collect();
            node.handle.set_exports(exports(&many)).await;
            let mut midway = Vec::new();
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let own = node.services().await.len();
                if own >= EXPORTS {
                    break;
                }
                if own > 0 {
                    midway.push(own);
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "not every export was published: {own} services"
                );
                tokio::task::yield_now().await;
            }
            assert!(
                !midway.is_empty(),
                "the API was answered while the exports were being fed"
            );
            assert!(midway.iter().all(|n| *n < EXPORTS), "{midway:?}");
            assert_eq!(node.services().await.len(), EXPORTS);
            node.written("every export imported", |w| w.imports.len() == EXPORTS)
                .await;
            node.stop().await;
        })
        .await;
}

/// The metrics the driver assembles show the transport's socket drops and quinn's
/// handshake counters: a datagram that cannot be QUIC, sent to the node's port, is
/// `shoal_rejects_total{reason="not_quic"}`, and each handshake outcome has its own
/// `shoal_transport_quic_handshakes_<outcome>_total` (all 0 for a ClusterSet of one).
#[tokio::test(start_paused = true)]
async fn metrics_count_datagrams_that_are_not_quic_and_quinns_handshakes() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let node = start().await;
            let listen: std::net::SocketAddr = node.status().await.listen.parse().unwrap();
            let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // A long header of a version no Shoal node speaks.
            let datagram = [0xc0, 0x1a, 0x2a, 0x3a, 0x4a, 0, 0];
            stray.send_to(&datagram, listen).unwrap();
            let deadline = tokio::time::Instant::now() + WAIT;
            let text = loop {
                let (reply, rx) = oneshot::channel();
                node.api.send(ApiRequest::Metrics(reply)).await.unwrap();
                let text = shoal_node::runtime::http::render_metrics(&rx.await.unwrap());
                if text.contains("shoal_rejects_total{reason=\"not_quic\"} 1\n") {
                    break text;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the stray datagram was never counted:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            for outcome in ["accepted", "outgoing", "refused", "ignored"] {
                let family = format!("shoal_transport_quic_handshakes_{outcome}_total");
                let declared = format!("# TYPE {family} counter\n");
                let sample = format!("\n{family} 0\n");
                assert!(
                    text.contains(&declared) && text.contains(&sample),
                    "no {family} in\n{text}"
                );
            }
            node.stop().await;
        })
        .await;
}

/// Two real drivers on loopback (real time): once west has joined, east's /metrics
/// carry the SWIM ack latency histogram for west, and its counters for suspicions.
mod swim_ack {
    use std::net::SocketAddr;

    use shoal_node::runtime::transport::TransportLimits;

    use super::*;

    /// East and west, each with its own data directory under `dir`.
    async fn start_cluster(
        dir: &Path,
        cluster: &str,
        seed: Option<SocketAddr>,
    ) -> (Started, SocketAddr) {
        let (ca, set) = (dir.join("ca"), dir.join("set"));
        let id = ClusterId::new(cluster).unwrap();
        let identity = Arc::new(
            ClusterIdentity::load(
                &ca.join("ca.crt"),
                &set.join(format!("{cluster}.crt")),
                &set.join(format!("{cluster}.key")),
                &set,
            )
            .unwrap(),
        );
        let (transport, inbound) = Transport::bind(TransportConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            local: MemberId {
                cluster: id,
                replica: ReplicaId(0),
            },
            identity: Arc::clone(&identity),
            limits: TransportLimits::default(),
            chaos_enabled: false,
        })
        .await
        .unwrap();
        let addr = transport.local_addr();
        let data = dir.join(format!("data-{cluster}"));
        let seeds = seed.map_or(String::new(), |at| {
            format!("[[seeds]]\ncluster = \"east\"\naddr = \"{at}\"\n")
        });
        let (d, data) = (dir.display(), data.display());
        let text = format!(
            "cluster = \"{cluster}\"\npreset = \"lan\"\nlisten = \"{addr}\"\n\
             data_dir = \"{data}\"\nmembers_expected = 2\n{seeds}\n[tls]\n\
             ca = \"{d}/ca/ca.crt\"\ncert = \"{d}/set/{cluster}.crt\"\n\
             key = \"{d}/set/{cluster}.key\"\nclusterset_dir = \"{d}/set\"\n\n[backend]\n\
             kind = \"standalone\"\ndir = \"{data}/standalone\"\n"
        );
        let config = config::parse(&text, Vec::new()).unwrap();
        let (backend, _handle) = MemoryBackend::new();
        let driver = Driver::start(config, identity, transport, inbound, backend).unwrap();
        let (api, api_rx) = mpsc::channel(8);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::task::spawn_local(async move {
            driver
                .run(api_rx, async move {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        (Started { api, stop, task }, addr)
    }

    /// A driver running on this thread, and how to stop it.
    struct Started {
        api: mpsc::Sender<ApiRequest>,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Started {
        async fn stop(self) {
            let _ = self.stop.send(());
            self.task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn east_exports_the_ack_latency_of_its_pings_to_west() {
        tokio::task::LocalSet::new()
            .run_until(async {
                let dir = tempfile::tempdir().unwrap();
                let ca = dir.path().join("ca");
                certs::init_ca(&ca, 30).unwrap();
                for cluster in ["east", "west"] {
                    let id = ClusterId::new(cluster).unwrap();
                    certs::issue(&ca, &id, &dir.path().join("set"), 30).unwrap();
                }
                let (east, east_addr) = start_cluster(dir.path(), "east", None).await;
                let (west, _) = start_cluster(dir.path(), "west", Some(east_addr)).await;
                let series = "shoal_swim_ack_seconds_count{cluster=\"west\",replica=\"0\"} ";
                let deadline = tokio::time::Instant::now() + WAIT;
                let text = loop {
                    let (reply, rx) = oneshot::channel();
                    east.api.send(ApiRequest::Metrics(reply)).await.unwrap();
                    let text = shoal_node::runtime::http::render_metrics(&rx.await.unwrap());
                    let acked = text
                        .lines()
                        .find_map(|l| l.strip_prefix(series))
                        .and_then(|n| n.parse::<u64>().ok());
                    if acked.is_some_and(|n| n >= 2) {
                        break text;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "east never timed two acks from west:\n{text}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                assert!(text.contains("# TYPE shoal_swim_ack_seconds histogram\n"));
                let inf =
                    "shoal_swim_ack_seconds_bucket{cluster=\"west\",replica=\"0\",le=\"+Inf\"} ";
                assert!(text.contains(inf), "{text}");
                for counter in [
                    "shoal_swim_acks_missed_total",
                    "shoal_suspicions_refuted_total",
                    "shoal_members_suspected_total",
                    "shoal_swim_pings_evicted_total",
                ] {
                    assert!(
                        text.contains(&format!("# TYPE {counter} counter\n")),
                        "no {counter} in\n{text}"
                    );
                }
                west.stop().await;
                east.stop().await;
            })
            .await;
    }
}
