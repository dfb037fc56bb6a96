//! The seeds' lab on Kubernetes: three clusters, two Shoal replicas each, and the
//! faults a ClusterSet must ride out, as steps a test (`tests/k8s_three_clusters.rs`)
//! and a person (`shoal-clusters lab`) run alike.
//!
//! - `rebel-base`: a Deployment of 2 with a Service and a ServiceExport, in `default`
//!   of c0 and c1; `payments/fraud-detection`: the same in c2. Every cluster imports
//!   both.
//! - [`Lab::kill_cluster`]: both replicas (`kill -9`) and the API server of one
//!   cluster go; its endpoints leave every other cluster's EndpointSlices.
//!   [`Lab::restart_cluster`] brings everything back.
//! - [`Lab::partition`]: one cluster cut off with the nodes' chaos controls; only the
//!   majority side holds `payments-write-leader`, and the mirrored Lease shows it.
//! - [`Lab::roll`]: the replicas of one cluster restarted one at a time; no peer
//!   withdraws the cluster.
//!
//! After every step each live cluster's CoreDNS must answer what its imports say
//! (`rebel-base` is headless: one A record per endpoint of every live source).
//! Every step waits on conditions with a deadline and records what it measured in a
//! [`Timeline`]; targets are printed beside the figures, never asserted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::deployed::{DeployedConfig, withdraw_grace};
use crate::dns::RecordType;
use crate::k8s::{Cluster, CoreDns, wait_for};
use crate::load::family_total;
use crate::mesh::{Mesh, MeshConfig, MeshError, SHOAL_NAMESPACE, apply, sample_value};

/// Clusters in the lab.
pub const CLUSTERS: usize = 3;
/// Shoal replicas per cluster (the StatefulSet's).
pub const REPLICAS: u16 = 2;
/// The quorum lease the lab's partition fights over.
pub const LEASE: &str = "payments-write-leader";
/// The withdrawal target is the nodes' withdrawal grace plus this.
pub const WITHDRAWAL_MARGIN: Duration = Duration::from_secs(5);
/// The deadline of a step that converges (an import, a takeover, a lease): far above
/// the targets, for a loaded two-core machine.
pub const STEP: Duration = Duration::from_secs(90);

/// A service of the lab: where it runs and is exported.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub namespace: &'static str,
    pub name: &'static str,
    pub port: u16,
    pub clusters: &'static [usize],
    /// A headless Service (`clusterIP: None`): DNS answers with every endpoint.
    pub headless: bool,
}

/// The lab's two services: `rebel-base` headless (so DNS answers with the endpoints
/// of every live source cluster), `fraud-detection` with a ClusterSet IP.
pub const WORKLOADS: [Workload; 2] = [
    Workload {
        namespace: "default",
        name: "rebel-base",
        port: 80,
        clusters: &[0, 1],
        headless: true,
    },
    Workload {
        namespace: "payments",
        name: "fraud-detection",
        port: 8443,
        clusters: &[2],
        headless: false,
    },
];

impl Workload {
    /// The Deployment, Service and ServiceExport, as applied to a source cluster.
    pub fn yaml(&self) -> String {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: {name}
          image: example.invalid/{name}:1
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  clusterIP: {cluster_ip}
  selector: {{app: {name}}}
  ports: [{{name: http, port: {port}, targetPort: http, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {{name: {name}, namespace: {ns}}}
"#,
            name = self.name,
            ns = self.namespace,
            port = self.port,
            cluster_ip = if self.headless { "None" } else { "\"\"" },
        )
    }

    /// Its name in `clusterset.local`.
    pub fn dns_name(&self) -> String {
        format!("{}.{}.svc.clusterset.local.", self.name, self.namespace)
    }
}

/// What happened when, since the lab started.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    events: Vec<(Duration, String)>,
    /// Print each event as it is noted, for a person watching.
    pub live: bool,
}

impl Timeline {
    fn new() -> Self {
        Self {
            start: crate::k8s::wait::now(),
            events: Vec::new(),
            live: false,
        }
    }

    /// Records `what` now (and prints it at once when [`Timeline::live`]).
    pub fn note(&mut self, what: impl Into<String>) {
        let at = self.start.elapsed();
        let what = what.into();
        if self.live {
            eprintln!("  {:>7.1} s  {what}", at.as_secs_f64());
        }
        self.events.push((at, what));
    }

