//! The fault suite's world: four hosts on a bridge, a Tandem cluster on
//! three of them, the ledger on the fourth, and the faults.
//!
//! Every test builds its own network: a hub namespace holding a Linux
//! bridge, and one namespace per host (site-a, site-b, witness, client),
//! each with a veth into the bridge and an address in 198.18.0.0/24. The
//! hub is per test, so concurrent tests reuse the same addresses without
//! meeting. Links are cut with nftables inside the receiving host (packets
//! from the sender's address dropped on INPUT), so one direction is a rule
//! on one side only. The agents, the services they start, the ledger and
//! every CLI call run inside the hosts' namespaces.
//!
//! Dropping a [`FaultCluster`] kills every process it started (agents by
//! PID, services by their process groups, then whatever is left in the
//! namespaces) and deletes the namespaces, also when the test panics; a
//! panicking test prints the tail of every log first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::checker::{self, Findings, Pause, Record};
use crate::namespaces::{Namespace, ip, remove_leftovers, require_root};
use crate::support::{BIN, node_in, stderr, stdout, write};

/// The timing every node runs with: the relaxed timing of the other
/// cluster tests (the suite shares two cores with other builds).
pub const HEARTBEAT: Duration = Duration::from_millis(100);
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(300);
pub const LEASE: Duration = Duration::from_secs(3);
/// How long the cluster may take to converge once every fault is healed.
pub const CONVERGENCE_BOUND: Duration = Duration::from_secs(60);
/// How long a setup step or an expected reaction may take.
pub const WAIT: Duration = Duration::from_secs(45);

pub const NODES: [&str; 3] = ["site-a", "site-b", "witness"];
pub const MEMBERS: [&str; 2] = ["site-a", "site-b"];
const CLIENT: &str = "client";
/// The groups of the spec: name, preferred node, other node.
pub const GROUPS: [(&str, &str, &str); 2] = [("alpha", "site-a", "site-b"), ("beta", "site-b", "site-a")];
const GRPC_PORT: u16 = 7400;
const LEDGER_PORT: u16 = 9000;
const DNS_PORT: u16 = 5300;
/// The groups' records carry the spec's default TTL.
const DNS_TTL: Duration = tandem_core::spec::DEFAULT_DNS_TTL;
const PYTHON: &str = "/usr/bin/python3";
const NFT_TABLE: &str = "tandemfaults";

fn addr(host: &str) -> &'static str {
    match host {
        "site-a" => "198.18.0.1",
        "site-b" => "198.18.0.2",
        "witness" => "198.18.0.3",
        CLIENT => "198.18.0.4",
        _ => panic!("unknown host {host}"),
    }
}

/// The fault suite's programs, committed beside the tests.
fn script(name: &str) -> String {
    format!("{}/../../tests/faults/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// CLOCK_MONOTONIC in seconds: the clock the ledger stamps its records with.
pub fn mono() -> f64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    ts.tv_sec() as f64 + ts.tv_nsec() as f64 * 1e-9
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Running,
    Paused,
    Killed,
}

struct Node {
    name: &'static str,
    config: PathBuf,
    data: PathBuf,
    log: PathBuf,
    agent: Option<Child>,
    life: Life,
}

/// Where a group runs according to the ledger: the newest accepted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub node: String,
    pub epoch: u64,
    /// When the ledger received its newest message.
    pub t: f64,
}

pub struct FaultCluster {
    pub test: String,
    cluster: String,
    nodes: Vec<Node>,
    ledger: Option<Child>,
    ledger_file: PathBuf,
    ledger_log: PathBuf,
    /// The service processes' lives (`lives.rs`), and their watcher.
    lives_file: PathBuf,
    lives_watcher: Option<super::lives::Watcher>,
    /// Every node's DNS answer for every group, every 20 ms (`answers.rs`).
    answers: Option<super::answers::Sampler>,
    /// Every fault and heal with its CLOCK_MONOTONIC time.
    pub journal: Vec<(f64, String)>,
    /// Short names of the faults injected, for the summary line.
    pub faults: Vec<String>,
    pub pauses: Vec<Pause>,
    /// Figures measured by the test, for the summary line.
    figures: Vec<String>,
    /// Active drops: (from, to): `to` drops packets from `from` (a multiset:
    /// overlapping faults may cut the same direction).
    drops: Vec<(&'static str, &'static str)>,
    /// The last acknowledged spec change: version and the marker in its text.
    acked: Option<(u64, String)>,
    changes: u32,
    /// Declared after the processes: dropped once they are killed.
    hosts: BTreeMap<&'static str, Namespace>,
    hub: Namespace,
    /// Declared last: the logs outlive everything else.
    dir: tempfile::TempDir,
}

