//! Raft RPCs over gRPC, both ends.
//!
//! Requests and replies are openraft's own types, JSON-encoded inside a
//! `tandem.v1.RaftMessage` that also names the cluster, so a node never
//! accepts Raft traffic from another cluster; a snapshot's state travels
//! beside the JSON, in the message's `payload`. The reply carries
//! `Result<Response, String>`: an error means the peer's Raft stopped, which
//! openraft hears as the peer being unreachable.
//!
//! One tonic `Channel` is kept per peer (openraft asks for a new client on
//! every election round and replication restart) and every call is bounded by
//! openraft's own deadline (a heartbeat interval for appends), extended for a
//! large message by [`LARGE_EXTRA_PER_MIB`] per MiB past [`LARGE`]: a
//! multi-MB entry (a spec of thousands of resources) cannot cross in 50 ms,
//! and timing it out again and again lost the quorum. Appends that carry
//! entries are encoded on a blocking thread, and large ones decoded on one,
//! so JSON of megabytes never stalls the runtime's workers (inline on a
//! current-thread runtime, the simulator's, whose runs must depend on the
//! seed alone). Transport
//! failures are reported as `RPCError::Unreachable`, the only error after
//! which openraft backs off instead of retrying at once; every failure is
//! counted by method and cause ([`RpcFailures`]).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tandem_core::NodeInfo;
use tandem_proto::v1::peer_client::PeerClient;
use tandem_proto::v1::{HeartbeatReply, HeartbeatRequest, RaftMessage};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::store::SnapshotData;
use crate::{OpenRaft, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// The largest gRPC message between peers, both ways.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A Raft message larger than this gets a longer deadline, and is decoded
/// on a blocking thread.
pub const LARGE: usize = 64 * 1024;

/// What a large message adds to its deadline per MiB (or part of one).
pub const LARGE_EXTRA_PER_MIB: Duration = Duration::from_secs(4);

/// The shortest deadline of an append that carries entries: the follower
/// answers only once they are fsync'ed, which a busy disk does not do
/// within openraft's append deadline (a heartbeat interval); timing out
/// then only sends the same entries again.
pub const APPEND_WITH_ENTRIES_AT_LEAST: Duration = Duration::from_secs(1);

/// The deadline of a call of `bytes`: openraft's `ttl`, plus
/// [`LARGE_EXTRA_PER_MIB`] per started MiB past [`LARGE`].
pub fn deadline(ttl: Duration, bytes: usize) -> Duration {
    if bytes <= LARGE {
        return ttl;
    }
    let mib = u32::try_from(bytes.div_ceil(1024 * 1024)).unwrap_or(u32::MAX);
    ttl.saturating_add(LARGE_EXTRA_PER_MIB.saturating_mul(mib))
}

/// Raft RPCs to peers that failed, by method (`heartbeat` for an append
/// without entries) and cause (`unreachable`, `timeout`, `refused`,
/// `stopped`, `error`); shared by every connection of a node, read by
/// `/metrics` (`tandem_raft_rpc_failures_total`).
#[derive(Default, Debug)]
pub struct RpcFailures {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl RpcFailures {
    fn count(&self, method: RaftMethod, cause: &'static str) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((method.name(), cause)).or_default() += 1;
    }

    /// (method, cause, count) of every kind of failure seen so far.
    pub fn snapshot(&self) -> Vec<(String, String, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .map(|((method, cause), n)| (method.to_string(), cause.to_string(), *n))
            .collect()
    }

    /// Failures of every method and cause.
    pub fn total(&self) -> u64 {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    /// Failures of `method` (`heartbeat`, `append_entries`, `vote`, ...), any cause.
    pub fn of(&self, method: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().filter(|((m, _), _)| *m == method).map(|(_, n)| n).sum()
    }
}

/// A lazily connecting channel to `address`, with the timeouts Tandem uses
/// for every node-to-node and operator connection; over TLS (`https`) when
/// `tls` is given.
pub fn channel(address: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match tls {
        None => Endpoint::from_shared(format!("http://{address}"))?,
        Some(tls) => Endpoint::from_shared(format!("https://{address}"))?.tls_config(tls.clone())?,
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy())
}

/// Caches one channel per peer address. Every connection a node makes to
/// another (Raft, heartbeats and their relays, reports, forwarded writes)
/// comes from here, so with TLS configured all of it is TLS with the node's
/// own certificate as its client identity.
///
/// In the deterministic simulator (`tandem-sim`) a [`PeerTransport`] carries
/// the same messages instead, and no channel is ever made.
#[derive(Clone, Default)]
pub struct Channels {
    by_address: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
    transport: Option<Arc<dyn PeerTransport>>,
}

/// A node-to-node call as a simulated network carries it: the very
/// messages the `tandem.v1.Peer` service would get.
#[derive(Debug, Clone)]
pub enum PeerCall {
    Raft(RaftMethod, RaftMessage),
    Heartbeat(HeartbeatRequest),
    Report(RaftMessage),
}

/// The answer to a [`PeerCall`] of the same kind.
#[derive(Debug, Clone)]
pub enum PeerAnswer {
    Raft(RaftMessage),
    Heartbeat(HeartbeatReply),
    Report,
}

/// The future of a [`PeerTransport`] call.
pub type PeerFuture = std::pin::Pin<Box<dyn Future<Output = Result<PeerAnswer, tonic::Status>> + Send>>;

/// Carries node-to-node calls instead of gRPC (the simulator's network).
/// Errors are gRPC statuses, so every caller maps them exactly as it maps
/// a real peer's.
pub trait PeerTransport: Send + Sync + 'static {
    /// Delivers `call` to the node at `address`, within `timeout`.
    fn call(&self, address: &str, call: PeerCall, timeout: Duration) -> PeerFuture;
}

impl Channels {
    /// Channels over TLS: `tls` holds the CA to verify peers against and
    /// this node's certificate and key.
    pub fn with_tls(tls: ClientTlsConfig) -> Self {
        Channels {
            by_address: Default::default(),
            tls: Some(tls),
            transport: None,
        }
    }

    /// Every call goes through `transport` (the simulator's network).
    pub fn simulated(transport: Arc<dyn PeerTransport>) -> Self {
        Channels {
            by_address: Default::default(),
            tls: None,
            transport: Some(transport),
        }
    }

    /// The simulated transport, when there is one.
    pub fn transport(&self) -> Option<&Arc<dyn PeerTransport>> {
        self.transport.as_ref()
    }

    /// The channel to `address`, created on first use.
    pub fn get(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(address) {
            return Ok(c.clone());
        }
        let c = channel(address, self.tls.as_ref())?;
        map.insert(address.to_string(), c.clone());
        Ok(c)
    }
}

/// Creates a [`PeerConnection`] for each target openraft asks for.
#[derive(Clone)]
pub struct Network {
    cluster: String,
    channels: Channels,
    retry_after: Duration,
    failures: Arc<RpcFailures>,
}

impl Network {
    /// `retry_after`: how long openraft waits before it calls an unreachable
    /// peer again. openraft's default is 500 ms; a restarted node then lags
    /// that long before it catches up, and a node that lags cannot be elected.
    pub fn new(cluster: String, channels: Channels, retry_after: Duration, failures: Arc<RpcFailures>) -> Self {
        Network {
            cluster,
            channels,
            retry_after,
            failures,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> PeerConnection {
        PeerConnection {
            cluster: self.cluster.clone(),
            retry_after: self.retry_after,
            failures: self.failures.clone(),
            target,
            address: node.address.clone(),
            transport: self.channels.transport().cloned(),
            client: self
                .channels
                .get(&node.address)
                .map(|c| {
                    PeerClient::new(c)
                        .max_decoding_message_size(MAX_MESSAGE)
                        .max_encoding_message_size(MAX_MESSAGE)
                })
                .map_err(|e| e.to_string()),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerConnection {
    cluster: String,
    retry_after: Duration,
    failures: Arc<RpcFailures>,
    target: u64,
    address: String,
    transport: Option<Arc<dyn PeerTransport>>,
    /// An address that cannot even form a URI is kept as an error and
    /// reported on every call, so the node stays up and says why.
    client: Result<PeerClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

/// What a peer answers: Raft's reply, or why its Raft could not handle the
/// request (it stopped); the latter counts as unreachable.
type Reply<T> = Result<T, String>;

/// A whole snapshot as it travels: the sender's vote and the snapshot's
/// meta in the JSON, the state itself in the message's `payload`.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
}

impl PeerConnection {
    /// Encodes `req` and calls `method`.
    async fn call<Req, Resp>(
        &mut self,
        method: RaftMethod,
        req: &Req,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let json = match serde_json::to_vec(req) {
            Ok(json) => json,
            Err(e) => {
                self.failures.count(method, "error");
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        self.call_encoded(method, json, payload, ttl).await
    }

    /// Calls `method` with a request already encoded, within `ttl` (longer
    /// for a large message: [`deadline`]).
    async fn call_encoded<Resp>(
        &mut self,
        method: RaftMethod,
        json: Vec<u8>,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Resp: DeserializeOwned,
    {
        let target = self.target;
        let failures = self.failures.clone();
        let timeout = deadline(ttl, json.len() + payload.len());
        let message = RaftMessage {
            cluster: self.cluster.clone(),
            json,
            payload,
        };
        let reply = if let Some(transport) = &self.transport {
            match transport
                .call(&self.address, PeerCall::Raft(method, message), timeout)
                .await
            {
                Ok(PeerAnswer::Raft(m)) => Ok(m),
                Ok(_) => Err(tonic::Status::internal("a reply of another kind")),
                Err(s) => Err(s),
            }
        } else {
            let client = match &mut self.client {
                Ok(c) => c,
                Err(e) => {
                    failures.count(method, "unreachable");
                    return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e.clone()))));
                }
            };
            let mut request = tonic::Request::new(message);
            request.set_timeout(timeout);
            match method {
                RaftMethod::Heartbeat | RaftMethod::AppendEntries => client.append_entries(request).await,
                RaftMethod::Vote => client.vote(request).await,
                RaftMethod::PreVote => client.pre_vote(request).await,
                RaftMethod::FullSnapshot => client.full_snapshot(request).await,
                RaftMethod::TransferLeader => client.transfer_leader(request).await,
            }
            .map(tonic::Response::into_inner)
        };
        let unreachable = |message: String| {
            RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                "{} to node {target}: {message}",
                method.name()
            ))))
        };
        let reply = reply.map_err(|status| {
            let cause = match status.code() {
                tonic::Code::Unavailable => "unreachable",
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "timeout",
                tonic::Code::Unimplemented | tonic::Code::FailedPrecondition => "refused",
                _ => "error",
            };
            failures.count(method, cause);
            match status.code() {
                // Down or slow, a peer of an older release that lacks this
                // method, or one that refuses the message (another cluster):
                // calling it again at once would not help.
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unimplemented
                | tonic::Code::FailedPrecondition => unreachable(status.message().to_owned()),
                _ => RPCError::Network(NetworkError::new(&TransportError(format!(
                    "{} to node {target}: {}",
                    method.name(),
                    status.message()
                )))),
            }
        })?;
        let decoded: Reply<Resp> = serde_json::from_slice(&reply.json).map_err(|e| {
            failures.count(method, "error");
            RPCError::Network(NetworkError::new(&e))
        })?;
        decoded.map_err(|stopped| {
            failures.count(method, "stopped");
            unreachable(format!("its Raft stopped: {stopped}"))
        })
    }
}

/// The Raft RPCs of `tandem.v1.Peer`, and the heartbeat (an append without
/// entries, counted apart among failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaftMethod {
    /// An append without entries: openraft's heartbeat.
    Heartbeat,
    AppendEntries,
    Vote,
    PreVote,
    FullSnapshot,
    TransferLeader,
}

impl RaftMethod {
    pub fn name(self) -> &'static str {
        match self {
            RaftMethod::Heartbeat => "heartbeat",
            RaftMethod::AppendEntries => "append_entries",
            RaftMethod::Vote => "vote",
            RaftMethod::PreVote => "pre_vote",
            RaftMethod::FullSnapshot => "full_snapshot",
            RaftMethod::TransferLeader => "transfer_leader",
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if rpc.entries.is_empty() {
            return self
                .call(RaftMethod::Heartbeat, &rpc, Vec::new(), option.hard_ttl())
                .await;
        }
        // Entries may be megabytes of JSON (a large spec): off the runtime,
        // but inline in the simulator (a blocking thread's completion order
        // is not decided by the seed).
        let encoded = if crate::store::inline() {
            serde_json::to_vec(&rpc).map_err(|e| TransportError(e.to_string()))
        } else {
            match tokio::task::spawn_blocking(move || serde_json::to_vec(&rpc)).await {
                Ok(r) => r.map_err(|e| TransportError(e.to_string())),
                Err(e) => Err(TransportError(e.to_string())),
            }
        };
        let json = match encoded {
            Ok(json) => json,
            Err(e) => {
                self.failures.count(RaftMethod::AppendEntries, "error");
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let ttl = option.hard_ttl().max(APPEND_WITH_ENTRIES_AT_LEAST);
        self.call_encoded(RaftMethod::AppendEntries, json, Vec::new(), ttl)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftMethod::Vote, &rpc, Vec::new(), option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftMethod::PreVote, &rpc, Vec::new(), option.hard_ttl())
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta,
        };
        let send = self.call(RaftMethod::FullSnapshot, &header, snapshot.snapshot, option.hard_ttl());
        tokio::select! {
            reply = send => reply.map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&r)),
            }),
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(RaftMethod::TransferLeader, &req, Vec::new(), option.hard_ttl())
            .await
    }

    fn backoff(&self) -> Option<Backoff> {
        Some(Backoff::new(std::iter::repeat(self.retry_after)))
    }
}

