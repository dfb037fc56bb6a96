//! The sink: what this cluster imports, written into it, and the status of its exports.
//!
//! Level-triggered. The sink holds the latest desired state (the core's imports, the
//! export snapshot, the quorum leases to mirror) and a mirror of the objects it owns,
//! kept by watches. Whenever either changes, [`plan`] compares them, purely, and the
//! sink carries out the difference: a server-side apply (field manager `shoal.dev`)
//! per changed object, a delete per owned object no longer desired. Nothing changed
//! means no request at all: each object Shoal writes carries the hash of what Shoal
//! wanted it to be (`shoal.dev/desired-hash`), so an object is written only when that
//! hash changes, and a restarted node, or one whose API server came back, writes
//! nothing that is already right.
//!
//! Only the local leader writes. Deletes wait until the owned objects have been listed
//! and the imports have settled (see [`SinkInput::settled`]): a cold view never
//! deletes what an earlier leader wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use shoal_proto::{ClusterId, ServiceKey};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::super::desired::{ExportInvalid, desired_import, export_conditions, stamp_transitions};
use super::super::objects::{
    LABEL_MANAGED_BY, MANAGER, ServiceExport, ServiceExportStatus, ServiceImport,
    ServiceImportStatus,
};
use super::super::seam::LeaseSeen;
use super::errors::{Backoff, ErrorClass, classify};
use super::resources::McsVersion;
use super::source::ExportSnapshot;
use super::stats::KubeStats;
use crate::core::ImportedService;

/// The label on every ServiceImport, Service and Lease Shoal owns (EndpointSlices
/// carry `endpointslice.kubernetes.io/managed-by` instead, as Kubernetes asks).
pub const LABEL_APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The hash of the object Shoal last wanted, on every object it writes.
pub const ANNOTATION_DESIRED_HASH: &str = "shoal.dev/desired-hash";
/// The fencing token of a mirrored quorum lease.
pub const ANNOTATION_FENCING_TOKEN: &str = "shoal.dev/fencing-token";
/// The ServiceExport condition saying whether Shoal could write the service's objects.
pub const CONDITION_APPLIED: &str = "shoal.dev/Applied";
/// Most requests in flight at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 16;
/// How long a request that failed for a reason a retry alone will not fix (403, 404,
/// 409, 422) waits before it is tried again with the same content.
pub const STUCK_RETRY: Duration = Duration::from_secs(30);

/// The field manager of every write.
fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER)
}

/// What the driver wants the cluster to hold.
#[derive(Clone, Debug, Default)]
pub struct SinkInput {
    /// Whether this replica is the local leader: only the leader writes.
    pub leader: bool,
    pub imports: Arc<BTreeMap<ServiceKey, Arc<ImportedService>>>,
    /// Whether the imports may be trusted to be complete, so that owned objects they
    /// do not explain may be deleted: the view was restored from the store, or this
    /// node has since reached another cluster and had time to exchange records.
    pub settled: bool,
    pub leases: Vec<LeaseSeen>,
}

/// The kinds of object the sink owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjKind {
    ServiceImport,
    Service,
    EndpointSlice,
    Lease,
    /// A ServiceExport's status: written, never owned or deleted.
    ExportStatus,
}

impl ObjKind {
    pub fn label(self) -> &'static str {
        match self {
            ObjKind::ServiceImport => "serviceimports",
            ObjKind::Service => "services",
            ObjKind::EndpointSlice => "endpointslices",
            ObjKind::Lease => "leases",
            ObjKind::ExportStatus => "serviceexports",
        }
    }
}

/// An owned object: its kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub kind: ObjKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.label(), self.namespace, self.name)
    }
}

/// What the sink needs to know of an owned object as the API server has it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub hash: Option<String>,
    /// A Service's allocated cluster IPs.
    pub cluster_ips: Vec<String>,
    /// A ServiceImport's status.
    pub import_status: Option<ServiceImportStatus>,
    /// A mirrored Lease's spec (transitions, renew time) and fencing token.
    pub lease: Option<LeaseSpec>,
    pub token: Option<String>,
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

