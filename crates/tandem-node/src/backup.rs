//! Taking a backup of the cluster state on the coordinator: a linearizable
//! read through Raft, then the state applied at (at least) that index,
//! encoded with its secrets redacted and verified against what was read by
//! loading it into a scratch state machine ([`tandem_raft::backup`]).

use std::time::Duration;

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
    let start = ctx.clock.now();
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
        elapsed: ctx.clock.now().since(start),
    })
}

/// What the node knows of its scheduled backups, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupRecord {
    /// The schedule's interval, when `[backup]` is configured.
    pub interval_ms: Option<u64>,
    pub dir: String,
    pub keep: u32,
    /// The last backup written here and verified after writing.
    pub last_file: Option<String>,
    pub last_index: u64,
    pub last_unix_ms: u64,
    /// The last failure, if it came after the last success.
    pub last_failure: Option<String>,
    pub last_failure_unix_ms: u64,
    pub failures: u64,
    /// Since when this node has been coordinator with the schedule running
    /// (a node that is not the coordinator takes none and warns of none).
    pub coordinator_since_unix_ms: Option<u64>,
}

impl BackupRecord {
    /// Why the backups are a concern now, if they are: the last attempt
    /// failed, or the last verified backup (or, without one, the time this
    /// node became coordinator) is older than two intervals.
    pub fn warning(&self, now_unix_ms: u64) -> Option<String> {
        let interval = self.interval_ms?;
        let since = self.coordinator_since_unix_ms?;
        if let Some(f) = &self.last_failure {
            return Some(format!("the last scheduled backup failed: {f}"));
        }
        let allowed = interval.saturating_mul(2);
        match &self.last_file {
            Some(file) if now_unix_ms.saturating_sub(self.last_unix_ms) > allowed => Some(format!(
                "the last verified backup ({file}) is {} s old, the schedule allows {} s",
                now_unix_ms.saturating_sub(self.last_unix_ms) / 1000,
                allowed / 1000
            )),
            None if now_unix_ms.saturating_sub(since) > allowed => {
                Some("no verified backup yet in two intervals".to_string())
            }
            _ => None,
        }
    }

    /// Age of the last verified backup in seconds, if there is one.
    pub fn age_s(&self, now_unix_ms: u64) -> Option<f64> {
        self.last_file
            .as_ref()
            .map(|_| now_unix_ms.saturating_sub(self.last_unix_ms) as f64 / 1000.0)
    }
}

/// The file name of a scheduled backup: sorted by index, then time.
fn file_name(cluster: &str, index: u64, unix_ms: u64) -> String {
    format!("tandem-backup-{cluster}-{index:012}-{unix_ms}.jsonl")
}

/// Takes a backup, writes it into `dir`, reads it back and verifies it
/// (checksum, scratch load, and the same state as taken).
async fn take_and_write(ctx: &NodeContext, cfg: &tandem_core::config::BackupConfig) -> Result<(String, u64), String> {
    let taken = take(ctx).await?;
    let h = &taken.backup.header;
    let path = cfg.dir.join(file_name(&h.cluster, h.index, h.taken_unix_ms));
    let (index, bytes) = (h.index, taken.bytes);
    let dir = cfg.dir.clone();
    let to = path.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: cannot create it: {e}", dir.display()))?;
        backup::write_new(&to, &bytes).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the backup task failed: {e}"))??;
    let read_back = backup::verify_file(&path)
        .await
        .map_err(|e| format!("written but not verified: {e}"))?;
    if read_back.state != taken.backup.state {
        return Err(format!("{}: read back, it differs from what was taken", path.display()));
    }
    Ok((path.display().to_string(), index))
}

/// Removes the oldest scheduled backups of this cluster in `dir` beyond `keep`.
fn prune(dir: &std::path::Path, cluster: &str, keep: u32) -> Result<Vec<String>, String> {
    let prefix = format!("tandem-backup-{cluster}-");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list it: {e}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep as usize);
    let mut removed = Vec::new();
    for name in files.into_iter().take(excess) {
        std::fs::remove_file(dir.join(&name)).map_err(|e| format!("{}: cannot remove it: {e}", dir.display()))?;
        removed.push(name);
    }
    Ok(removed)
}

fn record(ctx: &NodeContext, f: impl FnOnce(&mut BackupRecord)) {
    let mut r = ctx.counters.backup.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut r);
}

/// Commits an event about a backup (best effort: without a quorum there is
/// no backup either, and the failure is logged).
async fn note(ctx: &NodeContext, message: String) {
    let cmd = tandem_core::state::Command::Note {
        message,
        actor: format!("node:{}", ctx.me.name),
        at_unix_ms: ctx.clock.unix_ms(),
    };
    if let Err(e) = ctx.raft.write(cmd).await {
        tracing::debug!(error = %e, "could not record a backup event");
    }
}

/// Scheduled backups: while this node is the coordinator, one backup every
/// `interval` (the first at once), each verified after writing, the oldest
/// pruned beyond `keep`; each success and failure is an event.
pub async fn run_scheduled(
    ctx: NodeContext,
    cfg: tandem_core::config::BackupConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    record(&ctx, |r| {
        r.interval_ms = Some(tandem_core::timing::duration_ms(cfg.interval));
        r.dir = cfg.dir.display().to_string();
        r.keep = cfg.keep;
    });
    let step = (cfg.interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let interval_ms = tandem_core::timing::duration_ms(cfg.interval);
    let mut last_attempt: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !ctx.is_coordinator() {
            last_attempt = None;
            record(&ctx, |r| r.coordinator_since_unix_ms = None);
            continue;
        }
        let now = ctx.clock.unix_ms();
        record(&ctx, |r| {
            r.coordinator_since_unix_ms.get_or_insert(now);
        });
        if last_attempt.is_some_and(|t| now.saturating_sub(t) < interval_ms) {
            continue;
        }
        last_attempt = Some(now);
        match take_and_write(&ctx, &cfg).await {
            Ok((file, index)) => {
                let at = ctx.clock.unix_ms();
                record(&ctx, |r| {
                    r.last_file = Some(file.clone());
                    r.last_index = index;
                    r.last_unix_ms = at;
                    r.last_failure = None;
                });
                let dir = cfg.dir.clone();
                let (cluster, keep) = (ctx.cluster.clone(), cfg.keep);
                match tokio::task::spawn_blocking(move || prune(&dir, &cluster, keep)).await {
                    Ok(Ok(removed)) if !removed.is_empty() => {
                        tracing::debug!(?removed, "pruned old backups");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not prune old backups"),
                    Err(e) => tracing::warn!(error = %e, "could not prune old backups"),
                }
                note(&ctx, format!("backup verified: {file} at index {index}")).await;
            }
            Err(e) => {
                let at = ctx.clock.unix_ms();
                tracing::warn!(error = %e, "scheduled backup failed");
                record(&ctx, |r| {
                    r.last_failure = Some(e.clone());
                    r.last_failure_unix_ms = at;
                    r.failures += 1;
                });
                note(&ctx, format!("backup failed: {e}")).await;
            }
        }
    }
}
