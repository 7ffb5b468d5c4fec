//! Role-change hooks: the group's `after_promote`, `after_demote` and
//! `after_failover` commands, run on this node by its executor.
//!
//! A hook never holds up the executor (it is spawned) and never changes what
//! runs: its outcome is committed as [`Command::HookRan`] and shows in the
//! events. What already ran is remembered in `STATE_DIR/.hooks/GROUP` (a
//! directory no group's can be), so an agent restart does not run a hook a
//! second time for the same epoch or transition.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_core::spec::Hooks;
use tandem_core::state::{ClusterState, Command, TransitionOutcome};
use tracing::{info, warn};

use crate::node::NodeContext;
use crate::report::send_report;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    AfterPromote,
    AfterDemote,
    AfterFailover,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::AfterPromote => "after_promote",
            Hook::AfterDemote => "after_demote",
            Hook::AfterFailover => "after_failover",
        }
    }

    fn command(self, hooks: &Hooks) -> Option<&String> {
        match self {
            Hook::AfterPromote => hooks.after_promote.as_ref(),
            Hook::AfterDemote => hooks.after_demote.as_ref(),
            Hook::AfterFailover => hooks.after_failover.as_ref(),
        }
    }
}

/// One run of a hook: what goes into its environment.
#[derive(Debug, Clone)]
pub struct HookCall {
    pub hook: Hook,
    pub group: String,
    pub epoch: u64,
    pub old_primary: Option<String>,
    pub new_primary: Option<String>,
}

/// What this node's executor already ran for a group (kept across agent
/// restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookMemory {
    /// The epoch `after_promote` last ran for.
    pub promoted_epoch: u64,
    /// Transitions with a lower id were handled (ids start at 0).
    pub failover_next: u64,
}

impl HookMemory {
    fn path(state_dir: &Path, group: &str) -> PathBuf {
        state_dir.join(".hooks").join(group)
    }

    /// The memory of `group`; without one (the first run of this agent with
    /// the group), every transition already completed counts as handled, so
    /// a node never runs `after_failover` for an old transition.
    pub fn load(state_dir: &Path, group: &str, state: &ClusterState) -> HookMemory {
        let path = Self::path(state_dir, group);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(%group, path = %path.display(), error = %e, "cannot read the hook memory; starting afresh");
                }
                HookMemory {
                    promoted_epoch: 0,
                    failover_next: state
                        .transitions
                        .iter()
                        .filter(|t| t.group == group && t.outcome == TransitionOutcome::Completed)
                        .map(|t| t.id + 1)
                        .max()
                        .unwrap_or(0),
                }
            }
        }
    }

    fn parse(text: &str) -> HookMemory {
        let mut m = HookMemory::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next().and_then(|v| v.parse().ok())) else {
                continue;
            };
            match key {
                "promoted_epoch" => m.promoted_epoch = value,
                "failover_next" => m.failover_next = value,
                _ => {}
            }
        }
        m
    }

    /// Writes the memory (a failure is logged: at worst a hook runs again
    /// after a restart).
    pub fn save(&self, state_dir: &Path, group: &str) {
        let path = Self::path(state_dir, group);
        let text = format!(
            "promoted_epoch {}\nfailover_next {}\n",
            self.promoted_epoch, self.failover_next
        );
        let tmp = path.with_extension("tmp");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            warn!(%group, path = %path.display(), error = %e, "cannot record which hooks ran");
        }
    }
}

/// The old primary of the transition that made this node primary of
/// `group` at `epoch`, if any.
pub fn old_primary_for(state: &ClusterState, group: &str, epoch: u64, me: &str) -> Option<String> {
    state
        .transitions
        .iter()
        .rev()
        .find(|t| t.group == group && t.epoch == epoch && t.to.as_deref() == Some(me))
        .and_then(|t| t.from.clone())
}

/// Spawns `call` if the group's spec has that hook: runs it, then commits
/// its outcome (retried a few times; a hook's outcome is for people, so
/// after that it is only logged).
pub fn spawn(ctx: &NodeContext, hooks: &Hooks, call: HookCall) {
    let Some(command) = call.hook.command(hooks).cloned() else {
        return;
    };
    let ctx = ctx.clone();
    let timeout = hooks.timeout;
    tokio::spawn(async move { run(ctx, command, timeout, call).await });
}

async fn run(ctx: NodeContext, command: String, timeout: Duration, call: HookCall) {
    let hook = call.hook.as_str();
    let vars = [
        ("TANDEM_HOOK", hook.to_string()),
        ("TANDEM_NODE", ctx.me.name.clone()),
        ("TANDEM_GROUP", call.group.clone()),
        ("TANDEM_EPOCH", call.epoch.to_string()),
        ("TANDEM_OLD_PRIMARY", call.old_primary.clone().unwrap_or_default()),
        ("TANDEM_NEW_PRIMARY", call.new_primary.clone().unwrap_or_default()),
        ("TANDEM_CLUSTER", ctx.cluster.clone()),
    ];
    info!(group = %call.group, hook, epoch = call.epoch, "running a role-change hook");
    let r = tandem_agents::run_hook(&call.group, hook, &command, &vars, timeout).await;
    let outcome = if r.last_line.is_empty() {
        r.status.clone()
    } else {
        format!("{}: {}", r.status, r.last_line)
    };
    if r.ok {
        info!(group = %call.group, hook, epoch = call.epoch, %outcome, "hook done");
    } else {
        warn!(group = %call.group, hook, epoch = call.epoch, %outcome, "hook failed");
    }
    let cmd = Command::HookRan {
        node: ctx.me.name.clone(),
        group: call.group.clone(),
        hook: hook.to_string(),
        epoch: call.epoch,
        ok: r.ok,
        outcome,
        at_unix_ms: ctx.clock.unix_ms(),
    };
    let mut pause = ctx.timing.heartbeat_interval * 2;
    for attempt in 1..=10 {
        let bound = ctx.timing.election_timeout * 4;
        match tokio::time::timeout(bound, send_report(&ctx, &cmd)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if attempt == 10 => {
                warn!(group = %call.group, hook, error = %e, "could not record the hook's outcome in the events");
            }
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_round_trips_and_ignores_junk() {
        let dir = tempfile::tempdir().unwrap();
        let m = HookMemory {
            promoted_epoch: 7,
            failover_next: 3,
        };
        m.save(dir.path(), "db");
        assert_eq!(HookMemory::load(dir.path(), "db", &ClusterState::default()), m);
        assert_eq!(
            HookMemory::parse("promoted_epoch x\nnoise\nfailover_next 9\n"),
            HookMemory {
                promoted_epoch: 0,
                failover_next: 9
            }
        );
    }
}
