//! The sink's plan, without an API server: what is written, what is left alone, what
//! is deleted, and when nothing may be deleted.

use shoal_proto::{
    ClusterKey, Endpoint, EndpointConditions, ExportRecord, IpAddress, NetworkMode, PortProtocol,
    ServicePort, ServiceProperties, ServiceType,
};

use super::*;
use crate::core::{ImportedCluster, TrafficReason};
use crate::runtime::backend::kubernetes::source::{ExportObject, LocalExport};

fn local() -> ClusterId {
    ClusterId::new("east").unwrap()
}

fn key() -> ServiceKey {
    ServiceKey::new("shop", "web").unwrap()
}

fn import(endpoints: u32) -> Arc<ImportedService> {
    let origin = ClusterId::new("west").unwrap();
    let port = ServicePort {
        name: "http".into(),
        protocol: PortProtocol::Tcp,
        port: 80,
        target_port: 8080,
        app_protocol: None,
    };
    let record = ExportRecord {
        origin: origin.clone(),
        service: key(),
        version: 1,
        export_created_ms: 1,
        published_ms: 0,
        service_type: ServiceType::ClusterSetIp,
        ports: vec![port.clone()],
        endpoints: (0..endpoints)
            .map(|i| Endpoint {
                addresses: vec![IpAddress::V4([10, 0, 0, i as u8 + 1])],
                conditions: EndpointConditions {
                    ready: true,
                    serving: true,
                    terminating: false,
                },
                zone: None,
                hostname: None,
            })
            .collect(),
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
        tombstone: false,
    };
    let signed = ClusterKey::from_seed(origin, [7; 32]).sign_unchecked(record);
    Arc::new(ImportedService {
        service: key(),
        service_type: ServiceType::ClusterSetIp,
        ports: vec![port],
        properties: ServiceProperties::default(),
        sources: vec![ImportedCluster {
            record: Arc::new(signed),
            active: true,
        }]
        .into(),
        conflicts: Vec::new().into(),
        traffic: TrafficReason::AllOrigins,
    })
}

fn input(imports: &[Arc<ImportedService>], settled: bool) -> SinkInput {
    SinkInput {
        leader: true,
        imports: Arc::new(
            imports
                .iter()
                .map(|i| (i.service.clone(), Arc::clone(i)))
                .collect(),
        ),
        settled,
        leases: Vec::new(),
    }
}

fn listed() -> Mirror {
    let mut mirror = Mirror::default();
    mirror.on_event::<ServiceImport>(watcher::Event::InitDone);
    mirror.on_event::<Service>(watcher::Event::InitDone);
    mirror.on_event::<EndpointSlice>(watcher::Event::InitDone);
    mirror.on_event::<Lease>(watcher::Event::InitDone);
    mirror
}

fn plan_for(input: &SinkInput, mirror: &Mirror, exports: Option<&ExportSnapshot>) -> Plan {
    let conflicts = BTreeMap::new();
    plan(&PlanInput {
        local: &local(),
        version: McsVersion::V1beta1,
        namespace: "shoal-system",
        input,
        exports,
        mirror,
        conflicts: &conflicts,
        wall_ms: 1_000_000,
    })
}

/// Plays the API server: every write of the plan is answered as applied.
fn apply_all(mirror: &mut Mirror, plan: &Plan) {
    for action in plan.first.iter().chain(&plan.imports) {
        match action {
            Action::ApplyService(o) => {
                let mut o = (**o).clone();
                let spec = o.spec.get_or_insert_with(Default::default);
                spec.cluster_ips = Some(vec!["10.96.0.10".into()]);
                mirror.put(&o);
            }
            Action::ApplySlice(o) => mirror.put(&**o),
            Action::ApplyImport { object, .. } => mirror.put(&**object),
            Action::ApplyLease(o) => mirror.put(&**o),
            Action::Delete(k) => mirror.remove(k),
            Action::ExportStatus { .. } => {}
        }
    }
}

