//! `shoal status`: a readable report of one node, in the spirit of
//! `cilium clustermesh status`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::client::{self, ClientError};
use crate::runtime::api::{ImportView, LeaseView, PeerView, ServiceView, StatusView};

/// Aligned columns; widths from the content.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "  {}", padded.join("  ").trim_end());
    };
    line(
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
        &mut out,
    );
    for row in rows {
        line(row, &mut out);
    }
    out
}

/// The whole report.
pub fn render_status(
    status: &StatusView,
    peers: &[PeerView],
    services: &[ServiceView],
    imports: &[ImportView],
    leases: &[LeaseView],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Cluster {} replica {} (generation {}, {}), listening on {}",
        status.cluster,
        status.replica,
        status.generation,
        if status.publisher {
            "publisher"
        } else {
            "standby"
        },
        status.listen
    );
    let _ = writeln!(
        out,
        "Clusters: {} alive, {} down; {} records in the view; own version {}{}",
        status.clusters_alive,
        status.clusters_down,
        status.records,
        status.own_version,
        match (status.isolated, status.stale_for_ms) {
            (true, Some(ms)) => format!(
                "; ISOLATED: serving a view {:.1} s stale",
                ms as f64 / 1000.0
            ),
            (true, None) => "; ISOLATED: serving the last view".to_owned(),
            _ => String::new(),
        }
    );
    let peer_rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.cluster.clone(),
                p.replica.to_string(),
                p.addr.clone(),
                p.state.clone(),
                p.rtt_ms.map_or("-".to_owned(), |r| format!("{r:.1} ms")),
                p.bytes_in.to_string(),
                p.bytes_out.to_string(),
            ]
        })
        .collect();
    let _ = write!(
        out,
        "\nPeers:\n{}",
        table(
            &[
                "CLUSTER",
                "REPLICA",
                "ADDRESS",
                "STATE",
                "RTT",
                "BYTES IN",
                "BYTES OUT"
            ],
            &peer_rows
        )
    );
    let service_rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                format!("{}/{}", s.namespace, s.name),
                s.version.to_string(),
                s.service_type.clone(),
                s.ports.join(","),
                format!("{}/{}", s.ready_endpoints, s.endpoints),
            ]
        })
        .collect();
    let _ = write!(
        out,
        "\nExported services:\n{}",
        table(
            &["SERVICE", "VERSION", "TYPE", "PORTS", "READY/ENDPOINTS"],
            &service_rows
        )
    );
    let import_rows: Vec<Vec<String>> = imports
        .iter()
        .map(|i| {
            let clusters: Vec<String> = i
                .clusters
                .iter()
                .map(|(c, n)| format!("{c}({n})"))
                .collect();
            vec![
                format!("{}/{}", i.namespace, i.name),
                i.service_type.clone(),
                i.ports.join(","),
                clusters.join(" "),
                if i.conflicts.is_empty() {
                    "-".to_owned()
                } else {
                    i.conflicts.join("; ")
                },
            ]
        })
        .collect();
    let _ = write!(
        out,
        "\nImports:\n{}",
        table(
            &[
                "SERVICE",
                "TYPE",
                "PORTS",
                "CLUSTERS(ENDPOINTS)",
                "CONFLICTS"
            ],
            &import_rows
        )
    );
    let lease_rows: Vec<Vec<String>> = leases
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.holder.clone().unwrap_or_else(|| "-".to_owned()),
                l.token.map_or("-".to_owned(), |t| t.to_string()),
                l.expires_in_ms
                    .map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
                if l.write_ready { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    let _ = write!(
        out,
        "\nLeases:\n{}",
        table(
            &["LEASE", "HOLDER", "TOKEN", "EXPIRES IN", "WRITE-READY"],
            &lease_rows
        )
    );
    out
}

/// Fetches the five views from a node's API and renders them.
pub async fn fetch_and_render(addr: SocketAddr) -> Result<String, ClientError> {
    let status: StatusView = ok(client::get(addr, "/v1/status").await?)?.json()?;
    let peers: Vec<PeerView> = ok(client::get(addr, "/v1/peers").await?)?.json()?;
    let services: Vec<ServiceView> = ok(client::get(addr, "/v1/services").await?)?.json()?;
    let imports: Vec<ImportView> = ok(client::get(addr, "/v1/imports").await?)?.json()?;
    let leases: Vec<LeaseView> = ok(client::get(addr, "/v1/leases").await?)?.json()?;
    Ok(render_status(&status, &peers, &services, &imports, &leases))
}

fn ok(response: client::Response) -> Result<client::Response, ClientError> {
    if response.status == 200 {
        Ok(response)
    } else {
        Err(ClientError::BadResponse(format!(
            "status {}: {}",
            response.status,
            response.text()
        )))
    }
}
