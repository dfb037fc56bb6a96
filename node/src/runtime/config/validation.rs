//! From the deserialized schema to a [`RuntimeConfig`]: addresses parsed, names and
//! ranges checked (each error naming its key), paths resolved against the file's
//! directory.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::{ClusterId, MemberId, NetAddr, NetworkMode, ReplicaId};

use super::super::backend::standalone::WATCH_POLL_MS_MIN;
use super::super::dns::{DnsConfig, DnsLimits, RateLimit};
use super::super::http::ServerLimits;
use super::schema::{
    BackendSection, DnsSection, FileSchema, HttpSection, KubernetesSection, LeaseSection, Network,
    SeedSection, StandaloneSection, TlsSection,
};
use super::{
    BackendConfig, ConfigFileError, POD_NAME_VAR, RuntimeConfig, StandaloneLimits, TlsPaths,
};
use crate::core::{Config, LeaseConfig, Seed};

/// Slowest polling of the standalone backend's `in/`.
const POLL_MS_MAX: u64 = 60_000;
/// Range of `backend.leader_lease_ms`.
const LEADER_LEASE_MS: RangeInclusive<u64> = 1_000..=600_000;
/// Shortest `backend.leader_renew_ms` (and it is below `leader_lease_ms`).
const LEADER_RENEW_MS_MIN: u64 = 200;
/// Shortest `backend.leader_retry_ms` (and it is below `leader_renew_ms`).
const LEADER_RETRY_MS_MIN: u64 = 100;
/// Longest leader-election identity: a pod name's bound (a DNS subdomain).
const IDENTITY_BYTES_MAX: usize = 253;
/// Longest DNS-1123 subdomain (the `clusterset` name).
const SUBDOMAIN_BYTES_MAX: usize = 253;
/// Range of `http.header_read_timeout_ms`.
const HTTP_HEADER_READ_TIMEOUT_MS: RangeInclusive<u64> = 100..=60_000;
/// Shortest `http.idle_timeout_ms` (and it is at most `header_read_timeout_ms`).
const HTTP_IDLE_TIMEOUT_MS_MIN: u64 = 100;
/// Most `http.connections_max`: each is a file descriptor and a task.
const HTTP_CONNECTIONS_MAX: u64 = 16_384;
/// Range of `dns.queries_per_second` and of `dns.burst`, per client.
const DNS_QUERIES: RangeInclusive<u64> = 1..=1_000_000;
/// Most `dns.tcp_connections_max`: each is a file descriptor and a task.
const DNS_TCP_CONNECTIONS_MAX: u64 = 16_384;
/// Range of `dns.tcp_idle_timeout_ms`.
const DNS_TCP_IDLE_TIMEOUT_MS: RangeInclusive<u64> = 100..=60_000;

