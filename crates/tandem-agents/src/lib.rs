//! Tandem's resource agents: how a node starts, stops and monitors one
//! resource of the spec.
//!
//! Classes (see [`tandem_core::spec::AgentSpec`]):
//!
//! * `exec`, supervised process ([`AgentSpec::Process`]): Tandem spawns the
//!   program itself, in its own process group, and keeps
//!   `STATE_DIR/GROUP/RESOURCE.pid` (pid and kernel start time, so a reused pid
//!   is never mistaken for it) so that a restarted agent finds it again. Its
//!   output goes to `STATE_DIR/GROUP/RESOURCE.log` (a file, not a pipe, so the
//!   process outlives the agent without a broken pipe) and from there, line by
//!   line, to tracing.
//! * `exec`, three commands ([`AgentSpec::Commands`]): `/bin/sh -c`.
//! * `ocf` ([`AgentSpec::Ocf`]): Open Cluster Framework agents under
//!   `OCF_ROOT/resource.d/PROVIDER/TYPE`.
//! * `systemd` ([`AgentSpec::Systemd`]): through `systemctl`.
//!
//! Every action runs as a child process in its own process group, with stdin
//! null and both output streams captured line by line into tracing. An action
//! that outlives its timeout has its whole process group killed (SIGKILL) and
//! reports [`Outcome::TimedOut`]. Every process gets `TANDEM_EPOCH`,
//! `TANDEM_NODE`, `TANDEM_GROUP` and `TANDEM_RESOURCE`.
//!
//! Nothing here panics on what an agent prints or how it exits.
//!
//! [`SimulatedAgents`] is the deterministic simulator's seam (`tandem-sim`):
//! a [`Runner::simulated`] hands every action to it instead of a process.

mod exec;
pub mod fence;
pub mod freshness;
mod ocf;
mod output;
mod process;
mod systemd;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tandem_core::spec::{AgentSpec, ResourceSpec};
use tokio::process::Command;
use tokio::time::Instant;
use tracing::debug;

use crate::exec::{End, describe};
use crate::output::LogCtx;

/// A resource agent action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Start,
    Stop,
    Monitor,
}

impl Action {
    /// `start`, `stop`, `monitor`: also the OCF action names.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Monitor => "monitor",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// start/stop succeeded; monitor: running.
    Ok,
    /// monitor only: cleanly not running (OCF 7, systemd inactive, exec
    /// monitor exit 7, supervised process never started).
    NotRunning,
    /// The action failed (OCF generic/other codes, supervised process exited,
    /// ...), with a reason naming the exit code or signal.
    Failed(String),
    /// The action exceeded its timeout; its whole process group was killed
    /// (SIGKILL).
    TimedOut,
    /// The resource cannot run on this node at all (OCF agent missing, OCF 5
    /// or 6, systemd not running here, unknown user, ...): never retried here.
    Unavailable(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::NotRunning => f.write_str("not running"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
            Outcome::TimedOut => f.write_str("timed out"),
            Outcome::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

/// The result of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionResult {
    pub outcome: Outcome,
    /// Wall time of the action, on the monotonic clock.
    pub duration: Duration,
    /// The last lines (up to 20) of the action's combined stdout/stderr (for a
    /// supervised process: of its log), for status and events.
    pub output_tail: String,
    /// How current the resource's data is, as the agent reported it (exec
    /// commands: a `tandem-freshness:` line; OCF: the `tandem-position` or
    /// `tandem-lag` attribute); see [`freshness`].
    pub freshness: Option<tandem_core::groups::Freshness>,
}

/// Identity handed to every agent process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub group: String,
    pub resource: String,
    pub epoch: u64,
    pub node: String,
}

/// Runs the actions of one resource on this node. One action at a time
/// (`&mut self`); keep one `Runner` per resource for the life of the agent,
/// so that a supervised process's exit status can be reported.
pub struct Runner {
    spec: ResourceSpec,
    state_dir: PathBuf,
    ocf_root: PathBuf,
    supervisor: process::Supervisor,
    simulated: Option<Arc<dyn SimulatedAgents>>,
}

/// The future of a simulated action.
pub type SimulatedAction = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// Resource agents played by a simulator (`tandem-sim`): it decides how long
/// each action takes and what it finds, and records what really runs.
pub trait SimulatedAgents: Send + Sync + 'static {
    /// Runs `action` of `spec` for `env` within `timeout` (a simulated
    /// action that outlives it is killed and reports [`Outcome::TimedOut`],
    /// as a real one is).
    fn run(&self, spec: &ResourceSpec, action: Action, env: &Env, timeout: Duration) -> SimulatedAction;
    /// The lease guard's SIGKILL of a supervised process ([`kill_supervised`]):
    /// the pid killed, `None` when nothing ran.
    fn kill(&self, spec: &ResourceSpec, env: &Env) -> Option<i32>;
}

