//! The demo's client: it resolves a ClusterSet name through a node's DNS server, as
//! a pod would through CoreDNS, and sends an HTTP request to one of the addresses.
//!
//! It resolves again before every request (the answers' TTL is 5 s; a client that
//! caches for the TTL fails over up to 5 s later) and takes the addresses in turn.
//! Standalone mode has no kube-proxy and no ClusterSet IP, so it connects to the
//! endpoints themselves, on the port their EndpointSlices give.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::runtime::dns::client::{RecordType, ResponseCode, query_within};
use crate::runtime::http::client;

/// The name the demo's client asks for.
pub const REBEL_BASE: &str = "rebel-base.default.svc.clusterset.local.";
/// How long one DNS question may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A client in one cluster: its node's DNS server, and the application's port.
pub struct Client {
    pub dns: SocketAddr,
    pub port: u16,
    turn: usize,
}

/// What `dig` would show: the response code and the A records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub rcode: ResponseCode,
    pub addresses: Vec<IpAddr>,
}

impl Client {
    pub fn new(dns: SocketAddr, port: u16) -> Self {
        Client { dns, port, turn: 0 }
    }

    /// Asks the node's DNS server for the A records of `name`.
    pub async fn resolve(&self, name: &str) -> anyhow::Result<Resolved> {
        let (dns, name) = (self.dns, name.to_owned());
        let answer = tokio::task::spawn_blocking(move || {
            query_within(dns, &name, RecordType::A, DNS_TIMEOUT)
        })
        .await
        .context("the DNS query's thread")??;
        Ok(Resolved {
            rcode: answer.rcode,
            addresses: answer.addresses,
        })
    }

    /// One request to `rebel-base`: resolve, pick the next address, `GET /`. Returns
    /// the cluster that answered.
    pub async fn request(&mut self) -> anyhow::Result<String> {
        let resolved = self.resolve(REBEL_BASE).await?;
        if resolved.addresses.is_empty() {
            bail!("{REBEL_BASE} has no address ({})", resolved.rcode);
        }
        let ip = resolved.addresses[self.turn % resolved.addresses.len()];
        self.turn = self.turn.wrapping_add(1);
        let addr = SocketAddr::new(ip, self.port);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client::get(addr, "/"))
            .await
            .with_context(|| format!("GET http://{addr}/ timed out"))?
            .with_context(|| format!("GET http://{addr}/"))?;
        if !response.is_success() {
            bail!("GET http://{addr}/ answered {}", response.status);
        }
        Ok(String::from_utf8_lossy(&response.body).trim().to_owned())
    }

    /// `count` requests in a row; the answers counted by cluster, failures as
    /// `"error"`.
    pub async fn requests(&mut self, count: usize) -> BTreeMap<String, u32> {
        let mut answers = BTreeMap::new();
        for _ in 0..count {
            let who = self.request().await.unwrap_or_else(|_| "error".to_owned());
            *answers.entry(who).or_insert(0) += 1;
        }
        answers
    }
}

/// `us-east ×20` or `eu-west ×9, us-east ×11`.
pub fn tally(answers: &BTreeMap<String, u32>) -> String {
    answers
        .iter()
        .map(|(who, n)| format!("{who} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
