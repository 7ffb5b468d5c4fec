//! The local cluster of `tandem demo` and `tandem bench`: three nodes on
//! 127.0.0.11-13, real agents run by a [`LocalCluster`], watched over gRPC;
//! and the demo's service and fence device.

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tandem_core::NodeRole;
use tandem_localcluster::{LocalCluster, free_port};
use tandem_proto::v1 as pb;

use crate::Failure;

/// What the harness could not do, as a failure of the command.
fn failure(e: io::Error) -> Failure {
    Failure::runtime(e.to_string())
}

/// The comment at the top of every configuration the demo writes.
const CONFIG_HEAD: &str = "# Written by `tandem demo`: a local cluster on loopback, for trying Tandem out.\n\
                           # See deploy/examples/ for an annotated production configuration.\n\n";

/// Three agents on loopback (`NAMES`, node `i` on [`DemoCluster::ip`]),
/// with the same timing defaults as production.
pub struct DemoCluster {
    local: LocalCluster,
    /// One lazily connecting channel per node, reused by every poll.
    channels: tandem_raft::network::Channels,
}

/// The nodes, their files and addresses. Starting and stopping agents goes
/// through [`DemoCluster`]'s own methods.
impl Deref for DemoCluster {
    type Target = LocalCluster;

    fn deref(&self) -> &LocalCluster {
        &self.local
    }
}

impl DemoCluster {
    /// Node `i` lives on 127.0.0.(11 + i): each node, and each node's
    /// services, get an address of their own, as on separate machines.
    pub fn ip(i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(127, 0, 0, 11 + u8::try_from(i).unwrap_or(0))
    }

    pub const NAMES: [(&'static str, NodeRole); 3] = [
        ("site-a", NodeRole::Member),
        ("site-b", NodeRole::Member),
        ("witness", NodeRole::Witness),
    ];

    /// Writes `DIR/site-a.toml`, `DIR/site-b.toml` and `DIR/witness.toml`
    /// with free loopback ports, or reuses them when they are already there
    /// (the cluster's membership lives in its data, so the addresses must stay).
    pub fn prepare(dir: &Path, cluster: &str) -> Result<(DemoCluster, bool), Failure> {
        let dir = std::path::absolute(dir).map_err(|e| Failure::input(format!("{}: {e}", dir.display())))?;
        std::fs::create_dir_all(&dir).map_err(|e| Failure::runtime(format!("cannot create {}: {e}", dir.display())))?;
        let bin =
            std::env::current_exe().map_err(|e| Failure::runtime(format!("cannot find the tandem binary: {e}")))?;
        let mut local = LocalCluster::new(bin, dir, cluster).with_head(CONFIG_HEAD);
        let reused = Self::NAMES.iter().all(|(n, _)| local.config_path(n).exists());
        if reused {
            for (name, _) in Self::NAMES {
                let config = crate::agent::load_config(&local.config_path(name))?;
                local.add_written(name, config.node.address.clone(), config.dns_listen, config.http_listen);
            }
        } else {
            let members = Self::NAMES
                .iter()
                .enumerate()
                .map(|(i, (name, role))| local.member(name, *role, Self::ip(i)))
                .collect::<io::Result<Vec<_>>>()
                .map_err(failure)?;
            for m in &members {
                local.write_node(m, &members, false).map_err(failure)?;
            }
        }
        let cluster = DemoCluster {
            local,
            channels: Default::default(),
        };
        Ok((cluster, reused))
    }

    /// Starts the agent of `name` as a child process, its log appended to `DIR/NAME.log`.
    pub fn start(&mut self, name: &str) -> Result<u32, Failure> {
        self.local.start(name).map_err(failure)
    }

    pub fn start_all(&mut self) -> Result<(), Failure> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for n in names {
            self.start(&n)?;
        }
        Ok(())
    }

    /// `kill -9` of the agent of `name`, as a crash or power loss would.
    pub async fn kill9(&mut self, name: &str) -> Result<(), Failure> {
        tokio::task::block_in_place(|| self.local.kill9(name)).map_err(failure)
    }

    /// A clean stop of the agent of `name` (SIGTERM), waiting for it to exit
    /// (up to `grace`, then SIGKILL).
    pub async fn sigterm(&mut self, name: &str, grace: Duration) -> Result<(), Failure> {
        tokio::task::block_in_place(|| {
            self.local.signal(name, nix::sys::signal::Signal::SIGTERM)?;
            if self.local.wait_exit(name, grace)?.is_none() {
                self.local.kill9(name)?;
            }
            Ok(())
        })
        .map_err(failure)
    }

    /// Stops every agent with SIGTERM and waits for it (up to `grace`,
    /// then SIGKILL).
    pub async fn stop_all(&mut self, grace: Duration) {
        tokio::task::block_in_place(|| self.local.stop_all(grace));
    }

    /// The status each running node reports now (`None` where it did not answer).
    pub async fn statuses(&self, timeout: Duration) -> Vec<(String, Option<pb::ClusterStatus>)> {
        let asks = self.nodes.iter().filter(|n| n.running()).map(|n| async move {
            let status = async {
                let mut c = pb::tandem_client::TandemClient::new(self.channels.get(&n.address).ok()?);
                c.get_status(pb::GetStatusRequest {}).await.ok().map(|r| r.into_inner())
            };
            (
                n.name.clone(),
                tokio::time::timeout(timeout, status).await.ok().flatten(),
            )
        });
        futures::future::join_all(asks).await
    }