impl FaultCluster {
    /// Builds the network, starts the ledger and the three agents, waits for
    /// a coordinator, applies the spec twice (two acknowledged changes) and
    /// waits until the cluster converged: both groups running on members
    /// and writing to the ledger.
    pub fn start(test: &str) -> FaultCluster {
        require_root();
        for tool in ["/usr/sbin/nft", PYTHON] {
            assert!(
                Path::new(tool).exists(),
                "the fault suite needs {tool} (apt-get install nftables python3)"
            );
        }
        let tag = test.replace(['_', '-'], "");
        remove_leftovers(&tag);
        let dir = tempfile::tempdir().unwrap();
        let hub = Namespace::create(&tag, "hub");
        let mut c = FaultCluster {
            test: test.to_string(),
            cluster: format!("{tag}-{}", std::process::id()),
            nodes: Vec::new(),
            ledger: None,
            ledger_file: dir.path().join("ledger.jsonl"),
            ledger_log: dir.path().join("ledger.log"),
            lives_file: dir.path().join("lives.jsonl"),
            lives_watcher: None,
            answers: None,
            journal: Vec::new(),
            faults: Vec::new(),
            pauses: Vec::new(),
            figures: Vec::new(),
            drops: Vec::new(),
            acked: None,
            changes: 0,
            hosts: BTreeMap::new(),
            hub,
            dir,
        };
        ip(&["-n", &c.hub.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &c.hub.name, "link", "set", "br0", "up"]);
        for (k, host) in NODES.iter().chain([&CLIENT]).enumerate() {
            let ns = Namespace::create(&tag, host);
            let port = format!("v{k}");
            ip(&[
                "-n",
                &ns.name,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &c.hub.name,
            ]);
            ip(&["-n", &c.hub.name, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &c.hub.name, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{}/24", addr(host)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
            ns.run_ok("/usr/sbin/nft", &["add", "table", "inet", NFT_TABLE]);
            ns.run_ok(
                "/usr/sbin/nft",
                &[
                    "add", "chain", "inet", NFT_TABLE, "input", "{", "type", "filter", "hook", "input", "priority",
                    "0", ";", "policy", "accept", ";", "}",
                ],
            );
            c.hosts.insert(host, ns);
        }
        c.start_ledger();
        c.lives_watcher = Some(super::lives::Watcher::start(&c.lives_file));
        for name in NODES {
            c.write_config(name);
            c.start_agent(name);
        }
        c.wait_agreed_coordinator();
        c.apply_change();
        c.apply_change();
        // Placement is the coordinator's, from the leases it sees: on a
        // loaded machine a group may start on its second choice. The
        // scenarios work from where the groups really run.
        c.wait_for("both groups running and writing", WAIT, |c| c.converged());
        let servers = NODES
            .iter()
            .map(|n| (*n, format!("{}:{DNS_PORT}", addr(n)).parse().unwrap()))
            .collect();
        c.answers = Some(super::answers::Sampler::start(
            Path::new("/run/netns").join(&c.hosts[CLIENT].name),
            servers,
            GROUPS.iter().map(|(g, _, _)| *g).collect(),
            format!("{}.tandem.", c.cluster),
        ));
        c
    }

    fn start_ledger(&mut self) {
        let log = std::fs::File::create(&self.ledger_log).unwrap();
        let child = self.hosts[CLIENT]
            .command(PYTHON)
            .arg("-u")
            .arg(script("ledger.py"))
            .arg("--listen")
            .arg(format!("{}:{LEDGER_PORT}", addr(CLIENT)))
            .arg("--out")
            .arg(&self.ledger_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.ledger = Some(child);
        self.wait_for("the ledger to listen", WAIT, |c| c.ledger_file.exists().then_some(()));
    }

    fn write_config(&mut self, name: &'static str) {
        let role = if name == "witness" { "witness" } else { "member" };
        let data = self.dir.path().join(format!("{name}-data"));
        let mut text = format!(
            "[cluster]\nname = \"{}\"\n\n[node]\nname = \"{name}\"\nrole = \"{role}\"\ndata_dir = \"{}\"\n\
             grpc_listen = \"{}:{GRPC_PORT}\"\ndns_listen = \"{}:{DNS_PORT}\"\n\n",
            self.cluster,
            data.display(),
            addr(name),
            addr(name)
        );
        for n in NODES {
            let r = if n == "witness" { "witness" } else { "member" };
            text.push_str(&format!(
                "[[members]]\nname = \"{n}\"\naddress = \"{}:{GRPC_PORT}\"\nrole = \"{r}\"\n\n",
                addr(n)
            ));
        }
        text.push_str(&format!(
            "[timing]\nheartbeat_interval = \"{}ms\"\nelection_timeout = \"{}ms\"\nlease = \"{}s\"\n\n[log]\nlevel = \"debug\"\n",
            HEARTBEAT.as_millis(),
            ELECTION_TIMEOUT.as_millis(),
            LEASE.as_secs()
        ));
        let config = write(self.dir.path(), &format!("{name}.toml"), &text);
        self.nodes.push(Node {
            name,
            config,
            data,
            log: self.dir.path().join(format!("{name}.log")),
            agent: None,
            life: Life::Killed,
        });
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    pub fn life(&self, name: &str) -> Life {
        self.node(name).life
    }

    fn start_agent(&mut self, name: &str) {
        let ns = self.hosts[self.node(name).name].command(BIN);
        let node = self.node_mut(name);
        assert!(node.agent.is_none(), "{name} already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut cmd = ns;
        let child = cmd
            .args(["agent", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        node.agent = Some(child);
        node.life = Life::Running;
    }

    fn agent_pid(&self, name: &str) -> Option<i32> {
        self.node(name).agent.as_ref().map(|c| c.id() as i32)
    }

    /// The process groups of the services the node's agent started, from
    /// their pid files (`DATA/run/GROUP/RESOURCE.pid`; each service leads
    /// its own process group). Only processes inside the node's host count:
    /// a pid file may outlive its process, and the pid may be reused.
    fn service_groups(&self, name: &str) -> Vec<i32> {
        let inside = self.hosts[self.node(name).name].pids();
        let mut pids = Vec::new();
        let run = self.node(name).data.join("run");
        for group in std::fs::read_dir(run).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(group.path()).into_iter().flatten().flatten() {
                if file.path().extension().is_some_and(|e| e == "pid")
                    && let Ok(text) = std::fs::read_to_string(file.path())
                    && let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse::<i32>().ok())
                    && inside.contains(&pid)
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Sends `signal` to the node's services (their process groups) and to
    /// every other process in its host but the agent.
    fn signal_services(&self, name: &str, signal: Signal) {
        let agent = self.agent_pid(name);
        for pgid in self.service_groups(name) {
            let _ = kill(Pid::from_raw(-pgid), signal);
        }
        for pid in self.hosts[self.node(name).name].pids() {
            if Some(pid) != agent {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    }

    /// Records `what` in the journal (and on stderr) with the time.
    pub fn note(&mut self, what: String) {
        eprintln!("[{:.3}] {what}", mono());
        self.journal.push((mono(), what));
    }

    /// A figure measured by the test: journal and summary line.
    pub fn note_figure(&mut self, what: String) {
        self.figures.push(what.clone());
        self.note(what);
    }

    // ---- faults ---------------------------------------------------------

    fn apply_drops(&self, to: &'static str) {
        let mut from: Vec<&str> = self
            .drops
            .iter()
            .filter(|(_, t)| *t == to)
            .map(|(f, _)| addr(f))
            .collect();
        from.sort_unstable();
        from.dedup();
        let mut script = format!("flush chain inet {NFT_TABLE} input\n");
        if !from.is_empty() {
            script.push_str(&format!(
                "add rule inet {NFT_TABLE} input ip saddr {{ {} }} drop\n",
                from.join(", ")
            ));
        }
        let file = write(self.dir.path(), &format!("nft-{to}.nft"), &script);
        self.hosts[to].run_ok("/usr/sbin/nft", &["-f", file.to_str().unwrap()]);
    }

    fn host_name(name: &str) -> &'static str {
        NODES.iter().chain([&CLIENT]).find(|n| **n == name).copied().unwrap()
    }

    /// `to` stops hearing `from`: packets from `from` are dropped on `to`'s INPUT.
    pub fn drop_one_way(&mut self, from: &str, to: &str) {
        let (from, to) = (Self::host_name(from), Self::host_name(to));
        self.drops.push((from, to));
        self.apply_drops(to);
    }

    /// Undoes one [`drop_one_way`](Self::drop_one_way).
    pub fn undrop_one_way(&mut self, from: &str, to: &str) {
        let (from, to) = (Self::host_name(from), Self::host_name(to));
        if let Some(k) = self.drops.iter().position(|d| *d == (from, to)) {
            self.drops.remove(k);
        }
        self.apply_drops(to);
    }

    /// Cuts the link between `x` and `y` in both directions.
    pub fn cut(&mut self, x: &str, y: &str) {
        self.note(format!("cut {x} <-> {y}"));
        self.faults.push(format!("cut({x},{y})"));
        self.drop_one_way(x, y);
        self.drop_one_way(y, x);
    }

    pub fn uncut(&mut self, x: &str, y: &str) {
        self.note(format!("uncut {x} <-> {y}"));
        self.undrop_one_way(x, y);
        self.undrop_one_way(y, x);
    }

    /// `to` no longer hears `from`; `from` still hears `to`.
    pub fn cut_one_way(&mut self, from: &str, to: &str) {
        self.note(format!("cut {from} -> {to} (only {to} stops hearing {from})"));
        self.faults.push(format!("oneway({from}->{to})"));
        self.drop_one_way(from, to);
    }

    pub fn uncut_one_way(&mut self, from: &str, to: &str) {
        self.note(format!("uncut {from} -> {to}"));
        self.undrop_one_way(from, to);
    }

    /// Cuts `x` off from each of `others` (both directions).
    pub fn isolate(&mut self, x: &str, others: &[&str]) {
        self.note(format!("isolate {x} from {others:?}"));
        self.faults.push(format!("isolate({x},{})", others.join("+")));
        for o in others {
            self.drop_one_way(x, o);
            self.drop_one_way(o, x);
        }
    }

    pub fn unisolate(&mut self, x: &str, others: &[&str]) {
        self.note(format!("unisolate {x} from {others:?}"));
        for o in others {
            self.undrop_one_way(x, o);
            self.undrop_one_way(o, x);
        }
    }

    /// Removes every drop rule.
    pub fn heal_network(&mut self) {
        self.note("heal the network".into());
        self.drops.clear();
        for h in NODES.iter().chain([&CLIENT]) {
            self.apply_drops(h);
        }
    }

    /// `kill -9` of the node's agent and of every service it started: the
    /// host is lost.
    pub fn kill9(&mut self, name: &str) {
        self.note(format!("kill -9 {name} (agent and services)"));
        self.faults.push(format!("kill9({name})"));
        if let Some(mut agent) = self.node_mut(name).agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        self.signal_services(name, Signal::SIGKILL);
        self.node_mut(name).life = Life::Killed;
    }

    /// Starts the agent of a killed node again.
    pub fn revive(&mut self, name: &str) {
        self.note(format!("start {name}'s agent again"));
        self.start_agent(name);
    }

    /// SIGSTOP of the node's agent, then of its services.
    pub fn pause(&mut self, name: &str) {
        self.note(format!("SIGSTOP {name} (agent and services)"));
        self.faults.push(format!("pause({name})"));
        if let Some(pid) = self.agent_pid(name) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
        self.signal_services(name, Signal::SIGSTOP);
        self.node_mut(name).life = Life::Paused;
        self.pauses.push(Pause {
            node: name.to_string(),
            stopped: mono(),
            resumed: f64::INFINITY,
        });
    }

    /// SIGSTOP of the node's agent alone: its services run on, as when an
    /// agent hangs (a deadlock, a stuck disk, a debugger). `heal` continues it.
    pub fn freeze_agent(&mut self, name: &str) {
        self.note(format!("SIGSTOP {name}'s agent alone (its services run on)"));
        self.faults.push(format!("freeze-agent({name})"));
        if let Some(pid) = self.agent_pid(name) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
        self.node_mut(name).life = Life::Paused;
    }

    /// `kill -9` of the node's agent alone, not started again: its services
    /// run on. `heal` starts the agent again.
    pub fn kill_agent(&mut self, name: &str) {
        self.note(format!("kill -9 {name}'s agent alone (its services run on)"));
        self.faults.push(format!("kill-agent({name})"));
        if let Some(mut agent) = self.node_mut(name).agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        self.node_mut(name).life = Life::Killed;
    }

    /// SIGCONT of the node's services, then of its agent: the services get
    /// the first chance to act on a stale assignment.
    pub fn resume(&mut self, name: &str) {
        self.resume_services(name);
        self.resume_agent(name);
    }

    /// SIGCONT of the node's services, then, once one of them reached the
    /// ledger again (at most 5 s), of its agent: the worst case for a
    /// fencing token, a service that acts before its agent can stop it.
    pub fn resume_services_first(&mut self, name: &str) {
        let resumed = self.resume_services(name);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && !self.records().iter().any(|r| r.node == name && r.t >= resumed)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.resume_agent(name);
    }

    /// SIGCONT of the node's services; returns when (CLOCK_MONOTONIC).
    fn resume_services(&mut self, name: &str) -> f64 {
        let now = mono();
        if let Some(p) = self
            .pauses
            .iter_mut()
            .rev()
            .find(|p| p.node == name && p.resumed.is_infinite())
        {
            p.resumed = now;
        }
        self.signal_services(name, Signal::SIGCONT);
        self.note(format!("SIGCONT {name}'s services"));
        now
    }

    fn resume_agent(&mut self, name: &str) {
        if let Some(pid) = self.agent_pid(name) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        self.node_mut(name).life = Life::Running;
        self.note(format!("SIGCONT {name}'s agent"));
    }

    /// Restarts the node's agent (SIGTERM, wait, start): its services keep
    /// running and the new agent adopts them.
    pub fn restart_agent(&mut self, name: &str) {
        self.note(format!("restart {name}'s agent"));
        self.faults.push(format!("restart({name})"));
        let mut agent = self.node_mut(name).agent.take().unwrap();
        let _ = kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while agent.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = agent.kill();
                let _ = agent.wait();
                panic!("{name}'s agent did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.start_agent(name);
    }

    /// `kill -9` of `name`'s agent alone (its services run on), then a new agent.
    pub fn crash_and_restart_agent(&mut self, name: &str) {
        self.note(format!("kill -9 {name}'s agent alone, then start it again"));
        self.faults.push(format!("crash-restart({name})"));
        let mut agent = self.node_mut(name).agent.take().unwrap();
        let _ = agent.kill();
        let _ = agent.wait();
        self.start_agent(name);
    }

    /// Heals everything: paused nodes continue, the network is whole again,
    /// killed nodes start again.
    pub fn heal(&mut self) {
        for name in NODES {
            if self.life(name) == Life::Paused {
                self.resume(name);
            }
        }
        self.heal_network();
        for name in NODES {
            if self.life(name) == Life::Killed {
                self.revive(name);
            }
        }
    }

    // ---- observing --------------------------------------------------------

    /// The CLI, run in the client host against `node`.
    pub fn cli(&self, node: &str, args: &[&str], timeout: &str) -> Output {
        let endpoint = format!("{}:{GRPC_PORT}", addr(node));
        let mut all = args.to_vec();
        all.extend_from_slice(&["--endpoint", &endpoint, "--timeout", timeout]);
        self.hosts[CLIENT]
            .run(BIN, &all, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `tandem status --output json` of `node`, None if it does not answer.
    pub fn status(&self, node: &str) -> Option<Value> {
        if self.life(node) != Life::Running {
            return None;
        }
        let out = self.cli(node, &["status", "--output", "json"], "1s");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Whether `node`'s agent log contains `text`.
    pub fn log_contains(&self, node: &str, text: &str) -> bool {
        std::fs::read_to_string(&self.node(node).log).is_ok_and(|l| l.contains(text))
    }

    /// Whether `node` holds a lease, by its own status.
    pub fn own_lease_valid(&self, node: &str) -> bool {
        self.status(node)
            .is_some_and(|s| node_in(&s, node).is_some_and(|n| n["lease_valid"] == true))
    }

    pub fn group(status: &Value, name: &str) -> Option<Value> {
        status["groups"].as_array()?.iter().find(|g| g["name"] == name).cloned()
    }

    /// The (primary, epoch) of `group` as the coordinator reports it.
    pub fn placement(&self, group: &str) -> Option<(String, u64)> {
        let s = self.coordinator_status()?;
        let g = Self::group(&s, group)?;
        Some((g["primary"].as_str()?.to_string(), g["epoch"].as_u64()?))
    }

    /// The status of the node that is coordinator by its own account.
    pub fn coordinator_status(&self) -> Option<Value> {
        NODES
            .iter()
            .filter_map(|n| self.status(n))
            .find(|s| s["coordinator"] == s["answered_by"])
    }

    pub fn records(&self) -> Vec<Record> {
        checker::parse(&std::fs::read_to_string(&self.ledger_file).unwrap_or_default())
    }

    /// The group's newest accepted message in the ledger.
    pub fn holder(&self, group: &str) -> Option<Holder> {
        self.records()
            .into_iter()
            .rev()
            .find(|r| r.group == group && r.accepted && r.kind != "stop")
            .map(|r| Holder {
                node: r.node,
                epoch: r.epoch,
                t: r.t,
            })
    }

    /// Polls `f` every 200 ms until it returns Some; fails the test after
    /// `within` with the statuses (the logs follow from the drop).
    pub fn wait_for<T>(&self, what: &str, within: Duration, mut f: impl FnMut(&FaultCluster) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if start.elapsed() > within {
                let statuses: Vec<_> = NODES.iter().map(|n| (n, self.status(n))).collect();
                panic!(
                    "{}: timed out after {within:?} waiting for {what}; statuses: {statuses:#?}",
                    self.test
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every running node names the same coordinator in the
    /// same term, and sees every running node up.
    pub fn wait_agreed_coordinator(&self) -> String {
        self.wait_for("one coordinator agreed by every node", WAIT, |c| c.agreed_coordinator())
    }

    fn agreed_coordinator(&self) -> Option<String> {
        let running: Vec<&str> = NODES
            .iter()
            .copied()
            .filter(|n| self.life(n) == Life::Running)
            .collect();
        let statuses: Vec<Value> = running.iter().map(|n| self.status(n)).collect::<Option<_>>()?;
        let first = statuses.first()?;
        let coordinator = first["coordinator"].as_str()?.to_string();
        let agreed = statuses
            .iter()
            .all(|s| s["coordinator"] == first["coordinator"] && s["term"] == first["term"]);
        let all_up = statuses.iter().all(|s| {
            running
                .iter()
                .all(|r| node_in(s, r).is_some_and(|n| n["state"] == "up"))
        });
        (agreed && all_up).then_some(coordinator)
    }

    /// Writes the spec with change number `k` and applies it, retrying until
    /// a node acknowledges it; remembers the acknowledged version.
    pub fn apply_change(&mut self) -> u64 {
        self.changes += 1;
        let k = self.changes;
        let marker = format!("# fault suite spec, change {k}");
        let service = script("service.py");
        let ledger = format!("{}:{LEDGER_PORT}", addr(CLIENT));
        let lives = self.lives_file.display();
        let mut text = format!("{marker}\n");
        for (i, (name, preferred, other)) in GROUPS.iter().enumerate() {
            // Only beta's threshold changes: no resource changes, so
            // nothing restarts.
            let threshold = if i == 0 { 10 } else { 10 + k };
            text.push_str(&format!(
                "[[groups]]\nname = \"{name}\"\nprefer = [{{ node = \"{preferred}\", score = 100 }}, {{ node = \"{other}\", score = 50 }}]\n\
                 migration_threshold = {threshold}\n\n\
                 [[groups.resources]]\nname = \"writer\"\nagent = \"exec\"\ncommand = \"{PYTHON}\"\n\
                 args = [\"-u\", \"{service}\", \"{ledger}\", \"{lives}\"]\nmonitor_interval = \"500ms\"\ntimeouts = {{ stop = \"5s\" }}\n\n"
            ));
        }
        let file = write(self.dir.path(), &format!("spec-{k}.toml"), &text);
        let file = file.to_str().unwrap().to_string();
        // Through each running node in turn: one may be cut off.
        let version = self.wait_for(&format!("spec change {k} acknowledged"), WAIT, |c| {
            NODES.iter().filter(|n| c.life(n) == Life::Running).find_map(|node| {
                let out = c.cli(node, &["apply", "-f", &file], "5s");
                assert_ne!(out.status.code(), Some(2), "spec refused: {}", stderr(&out));
                let text = stdout(&out);
                let line = text.lines().find(|l| l.starts_with("applied as spec version "))?;
                line.trim_start_matches("applied as spec version ").trim().parse().ok()
            })
        });
        self.note(format!("spec change {k} acknowledged as version {version}"));
        self.acked = Some((version, marker));
        version
    }

    /// Converged: every node answers and agrees on one coordinator, every
    /// node up; every group running on a member (never the witness) in every
    /// node's status, with one primary and epoch, and that primary's
    /// service writing to the ledger with that epoch within the last second.
    fn converged(&self) -> Option<()> {
        if NODES.iter().any(|n| self.life(n) != Life::Running) {
            return None;
        }
        self.agreed_coordinator()?;
        let statuses: Vec<Value> = NODES.iter().map(|n| self.status(n)).collect::<Option<_>>()?;
        for (group, _, _) in GROUPS {
            let mut placement = None;
            for s in &statuses {
                let g = Self::group(s, group)?;
                let primary = g["primary"].as_str()?.to_string();
                if g["state"] != "running" || !MEMBERS.contains(&primary.as_str()) {
                    return None;
                }
                let this = (primary, g["epoch"].as_u64()?);
                if placement.get_or_insert_with(|| this.clone()) != &this {
                    return None;
                }
            }
            let (primary, epoch) = placement?;
            let h = self.holder(group)?;
            if h.node != primary || h.epoch != epoch || mono() - h.t > 1.0 {
                return None;
            }
        }
        Some(())
    }

    /// Waits (at most [`CONVERGENCE_BOUND`]) until the cluster converged;
    /// returns how long that took.
    pub fn wait_converged(&mut self, what: &str) -> Duration {
        let start = Instant::now();
        self.wait_for(what, CONVERGENCE_BOUND, |c| c.converged());
        let took = start.elapsed();
        self.note(format!("{what}: {:.2} s", took.as_secs_f64()));
        took
    }

    /// Heals everything, measures convergence (bounded), checks that the
    /// acknowledged spec survived, runs the checker over the whole ledger,
    /// prints the summary line and fails the test on any violation.
    pub fn finish(&mut self, seed: Option<u64>) -> (Findings, Duration) {
        self.heal();
        let convergence = self.wait_converged("the cluster to converge after healing");

        // (c) the acknowledged spec changes are all there: on every node,
        // once it caught up (a node that fell behind while cut off applies
        // the log a moment after the groups converged; Raft repairs it from
        // the majority, which is where an acknowledged change lives).
        let (version, marker) = self.acked.clone().expect("a spec was applied");
        for n in NODES {
            let started = Instant::now();
            let (out, show) = loop {
                let out = self.cli(n, &["spec", "show"], "5s");
                let show = stdout(&out);
                let there = out.status.success()
                    && show.contains(&format!("# spec version {version}\n"))
                    && show.contains(&marker);
                if there || started.elapsed() > WAIT {
                    break (out, show);
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            assert!(
                out.status.success() && show.contains(&format!("# spec version {version}\n")) && show.contains(&marker),
                "{}: {n} lost the acknowledged spec version {version} ({marker}) or did not catch up within {WAIT:?}: {show}{}",
                self.test,
                stderr(&out)
            );
            let s = self.status(n).expect("a status after convergence");
            assert_eq!(s["spec_version"], version, "{}: spec_version on {n}", self.test);
        }

        // (a), (b) over the whole ledger, then one primary from the
        // services' lives. A run in which no service ever lived and wrote
        // proves nothing.
        let records = self.records();
        let mut findings = checker::check(&records, &self.pauses);
        let lives = super::lives::parse(&std::fs::read_to_string(&self.lives_file).unwrap_or_default());
        checker::check_lives(&lives, &records, &self.pauses, mono(), &mut findings);
        assert!(
            !records.is_empty() && findings.lives > 0,
            "{}: no service wrote to the ledger ({} records) or lived ({} lives): the run proves nothing",
            self.test,
            records.len(),
            findings.lives
        );
        for (group, gap) in &findings.min_gap {
            self.figures
                .push(format!("{group} handover margin {:.1} ms", gap * 1000.0));
        }
        // No stale answers: what the nodes told clients, from the client
        // host, against the ledger's holders. A run in which no node ever
        // answered an address proves nothing about answers.
        if let Some(mut sampler) = self.answers.take() {
            let samples = sampler.finish();
            let answered = samples
                .iter()
                .filter(|s| matches!(s.answer, super::answers::Answer::Addr(_)))
                .count();
            assert!(
                answered > 0,
                "{}: no node answered an address in {} DNS samples: the run proves nothing about answers",
                self.test,
                samples.len()
            );
            let stale = super::answers::stale_answers(&records, &samples, DNS_TTL, |n| {
                NODES.contains(&n).then(|| addr(n).parse().unwrap())
            });
            self.figures.push(format!(
                "DNS: {} answers sampled ({answered} with an address), {} stale",
                samples.len(),
                stale.len()
            ));
            findings.violations.extend(stale);
        }
        let summary = format!(
            "FAULT-SUMMARY test={} seed={} faults=[{}] violations={} lives={} refused={} (after a pause: {}) convergence={:.2}s figures=[{}]",
            self.test,
            seed.map_or("-".to_string(), |s| s.to_string()),
            self.faults.join(" "),
            findings.violations.len(),
            findings.lives,
            findings.refused,
            findings.refused_after_pause,
            convergence.as_secs_f64(),
            self.figures.join("; ")
        );
        println!("{summary}");
        for (group, intervals) in &findings.intervals {
            for i in intervals {
                eprintln!(
                    "  {group}: {} epoch {} {:.3}..{:.3} ({} messages from {} processes, {} refused{})",
                    i.node,
                    i.epoch,
                    i.first,
                    i.last,
                    i.messages,
                    i.processes,
                    i.refused,
                    if i.stopped { ", stopped" } else { "" }
                );
            }
        }
        assert!(
            findings.violations.is_empty(),
            "{}: {} safety violations:\n{}",
            self.test,
            findings.violations.len(),
            findings.violations.join("\n")
        );
        (findings, convergence)
    }

    fn tail(path: &Path, lines: usize, skip: impl Fn(&str) -> bool) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().filter(|l| !skip(l)).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The tail of every log: agents, services, ledger; and the journal.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "--- {} agent log (last 40 lines) ---\n{}\n",
                n.name,
                Self::tail(&n.log, 40, |_| false)
            ));
            let run = n.data.join("run");
            for group in std::fs::read_dir(run).into_iter().flatten().flatten() {
                for file in std::fs::read_dir(group.path()).into_iter().flatten().flatten() {
                    if file.path().extension().is_some_and(|e| e == "log") {
                        out.push_str(&format!(
                            "--- {} {} (last 10 lines) ---\n{}\n",
                            n.name,
                            file.path().display(),
                            Self::tail(&file.path(), 10, |_| false)
                        ));
                    }
                }
            }
        }
        out.push_str(&format!(
            "--- ledger log ---\n{}\n--- ledger records (last 20) ---\n{}\n--- journal ---\n",
            Self::tail(&self.ledger_log, 10, |_| false),
            Self::tail(&self.ledger_file, 20, |_| false)
        ));
        for (t, what) in &self.journal {
            out.push_str(&format!("[{t:.3}] {what}\n"));
        }
        out
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        // Continue nothing: SIGKILL ends stopped processes too.
        let names: Vec<&'static str> = self.nodes.iter().map(|n| n.name).collect();
        for name in names {
            if let Some(mut agent) = self.node_mut(name).agent.take() {
                let _ = agent.kill();
                let _ = agent.wait();
            }
            for pgid in self.service_groups(name) {
                let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
            }
        }
        if let Some(mut ledger) = self.ledger.take() {
            let _ = ledger.kill();
            let _ = ledger.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail());
        }
        if std::env::var_os("TANDEM_FAULT_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("TANDEM_FAULT_KEEP: logs and ledger kept in {}", dir.keep().display());
        }
        // Then the namespaces go, with anything still inside them.
    }
}
