#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The QUIC transport on loopback: exchange, refused handshakes, identity checks,
//! malformed input, stream floods and fault injection. Certificates are generated into
//! temporary directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shoal_node::runtime::api::{ChaosOp, Direction};
use shoal_node::runtime::certs::{self, ClusterIdentity};
use shoal_node::runtime::transport::{
    Inbound, InboundQueue, Transport, TransportConfig, TransportLimits, TransportStats,
};
use shoal_proto::{Channel, ClusterId, MemberId, ReplicaId};

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

/// A ClusterSet CA and certificates for some clusters, in a temporary directory.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    set: PathBuf,
}

impl Pki {
    fn new(clusters: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let set = dir.path().join("set");
        certs::init_ca(&ca, 30).unwrap();
        for name in clusters {
            certs::issue(&ca, &cluster(name), &set, 30).unwrap();
        }
        std::fs::copy(ca.join("ca.crt"), set.join("ca.crt")).unwrap();
        Self { _dir: dir, ca, set }
    }

    fn ca_crt(&self) -> PathBuf {
        self.ca.join("ca.crt")
    }

    fn cert(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.set.join(format!("{name}.crt")),
            self.set.join(format!("{name}.key")),
        )
    }

    fn identity(&self, name: &str) -> Arc<ClusterIdentity> {
        let (cert, key) = self.cert(name);
        Arc::new(ClusterIdentity::load(&self.ca_crt(), &cert, &key, &self.set).unwrap())
    }
}

fn cluster(name: &str) -> ClusterId {
    ClusterId::new(name).unwrap()
}

fn member(name: &str, replica: u16) -> MemberId {
    MemberId {
        cluster: cluster(name),
        replica: ReplicaId(replica),
    }
}

fn test_limits() -> TransportLimits {
    TransportLimits {
        idle_timeout_ms: 10_000,
        keepalive_ms: 1_000,
        handshake_timeout_ms: 5_000,
        ..TransportLimits::default()
    }
}

async fn start(
    pki: &Pki,
    name: &str,
    replica: u16,
    limits: TransportLimits,
    chaos_enabled: bool,
) -> (Transport, InboundQueue) {
    Transport::bind(TransportConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        local: member(name, replica),
        identity: pki.identity(name),
        limits,
        chaos_enabled,
    })
    .await
    .unwrap()
}