impl Runner {
    /// `state_dir`: a per-node directory Tandem owns (e.g. `DATA_DIR/run`);
    /// the runner keeps pid files there so a supervised process survives an
    /// agent restart and is found again by monitor/stop (no duplicate
    /// starts). OCF agents get `state_dir/ocf-tmp` as `HA_RSCTMP`.
    /// `ocf_root`: normally `/usr/lib/ocf`.
    pub fn new(spec: &ResourceSpec, state_dir: &Path, ocf_root: &Path) -> Runner {
        Runner {
            spec: spec.clone(),
            state_dir: state_dir.to_path_buf(),
            ocf_root: ocf_root.to_path_buf(),
            supervisor: process::Supervisor::default(),
            simulated: None,
        }
    }

    /// A runner whose actions `agents` plays (the simulator's seam).
    pub fn simulated(spec: &ResourceSpec, agents: Arc<dyn SimulatedAgents>) -> Runner {
        Runner {
            spec: spec.clone(),
            state_dir: PathBuf::new(),
            ocf_root: PathBuf::new(),
            supervisor: process::Supervisor::default(),
            simulated: Some(agents),
        }
    }

    /// The resource spec this runner drives.
    pub fn spec(&self) -> &ResourceSpec {
        &self.spec
    }

    /// Whether this resource is a process supervised by Tandem (which
    /// [`kill_supervised`] can end at once).
    pub fn is_supervised(&self) -> bool {
        matches!(self.spec.agent, AgentSpec::Process { .. })
    }

    /// Runs `action`, within `spec.timeouts.{start,stop,monitor}`.
    pub async fn run(&mut self, action: Action, env: &Env) -> ActionResult {
        let began = Instant::now();
        let timeout = match action {
            Action::Start => self.spec.timeouts.start,
            Action::Stop => self.spec.timeouts.stop,
            Action::Monitor => self.spec.timeouts.monitor,
        };
        let ctx = LogCtx {
            group: env.group.clone(),
            resource: env.resource.clone(),
            action: action.as_str(),
            quiet: false,
        };
        debug!(group = %env.group, resource = %env.resource, action = action.as_str(), agent = %self.spec.agent, "action begins");
        let (outcome, output_tail, freshness) = if let Err(why) = check_names(env) {
            (Outcome::Unavailable(why), String::new(), None)
        } else if let Some(agents) = &self.simulated {
            (agents.run(&self.spec, action, env, timeout).await, String::new(), None)
        } else {
            match &self.spec.agent {
                AgentSpec::Process {
                    command,
                    args,
                    env: vars,
                    workdir,
                    user,
                } => {
                    let proc = process::Proc {
                        command,
                        args,
                        env: vars,
                        workdir: workdir.as_deref(),
                        user: user.as_deref(),
                    };
                    let (outcome, tail) = self
                        .supervisor
                        .run(&proc, &self.state_dir, action, env, timeout, &ctx)
                        .await;
                    (outcome, tail, None)
                }
                AgentSpec::Commands { start, stop, monitor } => {
                    let script = match action {
                        Action::Start => start,
                        Action::Stop => stop,
                        Action::Monitor => monitor,
                    };
                    commands(script, action, env, timeout, &ctx).await
                }
                AgentSpec::Ocf {
                    provider,
                    agent,
                    params,
                } => {
                    let call = ocf::Call {
                        ocf_root: &self.ocf_root,
                        state_dir: &self.state_dir,
                        provider,
                        agent,
                        params,
                        monitor_interval: self.spec.monitor_interval,
                    };
                    call.run(action, env, timeout, &ctx).await
                }
                AgentSpec::Systemd { unit } => {
                    let (outcome, tail) = systemd::run(unit, action, env, timeout, &ctx).await;
                    (outcome, tail, None)
                }
            }
        };
        let duration = began.elapsed();
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        // The caller reports results (with the epoch); this is for tracing an action's life.
        debug!(group = %env.group, resource = %env.resource, action = action.as_str(), outcome = %outcome, duration_ms = ms, "action done");
        ActionResult {
            outcome,
            duration,
            output_tail,
            freshness,
        }
    }
}

