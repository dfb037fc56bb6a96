//! Where exports are read and imports written: the seam the driver talks to, and the
//! backends behind it.
//!
//! - `seam`: the [`Backend`] trait the driver drives, and its events.
//! - `objects`: the MCS custom resources (ServiceExport, ServiceImport) as serde
//!   structs, the well-known labels, and the deterministic names of derived objects.
//! - `desired`: pure translations: a ServiceExport and its Service and EndpointSlices
//!   into an export; an import into a ServiceImport, a derived Service and
//!   EndpointSlices; an export's MCS conditions. Both backends use them.
//! - `standalone`: the same objects read from and written to a directory of
//!   Kubernetes-shaped YAML (`in/` and `out/`), for the demo and tests.
//! - `kubernetes`: the same objects read from and written to an API server.
//! - `memory`: a backend held in memory and steered by a test.
//!
//! **Architecture invariant:** the backend decides no MCS rule itself. Which endpoints
//! and ports an import holds, and which export wins a conflict, come from the core's
//! [`crate::core::ImportedService`]; the backend only renders them.

pub mod desired;
pub mod kubernetes;
pub mod memory;
pub mod objects;
pub mod seam;
pub mod standalone;

pub use desired::{
    DesiredImport, ExportInvalid, desired_import, export_conditions, export_spec, stamp_transitions,
};
pub use objects::{ServiceExport, ServiceImport};
pub use seam::{Backend, BackendEvent, ExportSet, Imports, ImportsUpdate, LeaseSeen};
pub use standalone::{
    ApplyReport, BackendError, BackendStats, ExportChange, Standalone, StandaloneBackend,
    StandaloneLimits, watch,
};
