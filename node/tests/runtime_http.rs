#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]
// Tests own their tasks: the fake driver and the server run on the test's runtime.
#![allow(clippy::disallowed_methods)]
//! The HTTP API against a fake driver on loopback: every route, the error statuses,
//! the Prometheus text (checked by a small validator), the client, and the
//! `shoal status` table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use shoal_node::runtime::api::{
    ApiError, ApiRequest, ChaosOp, ChaosView, Direction, ImportView, LeaseOp, LeaseView,
    MetricsSnapshot, PeerMetrics, PeerView, ServiceView, StatusView,
};
use shoal_node::runtime::http::{
    self, ClientError, ServerLimits, client, fetch_and_render, render_status, serve_with,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Every wait in these tests ends within this.
const DEADLINE: Duration = Duration::from_secs(10);

// ---- fixtures ------------------------------------------------------------------------

fn status_view() -> StatusView {
    StatusView {
        cluster: "east".into(),
        replica: 0,
        generation: 3,
        publisher: true,
        listen: "127.0.0.1:7100".into(),
        uptime_ms: 3_723_000,
        isolated: false,
        stale_for_ms: Some(1_200),
        records: 12,
        own_version: 5,
        clusters_alive: 2,
        clusters_down: 1,
    }
}

fn peer_views() -> Vec<PeerView> {
    vec![
        PeerView {
            cluster: "west".into(),
            replica: 1,
            addr: "10.0.2.11:7100".into(),
            state: "suspect".into(),
            rtt_ms: None,
            bytes_in: 512,
            bytes_out: 0,
        },
        PeerView {
            cluster: "north".into(),
            replica: 0,
            addr: "10.0.1.10:7100".into(),
            state: "alive".into(),
            rtt_ms: Some(1.25),
            bytes_in: 1536,
            bytes_out: 3 * 1024 * 1024,
        },
        PeerView {
            cluster: "west".into(),
            replica: 0,
            addr: "10.0.2.10:7100".into(),
            state: "alive".into(),
            rtt_ms: Some(12.0),
            bytes_in: 20_480,
            bytes_out: 40_960,
        },
    ]
}

fn service_views() -> Vec<ServiceView> {
    vec![ServiceView {
        namespace: "shop".into(),
        name: "cart".into(),
        version: 7,
        service_type: "ClusterSetIP".into(),
        ports: vec!["http/TCP/80".into(), "grpc/TCP/9090".into()],
        endpoints: 3,
        ready_endpoints: 2,
    }]
}

fn import_views() -> Vec<ImportView> {
    vec![
        ImportView {
            namespace: "shop".into(),
            name: "pay".into(),
            service_type: "Headless".into(),
            ports: vec![],
            clusters: BTreeMap::from([("north".into(), 1)]),
            endpoints: 1,
            conflicts: vec!["west: type Headless differs from ClusterSetIP".into()],
            affinity: "none".into(),
            active: vec!["north".into()],
            traffic: "all-origins".into(),
        },
        ImportView {
            namespace: "shop".into(),
            name: "cart".into(),
            service_type: "ClusterSetIP".into(),
            ports: vec!["http/TCP/80".into()],
            clusters: BTreeMap::from([("east".into(), 2), ("north".into(), 4)]),
            endpoints: 6,
            conflicts: vec![],
            affinity: "local".into(),
            active: vec!["east".into()],
            traffic: "local".into(),
        },
    ]
}

fn lease_view(name: &str, op: LeaseOp) -> LeaseView {
    LeaseView {
        name: name.into(),
        holder: Some("east".into()),
        token: Some(42),
        expires_in_ms: Some(4_250),
        write_ready: op != LeaseOp::Release,
        wanted: op == LeaseOp::Acquire,
    }
}

fn lease_views() -> Vec<LeaseView> {
    vec![
        lease_view("payments-write-leader", LeaseOp::Acquire),
        LeaseView {
            name: "batch".into(),
            holder: None,
            token: None,
            expires_in_ms: None,
            write_ready: false,
            wanted: false,
        },
    ]
}

fn metrics_snapshot() -> MetricsSnapshot {
    MetricsSnapshot {
        members: BTreeMap::from([("alive".into(), 3), ("suspect".into(), 1)]),
        clusters_alive: 2,
        clusters_down: 1,
        records: 12,
        imports: 2,
        core_counters: BTreeMap::from([
            ("records_accepted".into(), 10),
            ("lease-rounds".into(), 4),
        ]),
        peers: vec![
            PeerMetrics {
                cluster: "west".into(),
                replica: 0,
                rtt_seconds: Some(0.012),
                bytes_in: 20_480,
                bytes_out: 40_960,
            },
            PeerMetrics {
                cluster: "north".into(),
                replica: 0,
                rtt_seconds: None,
                bytes_in: 1,
                bytes_out: 2,
            },
        ],
        rejects: BTreeMap::from([("bad \"frame\"\nline\\".into(), 2), ("forged".into(), 1)]),
        propagation_lag_last_seconds: Some(0.3),
        propagation_lag_buckets: vec![(0.1, 1), (0.5, 4), (1.0, 5)],
        propagation_lag_sum_seconds: 2.5,
        propagation_lag_count: 6,
        leases: lease_views(),
        isolated: false,
        backend: vec![
            ("writes".into(), "endpointslices".into(), 7),
            ("writes".into(), "services".into(), 2),
            ("errors".into(), "conflict".into(), 1),
        ],
        publisher: true,
        leadership_changes: 3,
        swim_ack: vec![shoal_node::runtime::api::SwimAckMetrics {
            cluster: "west".into(),
            replica: Some(0),
            buckets: vec![(0.001, 0), (0.005, 3), (0.01, 4)],
            sum_seconds: 0.0135,
            count: 5,
        }],
        dns: Some(shoal_node::runtime::api::DnsMetrics {
            queries: BTreeMap::from([("answered".into(), 9), ("rate_limited".into(), 2)]),
            zone_names: 14,
            ..Default::default()
        }),
    }
}

// ---- the fake driver -----------------------------------------------------------------

/// How the fake driver behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Answers every request with the fixtures; chaos is enabled.
    Answer,
    /// Answers views, refuses every lease (409) and chaos (403, disabled).
    Refuse,
    /// Takes every request and never answers (keeps the reply open).
    Silent,
    /// Takes every request and drops its reply.
    DropReply,
}

