//! Finding the control plane binaries `tests/k8s/build.sh` builds, and kubectl.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::StartError;

/// Overrides where the control plane binaries are: a directory holding all of them.
pub const BIN_DIR_ENV: &str = "SHOAL_K8S_BIN";
/// Overrides which kubectl runs (default: `kubectl` on `PATH`).
pub const KUBECTL_ENV: &str = "KUBECTL";

/// The binaries one run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    Kwok,
}

impl Binary {
    /// Every binary a run needs.
    pub const ALL: [Binary; 5] = [
        Binary::Etcd,
        Binary::KubeApiserver,
        Binary::KubeControllerManager,
        Binary::KubeScheduler,
        Binary::Kwok,
    ];

    /// The file name of the binary, which is also the component's name in logs.
    pub fn file_name(self) -> &'static str {
        match self {
            Binary::Etcd => "etcd",
            Binary::KubeApiserver => "kube-apiserver",
            Binary::KubeControllerManager => "kube-controller-manager",
            Binary::KubeScheduler => "kube-scheduler",
            Binary::Kwok => "kwok",
        }
    }
}

/// A directory holding every [`Binary`].
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Uses `$SHOAL_K8S_BIN` if set, else asks `tests/k8s/build.sh --bin-dir`; when
    /// the cache lacks a binary, runs `tests/k8s/build.sh` to build it (about ten
    /// minutes on two cores the first time; one build at a time, under a lock), so
    /// that the tests work on a fresh machine.
    pub fn locate() -> Result<Self, StartError> {
        let dir = match std::env::var_os(BIN_DIR_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => bin_dir_from_build_script()?,
        };
        let binaries = Binaries { dir };
        for binary in Binary::ALL {
            let path = binaries.path(binary);
            if !path.is_file() {
                return Err(StartError::Binaries(format!(
                    "{} is missing: run tests/k8s/build.sh to build the control planes{}",
                    path.display(),
                    if std::env::var_os(BIN_DIR_ENV).is_some() {
                        format!(", or point {BIN_DIR_ENV} at a directory holding them")
                    } else {
                        String::new()
                    }
                )));
            }
        }
        Ok(binaries)
    }

    /// The directory holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `binary` is.
    pub fn path(&self, binary: Binary) -> PathBuf {
        self.dir.join(binary.file_name())
    }
}

/// The build script of the control planes, beside this crate's sources.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/build.sh")
}

/// The kubectl program: `$KUBECTL`, else `kubectl` found on `PATH`.
pub fn kubectl_program() -> OsString {
    std::env::var_os(KUBECTL_ENV).unwrap_or_else(|| OsString::from("kubectl"))
}

fn bin_dir_from_build_script() -> Result<PathBuf, StartError> {
    let script = build_script();
    let not_built = |detail: String| {
        StartError::Binaries(format!(
            "the Kubernetes control planes are not built: run {} (about 20 minutes the \
             first time; it caches into ~/.cache/shoal/k8s), or set {BIN_DIR_ENV} to a \
             directory holding etcd, kube-apiserver, kube-controller-manager, \
             kube-scheduler and kwok ({detail})",
            script.display()
        ))
    };
    let cached = Command::new("bash")
        .arg(&script)
        .arg("--bin-dir")
        .output()
        .map_err(|e| not_built(format!("running it failed: {e}")))?;
    let output = if cached.status.success() {
        cached
    } else {
        eprintln!(
            "building the Kubernetes control planes with {}",
            script.display()
        );
        let built = Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| not_built(format!("running it failed: {e}")))?;
        if !built.status.success() {
            return Err(not_built(format!("it exited with {}", built.status)));
        }
        built
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    if dir.is_empty() {
        return Err(not_built("--bin-dir printed nothing".to_owned()));
    }
    Ok(PathBuf::from(dir))
}
