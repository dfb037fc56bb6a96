//! A small synchronous DNS client: one question to one server on loopback, over UDP,
//! again over TCP when the UDP answer is truncated, within a timeout. It
//! returns the response code, the A/AAAA addresses and the SRV records of the answer
//! section. The wire format is `hickory-proto`'s; this module only moves the bytes.
//!
//! The demo asks its nodes' DNS servers with it, and the tests their own servers and
//! CoreDNS. It refuses servers that are not on loopback: both talk only to servers of
//! their own on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData};

pub use hickory_proto::op::ResponseCode;
pub use hickory_proto::rr::RecordType;

/// How long [`query`] waits for an answer, UDP and TCP together.
pub const QUERY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// The largest UDP response read. The query carries no EDNS, so a server sends at most
/// 512 bytes and sets the truncation bit beyond that; the rest of the buffer is slack.
const UDP_RESPONSE_BYTES_MAX: usize = 4096;
/// Most UDP datagrams read for one query before giving up on the ones that do not
/// answer it (stale or foreign ids).
const UDP_DATAGRAMS_MAX: usize = 16;

/// One SRV record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target name, fully qualified (with the trailing dot).
    pub target: String,
}

/// What a server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub rcode: ResponseCode,
    /// The A and AAAA records of the answer section, in the order received.
    pub addresses: Vec<IpAddr>,
    /// The SRV records of the answer section, in the order received.
    pub srv: Vec<Srv>,
    /// Whether the answer came over TCP after a truncated UDP answer.
    pub over_tcp: bool,
}

/// Why a query got no answer. Nothing is retried beyond the one TCP fallback.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The server is not a loopback address; nothing was sent.
    #[error("{0} is not a loopback address: the tests query only their own servers")]
    NotLoopback(SocketAddr),
    /// `name` is not a valid domain name; nothing was sent.
    #[error("invalid name {name:?}: {reason}")]
    Name { name: String, reason: String },
    /// The query could not be encoded; nothing was sent.
    #[error("encoding the query: {0}")]
    Encode(String),
    /// A socket operation failed.
    #[error("{what} {server}: {source}")]
    Io {
        what: &'static str,
        server: SocketAddr,
        source: std::io::Error,
    },
    /// No answer to this query arrived before the timeout.
    #[error("no answer from {server} within {} ms", timeout.as_millis())]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
    },
    /// The server sent bytes that are not a DNS message.
    #[error("undecodable answer from {server}: {reason}")]
    Decode { server: SocketAddr, reason: String },
}

/// Asks `server` for the `record_type` records of `name`, within
/// [`QUERY_TIMEOUT_DEFAULT`].
pub fn query(server: SocketAddr, name: &str, record_type: RecordType) -> Result<Answer, DnsError> {
    query_within(server, name, record_type, QUERY_TIMEOUT_DEFAULT)
}

/// [`query`] with its own timeout.
pub fn query_within(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    timeout: Duration,
) -> Result<Answer, DnsError> {
    if !server.ip().is_loopback() {
        return Err(DnsError::NotLoopback(server));
    }
    let deadline = now() + timeout;
    let fqdn = Name::from_ascii(name).map_err(|e| DnsError::Name {
        name: name.to_owned(),
        reason: e.to_string(),
    })?;
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(fqdn, record_type));
    let id = request.metadata.id;
    let bytes = request
        .to_vec()
        .map_err(|e| DnsError::Encode(e.to_string()))?;
    let response = exchange_udp(server, &bytes, id, deadline, timeout)?;
    if !response.metadata.truncation {
        return Ok(answer_of(&response, false));
    }
    let response = exchange_tcp(server, &bytes, id, deadline, timeout)?;
    Ok(answer_of(&response, true))
}

