//! [`Consensus`]: Raft as the rest of Tandem sees it.
//!
//! The node runtime and the API never name an openraft type: they write
//! commands, read a [`RaftView`] of leadership and membership (published
//! only when one of those changes, so following it costs nothing while the
//! cluster is calm), ask when a quorum last acknowledged this coordinator,
//! hand leadership over, and change membership. Errors come back as
//! [`WriteError`] and [`TransferError`], in Tandem's words.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ChangeMembershipError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Config, Instant, ServerState, SnapshotPolicy};
use tandem_core::state::{Applied, Command};
use tandem_core::timing::duration_ms;
use tandem_core::{NodeId, NodeInfo};
use tokio::sync::watch;

use crate::network::{Channels, Inbound, Network, RpcFailures};
use crate::store::{StateMachine, Store};
use crate::{OpenRaft, TypeConfig};

/// This node's part in Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaftRole {
    /// Receives the log but does not vote (a node being added).
    #[default]
    Learner,
    Follower,
    Candidate,
    /// The coordinator.
    Leader,
    /// Raft stopped on this node.
    Shutdown,
}

/// Leadership and membership as this node knows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftView {
    /// The term of the vote this node holds.
    pub term: u64,
    /// The coordinator, when known.
    pub leader: Option<NodeId>,
    pub role: RaftRole,
    /// Every member (voters and learners) of the effective membership.
    pub members: BTreeMap<NodeId, NodeInfo>,
    pub voters: BTreeSet<NodeId>,
}

impl RaftView {
    /// True when `me` is the coordinator.
    pub fn is_leader(&self, me: NodeId) -> bool {
        self.role == RaftRole::Leader && self.leader == Some(me)
    }

    /// The term `me` leads, when it is the coordinator.
    pub fn leading_term(&self, me: NodeId) -> Option<u64> {
        self.is_leader(me).then_some(self.term)
    }

    /// The coordinator's id and member record, when known.
    pub fn coordinator(&self) -> Option<(NodeId, NodeInfo)> {
        let id = self.leader?;
        Some((id, self.members.get(&id)?.clone()))
    }

    /// The names of the voters, in id order.
    pub fn voter_names(&self) -> Vec<String> {
        self.voters
            .iter()
            .filter_map(|id| self.members.get(id).map(|n| n.name.clone()))
            .collect()
    }

    /// The member called `name`.
    pub fn find(&self, name: &str) -> Option<(NodeId, &NodeInfo)> {
        self.members
            .iter()
            .find(|(_, n)| n.name == name)
            .map(|(id, n)| (*id, n))
    }
}

/// How far the log has come on this node, read when asked (it changes with
/// every Raft message, so nothing follows it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftProgress {
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// On the coordinator: the last log index known to be on each member
    /// (`None` for one not known to hold anything yet).
    pub matched: Option<BTreeMap<NodeId, Option<u64>>>,
}

/// Follows the [`RaftView`]: changes only when leadership or membership does.
pub type ViewWatch = watch::Receiver<Arc<RaftView>>;

/// A committed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub index: u64,
    pub applied: Applied,
}

/// Why a write proposed on this node was not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Nothing can be decided now (no coordinator, an election or another
    /// membership change under way): the same request may succeed later.
    Retry(String),
    /// This node is not (any more) the coordinator; `coordinator` is, when
    /// known. The caller may send the request there, or retry.
    Forward {
        coordinator: Option<NodeInfo>,
        message: String,
    },
    /// Raft refused the change as asked (a membership change it does not
    /// allow): retrying the same request does not help.
    Refused(String),
    /// Raft stopped on this node.
    Fatal(String),
}