    /// The whole timeline, one event a line.
    pub fn render(&self) -> String {
        self.events
            .iter()
            .map(|(at, what)| format!("  {:>7.1} s  {what}\n", at.as_secs_f64()))
            .collect()
    }
}

/// Figures of a run, printed beside their targets.
#[derive(Debug, Default)]
pub struct Figures {
    /// From the kill to the last importer without the killed cluster's endpoints.
    pub withdrawal: Option<Duration>,
    /// Withdrawals counted by the other clusters' replicas during the rolling restart.
    pub roll_withdrawals: Option<u64>,
    /// The longest time CoreDNS took to answer what the imports say, after Shoal's
    /// objects matched.
    pub dns_lag: Option<Duration>,
}

/// How Shoal is installed in the lab's clusters.
#[derive(Clone, Debug)]
pub enum Install {
    /// From a `deploy/` directory's overlays (`overlays/c<i>`), each Pod of the
    /// StatefulSet run by a stand-in: [`Mesh::start_deployed`].
    Deploy(std::path::PathBuf),
    /// Processes the harness configures itself: [`Mesh::start`].
    Harness,
}

impl Install {
    /// The repository's own `deploy/`.
    pub fn shipped() -> Self {
        Install::Deploy(crate::mesh::repo_root().join("deploy"))
    }
}

/// The lab: a running mesh with its workloads.
pub struct Lab {
    pub mesh: Mesh,
    pub timeline: Timeline,
    pub figures: Figures,
    /// Pod IPs of each workload in each source cluster, by (workload index, cluster).
    pods: BTreeMap<(usize, usize), BTreeSet<String>>,
    /// The nodes' withdrawal grace (their TOML's, or its preset's).
    pub grace: Duration,
    /// CoreDNS per cluster (unmodified, `deploy/coredns/`'s Corefile and RBAC).
    pub dns: Vec<CoreDns>,
    /// Shoal installed from deploy/ with a stand-in per Pod ([`Mesh::start_deployed`]),
    /// rather than processes the harness configures itself.
    deployed: bool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("mesh", &self.mesh)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Starts three clusters with two replicas each (chaos controls on), applies the
    /// workloads and waits until their pods are Running.
    pub fn start(install: Install) -> Result<Self, MeshError> {
        let mut timeline = Timeline::new();
        let deployed = matches!(install, Install::Deploy(_));
        let mesh = match install {
            Install::Deploy(deploy_dir) => Mesh::start_deployed(&DeployedConfig {
                chaos: true,
                deploy_dir,
                ..DeployedConfig::new(CLUSTERS)
            })?,
            Install::Harness => Mesh::start(&MeshConfig {
                chaos: true,
                ..MeshConfig::new(CLUSTERS, REPLICAS)
            })?,
        };
        timeline.note(match deployed {
            true => format!(
                "{CLUSTERS} control planes; Shoal applied from deploy/overlays/c*; {} Pods \
                 Running, each with a ready stand-in",
                mesh.nodes.len()
            ),
            false => format!(
                "{CLUSTERS} control planes and {} Shoal replicas ready",
                mesh.nodes.len()
            ),
        });
        let mut lab = Lab {
            mesh,
            timeline,
            figures: Figures::default(),
            pods: BTreeMap::new(),
            deployed,
            grace: Duration::ZERO,
            dns: Vec::new(),
        };
        for cluster in lab.mesh.planes().clusters() {
            let dns = CoreDns::start(cluster)
                .map_err(|e| MeshError::Setup(format!("{}: CoreDNS: {e}", cluster.context())))?;
            lab.dns.push(dns);
        }
        lab.timeline
            .note("CoreDNS answering in every cluster (clusterset.local)");
        lab.grace = match deployed {
            true => withdraw_grace(lab.mesh.cluster(0))?,
            // The harness's nodes use the lan preset.
            false => Duration::from_millis(500),
        };
        for cluster in lab.mesh.planes().clusters() {
            apply(
                cluster,
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: payments}\n",
            )?;
        }
        for (w, workload) in WORKLOADS.iter().enumerate() {
            for &c in workload.clusters {
                apply(lab.mesh.cluster(c), &workload.yaml())?;
                let ips = running_pods(lab.mesh.cluster(c), workload)
                    .map_err(|e| MeshError::Setup(format!("c{c}: {e}")))?;
                lab.pods.insert((w, c), ips);
            }
        }
        lab.timeline
            .note("rebel-base Running in c0 and c1, payments/fraud-detection in c2");
        Ok(lab)
    }

