//! The configuration: one TOML file, `SHOAL_*` environment overrides, and validation
//! that names the bad field.
//!
//! **One schema, three layers.** The serde structs of `schema` are the only place that
//! names a key. Three layers are merged key by key, each winning over the one below:
//!
//! 1. the **preset** (`preset = "lan"` or `"wan"`, the default): every key of
//!    `[timing]` and the timing keys of `[lease]`;
//! 2. the **file**;
//! 3. the **environment**: `SHOAL_*` variables.
//!
//! So preset < file < environment. The merged tree is deserialized once into the
//! schema, then values are checked (addresses, names, ranges) into a
//! [`RuntimeConfig`]. Every error names the key as the file writes it (`seeds[1].addr`,
//! `timing.probe_period_ms`, `tls.key`, `backend.dir`), or the variable that set it.
//! Unknown keys are errors, in the file and in the environment alike.
//!
//! ```toml
//! cluster = "us-east"            # required: this cluster's id (a DNS label)
//! replica = 0                    # this replica's StatefulSet ordinal; default 0
//! clusterset = "default"         # the ClusterSet's name (a DNS-1123 subdomain), written
//!                                # into the About API's `clusterset.k8s.io`
//!                                # ClusterProperty; default "default"
//! preset = "lan"                 # "lan" or "wan" (the default): the timing presets
//! listen = "127.0.0.1:7100"      # required: QUIC (UDP)
//! advertise = "127.0.0.1:7100"   # what peers dial; default: listen
//! data_dir = "/var/lib/shoal"    # required: the sled store lives in data_dir/store
//! publisher = true               # standalone: whether this replica publishes
//!                                # (default: replica == 0). kubernetes: the leader
//!                                # election decides; only unset or false
//! members_expected = 3           # all replicas of all clusters; default: seeds + 1
//! network = "flat"               # "flat" (pod IPs routable, the default) or "island"
//!
//! [[seeds]]                      # members to announce to at start; default none
//! cluster = "eu-west"
//! replica = 0                    # default 0
//! addr = "127.0.0.1:7200"
//!
//! [tls]                          # required; file paths, secrets are never inline
//! ca = "certs/ca.crt"
//! cert = "certs/us-east.crt"
//! key = "certs/us-east.key"
//! clusterset_dir = "certs"       # a directory: every member cluster's certificate
//!
//! [http]
//! listen = "127.0.0.1:7101"      # the API and /metrics; this loopback address by default
//! health_listen = "127.0.0.1:7102"   # only /healthz and /readyz, on small limits of their
//!                                # own (16 connections, 4 per client, 2 s per head);
//!                                # default none. Point the kubelet's probes here
//! header_read_timeout_ms = 5000  # a request head must be complete within this of the
//!                                # server starting to wait for it (at accept, and after
//!                                # each response), else it is closed; 100..=60000
//! idle_timeout_ms = 2000         # a connection with no request in progress that sends
//!                                # nothing for this long is closed; 100 and up, at most
//!                                # header_read_timeout_ms
//! connections_max = 64           # API connections at once; 1..=16384
//! connections_per_client_max = 8 # from one client address; 1 and up, at most
//!                                # connections_max. Beyond either cap a connection is
//!                                # accepted, answered 503 and closed at once
//!
//! [backend]                      # required
//! kind = "standalone"            # "standalone" (the default) or "kubernetes"
//! dir = "standalone"             # required: in/ and out/ live here
//! poll_ms = 200                  # how often in/ is checked for changes; 10..=60000
//! out_files_max = 4096           # most object files in out/; 1..=65536. An import past
//!                                # it is not written: a warning, the counter
//!                                # shoal_backend_skipped_total{label="out_dir_full"},
//!                                # and Ready=False on the service's export status
//! symlinks_outside = false       # follow symbolic links in in/ that point outside it
//!
//! # [backend] of kind "kubernetes" takes these keys instead (and refuses the above):
//! # kubeconfig = "kubeconfig"    # a kubeconfig file; with neither it nor `context`,
//! # context = "kind-us-east"     # the in-cluster config is used
//! # namespace = "shoal-system"   # holds Shoal's own Leases; the default
//! # identity = "shoal-0"         # this replica's leader-election identity; default:
//! #                              # $POD_NAME if set, else "<cluster>-<replica>"
//! # leader_lease_ms = 15000      # the local leader's lease; 1000..=600000
//! # leader_renew_ms = 10000      # the renew deadline; 200 and up, < leader_lease_ms
//! # leader_retry_ms = 2000       # between tries; 100 and up, < leader_renew_ms
//!
//! [lease]                        # the quorum lease across clusters
//! voters = ["us-east", "eu-west", "ap-southeast"]   # default none: no leases
//! lease_ms = 4000                # these four default to the preset's (lan's shown)
//! renew_ms = 1000
//! round_timeout_ms = 300
//! drift_ppm = 1000
//!
//! [timing]                       # every key defaults to the preset's (lan's shown)
//! probe_period_ms = 1000
//! probe_rtt_ms = 150
//! suspect_to_down_ms = 1500
//! gossip_period_ms = 100
//! announce_period_ms = 30000
//! announce_down_period_ms = 2000
//! withdraw_grace_ms = 500
//! anti_entropy_period_ms = 5000
//! nearest_margin_ms = 2           # affinity `nearest`: how much lower another RTT must be
//!
//! [chaos]
//! enabled = false                # fault injection through the API (`shoal chaos`)
//!
//! [transport]                    # limits; every key defaults to TransportLimits::default()
//! uni_streams_per_connection_max = 64
//! stream_receive_window_bytes = 2097152
//! connection_receive_window_bytes = 8388608
//! idle_timeout_ms = 600000
//! keepalive_ms = 0               # 0: none
//! inbound_queue_max = 4096
//! inbound_queue_bytes_max = 67108864   # at least one frame (1 MiB)
//! outbound_queue_max = 4096      # per remote address
//! outbound_queue_bytes_max = 8388608   # per remote address; at least one frame
//! outbound_bytes_max = 134217728 # every address together; at least the above
//! connections_max = 1024
//! peer_bytes_per_s_max = 16777216
//!
//! [log]
//! filter = "info"                # a tracing filter; the default
//!
//! [dns]                          # absent: no DNS server. Present (even empty, or made
//!                                # by a SHOAL_DNS_* variable): clusterset.local served
//!                                # from the imports (see `runtime::dns`)
//! enabled = true                 # default: true with the standalone backend, false
//!                                # with the Kubernetes one (CoreDNS serves it there)
//! listen = "127.0.0.1:8053"      # UDP and TCP; the default. Not the QUIC `listen`,
//!                                # nor an HTTP listener's address
//! queries_per_second = 100       # per client (an IPv4 address or an IPv6 /64), UDP
//!                                # and TCP together; 1..=1000000. Beyond it a UDP
//!                                # query is dropped, a TCP one refused
//! burst = 200                    # queries a client may send at once; 1..=1000000
//! tcp_connections_max = 64       # TCP connections at once (8 per client); 1..=16384
//! tcp_idle_timeout_ms = 5000     # a TCP connection silent this long is closed;
//!                                # 100..=60000
//! ```
//!
//! Relative paths (`data_dir`, `tls.*`, `backend.dir`, `backend.kubeconfig`), from the
//! file or the environment, are relative to the file's directory.
//!
//! **Environment.** `SHOAL_<KEY>` sets a top-level key (`SHOAL_CLUSTER`,
//! `SHOAL_DATA_DIR`, `SHOAL_CLUSTERSET`), `SHOAL_<SECTION>_<KEY>` a section's
//! (`SHOAL_HTTP_LISTEN`, `SHOAL_TIMING_WITHDRAW_GRACE_MS`, `SHOAL_BACKEND_KUBECONFIG`).
//! The name is matched without regard to case: a top-level key if it is one, else the
//! longest top-level key followed by `_` is the section and the rest its key (section
//! keys contain underscores). The value is text read as the key's type: a number,
//! `true` or `false`, a string, or a comma-separated list
//! (`SHOAL_LEASE_VOTERS=us-east,eu-west`). A `SHOAL_` variable that names no key, or whose value does not fit, is an
//! error naming the variable ([`ConfigFileError::Env`]). Other variables are ignored,
//! except `POD_NAME`, the default `backend.identity`. The environment is the iterator
//! passed to [`load`] or [`parse`], never the process's own.
//!
//! The library: `toml` parses the file, and `serde_path_to_error` (dtolnay's, the one
//! axum uses for its extractors, already in the build) tracks the path of a
//! deserialization error. figment was considered: its `Env` provider reads the
//! process's environment (tests would not be hermetic), guesses a variable's type from
//! its text instead of asking the schema (`SHOAL_CLUSTER=inf` would be a float), and
//! nests keys only at a fixed separator, which cannot be `_` while keys contain one;
//! a small deserializer over the merged tree (`de`) does
//! the schema-driven reading instead.
//!
//! - `schema`: the serde structs, the only place that names a key, and the preset layer.
//! - `tree`: the layered value tree and how layers merge.
//! - `env`: the environment layer, and which variable set which key.
//! - `de`: the one deserialization of the merged tree, whose errors carry the key's path.
//! - `validation`: values checked and paths resolved into a [`RuntimeConfig`].