fn kinds(actions: &[Action]) -> Vec<&'static str> {
    actions.iter().map(Action::kind_label).collect()
}

#[test]
fn a_new_import_is_its_service_and_slices_then_its_service_import_with_the_cluster_ip() {
    let mirror = listed();
    let input = input(&[import(2)], true);
    let plan = plan_for(&input, &mirror, None);
    assert_eq!(kinds(&plan.first), ["services", "endpointslices"]);
    assert_eq!(kinds(&plan.imports), ["serviceimports"]);
    let mut mirror = mirror;
    apply_all(
        &mut mirror,
        &Plan {
            first: plan.first,
            imports: Vec::new(),
        },
    );
    let again = plan_for(&input, &mirror, None);
    assert!(again.first.is_empty(), "the Service and slices are written");
    let Action::ApplyImport {
        object,
        spec_changed,
        status_changed,
    } = &again.imports[0]
    else {
        panic!("a ServiceImport");
    };
    assert!(*spec_changed && *status_changed);
    assert_eq!(
        object.spec.ips,
        ["10.96.0.10"],
        "the derived Service's cluster IP"
    );
    assert_eq!(object.api_version, "multicluster.x-k8s.io/v1beta1");
    let status = object.status.as_ref().unwrap();
    assert_eq!(status.clusters[0].cluster, "west");
    let labels = object.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_APP_MANAGED_BY], MANAGER);
    assert!(
        object
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(ANNOTATION_DESIRED_HASH)
    );
}

#[test]
fn nothing_changed_is_no_request_at_all() {
    let mut mirror = listed();
    let input = input(&[import(2)], true);
    let first = plan_for(&input, &mirror, None);
    apply_all(&mut mirror, &first);
    let second = plan_for(&input, &mirror, None);
    apply_all(&mut mirror, &second);
    assert!(plan_for(&input, &mirror, None).is_empty());
}

#[test]
fn an_endpoint_change_rewrites_only_its_slice() {
    let mut mirror = listed();
    let before = input(&[import(2)], true);
    for _ in 0..2 {
        let plan = plan_for(&before, &mirror, None);
        apply_all(&mut mirror, &plan);
    }
    let after = input(&[import(3)], true);
    let plan = plan_for(&after, &mirror, None);
    assert_eq!(kinds(&plan.first), ["endpointslices"]);
    assert!(
        plan.imports.is_empty(),
        "ports, type and clusters are unchanged"
    );
}

#[test]
fn owned_objects_no_import_explains_are_deleted_once_settled_and_listed() {
    let mut mirror = listed();
    let with = input(&[import(2)], true);
    for _ in 0..2 {
        let plan = plan_for(&with, &mirror, None);
        apply_all(&mut mirror, &plan);
    }
    let unsettled = input(&[], false);
    assert!(
        plan_for(&unsettled, &mirror, None).is_empty(),
        "a view that has not settled deletes nothing"
    );
    let settled = input(&[], true);
    let plan = plan_for(&settled, &mirror, None);
    let mut deleted = kinds(&plan.first);
    deleted.sort_unstable();
    assert_eq!(deleted, ["endpointslices", "serviceimports", "services"]);
    assert!(plan.first.iter().all(|a| matches!(a, Action::Delete(_))));
}

#[test]
fn nothing_is_deleted_before_the_owned_objects_are_listed() {
    let mut mirror = Mirror::default();
    let stale = ServiceImport {
        metadata: ObjectMeta {
            name: Some("old".into()),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        },
        ..ServiceImport::default()
    };
    mirror.on_event(watcher::Event::Apply(stale));
    assert!(!mirror.synced());
    assert!(plan_for(&input(&[], true), &mirror, None).is_empty());
}

