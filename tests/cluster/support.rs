//! Shared helpers: a cluster of real `tandem` agent processes on loopback.
//!
//! Every process a test starts is killed when its `TestCluster` is dropped,
//! also when the test fails; data lives in a temporary directory that goes
//! with it.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_tandem");

/// How long any wait in a test may take before the test fails. Generous:
/// CI machines are shared; figures come from `tandem bench`, not from tests.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct TestNode {
    pub name: String,
    pub role: &'static str,
    pub address: String,
    pub dns: String,
    /// `[node] http_listen`: healthz, primary, metrics, the status page.
    pub http: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct TestCluster {
    /// Extra TOML appended to every node's configuration.
    extra: String,
    pub dir: tempfile::TempDir,
    /// Unique per test, so that agents of concurrent tests never talk to
    /// each other even if one reuses a port another just released.
    pub cluster: String,
    pub nodes: Vec<TestNode>,
    /// The initial member list, as written in every node's configuration.
    members: Vec<(String, &'static str, String)>,
    /// Added to every CLI call the helpers make (`cli`, `status`): the
    /// credentials of a cluster with `[security]` or `[tls]`.
    pub client_args: Vec<String>,
}

impl TestCluster {
    /// Writes configurations for `nodes` (name, role), all initial members.
    pub fn new(nodes: &[(&str, &'static str)]) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let members: Vec<(String, &'static str, String)> = nodes
            .iter()
            .map(|(n, r)| (n.to_string(), *r, format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut c = TestCluster {
            extra: String::new(),
            dir,
            cluster: format!("t{}", free_port()),
            nodes: Vec::new(),
            members,
            client_args: Vec::new(),
        };
        for (name, role, address) in c.members.clone() {
            c.write_node(&name, role, &address, false, &c.members.clone());
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
        c.extra = extra.to_string();
        for n in &c.nodes {
            let mut text = std::fs::read_to_string(&n.config).unwrap();
            text.push_str(extra);
            std::fs::write(&n.config, text).unwrap();
        }
        c
    }

    /// Appends `text` (TOML tables) to the configuration of node `name`.
    pub fn append_config(&self, name: &str, text: &str) {
        let path = &self.node(name).config;
        let mut config = std::fs::read_to_string(path).unwrap();
        config.push_str(text);
        std::fs::write(path, config).unwrap();
    }

    /// Writes the configuration of a node that will be added with
    /// `tandem members add` (join = true) and returns its address.
    pub fn add_joiner(&mut self, name: &str, role: &'static str) -> String {
        let address = format!("127.0.0.1:{}", free_port());
        let mut members = self.members.clone();
        members.push((name.to_string(), role, address.clone()));
        self.write_node(name, role, &address, true, &members);
        address
    }

    fn write_node(
        &mut self,
        name: &str,
        role: &'static str,
        address: &str,
        join: bool,
        members: &[(String, &'static str, String)],
    ) {
        let dns = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let data = self.dir.path().join(format!("{name}-data"));
        let mut text = format!(
            "[cluster]\nname = \"{}\"\njoin = {join}\n\n[node]\nname = \"{name}\"\nrole = \"{role}\"\ndata_dir = \"{}\"\ngrpc_listen = \"{address}\"\ndns_listen = \"{dns}\"\nhttp_listen = \"{http}\"\n\n",
            self.cluster,
            data.display()
        );
        for (n, r, a) in members {
            text.push_str(&format!(
                "[[members]]\nname = \"{n}\"\naddress = \"{a}\"\nrole = \"{r}\"\n\n"
            ));
        }
        // Roomier than the defaults: tests share two cores with other tests,
        // and a spurious election would only make them slower to read.
        text.push_str("[timing]\nheartbeat_interval = \"100ms\"\nelection_timeout = \"300ms\"\nlease = \"3s\"\n\n");
        text.push_str("[log]\nlevel = \"debug\"\n");
        text.push_str(&self.extra);
        let config = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        self.nodes.push(TestNode {
            name: name.to_string(),
            role,
            address: address.to_string(),
            dns,
            http,
            config,
            log: self.dir.path().join(format!("{name}.log")),
            child: None,
        });
    }

    pub fn node(&self, name: &str) -> &TestNode {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn node_mut(&mut self, name: &str) -> &mut TestNode {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    pub fn start(&mut self, name: &str) {
        let node = self.node_mut(name);
        assert!(node.child.is_none(), "{name} already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    pub fn start_all(&mut self) {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.start(&n);
        }
    }

    pub fn running(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.name.clone())
            .collect()
    }

    /// `kill -9` of a node's agent.
    pub fn kill9(&mut self, name: &str) {
        let mut child = self.node_mut(name).child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn sigterm(&mut self, name: &str) -> Option<i32> {
        let mut child = self.node_mut(name).child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > WAIT {
                child.kill().unwrap();
                panic!("{name} did not stop within {WAIT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to `name`'s agent (SIGSTOP/SIGCONT to pause it).
    pub fn signal(&self, name: &str, signal: Signal) {
        let child = self.node(name).child.as_ref().unwrap();
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
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
            let first = statuses[0]["coordinator"].as_str()?.to_string();
            let term = statuses[0]["term"].as_u64()?;
            let agreed = statuses
                .iter()
                .all(|s| s["coordinator"].as_str() == Some(first.as_str()) && s["term"].as_u64() == Some(term));
            let all_up = statuses.iter().all(|s| {
                running
                    .iter()
                    .all(|r| node_in(s, r).is_some_and(|n| n["state"] == "up"))
            });
            (agreed && all_up && Some(first.as_str()) != excluding).then_some(first)
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

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-data"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
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

/// `GET path` from `addr` over HTTP/1.1: the status code and the body, or
/// None when nothing answered within 5 s.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(5)).ok()?;
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
