//! The schema: the serde structs that are the only place naming the file's keys.
//!
//! Everything else is derived from them: the environment's variable names (from the
//! top-level keys serde lists), the preset layer (serialized from
//! [`PresetLayer`]), the defaults (serde defaults here), and the paths errors name.
//! Each struct refuses unknown keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_proto::{ClusterId, MemberId, NetAddr, ReplicaId};

use super::super::dns::{self, DnsLimits};
use super::super::http::ServerLimits;
use super::super::transport::TransportLimits;
use crate::core::Config;

/// The whole file, after the preset, the file and the environment are merged.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a table of the configuration", deny_unknown_fields)]
pub(super) struct FileSchema {
    pub cluster: String,
    #[serde(default)]
    pub replica: u16,
    #[serde(default = "clusterset_default")]
    pub clusterset: String,
    /// Also read on its own before the merge: it chooses the bottom layer (see
    /// [`PRESET_KEY`]).
    #[serde(default)]
    pub preset: Preset,
    pub listen: String,
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub publisher: Option<bool>,
    pub members_expected: Option<u32>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub seeds: Vec<SeedSection>,
    pub tls: TlsSection,
    #[serde(default)]
    pub http: HttpSection,
    pub backend: BackendSection,
    /// Always present: the preset layer supplies the timing keys.
    pub lease: LeaseSection,
    /// Always present: the preset layer supplies every key.
    pub timing: TimingSection,
    #[serde(default)]
    pub chaos: ChaosSection,
    #[serde(default)]
    pub transport: TransportSection,
    #[serde(default)]
    pub log: LogSection,
    /// Absent: no DNS server. Present (even empty, or made by a `SHOAL_DNS_*`
    /// variable): one, by default only with the standalone backend.
    pub dns: Option<DnsSection>,
}

/// The key of [`FileSchema::preset`], read before the layers are merged because it
/// chooses the bottom one. A test loads `preset = "lan"` and checks the lan timing.
pub(super) const PRESET_KEY: &str = "preset";

fn clusterset_default() -> String {
    "default".to_owned()
}

/// The timing presets of [`Config::lan`] and [`Config::wan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(expecting = "\"lan\" or \"wan\"", rename_all = "lowercase")]
pub(super) enum Preset {
    Lan,
    #[default]
    Wan,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(expecting = "\"flat\" or \"island\"", rename_all = "lowercase")]
pub(super) enum Network {
    #[default]
    Flat,
    Island,
}

#[derive(Debug, Deserialize)]
#[serde(
    expecting = "a seed: a table of cluster, replica and addr",
    deny_unknown_fields
)]
pub(super) struct SeedSection {
    pub cluster: String,
    #[serde(default)]
    pub replica: u16,
    pub addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "the [tls] table", deny_unknown_fields)]
pub(super) struct TlsSection {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub clusterset_dir: PathBuf,
}

/// `[http]`: the API's address, the optional health listener's, and the API's
/// connection limits; the limits default to [`ServerLimits::default`].
#[derive(Debug, Deserialize)]
#[serde(expecting = "the [http] table", default, deny_unknown_fields)]
pub(super) struct HttpSection {
    pub listen: String,
    pub health_listen: Option<String>,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub connections_max: u64,
    pub connections_per_client_max: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        let d = ServerLimits::default();
        let ms = |t: std::time::Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        Self {
            listen: "127.0.0.1:7101".to_owned(),
            health_listen: None,
            header_read_timeout_ms: ms(d.header_read_timeout),
            idle_timeout_ms: ms(d.idle_timeout),
            connections_max: u64::try_from(d.connections_max).unwrap_or(u64::MAX),
            connections_per_client_max: u64::try_from(d.connections_per_client_max)
                .unwrap_or(u64::MAX),
        }
    }
}

/// `[backend]`, tagged by its `kind` key; without one it is the first variant.
#[derive(Debug, Deserialize)]
#[serde(expecting = "the [backend] table", rename_all = "lowercase")]
pub(super) enum BackendSection {
    /// First: the default kind.
    Standalone(StandaloneSection),
    Kubernetes(KubernetesSection),
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "the [backend] table", deny_unknown_fields)]
pub(super) struct StandaloneSection {
    pub dir: PathBuf,
    #[serde(default = "poll_ms_default")]
    pub poll_ms: u64,
    #[serde(default = "out_files_max_default")]
    pub out_files_max: usize,
    #[serde(default)]
    pub symlinks_outside: bool,
}