/// SIGKILLs the process group of a supervised process (class `exec` with
/// `command`) if it runs, from any task: self-fencing's last resort when a
/// node's lease ends while the service is still up. Returns the pid killed;
/// `None` for other classes or when nothing runs.
pub fn kill_supervised(spec: &ResourceSpec, state_dir: &Path, env: &Env) -> Option<i32> {
    match spec.agent {
        AgentSpec::Process { .. } if check_names(env).is_ok() => process::kill_now(state_dir, env),
        _ => None,
    }
}

/// The out-of-process lease guard's side of the state directory: which
/// groups are marked guarded (exclusive, may be active here) and their live
/// supervised processes.
pub mod guarded {
    use std::path::Path;

    pub use crate::process::GuardedProcess;

    /// Marks `group` (an exclusive group that may be active on this node) or
    /// removes the mark. `group` must be a valid file name (spec names are).
    pub fn set(state_dir: &Path, group: &str, on: bool) -> std::io::Result<()> {
        if group.is_empty() || group == "." || group == ".." || group.contains('/') || group.contains('\0') {
            return Err(std::io::Error::other(format!(
                "group name {group:?} cannot be used as a file name"
            )));
        }
        crate::process::set_guarded(state_dir, group, on)
    }

    /// The live supervised processes of every marked group.
    pub fn processes(state_dir: &Path) -> Vec<GuardedProcess> {
        crate::process::guarded_processes(state_dir)
    }

    /// SIGKILLs `p`'s process group if its pid file still names it alive.
    pub fn kill(state_dir: &Path, p: &GuardedProcess) -> bool {
        crate::process::kill_guarded(state_dir, p)
    }

    /// The kernel start time of process `pid` (field 22 of its stat), which
    /// tells a live process from a later one that reused its pid.
    pub fn start_time(pid: i32) -> Option<u64> {
        crate::process::proc_stat(pid).map(|(_, start)| start)
    }

    /// Whether `pid` runs (not a zombie) and started at `start_time`.
    pub fn alive(pid: i32, start_time: u64) -> bool {
        crate::process::PidRecord { pid, start_time }.alive()
    }
}

/// Group and resource names become file names under the state directory.
/// The spec parser already restricts them; this is the last line of defence.
/// `after` from now: the deadline of an action whose timeout came from a
/// spec. Specs bound every duration ([`tandem_core::timing::MAX_DURATION`]);
/// this keeps an unbounded one from panicking here all the same.
fn deadline_after(after: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + tandem_core::timing::MAX_DURATION)
}

fn check_names(env: &Env) -> Result<(), String> {
    for (what, name) in [("group", &env.group), ("resource", &env.resource)] {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(format!("{what} name {name:?} cannot be used as a file name"));
        }
    }
    Ok(())
}

/// Adds the TANDEM_ variables (set last: a spec cannot override them).
pub(crate) fn tandem_env(cmd: &mut Command, env: &Env) {
    cmd.env("TANDEM_EPOCH", env.epoch.to_string())
        .env("TANDEM_NODE", &env.node)
        .env("TANDEM_GROUP", &env.group)
        .env("TANDEM_RESOURCE", &env.resource);
}

