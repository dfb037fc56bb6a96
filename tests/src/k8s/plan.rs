//! What one test cluster is: its names, address ranges, ports, files and the exact
//! command lines of its components. Pure: computing a plan starts and writes nothing.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The kwok annotation that marks a Node as one of kwok's fake nodes.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// The value of [`KWOK_NODE_ANNOTATION`] on the harness's nodes.
pub const KWOK_NODE_ANNOTATION_VALUE: &str = "fake";
/// The InternalIP kwok gives every fake node (and so every pod's hostIP): loopback, so
/// that even an API server proxying to a "kubelet" only ever dials 127.0.0.0/8.
pub const NODE_IP: &str = "127.0.0.1";
/// The node lease kwok keeps for each fake node, in seconds (kwokctl's default).
const NODE_LEASE_SECONDS: u32 = 40;
/// How long the node lifecycle controller waits on a kwok node's lease before it
/// marks the node NotReady, and with it every pod on it: longer than any API server
/// outage a test makes. After one, kwok's client backs off and may renew the leases
/// tens of seconds late; the controller then marked every node of the cluster NotReady
/// (its pods' endpoints with it), kwok never set the pods Ready again, and a test
/// waiting for those endpoints in DNS timed out (k8s_three_clusters, in a loaded CI run).
const NODE_MONITOR_GRACE_SECONDS: u32 = 300;

/// The controllers kube-controller-manager runs: what Deployments, Services and
/// ServiceAccounts need, RBAC's aggregated roles, and node lifecycle (which lifts the
/// `node.kubernetes.io/not-ready` taint every new Node is created with once kwok marks
/// it Ready, and marks a node NotReady when kwok stops renewing its lease for
/// [`NODE_MONITOR_GRACE_SECONDS`]). No IPAM:
/// the fake nodes get their pod CIDRs from the harness. No eviction either.
pub const CONTROLLERS: &[&str] = &[
    "node-lifecycle-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "persistentvolume-binder-controller",
    "disruption-controller",
    "endpointslice-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    "service-cidr-controller",
];