fn key_of(kind: ObjKind, meta: &ObjectMeta) -> ObjKey {
    ObjKey {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// The projection of each kind into [`Observed`].
pub trait Owned: Resource + Clone + Send + Sync + 'static {
    const KIND: ObjKind;
    fn observed(&self) -> Observed;
}

impl Owned for ServiceImport {
    const KIND: ObjKind = ObjKind::ServiceImport;
    fn observed(&self) -> Observed {
        Observed {
            hash: annotation(&self.metadata, ANNOTATION_DESIRED_HASH),
            import_status: self.status.clone(),
            ..Observed::default()
        }
    }
}

impl Owned for Service {
    const KIND: ObjKind = ObjKind::Service;
    fn observed(&self) -> Observed {
        let spec = self.spec.as_ref();
        let ips = spec
            .and_then(|s| s.cluster_ips.clone())
            .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
            .unwrap_or_default();
        Observed {
            hash: annotation(&self.metadata, ANNOTATION_DESIRED_HASH),
            cluster_ips: ips.into_iter().filter(|ip| ip != "None").collect(),
            ..Observed::default()
        }
    }
}

impl Owned for EndpointSlice {
    const KIND: ObjKind = ObjKind::EndpointSlice;
    fn observed(&self) -> Observed {
        Observed {
            hash: annotation(&self.metadata, ANNOTATION_DESIRED_HASH),
            ..Observed::default()
        }
    }
}

impl Owned for Lease {
    const KIND: ObjKind = ObjKind::Lease;
    fn observed(&self) -> Observed {
        Observed {
            lease: self.spec.clone(),
            token: annotation(&self.metadata, ANNOTATION_FENCING_TOKEN),
            ..Observed::default()
        }
    }
}

/// The owned objects as last seen, with relists applied only when complete.
#[derive(Debug, Default)]
pub struct Mirror {
    objects: BTreeMap<ObjKey, Observed>,
    relists: BTreeMap<ObjKind, BTreeMap<ObjKey, Observed>>,
    listed: BTreeSet<ObjKind>,
}

impl Mirror {
    pub fn on_event<K: Owned>(&mut self, event: watcher::Event<K>) {
        let kind = K::KIND;
        match event {
            watcher::Event::Apply(o) => {
                self.objects.insert(key_of(kind, o.meta()), o.observed());
            }
            watcher::Event::Delete(o) => {
                self.objects.remove(&key_of(kind, o.meta()));
            }
            watcher::Event::Init => drop(self.relists.insert(kind, BTreeMap::new())),
            watcher::Event::InitApply(o) => {
                let key = key_of(kind, o.meta());
                self.relists
                    .entry(kind)
                    .or_default()
                    .insert(key, o.observed());
            }
            watcher::Event::InitDone => {
                let fresh = self.relists.remove(&kind).unwrap_or_default();
                self.objects.retain(|k, _| k.kind != kind);
                self.objects.extend(fresh);
                self.listed.insert(kind);
            }
        }
    }

    /// Records what a write of ours returned.
    pub fn put<K: Owned>(&mut self, object: &K) {
        self.objects
            .insert(key_of(K::KIND, object.meta()), object.observed());
    }

    pub fn remove(&mut self, key: &ObjKey) {
        self.objects.remove(key);
    }

    /// Whether every owned kind (ServiceImports, Services, EndpointSlices, Leases) has
    /// been listed.
    pub fn synced(&self) -> bool {
        self.listed.len() == 4
    }

    pub fn get(&self, key: &ObjKey) -> Option<&Observed> {
        self.objects.get(key)
    }
}

/// The hash of an object as Shoal wants it: SHA-256 of its JSON, 16 hex digits.
pub fn desired_hash<T: Serialize>(object: &T) -> String {
    let bytes = serde_json::to_vec(object).expect("Kubernetes objects serialize to JSON");
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stamps `meta` as Shoal's, with the hash of the object it belongs to.
fn own(meta: &mut ObjectMeta, kind: ObjKind) {
    if kind != ObjKind::EndpointSlice {
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_APP_MANAGED_BY.to_owned(), MANAGER.to_owned());
    }
}

fn with_hash<K: Resource + Serialize>(mut object: K) -> (String, K) {
    let hash = desired_hash(&object);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_DESIRED_HASH.to_owned(), hash.clone());
    (hash, object)
}

