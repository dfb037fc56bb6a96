//! Sealed datagrams: SWIM packets sent as plain UDP on the QUIC socket, outside QUIC's
//! acknowledged packets, each one encrypted and authenticated with a key that both ends
//! of a mutual-TLS QUIC connection export from it (RFC 8446 §7.5, the TLS exporter).
//!
//! Why: a SWIM probe over QUIC costs three packets (ping, ack, and the ping's sender's
//! QUIC ACK), since a QUIC DATAGRAM is ack-eliciting. Sealed, it costs two, and the
//! sealing adds no more bytes than a QUIC short header did.
//!
//! Layout: `marker (1) | key id (2, LE) | counter (6, LE) | ciphertext | tag (16)`.
//!
//! - The marker has QUIC's header form bit (0x80) and fixed bit (0x40) clear. The
//!   endpoint is configured not to grease the fixed bit, so no QUIC short-header packet
//!   has it clear, and long-header ones have 0x80 set: the socket demultiplexes on them.
//! - ChaCha20-Poly1305 with the 9-byte prefix as associated data. The nonce is the
//!   sender's role on the connection the key came from (dialer or acceptor) and the
//!   counter: the two directions never share a nonce, and a packet reflected back at its
//!   sender fails to open.
//! - The receiver keeps a 64-packet replay window per key: a repeated or too-old
//!   counter is dropped.
//! - A key authenticates exactly what its connection did: the peer's cluster is the one
//!   its certificate names, and the replica is the one its hello claimed. It outlives the
//!   connection (an idle connection closes; its key need not), until the peer's
//!   certificate expires, [`KEY_LIFETIME`] has passed, or the peer says hello as a new
//!   process. Each end keeps at most [`KEYS_PER_ADDRESS_MAX`] keys per address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use shoal_proto::{ClusterId, MemberId, ReplicaId};

use super::SEALED_PACKET_BYTES_MAX;

/// The first byte of a sealed datagram: QUIC's fixed bit (0x40) and long-header bit
/// (0x80) both clear.
pub(crate) const MARKER: u8 = 0x01;
/// The first byte of an unknown-key notice: `marker (1) | key id (2, LE)`, sent back
/// (rate-limited) for a sealed datagram no key here opens.
pub(crate) const NOTICE_MARKER: u8 = 0x02;
pub(crate) const NOTICE_BYTES: usize = 3;
/// Marker, key id and counter: also the associated data.
pub(crate) const PREFIX_BYTES: usize = 1 + 2 + 6;
pub(crate) const TAG_BYTES: usize = 16;
/// The sender's replica, first in the plaintext.
const REPLICA_BYTES: usize = 2;
/// What sealing adds to a payload.
pub(crate) const OVERHEAD_BYTES: usize = PREFIX_BYTES + REPLICA_BYTES + TAG_BYTES;
/// The TLS exporter label (RFC 8446 §7.5) the keys are derived with.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-shoal-sealed-datagram-v1";
/// The longest a key is used, even if the certificate is valid longer: after this the
/// pair shakes hands again.
pub(crate) const KEY_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Keys kept for one remote address (connections dialed at once, and restarts).
pub(crate) const KEYS_PER_ADDRESS_MAX: usize = 4;
/// The least time between two unknown-key notices acted on for one address.
pub(crate) const NOTICE_INTERVAL: Duration = Duration::from_secs(1);
/// Counters are 48 bits on the wire; a key that reaches this is retired.
const COUNTER_MAX: u64 = (1 << 48) - 1;
/// Reordering tolerated by the replay window, in packets.
const REPLAY_WINDOW: u64 = 64;

/// Why a sealed datagram was dropped; each is a reject reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Too short for prefix, replica and tag.
    Malformed,
    /// Longer than any sealed datagram is sent ([`SEALED_PACKET_BYTES_MAX`]); dropped
    /// before any work is spent on it.
    TooLarge,
    /// No key with this id for the source address.
    UnknownKey,
    /// The tag did not verify under any matching key.
    BadTag,
    /// A counter already seen, or older than the replay window.
    Replayed,
}