mod de;
mod env;
mod schema;
mod tree;
mod validation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use shoal_proto::{ClusterId, NetworkMode, ReplicaId};

pub use super::backend::StandaloneLimits;
use super::dns::DnsConfig;
use super::http::ServerLimits;
use super::transport::TransportLimits;
use crate::core::Config;
use env::Environment;
use schema::{FileSchema, PRESET_KEY, Preset, PresetLayer};
use tree::Tree;

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "SHOAL_";
/// The variable naming this pod (Kubernetes' downward API): the default leader-election
/// identity.
pub const POD_NAME_VAR: &str = "POD_NAME";
/// Largest config file read.
const FILE_BYTES_MAX: u64 = 1024 * 1024;

/// A configuration that cannot be used. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read, or is larger than it may be.
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// The file is not TOML (toml's message, with the line).
    #[error("{0}")]
    Syntax(String),
    /// A key is unknown, missing, of the wrong type, or out of range. `field` is its
    /// path as the file writes it: `seeds[1].addr`, `timing.probe_period_ms`.
    #[error("invalid config field `{field}`: {reason}")]
    Field { field: String, reason: String },
    /// The environment variable `var` names no key, or its value for `key` does not
    /// fit.
    #[error("environment variable {var} (`{key}`): {reason}")]
    Env {
        var: String,
        key: String,
        reason: String,
    },
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
    Standalone {
        dir: PathBuf,
        poll_ms: u64,
        limits: StandaloneLimits,
    },
    /// The cluster's API server. The replicas of a cluster elect the publisher with a
    /// Lease in `namespace`.
    Kubernetes {
        /// A kubeconfig file; with neither it nor `context`, the in-cluster config.
        kubeconfig: Option<PathBuf>,
        /// A context of the kubeconfig; default: its current context.
        context: Option<String>,
        /// Holds Shoal's own Leases.
        namespace: String,
        /// This replica's leader-election identity.
        identity: String,
        /// How long the leader's Lease lasts without renewal.
        leader_lease_ms: u64,
        /// How long the leader keeps trying to renew before it steps down; below
        /// `leader_lease_ms`.
        leader_renew_ms: u64,
        /// How long between tries to acquire or renew; below `leader_renew_ms`.
        leader_retry_ms: u64,
    },
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The core's configuration, built from the preset and the overrides, validated.
    /// With the Kubernetes backend, `publisher` starts false: the leader election
    /// decides.
    pub core: Config,
    pub cluster: ClusterId,
    pub replica: ReplicaId,
    /// The ClusterSet's name (a DNS-1123 subdomain).
    pub clusterset: String,
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsPaths,
    pub http_listen: SocketAddr,
    /// The health listener (`/healthz` and `/readyz` alone); `None`: not served apart.
    pub http_health_listen: Option<SocketAddr>,
    /// The API's limits: `[http]`'s connection keys over [`ServerLimits::default`].
    pub http_limits: ServerLimits,
    pub backend: BackendConfig,
    pub network: NetworkMode,
    pub chaos_enabled: bool,
    pub transport: TransportLimits,
    pub log: String,
    /// The standalone DNS server; `None`: not served (no `[dns]`, or not enabled).
    pub dns: Option<DnsConfig>,
}

