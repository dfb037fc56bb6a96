//! Multi-cluster tests with real `shoal` processes and real Kubernetes control planes.
//!
//! - [`k8s`]: real Kubernetes control planes on loopback (one etcd, and per cluster a
//!   kube-apiserver, kube-controller-manager, kube-scheduler and kwok), also started
//!   for people by the `shoal-clusters` binary.
//! - [`mesh`]: Shoal running on them with the Kubernetes backend, as deployed:
//!   `deploy/crds/`, `deploy/rbac.yaml`, and the ServiceAccount's token.

pub mod k8s;
pub mod mesh;