fn field(field: impl Into<String>, reason: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks `file` and builds the configuration. `pod_name` is `POD_NAME`'s value.
pub(super) fn build(
    file: FileSchema,
    base: &Path,
    pod_name: Option<&str>,
) -> Result<RuntimeConfig, ConfigFileError> {
    let cluster =
        ClusterId::new(file.cluster.clone()).map_err(|e| field("cluster", e.to_string()))?;
    let replica = ReplicaId(file.replica);
    check_subdomain("clusterset", &file.clusterset)?;
    let (listen, advertise) = addresses(&file)?;
    let tls = tls_paths(&file.tls, base)?;
    let (http_listen, http_health_listen, http_limits) = http(&file.http)?;
    let member = MemberId {
        cluster: cluster.clone(),
        replica,
    };
    let backend = backend(&file.backend, base, &member, pod_name)?;
    let publisher = publisher(file.publisher, &backend, replica)?;
    let core = core_config(&file, member, advertise, publisher)?;
    let dns = dns(
        file.dns.as_ref(),
        &backend,
        &file,
        (http_listen, http_health_listen),
    )?;
    let transport = file.transport.limits();
    transport
        .validate()
        .map_err(|e| field("transport", e.to_string()))?;
    Ok(RuntimeConfig {
        core,
        cluster,
        replica,
        clusterset: file.clusterset,
        listen,
        advertise,
        data_dir: resolve(base, &file.data_dir),
        tls,
        http_listen,
        http_health_listen,
        http_limits,
        backend,
        network: match file.network {
            Network::Flat => NetworkMode::Flat,
            Network::Island => NetworkMode::Island,
        },
        chaos_enabled: file.chaos.enabled,
        transport,
        log: file.log.filter,
        dns,
    })
}

/// `[dns]`: `None` when absent or not enabled (by default, with the Kubernetes
/// backend). Its keys are checked either way.
fn dns(
    section: Option<&DnsSection>,
    backend: &BackendConfig,
    file: &FileSchema,
    (http, health): (SocketAddr, Option<SocketAddr>),
) -> Result<Option<DnsConfig>, ConfigFileError> {
    let Some(s) = section else {
        return Ok(None);
    };
    let listen = socket_addr("dns.listen", &s.listen)?;
    // DNS serves UDP and TCP: its address must be free of the QUIC socket (UDP) and
    // of the HTTP listeners (TCP).
    let quic = socket_addr("listen", &file.listen)?;
    let taken = [
        ("listen", Some(quic)),
        ("http.listen", Some(http)),
        ("http.health_listen", health),
    ];
    if listen.port() != 0
        && let Some((owner, _)) = taken.iter().find(|(_, addr)| *addr == Some(listen))
    {
        return Err(field(
            "dns.listen",
            format!("{listen} is {owner}'s address: the DNS server needs its own port"),
        ));
    }
    in_range(
        "dns.queries_per_second",
        s.queries_per_second,
        DNS_QUERIES,
        "",
    )?;
    in_range("dns.burst", s.burst, DNS_QUERIES, "")?;
    in_range(
        "dns.tcp_connections_max",
        s.tcp_connections_max,
        1..=DNS_TCP_CONNECTIONS_MAX,
        "",
    )?;
    in_range(
        "dns.tcp_idle_timeout_ms",
        s.tcp_idle_timeout_ms,
        DNS_TCP_IDLE_TIMEOUT_MS,
        "",
    )?;
    let standalone = matches!(backend, BackendConfig::Standalone { .. });
    if !s.enabled.unwrap_or(standalone) {
        return Ok(None);
    }
    let count = |n: u64| u32::try_from(n).expect("checked to be at most 1000000");
    Ok(Some(DnsConfig {
        listen,
        limits: DnsLimits {
            rate: RateLimit::per_second(count(s.queries_per_second), count(s.burst)),
            tcp_connections_max: usize::try_from(s.tcp_connections_max)
                .expect("checked to be at most 16384"),
            tcp_idle_timeout: Duration::from_millis(s.tcp_idle_timeout_ms),
        },
    }))
}

fn socket_addr(name: &str, text: &str) -> Result<SocketAddr, ConfigFileError> {
    text.parse().map_err(|_| {
        field(
            name,
            format!("{text:?} is not an address like 127.0.0.1:7100"),
        )
    })
}

/// `[http]`: the two addresses and the API's connection limits.
fn http(
    section: &HttpSection,
) -> Result<(SocketAddr, Option<SocketAddr>, ServerLimits), ConfigFileError> {
    let listen = socket_addr("http.listen", &section.listen)?;
    let health = match &section.health_listen {
        Some(text) => Some(socket_addr("http.health_listen", text)?),
        None => None,
    };
    if health.is_some_and(|h| h == listen && h.port() != 0) {
        return Err(field(
            "http.health_listen",
            format!("{listen} is http.listen's address: the health listener needs its own"),
        ));
    }
    let s = section;
    in_range(
        "http.header_read_timeout_ms",
        s.header_read_timeout_ms,
        HTTP_HEADER_READ_TIMEOUT_MS,
        "",
    )?;
    in_range(
        "http.idle_timeout_ms",
        s.idle_timeout_ms,
        HTTP_IDLE_TIMEOUT_MS_MIN..=s.header_read_timeout_ms,
        ": it must not exceed http.header_read_timeout_ms, whose timer also runs while \
         a connection waits for its next request",
    )?;
    in_range(
        "http.connections_max",
        s.connections_max,
        1..=HTTP_CONNECTIONS_MAX,
        "",
    )?;
    in_range(
        "http.connections_per_client_max",
        s.connections_per_client_max,
        1..=s.connections_max,
        ": it must not exceed http.connections_max",
    )?;
    let count = |n: u64| usize::try_from(n).expect("checked to be at most 16384");
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(s.idle_timeout_ms),
        connections_max: count(s.connections_max),
        connections_per_client_max: count(s.connections_per_client_max),
        ..ServerLimits::default()
    };
    Ok((listen, health, limits))
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn addresses(file: &FileSchema) -> Result<(SocketAddr, SocketAddr), ConfigFileError> {
    let listen = socket_addr("listen", &file.listen)?;
    let advertise = match &file.advertise {
        Some(a) => socket_addr("advertise", a)?,
        None => listen,
    };
    if advertise.ip().is_unspecified() {
        return Err(field(
            if file.advertise.is_some() {
                "advertise"
            } else {
                "listen"
            },
            "peers cannot dial an unspecified address: set `advertise`",
        ));
    }
    Ok((listen, advertise))
}

/// A Kubernetes DNS-1123 subdomain: dot-separated lowercase labels.
fn check_subdomain(name: &str, value: &str) -> Result<(), ConfigFileError> {
    if value.is_empty() || value.len() > SUBDOMAIN_BYTES_MAX {
        return Err(field(
            name,
            format!(
                "must be 1 to {SUBDOMAIN_BYTES_MAX} bytes long, got {}",
                value.len()
            ),
        ));
    }
    let label_ok = |label: &str| {
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(&first), Some(&last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|&b| alnum(b) || b == b'-')
            }
            _ => false,
        }
    };
    if !value.split('.').all(label_ok) {
        return Err(field(
            name,
            format!(
                "{value:?} is not a DNS subdomain: dot-separated labels of lowercase \
                 letters, digits and '-', each starting and ending with a letter or digit"
            ),
        ));
    }
    Ok(())
}

