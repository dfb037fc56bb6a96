//! [`CoreDns`]: unmodified CoreDNS for one running [`Cluster`], configured as
//! `deploy/coredns/` configures a cluster's own, and reaching its API server as a
//! cluster's CoreDNS does: with a token of the `coredns` ServiceAccount of
//! `kube-system`, bound to kubeadm's `system:coredns` ClusterRole and to the RBAC
//! `deploy/coredns/` ships (so that RBAC is what is tested).
//!
//! Its Corefile is the `kubernetes` block of the shipped `deploy/coredns/Corefile`,
//! unchanged, plus only what running outside the cluster needs: the port, `bind
//! 127.0.0.1`, and `kubeconfig <file> <context>` inside the block. Nothing else of the
//! shipped Corefile runs: `forward` and `loop` would send queries off the machine, and
//! `health`, `ready` and `prometheus` listen on fixed ports.
//!
//! ```text
//! c0/coredns/Corefile           the Corefile described above
//! c0/coredns/kubeconfig         the ServiceAccount's token (0600)
//! c0/coredns/kubeadm-rbac.yaml  the ServiceAccount, and system:coredns as kubeadm ships it
//! c0/coredns.log                CoreDNS's output
//! ```

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{Processes, Spawn, log_tail};
use super::wait::{self, wait_until};
use super::{Binaries, Cluster, KubectlError, StartError};
use crate::dns::{self, RecordType, ResponseCode};

/// The binary `tests/k8s/build.sh` builds into the bin dir beside the control planes.
pub const COREDNS_BINARY: &str = "coredns";
/// The ServiceAccount CoreDNS runs as, in [`COREDNS_NAMESPACE`] (kubeadm's names).
pub const COREDNS_SERVICE_ACCOUNT: &str = "coredns";
/// The namespace of CoreDNS's ServiceAccount.
pub const COREDNS_NAMESPACE: &str = "kube-system";
/// How long CoreDNS may take to answer its first query after it starts.
pub const COREDNS_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The name asked to tell that CoreDNS serves from its API server: the `kubernetes`
/// Service every API server creates in `default`.
pub const READINESS_NAME: &str = "kubernetes.default.svc.cluster.local.";
/// The Corefile `deploy/coredns/` ships (as the `coredns` ConfigMap of kube-system).
pub const SHIPPED_COREFILE: &str = include_str!("../../../deploy/coredns/Corefile");
/// Most attempts at finding a port free for both UDP and TCP.
const PORT_ATTEMPTS_MAX: usize = 32;
/// Most lines of a Corefile's `kubernetes` block.
const BLOCK_LINES_MAX: usize = 64;

/// kubeadm v1.36.3's CoreDNS ServiceAccount, ClusterRole and ClusterRoleBinding, as
/// `cmd/kubeadm/app/phases/addons/dns/manifests.go` ships them.
const KUBEADM_RBAC: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups:
  - ""
  resources:
  - endpoints
  - services
  - pods
  - namespaces
  verbs:
  - list
  - watch
- apiGroups:
  - discovery.k8s.io
  resources:
  - endpointslices
  verbs:
  - list
  - watch
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
"#;

