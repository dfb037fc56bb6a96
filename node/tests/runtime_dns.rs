//! The standalone DNS server on loopback: a hickory-proto client asks over UDP and
//! TCP. Answers and their TTL, a new version of the imports, the per-client rate limit
//! (a burst, then the next query dropped over UDP and refused over TCP), a malformed
//! packet counted while the server keeps answering, the TCP bounds, a port in use, and
//! the driver feeding its imports to the server.
#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use shoal_node::core::{ExportSpec, ImportedCluster, ImportedService, TrafficReason};
use shoal_node::runtime::api::{ApiRequest, MetricsSnapshot};
use shoal_node::runtime::backend::Imports;
use shoal_node::runtime::backend::memory::MemoryBackend;
use shoal_node::runtime::certs::{self};
use shoal_node::runtime::config;
use shoal_node::runtime::dns::{
    DnsError, DnsLimits, DnsRunning, DnsServer, DnsStats, ImportsFeed, Outcome, RateLimit,
    TTL_SECONDS,
};
use shoal_node::runtime::driver::Driver;
use shoal_proto::{
    ClusterId, ClusterKey, Endpoint, EndpointConditions, ExportRecord, IpAddress, NetworkMode,
    PortProtocol, ServiceKey, ServicePort, ServiceProperties, ServiceType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a condition may take on a loaded machine (every wait ends on its condition).
const WAIT: Duration = Duration::from_secs(20);
/// A rate that never refills within a test: only the burst counts.
const NEVER: Duration = Duration::from_secs(3_600);
const WEB: &str = "web.shop.svc.clusterset.local.";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn http() -> Vec<ServicePort> {
    vec![ServicePort {
        name: "http".into(),
        protocol: PortProtocol::Tcp,
        port: 80,
        target_port: 8080,
        app_protocol: None,
    }]
}

fn ready(address: &str) -> Endpoint {
    Endpoint {
        addresses: vec![IpAddress::from(ip(address))],
        conditions: EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        },
        zone: None,
        hostname: None,
    }
}

fn source(origin: &str, addresses: &[&str], active: bool) -> ImportedCluster {
    let origin = ClusterId::new(origin).unwrap();
    let record = ExportRecord {
        origin: origin.clone(),
        service: ServiceKey::new("shop", "web").unwrap(),
        version: 1,
        export_created_ms: 1,
        published_ms: 0,
        service_type: ServiceType::ClusterSetIp,
        ports: http(),
        endpoints: addresses.iter().map(|a| ready(a)).collect(),
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
        tombstone: false,
    };
    let signed = ClusterKey::from_seed(origin, [3; 32]).sign(record).unwrap();
    ImportedCluster {
        record: Arc::new(signed.into_inner()),
        active,
    }
}

/// `shop/web`: the given sources.
fn imports(sources: Vec<ImportedCluster>) -> Imports {
    let key = ServiceKey::new("shop", "web").unwrap();
    let import = ImportedService {
        service: key.clone(),
        service_type: ServiceType::ClusterSetIp,
        ports: http(),
        properties: ServiceProperties::default(),
        sources: sources.into(),
        conflicts: Vec::new().into(),
        traffic: TrafficReason::AllOrigins,
    };
    BTreeMap::from([(key, Arc::new(import))])
}

async fn start(limits: DnsLimits) -> (DnsRunning, ImportsFeed) {
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), limits)
        .await
        .unwrap();
    server.start()
}

/// Waits until `condition` holds for the server's counters.
async fn counted(stats: &DnsStats, what: &str, condition: impl Fn(&DnsStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition(stats) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}; {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Publishes `imports` and waits until the zone built from them serves.
async fn publish(running: &DnsRunning, feed: &ImportsFeed, imports: &Imports) {
    let stats = running.stats();
    let builds = stats.zone_builds();
    feed.publish(imports);
    counted(&stats, "the zone built", |s| s.zone_builds() > builds).await;
}

fn query(name: &str, record_type: RecordType, id: u16) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = id;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), record_type));
    message.to_vec().unwrap()
}

