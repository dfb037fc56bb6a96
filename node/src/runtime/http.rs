//! The HTTP API and Prometheus metrics.
