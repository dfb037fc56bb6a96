//! The HTTP server's own counters: what happened to each connection, per listener.
//! Plain atomics, written by the accept loops and connection tasks, read by `/metrics`.
//! Every label value is always printed, at zero too, so a rate never misses its first
//! increment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::metrics::{Exposition, Kind, Value};

/// What the accept loop did with one connection: the `outcome` label of
/// `shoal_http_connections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Admitted and served.
    Accepted,
    /// Closed at once: the listener's `connections_max` were all in use.
    RefusedFull,
    /// Closed at once: this peer address already had `connections_per_client_max`.
    RefusedPerClient,
    /// `accept` itself failed (for example out of file descriptors); nothing to close.
    AcceptFailed,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Accepted,
        Outcome::RefusedFull,
        Outcome::RefusedPerClient,
        Outcome::AcceptFailed,
    ];

    fn metric_label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::RefusedFull => "refused_full",
            Outcome::RefusedPerClient => "refused_per_client",
            Outcome::AcceptFailed => "accept_failed",
        }
    }
}

/// Why the server closed a connection on a deadline: the `kind` label of
/// `shoal_http_timeouts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TimeoutKind {
    /// A request head did not arrive within `header_read_timeout` (hyper's timer).
    HeaderRead,
    /// Nothing arrived for `idle_timeout` while no request was in progress.
    Idle,
    /// The connection reached its lifetime.
    Lifetime,
    /// The server was stopping and the connection outlived the drain bound.
    Drain,
}

impl TimeoutKind {
    const ALL: [TimeoutKind; 4] = [
        TimeoutKind::HeaderRead,
        TimeoutKind::Idle,
        TimeoutKind::Lifetime,
        TimeoutKind::Drain,
    ];

    pub(super) fn metric_label(self) -> &'static str {
        match self {
            TimeoutKind::HeaderRead => "header_read",
            TimeoutKind::Idle => "idle",
            TimeoutKind::Lifetime => "lifetime",
            TimeoutKind::Drain => "drain",
        }
    }
}

/// How a connection failed other than by a deadline: the `reason` label of
/// `shoal_http_connection_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// The request head was not valid HTTP/1.1 or was too large (hyper answered 4xx).
    Malformed,
    /// The peer closed the connection in the middle of a request.
    Incomplete,
    /// Reading or writing the socket failed (reset, broken pipe).
    Io,
}

impl FailureKind {
    const ALL: [FailureKind; 3] = [
        FailureKind::Malformed,
        FailureKind::Incomplete,
        FailureKind::Io,
    ];

    pub(super) fn metric_label(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::Incomplete => "incomplete",
            FailureKind::Io => "io",
        }
    }
}

/// One listener's counters.
#[derive(Debug)]
pub(super) struct ListenerStats {
    /// The `listener` label: `api` or `health`.
    label: &'static str,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    timeouts: [AtomicU64; TimeoutKind::ALL.len()],
    failures: [AtomicU64; FailureKind::ALL.len()],
}

impl ListenerStats {
    fn new(label: &'static str) -> Self {
        Self {
            label,
            outcomes: Default::default(),
            timeouts: Default::default(),
            failures: Default::default(),
        }
    }

    pub(super) fn label(&self) -> &'static str {
        self.label
    }

    pub(super) fn count_outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_timeout(&self, kind: TimeoutKind, n: u64) {
        self.timeouts[kind as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn count_failure(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters of every listener the server runs.
#[derive(Clone, Debug)]
pub(super) struct HttpStats {
    pub(super) api: Arc<ListenerStats>,
    /// `None` when no health listener is configured.
    pub(super) health: Option<Arc<ListenerStats>>,
}

impl HttpStats {
    pub(super) fn new(with_health: bool) -> Self {
        Self {
            api: Arc::new(ListenerStats::new("api")),
            health: with_health.then(|| Arc::new(ListenerStats::new("health"))),
        }
    }

    fn listeners(&self) -> impl Iterator<Item = &ListenerStats> {
        std::iter::once(&*self.api).chain(self.health.as_deref())
    }

    /// Writes the three connection families.
    pub(super) fn write(&self, exposition: &mut Exposition) {
        let name = "shoal_http_connections_total";
        if exposition.family(
            name,
            Kind::Counter,
            "HTTP connections, by listener and outcome.",
        ) {
            for l in self.listeners() {
                for o in Outcome::ALL {
                    let n = l.outcomes[o as usize].load(Ordering::Relaxed);
                    let labels = [("listener", l.label), ("outcome", o.metric_label())];
                    exposition.sample(name, &labels, Value::Int(n));
                }
            }
        }
        let name = "shoal_http_timeouts_total";
        let help = "HTTP connections closed on a deadline, by listener and kind.";
        if exposition.family(name, Kind::Counter, help) {
            for l in self.listeners() {
                for k in TimeoutKind::ALL {
                    let n = l.timeouts[k as usize].load(Ordering::Relaxed);
                    let labels = [("listener", l.label), ("kind", k.metric_label())];
                    exposition.sample(name, &labels, Value::Int(n));
                }
            }
        }
        let name = "shoal_http_connection_errors_total";
        let help = "HTTP connections that failed, by listener and reason.";
        if exposition.family(name, Kind::Counter, help) {
            for l in self.listeners() {
                for f in FailureKind::ALL {
                    let n = l.failures[f as usize].load(Ordering::Relaxed);
                    let labels = [("listener", l.label), ("reason", f.metric_label())];
                    exposition.sample(name, &labels, Value::Int(n));
                }
            }
        }
    }
}
