//! Membership at the handshake: a certificate signed by the ClusterSet CA is not enough.
//! Only clusters in the trust ring (the certificates in `tls.clusterset_dir`), with the
//! very key the ring holds for them, complete a handshake, whichever side dials. A
//! refused handshake is counted as `not_member` and nothing from it is delivered; a
//! driver never lists the refused cluster as a peer.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal_node::runtime::api::{ApiRequest, MetricsSnapshot, PeerView};
use shoal_node::runtime::backend::memory::MemoryBackend;
use shoal_node::runtime::certs::{self, ClusterIdentity};
use shoal_node::runtime::config;
use shoal_node::runtime::driver::Driver;
use shoal_node::runtime::transport::{
    InboundQueue, Transport, TransportConfig, TransportLimits, TransportStats,
};
use shoal_proto::{Channel, ClusterId, MemberId, ReplicaId};
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// One ClusterSet CA, and directories of certificates issued by it.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        certs::init_ca(&ca, 30).unwrap();
        Self { dir, ca }
    }

    /// A ClusterSet directory `name` holding certificates (and keys) for `clusters`,
    /// each freshly issued (so with its own key), and the CA's certificate.
    fn set(&self, name: &str, clusters: &[&str]) -> PathBuf {
        let set = self.dir.path().join(name);
        for cluster in clusters {
            certs::issue(&self.ca, &cluster_id(cluster), &set, 30).unwrap();
        }
        std::fs::copy(self.ca.join("ca.crt"), set.join("ca.crt")).unwrap();
        set
    }

    /// Copies `cluster`'s certificate from the set `from` into the set `to`.
    fn share(&self, cluster: &str, from: &Path, to: &Path) {
        let file = format!("{cluster}.crt");
        std::fs::copy(from.join(&file), to.join(&file)).unwrap();
    }

    /// `cluster`'s identity from the set `set`, trusting what that set holds.
    fn identity(&self, cluster: &str, set: &Path) -> Arc<ClusterIdentity> {
        let identity = ClusterIdentity::load(
            &self.ca.join("ca.crt"),
            &set.join(format!("{cluster}.crt")),
            &set.join(format!("{cluster}.key")),
            set,
        )
        .unwrap();
        Arc::new(identity)
    }
}

fn cluster_id(name: &str) -> ClusterId {
    ClusterId::new(name).unwrap()
}

fn member(name: &str) -> MemberId {
    MemberId {
        cluster: cluster_id(name),
        replica: ReplicaId(0),
    }
}

fn limits() -> TransportLimits {
    TransportLimits {
        idle_timeout_ms: 10_000,
        keepalive_ms: 1_000,
        handshake_timeout_ms: 5_000,
        ..TransportLimits::default()
    }
}

async fn bind(name: &str, identity: Arc<ClusterIdentity>) -> (Transport, InboundQueue) {
    Transport::bind(TransportConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        local: member(name),
        identity,
        limits: limits(),
        chaos_enabled: false,
    })
    .await
    .unwrap()
}

fn reject(stats: &TransportStats, reason: &str) -> u64 {
    stats.rejects.get(reason).copied().unwrap_or(0)
}