fn seeds(sections: &[SeedSection]) -> Result<Vec<Seed>, ConfigFileError> {
    sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let cluster = ClusterId::new(s.cluster.clone())
                .map_err(|e| field(format!("seeds[{i}].cluster"), e.to_string()))?;
            let addr = socket_addr(&format!("seeds[{i}].addr"), &s.addr)?;
            Ok(Seed {
                member: MemberId {
                    cluster,
                    replica: ReplicaId(s.replica),
                },
                addr: NetAddr::from(addr),
            })
        })
        .collect()
}

fn tls_paths(tls: &TlsSection, base: &Path) -> Result<TlsPaths, ConfigFileError> {
    let paths = TlsPaths {
        ca: resolve(base, &tls.ca),
        cert: resolve(base, &tls.cert),
        key: resolve(base, &tls.key),
        clusterset_dir: resolve(base, &tls.clusterset_dir),
    };
    for (name, path) in [
        ("tls.ca", &paths.ca),
        ("tls.cert", &paths.cert),
        ("tls.key", &paths.key),
    ] {
        check_file(name, path)?;
    }
    if !paths.clusterset_dir.is_dir() {
        return Err(field(
            "tls.clusterset_dir",
            format!("{} is not a directory", paths.clusterset_dir.display()),
        ));
    }
    Ok(paths)
}

fn check_file(name: &str, path: &Path) -> Result<(), ConfigFileError> {
    if path.is_file() {
        return Ok(());
    }
    Err(field(
        name,
        format!("{} is not a readable file", path.display()),
    ))
}

fn backend(
    section: &BackendSection,
    base: &Path,
    member: &MemberId,
    pod_name: Option<&str>,
) -> Result<BackendConfig, ConfigFileError> {
    match section {
        BackendSection::Standalone(s) => standalone(s, base),
        BackendSection::Kubernetes(k) => kubernetes(k, base, member, pod_name),
    }
}

/// The largest `backend.out_files_max`: more files than one directory should hold.
const OUT_FILES_MAX_MAX: usize = 65_536;

fn standalone(s: &StandaloneSection, base: &Path) -> Result<BackendConfig, ConfigFileError> {
    in_range(
        "backend.poll_ms",
        s.poll_ms,
        WATCH_POLL_MS_MIN..=POLL_MS_MAX,
        "",
    )?;
    in_range(
        "backend.out_files_max",
        s.out_files_max as u64,
        1..=OUT_FILES_MAX_MAX as u64,
        "",
    )?;
    Ok(BackendConfig::Standalone {
        dir: resolve(base, &s.dir),
        poll_ms: s.poll_ms,
        limits: StandaloneLimits {
            out_files_max: s.out_files_max,
            symlinks_outside: s.symlinks_outside,
        },
    })
}

fn kubernetes(
    k: &KubernetesSection,
    base: &Path,
    member: &MemberId,
    pod_name: Option<&str>,
) -> Result<BackendConfig, ConfigFileError> {
    let kubeconfig = k.kubeconfig.as_deref().map(|p| resolve(base, p));
    if let Some(path) = &kubeconfig {
        check_file("backend.kubeconfig", path)?;
    }
    if k.context.as_deref().is_some_and(str::is_empty) {
        return Err(field(
            "backend.context",
            "is empty: name a context of the kubeconfig, or remove the key",
        ));
    }
    shoal_proto::Namespace::new(k.namespace.clone())
        .map_err(|e| field("backend.namespace", e.to_string()))?;
    check_leader_timing(k)?;
    Ok(BackendConfig::Kubernetes {
        kubeconfig,
        context: k.context.clone(),
        namespace: k.namespace.clone(),
        identity: identity(k.identity.as_deref(), member, pod_name)?,
        leader_lease_ms: k.leader_lease_ms,
        leader_renew_ms: k.leader_renew_ms,
        leader_retry_ms: k.leader_retry_ms,
    })
}

