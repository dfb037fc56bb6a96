//! The runtime: everything that does IO, driving the sans-IO [`crate::core`].
//!
//! - `certs`: the ClusterSet CA and per-cluster certificates (rcgen), and reading the
//!   cluster id and ed25519 key a certificate names.
//! - `transport`: QUIC (quinn) with mutual TLS; SWIM over datagrams, the rest over
//!   streams; bounded everywhere; built-in fault injection for chaos experiments.
//! - `store`: sled: the view, this cluster's own versions, lease votes.
//! - `config`: the TOML file, `SHOAL_` environment overrides, validation.
//! - `backend`: the desired Kubernetes objects for an import, and the standalone
//!   backend (a directory of Kubernetes-shaped YAML).
//! - `driver`: the loop that feeds the core and carries out its commands.
//! - `http`: the HTTP API and Prometheus metrics.
//! - `dns`: without Kubernetes, `clusterset.local` served from the imports.
//!
//! **Architecture invariant:** the runtime carries out the core's commands in order and
//! never decides protocol questions itself.

pub mod api;
pub mod backend;
pub mod certs;
pub mod config;
pub mod demo;
pub mod dns;
pub mod driver;
pub mod http;
pub mod preflight;
pub mod store;
pub mod transport;

/// Requests from the HTTP API waiting for the driver; beyond it, the API answers 503.
pub const API_QUEUE_MAX: usize = 256;