impl OpenError {
    pub(crate) fn metric_label(self) -> &'static str {
        match self {
            OpenError::Malformed => "sealed_malformed",
            OpenError::TooLarge => "sealed_too_large",
            OpenError::UnknownKey => "sealed_unknown_key",
            OpenError::BadTag => "sealed_bad_tag",
            OpenError::Replayed => "sealed_replayed",
        }
    }
}

/// A sealed datagram, opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The cluster the key's certificate named, and the replica the packet claims.
    pub(crate) from: MemberId,
    pub(crate) payload: Vec<u8>,
    /// The RTT of the key's connection, while it is open.
    pub(crate) rtt: Option<Duration>,
}

/// A key exported from one connection, as one end holds it.
pub(crate) struct SealedKey {
    id: u16,
    key: LessSafeKey,
    /// Whether this end dialed the connection: the nonce's role byte.
    dialed: bool,
    cluster: ClusterId,
    /// The connection the key came from (`None` only in unit tests).
    conn: Option<quinn::Connection>,
    /// The peer's replica and process instance, from its hello. The peer stores its
    /// key before it says hello, so until the hello arrives this end opens with the
    /// key but does not seal with it.
    hello: Option<(ReplicaId, u64)>,
    expires: Instant,
    next_counter: u64,
    /// Highest counter opened, and which of the `REPLAY_WINDOW` below it were seen.
    highest: Option<u64>,
    seen: u64,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("id", &self.id)
            .field("dialed", &self.dialed)
            .field("cluster", &self.cluster)
            .field("hello", &self.hello)
            .finish_non_exhaustive()
    }
}

impl SealedKey {
    /// Exports the key of `conn`, which this end dialed if `dialed`, with a peer whose
    /// certificate names `cluster` and expires at `not_after`.
    pub(crate) fn export(
        conn: &quinn::Connection,
        dialed: bool,
        cluster: ClusterId,
        not_after: Option<SystemTime>,
    ) -> Option<Self> {
        let mut material = [0u8; 32 + 2];
        conn.export_keying_material(&mut material, EXPORTER_LABEL, b"")
            .ok()?;
        let lifetime = not_after
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
            .map_or(KEY_LIFETIME, |left| left.min(KEY_LIFETIME));
        let mut key = Self::from_material(&material, dialed, cluster, Instant::now() + lifetime)?;
        key.conn = Some(conn.clone());
        Some(key)
    }

    fn from_material(
        material: &[u8; 34],
        dialed: bool,
        cluster: ClusterId,
        expires: Instant,
    ) -> Option<Self> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, &material[..32]).ok()?;
        Some(SealedKey {
            id: u16::from_le_bytes([material[32], material[33]]),
            key: LessSafeKey::new(key),
            dialed,
            cluster,
            conn: None,
            hello: None,
            expires,
            next_counter: 0,
            highest: None,
            seen: 0,
        })
    }

    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    fn live(&self, now: Instant) -> bool {
        now < self.expires
    }

    fn sealable(&self, now: Instant) -> bool {
        self.hello.is_some() && self.live(now) && self.next_counter <= COUNTER_MAX
    }

    /// Lets go of the connection's handle once it has closed, so that a key outliving
    /// its connection does not keep the connection's state in memory.
    fn release_if_closed(&mut self) {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.close_reason().is_some())
        {
            self.conn = None;
        }
    }

    /// The RTT of the key's connection while it is open.
    fn rtt(&mut self) -> Option<Duration> {
        self.release_if_closed();
        self.conn.as_ref().map(quinn::Connection::rtt)
    }

    fn nonce(sender_dialed: bool, counter: u64) -> Nonce {
        let mut nonce = [0u8; 12];
        nonce[0] = u8::from(sender_dialed);
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    /// Seals `payload` from `replica` as this end's next packet.
    fn seal(&mut self, replica: ReplicaId, payload: &[u8]) -> Vec<u8> {
        let counter = self.next_counter;
        self.next_counter += 1;
        let mut prefix = [0u8; PREFIX_BYTES];
        prefix[0] = MARKER;
        prefix[1..3].copy_from_slice(&self.id.to_le_bytes());
        prefix[3..].copy_from_slice(&counter.to_le_bytes()[..6]);
        let mut packet = Vec::with_capacity(OVERHEAD_BYTES + payload.len());
        packet.extend_from_slice(&prefix);
        packet.extend_from_slice(&replica.0.to_le_bytes());
        packet.extend_from_slice(payload);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Self::nonce(self.dialed, counter),
                Aad::from(prefix),
                &mut packet[PREFIX_BYTES..],
            )
            .expect("a datagram is far below ChaCha20-Poly1305's length limit");
        packet.extend_from_slice(tag.as_ref());
        packet
    }

    /// Opens a packet the peer sealed, without touching the replay window.
    fn open(&self, prefix: &[u8; PREFIX_BYTES], counter: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        let mut body = sealed.to_vec();
        let len = self
            .key
            .open_in_place(
                Self::nonce(!self.dialed, counter),
                Aad::from(*prefix),
                &mut body,
            )
            .ok()?
            .len();
        body.truncate(len);
        Some(body)
    }

    /// Whether `counter` is new; records it if so.
    fn accept_counter(&mut self, counter: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(counter);
            self.seen = 1;
            return true;
        };
        if counter > highest {
            let shift = counter - highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = Some(counter);
            return true;
        }
        let age = highest - counter;
        if age >= REPLAY_WINDOW || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

