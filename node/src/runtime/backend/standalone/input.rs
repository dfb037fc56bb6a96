//! Reading `in/`: listing the YAML files, parsing their documents into Services,
//! ServiceExports and EndpointSlices, and grouping them by service.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::UNIX_EPOCH;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use shoal_proto::ServiceKey;

use super::super::desired::{DEFAULT_NAMESPACE, object_key};
use super::super::objects::{
    ANNOTATION_GLOBAL, LABEL_KUBE_SERVICE_NAME, MCS_API_VERSION, MCS_API_VERSIONS_READ,
    ServiceExport,
};
use super::{FILE_BYTES_MAX, FILES_PER_DIR_MAX, OBJECTS_PER_FILE_MAX};

/// Deepest nesting of YAML collections read. A Kubernetes object nests about eight
/// levels deep.
pub(super) const NESTING_DEPTH_MAX: usize = 64;

/// Most directory entries looked at in one listing, YAML or not.
pub(super) const DIR_ENTRIES_MAX: usize = 4 * FILES_PER_DIR_MAX;

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FileStamp {
    pub(super) len: u64,
    pub(super) modified_ns: u128,
    pub(super) inode: u64,
}

/// The YAML files of a directory, sorted by name, at most [`FILES_PER_DIR_MAX`].
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) files: Vec<(String, FileStamp)>,
    /// YAML files left out over the bound.
    pub(super) excess: usize,
    /// Symbolic links left out because they point outside the directory.
    pub(super) outside: Vec<String>,
}

fn is_input_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn stamp(meta: &fs::Metadata) -> FileStamp {
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    FileStamp {
        len: meta.len(),
        modified_ns,
        inode,
    }
}

/// Lists the regular `*.yaml`/`*.yml` files of `dir` (hidden files are skipped: editors
/// and writers use them as temporaries). A symbolic link is followed only if it
/// resolves to a file inside `dir`, or if `symlinks_outside` allows it; one that
/// points out is left out and its name returned in `outside`.
pub(super) fn list(dir: &Path, symlinks_outside: bool) -> io::Result<Listing> {
    let root = fs::canonicalize(dir)?;
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)?.take(DIR_ENTRIES_MAX) {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !is_input_name(&name) {
            continue;
        }
        // A file removed between the listing and here is simply not there.
        let Ok(link) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if link.file_type().is_symlink() && !symlinks_outside {
            let inside =
                fs::canonicalize(entry.path()).is_ok_and(|target| target.starts_with(&root));
            if !inside {
                listing.outside.push(name);
                continue;
            }
        }
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_file() {
            listing.files.push((name, stamp(&meta)));
        }
    }
    listing.files.sort_by(|a, b| a.0.cmp(&b.0));
    listing.outside.sort();
    listing.excess = listing.files.len().saturating_sub(FILES_PER_DIR_MAX);
    listing.files.truncate(FILES_PER_DIR_MAX);
    Ok(listing)
}

/// One object of an input file.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum InputObject {
    Service(Box<Service>),
    Export(Box<ServiceExport>),
    Slice(Box<EndpointSlice>),
}

/// A parsed input file: its objects, and the reasons (metric labels) of the documents
/// that were skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ParsedFile {
    pub(super) objects: Vec<InputObject>,
    pub(super) skipped: Vec<&'static str>,
}

/// Why a whole file was skipped.
#[derive(Debug, thiserror::Error)]
pub(super) enum FileError {
    #[error("file is {0} bytes, more than {FILE_BYTES_MAX}")]
    TooLarge(u64),
    #[error("cannot read: {0}")]
    Read(#[from] io::Error),
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("nesting is deeper than {NESTING_DEPTH_MAX} levels")]
    TooDeep,
}

impl FileError {
    pub(super) fn metric_label(&self) -> &'static str {
        match self {
            FileError::TooLarge(_) => "file_too_large",
            FileError::Read(_) => "file_unreadable",
            FileError::Yaml(_) => "invalid_yaml",
            FileError::TooDeep => "too_deep",
        }
    }
}

/// Reads and parses one file. A YAML syntax error anywhere fails the whole file (it may
/// be half-written); a well-formed document that is not a valid object only skips that
/// document.
pub(super) fn read(path: &Path) -> Result<ParsedFile, FileError> {
    let len = fs::metadata(path)?.len();
    if len > FILE_BYTES_MAX {
        return Err(FileError::TooLarge(len));
    }
    let bytes = fs::read(path)?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(FileError::TooLarge(bytes.len() as u64));
    }
    parse(&bytes)
}

