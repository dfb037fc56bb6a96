//! Shoal's node: the sans-IO protocol core (`core`) and, behind the default `runtime`
//! feature, the process that drives it over real IO.
//!
//! **Architecture invariant:** the protocol lives once, in [`core`]. The runtime and the
//! simulator both drive that same code; neither re-implements protocol logic.

pub mod core;
#[cfg(feature = "runtime")]
pub mod runtime;
