//! The Prometheus text exposition (format 0.0.4) of a [`MetricsSnapshot`]. Names follow
//! `shoal_…_total`, `…_seconds`, `…_bytes`; labels stay low-cardinality (state, reason,
//! peer cluster and replica, lease name).

use std::fmt::Write as _;

use crate::runtime::api::MetricsSnapshot;

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.0, "{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = writeln!(self.0, " {}", value as i64);
        } else {
            let _ = writeln!(self.0, " {value}");
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// Renders every metric of the snapshot.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = Out(String::new());
    out.family("shoal_members", "gauge", "Remote members by SWIM state.");
    for (state, count) in &m.members {
        out.sample("shoal_members", &[("state", state)], *count as f64);
    }
    out.family("shoal_clusters", "gauge", "Remote clusters by liveness.");
    out.sample(
        "shoal_clusters",
        &[("state", "alive")],
        m.clusters_alive as f64,
    );
    out.sample(
        "shoal_clusters",
        &[("state", "down")],
        m.clusters_down as f64,
    );
    out.gauge(
        "shoal_records",
        "Verified records in the view.",
        m.records as f64,
    );
    out.gauge("shoal_imports", "Services imported.", m.imports as f64);
    out.gauge(
        "shoal_isolated",
        "1 while no remote member is reachable (the view is served stale).",
        f64::from(u8::from(m.isolated)),
    );
    for (name, value) in &m.core_counters {
        let metric = format!("shoal_core_{}_total", sanitize(name));
        out.family(
            &metric,
            "counter",
            &format!("Protocol core counter `{name}`."),
        );
        out.sample(&metric, &[], *value as f64);
    }
    peers(&mut out, m);
    out.family(
        "shoal_rejects_total",
        "counter",
        "Input dropped or refused, by reason (transport and core).",
    );
    for (reason, count) in &m.rejects {
        out.sample("shoal_rejects_total", &[("reason", reason)], *count as f64);
    }
    lag(&mut out, m);
    leases(&mut out, m);
    out.0
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn peers(out: &mut Out, m: &MetricsSnapshot) {
    out.family(
        "shoal_peer_rtt_seconds",
        "gauge",
        "QUIC's RTT estimate to each remote member.",
    );
    for p in &m.peers {
        if let Some(rtt) = p.rtt_seconds {
            let replica = p.replica.to_string();
            let labels = [
                ("cluster", p.cluster.as_str()),
                ("replica", replica.as_str()),
            ];
            out.sample("shoal_peer_rtt_seconds", &labels, rtt);
        }
    }
    for (metric, help, pick) in [
        (
            "shoal_peer_received_bytes_total",
            "Payload bytes received from each remote member.",
            (|p: &crate::runtime::api::PeerMetrics| p.bytes_in) as fn(&_) -> u64,
        ),
        (
            "shoal_peer_sent_bytes_total",
            "Payload bytes sent to each remote member.",
            |p: &crate::runtime::api::PeerMetrics| p.bytes_out,
        ),
    ] {
        out.family(metric, "counter", help);
        for p in &m.peers {
            let replica = p.replica.to_string();
            let labels = [
                ("cluster", p.cluster.as_str()),
                ("replica", replica.as_str()),
            ];
            out.sample(metric, &labels, pick(p) as f64);
        }
    }
}

fn lag(out: &mut Out, m: &MetricsSnapshot) {
    let name = "shoal_propagation_lag_seconds";
    out.family(
        name,
        "histogram",
        "From a record's signing at its origin to its import here (wall clocks).",
    );
    for (bound, count) in &m.propagation_lag_buckets {
        let le = format!("{bound}");
        out.sample(&format!("{name}_bucket"), &[("le", &le)], *count as f64);
    }
    out.sample(
        &format!("{name}_bucket"),
        &[("le", "+Inf")],
        m.propagation_lag_count as f64,
    );
    out.sample(&format!("{name}_sum"), &[], m.propagation_lag_sum_seconds);
    out.sample(
        &format!("{name}_count"),
        &[],
        m.propagation_lag_count as f64,
    );
}

fn leases(out: &mut Out, m: &MetricsSnapshot) {
    out.family(
        "shoal_lease_held",
        "gauge",
        "1 while this cluster holds the lease (write-ready).",
    );
    for l in &m.leases {
        out.sample(
            "shoal_lease_held",
            &[("lease", &l.name)],
            f64::from(u8::from(l.write_ready)),
        );
    }
    out.family(
        "shoal_lease_token",
        "gauge",
        "The fencing token of the lease's holder as this node knows it.",
    );
    for l in &m.leases {
        if let Some(token) = l.token {
            out.sample("shoal_lease_token", &[("lease", &l.name)], token as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::api::{LeaseView, PeerMetrics};

    #[test]
    fn every_sample_belongs_to_a_declared_family_and_buckets_are_cumulative() {
        let snapshot = MetricsSnapshot {
            members: [("alive".to_owned(), 2), ("down".to_owned(), 1)].into(),
            core_counters: [("records_forged".to_owned(), 3)].into(),
            peers: vec![PeerMetrics {
                cluster: "eu-\"west".into(),
                replica: 0,
                rtt_seconds: Some(0.0012),
                bytes_in: 10,
                bytes_out: 20,
            }],
            rejects: [("identity_mismatch".to_owned(), 1)].into(),
            propagation_lag_buckets: vec![(0.01, 1), (0.1, 3)],
            propagation_lag_count: 4,
            propagation_lag_sum_seconds: 0.5,
            leases: vec![LeaseView {
                name: "payments-write-leader".into(),
                holder: Some("us-east".into()),
                token: Some(7),
                expires_in_ms: Some(100),
                write_ready: true,
                wanted: true,
            }],
            ..MetricsSnapshot::default()
        };
        let text = render(&snapshot);
        let mut declared = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or("").to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap_or("");
            let family = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| declared.contains(*f))
                .unwrap_or(name);
            assert!(declared.contains(family), "{line}");
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(text.contains("cluster=\"eu-\\\"west\""), "{text}");
        assert!(text.contains("shoal_propagation_lag_seconds_bucket{le=\"+Inf\"} 4"));
        assert!(text.contains("shoal_lease_held{lease=\"payments-write-leader\"} 1"));
        assert!(text.contains("shoal_core_records_forged_total 3"));
    }
}
