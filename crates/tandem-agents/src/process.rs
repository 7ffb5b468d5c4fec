//! The `exec` class, supervised process: Tandem spawns the service itself.
//!
//! State on disk, under `STATE_DIR/GROUP/`:
//!
//! * `RESOURCE.pid`: `PID STARTTIME` (the kernel start time, field 22 of
//!   `/proc/PID/stat`). A process counts as ours only while both match, so a
//!   reused pid is never mistaken for the service (and never signalled).
//!   Written on start, removed by a successful stop. It is *kept* after the
//!   process exits on its own: every monitor then reports `Failed` until a
//!   stop clears it (a failed resource stays failed until it is stopped).
//! * `RESOURCE.log`: the process's stdout and stderr (a file, not a pipe: the
//!   process keeps running, and writing, while no agent reads). A task tails
//!   it into tracing. The previous run's log is kept as `RESOURCE.log.1`; a
//!   log above [`MAX_LOG`] is truncated once forwarded.
//!
//! The process runs in its own process group; stop sends SIGTERM to the
//! group, waits up to the stop timeout, then SIGKILLs the group.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::User;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::exec::{describe, kill_group};
use crate::output::{LineSplitter, LogCtx, last_lines};
use crate::{Action, Env, Outcome, is_executable, tandem_env};

/// Start succeeds if the process is still alive this long after spawning.
const START_GRACE: Duration = Duration::from_millis(100);
/// How often liveness is polled while stopping, and the log is read.
const POLL: Duration = Duration::from_millis(50);
const FORWARD_INTERVAL: Duration = Duration::from_millis(250);
/// After SIGKILL, how long to wait for the process to disappear.
const AFTER_SIGKILL: Duration = Duration::from_secs(2);
/// A log larger than this is truncated after it was forwarded.
const MAX_LOG: u64 = 16 << 20;

/// The supervised-process part of a resource spec.
pub(crate) struct Proc<'a> {
    pub command: &'a str,
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub workdir: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// A process as recorded in the pid file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidRecord {
    pub pid: i32,
    pub start_time: u64,
}

impl PidRecord {
    /// Running (not a zombie) and still the process we started.
    pub(crate) fn alive(&self) -> bool {
        matches!(proc_stat(self.pid), Some((state, start)) if start == self.start_time && state != 'Z' && state != 'X')
    }
}

/// State (field 3) and start time (field 22) from `/proc/PID/stat`.
pub(crate) fn proc_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

/// SIGKILLs the process group of the supervised process of `env`'s
/// resource, if one runs (self-fencing's last resort when a lease ends with
/// the service still up). Returns the pid killed.
pub(crate) fn kill_now(state_dir: &Path, env: &Env) -> Option<i32> {
    let paths = Paths::new(state_dir, env);
    let rec = read_pid_file(&paths.pid).ok()??;
    if !rec.alive() {
        return None;
    }
    match kill_group(rec.pid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => Some(rec.pid),
        Err(e) => {
            warn!(group = %env.group, resource = %env.resource, pgid = rec.pid, error = %e, "cannot SIGKILL the process group");
            None
        }
    }
}

struct Paths {
    dir: PathBuf,
    pid: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn new(state_dir: &Path, env: &Env) -> Paths {
        let dir = state_dir.join(&env.group);
        Paths {
            pid: dir.join(format!("{}.pid", env.resource)),
            log: dir.join(format!("{}.log", env.resource)),
            dir,
        }
    }
}

fn read_pid_file(path: &Path) -> Result<Option<PidRecord>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read pid file {}: {e}", path.display())),
    };
    let mut words = text.split_whitespace();
    let parsed = (|| {
        let pid: i32 = words.next()?.parse().ok()?;
        let start_time: u64 = words.next()?.parse().ok()?;
        (pid > 1).then_some(PidRecord { pid, start_time })
    })();
    parsed.map(Some).ok_or_else(|| {
        format!(
            "pid file {} is damaged ({:?}): cannot tell which process is the service",
            path.display(),
            text.trim()
        )
    })
}

