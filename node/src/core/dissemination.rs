//! Eager push: a change goes out at once, with no batching tick.
//!
//! The origin pushes a new record to one replica of every other live cluster (its
//! gateway) and to its own siblings. A gateway that learns something new relays it to
//! its own siblings. Every live member thus receives each change once, in one
//! cross-cluster hop plus one local hop: about one network diameter. Older and
//! duplicate records are never forwarded. Anything a push misses (loss, a partition,
//! a member not yet known) is repaired by anti-entropy.

use std::sync::Arc;

use shoal_proto::codec::FRAME_BYTES_MAX;
use shoal_proto::wire::RECORDS_PER_MESSAGE_MAX;
use shoal_proto::{MemberId, Message, SignedRecord};

use super::node::Node;

/// Room left in a frame for the message envelope around its records.
const FRAME_ENVELOPE_BYTES: usize = 64;

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

    /// Forwards records new to this node to the other replicas of its cluster.
    pub(super) fn relay_to_siblings(&mut self, records: &[Arc<SignedRecord>]) {
        for sibling in self.members.siblings(&self.config.member) {
            self.stats.relays_sent += 1;
            self.send_records(&sibling, records, false);
        }
    }

    /// Sends records in as many pushes as the frame and count bounds require.
    pub(super) fn send_records(
        &mut self,
        to: &MemberId,
        records: &[Arc<SignedRecord>],
        relay: bool,
    ) {
        for chunk in chunk_records(records) {
            let records = chunk.iter().map(|r| SignedRecord::clone(r)).collect();
            self.send(to, None, &Message::Push { records, relay });
        }
    }
}

/// Splits records into groups that each fit one frame and the per-message count.
fn chunk_records(records: &[Arc<SignedRecord>]) -> Vec<&[Arc<SignedRecord>]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = FRAME_ENVELOPE_BYTES;
    for (i, record) in records.iter().enumerate() {
        let size = record_size(record);
        let full = i - start >= RECORDS_PER_MESSAGE_MAX || bytes + size > FRAME_BYTES_MAX;
        if full && i > start {
            chunks.push(&records[start..i]);
            start = i;
            bytes = FRAME_ENVELOPE_BYTES;
        }
        bytes += size;
    }
    if start < records.len() {
        chunks.push(&records[start..]);
    }
    chunks
}

/// An upper bound on a record's encoded size, cheap to compute.
fn record_size(record: &SignedRecord) -> usize {
    let r = &record.record;
    let endpoint_bytes: usize = r
        .endpoints
        .iter()
        .map(|e| {
            8 + e.addresses.len() * 17
                + e.zone.as_ref().map_or(0, |z| z.len() + 9)
                + e.hostname.as_ref().map_or(0, |h| h.len() + 9)
        })
        .sum();
    let port_bytes: usize = r
        .ports
        .iter()
        .map(|p| 16 + p.name.len() + p.app_protocol.as_ref().map_or(0, String::len))
        .sum();
    128 + r.origin.as_str().len() + r.service.to_string().len() + endpoint_bytes + port_bytes
}
