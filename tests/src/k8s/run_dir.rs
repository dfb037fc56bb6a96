//! The run directory: what a run writes before it starts anything, and how a directory
//! is chosen, cleared and reused.
//!
//! ```text
//! kubeconfig                 one context per cluster (c0, c1, ...), admin certificates
//! shoal-control-planes       marks the directory as a run's, to clear on the next run
//! etcd/data, etcd/etcd.log
//! c0/pki/                    ca.crt, apiserver.{crt,key}, admin.{crt,key},
//!                            service-account.{key,pub}
//! c0/<component>.kubeconfig  kube-controller-manager, kube-scheduler, kwok
//! c0/<component>.log         kube-apiserver, kube-controller-manager, kube-scheduler, kwok
//! c0/kwok-stages.yaml, c0/nodes.json, c0/kwok-home/
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::StartError;
use super::cluster::Cluster;
use super::kubeconfig::{self, Context};
use super::pki::{ClusterCa, service_account_key};
use super::plan::ClusterPlan;

/// The kwok Stages every cluster runs (see the file's header).
const KWOK_STAGES: &str = include_str!("../../k8s/kwok/stages.yaml");
/// Names a directory as a run directory this harness may clear and reuse.
const RUN_MARKER: &str = "shoal-control-planes";

/// Makes `plan`'s certificates, keys, kubeconfigs, kwok Stages and node manifest.
pub(crate) fn write_cluster_files(
    plan: ClusterPlan,
    kubeconfig: &Path,
) -> Result<Cluster, StartError> {
    create_dir(&plan.pki_dir())?;
    let server = plan.server();
    let ca = ClusterCa::new(&format!("shoal test cluster {} CA", plan.context))?;
    let ca_pem = ca.cert_pem();
    let serving = ca.issue_server("kube-apiserver", &["127.0.0.1", "localhost"])?;
    let admin = ca.issue_client("shoal-admin", Some("system:masters"))?;
    let (sa_private, sa_public) = service_account_key()?;
    for (file, contents, mode) in [
        ("ca.crt", &ca_pem, 0o644),
        ("apiserver.crt", &serving.cert_pem, 0o644),
        ("apiserver.key", &serving.key_pem, 0o600),
        ("admin.crt", &admin.cert_pem, 0o644),
        ("admin.key", &admin.key_pem, 0o600),
        ("service-account.key", &sa_private, 0o600),
        ("service-account.pub", &sa_public, 0o644),
    ] {
        write_file(&plan.pki(file), contents, mode)?;
    }
    write_file(
        &plan.path(super::plan::AUDIT_POLICY_FILE),
        &super::plan::audit_policy(),
        0o644,
    )?;
    for (component, user, group) in [
        (
            "kube-controller-manager",
            "system:kube-controller-manager",
            None,
        ),
        ("kube-scheduler", "system:kube-scheduler", None),
        ("kwok", "kwok-controller", Some("system:masters")),
    ] {
        let client = ca.issue_client(user, group)?;
        let text = kubeconfig::render(&[Context {
            name: &plan.context,
            server: &server,
            ca_pem: &ca_pem,
            cert_pem: &client.cert_pem,
            key_pem: &client.key_pem,
        }]);
        write_file(&plan.kubeconfig_of(component), &text, 0o600)?;
    }
    write_file(&plan.path("kwok-stages.yaml"), KWOK_STAGES, 0o644)?;
    let nodes = serde_json::to_string_pretty(&plan.nodes_manifest())
        .expect("a JSON value always serializes");
    write_file(&plan.path("nodes.json"), &nodes, 0o644)?;
    Ok(Cluster {
        plan,
        server,
        kubeconfig: kubeconfig.to_owned(),
        ca_pem,
        admin,
    })
}

pub(crate) fn write_admin_kubeconfig(path: &Path, clusters: &[Cluster]) -> Result<(), StartError> {
    let contexts: Vec<Context<'_>> = clusters
        .iter()
        .map(|c| Context {
            name: c.context(),
            server: c.server(),
            ca_pem: c.ca_pem(),
            cert_pem: c.admin_cert_pem(),
            key_pem: c.admin_key_pem(),
        })
        .collect();
    write_file(path, &kubeconfig::render(&contexts), 0o600)
}

/// The run directory: a new temporary one, or `dir` if it is empty, new, or a
/// previous run's (whose files are then removed).
pub(crate) fn prepare_dir(dir: Option<&Path>) -> Result<(PathBuf, Option<TempDir>), StartError> {
    let Some(dir) = dir else {
        let temp = tempfile::Builder::new()
            .prefix("shoal-k8s-")
            .tempdir()
            .map_err(|source| StartError::Io {
                what: "creating a temporary run directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        return Ok((temp.path().to_owned(), Some(temp)));
    };
    create_dir(dir)?;
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| StartError::Io { what, path, source }
    };
    let entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(io("listing", dir))?
        .collect::<Result<_, _>>()
        .map_err(io("listing", dir))?;
    if !entries.is_empty() {
        if !dir.join(RUN_MARKER).is_file() {
            return Err(StartError::DirNotEmpty {
                path: dir.to_owned(),
            });
        }
        for entry in entries {
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io("removing", &path))?;
        }
    }
    write_file(
        &dir.join(RUN_MARKER),
        "Written by shoal-tests' control plane harness: this directory is cleared when a new run starts in it.\n",
        0o644,
    )?;
    let dir = dir.canonicalize().map_err(io("resolving", dir))?;
    Ok((dir, None))
}

pub(crate) fn create_dir(path: &Path) -> Result<(), StartError> {
    fs::create_dir_all(path).map_err(|source| StartError::Io {
        what: "creating",
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), StartError> {
    let io = |source| StartError::Io {
        what: "writing",
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_non_empty_directory_is_refused_and_a_previous_run_is_cleared() {
        let work = tempfile::tempdir().expect("a temporary directory");
        fs::write(work.path().join("notes.txt"), "mine").expect("write");
        assert!(matches!(
            prepare_dir(Some(work.path())),
            Err(StartError::DirNotEmpty { .. })
        ));
        let run = work.path().join("run");
        prepare_dir(Some(&run)).expect("a new directory");
        fs::create_dir(run.join("c0")).expect("mkdir");
        prepare_dir(Some(&run)).expect("a previous run's directory");
        assert!(!run.join("c0").exists());
        assert!(run.join(RUN_MARKER).is_file());
    }
}