/// Why an incoming Raft message was not handed to Raft.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("message from cluster {theirs:?}, this node belongs to cluster {ours:?}")]
    WrongCluster { ours: String, theirs: String },
    #[error("undecodable Raft message: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("decoding a Raft message failed: {0}")]
    Task(String),
}

/// The receiving end: decodes a Raft message, hands it to the local Raft
/// node, and encodes its result for the reply.
pub struct Inbound {
    cluster: String,
    raft: OpenRaft,
}

impl Inbound {
    pub(crate) fn new(cluster: String, raft: OpenRaft) -> Inbound {
        Inbound { cluster, raft }
    }

    fn check_cluster(&self, msg: &RaftMessage) -> Result<(), InboundError> {
        if msg.cluster != self.cluster {
            return Err(InboundError::WrongCluster {
                ours: self.cluster.clone(),
                theirs: msg.cluster.clone(),
            });
        }
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, msg: &RaftMessage) -> Result<T, InboundError> {
        self.check_cluster(msg)?;
        Ok(serde_json::from_slice(&msg.json)?)
    }

    fn encode<T: Serialize, E: std::fmt::Display>(&self, result: Result<T, E>) -> Result<RaftMessage, InboundError> {
        let reply: Reply<T> = result.map_err(|e| e.to_string());
        Ok(RaftMessage {
            cluster: self.cluster.clone(),
            json: serde_json::to_vec(&reply)?,
            payload: Vec::new(),
        })
    }

