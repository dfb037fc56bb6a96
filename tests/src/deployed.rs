//! Shoal installed from `deploy/` on real control planes: [`Mesh::start_deployed`].
//!
//! Per cluster `c<i>`, what a platform engineer does, and then what a kubelet would:
//! 1. `kubectl apply -k deploy/overlays/c<i>` (rendered with `kubectl kustomize`,
//!    applied server-side): the CRDs, the namespace, the RBAC, the ConfigMap, the
//!    StatefulSet, its Services, the PodDisruptionBudget and the NetworkPolicy. Not
//!    the cert-manager Issuer and Certificate: no cert-manager runs here (step 3).
//! 2. The node's TOML in the ConfigMap is edited as a user edits it for their network,
//!    and only there: `seeds` become the other clusters' replicas' addresses here
//!    (loopback), `[chaos]` is enabled when asked, and the leader Lease timings are
//!    the tests' shorter ones. Everything else is as shipped.
//! 3. The Secret cert-manager would write for the Certificate (`tls.crt`, `tls.key`,
//!    `ca.crt`) and the ClusterSet certificates are created from `shoal certs`; a PersistentVolume per
//!    replica lets the volumeClaimTemplate bind.
//! 4. The StatefulSet controller creates the Pods, the scheduler places them on kwok's
//!    nodes, kwok marks them Running; each Pod then gets a stand-in process
//!    ([`crate::pods`]): its volumes, environment and a token bound to it, in its own
//!    mount namespace, with `127.0.<10+i>.<1+ordinal>` as its pod IP.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::k8s::{Cluster, ControlPlanes, ControlPlanesConfig, wait_for};
use crate::mesh::{
    Mesh, MeshError, Node, SHOAL_NAMESPACE, kubectl, repo_root, run_shoal, setup, shoal_binary,
};
use crate::pods::{StandInSpec, plan};

/// The StatefulSet of deploy/base, and its container.
pub const STATEFULSET: &str = "shoal";
const CONTAINER: &str = "shoal";
/// How long the StatefulSet's Pods may take to be Running, and a node to be ready.
const POD_TIMEOUT: Duration = Duration::from_secs(120);

/// What to start.
#[derive(Clone, Debug)]
pub struct DeployedConfig {
    pub clusters: usize,
    /// `[chaos] enabled` in every node's TOML.
    pub chaos: bool,
    /// `[backend]` leader Lease timings (ms): duration, renew deadline, retry period.
    pub leader_ms: (u64, u64, u64),
    /// The directory holding `overlays/c<i>`: the repository's `deploy/`.
    pub deploy_dir: PathBuf,
}

impl DeployedConfig {
    pub fn new(clusters: usize) -> Self {
        Self {
            clusters,
            chaos: false,
            leader_ms: (4_000, 3_000, 1_000),
            deploy_dir: repo_root().join("deploy"),
        }
    }
}

/// A stand-in's pod IP: `127.0.<10+cluster>.<1+ordinal>`.
pub fn pod_ip(cluster: usize, ordinal: usize) -> Ipv4Addr {
    let third = u8::try_from(10 + cluster).expect("few clusters");
    let fourth = u8::try_from(1 + ordinal).expect("few replicas");
    Ipv4Addr::new(127, 0, third, fourth)
}