/// The leader election's timing: retry < renew deadline < lease, as client-go's.
fn check_leader_timing(k: &KubernetesSection) -> Result<(), ConfigFileError> {
    in_range(
        "backend.leader_lease_ms",
        k.leader_lease_ms,
        LEADER_LEASE_MS,
        "",
    )?;
    in_range(
        "backend.leader_renew_ms",
        k.leader_renew_ms,
        LEADER_RENEW_MS_MIN..=k.leader_lease_ms.saturating_sub(1),
        ": it must be less than backend.leader_lease_ms",
    )?;
    in_range(
        "backend.leader_retry_ms",
        k.leader_retry_ms,
        LEADER_RETRY_MS_MIN..=k.leader_renew_ms.saturating_sub(1),
        ": it must be less than backend.leader_renew_ms",
    )
}

fn in_range(
    name: &str,
    value: u64,
    range: RangeInclusive<u64>,
    why: &str,
) -> Result<(), ConfigFileError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(field(
        name,
        format!(
            "{value} is outside {}..={}{why}",
            range.start(),
            range.end()
        ),
    ))
}

/// `backend.identity`, else `POD_NAME`, else `<cluster>-<replica>`.
fn identity(
    configured: Option<&str>,
    member: &MemberId,
    pod_name: Option<&str>,
) -> Result<String, ConfigFileError> {
    let check = |value: &str| -> Result<String, String> {
        if value.is_empty() || value.len() > IDENTITY_BYTES_MAX {
            return Err(format!(
                "must be 1 to {IDENTITY_BYTES_MAX} bytes long, got {}",
                value.len()
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{value:?} must be printable ASCII without spaces"));
        }
        Ok(value.to_owned())
    };
    match (configured, pod_name) {
        (Some(value), _) => check(value).map_err(|reason| field("backend.identity", reason)),
        (None, Some(pod)) => check(pod).map_err(|reason| ConfigFileError::Env {
            var: POD_NAME_VAR.to_owned(),
            key: "backend.identity".to_owned(),
            reason,
        }),
        (None, None) => Ok(format!("{}-{}", member.cluster, member.replica.0)),
    }
}

/// Standalone: `publisher`, default replica 0. Kubernetes: the leader election
/// chooses, so every replica starts as a standby.
fn publisher(
    configured: Option<bool>,
    backend: &BackendConfig,
    replica: ReplicaId,
) -> Result<bool, ConfigFileError> {
    match backend {
        BackendConfig::Standalone { .. } => Ok(configured.unwrap_or(replica.0 == 0)),
        BackendConfig::Kubernetes { .. } if configured == Some(true) => Err(field(
            "publisher",
            "with backend kind \"kubernetes\" the leader election chooses the publisher: \
             remove the key",
        )),
        BackendConfig::Kubernetes { .. } => Ok(false),
    }
}

fn core_config(
    file: &FileSchema,
    member: MemberId,
    advertise: SocketAddr,
    publisher: bool,
) -> Result<Config, ConfigFileError> {
    let seeds = seeds(&file.seeds)?;
    let mut core = file.preset.config();
    core.member = member;
    core.addr = NetAddr::from(advertise);
    core.members_expected = file
        .members_expected
        .unwrap_or(u32::try_from(seeds.len() + 1).unwrap_or(u32::MAX));
    core.seeds = seeds;
    core.publisher = publisher;
    file.timing.apply(&mut core);
    core.lease = lease(&file.lease)?;
    core.validate()
        .map_err(|e| field(file_field(e.field), e.reason))?;
    Ok(core)
}

fn lease(section: &LeaseSection) -> Result<LeaseConfig, ConfigFileError> {
    let voters = section
        .voters
        .iter()
        .enumerate()
        .map(|(i, v)| {
            ClusterId::new(v.clone())
                .map_err(|e| field(format!("lease.voters[{i}]"), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(LeaseConfig {
        voters,
        lease_ms: section.lease_ms,
        renew_ms: section.renew_ms,
        round_timeout_ms: section.round_timeout_ms,
        drift_ppm: section.drift_ppm,
    })
}

/// The file's name for a field the core's validation names.
fn file_field(core_field: &str) -> String {
    if let Some(rest) = core_field.strip_prefix("swim.") {
        return format!("timing.{rest}");
    }
    match core_field {
        "withdraw_grace_ms" | "anti_entropy_period_ms" | "nearest_margin_ms" => {
            format!("timing.{core_field}")
        }
        other => other.to_owned(),
    }
}