    pub async fn append_entries(&self, msg: &RaftMessage) -> Result<RaftMessage, InboundError> {
        let req: AppendEntriesRequest<TypeConfig> = if msg.json.len() > LARGE && !crate::store::inline() {
            // Megabytes of JSON (a large spec): off the runtime (not in the
            // simulator, where a blocking thread's completion order is not
            // decided by the seed).
            self.check_cluster(msg)?;
            let json = msg.json.clone();
            tokio::task::spawn_blocking(move || serde_json::from_slice(&json))
                .await
                .map_err(|e| InboundError::Task(e.to_string()))??
        } else {
            self.decode(msg)?
        };
        self.encode(self.raft.append_entries(req).await)
    }

    pub async fn vote(&self, msg: &RaftMessage) -> Result<RaftMessage, InboundError> {
        let req: VoteRequest<TypeConfig> = self.decode(msg)?;
        self.encode(self.raft.vote(req).await)
    }

    pub async fn pre_vote(&self, msg: &RaftMessage) -> Result<RaftMessage, InboundError> {
        let req: VoteRequest<TypeConfig> = self.decode(msg)?;
        self.encode(self.raft.pre_vote(req).await)
    }

    pub async fn full_snapshot(&self, msg: RaftMessage) -> Result<RaftMessage, InboundError> {
        let header: SnapshotHeader = self.decode(&msg)?;
        let snapshot = Snapshot {
            meta: header.meta,
            snapshot: msg.payload,
        };
        self.encode(self.raft.install_full_snapshot(header.vote, snapshot).await)
    }

    pub async fn transfer_leader(&self, msg: &RaftMessage) -> Result<RaftMessage, InboundError> {
        let req: TransferLeaderRequest<TypeConfig> = self.decode(msg)?;
        self.encode(self.raft.handle_transfer_leader(req).await)
    }

    /// Hands a message of `method` to Raft (for a simulated network).
    pub async fn handle(&self, method: RaftMethod, msg: RaftMessage) -> Result<RaftMessage, InboundError> {
        match method {
            RaftMethod::Heartbeat | RaftMethod::AppendEntries => self.append_entries(&msg).await,
            RaftMethod::Vote => self.vote(&msg).await,
            RaftMethod::PreVote => self.pre_vote(&msg).await,
            RaftMethod::FullSnapshot => self.full_snapshot(msg).await,
            RaftMethod::TransferLeader => self.transfer_leader(&msg).await,
        }
    }
}
