//! Tandem's pure core.
//!
//! Everything here is a deterministic function of its inputs: no sockets, no
//! files, no clock reads, no randomness. Time comes in as [`Millis`] values on
//! a monotonic clock chosen by the caller, so the same code runs in tests,
//! simulations and the real agent.
//!
//! * [`config`]: the node configuration file, parsed and validated once.
//! * [`state`]: the replicated cluster state and the commands that change it.
//! * [`lease`]: lease arithmetic and node liveness (`up`, `suspect`, `down`).
//! * [`membership`]: node identities and the rules for membership changes.
//! * [`whatif`]: what the coordinator would decide under imagined changes.

pub mod config;
pub mod duty;
#[doc(hidden)]
pub mod fuzz;
pub mod groups;
pub mod lease;
pub mod membership;
pub mod mutations;
pub mod operator;
pub mod placement;
pub mod spec;
pub mod state;
pub mod timing;
pub mod whatif;

pub use membership::{NodeId, NodeInfo, NodeRole};
pub use timing::{Millis, Timing};

/// The version of Tandem a node runs, reported in heartbeats and status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
