//! The desired Kubernetes objects for an import, and the standalone backend.
//!
//! - `objects`: the MCS custom resources (ServiceExport, ServiceImport) as serde
//!   structs, the well-known labels, and the deterministic names of derived objects.
//! - `desired`: pure translations: a ServiceExport and its Service and EndpointSlices
//!   into an export; an import into a ServiceImport, a derived Service and
//!   EndpointSlices; an export's MCS conditions. The Kubernetes backend reuses these.
//! - `standalone`: the same objects read from and written to a directory of
//!   Kubernetes-shaped YAML (`in/` and `out/`), for the demo and tests.
//!
//! **Architecture invariant:** the backend decides no MCS rule itself. Which endpoints
//! and ports an import holds, and which export wins a conflict, come from the core's
//! [`crate::core::ImportedService`]; the backend only renders them.

pub mod desired;
pub mod objects;
pub mod standalone;

pub use desired::{
    DesiredImport, ExportInvalid, desired_import, export_conditions, export_spec, stamp_transitions,
};
pub use objects::{ServiceExport, ServiceImport};
pub use standalone::{
    ApplyReport, BackendError, BackendStats, ExportChange, StandaloneBackend, watch,
};
