//! Pod stand-ins: a local process in place of a pod that the control plane really
//! scheduled, started from that Pod object as a kubelet would start its container.
//!
//! Nothing executes pods here (kwok only marks them Running), so the harness plays the
//! kubelet for Shoal's own pods: it reads the Pod the StatefulSet controller created
//! and turns one container of it into a [`Launch`]:
//! - every volume the container mounts is materialized in a directory of its own:
//!   `configMap` and `secret` volumes from the applied objects (with `items`), the
//!   `projected` ServiceAccount volume (a token bound to this Pod, `ca.crt` from
//!   `kube-root-ca.crt`, the namespace), `persistentVolumeClaim` as a directory per
//!   claim that outlives the process (the PersistentVolume), `emptyDir` as a fresh one;
//! - the process runs in a private mount namespace (`unshare --mount`) where each of
//!   those directories is bind-mounted at its `mountPath` (read-only where the Pod
//!   says so), so it reads exactly the paths the Pod mounts and nothing the harness
//!   wrote elsewhere;
//! - its environment is the container's `env`, with `fieldRef`s resolved from the Pod
//!   and `$(VAR)` references expanded as the kubelet does, plus
//!   `KUBERNETES_SERVICE_HOST`/`PORT` naming the API server, as in any pod;
//! - `status.podIP` is the stand-in's own loopback address (`127.0.x.y`), not the
//!   Pod's: the Pod's IP exists only as data, and nothing may be sent to it.
//!
//! The only host paths touched are the (empty) mount points themselves.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

use crate::k8s::Cluster;

/// How to start one container of a Pod in its place.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The program and its arguments (the container's `command` + `args`, with the
    /// image's entry point replaced by a local binary).
    pub argv: Vec<String>,
    /// The container's environment, resolved.
    pub env: BTreeMap<String, String>,
    /// Host directory, mount path, read-only; in mount order (parents first).
    pub mounts: Vec<(PathBuf, PathBuf, bool)>,
}

