//! The source: this cluster's exports, from watches on ServiceExports, Services and
//! EndpointSlices.
//!
//! Three watchers (kube-runtime's, which relist after a 410 and back off on errors)
//! feed one index per kind. After each burst of events, the exports whose objects
//! changed are derived again with [`export_spec`], and the whole set is published as a
//! snapshot on a `watch` channel: the latest snapshot wins, so a slow reader never
//! holds the source back.
//!
//! **Nothing is published before every watcher has completed its initial list.** A
//! relist replaces an index only when it completes, and a watcher that fails keeps its
//! index as it was: a cold cache or an unreachable API server never yields an empty or
//! partial export set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use shoal_proto::{NetworkMode, ServiceKey};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::super::desired::{DEFAULT_NAMESPACE, ExportInvalid, export_spec, object_key};
use super::super::objects::{
    ANNOTATION_GLOBAL, LABEL_KUBE_SERVICE_NAME, LABEL_MANAGED_BY, MANAGER, ServiceExport,
};
use super::errors::classify;
use super::resources::McsVersion;
use super::stats::KubeStats;
use crate::core::ExportSpec;

/// The label selector that leaves out the EndpointSlices Shoal derived.
pub fn own_slices_excluded() -> String {
    format!("{LABEL_MANAGED_BY}!={MANAGER}")
}

/// One export of this cluster, as the source sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalExport {
    /// What the core publishes, or why it cannot.
    pub spec: Result<ExportSpec, ExportInvalid>,
    /// The ServiceExport object, when there is one (a Service annotated
    /// `shoal.dev/global` is exported without one).
    pub object: Option<ExportObject>,
}

/// What the sink needs of a ServiceExport object to write its status.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportObject {
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
}

/// This cluster's exports: every ServiceExport (and global Service), valid or not.
pub type ExportSnapshot = BTreeMap<ServiceKey, Arc<LocalExport>>;

/// One kind's objects by the service they belong to (the object's own namespace and
/// name), with a relist's objects gathered apart until the relist completes.
#[derive(Debug)]
struct ByService<K> {
    objects: BTreeMap<ServiceKey, K>,
    relist: Option<Vec<K>>,
    listed: bool,
}

impl<K> Default for ByService<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relist: None,
            listed: false,
        }
    }
}

impl<K: Resource> ByService<K> {
    /// Applies one watcher event, marking the services it touches dirty.
    fn on_event(&mut self, event: watcher::Event<K>, dirty: &mut BTreeSet<ServiceKey>) {
        match event {
            watcher::Event::Apply(o) => self.put(o, dirty),
            watcher::Event::Delete(o) => {
                if let Some(key) = key_of(o.meta()) {
                    self.objects.remove(&key);
                    dirty.insert(key);
                }
            }
            watcher::Event::Init => self.relist = Some(Vec::new()),
            watcher::Event::InitApply(o) => self.relist.get_or_insert_default().push(o),
            watcher::Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                dirty.extend(std::mem::take(&mut self.objects).into_keys());
                fresh.into_iter().for_each(|o| self.put(o, dirty));
                self.listed = true;
            }
        }
    }

    fn put(&mut self, object: K, dirty: &mut BTreeSet<ServiceKey>) {
        if let Some(key) = key_of(object.meta()) {
            dirty.insert(key.clone());
            self.objects.insert(key, object);
        }
    }

    fn get(&self, key: &ServiceKey) -> Option<&K> {
        self.objects.get(key)
    }
}

/// Which index a watcher feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Exports,
    Services,
    Slices,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Exports => "serviceexports",
            Kind::Services => "services",
            Kind::Slices => "endpointslices",
        }
    }
}

/// One watcher event, typed by kind.
#[allow(clippy::large_enum_variant)] // one event at a time, moved straight into the index
enum Change {
    Export(watcher::Event<ServiceExport>),
    Service(watcher::Event<Service>),
    Slice(watcher::Event<EndpointSlice>),
}

/// The service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let meta = &slice.metadata;
    let name = meta.labels.as_ref()?.get(LABEL_KUBE_SERVICE_NAME)?;
    let namespace = meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
    ServiceKey::new(namespace, name).ok()
}

fn key_of(meta: &ObjectMeta) -> Option<ServiceKey> {
    object_key(meta).ok()
}

