//! Eager push: a change goes out at once, with no batching tick.
//!
//! The origin pushes a new record to one replica of every other live cluster (its
//! gateway) and to its own siblings. A gateway that learns something new relays it to
//! its own siblings. Every live member thus receives each change once, in one
//! cross-cluster hop plus one local hop: about one network diameter. Older and
//! duplicate records are never forwarded. Anything a push misses (loss, a partition,
//! a member not yet known) is repaired by anti-entropy. A repair sent across clusters
//! asks for a relay too: when it reaches a gateway before the push does, the push then
//! arrives as a duplicate and is not relayed, and without this the gateway's siblings
//! would wait for their own anti-entropy round (the propagation tail at N = 100).

use std::sync::Arc;

use shoal_proto::wire::RECORDS_PER_MESSAGE_MAX;
use shoal_proto::{MemberId, Message, SignedRecord};

use super::node::Node;

impl Node {
    /// Pushes records this node just authored.
    pub(super) fn push_fresh(&mut self, records: &[Arc<SignedRecord>]) {
        let local = self.config.member.cluster.clone();
        for gateway in self.members.gateways(&local) {
            self.stats.pushes_sent += 1;
            self.send_records(&gateway, records, true);
        }
        self.relay_to_siblings(records);
    }

    /// Pushes this cluster's own records to `member`, of a cluster that just came up (a
    /// join, or a heal): it has them one hop later instead of at its next anti-entropy
    /// round, and relays them to its siblings. Only the lowest live replica of this
    /// cluster pushes, so the newcomer gets one copy.
    pub(super) fn push_own_records_to(&mut self, member: &MemberId) {
        let local = &self.config.member;
        if self.members.siblings(local).iter().any(|s| s < local) {
            return;
        }
        let Some(own) = self.view.origin(&local.cluster) else {
            return;
        };
        let records: Vec<_> = own.services.values().cloned().collect();
        if records.is_empty() {
            return;
        }
        self.stats.pushes_sent += 1;
        self.send_records(member, &records, true);
    }

    /// Forwards records new to this node to the other replicas of its cluster.
    pub(super) fn relay_to_siblings(&mut self, records: &[Arc<SignedRecord>]) {
        for sibling in self.members.siblings(&self.config.member) {
            self.stats.relays_sent += 1;
            self.send_records(&sibling, records, false);
        }
    }

    /// Sends records in as many pushes as the frame and count bounds require: at most
    /// `RECORDS_PER_MESSAGE_MAX` a push, halved until each push fits one frame (a single
    /// record always fits: `RECORD_BYTES_MAX` is below `FRAME_BYTES_MAX`).
    pub(super) fn send_records(
        &mut self,
        to: &MemberId,
        records: &[Arc<SignedRecord>],
        relay: bool,
    ) {
        for chunk in records.chunks(RECORDS_PER_MESSAGE_MAX) {
            self.send_fitting(to, chunk, relay);
        }
    }

    fn send_fitting(&mut self, to: &MemberId, records: &[Arc<SignedRecord>], relay: bool) {
        let message = Message::Push {
            records: records.iter().map(|r| SignedRecord::clone(r)).collect(),
            relay,
        };
        match message.encode() {
            Ok(bytes) => self.send_encoded(to, None, &message, bytes),
            Err(_) if records.len() > 1 => {
                let (left, right) = records.split_at(records.len() / 2);
                self.send_fitting(to, left, relay);
                self.send_fitting(to, right, relay);
            }
            Err(_) => self.stats.encode_errors += 1,
        }
    }
}
