//! The HTTP API (axum routes, served by hyper's HTTP/1.1). Every route asks the driver
//! over its bounded channel and waits a bounded time for the reply; the server itself
//! holds no protocol state.
//!
//! Bounds: [`ServerLimits`] caps connections (in total and per client address), the time
//! a request head may take, idle keep-alive, each connection's lifetime, the request
//! body, and every wait on the driver. An optional second listener serves only
//! `/healthz` (answered without the driver) and `/readyz` (asks the driver), on its own
//! small limits, so a flood of slow clients on the API cannot starve a liveness probe.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use shoal_proto::{IdError, LeaseName};
use tokio::net::TcpListener;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use super::listener::{self, ConnectionLimits, Listeners, Served};
use super::metrics::{CONTENT_TYPE, Exposition, Kind, Value};
use super::stats::HttpStats;
use crate::runtime::api::{ApiError, ApiRequest, ChaosOp, LeaseOp};

/// The server's bounds. [`ServerLimits::default`] suits production; tests shorten the
/// waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// How long `/readyz` waits for the driver's status before answering 503.
    pub ready_wait: Duration,
    /// How long every other route waits for the driver's reply before answering 503.
    pub reply_wait: Duration,
    /// API connections served at once; one more is accepted and closed at once (503).
    pub connections_max: usize,
    /// API connections served at once from one client address; one more is accepted and
    /// closed at once (503).
    pub connections_per_client_max: usize,
    /// A request head must be complete this long after the server starts waiting for
    /// it: from accept for the first request, from the previous response for the next.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress that sends nothing for this long is
    /// closed; at most `header_read_timeout`, which bounds that wait as well.
    pub idle_timeout: Duration,
    /// A connection is closed this long after it was accepted, even if idle or slow.
    pub connection_lifetime: Duration,
    /// Largest request body accepted (413 beyond).
    pub body_bytes_max: usize,
    /// The health listener's own connection limits.
    pub health: ConnectionLimits,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            ready_wait: Duration::from_secs(2),
            reply_wait: Duration::from_secs(5),
            connections_max: 64,
            connections_per_client_max: 8,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(2),
            connection_lifetime: Duration::from_secs(60),
            body_bytes_max: 64 * 1024,
            health: HEALTH_LIMITS,
        }
    }
}

/// The health listener's default limits: a probe connects, sends one short request
/// at once, and is answered within `ready_wait`.
pub const HEALTH_LIMITS: ConnectionLimits = ConnectionLimits {
    connections_max: 16,
    connections_per_client_max: 4,
    header_read_timeout: Duration::from_secs(2),
    idle_timeout: Duration::from_secs(1),
    lifetime: Duration::from_secs(10),
};

/// Beyond the longest driver wait, how long a stopping server lets requests finish.
const DRAIN_SLACK: Duration = Duration::from_secs(1);

impl ServerLimits {
    /// The API listener's connection limits.
    pub fn api_connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            connections_max: self.connections_max,
            connections_per_client_max: self.connections_per_client_max,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            lifetime: self.connection_lifetime,
        }
    }

    /// How long a stopping server waits for requests in progress: the longest driver
    /// wait and a little.
    pub fn drain_bound(&self) -> Duration {
        self.reply_wait.max(self.ready_wait) + DRAIN_SLACK
    }
}