/// The source's state: the indexes, relists under way, and which kinds have listed.
#[derive(Debug)]
pub struct Source {
    exports: ByService<ServiceExport>,
    services: ByService<Service>,
    /// Each service's own EndpointSlices, by slice name.
    slices: BTreeMap<ServiceKey, BTreeMap<String, EndpointSlice>>,
    slices_relist: Option<Vec<EndpointSlice>>,
    slices_listed: bool,
    dirty: BTreeSet<ServiceKey>,
    network: NetworkMode,
    snapshot: ExportSnapshot,
}

impl Source {
    pub fn new(network: NetworkMode) -> Self {
        Self {
            exports: ByService::default(),
            services: ByService::default(),
            slices: BTreeMap::new(),
            slices_relist: None,
            slices_listed: false,
            dirty: BTreeSet::new(),
            network,
            snapshot: BTreeMap::new(),
        }
    }

    /// Whether every kind has completed its initial list.
    pub fn synced(&self) -> bool {
        self.exports.listed && self.services.listed && self.slices_listed
    }

    fn on_change(&mut self, change: Change) {
        match change {
            Change::Export(event) => self.exports.on_event(event, &mut self.dirty),
            Change::Service(event) => self.services.on_event(event, &mut self.dirty),
            Change::Slice(event) => self.on_slice(event),
        }
    }

    fn on_slice(&mut self, event: watcher::Event<EndpointSlice>) {
        match event {
            watcher::Event::Apply(s) => self.put_slice(s),
            watcher::Event::Delete(s) => {
                let name = s.metadata.name.clone().unwrap_or_default();
                if let Some(key) = slice_service(&s) {
                    if let Some(slices) = self.slices.get_mut(&key) {
                        slices.remove(&name);
                        if slices.is_empty() {
                            self.slices.remove(&key);
                        }
                    }
                    self.dirty.insert(key);
                }
            }
            watcher::Event::Init => self.slices_relist = Some(Vec::new()),
            watcher::Event::InitApply(s) => self.slices_relist.get_or_insert_default().push(s),
            watcher::Event::InitDone => {
                let fresh = self.slices_relist.take().unwrap_or_default();
                self.dirty
                    .extend(std::mem::take(&mut self.slices).into_keys());
                fresh.into_iter().for_each(|s| self.put_slice(s));
                self.slices_listed = true;
            }
        }
    }

    fn put_slice(&mut self, slice: EndpointSlice) {
        let Some(key) = slice_service(&slice) else {
            return;
        };
        let name = slice.metadata.name.clone().unwrap_or_default();
        // A slice may move between services only by a label change: drop it elsewhere.
        for (other, slices) in &mut self.slices {
            if *other != key && slices.remove(&name).is_some() {
                self.dirty.insert(other.clone());
            }
        }
        self.slices.retain(|_, s| !s.is_empty());
        self.slices
            .entry(key.clone())
            .or_default()
            .insert(name, slice);
        self.dirty.insert(key);
    }

    #[cfg(test)]
    fn on_change_export(&mut self, event: watcher::Event<ServiceExport>) {
        self.on_change(Change::Export(event));
    }

    #[cfg(test)]
    fn on_change_service(&mut self, event: watcher::Event<Service>) {
        self.on_change(Change::Service(event));
    }

    /// Derives the dirty services again. Returns whether the snapshot changed.
    fn refresh(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        for key in std::mem::take(&mut self.dirty) {
            let next = self.derive(&key, now_ms).map(Arc::new);
            let same = match (self.snapshot.get(&key), &next) {
                (Some(a), Some(b)) => a == b,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            changed = true;
            match next {
                Some(export) => drop(self.snapshot.insert(key, export)),
                None => drop(self.snapshot.remove(&key)),
            }
        }
        changed
    }

    /// The export of `key`, if a ServiceExport or a global annotation asks for one.
    fn derive(&self, key: &ServiceKey, now_ms: u64) -> Option<LocalExport> {
        let service = self.services.get(key);
        let object = self.exports.get(key);
        let global = service.is_some_and(is_global);
        let export = match (object, service) {
            (Some(export), _) => export.clone(),
            (None, Some(service)) if global => global_export(service),
            _ => return None,
        };
        let slices: Vec<EndpointSlice> = self
            .slices
            .get(key)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        let spec = match service {
            Some(service) => export_spec(service, &export, &slices, self.network, now_ms),
            None => Err(ExportInvalid::NoService(key.to_string())),
        };
        Some(LocalExport {
            spec,
            object: object.map(|o| ExportObject {
                generation: o.metadata.generation,
                conditions: o
                    .status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default(),
            }),
        })
    }

    pub fn snapshot(&self) -> &ExportSnapshot {
        &self.snapshot
    }
}

fn is_global(service: &Service) -> bool {
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_GLOBAL))
        .is_some_and(|v| v == "true")
}

