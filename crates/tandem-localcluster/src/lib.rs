//! A cluster of real `tandem` agent processes on this machine, on loopback
//! addresses: the one harness behind `tandem demo`, `tandem bench` and the
//! end-to-end tests (`tests/cluster`).
//!
//! A [`LocalCluster`] lives in one directory: it writes each node's
//! configuration (`DIR/NAME.toml`, data in `DIR/NAME-data`, the agent's log
//! appended to `DIR/NAME.log`), starts each agent as a child process, signals,
//! stops and kills it, and kills every agent still running when it is
//! dropped, also when a test panics. How a caller reads the nodes' status
//! (gRPC, the CLI's JSON) and how long it waits stay the caller's;
//! [`agreed_coordinator`] is the rule they share.

mod config;

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tandem_core::NodeRole;

use config::ConfigFile;
pub use config::{Member, free_port};

/// The demo's fence device, `DIR/fence-node.sh NODE` as an `exec` fence
/// device ([`LocalCluster::write_fence_device`]): a stand-in for a power
/// switch, fit ONLY for nodes that all run on one machine in this layout.
/// `off` SIGKILLs the node's agent, its descendants and every process of its
/// services' process groups, pid by pid, and succeeds only once none remains;
/// `status` answers off (exit 2) only when no process of the node remains.
pub const FENCE_DEVICE_SH: &str = include_str!("fence-node.sh");

/// One node: where it listens, its files, and its agent while it runs.
pub struct Node {
    pub name: String,
    /// Its gRPC address as the member list writes it (`IP:PORT`): what the
    /// CLI's `--endpoint` takes.
    pub address: String,
    /// Where its DNS responder listens.
    pub dns: SocketAddr,
    /// Where its HTTP endpoints and status page listen, if anywhere.
    pub http: Option<SocketAddr>,
    pub config: PathBuf,
    pub log: PathBuf,
    agent: Option<Child>,
}

impl Node {
    /// The process id of its agent, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Whether its agent was started and not since killed or stopped.
    pub fn running(&self) -> bool {
        self.agent.is_some()
    }
}

pub struct LocalCluster {
    /// Where the configurations, data directories and logs are.
    pub dir: PathBuf,
    /// The cluster's name in every configuration.
    pub cluster: String,
    pub nodes: Vec<Node>,
    /// The `tandem` binary the agents run.
    bin: PathBuf,
    /// Comment lines at the top of every configuration written.
    head: String,
    /// TOML tables at the end of every configuration written.
    tail: String,
    /// Every address handed out so far: the kernel may offer a port again
    /// as soon as it was released, and two listeners of one cluster on the
    /// same port would keep one agent from starting.
    given: BTreeSet<SocketAddr>,
}