impl Launch {
    /// The command: `unshare --mount --propagation private`, bind mounts, then the
    /// program itself (by `exec`, so the child's pid is the program's).
    pub fn command(&self) -> Command {
        let mut script = String::from("set -e\n");
        for (host, target, read_only) in &self.mounts {
            let (host, target) = (quote(host), quote(target));
            script.push_str(&format!(
                "mkdir -p {target}\nmount --bind {host} {target}\n"
            ));
            if *read_only {
                script.push_str(&format!("mount -o remount,bind,ro {target}\n"));
            }
        }
        script.push_str("exec \"$@\"\n");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .arg("stand-in")
            .args(&self.argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(&self.env);
        command
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// What a stand-in needs besides the Pod: where to keep its volumes, its address, the
/// local binary for the image's entry point, and a token for the ServiceAccount.
#[derive(Debug)]
pub struct StandInSpec<'a> {
    pub cluster: &'a Cluster,
    pub container: &'a str,
    /// This Pod's volumes go under `<dir>/<pod uid>/`, its claims under `<dir>/pvc/`.
    pub dir: &'a Path,
    pub ip: Ipv4Addr,
    pub binary: &'a Path,
}

/// Reads `namespace/pod` from the cluster and plans its container's launch.
pub fn plan(spec: &StandInSpec<'_>, namespace: &str, pod: &str) -> Result<Launch, String> {
    let pod = get(spec.cluster, &["pod", pod, "-n", namespace])?;
    let uid = pod["metadata"]["uid"]
        .as_str()
        .ok_or("the Pod has no uid")?;
    let containers = pod["spec"]["containers"]
        .as_array()
        .ok_or("no containers")?;
    let container = containers
        .iter()
        .find(|c| c["name"] == spec.container)
        .ok_or_else(|| format!("no container {}", spec.container))?;
    let volumes: BTreeMap<&str, &Value> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    let pod_dir = spec.dir.join(uid);
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().ok_or("a mount without a name")?;
        if mount.get("subPath").is_some() {
            return Err(format!(
                "volume {name}: subPath mounts are not stood in for"
            ));
        }
        let volume = volumes
            .get(name)
            .ok_or_else(|| format!("no volume {name}"))?;
        let host = materialize(spec, &pod, volume, &pod_dir.join(name), namespace)?;
        let target = PathBuf::from(mount["mountPath"].as_str().ok_or("no mountPath")?);
        mounts.push((host, target, mount["readOnly"] == true));
    }
    // Parents before children; and a mount that would hide a source directory (an
    // emptyDir at /tmp, where the harness keeps the volumes) after every other one.
    let shadows = |target: &PathBuf| mounts.iter().any(|(host, _, _)| host.starts_with(target));
    let mut keyed: Vec<_> = mounts
        .iter()
        .map(|m| ((shadows(&m.1), m.1.components().count()), m.clone()))
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    let mounts: Vec<_> = keyed.into_iter().map(|(_, m)| m).collect();
    let env = environment(spec, &pod, container)?;
    let mut argv: Vec<String> = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    let entry = argv
        .first_mut()
        .ok_or("the container names no command: the image's entry point is unknown here")?;
    *entry = spec.binary.display().to_string();
    let argv = argv.into_iter().map(|a| expand(&a, &env)).collect();
    Ok(Launch { argv, env, mounts })
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn get(cluster: &Cluster, what: &[&str]) -> Result<Value, String> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", "json"]);
    cluster
        .kubectl_json(&args)
        .map_err(|e| format!("{}: kubectl get {}: {e}", cluster.context(), what.join(" ")))
}

/// Writes `files` (name → bytes) into a fresh `dir`.
fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for (name, bytes) in files {
        let path = dir.join(name);
        let parent = path.parent().expect("a file under dir");
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The files of a ConfigMap (`data`, `binaryData`) or Secret (`data`, base64).
fn object_files(
    spec: &StandInSpec<'_>,
    kind: &str,
    name: &str,
    namespace: &str,
    items: &Value,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let object = get(spec.cluster, &[kind, name, "-n", namespace])?;
    let base64 = base64::engine::general_purpose::STANDARD;
    let mut files = BTreeMap::new();
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let bytes = match kind {
            "secret" => base64
                .decode(text)
                .map_err(|e| format!("secret {name}/{key}: {e}"))?,
            _ => text.as_bytes().to_vec(),
        };
        files.insert(key.clone(), bytes);
    }
    for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
        let bytes = base64
            .decode(value.as_str().unwrap_or_default())
            .map_err(|e| format!("{kind} {name}/{key}: {e}"))?;
        files.insert(key.clone(), bytes);
    }
    let Some(items) = items.as_array() else {
        return Ok(files);
    };
    items
        .iter()
        .map(|item| {
            let key = item["key"].as_str().ok_or("an item without a key")?;
            let path = item["path"].as_str().unwrap_or(key);
            let bytes = files
                .get(key)
                .ok_or_else(|| format!("{kind} {name} has no key {key}"))?;
            Ok((path.to_owned(), bytes.clone()))
        })
        .collect()
}

/// Makes the directory `volume` stands for, and returns it.
fn materialize(
    spec: &StandInSpec<'_>,
    pod: &Value,
    volume: &Value,
    dir: &Path,
    namespace: &str,
) -> Result<PathBuf, String> {
    let name_of = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    if let Some(config_map) = volume.get("configMap") {
        let files = object_files(
            spec,
            "configmap",
            &name_of(config_map, "name"),
            namespace,
            &config_map["items"],
        )?;
        write_files(dir, &files)?;
    } else if let Some(secret) = volume.get("secret") {
        let files = object_files(
            spec,
            "secret",
            &name_of(secret, "secretName"),
            namespace,
            &secret["items"],
        )?;
        write_files(dir, &files)?;
    } else if let Some(projected) = volume.get("projected") {
        let mut files = BTreeMap::new();
        for source in projected["sources"].as_array().into_iter().flatten() {
            files.extend(projected_source(spec, pod, source, namespace)?);
        }
        write_files(dir, &files)?;
    } else if let Some(claim) = volume.get("persistentVolumeClaim") {
        let claim = spec
            .dir
            .join("pvc")
            .join(format!("{namespace}-{}", name_of(claim, "claimName")));
        fs::create_dir_all(&claim).map_err(|e| format!("{}: {e}", claim.display()))?;
        return Ok(claim);
    } else if volume.get("emptyDir").is_some() {
        write_files(dir, &BTreeMap::new())?;
    } else {
        return Err(format!("volume {volume}: not a kind stood in for"));
    }
    Ok(dir.to_owned())
}