async fn fake_driver(mut requests: mpsc::Receiver<ApiRequest>, mode: Mode) {
    let mut held = Vec::new();
    while let Some(request) = requests.recv().await {
        match mode {
            Mode::Silent => held.push(request),
            Mode::DropReply => drop(request),
            Mode::Answer | Mode::Refuse => answer(request, mode == Mode::Refuse),
        }
    }
}

fn answer(request: ApiRequest, refuse: bool) {
    // A test that stops listening is not the driver's problem: ignore send errors.
    let _ = match request {
        ApiRequest::Status(r) => r.send(status_view()).map_err(drop),
        ApiRequest::Peers(r) => r.send(peer_views()).map_err(drop),
        ApiRequest::Services(r) => r.send(service_views()).map_err(drop),
        ApiRequest::Imports(r) => r.send(import_views()).map_err(drop),
        ApiRequest::Leases(r) => r.send(lease_views()).map_err(drop),
        ApiRequest::Metrics(r) => r.send(metrics_snapshot()).map_err(drop),
        ApiRequest::Lease { name, op, reply } => {
            let result = if refuse {
                Err(ApiError::conflict(format!("{name} is held by west")))
            } else {
                Ok(lease_view(&name, op))
            };
            reply.send(result).map_err(drop)
        }
        ApiRequest::Chaos { op, reply } => {
            let result = if refuse {
                Err(ApiError {
                    status: 403,
                    message: "chaos is disabled in this node's config".into(),
                })
            } else {
                Ok(chaos_view(op))
            };
            reply.send(result).map_err(drop)
        }
    };
}