async fn udp(server: SocketAddr, name: &str, record_type: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query(name, record_type, 7), server)
        .await
        .unwrap();
    let mut buffer = vec![0; 4096];
    let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buffer))
        .await
        .expect("an answer over UDP")
        .unwrap();
    Message::from_vec(&buffer[..len]).unwrap()
}

/// One query on an open TCP connection.
async fn tcp_on(stream: &mut TcpStream, name: &str, record_type: RecordType) -> Message {
    let bytes = query(name, record_type, 9);
    let len = u16::try_from(bytes.len()).unwrap();
    stream.write_all(&len.to_be_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut prefix = [0; 2];
    tokio::time::timeout(WAIT, stream.read_exact(&mut prefix))
        .await
        .expect("an answer over TCP")
        .unwrap();
    let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut body).await.unwrap();
    Message::from_vec(&body).unwrap()
}

async fn tcp(server: SocketAddr, name: &str, record_type: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    tcp_on(&mut stream, name, record_type).await
}

fn addresses(message: &Message) -> BTreeSet<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn roomy() -> DnsLimits {
    DnsLimits {
        rate: RateLimit::per_second(10_000, 10_000),
        ..DnsLimits::default()
    }
}

#[tokio::test]
async fn answers_over_udp_and_tcp_follow_the_imports_with_ttl_5() {
    let (running, feed) = start(roomy()).await;
    let server = running.local_addr();
    let before = udp(server, WEB, RecordType::A).await;
    assert_eq!(
        before.metadata.response_code,
        ResponseCode::ServFail,
        "no zone before the first imports"
    );

    let c1 = source("c1", &["10.0.0.1", "10.0.0.2", "fd00::1"], true);
    let c2 = source("c2", &["10.0.1.1"], false);
    publish(&running, &feed, &imports(vec![c1.clone(), c2])).await;
    let answer = udp(server, WEB, RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert_eq!(
        addresses(&answer),
        BTreeSet::from([ip("10.0.0.1"), ip("10.0.0.2")]),
        "the active origin's IPv4 endpoints"
    );
    assert!(answer.answers.iter().all(|r| r.ttl == TTL_SECONDS));
    let over_tcp = tcp(server, WEB, RecordType::A).await;
    assert_eq!(addresses(&over_tcp), addresses(&answer));
    assert_eq!(
        addresses(&udp(server, WEB, RecordType::AAAA).await),
        BTreeSet::from([ip("fd00::1")])
    );
    let inactive = udp(server, &format!("c2.{WEB}"), RecordType::A).await;
    assert_eq!(addresses(&inactive), BTreeSet::from([ip("10.0.1.1")]));
    let endpoint = udp(server, &format!("10-0-0-2.c1.{WEB}"), RecordType::A).await;
    assert_eq!(addresses(&endpoint), BTreeSet::from([ip("10.0.0.2")]));

    let srv = udp(server, &format!("_http._tcp.{WEB}"), RecordType::SRV).await;
    let targets: BTreeSet<(u16, String)> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from([
            (8080, format!("10-0-0-1.c1.{WEB}")),
            (8080, format!("10-0-0-2.c1.{WEB}")),
            (8080, format!("fd00--1.c1.{WEB}")),
        ]),
        "one per endpoint, on the port it listens on"
    );
    assert_eq!(srv.additionals.len(), 3, "the targets' addresses");

    let missing = udp(server, "api.shop.svc.clusterset.local.", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(missing.authorities.len(), 1, "the SOA");
    let nodata = udp(server, WEB, RecordType::TXT).await;
    assert_eq!(
        (nodata.metadata.response_code, nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let outside = udp(server, "example.com.", RecordType::A).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    // The next version: c1 lost an endpoint, c2 became active.
    let c1 = source("c1", &["10.0.0.1"], true);
    let c2 = source("c2", &["10.0.1.1"], true);
    publish(&running, &feed, &imports(vec![c1, c2])).await;
    assert_eq!(
        addresses(&udp(server, WEB, RecordType::A).await),
        BTreeSet::from([ip("10.0.0.1"), ip("10.0.1.1")])
    );
    publish(&running, &feed, &Imports::new()).await;
    let gone = udp(server, WEB, RecordType::A).await;
    assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);

    let stats = running.stats();
    assert_eq!(stats.outcome(Outcome::NotReady), 1);
    assert_eq!(stats.outcome(Outcome::Malformed), 0);
    let counts = [
        Outcome::Answered,
        Outcome::NxDomain,
        Outcome::NoData,
        Outcome::Refused,
    ]
    .map(|o| stats.outcome(o));
    assert_eq!(counts, [7, 2, 1, 1], "each query counted once, by outcome");
    running.shutdown().await;
}

#[tokio::test]
async fn past_its_burst_a_client_is_dropped_over_udp_and_refused_over_tcp() {
    let limits = DnsLimits {
        rate: RateLimit {
            burst: 3,
            interval: NEVER,
        },
        ..DnsLimits::default()
    };
    let (running, feed) = start(limits).await;
    let server = running.local_addr();
    publish(
        &running,
        &feed,
        &imports(vec![source("c1", &["10.0.0.1"], true)]),
    )
    .await;
    for _ in 0..3 {
        let answer = udp(server, WEB, RecordType::A).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
    let stats = running.stats();
    // The fourth query over UDP: dropped, so only the counter tells.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query(WEB, RecordType::A, 4), server)
        .await
        .unwrap();
    counted(&stats, "the fourth query rate-limited", |s| {
        s.outcome(Outcome::RateLimited) == 1
    })
    .await;
    // Over TCP the source is proven: the client is told.
    let refused = tcp(server, WEB, RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());
    assert_eq!(stats.outcome(Outcome::RateLimited), 2);
    assert_eq!(stats.outcome(Outcome::Answered), 3);
    running.shutdown().await;
}

#[tokio::test]
async fn a_malformed_packet_is_counted_and_dropped_and_the_server_keeps_answering() {
    let (running, feed) = start(roomy()).await;
    let server = running.local_addr();
    publish(
        &running,
        &feed,
        &imports(vec![source("c1", &["10.0.0.1"], true)]),
    )
    .await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(b"\x00\x01 not dns", server).await.unwrap();
    let mut forged = query(WEB, RecordType::A, 5);
    forged[4] = 0xff; // 65 281 questions claimed
    socket.send_to(&forged, server).await.unwrap();
    let stats = running.stats();
    counted(&stats, "two malformed packets", |s| {
        s.outcome(Outcome::Malformed) == 2
    })
    .await;
    let answer = udp(server, WEB, RecordType::A).await;
    assert_eq!(addresses(&answer), BTreeSet::from([ip("10.0.0.1")]));

    // Over TCP a malformed query closes the connection; a new one is answered.
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_all(&[0, 3, 1, 2, 3]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed without an answer: {read:?}"
    );
    assert_eq!(stats.outcome(Outcome::Malformed), 3);
    let answer = tcp(server, WEB, RecordType::A).await;
    assert_eq!(addresses(&answer), BTreeSet::from([ip("10.0.0.1")]));
    running.shutdown().await;
}

#[tokio::test]
async fn tcp_connections_are_bounded_and_an_idle_one_is_closed() {
    let limits = DnsLimits {
        tcp_connections_max: 1,
        tcp_idle_timeout: Duration::from_millis(300),
        ..roomy()
    };
    let (running, feed) = start(limits).await;
    let server = running.local_addr();
    publish(
        &running,
        &feed,
        &imports(vec![source("c1", &["10.0.0.1"], true)]),
    )
    .await;
    let stats = running.stats();
    let mut first = TcpStream::connect(server).await.unwrap();
    // Answered: the first connection holds the one slot.
    tcp_on(&mut first, WEB, RecordType::A).await;
    let mut second = TcpStream::connect(server).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, second.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "the second is closed: {read:?}");
    counted(&stats, "the second connection refused", |s| {
        s.snapshot().tcp_refused == 1
    })
    .await;
    // The first, silent from now on, is closed after the idle timeout.
    let read = tokio::time::timeout(WAIT, first.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "the idle one is closed: {read:?}"
    );
    counted(&stats, "the idle timeout counted", |s| {
        s.snapshot().tcp_timeouts == 1
    })
    .await;
    // Its slot is free again.
    let answer = tcp(server, WEB, RecordType::A).await;
    assert_eq!(addresses(&answer), BTreeSet::from([ip("10.0.0.1")]));
    running.shutdown().await;
}

#[tokio::test]
async fn a_port_in_use_is_a_bind_error() {
    let (running, _feed) = start(roomy()).await;
    let taken = running.local_addr();
    let error = DnsServer::bind(taken, DnsLimits::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DnsError::Bind { protocol: "udp", addr, .. } if *addr == taken),
        "{error}"
    );
    assert_eq!(error.metric_label(), "bind");
    running.shutdown().await;
}

// ----- through the driver -----

fn export() -> ExportSpec {
    ExportSpec {
        service: ServiceKey::new("shop", "web").unwrap(),
        export_created_ms: 1,
        service_type: ServiceType::ClusterSetIp,
        ports: http(),
        endpoints: vec![ready("10.7.0.1")],
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
    }
}

fn config_text(dir: &std::path::Path) -> String {
    let d = dir.display();
    format!(
        "cluster = \"east\"\npreset = \"lan\"\nlisten = \"127.0.0.1:0\"\n\
         data_dir = \"{d}/data\"\n\n[tls]\nca = \"{d}/ca/ca.crt\"\ncert = \"{d}/set/east.crt\"\n\
         key = \"{d}/set/east.key\"\nclusterset_dir = \"{d}/set\"\n\n[backend]\n\
         kind = \"standalone\"\ndir = \"{d}/standalone\"\n\n[dns]\nlisten = \"127.0.0.1:0\"\n"
    )
}

#[tokio::test]
async fn the_driver_feeds_its_imports_to_the_dns_server_and_reports_its_counters() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, set) = (dir.path().join("ca"), dir.path().join("set"));
    let east = ClusterId::new("east").unwrap();
    certs::init_ca(&ca, 30).unwrap();
    certs::issue(&ca, &east, &set, 30).unwrap();
    let config = config::parse(&config_text(dir.path()), Vec::new()).unwrap();
    let dns = config
        .dns
        .expect("[dns] enables DNS with the standalone backend");
    let (identity, transport, inbound) = support::east_transport(&config, &ca, &set, 0).await;
    let server = DnsServer::bind(dns.listen, dns.limits).await.unwrap();
    let (running, feed) = server.start();
    let addr = running.local_addr();
    let (backend, handle) = MemoryBackend::new();
    let driver = Driver::start(config, identity, transport, inbound, backend)
        .unwrap()
        .with_dns(feed);
    let (api, api_rx) = mpsc::channel(8);
    let (stop, stop_rx) = oneshot::channel::<()>();
    tokio::task::LocalSet::new()
        .run_until(async move {
            // The core is not Send: the driver runs on this thread, as in `shoal run`.
            let task = tokio::task::spawn_local(async move {
                driver
                    .run(api_rx, async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
            handle.set_leader(true).await;
            let exports = BTreeMap::from([(export().service.clone(), Ok(export()))]);
            handle.set_exports(exports).await;
            // This cluster's own export is imported, and answered.
            let deadline = Instant::now() + WAIT;
            loop {
                let answer = udp(addr, WEB, RecordType::A).await;
                if addresses(&answer) == BTreeSet::from([ip("10.7.0.1")]) {
                    break;
                }
                assert!(Instant::now() < deadline, "not answered: {answer:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (reply, rx) = oneshot::channel();
            api.send(ApiRequest::Metrics(reply)).await.unwrap();
            let metrics: MetricsSnapshot = rx.await.unwrap();
            let dns = metrics.dns.expect("the DNS counters");
            assert!(dns.queries["answered"] >= 1, "{dns:?}");
            assert!(dns.zone_builds >= 1 && dns.zone_names > 0, "{dns:?}");
            let _ = stop.send(());
            task.await.unwrap();
        })
        .await;
    running.shutdown().await;
}
