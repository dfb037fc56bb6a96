//! Writing `out/`: one file per object, written atomically and only when its bytes
//! change, and an index of which service owns which file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use shoal_proto::ServiceKey;

use super::super::desired::{DesiredImport, object_key};
use super::super::objects::LABEL_SERVICE_NAME;
use super::input::DIR_ENTRIES_MAX;
use super::{BackendError, FILE_BYTES_MAX};

/// The prefix of the export status files.
pub(super) const STATUS_PREFIX: &str = "serviceexport-status.";

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Written {
    Unchanged,
    Written,
}

/// The `out/` directory and the files Shoal owns there.
#[derive(Debug)]
pub(super) struct OutDir {
    dir: PathBuf,
    /// The object files of each imported service.
    pub(super) owned: BTreeMap<ServiceKey, BTreeSet<String>>,
    /// Export status files, by export.
    pub(super) status: BTreeMap<ServiceKey, String>,
    /// Files found at open that no service explains; removed at the first apply.
    pub(super) orphans: BTreeSet<String>,
    /// A hash of the bytes this process last wrote to or found in each file, so that
    /// an unchanged file is known without reading it.
    hashes: BTreeMap<String, ContentHash>,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackendError {
    let path = path.to_owned();
    move |source| BackendError::Io { op, path, source }
}

impl OutDir {
    /// Indexes the files already in `dir` (from an earlier run) by the service their
    /// `multicluster.kubernetes.io/service-name` label and namespace name, and removes
    /// leftover temporary files.
    pub(super) fn open(dir: PathBuf) -> Result<Self, BackendError> {
        let mut out = OutDir {
            owned: BTreeMap::new(),
            status: BTreeMap::new(),
            orphans: BTreeSet::new(),
            hashes: BTreeMap::new(),
            dir,
        };
        let entries = fs::read_dir(&out.dir).map_err(io_error("list", &out.dir))?;
        for entry in entries.take(DIR_ENTRIES_MAX) {
            let entry = entry.map_err(io_error("list", &out.dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                fs::remove_file(entry.path()).map_err(io_error("remove", &entry.path()))?;
                continue;
            }
            match owner(&entry.path()) {
                Some(key) if name.starts_with(STATUS_PREFIX) => {
                    out.status.insert(key, name);
                }
                Some(key) => {
                    out.owned.entry(key).or_default().insert(name);
                }
                None => {
                    out.orphans.insert(name);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// How many object files (not status files) Shoal owns in the directory.
    fn object_file_count(&self) -> usize {
        self.owned.values().map(BTreeSet::len).sum::<usize>() + self.orphans.len()
    }

    /// Writes `bytes` to `name` unless the file already holds exactly them: a temporary
    /// file in the same directory, renamed over, so a reader sees the old file or the
    /// new one, never a part. There is no fsync: `out/` is derived from the store, and
    /// the full rewrite at start repairs what a crash lost, while thousands of fsyncs
    /// would queue the store's own flushes (which SWIM's answers wait on) behind them.
    pub(super) fn write(&mut self, name: &str, bytes: &[u8]) -> Result<Written, BackendError> {
        let path = self.path(name);
        let hash = content_hash(bytes);
        if self.hashes.get(name) == Some(&hash) {
            return Ok(Written::Unchanged);
        }
        if !self.hashes.contains_key(name)
            && let Ok(existing) = fs::read(&path)
            && existing == bytes
        {
            self.hashes.insert(name.to_owned(), hash);
            return Ok(Written::Unchanged);
        }
        let temp = self.path(&format!(".{name}.tmp"));
        let mut file = File::create(&temp).map_err(io_error("create", &temp))?;
        file.write_all(bytes).map_err(io_error("write", &temp))?;
        drop(file);
        fs::rename(&temp, &path).map_err(io_error("rename", &path))?;
        self.hashes.insert(name.to_owned(), hash);
        Ok(Written::Written)
    }

    /// Forgets what the files hold, so that the next writes read them again and repair
    /// a file someone else changed.
    pub(super) fn forget_contents(&mut self) {
        self.hashes.clear();
    }

    /// Removes `name`; a file already gone counts as removed.
    pub(super) fn remove(&mut self, name: &str) -> Result<(), BackendError> {
        self.hashes.remove(name);
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    }

    /// Whether replacing `service`'s files by `count` new ones keeps the object files
    /// within `max`. Status files are not counted: there is one per export.
    pub(super) fn has_room(&self, service: &ServiceKey, count: usize, max: usize) -> bool {
        let current = self.owned.get(service).map_or(0, BTreeSet::len);
        self.object_file_count() - current + count <= max
    }
}

/// A digest of a file's bytes: the first 16 bytes of their SHA-256.
type ContentHash = [u8; 16];

fn content_hash(bytes: &[u8]) -> ContentHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut hash = [0; 16];
    hash.copy_from_slice(&digest.as_ref()[..16]);
    hash
}

/// The service a file in `out/` belongs to, from its namespace and service-name label.
fn owner(path: &Path) -> Option<ServiceKey> {
    let len = fs::metadata(path).ok()?.len();
    if len > FILE_BYTES_MAX {
        return None;
    }
    let bytes = fs::read(path).ok()?;
    let value: serde_yaml::Value = serde_yaml::from_slice(&bytes).ok()?;
    let metadata = value.get("metadata")?;
    let namespace = metadata.get("namespace")?.as_str()?;
    let name = metadata.get("labels")?.get(LABEL_SERVICE_NAME)?.as_str()?;
    ServiceKey::new(namespace, name).ok()
}

/// The files of one import, by file name.
pub(super) fn render(desired: &DesiredImport) -> Result<BTreeMap<String, Vec<u8>>, BackendError> {
    let mut files = BTreeMap::new();
    let import = &desired.service_import;
    let name = file_name("serviceimport", &import.metadata)?;
    files.insert(name, to_yaml(import)?);
    let derived = &desired.derived_service;
    files.insert(file_name("service", &derived.metadata)?, to_yaml(derived)?);
    for slice in &desired.slices {
        files.insert(
            file_name("endpointslice", &slice.metadata)?,
            to_yaml(slice)?,
        );
    }
    Ok(files)
}

/// `<kind>.<namespace>.<name>.yaml`.
pub(super) fn file_name(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<String, BackendError> {
    let key = object_key(meta).map_err(|e| BackendError::Encode {
        object: format!("{kind} {:?}", meta.name),
        message: e.to_string(),
    })?;
    Ok(format!("{kind}.{}.{}.yaml", key.namespace, key.name))
}

pub(super) fn to_yaml(object: &impl Serialize) -> Result<Vec<u8>, BackendError> {
    serde_yaml::to_string(object)
        .map(String::into_bytes)
        .map_err(|e| BackendError::Encode {
            object: std::any::type_name_of_val(object).to_owned(),
            message: e.to_string(),
        })
}
