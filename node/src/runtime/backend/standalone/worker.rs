//! The standalone backend behind the driver's seam. All of its file work (listing and
//! parsing `in/`, rendering and writing `out/`) runs on Tokio's blocking pool, one job
//! at a time, in a task of its own; the driver only swaps in-memory values with it.
//!
//! - Scans: `in/` is watched for changes and read again in full every
//!   [`RESYNC_PERIOD`]. A scan's export changes reach the driver as one event, with
//!   the export set they lead to.
//! - Writes: the driver's imports updates are merged into one pending write (the latest
//!   change per service, the latest full set), which the task takes whenever it is
//!   free. However fast updates come, the driver never waits and nothing is lost: the
//!   last state of every service is written.
//!
//! **Architecture invariant:** nothing here runs on the driver's task but taking a
//! lock held only to swap a few values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use shoal_proto::ServiceKey;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::warn;

use super::{BackendStats, ExportChange, StandaloneBackend};
use crate::core::{ImportChange, ImportedService};
use crate::runtime::backend::seam::{
    Backend, BackendCounters, BackendEvent, ExportSet, Imports, ImportsUpdate, LeaseSeen,
    RESYNC_PERIOD,
};

/// Scan results the task may hold for the driver. A scan waits for room; the driver
/// takes them at its own pace.
const SCANS_QUEUED_MAX: usize = 4;

/// What a scan found, for the driver.
#[derive(Debug)]
enum Scanned {
    Changes {
        changes: Vec<ExportChange>,
        exports: Arc<ExportSet>,
    },
    /// A periodic scan found no change: time for a full resync.
    Resync { exports: Arc<ExportSet> },
}

/// Writes the driver asked for that the task has not yet taken.
#[derive(Debug, Default)]
struct PendingWrite {
    /// The latest change of each service since the last write.
    changes: BTreeMap<ServiceKey, Option<Arc<ImportedService>>>,
    /// The latest full set of imports (the exports' status is computed against it).
    all: Option<Arc<Imports>>,
    /// Whether a full rewrite was asked for.
    resync: bool,
}

/// What both sides share: the pending write, its doorbell, and the counters.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<PendingWrite>,
    doorbell: Notify,
    stats: Mutex<WorkerStats>,
}

#[derive(Clone, Debug, Default)]
struct WorkerStats {
    backend: BackendStats,
    /// Failures of `in/` or `out/` themselves, by reason.
    errors: BTreeMap<&'static str, u64>,
    /// Imports updates merged into a pending write before the task took it.
    writes_merged: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The driver's side of the standalone backend.
#[derive(Debug)]
pub struct Standalone {
    scans: mpsc::Receiver<Scanned>,
    exports: Option<Arc<ExportSet>>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Standalone {
    /// Starts the task that owns `inner`, watching `dir` every `poll_ms`. Must be called
    /// inside a Tokio runtime.
    pub fn new(inner: StandaloneBackend, dir: PathBuf, poll_ms: u64) -> Self {
        let shared = Arc::new(Shared::default());
        let (scans_tx, scans) = mpsc::channel(SCANS_QUEUED_MAX);
        let changed = super::watch(dir, poll_ms);
        #[allow(clippy::disallowed_methods)] // the backend's IO task, by design
        let task = tokio::spawn(run(inner, changed, scans_tx, Arc::clone(&shared)));
        Self {
            scans,
            exports: None,
            shared,
            task,
        }
    }

    fn queue_write(&self, update: &ImportsUpdate<'_>, resync: bool) {
        let all = Arc::new(update.all.clone());
        let merged = {
            let mut pending = lock(&self.shared.pending);
            let merged = pending.all.is_some();
            for change in update.changes {
                pending
                    .changes
                    .insert(change.service.clone(), change.import.clone());
            }
            pending.all = Some(all);
            pending.resync |= resync;
            merged
        };
        if merged {
            lock(&self.shared.stats).writes_merged += 1;
        }
        self.shared.doorbell.notify_one();
    }
}

impl Backend for Standalone {
    async fn next_event(&mut self) -> BackendEvent {
        match self.scans.recv().await {
            Some(Scanned::Changes { changes, exports }) => {
                self.exports = Some(exports);
                BackendEvent::Exports(changes)
            }
            Some(Scanned::Resync { exports }) => {
                self.exports = Some(exports);
                BackendEvent::Resync
            }
            // The task ended: it only does when it panicked (it is aborted on drop).
            None => BackendEvent::Fatal("the standalone backend's task stopped".to_owned()),
        }
    }

    fn exports(&self) -> Option<&ExportSet> {
        self.exports.as_deref()
    }

    fn apply_imports(&mut self, update: ImportsUpdate<'_>) {
        self.queue_write(&update, false);
    }

    fn resync_imports(&mut self, update: ImportsUpdate<'_>) {
        self.queue_write(&update, true);
    }

    /// Files have no leases: nothing to mirror.
    fn mirror_leases(&mut self, _leases: &[LeaseSeen]) {}