    /// The endpoints each importer should hold for workload `w`, with `down` excluded.
    fn expected(&self, w: usize, down: Option<usize>) -> BTreeMap<String, BTreeSet<String>> {
        WORKLOADS[w]
            .clusters
            .iter()
            .filter(|&&c| Some(c) != down)
            .map(|&c| (format!("c{c}"), self.pods[&(w, c)].clone()))
            .collect()
    }

    /// Waits until every cluster but `down` imports both services with exactly the
    /// endpoints of every source cluster but `down`.
    pub fn wait_converged(&mut self, down: Option<usize>, what: &str) -> Result<(), String> {
        for c in (0..CLUSTERS).filter(|&c| Some(c) != down) {
            for (w, workload) in WORKLOADS.iter().enumerate() {
                let expected = self.expected(w, down);
                let import = wait_for(&format!("c{c} imports {}", workload.name), STEP, || {
                    imported(self.mesh.cluster(c), workload, &expected)
                })
                .map_err(|e| e.to_string())?;
                let matched = crate::k8s::wait::now();
                let want: BTreeSet<IpAddr> = match workload.headless {
                    true => expected
                        .values()
                        .flatten()
                        .filter_map(|ip| ip.parse().ok())
                        .collect(),
                    false => import["spec"]["ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|ip| ip.as_str()?.parse().ok())
                        .collect(),
                };
                let name = workload.dns_name();
                wait_for(&format!("c{c}'s CoreDNS answers {name}"), STEP, || {
                    let answer = self.dns[c]
                        .query(&name, RecordType::A)
                        .map_err(|e| e.to_string())?;
                    let got: BTreeSet<IpAddr> = answer.addresses.iter().copied().collect();
                    match got == want {
                        true => Ok(()),
                        false => Err(format!("{:?}: {got:?}, want {want:?}", answer.rcode)),
                    }
                })
                .map_err(|e| e.to_string())?;
                let lag = matched.elapsed();
                let worst = self.figures.dns_lag.get_or_insert(lag);
                *worst = (*worst).max(lag);
            }
        }
        self.timeline.note(format!("{what}; CoreDNS answers match"));
        Ok(())
    }

    /// Stops `cluster`'s API server (nothing is withdrawn for that alone), then kills
    /// both its replicas (`kill -9`) and waits until every other cluster's
    /// EndpointSlices are without its endpoints. Returns how long that took from the
    /// kill.
    pub fn kill_cluster(&mut self, cluster: usize) -> Result<Duration, String> {
        // The API server first: an unreachable API server is not a dead cluster, so
        // nothing may be withdrawn for it alone (checked just below).
        self.mesh.planes_mut().stop_apiserver(cluster);
        self.timeline.note(format!(
            "c{cluster}: API server stopped (its replicas still run)"
        ));
        let source = format!("c{cluster}");
        wait_for(
            &format!("c{cluster}'s replicas see the API server gone"),
            STEP,
            || {
                let seen: u64 = self
                    .mesh
                    .nodes_of(cluster)
                    .map(|n| {
                        let text = n.metrics()?;
                        Ok(family_total(&text, "shoal_backend_errors_total")
                            + family_total(&text, "shoal_backend_watch_errors_total"))
                    })
                    .sum::<Result<u64, String>>()?;
                if seen > 0 {
                    Ok(())
                } else {
                    Err("no API error counted yet".into())
                }
            },
        )
        .map_err(|e| e.to_string())?;
        self.check_imported_from(&source)?;
        self.timeline.note(format!(
            "c{cluster}: its replicas count API errors; every importer still holds its \
             endpoints"
        ));
        let killed = crate::k8s::wait::now();
        for node in self.mesh.nodes.iter_mut().filter(|n| n.cluster == cluster) {
            node.kill();
        }
        self.timeline
            .note(format!("c{cluster}: both Shoal replicas killed (-9)"));
        let others: Vec<usize> = (0..CLUSTERS).filter(|&c| c != cluster).collect();
        let mut gone: BTreeMap<usize, Duration> = BTreeMap::new();
        wait_for("the killed cluster's endpoints withdrawn", STEP, || {
            for &c in &others {
                if gone.contains_key(&c) {
                    continue;
                }
                let slices = slices(self.mesh.cluster(c), &WORKLOADS[0])?;
                if addresses(&slices, &source).is_empty() {
                    gone.insert(c, killed.elapsed());
                }
            }
            if gone.len() == others.len() {
                Ok(())
            } else {
                Err(format!("withdrawn in {gone:?} only"))
            }
        })
        .map_err(|e| e.to_string())?;
        let withdrawal = gone.values().copied().max().unwrap_or_default();
        for (c, at) in &gone {
            self.timeline.note(format!(
                "c{c}: c{cluster}'s endpoints left its EndpointSlices after {:.1} s",
                at.as_secs_f64()
            ));
        }
        self.figures.withdrawal = Some(withdrawal);
        self.wait_converged(
            Some(cluster),
            &format!("every other cluster imports without c{cluster}"),
        )?;
        Ok(withdrawal)
    }

    /// Starts `cluster`'s API server and both replicas again, and waits until every
    /// cluster imports everything again.
    pub fn restart_cluster(&mut self, cluster: usize) -> Result<(), String> {
        self.mesh
            .planes_mut()
            .start_apiserver(cluster, STEP)
            .map_err(|e| e.to_string())?;
        let shoal = self.mesh.shoal().to_owned();
        for node in self.mesh.nodes.iter_mut().filter(|n| n.cluster == cluster) {
            node.start(&shoal).map_err(|e| e.to_string())?;
        }
        self.timeline.note(format!(
            "c{cluster}: API server and both replicas started again"
        ));
        self.wait_converged(None, "every cluster imports everything again")
    }

    /// The local leader of `cluster`, as its `shoal-leader` Lease names it.
    fn leader(&self, cluster: usize) -> Result<&crate::mesh::Node, String> {
        let identity = wait_for(&format!("c{cluster}'s local leader"), STEP, || {
            self.mesh
                .leader_of(cluster)
                .ok_or_else(|| "no holder".to_owned())
        })
        .map_err(|e| e.to_string())?;
        self.mesh
            .nodes_of(cluster)
            .find(|n| n.identity == identity)
            .ok_or_else(|| format!("no node {identity}"))
    }

    /// `cluster`'s leader asks for the lease (and keeps renewing it); waits until it
    /// holds it. Returns the fencing token.
    pub fn acquire(&mut self, cluster: usize) -> Result<u64, String> {
        let node = self.leader(cluster)?;
        let token = wait_for(&format!("c{cluster} holds {LEASE}"), STEP, || {
            let view = lease_view(&node.post(&format!("/v1/leases/{LEASE}"))?)?;
            match (view["write_ready"].as_bool(), view["token"].as_u64()) {
                (Some(true), Some(token)) => Ok(token),
                _ => Err(view.to_string()),
            }
        })
        .map_err(|e| e.to_string())?;
        self.timeline
            .note(format!("c{cluster} holds {LEASE}, fencing token {token}"));
        Ok(token)
    }

    /// Cuts `cluster` off from every other cluster, in both directions, on every
    /// replica of both sides. Then: `cluster`, which held the lease, stops being
    /// write-ready; `majority` acquires it with a higher token; the mirrored Lease in
    /// `majority`'s cluster names it.
    pub fn partition(&mut self, cluster: usize, majority: usize) -> Result<(), String> {
        let first = self.acquire(cluster)?;
        self.chaos(cluster, "cut")?;
        self.timeline.note(format!(
            "c{cluster} cut off from the other clusters (both directions)"
        ));
        let minority = self.leader(cluster)?;
        wait_for(&format!("c{cluster} no longer write-ready"), STEP, || {
            let view = lease_view(&minority.get(&format!("/v1/leases/{LEASE}"))?)?;
            match view["write_ready"].as_bool() {
                Some(false) => Ok(()),
                _ => Err(view.to_string()),
            }
        })
        .map_err(|e| e.to_string())?;
        self.timeline
            .note(format!("c{cluster} (the minority) is not write-ready"));
        let token = self.acquire(majority)?;
        if token <= first {
            return Err(format!(
                "the majority's token {token} is not above the minority's {first}"
            ));
        }
        let holder = format!("c{majority}");
        let mirrored = wait_for("the mirrored Lease", STEP, || {
            let lease = self
                .mesh
                .cluster(majority)
                .kubectl_json(&["get", "lease", LEASE, "-n", SHOAL_NAMESPACE, "-o", "json"])
                .map_err(|e| e.to_string())?;
            let annotation = &lease["metadata"]["annotations"]["shoal.dev/fencing-token"];
            if lease["spec"]["holderIdentity"] == holder.as_str()
                && annotation.as_str() == Some(token.to_string().as_str())
            {
                Ok(lease)
            } else {
                Err(lease["spec"].to_string())
            }
        })
        .map_err(|e| e.to_string())?;
        self.timeline.note(format!(
            "c{majority}'s mirrored Lease {LEASE}: holder {}, token {}, transitions {}",
            mirrored["spec"]["holderIdentity"], token, mirrored["spec"]["leaseTransitions"]
        ));
        Ok(())
    }

    /// Restores every link cut by [`Lab::partition`], releases the lease everywhere,
    /// and waits until everything converges again.
    pub fn heal(&mut self, cluster: usize) -> Result<(), String> {
        self.chaos(cluster, "restore")?;
        self.timeline.note(format!("c{cluster}'s links restored"));
        for node in &self.mesh.nodes {
            // A replica that is not the leader has nothing to release; either answer
            // is fine here.
            let _ = node.delete(&format!("/v1/leases/{LEASE}"));
        }
        self.wait_converged(None, "converged after the heal")
    }

    fn chaos(&self, cluster: usize, op: &str) -> Result<(), String> {
        let others: Vec<usize> = (0..CLUSTERS).filter(|&c| c != cluster).collect();
        for node in &self.mesh.nodes {
            let targets: Vec<usize> = if node.cluster == cluster {
                others.clone()
            } else {
                vec![cluster]
            };
            for target in targets {
                let body = json!({"op": op, "cluster": format!("c{target}"), "direction": "both"});
                node.post_json("/v1/chaos", &body)
                    .map_err(|e| format!("{}: chaos {op}: {e}", node.identity))?;
            }
        }
        Ok(())
    }

    /// Restarts `cluster`'s replicas one at a time (SIGTERM, then a new process in its
    /// place once the old one has exited), waiting for each to be ready. Returns the
    /// withdrawals the other clusters' replicas counted meanwhile, and checks that
    /// `cluster`'s endpoints never left any importer.
    pub fn roll(&mut self, cluster: usize) -> Result<u64, String> {
        let withdrawals = |mesh: &Mesh| -> Result<u64, String> {
            mesh.nodes
                .iter()
                .filter(|n| n.cluster != cluster)
                .map(|n| Ok(sample_value(&n.metrics()?, "shoal_withdrawals_total")))
                .sum()
        };
        let before = withdrawals(&self.mesh)?;
        let shoal = self.mesh.shoal().to_owned();
        let source = format!("c{cluster}");
        let replicas: Vec<usize> = (0..self.mesh.nodes.len())
            .filter(|&i| self.mesh.nodes[i].cluster == cluster)
            .collect();
        for i in replicas {
            let identity = self.mesh.nodes[i].identity.clone();
            if self.deployed {
                self.mesh.replace_pod(i)?;
                self.timeline.note(format!(
                    "c{cluster}/{identity}: Pod deleted and its process stopped (SIGTERM); \
                     the StatefulSet's new Pod is Running, a new process started"
                ));
            } else {
                self.mesh.nodes[i].stop();
                self.timeline.note(format!(
                    "{identity}: stopped (SIGTERM), as a deleted pod is"
                ));
                self.check_imported_from(&source)?;
                self.mesh.nodes[i]
                    .start(&shoal)
                    .map_err(|e| format!("{identity}: {e}"))?;
            }
            let node = &self.mesh.nodes[i];
            wait_for(&format!("{identity} ready"), STEP, || node.ready())
                .map_err(|e| e.to_string())?;
            self.timeline
                .note(format!("{identity}: a new process in its place is ready"));
            self.check_imported_from(&source)?;
        }
        self.wait_converged(None, &format!("c{cluster} rolled"))?;
        let counted = withdrawals(&self.mesh)? - before;
        self.figures.roll_withdrawals = Some(counted);
        Ok(counted)
    }

    /// Every other cluster still holds `source`'s rebel-base endpoints.
    fn check_imported_from(&self, source: &str) -> Result<(), String> {
        for c in 0..CLUSTERS {
            if format!("c{c}") == source {
                continue;
            }
            let slices = slices(self.mesh.cluster(c), &WORKLOADS[0])?;
            if addresses(&slices, source).is_empty() {
                return Err(format!("c{c} lost {source}'s endpoints"));
            }
        }
        Ok(())
    }

    /// The figures beside their targets, and the timeline.
    pub fn report(&self) -> String {
        let mut out = String::from("timeline:\n");
        out.push_str(&self.timeline.render());
        out.push_str("figures (targets are printed, never asserted):\n");
        if let Some(w) = self.figures.withdrawal {
            out.push_str(&format!(
                "  withdrawal of a dead cluster, from the kill: {:.1} s (target <= grace {:.1} s + {} s = {:.1} s)\n",
                w.as_secs_f64(),
                self.grace.as_secs_f64(),
                WITHDRAWAL_MARGIN.as_secs(),
                (self.grace + WITHDRAWAL_MARGIN).as_secs_f64()
            ));
        }
        if let Some(lag) = self.figures.dns_lag {
            out.push_str(&format!(
                "  CoreDNS answers matching the imports, after Shoal's objects did: at most {:.1} s (target <= 2 s)\n",
                lag.as_secs_f64()
            ));
        }
        if let Some(n) = self.figures.roll_withdrawals {
            out.push_str(&format!(
                "  withdrawals during the rolling restart: {n} (target 0)\n"
            ));
        }
        out
    }
}

/// The pod IPs of `workload` in `cluster`, once its 2 pods are Running with an IP.
fn running_pods(cluster: &Cluster, workload: &Workload) -> Result<BTreeSet<String>, String> {
    let selector = format!("app={}", workload.name);
    wait_for("pods Running with IPs", STEP, || {
        let pods = cluster
            .kubectl_json(&[
                "get",
                "pods",
                "-n",
                workload.namespace,
                "-l",
                &selector,
                "-o",
                "json",
            ])
            .map_err(|e| e.to_string())?;
        let ips: BTreeSet<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_owned))
            .collect();
        match ips.len() {
            2 => Ok(ips),
            n => Err(format!("{n} of 2 Running with an IP")),
        }
    })
    .map_err(|e| e.to_string())
}