fn projected_source(
    spec: &StandInSpec<'_>,
    pod: &Value,
    source: &Value,
    namespace: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    if let Some(token) = source.get("serviceAccountToken") {
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let seconds = token["expirationSeconds"].as_u64().unwrap_or(3_607);
        let issued = spec
            .cluster
            .kubectl_stdout(&[
                "create",
                "token",
                account,
                "-n",
                namespace,
                "--bound-object-kind=Pod",
                &format!("--bound-object-name={pod_name}"),
                &format!("--bound-object-uid={uid}"),
                &format!("--duration={seconds}s"),
            ])
            .map_err(|e| format!("a token for {account}: {e}"))?;
        let path = token["path"].as_str().unwrap_or("token").to_owned();
        return Ok(BTreeMap::from([(path, issued.trim().as_bytes().to_vec())]));
    }
    if let Some(config_map) = source.get("configMap") {
        let name = config_map["name"].as_str().unwrap_or_default();
        return object_files(spec, "configmap", name, namespace, &config_map["items"]);
    }
    if let Some(secret) = source.get("secret") {
        let name = secret["name"].as_str().unwrap_or_default();
        return object_files(spec, "secret", name, namespace, &secret["items"]);
    }
    if let Some(downward) = source.get("downwardAPI") {
        let mut files = BTreeMap::new();
        for item in downward["items"].as_array().into_iter().flatten() {
            let path = item["path"]
                .as_str()
                .ok_or("a downwardAPI item without a path")?;
            let field = item["fieldRef"]["fieldPath"]
                .as_str()
                .ok_or("a downwardAPI item without a fieldRef")?;
            files.insert(path.to_owned(), field_value(spec, pod, field)?.into_bytes());
        }
        return Ok(files);
    }
    Err(format!(
        "projected source {source}: not a kind stood in for"
    ))
}

/// A `fieldRef`'s value, with `status.podIP` the stand-in's own address.
fn field_value(spec: &StandInSpec<'_>, pod: &Value, field: &str) -> Result<String, String> {
    let meta = &pod["metadata"];
    let value = match field {
        "metadata.name" => meta["name"].clone(),
        "metadata.namespace" => meta["namespace"].clone(),
        "metadata.uid" => meta["uid"].clone(),
        "spec.nodeName" => pod["spec"]["nodeName"].clone(),
        "spec.serviceAccountName" => pod["spec"]["serviceAccountName"].clone(),
        "status.podIP" => Value::String(spec.ip.to_string()),
        "status.podIPs" => Value::String(spec.ip.to_string()),
        "status.hostIP" => Value::String(Ipv4Addr::LOCALHOST.to_string()),
        other => match other
            .strip_prefix("metadata.labels['")
            .map(|rest| ("labels", rest))
            .or_else(|| {
                other
                    .strip_prefix("metadata.annotations['")
                    .map(|rest| ("annotations", rest))
            }) {
            Some((map, rest)) => meta[map][rest.trim_end_matches("']")].clone(),
            None => return Err(format!("fieldRef {other}: not stood in for")),
        },
    };
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("fieldRef {field}: the Pod has no value"))
}

/// The container's `env`, resolved in order, plus the API server's address.
fn environment(
    spec: &StandInSpec<'_>,
    pod: &Value,
    container: &Value,
) -> Result<BTreeMap<String, String>, String> {
    let server = spec
        .cluster
        .server()
        .strip_prefix("https://")
        .ok_or("the API server's URL is not https")?;
    let (host, port) = server
        .rsplit_once(':')
        .ok_or("the API server's URL has no port")?;
    let mut env = BTreeMap::from([
        ("KUBERNETES_SERVICE_HOST".to_owned(), host.to_owned()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_owned()),
    ]);
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().ok_or("an env var without a name")?;
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            field_value(spec, pod, field)?
        } else if var["valueFrom"].get("resourceFieldRef").is_some() {
            // Limits mean nothing to a local process; the variable is left unset.
            continue;
        } else {
            return Err(format!("env {name}: a source not stood in for"));
        };
        env.insert(name.to_owned(), value);
    }
    Ok(env)
}

/// `$(VAR)` references to variables defined so far, as the kubelet expands them
/// (`$$(VAR)` stays literal; an unknown reference stays as written).
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(end) = tail.find(')')
            && let Some(value) = env.get(&tail[..end])
        {
            out.push_str(value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_as_the_kubelet_does() {
        let env = BTreeMap::from([("POD_IP".to_owned(), "127.0.10.1".to_owned())]);
        assert_eq!(expand("$(POD_IP):7946", &env), "127.0.10.1:7946");
        assert_eq!(expand("$$(POD_IP)", &env), "$(POD_IP)");
        assert_eq!(expand("$(NOPE) and $", &env), "$(NOPE) and $");
    }
}
