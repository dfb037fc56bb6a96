//! The processes of one run: spawned with their output in a log file, checked while
//! starting, and stopped (SIGTERM, then SIGKILL after a grace period) when dropped.
//!
//! Children stay in the caller's process group: a terminal's Ctrl-C, or nextest
//! killing a timed-out test's process group, reaches them too, so even a harness that
//! is killed outright leaves no orphans behind in those cases. None of the components
//! forks children of its own.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use super::StartError;
use super::wait::{self, POLL_INTERVAL};

/// How long stopped processes get to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// Most bytes read from the end of a log for its tail.
const LOG_TAIL_BYTES_MAX: u64 = 64 * 1024;

/// One running component.
#[derive(Debug)]
pub(crate) struct Process {
    /// `etcd`, or `c0/kube-apiserver`.
    pub(crate) name: String,
    pub(crate) log: PathBuf,
    child: Child,
}

impl Process {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// What to start: a binary, its arguments and environment, and its log file.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    pub(crate) name: String,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, PathBuf)>,
    pub(crate) log: PathBuf,
}

/// The processes of a run, in start order. Dropping stops them all.
#[derive(Debug, Default)]
pub(crate) struct Processes {
    running: Vec<Process>,
}

impl Processes {
    /// Starts `spawn` with stdin closed and stdout and stderr appended to its log.
    pub(crate) fn spawn(&mut self, spawn: Spawn) -> Result<(), StartError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&spawn.log)
            .map_err(|source| StartError::Io {
                what: "opening log",
                path: spawn.log.clone(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| StartError::Io {
            what: "duplicating log handle",
            path: spawn.log.clone(),
            source,
        })?;
        let child = Command::new(&spawn.binary)
            .args(&spawn.args)
            .envs(spawn.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| StartError::Spawn {
                component: spawn.name.clone(),
                binary: spawn.binary.clone(),
                source,
            })?;
        tracing::debug!(component = %spawn.name, pid = child.id(), "started");
        self.running.push(Process {
            name: spawn.name,
            log: spawn.log,
            child,
        });
        Ok(())
    }

    /// The running processes, in start order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Process> {
        self.running.iter()
    }

    /// Fails with [`StartError::Exited`] if any process has exited.
    pub(crate) fn check_running(&mut self) -> Result<(), StartError> {
        for process in &mut self.running {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(StartError::Exited {
                    component: process.name.clone(),
                    status,
                    log: process.log.clone(),
                    tail: log_tail(&process.log, 40),
                });
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every process's log, each under a header.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        self.running
            .iter()
            .map(|p| {
                format!(
                    "--- {} ({})\n{}\n",
                    p.name,
                    p.log.display(),
                    log_tail(&p.log, lines)
                )
            })
            .collect()
    }

    /// Stops every process: the clients first, etcd last, so that no API server loses
    /// its store while it still serves.
    pub(crate) fn stop_all(&mut self) {
        self.stop_where(|name| name != "etcd");
        self.stop_where(|_| true);
    }

    /// Stops every process whose name `select` accepts: SIGTERM to all of them, up to
    /// [`STOP_GRACE`] for them to exit, then SIGKILL; reaps each one.
    pub(crate) fn stop_where(&mut self, select: impl Fn(&str) -> bool) {
        let (stopping, keep): (Vec<Process>, Vec<Process>) =
            self.running.drain(..).partition(|p| select(&p.name));
        self.running = keep;
        let mut stopping = stopping;
        for process in stopping.iter().rev() {
            // An already exited (unreaped) child still owns its pid: the signal is harmless.
            let _ = kill_process(Pid::from_child(&process.child), Signal::TERM);
        }
        let deadline = wait::now() + STOP_GRACE;
        while wait::now() < deadline {
            let all_exited = stopping
                .iter_mut()
                .all(|p| !matches!(p.child.try_wait(), Ok(None)));
            if all_exited {
                break;
            }
            std::thread::sleep(POLL_INTERVAL / 4);
        }
        for mut process in stopping {
            if let Ok(None) = process.child.try_wait() {
                tracing::warn!(component = %process.name, "did not exit after SIGTERM; killing");
                let _ = process.child.kill();
            }
            let status: Option<ExitStatus> = process.child.wait().ok();
            tracing::debug!(component = %process.name, ?status, "stopped");
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The last `lines` lines of the file at `path` (read from at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL_BYTES_MAX);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return format!("(unreadable log at {})", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}