/// The `exec` class with three shell commands. A monitor may report its
/// data's freshness with a `tandem-freshness:` line.
async fn commands(
    script: &str,
    action: Action,
    env: &Env,
    timeout: Duration,
    ctx: &LogCtx,
) -> (Outcome, String, Option<tandem_core::groups::Freshness>) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    tandem_env(&mut cmd, env);
    let ran = exec::run(cmd, timeout, ctx, false).await;
    let outcome = match ran.end {
        End::Exited(status) => match status.code() {
            Some(0) => Outcome::Ok,
            Some(7) if action == Action::Monitor => Outcome::NotRunning,
            _ => Outcome::Failed(describe(status)),
        },
        End::TimedOut => Outcome::TimedOut,
        End::SpawnError(e) => Outcome::Unavailable(format!("cannot run /bin/sh: {e}")),
        End::WaitError(e) => Outcome::Failed(format!("waiting for the action failed: {e}")),
    };
    let freshness = if action == Action::Monitor { ran.freshness } else { None };
    (outcome, ran.tail, freshness)
}

/// Checks a resource before a spec is committed, on the node that validates
/// it:
///
/// * ocf: the agent file exists and is executable, and its meta-data lists
///   no `required="1"` parameter the spec leaves out (unknown parameters are
///   fine);
/// * exec, supervised process: the command exists (absolute path, or found
///   on PATH) and the user exists;
/// * exec, commands: none is empty;
/// * systemd: nothing (checked when run: the unit may exist only on the
///   nodes that host it).
///
/// The error says what is wrong.
pub async fn validate(spec: &ResourceSpec, ocf_root: &Path) -> Result<(), String> {
    match &spec.agent {
        AgentSpec::Process { command, user, .. } => process::validate(command, user.as_deref()).await,
        AgentSpec::Commands { start, stop, monitor } => {
            for (what, script) in [("start", start), ("stop", stop), ("monitor", monitor)] {
                if script.trim().is_empty() {
                    return Err(format!("the {what} command is empty"));
                }
            }
            Ok(())
        }
        AgentSpec::Ocf {
            provider,
            agent,
            params,
        } => ocf::validate(ocf_root, provider, agent, params, &spec.name).await,
        AgentSpec::Systemd { unit } => {
            if unit.is_empty() || unit.starts_with('-') || unit.contains('/') {
                Err(format!("{unit:?} is not a systemd unit name"))
            } else {
                Ok(())
            }
        }
    }
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a role-change hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResult {
    /// It exited 0.
    pub ok: bool,
    /// `exit 0`, `exit 3`, `killed by signal 9 (SIGKILL)`, `timed out after
    /// 30s (its process group was killed)`, `cannot run /bin/sh: ...`.
    pub status: String,
    /// The last line it printed (stdout and stderr), cut to
    /// [`HOOK_LINE_MAX`] characters, or a placeholder when the line looks
    /// like it carries a secret.
    pub last_line: String,
}

/// The longest last line of a hook kept for the events.
pub const HOOK_LINE_MAX: usize = 200;

/// Runs a role-change hook: `/bin/sh -c COMMAND` in its own process group
/// with `vars` in its environment, killed with its group after `timeout`.
/// Its output goes to tracing line by line, like an action's.
pub async fn run_hook(
    group: &str,
    hook: &str,
    command: &str,
    vars: &[(&str, String)],
    timeout: Duration,
) -> HookResult {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let ctx = LogCtx {
        group: group.to_string(),
        resource: hook.to_string(),
        action: "hook",
        quiet: false,
    };
    let ran = exec::run(cmd, timeout, &ctx, false).await;
    let (ok, status) = match ran.end {
        End::Exited(status) => (status.success(), describe(status)),
        End::TimedOut => (
            false,
            format!(
                "timed out after {} (its process group was killed)",
                humantime::format_duration(timeout)
            ),
        ),
        End::SpawnError(e) => (false, format!("cannot run /bin/sh: {e}")),
        End::WaitError(e) => (false, format!("waiting for the hook failed: {e}")),
    };
    HookResult {
        ok,
        status,
        last_line: hook_line(&ran.tail),
    }
}

/// The last non-empty line of `tail`, cut, with lines that may carry a
/// secret (password, token, key...) replaced: events are replicated and
/// shown to every operator.
pub fn hook_line(tail: &str) -> String {
    let Some(line) = tail.lines().rev().map(str::trim).find(|l| !l.is_empty()) else {
        return String::new();
    };
    let lower = line.to_ascii_lowercase();
    const SECRET_WORDS: [&str; 8] = [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "private key",
    ];
    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return "<redacted: the line may carry a secret>".into();
    }
    let mut cut: String = line.chars().take(HOOK_LINE_MAX).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    cut
}
