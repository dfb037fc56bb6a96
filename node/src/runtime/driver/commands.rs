//! Carrying out the core's commands, in order, and what the driver observes on the way.

use std::collections::BTreeMap;

use shoal_proto::ServiceKey;
use tracing::{debug, info, warn};

use super::{Driver, DriverError, wall_clock_ms};
use crate::core::{Command, Durability, Event, ImportChange};
use crate::runtime::backend::{Backend, ImportsUpdate};

/// Upper bounds of the propagation-lag histogram, in seconds.
pub const LAG_BUCKETS_SECONDS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl<B: Backend> Driver<B> {
    /// Carries out the core's commands, in order. Consecutive `Persist` commands (the
    /// core puts them first) are written one by one and flushed once, before the first
    /// command that is not a `Persist`: nothing is sent that is not durable, and a step
    /// that published many records pays for one flush, not one each. The imports
    /// changed by the whole step go to the backend in one update.
    pub(super) fn carry_out(&mut self) -> Result<(), DriverError> {
        let mut flush_owed = false;
        // By service: a service changed twice in one step makes one change.
        let mut import_changes: BTreeMap<ServiceKey, ImportChange> = BTreeMap::new();
        for command in self.node.take_commands() {
            if let Command::Persist { ops, durability } = command {
                self.store.apply(&ops, Durability::Lazy)?;
                flush_owed |= durability == Durability::Flush;
                continue;
            }
            if std::mem::take(&mut flush_owed) {
                self.store.flush()?;
            }
            match command {
                Command::Persist { .. } => unreachable!("handled above"),
                Command::Send {
                    to,
                    addr,
                    channel,
                    bytes,
                    ..
                } => {
                    if let Some(addr) = addr {
                        self.addrs.insert(to.clone(), addr.into());
                    }
                    match self.addrs.get(&to) {
                        Some(addr) => self.transport.send(&to, *addr, channel, bytes),
                        None => debug!(member = %to, "no address known; message dropped"),
                    }
                }
                Command::ApplyImports { changes } => {
                    self.observe_lag(&changes);
                    for change in changes {
                        let change = match import_changes.remove(&change.service) {
                            Some(earlier) => earlier.then(change),
                            None => change,
                        };
                        import_changes.insert(change.service.clone(), change);
                    }
                }
                Command::SetTimer { at } => self.timer = Some(at),
                Command::Notify(event) => self.log_event(&event),
            }
        }
        if flush_owed {
            self.store.flush()?;
        }
        if !import_changes.is_empty() {
            let import_changes: Vec<ImportChange> = import_changes.into_values().collect();
            let settled = self.settled();
            self.backend.apply_imports(ImportsUpdate {
                all: self.node.imports(),
                changes: &import_changes,
                settled,
            });
            self.publish_dns();
        }
        self.note_contact();
        self.mirror_leases();
        Ok(())
    }

    /// Propagation lag: from the origin signing a record (its `published_ms`) to this
    /// node applying the import it changed, on wall clocks. Only the sources the change
    /// gained or updated count.
    fn observe_lag(&mut self, changes: &[crate::core::ImportChange]) {
        let now_ms = wall_clock_ms();
        let local = &self.config.cluster;
        for change in changes {
            let Some(import) = &change.import else {
                continue;
            };
            let (gained, updated) = (&change.sources.gained, &change.sources.updated);
            if gained.is_empty() && updated.is_empty() {
                continue;
            }
            let changed = import
                .sources
                .iter()
                .filter(|s| gained.contains(s.cluster()) || updated.contains(s.cluster()));
            for source in changed {
                let record = &source.record.record;
                if record.origin == *local || record.published_ms == 0 {
                    continue;
                }
                let lag = now_ms.saturating_sub(record.published_ms) as f64 / 1_000.0;
                if lag > 60.0 {
                    continue; // an old record newly imported (a heal), not a propagation
                }
                self.stats.lag_last_seconds = Some(lag);
                self.stats.lag_sum_seconds += lag;
                self.stats.lag_count += 1;
                for (i, bound) in LAG_BUCKETS_SECONDS.iter().enumerate() {
                    if lag <= *bound {
                        self.stats.lag_buckets[i] += 1;
                    }
                }
            }
        }
    }

    fn log_event(&self, event: &Event) {
        match event {
            Event::MemberUp(m) => info!(member = %m, "member up"),
            Event::MemberDown(m) => info!(member = %m, "member down"),
            Event::ClusterDown(c) => {
                info!(cluster = %c, "cluster down; withdrawal after the grace period")
            }
            Event::ClusterWithdrawn(c) => info!(cluster = %c, "cluster withdrawn"),
            Event::ClusterRestored(c) => info!(cluster = %c, "cluster restored"),
            Event::Equivocation {
                origin,
                service,
                version,
            } => warn!(origin = %origin, service = %service, version, "equivocation rejected"),
            Event::Isolated => warn!("no remote member reachable: serving the last view as stale"),
            Event::Connected => info!("remote members reachable again"),
            Event::LeaseAcquired { lease, token } => {
                info!(lease = %lease, token = token.0, "lease acquired");
            }
            Event::LeaseLost { lease } => warn!(lease = %lease, "lease lost"),
            Event::LeaseReleased { lease } => info!(lease = %lease, "lease released"),
        }
    }
}
