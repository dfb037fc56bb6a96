//! The zone's exact answers for each name form, and one message in, one message out.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};
use shoal_proto::{
    ClusterId, Endpoint, EndpointConditions, ExportRecord, IpAddress, NetworkMode, PortProtocol,
    ServiceKey, ServicePort, ServiceProperties, ServiceType, SignedRecord,
};

use super::*;
use crate::core::{ImportedCluster, ImportedService, TrafficReason};

fn port(name: &str, port: u16, target_port: u16) -> ServicePort {
    ServicePort {
        name: name.into(),
        protocol: PortProtocol::Tcp,
        port,
        target_port,
        app_protocol: None,
    }
}

fn endpoint(ip: IpAddr, ready: bool, hostname: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![IpAddress::from(ip)],
        conditions: EndpointConditions {
            ready,
            serving: ready,
            terminating: false,
        },
        zone: None,
        hostname: hostname.map(str::to_owned),
    }
}

fn source(
    origin: &str,
    service: &str,
    ports: Vec<ServicePort>,
    endpoints: Vec<Endpoint>,
    active: bool,
) -> ImportedCluster {
    let record = ExportRecord {
        origin: ClusterId::new(origin).unwrap(),
        service: ServiceKey::new("shop", service).unwrap(),
        version: 1,
        export_created_ms: 1,
        published_ms: 0,
        service_type: ServiceType::ClusterSetIp,
        ports,
        endpoints,
        network: NetworkMode::Flat,
        properties: ServiceProperties::default(),
        tombstone: false,
    };
    // The zone never verifies: what reaches it was verified by the core.
    ImportedCluster {
        record: Arc::new(SignedRecord {
            record,
            signature: [0; 64],
        }),
        active,
    }
}

fn import(
    service: &str,
    service_type: ServiceType,
    ports: Vec<ServicePort>,
    sources: Vec<ImportedCluster>,
) -> (ServiceKey, Arc<ImportedService>) {
    let key = ServiceKey::new("shop", service).unwrap();
    let import = ImportedService {
        service: key.clone(),
        service_type,
        ports,
        properties: ServiceProperties::default(),
        sources: sources.into(),
        conflicts: Vec::new().into(),
        traffic: TrafficReason::AllOrigins,
    };
    (key, Arc::new(import))
}

fn v4(text: &str) -> IpAddr {
    IpAddr::V4(text.parse().unwrap())
}

/// `web` (ClusterSetIP, port http 80 → 8080): c1 active with a ready IPv4, a not-ready
/// IPv4 and a ready IPv6 endpoint; c2 inactive with one ready endpoint. `db`
/// (headless, pg 5432): c1 with db-0, `DB-1` and a hostname that is no DNS label.
fn imports() -> Imports {
    let web_ports = vec![port("http", 80, 8080)];
    let web = import(
        "web",
        ServiceType::ClusterSetIp,
        web_ports.clone(),
        vec![
            source(
                "c1",
                "web",
                web_ports.clone(),
                vec![
                    endpoint(v4("10.0.0.1"), true, None),
                    endpoint(v4("10.0.0.2"), false, None),
                    endpoint("fd00::1".parse().unwrap(), true, None),
                ],
                true,
            ),
            source(
                "c2",
                "web",
                web_ports,
                vec![endpoint(v4("10.0.1.1"), true, None)],
                false,
            ),
        ],
    );
    let db_ports = vec![port("pg", 5432, 5432)];
    let db = import(
        "db",
        ServiceType::Headless,
        db_ports.clone(),
        vec![source(
            "c1",
            "db",
            db_ports,
            vec![
                endpoint(v4("10.0.2.1"), true, Some("db-0")),
                endpoint(v4("10.0.2.2"), true, Some("DB-1")),
                endpoint(v4("10.0.2.3"), true, Some("db_2")),
            ],
            true,
        )],
    );
    BTreeMap::from([web, db])
}

fn zone() -> Zone {
    build(&imports(), 7)
}