impl WriteError {
    /// What to tell the caller.
    pub fn message(&self) -> &str {
        match self {
            WriteError::Retry(m) | WriteError::Refused(m) | WriteError::Fatal(m) => m,
            WriteError::Forward { message, .. } => message,
        }
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for WriteError {}

impl From<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> for WriteError {
    fn from(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Self {
        let forward = |f: openraft::error::ForwardToLeader<TypeConfig>, what: &str| WriteError::Forward {
            message: format!(
                "{what}{}; retry",
                f.leader_node
                    .as_ref()
                    .map(|n| format!(" ({} is now)", n.name))
                    .unwrap_or_default()
            ),
            coordinator: f.leader_node,
        };
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                forward(f, "this node is not the coordinator, or cannot reach a quorum")
            }
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => forward(
                f,
                "this node stopped being the coordinator before the change committed; it may or may not have taken effect",
            ),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(p))) => {
                WriteError::Retry(format!("another membership change is still in progress ({p}); retry"))
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => WriteError::Refused(c.to_string()),
            RaftError::APIError(ClientWriteError::PreconditionFailed(p)) => WriteError::Retry(p.to_string()),
            RaftError::Fatal(f) => WriteError::Fatal(format!("raft stopped: {f}")),
        }
    }
}

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Learners that caught up become voters.
    AddVoters(BTreeSet<NodeId>),
    /// Voters become learners.
    RemoveVoters(BTreeSet<NodeId>),
    /// Learners leave the membership.
    RemoveNodes(BTreeSet<NodeId>),
}

/// What bootstrapping the cluster did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    Done,
    /// This node already holds Raft state (or a membership); nothing changed.
    AlreadyDone(String),
}

/// Why leadership did not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("this node is not the coordinator")]
    NotLeader,
    #[error("node {0} is not a voter")]
    NotVoter(String),
    #[error("leadership did not move within {0} ms; {1}")]
    TimedOut(u64, String),
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// The timing and policies Raft runs with on this node.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub cluster: String,
    /// How often the coordinator sends Raft heartbeats; also the longest a
    /// Raft round trip may take.
    pub heartbeat_interval: Duration,
    /// A follower that heard nothing from the coordinator for twice this
    /// (its lease on the leader) starts an election after a random time
    /// between this and twice this.
    pub election_timeout: Duration,
    /// Whether this node starts elections on its own timer.
    pub campaigns: bool,
    /// How long a snapshot transfer may take.
    pub install_snapshot_timeout: Duration,
    /// Entries between two snapshots (and the log compaction after each).
    pub snapshot_after_entries: u64,
    /// How long openraft waits before it calls an unreachable peer again.
    pub retry_after: Duration,
}

impl ConsensusConfig {
    /// Checks that Raft accepts this configuration.
    pub fn validate(&self) -> Result<(), String> {
        self.openraft().map(|_| ())
    }

    fn openraft(&self) -> Result<Config, String> {
        Config {
            cluster_name: self.cluster.clone(),
            heartbeat_interval: duration_ms(self.heartbeat_interval),
            election_timeout_min: duration_ms(self.election_timeout),
            election_timeout_max: duration_ms(self.election_timeout.saturating_mul(2)),
            install_snapshot_timeout: duration_ms(self.install_snapshot_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.snapshot_after_entries.min(1000),
            enable_elect: self.campaigns,
            // A node cut off alone asks before it campaigns, so it raises no
            // term and deposes nobody when it returns.
            enable_pre_vote: Some(true),
            // Replicate an entry as soon as the coordinator appended it, so
            // its own fsync and the followers' run side by side.
            broadcast_submitted_on_append: Some(true),
            ..Config::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }
}

/// Raft on this node. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    id: NodeId,
    cluster: String,
    raft: OpenRaft,
    view: ViewWatch,
    rpc_failures: Arc<RpcFailures>,
}

impl Consensus {
    /// Starts Raft on `store`, talking to peers through `channels`.
    pub async fn start(
        id: NodeId,
        config: &ConsensusConfig,
        channels: Channels,
        store: &Store,
        state_machine: StateMachine,
    ) -> Result<Consensus, String> {
        let openraft_config = Arc::new(config.openraft()?);
        let rpc_failures = Arc::new(RpcFailures::default());
        let network = Network::new(
            config.cluster.clone(),
            channels,
            config.retry_after,
            rpc_failures.clone(),
        );
        let raft = OpenRaft::new(id, openraft_config, network, store.log_store(), state_machine)
            .await
            .map_err(|e| format!("cannot start Raft: {e}"))?;
        let view = follow_view(&raft);
        Ok(Consensus {
            id,
            cluster: config.cluster.clone(),
            raft,
            view,
            rpc_failures,
        })
    }

