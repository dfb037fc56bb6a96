//! A minimal HTTP/1.1 client over a TCP stream, for the CLI, the demo and tests: one
//! request per connection (`Connection: close`), bounded in size and time.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response read.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed. Nothing is known of the request's effect.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
    /// The answer was not HTTP/1.1 as expected, or too large.
    #[error("bad response: {0}")]
    BadResponse(String),
    #[error("the body is not the JSON expected: {0}")]
    Json(#[from] serde_json::Error),
}

impl ClientError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ClientError::Io(_) => "io",
            ClientError::Timeout => "timeout",
            ClientError::BadResponse(_) => "bad_response",
            ClientError::Json(_) => "json",
        }
    }
}

/// A response: its status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn get(addr: SocketAddr, path: &str) -> Result<Response, ClientError> {
    request(addr, "GET", path, None).await
}

pub async fn delete(addr: SocketAddr, path: &str) -> Result<Response, ClientError> {
    request(addr, "DELETE", path, None).await
}

pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &impl Serialize,
) -> Result<Response, ClientError> {
    let body = serde_json::to_vec(body)?;
    request(addr, "POST", path, Some(body)).await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, ClientError> {
    tokio::time::timeout(REQUEST_TIMEOUT, exchange(addr, method, path, body))
        .await
        .map_err(|_| ClientError::Timeout)?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Response, ClientError> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(RESPONSE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut raw)
        .await?;
    if raw.len() > RESPONSE_BYTES_MAX {
        return Err(ClientError::BadResponse(format!(
            "more than {RESPONSE_BYTES_MAX} bytes"
        )));
    }
    parse(&raw)
}

/// Parses a whole HTTP/1.1 response: status line, headers, and a body framed by
/// `Content-Length`, chunked encoding, or the end of the stream.
fn parse(raw: &[u8]) -> Result<Response, ClientError> {
    let bad = |what: &str| ClientError::BadResponse(what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers are not text"))?;
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = if chunked {
        dechunk(rest).ok_or_else(|| bad("broken chunked body"))?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| bad("body shorter than its length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited_bodies() {
        let plain = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"ok"[..]));
        let chunked = parse(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (chunked.status, chunked.body.as_slice()),
            (404, &b"abcde"[..])
        );
        let closed = parse(b"HTTP/1.1 503 x\r\n\r\nbusy").unwrap();
        assert_eq!(closed.body, b"busy");
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(parse(b"garbage").is_err());
    }
}
