//! The HTTP API, Prometheus metrics, a tiny HTTP client, and the `shoal status` table.
//!
//! The server never holds protocol state: every route turns into an
//! [`ApiRequest`](crate::runtime::api::ApiRequest) sent over the driver's bounded
//! channel, and answers with the driver's reply (or 503 when the driver is busy, gone or
//! too slow).
//!
//! - `server`: the axum routes, bounded bodies and waits, and [`serve_with`], which
//!   runs the API listener and the optional health listener.
//! - `listener`: the accept loops; the caps on connections, in total and per client
//!   address, with refusals closed at once; the drain at shutdown.
//! - `connection`: one connection on hyper's HTTP/1.1, with its header-read, idle and
//!   lifetime deadlines.
//! - `stats`: the connection counters `/metrics` prints.
//! - `metrics`: the Prometheus text exposition (version 0.0.4) of a
//!   [`MetricsSnapshot`](crate::runtime::api::MetricsSnapshot).
//! - `client`: a minimal HTTP/1.1 client (`Connection: close`) for the CLI, the demo and
//!   tests.
//! - `table`: the plain-text report `shoal status` prints.
//!
//! **Architecture invariant:** input from the network never panics the server: a bad
//! request is answered with a 4xx, counted, and forgotten.

pub mod client;
mod connection;
pub mod listener;
pub mod metrics;
pub mod server;
mod stats;
pub mod table;

pub use client::{ClientError, Response, delete, get, get_json, post, post_json, send};
pub use listener::{ConnectionLimits, Listeners};
pub use metrics::render_metrics;
pub use server::{HEALTH_LIMITS, ServeError, ServerLimits, serve, serve_with};
pub use table::{fetch_and_render, render_status};
