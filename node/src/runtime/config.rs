//! The configuration file: one TOML file, `SHOAL_*` environment overrides, and
//! validation that names the bad field.
//!
//! ```toml
//! cluster = "us-east"            # this cluster's id (a DNS label)
//! replica = 0                    # this replica's StatefulSet ordinal
//! preset = "lan"                 # "lan" or "wan" (the default): timing presets
//! listen = "127.0.0.1:7100"      # QUIC (UDP)
//! advertise = "127.0.0.1:7100"   # what peers dial; default: listen
//! data_dir = "/var/lib/shoal"    # the sled store lives in data_dir/store
//! publisher = true               # default: replica == 0
//! members_expected = 3           # all replicas of all clusters; default: seeds + 1
//! network = "flat"               # "flat" (pod IPs routable) or "island"
//!
//! [[seeds]]                      # members to announce to at start
//! cluster = "eu-west"
//! replica = 0
//! addr = "127.0.0.1:7200"
//!
//! [tls]                          # file paths; secrets are never inline
//! ca = "certs/ca.crt"
//! cert = "certs/us-east.crt"
//! key = "certs/us-east.key"
//! clusterset_dir = "certs"       # every member cluster's certificate
//!
//! [http]
//! listen = "127.0.0.1:7101"      # the API and /metrics; loopback by default
//!
//! [backend]
//! kind = "standalone"            # the only kind so far
//! dir = "standalone"             # in/ and out/ live here
//! poll_ms = 200                  # how often in/ is checked for changes
//!
//! [lease]
//! voters = ["us-east", "eu-west", "ap-southeast"]
//! # lease_ms, renew_ms, round_timeout_ms, drift_ppm override the preset
//!
//! [timing]   # overrides of the preset: probe_period_ms, probe_rtt_ms,
//!            # suspect_to_down_ms, gossip_period_ms, announce_period_ms,
//!            # announce_down_period_ms, withdraw_grace_ms, anti_entropy_period_ms
//!
//! [chaos]
//! enabled = false                # fault injection through the API (`shoal chaos`)
//!
//! [transport]  # limits: uni_streams_per_connection_max, stream_receive_window_bytes,
//!              # connection_receive_window_bytes, idle_timeout_ms, keepalive_ms,
//!              # inbound_queue_max, outbound_queue_max, connections_max,
//!              # peer_bytes_per_s_max
//!
//! [log]
//! filter = "info"                # a tracing filter
//! ```
//!
//! Relative paths are relative to the file's directory. Unknown keys are errors.
//!
//! **Environment overrides** win over the file: `SHOAL_<KEY>` for a top-level key
//! (`SHOAL_CLUSTER`, `SHOAL_DATA_DIR`) and `SHOAL_<SECTION>_<KEY>` for a section's
//! (`SHOAL_HTTP_LISTEN`, `SHOAL_CHAOS_ENABLED`, `SHOAL_TIMING_WITHDRAW_GRACE_MS`).
//! `SHOAL_LEASE_VOTERS` is a comma-separated list. A value is read as TOML (a number,
//! `true`), else as text. An unknown `SHOAL_` variable is an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shoal_proto::{ClusterId, MemberId, NetAddr, NetworkMode, ReplicaId};

use super::transport::TransportLimits;
use crate::core::{Config, LeaseConfig, Seed};

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "SHOAL_";
/// Largest config file read.
const FILE_BYTES_MAX: u64 = 1024 * 1024;
const TOP_LEVEL_KEYS: [&str; 9] = [
    "cluster",
    "replica",
    "preset",
    "listen",
    "advertise",
    "data_dir",
    "publisher",
    "members_expected",
    "network",
];
const SECTIONS: [&str; 8] = [
    "tls",
    "http",
    "backend",
    "lease",
    "timing",
    "chaos",
    "transport",
    "log",
];

/// A configuration that cannot be used. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// Not TOML, or a key of the wrong type or unknown (toml names it).
    #[error("{0}")]
    Syntax(String),
    #[error("invalid config field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
}