/// Written to a temporary file then renamed: never seen half-written.
fn write_pid_file(path: &Path, rec: PidRecord) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{} {}\n", rec.pid, rec.start_time))?;
    std::fs::rename(&tmp, path)
}

fn remove_pid_file(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove pid file");
    }
}

fn log_tail(log: &Path) -> String {
    use std::io::{Read, Seek};
    let Ok(mut f) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    last_lines(&bytes)
}

/// The process this runner knows about: the one its pid file names.
struct Current {
    rec: PidRecord,
    /// Present when this runner spawned it: gives the exit status.
    child: Option<Child>,
    exit: Option<ExitStatus>,
    forwarder: Option<Forwarder>,
}

/// The task that tails a process's log into tracing, and a way to make it
/// look again at once (after a stop) instead of at its next interval.
struct Forwarder {
    task: JoinHandle<()>,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

impl Drop for Current {
    fn drop(&mut self) {
        if let Some(f) = self.forwarder.take() {
            f.task.abort();
        }
    }
}

#[derive(Default)]
pub(crate) struct Supervisor {
    current: Option<Current>,
}

impl Supervisor {
    pub(crate) async fn run(
        &mut self,
        proc: &Proc<'_>,
        state_dir: &Path,
        action: Action,
        env: &Env,
        timeout: Duration,
        ctx: &LogCtx,
    ) -> (Outcome, String) {
        let paths = Paths::new(state_dir, env);
        let rec = match read_pid_file(&paths.pid) {
            Ok(rec) => rec,
            Err(why) => return (Outcome::Failed(why), String::new()),
        };
        // Forget a process the pid file no longer names (another runner
        // stopped or replaced it).
        if self.current.as_ref().map(|c| c.rec) != rec {
            self.current = None;
        }
        match action {
            Action::Start => self.start(proc, &paths, rec, env, timeout, ctx).await,
            Action::Monitor => self.monitor(&paths, rec, ctx),
            Action::Stop => self.stop(&paths, rec, timeout, ctx).await,
        }
    }

    /// Adopts a live process found through its pid file (after an agent
    /// restart): forwards its new log lines.
    fn adopt(&mut self, rec: PidRecord, paths: &Paths, ctx: &LogCtx) {
        let current = self.current.get_or_insert_with(|| Current {
            rec,
            child: None,
            exit: None,
            forwarder: None,
        });
        if current.forwarder.as_ref().is_none_or(|f| f.task.is_finished()) {
            current.forwarder = Some(spawn_forwarder(paths.log.clone(), rec, ctx.clone(), true));
        }
    }