fn out_files_max_default() -> usize {
    crate::runtime::backend::standalone::FILES_PER_DIR_MAX
}

fn poll_ms_default() -> u64 {
    200
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "the [backend] table", default, deny_unknown_fields)]
pub(super) struct KubernetesSection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: String,
    pub identity: Option<String>,
    pub leader_lease_ms: u64,
    pub leader_renew_ms: u64,
    pub leader_retry_ms: u64,
}

impl Default for KubernetesSection {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: "shoal-system".to_owned(),
            identity: None,
            leader_lease_ms: 15_000,
            leader_renew_ms: 10_000,
            leader_retry_ms: 2_000,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(expecting = "the [lease] table", deny_unknown_fields)]
pub(super) struct LeaseSection {
    #[serde(default)]
    pub voters: Vec<String>,
    pub lease_ms: u64,
    pub renew_ms: u64,
    pub round_timeout_ms: u64,
    pub drift_ppm: u32,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(expecting = "the [timing] table", deny_unknown_fields)]
pub(super) struct TimingSection {
    pub probe_period_ms: u64,
    pub probe_rtt_ms: u64,
    pub suspect_to_down_ms: u64,
    pub gossip_period_ms: u64,
    pub announce_period_ms: u64,
    pub announce_down_period_ms: u64,
    pub withdraw_grace_ms: u64,
    pub anti_entropy_period_ms: u64,
    /// Affinity `nearest`: how much lower another origin's round trip must be.
    pub nearest_margin_ms: u64,
}

impl TimingSection {
    /// Writes these timings over the preset's in `core`.
    pub(super) fn apply(&self, core: &mut Config) {
        core.swim.probe_period_ms = self.probe_period_ms;
        core.swim.probe_rtt_ms = self.probe_rtt_ms;
        core.swim.suspect_to_down_ms = self.suspect_to_down_ms;
        core.swim.gossip_period_ms = self.gossip_period_ms;
        core.swim.announce_period_ms = self.announce_period_ms;
        core.swim.announce_down_period_ms = self.announce_down_period_ms;
        core.withdraw_grace_ms = self.withdraw_grace_ms;
        core.anti_entropy_period_ms = self.anti_entropy_period_ms;
        core.nearest_margin_ms = self.nearest_margin_ms;
    }
}

/// The bottom layer: what a preset supplies, serialized under the file.
#[derive(Debug, Serialize)]
pub(super) struct PresetLayer {
    timing: TimingSection,
    lease: LeaseSection,
}

