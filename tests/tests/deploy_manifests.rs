//! `deploy/` as a platform engineer installs it, against a real control plane: every
//! overlay (`deploy/overlays/c0`, `c1`, `c2`), `deploy/cert-manager/ca` and the
//! `components/nodeport` variant pass the API server's own validation
//! (`kubectl apply --dry-run=server -k`, cert-manager's CRDs installed from its Go
//! module, since its controller cannot run here); each overlay is then applied for
//! real and every object it makes is there and accepted by its controller.
//!
//! Then the node is shown to read exactly what its pod mounts: the StatefulSet's
//! volumes are materialized under a temporary root from the applied objects (the
//! ConfigMap's `shoal.toml`, the Secrets `shoal-tls` and `shoal-clusterset` made with
//! `shoal certs` under cert-manager's keys, the claim, the emptyDir), the container's
//! environment is resolved from the Pod the StatefulSet controller created
//! (`metadata.name`, the `apps.kubernetes.io/pod-index` label; `status.podIP` is
//! 127.0.0.1), the TOML's absolute paths are moved under the root, and
//! `shoal config check` with the container's own arguments must pass and name the
//! overlay's cluster. The pods themselves never run: there is no kubelet.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use shoal_tests::k8s::{Cluster, ControlPlanes, ControlPlanesConfig, wait_for};
use shoal_tests::mesh::{SHOAL_NAMESPACE, repo_root, shoal_binary};

/// The clusters the repository's overlays are for.
const OVERLAYS: [&str; 3] = ["c0", "c1", "c2"];
/// cert-manager's Go module ships its CRDs, plain YAML, under `deploy/crds/`.
const CERT_MANAGER_MODULE: &str = "github.com/cert-manager/cert-manager@v1.21.1";
const CERT_MANAGER_CRDS: [&str; 4] = [
    "cert-manager.io_certificates.yaml",
    "cert-manager.io_certificaterequests.yaml",
    "cert-manager.io_issuers.yaml",
    "cert-manager.io_clusterissuers.yaml",
];
/// How long a controller may take to act on an applied object.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(60);
/// The Pod stood in for: the second replica, so that `replica` is seen to follow the
/// ordinal (a default of 0 would not show it).
const POD: &str = "shoal-1";
const REPLICA: u16 = 1;
/// The stand-in's pod IP: loopback, never dialed.
const POD_IP: &str = "127.0.0.1";
const CONTAINER: &str = "shoal";

#[test]
fn every_overlay_applies_and_its_node_reads_exactly_what_the_pod_mounts() {
    let planes = ControlPlanes::start(&ControlPlanesConfig::new(1))
        .unwrap_or_else(|e| panic!("starting a control plane: {e}"));
    let cluster = &planes.clusters()[0];
    let deploy = repo_root().join("deploy");
    let temp = tempfile::Builder::new()
        .prefix("shoal-deploy-manifests-")
        .tempdir()
        .expect("a temporary directory");
    let certs = make_certs(temp.path());

    install_cert_manager_crds(cluster);
    // The dry run creates nothing, so what the other objects need must exist first:
    // the CRDs (ours, for nothing else in the overlay, but as a user installs them) and
    // the namespace.
    kubectl(cluster, &["apply", "-k", &path_arg(&deploy.join("crds"))]);
    kubectl(cluster, &["create", "namespace", SHOAL_NAMESPACE]);
    for overlay in OVERLAYS {
        dry_run(cluster, &deploy.join("overlays").join(overlay));
    }
    dry_run(cluster, &deploy.join("cert-manager/ca"));
    assert_nodeport_component(cluster, &deploy, temp.path());

    for (i, overlay) in OVERLAYS.iter().enumerate() {
        kubectl(
            cluster,
            &[
                "apply",
                "-k",
                &path_arg(&deploy.join("overlays").join(overlay)),
            ],
        );
        assert_objects_accepted(cluster, overlay);
        create_secrets(cluster, &certs, overlay);
        let root = temp.path().join(format!("root-{overlay}"));
        let summary = check_as_the_pod(cluster, &root);
        assert!(
            summary.contains(&format!("member      {overlay}/{REPLICA} (leader-elected)")),
            "overlay {overlay}: config check names another member:\n{summary}"
        );
        assert!(
            summary.contains(&format!("identity {POD},")),
            "overlay {overlay}: the leader-election identity is not the pod's name:\n{summary}"
        );
        assert!(
            summary.contains("trusted     c0, c1, c2"),
            "overlay {overlay}: the ClusterSet Secret's certificates are not all trusted:\n{summary}"
        );
        let seeds = OVERLAYS.iter().filter(|o| *o != overlay).count() * 2;
        assert_eq!(
            summary.matches(":7946").count(),
            seeds + 2,
            "overlay {overlay} (#{i}): expected {seeds} seeds plus listen and advertise on 7946:\n{summary}"
        );
        assert!(
            !summary.contains("warning:"),
            "overlay {overlay}: config check warned:\n{summary}"
        );
    }
}

