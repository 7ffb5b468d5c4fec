//! Network namespaces as test hosts, shared by the namespace tests
//! (`netns.rs`, `faults`).
//!
//! A [`Namespace`] is created with a name unique to the test process
//! (`tnd-TAG-PID-N`); dropping it kills every process still inside it and
//! deletes it, also when the test panics. [`remove_leftovers`] deletes
//! namespaces of the same tag whose test process is gone (a test killed
//! with SIGKILL never runs its drops). Nothing here touches the machine's
//! own network namespace beyond creating and deleting namespaces.
//!
//! Every command runs with a deadline ([`COMMAND_DEADLINE`]).

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{stderr, stdout};

/// The longest any single command (ip, nft, the CLI) may run.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// Makes namespace names unique within this test process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `program args` with a hard deadline; output is drained as it comes.
pub fn try_run(program: &str, args: &[&str]) -> Result<Output, String> {
    try_run_for(program, args, COMMAND_DEADLINE)
}

/// [`try_run`] with a deadline of its own.
pub fn try_run_for(program: &str, args: &[&str], deadline: Duration) -> Result<Output, String> {
    let child = Command::new(program)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.map_err(|e| format!("waiting for {program}: {e}")),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Err(format!("{program} {args:?} did not finish within {deadline:?}"))
        }
    }
}

/// `ip args`, which must succeed; returns its stdout.
pub fn ip(args: &[&str]) -> String {
    let out = try_run("ip", args).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "ip {args:?} failed: {}", stderr(&out));
    stdout(&out)
}

/// Whether the tests can create namespaces here, with a message saying what
/// is missing otherwise.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (network namespaces); run as root, with iproute2 installed"
    );
}

/// A network namespace owned by this test.
pub struct Namespace {
    pub name: String,
    /// Set once `ip netns add` succeeded: only then is the namespace ours.
    created: bool,
}

impl Namespace {
    /// A fresh namespace `tnd-TAG-PID-N-SUFFIX` with `lo` up.
    pub fn create(tag: &str, suffix: &str) -> Namespace {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("tnd-{tag}-{}-{n}-{suffix}", std::process::id());
        let mut ns = Namespace { name, created: false };
        if std::path::Path::new("/run/netns").join(&ns.name).exists() {
            // Only a dead test process with our pid (reused) can have left it.
            destroy(&ns.name);
        }
        ip(&["netns", "add", &ns.name]);
        ns.created = true;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs `program` inside the namespace. `ip netns exec`
    /// execs the program after entering the namespace, so the child's PID
    /// is the program's own.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).env("NO_COLOR", "1");
        c
    }

    /// Runs `program args` inside the namespace with a deadline.
    pub fn run(&self, program: &str, args: &[&str], deadline: Duration) -> Result<Output, String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        try_run_for("ip", &all, deadline)
    }

    /// Runs `program args` inside the namespace; it must succeed.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .run(program, args, COMMAND_DEADLINE)
            .unwrap_or_else(|e| panic!("in {}: {e}", self.name));
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.name,
            stderr(&out)
        );
        stdout(&out)
    }

    /// The processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        namespace_pids(&self.name)
    }
}

fn namespace_pids(name: &str) -> Vec<i32> {
    match try_run("ip", &["netns", "pids", name]) {
        Ok(out) => stdout(&out)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Kills what runs inside namespace `name` and deletes it.
fn destroy(name: &str) {
    for pid in namespace_pids(name) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // Deleting the namespace deletes the interfaces inside it (a veth goes
    // with its peer in another namespace).
    match try_run("ip", &["netns", "del", name]) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!("ip netns del {name} failed: {}", stderr(&out)),
        Err(e) => eprintln!("ip netns del {name}: {e}"),
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.created {
            destroy(&self.name);
        }
    }
}

/// Deletes namespaces `tnd-TAG-PID-*` left by a test process `PID` that no
/// longer exists (killed before its drops ran), with whatever still runs
/// in them. Namespaces of live test processes are left alone.
pub fn remove_leftovers(tag: &str) {
    let Ok(out) = try_run("ip", &["netns", "list"]) else {
        return;
    };
    let prefix = format!("tnd-{tag}-");
    for line in stdout(&out).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing leftover namespace {name} of a test process that is gone");
            destroy(name);
        }
    }
}
