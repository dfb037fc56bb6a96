//! Starting nodes, carrying out their commands in order, and delivering messages.

use std::rc::Rc;
use std::sync::Arc;

use rand::RngExt;
use shoal_node::core::{
    Command, Durability, Event as CoreEvent, Node, PersistedState, StoreOp, Time,
};
use shoal_proto::MemberId;
use shoal_proto::wire::Channel;

use super::{Delivery, Event, World};
use crate::disk::BACKGROUND_FLUSH_US;
use crate::invariants::monotonicity;
use crate::network::{DropReason, Fate};
use crate::workload::Change;

impl World {
    /// Starts (or restarts) a node from its store.
    pub(super) fn boot(&mut self, n: usize) {
        let cluster = self.topo.cluster_of(n);
        if self.alive(n) || self.killed[cluster] {
            return;
        }
        let seed: u64 = self.rng.random();
        let local = self.nodes[n].clock.local(self.now);
        let persisted = PersistedState {
            wall_clock_ms: local.as_millis(),
            ..self.nodes[n].disk.persisted(&self.keys)
        };
        let mut core = Node::new(
            self.topo.configs[n].clone(),
            self.topo.clusters[cluster].key.clone(),
            Arc::clone(&self.topo.trust),
            local,
            seed,
            persisted,
        )
        .expect("the simulator builds valid configurations");
        // One cache for every node: each distinct record is verified and stored once.
        core.set_record_cache(Box::new(Rc::clone(&self.record_cache)));
        if let Err(e) = monotonicity::check_restore(&self.nodes[n].disk, &core) {
            self.violations
                .report(self.now, "monotonicity", format!("node {n}: {e}"));
        }
        let restart = self.nodes[n].incarnation > 0;
        self.nodes[n].core = Some(core);
        self.nodes[n].started_at = self.now;
        if restart {
            self.restarts += 1;
        }
        if self.withdrawal.dead_since(cluster).is_some() {
            self.withdrawal.revived(cluster);
            self.affinity_revived(cluster);
        }
        self.timeline.node_up(n, self.now);
        self.with_node(n, |_, _| {});
        self.node_came_up(n);
        self.request_lease(n);
        if self.topo.is_publisher(n) && self.workload_started() {
            self.sync_affinity_truth(cluster);
            for change in self.workload.current(cluster) {
                self.feed(n, change);
            }
        }
    }

    pub(super) fn workload_started(&self) -> bool {
        self.now >= self.plan.exports_at_us
    }

    /// Gives one input to a node, then carries out its commands and checks it.
    pub(super) fn with_node(&mut self, n: usize, input: impl FnOnce(&mut Node, Time)) {
        let local = self.nodes[n].clock.local(self.now);
        let Some(core) = self.nodes[n].core.as_mut() else {
            return;
        };
        input(core, local);
        let commands = core.take_commands();
        self.carry_out(n, commands);
        self.check_core(n);
        self.check_affinity(n);
    }

    /// Feeds one workload change to a publisher.
    pub(super) fn feed(&mut self, n: usize, change: Change) {
        let mut refused = None;
        self.with_node(n, |core, now| {
            let result = match change {
                Change::Export(spec) => core.handle_export(now, spec),
                Change::Unexport(service) => core.handle_unexport(now, service),
            };
            refused = result.err();
        });
        if let Some(e) = refused {
            self.violations.report(
                self.now,
                "driver",
                format!("node {n} refused an export: {e}"),
            );
        }
    }

    pub(super) fn check_core(&mut self, n: usize) {
        if let Some(core) = &self.nodes[n].core
            && let Err(v) = core.check_invariants()
        {
            self.violations.report(self.now, "core", v);
        }
    }

