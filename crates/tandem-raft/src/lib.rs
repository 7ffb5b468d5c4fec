//! Tandem's Raft adapter: the only crate that knows openraft.
//!
//! * [`TypeConfig`]: the openraft type configuration (commands and nodes from
//!   `tandem-core`).
//! * [`store`]: the durable log and state machine on redb, fsync'ed before
//!   anything is acknowledged, with snapshots and log compaction.
//! * [`network`]: Raft RPCs to peers over gRPC (`tandem.v1.Peer`).

pub mod network;
pub mod store;

use std::io::Cursor;

pub use openraft;
use tandem_core::NodeInfo;
use tandem_core::state::{Applied, Command};

openraft::declare_raft_types!(
    /// openraft types for Tandem: log entries carry [`Command`]s, membership
    /// carries [`NodeInfo`] (name, address, role) for every node.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<u64, NodeInfo>;