fn addresses(lookup: &Lookup) -> Vec<IpAddr> {
    match lookup {
        Lookup::Records { records, .. } => records
            .iter()
            .filter_map(|r| match r {
                Rdata::A(a) => Some(IpAddr::V4(*a)),
                Rdata::Aaaa(a) => Some(IpAddr::V6(*a)),
                _ => None,
            })
            .collect(),
        other => panic!("expected records, got {other:?}"),
    }
}

const WEB: &str = "web.shop.svc.clusterset.local.";

#[test]
fn the_service_name_answers_ready_endpoints_of_active_origins_only() {
    let zone = zone();
    assert_eq!(
        addresses(&zone.lookup(WEB, QueryType::A, 0)),
        [v4("10.0.0.1")],
        "not the not-ready 10.0.0.2, not inactive c2's 10.0.1.1"
    );
    assert_eq!(
        addresses(&zone.lookup(WEB, QueryType::Aaaa, 0)),
        [IpAddr::V6("fd00::1".parse().unwrap())]
    );
}

#[test]
fn a_cluster_name_answers_that_origin_whether_active_or_not() {
    let zone = zone();
    let c1 = format!("c1.{WEB}");
    let c2 = format!("c2.{WEB}");
    assert_eq!(
        addresses(&zone.lookup(&c1, QueryType::A, 0)),
        [v4("10.0.0.1")]
    );
    assert_eq!(
        addresses(&zone.lookup(&c2, QueryType::A, 0)),
        [v4("10.0.1.1")]
    );
    assert_eq!(
        zone.lookup(&format!("c3.{WEB}"), QueryType::A, 0),
        Lookup::NxDomain
    );
}

#[test]
fn endpoint_names_are_hostnames_or_dashed_addresses_of_ready_endpoints() {
    let zone = zone();
    let name = |host: &str| format!("{host}.c1.{WEB}");
    assert_eq!(
        addresses(&zone.lookup(&name("10-0-0-1"), QueryType::A, 0)),
        [v4("10.0.0.1")]
    );
    assert_eq!(
        addresses(&zone.lookup(&name("fd00--1"), QueryType::Aaaa, 0)),
        [IpAddr::V6("fd00::1".parse().unwrap())]
    );
    assert_eq!(
        zone.lookup(&name("10-0-0-2"), QueryType::A, 0),
        Lookup::NxDomain,
        "a not-ready endpoint has no name"
    );
    assert_eq!(
        addresses(&zone.lookup(
            "10-0-1-1.c2.web.shop.svc.clusterset.local.",
            QueryType::A,
            0
        )),
        [v4("10.0.1.1")]
    );
    let db = |host: &str| format!("{host}.c1.db.shop.svc.clusterset.local.");
    assert_eq!(
        addresses(&zone.lookup(&db("db-0"), QueryType::A, 0)),
        [v4("10.0.2.1")]
    );
    assert_eq!(
        addresses(&zone.lookup(&db("db-1"), QueryType::A, 0)),
        [v4("10.0.2.2")],
        "hostnames are lowercased"
    );
    assert_eq!(zone.lookup(&db("db_2"), QueryType::A, 0), Lookup::NxDomain);
    assert_eq!(zone.hostnames_skipped, 1);
    assert_eq!(
        addresses(&zone.lookup("db.shop.svc.clusterset.local.", QueryType::A, 0)),
        [v4("10.0.2.1"), v4("10.0.2.2")]
    );
}