/// One request the sink must make.
#[derive(Clone, Debug)]
pub enum Action {
    ApplyService(Box<Service>),
    ApplySlice(Box<EndpointSlice>),
    /// The ServiceImport and, if it differs, its status (`status.clusters`).
    ApplyImport {
        object: Box<ServiceImport>,
        spec_changed: bool,
        status_changed: bool,
    },
    ExportStatus {
        key: ServiceKey,
        conditions: Vec<Condition>,
    },
    ApplyLease(Box<Lease>),
    Delete(ObjKey),
}

impl Action {
    /// The object this action writes, for retry bookkeeping.
    pub fn target(&self) -> ObjKey {
        let of = |kind, meta: &ObjectMeta| key_of(kind, meta);
        match self {
            Action::ApplyService(o) => of(ObjKind::Service, &o.metadata),
            Action::ApplySlice(o) => of(ObjKind::EndpointSlice, &o.metadata),
            Action::ApplyImport { object, .. } => of(ObjKind::ServiceImport, &object.metadata),
            Action::ExportStatus { key, .. } => ObjKey {
                kind: ObjKind::ExportStatus,
                namespace: key.namespace.to_string(),
                name: key.name.to_string(),
            },
            Action::ApplyLease(o) => of(ObjKind::Lease, &o.metadata),
            Action::Delete(key) => key.clone(),
        }
    }

    pub fn kind_label(&self) -> &'static str {
        match self {
            Action::ApplyService(_) => "services",
            Action::ApplySlice(_) => "endpointslices",
            Action::ApplyImport { .. } => "serviceimports",
            Action::ExportStatus { .. } => "serviceexports",
            Action::ApplyLease(_) => "leases",
            Action::Delete(key) => key.kind.label(),
        }
    }
}

/// The requests that bring the cluster to the desired state, in two phases: first
/// everything but ServiceImports (a ServiceImport names its derived Service's cluster
/// IP, which the API server allocates), then the ServiceImports.
#[derive(Debug, Default)]
pub struct Plan {
    pub first: Vec<Action>,
    pub imports: Vec<Action>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.first.is_empty() && self.imports.is_empty()
    }
}

/// What the sink knows when it plans.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub local: &'a ClusterId,
    pub version: McsVersion,
    pub namespace: &'a str,
    pub input: &'a SinkInput,
    pub exports: Option<&'a ExportSnapshot>,
    pub mirror: &'a Mirror,
    /// Services whose objects another field manager owns, with the message.
    pub conflicts: &'a BTreeMap<ServiceKey, String>,
    pub wall_ms: u64,
}

/// The requests that bring the cluster from `mirror` to the desired state. Pure.
pub fn plan(p: &PlanInput<'_>) -> Plan {
    let mut plan = Plan::default();
    let mut desired: BTreeSet<ObjKey> = BTreeSet::new();
    for import in p.input.imports.values() {
        plan_import(p, import, &mut desired, &mut plan);
    }
    for lease in &p.input.leases {
        plan_lease(p, lease, &mut desired, &mut plan);
    }
    if let Some(exports) = p.exports {
        for (key, export) in exports {
            plan_export_status(p, key, export, &mut plan);
        }
    }
    if p.input.settled && p.mirror.synced() {
        let stale = p.mirror.objects.keys().filter(|k| !desired.contains(*k));
        plan.first.extend(stale.cloned().map(Action::Delete));
    }
    plan
}