fn chaos_view(op: ChaosOp) -> ChaosView {
    let mut view = ChaosView::default();
    match op {
        ChaosOp::Cut { cluster, direction } => {
            view.cuts.insert(cluster, vec![direction]);
        }
        ChaosOp::Loss { cluster, rate } => {
            view.loss
                .insert(cluster.unwrap_or_else(|| "*".into()), rate);
        }
        ChaosOp::Restore { .. } | ChaosOp::Clear | ChaosOp::Show => {}
    }
    view
}

// ---- the harness ---------------------------------------------------------------------

fn test_limits() -> ServerLimits {
    ServerLimits {
        ready_wait: Duration::from_millis(200),
        reply_wait: Duration::from_millis(200),
        ..ServerLimits::default()
    }
}

struct Harness {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    /// Keeps a driver-less channel open (the full-channel case).
    _requests: Option<mpsc::Receiver<ApiRequest>>,
}

impl Harness {
    async fn start(mode: Mode) -> Self {
        let (driver, requests) = mpsc::channel(8);
        tokio::spawn(fake_driver(requests, mode));
        Self::with_driver(driver, None, test_limits()).await
    }

    async fn with_driver(
        driver: mpsc::Sender<ApiRequest>,
        requests: Option<mpsc::Receiver<ApiRequest>>,
        limits: ServerLimits,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve_with(listener, driver, shutdown, limits));
        Self {
            addr,
            stop: Some(stop),
            server,
            _requests: requests,
        }
    }

    async fn get(&self, path: &str) -> client::Response {
        timeout(DEADLINE, client::get(self.addr, path))
            .await
            .expect("the client has its own timeout")
            .unwrap()
    }

    async fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> client::Response {
        timeout(DEADLINE, client::send(self.addr, method, path, body))
            .await
            .expect("the client has its own timeout")
            .unwrap()
    }

    /// Stops the server and checks that it returns cleanly.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = timeout(DEADLINE, &mut self.server).await;
        result.expect("the server stops").unwrap().unwrap();
    }
}

fn assert_error(response: &client::Response, status: u16, contains: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    let message = response.error_message();
    assert!(message.contains(contains), "{message:?} lacks {contains:?}");
}

// ---- routes --------------------------------------------------------------------------

