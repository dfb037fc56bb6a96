//! The ClusterSet CA and per-cluster certificates.