#[test]
fn srv_records_name_each_endpoint_with_the_port_it_listens_on() {
    let zone = zone();
    let target = |host: &str| Arc::<str>::from(format!("{host}.c1.{WEB}"));
    let srv = |host: &str| Rdata::Srv {
        priority: 0,
        weight: 50,
        port: 8080,
        target: target(host),
    };
    let expected = Lookup::Records {
        records: vec![srv("10-0-0-1"), srv("fd00--1")],
        additional: vec![
            (target("10-0-0-1"), v4("10.0.0.1")),
            (target("fd00--1"), IpAddr::V6("fd00::1".parse().unwrap())),
        ],
        capped: false,
    };
    let port_name = format!("_http._tcp.{WEB}");
    assert_eq!(zone.lookup(&port_name, QueryType::Srv, 0), expected);
    assert_eq!(
        zone.lookup(WEB, QueryType::Srv, 0),
        expected,
        "the service name has every port's"
    );
    assert_eq!(
        addresses(&zone.lookup(&port_name, QueryType::A, 0)),
        [v4("10.0.0.1")],
        "an SRV name answers its targets' addresses too, as CoreDNS's does"
    );
    assert_eq!(
        zone.lookup(&format!("_http._udp.{WEB}"), QueryType::Srv, 0),
        Lookup::NxDomain
    );
    let db = zone.lookup("_pg._tcp.db.shop.svc.clusterset.local.", QueryType::Srv, 0);
    let Lookup::Records { records, .. } = db else {
        panic!("{db:?}");
    };
    assert_eq!(
        records,
        [
            Rdata::Srv {
                priority: 0,
                weight: 50,
                port: 5432,
                target: Arc::from("db-0.c1.db.shop.svc.clusterset.local."),
            },
            Rdata::Srv {
                priority: 0,
                weight: 50,
                port: 5432,
                target: Arc::from("db-1.c1.db.shop.svc.clusterset.local."),
            },
        ]
    );
}

#[test]
fn nxdomain_nodata_and_refused() {
    let zone = zone();
    for (name, qtype, want) in [
        (WEB, QueryType::Other, Lookup::NoData),
        (WEB, QueryType::Soa, Lookup::NoData),
        (
            "_tcp.web.shop.svc.clusterset.local.",
            QueryType::A,
            Lookup::NoData,
        ),
        ("shop.svc.clusterset.local.", QueryType::A, Lookup::NoData),
        ("svc.clusterset.local.", QueryType::A, Lookup::NoData),
        ("clusterset.local.", QueryType::A, Lookup::NoData),
        (
            "api.shop.svc.clusterset.local.",
            QueryType::A,
            Lookup::NxDomain,
        ),
        (
            "web.other.svc.clusterset.local.",
            QueryType::A,
            Lookup::NxDomain,
        ),
        (
            "x.web.shop.svc.clusterset.local.",
            QueryType::A,
            Lookup::NxDomain,
        ),
        ("example.com.", QueryType::A, Lookup::Refused),
        ("xclusterset.local.", QueryType::A, Lookup::Refused),
        ("local.", QueryType::A, Lookup::Refused),
    ] {
        assert_eq!(zone.lookup(name, qtype, 0), want, "{name} {qtype:?}");
    }
    assert_eq!(
        zone.lookup(ZONE, QueryType::Soa, 0),
        Lookup::Records {
            records: vec![Rdata::Soa],
            additional: Vec::new(),
            capped: false
        }
    );
}

#[test]
fn an_import_without_ready_endpoints_is_nodata_and_one_gone_is_nxdomain() {
    let ports = vec![port("http", 80, 80)];
    let idle = import(
        "idle",
        ServiceType::ClusterSetIp,
        ports.clone(),
        vec![source(
            "c1",
            "idle",
            ports,
            vec![endpoint(v4("10.9.0.1"), false, None)],
            true,
        )],
    );
    let zone = build(&BTreeMap::from([idle]), 1);
    let name = "idle.shop.svc.clusterset.local.";
    assert_eq!(zone.lookup(name, QueryType::A, 0), Lookup::NoData);
    assert_eq!(
        zone.lookup(&format!("_http._tcp.{name}"), QueryType::Srv, 0),
        Lookup::NoData
    );
    let empty = build(&Imports::new(), 2);
    assert_eq!(empty.lookup(name, QueryType::A, 0), Lookup::NxDomain);
    assert_eq!(empty.lookup(ZONE, QueryType::A, 0), Lookup::NoData);
}