fn pipe(cluster: &Cluster, args: &[&str], input: &str) -> Result<String, MeshError> {
    let mut child = cluster
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(setup)?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .map_err(setup)?;
    let output = child.wait_with_output().map_err(setup)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(setup(format!(
            "{}: kubectl {}: {}",
            cluster.context(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// The node's TOML key in the ConfigMap the StatefulSet mounts, and the ConfigMap.
fn config_map(cluster: &Cluster) -> Result<(Value, String), MeshError> {
    let list = cluster
        .kubectl_json(&["get", "configmaps", "-n", SHOAL_NAMESPACE, "-o", "json"])
        .map_err(setup)?;
    for item in list["items"].as_array().into_iter().flatten() {
        let key = item["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .find(|k| k.ends_with(".toml"));
        if let Some(key) = key {
            return Ok((item.clone(), key.clone()));
        }
    }
    Err(setup(format!(
        "{}: no ConfigMap with a TOML file in {SHOAL_NAMESPACE}",
        cluster.context()
    )))
}

/// The withdrawal grace of the TOML `cluster`'s ConfigMap holds: `timing.
/// withdraw_grace_ms`, else its preset's (`lan` 500 ms, `wan`, the default, 10 s).
pub fn withdraw_grace(cluster: &Cluster) -> Result<Duration, MeshError> {
    let (map, key) = config_map(cluster)?;
    let doc: toml_edit::DocumentMut = map["data"][&key]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|e| setup(format!("the ConfigMap's TOML: {e}")))?;
    let configured = doc
        .get("timing")
        .and_then(|t| t.get("withdraw_grace_ms"))
        .and_then(toml_edit::Item::as_integer);
    let ms = match (
        configured,
        doc.get("preset").and_then(toml_edit::Item::as_str),
    ) {
        (Some(ms), _) => u64::try_from(ms).map_err(setup)?,
        (None, Some("lan")) => 500,
        (None, _) => 10_000,
    };
    Ok(Duration::from_millis(ms))
}

/// The user's edit of the shipped TOML: seeds, chaos, leader timings.
fn edit_toml(
    text: &str,
    seeds: &[(usize, usize, SocketAddr)],
    config: &DeployedConfig,
) -> Result<String, MeshError> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| setup(format!("the shipped TOML: {e}")))?;
    let mut array = toml_edit::ArrayOfTables::new();
    for (cluster, replica, addr) in seeds {
        let mut seed = toml_edit::Table::new();
        seed["cluster"] = toml_edit::value(format!("c{cluster}"));
        seed["replica"] = toml_edit::value(i64::try_from(*replica).expect("few replicas"));
        seed["addr"] = toml_edit::value(addr.to_string());
        array.push(seed);
    }
    doc["seeds"] = toml_edit::Item::ArrayOfTables(array);
    if config.chaos {
        doc["chaos"]["enabled"] = toml_edit::value(true);
    }
    let (lease, renew, retry) = config.leader_ms;
    let ms = |v: u64| toml_edit::value(i64::try_from(v).expect("milliseconds fit"));
    doc["backend"]["leader_lease_ms"] = ms(lease);
    doc["backend"]["leader_renew_ms"] = ms(renew);
    doc["backend"]["leader_retry_ms"] = ms(retry);
    Ok(doc.to_string())
}

/// The port of `key` (`listen`, `http.listen`) in the TOML, or of the variable that
/// overrides it in the stand-in's environment.
fn port_of(toml: &str, env: &BTreeMap<String, String>, key: &str, var: &str) -> Option<u16> {
    let doc: toml_edit::DocumentMut = toml.parse().ok()?;
    let value = env.get(var).cloned().or_else(|| {
        let mut item = doc.as_item();
        for part in key.split('.') {
            item = item.get(part)?;
        }
        item.as_str().map(str::to_owned)
    })?;
    value.rsplit_once(':')?.1.parse().ok()
}

/// The Secrets cert-manager and the user would create: this cluster's certificate as
/// `tls.crt`/`tls.key`/`ca.crt`, and every member's certificate for the ClusterSet.
fn secrets(
    certs: &Path,
    cluster: usize,
    clusters: usize,
    names: &[String],
) -> Result<String, MeshError> {
    let read = |name: &str| fs::read_to_string(certs.join(name)).map_err(setup);
    let mut docs = Vec::new();
    for name in names {
        let data: BTreeMap<String, String> = if name.contains("clusterset") {
            let mut data = BTreeMap::from([("ca.crt".to_owned(), read("ca.crt")?)]);
            for c in 0..clusters {
                data.insert(format!("c{c}.crt"), read(&format!("c{c}.crt"))?);
            }
            data
        } else {
            BTreeMap::from([
                ("tls.crt".to_owned(), read(&format!("c{cluster}.crt"))?),
                ("tls.key".to_owned(), read(&format!("c{cluster}.key"))?),
                ("ca.crt".to_owned(), read("ca.crt")?),
            ])
        };
        docs.push(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": SHOAL_NAMESPACE},
            "stringData": data,
        }));
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": docs}).to_string())
}

/// A PersistentVolume for each replica's claim of each volumeClaimTemplate.
fn volumes(statefulset: &Value, cluster: usize, dir: &Path) -> Value {
    let replicas = statefulset["spec"]["replicas"].as_u64().unwrap_or(1);
    let mut items = Vec::new();
    for template in statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let claim = template["metadata"]["name"].as_str().unwrap_or("data");
        let size = template["spec"]["resources"]["requests"]["storage"].clone();
        let class = template["spec"]["storageClassName"].as_str().unwrap_or("");
        for ordinal in 0..replicas {
            let name = format!("c{cluster}-{claim}-{STATEFULSET}-{ordinal}");
            items.push(json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": template["spec"]["accessModes"],
                    "storageClassName": class,
                    "hostPath": {"path": dir.join(&name).display().to_string()},
                    "claimRef": {"namespace": SHOAL_NAMESPACE,
                                 "name": format!("{claim}-{STATEFULSET}-{ordinal}")},
                },
            }));
        }
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The Pod names of the StatefulSet once all are Running, with their uids.
pub fn running_pods(cluster: &Cluster, replicas: usize) -> Result<Vec<(String, String)>, String> {
    wait_for("the StatefulSet's Pods Running", POD_TIMEOUT, || {
        let pods = cluster
            .kubectl_json(&["get", "pods", "-n", SHOAL_NAMESPACE, "-o", "json"])
            .map_err(|e| e.to_string())?;
        let running: Vec<(String, String)> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_owned(),
                    p["metadata"]["uid"].as_str()?.to_owned(),
                ))
            })
            .collect();
        match running.len() == replicas {
            true => Ok(running),
            false => Err(format!(
                "{} of {replicas} Running: {running:?}",
                running.len()
            )),
        }
    })
    .map_err(|e| format!("{}: {e}", cluster.context()))
}