impl ConfigFileError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConfigFileError::Read { .. } => "read",
            ConfigFileError::Syntax(_) => "syntax",
            ConfigFileError::Field { .. } => "field",
            ConfigFileError::Env { .. } => "env",
        }
    }
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    cluster: String,
    #[serde(default)]
    replica: u16,
    preset: Option<String>,
    listen: String,
    advertise: Option<String>,
    data_dir: PathBuf,
    publisher: Option<bool>,
    members_expected: Option<u32>,
    network: Option<String>,
    #[serde(default)]
    seeds: Vec<SeedFile>,
    tls: TlsFile,
    #[serde(default)]
    http: HttpFile,
    #[serde(default)]
    backend: BackendFile,
    #[serde(default)]
    lease: LeaseFile,
    #[serde(default)]
    timing: TimingFile,
    #[serde(default)]
    chaos: ChaosFile,
    #[serde(default)]
    transport: TransportFile,
    #[serde(default)]
    log: LogFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    cluster: String,
    #[serde(default)]
    replica: u16,
    addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    clusterset_dir: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    kind: Option<String>,
    dir: Option<PathBuf>,
    poll_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFile {
    voters: Option<Vec<String>>,
    lease_ms: Option<u64>,
    renew_ms: Option<u64>,
    round_timeout_ms: Option<u64>,
    drift_ppm: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimingFile {
    probe_period_ms: Option<u64>,
    probe_rtt_ms: Option<u64>,
    suspect_to_down_ms: Option<u64>,
    gossip_period_ms: Option<u64>,
    announce_period_ms: Option<u64>,
    announce_down_period_ms: Option<u64>,
    withdraw_grace_ms: Option<u64>,
    anti_entropy_period_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosFile {
    #[serde(default)]
    enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransportFile {
    uni_streams_per_connection_max: Option<u32>,
    stream_receive_window_bytes: Option<u32>,
    connection_receive_window_bytes: Option<u32>,
    idle_timeout_ms: Option<u64>,
    keepalive_ms: Option<u64>,
    inbound_queue_max: Option<usize>,
    outbound_queue_max: Option<usize>,
    connections_max: Option<usize>,
    peer_bytes_per_s_max: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    filter: Option<String>,
}

/// The TLS material's paths (never the material itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub clusterset_dir: PathBuf,
}

/// Where imports are written and exports read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendConfig {
    /// A directory of Kubernetes-shaped YAML: `in/` and `out/`.
    Standalone { dir: PathBuf, poll_ms: u64 },
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The core's configuration, built from the preset and the overrides, validated.
    pub core: Config,
    pub cluster: ClusterId,
    pub replica: ReplicaId,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsPaths,
    pub http_listen: SocketAddr,
    pub backend: BackendConfig,
    pub network: NetworkMode,
    pub chaos_enabled: bool,
    pub transport: TransportLimits,
    pub log: String,
}

impl RuntimeConfig {
    /// The standalone backend's directory.
    pub fn backend_dir(&self) -> PathBuf {
        match &self.backend {
            BackendConfig::Standalone { dir, .. } => dir.clone(),
        }
    }

    pub fn backend_poll_ms(&self) -> u64 {
        match &self.backend {
            BackendConfig::Standalone { poll_ms, .. } => *poll_ms,
        }
    }

    pub fn transport_limits(&self) -> TransportLimits {
        self.transport.clone()
    }

    /// A readable summary for `shoal config check`. Paths only, no secrets.
    pub fn summary(&self) -> String {
        let c = &self.core;
        let seeds: Vec<String> = c
            .seeds
            .iter()
            .map(|s| format!("{} at {}", s.member, s.addr))
            .collect();
        let voters: Vec<String> = c.lease.voters.iter().map(ToString::to_string).collect();
        format!(
            "member      {}/{} ({})\n\
             quic        listen {}, advertise {}\n\
             http        {}\n\
             data        {}\n\
             tls         ca {}, cert {}, key {}, clusterset {}\n\
             backend     standalone {} (poll {} ms)\n\
             seeds       {}\n\
             timing      probe {} ms, suspect {} ms, withdraw grace {} ms, anti-entropy {} ms\n\
             lease       voters [{}], lease {} ms, renew {} ms, drift {} ppm\n\
             chaos       {}",
            self.cluster,
            self.replica,
            if c.publisher { "publisher" } else { "standby" },
            self.listen,
            self.advertise,
            self.http_listen,
            self.data_dir.display(),
            self.tls.ca.display(),
            self.tls.cert.display(),
            self.tls.key.display(),
            self.tls.clusterset_dir.display(),
            self.backend_dir().display(),
            self.backend_poll_ms(),
            if seeds.is_empty() {
                "none".to_owned()
            } else {
                seeds.join(", ")
            },
            c.swim.probe_period_ms,
            c.swim.suspect_to_down_ms,
            c.withdraw_grace_ms,
            c.anti_entropy_period_ms,
            voters.join(", "),
            c.lease.lease_ms,
            c.lease.renew_ms,
            c.lease.drift_ppm,
            if self.chaos_enabled { "enabled" } else { "off" },
        )
    }
}

/// Reads, overrides and validates the file at `path`.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RuntimeConfig, ConfigFileError> {
    let read_error = |reason: String| ConfigFileError::Read {
        path: path.display().to_string(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| read_error(e.to_string()))?
        .len();
    if len > FILE_BYTES_MAX {
        return Err(read_error(format!(
            "{len} bytes, more than {FILE_BYTES_MAX}"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_in(&text, env, base)
}

/// Parses `text` as if read from a file in the current directory (for tests).
pub fn parse(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<RuntimeConfig, ConfigFileError> {
    parse_in(text, env, Path::new("."))
}

fn parse_in(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    base: &Path,
) -> Result<RuntimeConfig, ConfigFileError> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| ConfigFileError::Syntax(e.to_string()))?;
    apply_env(&mut table, env)?;
    let file: FileConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigFileError::Syntax(e.to_string()))?;
    build(file, base)
}

/// Applies `SHOAL_*` overrides onto the parsed table.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigFileError> {
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        let env_error = |reason: String| ConfigFileError::Env {
            var: var.clone(),
            reason,
        };
        if TOP_LEVEL_KEYS.contains(&key.as_str()) {
            table.insert(key, env_value(&value));
            continue;
        }
        let Some((section, name)) = key.split_once('_') else {
            return Err(env_error("not a known setting".into()));
        };
        if !SECTIONS.contains(&section) {
            return Err(env_error(format!(
                "not a known setting (sections: {})",
                SECTIONS.join(", ")
            )));
        }
        let value = if section == "lease" && name == "voters" {
            toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            )
        } else {
            env_value(&value)
        };
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(env_error(format!("[{section}] is not a table in the file")));
        };
        section_table.insert(name.to_owned(), value);
    }
    Ok(())
}

