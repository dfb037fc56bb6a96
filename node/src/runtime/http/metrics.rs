//! The Prometheus text exposition (format version 0.0.4) of a [`MetricsSnapshot`].
//!
//! Every family gets one `# HELP` and one `# TYPE` line before its samples. Labels stay
//! low-cardinality: member states, clusters and replicas, reject reasons, lease names;
//! never a record or a service.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use crate::runtime::api::{DnsMetrics, LeaseView, MetricsSnapshot, PeerMetrics, SwimAckMetrics};

/// The `Content-Type` of [`render_metrics`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Member states always present in `shoal_members`, even at zero.
const MEMBER_STATES: [&str; 3] = ["alive", "suspect", "down"];

/// Renders `snapshot` as Prometheus text. Deterministic: the same snapshot gives the
/// same bytes.
pub fn render_metrics(snapshot: &MetricsSnapshot) -> String {
    let mut exposition = Exposition::default();
    exposition.write_snapshot(snapshot);
    exposition.finish()
}

/// A metric family's type, as the `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One sample's value. Integers stay exact (an `f64` would round above 2^53).
#[derive(Clone, Copy, Debug)]
pub(super) enum Value {
    Int(u64),
    Float(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => f.write_str(&format_float(v)),
        }
    }
}

/// Prometheus spells the special floats `NaN`, `+Inf` and `-Inf`.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v}")
    }
}

/// One labelled series of a histogram family: (upper bound, cumulative count) pairs
/// without `+Inf`, the sum of the samples, and their count.
struct HistogramSeries<'a> {
    labels: &'a [(&'a str, &'a str)],
    buckets: &'a [(f64, u64)],
    sum: f64,
    count: u64,
}

/// A text exposition being written: families in order, each declared once.
#[derive(Debug, Default)]
pub(super) struct Exposition {
    out: String,
    declared: BTreeSet<String>,
}

impl Exposition {
    /// Writes the `# HELP` and `# TYPE` lines of family `name`. Returns `false`, and
    /// writes nothing, when the family was already declared (its samples must not be
    /// written a second time).
    pub(super) fn family(&mut self, name: &str, kind: Kind, help: &str) -> bool {
        if !self.declared.insert(name.to_owned()) {
            return false;
        }
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a `String` cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        true
    }

