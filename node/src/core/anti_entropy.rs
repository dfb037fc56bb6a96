//! Anti-entropy: repair what pushes missed, periodically and on every join or heal.
//!
//! 1. A sends B `DigestRoot`: one hash over its whole view.
//! 2. If B's differs, B answers `DigestOrigins`: per origin, the highest version, a
//!    hash and a count.
//! 3. For each origin whose summary differs, A pushes B what is newer than B's highest
//!    version, and asks B with `Pull` for whatever A lacks, listing what it holds.
//! 4. B answers the pull with the records A lacks, and if A's list shows A holds
//!    something newer, B pulls that back.
//!
//! The same round also heals membership, as memberlist's push-pull does: the digest
//! carries a hash of the members the sender believes up, and when it differs the two
//! exchange member lists. SWIM's infection-style gossip alone can leave a member
//! unknown to a few nodes until round-robin probing reaches it (N probe periods).
//!
//! In steady state a round costs one small frame.

use std::collections::BTreeMap;

use shoal_proto::codec::FRAME_BYTES_MAX;
use shoal_proto::wire::{
    MEMBERS_PER_FRAME, ORIGIN_WANT_BYTES_BASE, ORIGINS_PER_MESSAGE_MAX, OriginSummary, OriginWant,
    RECORD_REF_BYTES_MAX,
};
use shoal_proto::{ClusterId, MemberId, Message, SwimIdentity};

use super::membership::SwimId;
use super::node::Node;
use super::time::Time;

/// Most members announced to in answer to one member list; the rest wait for the next
/// round.
const ANNOUNCES_PER_LIST_MAX: usize = 32;

/// Bytes of a pull around its wants: the variant and the wants' count.
const PULL_BYTES_BASE: usize = 8;

impl Node {
    /// Starts a round with `peer`, or with a random live member.
    pub(super) fn start_anti_entropy(&mut self, peer: Option<MemberId>) {
        let peer = match peer {
            Some(peer) => peer,
            None => {
                let up = self.members_up();
                if up.is_empty() {
                    return;
                }
                let i = self.random_index(up.len());
                up[i].clone()
            }
        };
        self.stats.anti_entropy_rounds += 1;
        let (root, records) = self.view_digest();
        let members = self.membership_digest();
        self.send(
            &peer,
            None,
            &Message::DigestRoot {
                root,
                records,
                members,
            },
        );
    }

    pub(super) fn handle_digest_root(
        &mut self,
        from: &MemberId,
        root: u64,
        records: u64,
        members: u64,
    ) {
        if members != self.membership_digest() {
            self.send_members(from, true);
        }
        if (root, records) == self.view_digest() {
            self.stats.anti_entropy_in_sync += 1;
            return;
        }
        let summaries = self.view.summaries();
        for entries in summaries.chunks(ORIGINS_PER_MESSAGE_MAX) {
            self.send(
                from,
                None,
                &Message::DigestOrigins {
                    entries: entries.to_vec(),
                },
            );
        }
    }

