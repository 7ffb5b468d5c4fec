//! A spec of thousands of resources is one log entry of megabytes. It must
//! replicate to every node: three real Raft nodes (redb stores, gRPC on
//! loopback, Tandem's default Raft timing: 50 ms heartbeats, the append
//! deadline openraft derives from them), the entry committed and applied
//! everywhere, and small writes going on after it. Whether the leader keeps
//! its quorum throughout is printed (elections, RPC failures), not yet
//! asserted: on a loaded 2-core machine it does not always hold (open in
//! issue 12).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tandem_core::NodeInfo;
use tandem_core::state::Command;
use tandem_proto::v1::peer_server::{Peer, PeerServer};
use tandem_proto::v1::{HeartbeatReply, HeartbeatRequest, ProbeReply, ProbeRequest, RaftMessage, ReportReply};
use tandem_raft::network::{Channels, Inbound, InboundError};
use tandem_raft::store::{Identity, Store};
use tandem_raft::{Consensus, ConsensusConfig};
use tonic::{Request, Response, Status};

const CLUSTER: &str = "large";

/// The Raft half of `tandem.v1.Peer`, as `tandem-api` serves it.
struct RaftPeer(Inbound);

fn status(e: InboundError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl Peer for RaftPeer {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0
            .append_entries(req.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0.vote(req.get_ref()).await.map(Response::new).map_err(status)
    }
    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0.pre_vote(req.get_ref()).await.map(Response::new).map_err(status)
    }
    async fn full_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0
            .full_snapshot(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn transfer_leader(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.0
            .transfer_leader(req.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }
    async fn heartbeat(&self, _: Request<HeartbeatRequest>) -> Result<Response<HeartbeatReply>, Status> {
        Err(Status::unimplemented("no leases here"))
    }
    async fn report(&self, _: Request<RaftMessage>) -> Result<Response<ReportReply>, Status> {
        Err(Status::unimplemented("no reports here"))
    }
    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeReply>, Status> {
        Err(Status::unimplemented("no probes here"))
    }
}

fn config() -> ConsensusConfig {
    ConsensusConfig {
        cluster: CLUSTER.into(),
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(150),
        campaigns: true,
        install_snapshot_timeout: Duration::from_secs(10),
        snapshot_after_entries: 5000,
        retry_after: Duration::from_millis(100),
    }
}

/// A spec of `resources` resources in groups of 10, and its source.
fn large_spec(resources: usize) -> (tandem_core::spec::Spec, String) {
    let mut text = String::new();
    for g in 0..resources / 10 {
        let _ = writeln!(
            text,
            "[[groups]]\nname = \"group-{g}\"\navoid = [\"n1\", \"n2\", \"n3\"]"
        );
        for r in 0..10 {
            let _ = writeln!(
                text,
                "[[groups.resources]]\nname = \"r{r}\"\nagent = \"exec\"\nstart = \"/bin/true start {g} {r}\"\n\
                 stop = \"/bin/true stop {g} {r}\"\nmonitor = \"/bin/true monitor {g} {r}\""
            );
        }
    }
    let nodes: Vec<NodeInfo> = (1..=3)
        .map(|i| NodeInfo {
            name: format!("n{i}"),
            address: "127.0.0.1:1".into(),
            role: Default::default(),
        })
        .collect();
    (
        tandem_core::spec::Spec::parse(&text, "large.toml", &nodes).unwrap(),
        text,
    )
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..1200 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_of_thousands_of_resources_replicates_everywhere_and_writes_go_on() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for i in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        members.insert(
            i,
            NodeInfo {
                name: format!("n{i}"),
                address: listener.local_addr().unwrap().to_string(),
                role: Default::default(),
            },
        );
        listeners.push(listener);
    }
    let mut nodes = Vec::new();
    for (i, listener) in (1..=3u64).zip(listeners) {
        let identity = Identity {
            cluster: CLUSTER.into(),
            node_name: format!("n{i}"),
            node_id: i,
        };
        let store = Store::open(dirs[i as usize - 1].path(), &identity).unwrap();
        let sm = store.state_machine().await.unwrap();
        let raft = Consensus::start(i, &config(), Channels::default(), &store, sm)
            .await
            .unwrap();
        let peer = PeerServer::new(RaftPeer(raft.inbound()))
            .max_decoding_message_size(tandem_raft::network::MAX_MESSAGE)
            .max_encoding_message_size(tandem_raft::network::MAX_MESSAGE);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(peer)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        nodes.push(raft);
    }
    for n in &nodes {
        n.initialize(members.clone()).await.unwrap();
    }
    // Settled: every node follows one leader, and a small write commits.
    let leader = wait_for("every node following one leader", || {
        let ids: Vec<_> = nodes.iter().map(|n| n.view().coordinator().map(|(id, _)| id)).collect();
        let first = ids[0]?;
        ids.iter().all(|id| *id == Some(first)).then_some(first as usize - 1)
    })
    .await;
    let small = |k: u64| Command::Note {
        message: format!("small write {k}"),
        actor: "test".into(),
        at_unix_ms: k,
    };
    let mut settled = false;
    for _ in 0..100 {
        if nodes[leader].write(small(0)).await.is_ok() {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "the first small write never committed");
    let term = nodes[leader].term();
    let failures = |method: &str| -> Vec<u64> { nodes.iter().map(|n| n.rpc_failures().of(method)).collect() };
    let methods = ["append_entries", "vote", "pre_vote", "heartbeat"];
    let before: Vec<Vec<u64>> = methods.iter().map(|m| failures(m)).collect();

    let (spec, source) = large_spec(5000);
    let command = Command::ApplySpec {
        spec,
        source,
        expected_version: 0,
        summary: Vec::new(),
        actor: "test".into(),
        at_unix_ms: 1,
    };
    let bytes = serde_json::to_vec(&command).unwrap().len();
    assert!(bytes > 1024 * 1024, "the entry is only {bytes} bytes");
    let written = match nodes[leader].write(command).await {
        Ok(w) => w,
        Err(e) => {
            let seen: Vec<_> = nodes.iter().map(|n| (n.term(), n.rpc_failures().snapshot())).collect();
            panic!("the write failed: {e:?}; terms and RPC failures per node: {seen:?}");
        }
    };
    assert!(written.applied.rejected.is_none(), "{written:?}");
    wait_for("every node applied the spec", || {
        nodes
            .iter()
            .all(|n| n.progress().last_applied >= Some(written.index))
            .then_some(())
    })
    .await;
    // Small writes go on, through whichever node leads now.
    for k in 1..=20 {
        let mut tries = 0;
        loop {
            let leading = nodes.iter().find(|n| n.is_leader());
            match leading {
                Some(n) if n.write(small(k)).await.is_ok() => break,
                _ => {
                    tries += 1;
                    assert!(tries < 200, "small write {k} found no leader to take it within 10 s");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    // Known open (issue 12, ARCHITECTURE.md's known limits): on a loaded
    // 2-core machine, heartbeats can time out while the followers decode,
    // store and apply the entry, and the leader may step down. What is
    // asserted above (the entry commits and applies everywhere, and writes go
    // on) holds; elections and failed RPCs are printed, not asserted, until
    // that is fixed.
    let all: Vec<_> = nodes.iter().map(|n| n.rpc_failures().snapshot()).collect();
    let terms: Vec<u64> = nodes.iter().map(|n| n.term()).collect();
    eprintln!("terms before {term}, after {terms:?}; RPC failures per node: {all:?}");
    for (m, method) in methods.iter().enumerate() {
        eprintln!(
            "{method} failures per node: {:?} (before: {:?})",
            failures(method),
            before[m]
        );
    }
    eprintln!("the spec's entry: {bytes} bytes of JSON");
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}