fn answer_of(response: &Message, over_tcp: bool) -> Answer {
    let mut addresses = Vec::new();
    let mut srv = Vec::new();
    for record in &response.answers {
        match &record.data {
            RData::A(a) => addresses.push(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => addresses.push(IpAddr::V6(aaaa.0)),
            RData::SRV(s) => srv.push(Srv {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: s.target.to_ascii(),
            }),
            _ => {}
        }
    }
    Answer {
        rcode: response.metadata.response_code,
        addresses,
        srv,
        over_tcp,
    }
}

/// The wall clock: a question to a real server takes real time.
#[allow(clippy::disallowed_methods)] // a client of real servers, outside the core
fn now() -> Instant {
    Instant::now()
}

/// The time left before `deadline`, or [`DnsError::Timeout`].
fn remaining(
    deadline: Instant,
    server: SocketAddr,
    timeout: Duration,
) -> Result<Duration, DnsError> {
    let left = deadline.saturating_duration_since(now());
    if left.is_zero() {
        Err(DnsError::Timeout { server, timeout })
    } else {
        Ok(left)
    }
}

fn io(what: &'static str, server: SocketAddr) -> impl FnOnce(std::io::Error) -> DnsError {
    move |source| DnsError::Io {
        what,
        server,
        source,
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn decode(server: SocketAddr, bytes: &[u8]) -> Result<Message, DnsError> {
    Message::from_vec(bytes).map_err(|e| DnsError::Decode {
        server,
        reason: e.to_string(),
    })
}

fn exchange_udp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let local: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    let socket = UdpSocket::bind((local, 0)).map_err(io("binding a UDP socket for", server))?;
    socket
        .connect(server)
        .map_err(io("connecting a UDP socket to", server))?;
    socket.send(request).map_err(io("sending to", server))?;
    let mut buffer = vec![0; UDP_RESPONSE_BYTES_MAX];
    for _ in 0..UDP_DATAGRAMS_MAX {
        socket
            .set_read_timeout(Some(remaining(deadline, server, timeout)?))
            .map_err(io("setting a read timeout for", server))?;
        let len = match socket.recv(&mut buffer) {
            Ok(len) => len,
            Err(e) if is_timeout(&e) => return Err(DnsError::Timeout { server, timeout }),
            Err(e) => return Err(io("receiving from", server)(e)),
        };
        let response = decode(server, &buffer[..len])?;
        if response.metadata.id == id {
            return Ok(response);
        }
        tracing::debug!(%server, expected = id, got = response.metadata.id, "ignoring a DNS answer to another query");
    }
    Err(DnsError::Timeout { server, timeout })
}

fn exchange_tcp(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let mut stream = TcpStream::connect_timeout(&server, remaining(deadline, server, timeout)?)
        .map_err(io("connecting over TCP to", server))?;
    let len = u16::try_from(request.len()).expect("one question fits in a DNS message");
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream
        .set_write_timeout(Some(remaining(deadline, server, timeout)?))
        .map_err(io("setting a write timeout for", server))?;
    stream
        .write_all(&framed)
        .map_err(io("sending over TCP to", server))?;
    let mut read_exact = |buffer: &mut [u8]| -> Result<(), DnsError> {
        stream
            .set_read_timeout(Some(remaining(deadline, server, timeout)?))
            .map_err(io("setting a read timeout for", server))?;
        match stream.read_exact(buffer) {
            Ok(()) => Ok(()),
            Err(e) if is_timeout(&e) => Err(DnsError::Timeout { server, timeout }),
            Err(e) => Err(io("receiving over TCP from", server)(e)),
        }
    };
    let mut prefix = [0; 2];
    read_exact(&mut prefix)?;
    // A u16 length prefix bounds the message at 64 KiB.
    let mut buffer = vec![0; usize::from(u16::from_be_bytes(prefix))];
    read_exact(&mut buffer)?;
    let response = decode(server, &buffer)?;
    if response.metadata.id != id {
        return Err(DnsError::Decode {
            server,
            reason: format!("answer id {} for query id {id}", response.metadata.id),
        });
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_server_off_loopback_without_sending() {
        let server = SocketAddr::from(([192, 0, 2, 1], 53));
        let error = query(server, "example.org.", RecordType::A).unwrap_err();
        assert!(
            matches!(error, DnsError::NotLoopback(s) if s == server),
            "{error}"
        );
    }

    #[test]
    fn times_out_when_nothing_answers() {
        // A bound socket that never answers: the query is received and ignored.
        let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let server = silent.local_addr().expect("local addr");
        let timeout = Duration::from_millis(200);
        let error = query_within(server, "example.org.", RecordType::A, timeout).unwrap_err();
        assert!(matches!(error, DnsError::Timeout { .. }), "{error}");
    }

    #[test]
    fn reads_addresses_and_srv_records_and_falls_back_to_tcp_on_truncation() {
        use hickory_proto::op::MessageType;
        use hickory_proto::rr::rdata::{A, SRV};
        use hickory_proto::rr::{RData, Record};

        // A port free for both UDP and TCP: the first UDP port whose TCP twin binds too.
        let (udp, tcp) = (0..32)
            .find_map(|_| {
                let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
                let tcp = std::net::TcpListener::bind(udp.local_addr().expect("addr")).ok()?;
                Some((udp, tcp))
            })
            .expect("a port free for UDP and TCP");
        let server = udp.local_addr().expect("local addr");
        let name = Name::from_ascii("web.shop.svc.clusterset.local.").expect("name");
        let responder = std::thread::spawn(move || {
            let mut buffer = [0; 512];
            let (len, peer) = udp.recv_from(&mut buffer).expect("recv");
            let request = Message::from_vec(&buffer[..len]).expect("decode query");
            let mut truncated = Message::response(request.metadata.id, request.metadata.op_code);
            truncated.metadata.truncation = true;
            truncated.add_queries(request.queries.clone());
            udp.send_to(&truncated.to_vec().expect("encode"), peer)
                .expect("send");

            let (mut stream, _) = tcp.accept().expect("accept");
            let mut prefix = [0; 2];
            stream.read_exact(&mut prefix).expect("read prefix");
            let mut body = vec![0; usize::from(u16::from_be_bytes(prefix))];
            stream.read_exact(&mut body).expect("read query");
            let request = Message::from_vec(&body).expect("decode query");
            let mut full = Message::new(
                request.metadata.id,
                MessageType::Response,
                request.metadata.op_code,
            );
            full.add_queries(request.queries.clone());
            let name = request.queries[0].name().clone();
            full.add_answer(Record::from_rdata(
                name.clone(),
                5,
                RData::A(A::new(10, 96, 0, 7)),
            ));
            full.add_answer(Record::from_rdata(
                name.clone(),
                5,
                RData::SRV(SRV::new(0, 100, 8080, name)),
            ));
            let bytes = full.to_vec().expect("encode");
            let len = u16::try_from(bytes.len()).expect("small");
            stream.write_all(&len.to_be_bytes()).expect("write");
            stream.write_all(&bytes).expect("write");
        });
        let answer = query(server, &name.to_ascii(), RecordType::A).expect("answer");
        responder.join().expect("responder");
        assert_eq!(
            answer,
            Answer {
                rcode: ResponseCode::NoError,
                addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 96, 0, 7))],
                srv: vec![Srv {
                    priority: 0,
                    weight: 100,
                    port: 8080,
                    target: "web.shop.svc.clusterset.local.".to_owned(),
                }],
                over_tcp: true,
            }
        );
    }
}
