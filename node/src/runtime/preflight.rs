//! What `shoal run` checks before it binds a socket, and `shoal config check` checks
//! the same way: the config file, this cluster's certificate, key and CA, the ClusterSet
//! directory, that the certificate names the configured cluster, and that the paths the
//! node will use (the store's, the standalone backend's, a kubeconfig) are usable.
//! Nothing is created or written, and the Kubernetes API server is not contacted.
//!
//! **Architecture invariant:** `shoal config check FILE` succeeds exactly when
//! `shoal run --config FILE` gets past its pre-bind checks, with the same message when
//! it does not, because both call [`prepare`].

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_proto::ClusterId;

use crate::runtime::certs::{CertError, ClusterIdentity};
use crate::runtime::config::{self, BackendConfig, ConfigFileError, RuntimeConfig};

/// The store lives in this directory under `data_dir`.
pub const STORE_DIR: &str = "store";
/// The standalone backend's input and output directories under `backend.dir`.
pub const STANDALONE_DIRS: [&str; 2] = ["in", "out"];

/// Why a node would not start. Nothing was created, bound or written. Each message
/// starts with the config file's path.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The file is not a usable config (its message names the key).
    #[error("{}: {error}", file.display())]
    Config {
        file: PathBuf,
        error: ConfigFileError,
    },
    /// This cluster's certificate, key or CA is unusable, or the ClusterSet directory
    /// cannot be read or certifies a cluster twice.
    #[error("{}: {error}", file.display())]
    Identity { file: PathBuf, error: CertError },
    /// `tls.cert` names another cluster than `cluster =`.
    #[error(
        "{}: tls.cert names cluster {named}, but the config says cluster = {configured}",
        file.display()
    )]
    ClusterMismatch {
        file: PathBuf,
        named: ClusterId,
        configured: ClusterId,
    },
    /// A path the node needs is of the wrong kind, cannot be read, or cannot be created.
    #[error("{}: `{field}` {}: {reason}", file.display(), path.display())]
    Path {
        file: PathBuf,
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl PreflightError {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PreflightError::Config { .. } => "config",
            PreflightError::Identity { .. } => "identity",
            PreflightError::ClusterMismatch { .. } => "cluster_mismatch",
            PreflightError::Path { .. } => "path",
        }
    }
}

/// A config and identity that passed every pre-bind check.
#[derive(Debug)]
pub struct Prepared {
    pub config: RuntimeConfig,
    pub identity: Arc<ClusterIdentity>,
}

impl Prepared {
    /// What was tolerated and should be fixed: the ClusterSet directory's skipped
    /// certificates, and the members whose certificate expired.
    pub fn warnings(&self) -> Vec<String> {
        let skipped = self
            .identity
            .skipped
            .iter()
            .map(|skipped| format!("clusterset certificate skipped: {}", skipped.error));
        let expired = self.identity.expired_peers.iter().map(|cluster| {
            format!("cluster {cluster} is not trusted until its certificate is renewed")
        });
        skipped.chain(expired).collect()
    }
}

/// Loads `file` (with `env`'s `SHOAL_*` overrides) and runs every check `shoal run`
/// makes before it binds. `configured` is called once the config is valid, before the
/// certificates are read: `shoal run` starts logging there, so that the warnings about
/// skipped certificates are logged.
pub fn prepare(
    file: &Path,
    env: impl Iterator<Item = (String, String)>,
    configured: impl FnOnce(&RuntimeConfig),
) -> Result<Prepared, PreflightError> {
    let config = config::load(file, env).map_err(|error| PreflightError::Config {
        file: file.to_owned(),
        error,
    })?;
    configured(&config);
    let tls = &config.tls;
    let identity = ClusterIdentity::load(&tls.ca, &tls.cert, &tls.key, &tls.clusterset_dir)
        .map_err(|error| PreflightError::Identity {
            file: file.to_owned(),
            error,
        })?;
    if identity.cluster != config.cluster {
        return Err(PreflightError::ClusterMismatch {
            file: file.to_owned(),
            named: identity.cluster,
            configured: config.cluster,
        });
    }
    check_paths(&config).map_err(|(field, path, reason)| PreflightError::Path {
        file: file.to_owned(),
        field,
        path,
        reason,
    })?;
    Ok(Prepared {
        config,
        identity: Arc::new(identity),
    })
}

/// A refused path: its config key, the path, and why.
type PathRefusal = (&'static str, PathBuf, String);

fn check_paths(config: &RuntimeConfig) -> Result<(), PathRefusal> {
    check("data_dir", &config.data_dir, usable_dir)?;
    check("data_dir", &config.data_dir.join(STORE_DIR), usable_dir)?;
    match &config.backend {
        BackendConfig::Standalone { dir, .. } => {
            check("backend.dir", dir, usable_dir)?;
            for sub in STANDALONE_DIRS {
                check("backend.dir", &dir.join(sub), usable_dir)?;
            }
        }
        BackendConfig::Kubernetes {
            kubeconfig: Some(path),
            ..
        } => check("backend.kubeconfig", path, readable_file)?,
        BackendConfig::Kubernetes {
            kubeconfig: None, ..
        } => {}
    }
    Ok(())
}

fn check(
    field: &'static str,
    path: &Path,
    usable: fn(&Path) -> Result<(), String>,
) -> Result<(), PathRefusal> {
    usable(path).map_err(|reason| (field, path.to_owned(), reason))
}

/// A directory that can be listed, or that does not exist yet and can be created:
/// its nearest existing ancestor is a directory.
fn usable_dir(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => fs::read_dir(path)
            .map(drop)
            .map_err(|e| format!("cannot be listed: {e}")),
        Ok(_) => Err("exists and is not a directory".into()),
        // Not found, or an ancestor is a file: whether it could be created says which.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            creatable(path)
        }
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}

fn creatable(path: &Path) -> Result<(), String> {
    for ancestor in path.ancestors().skip(1) {
        let ancestor = if ancestor.as_os_str().is_empty() {
            Path::new(".")
        } else {
            ancestor
        };
        match fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(format!(
                    "cannot be created: {} is not a directory",
                    ancestor.display()
                ));
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
            Err(e) => return Err(format!("cannot be created: {}: {e}", ancestor.display())),
        }
    }
    Ok(())
}

fn readable_file(path: &Path) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err("is not a file".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_must_be_directories_or_creatable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(usable_dir(dir.path()).is_ok());
        assert!(usable_dir(&dir.path().join("new/deeper")).is_ok());
        assert_eq!(
            usable_dir(&file).unwrap_err(),
            "exists and is not a directory"
        );
        let under_file = usable_dir(&file.join("store")).unwrap_err();
        assert!(under_file.contains("is not a directory"), "{under_file}");
        assert!(readable_file(&file).is_ok());
        assert_eq!(readable_file(dir.path()).unwrap_err(), "is not a file");
        assert!(readable_file(&dir.path().join("missing")).is_err());
    }
}
