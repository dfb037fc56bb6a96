//! The demo's application and the kubelet it stands in for.
//!
//! Each endpoint of `rebel-base` is a real HTTP server (axum) on its own loopback
//! address, answering `GET /` with its cluster's name and `GET /healthz` with `ok`.
//! There is no kubelet in standalone mode, so the demo plays it: it probes every
//! endpoint's `/healthz` and writes the cluster's EndpointSlice into `in/` with each
//! endpoint's `ready` condition, as the EndpointSlice controller would from the
//! kubelet's readiness probes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime::http::client;

/// How often the stand-in kubelet probes each endpoint (a readiness probe's
/// `periodSeconds`, shortened for the demo).
pub const PROBE_PERIOD: Duration = Duration::from_millis(200);
/// A probe that takes longer fails (`timeoutSeconds`).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// Failed probes in a row before an endpoint is marked not ready (`failureThreshold`);
/// one passing probe marks it ready again (`successThreshold: 1`).
pub const PROBE_FAILURES_MAX: u32 = 2;

/// One endpoint's HTTP server.
pub struct Server {
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` and answers with `cluster`'s name.
    pub async fn start(addr: SocketAddr, cluster: &'static str) -> anyhow::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("rebel-base endpoint {addr}"))?;
        let router = Router::new()
            .route("/", get(move || async move { format!("{cluster}\n") }))
            .route("/healthz", get(|| async { "ok\n" }));
        let task = tokio::spawn(async move {
            // A server that fails ends its endpoint; the kubelet sees it as dead.
            let _ = axum::serve(listener, router).await;
        });
        Ok(Server { task: Some(task) })
    }

    /// Kills the server: its socket closes, connections are refused.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the stand-in kubelet last wrote: each endpoint's readiness, and when the
/// latest change was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: Vec<bool>,
    pub written: Instant,
}

/// The stand-in kubelet of one cluster: probes `endpoints` and keeps
/// `<in_dir>/endpoints.yaml` up to date. Dropping it stops it.
pub struct Kubelet {
    pub readiness: watch::Receiver<Readiness>,
    task: JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    /// Writes the slice with every endpoint ready (the pods start ready), then probes.
    pub fn start(
        in_dir: PathBuf,
        service: &'static str,
        endpoints: Vec<SocketAddr>,
    ) -> anyhow::Result<Kubelet> {
        let ready = vec![true; endpoints.len()];
        write_slice(&in_dir, service, &endpoints, &ready)?;
        let (tx, rx) = watch::channel(Readiness {
            ready: ready.clone(),
            written: Instant::now(),
        });
        let task = tokio::spawn(probe_loop(in_dir, service, endpoints, ready, tx));
        Ok(Kubelet {
            readiness: rx,
            task,
        })
    }
}

async fn probe_loop(
    in_dir: PathBuf,
    service: &'static str,
    endpoints: Vec<SocketAddr>,
    mut ready: Vec<bool>,
    tx: watch::Sender<Readiness>,
) {
    let mut failures = vec![0u32; endpoints.len()];
    let mut ticks = tokio::time::interval(PROBE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut changed = false;
        for (i, endpoint) in endpoints.iter().enumerate() {
            let passed = probe(*endpoint).await;
            failures[i] = if passed { 0 } else { failures[i] + 1 };
            let now_ready = failures[i] < PROBE_FAILURES_MAX && (passed || ready[i]);
            if now_ready != ready[i] {
                ready[i] = now_ready;
                changed = true;
            }
        }
        if changed {
            if let Err(error) = write_slice(&in_dir, service, &endpoints, &ready) {
                tracing::warn!(%error, "the demo's kubelet could not write the EndpointSlice");
                continue;
            }
            tx.send_replace(Readiness {
                ready: ready.clone(),
                written: Instant::now(),
            });
        }
    }
}

async fn probe(endpoint: SocketAddr) -> bool {
    let exchange = client::get(endpoint, "/healthz");
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, exchange).await,
        Ok(Ok(response)) if response.is_success()
    )
}

/// Writes the EndpointSlice atomically (a temporary file renamed over the old one),
/// so the standalone backend never reads half of it.
fn write_slice(
    in_dir: &std::path::Path,
    service: &str,
    endpoints: &[SocketAddr],
    ready: &[bool],
) -> anyhow::Result<()> {
    let port = endpoints.first().map_or(0, SocketAddr::port);
    let mut yaml = format!(
        "# Written by the demo's stand-in kubelet from its readiness probes.\n\
         apiVersion: discovery.k8s.io/v1\n\
         kind: EndpointSlice\n\
         metadata:\n  name: {service}-pods\n  namespace: default\n  labels:\n    \
         kubernetes.io/service-name: {service}\n\
         addressType: IPv4\n\
         ports:\n- name: http\n  port: {port}\n  protocol: TCP\n\
         endpoints:\n"
    );
    for (endpoint, ready) in endpoints.iter().zip(ready) {
        let IpAddr::V4(ip) = endpoint.ip() else {
            anyhow::bail!("the demo's endpoints are IPv4");
        };
        yaml.push_str(&format!(
            "- addresses: [\"{ip}\"]\n  conditions: {{ready: {ready}, serving: {ready}, terminating: false}}\n"
        ));
    }
    let path = in_dir.join("endpoints.yaml");
    let temporary = in_dir.join(".endpoints.yaml.tmp");
    std::fs::write(&temporary, yaml)?;
    std::fs::rename(&temporary, &path)?;
    Ok(())
}