/// Parses the documents of one file. The nesting depth is bounded before the YAML
/// parser sees the bytes: its work grows faster than linearly with depth.
pub(super) fn parse(bytes: &[u8]) -> Result<ParsedFile, FileError> {
    if nesting_depth(bytes) > NESTING_DEPTH_MAX {
        return Err(FileError::TooDeep);
    }
    let mut parsed = ParsedFile::default();
    let mut documents = 0usize;
    for document in serde_yaml::Deserializer::from_slice(bytes) {
        let value = serde_yaml::Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        documents += 1;
        if documents > OBJECTS_PER_FILE_MAX {
            parsed.skipped.push("too_many_objects");
            continue;
        }
        match classify(value) {
            Ok(Some(object)) => parsed.objects.push(object),
            Ok(None) => parsed.skipped.push("unsupported_kind"),
            Err(_) => parsed.skipped.push("invalid_object"),
        }
    }
    Ok(parsed)
}

/// An upper bound of the nesting depth of the YAML collections in `bytes`, in one
/// pass: flow collections (`[`, `{`) outside quotes and comments, plus, per line, the
/// block levels opened by indentation and by leading `- ` entries.
pub(super) fn nesting_depth(bytes: &[u8]) -> usize {
    let mut deepest = 0;
    let mut flow = 0usize;
    let mut indents: Vec<usize> = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        let indent = line.iter().take_while(|b| **b == b' ').count();
        let rest = &line[indent..];
        let blank = rest.iter().all(u8::is_ascii_whitespace) || rest.first() == Some(&b'#');
        if flow == 0 && !blank {
            while indents.last().is_some_and(|top| *top >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let dashes = rest
            .chunks(2)
            .take_while(|pair| {
                pair.first() == Some(&b'-') && pair.get(1).is_none_or(|b| *b == b' ')
            })
            .count();
        flow = flow_depth_after(rest, flow, &mut deepest, indents.len() + dashes);
        deepest = deepest.max(indents.len() + dashes + flow);
    }
    deepest
}

/// Follows the flow brackets of one line from depth `flow`, skipping quoted scalars and
/// comments, and records the deepest level reached above `base`.
fn flow_depth_after(line: &[u8], mut flow: usize, deepest: &mut usize, base: usize) -> usize {
    let mut quote: Option<u8> = None;
    let mut previous = b' ';
    let mut bytes = line.iter().copied();
    while let Some(b) = bytes.next() {
        match (quote, b) {
            (Some(b'"'), b'\\') => {
                bytes.next();
            }
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'#') if previous == b' ' || previous == b'\t' => break,
            (None, b'[' | b'{') => {
                flow += 1;
                *deepest = (*deepest).max(base + flow);
            }
            (None, b']' | b'}') => flow = flow.saturating_sub(1),
            (None, _) => {}
        }
        previous = b;
    }
    flow
}

fn classify(value: serde_yaml::Value) -> Result<Option<InputObject>, serde_yaml::Error> {
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let mcs = MCS_API_VERSIONS_READ.contains(&api_version);
    let object = match (api_version, kind) {
        ("v1", "Service") => InputObject::Service(serde_yaml::from_value(value)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            InputObject::Slice(serde_yaml::from_value(value)?)
        }
        (_, "ServiceExport") if mcs => InputObject::Export(serde_yaml::from_value(value)?),
        _ => return Ok(None),
    };
    Ok(Some(object))
}

/// The objects of all input files, by service. The first object of a kind and name, in
/// file-name order, wins; later ones are duplicates.
#[derive(Debug, Default)]
pub(super) struct Inventory {
    pub(super) services: BTreeMap<ServiceKey, Service>,
    pub(super) exports: BTreeMap<ServiceKey, ServiceExport>,
    /// Slices by the service their `kubernetes.io/service-name` label names.
    pub(super) slices: BTreeMap<ServiceKey, Vec<EndpointSlice>>,
    /// Metric labels of objects left out.
    pub(super) skipped: Vec<&'static str>,
}

/// An object [`Inventory::add`] left out: what it is called (quoted and shortened,
/// since the name may be anything) and why (a metric label).
#[derive(Debug)]
pub(super) struct Skipped {
    pub(super) object: String,
    pub(super) reason: &'static str,
}

/// Most characters of an object's name shown in a log line.
const NAME_SHOWN_CHARS_MAX: usize = 64;

fn describe(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    let shorten = |s: Option<&str>| -> String {
        let s = s.unwrap_or("");
        let mut shown: String = s.chars().take(NAME_SHOWN_CHARS_MAX).collect();
        if shown.len() < s.len() {
            shown.push('…');
        }
        format!("{shown:?}")
    };
    format!(
        "{kind} {}/{}",
        shorten(meta.namespace.as_deref()),
        shorten(meta.name.as_deref())
    )
}

impl Inventory {
    /// Adds one object; a duplicate or an invalid name is left out, counted in
    /// `skipped` and returned.
    pub(super) fn add(&mut self, object: &InputObject) -> Result<(), Skipped> {
        let (added, kind, meta) = match object {
            InputObject::Service(s) => (
                insert_new(&mut self.services, &s.metadata, s),
                "Service",
                &s.metadata,
            ),
            InputObject::Export(e) => (
                insert_new(&mut self.exports, &e.metadata, e),
                "ServiceExport",
                &e.metadata,
            ),
            InputObject::Slice(slice) => (self.add_slice(slice), "EndpointSlice", &slice.metadata),
        };
        added.map_err(|reason| {
            self.skipped.push(reason);
            Skipped {
                object: describe(kind, meta),
                reason,
            }
        })
    }

