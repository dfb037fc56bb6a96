//! What the load tests share: exports by the thousand as YAML, and an observer that
//! samples, every 50 ms, how a peer sees a busy node and whether the busy node still
//! answers `/readyz`, for tests that must show backend work never starves SWIM.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

use crate::mesh::{Mesh, Node, http_get, sample_value};

/// How often the observer samples.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Exports per file [`write_load`] writes.
const EXPORTS_PER_FILE: usize = 100;
/// The nesting of [`write_load`]'s pathological file.
pub const DEEP_BRACKETS: usize = 100_000;
/// The observer reads the peer's import count every this many samples (once a second).
const IMPORTS_EVERY_SAMPLES: u32 = 20;

/// Service `svc-<index>` of namespace `load` (no selector), its ServiceExport and an
/// EndpointSlice of two endpoints, as YAML documents.
pub fn service_yaml(out: &mut String, index: usize) {
    service_yaml_round(out, index, 0);
}

/// [`service_yaml`] with the first endpoint's address moved by `round`, so that each
/// round changes every export.
pub fn service_yaml_round(out: &mut String, index: usize, round: usize) {
    let (a, b) = (index / 250, index % 250);
    let first = 3 + round % 250;
    write!(
        out,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{index}, namespace: load}}\n\
         spec:\n  type: ClusterIP\n  ports:\n  - {{name: http, port: 80, protocol: TCP}}\n---\n\
         apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n\
         metadata: {{name: svc-{index}, namespace: load}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata:\n  name: svc-{index}-abcde\n  namespace: load\n\
         \x20 labels: {{kubernetes.io/service-name: svc-{index}}}\n\
         addressType: IPv4\nports:\n- {{name: http, port: 80, protocol: TCP}}\n\
         endpoints:\n- addresses: [\"10.{a}.{b}.{first}\"]\n  conditions: {{ready: true}}\n\
         - addresses: [\"10.{a}.{b}.2\"]\n  conditions: {{ready: true}}\n---\n"
    )
    .expect("writing to a String");
}

/// Writes a file atomically, so a scanner never reads half of it.
pub fn write_atomically(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    let temp = dir.join(format!(".{name}.tmp"));
    fs::write(&temp, contents)?;
    fs::rename(&temp, dir.join(name))
}

/// Writes into a standalone node's `in_dir` a file of [`DEEP_BRACKETS`] nested `[`
/// (`deep.yaml`), then `exports` exports ([`service_yaml`]), 100 a file.
pub fn write_load(in_dir: &Path, exports: usize) -> io::Result<()> {
    write_load_round(in_dir, exports, 0)
}

/// [`write_load`] of round `round` ([`service_yaml_round`]): every export changes
/// from one round to the next.
pub fn write_load_round(in_dir: &Path, exports: usize, round: usize) -> io::Result<()> {
    write_atomically(in_dir, "deep.yaml", &"[ ".repeat(DEEP_BRACKETS))?;
    for file in 0..exports.div_ceil(EXPORTS_PER_FILE) {
        let mut text = String::new();
        let end = ((file + 1) * EXPORTS_PER_FILE).min(exports);
        for i in file * EXPORTS_PER_FILE..end {
            service_yaml_round(&mut text, i, round);
        }
        write_atomically(in_dir, &format!("load-{file:03}.yaml"), &text)?;
    }
    Ok(())
}

/// How `observer` sees cluster `cluster`: its members' states.
pub fn states_of(observer: &Node, cluster: &str) -> Result<Vec<String>, String> {
    let peers: Value =
        serde_json::from_str(&observer.get("/v1/peers")?).map_err(|e| e.to_string())?;
    let states = peers
        .as_array()
        .ok_or("peers is not a list")?
        .iter()
        .filter(|p| p["cluster"] == cluster)
        .map(|p| p["state"].as_str().unwrap_or("?").to_owned())
        .collect();
    Ok(states)
}

/// How many services of namespace `load` `observer` imports from `cluster`.
pub fn imported_from(observer: &Node, cluster: &str) -> Result<usize, String> {
    let imports: Value =
        serde_json::from_str(&observer.get("/v1/imports")?).map_err(|e| e.to_string())?;
    let list = imports.as_array().ok_or("imports is not a list")?;
    Ok(list
        .iter()
        .filter(|i| i["namespace"] == "load" && i["clusters"].get(cluster).is_some())
        .count())
}

