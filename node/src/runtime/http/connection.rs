//! One accepted connection, served by hyper's HTTP/1.1 connection with axum's `Router`
//! as its service, under three deadlines:
//!
//! - **header read** (hyper's `header_read_timeout`, on [`TokioTimer`]): hyper starts
//!   it whenever it begins waiting for a request head, that is at accept and again after
//!   each response (hyper 1.12, `proto/h1/conn.rs`: `poll_read_head` arms it, and
//!   `State::idle` makes the next read arm it again). A head that is not complete in
//!   time ends the connection, without a response (hyper writes none for it). So a
//!   keep-alive connection waiting for its next request is bounded by it too.
//! - **idle** (here, [`IdleBoundedStream`]): while no request is in progress, a
//!   connection that sends nothing for `idle_timeout` is closed. A request is in
//!   progress from the moment hyper hands its head to the service until hyper drops the
//!   response body ([`RequestGuard`]), so a slow driver never trips it.
//! - **lifetime**: the connection is dropped this long after it was accepted, whatever
//!   it is doing.
//!
//! Every end other than a clean close is counted ([`ConnectionError::count`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use super::listener::{ConnectionLimits, Slot};
use super::stats::{FailureKind, ListenerStats, TimeoutKind};

/// Largest read (and write) buffer hyper keeps per connection, so a request head is at
/// most this long (hyper answers 431 beyond). hyper's own default is about 400 KiB.
const BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Header lines accepted in one request head (hyper answers 431 beyond).
const HEADERS_MAX: usize = 64;
const _: () = assert!(
    BUFFER_BYTES_MAX >= 8192,
    "hyper refuses buffers below 8 KiB"
);