    async fn start(
        &mut self,
        proc: &Proc<'_>,
        paths: &Paths,
        rec: Option<PidRecord>,
        env: &Env,
        timeout: Duration,
        ctx: &LogCtx,
    ) -> (Outcome, String) {
        if let Some(rec) = rec
            && rec.alive()
        {
            info!(group = %env.group, resource = %env.resource, pid = rec.pid, "already running; not started again");
            self.adopt(rec, paths, ctx);
            return (Outcome::Ok, log_tail(&paths.log));
        }
        self.current = None;

        let mut cmd = Command::new(proc.command);
        cmd.args(proc.args);
        if let Some(name) = proc.user {
            let lookup = name.to_string();
            let user = match tokio::task::spawn_blocking(move || User::from_name(&lookup)).await {
                Ok(Ok(Some(user))) => user,
                Ok(Ok(None)) => {
                    return (
                        Outcome::Unavailable(format!("user {name:?} does not exist on this node")),
                        String::new(),
                    );
                }
                Ok(Err(e)) => {
                    return (
                        Outcome::Failed(format!("cannot look up user {name:?}: {e}")),
                        String::new(),
                    );
                }
                Err(e) => {
                    return (
                        Outcome::Failed(format!("cannot look up user {name:?}: {e}")),
                        String::new(),
                    );
                }
            };
            cmd.uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .env("HOME", &user.dir)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
        if let Some(dir) = proc.workdir {
            if !Path::new(dir).is_dir() {
                return (
                    Outcome::Unavailable(format!("workdir {dir} does not exist on this node")),
                    String::new(),
                );
            }
            cmd.current_dir(dir);
        }
        cmd.envs(proc.env);
        for var in crate::exec::MANAGER_ENV {
            cmd.env_remove(var);
        }
        tandem_env(&mut cmd, env);

        let log = match open_log(paths) {
            Ok(files) => files,
            Err(e) => {
                return (
                    Outcome::Failed(format!("cannot open log {}: {e}", paths.log.display())),
                    String::new(),
                );
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .process_group(0)
            .kill_on_drop(false);

        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let why = format!("cannot run {}: {e}", proc.command);
                let outcome = match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Outcome::Unavailable(why),
                    _ => Outcome::Failed(why),
                };
                return (outcome, String::new());
            }
        };
        // Not waited for yet, so the pid is there and cannot be reused.
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let Some((_, start_time)) = proc_stat(pid) else {
            let _ = child.start_kill();
            return (
                Outcome::Failed(format!("cannot read /proc/{pid}/stat of the new process")),
                String::new(),
            );
        };
        let rec = PidRecord { pid, start_time };
        if let Err(e) = write_pid_file(&paths.pid, rec) {
            // Without a pid file nothing could find or stop it later.
            let _ = kill_group(pid, Signal::SIGKILL);
            let _ = child.wait().await;
            return (
                Outcome::Failed(format!("cannot write pid file {}: {e}", paths.pid.display())),
                log_tail(&paths.log),
            );
        }
        info!(group = %env.group, resource = %env.resource, pid, command = proc.command, "supervised process started");
        let forwarder = spawn_forwarder(paths.log.clone(), rec, ctx.clone(), false);
        let mut current = Current {
            rec,
            child: None,
            exit: None,
            forwarder: Some(forwarder),
        };

        tokio::time::sleep(START_GRACE.min(timeout)).await;
        let outcome = match child.try_wait() {
            Ok(None) => Outcome::Ok,
            Ok(Some(status)) => {
                current.exit = Some(status);
                Outcome::Failed(format!("process {pid} exited right after start ({})", describe(status)))
            }
            Err(e) => Outcome::Failed(format!("cannot check process {pid}: {e}")),
        };
        current.child = Some(child);
        self.current = Some(current);
        (outcome, log_tail(&paths.log))
    }

    fn monitor(&mut self, paths: &Paths, rec: Option<PidRecord>, ctx: &LogCtx) -> (Outcome, String) {
        let Some(rec) = rec else {
            return (Outcome::NotRunning, String::new());
        };
        if let Some(current) = self.current.as_mut() {
            if current.exit.is_none()
                && let Some(child) = current.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                current.exit = Some(status);
            }
            if let Some(status) = current.exit {
                return (
                    Outcome::Failed(format!("process {} exited ({})", rec.pid, describe(status))),
                    log_tail(&paths.log),
                );
            }
        }
        if rec.alive() {
            self.adopt(rec, paths, ctx);
            (Outcome::Ok, String::new())
        } else {
            (
                Outcome::Failed(format!(
                    "process {} is gone (it exited while no Tandem agent was watching it; exit status unknown)",
                    rec.pid
                )),
                log_tail(&paths.log),
            )
        }
    }

