//! Why control planes did not start, and why a kubectl call failed.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Why [`ControlPlanes::start`](super::ControlPlanes::start) failed. Every process it
/// had started is stopped before the error is returned; a run directory given in the
/// config keeps its files (logs included), a temporary one is removed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is out of range. Nothing was started or written.
    #[error("invalid control plane configuration: {0}")]
    Config(String),
    /// The binaries are not built, or `SHOAL_K8S_BIN` names a directory that lacks one.
    /// Nothing was started.
    #[error("{0}")]
    Binaries(String),
    /// The run directory holds files this harness did not write. Nothing was changed.
    #[error(
        "{}: not empty and not a previous control plane run directory; \
         choose an empty or new directory",
        path.display()
    )]
    DirNotEmpty { path: PathBuf },
    /// A file or directory of the run could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// No free loopback port could be reserved.
    #[error("reserving a free port on 127.0.0.1: {0}")]
    Ports(io::Error),
    /// rcgen could not make a key or certificate. Nothing was started.
    #[error("generating {what}: {reason}")]
    Pki { what: &'static str, reason: String },
    /// A process could not be spawned.
    #[error("spawning {component} ({}): {source}", binary.display())]
    Spawn {
        component: String,
        binary: PathBuf,
        source: io::Error,
    },
    /// A process exited while the control planes were starting.
    #[error("{component} exited with {status} while starting; last lines of {}:\n{tail}", log.display())]
    Exited {
        component: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    /// A readiness condition was not met before the startup deadline.
    #[error("timed out after {waited_ms} ms waiting for {what} (last seen: {last})\n{logs}")]
    Timeout {
        what: String,
        waited_ms: u128,
        last: String,
        /// Tails of every process's log.
        logs: String,
    },
    /// kubectl failed at a step that must succeed (creating the fake nodes).
    #[error(transparent)]
    Kubectl(#[from] KubectlError),
}

/// Why a kubectl call failed. Nothing is retried.
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    /// kubectl could not be run at all (not installed, or `KUBECTL` names no program).
    #[error("running kubectl {args}: {source} (install kubectl or set KUBECTL)")]
    Spawn { args: String, source: io::Error },
    /// kubectl ran and exited unsuccessfully.
    #[error("kubectl {args} exited with {status}: {stderr}")]
    Failed {
        args: String,
        status: ExitStatus,
        stderr: String,
    },
    /// kubectl succeeded but its output is not the JSON asked for.
    #[error("kubectl {args} printed output that is not JSON: {reason}")]
    Json { args: String, reason: String },
}
