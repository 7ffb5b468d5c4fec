//! An unmodified Debian resource agent, `ocf:heartbeat:IPaddr2`, managing a
//! service address on a test host that is a network namespace.
//!
//! The host is a fresh namespace with `lo` up and a veth pair whose two ends
//! both live inside it, so no interface, address or packet (IPaddr2 sends
//! gratuitous ARPs) ever reaches the machine's own network. A one-node
//! cluster runs in it (`ip netns exec NS tandem agent`), and the CLI talks to
//! it from inside the namespace too: the namespace's loopback is its own, so
//! fixed ports cannot collide with anything else.
//!
//! Needs root, iproute2 and Debian's resource-agents package, and fails with
//! that message without them (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::namespaces::{COMMAND_DEADLINE, Namespace, ip, remove_leftovers};
use crate::support::{BIN, WAIT, node_in, stderr, write};

const IPADDR2: &str = "/usr/lib/ocf/resource.d/heartbeat/IPaddr2";
/// The interface that carries the service address, and its veth peer.
const IFACE: &str = "tnd0";
const PEER: &str = "tnd0p";
/// Ports on the namespace's own loopback.
const GRPC: &str = "127.0.0.1:7400";
const DNS: &str = "127.0.0.1:5300";
const NODE: &str = "host";
/// Names this test's namespaces (`tnd-ipaddr2-PID-N-host`).
const TAG: &str = "ipaddr2";

/// A network namespace as a test host, with the Tandem agent started in it.
/// Dropping it kills the agent, then the namespace goes (and with it every
/// process still in it and the veth pair), also when the test panics.
struct NetnsHost {
    dir: tempfile::TempDir,
    log: PathBuf,
    agent: Option<Child>,
    /// Declared last: dropped after the agent was killed.
    ns: Namespace,
}

impl NetnsHost {
    /// Creates the namespace: `lo` up, the veth pair up, `base` (with its
    /// prefix) on [`IFACE`].
    fn create(base: &str) -> NetnsHost {
        remove_leftovers(TAG);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let host = NetnsHost {
            ns: Namespace::create(TAG, "host"),
            dir,
            log,
            agent: None,
        };
        let ns = host.ns.name.clone();
        // The dummy link type is not available on every kernel (nor on the
        // machine this test was written on); veth is. Both ends stay inside.
        ip(&["-n", &ns, "link", "add", IFACE, "type", "veth", "peer", "name", PEER]);
        ip(&["-n", &ns, "addr", "add", base, "dev", IFACE]);
        ip(&["-n", &ns, "link", "set", PEER, "up"]);
        ip(&["-n", &ns, "link", "set", IFACE, "up"]);
        host
    }