impl PresetLayer {
    /// The configurable timings of a preset's `Config`.
    pub(super) fn of(preset: &Config) -> Self {
        let swim = &preset.swim;
        let lease = &preset.lease;
        Self {
            timing: TimingSection {
                probe_period_ms: swim.probe_period_ms,
                probe_rtt_ms: swim.probe_rtt_ms,
                suspect_to_down_ms: swim.suspect_to_down_ms,
                gossip_period_ms: swim.gossip_period_ms,
                announce_period_ms: swim.announce_period_ms,
                announce_down_period_ms: swim.announce_down_period_ms,
                withdraw_grace_ms: preset.withdraw_grace_ms,
                anti_entropy_period_ms: preset.anti_entropy_period_ms,
                nearest_margin_ms: preset.nearest_margin_ms,
            },
            lease: LeaseSection {
                voters: Vec::new(),
                lease_ms: lease.lease_ms,
                renew_ms: lease.renew_ms,
                round_timeout_ms: lease.round_timeout_ms,
                drift_ppm: lease.drift_ppm,
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "the [chaos] table", default, deny_unknown_fields)]
pub(super) struct ChaosSection {
    pub enabled: bool,
}

/// The configurable [`TransportLimits`]; the rest keep their defaults.
#[derive(Debug, Deserialize)]
#[serde(expecting = "the [transport] table", default, deny_unknown_fields)]
pub(super) struct TransportSection {
    pub uni_streams_per_connection_max: u32,
    pub stream_receive_window_bytes: u32,
    pub connection_receive_window_bytes: u32,
    pub idle_timeout_ms: u64,
    pub keepalive_ms: u64,
    pub inbound_queue_max: usize,
    pub inbound_queue_bytes_max: usize,
    pub outbound_queue_max: usize,
    pub outbound_queue_bytes_max: usize,
    pub outbound_bytes_max: usize,
    pub connections_max: usize,
    pub peer_bytes_per_s_max: u64,
}

impl Default for TransportSection {
    fn default() -> Self {
        let d = TransportLimits::default();
        Self {
            uni_streams_per_connection_max: d.uni_streams_per_connection_max,
            stream_receive_window_bytes: d.stream_receive_window_bytes,
            connection_receive_window_bytes: d.connection_receive_window_bytes,
            idle_timeout_ms: d.idle_timeout_ms,
            keepalive_ms: d.keepalive_ms,
            inbound_queue_max: d.inbound_queue_max,
            inbound_queue_bytes_max: d.inbound_queue_bytes_max,
            outbound_queue_max: d.outbound_queue_max,
            outbound_queue_bytes_max: d.outbound_queue_bytes_max,
            outbound_bytes_max: d.outbound_bytes_max,
            connections_max: d.connections_max,
            peer_bytes_per_s_max: d.peer_bytes_per_s_max,
        }
    }
}

impl TransportSection {
    pub(super) fn limits(&self) -> TransportLimits {
        TransportLimits {
            uni_streams_per_connection_max: self.uni_streams_per_connection_max,
            stream_receive_window_bytes: self.stream_receive_window_bytes,
            connection_receive_window_bytes: self.connection_receive_window_bytes,
            idle_timeout_ms: self.idle_timeout_ms,
            keepalive_ms: self.keepalive_ms,
            inbound_queue_max: self.inbound_queue_max,
            inbound_queue_bytes_max: self.inbound_queue_bytes_max,
            outbound_queue_max: self.outbound_queue_max,
            outbound_queue_bytes_max: self.outbound_queue_bytes_max,
            outbound_bytes_max: self.outbound_bytes_max,
            connections_max: self.connections_max,
            peer_bytes_per_s_max: self.peer_bytes_per_s_max,
            ..TransportLimits::default()
        }
    }
}

/// `[dns]`: the standalone DNS server for `clusterset.local`; every key but `enabled`
/// defaults to [`DnsLimits::default`] and [`dns::LISTEN_DEFAULT`].
#[derive(Debug, Deserialize)]
#[serde(expecting = "the [dns] table", default, deny_unknown_fields)]
pub(super) struct DnsSection {
    /// Default: true with the standalone backend, false with the Kubernetes one
    /// (CoreDNS answers `clusterset.local` there).
    pub enabled: Option<bool>,
    pub listen: String,
    pub queries_per_second: u64,
    pub burst: u64,
    pub tcp_connections_max: u64,
    pub tcp_idle_timeout_ms: u64,
}

impl Default for DnsSection {
    fn default() -> Self {
        let d = DnsLimits::default();
        let per_second = Duration::from_secs(1).as_nanos() / d.rate.interval.as_nanos().max(1);
        Self {
            enabled: None,
            listen: dns::LISTEN_DEFAULT.to_owned(),
            queries_per_second: u64::try_from(per_second).unwrap_or(u64::MAX),
            burst: u64::from(d.rate.burst),
            tcp_connections_max: u64::try_from(d.tcp_connections_max).unwrap_or(u64::MAX),
            tcp_idle_timeout_ms: u64::try_from(d.tcp_idle_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "the [log] table", default, deny_unknown_fields)]
pub(super) struct LogSection {
    pub filter: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
        }
    }
}

impl Preset {
    /// The preset's core configuration. Its member, address and sizes are placeholders
    /// that the caller replaces: only the timings are the preset's.
    pub(super) fn config(self) -> Config {
        let member = MemberId {
            cluster: ClusterId::new("preset").expect("\"preset\" is a DNS label"),
            replica: ReplicaId(0),
        };
        let addr = NetAddr::from(SocketAddr::from(([127, 0, 0, 1], 0)));
        match self {
            Preset::Lan => Config::lan(member, addr, 1),
            Preset::Wan => Config::wan(member, addr, 1),
        }
    }
}
