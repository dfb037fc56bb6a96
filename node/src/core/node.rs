//! [`Node`]: the protocol state machine. Inputs come in through `handle_*`, commands
//! go out through [`Node::take_commands`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use foca::Foca;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use shoal_proto::wire::{Channel, RECORDS_PER_ORIGIN_MAX};
use shoal_proto::{
    ClusterId, ClusterKey, Endpoint, ExportRecord, KeyRing, MemberId, Message, NetAddr,
    NetworkMode, RecordError, ServiceKey, ServicePort, ServiceProperties, ServiceType,
    SignedRecord, SwimIdentity, VerifyError, sign,
};

use super::command::{Command, Durability, Event, PersistedState, StoreOp};
use super::config::{Config, ConfigError};
use super::imports::Imports;
use super::lease::{Leases, Voter};
use super::membership::{self, Clusters, Members, Probes, Swim, SwimCodec, SwimId};
use super::record_cache::{NoRecordCache, RecordCache};
use super::records::{MergeOutcome, View};
use super::stats::Stats;
use super::time::Time;
use super::timers::{TimerKind, Timers};
use super::traffic::Traffic;

/// How often the time of last contact and a sample of peers are persisted, and how
/// often an isolated node announces itself to its seeds and remembered peers.
const LAST_CONTACT_PERIOD: Duration = Duration::from_secs(10);
/// How many recently seen members are remembered across restarts.
const PEERS_REMEMBERED_MAX: usize = 16;

/// What this cluster exports for one service, as read from its own Kubernetes objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSpec {
    pub service: ServiceKey,
    /// Creation time of the ServiceExport, Unix milliseconds.
    pub export_created_ms: u64,
    pub service_type: ServiceType,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    pub network: NetworkMode,
    /// IP families, session affinity, traffic policy and distribution, and the
    /// ServiceExport's exported labels and annotations.
    pub properties: ServiceProperties,
}

impl ExportSpec {
    /// The record `origin` publishes for this export at `version` (not yet stamped
    /// with its signing time).
    pub fn into_record(self, origin: ClusterId, version: u64) -> ExportRecord {
        ExportRecord {
            origin,
            service: self.service,
            version,
            export_created_ms: self.export_created_ms,
            published_ms: 0,
            service_type: self.service_type,
            ports: self.ports,
            endpoints: self.endpoints,
            network: self.network,
            properties: self.properties,
            tombstone: false,
        }
    }
}

/// The first own version to count from: the stored one, or for a store without one,
/// the wall clock (see [`PersistedState::wall_clock_ms`]).
fn start_version(persisted: &PersistedState) -> u64 {
    if persisted.own_version == 0 {
        persisted.wall_clock_ms
    } else {
        persisted.own_version
    }
}

/// This start's membership generation: one above the stored one, or for a store
/// without one, the wall clock's seconds.
fn start_generation(persisted: &PersistedState) -> u32 {
    let floor = u32::try_from(persisted.wall_clock_ms / 1_000).unwrap_or(u32::MAX - 1);
    let last = if persisted.generation == 0 {
        floor
    } else {
        persisted.generation
    };
    last.wrapping_add(1)
}

/// A local request the core refused. State unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Only the cluster's local leader publishes records.
    #[error("this replica is not its cluster's publisher")]
    NotPublisher,
    /// The export breaks a record bound.
    #[error("invalid export: {0}")]
    Invalid(#[from] RecordError),
    /// A new service, while this cluster's records (tombstones included) are already at
    /// the bound peers hold per origin. Nothing was published.
    #[error(
        "this cluster already has {0} records, the most peers hold from one cluster ({RECORDS_PER_ORIGIN_MAX})"
    )]
    TooManyExports(usize),
    #[error("cannot sign the export: {0}")]
    Sign(#[from] VerifyError),
}

/// An internal inconsistency found by [`Node::check_invariants`]: a bug in the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated on {member}: {what}")]
pub struct InvariantViolation {
    pub member: MemberId,
    pub what: String,
}