    async fn stop(
        &mut self,
        paths: &Paths,
        rec: Option<PidRecord>,
        timeout: Duration,
        ctx: &LogCtx,
    ) -> (Outcome, String) {
        let Some(rec) = rec else {
            self.current = None;
            return (Outcome::Ok, String::new());
        };
        let mut note = None;
        if rec.alive() {
            signal_group(rec.pid, Signal::SIGTERM, ctx);
            let deadline = crate::deadline_after(timeout);
            // Most services exit within milliseconds of SIGTERM: look again
            // soon, then less and less often (a switchover waits for this).
            let mut pause = Duration::from_millis(2);
            while rec.alive() && Instant::now() < deadline {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(POLL);
            }
            if rec.alive() {
                warn!(group = %ctx.group, resource = %ctx.resource, pid = rec.pid,
                    "still running {timeout:?} after SIGTERM: killing its process group");
                signal_group(rec.pid, Signal::SIGKILL, ctx);
                let deadline = Instant::now() + AFTER_SIGKILL;
                while rec.alive() && Instant::now() < deadline {
                    tokio::time::sleep(POLL).await;
                }
                if rec.alive() {
                    return (
                        Outcome::Failed(format!("process {} still runs after SIGKILL", rec.pid)),
                        log_tail(&paths.log),
                    );
                }
                note = Some(format!(
                    "[tandem] process {} did not exit within {timeout:?} of SIGTERM: its process group was killed",
                    rec.pid
                ));
            } else {
                // The leader is gone (a zombie at most, so its id is not
                // reused yet): sweep helpers it left in its group.
                let _ = kill_group(rec.pid, Signal::SIGKILL);
            }
        }
        if let Some(mut current) = self.current.take() {
            if let Some(child) = current.child.as_mut() {
                let _ = child.try_wait();
            }
            // Let the forwarder pass on the last lines: it looks now, sees
            // the process gone, and ends.
            if let Some(f) = current.forwarder.take() {
                f.wake.notify_one();
                let _ = tokio::time::timeout(FORWARD_INTERVAL * 4, f.task).await;
            }
        }
        remove_pid_file(&paths.pid);
        let mut tail = log_tail(&paths.log);
        if let Some(note) = note {
            if !tail.is_empty() {
                tail.push('\n');
            }
            tail.push_str(&note);
        }
        (Outcome::Ok, tail)
    }
}

fn signal_group(pgid: i32, signal: Signal, ctx: &LogCtx) {
    match kill_group(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => warn!(group = %ctx.group, resource = %ctx.resource, pgid, error = %e, "cannot signal {signal}"),
    }
}

/// Opens the log for a new run (the previous one becomes `.log.1`): two
/// handles, for stdout and stderr, both appending.
fn open_log(paths: &Paths) -> std::io::Result<(std::fs::File, std::fs::File)> {
    std::fs::create_dir_all(&paths.dir)?;
    if paths.log.exists() {
        let _ = std::fs::rename(&paths.log, paths.log.with_extension("log.1"));
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&paths.log)?;
    let second = file.try_clone()?;
    Ok((file, second))
}

/// Tails the log into tracing until the process is gone.
fn spawn_forwarder(log: PathBuf, rec: PidRecord, ctx: LogCtx, from_end: bool) -> Forwarder {
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let woken = wake.clone();
    let task = tokio::spawn(async move {
        let mut file = match tokio::fs::File::open(&log).await {
            Ok(f) => f,
            Err(e) => {
                warn!(group = %ctx.group, resource = %ctx.resource, log = %log.display(), error = %e, "cannot read the process log");
                return;
            }
        };
        let mut pos = if from_end {
            file.metadata().await.map(|m| m.len()).unwrap_or(0)
        } else {
            0
        };
        let mut splitter = LineSplitter::default();
        let mut chunk = vec![0u8; 8192];
        loop {
            // Checked before reading: whatever it wrote before dying is read.
            let alive = rec.alive();
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            if len < pos {
                pos = 0;
            }
            if file.seek(SeekFrom::Start(pos)).await.is_ok() {
                loop {
                    match file.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            pos += n as u64;
                            splitter.push(&chunk[..n], |line| ctx.line("log", &line));
                        }
                    }
                }
            }
            if !alive {
                splitter.finish(|line| ctx.line("log", &line));
                info!(group = %ctx.group, resource = %ctx.resource, pid = rec.pid, "supervised process is gone");
                return;
            }
            if pos > MAX_LOG {
                // The writer appends (O_APPEND), so it continues at the new end.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .open(&log)
                    .and_then(|f| f.set_len(0))
                {
                    Ok(()) => pos = 0,
                    Err(e) => warn!(log = %log.display(), error = %e, "cannot truncate the process log"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(FORWARD_INTERVAL) => {}
                _ = woken.notified() => {}
            }
        }
    });
    Forwarder { task, wake }
}