/// A ClusterSet CA and a certificate per overlay's cluster, as `shoal certs` makes them.
fn make_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let certs_arg = path_arg(&certs);
    shoal(&["certs", "init", "--dir", &certs_arg]);
    for cluster in OVERLAYS {
        shoal(&[
            "certs",
            "issue",
            "--ca",
            &certs_arg,
            "--cluster",
            cluster,
            "--out",
            &certs_arg,
        ]);
    }
    certs
}

fn shoal(args: &[&str]) -> String {
    let binary = shoal_binary().expect("the shoal binary");
    let output = Command::new(&binary)
        .args(args)
        .env_clear()
        .output()
        .expect("running shoal");
    assert!(
        output.status.success(),
        "shoal {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    cluster
        .kubectl_stdout(args)
        .unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
}

fn get(cluster: &Cluster, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-n", SHOAL_NAMESPACE, "-o", "json"]);
    cluster
        .kubectl_json(&args)
        .unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
}

fn dry_run(cluster: &Cluster, dir: &Path) {
    let out = kubectl(
        cluster,
        &["apply", "--dry-run=server", "-k", &path_arg(dir)],
    );
    assert!(
        out.contains("(server dry run)"),
        "{}: not a server dry run:\n{out}",
        dir.display()
    );
}

/// cert-manager's CRDs from its Go module (downloaded once into Go's module cache), so
/// that the API server validates the Issuers and Certificates against their schemas.
fn install_cert_manager_crds(cluster: &Cluster) {
    let output = Command::new("go")
        .args(["mod", "download", "-json", CERT_MANAGER_MODULE])
        .stdin(Stdio::null())
        .output()
        .expect("running go (cert-manager's CRDs come from its Go module)");
    assert!(
        output.status.success(),
        "go mod download {CERT_MANAGER_MODULE}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let module: Value = serde_json::from_slice(&output.stdout).expect("go mod download's JSON");
    let dir = PathBuf::from(module["Dir"].as_str().expect("the module's Dir")).join("deploy/crds");
    let mut args = vec!["apply".to_owned(), "--server-side".to_owned()];
    for crd in CERT_MANAGER_CRDS {
        args.extend(["-f".to_owned(), path_arg(&dir.join(crd))]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl(cluster, &args);
    for crd in ["certificates.cert-manager.io", "issuers.cert-manager.io"] {
        wait_established(cluster, crd);
    }
}

fn wait_established(cluster: &Cluster, crd: &str) {
    wait_for(
        &format!("CRD {crd} Established"),
        CONTROLLER_TIMEOUT,
        || {
            let crd = cluster
                .kubectl_json(&["get", "crd", crd, "-o", "json"])
                .map_err(|e| e.to_string())?;
            let established = crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            established
                .then_some(())
                .ok_or_else(|| format!("{}", crd["status"]))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `components/nodeport` on top of an overlay turns both QUIC Services into NodePorts
/// and passes the server's validation. The overlay is a temporary directory that
/// names the repository's by a relative path (kustomize refuses absolute ones).
fn assert_nodeport_component(cluster: &Cluster, deploy: &Path, temp: &Path) {
    let dir = temp.join("nodeport-overlay");
    fs::create_dir_all(&dir).expect("a directory");
    let up = "../".repeat(dir.components().count() - 1);
    let relative = |p: &Path| format!("{up}{}", p.display().to_string().trim_start_matches('/'));
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - {}\ncomponents:\n  - {}\n",
        relative(&deploy.join("overlays/c0")),
        relative(&deploy.join("components/nodeport")),
    );
    fs::write(dir.join("kustomization.yaml"), kustomization).expect("writing");
    let out = kubectl(
        cluster,
        &[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-k",
            &path_arg(&dir),
        ],
    );
    let list: Value = serde_json::from_str(&out).expect("the dry run's JSON");
    let types: BTreeMap<String, Value> = list["items"]
        .as_array()
        .expect("a List")
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(|o| {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (name, o["spec"]["type"].clone())
        })
        .collect();
    for quic in ["shoal-quic-0", "shoal-quic-1"] {
        assert_eq!(types.get(quic), Some(&json!("NodePort")), "{types:?}");
    }
    assert_eq!(types.get("shoal"), Some(&json!("ClusterIP")), "{types:?}");
}

/// Every object of the overlay exists, and the controllers that act on them did.
fn assert_objects_accepted(cluster: &Cluster, overlay: &str) {
    for crd in [
        "serviceexports.multicluster.x-k8s.io",
        "serviceimports.multicluster.x-k8s.io",
        "clusterproperties.about.k8s.io",
    ] {
        wait_established(cluster, crd);
    }
    for (kind, name) in [
        ("namespace", SHOAL_NAMESPACE),
        ("serviceaccount", "shoal"),
        ("clusterrole", "shoal"),
        ("clusterrolebinding", "shoal"),
        ("role", "shoal"),
        ("rolebinding", "shoal"),
        ("networkpolicy", "shoal"),
        ("issuer", "shoal-clusterset-ca"),
    ] {
        let object = get(cluster, &[kind, name]);
        assert_eq!(object["metadata"]["name"], name, "{kind} {name}: {object}");
    }
    let binding = get(cluster, &["clusterrolebinding", "shoal"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "shoal", "namespace": SHOAL_NAMESPACE}])
    );

    let statefulset = get(cluster, &["statefulset", "shoal"]);
    assert_eq!(statefulset["spec"]["replicas"], 2);
    assert_eq!(statefulset["spec"]["podManagementPolicy"], "Parallel");
    wait_for("the StatefulSet observed", CONTROLLER_TIMEOUT, || {
        let s = get(cluster, &["statefulset", "shoal"]);
        match s["status"]["observedGeneration"] == s["metadata"]["generation"] {
            true => Ok(()),
            false => Err(format!("{}", s["status"])),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        "the PodDisruptionBudget observed",
        CONTROLLER_TIMEOUT,
        || {
            let pdb = get(cluster, &["poddisruptionbudget", "shoal"]);
            match pdb["status"]["observedGeneration"] == pdb["metadata"]["generation"]
                && pdb["status"]["expectedPods"] == 2
            {
                true => Ok(()),
                false => Err(format!("{}", pdb["status"])),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let headless = get(cluster, &["service", "shoal"]);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    for ordinal in 0..2 {
        let quic = get(cluster, &["service", &format!("shoal-quic-{ordinal}")]);
        assert_eq!(quic["spec"]["type"], "LoadBalancer");
        assert_eq!(
            quic["spec"]["selector"]["statefulset.kubernetes.io/pod-name"],
            format!("shoal-{ordinal}")
        );
        let port = &quic["spec"]["ports"][0];
        assert_eq!(
            quic["spec"]["ports"].as_array().map(Vec::len),
            Some(1),
            "{quic}"
        );
        assert_eq!(
            (&port["port"], &port["protocol"], &port["targetPort"]),
            (&json!(7946), &json!("UDP"), &json!("quic")),
            "{quic}"
        );
    }

    // What node/src/runtime/certs.rs requires of a cluster's certificate.
    let certificate = get(cluster, &["certificate", "shoal"]);
    let spec = &certificate["spec"];
    assert_eq!(spec["secretName"], "shoal-tls");
    assert_eq!(spec["commonName"], overlay);
    assert_eq!(
        spec["dnsNames"],
        json!([format!("{overlay}.cluster.shoal")])
    );
    assert_eq!(spec["privateKey"]["algorithm"], "Ed25519");
    assert_eq!(spec["privateKey"]["encoding"], "PKCS8");
    assert_eq!(
        spec["usages"],
        json!(["digital signature", "server auth", "client auth"])
    );
}

/// The Secrets cert-manager (`shoal-tls`) and the user (`shoal-clusterset`) would make,
/// from `shoal certs`, under the keys cert-manager writes.
fn create_secrets(cluster: &Cluster, certs: &Path, overlay: &str) {
    let read = |name: &str| fs::read_to_string(certs.join(name)).expect("a certificate file");
    let tls = BTreeMap::from([
        ("tls.crt".to_owned(), read(&format!("{overlay}.crt"))),
        ("tls.key".to_owned(), read(&format!("{overlay}.key"))),
        ("ca.crt".to_owned(), read("ca.crt")),
    ]);
    let mut clusterset = BTreeMap::from([("ca.crt".to_owned(), read("ca.crt"))]);
    for member in OVERLAYS {
        clusterset.insert(format!("{member}.crt"), read(&format!("{member}.crt")));
    }
    let secret = |name: &str, data: &BTreeMap<String, String>| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": SHOAL_NAMESPACE},
            "type": if name == "shoal-tls" { "kubernetes.io/tls" } else { "Opaque" },
            "stringData": data,
        })
    };
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        secret("shoal-tls", &tls),
        secret("shoal-clusterset", &clusterset),
    ]});
    let mut child = cluster
        .kubectl()
        .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl apply");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(list.to_string().as_bytes())
        .expect("writing the Secrets");
    let output = child.wait_with_output().expect("kubectl apply");
    assert!(
        output.status.success(),
        "applying the Secrets: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A container mount under `root`: where the pod sees it, and where it is here.
struct Mount {
    target: String,
    host: PathBuf,
    kind: &'static str,
}

/// Materializes the StatefulSet's container as the kubelet would under `root`, and runs
/// `shoal config check` on its configuration with its environment; returns the output.
fn check_as_the_pod(cluster: &Cluster, root: &Path) -> String {
    let statefulset = get(cluster, &["statefulset", "shoal"]);
    let template = &statefulset["spec"]["template"]["spec"];
    let container = template["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == CONTAINER)
        .unwrap_or_else(|| panic!("no container {CONTAINER}: {template}"));
    let mounts = materialize(cluster, &statefulset, container, root);
    let pod = wait_for(&format!("Pod {POD}"), CONTROLLER_TIMEOUT, || {
        cluster
            .kubectl_json(&["get", "pod", POD, "-n", SHOAL_NAMESPACE, "-o", "json"])
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let env = environment(&pod, container);

    let argv: Vec<String> = ["command", "args"]
        .iter()
        .flat_map(|key| container[key].as_array().cloned().unwrap_or_default())
        .map(|a| expand(a.as_str().expect("a string argument"), &env))
        .collect();
    let config_at = argv
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| panic!("the container runs no --config FILE: {argv:?}"));
    assert_eq!(argv[1], "run", "{argv:?}");
    let config_mount = mount_of(&mounts, &config_at);
    assert_eq!(
        config_mount.kind, "configMap",
        "{config_at} is not from the ConfigMap"
    );
    let config_file = under(root, &config_at);
    let shipped = fs::read_to_string(&config_file).expect("the ConfigMap's TOML");
    assert_paths_mounted(&shipped, &mounts);
    let mut doc: toml_edit::DocumentMut = shipped.parse().expect("the shipped TOML parses");
    rewrite_paths(doc.as_item_mut(), &mounts);
    let rewritten = doc.to_string();
    fs::write(&config_file, rewritten).expect("writing the TOML");

    let binary = shoal_binary().expect("the shoal binary");
    let output = Command::new(binary)
        .args(["config", "check", &path_arg(&config_file)])
        .env_clear()
        .envs(&env)
        .output()
        .expect("shoal config check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "shoal config check as {POD}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let data = mounts
        .iter()
        .find(|m| m.kind == "persistentVolumeClaim")
        .expect("a claim mount");
    assert!(
        stdout.contains(&format!("data        {}", data.host.display())),
        "the store is not on the claim:\n{stdout}"
    );
    assert_probes_served(container, &stdout);
    stdout
}

/// The volumes `container` mounts, made under `root` from the applied objects.
fn materialize(
    cluster: &Cluster,
    statefulset: &Value,
    container: &Value,
    root: &Path,
) -> Vec<Mount> {
    let template = &statefulset["spec"]["template"]["spec"];
    let volumes: BTreeMap<&str, &Value> = template["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    let claims: Vec<&str> = statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .collect();
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().expect("volumeMounts") {
        let name = mount["name"].as_str().expect("a mount's name");
        assert!(mount.get("subPath").is_none(), "{name}: a subPath mount");
        let target = mount["mountPath"].as_str().expect("a mountPath").to_owned();
        let host = under(root, &target);
        fs::create_dir_all(&host).expect("a mount directory");
        let kind = if claims.contains(&name) {
            "persistentVolumeClaim"
        } else {
            let volume = volumes
                .get(name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            if let Some(map) = volume.get("configMap") {
                let object = get(
                    cluster,
                    &["configmap", map["name"].as_str().expect("a name")],
                );
                write_files(&host, &object, false);
                "configMap"
            } else if let Some(secret) = volume.get("secret") {
                let name = secret["secretName"].as_str().expect("a secretName");
                write_files(&host, &get(cluster, &["secret", name]), true);
                "secret"
            } else if volume.get("emptyDir").is_some() {
                "emptyDir"
            } else {
                panic!("volume {name}: a kind the deployment should not need: {volume}")
            }
        };
        mounts.push(Mount { target, host, kind });
    }
    // Longest first, so that a mount inside another is rewritten as itself.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.target.len()));
    mounts
}

/// Every string in `item` that is a path in a mount now names that mount's directory
/// here (each string once: a rewritten path is never rewritten again).
fn rewrite_paths(item: &mut toml_edit::Item, mounts: &[Mount]) {
    match item {
        toml_edit::Item::Table(table) => {
            for (_, item) in table.iter_mut() {
                rewrite_paths(item, mounts);
            }
        }
        toml_edit::Item::ArrayOfTables(array) => {
            for table in array.iter_mut() {
                for (_, item) in table.iter_mut() {
                    rewrite_paths(item, mounts);
                }
            }
        }
        toml_edit::Item::Value(toml_edit::Value::String(text)) => {
            let value = text.value().clone();
            let mount = mounts
                .iter()
                .find(|m| value == m.target || value.starts_with(&format!("{}/", m.target)));
            if let Some(mount) = mount {
                let moved = format!("{}{}", mount.host.display(), &value[mount.target.len()..]);
                *text = toml_edit::Formatted::new(moved);
            }
        }
        _ => {}
    }
}

fn under(root: &Path, target: &str) -> PathBuf {
    root.join(target.trim_start_matches('/'))
}

fn write_files(dir: &Path, object: &Value, base64: bool) {
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let bytes = match base64 {
            true => base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_else(|e| panic!("{key}: {e}")),
            false => text.as_bytes().to_vec(),
        };
        fs::write(dir.join(key), bytes).expect("writing a mounted file");
    }
}

fn mount_of<'a>(mounts: &'a [Mount], path: &str) -> &'a Mount {
    mounts
        .iter()
        .find(|m| path.starts_with(&format!("{}/", m.target)) || path == m.target)
        .unwrap_or_else(|| panic!("{path} is under no volume mount"))
}

/// Every path the TOML names lies in the mount of the right kind: the store on the
/// claim, the certificates and key in the Secrets. (`config check` alone would accept
/// a `data_dir` that could merely be created.)
fn assert_paths_mounted(toml: &str, mounts: &[Mount]) {
    let doc: toml_edit::DocumentMut = toml.parse().expect("the shipped TOML parses");
    let text = |item: &toml_edit::Item| item.as_str().expect("a path string").to_owned();
    assert_eq!(
        mount_of(mounts, &text(&doc["data_dir"])).kind,
        "persistentVolumeClaim"
    );
    for key in ["ca", "cert", "key", "clusterset_dir"] {
        let path = text(&doc["tls"][key]);
        assert_eq!(mount_of(mounts, &path).kind, "secret", "tls.{key} = {path}");
    }
}

/// The probes' ports are the node's health listener, and the `quic` port its listener.
fn assert_probes_served(container: &Value, summary: &str) {
    let ports: BTreeMap<&str, u64> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?, p["containerPort"].as_u64()?)))
        .collect();
    for probe in ["livenessProbe", "readinessProbe"] {
        let port = &container[probe]["httpGet"]["port"];
        let port = port
            .as_u64()
            .or_else(|| port.as_str().and_then(|name| ports.get(name).copied()))
            .unwrap_or_else(|| panic!("{probe}: no port"));
        assert!(
            summary.contains(&format!("health {POD_IP}:{port}")),
            "{probe} on {port}, not the node's health listener:\n{summary}"
        );
    }
    let quic = ports.get("quic").expect("a quic port");
    assert!(
        summary.contains(&format!("listen {POD_IP}:{quic}")),
        "the quic port {quic} is not the node's:\n{summary}"
    );
}

/// The container's environment, as the kubelet resolves it for `pod` (its pod IP
/// loopback here); the deployment should need no other kind of source.
fn environment(pod: &Value, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("an env var's name").to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_value(pod, field)
        } else {
            panic!("env {name}: a source the deployment should not need: {var}")
        };
        env.insert(name, value);
    }
    assert_eq!(
        env.get("SHOAL_REPLICA"),
        Some(&REPLICA.to_string()),
        "{env:?}"
    );
    env
}

fn field_value(pod: &Value, field: &str) -> String {
    let meta = &pod["metadata"];
    let value = match field {
        "metadata.name" => &meta["name"],
        "metadata.namespace" => &meta["namespace"],
        "status.podIP" => return POD_IP.to_owned(),
        other => {
            let label = other
                .strip_prefix("metadata.labels['")
                .and_then(|rest| rest.strip_suffix("']"))
                .unwrap_or_else(|| panic!("fieldRef {other}: not expected"));
            &meta["labels"][label]
        }
    };
    value
        .as_str()
        .unwrap_or_else(|| panic!("fieldRef {field}: the Pod has no value: {meta}"))
        .to_owned()
}

/// `$(VAR)` as the kubelet expands it: variables defined so far; others stay.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("$(") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        match tail
            .find(')')
            .and_then(|end| Some((env.get(&tail[..end])?, end)))
        {
            Some((value, end)) => {
                out.push_str(value);
                rest = &tail[end + 1..];
            }
            None => {
                out.push_str("$(");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}
