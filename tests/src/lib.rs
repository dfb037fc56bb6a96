//! Multi-cluster tests with real `shoal` processes and real Kubernetes control planes.
//!
//! - [`k8s`]: real Kubernetes control planes on loopback (one etcd, and per cluster a
//!   kube-apiserver, kube-controller-manager, kube-scheduler and kwok), also started
//!   for people by the `shoal-clusters` binary.
//! - [`mesh`]: Shoal running on them with the Kubernetes backend, as deployed:
//!   `deploy/crds/`, `deploy/rbac.yaml`, and the ServiceAccount's token; or alone, with
//!   the standalone backend.
//! - [`deployed`]: Shoal installed from `deploy/overlays/` on those control planes,
//!   each Pod of its StatefulSet run by a stand-in ([`pods`]).
//! - [`lab`]: the seeds' lab on Kubernetes (three clusters, two replicas each) and
//!   its faults, as steps a test and `shoal-clusters lab` run alike.
//! - [`pods`]: pod stand-ins: a local process started from a Pod the control plane
//!   scheduled, with its volumes, environment and ServiceAccount token, as a kubelet
//!   would.
//! - [`dns`]: a small DNS client (the node's own), to ask the tests' CoreDNS on loopback.
//! - [`load`]: what the load tests share: exports by the thousand, and an observer of
//!   a busy node's liveness as its peer sees it.

pub mod deployed;
pub use shoal_node::runtime::dns::client as dns;
pub mod k8s;
pub mod lab;
pub mod load;
pub mod mesh;
pub mod pods;