async fn recv(rx: &mut InboundQueue) -> Inbound {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message within the deadline")
        .expect("the transport is running")
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

/// Sends `bytes` from one transport to another and checks they arrive whole, on the
/// same channel, from the sender's member id.
async fn exchange(
    from: &Transport,
    to: &Transport,
    rx: &mut InboundQueue,
    channel: Channel,
    bytes: Vec<u8>,
) {
    from.send(to.local(), to.local_addr(), channel, bytes.clone());
    let got = recv(rx).await;
    let expected = (from.local().clone(), channel, bytes);
    assert_eq!((got.from, got.channel, got.bytes), expected);
}

fn reject(stats: &TransportStats, reason: &str) -> u64 {
    stats.rejects.get(reason).copied().unwrap_or(0)
}

/// The documented header: version 1, kind, cluster length, cluster, replica (LE).
fn frame(kind: u8, claimed_cluster: &str, replica: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![1, kind, claimed_cluster.len() as u8];
    frame.extend_from_slice(claimed_cluster.as_bytes());
    frame.extend_from_slice(&replica.to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}
const KIND_DATAGRAM: u8 = 0;
const KIND_STREAM: u8 = 1;
const KIND_HELLO: u8 = 3;

/// A bare quinn client: trusts `ca`, presents `client` (certificate, key) if given.
async fn raw_connect(
    ca: &Path,
    client: Option<(&Path, &Path)>,
    addr: SocketAddr,
    server_name: &str,
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut crypto = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    crypto.alpn_protocols = vec![shoal_node::runtime::transport::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connecting = endpoint.connect_with(config, addr, server_name).unwrap();
    let conn = tokio::time::timeout(WAIT, connecting).await.unwrap();
    (endpoint, conn)
}

/// A bare quinn client with `cluster`'s certificate, connected to east at `addr`, that
/// has said its hello (as replica 0 of process instance 7).
async fn raw_peer(
    pki: &Pki,
    cluster: &str,
    addr: SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let (cert, key) = pki.cert(cluster);
    let (endpoint, conn) = raw_connect(
        &pki.ca_crt(),
        Some((&cert, &key)),
        addr,
        "east.cluster.shoal",
    )
    .await;
    let conn = conn.unwrap();
    raw_stream(&conn, &frame(KIND_HELLO, cluster, 0, &7u64.to_le_bytes())).await;
    (endpoint, conn)
}

/// Sends one frame on its own uni stream, ignoring failures (the server may refuse).
async fn raw_stream(conn: &quinn::Connection, bytes: &[u8]) {
    if let Ok(mut stream) = conn.open_uni().await {
        let _ = stream.write_all(bytes).await;
        let _ = stream.finish();
    }
}

#[tokio::test]
async fn datagrams_and_frames_flow_both_ways() {
    let pki = Pki::new(&["east", "west"]);
    let (east, mut east_rx) = start(&pki, "east", 0, test_limits(), false).await;
    let (west, mut west_rx) = start(&pki, "west", 1, test_limits(), false).await;

    exchange(
        &east,
        &west,
        &mut west_rx,
        Channel::Datagram,
        b"ping".to_vec(),
    )
    .await;

    exchange(
        &east,
        &west,
        &mut west_rx,
        Channel::Stream,
        vec![7; 100_000],
    )
    .await;

    exchange(
        &west,
        &east,
        &mut east_rx,
        Channel::Datagram,
        b"pong".to_vec(),
    )
    .await;
    exchange(
        &west,
        &east,
        &mut east_rx,
        Channel::Stream,
        b"frame".to_vec(),
    )
    .await;

    // Too large for a QUIC datagram: carried on a stream, still delivered as a datagram.
    east.send(
        &member("west", 1),
        west.local_addr(),
        Channel::Datagram,
        vec![9; 3_000],
    );
    let got = recv(&mut west_rx).await;
    assert_eq!((got.channel, got.bytes.len()), (Channel::Datagram, 3_000));

    // Once both hellos are in, datagrams go sealed, outside QUIC: west's answer did,
    // and so does east's next one.
    assert_eq!(west.stats().datagrams_sealed_sent, 1, "pong");
    assert_eq!(east.stats().datagrams_sealed_received, 1, "pong");
    exchange(
        &east,
        &west,
        &mut west_rx,
        Channel::Datagram,
        b"sealed".to_vec(),
    )
    .await;
    let stats = east.stats();
    assert_eq!(stats.datagrams_sealed_sent, 1);
    assert_eq!(stats.datagrams_on_stream, 1);
    assert_eq!(stats.datagrams_sent, 3);
    assert_eq!(stats.frames_sent, 1);
    let peer = stats.peers[&member("west", 1)];
    assert_eq!(peer.bytes_out, 4 + 100_000 + 3_000 + 6);
    assert!(peer.rtt.is_some());
    let stats = west.stats();
    assert_eq!(stats.datagrams_sealed_received, 1);
    assert_eq!(
        stats.peers[&member("east", 0)].bytes_in,
        4 + 100_000 + 3_000 + 6
    );
    // One connection per pair: west answered on the connection east dialed.
    assert_eq!(stats.connections_dialed, 0);
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(east.stats().connections_open, 1);
    assert!(stats.rejects.is_empty(), "{:?}", stats.rejects);

    east.shutdown().await;
    west.shutdown().await;
    east.send(
        &member("west", 1),
        west.local_addr(),
        Channel::Datagram,
        b"late".to_vec(),
    );
    assert_eq!(reject(&east.stats(), "shutdown"), 1);
}

#[tokio::test]
async fn handshakes_without_a_trusted_certificate_are_refused_and_counted() {
    let pki = Pki::new(&["east", "west"]);
    let (east, mut east_rx) = start(&pki, "east", 0, test_limits(), false).await;
    let addr = east.local_addr();
    let name = "east.cluster.shoal";
    let hello = frame(KIND_DATAGRAM, "west", 0, b"hello");

    // No client certificate at all.
    let (_endpoint, conn) = raw_connect(&pki.ca_crt(), None, addr, name).await;
    if let Ok(conn) = &conn {
        let _ = conn.send_datagram(hello.clone().into());
    }
    wait_stats(&east, "no_certificate", |s| {
        reject(s, "no_certificate") == 1
    })
    .await;

    // A certificate from another CA.
    let other = Pki::new(&["west"]);
    let (cert, key) = other.cert("west");
    let (_endpoint, conn) = raw_connect(&pki.ca_crt(), Some((&cert, &key)), addr, name).await;
    if let Ok(conn) = &conn {
        let _ = conn.send_datagram(hello.clone().into());
    }
    wait_stats(&east, "unknown_ca", |s| reject(s, "unknown_ca") == 1).await;

    // An expired certificate from the right CA.
    let expired = tempfile::tempdir().unwrap();
    // Valid for one day in 2001.
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let not_after = long_ago + Duration::from_secs(86_400);
    certs::issue_with(
        &pki.ca,
        &cluster("west"),
        expired.path(),
        long_ago,
        not_after,
    )
    .unwrap();
    let (cert, key) = (
        expired.path().join("west.crt"),
        expired.path().join("west.key"),
    );
    let (_endpoint, conn) = raw_connect(&pki.ca_crt(), Some((&cert, &key)), addr, name).await;
    if let Ok(conn) = &conn {
        let _ = conn.send_datagram(hello.clone().into());
    }
    wait_stats(&east, "cert_expired", |s| reject(s, "cert_expired") == 1).await;

    // Dialing east's address expecting `south`: east's certificate names another
    // cluster, so the dialer refuses it.
    let (west, _west_rx) = start(&pki, "west", 0, test_limits(), false).await;
    west.send(
        &member("south", 0),
        addr,
        Channel::Stream,
        b"for south".to_vec(),
    );
    wait_stats(&west, "wrong_cluster", |s| reject(s, "wrong_cluster") == 1).await;
    assert_eq!(west.stats().connections_dialed, 0);

    let stats = east.stats();
    assert_eq!(stats.connections_accepted, 0, "{stats:#?}");
    assert_eq!(stats.datagrams_received + stats.frames_received, 0);
    assert!(east_rx.try_recv().is_err(), "nothing may be delivered");
    east.shutdown().await;
    west.shutdown().await;
}

#[tokio::test]
async fn a_peer_claiming_another_cluster_is_dropped_and_disconnected() {
    let pki = Pki::new(&["east", "west", "south"]);
    let (east, mut east_rx) = start(&pki, "east", 0, test_limits(), false).await;
    let (_endpoint, conn) = raw_peer(&pki, "west", east.local_addr()).await;
    raw_stream(&conn, &frame(KIND_STREAM, "south", 0, b"forged")).await;
    wait_stats(&east, "identity_mismatch", |s| {
        reject(s, "identity_mismatch") == 1
    })
    .await;
    let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == quinn::VarInt::from_u32(1)),
        "{closed:?}"
    );
    assert!(east_rx.try_recv().is_err(), "nothing may be delivered");
    assert_eq!(east.stats().frames_received, 0);
    east.shutdown().await;
}

#[tokio::test]
async fn malformed_input_is_counted_and_dropped_and_the_connection_keeps_working() {
    let pki = Pki::new(&["east", "west"]);
    let limits = TransportLimits {
        frame_bytes_max: 64 * 1024,
        ..test_limits()
    };
    let (east, mut east_rx) = start(&pki, "east", 0, limits, false).await;
    let (_endpoint, conn) = raw_peer(&pki, "west", east.local_addr()).await;
    let garbage: [&[u8]; 5] = [
        b"\x00",
        b"garbage that is not a header",
        &[1, 0, 200, 1, 2, 3],
        &[1, 9, 4, b'w', b'e', b's', b't', 0, 0],
        &frame(KIND_STREAM, "west", 0, b"a stream kind on a datagram"),
    ];
    for bytes in garbage {
        conn.send_datagram(bytes.to_vec().into()).unwrap();
    }
    raw_stream(&conn, b"\x01\x01\xff not a header").await;
    raw_stream(
        &conn,
        &frame(KIND_STREAM, "west", 0, &vec![0; 64 * 1024 + 1]),
    )
    .await;
    raw_stream(&conn, &vec![1; 200 * 1024]).await;
    wait_stats(&east, "bad input counted", |s| {
        reject(s, "bad_header") == 6 && reject(s, "frame_too_large") == 2
    })
    .await;

    raw_stream(&conn, &frame(KIND_STREAM, "west", 3, b"still here")).await;
    let got = recv(&mut east_rx).await;
    assert_eq!(got.from, member("west", 3));
    assert_eq!(
        (got.channel, got.bytes.as_slice()),
        (Channel::Stream, &b"still here"[..])
    );
    conn.send_datagram(frame(KIND_DATAGRAM, "west", 3, b"dgram").into())
        .unwrap();
    let got = recv(&mut east_rx).await;
    assert_eq!(
        (got.channel, got.bytes.as_slice()),
        (Channel::Datagram, &b"dgram"[..])
    );
    assert!(conn.close_reason().is_none());
    east.shutdown().await;
}

#[tokio::test]
async fn forged_sealed_datagrams_and_notices_are_counted_and_dropped() {
    let pki = Pki::new(&["east"]);
    let (east, mut east_rx) = start(&pki, "east", 0, test_limits(), false).await;
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = east.local_addr();
    // QUIC's fixed bit clear: not QUIC, so never handed to quinn.
    raw.send_to(&[0x00], to).await.unwrap();
    raw.send_to(&[0x01; 10], to).await.unwrap();
    // Well-formed, but under no key east holds: dropped, and east says so, once.
    raw.send_to(&[0x01; 40], to).await.unwrap();
    let mut notice = [0u8; 16];
    let (len, from) = tokio::time::timeout(WAIT, raw.recv_from(&mut notice))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&notice[..len], from), (&[0x02, 0x01, 0x01][..], to));
    raw.send_to(&[0x01; 40], to).await.unwrap();
    // Longer than any sealed datagram is sent: dropped unread.
    raw.send_to(&[0x01; 2_000], to).await.unwrap();
    // A notice naming no key east sealed with changes nothing.
    raw.send_to(&[0x02, 0x01, 0x01], to).await.unwrap();
    wait_stats(&east, "forged datagrams counted", |s| {
        reject(s, "sealed_malformed") == 2
            && reject(s, "sealed_unknown_key") == 2
            && reject(s, "sealed_notice_ignored") == 1
            && reject(s, "sealed_too_large") == 1
    })
    .await;
    assert!(east_rx.try_recv().is_err(), "nothing may be delivered");
    assert_eq!(east.stats().datagrams_received, 0);
    east.shutdown().await;
}

