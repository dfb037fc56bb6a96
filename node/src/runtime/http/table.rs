//! The plain-text report `shoal status` prints: a header about this node, then aligned
//! tables of peers, exported services, imports and leases.
//!
//! The output is deterministic: rows are sorted, numbers use fixed precision, and
//! widths come from the content alone.

use std::net::SocketAddr;

use super::client::{ClientError, get_json};
use crate::runtime::api::{ImportView, LeaseView, PeerView, ServiceView, StatusView};

/// Cells longer than this are cut, ending with `...`.
const CELL_CHARS_MAX: usize = 96;
/// Spaces between two columns.
const COLUMN_GAP: usize = 2;

/// Renders the report from the five views.
pub fn render_status(
    status: &StatusView,
    peers: &[PeerView],
    services: &[ServiceView],
    imports: &[ImportView],
    leases: &[LeaseView],
) -> String {
    let mut out = render_header(status);
    for table in [
        peer_table(peers),
        service_table(services),
        import_table(imports),
        lease_table(leases),
    ] {
        out.push('\n');
        table.render(&mut out);
    }
    out
}

/// Fetches `/v1/status`, `/v1/peers`, `/v1/services`, `/v1/imports` and `/v1/leases`
/// from the node at `addr`, and renders them.
pub async fn fetch_and_render(addr: SocketAddr) -> Result<String, ClientError> {
    let (status, peers, services, imports, leases) = tokio::try_join!(
        get_json::<StatusView>(addr, "/v1/status"),
        get_json::<Vec<PeerView>>(addr, "/v1/peers"),
        get_json::<Vec<ServiceView>>(addr, "/v1/services"),
        get_json::<Vec<ImportView>>(addr, "/v1/imports"),
        get_json::<Vec<LeaseView>>(addr, "/v1/leases"),
    )?;
    Ok(render_status(&status, &peers, &services, &imports, &leases))
}

fn render_header(s: &StatusView) -> String {
    let role = if s.publisher { "publisher" } else { "standby" };
    let connectivity = match (s.isolated, s.stale_for_ms) {
        (true, Some(ms)) => format!(
            "ISOLATED, serving the last view, stale for {}",
            duration(ms)
        ),
        (true, None) => "ISOLATED, serving the last view".to_owned(),
        (false, _) => "connected".to_owned(),
    };
    format!(
        "cluster {} replica {} generation {}: {role}, listening on {}, up {}\n\
         view: {} records, own version {}; clusters: {} alive, {} down; {connectivity}\n",
        clean(&s.cluster),
        s.replica,
        s.generation,
        clean(&s.listen),
        duration(s.uptime_ms),
        s.records,
        s.own_version,
        s.clusters_alive,
        s.clusters_down,
    )
}

fn peer_table(peers: &[PeerView]) -> Table {
    let mut peers: Vec<&PeerView> = peers.iter().collect();
    peers.sort_by(|a, b| (&a.cluster, a.replica, &a.addr).cmp(&(&b.cluster, b.replica, &b.addr)));
    let rows = peers.iter().map(|p| {
        vec![
            p.cluster.clone(),
            p.replica.to_string(),
            p.addr.clone(),
            p.state.clone(),
            p.rtt_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms")),
            bytes(p.bytes_in),
            bytes(p.bytes_out),
        ]
    });
    Table::new(
        "PEERS",
        &[
            ("CLUSTER", Align::Left),
            ("REPLICA", Align::Right),
            ("ADDRESS", Align::Left),
            ("STATE", Align::Left),
            ("RTT", Align::Right),
            ("IN", Align::Right),
            ("OUT", Align::Right),
        ],
        rows.collect(),
    )
}

fn service_table(services: &[ServiceView]) -> Table {
    let mut services: Vec<&ServiceView> = services.iter().collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let rows = services.iter().map(|s| {
        vec![
            format!("{}/{}", s.namespace, s.name),
            s.version.to_string(),
            s.service_type.clone(),
            list(&s.ports, ","),
            format!("{}/{}", s.ready_endpoints, s.endpoints),
        ]
    });
    Table::new(
        "EXPORTED SERVICES",
        &[
            ("SERVICE", Align::Left),
            ("VERSION", Align::Right),
            ("TYPE", Align::Left),
            ("PORTS", Align::Left),
            ("READY/TOTAL", Align::Right),
        ],
        rows.collect(),
    )
}