impl Mesh {
    /// Starts `config.clusters` control planes, installs Shoal in each from
    /// `deploy/overlays/c<i>`, and runs a stand-in for each of its Pods; waits until
    /// every node answers `/readyz`.
    pub fn start_deployed(config: &DeployedConfig) -> Result<Self, MeshError> {
        let shoal = shoal_binary()?;
        let planes = ControlPlanes::start(&ControlPlanesConfig::new(config.clusters))?;
        let temp = tempfile::Builder::new()
            .prefix("shoal-deployed-")
            .tempdir()
            .map_err(setup)?;
        let dir = temp.path().to_owned();
        let certs = dir.join("certs");
        let certs_arg = certs.display().to_string();
        run_shoal(&shoal, &["certs", "init", "--dir", &certs_arg])?;
        for c in 0..config.clusters {
            let id = format!("c{c}");
            let args = [
                "certs",
                "issue",
                "--ca",
                &certs_arg,
                "--cluster",
                &id,
                "--out",
                &certs_arg,
            ];
            run_shoal(&shoal, &args)?;
        }
        let mut statefulsets = Vec::new();
        for cluster in planes.clusters() {
            statefulsets.push(install(cluster, &certs, config, &dir)?);
        }
        let mut nodes = Vec::new();
        for (c, cluster) in planes.clusters().iter().enumerate() {
            let replicas = statefulsets[c]["spec"]["replicas"].as_u64().unwrap_or(1);
            let replicas = usize::try_from(replicas).expect("few replicas");
            for (pod, _) in running_pods(cluster, replicas).map_err(setup)? {
                nodes.push(stand_in(cluster, c, &pod, &dir, &shoal)?);
            }
        }
        for node in &mut nodes {
            node.start(&shoal).map_err(setup)?;
        }
        let mesh = Mesh {
            planes: Some(planes),
            nodes,
            dir,
            shoal,
            temp: Some(temp),
        };
        mesh.wait_ready(POD_TIMEOUT)?;
        Ok(mesh)
    }

    /// Deletes `node`'s Pod, stops its process (SIGTERM, as the kubelet does), waits
    /// until the StatefulSet controller's new Pod of the same name is Running, and
    /// starts a new stand-in in its place. The claim, and so the sled store, stays.
    pub fn replace_pod(&mut self, index: usize) -> Result<(), String> {
        let (c, pod) = {
            let node = &self.nodes[index];
            (node.cluster, node.identity.clone())
        };
        let cluster = &self.planes().clusters()[c];
        let old = cluster
            .kubectl_json(&["get", "pod", &pod, "-n", SHOAL_NAMESPACE, "-o", "json"])
            .map_err(|e| e.to_string())?["metadata"]["uid"]
            .clone();
        kubectl(
            cluster,
            &["delete", "pod", &pod, "-n", SHOAL_NAMESPACE, "--wait=false"],
        )
        .map_err(|e| e.to_string())?;
        self.nodes[index].stop();
        let cluster = &self.planes().clusters()[c];
        wait_for(&format!("a new Pod {pod} Running"), POD_TIMEOUT, || {
            let new = cluster
                .kubectl_json(&["get", "pod", &pod, "-n", SHOAL_NAMESPACE, "-o", "json"])
                .map_err(|e| e.to_string())?;
            match new["metadata"]["uid"] != old && new["status"]["phase"] == "Running" {
                true => Ok(()),
                false => Err(format!(
                    "uid {}, phase {}",
                    new["metadata"]["uid"], new["status"]["phase"]
                )),
            }
        })
        .map_err(|e| e.to_string())?;
        let node = stand_in(cluster, c, &pod, &self.dir, &self.shoal).map_err(|e| e.to_string())?;
        let shoal = self.shoal.clone();
        let slot = &mut self.nodes[index];
        slot.launch = node.launch.clone();
        slot.start(&shoal).map_err(|e| e.to_string())
    }
}

