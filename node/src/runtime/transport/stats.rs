//! The transport's counters: totals, per-peer bytes and RTT, and rejects by reason.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use shoal_proto::MemberId;

/// Most peers whose bytes and RTT are tracked; later peers are counted only in totals.
pub const PEERS_TRACKED_MAX: usize = 4_096;

/// One remote member as the transport saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Payload bytes delivered from this member.
    pub bytes_in: u64,
    /// Payload bytes sent to this member.
    pub bytes_out: u64,
    /// The latest RTT estimate of a connection with this member (kept when sealed
    /// datagrams flow after that connection closed).
    pub rtt: Option<Duration>,
}

/// A snapshot of the transport's counters; all are totals since bind unless noted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub datagrams_sent: u64,
    pub frames_sent: u64,
    pub datagrams_received: u64,
    pub frames_received: u64,
    /// Payload bytes (headers excluded).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Handshakes completed, dialed and accepted.
    pub connections_dialed: u64,
    pub connections_accepted: u64,
    /// Gauge: connections holding a slot now.
    pub connections_open: u64,
    /// Gauge: inbound streams being read now, over all connections.
    pub streams_open: u64,
    /// The most inbound streams read at once on any one connection.
    pub streams_open_peak: u64,
    /// Frames held back because their sender was over `peer_bytes_per_s_max`.
    pub frames_throttled: u64,
    /// Datagrams sent on a stream because the path could not carry them.
    pub datagrams_on_stream: u64,
    /// Of the datagrams sent and received, those sealed outside QUIC.
    pub datagrams_sealed_sent: u64,
    pub datagrams_sealed_received: u64,
    /// quinn's handshake counters (`quinn::EndpointStats`), read when the snapshot is
    /// taken: Initials accepted into a handshake (some then fail, see `rejects`),
    /// handshakes this node began, and Initials refused (every connection slot taken)
    /// or ignored.
    pub quic_handshakes_accepted: u64,
    pub quic_handshakes_outgoing: u64,
    pub quic_handshakes_refused: u64,
    pub quic_handshakes_ignored: u64,
    pub peers: BTreeMap<MemberId, PeerStats>,
    /// Dropped or refused input and output, by reason.
    pub rejects: BTreeMap<&'static str, u64>,
}

/// The shared, locked counters. Every method holds the lock briefly and never awaits.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    state: Mutex<TransportStats>,
}

impl Counters {
    fn with<R>(&self, f: impl FnOnce(&mut TransportStats) -> R) -> R {
        // A poisoned lock still holds consistent counters: every update is one step.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        self.with(|s| *s.rejects.entry(reason).or_default() += 1);
    }

    pub(crate) fn sent(&self, to: &MemberId, datagram: bool, bytes: usize, rtt: Option<Duration>) {
        self.with(|s| {
            if datagram {
                s.datagrams_sent += 1;
            } else {
                s.frames_sent += 1;
            }
            s.bytes_sent += bytes as u64;
            if let Some(peer) = peer_entry(s, to) {
                peer.bytes_out += bytes as u64;
                peer.rtt = rtt.or(peer.rtt);
            }
        });
    }

    pub(crate) fn received(
        &self,
        from: &MemberId,
        datagram: bool,
        bytes: usize,
        rtt: Option<Duration>,
    ) {
        self.with(|s| {
            if datagram {
                s.datagrams_received += 1;
            } else {
                s.frames_received += 1;
            }
            s.bytes_received += bytes as u64;
            if let Some(peer) = peer_entry(s, from) {
                peer.bytes_in += bytes as u64;
                peer.rtt = rtt.or(peer.rtt);
            }
        });
    }

    pub(crate) fn connected(&self, dialed: bool) {
        self.with(|s| {
            if dialed {
                s.connections_dialed += 1;
            } else {
                s.connections_accepted += 1;
            }
        });
    }

    pub(crate) fn sealed(&self, sent: bool) {
        self.with(|s| {
            if sent {
                s.datagrams_sealed_sent += 1;
            } else {
                s.datagrams_sealed_received += 1;
            }
        });
    }

    pub(crate) fn datagram_on_stream(&self) {
        self.with(|s| s.datagrams_on_stream += 1);
    }

    /// One more inbound stream open; `on_connection` is that connection's count now.
    pub(crate) fn stream_opened(&self, on_connection: u64) {
        self.with(|s| {
            s.streams_open += 1;
            s.streams_open_peak = s.streams_open_peak.max(on_connection);
        });
    }

    pub(crate) fn throttled(&self) {
        self.with(|s| s.frames_throttled += 1);
    }

    pub(crate) fn stream_closed(&self) {
        self.with(|s| s.streams_open = s.streams_open.saturating_sub(1));
    }

    pub(crate) fn snapshot(&self, connections_open: usize) -> TransportStats {
        let mut stats = self.with(|s| s.clone());
        stats.connections_open = connections_open as u64;
        stats
    }
}

fn peer_entry<'a>(s: &'a mut TransportStats, member: &MemberId) -> Option<&'a mut PeerStats> {
    if !s.peers.contains_key(member) && s.peers.len() >= PEERS_TRACKED_MAX {
        return None;
    }
    Some(s.peers.entry(member.clone()).or_default())
}