#[tokio::test]
async fn a_peer_over_its_byte_rate_loses_datagrams_and_waits_with_frames() {
    const RATE: u64 = 4_096;
    let pki = Pki::new(&["east", "west"]);
    let limits = TransportLimits {
        peer_bytes_per_s_max: RATE,
        frame_bytes_max: 1_024,
        ..test_limits()
    };
    let (east, mut east_rx) = start(&pki, "east", 0, limits, false).await;
    let (_endpoint, conn) = raw_peer(&pki, "west", east.local_addr()).await;
    // 20 datagrams of about 500 bytes at once: the 4 KiB burst takes about 8.
    for _ in 0..20 {
        conn.send_datagram(frame(KIND_DATAGRAM, "west", 0, &[7; 490]).into())
            .unwrap();
    }
    wait_stats(&east, "every datagram accounted for", |s| {
        s.datagrams_received + reject(s, "rate_limited") == 20
    })
    .await;
    let delivered = east.stats().datagrams_received;
    assert!((7..=10).contains(&delivered), "{:#?}", east.stats());
    while east_rx.try_recv().is_ok() {}

    // Frames are never dropped for the rate: they wait until the budget has paid.
    for i in 0..6u8 {
        raw_stream(&conn, &frame(KIND_STREAM, "west", 0, &[i; 1_000])).await;
    }
    for _ in 0..6 {
        assert_eq!(recv(&mut east_rx).await.bytes.len(), 1_000);
    }
    let stats = east.stats();
    assert!(stats.frames_throttled >= 1, "{stats:#?}");
    assert_eq!(stats.frames_received, 6);
    east.shutdown().await;
}

