//! Writes on the coordinator: a command proposed to Raft, and what a failed
//! write means for the caller, as one error type ([`WriteError`], from the
//! Raft layer) whatever face (gRPC, a peer's report, the runtime itself)
//! asked for it.

use tandem_core::state::{Applied, Command};
pub use tandem_raft::WriteError;

use crate::node::NodeContext;

/// Commits `command` on this node, the coordinator: its log index and what
/// applying it returned.
pub async fn propose(ctx: &NodeContext, command: Command) -> Result<(u64, Applied), WriteError> {
    let w = ctx.raft.write(command).await?;
    Ok((w.index, w.applied))
}