    /// Writes one sample line: `name{label="value",…} value`.
    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, raw)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label_value(raw));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// [`Exposition::sample`] with label values that are owned.
    fn sample_owned(&mut self, name: &str, labels: &[(&str, String)], value: Value) {
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sample(name, &labels, value);
    }

    /// A family with exactly one unlabelled sample.
    pub(super) fn single(&mut self, name: &str, kind: Kind, help: &str, value: Value) {
        if self.family(name, kind, help) {
            self.sample(name, &[], value);
        }
    }

    pub(super) fn finish(self) -> String {
        self.out
    }

    /// Writes every family of `s`.
    pub(super) fn write_snapshot(&mut self, s: &MetricsSnapshot) {
        self.write_membership(s);
        self.write_core_counters(s);
        self.write_peers(&s.peers);
        if self.family(
            "shoal_rejects_total",
            Kind::Counter,
            "Input rejected or dropped, by reason.",
        ) {
            for (reason, n) in &s.rejects {
                self.sample("shoal_rejects_total", &[("reason", reason)], Value::Int(*n));
            }
        }
        self.write_lag(s);
        self.write_swim_ack(s);
        self.write_leases(&s.leases);
        self.write_backend(s);
        if let Some(dns) = &s.dns {
            self.write_dns(dns);
        }
    }

    /// The DNS server's families, `shoal_dns_*`, when it runs.
    fn write_dns(&mut self, d: &DnsMetrics) {
        let name = "shoal_dns_queries_total";
        if self.family(name, Kind::Counter, "DNS queries, by outcome.") {
            for (outcome, n) in &d.queries {
                self.sample(name, &[("outcome", outcome)], Value::Int(*n));
            }
        }
        for (name, kind, help, value) in [
            (
                "shoal_dns_answers_capped_total",
                Kind::Counter,
                "DNS answers that left records out (more than the bound per answer).",
                d.answers_capped,
            ),
            (
                "shoal_dns_clients_evicted_total",
                Kind::Counter,
                "Clients the DNS rate table forgot to make room.",
                d.clients_evicted,
            ),
            (
                "shoal_dns_tcp_connections_refused_total",
                Kind::Counter,
                "DNS TCP connections closed at once: all slots, or the client's, in use.",
                d.tcp_refused,
            ),
            (
                "shoal_dns_tcp_timeouts_total",
                Kind::Counter,
                "DNS TCP connections closed on the idle timeout.",
                d.tcp_timeouts,
            ),
            (
                "shoal_dns_send_errors_total",
                Kind::Counter,
                "DNS answers that could not be sent.",
                d.send_errors,
            ),
            (
                "shoal_dns_zone_builds_total",
                Kind::Counter,
                "DNS zones built from the imports.",
                d.zone_builds,
            ),
            (
                "shoal_dns_zone_names",
                Kind::Gauge,
                "Names in the DNS zone.",
                d.zone_names,
            ),
            (
                "shoal_dns_zone_hostnames_skipped",
                Kind::Gauge,
                "Endpoint hostnames in the imports that are no DNS label, not served.",
                d.zone_hostnames_skipped,
            ),
        ] {
            self.single(name, kind, help, Value::Int(value));
        }
    }

    /// The backend's counters, `shoal_backend_<name>_total{label}`, and leadership.
    fn write_backend(&mut self, s: &MetricsSnapshot) {
        let help = "1 while this replica publishes for its cluster (the local leader).";
        let publisher = Value::Int(u64::from(s.publisher));
        self.single("shoal_publisher", Kind::Gauge, help, publisher);
        let help = "Times this replica became or stopped being the local leader.";
        let changes = Value::Int(s.leadership_changes);
        self.single(
            "shoal_leadership_changes_total",
            Kind::Counter,
            help,
            changes,
        );
        let names: BTreeSet<&str> = s.backend.iter().map(|(n, _, _)| n.as_str()).collect();
        for name in names {
            let family = format!("shoal_backend_{}_total", sanitize_name(name));
            let help = format!("Backend counter {name}, by label, since the node started.");
            if !self.family(&family, Kind::Counter, &help) {
                continue;
            }
            for (_, label, n) in s.backend.iter().filter(|(n, _, _)| n == name) {
                self.sample(&family, &[("label", label)], Value::Int(*n));
            }
        }
    }

    fn write_membership(&mut self, s: &MetricsSnapshot) {
        if self.family(
            "shoal_members",
            Kind::Gauge,
            "Remote members by SWIM state.",
        ) {
            for state in MEMBER_STATES {
                let n = s.members.get(state).copied().unwrap_or(0);
                self.sample("shoal_members", &[("state", state)], Value::Int(n));
            }
            for (state, n) in &s.members {
                if !MEMBER_STATES.contains(&state.as_str()) {
                    self.sample("shoal_members", &[("state", state)], Value::Int(*n));
                }
            }
        }
        if self.family(
            "shoal_clusters",
            Kind::Gauge,
            "ClusterSet clusters by state.",
        ) {
            let alive = Value::Int(s.clusters_alive);
            self.sample("shoal_clusters", &[("state", "alive")], alive);
            let down = Value::Int(s.clusters_down);
            self.sample("shoal_clusters", &[("state", "down")], down);
        }
        let records = Value::Int(s.records);
        self.single(
            "shoal_records",
            Kind::Gauge,
            "Verified records in the view.",
            records,
        );
        let imports = Value::Int(s.imports);
        self.single("shoal_imports", Kind::Gauge, "Services imported.", imports);
        let isolated = Value::Int(u64::from(s.isolated));
        let help = "1 while no remote member is reachable and the view is served stale.";
        self.single("shoal_isolated", Kind::Gauge, help, isolated);
    }

    /// Each core counter `x` becomes the counter `shoal_x_total`. A name that sanitizes
    /// to a family already written is skipped.
    fn write_core_counters(&mut self, s: &MetricsSnapshot) {
        for (raw, n) in &s.core_counters {
            let name = format!("shoal_{}_total", sanitize_name(raw));
            let help = format!("Counter {raw}, since the node started.");
            self.single(&name, Kind::Counter, &help, Value::Int(*n));
        }
    }

    fn write_peers(&mut self, peers: &[PeerMetrics]) {
        let mut peers: Vec<&PeerMetrics> = peers.iter().collect();
        peers.sort_by(|a, b| (&a.cluster, a.replica).cmp(&(&b.cluster, b.replica)));
        let rtt = "shoal_peer_rtt_seconds";
        if self.family(
            rtt,
            Kind::Gauge,
            "Smoothed round-trip time to a remote replica.",
        ) {
            for p in &peers {
                if let Some(seconds) = p.rtt_seconds {
                    let replica = p.replica.to_string();
                    let labels = [("cluster", p.cluster.as_str()), ("replica", &replica)];
                    self.sample(rtt, &labels, Value::Float(seconds));
                }
            }
        }
        let families = [
            (
                "shoal_peer_received_bytes_total",
                "Bytes received from a remote replica.",
            ),
            (
                "shoal_peer_sent_bytes_total",
                "Bytes sent to a remote replica.",
            ),
        ];
        for (index, (name, help)) in families.into_iter().enumerate() {
            if !self.family(name, Kind::Counter, help) {
                continue;
            }
            for p in &peers {
                let replica = p.replica.to_string();
                let labels = [("cluster", p.cluster.as_str()), ("replica", &replica)];
                let bytes = if index == 0 { p.bytes_in } else { p.bytes_out };
                self.sample(name, &labels, Value::Int(bytes));
            }
        }
    }

    /// The propagation lag histogram. Buckets are sorted by bound, made cumulative even
    /// if the snapshot is not, and always end with `+Inf`, which equals `_count`.
    fn write_lag(&mut self, s: &MetricsSnapshot) {
        if let Some(last) = s.propagation_lag_last_seconds {
            let help = "Propagation lag of the most recent record received, in seconds.";
            let name = "shoal_propagation_lag_last_seconds";
            self.single(name, Kind::Gauge, help, Value::Float(last));
        }
        let name = "shoal_propagation_lag_seconds";
        let help = "Seconds from a record's creation at its origin to its arrival here.";
        if !self.family(name, Kind::Histogram, help) {
            return;
        }
        let series = HistogramSeries {
            labels: &[],
            buckets: &s.propagation_lag_buckets,
            sum: s.propagation_lag_sum_seconds,
            count: s.propagation_lag_count,
        };
        self.histogram(name, &series);
    }

    /// SWIM ack latency per peer (`cluster`, `replica`), and the pool of the peers
    /// beyond the bound (`cluster="*"`, `replica="*"`). Written only once a ping was
    /// acked: a family without samples has no `+Inf` bucket.
    fn write_swim_ack(&mut self, s: &MetricsSnapshot) {
        let name = "shoal_swim_ack_seconds";
        let help = "Seconds from a direct SWIM ping this node sent to the peer's ack, as the \
            core saw them (so including both drivers' queueing).";
        if s.swim_ack.is_empty() || !self.family(name, Kind::Histogram, help) {
            return;
        }
        let mut peers: Vec<&SwimAckMetrics> = s.swim_ack.iter().collect();
        peers.sort_by(|a, b| (&a.cluster, a.replica).cmp(&(&b.cluster, b.replica)));
        for peer in peers {
            let replica = peer
                .replica
                .map_or_else(|| "*".to_owned(), |r| r.to_string());
            let labels = [("cluster", peer.cluster.as_str()), ("replica", &replica)];
            let series = HistogramSeries {
                labels: &labels,
                buckets: &peer.buckets,
                sum: peer.sum_seconds,
                count: peer.count,
            };
            self.histogram(name, &series);
        }
    }

    /// One series of a histogram. Buckets are sorted by bound, made cumulative even if
    /// the input is not, and always end with `+Inf`, which equals `_count`.
    fn histogram(&mut self, name: &str, series: &HistogramSeries<'_>) {
        let mut buckets: Vec<(f64, u64)> = (series.buckets.iter().copied())
            .filter(|(le, _)| le.is_finite())
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets.dedup_by(|later, earlier| later.0 == earlier.0);
        let bucket = format!("{name}_bucket");
        let with_le = |le: &'_ str| -> Vec<(&str, String)> {
            (series.labels.iter())
                .map(|(k, v)| (*k, (*v).to_owned()))
                .chain([("le", le.to_owned())])
                .collect()
        };
        let mut cumulative = 0u64;
        for (le, count) in buckets {
            cumulative = cumulative.max(count);
            let labels = with_le(&format_float(le));
            self.sample_owned(&bucket, &labels, Value::Int(cumulative));
        }
        let total = cumulative.max(series.count);
        self.sample_owned(&bucket, &with_le("+Inf"), Value::Int(total));
        let sum = Value::Float(series.sum);
        self.sample(&format!("{name}_sum"), series.labels, sum);
        self.sample(&format!("{name}_count"), series.labels, Value::Int(total));
    }

    fn write_leases(&mut self, leases: &[LeaseView]) {
        let mut leases: Vec<&LeaseView> = leases.iter().collect();
        leases.sort_by(|a, b| a.name.cmp(&b.name));
        let held = "shoal_lease_held";
        if self.family(held, Kind::Gauge, "1 while this cluster holds the lease.") {
            for l in &leases {
                let value = Value::Int(u64::from(l.write_ready));
                self.sample(held, &[("lease", &l.name)], value);
            }
        }
        let token = "shoal_lease_token";
        if self.family(
            token,
            Kind::Gauge,
            "The lease's latest fencing token seen here.",
        ) {
            for l in &leases {
                if let Some(t) = l.token {
                    self.sample(token, &[("lease", &l.name)], Value::Int(t));
                }
            }
        }
        // One series per lease with a holder, as kube-state-metrics spells a state: the
        // `cluster` label is bounded by the ClusterSet's members.
        let holder = "shoal_lease_holder";
        if self.family(
            holder,
            Kind::Gauge,
            "1 for the cluster holding the lease, as this node sees it.",
        ) {
            for l in &leases {
                if let Some(cluster) = &l.holder {
                    let labels = [("lease", l.name.as_str()), ("cluster", cluster.as_str())];
                    self.sample(holder, &labels, Value::Int(1));
                }
            }
        }
    }
}