    fn carry_out(&mut self, n: usize, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Persist { ops, durability } => self.persist(n, &ops, durability),
                Command::Send {
                    to,
                    channel,
                    kind,
                    bytes,
                    ..
                } => self.send(n, &to, channel, kind, bytes),
                Command::ApplyImports { changes } => self.apply_imports(n, changes),
                Command::SetTimer { at } => self.set_timer(n, at),
                Command::Notify(event) => self.notify(event),
            }
        }
    }

    fn persist(&mut self, n: usize, ops: &[StoreOp], durability: Durability) {
        for op in ops {
            if let StoreOp::PutRecord(record) = op {
                self.observe_record(n, record);
            }
        }
        self.nodes[n].disk.write(&self.keys, ops, durability);
        if durability == Durability::Lazy {
            self.schedule_flush(n);
            if let Some(down_us) = self.nodes[n].crash_on_lazy.take() {
                let node = n as u32;
                self.queue.push(self.now, Event::CrashNow { node, down_us });
            }
        }
    }

    /// The background flush runs every `BACKGROUND_FLUSH_US`, at a per-node phase.
    fn schedule_flush(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.flush_queued {
            return;
        }
        node.flush_queued = true;
        let phase = node.flush_phase_us;
        let ticks = (self.now.saturating_sub(phase)) / BACKGROUND_FLUSH_US + 1;
        let at = phase + ticks * BACKGROUND_FLUSH_US;
        let (node, incarnation) = (n as u32, node.incarnation);
        self.queue.push(at, Event::Flush { node, incarnation });
    }

    pub(super) fn background_flush(&mut self, n: usize, incarnation: u32) {
        let node = &mut self.nodes[n];
        if node.incarnation != incarnation || node.core.is_none() {
            return;
        }
        node.flush_queued = false;
        node.disk.flush(&self.keys);
    }

    fn send(
        &mut self,
        n: usize,
        to: &MemberId,
        channel: Channel,
        kind: &'static str,
        bytes: Vec<u8>,
    ) {
        self.traffic.sent(kind, bytes.len());
        match self.topo.node_index(to) {
            Some(dst) => self.transmit(n, dst, channel, bytes),
            None => self.traffic.dropped("unknown member"),
        }
    }

    /// Puts a message on the simulated network.
    pub(super) fn transmit(&mut self, from: usize, to: usize, channel: Channel, bytes: Vec<u8>) {
        if channel == Channel::Stream && !self.alive(to) {
            self.traffic.dropped(drop_label(DropReason::Down));
            return;
        }
        let fate = self.net.transmit(&mut self.rng, from, to, channel);
        let Fate::Deliver {
            delay_us,
            duplicate_us,
        } = fate
        else {
            if let Fate::Dropped(reason) = fate {
                self.traffic.dropped(drop_label(reason));
            }
            return;
        };
        let delivery = |bytes| Delivery {
            from: from as u32,
            to: to as u32,
            channel,
            from_incarnation: self.nodes[from].incarnation,
            to_incarnation: self.nodes[to].incarnation,
            bytes,
        };
        if let Some(dup_us) = duplicate_us {
            self.traffic.duplicated += 1;
            let copy = delivery(bytes.clone());
            self.queue.push(self.now + dup_us, Event::Deliver(copy));
        }
        let first = delivery(bytes);
        self.queue.push(self.now + delay_us, Event::Deliver(first));
    }

    /// A message arrives: checked against crashes and partitions again, then handled.
    pub(super) fn deliver(&mut self, d: Delivery) {
        let (from, to) = (d.from as usize, d.to as usize);
        let broken = d.channel == Channel::Stream
            && (d.to_incarnation != self.nodes[to].incarnation
                || d.from_incarnation != self.nodes[from].incarnation);
        if !self.alive(to) || broken {
            self.traffic.dropped(drop_label(DropReason::Down));
            return;
        }
        let cut = match d.channel {
            Channel::Datagram => self.net.faults.blocked(from, to),
            Channel::Stream => !self.net.faults.connected(from, to),
        };
        if cut {
            self.traffic.dropped(drop_label(DropReason::Partition));
            return;
        }
        self.traffic.delivered += 1;
        let local = self.nodes[to].clock.local(self.now);
        let core = self.nodes[to].core.as_mut().expect("checked alive");
        core.handle_packet(local, &self.topo.members[from], d.channel, &d.bytes);
        let commands = core.take_commands();
        self.carry_out(to, commands);
        self.check_core(to);
        self.check_affinity(to);
    }

    /// The core asked to be woken at `at` (its clock). Only an earlier wake-up than
    /// the one queued is queued; a later one is queued when the earlier fires.
    fn set_timer(&mut self, n: usize, at: Time) {
        let node = &mut self.nodes[n];
        let true_at = node.clock.true_of(at).max(self.now);
        node.wake_at = Some(true_at);
        if node.queued_wake.is_none_or(|q| true_at < q) {
            node.queued_wake = Some(true_at);
            self.queue.push(true_at, Event::Wake { node: n as u32 });
        }
    }

    pub(super) fn wake(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.queued_wake = None;
        match node.wake_at {
            Some(at) if at <= self.now => {
                node.wake_at = None;
                self.with_node(n, |core, now| core.handle_timeout(now));
            }
            Some(at) => {
                node.queued_wake = Some(at);
                self.queue.push(at, Event::Wake { node: n as u32 });
            }
            None => {}
        }
    }

    fn notify(&mut self, event: CoreEvent) {
        if let CoreEvent::Equivocation { .. } = event {
            self.equivocation_alarms += 1;
        }
    }
}

pub(super) fn drop_label(reason: DropReason) -> &'static str {
    match reason {
        DropReason::Partition => "partition",
        DropReason::Loss => "loss",
        DropReason::Timeout => "stream timeout",
        DropReason::Down => "receiver down or connection reset",
    }
}
