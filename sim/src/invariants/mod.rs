//! The invariants of DESIGN.md that the simulator checks, one file each.
//!
//! - `authenticity` (2): every record that enters a view was signed by its origin.
//! - `monotonicity` (3): no version goes backwards in any view, across crashes too.
//! - `withdrawal` (4): a dead cluster leaves every live importer within the bound;
//!   it also counts false withdrawals (a metric, not a violation).
//! - `convergence` (1): after healing, every live view equals the union of the latest
//!   records, within a bound.
//! - `determinism` (7): the trace hash, and the comparison of two runs.
//! - `affinity` (traffic policy): an import never lacks traffic while an origin is
//!   ready; traffic leaves an origin that stopped being ready, and returns to the
//!   preferred ones, within a bound; `nearest` follows true round trips.
//! - `lease_safety` (5): at most one lease holder at any true instant, tokens that
//!   strictly grow, no stale write accepted. Lease liveness (6), a holder within 3
//!   lease durations of healing, is one check in `world::lease`.
//!
//! Safety checks run after every event; convergence runs in the liveness phase. Each
//! node's own `check_invariants()` runs after every event it handles, and
//! `check_invariants_deep()` on a sample (see `world`).

pub mod affinity;
pub mod authenticity;
pub mod convergence;
pub mod determinism;
pub mod lease_safety;
pub mod monotonicity;
pub mod withdrawal;

/// Most violation descriptions kept per run; the count goes on.
pub const VIOLATION_DETAILS_MAX: usize = 100;

/// Every violation of a run: a count, and the first descriptions.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    pub count: u64,
    pub details: Vec<String>,
}

impl Violations {
    pub fn report(&mut self, at_us: u64, invariant: &str, detail: impl std::fmt::Display) {
        self.count += 1;
        if self.details.len() < VIOLATION_DETAILS_MAX {
            self.details.push(format!(
                "t={}.{:06}s {invariant}: {detail}",
                at_us / 1_000_000,
                at_us % 1_000_000
            ));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}
