//! Shoal's node: the sans-IO protocol core (`core`) and, behind the default `runtime`
//! feature, the process that drives it over real IO.
//!
//! **Architecture invariant:** the protocol lives once, in [`core`]. The runtime and the
//! simulator both drive that same code; neither re-implements protocol logic.

pub mod core;
// The runtime is where clocks are read and tasks spawned: the bans in `clippy.toml`
// guard the core and the simulator.
#[cfg(feature = "runtime")]
#[allow(clippy::disallowed_methods)]
pub mod runtime;