/// Why CoreDNS did not start. A process that was started is stopped first.
#[derive(Debug, thiserror::Error)]
pub enum CoreDnsError {
    /// The binary is missing from the bin dir. Nothing was started.
    #[error("{} is missing: run tests/k8s/build.sh, which builds CoreDNS beside the control planes", .0.display())]
    Binary(PathBuf),
    /// The shipped Corefile has no usable `kubernetes` block. Nothing was started.
    #[error("deploy/coredns/Corefile: {0}")]
    Corefile(String),
    /// Locating binaries, writing a file, finding a port or spawning failed, or
    /// CoreDNS exited while starting ([`StartError::Exited`], with its log's tail).
    #[error(transparent)]
    Start(#[from] StartError),
    /// Installing the RBAC or creating the token failed.
    #[error(transparent)]
    Kubectl(#[from] KubectlError),
    /// CoreDNS did not answer [`READINESS_NAME`] before [`COREDNS_STARTUP_TIMEOUT`].
    #[error("coredns did not answer {READINESS_NAME} within {} s (last seen: {last}); last lines of {}:\n{tail}", COREDNS_STARTUP_TIMEOUT.as_secs(), log.display())]
    NotAnswering {
        last: String,
        log: PathBuf,
        tail: String,
    },
}

/// One running CoreDNS, listening on 127.0.0.1 (UDP and TCP). Dropping it stops it.
#[derive(Debug)]
pub struct CoreDns {
    addr: SocketAddr,
    log: PathBuf,
    corefile: PathBuf,
    processes: Processes,
}

impl CoreDns {
    /// Installs CoreDNS's RBAC in `cluster` (kubeadm's, then `deploy/coredns/`), starts
    /// CoreDNS with its ServiceAccount's token, and waits until it answers
    /// [`READINESS_NAME`].
    pub fn start(cluster: &Cluster) -> Result<Self, CoreDnsError> {
        let binary = Binaries::locate()?.dir().join(COREDNS_BINARY);
        if !binary.is_file() {
            return Err(CoreDnsError::Binary(binary));
        }
        let dir = cluster.dir().join("coredns");
        fs::create_dir_all(&dir).map_err(|source| StartError::Io {
            what: "creating",
            path: dir.clone(),
            source,
        })?;
        let token = install_rbac(cluster, &dir)?;
        let kubeconfig = dir.join("kubeconfig");
        write(&kubeconfig, &token_kubeconfig(cluster, &token), 0o600)?;
        let port = free_port()?;
        let corefile = dir.join("Corefile");
        let text = corefile_for(SHIPPED_COREFILE, port, &kubeconfig, cluster.context())?;
        write(&corefile, &text, 0o644)?;
        let log = cluster.dir().join("coredns.log");
        let mut processes = Processes::default();
        processes.spawn(Spawn {
            name: format!("{}/coredns", cluster.context()),
            binary,
            args: vec!["-conf".to_owned(), corefile.display().to_string()],
            env: Vec::new(),
            log: log.clone(),
        })?;
        let mut coredns = CoreDns {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            log,
            corefile,
            processes,
        };
        coredns.wait_answering()?;
        tracing::info!(cluster = %cluster.context(), addr = %coredns.addr, "coredns answering");
        Ok(coredns)
    }

    /// Where it listens, UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log (stdout and stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The Corefile it runs.
    pub fn corefile(&self) -> &Path {
        &self.corefile
    }

    /// Asks it for the `record_type` records of `name`.
    pub fn query(&self, name: &str, record_type: RecordType) -> Result<dns::Answer, dns::DnsError> {
        dns::query(self.addr, name, record_type)
    }

    fn wait_answering(&mut self) -> Result<(), CoreDnsError> {
        let deadline = wait::now() + COREDNS_STARTUP_TIMEOUT;
        let addr = self.addr;
        let processes = &mut self.processes;
        let outcome = wait_until(deadline, || {
            processes.check_running()?;
            Ok::<_, StartError>(match dns::query(addr, READINESS_NAME, RecordType::A) {
                Ok(answer)
                    if answer.rcode == ResponseCode::NoError && !answer.addresses.is_empty() =>
                {
                    Ok(())
                }
                Ok(answer) => Err(format!("{answer:?}")),
                Err(e) => Err(e.to_string()),
            })
        })?;
        outcome.map_err(|last| CoreDnsError::NotAnswering {
            last,
            log: self.log.clone(),
            tail: log_tail(&self.log, 40),
        })
    }
}

/// Applies kubeadm's CoreDNS RBAC and `deploy/coredns/`, and returns a token of the
/// ServiceAccount.
fn install_rbac(cluster: &Cluster, dir: &Path) -> Result<String, CoreDnsError> {
    let kubeadm = dir.join("kubeadm-rbac.yaml");
    write(&kubeadm, KUBEADM_RBAC, 0o644)?;
    cluster.kubectl_stdout(&["apply", "-f", &kubeadm.display().to_string()])?;
    let shipped = crate::mesh::repo_root().join("deploy/coredns");
    cluster.kubectl_stdout(&["apply", "-k", &shipped.display().to_string()])?;
    let token = cluster.kubectl_stdout(&[
        "create",
        "token",
        COREDNS_SERVICE_ACCOUNT,
        "--namespace",
        COREDNS_NAMESPACE,
        "--duration=24h",
    ])?;
    Ok(token.trim().to_owned())
}

fn token_kubeconfig(cluster: &Cluster, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: coredns\n  user:\n    token: {token}\n\
         contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: coredns\n\
         current-context: {name}\n",
        name = cluster.context(),
        server = cluster.server(),
        ca = cluster.ca_path().display(),
    )
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what, source| StartError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    fs::write(path, contents).map_err(|e| io("writing", e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io("setting the mode of", e))
}

/// A port of 127.0.0.1 free for both UDP and TCP when asked (nothing holds it after).
fn free_port() -> Result<u16, StartError> {
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS_MAX {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(StartError::Ports)?;
        let port = udp.local_addr().map_err(StartError::Ports)?.port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(StartError::Ports(last.expect("at least one attempt")))
}

/// The `kubernetes` block of `corefile`: from its `kubernetes ... {` line to the brace
/// that closes it, as written.
pub fn kubernetes_block(corefile: &str) -> Result<Vec<&str>, CoreDnsError> {
    let mut lines = corefile
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("kubernetes "));
    let first = lines
        .next()
        .ok_or_else(|| CoreDnsError::Corefile("no `kubernetes` block".to_owned()))?;
    if !first.trim_end().ends_with('{') {
        return Err(CoreDnsError::Corefile(format!(
            "`{}` opens no block",
            first.trim()
        )));
    }
    let mut block = vec![first];
    let mut depth = 1usize;
    for line in lines.take(BLOCK_LINES_MAX) {
        block.push(line);
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        if depth == 0 {
            return Ok(block);
        }
    }
    Err(CoreDnsError::Corefile(format!(
        "the `kubernetes` block does not close within {BLOCK_LINES_MAX} lines"
    )))
}

/// The Corefile of a CoreDNS outside the cluster: `corefile`'s `kubernetes` block, with
/// `kubeconfig <file> <context>` as its first line, in a server block on
/// 127.0.0.1:`port`.
pub fn corefile_for(
    corefile: &str,
    port: u16,
    kubeconfig: &Path,
    context: &str,
) -> Result<String, CoreDnsError> {
    let block = kubernetes_block(corefile)?;
    let (first, rest) = block.split_first().expect("a block has its first line");
    let indent = rest
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| &l[..l.len() - l.trim_start().len()])
        .unwrap_or("    ");
    let mut text = format!(
        "# deploy/coredns/Corefile's kubernetes block, unchanged but for the kubeconfig line,\n\
         # on loopback (written by shoal-tests).\n.:{port} {{\n    bind 127.0.0.1\n{first}\n\
         {indent}kubeconfig {} {context}\n",
        kubeconfig.display()
    );
    for line in rest {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("}\n");
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_corefile_serves_clusterset_local_from_the_kubernetes_plugin() {
        let block = kubernetes_block(SHIPPED_COREFILE).expect("a kubernetes block");
        let zones: Vec<&str> = block[0].split_whitespace().collect();
        assert!(zones.contains(&"cluster.local"), "{zones:?}");
        assert!(zones.contains(&"clusterset.local"), "{zones:?}");
        assert!(
            block
                .iter()
                .any(|l| l.trim() == "multicluster clusterset.local"),
            "{block:?}"
        );
        assert_eq!(block.last().map(|l| l.trim()), Some("}"));
    }

    #[test]
    fn the_test_corefile_adds_only_the_out_of_cluster_lines() {
        let text =
            corefile_for(SHIPPED_COREFILE, 5353, Path::new("/k/cfg"), "c1").expect("corefile");
        let block = kubernetes_block(SHIPPED_COREFILE).expect("block");
        let added: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| !block.contains(l))
            .collect();
        assert_eq!(
            added,
            [
                ".:5353 {",
                "    bind 127.0.0.1",
                "       kubeconfig /k/cfg c1",
                "}"
            ]
        );
    }

    #[test]
    fn an_unclosed_block_is_refused() {
        let error =
            kubernetes_block(".:53 {\n    kubernetes cluster.local {\n    ttl 30\n").unwrap_err();
        assert!(matches!(error, CoreDnsError::Corefile(_)), "{error}");
    }
}
