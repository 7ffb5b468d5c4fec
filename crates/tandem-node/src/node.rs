//! What every task of the node runtime, and every face that calls into it, shares.

use std::collections::BTreeSet;
use std::sync::Arc;

use tandem_core::{NodeId, NodeInfo, Timing};
use tandem_raft::Consensus;
use tandem_raft::network::Channels;
use tandem_raft::store::AppliedState;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::counters::NodeCounters;
use crate::liveness::Liveness;

/// The running node as its tasks and its faces see it. Cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    pub cluster: String,
    pub me: NodeInfo,
    pub id: NodeId,
    pub timing: Timing,
    pub raft: Consensus,
    /// The applied cluster state, updated after every apply.
    pub state: watch::Receiver<Arc<AppliedState>>,
    pub channels: Channels,
    pub clock: Clock,
    pub liveness: Arc<Liveness>,
    /// Where OCF resource agents live (normally /usr/lib/ocf).
    pub ocf_root: std::path::PathBuf,
    /// Escalation of a failed stop (the watchdog stops being fed).
    pub self_fence: Arc<crate::watchdog::SelfFence>,
    /// Set when the agent is stopping: exclusive groups stop here (and move),
    /// while heartbeats, the lease guard and the watchdog still run.
    pub leaving: Arc<std::sync::atomic::AtomicBool>,
    /// Counters of the runtime since the process started (for metrics).
    pub counters: Arc<NodeCounters>,
    /// Serialises membership changes made through this node.
    pub membership_lock: Arc<tokio::sync::Mutex<()>>,
}

impl NodeContext {
    /// The member record of node `id` in the current Raft membership.
    pub fn member(&self, id: NodeId) -> Option<NodeInfo> {
        self.raft.view().members.get(&id).cloned()
    }

    /// The coordinator's id and member record, as far as this node knows.
    pub fn coordinator(&self) -> Option<(NodeId, NodeInfo)> {
        self.raft.view().coordinator()
    }

    /// Every member (voters and learners) with its record.
    pub fn members(&self) -> Vec<(NodeId, NodeInfo)> {
        self.raft
            .view()
            .members
            .iter()
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// The voter and learner ids of the current membership.
    pub fn member_ids(&self) -> BTreeSet<NodeId> {
        self.raft.view().members.keys().copied().collect()
    }

    /// True while this node is the coordinator (the Raft leader).
    pub fn is_coordinator(&self) -> bool {
        self.raft.is_leader()
    }
}
