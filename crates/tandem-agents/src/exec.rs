//! Running one action process: own process group, stdin null (or given
//! bytes), both pipes captured line by line, a timeout that kills the whole
//! group.

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgrp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::time::Instant;
use tracing::{debug, warn};

use tandem_core::spec::redact_values;

use crate::output::{Collected, LineSplitter, LogCtx, Shared, record};

/// After the action process exited, how long its pipes may stay open (a
/// daemon it started may still hold them) before we stop waiting for them.
/// Reading continues in the background; only the tail stops growing.
const PIPE_GRACE: Duration = Duration::from_millis(200);
/// How long to wait for a SIGKILLed process to be reaped before giving up
/// (a process in uninterruptible sleep dies only when its I/O returns).
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

pub(crate) enum End {
    Exited(ExitStatus),
    /// The timeout passed; the process group was sent SIGKILL.
    TimedOut,
    /// The program could not be started at all.
    SpawnError(std::io::Error),
    /// Waiting for the process failed (should not happen); the group was killed.
    WaitError(std::io::Error),
}

pub(crate) struct Ran {
    pub end: End,
    pub tail: String,
    /// Whole standard output, if asked for.
    pub stdout: Option<String>,
    /// The last freshness line the action printed (see [`crate::freshness`]).
    pub freshness: Option<tandem_core::groups::Freshness>,
}

/// Sends SIGKILL to a process group. Refuses group ids that could not be an
/// action's own group (0, 1, negative, our own group).
pub(crate) fn kill_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    if pgid <= 1 || pgid == getpgrp().as_raw() {
        return Err(nix::errno::Errno::EINVAL);
    }
    killpg(Pid::from_raw(pgid), signal)
}

/// Kills the process group when dropped while armed: an action whose future
/// is dropped (the caller was cancelled) leaves nothing running behind.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take()
            && let Err(e) = kill_group(pgid, Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            warn!(pgid, error = %e, "could not kill an action's process group");
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What [`run_with`] gives an action beyond [`run`].
#[derive(Default)]
pub(crate) struct Extra {
    /// Written to the action's stdin, which is then closed (without it,
    /// stdin is null).
    pub stdin: Option<Vec<u8>>,
    /// Replaced by `<redacted>` in every output line before it is logged or
    /// kept (values the action was given and may echo, such as passwords).
    pub secrets: Vec<String>,
}

/// What the service manager gives the agent alone (systemd's `Type=notify`
/// socket and watchdog): never passed on to what it runs, so a service
/// that speaks sd_notify does not talk to the agent's unit.
pub(crate) const MANAGER_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Runs `cmd` to completion or until `timeout`, in its own process group.
///
/// Normally stdout and stderr share one pipe (as `2>&1` would), so the lines
/// keep the order they were written in. With `capture_stdout`, they get a pipe
/// each and the whole stdout is returned (for output that is parsed).
pub(crate) async fn run(cmd: Command, timeout: Duration, ctx: &LogCtx, capture_stdout: bool) -> Ran {
    run_with(cmd, timeout, ctx, capture_stdout, Extra::default()).await
}

/// [`run`], with input on stdin and secrets kept out of the output.
pub(crate) async fn run_with(
    mut cmd: Command,
    timeout: Duration,
    ctx: &LogCtx,
    capture_stdout: bool,
    extra: Extra,
) -> Ran {
    let spawn_error = |e| Ran {
        end: End::SpawnError(e),
        tail: String::new(),
        stdout: None,
        freshness: None,
    };
    let stdin = if extra.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    cmd.stdin(stdin).process_group(0).kill_on_drop(false);
    for var in MANAGER_ENV {
        cmd.env_remove(var);
    }
    let mut shared_pipe = None;
    if capture_stdout {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        let (reader, writer) = match std::io::pipe() {
            Ok(ends) => ends,
            Err(e) => return spawn_error(e),
        };
        let writer2 = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => return spawn_error(e),
        };
        cmd.stdout(Stdio::from(writer)).stderr(Stdio::from(writer2));
        shared_pipe = Some(reader);
    }
    let spawned = cmd.spawn();
    // Closes our copies of the pipe's write end: EOF comes when the action
    // (and whatever inherited its output) is done.
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return spawn_error(e),
    };
    // Declared after `child`, so dropped before it: the group is killed while
    // its leader is still unreaped, so its id cannot have been reused.
    let mut guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    // The input is small, but a writer that blocks (the action does not read)
    // must not hold up the timeout: written by a task, aborted at the end.
    let writer = match (child.stdin.take(), extra.stdin) {
        (Some(mut pipe), Some(input)) => Some(tokio::spawn(async move {
            // An action that exits without reading makes this fail: fine.
            let _ = pipe.write_all(&input).await;
            // Dropping the pipe closes it: the action sees the end of its input.
        })),
        _ => None,
    };
    let secrets: Arc<[String]> = extra.secrets.into_iter().filter(|s| !s.is_empty()).collect();
    let shared: Shared = Arc::new(Mutex::new(Collected {
        stdout: capture_stdout.then(String::new),
        ..Collected::default()
    }));
    let mut readers = Vec::with_capacity(2);
    if let Some(reader) = shared_pipe {
        match pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
            Ok(rx) => readers.push(tokio::spawn(pump(
                rx,
                "output",
                ctx.clone(),
                shared.clone(),
                secrets.clone(),
            ))),
            // Output is lost (the action may get SIGPIPE), the action still runs.
            Err(e) => warn!(group = %ctx.group, resource = %ctx.resource, action = ctx.action, error = %e,
                "cannot read the action's output"),
        }
    }
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(
            out,
            "stdout",
            ctx.clone(),
            shared.clone(),
            secrets.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, "stderr", ctx.clone(), shared.clone(), secrets)));
    }

    let end = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => {
            // Whatever the action left running in its group (a daemon it
            // started) is the resource itself: leave it.
            guard.disarm();
            End::Exited(status)
        }
        Ok(Err(e)) => {
            guard.kill();
            End::WaitError(e)
        }
        Err(_) => {
            guard.kill();
            match tokio::time::timeout(REAP_AFTER_KILL, child.wait()).await {
                Ok(_) => {}
                Err(_) => warn!(
                    group = %ctx.group, resource = %ctx.resource, action = ctx.action,
                    "action process still not gone {REAP_AFTER_KILL:?} after SIGKILL"
                ),
            }
            End::TimedOut
        }
    };

    if let Some(writer) = writer {
        writer.abort();
    }

    let deadline = Instant::now() + PIPE_GRACE;
    for reader in readers {
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            debug!(
                group = %ctx.group, resource = %ctx.resource, action = ctx.action,
                "output pipe still open after the action exited (held by a process it started); \
                 its lines keep going to the log"
            );
        }
    }
    let collected = shared.lock().unwrap_or_else(PoisonError::into_inner);
    Ran {
        end,
        tail: collected.tail.render(),
        stdout: collected.stdout.clone(),
        freshness: collected.freshness,
    }
}

async fn pump<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: &'static str,
    ctx: LogCtx,
    shared: Shared,
    secrets: Arc<[String]>,
) {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let emit = |line: String| {
        let line = if secrets.is_empty() {
            line
        } else {
            redact_values(&line, &secrets)
        };
        record(&shared, &ctx, stream, line);
    };
    let mut splitter = LineSplitter::default();
    let mut chunk = vec![0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => splitter.push(&chunk[..n], emit),
        }
    }
    splitter.finish(emit);
}

/// "exit 3", "killed by signal 9 (SIGKILL)".
pub(crate) fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        status.to_string()
    }
}