/// The loopback ports of one cluster's components.
/// The audit policy file in a cluster's directory.
pub(crate) const AUDIT_POLICY_FILE: &str = "audit-policy.yaml";
/// The user whose requests are audited: Shoal's ServiceAccount of deploy/rbac.yaml.
pub const AUDITED_USER: &str = "system:serviceaccount:shoal-system:shoal";
/// Audit Shoal's ServiceAccount at Metadata level once each request completes, and
/// nothing else.
pub(crate) fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n    users: [\"{AUDITED_USER}\"]\n  - level: None\n"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterPorts {
    pub apiserver: u16,
    pub controller_manager: u16,
    pub scheduler: u16,
}

/// One cluster of a run.
#[derive(Debug, Clone)]
pub(crate) struct ClusterPlan {
    pub(crate) index: usize,
    /// `c{index}`: the kubeconfig context, and the cluster's directory name.
    pub(crate) context: String,
    pub(crate) dir: PathBuf,
    pub(crate) etcd_url: String,
    pub(crate) ports: ClusterPorts,
    pub(crate) node_names: Vec<String>,
}

impl ClusterPlan {
    pub(crate) fn new(
        index: usize,
        run_dir: &Path,
        etcd_url: &str,
        ports: ClusterPorts,
        nodes: usize,
    ) -> Self {
        let context = format!("c{index}");
        let node_names = (0..nodes).map(|n| format!("{context}-node-{n}")).collect();
        ClusterPlan {
            index,
            dir: run_dir.join(&context),
            context,
            etcd_url: etcd_url.to_owned(),
            ports,
            node_names,
        }
    }

    /// The API server's URL.
    pub(crate) fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The cluster's key prefix in the shared etcd.
    pub(crate) fn etcd_prefix(&self) -> String {
        format!("/{}", self.context)
    }

    /// Service ClusterIPs: `10.(96+i).0.0/16`. Only allocated, never dialed.
    pub(crate) fn service_cidr(&self) -> String {
        format!("10.{}.0.0/16", 96 + self.index)
    }

    /// Pod IPs: `10.(200+i).0.0/16`, node `n` holding `10.(200+i).n.0/24`. Fake
    /// addresses kwok hands out; nothing listens on them.
    pub(crate) fn pod_cidr(&self) -> String {
        format!("10.{}.0.0/16", 200 + self.index)
    }

    fn node_pod_cidr(&self, node: usize) -> String {
        format!("10.{}.{node}.0/24", 200 + self.index)
    }

    /// The service-account token issuer: per cluster, and never resolvable.
    pub(crate) fn service_account_issuer(&self) -> String {
        format!("https://{}.clusters.shoal.invalid", self.context)
    }

    pub(crate) fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    pub(crate) fn pki(&self, file: &str) -> PathBuf {
        self.pki_dir().join(file)
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The kubeconfig a component reaches its API server with.
    pub(crate) fn kubeconfig_of(&self, component: &str) -> PathBuf {
        self.path(&format!("{component}.kubeconfig"))
    }

    pub(crate) fn log_of(&self, component: &str) -> PathBuf {
        self.path(&format!("{component}.log"))
    }

    pub(crate) fn apiserver_args(&self) -> Vec<String> {
        let pki = |f: &str| self.pki(f).display().to_string();
        vec![
            format!("--etcd-servers={}", self.etcd_url),
            format!("--etcd-prefix={}", self.etcd_prefix()),
            "--advertise-address=127.0.0.1".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.ports.apiserver),
            format!("--cert-dir={}", pki("")),
            format!("--tls-cert-file={}", pki("apiserver.crt")),
            format!("--tls-private-key-file={}", pki("apiserver.key")),
            format!("--client-ca-file={}", pki("ca.crt")),
            format!("--service-cluster-ip-range={}", self.service_cidr()),
            format!("--service-account-issuer={}", self.service_account_issuer()),
            format!("--service-account-key-file={}", pki("service-account.pub")),
            format!(
                "--service-account-signing-key-file={}",
                pki("service-account.key")
            ),
            "--authorization-mode=Node,RBAC".into(),
            // The `kubernetes` Service's endpoints would be the advertise address, and
            // Endpoints may not hold loopback addresses: publish none.
            "--endpoint-reconciler-type=none".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            // Every request of Shoal's ServiceAccount, at Metadata level (verb, object,
            // response code), so tests and benchmarks count what Shoal asks for.
            format!(
                "--audit-policy-file={}",
                self.path(AUDIT_POLICY_FILE).display()
            ),
            format!("--audit-log-path={}", self.audit_log().display()),
            "--audit-log-format=json".into(),
            "--audit-log-mode=blocking".into(),
        ]
    }

    /// The audit log of Shoal's requests to this cluster's API server.
    pub(crate) fn audit_log(&self) -> PathBuf {
        self.path("audit.log")
    }

    pub(crate) fn controller_manager_args(&self) -> Vec<String> {
        vec![
            format!(
                "--kubeconfig={}",
                self.kubeconfig_of("kube-controller-manager").display()
            ),
            format!("--controllers={}", CONTROLLERS.join(",")),
            format!(
                "--service-account-private-key-file={}",
                self.pki("service-account.key").display()
            ),
            format!("--root-ca-file={}", self.pki("ca.crt").display()),
            "--use-service-account-credentials=true".into(),
            "--leader-elect=false".into(),
            format!("--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.ports.controller_manager),
            "--profiling=false".into(),
        ]
    }

    pub(crate) fn scheduler_args(&self) -> Vec<String> {
        vec![
            format!(
                "--kubeconfig={}",
                self.kubeconfig_of("kube-scheduler").display()
            ),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.ports.scheduler),
        ]
    }

    /// kwok serves no kubelet API (no `--node-port`, no `--server-address`): it only
    /// writes node and pod status.
    pub(crate) fn kwok_args(&self) -> Vec<String> {
        vec![
            format!("--kubeconfig={}", self.kubeconfig_of("kwok").display()),
            format!("--config={}", self.path("kwok-stages.yaml").display()),
            "--manage-all-nodes=false".into(),
            format!(
                "--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}"
            ),
            format!("--node-ip={NODE_IP}"),
            // Only for a node without spec.podCIDR; ours all have one.
            format!("--cidr=10.{}.255.0/24", 200 + self.index),
            format!("--node-lease-duration-seconds={NODE_LEASE_SECONDS}"),
        ]
    }

    /// The fake nodes, as a `v1` List for `kubectl apply -f`.
    pub(crate) fn nodes_manifest(&self) -> Value {
        let items: Vec<Value> = self
            .node_names
            .iter()
            .enumerate()
            .map(|(n, name)| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                            "node.alpha.kubernetes.io/ttl": "0",
                        },
                        "labels": {
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                    },
                    "spec": {
                        "podCIDR": self.node_pod_cidr(n),
                        "podCIDRs": [self.node_pod_cidr(n)],
                    },
                })
            })
            .collect();
        json!({ "apiVersion": "v1", "kind": "List", "items": items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(index: usize) -> ClusterPlan {
        let ports = ClusterPorts {
            apiserver: 6443,
            controller_manager: 10257,
            scheduler: 10259,
        };
        ClusterPlan::new(index, Path::new("/run"), "http://127.0.0.1:2379", ports, 2)
    }

    #[test]
    fn clusters_get_distinct_prefixes_and_ranges() {
        let (a, b) = (plan(0), plan(1));
        assert_eq!(a.etcd_prefix(), "/c0");
        assert_eq!(b.etcd_prefix(), "/c1");
        assert_eq!(a.service_cidr(), "10.96.0.0/16");
        assert_eq!(b.service_cidr(), "10.97.0.0/16");
        assert_eq!(a.pod_cidr(), "10.200.0.0/16");
        assert_eq!(b.pod_cidr(), "10.201.0.0/16");
        assert_eq!(b.node_names, ["c1-node-0", "c1-node-1"]);
        assert_eq!(b.dir, Path::new("/run/c1"));
    }

    #[test]
    fn apiserver_binds_loopback_with_rbac_and_its_own_prefix() {
        let args = plan(1).apiserver_args();
        for expected in [
            "--etcd-servers=http://127.0.0.1:2379",
            "--etcd-prefix=/c1",
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            "--secure-port=6443",
            "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.97.0.0/16",
            "--client-ca-file=/run/c1/pki/ca.crt",
            "--service-account-issuer=https://c1.clusters.shoal.invalid",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
    }

    #[test]
    fn every_component_binds_loopback() {
        let plan = plan(0);
        for args in [plan.controller_manager_args(), plan.scheduler_args()] {
            assert!(
                args.iter().any(|a| a == "--bind-address=127.0.0.1"),
                "{args:?}"
            );
        }
        let kwok = plan.kwok_args();
        assert!(
            !kwok.iter().any(|a| a.starts_with("--node-port")),
            "{kwok:?}"
        );
        assert!(
            !kwok.iter().any(|a| a.starts_with("--server-address")),
            "{kwok:?}"
        );
    }

    #[test]
    fn nodes_are_annotated_for_kwok_with_their_own_pod_cidr() {
        let manifest = plan(2).nodes_manifest();
        let items = manifest["items"].as_array().expect("a List");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1]["metadata"]["name"], "c2-node-1");
        assert_eq!(
            items[1]["metadata"]["annotations"][KWOK_NODE_ANNOTATION],
            "fake"
        );
        assert_eq!(items[1]["spec"]["podCIDR"], "10.202.1.0/24");
    }
}