/// A metric name part: every character outside `[a-zA-Z0-9_]` becomes `_`.
fn sanitize_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "_".to_owned()
    } else {
        name
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("records-accepted.v2"), "records_accepted_v2");
        assert_eq!(sanitize_name(""), "_");
    }

    #[test]
    fn special_floats_use_prometheus_spelling() {
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(0.25), "0.25");
    }

    #[test]
    fn histogram_is_cumulative_and_ends_with_inf() {
        let snapshot = MetricsSnapshot {
            propagation_lag_buckets: vec![(1.0, 5), (0.1, 2), (0.5, 1), (f64::INFINITY, 9)],
            propagation_lag_count: 7,
            propagation_lag_sum_seconds: 1.5,
            ..MetricsSnapshot::default()
        };
        let text = render_metrics(&snapshot);
        let expected = "shoal_propagation_lag_seconds_bucket{le=\"0.1\"} 2\n\
            shoal_propagation_lag_seconds_bucket{le=\"0.5\"} 2\n\
            shoal_propagation_lag_seconds_bucket{le=\"1\"} 5\n\
            shoal_propagation_lag_seconds_bucket{le=\"+Inf\"} 7\n\
            shoal_propagation_lag_seconds_sum 1.5\n\
            shoal_propagation_lag_seconds_count 7\n";
        assert!(text.contains(expected), "{text}");
    }

    #[test]
    fn a_colliding_core_counter_is_not_written_twice() {
        let mut snapshot = MetricsSnapshot::default();
        snapshot.core_counters.insert("a-b".to_owned(), 1);
        snapshot.core_counters.insert("a_b".to_owned(), 2);
        let text = render_metrics(&snapshot);
        assert_eq!(text.matches("# TYPE shoal_a_b_total counter").count(), 1);
        assert_eq!(text.matches("\nshoal_a_b_total ").count(), 1);
    }

    #[test]
    fn lease_holder_is_one_series_per_held_lease() {
        let lease = |name: &str, holder: Option<&str>, token| LeaseView {
            name: name.to_owned(),
            holder: holder.map(str::to_owned),
            token,
            expires_in_ms: None,
            write_ready: holder == Some("east"),
            wanted: true,
        };
        let snapshot = MetricsSnapshot {
            leases: vec![
                lease("payments", Some("east"), Some(7)),
                lease("idle", None, None),
            ],
            ..MetricsSnapshot::default()
        };
        let text = render_metrics(&snapshot);
        let expected = "# TYPE shoal_lease_holder gauge\n\
            shoal_lease_holder{lease=\"payments\",cluster=\"east\"} 1\n";
        assert!(text.contains(expected), "{text}");
        assert!(
            !text.contains("shoal_lease_holder{lease=\"idle\""),
            "{text}"
        );
        assert!(
            text.contains("shoal_lease_held{lease=\"idle\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("shoal_lease_token{lease=\"payments\"} 7\n"),
            "{text}"
        );
    }

    #[test]
    fn swim_ack_histograms_are_one_series_per_peer_and_the_pool() {
        let series = |cluster: &str, replica, buckets: Vec<(f64, u64)>, count| SwimAckMetrics {
            cluster: cluster.to_owned(),
            replica,
            buckets,
            sum_seconds: 0.5,
            count,
        };
        let snapshot = MetricsSnapshot {
            swim_ack: vec![
                series("west", Some(0), vec![(0.005, 3), (0.001, 1)], 4),
                series("*", None, vec![(0.001, 0), (0.005, 2)], 2),
                series("east", Some(1), vec![(0.001, 0), (0.005, 1)], 1),
            ],
            ..MetricsSnapshot::default()
        };
        let text = render_metrics(&snapshot);
        let name = "shoal_swim_ack_seconds";
        let expected = format!(
            "# TYPE {name} histogram\n\
            {name}_bucket{{cluster=\"*\",replica=\"*\",le=\"0.001\"}} 0\n\
            {name}_bucket{{cluster=\"*\",replica=\"*\",le=\"0.005\"}} 2\n\
            {name}_bucket{{cluster=\"*\",replica=\"*\",le=\"+Inf\"}} 2\n\
            {name}_sum{{cluster=\"*\",replica=\"*\"}} 0.5\n\
            {name}_count{{cluster=\"*\",replica=\"*\"}} 2\n\
            {name}_bucket{{cluster=\"east\",replica=\"1\",le=\"0.001\"}} 0\n\
            {name}_bucket{{cluster=\"east\",replica=\"1\",le=\"0.005\"}} 1\n\
            {name}_bucket{{cluster=\"east\",replica=\"1\",le=\"+Inf\"}} 1\n\
            {name}_sum{{cluster=\"east\",replica=\"1\"}} 0.5\n\
            {name}_count{{cluster=\"east\",replica=\"1\"}} 1\n\
            {name}_bucket{{cluster=\"west\",replica=\"0\",le=\"0.001\"}} 1\n\
            {name}_bucket{{cluster=\"west\",replica=\"0\",le=\"0.005\"}} 3\n\
            {name}_bucket{{cluster=\"west\",replica=\"0\",le=\"+Inf\"}} 4\n\
            {name}_sum{{cluster=\"west\",replica=\"0\"}} 0.5\n\
            {name}_count{{cluster=\"west\",replica=\"0\"}} 4\n"
        );
        assert!(text.contains(&expected), "{text}");
        let empty = render_metrics(&MetricsSnapshot::default());
        assert!(!empty.contains(name), "no family before the first ack");
    }
}
