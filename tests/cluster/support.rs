//! Shared helpers: a cluster of real `tandem` agent processes on loopback,
//! the harness `tandem demo` and `tandem bench` use too
//! (`tandem_localcluster::LocalCluster`), as tests want it: a failure panics
//! with the agents' logs, every wait ends after [`WAIT`], the CLI runs with
//! the cluster's credentials.
//!
//! Every process a test starts is killed when its `TestCluster` is dropped,
//! also when the test fails; data lives in a temporary directory that goes
//! with it.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tandem_core::NodeRole;
use tandem_localcluster::{LocalCluster, Member, agreed_coordinator};

/// A node of a test cluster: `address` (gRPC), `dns`, `http`, `config`, `log`.
pub use tandem_localcluster::Node as TestNode;

pub const BIN: &str = env!("CARGO_BIN_EXE_tandem");

/// How long any wait in a test may take before the test fails. Generous:
/// CI machines are shared; figures come from `tandem bench`, not from tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// The end of every test node's configuration. Roomier timing than the
/// defaults: tests share two cores with other tests, and a spurious
/// election would only make them slower to read.
const TEST_CONFIG: &str = "[timing]\nheartbeat_interval = \"100ms\"\nelection_timeout = \"300ms\"\nlease = \"3s\"\n\n\
                           [log]\nlevel = \"debug\"\n";

pub fn free_port() -> u16 {
    tandem_localcluster::free_port(Ipv4Addr::LOCALHOST).unwrap()
}

/// A member of a test cluster, on 127.0.0.1.
fn member(local: &mut LocalCluster, name: &str, role: &str) -> Member {
    let role = NodeRole::parse(role).unwrap_or_else(|| panic!("no role {role:?}"));
    local.member(name, role, Ipv4Addr::LOCALHOST).unwrap()
}

pub struct TestCluster {
    /// The agents: declared before `dir`, so they are killed before their
    /// directory goes.
    local: LocalCluster,
    /// Where the configurations, data and logs are (`local.dir`).
    pub dir: tempfile::TempDir,
    /// The initial member list, as written in every node's configuration.
    members: Vec<Member>,
    /// Added to every CLI call the helpers make (`cli`, `status`): the
    /// credentials of a cluster with `[security]` or `[tls]`.
    pub client_args: Vec<String>,
}

/// `nodes`, `cluster` (the cluster's name: unique per test, so that agents
/// of concurrent tests never talk to each other even if one reuses a port
/// another just released), `running()`, `data_dir(name)`.
impl Deref for TestCluster {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.local
    }
}