#[tokio::test]
async fn a_stream_flood_stays_within_the_stream_limit_and_the_inbound_queue() {
    const STREAMS: u64 = 3_000;
    const STREAMS_MAX: u32 = 8;
    const QUEUE_MAX: usize = 32;
    let pki = Pki::new(&["east", "west"]);
    let limits = TransportLimits {
        uni_streams_per_connection_max: STREAMS_MAX,
        inbound_queue_max: QUEUE_MAX,
        ..test_limits()
    };
    let (east, mut east_rx) = start(&pki, "east", 0, limits, false).await;
    let (_endpoint, conn) = raw_peer(&pki, "west", east.local_addr()).await;
    let flood = async {
        for i in 0..STREAMS {
            raw_stream(&conn, &frame(KIND_STREAM, "west", 0, &i.to_le_bytes())).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), flood)
        .await
        .expect("the flood ends: the receiver keeps reading");
    wait_stats(&east, "every stream accounted for", |s| {
        s.frames_received + reject(s, "inbound_queue_full") == STREAMS && s.streams_open == 0
    })
    .await;
    let stats = east.stats();
    assert!(
        stats.streams_open_peak <= u64::from(STREAMS_MAX),
        "{stats:#?}"
    );
    assert_eq!(stats.frames_received, QUEUE_MAX as u64, "{stats:#?}");
    assert_eq!(east_rx.len(), QUEUE_MAX);

    // Once the driver drains the queue, delivery goes on.
    while east_rx.try_recv().is_ok() {}
    raw_stream(&conn, &frame(KIND_STREAM, "west", 0, b"after the flood")).await;
    assert_eq!(recv(&mut east_rx).await.bytes, b"after the flood");
    east.shutdown().await;
}

#[tokio::test]
async fn the_inbound_queue_is_bounded_in_bytes_not_only_in_frames() {
    const FRAME_BYTES: usize = 64 * 1024;
    const FRAMES: usize = 12;
    const FITTING: usize = 4;
    let pki = Pki::new(&["east", "west"]);
    let limits = TransportLimits {
        frame_bytes_max: FRAME_BYTES,
        inbound_queue_max: 4_096,
        inbound_queue_bytes_max: FITTING * FRAME_BYTES,
        ..test_limits()
    };
    let (east, mut east_rx) = start(&pki, "east", 0, limits, false).await;
    let (_endpoint, conn) = raw_peer(&pki, "west", east.local_addr()).await;
    for i in 0..FRAMES {
        let payload = vec![i as u8; FRAME_BYTES];
        raw_stream(&conn, &frame(KIND_STREAM, "west", 0, &payload)).await;
    }
    wait_stats(&east, "every frame accounted for", |s| {
        s.frames_received + reject(s, "inbound_queue_bytes_full") == FRAMES as u64
    })
    .await;
    let stats = east.stats();
    assert_eq!(stats.frames_received, FITTING as u64, "{stats:#?}");
    assert_eq!(reject(&stats, "inbound_queue_full"), 0, "{stats:#?}");
    assert_eq!(
        (east_rx.len(), east_rx.bytes()),
        (FITTING, FITTING * FRAME_BYTES)
    );

    // Taking a frame gives its bytes back.
    let first = east_rx.try_recv().expect("a queued frame");
    assert_eq!(first.bytes.len(), FRAME_BYTES);
    raw_stream(&conn, &frame(KIND_STREAM, "west", 0, b"fits again")).await;
    wait_stats(&east, "the small frame queued", |s| {
        s.frames_received == FITTING as u64 + 1
    })
    .await;
    while east_rx.len() > 1 {
        east_rx.try_recv().expect("a queued frame");
    }
    assert_eq!(recv(&mut east_rx).await.bytes, b"fits again");
    assert_eq!(east_rx.bytes(), 0);
    east.shutdown().await;
}

