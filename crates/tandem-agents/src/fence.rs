//! Fence devices: making certain a node runs nothing any more.
//!
//! The ClusterLabs fence-agent protocol (the `fence_*` programs of the
//! fence-agents package): the agent is started without arguments; Tandem
//! writes `key=value` lines to its stdin, `action=ACTION`, `nodename=NODE`,
//! then the device's parameters, and closes it. Exit 0 means success; for
//! `status`, 0 means the node is on, 2 that it is off, anything else an
//! error. An `exec` device ([`FenceAgentSpec::Exec`]) is any program run
//! without a shell, with the same stdin plus `TANDEM_FENCE_NODE` and
//! `TANDEM_FENCE_ACTION` in its environment.
//!
//! Every attempt runs in its own process group, within the device's timeout
//! (then the whole group is killed), and is retried `retries` times after a
//! short pause. [`fence_node`] tries the node's levels in order: every device
//! of a level must succeed, else the next level is tried.
//!
//! An `off` is verified: a device whose `off` succeeded counts only once its
//! `status` answers that the node is off (exit 2), asked again every
//! [`VERIFY_PAUSE`] until the device's timeout passes. A device that cannot
//! confirm (status still says on, fails, hangs, or has no status action) is a
//! failed device, so its level fails and the next level is tried. An exit 0
//! proves only that the program ended; the status is what says the node is
//! off, so a production device must report the real power state.
//!
//! Secret parameter values ([`FenceDeviceSpec::is_secret`]) never reach a
//! log or a message: the agent's output is redacted line by line before it
//! is logged or kept (agents sometimes echo their arguments), and parameters
//! are never logged at all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_core::spec::{FenceAgentSpec, FenceDeviceSpec, FencingSpec};
use tokio::process::Command;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::exec::{self, End, Extra, describe};
use crate::is_executable;
use crate::output::LogCtx;

/// Where a fence agent given by bare name is looked for, in this order.
pub const AGENT_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/bin"];
/// The pause between two attempts of a device.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// The pause between two `status` queries that verify an `off`.
pub const VERIFY_PAUSE: Duration = Duration::from_millis(250);
/// [`DeviceOutcome::detail`] is cut to this many characters.
const MAX_DETAIL: usize = 300;

/// What a fence device is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FenceAction {
    Off,
    On,
    Reboot,
    /// Is the node powered? ([`DeviceOutcome::power`])
    Status,
    /// Is the device itself reachable and working?
    Monitor,
}

impl FenceAction {
    /// The protocol's name: `off`, `on`, `reboot`, `status`, `monitor`.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceAction::Off => "off",
            FenceAction::On => "on",
            FenceAction::Reboot => "reboot",
            FenceAction::Status => "status",
            FenceAction::Monitor => "monitor",
        }
    }
}

impl fmt::Display for FenceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one device did (all its attempts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOutcome {
    pub device: String,
    /// The action the device was asked for (in [`fence_node`], a reboot by a
    /// level of several devices is run as `off` on all of them, then `on`).
    pub action: FenceAction,
    /// The 1-based level of [`fence_node`] this outcome belongs to; 0 from
    /// [`run_device`].
    pub level: usize,
    /// The action succeeded. For [`FenceAction::Status`]: the query
    /// succeeded (exit 0 or 2), whatever the answer; see `power`.
    pub ok: bool,
    /// [`FenceAction::Status`] only: `Some(true)` when the device says the
    /// node is on (exit 0), `Some(false)` when off (exit 2), `None` otherwise
    /// and for every other action.
    pub power: Option<bool>,
    /// Attempts made (0: the device could not be run at all, such as an agent
    /// that is not installed; that is not retried).
    pub attempts: u32,
    /// An `off` run by [`fence_device`]: the number of `status` queries it
    /// took to confirm the node off (`Some` only when confirmed; `ok` is then
    /// true). `None` for an unverified action, or one that failed.
    pub verified: Option<u32>,
    /// Wall time of all attempts and pauses.
    pub elapsed: Duration,
    /// Short, secrets redacted: "exit 1: Failed: Unable to obtain correct
    /// plug status", "timed out after 20s", "exit 0: Success: Powered OFF".
    pub detail: String,
}

/// What [`fence_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceResult {
    /// Every device of one level succeeded (for `off` and `reboot`: the node
    /// is fenced; for the other actions: the action succeeded).
    pub fenced: bool,
    /// The 1-based level that succeeded.
    pub level: Option<usize>,
    /// Every device run, in order.
    pub outcomes: Vec<DeviceOutcome>,
}

impl FenceResult {
    /// One line for events: `level 1: pdu-a ok (0.4s)`, `level 1: pdu-a
    /// failed after 2 attempts: exit 1: ...; level 2: ipmi-a ok (1.2s),
    /// pdu-b ok (0.3s)`.
    pub fn summary(&self) -> String {
        if self.outcomes.is_empty() {
            return "no fence levels configured".to_string();
        }
        let mut parts: Vec<String> = Vec::new();
        let mut i = 0;
        while i < self.outcomes.len() {
            let level = self.outcomes[i].level;
            let n = self.outcomes[i..].iter().take_while(|o| o.level == level).count();
            let outcomes = &self.outcomes[i..i + n];
            // Label actions only where a level ran more than one (reboot as off + on).
            let mixed = outcomes.iter().any(|o| o.action != outcomes[0].action);
            let devices: Vec<String> = outcomes.iter().map(|o| o.describe(mixed)).collect();
            let devices = devices.join(", ");
            parts.push(if level == 0 {
                devices
            } else {
                format!("level {level}: {devices}")
            });
            i += n;
        }
        parts.join("; ")
    }
}

