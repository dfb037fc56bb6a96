//! The standalone backend: a directory per cluster instead of a Kubernetes API server.
//!
//! `<dir>/in/` holds Kubernetes-shaped YAML written by a user or the demo: Services,
//! ServiceExports and EndpointSlices, any number per file (`---`), in `*.yaml` and
//! `*.yml` files. `<dir>/out/` is Shoal's: one file per object, `serviceimport.<ns>.<name>.yaml`,
//! `service.<ns>.<derived>.yaml`, `endpointslice.<ns>.<slice>.yaml`, and
//! `serviceexport-status.<ns>.<name>.yaml` with each export's conditions.
//!
//! Input is never fatal: a bad file or object is counted, logged and skipped, and a
//! file that does not parse (perhaps half-written) keeps its last good contents until
//! it parses again. Output is written atomically and only when it changes.

mod input;
mod output;
mod worker;

pub use self::worker::Standalone;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use shoal_proto::{ClusterId, NetworkMode, ServiceKey};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::input::{FileStamp, Inventory, ParsedFile};
use self::output::{OutDir, STATUS_PREFIX, Written};
use super::desired::{
    CONDITION_READY, ExportInvalid, desired_import, export_conditions, export_spec,
    stamp_transitions,
};
use super::objects::{
    LABEL_SERVICE_NAME, MCS_API_VERSION, REASON_FAILED, ServiceExport, ServiceExportStatus,
    stable_hash,
};
use super::seam::export_changes;
use crate::core::{ExportSpec, ImportChange, ImportedService};

/// Most YAML files read from `in/`, and the default of most files Shoal keeps in
/// `out/` ([`StandaloneLimits::out_files_max`]).
pub const FILES_PER_DIR_MAX: usize = 4_096;
/// Most bytes read from all of `in/` in one scan; files past it, in name order, are
/// left out.
pub const INPUT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most objects (YAML documents) taken from all of `in/` in one scan.
pub const INPUT_OBJECTS_MAX: usize = 65_536;
/// Largest file read, in `in/` or `out/`.
pub const FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most objects (YAML documents) read from one file.
pub const OBJECTS_PER_FILE_MAX: usize = 1_024;
/// Shortest polling interval of [`watch`].
pub const WATCH_POLL_MS_MIN: u64 = 10;

/// The standalone backend's configurable bounds (`[backend]` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StandaloneLimits {
    /// Most object files Shoal keeps in `out/` (the exports' status files are not
    /// counted: one per export, they are bounded by `in/`). An import that would go
    /// past it is not written, and its export's status (if this cluster exports the
    /// service too) says so.
    pub out_files_max: usize,
    /// Whether a symbolic link in `in/` may point outside it. By default such a link
    /// is left out, logged and counted (`symlink_outside`).
    pub symlinks_outside: bool,
}

impl Default for StandaloneLimits {
    fn default() -> Self {
        Self {
            out_files_max: FILES_PER_DIR_MAX,
            symlinks_outside: false,
        }
    }
}

/// A change to this cluster's exports, for the core's `handle_export`/`handle_unexport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportChange {
    Export(ExportSpec),
    Unexport(ServiceKey),
}

/// What one apply did to `out/`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub written: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Counters of the standalone backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub scans: u64,
    /// Files, objects and exports skipped, by reason (a metric label). Counted at every
    /// scan that sees them.
    pub invalid: BTreeMap<&'static str, u64>,
    pub files_written: u64,
    pub files_removed: u64,
    pub files_unchanged: u64,
    /// Valid exports after the latest scan.
    pub exports: usize,
}

/// A failure of the backend's own directory. State: the scan or apply stopped at the
/// failing file; files written before it stay, and the next call retries the rest.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An object could not be turned into YAML or a file name: a bug. Nothing written.
    #[error("cannot encode {object}: {message}")]
    Encode { object: String, message: String },
}

impl BackendError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            BackendError::Io { .. } => "io",
            BackendError::Encode { .. } => "encode",
        }
    }
}

/// One input file as last parsed successfully.
#[derive(Debug)]
struct CachedFile {
    stamp: FileStamp,
    parsed: ParsedFile,
}

