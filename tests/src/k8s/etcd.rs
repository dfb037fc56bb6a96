//! The one etcd every cluster of a run shares, each under its own key prefix.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most bytes read of a `/health` response.
const HEALTH_RESPONSE_BYTES_MAX: u64 = 16 * 1024;
/// How long one `/health` request may take.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const MEMBER_NAME: &str = "shoal-test";

/// Where etcd listens and keeps its data.
#[derive(Debug, Clone)]
pub(crate) struct EtcdPlan {
    pub(crate) client_port: u16,
    pub(crate) peer_port: u16,
    pub(crate) dir: PathBuf,
}

impl EtcdPlan {
    pub(crate) fn new(run_dir: &Path, client_port: u16, peer_port: u16) -> Self {
        EtcdPlan {
            client_port,
            peer_port,
            dir: run_dir.join("etcd"),
        }
    }

    /// The URL the API servers reach etcd at.
    pub(crate) fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// A single member on loopback. `--unsafe-no-fsync`: the data is thrown away with
    /// the run, and fsync latency on a busy disk would only slow the tests down.
    pub(crate) fn args(&self) -> Vec<String> {
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        vec![
            format!("--name={MEMBER_NAME}"),
            format!("--data-dir={}", self.data_dir().display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster={MEMBER_NAME}={peer}"),
            "--unsafe-no-fsync=true".into(),
        ]
    }

    /// `Ok` once etcd's `/health` says it is healthy, else what it said (or why it
    /// could not be asked).
    pub(crate) fn probe_health(&self) -> Result<(), String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port));
        let mut stream = TcpStream::connect_timeout(&address, HEALTH_REQUEST_TIMEOUT)
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        stream
            .set_read_timeout(Some(HEALTH_REQUEST_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(HEALTH_REQUEST_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .map_err(|e| format!("asking {address}/health: {e}"))?;
        let mut response = String::new();
        stream
            .take(HEALTH_RESPONSE_BYTES_MAX)
            .read_to_string(&mut response)
            .map_err(|e| format!("reading {address}/health: {e}"))?;
        if response.contains(r#""health":"true""#) {
            Ok(())
        } else {
            Err(response.lines().last().unwrap_or_default().to_owned())
        }
    }
}
