//! Taking a backup of the cluster state on the coordinator: a linearizable
//! read through Raft, then the state applied at (at least) that index,
//! encoded with its secrets redacted and verified against what was read by
//! loading it into a scratch state machine ([`tandem_raft::backup`]).

use std::time::{Duration, Instant};

use tandem_raft::backup::{self, Backup, Taker};

use crate::NodeContext;

/// A backup taken and verified in memory.
pub struct Taken {
    pub bytes: Vec<u8>,
    pub backup: Backup,
    /// Reading, encoding and verifying.
    pub elapsed: Duration,
}

/// Takes a backup here; only the coordinator can (the read must be
/// confirmed by a quorum).
pub async fn take(ctx: &NodeContext) -> Result<Taken, String> {
    let start = Instant::now();
    let (index, _term) = ctx.raft.read_index().await?;
    let mut state = ctx.state.clone();
    let applied = state
        .wait_for(|s| s.last_applied.is_some_and(|l| l.index >= index))
        .await
        .map_err(|_| "the node is stopping".to_string())?
        .clone();
    let taker = Taker {
        cluster: ctx.cluster.clone(),
        node: ctx.me.name.clone(),
        taken_unix_ms: ctx.clock.unix_ms(),
    };
    let for_encode = applied.clone();
    // Encoding a large spec is CPU work.
    let bytes = tokio::task::spawn_blocking(move || backup::encode(&for_encode, &taker))
        .await
        .map_err(|e| format!("the backup task failed: {e}"))?
        .map_err(|e| e.to_string())?;
    let backup = backup::verify(&bytes, Some(&applied))
        .await
        .map_err(|e| format!("the backup failed its verification: {e}"))?;
    Ok(Taken {
        bytes,
        backup,
        elapsed: start.elapsed(),
    })
}
