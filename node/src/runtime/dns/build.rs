//! From the imports to the [`Zone`]: the names CoreDNS's multicluster support serves
//! for the same ServiceImports and EndpointSlices, and the one name it does not
//! (`<cluster>.<svc>.<ns>.svc.clusterset.local`).
//!
//! For each import `<svc>` in namespace `<ns>` (`base` = `<svc>.<ns>.svc.clusterset.local.`):
//!
//! | name | A / AAAA | SRV |
//! |---|---|---|
//! | `base` | the ready endpoints of the **active** origins | every port of each of them |
//! | `_<port>._<proto>.base` | the same endpoints, if they have the port | that port of each |
//! | `<cluster>.base` | the ready endpoints of that origin, active or not | every port of each |
//! | `<host>.<cluster>.base` | that endpoint's addresses | its ports |
//!
//! `<host>` is the endpoint's hostname, else its address with `.` or `:` as `-` (an
//! IPv6 name ending in `-` gets a `0`), as CoreDNS names endpoints. An SRV record's
//! target is always an endpoint name, and its port the port the origin's endpoints
//! listen on (the origin's target port): the standalone node has no ClusterSet IP, so a
//! ClusterSetIP service answers as a headless one does (CoreDNS, with the ClusterSet IP,
//! answers that IP and one SRV record per port with the service port).
//!
//! Only ready endpoints are served, as CoreDNS serves only an EndpointSlice's ready
//! addresses. Every ancestor of a name exists too (empty non-terminals answer NODATA).

use std::net::IpAddr;
use std::sync::Arc;

use shoal_proto::ids::DNS_LABEL_BYTES_MAX;
use shoal_proto::{Endpoint, IpAddress, PortProtocol, ServicePort};

use super::zone::{Node, SrvTarget, ZONE, Zone};
use crate::core::{ImportedCluster, ImportedService};
use crate::runtime::backend::Imports;

/// Builds the zone of `imports`. `serial` is the SOA serial: the caller's build count.
pub fn build(imports: &Imports, serial: u32) -> Zone {
    let mut zone = Zone {
        serial,
        ..Zone::default()
    };
    for import in imports.values() {
        add_import(&mut zone, import);
    }
    add_ancestors(&mut zone);
    for node in zone.names.values_mut() {
        node.normalize();
    }
    zone
}

fn node<'z>(zone: &'z mut Zone, name: &str) -> &'z mut Node {
    zone.names.entry(Box::from(name)).or_default()
}

fn add_import(zone: &mut Zone, import: &ImportedService) {
    let base = format!(
        "{}.{}.svc.{ZONE}",
        import.service.name, import.service.namespace
    );
    node(zone, &base);
    // The SRV names of the import's named ports exist even while nothing serves them.
    let port_names: Vec<Option<String>> = import
        .ports
        .iter()
        .map(|p| srv_label(p).map(|label| format!("{label}.{base}")))
        .collect();
    for name in port_names.iter().flatten() {
        node(zone, name);
    }
    for source in &import.sources {
        add_source(zone, import, source, &base, &port_names);
    }
}

/// One origin's ready endpoints under `<cluster>.base` and their endpoint names, and,
/// if the origin is active, under `base` and the port names.
fn add_source(
    zone: &mut Zone,
    import: &ImportedService,
    source: &ImportedCluster,
    base: &str,
    port_names: &[Option<String>],
) {
    let record = &source.record.record;
    let cluster_base = format!("{}.{base}", record.origin);
    node(zone, &cluster_base);
    // The import's ports as this origin serves them: (index into the import's ports,
    // the origin's target port). A port the origin lacks (a port conflict) is left out.
    let ports: Vec<(usize, u16)> = import
        .ports
        .iter()
        .enumerate()
        .filter_map(|(i, p)| origin_port(&record.ports, p).map(|target| (i, target)))
        .collect();
    for endpoint in record.endpoints.iter().filter(|e| e.conditions.ready) {
        for &address in &endpoint.addresses {
            let Some(host) = host_label(endpoint, address) else {
                zone.hostnames_skipped += 1;
                continue;
            };
            let endpoint_name: Arc<str> = Arc::from(format!("{host}.{cluster_base}"));
            let mut names: Vec<&str> = vec![&endpoint_name, &cluster_base];
            if source.active {
                names.push(base);
            }
            for name in &names {
                push_address(node(zone, name), address);
            }
            for &(index, port) in &ports {
                let srv = SrvTarget {
                    port,
                    target: Arc::clone(&endpoint_name),
                };
                for name in &names {
                    node(zone, name).srv.push(srv.clone());
                }
                if let (true, Some(name)) = (source.active, &port_names[index]) {
                    let port_node = node(zone, name);
                    port_node.srv.push(srv);
                    push_address(port_node, address);
                }
            }
        }
    }
}

fn push_address(node: &mut Node, address: IpAddress) {
    match IpAddr::from(address) {
        IpAddr::V4(v4) => node.v4.push(v4),
        IpAddr::V6(v6) => node.v6.push(v6),
    }
}

/// The origin's definition of the import's port `port` (same name and protocol): the
/// port its endpoints listen on.
fn origin_port(origin: &[ServicePort], port: &ServicePort) -> Option<u16> {
    origin
        .iter()
        .find(|p| p.name == port.name && p.protocol == port.protocol)
        .map(|p| p.target_port)
}

/// `_<port>._<proto>` for a named port; an unnamed one has no SRV name of its own.
fn srv_label(port: &ServicePort) -> Option<String> {
    let name = port.name.to_ascii_lowercase();
    if !is_label(&name) {
        return None;
    }
    let protocol = match port.protocol {
        PortProtocol::Tcp => "tcp",
        PortProtocol::Udp => "udp",
        PortProtocol::Sctp => "sctp",
    };
    Some(format!("_{name}._{protocol}"))
}

/// The endpoint's label: its hostname (lowercase), else its address with `.` or `:`
/// as `-`, as CoreDNS's `endpointHostname`. `None`: a hostname that is no DNS label.
fn host_label(endpoint: &Endpoint, address: IpAddress) -> Option<String> {
    if let Some(hostname) = &endpoint.hostname {
        let hostname = hostname.to_ascii_lowercase();
        return is_label(&hostname).then_some(hostname);
    }
    Some(match IpAddr::from(address) {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let dashed = v6.to_string().replace(':', "-");
            if dashed.ends_with('-') {
                format!("{dashed}0")
            } else {
                dashed
            }
        }
    })
}

/// A DNS label as Kubernetes writes hostnames and port names: 1 to 63 lowercase
/// letters, digits and `-`.
fn is_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= DNS_LABEL_BYTES_MAX
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Every ancestor of every name, down to the zone's apex, as an empty name.
fn add_ancestors(zone: &mut Zone) {
    let mut ancestors: Vec<Box<str>> = Vec::new();
    for name in zone.names.keys() {
        let mut rest: &str = name;
        while rest.len() > ZONE.len() {
            let Some((_, parent)) = rest.split_once('.') else {
                break;
            };
            rest = parent;
            if !zone.names.contains_key(rest) {
                ancestors.push(Box::from(rest));
            }
        }
    }
    for name in ancestors {
        zone.names.entry(name).or_default();
    }
    zone.names.entry(Box::from(ZONE)).or_default();
}
