//! Real Kubernetes control planes on loopback, for tests and for people.
//!
//! One run is one etcd shared by N clusters, each under its own key prefix. Cluster `i`
//! (kubeconfig context `c{i}`) is a kube-apiserver with RBAC, its own CA, serving
//! certificate, service-account key, Service range `10.(96+i).0.0/16` and pod range
//! `10.(200+i).0.0/16`; a kube-controller-manager; a kube-scheduler; and kwok, which
//! turns the harness's fake Nodes Ready and the pods scheduled onto them Running with
//! an IP. Nothing runs the pods, and every process listens on and dials only
//! 127.0.0.0/8.
//!
//! - [`control_planes`]: [`ControlPlanes`]: start, wait until ready, read, stop.
//! - `cluster`: [`Cluster`], one running cluster and how to reach it.
//! - [`plan`]: what a cluster is, as data: ranges, ports, files, command lines.
//! - [`binaries`]: finding the binaries `tests/k8s/build.sh` builds, and kubectl.
//! - `run_dir`: the run directory's layout, written before anything starts.
//! - `pki`, `kubeconfig`, `etcd`, `process`: certificates, kubeconfig files, the
//!   shared etcd, and the child processes with their logs.
//! - [`coredns`]: [`CoreDns`], unmodified CoreDNS for one cluster, configured and
//!   authorised as `deploy/coredns/` ships it.
//! - [`kubectl`] and [`wait`]: running kubectl, and waiting on a condition with a
//!   deadline, for tests too.
//!
//! ```no_run
//! use shoal_tests::k8s::{ControlPlanes, ControlPlanesConfig};
//!
//! let planes = ControlPlanes::start(&ControlPlanesConfig::new(2)).expect("control planes");
//! let nodes = planes.clusters()[1].kubectl_stdout(&["get", "nodes"]).expect("kubectl");
//! println!("{nodes}");
//! ```

pub mod binaries;
mod cluster;
pub mod control_planes;
pub mod coredns;
mod error;
mod etcd;
mod kubeconfig;
pub mod kubectl;
mod pki;
pub mod plan;
mod process;
mod run_dir;
pub mod wait;

pub use binaries::{BIN_DIR_ENV, Binaries, KUBECTL_ENV};
pub use cluster::Cluster;
pub use control_planes::{
    CLUSTERS_MAX, ControlPlanes, ControlPlanesConfig, NODES_PER_CLUSTER_MAX,
    STARTUP_TIMEOUT_DEFAULT,
};
pub use coredns::{CoreDns, CoreDnsError};
pub use error::{KubectlError, StartError};
pub use process::log_tail;
pub use wait::{Timeout, wait_for};
