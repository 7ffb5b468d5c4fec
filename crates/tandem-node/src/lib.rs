//! The runtime of a Tandem node: what a node does, whoever asks.
//!
//! The lease runtime (heartbeats out and in, quorum confirmation, the
//! witness's fallback), the coordinator's placement loop and fencer, the
//! executor that carries out assignments on this node, role-change hooks,
//! the watchdog, the DNS zone that follows the applied state and the pushes
//! to other DNS servers, writes and membership changes on the coordinator
//! with their error types, and [`Node`], which starts and stops it all.
//! Time is read only through [`clock::Clock`].
//!
//! Decisions (liveness, lease grants, placement, membership rules) are the
//! core's; this crate feeds them the clock and Raft's state and carries out
//! the result. It has no network face of its own: the gRPC services and
//! HTTP (`tandem-api`) call into it. Protobuf appears only at its wire edge
//! to other nodes (heartbeats, reports).

pub mod backup;
pub mod clock;
pub mod counters;
pub mod dns;
pub mod executor;
pub mod guard;
pub mod heartbeat;
pub mod hooks;
pub mod lease_file;
pub mod liveness;
pub mod manager;
pub mod membership;
pub mod node;
pub mod report;
pub mod start;
pub mod watchdog;
pub mod write;

pub use node::NodeContext;
pub use start::{Node, NodeParams, StartError};