/// `e` with `what` in front of its message.
fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl LocalCluster {
    /// An empty cluster called `cluster` in `dir` (which must exist), whose
    /// agents run `bin`.
    pub fn new(bin: impl Into<PathBuf>, dir: impl Into<PathBuf>, cluster: impl Into<String>) -> LocalCluster {
        LocalCluster {
            dir: dir.into(),
            cluster: cluster.into(),
            nodes: Vec::new(),
            bin: bin.into(),
            head: String::new(),
            tail: String::new(),
            given: BTreeSet::new(),
        }
    }

    /// Every configuration written from now on starts with `head`: comment
    /// lines, each ending in a newline.
    pub fn with_head(mut self, head: &str) -> LocalCluster {
        self.head = head.to_string();
        self
    }

    /// Every configuration written from now on ends with `tail`: TOML tables.
    pub fn with_tail(mut self, tail: &str) -> LocalCluster {
        self.tail = tail.to_string();
        self
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-data"))
    }

    /// Writes [`FENCE_DEVICE_SH`] to `DIR/fence-node.sh` and returns its
    /// path; a node's device is `["/bin/sh", PATH, NODE]`.
    pub fn write_fence_device(&self) -> io::Result<PathBuf> {
        let path = self.dir.join("fence-node.sh");
        std::fs::write(&path, FENCE_DEVICE_SH).map_err(|e| context(e, format!("cannot write {}", path.display())))?;
        Ok(path)
    }

    /// A free address on `ip` that this cluster has not handed out before.
    fn fresh_address(&mut self, ip: IpAddr) -> io::Result<SocketAddr> {
        for _ in 0..100 {
            let address = SocketAddr::new(ip, free_port(ip)?);
            if self.given.insert(address) {
                return Ok(address);
            }
        }
        Err(io::Error::other(format!(
            "cannot find a free loopback port on {ip} not given out already"
        )))
    }

    /// A member whose gRPC listens on a free port of `ip`.
    pub fn member(&mut self, name: &str, role: NodeRole, ip: impl Into<IpAddr>) -> io::Result<Member> {
        Ok(Member {
            name: name.to_string(),
            role,
            address: self.fresh_address(ip.into())?,
        })
    }

    /// Writes the configuration of `me` and adds it, not started: gRPC on
    /// its member address, DNS and HTTP on free ports of the same IP,
    /// `members` as the initial member list; `join` for a node that is to
    /// be added to the running cluster with `tandem members add`.
    pub fn write_node(&mut self, me: &Member, members: &[Member], join: bool) -> io::Result<()> {
        let ip = me.address.ip();
        let dns = self.fresh_address(ip)?;
        let http = self.fresh_address(ip)?;
        let file = ConfigFile {
            cluster: &self.cluster,
            me,
            join,
            data_dir: &self.data_dir(&me.name),
            dns,
            http,
            members,
        };
        let config = self.config_path(&me.name);
        std::fs::write(&config, file.text(&self.head, &self.tail))
            .map_err(|e| context(e, format!("cannot write {}", config.display())))?;
        self.add_written(&me.name, me.address.to_string(), dns, Some(http));
        Ok(())
    }

    /// Adds a node whose configuration `DIR/NAME.toml` is already written
    /// (by a run before this one), with the addresses it has there.
    pub fn add_written(&mut self, name: &str, address: String, dns: SocketAddr, http: Option<SocketAddr>) {
        self.nodes.push(Node {
            name: name.to_string(),
            address,
            dns,
            http,
            config: self.config_path(name),
            log: self.dir.join(format!("{name}.log")),
            agent: None,
        });
    }

    /// Appends `text` (TOML tables) to the configuration of node `name`.
    pub fn append_config(&self, name: &str, text: &str) -> io::Result<()> {
        let path = self.config_path(name);
        let mut config =
            std::fs::read_to_string(&path).map_err(|e| context(e, format!("cannot read {}", path.display())))?;
        config.push_str(text);
        std::fs::write(&path, config).map_err(|e| context(e, format!("cannot write {}", path.display())))
    }

    /// Appends `text` (TOML tables) to every configuration written so far
    /// and to every one written from now on.
    pub fn append_config_all(&mut self, text: &str) -> io::Result<()> {
        self.tail.push_str(text);
        for n in &self.nodes {
            self.append_config(&n.name, text)?;
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn node_mut(&mut self, name: &str) -> io::Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no local node {name}")))
    }

    fn agent(&self, name: &str) -> io::Result<&Child> {
        self.node(name)
            .and_then(|n| n.agent.as_ref())
            .ok_or_else(|| io::Error::other(format!("{name} is not running")))
    }

    /// The names of the nodes whose agent runs.
    pub fn running(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| n.name.clone())
            .collect()
    }

    /// Starts the agent of `name` (`tandem agent --config DIR/NAME.toml`),
    /// its output appended to its log; returns its pid.
    pub fn start(&mut self, name: &str) -> io::Result<u32> {
        let bin = self.bin.clone();
        let node = self.node_mut(name)?;
        if node.agent.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} already running"),
            ));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| context(e, format!("cannot open {}", node.log.display())))?;
        let log_err = log.try_clone()?;
        let agent = Command::new(bin)
            .arg("agent")
            .arg("--config")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| context(e, format!("cannot start the agent of {name}")))?;
        let pid = agent.id();
        node.agent = Some(agent);
        Ok(pid)
    }

    /// Starts every node's agent, in order.
    pub fn start_all(&mut self) -> io::Result<()> {
        for name in self.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>() {
            self.start(&name)?;
        }
        Ok(())
    }

    /// Sends `signal` to the agent of `name` (SIGSTOP and SIGCONT pause it).
    pub fn signal(&self, name: &str, signal: Signal) -> io::Result<()> {
        let pid = i32::try_from(self.agent(name)?.id()).map_err(io::Error::other)?;
        kill(Pid::from_raw(pid), signal).map_err(|e| context(e.into(), format!("cannot signal {name}")))
    }

    /// `kill -9` of the agent of `name`, as a crash or a power loss would,
    /// and waits until it is gone.
    pub fn kill9(&mut self, name: &str) -> io::Result<()> {
        let node = self.node_mut(name)?;
        let mut agent = node
            .agent
            .take()
            .ok_or_else(|| io::Error::other(format!("{name} is not running")))?;
        agent.kill().map_err(|e| context(e, format!("cannot kill {name}")))?;
        agent.wait()?;
        Ok(())
    }

    /// Waits up to `within` for the agent of `name` to exit (after a
    /// SIGTERM, say): its exit status, or `None` when it was still running,
    /// in which case it is killed.
    pub fn wait_exit(&mut self, name: &str, within: Duration) -> io::Result<Option<ExitStatus>> {
        let node = self.node_mut(name)?;
        let mut agent = node
            .agent
            .take()
            .ok_or_else(|| io::Error::other(format!("{name} is not running")))?;
        let start = Instant::now();
        loop {
            if let Some(status) = agent.try_wait()? {
                return Ok(Some(status));
            }
            if start.elapsed() > within {
                let _ = agent.kill();
                let _ = agent.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops every running agent with SIGTERM and waits for each (up to
    /// `grace`, then SIGKILL).
    pub fn stop_all(&mut self, grace: Duration) {
        let running = self.running();
        for name in &running {
            let _ = self.signal(name, Signal::SIGTERM);
        }
        for name in &running {
            let _ = self.wait_exit(name, grace);
        }
    }
}

impl Drop for LocalCluster {
    /// No agent outlives its cluster: a test that fails leaves none behind.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut agent) = node.agent.take() {
                let _ = agent.kill();
                let _ = agent.wait();
            }
        }
    }
}