/// The command exists (absolute or relative path, or found on PATH) and the
/// user exists.
pub(crate) async fn validate(command: &str, user: Option<&str>) -> Result<(), String> {
    if command.is_empty() {
        return Err("the command is empty".to_string());
    }
    if command.contains('/') {
        if !is_executable(Path::new(command)) {
            return Err(format!("command {command} does not exist or is not executable"));
        }
    } else {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(command))))
            .unwrap_or(false);
        if !found {
            return Err(format!("command {command:?} is not found on PATH"));
        }
    }
    if let Some(name) = user {
        let lookup = name.to_string();
        match tokio::task::spawn_blocking(move || User::from_name(&lookup)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err(format!("user {name:?} does not exist")),
            Ok(Err(e)) => return Err(format!("cannot look up user {name:?}: {e}")),
            Err(e) => return Err(format!("cannot look up user {name:?}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let me = i32::try_from(std::process::id()).unwrap();
        let (state, start) = proc_stat(me).unwrap();
        assert!(state == 'R' || state == 'S', "state {state}");
        assert!(start > 0);
        assert!(
            PidRecord {
                pid: me,
                start_time: start
            }
            .alive()
        );
        assert!(
            !PidRecord {
                pid: me,
                start_time: start + 1
            }
            .alive()
        );
        assert_eq!(proc_stat(0), None);
        assert_eq!(proc_stat(-5), None);
    }

    #[test]
    fn damaged_pid_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pid");
        assert_eq!(read_pid_file(&path), Ok(None));
        for bad in ["", "12", "abc 5", "1 5", "0 7", "-3 7"] {
            std::fs::write(&path, bad).unwrap();
            assert!(read_pid_file(&path).is_err(), "{bad:?}");
        }
        write_pid_file(
            &path,
            PidRecord {
                pid: 42,
                start_time: 99,
            },
        )
        .unwrap();
        assert_eq!(
            read_pid_file(&path),
            Ok(Some(PidRecord {
                pid: 42,
                start_time: 99
            }))
        );
    }
}

/// The marker of a group whose services the out-of-process lease guard
/// (`tandem_node::guard`) must end when the node's lease ends:
/// `STATE_DIR/GROUP/.guarded`.
const GUARDED: &str = ".guarded";

/// Marks (or unmarks) `group` as an exclusive group that may be active on
/// this node. Written before a start, removed once a stop succeeded.
pub(crate) fn set_guarded(state_dir: &Path, group: &str, on: bool) -> std::io::Result<()> {
    let dir = state_dir.join(group);
    let marker = dir.join(GUARDED);
    if on {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&marker, b"")
    } else {
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A supervised process of a guarded group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedProcess {
    pub group: String,
    pub resource: String,
    pub pid: i32,
}

/// Every live supervised process (its pid file names it, start time
/// included) of the groups marked guarded under `state_dir`.
pub(crate) fn guarded_processes(state_dir: &Path) -> Vec<GuardedProcess> {
    let mut found = Vec::new();
    for group in std::fs::read_dir(state_dir).into_iter().flatten().flatten() {
        let dir = group.path();
        if !dir.join(GUARDED).exists() {
            continue;
        }
        for file in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = file.path();
            if path.extension().is_none_or(|e| e != "pid") {
                continue;
            }
            if let Ok(Some(rec)) = read_pid_file(&path)
                && rec.alive()
            {
                found.push(GuardedProcess {
                    group: group.file_name().to_string_lossy().into_owned(),
                    resource: path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    pid: rec.pid,
                });
            }
        }
    }
    found
}

/// SIGKILLs the process group of `p` if its pid file still names that live
/// process. Returns whether it was signalled.
pub(crate) fn kill_guarded(state_dir: &Path, p: &GuardedProcess) -> bool {
    let path = state_dir.join(&p.group).join(format!("{}.pid", p.resource));
    match read_pid_file(&path) {
        Ok(Some(rec)) if rec.pid == p.pid && rec.alive() => {
            matches!(kill_group(rec.pid, Signal::SIGKILL), Ok(()) | Err(Errno::ESRCH))
        }
        _ => false,
    }
}