/// A value from the environment: TOML if it parses as a scalar, else text.
fn env_value(text: &str) -> toml::Value {
    let parsed: Option<toml::Value> = format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Table(_) | toml::Value::Array(_)));
    parsed.unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn socket_addr(name: &str, text: &str) -> Result<SocketAddr, ConfigFileError> {
    text.parse().map_err(|_| {
        field(
            name,
            format!("{text:?} is not an address like 127.0.0.1:7100"),
        )
    })
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn build(file: FileConfig, base: &Path) -> Result<RuntimeConfig, ConfigFileError> {
    let cluster =
        ClusterId::new(file.cluster.clone()).map_err(|e| field("cluster", e.to_string()))?;
    let replica = ReplicaId(file.replica);
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
    let seeds = seeds(&file.seeds)?;
    let tls = tls_paths(&file.tls, base)?;
    let http_listen = socket_addr(
        "http.listen",
        file.http.listen.as_deref().unwrap_or("127.0.0.1:7101"),
    )?;
    let backend = backend(&file.backend, base)?;
    let network = match file.network.as_deref().unwrap_or("flat") {
        "flat" => NetworkMode::Flat,
        "island" => NetworkMode::Island,
        other => {
            return Err(field(
                "network",
                format!("{other:?} is neither \"flat\" nor \"island\""),
            ));
        }
    };
    let member = MemberId {
        cluster: cluster.clone(),
        replica,
    };
    let expected = file
        .members_expected
        .unwrap_or(u32::try_from(seeds.len() + 1).unwrap_or(u32::MAX));
    let mut core = match file.preset.as_deref().unwrap_or("wan") {
        "wan" => Config::wan(member, NetAddr::from(advertise), expected),
        "lan" => Config::lan(member, NetAddr::from(advertise), expected),
        other => {
            return Err(field(
                "preset",
                format!("{other:?} is neither \"lan\" nor \"wan\""),
            ));
        }
    };
    core.seeds = seeds;
    core.publisher = file.publisher.unwrap_or(replica.0 == 0);
    apply_timing(&mut core, &file.timing);
    core.lease = lease(&core.lease, &file.lease)?;
    core.validate()
        .map_err(|e| field(file_field(e.field), e.reason))?;
    Ok(RuntimeConfig {
        core,
        cluster,
        replica,
        listen,
        advertise,
        data_dir: resolve(base, &file.data_dir),
        tls,
        http_listen,
        backend,
        network,
        chaos_enabled: file.chaos.enabled,
        transport: transport_limits(&file.transport)?,
        log: file.log.filter.unwrap_or_else(|| "info".to_owned()),
    })
}

fn seeds(files: &[SeedFile]) -> Result<Vec<Seed>, ConfigFileError> {
    files
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

fn tls_paths(tls: &TlsFile, base: &Path) -> Result<TlsPaths, ConfigFileError> {
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
        if !path.is_file() {
            return Err(field(
                name,
                format!("{} is not a readable file", path.display()),
            ));
        }
    }
    if !paths.clusterset_dir.is_dir() {
        return Err(field(
            "tls.clusterset_dir",
            format!("{} is not a directory", paths.clusterset_dir.display()),
        ));
    }
    Ok(paths)
}

fn backend(file: &BackendFile, base: &Path) -> Result<BackendConfig, ConfigFileError> {
    match file.kind.as_deref().unwrap_or("standalone") {
        "standalone" => {
            let dir = file
                .dir
                .as_ref()
                .ok_or_else(|| field("backend.dir", "the standalone backend needs a directory"))?;
            let poll_ms = file.poll_ms.unwrap_or(200);
            let min = super::backend::standalone::WATCH_POLL_MS_MIN;
            if !(min..=60_000).contains(&poll_ms) {
                return Err(field(
                    "backend.poll_ms",
                    format!("{poll_ms} is outside {min}..=60000"),
                ));
            }
            Ok(BackendConfig::Standalone {
                dir: resolve(base, dir),
                poll_ms,
            })
        }
        "kubernetes" => Err(field(
            "backend.kind",
            "the Kubernetes backend is not built yet; use \"standalone\"",
        )),
        other => Err(field(
            "backend.kind",
            format!("{other:?} is not \"standalone\""),
        )),
    }
}

fn apply_timing(core: &mut Config, t: &TimingFile) {
    let s = &mut core.swim;
    for (target, value) in [
        (&mut s.probe_period_ms, t.probe_period_ms),
        (&mut s.probe_rtt_ms, t.probe_rtt_ms),
        (&mut s.suspect_to_down_ms, t.suspect_to_down_ms),
        (&mut s.gossip_period_ms, t.gossip_period_ms),
        (&mut s.announce_period_ms, t.announce_period_ms),
        (&mut s.announce_down_period_ms, t.announce_down_period_ms),
    ] {
        if let Some(v) = value {
            *target = v;
        }
    }
    if let Some(v) = t.withdraw_grace_ms {
        core.withdraw_grace_ms = v;
    }
    if let Some(v) = t.anti_entropy_period_ms {
        core.anti_entropy_period_ms = v;
    }
}

fn lease(preset: &LeaseConfig, file: &LeaseFile) -> Result<LeaseConfig, ConfigFileError> {
    let voters = match &file.voters {
        None => Vec::new(),
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, v)| {
                ClusterId::new(v.clone())
                    .map_err(|e| field(format!("lease.voters[{i}]"), e.to_string()))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(LeaseConfig {
        voters,
        lease_ms: file.lease_ms.unwrap_or(preset.lease_ms),
        renew_ms: file.renew_ms.unwrap_or(preset.renew_ms),
        round_timeout_ms: file.round_timeout_ms.unwrap_or(preset.round_timeout_ms),
        drift_ppm: file.drift_ppm.unwrap_or(preset.drift_ppm),
    })
}

fn transport_limits(t: &TransportFile) -> Result<TransportLimits, ConfigFileError> {
    let mut limits = TransportLimits::default();
    if let Some(v) = t.uni_streams_per_connection_max {
        limits.uni_streams_per_connection_max = v;
    }
    if let Some(v) = t.stream_receive_window_bytes {
        limits.stream_receive_window_bytes = v;
    }
    if let Some(v) = t.connection_receive_window_bytes {
        limits.connection_receive_window_bytes = v;
    }
    if let Some(v) = t.idle_timeout_ms {
        limits.idle_timeout_ms = v;
    }
    if let Some(v) = t.keepalive_ms {
        limits.keepalive_ms = v;
    }
    if let Some(v) = t.inbound_queue_max {
        limits.inbound_queue_max = v;
    }
    if let Some(v) = t.outbound_queue_max {
        limits.outbound_queue_max = v;
    }
    if let Some(v) = t.connections_max {
        limits.connections_max = v;
    }
    if let Some(v) = t.peer_bytes_per_s_max {
        limits.peer_bytes_per_s_max = v;
    }
    limits
        .validate()
        .map_err(|e| field("transport", e.to_string()))?;
    Ok(limits)
}

/// The file's name for a field the core's validation names.
fn file_field(core_field: &str) -> String {
    if let Some(rest) = core_field.strip_prefix("swim.") {
        return format!("timing.{rest}");
    }
    match core_field {
        "withdraw_grace_ms" | "anti_entropy_period_ms" => format!("timing.{core_field}"),
        other => other.to_owned(),
    }
}