impl TestCluster {
    /// Writes configurations for `nodes` (name, role), all initial members.
    pub fn new(nodes: &[(&str, &'static str)]) -> TestCluster {
        TestCluster::named(&format!("t{}", free_port()), nodes)
    }

    /// Like [`TestCluster::new`], for a cluster called `cluster` (a data
    /// directory written before belongs to a cluster of a given name).
    pub fn named(cluster: &str, nodes: &[(&str, &'static str)]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut local = LocalCluster::new(BIN, dir.path(), cluster).with_tail(TEST_CONFIG);
        let members: Vec<Member> = nodes.iter().map(|(n, r)| member(&mut local, n, r)).collect();
        let mut c = TestCluster {
            local,
            dir,
            members,
            client_args: Vec::new(),
        };
        for m in &c.members {
            c.local.write_node(m, &c.members, false).unwrap();
        }
        c
    }

    /// A three-node cluster: site-a, site-b and a witness.
    pub fn three() -> TestCluster {
        TestCluster::new(&[("site-a", "member"), ("site-b", "member"), ("witness", "witness")])
    }

    /// A three-node cluster whose configurations end with `extra` (TOML tables).
    pub fn three_with(extra: &str) -> TestCluster {
        let mut c = TestCluster::three();
        c.local.append_config_all(extra).unwrap();
        c
    }

    /// Appends `text` (TOML tables) to the configuration of node `name`.
    pub fn append_config(&self, name: &str, text: &str) {
        self.local.append_config(name, text).unwrap();
    }

    /// Writes the configuration of a node that will be added with
    /// `tandem members add` (join = true) and returns its address.
    pub fn add_joiner(&mut self, name: &str, role: &'static str) -> String {
        let me = member(&mut self.local, name, role);
        let mut members = self.members.clone();
        members.push(me.clone());
        self.local.write_node(&me, &members, true).unwrap();
        me.address.to_string()
    }

    pub fn node(&self, name: &str) -> &TestNode {
        self.local.node(name).unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn start(&mut self, name: &str) {
        self.local.start(name).unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn start_all(&mut self) {
        self.local.start_all().unwrap_or_else(|e| panic!("{e}"));
    }

    /// `kill -9` of a node's agent.
    pub fn kill9(&mut self, name: &str) {
        self.local.kill9(name).unwrap_or_else(|e| panic!("{e}"));
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn sigterm(&mut self, name: &str) -> Option<i32> {
        self.signal(name, Signal::SIGTERM);
        match self.local.wait_exit(name, WAIT).unwrap() {
            Some(status) => status.code(),
            None => panic!("{name} did not stop within {WAIT:?} of SIGTERM"),
        }
    }

    /// Waits for `name`'s agent to exit by itself; its exit code.
    pub fn wait_exit(&mut self, name: &str) -> Option<i32> {
        match self.local.wait_exit(name, WAIT).unwrap() {
            Some(status) => status.code(),
            None => panic!("{name} did not exit within {WAIT:?}\n{}", self.logs_tail()),
        }
    }

    /// Sends `signal` to `name`'s agent (SIGSTOP/SIGCONT to pause it).
    pub fn signal(&self, name: &str, signal: Signal) {
        self.local.signal(name, signal).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs the CLI against `name`'s endpoint.
    pub fn cli(&self, name: &str, args: &[&str]) -> Output {
        let extra: Vec<&str> = self.client_args.iter().map(String::as_str).collect();
        tandem(
            &[
                args,
                &["--endpoint", &self.node(name).address, "--timeout", "5s"],
                &extra,
            ]
            .concat(),
        )
    }

    /// Runs the CLI against `name` until it succeeds (a write may meet an
    /// election), failing the test after [`WAIT`].
    pub fn cli_ok(&self, name: &str, args: &[&str]) -> Output {
        let start = Instant::now();
        loop {
            let out = self.cli(name, args);
            if out.status.success() {
                return out;
            }
            if out.status.code() == Some(2) || start.elapsed() > WAIT {
                panic!(
                    "tandem {args:?} against {name} failed: {}\n{}",
                    stderr(&out),
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status of `name`, waiting until it answers.
    pub fn status_of(&self, name: &str) -> Value {
        self.wait_for(&format!("a status from {name}"), |c| c.status(name))
    }

    /// Waits until `name`'s log contains `text`.
    pub fn wait_for_log(&self, name: &str, text: &str) {
        let log = self.node(name).log.clone();
        self.wait_for(&format!("{text:?} in the log of {name}"), |_| {
            std::fs::read_to_string(&log).ok()?.contains(text).then_some(())
        });
    }

    /// `tandem status --output json` against a node, None if it did not answer.
    pub fn status(&self, name: &str) -> Option<Value> {
        let extra: Vec<&str> = self.client_args.iter().map(String::as_str).collect();
        let out = tandem(
            &[
                &[
                    "status",
                    "--output",
                    "json",
                    "--timeout",
                    "1s",
                    "--endpoint",
                    &self.node(name).address,
                ],
                extra.as_slice(),
            ]
            .concat(),
        );
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Polls until `f` returns Some, or fails the test after [`WAIT`] with
    /// the last statuses and the agents' logs.
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&TestCluster) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if start.elapsed() > WAIT {
                let statuses: Vec<_> = self.running().iter().map(|n| (n.clone(), self.status(n))).collect();
                panic!(
                    "timed out waiting for {what}; statuses: {statuses:#?}\n{}",
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The coordinator every running node agrees on, once all of them do
    /// and every running node is up in the reported view.
    pub fn wait_for_agreed_coordinator(&self, excluding: Option<&str>) -> String {
        self.wait_for("one coordinator agreed by every running node", |c| {
            let running = c.running();
            let statuses: Vec<Value> = running.iter().map(|n| c.status(n)).collect::<Option<_>>()?;
            let (first, _) = agreed_coordinator(
                statuses
                    .iter()
                    .map(|s| Some((s["coordinator"].as_str()?, s["term"].as_u64()?))),
            )?;
            let all_up = statuses.iter().all(|s| {
                running
                    .iter()
                    .all(|r| node_in(s, r).is_some_and(|n| n["state"] == "up"))
            });
            (all_up && Some(first.as_str()) != excluding).then_some(first)
        })
    }

    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("--- {} log (last 30 lines) ---\n{tail}\n", n.name));
        }
        out
    }
}

/// Runs the `tandem` binary with `args` and a hard deadline. Output is
/// drained as it comes, so a chatty command never blocks on a full pipe.
pub fn tandem(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("tandem {args:?} did not finish within 120 s");
        }
    }
}

/// `GET path` from a node's HTTP listener `addr` over HTTP/1.1: the status
/// code and the body, or None when it has none or nothing answered within 5 s.
pub fn http_get(addr: Option<SocketAddr>, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = addr?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    // Bodies of these endpoints are small; chunked encoding is not expected.
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "unexpected chunked answer from {addr}{path}: {head}"
    );
    Some((code, body.to_string()))
}

/// The entry of node `name` in a status JSON.
pub fn node_in<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["nodes"].as_array()?.iter().find(|n| n["name"] == name)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