    fn add_slice(&mut self, slice: &EndpointSlice) -> Result<(), &'static str> {
        let meta = &slice.metadata;
        let service = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_KUBE_SERVICE_NAME))
            .ok_or("slice_without_service")?;
        let namespace = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        let key = ServiceKey::new(namespace, service).map_err(|_| "invalid_name")?;
        let slices = self.slices.entry(key).or_default();
        if slices.iter().any(|s| s.metadata.name == meta.name) {
            return Err("duplicate_object");
        }
        slices.push(slice.clone());
        Ok(())
    }

    /// Services annotated `shoal.dev/global: "true"` are exported without a
    /// ServiceExport: one is made up from the Service's metadata.
    pub(super) fn add_global_exports(&mut self) {
        for (key, service) in &self.services {
            let annotations = service.metadata.annotations.as_ref();
            let global = annotations.and_then(|a| a.get(ANNOTATION_GLOBAL));
            if global.map(String::as_str) != Some("true") || self.exports.contains_key(key) {
                continue;
            }
            let mut export = ServiceExport {
                api_version: MCS_API_VERSION.to_owned(),
                kind: "ServiceExport".to_owned(),
                ..ServiceExport::default()
            };
            export.metadata.name = Some(key.name.to_string());
            export.metadata.namespace = Some(key.namespace.to_string());
            export.metadata.creation_timestamp = service.metadata.creation_timestamp.clone();
            self.exports.insert(key.clone(), export);
        }
    }
}

fn insert_new<T: Clone>(
    map: &mut BTreeMap<ServiceKey, T>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    object: &T,
) -> Result<(), &'static str> {
    let key = object_key(meta).map_err(|_| "invalid_name")?;
    if map.contains_key(&key) {
        return Err("duplicate_object");
    }
    map.insert(key, object.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_classified_and_bad_ones_skipped() {
        let yaml = br#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: web, namespace: shop, creationTimestamp: "2024-01-02T03:04:05Z"}
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: api, namespace: shop}
spec:
  exportedLabels: {tier: backend}
  exportedAnnotations: {example.com/owner: shop-team}
---
apiVersion: multicluster.x-k8s.io/v2
kind: ServiceExport
metadata: {name: future, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: v1
kind: Service
metadata: {name: broken}
spec:
  ports: "not a list"
---
"#;
        let parsed = parse(yaml).unwrap();
        assert_eq!(parsed.objects.len(), 3);
        assert!(matches!(parsed.objects[0], InputObject::Service(_)));
        let InputObject::Export(export) = &parsed.objects[1] else {
            panic!("an export");
        };
        let created = export.metadata.creation_timestamp.as_ref().unwrap();
        assert_eq!(created.0.as_second(), 1_704_164_645);
        // v1beta1 is read as well as v1alpha1, with the export's spec.
        let InputObject::Export(beta) = &parsed.objects[2] else {
            panic!("a v1beta1 export");
        };
        let spec = beta.spec.as_ref().unwrap();
        assert_eq!(spec.exported_labels["tier"], "backend");
        assert_eq!(spec.exported_annotations["example.com/owner"], "shop-team");
        // An MCS version the CRDs do not serve is not read.
        assert_eq!(
            parsed.skipped,
            ["unsupported_kind", "unsupported_kind", "invalid_object"]
        );
    }

    #[test]
    fn a_syntax_error_fails_the_file() {
        let half = b"apiVersion: v1\nkind: Service\nmetadata: {name: web\n";
        assert!(matches!(parse(half), Err(FileError::Yaml(_))));
    }

    #[test]
    fn nesting_depth_bounds_flow_and_block_collections() {
        let object = b"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {a: b}\n\
spec:\n  ports:\n  - name: http\n    port: 80\n";
        let depth = nesting_depth(object);
        assert!((3..=6).contains(&depth), "{depth}");
        // Brackets inside quotes and comments open nothing.
        let quoted = b"a: \"[[[[[[\"\nb: '{{{{'  # [[[[[[[\n";
        assert_eq!(nesting_depth(quoted), 1);
        let flow = "[".repeat(NESTING_DEPTH_MAX + 1);
        assert!(nesting_depth(flow.as_bytes()) > NESTING_DEPTH_MAX);
        assert!(matches!(parse(flow.as_bytes()), Err(FileError::TooDeep)));
        let mut block = String::new();
        for level in 0..=NESTING_DEPTH_MAX {
            block.push_str(&" ".repeat(level));
            block.push_str("k:\n");
        }
        assert!(nesting_depth(block.as_bytes()) > NESTING_DEPTH_MAX);
        let dashes = "- ".repeat(NESTING_DEPTH_MAX + 1) + "x\n";
        assert!(nesting_depth(dashes.as_bytes()) > NESTING_DEPTH_MAX);
    }
}
