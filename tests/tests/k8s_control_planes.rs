//! Two real Kubernetes control planes from `shoal_tests::k8s` (one shared etcd; per
//! cluster a kube-apiserver, kube-controller-manager, kube-scheduler and kwok): in
//! each, a Deployment's pods are bound to kwok's fake nodes by the real scheduler and
//! become Running with IPs from that cluster's own pod range; the real
//! EndpointSlice controller publishes exactly those IPs for a Service; the API server
//! is v1.36.3; and RBAC refuses an unprivileged ServiceAccount's token.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::k8s::binaries::kubectl_program;
use shoal_tests::k8s::{
    Cluster, ControlPlanes, ControlPlanesConfig, KubectlError, kubectl, wait_for,
};

const CLUSTERS: usize = 2;
const REPLICAS: usize = 2;
const KUBERNETES_VERSION: &str = "v1.36.3";
/// From the Deployment's creation to its pods Running, and then to its EndpointSlice.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(60);
/// An image nothing ever pulls: there is no kubelet.
const IMAGE: &str = "registry.invalid/shoal/web:never";
const CONTAINER_PORT: u16 = 8080;

#[test]
fn two_control_planes_run_deployments_publish_endpoint_slices_and_enforce_rbac() {
    let planes = ControlPlanes::start(&ControlPlanesConfig::new(CLUSTERS))
        .unwrap_or_else(|e| panic!("starting {CLUSTERS} control planes: {e}"));
    eprintln!(
        "{CLUSTERS} control planes ready in {} ms",
        planes.startup_time().as_millis()
    );
    let mut pod_ips_by_cluster = Vec::new();
    for cluster in planes.clusters() {
        assert_server_version(cluster);
        let pod_ips = deploy_and_wait_for_running_pods(cluster);
        assert_endpoint_slice_lists(cluster, &pod_ips);
        assert_rbac_refuses_an_unprivileged_service_account(cluster);
        pod_ips_by_cluster.push(pod_ips);
    }
    assert!(
        pod_ips_by_cluster[0].is_disjoint(&pod_ips_by_cluster[1]),
        "the clusters' pod IPs overlap: {pod_ips_by_cluster:?}"
    );
}