    /// Raft RPCs this node sent that failed, by method and cause.
    pub fn rpc_failures(&self) -> &RpcFailures {
        &self.rpc_failures
    }

    /// Leadership and membership now.
    pub fn view(&self) -> Arc<RaftView> {
        self.view.borrow().clone()
    }

    /// Follows [`Consensus::view`].
    pub fn watch(&self) -> ViewWatch {
        self.view.clone()
    }

    /// The term of this node's vote.
    pub fn term(&self) -> u64 {
        self.view.borrow().term
    }

    /// True while this node is the coordinator.
    pub fn is_leader(&self) -> bool {
        self.view.borrow().is_leader(self.id)
    }

    /// How far the log has come here.
    pub fn progress(&self) -> RaftProgress {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        RaftProgress {
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            matched: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect()),
        }
    }

    /// Why Raft stopped on this node, if it did.
    pub fn fatal(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.running_state.as_ref().err().map(|e| e.to_string())
    }

    /// On the coordinator: how long ago it sent the last message that a
    /// quorum of voters acknowledged, that is, how old the newest proof is
    /// that no other coordinator could have been elected (Raft's leader
    /// lease). Read from Raft's own bookkeeping of every acknowledged append
    /// and heartbeat: it costs no round trip and never waits for the state
    /// machine. `None` when this node is not the coordinator or was never
    /// acknowledged in its term; zero for the sole voter of a cluster.
    pub fn quorum_ack_age(&self) -> Option<(u64, Duration)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
            return None;
        }
        // A sole voter is its own quorum: nothing else can be elected.
        let mut voters = m.membership_config.membership().voter_ids();
        if voters.next() == Some(self.id) && voters.next().is_none() {
            return Some((m.current_term, Duration::ZERO));
        }
        let acked = m.last_quorum_acked.as_ref()?;
        Some((m.current_term, acked.elapsed()))
    }

    /// Commits `command`: its log index and what applying it returned.
    pub async fn write(&self, command: Command) -> Result<Written, WriteError> {
        let r = self.raft.client_write(command).await?;
        Ok(Written {
            index: r.log_id.index,
            applied: r.data,
        })
    }

    /// A linearizable read point: confirms with a quorum (ReadIndex) that
    /// this node is still the coordinator and waits until its state machine
    /// applied everything committed before the call. Returns the (index,
    /// term) of the log id the state machine then reflects at least.
    pub async fn read_index(&self) -> Result<(u64, u64), String> {
        let read = self
            .raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
            .await
            .map_err(|e| format!("cannot confirm this node is still the coordinator: {e}"))?;
        let log_id = read.log_id();
        Ok((log_id.index, log_id.leader_id.term))
    }

    /// Bootstraps a cluster of `members` (every initial member may do it
    /// with the same list).
    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<Bootstrap, String> {
        match self.raft.initialize(members).await {
            Ok(()) => Ok(Bootstrap::Done),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => Ok(Bootstrap::AlreadyDone(e.to_string())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Starts an election now (after a Pre-Vote round: it changes nothing
    /// while a healthy coordinator holds a quorum).
    pub async fn campaign(&self) -> Result<(), String> {
        self.raft.trigger().elect(true).await.map_err(|e| e.to_string())
    }

    /// Adds `node` as a learner without waiting: the log index of the change.
    pub async fn add_learner(&self, id: NodeId, node: NodeInfo) -> Result<u64, WriteError> {
        Ok(self.raft.add_learner(id, node, false).await?.log_id.index)
    }

    /// Waits until member `id` holds the log up to `index` (`Some(true)`),
    /// this node stops being the coordinator (`Some(false)`), or `timeout`
    /// passes (`None`).
    pub async fn wait_caught_up(&self, id: NodeId, index: u64, timeout: Duration) -> Option<bool> {
        let me = self.id;
        let caught_up = move |m: &openraft::RaftMetrics<TypeConfig>| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id))
                .is_some_and(|matched| matched.is_some_and(|l| l.index >= index))
        };
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(
                move |m| caught_up(m) || m.current_leader != Some(me),
                "member caught up",
            )
            .await
            .ok()?;
        Some(caught_up(&m))
    }

    /// Commits a membership change (by joint consensus where voters
    /// change): the log index of the final membership.
    pub async fn change_membership(&self, change: MemberChange) -> Result<u64, WriteError> {
        let change: ChangeMembers<NodeId, NodeInfo> = match change {
            MemberChange::AddVoters(ids) => ChangeMembers::AddVoterIds(ids),
            MemberChange::RemoveVoters(ids) => ChangeMembers::RemoveVoters(ids),
            MemberChange::RemoveNodes(ids) => ChangeMembers::RemoveNodes(ids),
        };
        Ok(self.raft.change_membership(change, false).await?.log_id.index)
    }

    /// Hands leadership to voter `to` and waits until that node leads, at
    /// most `timeout`. The coordinator stops
    /// accepting writes at once; the target campaigns without waiting out
    /// an election timeout, so the gap is one vote round.
    pub async fn transfer_leadership(&self, to: NodeId, timeout: Duration) -> Result<NodeId, TransferError> {
        let view = self.view();
        if !view.is_leader(self.id) {
            return Err(TransferError::NotLeader);
        }
        if to == self.id {
            return Ok(to);
        }
        if !view.voters.contains(&to) {
            return Err(TransferError::NotVoter(
                view.members.get(&to).map_or_else(|| to.to_string(), |n| n.name.clone()),
            ));
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| TransferError::Fatal(e.to_string()))?;
        let mut watch = self.watch();
        let moved = tokio::time::timeout(timeout, async {
            loop {
                if watch.borrow_and_update().leader.is_some_and(|l| l != self.id) {
                    return;
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let now = self.view();
        match (moved, now.leader) {
            (Ok(()), Some(leader)) if leader != self.id => Ok(leader),
            _ => Err(TransferError::TimedOut(
                duration_ms(timeout),
                match now.leader {
                    Some(l) if l == self.id => "this node still leads".to_owned(),
                    Some(l) => format!("node {l} leads"),
                    None => "no coordinator yet".to_owned(),
                },
            )),
        }
    }

    /// The receiving end of the Raft network, for the peer service.
    pub fn inbound(&self) -> Inbound {
        Inbound::new(self.cluster.clone(), self.raft.clone())
    }

    /// Stops Raft on this node.
    pub async fn shutdown(&self) -> Result<(), String> {
        self.raft.shutdown().await.map_err(|e| e.to_string())
    }
}

/// A [`RaftView`] channel fed from openraft's server metrics (which change
/// only with leadership and membership), by a task that ends with Raft.
fn follow_view(raft: &OpenRaft) -> ViewWatch {
    let mut server = raft.server_metrics();
    let view_of = |m: &openraft::metrics::RaftServerMetrics<TypeConfig>| {
        let membership = m.membership_config.membership();
        RaftView {
            term: m.vote.leader_id().term,
            leader: m.current_leader,
            role: match m.state {
                ServerState::Learner => RaftRole::Learner,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Leader => RaftRole::Leader,
                ServerState::Shutdown => RaftRole::Shutdown,
            },
            members: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            voters: membership.voter_ids().collect(),
        }
    };
    let (tx, rx) = watch::channel(Arc::new(view_of(&server.borrow_watched())));
    tokio::spawn(async move {
        loop {
            if server.changed().await.is_err() {
                tx.send_modify(|v| {
                    let mut stopped = RaftView::clone(v);
                    stopped.role = RaftRole::Shutdown;
                    stopped.leader = None;
                    *v = Arc::new(stopped);
                });
                return;
            }
            let next = view_of(&server.borrow_watched());
            tx.send_if_modified(|v| {
                if **v == next {
                    return false;
                }
                *v = Arc::new(next);
                true
            });
        }
    });
    rx
}