fn import_table(imports: &[ImportView]) -> Table {
    let mut imports: Vec<&ImportView> = imports.iter().collect();
    imports.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let rows = imports.iter().map(|i| {
        let clusters: Vec<String> = (i.clusters.iter())
            .map(|(cluster, n)| format!("{cluster}={n}"))
            .collect();
        vec![
            format!("{}/{}", i.namespace, i.name),
            i.service_type.clone(),
            list(&i.ports, ","),
            list(&clusters, ","),
            i.endpoints.to_string(),
            format!("{}: {}", i.affinity, i.traffic),
            list(&i.active, ","),
            list(&i.conflicts, "; "),
        ]
    });
    Table::new(
        "IMPORTS",
        &[
            ("SERVICE", Align::Left),
            ("TYPE", Align::Left),
            ("PORTS", Align::Left),
            ("CLUSTERS", Align::Left),
            ("ENDPOINTS", Align::Right),
            ("AFFINITY", Align::Left),
            ("ACTIVE", Align::Left),
            ("CONFLICTS", Align::Left),
        ],
        rows.collect(),
    )
}

fn lease_table(leases: &[LeaseView]) -> Table {
    let mut leases: Vec<&LeaseView> = leases.iter().collect();
    leases.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = leases.iter().map(|l| {
        vec![
            l.name.clone(),
            l.holder.clone().unwrap_or_else(|| "-".to_owned()),
            l.token.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            l.expires_in_ms.map_or_else(|| "-".to_owned(), duration),
            yes_no(l.write_ready),
            yes_no(l.wanted),
        ]
    });
    Table::new(
        "LEASES",
        &[
            ("NAME", Align::Left),
            ("HOLDER", Align::Left),
            ("TOKEN", Align::Right),
            ("EXPIRES IN", Align::Right),
            ("WRITE-READY", Align::Left),
            ("WANTED", Align::Left),
        ],
        rows.collect(),
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A titled table; cells are cleaned and cut when added.
#[derive(Debug)]
struct Table {
    title: &'static str,
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: &'static str, columns: &[(&'static str, Align)], rows: Vec<Vec<String>>) -> Self {
        let rows = (rows.into_iter())
            .map(|row| row.iter().map(|cell| clean(cell)).collect())
            .collect();
        Self {
            title,
            columns: columns.to_vec(),
            rows,
        }
    }

    fn render(&self, out: &mut String) {
        if self.rows.is_empty() {
            out.push_str(self.title);
            out.push_str(": none\n");
            return;
        }
        out.push_str(&format!("{} ({})\n", self.title, self.rows.len()));
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        self.render_row(out, &header, &widths);
        for row in &self.rows {
            self.render_row(out, row, &widths);
        }
    }

    fn render_row(&self, out: &mut String, row: &[String], widths: &[usize]) {
        let mut line = String::new();
        for (i, ((cell, width), (_, align))) in
            row.iter().zip(widths).zip(&self.columns).enumerate()
        {
            if i > 0 {
                line.push_str(&" ".repeat(COLUMN_GAP));
            }
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            match align {
                Align::Left => {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
                Align::Right => {
                    line.push_str(&pad);
                    line.push_str(cell);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// A cell safe for a terminal: control characters become `?`, and long text is cut.
fn clean(raw: &str) -> String {
    let mut cell: String = raw
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if cell.chars().count() > CELL_CHARS_MAX {
        cell = cell.chars().take(CELL_CHARS_MAX - 3).collect();
        cell.push_str("...");
    }
    cell
}

fn list(items: &[String], separator: &str) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(separator)
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `3.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut scaled = n;
    let mut unit = 0;
    while scaled >= 1024 * 1024 && unit + 1 < UNITS.len() {
        scaled /= 1024;
        unit += 1;
    }
    // Integer tenths keep the output exact and deterministic.
    let tenths = scaled * 10 / 1024;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

/// A duration from milliseconds: `850ms`, `4.2s`, `3m07s`, `2h05m`, `3d04h`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(bytes(u64::MAX), "16777215.9 TiB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(4_250), "4.2s");
        assert_eq!(duration(187_000), "3m07s");
        assert_eq!(duration(7_500_000), "2h05m");
        assert_eq!(duration(273_600_000), "3d04h");
    }

    #[test]
    fn cells_are_cleaned_and_cut() {
        assert_eq!(clean("a\u{1b}[31mb\n"), "a?[31mb?");
        let long = "x".repeat(200);
        assert_eq!(clean(&long).chars().count(), CELL_CHARS_MAX);
        assert!(clean(&long).ends_with("..."));
    }
}
