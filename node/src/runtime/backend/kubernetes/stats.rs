//! The Kubernetes backend's counters, shared by its tasks and read by `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Counters by (what, label): `("writes", "endpointslices")`,
/// `("watch_errors", "unreachable")`, `("conflicts", "services")`. Labels are
/// low-cardinality names, never object names.
#[derive(Debug, Default)]
pub struct KubeStats {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl KubeStats {
    pub fn count(&self, what: &'static str, label: &'static str) {
        self.add(what, label, 1);
    }

    pub fn add(&self, what: &'static str, label: &'static str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((what, label)).or_default() += n;
    }

    pub fn get(&self, what: &'static str, label: &'static str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&(what, label)).copied().unwrap_or(0)
    }

    /// Every counter, sorted.
    pub fn snapshot(&self) -> Vec<((&'static str, &'static str), u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }
}