fn changed(p: &PlanInput<'_>, key: &ObjKey, hash: &str) -> bool {
    p.mirror.get(key).and_then(|o| o.hash.as_deref()) != Some(hash)
}

fn plan_import(
    p: &PlanInput<'_>,
    import: &ImportedService,
    desired: &mut BTreeSet<ObjKey>,
    plan: &mut Plan,
) {
    let objects = desired_import(p.local, import);
    let mut service = objects.derived_service;
    own(&mut service.metadata, ObjKind::Service);
    let (hash, service) = with_hash(service);
    let service_key = key_of(ObjKind::Service, &service.metadata);
    if changed(p, &service_key, &hash) {
        plan.first.push(Action::ApplyService(Box::new(service)));
    }
    desired.insert(service_key.clone());
    for mut slice in objects.slices {
        own(&mut slice.metadata, ObjKind::EndpointSlice);
        let (hash, slice) = with_hash(slice);
        let key = key_of(ObjKind::EndpointSlice, &slice.metadata);
        if changed(p, &key, &hash) {
            plan.first.push(Action::ApplySlice(Box::new(slice)));
        }
        desired.insert(key);
    }
    let mut object = objects.service_import;
    object.api_version = p.version.api_version();
    own(&mut object.metadata, ObjKind::ServiceImport);
    let status = object.status.take();
    if object.spec.type_ == "ClusterSetIP" {
        let ips = p.mirror.get(&service_key).map(|o| o.cluster_ips.clone());
        object.spec.ips = ips.unwrap_or_default();
    }
    let (hash, mut object) = with_hash(object);
    let key = key_of(ObjKind::ServiceImport, &object.metadata);
    let spec_changed = changed(p, &key, &hash);
    let observed_status = p.mirror.get(&key).and_then(|o| o.import_status.clone());
    let status_changed = observed_status != status;
    object.status = status;
    if spec_changed || status_changed {
        plan.imports.push(Action::ApplyImport {
            object: Box::new(object),
            spec_changed,
            status_changed,
        });
    }
    desired.insert(key);
}

fn plan_lease(
    p: &PlanInput<'_>,
    lease: &LeaseSeen,
    desired: &mut BTreeSet<ObjKey>,
    plan: &mut Plan,
) {
    if lease.name == super::LEADER_LEASE {
        // That name is the replicas' own election: never overwrite it with a mirror.
        return;
    }
    let key = ObjKey {
        kind: ObjKind::Lease,
        namespace: p.namespace.to_owned(),
        name: lease.name.clone(),
    };
    desired.insert(key.clone());
    let observed = p.mirror.get(&key);
    let seen = observed.and_then(|o| o.lease.clone()).unwrap_or_default();
    let same_holder = seen.holder_identity == lease.holder;
    let token = lease.token.map(|t| t.to_string());
    let renewed_ms = seen
        .renew_time
        .as_ref()
        .map_or(0, |t| u64::try_from(t.0.as_millisecond()).unwrap_or(0));
    // A held lease's renew time is refreshed every half lease; a free one is left.
    let fresh = lease.holder.is_none() || p.wall_ms.saturating_sub(renewed_ms) < lease.lease_ms / 2;
    if observed.is_some_and(|o| o.token == token) && same_holder && fresh {
        return;
    }
    let transitions = seen.lease_transitions.unwrap_or(0);
    // A handover from one holder to another counts; a first holder after none does not.
    let transitions = if seen.holder_identity.is_some() && lease.holder.is_some() && !same_holder {
        transitions.saturating_add(1)
    } else {
        transitions
    };
    let wall = Timestamp::from_millisecond(i64::try_from(p.wall_ms).unwrap_or(i64::MAX))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let mut meta = ObjectMeta {
        name: Some(lease.name.clone()),
        namespace: Some(p.namespace.to_owned()),
        ..ObjectMeta::default()
    };
    own(&mut meta, ObjKind::Lease);
    if let Some(token) = token {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_FENCING_TOKEN.to_owned(), token);
    }
    let seconds = i32::try_from(lease.lease_ms.div_ceil(1_000)).unwrap_or(i32::MAX);
    plan.first.push(Action::ApplyLease(Box::new(Lease {
        metadata: meta,
        spec: Some(LeaseSpec {
            holder_identity: lease.holder.clone(),
            lease_duration_seconds: Some(seconds),
            renew_time: lease.holder.as_ref().map(|_| MicroTime(wall)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    })));
}

fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let view = |c: &[Condition]| -> BTreeSet<(String, String, String, String, Option<i64>)> {
        c.iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                    c.observed_generation,
                )
            })
            .collect()
    };
    view(a) == view(b)
}

