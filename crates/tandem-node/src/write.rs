//! Writes on the coordinator: a command proposed to Raft, and what a failed
//! write means for the caller, as one error type ([`WriteError`]) whatever
//! face (gRPC, a peer's report, the runtime itself) asked for it.

use std::fmt;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use tandem_core::NodeInfo;
use tandem_core::state::{Applied, Command};

use crate::node::NodeContext;

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

impl From<RaftError<u64, ClientWriteError<u64, NodeInfo>>> for WriteError {
    fn from(e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => WriteError::Forward {
                message: format!(
                    "this node stopped being the coordinator{}; retry",
                    f.leader_node
                        .as_ref()
                        .map(|n| format!(" ({} is now)", n.name))
                        .unwrap_or_default()
                ),
                coordinator: f.leader_node,
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(p))) => {
                WriteError::Retry(format!("another membership change is still in progress ({p}); retry"))
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => WriteError::Refused(c.to_string()),
            RaftError::Fatal(f) => WriteError::Fatal(format!("raft stopped: {f}")),
        }
    }
}

/// Commits `command` on this node, the coordinator: its log index and what
/// applying it returned.
pub async fn propose(ctx: &NodeContext, command: Command) -> Result<(u64, Applied), WriteError> {
    let r = ctx.raft.client_write(command).await?;
    Ok((r.log_id.index, r.data))
}