    pub(super) fn handle_digest_origins(&mut self, from: &MemberId, entries: Vec<OriginSummary>) {
        let theirs: BTreeMap<ClusterId, OriginSummary> =
            entries.into_iter().map(|e| (e.origin.clone(), e)).collect();
        let mut origins: Vec<ClusterId> = theirs.keys().cloned().collect();
        origins.extend(self.view.summaries().into_iter().map(|s| s.origin));
        origins.sort();
        origins.dedup();
        let mut wants = Vec::new();
        for origin in origins {
            let mine = self.view.summary(&origin);
            let their = theirs.get(&origin);
            if mine.as_ref() == their {
                continue;
            }
            let their_max = their.map_or(0, |s| s.max_version);
            let newer: Vec<_> = self
                .view
                .origin(&origin)
                .map(|o| {
                    o.services
                        .values()
                        .filter(|r| r.record.version > their_max)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !newer.is_empty() {
                self.stats.pull_records_sent += newer.len() as u64;
                // Relayed like a push (see `dissemination`): a repair that reaches a
                // gateway before the eager push would otherwise stop there.
                self.send_records(from, &newer, true);
            }
            if their.is_some() {
                wants.push(OriginWant {
                    have: self.view.refs(&origin),
                    origin,
                });
            }
        }
        self.send_pulls(from, wants);
    }

    pub(super) fn handle_pull(&mut self, from: &MemberId, wants: Vec<OriginWant>) {
        let mut pull_back = Vec::new();
        for want in wants {
            let missing = self.view.newer_than(&want.origin, &want.have);
            if !missing.is_empty() {
                self.stats.pull_records_sent += missing.len() as u64;
                self.send_records(from, &missing, true);
            }
            let they_are_ahead = want.have.iter().any(|theirs| {
                self.view
                    .get(&want.origin, &theirs.service)
                    .is_none_or(|mine| mine.record.version < theirs.version)
            });
            if they_are_ahead {
                pull_back.push(OriginWant {
                    have: self.view.refs(&want.origin),
                    origin: want.origin,
                });
            }
        }
        self.send_pulls(from, pull_back);
    }

    /// Sends wants in pulls that each fit one frame, by the largest each want can
    /// encode to (one origin's whole list always fits: see `RECORDS_PER_ORIGIN_MAX`).
    fn send_pulls(&mut self, to: &MemberId, wants: Vec<OriginWant>) {
        let mut batch = Vec::new();
        let mut bytes = PULL_BYTES_BASE;
        for want in wants {
            let size = ORIGIN_WANT_BYTES_BASE + want.have.len() * RECORD_REF_BYTES_MAX;
            if !batch.is_empty()
                && (bytes + size > FRAME_BYTES_MAX || batch.len() >= ORIGINS_PER_MESSAGE_MAX)
            {
                self.stats.pulls_sent += 1;
                self.send(
                    to,
                    None,
                    &Message::Pull {
                        wants: std::mem::take(&mut batch),
                    },
                );
                bytes = PULL_BYTES_BASE;
            }
            bytes += size;
            batch.push(want);
        }
        if !batch.is_empty() {
            self.stats.pulls_sent += 1;
            self.send(to, None, &Message::Pull { wants: batch });
        }
    }

    /// The hash of the members this node believes up, itself included.
    fn membership_digest(&self) -> u64 {
        self.members.hash() ^ self.own_identity().digest_hash()
    }

    fn send_members(&mut self, to: &MemberId, reply: bool) {
        let mut members: Vec<SwimIdentity> = self.members.iter().cloned().collect();
        members.push(self.own_identity());
        for chunk in members.chunks(MEMBERS_PER_FRAME) {
            self.send(
                to,
                None,
                &Message::Members {
                    members: chunk.to_vec(),
                    reply,
                },
            );
        }
    }

    /// Learns of members a peer knows and this node does not: members of trusted
    /// clusters that foca has never heard of, or only in an older generation. The list
    /// is second-hand, so it is never applied as it stands (a peer's stale list would
    /// resurrect a dead member, and the zombie would spread from list to list): this
    /// node announces itself to each such member instead, and a live one answers
    /// first-hand. A generation this node saw go down is not even tried.
    pub(super) fn handle_members(
        &mut self,
        now: Time,
        from: &MemberId,
        members: Vec<SwimIdentity>,
        reply: bool,
    ) {
        let known: BTreeMap<&MemberId, u32> = self
            .swim
            .iter_membership_state()
            .map(|m| (&m.id().0.member, m.id().0.generation))
            .collect();
        let news: Vec<SwimIdentity> = members
            .into_iter()
            .filter(|id| id.member != self.config.member && self.trust.contains(&id.member.cluster))
            .filter(|id| known.get(&id.member).is_none_or(|g| *g < id.generation))
            .filter(|id| {
                !self
                    .clusters
                    .seen_down(&id.member.cluster, id.member.replica, id.generation)
            })
            .take(ANNOUNCES_PER_LIST_MAX)
            .collect();
        for id in news {
            self.stats.members_announced += 1;
            let id = SwimId::new(id, &self.trust);
            self.with_swim(now, |swim, out| swim.announce(id, out));
        }
        if reply {
            self.send_members(from, false);
        }
    }
}