/// Why a connection ended other than by a clean close. The connection is gone in every
/// case; nothing else changed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    /// hyper's header-read timer fired: a request head was not complete in time. No
    /// response was written.
    #[error("no complete request head within {waited_ms} ms")]
    HeaderReadTimeout { waited_ms: u64 },
    /// No byte arrived for the idle timeout while no request was in progress.
    #[error("idle for {waited_ms} ms with no request in progress")]
    IdleTimeout { waited_ms: u64 },
    /// The connection reached its lifetime and was dropped, mid-request or not.
    #[error("the connection lifetime of {lifetime_ms} ms passed")]
    Lifetime { lifetime_ms: u64 },
    /// The request was not valid HTTP/1.1 or too large; hyper answered 4xx. Peer
    /// misbehaving.
    #[error("malformed request: {0}")]
    Malformed(#[source] hyper::Error),
    /// The peer closed the connection in the middle of a request.
    #[error("closed mid-request: {0}")]
    Incomplete(#[source] hyper::Error),
    /// The socket failed (reset, broken pipe) or hyper failed otherwise.
    #[error("connection failed: {0}")]
    Io(#[source] hyper::Error),
}

impl ConnectionError {
    /// The label it is counted under, in `shoal_http_timeouts_total{kind}` or
    /// `shoal_http_connection_errors_total{reason}`.
    pub(super) fn metric_label(&self) -> &'static str {
        match self.timeout_kind() {
            Ok(kind) => kind.metric_label(),
            Err(kind) => kind.metric_label(),
        }
    }

    fn timeout_kind(&self) -> Result<TimeoutKind, FailureKind> {
        match self {
            ConnectionError::HeaderReadTimeout { .. } => Ok(TimeoutKind::HeaderRead),
            ConnectionError::IdleTimeout { .. } => Ok(TimeoutKind::Idle),
            ConnectionError::Lifetime { .. } => Ok(TimeoutKind::Lifetime),
            ConnectionError::Malformed(_) => Err(FailureKind::Malformed),
            ConnectionError::Incomplete(_) => Err(FailureKind::Incomplete),
            ConnectionError::Io(_) => Err(FailureKind::Io),
        }
    }

    fn count(&self, stats: &ListenerStats) {
        match self.timeout_kind() {
            Ok(kind) => stats.count_timeout(kind, 1),
            Err(kind) => stats.count_failure(kind),
        }
    }
}

/// Serves `stream` until it closes, fails, passes a deadline, or `stop` turns true (then
/// hyper finishes the request in progress and closes). `_slot` is released on return.
pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ConnectionLimits,
    stats: Arc<ListenerStats>,
    stop: watch::Receiver<bool>,
    _slot: Slot,
) {
    let activity = Arc::new(Activity::default());
    let io = IdleBoundedStream::new(stream, limits.idle_timeout, Arc::clone(&activity));
    let service = TrackedService {
        app,
        activity: Arc::clone(&activity),
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(BUFFER_BYTES_MAX)
        .max_headers(HEADERS_MAX);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let result = drive(connection, limits.lifetime, stop).await;
    if let Err(error) = classify(result, &activity, &limits) {
        error.count(&stats);
        tracing::debug!(
            listener = stats.label(),
            %peer,
            reason = error.metric_label(),
            %error,
            "HTTP connection closed"
        );
    }
}

/// Why [`drive`] returned.
enum Ended {
    /// hyper's connection future finished.
    Served(Result<(), hyper::Error>),
    /// The lifetime passed first; the connection was dropped.
    Lifetime,
}

type Connection = http1::Connection<TokioIo<IdleBoundedStream>, TrackedService>;

/// Polls `connection` to its end, within `lifetime`, and asks it to finish gracefully
/// once `stop` turns true.
async fn drive(
    connection: Connection,
    lifetime: Duration,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let mut connection = pin!(connection);
    let mut deadline = pin!(tokio::time::sleep(lifetime));
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return Ended::Served(result),
            () = &mut deadline => return Ended::Lifetime,
            // A dropped sender means the server is gone: stop too.
            _ = stop.wait_for(|stopping| *stopping), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The connection's end as an error, or `Ok` for a clean close.
fn classify(
    ended: Ended,
    activity: &Activity,
    limits: &ConnectionLimits,
) -> Result<(), ConnectionError> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    // The idle deadline surfaces to hyper as a read error; the flag says which.
    if activity.idle_expired.load(Ordering::Relaxed) {
        return Err(ConnectionError::IdleTimeout {
            waited_ms: ms(limits.idle_timeout),
        });
    }
    match ended {
        Ended::Lifetime => Err(ConnectionError::Lifetime {
            lifetime_ms: ms(limits.lifetime),
        }),
        Ended::Served(Ok(())) => Ok(()),
        Ended::Served(Err(e)) if e.is_timeout() => Err(ConnectionError::HeaderReadTimeout {
            waited_ms: ms(limits.header_read_timeout),
        }),
        Ended::Served(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
            Err(ConnectionError::Malformed(e))
        }
        Ended::Served(Err(e)) if e.is_incomplete_message() => Err(ConnectionError::Incomplete(e)),
        Ended::Served(Err(e)) => Err(ConnectionError::Io(e)),
    }
}

/// What the connection's IO and its service share: whether a request is in progress.
#[derive(Debug, Default)]
struct Activity {
    /// Requests whose response body hyper has not dropped yet.
    in_flight: AtomicUsize,
    /// Requests finished so far; a change restarts the idle deadline.
    finished: AtomicU64,
    /// Set when the idle deadline closed the connection.
    idle_expired: AtomicBool,
}

/// One request in progress; dropped with its response body (or its handler, if hyper
/// drops that first).
#[derive(Debug)]
struct RequestGuard {
    activity: Arc<Activity>,
}

impl RequestGuard {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { activity }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.finished.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// The router as hyper's service, marking each request in progress.
#[derive(Clone, Debug)]
struct TrackedService {
    app: Router,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<GuardedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = RequestGuard::begin(Arc::clone(&self.activity));
        let app = self.app.clone();
        Box::pin(async move {
            let response = app.oneshot(request).await?;
            Ok(response.map(|body| GuardedBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request in progress until hyper drops it.
#[derive(Debug)]
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The accepted socket, failing its reads once it has been idle too long: no request in
/// progress and no byte received for `idle_timeout`.
#[derive(Debug)]
struct IdleBoundedStream {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    activity: Arc<Activity>,
    /// `activity.finished` when the deadline was last restarted.
    finished_seen: u64,
}

impl IdleBoundedStream {
    fn new(stream: TcpStream, idle_timeout: Duration, activity: Arc<Activity>) -> Self {
        Self {
            stream,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            activity,
            finished_seen: 0,
        }
    }

    fn restart_idle(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.idle_timeout);
    }

    /// Fails once the idle deadline passes while no request is in progress; registers
    /// the deadline's wake-up otherwise.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.activity.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(());
        }
        let finished = self.activity.finished.load(Ordering::Relaxed);
        if finished != self.finished_seen {
            self.finished_seen = finished;
            self.restart_idle();
        }
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.activity.idle_expired.store(true, Ordering::Relaxed);
                Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))
            }
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for IdleBoundedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check_idle(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut this.stream).poll_read(cx, buf));
        if result.is_ok() && buf.filled().len() > before {
            this.restart_idle();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for IdleBoundedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
