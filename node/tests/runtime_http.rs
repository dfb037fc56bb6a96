#![allow(clippy::unwrap_used, clippy::disallowed_methods)]
//! The HTTP API against a fake driver: every route, its status codes, and the
//! Prometheus text.

use std::net::SocketAddr;

use shoal_node::runtime::api::{
    ApiError, ApiRequest, ChaosView, ImportView, LeaseView, MetricsSnapshot, StatusView,
};
use shoal_node::runtime::http::{self, client, table};
use tokio::sync::mpsc;

fn status_view() -> StatusView {
    StatusView {
        cluster: "us-east".into(),
        replica: 0,
        generation: 4,
        publisher: true,
        listen: "127.0.0.1:7100".into(),
        uptime_ms: 10,
        isolated: false,
        stale_for_ms: None,
        records: 3,
        own_version: 9,
        clusters_alive: 2,
        clusters_down: 0,
    }
}

fn lease_view(name: &str) -> LeaseView {
    LeaseView {
        name: name.into(),
        holder: Some("us-east".into()),
        token: Some(7),
        expires_in_ms: Some(900),
        write_ready: true,
        wanted: true,
    }
}

/// A driver that answers every request like a healthy node, except chaos (disabled).
fn fake_driver(mut rx: mpsc::Receiver<ApiRequest>) {
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            match request {
                ApiRequest::Status(r) => drop(r.send(status_view())),
                ApiRequest::Peers(r) => drop(r.send(Vec::new())),
                ApiRequest::Services(r) => drop(r.send(Vec::new())),
                ApiRequest::Imports(r) => drop(r.send(vec![ImportView {
                    namespace: "default".into(),
                    name: "rebel-base".into(),
                    service_type: "ClusterSetIP".into(),
                    ports: vec!["http:80/TCP".into()],
                    clusters: [("eu-west".to_owned(), 2), ("us-east".to_owned(), 2)].into(),
                    endpoints: 4,
                    conflicts: Vec::new(),
                }])),
                ApiRequest::Lease { name, reply, .. } => {
                    let answer = if name.contains('_') {
                        Err(ApiError::bad_request("invalid lease name"))
                    } else {
                        Ok(lease_view(&name))
                    };
                    drop(reply.send(answer));
                }
                ApiRequest::Leases(r) => drop(r.send(vec![lease_view("payments-write-leader")])),
                ApiRequest::Metrics(r) => drop(r.send(MetricsSnapshot::default())),
                ApiRequest::Chaos { reply, .. } => {
                    drop(reply.send(Err::<ChaosView, _>(ApiError {
                        status: 403,
                        message: "chaos is not enabled".into(),
                    })))
                }
            }
        }
    });
}

async fn server(capacity: usize, answer: bool) -> (SocketAddr, mpsc::Sender<ApiRequest>) {
    let (tx, rx) = mpsc::channel(capacity);
    if answer {
        fake_driver(rx);
    } else {
        // Keep the receiver alive but never answer: requests queue up.
        tokio::spawn(async move {
            let _rx = rx;
            std::future::pending::<()>().await;
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(listener, tx.clone(), std::future::pending()));
    (addr, tx)
}

#[tokio::test]
async fn every_route_answers_with_the_drivers_views() {
    let (api, _tx) = server(16, true).await;
    assert_eq!(client::get(api, "/healthz").await.unwrap().status, 200);
    assert_eq!(client::get(api, "/readyz").await.unwrap().status, 200);
    let status: StatusView = client::get(api, "/v1/status")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(status, status_view());
    for path in ["/v1/peers", "/v1/services", "/v1/imports", "/v1/leases"] {
        assert_eq!(client::get(api, path).await.unwrap().status, 200, "{path}");
    }
    let lease: LeaseView = client::post_json(api, "/v1/leases/payments-write-leader", &())
        .await
        .unwrap()
        .json()
        .unwrap();
    assert!(lease.write_ready && lease.token == Some(7));
    assert_eq!(
        client::delete(api, "/v1/leases/payments-write-leader")
            .await
            .unwrap()
            .status,
        200
    );
    let metrics = client::get(api, "/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("# TYPE shoal_records gauge"));
    let report = table::fetch_and_render(api).await.unwrap();
    assert!(report.contains("rebel-base"), "{report}");
    assert!(report.contains("eu-west(2) us-east(2)"), "{report}");
    assert!(report.contains("payments-write-leader"), "{report}");
}

#[tokio::test]
async fn bad_requests_get_clear_status_codes() {
    let (api, _tx) = server(16, true).await;
    assert_eq!(client::get(api, "/v1/nothing").await.unwrap().status, 404);
    let bad_lease = client::get(api, "/v1/leases/Not_A_Label").await.unwrap();
    assert_eq!(bad_lease.status, 400);
    assert!(bad_lease.text().contains("invalid lease name"));
    let bad_json = client::post_json(api, "/v1/chaos", &serde_json::json!({"op": "explode"}))
        .await
        .unwrap();
    assert_eq!(bad_json.status, 400, "{}", bad_json.text());
    let bad_rate = client::post_json(
        api,
        "/v1/chaos",
        &serde_json::json!({"op": "loss", "cluster": null, "rate": 3.0}),
    )
    .await
    .unwrap();
    assert_eq!(bad_rate.status, 400);
    let disabled = client::post_json(api, "/v1/chaos", &serde_json::json!({"op": "clear"}))
        .await
        .unwrap();
    assert_eq!(disabled.status, 403);
}

#[tokio::test]
async fn a_full_or_silent_driver_answers_503() {
    let (api, tx) = server(1, false).await;
    // The one slot fills with a request the driver never takes.
    let (reply, _keep) = tokio::sync::oneshot::channel();
    tx.try_send(ApiRequest::Status(reply)).unwrap();
    let busy = client::get(api, "/v1/status").await.unwrap();
    assert_eq!(busy.status, 503);
    assert!(busy.text().contains("busy"), "{}", busy.text());
    assert_eq!(client::get(api, "/readyz").await.unwrap().status, 503);
}
