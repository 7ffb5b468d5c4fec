//! The network faces of a Tandem node: the gRPC services (`tandem.v1.Tandem`
//! for operators and dashboards, `tandem.v1.Peer` for node-to-node traffic),
//! HTTP for load balancers, Prometheus and the status page.
//!
//! This is the only crate that converts between protobuf and core types for
//! callers. What a node does is the runtime's (`tandem-node`); this crate
//! answers from it, calls into it and maps its errors to gRPC statuses.

pub mod auth;
pub mod context;
pub mod convert;
pub mod errors;
pub mod http;
pub mod metrics;
pub mod operate;
pub mod peer;
pub mod process;
pub mod serve;
pub mod service;
pub mod spec_check;
pub mod status;

pub use context::ApiContext;
pub use tandem_node::NodeContext;