fn assert_server_version(cluster: &Cluster) {
    let version = cluster
        .kubectl_json(&["version", "--output=json"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        KUBERNETES_VERSION,
        "{} serverVersion: {}",
        cluster.context(),
        version["serverVersion"]
    );
}

/// Creates Deployment and Service `web`, and returns the IPs of its Running pods.
fn deploy_and_wait_for_running_pods(cluster: &Cluster) -> BTreeSet<Ipv4Addr> {
    let replicas = format!("--replicas={REPLICAS}");
    let container_port = format!("--port={CONTAINER_PORT}");
    let target_port = format!("--target-port={CONTAINER_PORT}");
    let create = [
        "create",
        "deployment",
        "web",
        "--image",
        IMAGE,
        &replicas,
        &container_port,
    ];
    let expose = ["expose", "deployment", "web", "--port=80", &target_port];
    for args in [&create[..], &expose[..]] {
        cluster
            .kubectl_stdout(args)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let what = format!(
        "{} pods of Deployment web Running with IPs",
        cluster.context()
    );
    let pods = wait_for(&what, ROLLOUT_TIMEOUT, || {
        let pods = cluster
            .kubectl_json(&["get", "pods", "--selector=app=web", "--output=json"])
            .map_err(|e| e.to_string())?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let running = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
            .count();
        if running == REPLICAS && items.len() == REPLICAS {
            Ok(items)
        } else {
            Err(summarize_pods(&items))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let pod_cidr = cluster.pod_cidr();
    let mut ips = BTreeSet::new();
    for pod in &pods {
        let name = &pod["metadata"]["name"];
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        assert!(
            cluster.node_names().iter().any(|n| n == node),
            "{name} is on {node:?}, not on one of the kwok nodes {:?}",
            cluster.node_names()
        );
        let ip: Ipv4Addr = pod["status"]["podIP"]
            .as_str()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("{name} has no IPv4 podIP: {}", pod["status"]));
        assert!(
            in_cidr(ip, &pod_cidr),
            "{name}'s IP {ip} is outside {pod_cidr}"
        );
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} is Running but not Ready: {}", pod["status"]);
        ips.insert(ip);
    }
    assert_eq!(ips.len(), REPLICAS, "pod IPs are not distinct: {ips:?}");
    assert_scheduled_by_the_scheduler(cluster, &pods);
    ips
}

/// Each pod's placement was the real scheduler's: it reported binding the pod to the
/// node the pod is on.
fn assert_scheduled_by_the_scheduler(cluster: &Cluster, pods: &[Value]) {
    let events = cluster
        .kubectl_json(&[
            "get",
            "events",
            "--field-selector=reason=Scheduled",
            "--output=json",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let bound = events["items"].as_array().into_iter().flatten().any(|e| {
            e["involvedObject"]["name"] == name
                && e["reportingComponent"] == "default-scheduler"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with(&format!(" to {node}")))
        });
        assert!(
            bound,
            "{}: no Scheduled event from default-scheduler binds {name} to {node}: {events}",
            cluster.context()
        );
    }
}

fn assert_endpoint_slice_lists(cluster: &Cluster, pod_ips: &BTreeSet<Ipv4Addr>) {
    let what = format!(
        "{} EndpointSlice of Service web listing {pod_ips:?}",
        cluster.context()
    );
    let slice = wait_for(&what, ROLLOUT_TIMEOUT, || {
        let slices = cluster
            .kubectl_json(&[
                "get",
                "endpointslices",
                "--selector=kubernetes.io/service-name=web",
                "--output=json",
            ])
            .map_err(|e| e.to_string())?;
        let items = slices["items"].as_array().cloned().unwrap_or_default();
        let [slice] = items.as_slice() else {
            return Err(format!("{} slices", items.len()));
        };
        let ready = ready_addresses(slice);
        if &ready == pod_ips {
            Ok(slice.clone())
        } else {
            Err(format!("ready addresses {ready:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io",
        "not written by the EndpointSlice controller: {}",
        slice["metadata"]
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["ports"][0]["port"], CONTAINER_PORT,
        "ports: {}",
        slice["ports"]
    );
}

fn assert_rbac_refuses_an_unprivileged_service_account(cluster: &Cluster) {
    cluster
        .kubectl_stdout(&["create", "serviceaccount", "nobody"])
        .unwrap_or_else(|e| panic!("{e}"));
    let token = cluster
        .kubectl_stdout(&["create", "token", "nobody", "--duration=10m"])
        .unwrap_or_else(|e| panic!("{e}"));
    let as_nobody = |args: &[&str]| {
        let mut command = Command::new(kubectl_program());
        command
            .args(["--kubeconfig", "/dev/null", "--server", cluster.server()])
            .arg("--certificate-authority")
            .arg(cluster.ca_path())
            .args(["--token", token.trim()])
            .args(args);
        command
    };

    // The token authenticates: the refusal below is RBAC's, not a failed login.
    let review = kubectl::run_json(&mut as_nobody(&["auth", "whoami", "--output=json"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:serviceaccount:default:nobody"
    );

    match kubectl::run(&mut as_nobody(&["get", "secrets", "--namespace=default"])) {
        Err(KubectlError::Failed { stderr, .. }) => assert!(
            stderr.contains("Forbidden")
                && stderr.contains("system:serviceaccount:default:nobody")
                && stderr.contains("cannot list resource \"secrets\""),
            "{}: unexpected refusal: {stderr}",
            cluster.context()
        ),
        other => panic!(
            "{}: an unprivileged ServiceAccount listed secrets: {other:?}",
            cluster.context()
        ),
    }
    // The administrator may.
    cluster
        .kubectl_stdout(&["get", "secrets", "--namespace=default"])
        .unwrap_or_else(|e| panic!("{e}"));
}

fn ready_addresses(slice: &Value) -> BTreeSet<Ipv4Addr> {
    slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["conditions"]["ready"] == true)
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().and_then(|a| a.parse().ok()))
        .collect()
}

fn summarize_pods(pods: &[Value]) -> String {
    let states: Vec<String> = pods
        .iter()
        .map(|p| {
            format!(
                "{} {} node={} ip={}",
                p["metadata"]["name"],
                p["status"]["phase"],
                p["spec"]["nodeName"],
                p["status"]["podIP"]
            )
        })
        .collect();
    format!("{} pods: {states:?}", pods.len())
}

/// Whether `ip` is in `cidr` (`a.b.c.d/len`).
fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (network, len) = cidr.split_once('/').expect("a CIDR has a /");
    let network: Ipv4Addr = network.parse().expect("an IPv4 network");
    let len: u32 = len.parse().expect("a prefix length");
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}