    /// Polls the running nodes until `done` returns a value, or `timeout`.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[(String, Option<pb::ClusterStatus>)]) -> Option<T>,
    ) -> Result<T, Failure> {
        let start = Instant::now();
        loop {
            let statuses = self.statuses(Duration::from_millis(500)).await;
            if let Some(v) = done(&statuses) {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                return Err(Failure::runtime(format!(
                    "timed out after {} waiting for {what}; agent logs are in {}",
                    humantime::format_duration(timeout),
                    self.dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP: what ends `demo` and `bench`, which
/// must then stop the agents they started.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
        _ = int.recv() => "SIGINT",
    }
}

/// The coordinator all answering nodes agree on, with the term, if they do.
pub fn agreed_coordinator(statuses: &[(String, Option<pb::ClusterStatus>)]) -> Option<(String, u64)> {
    tandem_localcluster::agreed_coordinator(
        statuses
            .iter()
            .map(|(_, s)| s.as_ref().and_then(|s| Some((s.coordinator.as_deref()?, s.term)))),
    )
}

/// The demo's service: a tiny HTTP server that answers with the name of the
/// node that runs it and its epoch, on that node's own loopback address.
const WEB_PY: &str = r#"# Written by `tandem demo`: a tiny HTTP service that says which node runs it.
import http.server, os
node = os.environ.get("TANDEM_NODE", "?")
epoch = os.environ.get("TANDEM_EPOCH", "?")
addresses = ADDRESSES
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{node} (epoch {epoch})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((addresses[node], PORT), Handler).serve_forever()
"#;

/// The demo's spec: group `web`, preferring site-a, failing over to site-b.
pub struct DemoService {
    pub spec: PathBuf,
    pub port: u16,
}

impl DemoService {
    /// Writes `DIR/spec.toml` and `DIR/web.py`, or reuses them.
    pub fn prepare(dir: &Path) -> Result<DemoService, Failure> {
        let spec = dir.join("spec.toml");
        let script = dir.join("web.py");
        let write = |p: &Path, text: &str| {
            std::fs::write(p, text).map_err(|e| Failure::runtime(format!("cannot write {}: {e}", p.display())))
        };
        // The demo's fence device (tandem_localcluster::FENCE_DEVICE_SH), written
        // anew every time: a directory of an older demo gets the current one.
        let fence = dir.join("fence-node.sh");
        write(&fence, tandem_localcluster::FENCE_DEVICE_SH)?;
        if let Ok(text) = std::fs::read_to_string(&script)
            && let Some(port) = text
                .lines()
                .find_map(|l| l.strip_prefix("# port "))
                .and_then(|p| p.trim().parse().ok())
            && spec.exists()
        {
            return Ok(DemoService { spec, port });
        }
        let port = free_port(DemoCluster::ip(0)).map_err(failure)?;
        let addresses = format!(
            "{{\"site-a\": \"{}\", \"site-b\": \"{}\"}}",
            DemoCluster::ip(0),
            DemoCluster::ip(1)
        );
        let py = WEB_PY
            .replace("ADDRESSES", &addresses)
            .replace("PORT", &port.to_string());
        write(&script, &format!("{py}# port {port}\n"))?;
        let text = format!(
            "# Written by `tandem demo`: the service group of the demo cluster.\n\
             # Apply changes with: tandem apply -f {spec}\n\n\
             # Every node answers DNS for this zone: web.demo.tandem. is the\n\
             # address of the node that runs web now.\n\
             [dns]\n\
             zone = \"demo.tandem.\"\n\n\
             [[groups]]\n\
             name = \"web\"\n\
             kind = \"exclusive\"\n\
             prefer = [{{ node = \"site-a\", score = 100 }}, {{ node = \"site-b\", score = 50 }}]\n\
             fail_back = false\n\n\
             \x20 [[groups.resources]]\n\
             \x20 name = \"http\"\n\
             \x20 agent = \"exec\"\n\
             \x20 command = \"python3\"\n\
             \x20 args = [\"-u\", {script:?}]\n\
             \x20 monitor_interval = \"1s\"\n\n\
             # Each member has a fence device. fence-node.sh is a stand-in for a\n\
             # power switch, fit ONLY for this single-machine demo: \"off\" kills the\n\
             # node's agent and its services, \"status\" says off only once none of\n\
             # them remains (Tandem counts a fence only when status confirms it).\n\
             # In production: fence_ipmilan, fence_apc... (off must power the node\n\
             # off or isolate it; status must report the real power state).\n\
             [fencing.devices.switch-a]\n\
             agent = \"exec\"\n\
             command = [\"/bin/sh\", {fence:?}, \"site-a\"]\n\
             timeout = \"10s\"\n\n\
             [fencing.devices.switch-b]\n\
             agent = \"exec\"\n\
             command = [\"/bin/sh\", {fence:?}, \"site-b\"]\n\
             timeout = \"10s\"\n\n\
             [fencing.nodes.site-a]\n\
             levels = [[\"switch-a\"]]\n\n\
             [fencing.nodes.site-b]\n\
             levels = [[\"switch-b\"]]\n",
            spec = spec.display(),
            script = script.display().to_string(),
            fence = fence.display().to_string(),
        );
        write(&spec, &text)?;
        Ok(DemoService { spec, port })
    }

    /// Asks the service on node `i`'s address; `None` if nothing answers.
    pub fn ask(&self, i: usize) -> Option<String> {
        use std::io::{Read, Write};
        let addr = SocketAddr::from((DemoCluster::ip(i), self.port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_string())
    }
}

impl DemoCluster {
    /// The pid of the demo service on `node`, from its pid file.
    pub fn service_pid(&self, node: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir(node).join("run/web/http.pid")).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }
}