fn plan_export_status(
    p: &PlanInput<'_>,
    key: &ServiceKey,
    export: &super::source::LocalExport,
    plan: &mut Plan,
) {
    let Some(object) = &export.object else {
        return;
    };
    let valid: Result<(), &ExportInvalid> = export.spec.as_ref().map(|_| ());
    let import = p.input.imports.get(key).map(Arc::as_ref);
    let mut conditions = export_conditions(valid, import, p.local);
    if let Some(message) = p.conflicts.get(key) {
        conditions.push(Condition {
            type_: CONDITION_APPLIED.to_owned(),
            status: "False".to_owned(),
            reason: "FieldManagerConflict".to_owned(),
            message: message.clone(),
            // Stamped below, with every other condition's.
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        });
    }
    for condition in &mut conditions {
        condition.observed_generation = object.generation;
    }
    stamp_transitions(&object.conditions, &mut conditions, p.wall_ms);
    if !same_conditions(&object.conditions, &conditions) {
        plan.first.push(Action::ExportStatus {
            key: key.clone(),
            conditions,
        });
    }
}

/// The handles the sink writes through.
#[derive(Clone)]
pub struct Apis {
    pub client: Client,
    pub version: McsVersion,
    pub namespace: String,
}

impl std::fmt::Debug for Apis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apis")
            .field("version", &self.version)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// What one request did.
#[derive(Debug)]
enum Outcome {
    Service(Box<Service>),
    Slice(Box<EndpointSlice>),
    Import(Box<ServiceImport>),
    Lease(Box<Lease>),
    Deleted(ObjKey),
    Status,
}

impl Apis {
    fn import_api(&self, namespace: &str) -> Api<ServiceImport> {
        Api::namespaced_with(self.client.clone(), namespace, &self.version)
    }