/// One Shoal replica's protocol state.
pub struct Node {
    pub(super) config: Config,
    pub(super) key: ClusterKey,
    pub(super) trust: Arc<KeyRing>,
    pub(super) rng: ChaCha8Rng,
    pub(super) swim: Swim,
    /// SWIM ack latency and suspicions, read from the SWIM messages going by.
    pub(super) probes: Probes,
    pub(super) members: Members,
    pub(super) clusters: Clusters,
    pub(super) view: View,
    /// The imports, kept by an index per service from the view and liveness.
    pub(super) imports: Imports,
    /// Round trips, and the imports a new one may move (traffic policy).
    pub(super) traffic: Traffic,
    pub(super) timers: Timers,
    pub(super) persists: Vec<Command>,
    pub(super) commands: Vec<Command>,
    pub(super) stats: Stats,
    pub(super) record_cache: Box<dyn RecordCache>,
    pub(super) own_version: u64,
    pub(super) generation: u32,
    pub(super) announced_deadline: Option<Time>,
    /// When a join or heal last triggered an anti-entropy round.
    pub(super) last_triggered_anti_entropy: Option<Time>,
    pub(super) isolated: bool,
    /// When an authenticated message last arrived from each cluster: evidence of life
    /// that SWIM may not have caught up with.
    pub(super) last_heard: BTreeMap<ClusterId, Time>,
    /// The last-chance probes of each down cluster's current outage (see `failure`).
    pub(super) last_chance: BTreeMap<ClusterId, super::failure::LastChance>,
    /// When a remote member was last heard from, in wall-clock milliseconds, so that
    /// it still means something after a restart.
    pub(super) last_contact_ms: Option<u64>,
    /// Members recently up, persisted, to announce to when the seeds are gone.
    pub(super) remembered_peers: Vec<SwimIdentity>,
    pub(super) leases: Leases,
    /// Services republished above a version that came back from peers, since start
    /// (see `recover_own_record`). At most one entry per own service.
    pub(super) republished_since_start: BTreeSet<ServiceKey>,
    /// The driver's clock and the wall clock at start, to stamp records with the wall
    /// time they were signed at (for propagation-lag metrics only).
    pub(super) started: (Time, u64),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("member", &self.config.member)
            .field("generation", &self.generation)
            .field("records", &self.view.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node from what its store held (`PersistedState::default()` for a new
    /// one). Every stored record is verified again; failures are dropped and counted.
    /// The first commands persist the new generation and announce to the seeds.
    pub fn new(
        config: Config,
        key: ClusterKey,
        trust: impl Into<Arc<KeyRing>>,
        now: Time,
        seed: u64,
        persisted: PersistedState,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let trust: Arc<KeyRing> = trust.into();
        check_key(&config, &key, &trust)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let generation = start_generation(&persisted);
        let identity = SwimId::new(
            SwimIdentity {
                member: config.member.clone(),
                addr: config.addr,
                generation,
            },
            &trust,
        );
        let swim_rng = ChaCha8Rng::seed_from_u64(rng.random());
        let swim = Foca::new(
            identity,
            membership::foca_config(&config),
            swim_rng,
            SwimCodec::new(Arc::clone(&trust)),
        );
        let clusters = Clusters::new(config.member.cluster.clone(), &trust, now);
        let imports = Imports::new(&trust);
        let probes = Probes::new(
            Duration::from_millis(config.swim.probe_period_ms),
            Duration::from_millis(config.swim.suspect_to_down_ms),
        );
        let mut node = Node {
            config,
            key,
            trust,
            rng,
            swim,
            probes,
            members: Members::default(),
            clusters,
            view: View::default(),
            imports,
            traffic: Traffic::default(),
            timers: Timers::default(),
            persists: Vec::new(),
            commands: Vec::new(),
            stats: Stats::default(),
            record_cache: Box::new(NoRecordCache),
            own_version: start_version(&persisted),
            generation,
            announced_deadline: None,
            last_triggered_anti_entropy: None,
            isolated: true,
            last_heard: BTreeMap::new(),
            last_chance: BTreeMap::new(),
            last_contact_ms: persisted.last_contact_ms,
            remembered_peers: persisted.peers.clone(),
            leases: Leases::default(),
            republished_since_start: BTreeSet::new(),
            started: (now, persisted.wall_clock_ms),
        };
        node.leases.voter = Voter::restore(
            now,
            Duration::from_millis(node.config.lease.lease_ms),
            persisted.lease_votes.as_ref(),
        );
        node.persist(vec![StoreOp::PutGeneration(generation)], Durability::Flush);
        node.restore(persisted.records.into_values(), now);
        node.start(now);
        Ok(node)
    }

    fn restore(&mut self, records: impl Iterator<Item = Arc<SignedRecord>>, now: Time) {
        for record in records {
            match sign::verify(&self.trust, SignedRecord::clone(&record)) {
                Ok(verified) => {
                    let verified = verified.share();
                    let (outcome, merged) = self.view.merge(verified);
                    match outcome {
                        MergeOutcome::Accepted { .. } => self.stage_import(&merged),
                        // A store written under a larger bound: the excess is counted.
                        MergeOutcome::OverBound => self.stats.records_over_bound += 1,
                        _ => {}
                    }
                }
                Err(_) => self.stats.restore_dropped += 1,
            }
        }
        let own_max = self
            .view
            .origin(&self.config.member.cluster)
            .map_or(0, |o| o.max_version);
        self.own_version = self.own_version.max(own_max);
        let allowance = self.config.withdraw_grace()
            + Duration::from_millis(
                self.config.swim.suspect_to_down_ms + self.config.swim.probe_period_ms,
            );
        let unknown: Vec<ClusterId> = self.clusters.iter().map(|(c, _)| c.clone()).collect();
        for cluster in unknown {
            self.timers
                .schedule(now + allowance, TimerKind::Withdraw(cluster));
        }
    }

    fn start(&mut self, now: Time) {
        self.announce_to_known(now);
        let first_round = self.jittered(self.config.anti_entropy_period());
        self.timers
            .schedule(now + first_round, TimerKind::AntiEntropy);
        self.timers
            .schedule(now + LAST_CONTACT_PERIOD, TimerKind::LastContact);
        self.finish_step(true);
    }

    /// Announces this replica to its seeds and to the peers it remembers: at start, and
    /// while isolated (foca only announces to members it already knows up).
    fn announce_to_known(&mut self, now: Time) {
        let seeds = self.config.seeds.iter().map(|s| SwimIdentity {
            member: s.member.clone(),
            addr: s.addr,
            generation: 0,
        });
        let mut targets: Vec<SwimIdentity> =
            seeds.chain(self.remembered_peers.iter().cloned()).collect();
        targets.retain(|t| t.member != self.config.member);
        targets.sort();
        targets.dedup_by(|a, b| a.member == b.member);
        for dst in targets {
            let dst = SwimId::new(dst, &self.trust);
            self.with_swim(now, |swim, out| swim.announce(dst, out));
        }
    }

    /// Persists the time of last contact and a sample of live peers, or, when cut off
    /// from every remote cluster, tries to rejoin.
    fn keep_contact(&mut self, now: Time) {
        if !self.members.has_remote(&self.config.member.cluster) {
            self.stats.rejoin_attempts += 1;
            self.announce_to_known(now);
            return;
        }
        let mut up: Vec<SwimIdentity> = self.members.iter().cloned().collect();
        while up.len() > PEERS_REMEMBERED_MAX {
            let i = self.random_index(up.len());
            up.swap_remove(i);
        }
        up.sort();
        self.remembered_peers = up.clone();
        let wall_ms = self.wall_clock_ms(now);
        self.last_contact_ms = Some(wall_ms);
        let ops = vec![StoreOp::PutLastContact(wall_ms), StoreOp::PutPeers(up)];
        self.persist(ops, Durability::Lazy);
    }

    // ----- inputs -----

    /// A message from `from`, whose cluster the transport authenticated.
    pub fn handle_packet(&mut self, now: Time, from: &MemberId, channel: Channel, bytes: &[u8]) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let decoded = match channel {
            Channel::Datagram => Message::decode_datagram(bytes),
            Channel::Stream => Message::decode_frame(bytes),
        };
        match decoded {
            Ok(message) => {
                if self.trust.contains(&from.cluster) {
                    self.last_heard.insert(from.cluster.clone(), now);
                }
                self.handle_message(now, from, message);
            }
            Err(_) => self.stats.decode_errors += 1,
        }
        self.finish_step(false);
    }

    fn handle_message(&mut self, now: Time, from: &MemberId, message: Message) {
        match message {
            Message::Swim(packet) => self.handle_swim(now, from, &packet),
            Message::Push { records, relay } => self.receive_records(now, from, records, relay),
            Message::DigestRoot {
                root,
                records,
                members,
            } => self.handle_digest_root(from, root, records, members),
            Message::Members { members, reply } => self.handle_members(now, from, members, reply),
            Message::DigestOrigins { entries } => self.handle_digest_origins(from, entries),
            Message::Pull { wants } => self.handle_pull(from, wants),
            Message::Lease(message) => self.handle_lease_message(now, from, message),
        }
    }

    fn handle_swim(&mut self, now: Time, from: &MemberId, packet: &[u8]) {
        let header = match SwimCodec::peek_header(packet) {
            Ok(header) if header.src.0.member == *from => header,
            Ok(_) => {
                self.stats.sender_mismatches += 1;
                return;
            }
            Err(_) => {
                self.stats.decode_errors += 1;
                return;
            }
        };
        if let Some(round_trip) = self.probes.received(now, &header, &mut self.stats) {
            let cluster = &header.src.0.member.cluster;
            if *cluster != self.config.member.cluster {
                self.traffic.observe_rtt(cluster, round_trip);
            }
        }
        let to_old_self =
            header.dst.0.member == self.config.member && header.dst.0.generation < self.generation;
        self.with_swim(now, |swim, out| swim.handle_data(packet, out));
        if to_old_self {
            // The sender still knows this replica from before its restart; foca drops
            // such packets, so announce the new generation instead of waiting for the
            // periodic announce.
            self.with_swim(now, |swim, out| swim.announce(header.src, out));
        }
    }

    /// This cluster's export of `spec.service` changed (or appeared). Publishes a new
    /// version if the contents differ from the last one published.
    pub fn handle_export(&mut self, now: Time, spec: ExportSpec) -> Result<(), InputError> {
        let service = spec.service.clone();
        let result = self.publish(now, service, |version, origin| {
            spec.into_record(origin, version)
        });
        self.finish_step(false);
        result
    }

    /// This cluster stopped exporting `service`: publishes a tombstone.
    pub fn handle_unexport(&mut self, now: Time, service: ServiceKey) -> Result<(), InputError> {
        let created = self
            .view
            .get(&self.config.member.cluster, &service)
            .map_or(0, |r| r.record.export_created_ms);
        let result = self.publish(now, service.clone(), |version, origin| ExportRecord {
            origin,
            service,
            version,
            export_created_ms: created,
            published_ms: 0,
            service_type: ServiceType::ClusterSetIp,
            ports: Vec::new(),
            endpoints: Vec::new(),
            network: NetworkMode::Flat,
            properties: ServiceProperties::default(),
            tombstone: true,
        });
        self.finish_step(false);
        result
    }

    fn publish(
        &mut self,
        now: Time,
        service: ServiceKey,
        build: impl FnOnce(u64, ClusterId) -> ExportRecord,
    ) -> Result<(), InputError> {
        if !self.config.publisher {
            return Err(InputError::NotPublisher);
        }
        let local = self.config.member.cluster.clone();
        let version = self.own_version + 1;
        let mut record = build(version, local.clone());
        record.published_ms = self.wall_clock_ms(now);
        record.validate()?;
        let held = self.view.get(&local, &service);
        if held.is_some_and(|h| same_contents(&h.record, &record)) {
            return Ok(());
        }
        if held.is_none() && record.tombstone {
            return Ok(());
        }
        let own_records = self.view.origin(&local).map_or(0, |o| o.services.len());
        if held.is_none() && own_records >= RECORDS_PER_ORIGIN_MAX {
            self.stats.exports_over_bound += 1;
            return Err(InputError::TooManyExports(own_records));
        }
        let signed = self.key.sign(record)?;
        self.own_version = version;
        self.stats.published += 1;
        let (_, arc) = self.view.merge(signed.share());
        self.persist(
            vec![
                StoreOp::PutOwnVersion(version),
                StoreOp::PutRecord(Arc::clone(&arc)),
            ],
            Durability::Flush,
        );
        self.stage_import(&arc);
        self.push_fresh(&[arc]);
        Ok(())
    }

    /// Wall-clock milliseconds at `now`: the start's wall clock moved on by the
    /// driver's clock. Zero when the driver gave no wall clock.
    pub(super) fn wall_clock_ms(&self, now: Time) -> u64 {
        let (start, wall_ms) = self.started;
        if wall_ms == 0 {
            return 0;
        }
        wall_ms + u64::try_from(now.since(start).as_millis()).unwrap_or(u64::MAX)
    }

    /// Fires every timer that is due.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                TimerKind::Swim(timer) => {
                    self.with_swim(now, |swim, out| swim.handle_timer(timer, out))
                }
                TimerKind::AntiEntropy => {
                    self.start_anti_entropy(None);
                    let next = self.jittered(self.config.anti_entropy_period());
                    self.timers.schedule(now + next, TimerKind::AntiEntropy);
                }
                TimerKind::LastChance(cluster) => self.probe_before_withdrawal(now, cluster),
                TimerKind::Withdraw(cluster) => self.withdraw_if_still_down(now, cluster),
                TimerKind::LeaseRound { lease, round } => {
                    self.lease_round_timeout(now, lease, round)
                }
                TimerKind::LeaseRetry(lease) => self.lease_retry(now, lease),
                TimerKind::LeaseExpiry(lease) => self.lease_expiry(now, lease),
                TimerKind::LastContact => {
                    self.keep_contact(now);
                    self.timers
                        .schedule(now + LAST_CONTACT_PERIOD, TimerKind::LastContact);
                }
            }
        }
        self.finish_step(true);
    }

    /// The earliest deadline at which [`Node::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.next()
    }

    /// Takes the commands produced so far, persistence first.
    pub fn take_commands(&mut self) -> Vec<Command> {
        let mut out = std::mem::take(&mut self.persists);
        out.append(&mut self.commands);
        out
    }

    // ----- records -----

    pub(super) fn receive_records(
        &mut self,
        now: Time,
        from: &MemberId,
        records: Vec<SignedRecord>,
        relay: bool,
    ) {
        let mut fresh = Vec::new();
        for signed in records {
            if let Some(arc) = self.accept_record(now, signed) {
                fresh.push(arc);
            }
        }
        if fresh.is_empty() {
            return;
        }
        let ops = fresh
            .iter()
            .map(|r| StoreOp::PutRecord(Arc::clone(r)))
            .collect();
        self.persist(ops, Durability::Flush);
        if relay && from.cluster != self.config.member.cluster {
            self.relay_to_siblings(&fresh);
        }
    }

    /// Verifies and merges one record. Returns it when it is new to the view.
    fn accept_record(&mut self, now: Time, signed: SignedRecord) -> Option<Arc<SignedRecord>> {
        let verified = match self.verify_record(signed) {
            Ok(v) => v,
            Err(VerifyError::UnknownOrigin(_)) => {
                self.stats.records_unknown_origin += 1;
                return None;
            }
            Err(VerifyError::BadSignature(_)) => {
                self.stats.records_forged += 1;
                return None;
            }
            Err(VerifyError::Invalid(_) | VerifyError::TooLarge(_)) => {
                self.stats.records_invalid += 1;
                return None;
            }
        };
        let held = self
            .view
            .get(&verified.record.origin, &verified.record.service)
            .cloned();
        let (outcome, record) = self.view.merge(verified);
        match outcome {
            MergeOutcome::Accepted { .. } => {
                self.stats.records_accepted += 1;
                if record.record.origin == self.config.member.cluster && self.config.publisher {
                    return self.recover_own_record(now, held, record);
                }
                self.stage_import(&record);
                Some(record)
            }
            MergeOutcome::Duplicate => {
                self.stats.records_duplicate += 1;
                None
            }
            MergeOutcome::Stale => {
                self.stats.records_stale += 1;
                None
            }
            MergeOutcome::OverBound => {
                self.stats.records_over_bound += 1;
                None
            }
            MergeOutcome::Equivocation => {
                self.stats.records_equivocation += 1;
                self.commands.push(Command::Notify(Event::Equivocation {
                    origin: record.record.origin.clone(),
                    service: record.record.service.clone(),
                    version: record.record.version,
                }));
                None
            }
        }
    }

    /// A record of this cluster's, newer than any this publisher holds, came back from
    /// a peer: the publisher lost its store (or part of it) and restarted its versions
    /// lower. Versions move above the peer's, durably; and if this publisher had already
    /// published the service again since, that content is published once more, above
    /// the returned version, so that peers, which drop lower versions, take it. With
    /// nothing published since, the returned record stands until the next export or
    /// unexport of the service replaces it.
    fn recover_own_record(
        &mut self,
        now: Time,
        held: Option<Arc<SignedRecord>>,
        returned: Arc<SignedRecord>,
    ) -> Option<Arc<SignedRecord>> {
        self.stats.own_records_recovered += 1;
        self.own_version = self.own_version.max(returned.record.version);
        self.persist(
            vec![StoreOp::PutOwnVersion(self.own_version)],
            Durability::Flush,
        );
        self.stage_import(&returned);
        let Some(current) = held else {
            return Some(returned);
        };
        if same_contents(&current.record, &returned.record)
            || !self
                .republished_since_start
                .insert(current.record.service.clone())
        {
            // Once per service per start: two replicas that both believe they publish
            // would otherwise outbid each other without end. Later disagreements wait
            // for the driver's next export of the service.
            return Some(returned);
        }
        let republished = self.publish(now, current.record.service.clone(), |version, origin| {
            ExportRecord {
                origin,
                version,
                ..current.record.clone()
            }
        });
        if republished.is_err() {
            // The held record was signed and valid; only a bug makes it fail now.
            self.stats.own_records_recovered_failed += 1;
            return Some(returned);
        }
        // `publish` staged and pushed the republished record; the returned one is
        // superseded and is not relayed.
        None
    }

    /// Verifies a record, or finds it already verified in the record cache.
    fn verify_record(
        &mut self,
        signed: SignedRecord,
    ) -> Result<shoal_proto::Verified<Arc<SignedRecord>>, VerifyError> {
        let origin = &signed.record.origin;
        let key = self
            .trust
            .public(origin)
            .ok_or_else(|| VerifyError::UnknownOrigin(origin.clone()))?;
        if let Some(verified) = self.record_cache.lookup(&key, &signed) {
            self.stats.verify_cache_hits += 1;
            return Ok(verified);
        }
        let verified = sign::verify(&self.trust, signed)?.share();
        self.record_cache.remember(key, &verified);
        Ok(verified)
    }

    /// Installs a cache of verified records (see `record_cache`).
    pub fn set_record_cache(&mut self, cache: Box<dyn RecordCache>) {
        self.record_cache = cache;
    }

    // ----- output -----

    pub(super) fn persist(&mut self, ops: Vec<StoreOp>, durability: Durability) {
        self.persists.push(Command::Persist { ops, durability });
    }

    pub(super) fn send(&mut self, to: &MemberId, addr: Option<NetAddr>, message: &Message) {
        match message.encode() {
            Ok(bytes) => self.send_encoded(to, addr, message, bytes),
            Err(_) => self.stats.encode_errors += 1,
        }
    }

    pub(super) fn send_encoded(
        &mut self,
        to: &MemberId,
        addr: Option<NetAddr>,
        message: &Message,
        bytes: Vec<u8>,
    ) {
        let addr = addr.or_else(|| self.members.get(to).map(|m| m.addr));
        self.stats.packets_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        if message.channel() == Channel::Datagram {
            self.stats.membership_bytes_out += bytes.len() as u64;
        }
        self.commands.push(Command::Send {
            to: to.clone(),
            addr,
            channel: message.channel(),
            kind: message.kind(),
            bytes,
        });
    }

    /// Ends a step: emit changed imports and tell the driver when to call back.
    pub(super) fn finish_step(&mut self, always_announce: bool) {
        self.emit_imports();
        let next = self.timers.next();
        if let Some(at) = next
            && (always_announce || self.announced_deadline != Some(at))
        {
            self.commands.push(Command::SetTimer { at });
        }
        self.announced_deadline = next;
    }

    pub(super) fn jittered(&mut self, period: Duration) -> Duration {
        let us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(us / 2 + self.rng.random_range(0..=us))
    }

    pub(super) fn random_index(&mut self, len: usize) -> usize {
        self.rng.random_range(0..len)
    }
}

fn check_key(config: &Config, key: &ClusterKey, trust: &KeyRing) -> Result<(), ConfigError> {
    if key.cluster() != &config.member.cluster {
        return Err(ConfigError {
            field: "key",
            reason: format!(
                "signs for {}, but this replica belongs to {}",
                key.cluster(),
                config.member.cluster
            ),
        });
    }
    if trust.public(key.cluster()) != Some(key.public()) {
        return Err(ConfigError {
            field: "trust",
            reason: "does not hold this cluster's own public key".into(),
        });
    }
    Ok(())
}

fn same_contents(a: &ExportRecord, b: &ExportRecord) -> bool {
    a.export_created_ms == b.export_created_ms
        && a.service_type == b.service_type
        && a.ports == b.ports
        && a.endpoints == b.endpoints
        && a.network == b.network
        && a.properties == b.properties
        && a.tombstone == b.tombstone
}