/// Waits until `condition` holds on the transport's counters, or fails at the deadline.
async fn wait_stats(
    transport: &Transport,
    what: &str,
    condition: impl Fn(&TransportStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = transport.stats();
        if condition(&stats) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {stats:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Sends one stream frame and one datagram from `from` to `to` and checks both arrive.
async fn exchange(from: &Transport, to: &Transport, rx: &mut InboundQueue) {
    for (channel, bytes) in [
        (Channel::Stream, b"frame".to_vec()),
        (Channel::Datagram, b"datagram".to_vec()),
    ] {
        from.send(to.local(), to.local_addr(), channel, bytes.clone());
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a message within the deadline")
            .expect("the transport is running");
        assert_eq!(
            (got.from, got.channel, got.bytes),
            (from.local().clone(), channel, bytes)
        );
    }
}

/// Asserts `transport` accepted no connection and delivered nothing.
fn assert_untouched(transport: &Transport, rx: &mut InboundQueue) {
    let stats = transport.stats();
    assert_eq!(stats.connections_accepted, 0, "{stats:#?}");
    assert_eq!(stats.datagrams_received + stats.frames_received, 0);
    assert!(rx.try_recv().is_err(), "nothing may be delivered");
}

#[tokio::test]
async fn a_ca_signed_non_member_is_refused_in_both_directions() {
    let pki = Pki::new();
    let set = pki.set("set", &["east", "west"]);
    // Mallory's certificate is the CA's, and mallory trusts east, but east's
    // ClusterSet directory does not hold mallory.
    let rogue = pki.set("mallory", &["mallory"]);
    pki.share("east", &set, &rogue);
    let (east, mut east_rx) = bind("east", pki.identity("east", &set)).await;
    let (mallory, mut mallory_rx) = bind("mallory", pki.identity("mallory", &rogue)).await;

    // (a) Mallory dials east: east refuses it at the handshake.
    mallory.send(
        east.local(),
        east.local_addr(),
        Channel::Stream,
        b"let me in".to_vec(),
    );
    mallory.send(
        east.local(),
        east.local_addr(),
        Channel::Datagram,
        b"probe".to_vec(),
    );
    wait_stats(&east, "east refusing mallory", |s| {
        reject(s, "not_member") >= 1
    })
    .await;
    assert_untouched(&east, &mut east_rx);
    // The refused dialer learns it from the close, and counts east's reason (its own
    // TLS 1.3 handshake finished before east checked its certificate).
    wait_stats(&mallory, "mallory told it is no member", |s| {
        reject(s, "not_member") + reject(s, "refused_by_peer") >= 1
    })
    .await;
    assert_eq!(reject(&mallory.stats(), "hello_missing"), 0);

    // (b) East dials mallory's address as mallory: east refuses mallory's server
    // certificate, although it is the CA's and names the cluster dialed.
    let refused_so_far = reject(&east.stats(), "not_member");
    east.send(
        &member("mallory"),
        mallory.local_addr(),
        Channel::Stream,
        b"for mallory".to_vec(),
    );
    wait_stats(&east, "east refusing mallory's server", |s| {
        reject(s, "not_member") > refused_so_far
    })
    .await;
    assert_eq!(east.stats().connections_dialed, 0);
    assert_untouched(&mallory, &mut mallory_rx);
    assert_untouched(&east, &mut east_rx);

    east.shutdown().await;
    mallory.shutdown().await;
}

#[tokio::test]
async fn a_second_certificate_for_a_member_with_another_key_is_refused_and_members_connect() {
    let pki = Pki::new();
    let set = pki.set("set", &["east", "west"]);
    // Another CA-signed certificate for "west", with another key: it is not the west
    // east's ring pins.
    let impostor_set = pki.set("impostor", &["west"]);
    pki.share("east", &set, &impostor_set);
    let (east, mut east_rx) = bind("east", pki.identity("east", &set)).await;
    let (impostor, mut impostor_rx) = bind("west", pki.identity("west", &impostor_set)).await;

    // (c) The impostor dials east, and east dials the impostor as west.
    impostor.send(
        east.local(),
        east.local_addr(),
        Channel::Stream,
        b"i am west".to_vec(),
    );
    wait_stats(&east, "east refusing the impostor", |s| {
        reject(s, "not_member") >= 1
    })
    .await;
    assert_untouched(&east, &mut east_rx);
    east.send(
        &member("west"),
        impostor.local_addr(),
        Channel::Stream,
        b"for west".to_vec(),
    );
    wait_stats(&east, "east refusing the impostor's server", |s| {
        reject(s, "not_member") >= 2
    })
    .await;
    assert_eq!(east.stats().connections_dialed, 0);
    assert_untouched(&impostor, &mut impostor_rx);
    impostor.shutdown().await;

    // (d) The real west connects, either way, and nothing more is refused.
    let (west, mut west_rx) = bind("west", pki.identity("west", &set)).await;
    exchange(&west, &east, &mut east_rx).await;
    exchange(&east, &west, &mut west_rx).await;
    assert_eq!(reject(&east.stats(), "not_member"), 2);
    assert_eq!(reject(&west.stats(), "not_member"), 0);
    assert_eq!(west.stats().connections_dialed, 1);
    east.shutdown().await;
    west.shutdown().await;
}

/// A running driver with the in-memory backend, on real time and loopback.
struct Node {
    api: mpsc::Sender<ApiRequest>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Starts `cluster`'s driver from the set `set`, seeded from `seed` if given.
    async fn start(
        pki: &Pki,
        cluster: &str,
        set: &Path,
        seed: Option<(&str, SocketAddr)>,
    ) -> (Node, SocketAddr) {
        let identity = pki.identity(cluster, set);
        let (transport, inbound) = bind(cluster, Arc::clone(&identity)).await;
        let addr = transport.local_addr();
        let data = pki.dir.path().join(format!("data-{cluster}"));
        let seeds = seed.map_or(String::new(), |(name, at)| {
            format!("[[seeds]]\ncluster = \"{name}\"\naddr = \"{at}\"\n")
        });
        let text = format!(
            "cluster = \"{cluster}\"\npreset = \"lan\"\nlisten = \"{addr}\"\n\
             data_dir = \"{data}\"\nmembers_expected = 2\n{seeds}\n[tls]\n\
             ca = \"{ca}\"\ncert = \"{set}/{cluster}.crt\"\nkey = \"{set}/{cluster}.key\"\n\
             clusterset_dir = \"{set}\"\n\n[backend]\nkind = \"standalone\"\n\
             dir = \"{data}/standalone\"\n",
            data = data.display(),
            ca = pki.ca.join("ca.crt").display(),
            set = set.display(),
        );
        let config = config::parse(&text, Vec::new()).unwrap();
        let (backend, _handle) = MemoryBackend::new();
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
        (Node { api, stop, task }, addr)
    }

    async fn peers(&self) -> Vec<PeerView> {
        let (reply, rx) = oneshot::channel();
        self.api.send(ApiRequest::Peers(reply)).await.unwrap();
        rx.await.unwrap()
    }

    async fn metrics(&self) -> MetricsSnapshot {
        let (reply, rx) = oneshot::channel();
        self.api.send(ApiRequest::Metrics(reply)).await.unwrap();
        rx.await.unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn a_driver_never_lists_a_non_member_but_lists_its_members() {
    tokio::task::LocalSet::new()
        .run_until(async {
            let pki = Pki::new();
            let set = pki.set("set", &["east", "west"]);
            let rogue = pki.set("mallory", &["mallory"]);
            pki.share("east", &set, &rogue);
            let (east, east_addr) = Node::start(&pki, "east", &set, None).await;
            let (west, _) = Node::start(&pki, "west", &set, Some(("east", east_addr))).await;
            let (mallory, _) =
                Node::start(&pki, "mallory", &rogue, Some(("east", east_addr))).await;

            // Until west is alive at east and east has refused mallory, east must
            // never list mallory.
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let peers = east.peers().await;
                assert!(
                    peers.iter().all(|p| p.cluster != "mallory"),
                    "east lists the non-member: {peers:?}"
                );
                let refused = east.metrics().await.rejects.get("not_member").copied();
                let west_alive = peers
                    .iter()
                    .any(|p| p.cluster == "west" && p.state == "alive");
                if west_alive && refused.unwrap_or(0) >= 1 {
                    let members = east.metrics().await.members;
                    assert_eq!(members.values().sum::<u64>(), 1, "{members:?}");
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "west alive and mallory refused at east: not within {WAIT:?}; \
                     peers {peers:?}, not_member {refused:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            mallory.stop().await;
            west.stop().await;
            east.stop().await;
        })
        .await;
}
