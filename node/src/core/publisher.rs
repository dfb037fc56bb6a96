//! Which replica of a cluster publishes its records: the runtime's local leader
//! election (a `coordination.k8s.io` Lease between the replicas) decides, and tells
//! the core through [`Node::set_publisher`].
//!
//! Taking over: the previous publisher was another replica, with its own store and its
//! own count of versions. Its records reached this replica's view (siblings relay them),
//! but the last ones may still be in flight. The new publisher's versions therefore
//! start above the highest own version in its view, and at least at the wall clock's
//! milliseconds: replicas start counting there (see
//! [`PersistedState::wall_clock_ms`](super::PersistedState)), so unless the old
//! publisher signed more than one record per millisecond on average, the wall clock is
//! above every version it used, and no version is signed twice with different
//! contents (which peers would reject as equivocation). The raised version is flushed
//! before anything is published, as every step persists before it sends.
//!
//! Handing off: a replica that is no longer the publisher stops publishing at once
//! (exports are refused with [`InputError::NotPublisher`](super::InputError)) and lets
//! go of every quorum lease: its hold ends on the spot, before the voters hear of it,
//! so it is never write-ready while another replica may be; the voters are told to
//! release its grant, which frees the lease for the next holder without waiting out
//! the grant; and it stops renewing and stops any round in flight (a grant that round
//! still gets accepted lapses on the voters' timers). The new publisher acquires the
//! lease afresh, with a new, higher fencing token, when it is asked to.

use super::command::{Durability, StoreOp};
use super::node::Node;
use super::time::Time;

impl Node {
    /// This replica becomes (`true`) or stops being (`false`) its cluster's publisher.
    /// Nothing happens when that does not change it.
    pub fn set_publisher(&mut self, now: Time, publisher: bool) {
        if self.config.publisher == publisher {
            return;
        }
        self.config.publisher = publisher;
        if publisher {
            self.stats.publisher_gained += 1;
            self.take_over_versions(now);
        } else {
            self.stats.publisher_lost += 1;
            self.release_all_leases(now);
        }
        self.finish_step(false);
    }

    /// Raises this replica's version above every own record it holds and to the wall
    /// clock, durably.
    fn take_over_versions(&mut self, now: Time) {
        let own_max = self
            .view
            .origin(&self.config.member.cluster)
            .map_or(0, |o| o.max_version);
        self.own_version = self.own_version.max(own_max).max(self.wall_clock_ms(now));
        self.persist(
            vec![StoreOp::PutOwnVersion(self.own_version)],
            Durability::Flush,
        );
    }

    /// Whether this replica publishes its cluster's records now.
    pub fn is_publisher(&self) -> bool {
        self.config.publisher
    }
}