impl DeviceOutcome {
    /// `pdu-a ok (0.4s)`, `pdu-a off ok after 2 attempts (1.4s)`, `pdu-a ok:
    /// power off (0.2s)`, `pdu-a failed after 2 attempts: exit 1: ...`.
    fn describe(&self, with_action: bool) -> String {
        let name = if with_action {
            format!("{} {}", self.device, self.action)
        } else {
            self.device.clone()
        };
        if self.ok {
            let power = match self.power {
                Some(true) => ": power on",
                Some(false) => ": power off",
                None => "",
            };
            let tries = if self.attempts > 1 {
                format!(" after {} attempts", self.attempts)
            } else {
                String::new()
            };
            let verified = match self.verified {
                Some(1) => ", confirmed off by status".to_string(),
                Some(n) => format!(", confirmed off by status after {n} queries"),
                None => String::new(),
            };
            format!("{name} ok{power}{tries}{verified} ({:.1}s)", self.elapsed.as_secs_f64())
        } else if self.attempts > 1 {
            format!("{name} failed after {} attempts: {}", self.attempts, self.detail)
        } else {
            format!("{name} failed: {}", self.detail)
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Done {
        ok: bool,
        power: Option<bool>,
        detail: String,
    },
    /// Not worth retrying: the program could not be started.
    CannotRun(String),
}

/// `dev` with the secrets its parameters name by file (`password_file`:
/// [`FenceDeviceSpec::secret_files`]) read from those files on this node and
/// passed as the parameter they stand for (`password`), which is secret. A
/// file that cannot be read, is empty or holds more than one line is an
/// error naming the parameter and the path (never the content).
pub fn with_secret_files(dev: &FenceDeviceSpec) -> Result<std::borrow::Cow<'_, FenceDeviceSpec>, String> {
    let files = dev.secret_files();
    if files.is_empty() {
        return Ok(std::borrow::Cow::Borrowed(dev));
    }
    let mut resolved = dev.clone();
    for (param, path) in files {
        let key = format!("{param}_file");
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "params.{key}: cannot read {path}: {e} (the file is read on the node that runs the device: \
                 every node that may become coordinator needs it)"
            )
        })?;
        let secret = text.strip_suffix('\n').unwrap_or(&text);
        let secret = secret.strip_suffix('\r').unwrap_or(secret);
        if secret.is_empty() {
            return Err(format!(
                "params.{key}: {path} is empty: expected the {param} on one line"
            ));
        }
        if secret.contains(['\n', '\r', '\0']) {
            return Err(format!(
                "params.{key}: {path} holds more than one line: expected the {param} on one line"
            ));
        }
        resolved.params.remove(&key);
        resolved.params.insert(param.to_string(), secret.to_string());
        resolved.secret_params.insert(param.to_string());
    }
    Ok(std::borrow::Cow::Owned(resolved))
}

/// A device that could not even be prepared (a secret file unreadable).
fn cannot_prepare(dev: &FenceDeviceSpec, action: FenceAction, node: &str, why: String) -> DeviceOutcome {
    warn!(device = %dev.name, node, action = action.as_str(), reason = %why, "fence device cannot be run");
    DeviceOutcome {
        device: dev.name.clone(),
        action,
        level: 0,
        ok: false,
        power: None,
        attempts: 0,
        verified: None,
        elapsed: Duration::ZERO,
        detail: shorten(&why),
    }
}

/// Runs `action` against `node` on one device, with its retries (a short
/// pause between attempts). Never panics, never logs a secret.
pub async fn run_device(dev: &FenceDeviceSpec, action: FenceAction, node: &str) -> DeviceOutcome {
    match with_secret_files(dev) {
        Ok(dev) => run_resolved(&dev, action, node).await,
        Err(why) => cannot_prepare(dev, action, node, why),
    }
}