/// The keys held for one remote address.
#[derive(Debug)]
struct AddrKeys {
    /// Oldest first.
    keys: Vec<SealedKey>,
    /// When a key here last sealed or opened: the least recently used address is
    /// evicted first.
    used: Instant,
    /// When an unknown-key notice from this address was last acted on.
    noticed: Option<Instant>,
}

/// The keys of every remote address, bounded.
#[derive(Debug, Default)]
pub(crate) struct SealedKeys {
    by_addr: HashMap<SocketAddr, AddrKeys>,
}

impl SealedKeys {
    /// Adds a key for `addr`; the oldest beyond [`KEYS_PER_ADDRESS_MAX`] goes, and a new
    /// address beyond `addresses_max` evicts the least recently used one. A peer whose
    /// keys were evicted sends a datagram this end cannot open; the notice sent back
    /// makes it shake hands again.
    pub(crate) fn insert(&mut self, addr: SocketAddr, key: SealedKey, addresses_max: usize) {
        let now = Instant::now();
        if !self.by_addr.contains_key(&addr) && self.by_addr.len() >= addresses_max.max(1) {
            let oldest = self
                .by_addr
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(addr, _)| *addr);
            if let Some(oldest) = oldest {
                self.by_addr.remove(&oldest);
            }
        }
        for key in self.by_addr.values_mut().flat_map(|e| e.keys.iter_mut()) {
            key.release_if_closed();
        }
        let entry = self.by_addr.entry(addr).or_insert_with(|| AddrKeys {
            keys: Vec::new(),
            used: now,
            noticed: None,
        });
        entry.keys.retain(|k| k.live(now));
        if entry.keys.len() >= KEYS_PER_ADDRESS_MAX {
            entry.keys.remove(0);
        }
        entry.keys.push(key);
    }

    /// The peer at `addr` said hello as `replica` of process `instance` on the
    /// connection key `id` came from: that key may now seal, and keys of any other
    /// instance at `addr` are dropped (that process is gone).
    pub(crate) fn hello(&mut self, addr: SocketAddr, id: u16, replica: ReplicaId, instance: u64) {
        let Some(entry) = self.by_addr.get_mut(&addr) else {
            return;
        };
        entry
            .keys
            .retain(|k| k.hello.is_none_or(|(_, i)| i == instance));
        if let Some(key) = entry
            .keys
            .iter_mut()
            .rev()
            .find(|k| k.id == id && k.hello.is_none())
        {
            key.hello = Some((replica, instance));
        }
    }

    /// Seals `payload` from `local` for `to` at `addr`, with the newest key that may seal
    /// and whose hello named `to`; `None` if there is none (the caller then uses QUIC).
    /// Also returns the RTT of the key's connection, if it is open.
    pub(crate) fn seal(
        &mut self,
        addr: SocketAddr,
        local: &MemberId,
        to: &MemberId,
        payload: &[u8],
    ) -> Option<(Vec<u8>, Option<Duration>)> {
        let now = Instant::now();
        let entry = self.by_addr.get_mut(&addr)?;
        let key = entry.keys.iter_mut().rev().find(|k| {
            k.sealable(now)
                && k.cluster == to.cluster
                && k.hello.is_some_and(|(replica, _)| replica == to.replica)
        })?;
        entry.used = now;
        Some((key.seal(local.replica, payload), key.rtt()))
    }

    /// Opens a sealed datagram from `addr`.
    pub(crate) fn open(&mut self, addr: SocketAddr, packet: &[u8]) -> Result<Opened, OpenError> {
        if packet.len() > SEALED_PACKET_BYTES_MAX {
            return Err(OpenError::TooLarge);
        }
        if packet.len() < OVERHEAD_BYTES || packet[0] != MARKER {
            return Err(OpenError::Malformed);
        }
        let (prefix, sealed) = packet.split_at(PREFIX_BYTES);
        let prefix: &[u8; PREFIX_BYTES] = prefix.try_into().expect("split at the prefix length");
        let id = u16::from_le_bytes([prefix[1], prefix[2]]);
        let mut counter = [0u8; 8];
        counter[..6].copy_from_slice(&prefix[3..]);
        let counter = u64::from_le_bytes(counter);
        let now = Instant::now();
        let entry = self.by_addr.get_mut(&addr).ok_or(OpenError::UnknownKey)?;
        let mut matched = false;
        for key in entry.keys.iter_mut().rev() {
            if key.id != id || !key.live(now) {
                continue;
            }
            matched = true;
            let Some(plain) = key.open(prefix, counter, sealed) else {
                continue;
            };
            if !key.accept_counter(counter) {
                return Err(OpenError::Replayed);
            }
            entry.used = now;
            let (replica, payload) = plain.split_at(REPLICA_BYTES);
            let from = MemberId {
                cluster: key.cluster.clone(),
                replica: ReplicaId(u16::from_le_bytes([replica[0], replica[1]])),
            };
            return Ok(Opened {
                from,
                payload: payload.to_vec(),
                rtt: key.rtt(),
            });
        }
        Err(if matched {
            OpenError::BadTag
        } else {
            OpenError::UnknownKey
        })
    }

    /// The notice to send back for a sealed `packet` from `addr` that no key opened.
    pub(crate) fn notice_for(packet: &[u8]) -> Option<[u8; NOTICE_BYTES]> {
        (packet.len() >= OVERHEAD_BYTES && packet[0] == MARKER)
            .then(|| [NOTICE_MARKER, packet[1], packet[2]])
    }

    /// The peer at `addr` cannot open what key `id` seals (it restarted, or evicted the
    /// key). The key goes, and its connection is returned to be closed, so that the next
    /// datagram shakes hands again. At most one notice per address per
    /// [`NOTICE_INTERVAL`] is acted on; notices are unauthenticated, so one costs at
    /// worst a handshake. `None`: the notice was ignored (malformed, too soon, or naming
    /// no key that seals here); else the key's connection, if it still holds one.
    pub(crate) fn notice(
        &mut self,
        addr: SocketAddr,
        notice: &[u8],
    ) -> Option<Option<quinn::Connection>> {
        let [NOTICE_MARKER, lo, hi] = notice else {
            return None;
        };
        let id = u16::from_le_bytes([*lo, *hi]);
        let now = Instant::now();
        let entry = self.by_addr.get_mut(&addr)?;
        if entry.noticed.is_some_and(|at| now < at + NOTICE_INTERVAL) {
            return None;
        }
        let at = entry
            .keys
            .iter()
            .position(|k| k.id == id && k.hello.is_some())?;
        entry.noticed = Some(now);
        let key = entry.keys.remove(at);
        Some(key.conn)
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_member as member;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn key(material: u8, dialed: bool, cluster: &str) -> SealedKey {
        let expires = Instant::now() + KEY_LIFETIME;
        let cluster = ClusterId::new(cluster).unwrap();
        SealedKey::from_material(&[material; 34], dialed, cluster, expires).unwrap()
    }

    /// Both ends of one connection between east (dialer, at port 1) and west
    /// (acceptor, at port 2), hellos exchanged.
    fn pair(material: u8) -> (SealedKeys, SealedKeys) {
        let (dialer, acceptor) = (key(material, true, "west"), key(material, false, "east"));
        let id = dialer.id;
        let (mut east, mut west) = (SealedKeys::default(), SealedKeys::default());
        east.insert(addr(2), dialer, 8);
        west.insert(addr(1), acceptor, 8);
        east.hello(addr(2), id, ReplicaId(3), 22);
        west.hello(addr(1), id, ReplicaId(0), 11);
        (east, west)
    }

    fn seal(keys: &mut SealedKeys, to_port: u16, to: &MemberId, payload: &[u8]) -> Option<Vec<u8>> {
        let local = member("any", 0);
        keys.seal(addr(to_port), &local, to, payload)
            .map(|(packet, _)| packet)
    }

    fn opened(from: MemberId, payload: &[u8]) -> Result<Opened, OpenError> {
        Ok(Opened {
            from,
            payload: payload.to_vec(),
            rtt: None,
        })
    }

    #[test]
    fn seals_and_opens_both_ways() {
        let (mut east, mut west) = pair(7);
        let local = member("east", 0);
        let (packet, _) = east
            .seal(addr(2), &local, &member("west", 3), b"ping")
            .unwrap();
        assert_eq!(packet.len(), 4 + OVERHEAD_BYTES);
        assert_eq!(packet[0] & 0x40, 0, "QUIC's fixed bit stays clear");
        assert_eq!(
            west.open(addr(1), &packet),
            opened(member("east", 0), b"ping")
        );
        let local = member("west", 3);
        let (answer, _) = west
            .seal(addr(1), &local, &member("east", 0), b"ack")
            .unwrap();
        assert_eq!(
            east.open(addr(2), &answer),
            opened(member("west", 3), b"ack")
        );
    }

    #[test]
    fn refuses_tampered_reflected_replayed_and_unknown_packets() {
        let (mut east, mut west) = pair(9);
        let packet = seal(&mut east, 2, &member("west", 3), b"ping").unwrap();
        for at in [1, 4, PREFIX_BYTES, PREFIX_BYTES + 3, packet.len() - 1] {
            let mut bad = packet.clone();
            bad[at] ^= 1;
            let err = west.open(addr(1), &bad).unwrap_err();
            assert!(
                matches!(err, OpenError::BadTag | OpenError::UnknownKey),
                "byte {at}: {err:?}"
            );
        }
        assert_eq!(
            east.open(addr(2), &packet),
            Err(OpenError::BadTag),
            "reflected"
        );
        assert_eq!(
            west.open(addr(3), &packet),
            Err(OpenError::UnknownKey),
            "other source"
        );
        assert_eq!(
            west.open(addr(1), &packet[..OVERHEAD_BYTES - 1]),
            Err(OpenError::Malformed)
        );
        assert!(west.open(addr(1), &packet).is_ok());
        assert_eq!(west.open(addr(1), &packet), Err(OpenError::Replayed));
    }

    #[test]
    fn the_replay_window_takes_reordering_but_not_old_counters() {
        let (mut east, mut west) = pair(3);
        let to = member("west", 3);
        let packets: Vec<_> = (0..100)
            .map(|_| seal(&mut east, 2, &to, b"x").unwrap())
            .collect();
        assert!(west.open(addr(1), &packets[70]).is_ok());
        assert!(
            west.open(addr(1), &packets[69]).is_ok(),
            "within the window"
        );
        assert!(west.open(addr(1), &packets[7]).is_ok(), "63 behind");
        assert_eq!(
            west.open(addr(1), &packets[6]),
            Err(OpenError::Replayed),
            "64 behind"
        );
        assert!(west.open(addr(1), &packets[99]).is_ok());
        assert_eq!(west.open(addr(1), &packets[70]), Err(OpenError::Replayed));
    }

    #[test]
    fn a_key_seals_only_after_hello_and_only_for_the_instance_that_said_it() {
        let mut keys = SealedKeys::default();
        let first = key(1, true, "west");
        let first_id = first.id;
        keys.insert(addr(2), first, 8);
        assert_eq!(
            seal(&mut keys, 2, &member("west", 0), b"x"),
            None,
            "no hello yet"
        );
        keys.hello(addr(2), first_id, ReplicaId(0), 5);
        assert!(seal(&mut keys, 2, &member("west", 0), b"x").is_some());
        assert_eq!(
            seal(&mut keys, 2, &member("west", 1), b"x"),
            None,
            "another replica"
        );
        assert_eq!(
            seal(&mut keys, 2, &member("east", 0), b"x"),
            None,
            "another cluster"
        );
        // The peer restarts: a new connection, a hello from a new instance.
        let second = key(2, true, "west");
        let second_id = second.id;
        keys.insert(addr(2), second, 8);
        keys.hello(addr(2), second_id, ReplicaId(0), 6);
        assert_eq!(
            keys.by_addr[&addr(2)].keys.len(),
            1,
            "the old instance's key is gone"
        );
        let packet = seal(&mut keys, 2, &member("west", 0), b"x").unwrap();
        assert_eq!(u16::from_le_bytes([packet[1], packet[2]]), second_id);
    }

    #[test]
    fn a_key_opens_before_its_hello() {
        let (mut east, _) = pair(5);
        let mut west = SealedKeys::default();
        west.insert(addr(1), key(5, false, "east"), 8);
        let packet = seal(&mut east, 2, &member("west", 3), b"early").unwrap();
        assert_eq!(
            west.open(addr(1), &packet),
            opened(member("east", 0), b"early")
        );
    }

    #[test]
    fn expired_keys_neither_seal_nor_open() {
        let (mut east, mut west) = pair(4);
        let packet = seal(&mut east, 2, &member("west", 3), b"x").unwrap();
        for entry in west.by_addr.values_mut() {
            entry.keys[0].expires = Instant::now();
        }
        assert_eq!(west.open(addr(1), &packet), Err(OpenError::UnknownKey));
        assert_eq!(seal(&mut west, 1, &member("east", 0), b"x"), None);
    }

    #[test]
    fn memory_is_bounded_per_address_and_over_addresses() {
        let mut keys = SealedKeys::default();
        for n in 0..10 {
            keys.insert(addr(2), key(n, true, "west"), 2);
        }
        assert_eq!(keys.by_addr[&addr(2)].keys.len(), KEYS_PER_ADDRESS_MAX);
        keys.insert(addr(3), key(20, true, "west"), 2);
        let id = keys.by_addr[&addr(2)].keys[3].id;
        keys.hello(addr(2), id, ReplicaId(0), 1);
        assert!(
            seal(&mut keys, 2, &member("west", 0), b"x").is_some(),
            "addr 2 used last"
        );
        keys.insert(addr(4), key(21, true, "west"), 2);
        assert_eq!(keys.addresses(), 2);
        assert!(
            !keys.by_addr.contains_key(&addr(3)),
            "the least recently used went"
        );
    }

    #[test]
    fn a_notice_drops_the_key_once_per_interval() {
        let (mut east, _) = pair(6);
        let packet = seal(&mut east, 2, &member("west", 3), b"x").unwrap();
        let mut stranger = SealedKeys::default();
        assert_eq!(stranger.open(addr(1), &packet), Err(OpenError::UnknownKey));
        let notice = SealedKeys::notice_for(&packet).unwrap();
        assert!(
            east.notice(addr(9), &notice).is_none(),
            "no keys for that address"
        );
        assert!(
            east.notice(addr(2), &[NOTICE_MARKER, 0]).is_none(),
            "malformed"
        );
        let mut other_id = notice;
        other_id[1] ^= 0xff;
        assert!(
            east.notice(addr(2), &other_id).is_none(),
            "not a key id held"
        );
        assert!(east.notice(addr(2), &notice).is_some());
        assert_eq!(
            seal(&mut east, 2, &member("west", 3), b"x"),
            None,
            "the key is gone"
        );
        east.insert(addr(2), key(8, true, "west"), 8);
        let id = east.by_addr[&addr(2)].keys[0].id;
        east.hello(addr(2), id, ReplicaId(3), 22);
        let again = [NOTICE_MARKER, id.to_le_bytes()[0], id.to_le_bytes()[1]];
        assert!(
            east.notice(addr(2), &again).is_none(),
            "within the interval"
        );
    }
}