#[test]
fn a_long_answer_is_a_rotating_window_of_answers_max() {
    let ports = vec![port("http", 80, 80)];
    let count = ANSWERS_MAX + 44;
    let endpoints = (0..count)
        .map(|i| {
            let i = u32::try_from(i).unwrap();
            endpoint(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), true, None)
        })
        .collect();
    let big = import(
        "big",
        ServiceType::ClusterSetIp,
        ports.clone(),
        vec![source("c1", "big", ports, endpoints, true)],
    );
    let zone = build(&BTreeMap::from([big]), 1);
    let name = "big.shop.svc.clusterset.local.";
    let first = zone.lookup(name, QueryType::A, 0);
    let Lookup::Records { capped, .. } = &first else {
        panic!("{first:?}");
    };
    assert!(*capped);
    let first = addresses(&first);
    assert_eq!(first.len(), ANSWERS_MAX);
    assert_eq!(first[0], v4("10.0.0.0"));
    let rotated = addresses(&zone.lookup(name, QueryType::A, 10));
    assert_eq!(rotated[0], v4("10.0.0.10"));
    let wrapped = addresses(&zone.lookup(name, QueryType::A, count + 1));
    assert_eq!(wrapped[0], v4("10.0.0.1"), "the window wraps around");
    let Lookup::Records { records, .. } = zone.lookup(name, QueryType::Srv, 0) else {
        panic!("SRV records");
    };
    assert!(
        records
            .iter()
            .all(|r| matches!(r, Rdata::Srv { weight: 0, .. })),
        "100 / 256 rounds down to 0"
    );
}

// ----- messages -----

fn client() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5353))
}

fn query_bytes(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        message.edns = Some(e);
    }
    message.to_vec().unwrap()
}

fn ask(zone: Option<&Zone>, bytes: &[u8], protocol: Protocol, limited: bool) -> (Message, Outcome) {
    let handled = handle(bytes, client(), protocol, zone, limited);
    let reply = handled.reply.expect("an answer");
    (Message::from_vec(&reply).unwrap(), handled.outcome)
}

#[test]
fn an_answer_is_authoritative_with_ttl_5_and_keeps_the_question_case() {
    let zone = zone();
    let bytes = query_bytes("WEB.Shop.svc.clusterset.local.", RecordType::A, None);
    let (reply, outcome) = ask(Some(&zone), &bytes, Protocol::Udp, false);
    assert_eq!(outcome, Outcome::Answered);
    assert_eq!(reply.metadata.id, 4242);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert!(reply.metadata.authoritative);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        reply.queries[0].name().to_ascii(),
        "WEB.Shop.svc.clusterset.local."
    );
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].ttl, TTL_SECONDS);
    assert_eq!(
        reply.answers[0].data,
        RData::A(Ipv4Addr::new(10, 0, 0, 1).into())
    );
}

#[test]
fn srv_answers_carry_their_targets_addresses() {
    let zone = zone();
    let bytes = query_bytes(
        "_pg._tcp.db.shop.svc.clusterset.local.",
        RecordType::SRV,
        None,
    );
    let (reply, _) = ask(Some(&zone), &bytes, Protocol::Udp, false);
    let targets: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(format!("{} {}", srv.port, srv.target.to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        [
            "5432 db-0.c1.db.shop.svc.clusterset.local.",
            "5432 db-1.c1.db.shop.svc.clusterset.local."
        ]
    );
    let extra: Vec<String> = reply
        .additionals
        .iter()
        .map(|r| format!("{} {:?}", r.name.to_ascii(), r.data))
        .collect();
    assert_eq!(extra.len(), 2, "{extra:?}");
    assert!(
        extra[0].starts_with("db-0.c1.db.shop.svc.clusterset.local. A"),
        "{extra:?}"
    );
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_and_refused_does_not() {
    let zone = zone();
    let nx = query_bytes("api.shop.svc.clusterset.local.", RecordType::A, None);
    let (reply, outcome) = ask(Some(&zone), &nx, Protocol::Udp, false);
    assert_eq!(outcome, Outcome::NxDomain);
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(reply.authorities.len(), 1);
    let RData::SOA(soa) = &reply.authorities[0].data else {
        panic!("{:?}", reply.authorities);
    };
    assert_eq!((soa.serial, soa.minimum), (7, TTL_SECONDS));
    let nodata = query_bytes(WEB, RecordType::MX, None);
    let (reply, outcome) = ask(Some(&zone), &nodata, Protocol::Udp, false);
    assert_eq!(outcome, Outcome::NoData);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!((reply.answers.len(), reply.authorities.len()), (0, 1));
    let outside = query_bytes("example.com.", RecordType::A, None);
    let (reply, outcome) = ask(Some(&zone), &outside, Protocol::Udp, false);
    assert_eq!(outcome, Outcome::Refused);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.authorities.is_empty() && !reply.metadata.authoritative);
}

#[test]
fn udp_answers_fit_512_bytes_or_the_offered_payload_up_to_1232() {
    let ports = vec![port("http", 80, 80)];
    let endpoints = (0..200u32)
        .map(|i| {
            endpoint(
                IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i))),
                true,
                None,
            )
        })
        .collect();
    let big = import(
        "big",
        ServiceType::ClusterSetIp,
        ports.clone(),
        vec![source("c1", "big", ports, endpoints, true)],
    );
    let zone = build(&BTreeMap::from([big]), 1);
    let name = "big.shop.svc.clusterset.local.";
    for (edns, bound) in [(None, 512), (Some(4096), 1232), (Some(800), 800)] {
        let bytes = query_bytes(name, RecordType::AAAA, edns);
        let handled = handle(&bytes, client(), Protocol::Udp, Some(&zone), false);
        let reply = handled.reply.unwrap();
        assert!(reply.len() <= bound, "{} > {bound}", reply.len());
        assert_eq!(handled.outcome, Outcome::Truncated);
        assert!(Message::from_vec(&reply).unwrap().metadata.truncation);
    }
    let bytes = query_bytes(name, RecordType::AAAA, None);
    let (reply, outcome) = ask(Some(&zone), &bytes, Protocol::Tcp, false);
    assert_eq!(outcome, Outcome::Answered);
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 200, "TCP takes the whole answer");
}

