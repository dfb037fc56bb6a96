//! The HTTP API (axum): health, readiness, Prometheus metrics, the `/v1` JSON views,
//! leases and chaos. Every answer comes from the driver through a bounded channel: a
//! full channel answers 503 at once, and a driver that does not answer in time, 503.
//!
//! - `metrics`: the Prometheus text exposition of a [`MetricsSnapshot`].
//! - `client`: a small HTTP/1.1 client for the CLI, the demo and tests.
//! - `table`: the `shoal status` report.

pub mod client;
pub mod metrics;
pub mod table;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::api::{ApiError, ApiRequest, ChaosOp, LeaseOp, MetricsSnapshot};

/// Largest request body (a chaos order is a few dozen bytes).
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// How long a request waits for the driver.
const DRIVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Api {
    driver: mpsc::Sender<ApiRequest>,
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    driver: mpsc::Sender<ApiRequest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(driver))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, for tests that drive them without a socket.
pub fn router(driver: mpsc::Sender<ApiRequest>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/services", get(services))
        .route("/v1/imports", get(imports))
        .route("/v1/leases", get(leases))
        .route(
            "/v1/leases/{name}",
            get(lease_get).post(lease_acquire).delete(lease_release),
        )
        .route("/v1/chaos", get(chaos_show).post(chaos))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(Api { driver })
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({ "error": message.into() });
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

/// Sends a request built around a reply channel, and waits for the answer.
async fn ask<T>(
    api: &Api,
    request: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    api.driver
        .try_send(request(tx))
        .map_err(|_| ApiError::unavailable("the node is busy: its request queue is full"))?;
    match tokio::time::timeout(DRIVER_ANSWER_TIMEOUT, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(ApiError::unavailable("the node stopped before answering")),
        Err(_) => Err(ApiError::unavailable("the node did not answer in time")),
    }
}

fn json<T: Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn readyz(State(api): State<Api>) -> Response {
    match ask(&api, ApiRequest::Status).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics_text(State(api): State<Api>) -> Response {
    match ask(&api, ApiRequest::Metrics).await {
        Ok(snapshot) => render_metrics(&snapshot),
        Err(e) => e.into_response(),
    }
}

fn render_metrics(snapshot: &MetricsSnapshot) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(snapshot),
    )
        .into_response()
}

async fn status(State(api): State<Api>) -> Response {
    json(ask(&api, ApiRequest::Status).await)
}

async fn peers(State(api): State<Api>) -> Response {
    json(ask(&api, ApiRequest::Peers).await)
}

async fn services(State(api): State<Api>) -> Response {
    json(ask(&api, ApiRequest::Services).await)
}

async fn imports(State(api): State<Api>) -> Response {
    json(ask(&api, ApiRequest::Imports).await)
}

async fn leases(State(api): State<Api>) -> Response {
    json(ask(&api, ApiRequest::Leases).await)
}

async fn lease(api: &Api, name: String, op: LeaseOp) -> Response {
    let answer = ask(api, |reply| ApiRequest::Lease { name, op, reply }).await;
    json(answer.and_then(|r| r))
}

async fn lease_get(State(api): State<Api>, Path(name): Path<String>) -> Response {
    lease(&api, name, LeaseOp::Get).await
}

async fn lease_acquire(State(api): State<Api>, Path(name): Path<String>) -> Response {
    lease(&api, name, LeaseOp::Acquire).await
}

async fn lease_release(State(api): State<Api>, Path(name): Path<String>) -> Response {
    lease(&api, name, LeaseOp::Release).await
}

async fn chaos_show(State(api): State<Api>) -> Response {
    let answer = ask(&api, |reply| ApiRequest::Chaos {
        op: ChaosOp::Show,
        reply,
    })
    .await;
    json(answer.and_then(|r| r))
}

async fn chaos(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let op: ChaosOp = match serde_json::from_slice(&body) {
        Ok(op) => op,
        Err(e) => return error(400, format!("not a chaos order: {e}")),
    };
    if let ChaosOp::Loss { rate, .. } = &op
        && !(0.0..=1.0).contains(rate)
    {
        return error(400, format!("loss rate {rate} is outside 0.0..=1.0"));
    }
    let answer = ask(&api, |reply| ApiRequest::Chaos { op, reply }).await;
    json(answer.and_then(|r| r))
}