/// The ServiceExport a global Service stands for: as old as the Service.
fn global_export(service: &Service) -> ServiceExport {
    ServiceExport {
        api_version: McsVersion::default().api_version(),
        kind: "ServiceExport".to_owned(),
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            creation_timestamp: service.metadata.creation_timestamp.clone(),
            ..ObjectMeta::default()
        },
        ..ServiceExport::default()
    }
}

fn wall_clock_ms() -> u64 {
    #[allow(clippy::disallowed_methods)] // an export without a creation time is as old as now
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn typed<K, F>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    kind: Kind,
    wrap: F,
) -> impl Stream<Item = (Kind, Result<Change, watcher::Error>)> + Send
where
    K: Send + 'static,
    F: Fn(watcher::Event<K>) -> Change + Send + 'static,
{
    stream.map(move |r| (kind, r.map(&wrap)))
}

/// Watches this cluster's exports and publishes each new snapshot on `out`, starting
/// once every initial list has completed. Runs until `out` has no receivers.
pub async fn run(
    client: Client,
    version: McsVersion,
    network: NetworkMode,
    out: watch::Sender<Option<Arc<ExportSnapshot>>>,
    stats: Arc<KubeStats>,
) {
    let exports: Api<ServiceExport> = Api::all_with(client.clone(), &version);
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client);
    let slice_config = watcher::Config::default().labels(&own_slices_excluded());
    let events = futures::stream::select_all([
        typed(
            watcher::watcher(exports, watcher::Config::default()).default_backoff(),
            Kind::Exports,
            Change::Export,
        )
        .boxed(),
        typed(
            watcher::watcher(services, watcher::Config::default()).default_backoff(),
            Kind::Services,
            Change::Service,
        )
        .boxed(),
        typed(
            watcher::watcher(slices, slice_config).default_backoff(),
            Kind::Slices,
            Change::Slice,
        )
        .boxed(),
    ]);
    let mut events = events.ready_chunks(1_024);
    let mut source = Source::new(network);
    let mut announced = false;
    while let Some(batch) = events.next().await {
        for (kind, result) in batch {
            match result {
                Ok(change) => {
                    if matches!(
                        &change,
                        Change::Export(watcher::Event::Init)
                            | Change::Service(watcher::Event::Init)
                            | Change::Slice(watcher::Event::Init)
                    ) {
                        stats.count("relists", kind.label());
                    }
                    source.on_change(change);
                }
                Err(error) => {
                    let class = classify_watch(&error);
                    stats.count("watch_errors", class);
                    debug!(kind = kind.label(), %error, "watch failed; it retries with backoff");
                }
            }
        }
        if !source.synced() {
            continue;
        }
        let changed = super::off_worker(|| source.refresh(wall_clock_ms()));
        if !announced {
            info!(
                exports = source.snapshot().len(),
                "initial lists complete: exports are published from now on"
            );
        }
        if changed || !announced {
            announced = true;
            let snapshot = Arc::new(source.snapshot().clone());
            if out.send(Some(snapshot)).is_err() {
                warn!("the export snapshot has no reader; the source stops");
                return;
            }
        }
    }
}

