//! The accept loops: every connection is accepted at once, then admitted or refused by
//! the [`SlotTable`] (a global cap and a cap per peer address), so a flood never waits
//! in the kernel's backlog where a probe would wait behind it. A refused connection gets
//! a `503` if its socket takes it without blocking, and is closed; either way it is
//! counted. An admitted one is served by its own task (`connection`).
//!
//! At shutdown a loop stops accepting, asks every connection to finish its request in
//! progress and close, and waits at most the drain bound before dropping the rest.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connection;
use super::stats::{ListenerStats, Outcome, TimeoutKind};

/// The pause after a failed `accept` (for example out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_FAILED_PAUSE: Duration = Duration::from_millis(50);

/// Most bytes of a refused connection's request read (and dropped) before it is closed.
const REFUSED_DRAIN_BYTES_MAX: usize = 8 * 1024;

/// What a refused connection is told, if its socket takes it without blocking.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\ncontent-length: 21\r\nconnection: close\r\n\r\n\
too many connections\n";

/// The TCP listeners the server serves. `health`, when present, serves only `/healthz`
/// and `/readyz`, on its own connection limits.
#[derive(Debug)]
pub struct Listeners {
    pub api: TcpListener,
    pub health: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Self { api, health: None }
    }
}

/// One listener's connection bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; one more is accepted and closed at once.
    pub connections_max: usize,
    /// Connections served at once from one peer address; one more is accepted and
    /// closed at once.
    pub connections_per_client_max: usize,
    /// A request head must be complete this long after the server starts waiting for it
    /// (at accept, and after each response).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress that sends nothing for this long is
    /// closed. A connection that sends nothing is closed after the shorter of this and
    /// `header_read_timeout`.
    pub idle_timeout: Duration,
    /// A connection is closed this long after it was accepted, whatever it is doing.
    pub lifetime: Duration,
}

/// Why a connection was refused. It was answered 503 and closed at once; what it had
/// already sent (at most a few KiB) was read and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refused {
    /// Every one of the listener's `connections_max` slots is in use.
    #[error("all {max} connections are in use")]
    Full { max: usize },
    /// The peer address already holds `connections_per_client_max` slots.
    #[error("{max} connections from this client are in use")]
    PerClient { max: usize },
}

impl Refused {
    pub(super) fn metric_label(self) -> &'static str {
        match self {
            Refused::Full { .. } => "refused_full",
            Refused::PerClient { .. } => "refused_per_client",
        }
    }

    fn outcome(self) -> Outcome {
        match self {
            Refused::Full { .. } => Outcome::RefusedFull,
            Refused::PerClient { .. } => Outcome::RefusedPerClient,
        }
    }
}

/// The slots in use, in total and per peer address. It decides; it does no IO. Holds
/// at most `total_max` addresses, since each held address has a slot.
#[derive(Debug)]
pub(super) struct SlotTable {
    total_max: usize,
    per_client_max: usize,
    total: usize,
    per_client: BTreeMap<IpAddr, usize>,
}

impl SlotTable {
    pub(super) fn new(total_max: usize, per_client_max: usize) -> Self {
        Self {
            total_max: total_max.max(1),
            per_client_max: per_client_max.max(1),
            total: 0,
            per_client: BTreeMap::new(),
        }
    }

    /// Takes a slot for `client`, or says why not (state unchanged then). A client at
    /// its own cap is refused as such even when every slot is in use.
    pub(super) fn take(&mut self, client: IpAddr) -> Result<(), Refused> {
        let held = self.per_client.get(&client).copied().unwrap_or(0);
        if held >= self.per_client_max {
            return Err(Refused::PerClient {
                max: self.per_client_max,
            });
        }
        if self.total >= self.total_max {
            return Err(Refused::Full {
                max: self.total_max,
            });
        }
        *self.per_client.entry(client).or_default() += 1;
        self.total += 1;
        Ok(())
    }

    /// Gives back a slot [`SlotTable::take`] gave `client`.
    pub(super) fn release(&mut self, client: IpAddr) {
        let Some(held) = self.per_client.get_mut(&client) else {
            debug_assert!(false, "released a slot {client} does not hold");
            return;
        };
        *held -= 1;
        if *held == 0 {
            self.per_client.remove(&client);
        }
        self.total -= 1;
    }

    /// Slots in use.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.total
    }

    /// Addresses holding a slot.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.per_client.len()
    }
}

/// An admitted connection's slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    table: Arc<Mutex<SlotTable>>,
    client: IpAddr,
}

