//! The sans-IO protocol core: all of Shoal's protocol state in plain structs.
//!
//! A driver (the runtime, or the simulator) feeds inputs through the `handle_*` methods
//! of [`Node`], each with the current time, and carries out the [`Command`]s that come
//! out, in order. The core never reads a clock, opens a socket, spawns a task or touches
//! a disk; randomness comes from one seeded RNG it owns.
//!
//! - `time`: the [`Time`] type: microseconds on the driver's monotonic clock.
//! - `config`: [`Config`], presets and validation.
//! - `command`: what comes out: [`Command`] and the persistence ops.
//! - `membership`: SWIM through foca, and cluster liveness (a cluster is alive while
//!   any of its replicas is).
//! - `records`: the view of verified records and the merge rule.
//! - `record_cache`: verify each distinct record once (optional, shared in the simulator).
//! - `dissemination`: eager pushes and their relays.
//! - `anti_entropy`: digests and pulls that repair what a push missed.
//! - `imports`: the MCS imports, kept from the view and liveness by an index per
//!   service, and how a step keeps them current.
//! - `traffic`: traffic policy: which origins of an import take traffic, per the
//!   service's affinity, its origins' readiness and their round trips.
//! - `failure`: liveness transitions, withdrawal after the grace period, re-admission.
//! - `lease`: the quorum lease (PaxosLease voters and proposers, fencing tokens).
//! - `publisher`: which replica publishes, as the local leader election decides:
//!   taking over versions, and letting go of leases.
//! - `inspect`: accessors and invariant checks.
//! - `timers`: absolute deadlines.
//! - `stats`: plain counters.
//! - `node`: [`Node`], which ties them together.
//!
//! **Architecture invariant:** every step emits its persistence commands before any
//! send, so a driver that carries commands out in order never sends what it has not
//! stored.

mod anti_entropy;
mod command;
mod config;
mod dissemination;
mod failure;
mod imports;
mod inspect;
mod lease;
mod membership;
mod node;
mod publisher;
mod record_cache;
mod records;
mod stats;
mod time;
mod timers;
mod traffic;

pub use command::{
    Command, Durability, Event, ImportChange, PersistedState, SourceChanges, StoreOp,
};
pub use config::{Config, ConfigError, LEASE_VOTERS_MAX, LeaseConfig, Seed, SwimTiming};
pub use imports::{Conflict, ConflictKind, ImportedCluster, ImportedService, Sources};
pub use lease::{LEASES_MAX, LeaseError, LeaseRequest, LeaseStatus, VoterRecord};
pub use membership::Liveness;
pub use node::{ExportSpec, InputError, InvariantViolation, Node};
pub use record_cache::{NoRecordCache, RecordCache, WeakRecordCache};
pub use records::MergeOutcome;
pub use stats::Stats;
pub use time::Time;
pub use traffic::TrafficReason;