    /// Writes a one-member configuration and starts the agent in the namespace.
    fn start_agent(&mut self) {
        let data = self.dir.path().join("data");
        let config = write(
            self.dir.path(),
            "host.toml",
            &format!(
                "[cluster]\nname = \"netns\"\n\n\
                 [node]\nname = \"{NODE}\"\nrole = \"member\"\ndata_dir = \"{}\"\n\
                 grpc_listen = \"{GRPC}\"\ndns_listen = \"{DNS}\"\n\n\
                 [[members]]\nname = \"{NODE}\"\naddress = \"{GRPC}\"\nrole = \"member\"\n\n\
                 [timing]\nheartbeat_interval = \"100ms\"\nelection_timeout = \"300ms\"\nlease = \"3s\"\n\n\
                 [log]\nlevel = \"debug\"\n",
                data.display()
            ),
        );
        let log = std::fs::File::create(&self.log).unwrap();
        // The child's PID is the agent's own; a plain-text log (no colour
        // codes) for the panic messages and the monitor count.
        let child = self
            .ns
            .command(BIN)
            .args(["agent", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    /// The CLI, run inside the namespace against the agent.
    fn cli(&self, args: &[&str], timeout: &str) -> Output {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--endpoint", GRPC, "--timeout", timeout]);
        self.ns
            .run(BIN, &all, COMMAND_DEADLINE)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// `tandem status --output json`, None while the agent does not answer.
    fn status(&self) -> Option<Value> {
        let out = self.cli(&["status", "--output", "json"], "1s");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Group `name` in the agent's status, None while it does not answer.
    fn group(&self, name: &str) -> Option<Value> {
        let s = self.status()?;
        s["groups"].as_array()?.iter().find(|g| g["name"] == name).cloned()
    }

    /// `tandem apply -f spec`, retried until it succeeds (the agent may still
    /// be electing itself); a refusal (exit 2) or [`WAIT`] fails the test.
    fn apply(&self, spec: &Path) {
        let start = Instant::now();
        loop {
            let out = self.cli(&["apply", "-f", spec.to_str().unwrap()], "5s");
            if out.status.success() {
                return;
            }
            if out.status.code() == Some(2) || start.elapsed() > WAIT {
                panic!(
                    "tandem apply -f {} failed: {}\n{}",
                    spec.display(),
                    stderr(&out),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until `f` returns Some; fails the test after [`WAIT`], or at
    /// once if the agent exited, with the status and the agent's log.
    fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(&NetnsHost) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Some(exit) = self.agent.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "the agent exited ({exit}) while waiting for {what}\n{}",
                    self.log_tail()
                );
            }
            if start.elapsed() > WAIT {
                panic!(
                    "timed out after {WAIT:?} waiting for {what}; status: {:#?}\n{}",
                    self.status(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many monitor actions of resource `address` succeeded, from the
    /// agent's debug log: a successful monitor changes nothing in the status.
    fn monitors_ok(&self) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("action done") && l.contains("resource=address action=\"monitor\" outcome=ok"))
            .count()
    }

    /// The IPv4 addresses of [`IFACE`] inside the namespace.
    fn iface_addresses(&self) -> String {
        ip(&["-n", &self.ns.name, "-4", "addr", "show", "dev", IFACE])
    }

    /// The last 40 lines of the agent's log, without the lines of the OCF
    /// agent's meta-data (hundreds of lines of XML, logged on every apply).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains("action=\"meta-data\"")).collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "--- agent log in {} (last 40 lines, meta-data left out) ---\n{tail}",
            self.ns.name
        )
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        // Then `ns` drops: whatever the agent left behind in the namespace
        // (an OCF action in progress, IPaddr2's send_arp) is killed with it.
    }
}

#[test]
fn ipaddr2_moves_a_service_address_inside_a_namespace_host() {
    assert!(
        Path::new(IPADDR2).exists() && nix::unistd::geteuid().is_root(),
        "needs root (network namespaces) and {IPADDR2} (apt-get install resource-agents)"
    );
    // 198.18.0.0/15 is reserved for benchmarking; the subnet varies by
    // process only to make a stray address easy to attribute.
    let subnet = format!("198.18.{}", std::process::id() % 256);
    let vip = format!("{subnet}.10");
    // "inet ADDR/24 " so that .10 never matches .100.
    let vip_inet = format!("inet {vip}/24 ");
    let mut host = NetnsHost::create(&format!("{subnet}.1/24"));
    host.start_agent();
    host.wait_for("the node to be coordinator and up", |h| {
        let s = h.status()?;
        let up = node_in(&s, NODE)?["state"] == "up";
        (s["coordinator"] == NODE && up).then_some(())
    });

    let spec = write(
        host.dir.path(),
        "spec.toml",
        &format!(
            "[[groups]]\nname = \"vip\"\nkind = \"exclusive\"\n\n\
             [[groups.resources]]\nname = \"address\"\nagent = \"ocf:heartbeat:IPaddr2\"\n\
             params = {{ ip = \"{vip}\", cidr_netmask = \"24\", nic = \"{IFACE}\" }}\n\
             monitor_interval = \"1s\"\n"
        ),
    );
    host.apply(&spec);
    let g = host.wait_for("group vip running", |h| {
        h.group("vip").filter(|g| g["state"] == "running")
    });
    assert_eq!(g["primary"], NODE, "{g}");
    let resources = g["resources"].as_array().unwrap();
    assert!(
        resources.len() == 1 && resources[0]["result"] == "ok",
        "{g}\n{}",
        host.log_tail()
    );
    let addrs = host.iface_addresses();
    assert!(
        addrs.contains(&vip_inet),
        "{vip} not on {IFACE} in {}: {addrs}\n{}",
        host.ns.name,
        host.log_tail()
    );
    let root = ip(&["-4", "addr", "show"]);
    assert!(
        !root.contains(&vip_inet),
        "{vip} leaked into the root namespace: {root}"
    );

    // IPaddr2's monitor, every second, finds the address it added: two
    // successful monitors, and the group still runs without a failure.
    host.wait_for("two successful IPaddr2 monitors", |h| {
        (h.monitors_ok() >= 2).then_some(())
    });
    let g = host.group("vip").unwrap();
    assert!(
        g["state"] == "running" && g["resources"][0]["failures"] == 0,
        "{g}\n{}",
        host.log_tail()
    );

    // An empty spec removes the group: IPaddr2's stop takes the address away.
    let empty = write(host.dir.path(), "empty.toml", "");
    host.apply(&empty);
    host.wait_for("group vip stopped", |h| {
        h.group("vip").filter(|g| g["state"] == "stopped")
    });
    let addrs = host.iface_addresses();
    assert!(
        !addrs.contains(&vip_inet),
        "{vip} still on {IFACE} after the group stopped: {addrs}\n{}",
        host.log_tail()
    );
    assert!(
        addrs.contains(&format!("inet {subnet}.1/24 ")),
        "the base address went too: {addrs}"
    );
}