/// Reads exports from `<dir>/in/` and writes imports into `<dir>/out/`.
#[derive(Debug)]
pub struct StandaloneBackend {
    in_dir: PathBuf,
    out: OutDir,
    local: ClusterId,
    network: NetworkMode,
    files: BTreeMap<String, CachedFile>,
    /// The exports found by the latest scan: valid or why not.
    current: BTreeMap<ServiceKey, Result<ExportSpec, ExportInvalid>>,
    /// When each export without a creationTimestamp was first seen.
    first_seen: BTreeMap<ServiceKey, u64>,
    /// The export conditions last written, for their transition times.
    conditions: BTreeMap<ServiceKey, Vec<Condition>>,
    orphans_removed: bool,
    now_ms: u64,
    limits: StandaloneLimits,
    /// Imports not written because `out/` is full: the files each needs.
    unwritten: BTreeMap<ServiceKey, usize>,
    stats: BackendStats,
}

fn create_dir(path: &Path) -> Result<(), BackendError> {
    std::fs::create_dir_all(path).map_err(|source| BackendError::Io {
        op: "create",
        path: path.to_owned(),
        source,
    })
}

impl StandaloneBackend {
    /// Opens `dir`, creating `in/` and `out/`, and indexes what an earlier run left in
    /// `out/`.
    pub fn open(dir: &Path, local: ClusterId, network: NetworkMode) -> Result<Self, BackendError> {
        let in_dir = dir.join("in");
        let out_dir = dir.join("out");
        create_dir(&in_dir)?;
        create_dir(&out_dir)?;
        let out = OutDir::open(out_dir)?;
        info!(cluster = %local, dir = %dir.display(), orphans = out.orphans.len(), "standalone backend opened");
        Ok(Self {
            in_dir,
            out,
            local,
            network,
            files: BTreeMap::new(),
            current: BTreeMap::new(),
            first_seen: BTreeMap::new(),
            conditions: BTreeMap::new(),
            orphans_removed: false,
            now_ms: 0,
            limits: StandaloneLimits::default(),
            unwritten: BTreeMap::new(),
            stats: BackendStats::default(),
        })
    }