/// The coordinator every node's answer names, with the term, when every node
/// answered (`Some((coordinator, term))`) and all name the same coordinator
/// in the same term; `None` otherwise.
pub fn agreed_coordinator<'a>(answers: impl IntoIterator<Item = Option<(&'a str, u64)>>) -> Option<(String, u64)> {
    let mut agreed: Option<(&str, u64)> = None;
    for answer in answers {
        let (coordinator, term) = answer?;
        match agreed {
            None => agreed = Some((coordinator, term)),
            Some(a) if a == (coordinator, term) => {}
            Some(_) => return None,
        }
    }
    agreed.map(|(c, t)| (c.to_string(), t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_never_hands_out_one_address_twice() -> io::Result<()> {
        let mut c = LocalCluster::new("tandem", std::env::temp_dir(), "t");
        let mut seen = BTreeSet::new();
        for i in 0..200 {
            let m = c.member(&format!("n{i}"), NodeRole::Member, std::net::Ipv4Addr::LOCALHOST)?;
            assert!(seen.insert(m.address), "{} given twice", m.address);
        }
        Ok(())
    }

    #[test]
    fn a_coordinator_is_agreed_only_when_every_node_names_it_in_one_term() {
        assert_eq!(
            agreed_coordinator([Some(("site-a", 3)), Some(("site-a", 3))]),
            Some(("site-a".to_string(), 3))
        );
        assert_eq!(agreed_coordinator([Some(("site-a", 3)), None]), None);
        assert_eq!(agreed_coordinator([Some(("site-a", 3)), Some(("site-b", 3))]), None);
        assert_eq!(agreed_coordinator([Some(("site-a", 3)), Some(("site-a", 4))]), None);
        assert_eq!(agreed_coordinator([]), None);
    }
}