/// A loopback address nothing listens on: dials to it never complete, so what is sent
/// there stays queued.
fn dead_addr() -> std::net::SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

#[tokio::test]
async fn the_outbound_queues_are_bounded_in_bytes_per_address_and_in_total() {
    const FRAME_BYTES: usize = 64 * 1024;
    const SEND_BYTES: usize = 40 * 1024;
    let pki = Pki::new(&["east", "west"]);
    let limits = TransportLimits {
        frame_bytes_max: FRAME_BYTES,
        outbound_queue_bytes_max: FRAME_BYTES,
        outbound_bytes_max: FRAME_BYTES + FRAME_BYTES / 2,
        ..test_limits()
    };
    let (east, _east_rx) = start(&pki, "east", 0, limits, false).await;
    let (first, second, third) = (dead_addr(), dead_addr(), dead_addr());
    let west = member("west", 0);
    // On this current-thread runtime no sending task runs between these calls, so
    // nothing leaves a queue: the second send to an address passes its 64 KiB.
    east.send(&west, first, Channel::Stream, vec![1; SEND_BYTES]);
    east.send(&west, first, Channel::Stream, vec![2; SEND_BYTES]);
    let stats = east.stats();
    assert_eq!(reject(&stats, "outbound_queue_bytes_full"), 1, "{stats:#?}");
    // Two addresses hold 80 KiB of the 96 KiB in total; a third address's send
    // passes the total even though its own queue is empty.
    east.send(&west, second, Channel::Stream, vec![3; SEND_BYTES]);
    east.send(&west, third, Channel::Stream, vec![4; SEND_BYTES]);
    let stats = east.stats();
    assert_eq!(reject(&stats, "outbound_bytes_full"), 1, "{stats:#?}");
    assert_eq!(reject(&stats, "outbound_queue_full"), 0, "{stats:#?}");
    east.shutdown().await;
}