/// Why a request was not answered with the driver's view. Every variant leaves the
/// driver's state unchanged unless it says otherwise; the request is counted in
/// `shoal_http_errors_total{reason}` and answered with `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The driver's queue is full; the request was not sent (503).
    #[error("the driver is busy: its queue is full")]
    DriverBusy,
    /// The driver's channel is closed; the request was not sent (503).
    #[error("the driver has stopped")]
    DriverGone,
    /// The driver took the request and dropped its reply; it may have acted on it (503).
    #[error("the driver dropped the request without answering")]
    ReplyDropped,
    /// The driver took the request and did not answer in time; it may still act on it
    /// (503).
    #[error("the driver did not answer within {waited_ms} ms")]
    ReplyTimeout { waited_ms: u64 },
    /// The lease name in the path is not a DNS label; nothing was sent (400).
    #[error("invalid lease name: {0}")]
    BadLeaseName(#[source] IdError),
    /// The path could not be decoded; nothing was sent (400).
    #[error("invalid path: {0}")]
    BadPath(String),
    /// The body is not the expected JSON; nothing was sent (400).
    #[error("malformed JSON body: {0}")]
    BadJson(#[source] serde_json::Error),
    /// The body parsed but its values are out of range; nothing was sent (400).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The body could not be read, or was too large; nothing was sent (413 or 400).
    #[error("unreadable body: {message}")]
    Body { status: u16, message: String },
    /// The driver refused the request; its status is the response's.
    #[error("{0}")]
    Refused(ApiError),
    /// No route has this path (404).
    #[error("no route for {path}")]
    NotFound { path: String },
    /// The route exists, not with this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ServeError {
    /// The `reason` label of `shoal_http_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ServeError::DriverBusy => "driver_busy",
            ServeError::DriverGone => "driver_gone",
            ServeError::ReplyDropped => "reply_dropped",
            ServeError::ReplyTimeout { .. } => "reply_timeout",
            ServeError::BadLeaseName(_) => "bad_lease_name",
            ServeError::BadPath(_) => "bad_path",
            ServeError::BadJson(_) => "bad_json",
            ServeError::Invalid(_) => "invalid",
            ServeError::Body { .. } => "bad_body",
            ServeError::Refused(_) => "refused",
            ServeError::NotFound { .. } => "not_found",
            ServeError::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::DriverBusy
            | ServeError::DriverGone
            | ServeError::ReplyDropped
            | ServeError::ReplyTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::BadLeaseName(_)
            | ServeError::BadPath(_)
            | ServeError::BadJson(_)
            | ServeError::Invalid(_) => StatusCode::BAD_REQUEST,
            ServeError::Body { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
            // A driver's status outside 4xx/5xx would be a bug; answer 500 then.
            ServeError::Refused(e) => StatusCode::from_u16(e.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ServeError::NotFound { .. } => StatusCode::NOT_FOUND,
            ServeError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// Serves the HTTP API on `listener` (the caller binds it; loopback by default) until
/// `shutdown` completes, with [`ServerLimits::default`].
pub async fn serve(
    listener: TcpListener,
    driver: mpsc::Sender<ApiRequest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, driver, shutdown, ServerLimits::default()).await
}

/// [`serve`] with explicit limits, on the API listener and, if given, the health
/// listener (a bare [`TcpListener`] is the API listener alone). Once `shutdown`
/// completes, both stop accepting, and requests in progress get
/// [`ServerLimits::drain_bound`] to finish. Fails only if a listener has no local
/// address.
pub async fn serve_with(
    listeners: impl Into<Listeners>,
    driver: mpsc::Sender<ApiRequest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServerLimits,
) -> io::Result<()> {
    let Listeners { api, health } = listeners.into();
    let addr = api.local_addr()?;
    let health_addr = health.as_ref().map(TcpListener::local_addr).transpose()?;
    tracing::info!(%addr, health = ?health_addr, "serving the HTTP API");
    let stats = HttpStats::new(health.is_some());
    let state = Arc::new(ServerState {
        driver,
        limits,
        errors: Mutex::default(),
        stats: stats.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let api = listener::run(
        Served {
            listener: api,
            app: router(Arc::clone(&state)),
            limits: limits.api_connections(),
            stats: stats.api,
            drain: limits.drain_bound(),
        },
        stop_rx.clone(),
    );
    let health = async {
        if let (Some(listener), Some(stats)) = (health, stats.health) {
            let served = Served {
                listener,
                app: health_router(state),
                limits: limits.health,
                stats,
                drain: limits.drain_bound(),
            };
            listener::run(served, stop_rx).await;
        }
    };
    let signal = async move {
        shutdown.await;
        tracing::info!(%addr, "the HTTP API is stopping");
        // The loops hold receivers until they end.
        let _ = stop_tx.send(true);
    };
    tokio::join!(signal, api, health);
    Ok(())
}

/// `/healthz` and `/readyz` alone, for the health listener.
fn health_router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(HEALTH_BODY_BYTES_MAX))
        .with_state(state)
}

/// Largest request body the health listener reads (its routes take none).
const HEALTH_BODY_BYTES_MAX: usize = 1024;

fn router(state: Arc<ServerState>) -> Router {
    let body_bytes_max = state.limits.body_bytes_max;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/services", get(services))
        .route("/v1/imports", get(imports))
        .route("/v1/leases", get(leases))
        .route(
            "/v1/leases/{name}",
            get(lease_get).post(lease_acquire).delete(lease_release),
        )
        .route("/v1/chaos", get(chaos_show).post(chaos_apply))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .with_state(state)
}

/// What every handler shares.
#[derive(Debug)]
struct ServerState {
    driver: mpsc::Sender<ApiRequest>,
    limits: ServerLimits,
    /// Errors answered, by [`ServeError::metric_label`]. Never held across an await.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// The listeners' connection counters.
    stats: HttpStats,
}

type Shared = State<Arc<ServerState>>;

impl ServerState {
    /// Sends one request to the driver without waiting for room, then waits at most
    /// `wait` for its reply.
    async fn ask<T>(
        &self,
        wait: Duration,
        request: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
    ) -> Result<T, ServeError> {
        let (reply, answer) = oneshot::channel();
        self.driver.try_send(request(reply)).map_err(|e| match e {
            TrySendError::Full(_) => ServeError::DriverBusy,
            TrySendError::Closed(_) => ServeError::DriverGone,
        })?;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(ServeError::ReplyDropped),
            Err(_) => Err(ServeError::ReplyTimeout {
                waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// Asks with the usual wait.
    async fn view<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
    ) -> Result<T, ServeError> {
        self.ask(self.limits.reply_wait, request).await
    }

    /// Counts `error` and answers it as `{"error": message}`.
    fn fail(&self, error: ServeError) -> Response {
        self.count(&error);
        let body = serde_json::json!({ "error": error.to_string() });
        (error.status(), axum::Json(body)).into_response()
    }

    /// Counts `error` in `shoal_http_errors_total`.
    fn count(&self, error: &ServeError) {
        let label = error.metric_label();
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(label)
            .or_default() += 1;
        tracing::debug!(reason = label, error = %error, "HTTP request refused");
    }

    /// Answers a view as JSON, or the error.
    fn json<T: Serialize>(&self, result: Result<T, ServeError>) -> Response {
        match result {
            Ok(value) => axum::Json(value).into_response(),
            Err(e) => self.fail(e),
        }
    }

    fn errors_snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): Shared) -> Response {
    match s.ask(s.limits.ready_wait, ApiRequest::Status).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            s.count(&e);
            (e.status(), format!("not ready: {e}")).into_response()
        }
    }
}

async fn metrics(State(s): Shared) -> Response {
    let snapshot = match s.view(ApiRequest::Metrics).await {
        Ok(snapshot) => snapshot,
        Err(e) => return s.fail(e),
    };
    let mut exposition = Exposition::default();
    exposition.write_snapshot(&snapshot);
    let name = "shoal_http_errors_total";
    if exposition.family(name, Kind::Counter, "HTTP requests refused, by reason.") {
        for (reason, n) in s.errors_snapshot() {
            exposition.sample(name, &[("reason", reason)], Value::Int(n));
        }
    }
    s.stats.write(&mut exposition);
    let headers = [(header::CONTENT_TYPE, CONTENT_TYPE)];
    (StatusCode::OK, headers, exposition.finish()).into_response()
}

async fn status(State(s): Shared) -> Response {
    s.json(s.view(ApiRequest::Status).await)
}

async fn peers(State(s): Shared) -> Response {
    s.json(s.view(ApiRequest::Peers).await)
}

async fn services(State(s): Shared) -> Response {
    s.json(s.view(ApiRequest::Services).await)
}

async fn imports(State(s): Shared) -> Response {
    s.json(s.view(ApiRequest::Imports).await)
}

async fn leases(State(s): Shared) -> Response {
    s.json(s.view(ApiRequest::Leases).await)
}

async fn lease_get(state: Shared, name: Result<Path<String>, PathRejection>) -> Response {
    lease(state, name, LeaseOp::Get).await
}

async fn lease_acquire(state: Shared, name: Result<Path<String>, PathRejection>) -> Response {
    lease(state, name, LeaseOp::Acquire).await
}

async fn lease_release(state: Shared, name: Result<Path<String>, PathRejection>) -> Response {
    lease(state, name, LeaseOp::Release).await
}

/// Validates the lease name, then asks the driver.
async fn lease(
    State(s): Shared,
    name: Result<Path<String>, PathRejection>,
    op: LeaseOp,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => return s.fail(ServeError::BadPath(e.body_text())),
    };
    if let Err(e) = LeaseName::new(name.clone()) {
        return s.fail(ServeError::BadLeaseName(e));
    }
    let result = s
        .view(|reply| ApiRequest::Lease { name, op, reply })
        .await
        .and_then(|r| r.map_err(ServeError::Refused));
    s.json(result)
}

async fn chaos_show(state: Shared) -> Response {
    chaos(state, ChaosOp::Show).await
}

async fn chaos_apply(State(s): Shared, body: Result<Bytes, BytesRejection>) -> Response {
    match parse_chaos(body) {
        Ok(op) => chaos(State(s), op).await,
        Err(e) => s.fail(e),
    }
}

async fn chaos(State(s): Shared, op: ChaosOp) -> Response {
    let result = s
        .view(|reply| ApiRequest::Chaos { op, reply })
        .await
        .and_then(|r| r.map_err(ServeError::Refused));
    s.json(result)
}

/// Reads a [`ChaosOp`] from a request body and checks its ranges.
fn parse_chaos(body: Result<Bytes, BytesRejection>) -> Result<ChaosOp, ServeError> {
    let body = body.map_err(|e| ServeError::Body {
        status: e.status().as_u16(),
        message: e.body_text(),
    })?;
    let op: ChaosOp = serde_json::from_slice(&body).map_err(ServeError::BadJson)?;
    if let ChaosOp::Loss { rate, .. } = &op
        && !(0.0..=1.0).contains(rate)
    {
        return Err(ServeError::Invalid(format!(
            "loss rate must be within 0.0 and 1.0, got {rate}"
        )));
    }
    Ok(op)
}

async fn not_found(State(s): Shared, uri: Uri) -> Response {
    let path = uri.path().chars().take(PATH_ECHO_CHARS_MAX).collect();
    s.fail(ServeError::NotFound { path })
}

async fn method_not_allowed(State(s): Shared) -> Response {
    s.fail(ServeError::MethodNotAllowed)
}

/// How much of an unknown path a 404 echoes back.
const PATH_ECHO_CHARS_MAX: usize = 128;