fn classify_watch(error: &watcher::Error) -> &'static str {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => classify(e).metric_label(),
        watcher::Error::WatchError(status) => {
            super::errors::class_of_code(status.code).metric_label()
        }
        watcher::Error::NoResourceVersion => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::Endpoint;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    fn service(name: &str) -> Service {
        Service {
            metadata: meta("shop", name),
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn export(name: &str) -> ServiceExport {
        ServiceExport {
            api_version: "multicluster.x-k8s.io/v1beta1".into(),
            kind: "ServiceExport".into(),
            metadata: meta("shop", name),
            ..ServiceExport::default()
        }
    }

    fn slice(service: &str, name: &str, ip: &str) -> EndpointSlice {
        let mut m = meta("shop", name);
        m.labels = Some(BTreeMap::from([(
            LABEL_KUBE_SERVICE_NAME.to_owned(),
            service.to_owned(),
        )]));
        EndpointSlice {
            metadata: m,
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec![ip.into()],
                ..Endpoint::default()
            }]),
            ports: None,
        }
    }

    fn list_all(source: &mut Source) {
        source.on_change_export(watcher::Event::Init);
        source.on_change_export(watcher::Event::InitApply(export("web")));
        source.on_change_export(watcher::Event::InitDone);
        source.on_change_service(watcher::Event::Init);
        source.on_change_service(watcher::Event::InitApply(service("web")));
        source.on_change_service(watcher::Event::InitDone);
        source.on_slice(watcher::Event::Init);
        source.on_slice(watcher::Event::InitApply(slice("web", "web-1", "10.0.0.1")));
        source.on_slice(watcher::Event::InitDone);
    }

    fn endpoints(source: &Source, name: &str) -> usize {
        let key = ServiceKey::new("shop", name).unwrap();
        source.snapshot()[&key]
            .spec
            .as_ref()
            .map(|s| s.endpoints.len())
            .unwrap()
    }

    #[test]
    fn nothing_is_synced_until_every_kind_has_listed() {
        let mut source = Source::new(NetworkMode::Flat);
        source.on_change_export(watcher::Event::Init);
        source.on_change_export(watcher::Event::InitApply(export("web")));
        source.on_change_export(watcher::Event::InitDone);
        source.on_change_service(watcher::Event::Init);
        source.on_change_service(watcher::Event::InitDone);
        assert!(!source.synced());
        source.on_slice(watcher::Event::Init);
        source.on_slice(watcher::Event::InitDone);
        assert!(source.synced());
    }

    #[test]
    fn an_export_is_derived_from_its_service_and_slices() {
        let mut source = Source::new(NetworkMode::Flat);
        list_all(&mut source);
        assert!(source.refresh(0));
        assert_eq!(endpoints(&source, "web"), 1);
        source.on_slice(watcher::Event::Apply(slice("web", "web-2", "10.0.0.2")));
        assert!(source.refresh(0));
        assert_eq!(endpoints(&source, "web"), 2);
        assert!(!source.refresh(0), "nothing dirty: no change");
    }

    #[test]
    fn a_relist_in_progress_keeps_the_old_index_and_an_empty_one_replaces_it_only_when_done() {
        let mut source = Source::new(NetworkMode::Flat);
        list_all(&mut source);
        source.refresh(0);
        source.on_slice(watcher::Event::Init);
        assert!(!source.refresh(0), "a relist under way changes nothing");
        assert_eq!(endpoints(&source, "web"), 1);
        source.on_slice(watcher::Event::InitApply(slice("web", "web-1", "10.0.0.1")));
        source.on_slice(watcher::Event::InitDone);
        assert!(!source.refresh(0), "the same objects relisted: no change");
    }

    #[test]
    fn a_deleted_service_makes_the_export_invalid_not_gone() {
        let mut source = Source::new(NetworkMode::Flat);
        list_all(&mut source);
        source.refresh(0);
        source.on_change_service(watcher::Event::Delete(service("web")));
        source.refresh(0);
        let key = ServiceKey::new("shop", "web").unwrap();
        assert!(matches!(
            source.snapshot()[&key].spec,
            Err(ExportInvalid::NoService(_))
        ));
        source.on_change_export(watcher::Event::Delete(export("web")));
        source.refresh(0);
        assert!(source.snapshot().is_empty());
    }

    #[test]
    fn a_global_service_is_exported_without_a_service_export() {
        let mut source = Source::new(NetworkMode::Flat);
        list_all(&mut source);
        let mut api = service("api");
        api.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_GLOBAL.to_owned(),
            "true".to_owned(),
        )]));
        source.on_change_service(watcher::Event::Apply(api));
        source.refresh(0);
        let key = ServiceKey::new("shop", "api").unwrap();
        let export = &source.snapshot()[&key];
        assert!(export.spec.is_ok());
        assert!(export.object.is_none());
    }
}