#[tokio::test]
async fn health_and_readiness() {
    let h = Harness::start(Mode::Answer).await;
    let health = h.get("/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    h.stop().await;
}

#[tokio::test]
async fn views_are_the_drivers_json() {
    let h = Harness::start(Mode::Answer).await;
    assert_eq!(
        h.get("/v1/status").await.json::<StatusView>().unwrap(),
        status_view()
    );
    assert_eq!(
        h.get("/v1/peers").await.json::<Vec<PeerView>>().unwrap(),
        peer_views()
    );
    let services = h
        .get("/v1/services")
        .await
        .json::<Vec<ServiceView>>()
        .unwrap();
    assert_eq!(services, service_views());
    let imports = h
        .get("/v1/imports")
        .await
        .json::<Vec<ImportView>>()
        .unwrap();
    assert_eq!(imports, import_views());
    let leases = h.get("/v1/leases").await.json::<Vec<LeaseView>>().unwrap();
    assert_eq!(leases, lease_views());
    h.stop().await;
}

#[tokio::test]
async fn lease_get_acquire_release() {
    let h = Harness::start(Mode::Answer).await;
    let path = "/v1/leases/payments-write-leader";
    let cases = [
        ("GET", LeaseOp::Get),
        ("POST", LeaseOp::Acquire),
        ("DELETE", LeaseOp::Release),
    ];
    for (method, op) in cases {
        let response = h.send(method, path, None).await;
        assert_eq!(response.status, 200, "{method}: {}", response.text());
        let view: LeaseView = response.json().unwrap();
        assert_eq!(view, lease_view("payments-write-leader", op), "{method}");
    }
    let posted = client::post(h.addr, path).await.unwrap();
    assert!(posted.json::<LeaseView>().unwrap().wanted);
    let deleted = client::delete(h.addr, path).await.unwrap();
    assert!(!deleted.json::<LeaseView>().unwrap().wanted);
    // The JSON names the fields the CLI and applications read.
    let raw: serde_json::Value = h.get(path).await.json().unwrap();
    for field in ["holder", "token", "expires_in_ms", "write_ready", "wanted"] {
        assert!(raw.get(field).is_some(), "{field} missing from {raw}");
    }
    h.stop().await;
}

#[tokio::test]
async fn an_invalid_lease_name_is_400_and_never_reaches_the_driver() {
    // A silent driver would turn any forwarded request into a 503.
    let h = Harness::start(Mode::Silent).await;
    let long = format!("/v1/leases/{}", "a".repeat(64));
    for path in [
        "/v1/leases/Bad_Name",
        "/v1/leases/-x",
        long.as_str(),
        "/v1/leases/%FF",
    ] {
        let response = h.get(path).await;
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert!(!response.error_message().is_empty());
    }
    assert_error(&h.get("/v1/leases/Bad_Name").await, 400, "lease name");
    h.stop().await;
}

#[tokio::test]
async fn a_refused_lease_answers_the_drivers_status() {
    let h = Harness::start(Mode::Refuse).await;
    let response = h
        .send("POST", "/v1/leases/payments-write-leader", None)
        .await;
    assert_error(&response, 409, "held by west");
    h.stop().await;
}

#[tokio::test]
async fn chaos_show_and_apply() {
    let h = Harness::start(Mode::Answer).await;
    let shown = h.get("/v1/chaos").await;
    assert_eq!(shown.json::<ChaosView>().unwrap(), ChaosView::default());
    let cut = ChaosOp::Cut {
        cluster: "west".into(),
        direction: Direction::Both,
    };
    let response = client::post_json(h.addr, "/v1/chaos", &cut).await.unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let view: ChaosView = response.json().unwrap();
    assert_eq!(
        view.cuts,
        BTreeMap::from([("west".into(), vec![Direction::Both])])
    );
    let loss = json!({"op": "loss", "cluster": null, "rate": 0.25});
    let view: ChaosView = client::post_json(h.addr, "/v1/chaos", &loss)
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(view.loss, BTreeMap::from([("*".into(), 0.25)]));
    h.stop().await;
}

#[tokio::test]
async fn bad_chaos_bodies_are_400_or_413() {
    let h = Harness::start(Mode::Answer).await;
    let bad_json = h
        .send("POST", "/v1/chaos", Some(b"{\"op\": \"cut\", "))
        .await;
    assert_error(&bad_json, 400, "malformed JSON");
    let unknown_op = h
        .send("POST", "/v1/chaos", Some(br#"{"op":"explode"}"#))
        .await;
    assert_error(&unknown_op, 400, "malformed JSON");
    let empty = h.send("POST", "/v1/chaos", None).await;
    assert_error(&empty, 400, "malformed JSON");
    let rate = json!({"op": "loss", "cluster": "west", "rate": 2.0});
    let out_of_range = client::post_json(h.addr, "/v1/chaos", &rate).await.unwrap();
    assert_error(&out_of_range, 400, "loss rate");
    let huge = vec![b' '; ServerLimits::default().body_bytes_max + 1];
    let too_large = h.send("POST", "/v1/chaos", Some(&huge)).await;
    assert_eq!(too_large.status, 413, "{}", too_large.text());
    h.stop().await;
}

#[tokio::test]
async fn chaos_disabled_is_403() {
    let h = Harness::start(Mode::Refuse).await;
    assert_error(&h.get("/v1/chaos").await, 403, "disabled");
    let clear = client::post_json(h.addr, "/v1/chaos", &ChaosOp::Clear)
        .await
        .unwrap();
    assert_error(&clear, 403, "disabled");
    h.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let h = Harness::start(Mode::Answer).await;
    assert_error(&h.get("/v2/status").await, 404, "/v2/status");
    assert_error(&h.get("/").await, 404, "no route");
    assert_error(&h.send("PUT", "/v1/status", None).await, 405, "method");
    h.stop().await;
}

// ---- a driver that fails -------------------------------------------------------------

#[tokio::test]
async fn a_silent_driver_is_503_after_the_wait() {
    let h = Harness::start(Mode::Silent).await;
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("did not answer"), "{}", ready.text());
    for path in ["/v1/status", "/v1/leases/x", "/metrics", "/v1/chaos"] {
        assert_error(&h.get(path).await, 503, "did not answer");
    }
    h.stop().await;
}

#[tokio::test]
async fn a_dropped_reply_is_503() {
    let h = Harness::start(Mode::DropReply).await;
    assert_eq!(h.get("/readyz").await.status, 503);
    assert_error(&h.get("/v1/peers").await, 503, "dropped");
    assert_error(
        &h.send("DELETE", "/v1/leases/x", None).await,
        503,
        "dropped",
    );
    h.stop().await;
}

#[tokio::test]
async fn a_full_driver_channel_is_503() {
    let (driver, requests) = mpsc::channel(1);
    let (filler, _never_answered) = oneshot::channel();
    driver.try_send(ApiRequest::Status(filler)).unwrap();
    let h = Harness::with_driver(driver, Some(requests), test_limits()).await;
    assert_error(&h.get("/v1/imports").await, 503, "busy");
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("busy"), "{}", ready.text());
    h.stop().await;
}

#[tokio::test]
async fn a_stopped_driver_is_503_but_health_stays_ok() {
    let (driver, requests) = mpsc::channel(1);
    drop(requests);
    let h = Harness::with_driver(driver, None, test_limits()).await;
    assert_error(&h.get("/v1/status").await, 503, "stopped");
    assert_eq!(h.get("/readyz").await.status, 503);
    assert_eq!(h.get("/healthz").await.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_frees_its_slot() {
    let (driver, requests) = mpsc::channel(8);
    tokio::spawn(fake_driver(requests, Mode::Answer));
    let limits = ServerLimits {
        connections_max: 1,
        connection_lifetime: Duration::from_millis(300),
        ..test_limits()
    };
    let h = Harness::with_driver(driver, None, limits).await;
    // This connection takes the only slot and sends nothing.
    let mut idle = TcpStream::connect(h.addr).await.unwrap();
    // One more is refused at once with a 503, not left in the kernel's backlog.
    let mut refused = TcpStream::connect(h.addr).await.unwrap();
    let mut answer = Vec::new();
    timeout(DEADLINE, refused.read_to_end(&mut answer))
        .await
        .expect("refused at once")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
    // The lifetime closes the idle one (end of stream or reset, not this deadline)
    // and frees its slot.
    let mut rest = Vec::new();
    let _ = timeout(DEADLINE, idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed");
    assert!(rest.is_empty(), "an idle connection got {rest:?}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !matches!(client::get(h.addr, "/healthz").await, Ok(r) if r.status == 200) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
}

// ---- metrics -------------------------------------------------------------------------

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let h = Harness::start(Mode::Answer).await;
    assert_eq!(h.get("/nowhere").await.status, 404);
    let response = h.get("/metrics").await;
    assert_eq!(response.status, 200);
    let text = response.text();
    let samples = validate_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let labels: BTreeMap<String, String> = (labels.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found = samples
            .iter()
            .find(|s| s.name == name && s.labels == labels);
        found
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
            .value
    };
    assert_eq!(value("shoal_members", &[("state", "alive")]), 3.0);
    assert_eq!(value("shoal_members", &[("state", "down")]), 0.0);
    assert_eq!(value("shoal_clusters", &[("state", "down")]), 1.0);
    assert_eq!(value("shoal_records", &[]), 12.0);
    assert_eq!(value("shoal_imports", &[]), 2.0);
    assert_eq!(value("shoal_isolated", &[]), 0.0);
    assert_eq!(value("shoal_records_accepted_total", &[]), 10.0);
    assert_eq!(value("shoal_lease_rounds_total", &[]), 4.0);
    let west = [("cluster", "west"), ("replica", "0")];
    assert_eq!(value("shoal_peer_rtt_seconds", &west), 0.012);
    assert_eq!(value("shoal_peer_received_bytes_total", &west), 20_480.0);
    assert_eq!(value("shoal_peer_sent_bytes_total", &west), 40_960.0);
    let odd_reason = [("reason", "bad \"frame\"\nline\\")];
    assert_eq!(value("shoal_rejects_total", &odd_reason), 2.0);
    assert_eq!(
        value("shoal_propagation_lag_seconds_bucket", &[("le", "+Inf")]),
        6.0
    );
    assert_eq!(value("shoal_propagation_lag_seconds_count", &[]), 6.0);
    assert_eq!(value("shoal_propagation_lag_seconds_sum", &[]), 2.5);
    let leader = [("lease", "payments-write-leader")];
    assert_eq!(value("shoal_lease_held", &leader), 1.0);
    assert_eq!(value("shoal_lease_token", &leader), 42.0);
    assert_eq!(value("shoal_lease_held", &[("lease", "batch")]), 0.0);
    assert_eq!(
        value("shoal_http_errors_total", &[("reason", "not_found")]),
        1.0
    );
    let slices = [("label", "endpointslices")];
    assert_eq!(value("shoal_backend_writes_total", &slices), 7.0);
    assert_eq!(
        value("shoal_backend_writes_total", &[("label", "services")]),
        2.0
    );
    assert_eq!(
        value("shoal_backend_errors_total", &[("label", "conflict")]),
        1.0
    );
    assert_eq!(value("shoal_publisher", &[]), 1.0);
    assert_eq!(value("shoal_leadership_changes_total", &[]), 3.0);
    assert_eq!(
        value("shoal_dns_queries_total", &[("outcome", "rate_limited")]),
        2.0
    );
    assert_eq!(value("shoal_dns_zone_names", &[]), 14.0);
    assert!(text.contains("shoal_rejects_total{reason=\"bad \\\"frame\\\"\\nline\\\\\"} 2\n"));
    h.stop().await;
}

#[test]
fn the_validator_rejects_broken_text() {
    let broken = [
        "shoal_x 1\n",
        "# HELP shoal_x x\nshoal_x 1\n",
        "# HELP shoal_x x\n# TYPE shoal_x gauge\nshoal_x{a=\"1} 1\n",
        "# HELP shoal_x x\n# TYPE shoal_x gauge\nshoal_x one\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n\
         h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n",
    ];
    for text in broken {
        assert!(validate_exposition(text).is_err(), "accepted:\n{text}");
    }
    let good = "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n\
        h_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
    assert_eq!(validate_exposition(good).unwrap().len(), 4);
}

/// One sample line, parsed.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Checks Prometheus text format 0.0.4 as this project writes it: every sample is
/// `name{labels} value`; every family has one HELP and one TYPE line before its
/// samples, which are contiguous; counters end in `_total`; histogram buckets are
/// cumulative, end with `+Inf`, and `_count` equals it.
fn validate_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut help = BTreeMap::new();
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut finished = Vec::<String>::new();
    let mut current: Option<String> = None;
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
            if help.insert(name.to_owned(), ()).is_some() {
                return Err(format!("second HELP for {name}"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unknown type {kind}"));
            }
            if !help.contains_key(name) || kinds.insert(name.into(), kind.into()).is_some() {
                return Err(format!("TYPE of {name} without HELP, or twice"));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(format!("counter {name} does not end in _total"));
            }
        } else {
            let sample = parse_sample(line)?;
            let family = family_of(&sample.name, &kinds)?;
            if current.as_deref() != Some(family.as_str()) {
                if finished.contains(&family) {
                    return Err(format!("samples of {family} are not contiguous"));
                }
                finished.extend(current.replace(family.clone()));
            }
            samples.push(sample);
        }
    }
    for (family, kind) in &kinds {
        if kind == "histogram" {
            check_histogram(family, &samples)?;
        }
    }
    Ok(samples)
}

/// The family a sample belongs to, which must be declared.
fn family_of(name: &str, kinds: &BTreeMap<String, String>) -> Result<String, String> {
    if kinds.contains_key(name) {
        return Ok(name.to_owned());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && kinds.get(base).map(String::as_str) == Some("histogram")
        {
            return Ok(base.to_owned());
        }
    }
    Err(format!("sample {name} has no HELP and TYPE"))
}

fn check_histogram(family: &str, samples: &[Sample]) -> Result<(), String> {
    let bucket = format!("{family}_bucket");
    let mut last_le = f64::NEG_INFINITY;
    let mut last_count = 0.0;
    for s in samples.iter().filter(|s| s.name == bucket) {
        let le = s.labels.get("le").ok_or(format!("{bucket} without le"))?;
        let le: f64 = parse_value(le)?;
        if le <= last_le || s.value < last_count {
            return Err(format!("{bucket} is not sorted and cumulative"));
        }
        (last_le, last_count) = (le, s.value);
    }
    if last_le != f64::INFINITY {
        return Err(format!("{bucket} does not end with +Inf"));
    }
    let count = samples.iter().find(|s| s.name == format!("{family}_count"));
    let has_sum = samples.iter().any(|s| s.name == format!("{family}_sum"));
    match count {
        Some(c) if c.value == last_count && has_sum => Ok(()),
        _ => Err(format!(
            "{family}: _count differs from +Inf, or _sum missing"
        )),
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .ok_or(format!("no value: {line}"))?;
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("bad metric name: {line}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner).map_err(|e| format!("{e}: {line}"))?;
        labels = parsed;
        rest = after;
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or(format!("no space before value: {line}"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: parse_value(value)?,
    })
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the brace.
fn parse_labels(mut rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("bad escape".into()),
                },
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(raw: &str) -> Result<f64, String> {
    match raw {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if raw.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
            raw.parse().map_err(|_| format!("bad value {raw:?}"))
        }
        _ => Err(format!("bad value {raw:?}")),
    }
}

// ---- the status table ----------------------------------------------------------------

const GOLDEN_STATUS: &str = "\
cluster east replica 0 generation 3: publisher, listening on 127.0.0.1:7100, up 1h02m
view: 12 records, own version 5; clusters: 2 alive, 1 down; connected

PEERS (3)
CLUSTER  REPLICA  ADDRESS         STATE        RTT        IN       OUT
north          0  10.0.1.10:7100  alive     1.2 ms   1.5 KiB   3.0 MiB
west           0  10.0.2.10:7100  alive    12.0 ms  20.0 KiB  40.0 KiB
west           1  10.0.2.11:7100  suspect        -     512 B       0 B

EXPORTED SERVICES (1)
SERVICE    VERSION  TYPE          PORTS                      READY/TOTAL
shop/cart        7  ClusterSetIP  http/TCP/80,grpc/TCP/9090          2/3

IMPORTS (2)
SERVICE    TYPE          PORTS        CLUSTERS        ENDPOINTS  AFFINITY           ACTIVE  CONFLICTS
shop/cart  ClusterSetIP  http/TCP/80  east=2,north=4          6  local: local       east    -
shop/pay   Headless      -            north=1                 1  none: all-origins  north   west: type Headless differs from ClusterSetIP

LEASES (2)
NAME                   HOLDER  TOKEN  EXPIRES IN  WRITE-READY  WANTED
batch                  -           -           -  no           no
payments-write-leader  east       42        4.2s  yes          yes
";

#[test]
fn status_table_golden() {
    let rendered = render_status(
        &status_view(),
        &peer_views(),
        &service_views(),
        &import_views(),
        &lease_views(),
    );
    assert_eq!(rendered, GOLDEN_STATUS, "\n{rendered}");
}

#[test]
fn status_table_when_isolated_and_empty() {
    let status = StatusView {
        isolated: true,
        publisher: false,
        stale_for_ms: Some(42_000),
        ..status_view()
    };
    let rendered = render_status(&status, &[], &[], &[], &[]);
    let expected = "\
cluster east replica 0 generation 3: standby, listening on 127.0.0.1:7100, up 1h02m
view: 12 records, own version 5; clusters: 2 alive, 1 down; ISOLATED, serving the last view, stale for 42.0s

PEERS: none

EXPORTED SERVICES: none

IMPORTS: none

LEASES: none
";
    assert_eq!(rendered, expected);
}

#[tokio::test]
async fn fetch_and_render_matches_the_views() {
    let h = Harness::start(Mode::Answer).await;
    let rendered = timeout(DEADLINE, fetch_and_render(h.addr))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rendered, GOLDEN_STATUS);
    h.stop().await;
}

#[tokio::test]
async fn fetch_and_render_reports_an_error_status() {
    let h = Harness::start(Mode::DropReply).await;
    let error = timeout(DEADLINE, fetch_and_render(h.addr))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, ClientError::Status { status: 503, .. }),
        "{error}"
    );
    assert_eq!(error.metric_label(), "status");
    h.stop().await;
}

// ---- the client against raw servers --------------------------------------------------

/// Serves one connection with `response` after reading the request head.
async fn one_shot_server(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap() == 1 {
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"GET /x HTTP/1.1\r\n"));
        assert!(head.windows(17).any(|w| w == b"Connection: close"));
        stream.write_all(response).await.unwrap();
    });
    addr
}

