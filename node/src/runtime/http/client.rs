//! A minimal HTTP/1.1 client over [`TcpStream`], enough for `shoal status`, `shoal chaos`,
//! the demo and tests: one request per connection (`Connection: close`), the response
//! read to end of stream under a size cap and a timeout, `Content-Length` and
//! `Transfer-Encoding: chunked` bodies.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body accepted.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest response head (status line and headers) accepted.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// The whole exchange (connect, send, receive) must end within this.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Interim (1xx) responses skipped before the final one.
const INTERIM_RESPONSES_MAX: usize = 4;
/// Longest request path sent.
const PATH_BYTES_MAX: usize = 2048;

/// A final HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Decodes the body as JSON, whatever the status.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(ClientError::Decode)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` field of a `{"error": message}` body, else the body as text.
    pub fn error_message(&self) -> String {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: String,
        }
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => body.error,
            Err(_) => self.text(),
        }
    }
}

/// Why a request got no usable response. Nothing is retried.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The method or path cannot be sent as given; nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request body could not be encoded; nothing was sent.
    #[error("encoding the request body failed: {0}")]
    Encode(#[source] serde_json::Error),
    /// No connection to the server; nothing was sent.
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The connection failed mid-exchange; the server may have acted on the request.
    #[error("the exchange failed: {0}")]
    Io(#[source] io::Error),
    /// No complete response in time; the server may have acted on the request.
    #[error("no response within {after_ms} ms")]
    Timeout { after_ms: u64 },
    /// The response is larger than the client accepts; it was dropped.
    #[error("the response exceeds {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
    /// The response is not valid HTTP/1.1; it was dropped.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The body is not the JSON expected.
    #[error("decoding the response body failed: {0}")]
    Decode(#[source] serde_json::Error),
    /// The server answered with an error status.
    #[error("the server answered {status}: {message}")]
    Status { status: u16, message: String },
}

impl ClientError {
    /// A short label naming the variant, for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ClientError::InvalidRequest(_) => "invalid_request",
            ClientError::Encode(_) => "encode",
            ClientError::Connect { .. } => "connect",
            ClientError::Io(_) => "io",
            ClientError::Timeout { .. } => "timeout",
            ClientError::TooLarge { .. } => "too_large",
            ClientError::Malformed(_) => "malformed",
            ClientError::Decode(_) => "decode",
            ClientError::Status { .. } => "status",
        }
    }
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, ClientError> {
    send(addr, "GET", path, None).await
}

/// `GET path`, failing on a non-2xx status, and decodes the JSON body.
pub async fn get_json<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, ClientError> {
    let response = get(addr, path).await?;
    if !response.is_success() {
        return Err(ClientError::Status {
            status: response.status,
            message: response.error_message(),
        });
    }
    response.json()
}

/// `POST path` with `body` as JSON.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &impl Serialize,
) -> Result<Response, ClientError> {
    let body = serde_json::to_vec(body).map_err(ClientError::Encode)?;
    send(addr, "POST", path, Some(&body)).await
}

/// `POST path` without a body (for example, acquiring a lease).
pub async fn post(addr: SocketAddr, path: &str) -> Result<Response, ClientError> {
    send(addr, "POST", path, None).await
}

/// `DELETE path`.
pub async fn delete(addr: SocketAddr, path: &str) -> Result<Response, ClientError> {
    send(addr, "DELETE", path, None).await
}

/// Sends one request (a `body` goes as `application/json`, sent as given) and reads
/// the response, within [`EXCHANGE_TIMEOUT`].
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, ClientError> {
    let request = encode_request(addr, method, path, body)?;
    let after_ms = u64::try_from(EXCHANGE_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(addr, &request))
        .await
        .map_err(|_| ClientError::Timeout { after_ms })?
}