#[test]
fn malformed_messages_are_dropped_and_counted() {
    let zone = zone();
    let good = query_bytes(WEB, RecordType::A, None);
    let mut response = good.clone();
    response[2] |= 0x80; // QR: a response
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut forged_count = good.clone();
    forged_count[10] = 0xff; // 65 280 additional records claimed
    let mut cut = good.clone();
    cut.truncate(good.len() - 3);
    for bad in [
        &b""[..],
        &b"\x00\x01\x02"[..],
        &response,
        &two_questions,
        &forged_count,
        &cut,
        &[0xff; 64][..],
    ] {
        let handled = handle(bad, client(), Protocol::Udp, Some(&zone), false);
        assert_eq!(
            (handled.reply, handled.outcome),
            (None, Outcome::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn over_the_rate_udp_is_dropped_and_tcp_refused() {
    let zone = zone();
    let bytes = query_bytes(WEB, RecordType::A, None);
    let handled = handle(&bytes, client(), Protocol::Udp, Some(&zone), true);
    assert_eq!(
        (handled.reply, handled.outcome),
        (None, Outcome::RateLimited)
    );
    let (reply, outcome) = ask(Some(&zone), &bytes, Protocol::Tcp, true);
    assert_eq!(outcome, Outcome::RateLimited);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.answers.is_empty());
}

#[test]
fn before_the_first_zone_servfail_and_other_opcodes_and_classes_are_refused() {
    let bytes = query_bytes(WEB, RecordType::A, None);
    let (reply, outcome) = ask(None, &bytes, Protocol::Udp, false);
    assert_eq!(
        (reply.metadata.response_code, outcome),
        (ResponseCode::ServFail, Outcome::NotReady)
    );
    let zone = zone();
    let mut notify = Message::query();
    notify.metadata.op_code = OpCode::Notify;
    notify.add_query(Query::query(
        Name::from_ascii(WEB).unwrap(),
        RecordType::SOA,
    ));
    let (reply, outcome) = ask(Some(&zone), &notify.to_vec().unwrap(), Protocol::Udp, false);
    assert_eq!(
        (reply.metadata.response_code, outcome),
        (ResponseCode::NotImp, Outcome::NotImplemented)
    );
    let mut chaos = Message::query();
    let mut query = Query::query(Name::from_ascii(WEB).unwrap(), RecordType::A);
    query.set_query_class(DNSClass::CH);
    chaos.add_query(query);
    let (reply, outcome) = ask(Some(&zone), &chaos.to_vec().unwrap(), Protocol::Udp, false);
    assert_eq!(
        (reply.metadata.response_code, outcome),
        (ResponseCode::Refused, Outcome::Refused)
    );
}
