//! Tandem's Raft adapter: the only crate that knows openraft.
//!
//! * [`Consensus`]: what the node runtime and the API use of Raft, in
//!   Tandem's own terms: writes, the view of leadership and membership,
//!   quorum confirmation for leases, leader transfer, membership changes.
//! * [`store`]: the durable log and state machine on redb, fsync'ed before
//!   anything is acknowledged, with snapshots and log compaction.
//! * [`network`]: Raft RPCs to peers over gRPC (`tandem.v1.Peer`).
//!
//! openraft is the 0.10 line, with Pre-Vote (a node cut off alone raises no
//! term and deposes nobody when it returns) and leader transfer.

pub mod backup;
mod consensus;
pub mod network;
pub mod runtime;
pub mod store;

pub use consensus::{
    Bootstrap, Consensus, ConsensusConfig, MemberChange, RaftProgress, RaftRole, RaftView, TransferError, ViewWatch,
    WriteError, Written,
};
use tandem_core::NodeInfo;
use tandem_core::state::{Applied, Command};

openraft::declare_raft_types!(
    /// openraft types for Tandem: log entries carry [`Command`]s, membership
    /// carries [`NodeInfo`] (name, address, role) for every node. Terms and
    /// leader ids are openraft's defaults (`u64`, a leader id of term and
    /// node), which keeps the log and vote records of data directories
    /// written with openraft 0.9 readable.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = NodeInfo,
        AsyncRuntime = runtime::SeededRuntime,
);

type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, store::SnapshotData>;
type OpenRaft = openraft::Raft<TypeConfig, store::StateMachine>;
