//! One query's bytes in, one answer's bytes (or nothing) out: hickory-server decodes
//! the request and encodes the response, cut to the UDP payload size with the
//! truncation bit; this module decides what to answer from the [`Zone`]. Pure: the
//! server's tasks do the IO.
//!
//! Before anything is decoded the header is checked: a query has exactly one question,
//! no answer or authority records and at most [`ADDITIONALS_MAX`] additional ones, so a
//! forged count never sizes an allocation. A message that fails any check, or does not
//! decode, is dropped without an answer (a reply would let a forged source use this
//! server as a reflector) and counted `malformed`.

use std::net::IpAddr;

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::server::Request;
use hickory_server::zone_handler::MessageResponseBuilder;

use super::stats::Outcome;
use super::zone::{
    Lookup, QueryType, Rdata, SOA_EXPIRE_SECONDS, SOA_MNAME, SOA_REFRESH_SECONDS,
    SOA_RETRY_SECONDS, SOA_RNAME, TTL_SECONDS, ZONE, Zone,
};

/// The largest UDP payload answered, whatever a client's EDNS offers: the DNS flag day
/// 2020 size, which avoids IP fragmentation. Without EDNS, 512 bytes.
pub const UDP_PAYLOAD_MAX: u16 = 1_232;
/// The UDP payload without EDNS (RFC 1035).
const UDP_PAYLOAD_PLAIN: u16 = 512;
/// Most additional records a query may carry: an OPT, and a TSIG or SIG(0).
pub const ADDITIONALS_MAX: u16 = 2;

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub struct Handled {
    /// The answer's bytes; `None`: send nothing.
    pub reply: Option<Vec<u8>>,
    pub outcome: Outcome,
    /// The answer left records out (more than the zone's bound).
    pub capped: bool,
}

impl Handled {
    fn dropped(outcome: Outcome) -> Self {
        Self {
            reply: None,
            outcome,
            capped: false,
        }
    }
}

/// Answers `bytes`, received from `src` over `protocol`, from `zone` (`None`: not built
/// yet). `limited`: the client is over its rate, so the query is dropped (UDP) or
/// refused (TCP, whose handshake proved the source).
pub fn handle(
    bytes: &[u8],
    src: std::net::SocketAddr,
    protocol: Protocol,
    zone: Option<&Zone>,
    limited: bool,
) -> Handled {
    if limited && protocol == Protocol::Udp {
        return Handled::dropped(Outcome::RateLimited);
    }
    if !plausible_query(bytes) {
        return Handled::dropped(Outcome::Malformed);
    }
    let Ok(request) = Request::from_bytes(bytes.to_vec(), src, protocol) else {
        return Handled::dropped(Outcome::Malformed);
    };
    let Some(query) = request.queries.queries().first() else {
        return Handled::dropped(Outcome::Malformed);
    };
    let (rcode, outcome) = if request.metadata.op_code != OpCode::Query {
        (ResponseCode::NotImp, Outcome::NotImplemented)
    } else if limited {
        (ResponseCode::Refused, Outcome::RateLimited)
    } else if query.query_class() != DNSClass::IN {
        (ResponseCode::Refused, Outcome::Refused)
    } else {
        let Some(zone) = zone else {
            return error_reply(&request, ResponseCode::ServFail, Outcome::NotReady);
        };
        return answer(&request, zone);
    };
    error_reply(&request, rcode, outcome)
}

/// The header says: a query, one question, no more records than a query carries.
fn plausible_query(bytes: &[u8]) -> bool {
    let mut decoder = BinDecoder::new(bytes);
    let Ok(header) = Header::read(&mut decoder) else {
        return false;
    };
    let counts = header.counts;
    header.metadata.message_type == MessageType::Query
        && counts.queries == 1
        && counts.answers == 0
        && counts.authorities == 0
        && counts.additionals <= ADDITIONALS_MAX
}

