//! QUIC with mutual TLS.