    fn counters(&self) -> BackendCounters {
        let stats = lock(&self.shared.stats).clone();
        let backend = &stats.backend;
        let mut out: BackendCounters = vec![
            (("scans", "standalone"), backend.scans),
            (("files_written", "standalone"), backend.files_written),
            (("files_removed", "standalone"), backend.files_removed),
            (("files_unchanged", "standalone"), backend.files_unchanged),
            (("writes_merged", "standalone"), stats.writes_merged),
        ];
        out.extend(backend.invalid.iter().map(|(r, n)| (("skipped", *r), *n)));
        out.extend(stats.errors.iter().map(|(r, n)| (("errors", *r), *n)));
        out
    }

    async fn shutdown(&mut self) {}
}

/// The task: scans when `in/` changes or the resync period passes, writes when the
/// driver rings, one job at a time on the blocking pool. Ends when the driver's side is
/// dropped.
async fn run(
    inner: StandaloneBackend,
    mut changed: mpsc::Receiver<()>,
    scans: mpsc::Sender<Scanned>,
    shared: Arc<Shared>,
) {
    let mut resync = tokio::time::interval(RESYNC_PERIOD);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut job = Job {
        inner: Some(inner),
        shared: Arc::clone(&shared),
    };
    loop {
        let scanned = tokio::select! {
            Some(()) = changed.recv() => job.scan(false).await,
            _ = resync.tick() => job.scan(true).await,
            () = shared.doorbell.notified() => {
                job.write().await;
                None
            }
        };
        let Some(scanned) = scanned else {
            continue;
        };
        // The driver has the changes first; the status files follow.
        let changed = matches!(&scanned, Scanned::Changes { .. });
        if scans.send(scanned).await.is_err() {
            return;
        }
        if changed {
            job.write_status().await;
        }
    }
}

/// The backend, moved onto the blocking pool for each job and back.
struct Job {
    inner: Option<StandaloneBackend>,
    shared: Arc<Shared>,
}

impl Job {
    /// Runs `work` on the blocking pool with the backend, then publishes its counters.
    async fn blocking<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut StandaloneBackend, &mut WorkerStats) -> T + Send + 'static,
    ) -> Option<T> {
        let mut inner = self.inner.take()?;
        let mut stats = lock(&self.shared.stats).clone();
        let joined = tokio::task::spawn_blocking(move || {
            let out = work(&mut inner, &mut stats);
            stats.backend = inner.stats();
            (inner, stats, out)
        })
        .await;
        match joined {
            Ok((inner, stats, out)) => {
                self.inner = Some(inner);
                let mut shared = lock(&self.shared.stats);
                shared.backend = stats.backend;
                shared.errors = stats.errors;
                Some(out)
            }
            Err(e) => {
                // The job panicked: the backend went with it, and the task stops; the
                // driver is told through the closed channel.
                warn!(error = %e, "standalone backend job failed");
                None
            }
        }
    }

    /// Scans `in/`.
    async fn scan(&mut self, periodic: bool) -> Option<Scanned> {
        self.blocking(move |inner, stats| {
            let changes = match inner.scan(wall_clock_ms()) {
                Ok(changes) => changes,
                Err(e) => {
                    count_error(stats, e.metric_label(), &e);
                    return None;
                }
            };
            let exports = Arc::new(inner.exports().clone());
            Some(if periodic && changes.is_empty() {
                Scanned::Resync { exports }
            } else {
                Scanned::Changes { changes, exports }
            })
        })
        .await
        .flatten()
    }

    /// Writes the exports' status as the latest scan left them: an invalid export's
    /// reason does not wait for an import to change.
    async fn write_status(&mut self) {
        let all = lock(&self.shared.pending).all.clone();
        self.blocking(move |inner, stats| {
            let imports = all.as_deref().cloned().unwrap_or_default();
            if let Err(e) = inner.write_export_status(&imports) {
                count_error(stats, e.metric_label(), &e);
            }
        })
        .await;
    }

    /// Takes the pending write and carries it out.
    async fn write(&mut self) {
        let pending = std::mem::take(&mut *lock(&self.shared.pending));
        let Some(all) = pending.all else {
            return;
        };
        // The full set stays for the status written by later scans.
        lock(&self.shared.pending)
            .all
            .get_or_insert_with(|| Arc::clone(&all));
        self.blocking(move |inner, stats| {
            if pending.resync {
                if let Err(e) = inner.sync_all(&all) {
                    count_error(stats, e.metric_label(), &e);
                }
                return;
            }
            let changes: Vec<ImportChange> = pending
                .changes
                .into_iter()
                .map(|(service, import)| ImportChange::restate(service, import))
                .collect();
            if let Err(e) = inner.apply_imports(&changes) {
                count_error(stats, e.metric_label(), &e);
            } else if let Err(e) = inner.write_export_status(&all) {
                count_error(stats, e.metric_label(), &e);
            }
        })
        .await;
    }
}

fn count_error(stats: &mut WorkerStats, label: &'static str, error: &dyn std::fmt::Display) {
    warn!(%error, "standalone backend");
    *stats.errors.entry(label).or_default() += 1;
}

fn wall_clock_ms() -> u64 {
    #[allow(clippy::disallowed_methods)] // exports without a creation time are as old as now
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