#[tokio::test]
async fn byte_bounds_below_one_frame_are_refused_by_name() {
    let pki = Pki::new(&["east"]);
    let cases = [
        (
            TransportLimits {
                inbound_queue_bytes_max: 1_000,
                ..test_limits()
            },
            "inbound_queue_bytes_max (1000) must be at least frame_bytes_max",
        ),
        (
            TransportLimits {
                outbound_queue_bytes_max: 1_000,
                ..test_limits()
            },
            "outbound_queue_bytes_max (1000) must be at least frame_bytes_max",
        ),
        (
            TransportLimits {
                outbound_bytes_max: 4 << 20,
                ..test_limits()
            },
            "outbound_bytes_max (4194304) must be at least outbound_queue_bytes_max",
        ),
    ];
    for (limits, expected) in cases {
        let error = Transport::bind(TransportConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            local: member("east", 0),
            identity: pki.identity("east"),
            limits,
            chaos_enabled: false,
        })
        .await
        .expect_err("the limits are unusable");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[tokio::test]
async fn chaos_cuts_restores_and_loses_and_is_refused_when_disabled() {
    let pki = Pki::new(&["east", "west"]);
    let (east, mut east_rx) = start(&pki, "east", 0, test_limits(), true).await;
    let (west, mut west_rx) = start(&pki, "west", 0, test_limits(), false).await;
    let (to_west, to_east) = (member("west", 0), member("east", 0));
    let cut = |direction| ChaosOp::Cut {
        cluster: "west".into(),
        direction,
    };
    let restore = ChaosOp::Restore {
        cluster: "west".into(),
    };

    // Outbound: east's send is dropped at once; after restore the next one arrives first.
    east.chaos(&cut(Direction::Outbound)).unwrap();
    east.send(
        &to_west,
        west.local_addr(),
        Channel::Stream,
        b"dropped".to_vec(),
    );
    assert_eq!(east.chaos(&ChaosOp::Show).unwrap().dropped_total, 1);
    // Inbound still flows while only outbound is cut.
    west.send(&to_east, east.local_addr(), Channel::Stream, b"in".to_vec());
    assert_eq!(recv(&mut east_rx).await.bytes, b"in");
    assert!(east.chaos(&restore).unwrap().cuts.is_empty());
    east.send(
        &to_west,
        west.local_addr(),
        Channel::Stream,
        b"after".to_vec(),
    );
    assert_eq!(recv(&mut west_rx).await.bytes, b"after");

    // Inbound: what west sends is dropped on arrival.
    let view = east.chaos(&cut(Direction::Inbound)).unwrap();
    assert_eq!(view.cuts["west"], vec![Direction::Inbound]);
    west.send(
        &to_east,
        east.local_addr(),
        Channel::Stream,
        b"dropped".to_vec(),
    );
    wait_stats(&east, "inbound chaos drop", |s| reject(s, "chaos") == 2).await;
    east.send(
        &to_west,
        west.local_addr(),
        Channel::Stream,
        b"out".to_vec(),
    );
    assert_eq!(recv(&mut west_rx).await.bytes, b"out");
    east.chaos(&restore).unwrap();
    west.send(
        &to_east,
        east.local_addr(),
        Channel::Stream,
        b"after".to_vec(),
    );
    assert_eq!(recv(&mut east_rx).await.bytes, b"after");

    // Both directions.
    let view = east.chaos(&cut(Direction::Both)).unwrap();
    assert_eq!(
        view.cuts["west"],
        vec![Direction::Outbound, Direction::Inbound]
    );
    east.send(
        &to_west,
        west.local_addr(),
        Channel::Stream,
        b"dropped".to_vec(),
    );
    west.send(
        &to_east,
        east.local_addr(),
        Channel::Stream,
        b"dropped".to_vec(),
    );
    wait_stats(&east, "both directions dropped", |s| {
        reject(s, "chaos") == 4
    })
    .await;
    east.chaos(&restore).unwrap();

    // Loss 1.0, for west and then for everyone: every send dropped.
    for cluster in [Some("west".to_owned()), None] {
        east.chaos(&ChaosOp::Loss { cluster, rate: 1.0 }).unwrap();
        for _ in 0..10 {
            east.send(
                &to_west,
                west.local_addr(),
                Channel::Datagram,
                b"lost".to_vec(),
            );
        }
        east.chaos(&ChaosOp::Clear).unwrap();
    }
    let view = east.chaos(&ChaosOp::Show).unwrap();
    assert!(view.cuts.is_empty() && view.loss.is_empty());
    assert_eq!(view.dropped_total, 24);
    assert_eq!(reject(&east.stats(), "chaos"), 24);
    east.send(
        &to_west,
        west.local_addr(),
        Channel::Stream,
        b"healed".to_vec(),
    );
    assert_eq!(recv(&mut west_rx).await.bytes, b"healed");
    assert!(west_rx.try_recv().is_err(), "nothing dropped may arrive");

    let refused = west.chaos(&ChaosOp::Show).unwrap_err();
    assert_eq!(refused.status, 403);
    east.shutdown().await;
    west.shutdown().await;
}

#[tokio::test]
async fn a_dead_peer_is_not_dialed_in_a_hot_loop() {
    let pki = Pki::new(&["east", "west"]);
    let limits = TransportLimits {
        handshake_timeout_ms: 300,
        ..test_limits()
    };
    let (east, _east_rx) = start(&pki, "east", 0, limits, false).await;
    // A bound socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    east.send(
        &member("west", 0),
        addr,
        Channel::Datagram,
        b"hello?".to_vec(),
    );
    wait_stats(&east, "handshake timeout", |s| {
        reject(s, "handshake_timeout") == 1
    })
    .await;
    for _ in 0..5 {
        east.send(
            &member("west", 0),
            addr,
            Channel::Datagram,
            b"hello?".to_vec(),
        );
    }
    wait_stats(&east, "every send accounted for", |s| {
        reject(s, "handshake_timeout") + reject(s, "connect_backoff") == 6
    })
    .await;
    // Without a backoff each send would dial; with it, at most one more dial fits.
    let stats = east.stats();
    assert!(reject(&stats, "handshake_timeout") <= 2, "{stats:#?}");
    assert!(reject(&stats, "connect_backoff") >= 4, "{stats:#?}");
    east.shutdown().await;
}

/// Limits under which only a restart signal, never the idle timeout, can end a
/// connection within the test's deadline.
fn no_keepalive_limits() -> TransportLimits {
    TransportLimits {
        idle_timeout_ms: 600_000,
        keepalive_ms: 0,
        ..test_limits()
    }
}

/// west/0 at `listen`, without keep-alives.
fn west_config(pki: &Pki, listen: SocketAddr) -> TransportConfig {
    TransportConfig {
        listen,
        local: member("west", 0),
        identity: pki.identity("west"),
        limits: no_keepalive_limits(),
        chaos_enabled: false,
    }
}