#[tokio::test]
async fn client_reads_a_chunked_response() {
    let addr = one_shot_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1,2\r\n2\r\n,3\r\n1\r\n]\r\n0\r\n\r\n",
    )
    .await;
    let response = timeout(DEADLINE, http::get(addr, "/x"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.json::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
}

#[tokio::test]
async fn client_reports_a_truncated_response() {
    let addr = one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
    let error = timeout(DEADLINE, http::get(addr, "/x"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.metric_label(), "malformed", "{error}");
}

#[tokio::test]
async fn client_reports_a_refused_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = timeout(DEADLINE, http::get(addr, "/"))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.metric_label(), "connect", "{error}");
}

/// The SWIM ack latency histogram is its own family, labelled by peer, valid Prometheus
/// text: cumulative buckets ending with `+Inf` equal to `_count` (5: one ack slower
/// than the last bound).
#[tokio::test]
async fn metrics_have_the_swim_ack_histogram_per_peer() {
    let h = Harness::start(Mode::Answer).await;
    let text = h.get("/metrics").await.text();
    let samples = validate_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let family = "shoal_swim_ack_seconds";
    assert!(
        text.contains(&format!("# TYPE {family} histogram\n")),
        "{text}"
    );
    let west: Vec<(String, f64)> = samples
        .iter()
        .filter(|s| {
            s.name.starts_with(family)
                && s.labels.get("cluster").map(String::as_str) == Some("west")
        })
        .map(|s| {
            let le = s
                .labels
                .get("le")
                .map_or(String::new(), |le| format!("{{{le}}}"));
            (format!("{}{le}", s.name), s.value)
        })
        .collect();
    let expected: Vec<(String, f64)> = [
        ("shoal_swim_ack_seconds_bucket{0.001}", 0.0),
        ("shoal_swim_ack_seconds_bucket{0.005}", 3.0),
        ("shoal_swim_ack_seconds_bucket{0.01}", 4.0),
        ("shoal_swim_ack_seconds_bucket{+Inf}", 5.0),
        ("shoal_swim_ack_seconds_sum", 0.0135),
        ("shoal_swim_ack_seconds_count", 5.0),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    assert_eq!(west, expected, "{text}");
    h.stop().await;
}