    /// Replaces the default bounds.
    pub fn with_limits(mut self, limits: StandaloneLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Reads `in/` and returns what changed since the last scan (the first scan returns
    /// every export), sorted by service. Invalid files and objects are skipped, counted
    /// and logged (an invalid export's reason goes into its status file); a file that
    /// does not parse keeps its last good contents and is read again at the next scan.
    pub fn scan(&mut self, now_ms: u64) -> Result<Vec<ExportChange>, BackendError> {
        self.now_ms = now_ms;
        self.stats.scans += 1;
        let listing =
            input::list(&self.in_dir, self.limits.symlinks_outside).map_err(|source| {
                BackendError::Io {
                    op: "list",
                    path: self.in_dir.clone(),
                    source,
                }
            })?;
        if listing.excess > 0 {
            warn!(cluster = %self.local, skipped = listing.excess, max = FILES_PER_DIR_MAX, "too many input files");
            self.count("too_many_files", listing.excess as u64);
        }
        for name in &listing.outside {
            warn!(cluster = %self.local, file = %name, "skipping a symbolic link that points outside in/ (backend.symlinks_outside allows it)");
            self.count("symlink_outside", 1);
        }
        let files = self.within_input_bytes(listing.files);
        self.refresh_files(&files);
        let mut inventory = self.inventory();
        for reason in std::mem::take(&mut inventory.skipped) {
            self.count(reason, 1);
        }
        inventory.add_global_exports();
        let next = self.evaluate(&inventory, now_ms);
        let changes = export_changes(Some(&self.current), &next);
        self.current = next;
        self.stats.exports = self.current.values().filter(|r| r.is_ok()).count();
        debug!(cluster = %self.local, changes = changes.len(), exports = self.stats.exports, "scanned");
        Ok(changes)
    }

    /// The listed files up to [`INPUT_BYTES_MAX`] in all, in name order.
    fn within_input_bytes(&mut self, files: Vec<(String, FileStamp)>) -> Vec<(String, FileStamp)> {
        let mut total = 0u64;
        let mut kept = Vec::with_capacity(files.len());
        for (name, stamp) in files {
            total = total.saturating_add(stamp.len);
            if total > INPUT_BYTES_MAX {
                warn!(cluster = %self.local, file = %name, max = INPUT_BYTES_MAX, "skipping a file: in/ holds more bytes than are read");
                self.count("input_bytes_max", 1);
                continue;
            }
            kept.push((name, stamp));
        }
        kept
    }

    /// The objects of every cached file, up to [`INPUT_OBJECTS_MAX`] in all.
    fn inventory(&mut self) -> Inventory {
        let mut inventory = Inventory::default();
        let mut objects = 0usize;
        let mut over = 0u64;
        for (name, cached) in &self.files {
            for object in &cached.parsed.objects {
                objects += 1;
                if objects > INPUT_OBJECTS_MAX {
                    over += 1;
                    continue;
                }
                if let Err(skipped) = inventory.add(object) {
                    warn!(cluster = %self.local, file = %name, object = %skipped.object, reason = skipped.reason, "skipping an object");
                }
            }
        }
        if over > 0 {
            warn!(cluster = %self.local, skipped = over, max = INPUT_OBJECTS_MAX, "in/ holds more objects than are read");
            self.count("input_objects_max", over);
        }
        inventory
    }

    /// Brings the cache of parsed files up to date with the listing.
    fn refresh_files(&mut self, listing: &[(String, FileStamp)]) {
        let listed: BTreeSet<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
        self.files.retain(|name, _| listed.contains(name.as_str()));
        for (name, stamp) in listing {
            if self.files.get(name).is_some_and(|c| c.stamp == *stamp) {
                continue;
            }
            match input::read(&self.in_dir.join(name)) {
                Ok(parsed) => {
                    for reason in &parsed.skipped {
                        warn!(cluster = %self.local, file = %name, reason, "skipping an object");
                        self.count(reason, 1);
                    }
                    let stamp = *stamp;
                    self.files
                        .insert(name.clone(), CachedFile { stamp, parsed });
                }
                Err(error) => {
                    let kept = self.files.contains_key(name);
                    warn!(cluster = %self.local, file = %name, %error, kept_last_good = kept, "skipping a file until it parses");
                    self.count(error.metric_label(), 1);
                }
            }
        }
    }

    /// Every export object, valid or not.
    fn evaluate(
        &mut self,
        inventory: &Inventory,
        now_ms: u64,
    ) -> BTreeMap<ServiceKey, Result<ExportSpec, ExportInvalid>> {
        self.first_seen
            .retain(|k, _| inventory.exports.contains_key(k));
        let mut next = BTreeMap::new();
        for (key, export) in &inventory.exports {
            let seen = *self.first_seen.entry(key.clone()).or_insert(now_ms);
            let slices = inventory.slices.get(key).map_or(&[][..], Vec::as_slice);
            let spec = match inventory.services.get(key) {
                Some(service) => export_spec(service, export, slices, self.network, seen),
                None => Err(ExportInvalid::NoService(key.to_string())),
            };
            if let Err(error) = &spec {
                warn!(cluster = %self.local, service = %key, %error, "export is invalid");
                self.count(error.metric_label(), 1);
            }
            next.insert(key.clone(), spec);
        }
        next
    }

    fn count(&mut self, reason: &'static str, n: u64) {
        *self.stats.invalid.entry(reason).or_default() += n;
    }

    /// A cheap fingerprint of `in/` (names, sizes, modification times, inodes): when it
    /// changes, it is time to [`scan`](Self::scan).
    pub fn fingerprint(&self) -> Result<u64, BackendError> {
        fingerprint_dir(&self.in_dir)
    }

    /// Writes the objects of these imports into `out/` (atomically, and only files whose
    /// bytes change) and removes the files of objects that no longer exist. The first
    /// call also removes the files found at open that no service explains.
    pub fn apply_imports(&mut self, changes: &[ImportChange]) -> Result<ApplyReport, BackendError> {
        let mut report = ApplyReport::default();
        if !self.orphans_removed {
            for name in std::mem::take(&mut self.out.orphans) {
                self.out.remove(&name)?;
                report.removed += 1;
            }
            self.orphans_removed = true;
        }
        for change in changes {
            self.apply_one(change, &mut report)?;
        }
        self.stats.files_written += report.written as u64;
        self.stats.files_removed += report.removed as u64;
        self.stats.files_unchanged += report.unchanged as u64;
        Ok(report)
    }

    fn apply_one(
        &mut self,
        change: &ImportChange,
        report: &mut ApplyReport,
    ) -> Result<(), BackendError> {
        let service = &change.service;
        let files = match &change.import {
            Some(import) => output::render(&desired_import(&self.local, import))?,
            None => BTreeMap::new(),
        };
        if !self
            .out
            .has_room(service, files.len(), self.limits.out_files_max)
        {
            if self
                .unwritten
                .insert(service.clone(), files.len())
                .is_none()
            {
                warn!(cluster = %self.local, %service, files = files.len(), max = self.limits.out_files_max, "out/ is full (backend.out_files_max): import not written");
            }
            self.count("out_dir_full", 1);
            return Ok(());
        }
        if self.unwritten.remove(service).is_some() {
            info!(cluster = %self.local, %service, "out/ has room again: import written");
        }
        for (name, bytes) in &files {
            match self.out.write(name, bytes)? {
                Written::Written => report.written += 1,
                Written::Unchanged => report.unchanged += 1,
            }
        }
        let before = self.out.owned.remove(service).unwrap_or_default();
        for stale in before.iter().filter(|n| !files.contains_key(*n)) {
            self.out.remove(stale)?;
            report.removed += 1;
        }
        if !files.is_empty() {
            self.out
                .owned
                .insert(service.clone(), files.into_keys().collect());
        }
        debug!(cluster = %self.local, %service, ?report, "import applied");
        Ok(())
    }

    /// Writes the full desired set for `imports` and removes every other file in
    /// `out/`: imports no longer present, orphans, and status files of exports that no
    /// longer exist. Call it at start so that a restart converges.
    pub fn sync_all(
        &mut self,
        imports: &BTreeMap<ServiceKey, Arc<ImportedService>>,
    ) -> Result<ApplyReport, BackendError> {
        self.out.forget_contents();
        let gone = self.out.owned.keys().filter(|k| !imports.contains_key(*k));
        let mut changes: Vec<ImportChange> = gone
            .map(|service| ImportChange::restate(service.clone(), None))
            .collect();
        changes.extend(imports.iter().map(|(service, import)| {
            ImportChange::restate(service.clone(), Some(Arc::clone(import)))
        }));
        let mut report = self.apply_imports(&changes)?;
        let status_removed = self.remove_stale_status()?;
        report.removed += status_removed;
        self.stats.files_removed += status_removed as u64;
        Ok(report)
    }

    /// Writes each export's `Valid`, `Ready` and `Conflict` conditions (from the latest
    /// scan and `imports`) into its status file, and removes the status files of exports
    /// that no longer exist. Transition times come from the latest scan's `now_ms`.
    pub fn write_export_status(
        &mut self,
        imports: &BTreeMap<ServiceKey, Arc<ImportedService>>,
    ) -> Result<(), BackendError> {
        let mut report = ApplyReport::default();
        let keys: Vec<ServiceKey> = self.current.keys().cloned().collect();
        for key in keys {
            let name = status_file_name(&key);
            let bytes = self.status_bytes(&key, imports.get(&key).map(Arc::as_ref))?;
            match self.out.write(&name, &bytes)? {
                Written::Written => report.written += 1,
                Written::Unchanged => report.unchanged += 1,
            }
            self.out.status.insert(key, name);
        }
        report.removed = self.remove_stale_status()?;
        self.stats.files_written += report.written as u64;
        self.stats.files_removed += report.removed as u64;
        self.stats.files_unchanged += report.unchanged as u64;
        Ok(())
    }

    fn status_bytes(
        &mut self,
        key: &ServiceKey,
        import: Option<&ImportedService>,
    ) -> Result<Vec<u8>, BackendError> {
        let valid = match self.current.get(key) {
            Some(Err(invalid)) => Err(invalid),
            _ => Ok(()),
        };
        let mut conditions = export_conditions(valid, import, &self.local);
        if let Some(files) = self.unwritten.get(key) {
            mark_unwritten(&mut conditions, *files, self.limits.out_files_max);
        }
        let previous = match self.conditions.get(key) {
            Some(previous) => previous.clone(),
            None => self.conditions_on_disk(key),
        };
        stamp_transitions(&previous, &mut conditions, self.now_ms);
        let object = ServiceExport {
            api_version: MCS_API_VERSION.to_owned(),
            kind: "ServiceExport".to_owned(),
            metadata: ObjectMeta {
                name: Some(key.name.to_string()),
                namespace: Some(key.namespace.to_string()),
                labels: Some(BTreeMap::from([(
                    LABEL_SERVICE_NAME.to_owned(),
                    key.name.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(ServiceExportStatus {
                conditions: conditions.clone(),
            }),
        };
        self.conditions.insert(key.clone(), conditions);
        output::to_yaml(&object)
    }

    /// The conditions an earlier run wrote, so a restart keeps their transition times.
    fn conditions_on_disk(&self, key: &ServiceKey) -> Vec<Condition> {
        let path = self.out.path(&status_file_name(key));
        let Ok(bytes) = std::fs::read(path) else {
            return Vec::new();
        };
        serde_yaml::from_slice::<ServiceExport>(&bytes)
            .ok()
            .and_then(|e| e.status)
            .map(|s| s.conditions)
            .unwrap_or_default()
    }

    /// Removes the status files of exports the latest scan did not find. Before the
    /// first scan nothing is known to be stale, so nothing is removed.
    fn remove_stale_status(&mut self) -> Result<usize, BackendError> {
        if self.stats.scans == 0 {
            return Ok(0);
        }
        let stale: Vec<ServiceKey> = self
            .out
            .status
            .keys()
            .filter(|k| !self.current.contains_key(*k))
            .cloned()
            .collect();
        for key in &stale {
            if let Some(name) = self.out.status.remove(key) {
                self.out.remove(&name)?;
            }
            self.conditions.remove(key);
        }
        Ok(stale.len())
    }

    pub fn stats(&self) -> BackendStats {
        self.stats.clone()
    }

    /// This cluster's exports after the latest scan: valid ones and why others are not.
    pub fn exports(&self) -> &BTreeMap<ServiceKey, Result<ExportSpec, ExportInvalid>> {
        &self.current
    }
}

/// An import this cluster exports too was not written because `out/` is full: its
/// export's `Ready` condition says so.
fn mark_unwritten(conditions: &mut [Condition], files: usize, max: usize) {
    for condition in conditions.iter_mut().filter(|c| c.type_ == CONDITION_READY) {
        condition.status = "False".to_owned();
        condition.reason = REASON_FAILED.to_owned();
        condition.message = format!(
            "the import is not written: its {files} files would take out/ past its \
             maximum of {max} (backend.out_files_max)"
        );
    }
}

/// `serviceexport-status.<ns>.<name>.yaml`.
fn status_file_name(key: &ServiceKey) -> String {
    format!("{STATUS_PREFIX}{}.{}.yaml", key.namespace, key.name)
}

/// The fingerprint of the input files of `in_dir`.
fn fingerprint_dir(in_dir: &Path) -> Result<u64, BackendError> {
    let listing = input::list(in_dir, true).map_err(|source| BackendError::Io {
        op: "list",
        path: in_dir.to_owned(),
        source,
    })?;
    let mut hasher = FnvHasher(stable_hash(&[]));
    listing.files.hash(&mut hasher);
    listing.excess.hash(&mut hasher);
    Ok(hasher.finish())
}

/// FNV-1a as a [`Hasher`], so that the fingerprint is the same in every process.
struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Polls the fingerprint of `<dir>/in/` every `poll_ms` (at least
/// [`WATCH_POLL_MS_MIN`]) and sends `()` when it changes, and once at start. The
/// channel holds one notification: a burst of changes is one scan. The task ends when
/// the receiver is dropped. Must be called inside a Tokio runtime.
pub fn watch(dir: PathBuf, poll_ms: u64) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    let period = Duration::from_millis(poll_ms.max(WATCH_POLL_MS_MIN));
    let in_dir = dir.join("in");
    #[allow(clippy::disallowed_methods)] // the watcher is a runtime task by design
    tokio::spawn(async move {
        let mut last: Option<u64> = None;
        let mut first = true;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if tx.is_closed() {
                return;
            }
            let print = match fingerprint_dir(&in_dir) {
                Ok(print) => Some(print),
                Err(error) => {
                    debug!(dir = %in_dir.display(), %error, "cannot fingerprint");
                    None
                }
            };
            if first || print != last {
                // Full means a notification is already pending: nothing is lost.
                let _ = tx.try_send(());
                first = false;
                last = print;
            }
        }
    });
    rx
}