/// Starts west on a runtime of its own at `listen`, sends it datagrams from `east`
/// until one goes sealed (both hold a connection and its key), then kills that
/// runtime: the process dies without closing anything, as under kill -9.
async fn start_and_kill(pki: &Pki, east: &Transport, listen: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let config = west_config(pki, listen);
    let (west, mut west_rx) = runtime
        .spawn(async move { Transport::bind(config).await.unwrap() })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while east.stats().datagrams_sealed_sent == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing went sealed"
        );
        east.send(
            &member("west", 0),
            west.local_addr(),
            Channel::Datagram,
            b"before".to_vec(),
        );
        assert_eq!(recv(&mut west_rx).await.bytes, b"before");
    }
    runtime.shutdown_background();
    drop(west);
}

/// Binds the new west at `listen`, once the killed runtime has let go of the socket.
async fn restart_west(pki: &Pki, listen: SocketAddr) -> (Transport, InboundQueue) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let bound = Transport::bind(west_config(pki, listen)).await;
        match bound {
            Ok(started) => return started,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sends datagrams from `east` until the new west receives one, or fails at the
/// deadline (far below the idle timeout).
async fn east_reaches(east: &Transport, west: &Transport, rx: &mut InboundQueue) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        east.send(
            &member("west", 0),
            west.local_addr(),
            Channel::Datagram,
            b"after".to_vec(),
        );
        if let Ok(Some(got)) = tokio::time::timeout(POLL * 10, rx.recv()).await {
            assert_eq!(got.bytes, b"after");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted peer was never reached: {:#?}",
            east.stats()
        );
    }
}

#[tokio::test]
async fn a_restarted_peer_resets_the_old_connection_and_is_dialed_again() {
    let pki = Pki::new(&["east", "west"]);
    let (east, _east_rx) = start(&pki, "east", 0, no_keepalive_limits(), false).await;
    let listen: SocketAddr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    start_and_kill(&pki, &east, listen).await;
    // The new process never sends first. East seals with the old key; the new process
    // cannot open that and says so (an unknown-key notice), so east drops the key and
    // closes the old connection, and its next datagram dials the new process. (Had
    // east sent into the old connection, the stateless reset the new process answers
    // with would have closed it: its reset key is derived from the cluster's key.)
    let (west, mut west_rx) = restart_west(&pki, listen).await;
    east_reaches(&east, &west, &mut west_rx).await;
    let stats = east.stats();
    assert_eq!(stats.connections_dialed, 2);
    assert_eq!(
        reject(&stats, "sealed_key_unknown_to_peer"),
        1,
        "{stats:#?}"
    );
    assert!(reject(&west.stats(), "sealed_unknown_key") >= 1);
    east.shutdown().await;
    west.shutdown().await;
}

#[tokio::test]
async fn a_restarted_peer_that_dials_first_replaces_the_old_connection() {
    let pki = Pki::new(&["east", "west"]);
    let (east, mut east_rx) = start(&pki, "east", 0, no_keepalive_limits(), false).await;
    let listen: SocketAddr = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    start_and_kill(&pki, &east, listen).await;
    let (west, mut west_rx) = restart_west(&pki, listen).await;
    // The new process dials east first; its hello names a new instance, so east drops
    // its connection to the old one and answers on the new one.
    west.send(
        &member("east", 0),
        east.local_addr(),
        Channel::Datagram,
        b"i am back".to_vec(),
    );
    assert_eq!(recv(&mut east_rx).await.bytes, b"i am back");
    wait_stats(&east, "the restart noticed", |s| {
        reject(s, "peer_restarted") == 1
    })
    .await;
    east_reaches(&east, &west, &mut west_rx).await;
    let stats = east.stats();
    assert_eq!(stats.connections_dialed, 1, "{stats:#?}");
    assert_eq!(stats.connections_accepted, 1, "{stats:#?}");
    // The new hello dropped the old process's key before east sealed anything.
    assert_eq!(
        reject(&stats, "sealed_key_unknown_to_peer"),
        0,
        "{stats:#?}"
    );
    assert_eq!(reject(&west.stats(), "sealed_unknown_key"), 0);
    east.shutdown().await;
    west.shutdown().await;
}

/// The next value of a xorshift64 generator: deterministic garbage.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `n` datagrams of random bytes (1 to 1,400), each first byte passed through `first`.
fn garbage(state: &mut u64, n: usize, first: impl Fn(u8) -> u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let len = 1 + (xorshift(state) % 1_400) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| xorshift(state) as u8).collect();
            bytes[0] = first(bytes[0]);
            bytes
        })
        .collect()
}

/// A long-header packet of `len` bytes: first byte, version, connection ids, zeros.
fn long_header(first: u8, version: u32, dcid_len: u8, len: usize) -> Vec<u8> {
    let mut packet = vec![first];
    packet.extend_from_slice(&version.to_be_bytes());
    packet.push(dcid_len);
    packet.extend(std::iter::repeat_n(0x11, usize::from(dcid_len)));
    packet.push(8);
    packet.extend([0x22; 8]);
    packet.resize(len, 0);
    packet
}