#[test]
fn a_relist_under_way_keeps_the_objects_it_has_not_seen_yet() {
    let mut mirror = listed();
    let input = input(&[import(1)], true);
    for _ in 0..2 {
        let plan = plan_for(&input, &mirror, None);
        apply_all(&mut mirror, &plan);
    }
    mirror.on_event::<EndpointSlice>(watcher::Event::Init);
    assert!(
        plan_for(&input, &mirror, None).is_empty(),
        "no rewrite, no delete"
    );
}

#[test]
fn export_status_is_written_when_the_conditions_change_and_not_otherwise() {
    let mirror = listed();
    let import = import(1);
    let spec = Err(ExportInvalid::NoService("shop/web".into()));
    let mut snapshot = ExportSnapshot::new();
    snapshot.insert(
        key(),
        Arc::new(LocalExport {
            spec,
            object: Some(ExportObject {
                generation: Some(3),
                conditions: Vec::new(),
            }),
        }),
    );
    let sink_input = input(&[import], true);
    let plan = plan_for(&sink_input, &mirror, Some(&snapshot));
    let status = plan
        .first
        .iter()
        .find_map(|a| match a {
            Action::ExportStatus { conditions, .. } => Some(conditions.clone()),
            _ => None,
        })
        .expect("a status write");
    let valid = status.iter().find(|c| c.type_ == "Valid").unwrap();
    assert_eq!(valid.status, "False");
    assert_eq!(valid.reason, "NoService");
    assert_eq!(valid.observed_generation, Some(3));
    let mut written = snapshot.clone();
    written.insert(
        key(),
        Arc::new(LocalExport {
            spec: Err(ExportInvalid::NoService("shop/web".into())),
            object: Some(ExportObject {
                generation: Some(3),
                conditions: status,
            }),
        }),
    );
    let again = plan_for(&sink_input, &mirror, Some(&written));
    assert!(
        !again
            .first
            .iter()
            .any(|a| matches!(a, Action::ExportStatus { .. })),
        "the same conditions are not written again"
    );
}

#[test]
fn a_quorum_lease_is_mirrored_with_its_holder_and_token_and_refreshed_every_half_lease() {
    let mut mirror = listed();
    let mut sink_input = input(&[], true);
    sink_input.leases = vec![LeaseSeen {
        name: "payments".into(),
        holder: Some("east".into()),
        token: Some(42),
        lease_ms: 10_000,
    }];
    let first = plan_for(&sink_input, &mirror, None);
    let Action::ApplyLease(lease) = &first.first[0] else {
        panic!("a Lease write: {first:?}");
    };
    let spec = lease.spec.as_ref().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("east"));
    assert_eq!(spec.lease_duration_seconds, Some(10));
    assert_eq!(spec.lease_transitions, Some(0));
    let annotations = lease.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[ANNOTATION_FENCING_TOKEN], "42");
    apply_all(&mut mirror, &first);
    assert!(
        plan_for(&sink_input, &mirror, None).is_empty(),
        "fresh: no write"
    );
    let later = plan(&PlanInput {
        local: &local(),
        version: McsVersion::V1beta1,
        namespace: "shoal-system",
        input: &sink_input,
        exports: None,
        mirror: &mirror,
        conflicts: &BTreeMap::new(),
        wall_ms: 1_000_000 + 5_000,
    });
    assert_eq!(kinds(&later.first), ["leases"], "renewTime refreshed");
    sink_input.leases[0].holder = Some("west".into());
    sink_input.leases[0].token = Some(43);
    let moved = plan_for(&sink_input, &mirror, None);
    let Action::ApplyLease(lease) = &moved.first[0] else {
        panic!("a Lease write");
    };
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(1));
}

#[test]
fn desired_hashes_are_stable_and_differ_with_content() {
    let a = import(1);
    let b = import(2);
    let ha = desired_hash(&desired_import(&local(), &a).slices);
    assert_eq!(ha, desired_hash(&desired_import(&local(), &a).slices));
    assert_ne!(ha, desired_hash(&desired_import(&local(), &b).slices));
    assert_eq!(ha.len(), 16);
}