impl RuntimeConfig {
    /// The standalone backend's directory; `None` for the Kubernetes backend.
    pub fn backend_dir(&self) -> Option<&Path> {
        match &self.backend {
            BackendConfig::Standalone { dir, .. } => Some(dir),
            BackendConfig::Kubernetes { .. } => None,
        }
    }

    /// The standalone backend's polling period; `None` for the Kubernetes backend.
    pub fn backend_poll_ms(&self) -> Option<u64> {
        match &self.backend {
            BackendConfig::Standalone { poll_ms, .. } => Some(*poll_ms),
            BackendConfig::Kubernetes { .. } => None,
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
        let role = match (&self.backend, c.publisher) {
            (BackendConfig::Kubernetes { .. }, _) => "leader-elected",
            (BackendConfig::Standalone { .. }, true) => "publisher",
            (BackendConfig::Standalone { .. }, false) => "standby",
        };
        format!(
            "member      {}/{} ({role})\n\
             clusterset  {}\n\
             quic        listen {}, advertise {}\n\
             http        {}\n\
             data        {}\n\
             tls         ca {}, cert {}, key {}, clusterset {}\n\
             backend     {}\n\
             seeds       {}\n\
             timing      probe {} ms, suspect {} ms, withdraw grace {} ms, anti-entropy {} ms\n\
             lease       voters [{}], lease {} ms, renew {} ms, drift {} ppm\n\
             chaos       {}\n\
             dns         {}",
            self.cluster,
            self.replica,
            self.clusterset,
            self.listen,
            self.advertise,
            self.http_summary(),
            self.data_dir.display(),
            self.tls.ca.display(),
            self.tls.cert.display(),
            self.tls.key.display(),
            self.tls.clusterset_dir.display(),
            self.backend_summary(),
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
            self.dns_summary(),
        )
    }

    fn dns_summary(&self) -> String {
        let Some(dns) = &self.dns else {
            return "off".to_owned();
        };
        let l = &dns.limits;
        let per_second =
            std::time::Duration::from_secs(1).as_nanos() / l.rate.interval.as_nanos().max(1);
        format!(
            "{} (UDP and TCP), {per_second} queries/s per client (burst {}), \
             {} TCP connections, idle {} ms",
            dns.listen,
            l.rate.burst,
            l.tcp_connections_max,
            l.tcp_idle_timeout.as_millis(),
        )
    }

    fn http_summary(&self) -> String {
        let l = &self.http_limits;
        let health = match self.http_health_listen {
            Some(addr) => format!(", health {addr}"),
            None => String::new(),
        };
        format!(
            "{}{health}, head within {} ms, idle {} ms, {} connections ({} per client)",
            self.http_listen,
            l.header_read_timeout.as_millis(),
            l.idle_timeout.as_millis(),
            l.connections_max,
            l.connections_per_client_max,
        )
    }

    fn backend_summary(&self) -> String {
        match &self.backend {
            BackendConfig::Standalone {
                dir,
                poll_ms,
                limits,
            } => format!(
                "standalone {} (poll {poll_ms} ms, out/ at most {} files, symlinks out of in/ {})",
                dir.display(),
                limits.out_files_max,
                if limits.symlinks_outside {
                    "followed"
                } else {
                    "refused"
                }
            ),
            BackendConfig::Kubernetes {
                kubeconfig,
                context,
                namespace,
                identity,
                leader_lease_ms,
                leader_renew_ms,
                leader_retry_ms,
            } => {
                let api = match (kubeconfig, context) {
                    (None, None) => "in-cluster".to_owned(),
                    (Some(path), None) => format!("kubeconfig {}", path.display()),
                    (None, Some(context)) => format!("context {context}"),
                    (Some(path), Some(context)) => {
                        format!("kubeconfig {} context {context}", path.display())
                    }
                };
                format!(
                    "kubernetes {api}, namespace {namespace}, identity {identity}, \
                     leader lease {leader_lease_ms} ms, renew {leader_renew_ms} ms, \
                     retry {leader_retry_ms} ms"
                )
            }
        }
    }
}

/// Reads, overrides and validates the file at `path`, with `env` the environment.
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
    let file: toml::Table =
        toml::from_str(text).map_err(|e| ConfigFileError::Syntax(e.to_string()))?;
    // The layers, lowest first: preset < file < environment. The two upper ones choose
    // the preset, so they are merged first.
    let (env_layer, env) = Environment::read(env)?;
    let mut upper = Tree::from(file);
    upper.merge(env_layer);
    let mut merged = preset_layer(chosen_preset(&upper));
    merged.merge(upper);
    let schema: FileSchema =
        de::from_tree(merged).map_err(|e| env.blame(e.field, e.reason, true))?;
    validation::build(schema, base, env.pod_name.as_deref()).map_err(|e| match e {
        ConfigFileError::Field { field, reason } => env.blame(field, reason, false),
        other => other,
    })
}

/// The preset the file and environment choose. One that is not a preset picks the
/// default here, and the deserialization then reports it.
fn chosen_preset(upper: &Tree) -> Preset {
    assert!(
        de::struct_keys::<FileSchema>().contains(&PRESET_KEY),
        "PRESET_KEY is not a key of the schema"
    );
    upper
        .get(PRESET_KEY)
        .and_then(|value| de::from_tree::<Preset>(value.clone()).ok())
        .unwrap_or_default()
}

/// The bottom layer: the preset's timings.
fn preset_layer(preset: Preset) -> Tree {
    let layer = toml::Table::try_from(PresetLayer::of(&preset.config()))
        .expect("a preset's timings are TOML integers");
    Tree::from(layer)
}