/// [`run_device`] for a device whose secret files were read.
async fn run_resolved(dev: &FenceDeviceSpec, action: FenceAction, node: &str) -> DeviceOutcome {
    let began = Instant::now();
    let outcome = |ok, power, attempts, detail: String| DeviceOutcome {
        device: dev.name.clone(),
        action,
        level: 0,
        ok,
        power,
        attempts,
        verified: None,
        elapsed: began.elapsed(),
        detail: shorten(&dev.redact(&detail)),
    };
    let prepared = program(&dev.agent).and_then(|program| Ok((program, stdin(dev, action, node)?)));
    let (program, input) = match prepared {
        Ok(p) => p,
        Err(why) => {
            warn!(device = %dev.name, node, action = action.as_str(), reason = %dev.redact(&why), "fence device cannot be run");
            return outcome(false, None, 0, why);
        }
    };

    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt(dev, action, node, &program, &input, dev.timeout).await {
            Attempt::CannotRun(why) => {
                let why = dev.redact(&why);
                warn!(device = %dev.name, node, action = action.as_str(), reason = %why, "fence device cannot be run");
                return outcome(false, None, attempts, why);
            }
            Attempt::Done { ok, power, detail } => {
                let detail = dev.redact(&detail);
                if ok {
                    info!(device = %dev.name, node, action = action.as_str(), attempts, detail = %detail, "fence device succeeded");
                    return outcome(true, power, attempts, detail);
                }
                if attempts > dev.retries {
                    warn!(device = %dev.name, node, action = action.as_str(), attempts, detail = %detail, "fence device failed");
                    return outcome(false, None, attempts, detail);
                }
                warn!(device = %dev.name, node, action = action.as_str(), attempts, detail = %detail,
                    "fence device failed; trying again");
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Switches `node` off through one device and verifies it: [`run_device`]
/// with action off, then, if it succeeded, the device's `status` until it
/// answers off (see [`verify_off`]). The outcome is `ok` only when the status
/// confirmed it; its `elapsed` covers both.
pub async fn fence_device(dev: &FenceDeviceSpec, node: &str) -> DeviceOutcome {
    let began = Instant::now();
    let dev = match with_secret_files(dev) {
        Ok(dev) => dev,
        Err(why) => return cannot_prepare(dev, FenceAction::Off, node, why),
    };
    let dev = dev.as_ref();
    let mut outcome = run_resolved(dev, FenceAction::Off, node).await;
    if !outcome.ok {
        return outcome;
    }
    match verify_off(dev, node).await {
        Ok(queries) => {
            info!(device = %dev.name, node, queries, "fence device confirmed the node off");
            outcome.verified = Some(queries);
        }
        Err(why) => {
            let why = dev.redact(&why);
            warn!(device = %dev.name, node, reason = %why, "fence device could not confirm the node off: the fence failed");
            outcome.ok = false;
            outcome.detail = shorten(&format!("off succeeded ({}) but {why}", outcome.detail));
        }
    }
    outcome.elapsed = began.elapsed();
    outcome
}

/// Asks the device's `status` until it answers off (`Ok`: the number of
/// queries), for at most the device's timeout in all (each query gets what
/// is left of it). `Err` says why the node is not confirmed off: the status
/// still said on, failed (a device without a status action fails it), timed
/// out, or could not be run.
async fn verify_off(dev: &FenceDeviceSpec, node: &str) -> Result<u32, String> {
    let prepared = program(&dev.agent).and_then(|p| Ok((p, stdin(dev, FenceAction::Status, node)?)));
    let (program, input) = prepared.map_err(|why| format!("its status cannot be asked: {why}"))?;
    let deadline = crate::deadline_after(dev.timeout);
    let mut queries = 0;
    loop {
        // The first query gets the whole timeout, later ones what is left.
        let left = if queries == 0 {
            dev.timeout
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        queries += 1;
        let last = match attempt(dev, FenceAction::Status, node, &program, &input, left).await {
            Attempt::CannotRun(why) => return Err(format!("its status cannot be asked: {why}")),
            Attempt::Done { power: Some(false), .. } => return Ok(queries),
            Attempt::Done {
                power: Some(true),
                detail,
                ..
            } => format!("status still says on ({detail})"),
            Attempt::Done { detail, .. } => format!("status failed ({detail})"),
        };
        if Instant::now() + VERIFY_PAUSE >= deadline {
            // The reason stays the same from one attempt to the next (no
            // count of queries in it), so a device that keeps failing the
            // same way is recorded once, not on every retry of the fencer.
            warn!(device = %dev.name, node, queries, last = %dev.redact(&last), "status did not confirm the node off");
            return Err(format!(
                "the node is not confirmed off within {}: {last}",
                seconds(dev.timeout)
            ));
        }
        tokio::time::sleep(VERIFY_PAUSE).await;
    }
}

/// One attempt: spawn, feed stdin, wait within `timeout`.
async fn attempt(
    dev: &FenceDeviceSpec,
    action: FenceAction,
    node: &str,
    program: &Program,
    input: &str,
    timeout: Duration,
) -> Attempt {
    let mut cmd = Command::new(&program.path);
    cmd.args(&program.args);
    if program.exec {
        cmd.env("TANDEM_FENCE_NODE", node)
            .env("TANDEM_FENCE_ACTION", action.as_str());
    }
    let ctx = LogCtx {
        group: format!("fence:{node}"),
        resource: dev.name.clone(),
        action: action.as_str(),
        quiet: false,
    };
    let extra = Extra {
        stdin: Some(input.as_bytes().to_vec()),
        secrets: dev.secret_values().into_iter().map(str::to_string).collect(),
    };
    let ran = exec::run_with(cmd, timeout, &ctx, false, extra).await;
    match ran.end {
        End::Exited(status) => {
            let code = status.code();
            let (ok, power) = match (action, code) {
                (FenceAction::Status, Some(0)) => (true, Some(true)),
                (FenceAction::Status, Some(2)) => (true, Some(false)),
                (_, Some(0)) => (true, None),
                _ => (false, None),
            };
            let mut detail = describe(status);
            if let Some(line) = last_line(&ran.tail) {
                detail.push_str(": ");
                detail.push_str(&line);
            }
            Attempt::Done { ok, power, detail }
        }
        End::TimedOut => Attempt::Done {
            ok: false,
            power: None,
            detail: match last_line(&ran.tail) {
                Some(line) => format!("timed out after {} (last output: {line})", seconds(timeout)),
                None => format!("timed out after {}", seconds(timeout)),
            },
        },
        End::SpawnError(e) => Attempt::CannotRun(format!("cannot run {}: {e}", program.path.display())),
        End::WaitError(e) => Attempt::Done {
            ok: false,
            power: None,
            detail: format!("waiting for {} failed: {e}", program.path.display()),
        },
    }
}

/// Fences `node`: its levels in order, the devices of a level in order,
/// stopping at the first level whose devices all succeed (a level stops at
/// its first failing device). An `off` is verified device by device
/// ([`fence_device`]): a device that cannot confirm the node off fails its
/// level. A reboot by a level of several devices (two
/// power supplies on two switches) is run as `off` on every device, then
/// `on` on every device: the node is fenced once all are off, whatever the
/// `on`s do. A node without levels is not fenced.
pub async fn fence_node(fencing: &FencingSpec, node: &str, action: FenceAction) -> FenceResult {
    let mut outcomes = Vec::new();
    for (i, level) in fencing.levels_for(node).iter().enumerate() {
        let number = i + 1;
        let ok = if action == FenceAction::Reboot && level.len() > 1 {
            run_level(fencing, level, node, FenceAction::Off, number, &mut outcomes).await && {
                run_level_all(fencing, level, node, FenceAction::On, number, &mut outcomes).await;
                true
            }
        } else {
            run_level(fencing, level, node, action, number, &mut outcomes).await
        };
        if ok {
            let result = FenceResult {
                fenced: true,
                level: Some(number),
                outcomes,
            };
            info!(node, action = action.as_str(), summary = %result.summary(), "fencing succeeded");
            return result;
        }
    }
    let result = FenceResult {
        fenced: false,
        level: None,
        outcomes,
    };
    warn!(node, action = action.as_str(), summary = %result.summary(), "fencing failed");
    result
}

/// Runs the devices of a level until one fails; true when all succeeded.
async fn run_level(
    fencing: &FencingSpec,
    level: &[String],
    node: &str,
    action: FenceAction,
    number: usize,
    outcomes: &mut Vec<DeviceOutcome>,
) -> bool {
    for name in level {
        let outcome = run_named(fencing, name, node, action, number).await;
        let ok = outcome.ok;
        outcomes.push(outcome);
        if !ok {
            return false;
        }
    }
    true
}

/// Runs every device of a level, whatever each does.
async fn run_level_all(
    fencing: &FencingSpec,
    level: &[String],
    node: &str,
    action: FenceAction,
    number: usize,
    outcomes: &mut Vec<DeviceOutcome>,
) {
    for name in level {
        outcomes.push(run_named(fencing, name, node, action, number).await);
    }
}

async fn run_named(fencing: &FencingSpec, name: &str, node: &str, action: FenceAction, level: usize) -> DeviceOutcome {
    let mut outcome = match fencing.devices.get(name) {
        Some(dev) if action == FenceAction::Off => fence_device(dev, node).await,
        Some(dev) => run_device(dev, action, node).await,
        None => DeviceOutcome {
            device: name.to_string(),
            action,
            level,
            ok: false,
            power: None,
            attempts: 0,
            verified: None,
            elapsed: Duration::ZERO,
            detail: "no fence device of that name in the spec".to_string(),
        },
    };
    outcome.level = level;
    outcome
}

/// Checks, on this node, that a device can be run: the agent or command
/// exists and is executable, the files its secrets are read from can be
/// read, and its parameters can be passed on stdin.
pub fn validate_device(dev: &FenceDeviceSpec) -> Result<(), String> {
    let dev = with_secret_files(dev)?;
    let dev = dev.as_ref();
    let program = program(&dev.agent)?;
    if program.exec {
        let path = &program.path;
        let found = if path.is_absolute() {
            is_executable(path)
        } else {
            std::env::var_os("PATH")
                .is_some_and(|dirs| std::env::split_paths(&dirs).any(|dir| is_executable(&dir.join(path))))
        };
        if !found {
            return Err(if path.is_absolute() {
                format!("command {} does not exist or is not executable", path.display())
            } else {
                format!("command {:?} is not found on PATH", path.display().to_string())
            });
        }
    } else if !is_executable(&program.path) {
        return Err(format!(
            "fence agent {} does not exist or is not executable",
            program.path.display()
        ));
    }
    stdin(dev, FenceAction::Monitor, "node").map(|_| ())
}

/// What is spawned for a device.
struct Program {
    path: PathBuf,
    args: Vec<String>,
    /// An `exec` device (gets the TANDEM_FENCE_ variables).
    exec: bool,
}

fn program(agent: &FenceAgentSpec) -> Result<Program, String> {
    match agent {
        FenceAgentSpec::Exec { command, args } => {
            if command.is_empty() {
                return Err("the command is empty".to_string());
            }
            Ok(Program {
                path: PathBuf::from(command),
                args: args.clone(),
                exec: true,
            })
        }
        FenceAgentSpec::Agent { path } => Ok(Program {
            path: agent_path(path)?,
            args: Vec::new(),
            exec: false,
        }),
    }
}

/// A fence agent's file: an absolute path as it is, a bare name looked up in
/// [`AGENT_DIRS`].
pub fn agent_path(agent: &str) -> Result<PathBuf, String> {
    if agent.starts_with('/') {
        return Ok(PathBuf::from(agent));
    }
    if agent.is_empty() || agent.contains('/') {
        return Err(format!(
            "fence agent {agent:?} is neither a bare name nor an absolute path"
        ));
    }
    AGENT_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(agent))
        .find(|path| is_executable(path))
        .ok_or_else(|| {
            format!(
                "fence agent {agent} is not found in {} (is the fence-agents package installed?)",
                AGENT_DIRS.join(", ")
            )
        })
}

/// The agent's stdin: `action=`, `nodename=`, then the parameters, a line each.
fn stdin(dev: &FenceDeviceSpec, action: FenceAction, node: &str) -> Result<String, String> {
    let bad = |text: &str| text.contains(['\n', '\r', '\0']);
    if node.is_empty() || bad(node) {
        return Err(format!("node name {node:?} cannot be passed to a fence agent"));
    }
    let mut input = format!("action={action}\nnodename={node}\n");
    for (key, value) in &dev.params {
        if key.is_empty() || key.contains('=') || bad(key) {
            return Err(format!(
                "parameter {key:?} cannot be passed on stdin (its name is empty or holds '=' or a line break)"
            ));
        }
        if key == "action" {
            return Err("parameter `action` is Tandem's to set".to_string());
        }
        if bad(value) {
            return Err(format!(
                "parameter {key} cannot be passed on stdin (its value holds a line break)"
            ));
        }
        input.push_str(key);
        input.push('=');
        input.push_str(value);
        input.push('\n');
    }
    Ok(input)
}

/// The last line of output worth showing, without the timestamp and level
/// fence agents put in front of their log lines.
fn last_line(tail: &str) -> Option<String> {
    let line = tail.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    // "2026-11-22 13:49:41,176 ERROR: Failed: ..." -> "Failed: ..."
    let line = match line.split_once(' ') {
        Some((date, rest)) if date.len() == 10 && date.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
            rest.split_once(' ').map_or(rest, |(_time, rest)| rest)
        }
        _ => line,
    };
    let line = ["ERROR:root:", "ERROR: ", "WARNING:root:", "WARNING: "]
        .iter()
        .find_map(|prefix| line.strip_prefix(prefix))
        .unwrap_or(line);
    Some(line.trim().to_string())
}

/// "20s", "1.5s", "0.749s" (milliseconds at most).
fn seconds(d: Duration) -> String {
    let ms = d.subsec_millis();
    if ms == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}.{}s", d.as_secs(), format!("{ms:03}").trim_end_matches('0'))
    }
}