/// Installs Shoal in `cluster` from its overlay; returns the applied StatefulSet.
fn install(
    cluster: &Cluster,
    certs: &Path,
    config: &DeployedConfig,
    dir: &Path,
) -> Result<Value, MeshError> {
    let c = cluster.index();
    let overlay = config.deploy_dir.join(format!("overlays/c{c}"));
    let rendered = kubectl(cluster, &["kustomize", &overlay.display().to_string()])?;
    // No cert-manager runs here: its objects are left out, and the harness writes the
    // Secrets they would produce (below). `kubectl kustomize` separates documents
    // with `---` lines.
    let rendered: Vec<&str> = rendered
        .split("\n---\n")
        .filter(|doc| !doc.contains("apiVersion: cert-manager.io/"))
        .collect();
    let rendered = rendered.join("\n---\n");
    pipe(
        cluster,
        &[
            "apply",
            "--server-side",
            "--field-manager=shoal-tests",
            "-f",
            "-",
        ],
        &rendered,
    )?;
    let statefulset = cluster
        .kubectl_json(&[
            "get",
            "statefulset",
            STATEFULSET,
            "-n",
            SHOAL_NAMESPACE,
            "-o",
            "json",
        ])
        .map_err(setup)?;
    let replicas = statefulset["spec"]["replicas"].as_u64().unwrap_or(1);
    let replicas = usize::try_from(replicas).expect("few replicas");

    let (mut map, key) = config_map(cluster)?;
    let shipped = map["data"][&key].as_str().unwrap_or_default().to_owned();
    let quic_port = port_of(&shipped, &BTreeMap::new(), "listen", "").unwrap_or(7946);
    let seeds: Vec<(usize, usize, SocketAddr)> = (0..config.clusters)
        .filter(|&other| other != c)
        .flat_map(|other| (0..replicas).map(move |r| (other, r)))
        .map(|(other, r)| (other, r, SocketAddr::from((pod_ip(other, r), quic_port))))
        .collect();
    map["data"][&key] = Value::String(edit_toml(&shipped, &seeds, config)?);
    if let Some(meta) = map["metadata"].as_object_mut() {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations"));
    }
    pipe(
        cluster,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=shoal-user",
            "-f",
            "-",
        ],
        &map.to_string(),
    )?;

    let secret_names: Vec<String> = statefulset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["secret"]["secretName"].as_str().map(str::to_owned))
        .collect();
    pipe(
        cluster,
        &[
            "apply",
            "--server-side",
            "--field-manager=shoal-tests",
            "-f",
            "-",
        ],
        &secrets(certs, c, config.clusters, &secret_names)?,
    )?;
    let pv_dir = dir.join("volumes");
    fs::create_dir_all(&pv_dir).map_err(setup)?;
    pipe(
        cluster,
        &[
            "apply",
            "--server-side",
            "--field-manager=shoal-tests",
            "-f",
            "-",
        ],
        &volumes(&statefulset, c, &pv_dir).to_string(),
    )?;
    Ok(statefulset)
}

/// A [`Node`] standing in for `pod` (not started).
fn stand_in(
    cluster: &Cluster,
    c: usize,
    pod: &str,
    dir: &Path,
    shoal: &Path,
) -> Result<Node, MeshError> {
    let ordinal: usize = pod
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| setup(format!("{pod}: not a StatefulSet Pod name")))?;
    let ip = pod_ip(c, ordinal);
    let pods_dir = dir.join(format!("c{c}-pods"));
    let spec = StandInSpec {
        cluster,
        container: CONTAINER,
        dir: &pods_dir,
        ip,
        binary: shoal,
    };
    let launch = plan(&spec, SHOAL_NAMESPACE, pod).map_err(setup)?;
    let (map, key) = config_map(cluster)?;
    let toml = map["data"][&key].as_str().unwrap_or_default();
    let http_port = port_of(toml, &launch.env, "http.listen", "SHOAL_HTTP_LISTEN")
        .ok_or_else(|| setup("no HTTP port in the TOML or the environment"))?;
    let node_dir = dir.join(format!("c{c}-{pod}"));
    fs::create_dir_all(&node_dir).map_err(setup)?;
    Ok(Node {
        cluster: c,
        replica: u16::try_from(ordinal).expect("few replicas"),
        identity: pod.to_owned(),
        http: SocketAddr::from((ip, http_port)),
        config: pods_dir.join(&key),
        log: node_dir.join("shoal.log"),
        standalone_dir: None,
        launch: Some(launch),
        child: None,
    })
}