/// The sum of every sample of the counter `family` in Prometheus text.
pub fn family_total(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(name, _)| {
            *name == family
                || name
                    .strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{'))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// What the observer saw.
#[derive(Debug, Default)]
pub struct Observed {
    pub samples: u32,
    /// Samples in which c1 saw c0 other than alive (or could not say).
    pub not_alive: Vec<String>,
    /// c0's `/readyz` failures.
    pub unready: Vec<String>,
    /// c1's import count going down: (before, after).
    pub imports_shrank: Vec<(u64, u64)>,
    /// The most services c1 was seen importing.
    pub imports_max: u64,
    /// The longest c0's `/readyz` took to answer (printed, not asserted).
    pub readyz_slowest: Duration,
}

impl Observed {
    /// The peer's view of the busy node: it lists it, and only as alive.
    fn check_peer(&mut self, peer: SocketAddr, busy_cluster: &str) {
        let states = http_get(peer, "/v1/peers").and_then(|body| {
            let peers: Value = serde_json::from_str(&body).map_err(|e| format!("bad JSON: {e}"))?;
            Ok(peers
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["cluster"] == busy_cluster)
                .map(|p| p["state"].as_str().unwrap_or("?").to_owned())
                .collect::<Vec<_>>())
        });
        match states {
            Ok(states) if !states.is_empty() && states.iter().all(|s| s == "alive") => {}
            Ok(states) => self.not_alive.push(format!("{busy_cluster}: {states:?}")),
            Err(e) => self.not_alive.push(format!("peer API: {e}")),
        }
    }

    /// The busy node's readiness, and how long it took to answer.
    fn check_ready(&mut self, busy: SocketAddr) {
        let asked = crate::k8s::wait::now();
        if let Err(e) = http_get(busy, "/readyz") {
            self.unready.push(e);
        }
        self.readyz_slowest = self.readyz_slowest.max(asked.elapsed());
    }

    fn check_imports(&mut self, peer: SocketAddr) {
        let Ok(text) = http_get(peer, "/metrics") else {
            return; // the peer API's failures are booked by check_peer
        };
        let now = sample_value(&text, "shoal_imports");
        if now < self.imports_max {
            self.imports_shrank.push((self.imports_max, now));
        }
        self.imports_max = self.imports_max.max(now);
    }
}

/// Samples the peer's view of `busy_cluster`, the busy node's readiness, and (once a
/// second) the peer's import count, every [`SAMPLE_EVERY`] until `stop`.
pub fn observe(
    stop: Arc<AtomicBool>,
    peer: SocketAddr,
    busy: SocketAddr,
    busy_cluster: &'static str,
) -> JoinHandle<Observed> {
    thread::spawn(move || {
        let mut seen = Observed::default();
        while !stop.load(Ordering::Relaxed) {
            seen.samples += 1;
            seen.check_peer(peer, busy_cluster);
            seen.check_ready(busy);
            if seen.samples % IMPORTS_EVERY_SAMPLES == 0 {
                seen.check_imports(peer);
            }
            thread::sleep(SAMPLE_EVERY);
        }
        seen
    })
}

impl Observed {
    /// Panics unless every sample was clean: the busy node alive, ready, and the peer's
    /// imports never shrinking.
    pub fn assert_clean(&self) {
        let seen = self;
        let samples = seen.samples;
        assert!(samples > 20, "the observer sampled ({samples} samples)");
        assert!(
            seen.not_alive.is_empty(),
            "the peer saw the busy node other than alive in {} of {samples} samples: {:?}",
            seen.not_alive.len(),
            &seen.not_alive[..seen.not_alive.len().min(10)]
        );
        assert!(
            seen.unready.is_empty(),
            "the busy node's /readyz failed {} of {samples} times: {:?}",
            seen.unready.len(),
            &seen.unready[..seen.unready.len().min(5)]
        );
        assert!(
            seen.imports_shrank.is_empty(),
            "the peer's imports shrank (most seen, then): {:?}",
            &seen.imports_shrank[..seen.imports_shrank.len().min(10)]
        );
    }
}

/// Panics if any node withdrew a cluster or logged a member or cluster down.
pub fn assert_nothing_withdrawn(mesh: &Mesh) {
    for node in &mesh.nodes {
        let withdrawals = node.metric("shoal_withdrawals_total").expect("metrics");
        assert_eq!(withdrawals, 0, "{} withdrew a cluster", node.identity);
        let log = fs::read_to_string(&node.log).expect("the node's log");
        let down: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("member down") || l.contains("cluster down"))
            .take(5)
            .collect();
        assert!(
            down.is_empty(),
            "{} logged a peer down: {down:?}",
            node.identity
        );
    }
}