    async fn execute(&self, action: Action) -> Result<Outcome, kube::Error> {
        let pp = apply_params();
        match action {
            Action::ApplyService(o) => {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let name = o.metadata.name.clone().unwrap_or_default();
                let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
                let out = api.patch(&name, &pp, &Patch::Apply(&*o)).await?;
                Ok(Outcome::Service(Box::new(out)))
            }
            Action::ApplySlice(o) => {
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let name = o.metadata.name.clone().unwrap_or_default();
                let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &ns);
                let out = api.patch(&name, &pp, &Patch::Apply(&*o)).await?;
                Ok(Outcome::Slice(Box::new(out)))
            }
            Action::ApplyImport {
                object,
                spec_changed,
                status_changed,
            } => {
                let ns = object.metadata.namespace.clone().unwrap_or_default();
                let name = object.metadata.name.clone().unwrap_or_default();
                let api = self.import_api(&ns);
                let mut out = None;
                if spec_changed {
                    let mut main = (*object).clone();
                    main.status = None;
                    out = Some(api.patch(&name, &pp, &Patch::Apply(&main)).await?);
                }
                if status_changed {
                    let status = serde_json::json!({
                        "apiVersion": object.api_version,
                        "kind": "ServiceImport",
                        "metadata": { "name": name, "namespace": ns },
                        "status": object.status.clone().unwrap_or_default(),
                    });
                    out = Some(api.patch_status(&name, &pp, &Patch::Apply(status)).await?);
                }
                let out = out.expect("a planned ServiceImport changes its spec or status");
                Ok(Outcome::Import(Box::new(out)))
            }
            Action::ExportStatus { key, conditions } => {
                let api: Api<ServiceExport> = Api::namespaced_with(
                    self.client.clone(),
                    key.namespace.as_str(),
                    &self.version,
                );
                let status = serde_json::json!({
                    "apiVersion": self.version.api_version(),
                    "kind": "ServiceExport",
                    "metadata": { "name": key.name.as_str(), "namespace": key.namespace.as_str() },
                    "status": ServiceExportStatus { conditions },
                });
                api.patch_status(key.name.as_str(), &pp, &Patch::Apply(status))
                    .await?;
                Ok(Outcome::Status)
            }
            Action::ApplyLease(o) => {
                let name = o.metadata.name.clone().unwrap_or_default();
                let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
                let out = api.patch(&name, &pp, &Patch::Apply(&*o)).await?;
                Ok(Outcome::Lease(Box::new(out)))
            }
            Action::Delete(key) => {
                let dp = DeleteParams::default();
                let ns = key.namespace.as_str();
                let name = key.name.as_str();
                let result = match key.kind {
                    ObjKind::ServiceImport => self.import_api(ns).delete(name, &dp).await.map(drop),
                    ObjKind::Service => Api::<Service>::namespaced(self.client.clone(), ns)
                        .delete(name, &dp)
                        .await
                        .map(drop),
                    ObjKind::EndpointSlice => {
                        Api::<EndpointSlice>::namespaced(self.client.clone(), ns)
                            .delete(name, &dp)
                            .await
                            .map(drop)
                    }
                    ObjKind::Lease => Api::<Lease>::namespaced(self.client.clone(), ns)
                        .delete(name, &dp)
                        .await
                        .map(drop),
                    // Never planned: the mirror holds no export status to delete.
                    ObjKind::ExportStatus => Ok(()),
                };
                match result {
                    Ok(()) => Ok(Outcome::Deleted(key)),
                    // Already gone: what a delete wants.
                    Err(e) if classify(&e) == ErrorClass::NotFound => Ok(Outcome::Deleted(key)),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// The service an owned object belongs to, for reporting conflicts on its export.
fn service_of(action: &Action) -> Option<ServiceKey> {
    let meta = match action {
        Action::ApplyService(o) => &o.metadata,
        Action::ApplySlice(o) => &o.metadata,
        Action::ApplyImport { object, .. } => &object.metadata,
        Action::ExportStatus { key, .. } => return Some(key.clone()),
        Action::ApplyLease(_) | Action::Delete(_) => return None,
    };
    let name = meta
        .labels
        .as_ref()?
        .get(super::super::objects::LABEL_SERVICE_NAME)?;
    ServiceKey::new(meta.namespace.as_deref()?, name).ok()
}

/// Watch streams of the owned objects, merged.
fn owned_events(
    apis: &Apis,
) -> impl Stream<Item = Result<OwnedEvent, watcher::Error>> + Send + use<> {
    let shoal = format!("{LABEL_APP_MANAGED_BY}={MANAGER}");
    let slices = format!("{LABEL_MANAGED_BY}={MANAGER}");
    let c = || watcher::Config::default().labels(&shoal);
    let imports: Api<ServiceImport> = Api::all_with(apis.client.clone(), &apis.version);
    let services: Api<Service> = Api::all(apis.client.clone());
    let endpoint_slices: Api<EndpointSlice> = Api::all(apis.client.clone());
    let leases: Api<Lease> = Api::namespaced(apis.client.clone(), &apis.namespace);
    futures::stream::select_all([
        watcher::watcher(imports, c())
            .default_backoff()
            .map(|r| r.map(OwnedEvent::Import))
            .boxed(),
        watcher::watcher(services, c())
            .default_backoff()
            .map(|r| r.map(OwnedEvent::Service))
            .boxed(),
        watcher::watcher(endpoint_slices, watcher::Config::default().labels(&slices))
            .default_backoff()
            .map(|r| r.map(OwnedEvent::Slice))
            .boxed(),
        watcher::watcher(leases, c())
            .default_backoff()
            .map(|r| r.map(OwnedEvent::Lease))
            .boxed(),
    ])
}

#[allow(clippy::large_enum_variant)] // one event at a time, moved straight into the index
enum OwnedEvent {
    Import(watcher::Event<ServiceImport>),
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
    Lease(watcher::Event<Lease>),
}

/// The sink's running state.
struct Sink {
    apis: Apis,
    local: ClusterId,
    mirror: Mirror,
    conflicts: BTreeMap<ServiceKey, String>,
    /// Requests that failed for a reason a retry alone does not fix: the object, the
    /// content that failed, and when to try it again.
    stuck: BTreeMap<ObjKey, (String, Instant)>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    stats: Arc<KubeStats>,
}

fn wall_ms() -> u64 {
    #[allow(clippy::disallowed_methods)] // status transition times are wall-clock times
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn content_of(action: &Action) -> String {
    match action {
        Action::ApplyService(o) => desired_hash(o),
        Action::ApplySlice(o) => desired_hash(o),
        Action::ApplyImport { object, .. } => desired_hash(object),
        Action::ExportStatus { conditions, .. } => desired_hash(conditions),
        Action::ApplyLease(o) => desired_hash(o),
        Action::Delete(_) => "delete".to_owned(),
    }
}

impl Sink {
    /// Carries out one phase's actions, at most [`REQUESTS_IN_FLIGHT_MAX`] at once.
    /// Returns whether any failed for a transient reason.
    async fn run_phase(&mut self, actions: Vec<Action>) -> bool {
        let now = Instant::now();
        let actions: Vec<Action> = actions
            .into_iter()
            .filter(|a| {
                self.stuck
                    .get(&a.target())
                    .is_none_or(|(content, until)| *content != content_of(a) || now >= *until)
            })
            .collect();
        let apis = self.apis.clone();
        let mut results = futures::stream::iter(actions.into_iter().map(|action| {
            let apis = apis.clone();
            async move {
                let result = apis.execute(action.clone()).await;
                (action, result)
            }
        }))
        .buffer_unordered(REQUESTS_IN_FLIGHT_MAX);
        let mut transient = false;
        while let Some((action, result)) = results.next().await {
            transient |= self.record(action, result);
        }
        transient
    }

    /// Books one request's outcome. Returns whether it failed transiently.
    fn record(&mut self, action: Action, result: Result<Outcome, kube::Error>) -> bool {
        let label = action.kind_label();
        let target = action.target();
        match result {
            Ok(outcome) => {
                self.stats.count(
                    if matches!(outcome, Outcome::Deleted(_)) {
                        "deletes"
                    } else {
                        "writes"
                    },
                    label,
                );
                self.stuck.remove(&target);
                if let Some(service) = service_of(&action)
                    && !matches!(action, Action::ExportStatus { .. })
                {
                    self.conflicts.remove(&service);
                }
                match outcome {
                    Outcome::Service(o) => self.mirror.put(&*o),
                    Outcome::Slice(o) => self.mirror.put(&*o),
                    Outcome::Import(o) => self.mirror.put(&*o),
                    Outcome::Lease(o) => self.mirror.put(&*o),
                    Outcome::Deleted(key) => self.mirror.remove(&key),
                    Outcome::Status => {}
                }
                false
            }
            Err(error) => {
                let class = classify(&error);
                self.stats.count("errors", class.metric_label());
                if class.is_transient() {
                    debug!(object = %target, %error, "write failed; retrying after a backoff");
                    return true;
                }
                warn!(object = %target, %error, class = class.metric_label(), "write refused; retried later");
                if class == ErrorClass::Conflict {
                    self.stats.count("conflicts", label);
                    if let Some(service) = service_of(&action) {
                        let message = format!("cannot write {target}: {error}");
                        self.conflicts.insert(service, message);
                    }
                }
                let content = content_of(&action);
                self.stuck
                    .insert(target, (content, Instant::now() + STUCK_RETRY));
                false
            }
        }
    }

    fn plan_input<'a>(
        &'a self,
        input: &'a SinkInput,
        exports: Option<&'a ExportSnapshot>,
        wall_ms: u64,
    ) -> PlanInput<'a> {
        PlanInput {
            local: &self.local,
            version: self.apis.version,
            namespace: &self.apis.namespace,
            input,
            exports,
            mirror: &self.mirror,
            conflicts: &self.conflicts,
            wall_ms,
        }
    }

    async fn reconcile(&mut self, input: &SinkInput, exports: Option<&ExportSnapshot>) {
        if !input.leader || !self.mirror.synced() {
            return;
        }
        let wall = wall_ms();
        let planned = super::off_worker(|| plan(&self.plan_input(input, exports, wall)));
        if planned.is_empty() {
            return;
        }
        let Plan { first, imports } = planned;
        debug!(first = first.len(), imports = imports.len(), "reconciling");
        let mut transient = self.run_phase(first).await;
        if !imports.is_empty() {
            // The ServiceImports name their Services' cluster IPs: plan them again now
            // that the Services are written.
            let imports =
                super::off_worker(|| plan(&self.plan_input(input, exports, wall))).imports;
            transient |= self.run_phase(imports).await;
        }
        if transient {
            self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        } else {
            self.backoff.reset();
            self.retry_at = None;
        }
    }
}

/// Runs the sink until `input` closes.
pub async fn run(
    apis: Apis,
    local: ClusterId,
    mut input: watch::Receiver<SinkInput>,
    mut exports: watch::Receiver<Option<Arc<ExportSnapshot>>>,
    stats: Arc<KubeStats>,
) {
    let mut events = owned_events(&apis).ready_chunks(1_024);
    let mut sink = Sink {
        apis,
        local,
        mirror: Mirror::default(),
        conflicts: BTreeMap::new(),
        stuck: BTreeMap::new(),
        backoff: Backoff::default(),
        retry_at: None,
        stats,
    };
    let mut synced_logged = false;
    loop {
        // A held quorum lease's mirror is refreshed every half lease; look a little
        // more often than that.
        let refresh = input
            .borrow()
            .leases
            .iter()
            .filter(|l| l.holder.is_some())
            .map(|l| Duration::from_millis(l.lease_ms / 4))
            .min()
            .unwrap_or(STUCK_RETRY);
        let next = Instant::now() + refresh.min(STUCK_RETRY);
        let retry = sink.retry_at.map_or(next, |at| at.min(next));
        tokio::select! {
            changed = input.changed() => if changed.is_err() { return },
            changed = exports.changed() => if changed.is_err() { return },
            batch = events.next() => {
                let Some(batch) = batch else { return };
                for event in batch {
                    match event {
                        Ok(OwnedEvent::Import(e)) => sink.mirror.on_event(e),
                        Ok(OwnedEvent::Service(e)) => sink.mirror.on_event(e),
                        Ok(OwnedEvent::Slice(e)) => sink.mirror.on_event(e),
                        Ok(OwnedEvent::Lease(e)) => sink.mirror.on_event(e),
                        Err(error) => {
                            sink.stats.count("watch_errors", "owned");
                            debug!(%error, "watch of owned objects failed; it retries");
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(retry) => sink.retry_at = None,
        }
        if sink.mirror.synced() && !synced_logged {
            synced_logged = true;
            info!("owned objects listed: the sink writes from now on");
        }
        let current = input.borrow_and_update().clone();
        let snapshot = exports.borrow_and_update().clone();
        sink.reconcile(&current, snapshot.as_deref()).await;
    }
}

#[cfg(test)]
mod tests;