/// The query answered from `zone`.
fn answer(request: &Request, zone: &Zone) -> Handled {
    let query = &request.queries.queries()[0];
    let qname = query.name().to_ascii();
    let qtype = match query.query_type() {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::SRV => QueryType::Srv,
        RecordType::SOA => QueryType::Soa,
        _ => QueryType::Other,
    };
    let owner = query.original().name().clone();
    let rotate = usize::from(request.metadata.id);
    let (rcode, records, additional, capped) = match zone.lookup(&qname, qtype, rotate) {
        Lookup::Refused => {
            return error_reply(request, ResponseCode::Refused, Outcome::Refused);
        }
        Lookup::NxDomain => (ResponseCode::NXDomain, Vec::new(), Vec::new(), false),
        Lookup::NoData => (ResponseCode::NoError, Vec::new(), Vec::new(), false),
        Lookup::Records {
            records,
            additional,
            capped,
        } => {
            let records: Vec<Record> = records
                .iter()
                .filter_map(|r| record(&owner, r, zone.serial))
                .collect();
            let additional: Vec<Record> = additional
                .iter()
                .filter_map(|(target, ip)| {
                    let name = Name::from_ascii(&**target).ok()?;
                    Some(address_record(name, *ip))
                })
                .collect();
            (ResponseCode::NoError, records, additional, capped)
        }
    };
    let soa: Vec<Record> = if records.is_empty() {
        soa_record(zone.serial).into_iter().collect()
    } else {
        Vec::new()
    };
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    metadata.response_code = rcode;
    let edns = response_edns(request);
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        metadata,
        records.iter(),
        std::iter::empty(),
        soa.iter(),
        additional.iter(),
    );
    let mut bytes = Vec::with_capacity(usize::from(UDP_PAYLOAD_PLAIN));
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size(request.protocol(), edns.as_ref()));
    let Ok(info) = response.destructive_emit(&mut encoder) else {
        return error_reply(request, ResponseCode::ServFail, Outcome::Error);
    };
    let outcome = match rcode {
        ResponseCode::NXDomain => Outcome::NxDomain,
        _ if records.is_empty() => Outcome::NoData,
        _ if info.truncation => Outcome::Truncated,
        _ => Outcome::Answered,
    };
    Handled {
        reply: Some(bytes),
        outcome,
        capped,
    }
}

/// A response with `rcode`, the question and nothing else (never larger than the
/// query, so it amplifies nothing).
fn error_reply(request: &Request, rcode: ResponseCode, outcome: Outcome) -> Handled {
    let edns = response_edns(request);
    let response = MessageResponseBuilder::new(&request.queries, edns.as_ref())
        .error_msg(&request.metadata, rcode);
    let mut bytes = Vec::with_capacity(request.as_slice().len());
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size(request.protocol(), edns.as_ref()));
    match response.destructive_emit(&mut encoder) {
        Ok(_) => Handled {
            reply: Some(bytes),
            outcome,
            capped: false,
        },
        Err(_) => Handled::dropped(Outcome::Error),
    }
}

/// The answer's EDNS, if the query had EDNS: version 0, and the payload size the
/// client offers, within 512 and [`UDP_PAYLOAD_MAX`].
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref()?;
    let mut edns = Edns::new();
    edns.set_max_payload(
        request
            .max_payload()
            .clamp(UDP_PAYLOAD_PLAIN, UDP_PAYLOAD_MAX),
    );
    Some(edns)
}

/// The largest answer: the UDP payload, or a TCP message's bound.
fn max_size(protocol: Protocol, edns: Option<&Edns>) -> u16 {
    match protocol {
        Protocol::Udp => edns.map_or(UDP_PAYLOAD_PLAIN, Edns::max_payload),
        _ => u16::MAX,
    }
}

fn record(owner: &Name, rdata: &Rdata, serial: u32) -> Option<Record> {
    Some(match rdata {
        Rdata::A(v4) => Record::from_rdata(owner.clone(), TTL_SECONDS, RData::A(A(*v4))),
        Rdata::Aaaa(v6) => Record::from_rdata(owner.clone(), TTL_SECONDS, RData::AAAA(AAAA(*v6))),
        Rdata::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            // A target longer than a DNS name may be (deep labels) is left out.
            let target = Name::from_ascii(&**target).ok()?;
            let srv = SRV::new(*priority, *weight, *port, target);
            Record::from_rdata(owner.clone(), TTL_SECONDS, RData::SRV(srv))
        }
        Rdata::Soa => soa_record(serial)?,
    })
}

fn address_record(name: Name, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, TTL_SECONDS, rdata)
}

/// The zone's SOA, as CoreDNS writes it (its TTL and minimum are the answers' TTL).
fn soa_record(serial: u32) -> Option<Record> {
    let soa = SOA::new(
        Name::from_ascii(SOA_MNAME).ok()?,
        Name::from_ascii(SOA_RNAME).ok()?,
        serial,
        SOA_REFRESH_SECONDS,
        SOA_RETRY_SECONDS,
        SOA_EXPIRE_SECONDS,
        TTL_SECONDS,
    );
    Some(Record::from_rdata(
        Name::from_ascii(ZONE).ok()?,
        TTL_SECONDS,
        RData::SOA(soa),
    ))
}