impl Slot {
    fn take(table: &Arc<Mutex<SlotTable>>, client: IpAddr) -> Result<Self, Refused> {
        lock(table).take(client)?;
        Ok(Self {
            table: Arc::clone(table),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).release(self.client);
    }
}

fn lock(table: &Mutex<SlotTable>) -> std::sync::MutexGuard<'_, SlotTable> {
    // The table's updates cannot panic halfway; a poisoned lock still holds a valid table.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One listener, ready to serve.
#[derive(Debug)]
pub(super) struct Served {
    pub(super) listener: TcpListener,
    pub(super) app: Router,
    pub(super) limits: ConnectionLimits,
    pub(super) stats: Arc<ListenerStats>,
    /// How long, at shutdown, connections may take to finish their requests.
    pub(super) drain: Duration,
}

/// What the accept loop woke up for.
enum Event {
    Ended(Result<(), tokio::task::JoinError>),
    Accepted(std::io::Result<(TcpStream, SocketAddr)>),
}

/// Accepts until `stop` turns true (or its sender is dropped), then drains.
pub(super) async fn run(served: Served, mut stop: watch::Receiver<bool>) {
    let table = Arc::new(Mutex::new(SlotTable::new(
        served.limits.connections_max,
        served.limits.connections_per_client_max,
    )));
    let mut connections = JoinSet::new();
    // Handed to each connection; `stop` itself is borrowed by the loop's wait.
    let connection_stop = stop.clone();
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|stopping| *stopping) => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => Event::Ended(joined),
            accepted = served.listener.accept() => Event::Accepted(accepted),
        };
        match event {
            Event::Ended(Ok(())) => {}
            Event::Ended(Err(e)) => {
                tracing::warn!(listener = served.stats.label(), error = %e, "HTTP connection task failed");
            }
            Event::Accepted(Ok((stream, peer))) => {
                admit(
                    &served,
                    &table,
                    &mut connections,
                    &connection_stop,
                    stream,
                    peer,
                );
            }
            Event::Accepted(Err(e)) => {
                served.stats.count_outcome(Outcome::AcceptFailed);
                tracing::warn!(listener = served.stats.label(), error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(ACCEPT_FAILED_PAUSE).await;
            }
        }
    }
    drop(served.listener);
    drain(connections, served.drain, &served.stats).await;
}

/// Serves `stream` in its own task if a slot is free, else refuses it.
fn admit(
    served: &Served,
    table: &Arc<Mutex<SlotTable>>,
    connections: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let client = peer.ip().to_canonical();
    match Slot::take(table, client) {
        Ok(slot) => {
            served.stats.count_outcome(Outcome::Accepted);
            connections.spawn(connection::serve(
                stream,
                peer,
                served.app.clone(),
                served.limits,
                Arc::clone(&served.stats),
                stop.clone(),
                slot,
            ));
        }
        Err(refused) => {
            served.stats.count_outcome(refused.outcome());
            tracing::debug!(
                listener = served.stats.label(),
                %peer,
                reason = refused.metric_label(),
                error = %refused,
                "HTTP connection refused"
            );
            refuse(stream);
        }
    }
}

/// Writes the 503 and closes, without waiting for anything. What the client already
/// sent is read first (up to `REFUSED_DRAIN_BYTES_MAX`): closing with unread data would
/// reset the connection, and a reset may discard the 503 before the client reads it.
fn refuse(stream: TcpStream) {
    // The std socket does the system calls at once; tokio's would first wait for the
    // reactor to report the new socket ready. It stays non-blocking.
    let Ok(stream) = stream.into_std() else {
        return;
    };
    let _ = (&stream).write(REFUSED_RESPONSE);
    let mut buf = [0u8; 1024];
    let mut left = REFUSED_DRAIN_BYTES_MAX;
    while left > 0 {
        match (&stream).read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Waits for the connections to finish, at most `bound`; drops (and counts) the rest.
async fn drain(mut connections: JoinSet<()>, bound: Duration, stats: &ListenerStats) {
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(bound, all_done).await.is_ok() {
        return;
    }
    let remaining = connections.len();
    stats.count_timeout(
        TimeoutKind::Drain,
        u64::try_from(remaining).unwrap_or(u64::MAX),
    );
    tracing::warn!(
        listener = stats.label(),
        remaining,
        bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
        "HTTP connections still open after the drain bound: closing them"
    );
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_table_refuses_beyond_either_cap_and_frees_on_release() {
        let mut t = SlotTable::new(3, 2);
        assert_eq!(t.take(ip(1)), Ok(()));
        assert_eq!(t.take(ip(1)), Ok(()));
        assert_eq!(t.take(ip(1)), Err(Refused::PerClient { max: 2 }));
        assert_eq!(t.take(ip(2)), Ok(()));
        assert_eq!(t.take(ip(3)), Err(Refused::Full { max: 3 }));
        assert_eq!((t.in_use(), t.clients()), (3, 2));
        t.release(ip(2));
        assert_eq!(t.clients(), 1, "an address without slots is forgotten");
        assert_eq!(t.take(ip(3)), Ok(()));
        t.release(ip(1));
        assert_eq!(t.take(ip(1)), Ok(()));
        assert_eq!(t.take(ip(4)), Err(Refused::Full { max: 3 }));
        assert_eq!(
            t.take(ip(1)),
            Err(Refused::PerClient { max: 2 }),
            "a client at its own cap is named as such when the table is full too"
        );
    }

    #[test]
    fn zero_caps_still_admit_one() {
        let mut t = SlotTable::new(0, 0);
        assert_eq!(t.take(ip(1)), Ok(()));
        assert_eq!(t.take(ip(2)), Err(Refused::Full { max: 1 }));
    }
}