/// Shoal's EndpointSlices of `workload` in `cluster`.
pub fn slices(cluster: &Cluster, workload: &Workload) -> Result<Vec<Value>, String> {
    let selector = format!(
        "multicluster.kubernetes.io/service-name={},endpointslice.kubernetes.io/managed-by=shoal.dev",
        workload.name
    );
    let list = cluster
        .kubectl_json(&[
            "get",
            "endpointslices",
            "-n",
            workload.namespace,
            "-l",
            &selector,
            "-o",
            "json",
        ])
        .map_err(|e| format!("{}: {e}", cluster.context()))?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// The endpoint addresses of `source` in `slices`.
pub fn addresses(slices: &[Value], source: &str) -> BTreeSet<String> {
    slices
        .iter()
        .filter(|s| s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == source)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
        .collect()
}

/// `cluster` imports `workload` from exactly the clusters of `expected`, each with
/// exactly its pod IPs, and the ServiceImport's IP is its derived Service's.
fn imported(
    cluster: &Cluster,
    workload: &Workload,
    expected: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Value, String> {
    let import = cluster
        .kubectl_json(&[
            "get",
            "serviceimports.multicluster.x-k8s.io",
            workload.name,
            "-n",
            workload.namespace,
            "-o",
            "json",
        ])
        .map_err(|e| e.to_string())?;
    let clusters: BTreeSet<String> = import["status"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cluster"].as_str().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = expected.keys().cloned().collect();
    if clusters != want {
        return Err(format!("status.clusters {clusters:?}, want {want:?}"));
    }
    let ips = import["spec"]["ips"]
        .as_array()
        .is_some_and(|ips| !ips.is_empty());
    match (workload.headless, ips, &import["spec"]["type"]) {
        (true, false, t) if t == "Headless" => {}
        (false, true, t) if t == "ClusterSetIP" => {}
        (_, _, t) => return Err(format!("type {t}, ips {}", import["spec"]["ips"])),
    }
    let slices = slices(cluster, workload)?;
    for (source, ips) in expected {
        let have = addresses(&slices, source);
        if &have != ips {
            return Err(format!("from {source}: {have:?}, want {ips:?}"));
        }
    }
    Ok(import)
}

fn lease_view(answer: &str) -> Result<Value, String> {
    serde_json::from_str(answer).map_err(|e| format!("{e}: {answer}"))
}
