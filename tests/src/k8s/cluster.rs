//! [`Cluster`]: one running cluster of a run, and how to reach it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::binaries::kubectl_program;
use super::pki::CertifiedKey;
use super::plan::ClusterPlan;
use super::{KubectlError, kubectl};

/// One running cluster: how to reach its API server as an administrator.
pub struct Cluster {
    pub(crate) plan: ClusterPlan,
    pub(crate) server: String,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) ca_pem: String,
    pub(crate) admin: CertifiedKey,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("context", &self.plan.context)
            .field("server", &self.server)
            .field("dir", &self.plan.dir)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster's position in the run, from 0.
    pub fn index(&self) -> usize {
        self.plan.index
    }

    /// Its context (and cluster) name in the run's kubeconfig: `c{index}`.
    pub fn context(&self) -> &str {
        &self.plan.context
    }

    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA that signed the API server's certificate (and every client certificate
    /// it accepts), PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// [`Cluster::ca_pem`] as a file, for `--certificate-authority`.
    pub fn ca_path(&self) -> PathBuf {
        self.plan.pki("ca.crt")
    }

    /// The administrator's client certificate (user `shoal-admin`, group
    /// `system:masters`), PEM.
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin.cert_pem
    }

    /// The administrator's private key, PKCS#8 PEM.
    pub fn admin_key_pem(&self) -> &str {
        &self.admin.key_pem
    }

    /// [`Cluster::admin_cert_pem`] as a file.
    pub fn admin_cert_path(&self) -> PathBuf {
        self.plan.pki("admin.crt")
    }

    /// [`Cluster::admin_key_pem`] as a file.
    pub fn admin_key_path(&self) -> PathBuf {
        self.plan.pki("admin.key")
    }

    /// The audit log of Shoal's ServiceAccount's requests to this cluster (JSON lines,
    /// one event per completed request; see [`super::plan::AUDITED_USER`]).
    pub fn audit_log(&self) -> PathBuf {
        self.plan.audit_log()
    }

    /// The run's kubeconfig, which holds this cluster as context [`Cluster::context`].
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The Service ClusterIP range, `10.(96+index).0.0/16`.
    pub fn service_cidr(&self) -> String {
        self.plan.service_cidr()
    }

    /// The range every pod IP of this cluster is in, `10.(200+index).0.0/16`.
    pub fn pod_cidr(&self) -> String {
        self.plan.pod_cidr()
    }

    /// The cluster's key prefix in the shared etcd, `/c{index}`.
    pub fn etcd_prefix(&self) -> String {
        self.plan.etcd_prefix()
    }

    /// The names of its kwok fake nodes, `c{index}-node-{n}`.
    pub fn node_names(&self) -> &[String] {
        &self.plan.node_names
    }

    /// Its directory: certificates in `pki/`, components' kubeconfigs, and a log per
    /// component (`kube-apiserver.log`, `kube-controller-manager.log`,
    /// `kube-scheduler.log`, `kwok.log`).
    pub fn dir(&self) -> &Path {
        &self.plan.dir
    }

    /// `kubectl --kubeconfig <run>/kubeconfig --context c{index}` with stdin closed, to
    /// add arguments to.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(kubectl_program());
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--context")
            .arg(&self.plan.context)
            .stdin(Stdio::null());
        command
    }

    /// Runs [`Cluster::kubectl`] with `args` and returns its stdout.
    pub fn kubectl_stdout(&self, args: &[&str]) -> Result<String, KubectlError> {
        kubectl::run(self.kubectl().args(args))
    }

    /// Runs [`Cluster::kubectl`] with `args` (which should ask for JSON) and parses it.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value, KubectlError> {
        kubectl::run_json(self.kubectl().args(args))
    }
}
