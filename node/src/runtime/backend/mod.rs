//! The desired Kubernetes objects for an import, and the standalone backend.
