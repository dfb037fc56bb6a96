//! The log `--plot` draws: faults, crashes and import changes over time.

use std::collections::BTreeMap;

use crate::plot::{Span, Timeline};

/// Most import changes kept for the picture.
pub const IMPORT_CHANGES_MAX: usize = 100_000;

#[derive(Debug, Default)]
pub struct TimelineLog {
    enabled: bool,
    open_faults: BTreeMap<u32, (u64, String, Vec<usize>)>,
    partitions: Vec<(Span, Vec<usize>)>,
    lossy_since: Option<u64>,
    down_since: BTreeMap<usize, (usize, u64, String)>,
    crashes: Vec<(usize, Span)>,
    import_changes: Vec<(usize, u64)>,
}

fn span(start_us: u64, end_us: u64, label: String) -> Span {
    Span {
        start_ms: start_us / 1_000,
        end_ms: end_us / 1_000,
        label,
    }
}

impl TimelineLog {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    pub fn fault_started(&mut self, id: u32, label: String, rows: Vec<usize>, now: u64) {
        if self.enabled {
            self.open_faults.insert(id, (now, label, rows));
        }
    }

    pub fn fault_ended(&mut self, id: u32, now: u64) {
        if let Some((start, label, rows)) = self.open_faults.remove(&id) {
            self.partitions.push((span(start, now, label), rows));
        }
    }

    /// Links became lossy (or clean again).
    pub fn links(&mut self, lossy: bool, now: u64) {
        if !self.enabled {
            return;
        }
        match (lossy, self.lossy_since) {
            (true, None) => self.lossy_since = Some(now),
            (false, Some(start)) => {
                self.partitions
                    .push((span(start, now, "lossy links".into()), Vec::new()));
                self.lossy_since = None;
            }
            _ => {}
        }
    }

    pub fn heal(&mut self, now: u64) {
        let ids: Vec<u32> = self.open_faults.keys().copied().collect();
        for id in ids {
            self.fault_ended(id, now);
        }
        self.links(false, now);
    }

    /// `member` (node `node` of cluster row `cluster`) went down.
    pub fn node_down(&mut self, cluster: usize, node: usize, member: String, now: u64) {
        if self.enabled {
            self.down_since.insert(node, (cluster, now, member));
        }
    }

    pub fn node_up(&mut self, node: usize, now: u64) {
        if let Some((cluster, start, member)) = self.down_since.remove(&node) {
            self.crashes
                .push((cluster, span(start, now, format!("{member} down"))));
        }
    }

    pub fn import_changed(&mut self, cluster: usize, now: u64) {
        if self.enabled && self.import_changes.len() < IMPORT_CHANGES_MAX {
            self.import_changes.push((cluster, now / 1_000));
        }
    }

    /// Closes what is still open at `end_us` and builds the picture's data.
    pub fn into_timeline(
        mut self,
        title: String,
        clusters: Vec<String>,
        end_us: u64,
        propagation_ms: Vec<f64>,
    ) -> Option<Timeline> {
        if !self.enabled {
            return None;
        }
        self.heal(end_us);
        let nodes: Vec<usize> = self.down_since.keys().copied().collect();
        for node in nodes {
            self.node_up(node, end_us);
        }
        Some(Timeline {
            title,
            clusters,
            duration_ms: end_us / 1_000,
            partitions: self.partitions,
            crashes: self.crashes,
            import_changes: self.import_changes,
            propagation_ms,
        })
    }
}