/// At most [`MAX_DETAIL`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use tandem_core::spec::is_secret_param_name;

    use super::*;

    const FENCE_DUMMY: &str = "/usr/sbin/fence_dummy";

    /// Fails (never skips) without fence-agents.
    fn need_fence_dummy() {
        assert!(
            Path::new(FENCE_DUMMY).exists(),
            "{FENCE_DUMMY} is missing: these tests need Debian's fence agents (apt-get install fence-agents)"
        );
    }

    fn device(name: &str, agent: FenceAgentSpec, params: &[(&str, &str)]) -> FenceDeviceSpec {
        let params: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        FenceDeviceSpec {
            name: name.into(),
            agent,
            secret_params: params.keys().filter(|k| is_secret_param_name(k)).cloned().collect(),
            params,
            timeout: Duration::from_secs(10),
            retries: 0,
        }
    }

    /// fence_dummy keeping the power state in `status_file`.
    fn dummy_file(name: &str, status_file: &Path) -> FenceDeviceSpec {
        need_fence_dummy();
        device(
            name,
            FenceAgentSpec::Agent {
                path: "fence_dummy".into(),
            },
            &[("type", "file"), ("status_file", status_file.to_str().unwrap())],
        )
    }

    /// fence_dummy that fails (within a second rather than its default 20).
    fn dummy_fail(name: &str) -> FenceDeviceSpec {
        need_fence_dummy();
        device(
            name,
            FenceAgentSpec::Agent {
                path: FENCE_DUMMY.into(),
            },
            &[("type", "fail"), ("power_timeout", "1")],
        )
    }

    /// An exec device: `/bin/sh -c SCRIPT`.
    fn sh(name: &str, script: &str, params: &[(&str, &str)]) -> FenceDeviceSpec {
        device(
            name,
            FenceAgentSpec::Exec {
                command: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
            },
            params,
        )
    }

    fn fencing(devices: Vec<FenceDeviceSpec>, node: &str, levels: &[&[&str]]) -> FencingSpec {
        FencingSpec {
            devices: devices.into_iter().map(|d| (d.name.clone(), d)).collect(),
            levels: BTreeMap::from([(
                node.to_string(),
                levels
                    .iter()
                    .map(|l| l.iter().map(|d| d.to_string()).collect())
                    .collect(),
            )]),
        }
    }

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
    }

    #[tokio::test]
    async fn fence_dummy_off_on_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        std::fs::write(&status, "on").unwrap();
        let dev = dummy_file("pdu-a", &status);
        assert_eq!(validate_device(&dev), Ok(()));

        let off = run_device(&dev, FenceAction::Off, "site-a").await;
        assert!(off.ok, "{off:?}");
        assert_eq!((off.attempts, off.power, off.action), (1, None, FenceAction::Off));
        assert!(off.detail.starts_with("exit 0: Success: Powered OFF"), "{off:?}");
        assert_eq!(std::fs::read_to_string(&status).unwrap(), "off");

        let st = run_device(&dev, FenceAction::Status, "site-a").await;
        assert!(st.ok, "a status query that answers 'off' succeeded: {st:?}");
        assert_eq!(st.power, Some(false));
        assert!(st.detail.starts_with("exit 2"), "{st:?}");

        let on = run_device(&dev, FenceAction::On, "site-a").await;
        assert!(on.ok, "{on:?}");
        let st = run_device(&dev, FenceAction::Status, "site-a").await;
        assert_eq!((st.ok, st.power), (true, Some(true)), "{st:?}");
        let mon = run_device(&dev, FenceAction::Monitor, "site-a").await;
        assert!(mon.ok, "{mon:?}");

        let result = fence_node(&fencing(vec![dev], "site-a", &[&["pdu-a"]]), "site-a", FenceAction::Off).await;
        assert!(result.fenced && result.level == Some(1), "{result:?}");
        assert!(
            result
                .summary()
                .starts_with("level 1: pdu-a ok, confirmed off by status ("),
            "{}",
            result.summary()
        );
        assert_eq!(result.outcomes[0].verified, Some(1));
        assert_eq!(std::fs::read_to_string(&status).unwrap(), "off");
    }

    #[tokio::test]
    async fn a_failing_level_falls_through_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        std::fs::write(&status, "on").unwrap();
        let f = fencing(
            vec![dummy_fail("ipmi-a"), dummy_file("pdu-a", &status)],
            "site-a",
            &[&["ipmi-a"], &["pdu-a"]],
        );
        let result = fence_node(&f, "site-a", FenceAction::Off).await;
        assert!(result.fenced, "{result:?}");
        assert_eq!(result.level, Some(2));
        assert_eq!(result.outcomes.len(), 2);
        let failed = &result.outcomes[0];
        assert_eq!((failed.device.as_str(), failed.ok, failed.level), ("ipmi-a", false, 1));
        assert!(failed.detail.starts_with("exit 1: Failed: "), "{failed:?}");
        assert_eq!((result.outcomes[1].ok, result.outcomes[1].level), (true, 2));
        let summary = result.summary();
        assert!(
            summary.starts_with("level 1: ipmi-a failed: exit 1: Failed: ")
                && summary.contains("; level 2: pdu-a ok, confirmed off by status ("),
            "{summary}"
        );
        assert_eq!(std::fs::read_to_string(&status).unwrap(), "off");
    }

    #[tokio::test]
    async fn every_device_of_a_level_must_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let log = |name: &str| dir.path().join(name);
        // Their status answers off (exit 2), unlogged.
        let ok = |name: &str| {
            sh(
                name,
                &format!(
                    "[ $TANDEM_FENCE_ACTION = status ] && exit 2; echo $TANDEM_FENCE_ACTION >> {}",
                    log(name).display()
                ),
                &[],
            )
        };
        let bad = sh("bad", "echo 'ERROR: cannot reach the switch' >&2; exit 3", &[]);
        let devices = || vec![ok("a"), ok("b"), ok("c"), bad.clone()];

        // a succeeds, bad fails: level 1 fails, level 2 is tried.
        let result = fence_node(
            &fencing(devices(), "n", &[&["a", "bad"], &["c"]]),
            "n",
            FenceAction::Off,
        )
        .await;
        assert_eq!((result.fenced, result.level), (true, Some(2)), "{result:?}");
        let ran: Vec<(&str, bool)> = result.outcomes.iter().map(|o| (o.device.as_str(), o.ok)).collect();
        assert_eq!(ran, [("a", true), ("bad", false), ("c", true)]);
        assert_eq!(result.outcomes[1].detail, "exit 3: cannot reach the switch");
        // A level stops at its first failure: b never runs.
        let result = fence_node(
            &fencing(devices(), "n", &[&["bad", "b"], &["a", "c"]]),
            "n",
            FenceAction::Off,
        )
        .await;
        assert_eq!(result.level, Some(2));
        assert_eq!(lines(&log("b")), 0);
        assert_eq!(lines(&log("a")), 2);
        // No level succeeds.
        let result = fence_node(
            &fencing(devices(), "n", &[&["bad"], &["c", "bad"]]),
            "n",
            FenceAction::Off,
        )
        .await;
        assert_eq!(
            (result.fenced, result.level, result.outcomes.len()),
            (false, None, 3),
            "{result:?}"
        );
        let c_took = format!("{:.1}s", result.outcomes[1].elapsed.as_secs_f64());
        assert_eq!(
            result.summary(),
            format!(
                "level 1: bad failed: exit 3: cannot reach the switch; \
                 level 2: c ok, confirmed off by status ({c_took}), bad failed: exit 3: cannot reach the switch"
            )
        );
        // An unknown device, a node without levels.
        let result = fence_node(&fencing(devices(), "n", &[&["nope"], &["a"]]), "n", FenceAction::Off).await;
        assert_eq!(result.level, Some(2));
        assert_eq!(result.outcomes[0].detail, "no fence device of that name in the spec");
        let result = fence_node(&fencing(devices(), "n", &[&["a"]]), "other", FenceAction::Off).await;
        assert_eq!((result.fenced, result.level), (false, None));
        assert!(result.outcomes.is_empty());
        assert_eq!(result.summary(), "no fence levels configured");
    }

    #[tokio::test]
    async fn a_reboot_by_several_devices_is_all_off_then_all_on() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let dev = |name: &str| {
            sh(
                name,
                &format!(
                    "[ $TANDEM_FENCE_ACTION = status ] && exit 2; echo \"{name} $TANDEM_FENCE_ACTION\" >> {}",
                    log.display()
                ),
                &[],
            )
        };
        let f = fencing(vec![dev("a"), dev("b"), dev("c")], "n", &[&["a", "b"], &["c"]]);
        let result = fence_node(&f, "n", FenceAction::Reboot).await;
        assert_eq!((result.fenced, result.level), (true, Some(1)), "{result:?}");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "a off\nb off\na on\nb on\n");
        assert!(
            result
                .summary()
                .starts_with("level 1: a off ok, confirmed off by status ("),
            "{}",
            result.summary()
        );
        // A single device reboots itself.
        let f = fencing(vec![dev("a"), dev("c")], "n", &[&["c"]]);
        std::fs::remove_file(&log).unwrap();
        assert!(fence_node(&f, "n", FenceAction::Reboot).await.fenced);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "c reboot\n");
    }

    /// An exec device whose `off` prints "NODE is off" and exits 0 without
    /// doing anything, and whose `status` runs `status` (shell).
    fn off_then(name: &str, status: &str) -> FenceDeviceSpec {
        let mut dev = sh(
            name,
            &format!(
                "case $TANDEM_FENCE_ACTION in off) echo \"$TANDEM_FENCE_NODE is off\";; status) {status};; *) exit 1;; esac"
            ),
            &[],
        );
        dev.timeout = Duration::from_secs(1);
        dev
    }

    #[tokio::test]
    async fn an_off_whose_status_still_says_on_is_a_failed_fence() {
        let began = std::time::Instant::now();
        let liar = off_then("liar", "echo 'plug 3: ON'; exit 0");
        let result = fence_node(
            &fencing(vec![liar.clone()], "site-a", &[&["liar"]]),
            "site-a",
            FenceAction::Off,
        )
        .await;
        assert!(
            !result.fenced,
            "an off the device cannot confirm is not a fence: {result:?}"
        );
        let outcome = &result.outcomes[0];
        assert_eq!((outcome.ok, outcome.verified), (false, None), "{outcome:?}");
        let expected = "off succeeded (exit 0: site-a is off) but the node is not confirmed off within 1s: \
                        status still says on (exit 0: plug 3: ON)";
        assert_eq!(outcome.detail, expected, "{outcome:?}");
        // Asked until the device's timeout (1 s), not much longer.
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(
            result.summary().starts_with("level 1: liar failed: off succeeded"),
            "{}",
            result.summary()
        );

        // It falls through to the next level like any failed level.
        let truthful = off_then("truthful", "exit 2");
        let result = fence_node(
            &fencing(vec![liar, truthful], "site-a", &[&["liar"], &["truthful"]]),
            "site-a",
            FenceAction::Off,
        )
        .await;
        assert_eq!((result.fenced, result.level), (true, Some(2)), "{result:?}");
        assert!(
            result
                .summary()
                .contains("; level 2: truthful ok, confirmed off by status ("),
            "{}",
            result.summary()
        );

        // A device without a status action cannot confirm either.
        let mute = off_then("mute", "echo 'unsupported action' >&2; exit 1");
        let outcome = fence_device(&mute, "site-a").await;
        assert!(!outcome.ok, "{outcome:?}");
        assert!(
            outcome.detail.contains("status failed (exit 1: unsupported action)"),
            "{outcome:?}"
        );
        // Not asked for other actions: a plain run_device off is not verified.
        let plain = run_device(&mute, FenceAction::Off, "site-a").await;
        assert_eq!((plain.ok, plain.verified), (true, None), "{plain:?}");
    }

    #[tokio::test]
    async fn an_off_counts_once_its_status_confirms_it() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        // The node takes a moment to go off: on for two queries, then off.
        let slow = off_then(
            "slow",
            &format!(
                "echo q >> {c}; [ $(wc -l < {c}) -ge 3 ] && {{ echo 'plug 3: OFF'; exit 2; }}; echo 'plug 3: ON'",
                c = count.display()
            ),
        );
        let result = fence_node(&fencing(vec![slow], "site-a", &[&["slow"]]), "site-a", FenceAction::Off).await;
        assert_eq!((result.fenced, result.level), (true, Some(1)), "{result:?}");
        assert_eq!(result.outcomes[0].verified, Some(3));
        assert_eq!(lines(&count), 3);
        assert!(
            result
                .summary()
                .starts_with("level 1: slow ok, confirmed off by status after 3 queries ("),
            "{}",
            result.summary()
        );
        let prompt = off_then("prompt", "exit 2");
        let outcome = fence_device(&prompt, "site-a").await;
        assert_eq!((outcome.ok, outcome.verified), (true, Some(1)), "{outcome:?}");
    }

    #[tokio::test]
    async fn a_status_that_hangs_fails_the_fence_at_the_timeout() {
        let hangs = off_then("hangs", "sleep 100");
        let began = std::time::Instant::now();
        let result = fence_node(
            &fencing(vec![hangs], "site-a", &[&["hangs"]]),
            "site-a",
            FenceAction::Off,
        )
        .await;
        let took = began.elapsed();
        assert!(!result.fenced, "{result:?}");
        assert!(
            took < Duration::from_secs(3),
            "bounded by the device's timeout (1 s): {took:?}"
        );
        assert_eq!(
            result.outcomes[0].detail,
            "off succeeded (exit 0: site-a is off) but the node is not confirmed off within 1s: \
             status failed (timed out after 1s)"
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut dev = sh(
            "hang",
            &format!("sleep 100 & echo $! > {}; sleep 100", pid_file.display()),
            &[],
        );
        dev.timeout = Duration::from_secs(1);
        let began = std::time::Instant::now();
        let outcome = run_device(&dev, FenceAction::Off, "site-a").await;
        assert!(began.elapsed() < Duration::from_secs(4), "{:?}", began.elapsed());
        assert!(!outcome.ok);
        assert_eq!((outcome.attempts, outcome.detail.as_str()), (1, "timed out after 1s"));
        // The background sleep went with its group.
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
        };
        while !gone() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(gone(), "process {pid} of the timed-out group still runs");
    }

    #[tokio::test]
    async fn retries_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let mut dev = sh("flaky", &format!("echo try >> {}; exit 1", count.display()), &[]);
        dev.retries = 2;
        let outcome = run_device(&dev, FenceAction::Off, "site-a").await;
        assert!(!outcome.ok);
        assert_eq!(outcome.attempts, 3);
        assert_eq!(lines(&count), 3);
        assert!(outcome.elapsed >= RETRY_PAUSE * 2, "{outcome:?}");
        let summary = FenceResult {
            fenced: false,
            level: None,
            outcomes: vec![outcome],
        }
        .summary();
        assert_eq!(summary, "flaky failed after 3 attempts: exit 1");

        // Succeeds on its second attempt.
        let count = dir.path().join("count2");
        let c = count.display();
        let mut dev = sh(
            "flaky",
            &format!("n=$(cat {c} 2>/dev/null | wc -l); echo try >> {c}; [ $n -ge 1 ]"),
            &[],
        );
        dev.retries = 5;
        let outcome = run_device(&dev, FenceAction::Off, "site-a").await;
        assert_eq!((outcome.ok, outcome.attempts), (true, 2), "{outcome:?}");
        assert_eq!(lines(&count), 2);
        // Zero retries: one attempt.
        dev.retries = 0;
        std::fs::remove_file(&count).unwrap();
        assert_eq!(run_device(&dev, FenceAction::Off, "site-a").await.attempts, 1);
    }

    #[tokio::test]
    async fn echoed_secrets_are_redacted() {
        let mut dev = sh(
            "echo",
            "cat; echo \"login failed for admin with hunter2-secret\" >&2; exit 1",
            &[
                ("ip", "10.0.0.1"),
                ("password", "hunter2-secret"),
                ("community", "c0mmunity"),
            ],
        );
        dev.secret_params.insert("community".into());
        let outcome = run_device(&dev, FenceAction::Off, "site-a").await;
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, "exit 1: login failed for admin with <redacted>");
        // The whole output as kept (and logged) is redacted, not just the last line.
        let outcome = run_device(&sh("cat", "cat; exit 1", &dev_params(&dev)), FenceAction::Off, "n").await;
        assert_eq!(outcome.detail, "exit 1: password=<redacted>");
        let dev2 = FenceDeviceSpec {
            secret_params: BTreeSet::from(["community".to_string()]),
            ..sh("cat", "cat >&2; exit 1", &[("community", "c0mmunity")])
        };
        let outcome = run_device(&dev2, FenceAction::Off, "n").await;
        assert_eq!(outcome.detail, "exit 1: community=<redacted>");
        assert!(!format!("{dev:?} {outcome:?}").contains("hunter2-secret"));
    }

    #[tokio::test]
    async fn secrets_come_from_files_on_the_node_that_runs_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ipmi.password");
        std::fs::write(&file, "s3cret-from-file\n").unwrap();
        let path = file.to_str().unwrap();
        // The agent gets the content as `password`, never the file's name;
        // what it echoes is redacted.
        let dev = sh("cat", "cat >&2; exit 1", &[("ip", "10.0.0.1"), ("password_file", path)]);
        let outcome = run_device(&dev, FenceAction::Off, "n").await;
        assert_eq!(outcome.detail, "exit 1: password=<redacted>");
        let dev = sh("cat", "grep -qx password=s3cret-from-file", &[("password_file", path)]);
        assert!(run_device(&dev, FenceAction::Off, "n").await.ok);
        validate_device(&dev).unwrap();
        // Missing, empty or several lines: the device fails, saying which
        // file, never what it holds.
        std::fs::write(&file, "").unwrap();
        let err = validate_device(&dev).unwrap_err();
        assert_eq!(
            err,
            format!("params.password_file: {path} is empty: expected the password on one line")
        );
        std::fs::write(&file, "a\nb\n").unwrap();
        assert!(validate_device(&dev).unwrap_err().contains("holds more than one line"));
        std::fs::remove_file(&file).unwrap();
        let outcome = fence_device(&dev, "n").await;
        assert!(!outcome.ok);
        assert!(
            outcome
                .detail
                .starts_with(&format!("params.password_file: cannot read {path}: ")),
            "{}",
            outcome.detail
        );
        assert!(
            outcome
                .detail
                .contains("every node that may become coordinator needs it")
        );
    }

    fn dev_params(dev: &FenceDeviceSpec) -> Vec<(&str, &str)> {
        dev.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[tokio::test]
    async fn an_exec_device_gets_the_protocol_on_stdin_and_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = out.display();
        let dev = sh(
            "kill-node",
            &format!("cat > {o}; echo \"$TANDEM_FENCE_NODE $TANDEM_FENCE_ACTION\" >> {o}"),
            &[("ip", "10.0.0.1"), ("plug", "3"), ("username", "fence")],
        );
        let outcome = run_device(&dev, FenceAction::Reboot, "site-a").await;
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(outcome.detail, "exit 0");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "action=reboot\nnodename=site-a\nip=10.0.0.1\nplug=3\nusername=fence\nsite-a reboot\n"
        );
        // An exec device answers status like an agent: 0 on, 2 off, else error.
        for (code, ok, power) in [(0, true, Some(true)), (2, true, Some(false)), (1, false, None)] {
            let dev = sh("st", &format!("exit {code}"), &[]);
            let outcome = run_device(&dev, FenceAction::Status, "site-a").await;
            assert_eq!((outcome.ok, outcome.power), (ok, power), "exit {code}: {outcome:?}");
        }
        // For any other action, 2 is a failure.
        assert!(!run_device(&sh("st", "exit 2", &[]), FenceAction::Off, "n").await.ok);
    }

    #[tokio::test]
    async fn devices_that_cannot_run() {
        need_fence_dummy();
        let missing = device(
            "x",
            FenceAgentSpec::Agent {
                path: "fence_no_such_agent".into(),
            },
            &[],
        );
        let err = validate_device(&missing).unwrap_err();
        assert!(
            err.contains("fence agent fence_no_such_agent is not found in /usr/sbin, /sbin, /usr/bin"),
            "{err}"
        );
        let outcome = run_device(&missing, FenceAction::Off, "n").await;
        assert_eq!((outcome.ok, outcome.attempts), (false, 0));
        assert!(outcome.detail.contains("is not found"), "{outcome:?}");

        let absent = device(
            "x",
            FenceAgentSpec::Agent {
                path: "/nonexistent/fence_x".into(),
            },
            &[],
        );
        assert!(validate_device(&absent).unwrap_err().contains("does not exist"));
        let mut retried = absent.clone();
        retried.retries = 3;
        let outcome = run_device(&retried, FenceAction::Off, "n").await;
        assert_eq!((outcome.ok, outcome.attempts), (false, 1), "not retried: {outcome:?}");
        assert!(
            outcome.detail.starts_with("cannot run /nonexistent/fence_x: "),
            "{outcome:?}"
        );

        assert_eq!(validate_device(&sh("x", "true", &[])), Ok(()));
        let on_path = device(
            "x",
            FenceAgentSpec::Exec {
                command: "sh".into(),
                args: vec!["-c".into(), "exit 0".into()],
            },
            &[],
        );
        assert_eq!(validate_device(&on_path), Ok(()));
        assert!(run_device(&on_path, FenceAction::Off, "n").await.ok);
        let not_on_path = device(
            "x",
            FenceAgentSpec::Exec {
                command: "no-such-kill-node".into(),
                args: vec![],
            },
            &[],
        );
        assert!(validate_device(&not_on_path).unwrap_err().contains("not found on PATH"));
        let full = device(
            "x",
            FenceAgentSpec::Agent {
                path: FENCE_DUMMY.into(),
            },
            &[("plug", "a\nb")],
        );
        assert!(validate_device(&full).unwrap_err().contains("line break"));
        assert_eq!(run_device(&full, FenceAction::Off, "n").await.attempts, 0);
        assert_eq!(validate_device(&dummy_fail("x")), Ok(()));
    }

    #[test]
    fn details_are_short_and_tidy() {
        assert_eq!(last_line("a\nb\n\n  \n"), Some("b".to_string()));
        assert_eq!(
            last_line("2026-11-22 13:49:41,176 ERROR: Failed: Timed out waiting to power OFF\n\n"),
            Some("Failed: Timed out waiting to power OFF".to_string())
        );
        assert_eq!(
            last_line("ERROR:root:Failed: Unable to obtain correct plug status"),
            Some("Failed: Unable to obtain correct plug status".to_string())
        );
        assert_eq!(last_line(""), None);
        assert_eq!(shorten(&"é".repeat(MAX_DETAIL)), "é".repeat(MAX_DETAIL));
        assert_eq!(shorten(&"é".repeat(MAX_DETAIL + 1)), "é".repeat(MAX_DETAIL) + "...");
        assert_eq!(FenceAction::Reboot.to_string(), "reboot");
    }
}
