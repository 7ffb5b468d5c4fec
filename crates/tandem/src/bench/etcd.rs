//! `bench commit --vs-etcd`: a three-member etcd cluster (Debian's
//! `etcd-server`) on loopback beside Tandem's, written to through its gRPC
//! `KV/Put` on the leader, so the two small fsync'ed commits are timed on
//! the same machine in the same run. Only the two messages the benchmark
//! sends are declared here (etcd's own field numbers); nothing else of
//! etcd's API is needed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::Failure;

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    member_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(uint64, tag = "4")]
    leader: u64,
}

/// The etcd members, killed when dropped.
pub(super) struct Etcd {
    children: Vec<Child>,
    leader: tonic::client::Grpc<Channel>,
    pub(super) leader_name: String,
}

const MEMBERS: [(&str, &str); 3] = [("e1", "127.0.0.21"), ("e2", "127.0.0.22"), ("e3", "127.0.0.23")];
const CLIENT_PORT: u16 = 23790;
const PEER_PORT: u16 = 23800;

impl Etcd {
    /// Starts three members with their data under `dir` and waits (up to
    /// `timeout`) until one leads.
    pub(super) async fn start(dir: &Path, timeout: Duration) -> Result<Etcd, Failure> {
        let cluster = MEMBERS
            .iter()
            .map(|(n, ip)| format!("{n}=http://{ip}:{PEER_PORT}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (name, ip) in MEMBERS {
            let log = std::fs::File::create(dir.join(format!("etcd-{name}.log")))
                .map_err(|e| Failure::runtime(format!("{}: {e}", dir.display())))?;
            let child = Command::new("etcd")
                .args(["--name", name, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "tandem-bench", "--initial-cluster", &cluster])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd-{name}")))
                .arg(format!("--listen-client-urls=http://{ip}:{CLIENT_PORT}"))
                .arg(format!("--advertise-client-urls=http://{ip}:{CLIENT_PORT}"))
                .arg(format!("--listen-peer-urls=http://{ip}:{PEER_PORT}"))
                .arg(format!("--initial-advertise-peer-urls=http://{ip}:{PEER_PORT}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| {
                    Failure::runtime(format!(
                        "cannot run etcd ({e}); install Debian's etcd-server (apt-get install etcd-server)"
                    ))
                })?;
            children.push(child);
        }
        let mut etcd = Etcd {
            children,
            leader: tonic::client::Grpc::new(Channel::from_static("http://127.0.0.21:23790").connect_lazy()),
            leader_name: String::new(),
        };
        let start = Instant::now();
        loop {
            if let Some((name, client)) = find_leader().await {
                etcd.leader = client;
                etcd.leader_name = name;
                if etcd.put(b"warm-up").await.is_ok() {
                    return Ok(etcd);
                }
            }
            if start.elapsed() > timeout {
                return Err(Failure::runtime(format!(
                    "etcd elected no leader within {timeout:?}; see {}/etcd-*.log",
                    dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One `Put` of a small value on the leader: committed (fsync'ed) on a
    /// majority when it returns.
    pub(super) async fn put(&mut self, key: &[u8]) -> Result<Duration, Failure> {
        let started = Instant::now();
        self.leader
            .ready()
            .await
            .map_err(|e| Failure::runtime(format!("etcd: {e}")))?;
        let request = PutRequest {
            key: key.to_vec(),
            value: b"a small value, as an operator note would be".to_vec(),
        };
        let _: tonic::Response<PutResponse> = self
            .leader
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static("/etcdserverpb.KV/Put"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|e| Failure::runtime(format!("etcd put: {}", e.message())))?;
        Ok(started.elapsed())
    }
}

/// The member that says it leads, with a client of it.
async fn find_leader() -> Option<(String, tonic::client::Grpc<Channel>)> {
    for (name, ip) in MEMBERS {
        let channel = Channel::from_shared(format!("http://{ip}:{CLIENT_PORT}"))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .ok();
        let Some(channel) = channel else { continue };
        let mut client = tonic::client::Grpc::new(channel);
        if client.ready().await.is_err() {
            continue;
        }
        let status: Result<tonic::Response<StatusResponse>, _> = client
            .unary(
                tonic::Request::new(StatusRequest {}),
                PathAndQuery::from_static("/etcdserverpb.Maintenance/Status"),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        if let Ok(s) = status {
            let s = s.into_inner();
            if s.leader != 0 && s.header.is_some_and(|h| h.member_id == s.leader) {
                return Some((name.to_owned(), client));
            }
        }
    }
    None
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
