//! Invariant 3, monotonicity: no record version ever goes backwards in any view,
//! across crashes too.
//!
//! - At every record write, the version must not be below what the node already
//!   wrote for that (origin, service) ([`check_write`]).
//! - At every restart, the restored view must hold at least every version that was
//!   durable ([`check_restore`]); what was never flushed may be lost.
//! - On a sample of nodes, the view and the store must agree: every record in the view
//!   was written to the store ([`check_view_stored`]), so the view survives a restart.

use shoal_node::core::Node;
use shoal_proto::SignedRecord;

use crate::disk::Disk;
use crate::keyspace::KeySpace;

/// A record write at a node that already wrote `written` for the same key.
pub fn check_write(written: u64, record: &SignedRecord) -> Result<(), String> {
    if record.record.version < written {
        return Err(format!(
            "{}/{} went back from v{written} to v{}",
            record.record.origin, record.record.service, record.record.version
        ));
    }
    Ok(())
}

/// After a restart: every durable record is held at its version or newer.
pub fn check_restore(disk: &Disk, node: &Node) -> Result<(), String> {
    for (_, stored) in disk.durable_records() {
        let r = &stored.record;
        let held = node
            .record(&r.origin, &r.service)
            .map_or(0, |h| h.record.version);
        if held < r.version {
            return Err(format!(
                "restart lost {}/{}: v{} was durable, the view holds v{held}",
                r.origin, r.service, r.version
            ));
        }
    }
    if node.own_version() < disk.durable_own_version() {
        return Err(format!(
            "own version went back from {} to {}",
            disk.durable_own_version(),
            node.own_version()
        ));
    }
    Ok(())
}

/// Every record in the view was written to the store, at the same version.
pub fn check_view_stored(keys: &KeySpace, disk: &Disk, node: &Node) -> Result<(), String> {
    for held in node.records() {
        let written = disk.written_version(keys, held);
        if written != held.record.version {
            return Err(format!(
                "view holds {}/{} v{} but the store has v{written}",
                held.record.origin, held.record.service, held.record.version
            ));
        }
    }
    Ok(())
}