/// A QUIC v1 Initial as a client sends it (1,200 bytes, header protection applied with
/// the initial keys of its connection id, so quinn reads the header), whose payload is
/// not sealed with the packet key: it fails authentication.
fn bogus_initial() -> Vec<u8> {
    use rustls::Side;
    use rustls::quic::Version;
    let dcid = [0x11u8; 8];
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .unwrap()
        .quic_suite()
        .unwrap();
    let keys = suite.keys(&dcid, Side::Client, Version::V1);
    // Initial, 1-byte packet number; version 1; both ids; no token.
    let mut packet = vec![0xc0];
    packet.extend_from_slice(&1u32.to_be_bytes());
    packet.push(8);
    packet.extend_from_slice(&dcid);
    packet.push(8);
    packet.extend_from_slice(&[0x22; 8]);
    packet.push(0);
    let pn_at = packet.len() + 2;
    let length = (1_200 - pn_at) as u16 | 0x4000; // a 2-byte varint
    packet.extend_from_slice(&length.to_be_bytes());
    packet.push(0);
    packet.resize(1_200, 0xab);
    let sample = packet[pn_at + 4..pn_at + 20].to_vec();
    let (first, rest) = packet.split_at_mut(1);
    let pn = &mut rest[pn_at - 1..pn_at];
    keys.local
        .header
        .encrypt_in_place(&sample, &mut first[0], pn)
        .unwrap();
    packet
}

/// Stray UDP on the QUIC port. What cannot be QUIC (random bytes in a long header of
/// no version spoken here, an empty datagram, a short header too short to be valid, a
/// QUIC v1 header with the fixed bit clear or an oversized connection id, an Initial
/// of a draft version) is dropped before quinn and counted `not_quic`; random bytes
/// that look sealed are counted by the sealed reader; a well-formed Initial with a
/// bogus payload reaches quinn, and its failed handshake is counted. A real peer still
/// connects afterwards, quinn's handshake counters show it, and a handshake beyond the
/// connection limit shows as refused.
#[tokio::test]
async fn stray_datagrams_and_a_bogus_initial_are_counted_and_peers_still_connect() {
    let pki = Pki::new(&["east", "west", "south"]);
    let limits = TransportLimits {
        connections_max: 1,
        ..test_limits()
    };
    let (east, mut east_rx) = start(&pki, "east", 0, limits, false).await;
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = east.local_addr();
    let mut state = 0x9e37_79b9_7f4a_7c15;
    let mut not_quic = garbage(&mut state, 32, |b| b | 0x80);
    for bytes in &mut not_quic {
        if let Some(version) = bytes.get_mut(1) {
            *version |= 0x80; // a version above 0x8000_0000: none spoken here
        }
    }
    not_quic.extend([
        Vec::new(),
        vec![0x41; 20],
        long_header(0x80, 1, 8, 1_200),
        long_header(0xc0, 1, 21, 1_200),
        long_header(0xc0, 0xff00_001d, 8, 1_200),
    ]);
    for datagram in &not_quic {
        stray.send_to(datagram, to).unwrap();
    }
    let expected = not_quic.len() as u64;
    wait_stats(&east, "stray datagrams dropped as not QUIC", |s| {
        reject(s, "not_quic") == expected
    })
    .await;

    let sealed_looking = garbage(&mut state, 16, |b| b & 0x3f);
    for datagram in &sealed_looking {
        stray.send_to(datagram, to).unwrap();
    }
    let sealed_rejects = |s: &TransportStats| -> u64 {
        (s.rejects.iter())
            .filter(|(reason, _)| reason.starts_with("sealed_"))
            .map(|(_, n)| n)
            .sum()
    };
    wait_stats(&east, "sealed-looking garbage refused", |s| {
        sealed_rejects(s) == sealed_looking.len() as u64
    })
    .await;

    stray.send_to(&bogus_initial(), to).unwrap();
    wait_stats(&east, "the bogus Initial's handshake failed", |s| {
        reject(s, "handshake_failed") == 1
    })
    .await;
    let stats = east.stats();
    assert_eq!(stats.quic_handshakes_accepted, 0, "{stats:#?}");
    assert_eq!(reject(&stats, "not_quic"), expected, "{stats:#?}");

    let (west, _west_rx) = start(&pki, "west", 0, test_limits(), false).await;
    exchange(
        &west,
        &east,
        &mut east_rx,
        Channel::Stream,
        b"still here".to_vec(),
    )
    .await;
    let stats = east.stats();
    assert_eq!(stats.quic_handshakes_accepted, 1, "{stats:#?}");
    assert_eq!(stats.connections_accepted, 1, "{stats:#?}");
    assert_eq!(west.stats().quic_handshakes_outgoing, 1);

    // West holds east's one connection slot: south's handshake is refused.
    let (south, _south_rx) = start(&pki, "south", 0, test_limits(), false).await;
    south.send(east.local(), to, Channel::Stream, b"no room".to_vec());
    wait_stats(&east, "south's handshake refused", |s| {
        s.quic_handshakes_refused == 1 && reject(s, "connections_full") == 1
    })
    .await;
    for transport in [&east, &west, &south] {
        transport.shutdown().await;
    }
}