fn encode_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, ClientError> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ClientError::InvalidRequest(format!(
            "bad method {method:?}"
        )));
    }
    let path_ok = path.starts_with('/')
        && path.len() <= PATH_BYTES_MAX
        && path.bytes().all(|b| b.is_ascii_graphic());
    if !path_ok {
        return Err(ClientError::InvalidRequest(format!("bad path {path:?}")));
    }
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         User-Agent: shoal\r\nAccept: */*\r\n"
    );
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    Ok(request)
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Response, ClientError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    stream.write_all(request).await.map_err(ClientError::Io)?;
    let cap = RESPONSE_BYTES_MAX + HEAD_BYTES_MAX;
    let mut raw = Vec::new();
    let limit = u64::try_from(cap + 1).unwrap_or(u64::MAX);
    (&mut stream)
        .take(limit)
        .read_to_end(&mut raw)
        .await
        .map_err(ClientError::Io)?;
    if raw.len() > cap {
        return Err(ClientError::TooLarge { limit_bytes: cap });
    }
    parse_response(&raw)
}

/// Parses a whole response (read to end of stream), skipping interim 1xx responses.
pub fn parse_response(raw: &[u8]) -> Result<Response, ClientError> {
    let mut rest = raw;
    for _ in 0..=INTERIM_RESPONSES_MAX {
        let head = parse_head(rest)?;
        let after = &rest[head.body_start..];
        if (100..200).contains(&head.status) {
            rest = after;
            continue;
        }
        let body = if head.chunked {
            decode_chunked(after)?
        } else if let Some(length) = head.content_length {
            let body = after.get(..length).ok_or_else(|| {
                ClientError::Malformed(format!("body shorter than Content-Length {length}"))
            })?;
            body.to_vec()
        } else {
            after.to_vec()
        };
        if body.len() > RESPONSE_BYTES_MAX {
            return Err(ClientError::TooLarge {
                limit_bytes: RESPONSE_BYTES_MAX,
            });
        }
        return Ok(Response {
            status: head.status,
            body,
        });
    }
    Err(malformed("too many interim responses"))
}

fn malformed(what: &str) -> ClientError {
    ClientError::Malformed(what.to_owned())
}

/// What the client needs from a response head.
#[derive(Debug)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    /// Offset of the body, just past the blank line.
    body_start: usize,
}

fn parse_head(raw: &[u8]) -> Result<Head, ClientError> {
    let searched = &raw[..raw.len().min(HEAD_BYTES_MAX)];
    let end = find(searched, b"\r\n\r\n").ok_or_else(|| {
        if raw.len() > HEAD_BYTES_MAX {
            ClientError::TooLarge {
                limit_bytes: HEAD_BYTES_MAX,
            }
        } else {
            malformed("the response head is incomplete")
        }
    })?;
    let text = std::str::from_utf8(&raw[..end]).map_err(|_| malformed("non-UTF-8 head"))?;
    let mut lines = text.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or_default())?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        body_start: end + 4,
    };
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("a header line without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length = value
                .parse::<usize>()
                .map_err(|_| malformed("bad Content-Length"))?;
            if head.content_length.is_some_and(|l| l != length) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            head.chunked = last.eq_ignore_ascii_case("chunked");
        }
    }
    Ok(head)
}

/// `HTTP/1.x NNN reason` to `NNN`.
fn parse_status_line(line: &str) -> Result<u16, ClientError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed("not an HTTP/1 status line"));
    }
    let code = parts.next().unwrap_or_default();
    match code.parse::<u16>() {
        Ok(status) if code.len() == 3 && (100..=999).contains(&status) => Ok(status),
        _ => Err(malformed("bad status code")),
    }
}

/// Decodes a chunked body. Every round consumes at least three bytes of `data`, so the
/// loop is bounded by the (capped) response size. Trailers are ignored.
fn decode_chunked(data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    let mut rest = data;
    loop {
        let line_end = find(rest, b"\r\n").ok_or_else(|| malformed("unterminated chunk size"))?;
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| malformed("non-UTF-8 chunk size"))?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| malformed("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if size > RESPONSE_BYTES_MAX.saturating_sub(body.len()) {
            return Err(ClientError::TooLarge {
                limit_bytes: RESPONSE_BYTES_MAX,
            });
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| malformed("a chunk shorter than its size"))?;
        body.extend_from_slice(chunk);
        rest = rest[size..]
            .strip_prefix(b"\r\n")
            .ok_or_else(|| malformed("a chunk not followed by CRLF"))?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    }

    #[test]
    fn chunked_body_with_extension_and_trailer() {
        let raw = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
            3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, b"abcde".as_slice()));
    }

    #[test]
    fn interim_response_is_skipped() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().status, 204);
    }

    #[test]
    fn malformed_responses_are_errors() {
        let cases: [&[u8]; 6] = [
            b"",
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0 hello\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        ];
        for raw in cases {
            let e = parse_response(raw).unwrap_err();
            assert_eq!(e.metric_label(), "malformed", "{raw:?}");
        }
    }

    #[test]
    fn a_huge_chunk_size_is_too_large_not_a_panic() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert_eq!(parse_response(raw).unwrap_err().metric_label(), "too_large");
    }

    #[test]
    fn header_injection_is_refused() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e = encode_request(addr, "GET", "/x\r\nEvil: 1", None).unwrap_err();
        assert_eq!(e.metric_label(), "invalid_request");
        assert!(encode_request(addr, "get", "/", None).is_err());
    }
}
