//! The network face of a Tandem node: the gRPC services (`tandem.v1.Tandem`
//! for operators and dashboards, `tandem.v1.Peer` for node-to-node traffic),
//! HTTP for load balancers, Prometheus and the status page, and the lease
//! runtime behind heartbeats.
//!
//! This is the only crate that converts between protobuf and core types.
//! Decisions (liveness, lease grants, membership rules) are the core's; this
//! crate feeds them the clock and the Raft metrics and carries out the result.

pub mod auth;
pub mod clock;
pub mod context;
pub mod convert;
pub mod counters;
pub mod dns;
pub mod errors;
pub mod executor;
pub mod hooks;
pub mod http;
pub mod lease_file;
pub mod liveness;
pub mod manager;
pub mod metrics;
pub mod node;
pub mod operate;
pub mod peer;
pub mod report;
pub mod service;
pub mod status;
pub mod watchdog;
pub mod write;

pub use context::ApiContext;
pub use node::NodeContext;
