//! Raft RPCs over gRPC, both ends.
//!
//! Requests and replies are openraft's own types, JSON-encoded inside a
//! `tandem.v1.RaftMessage` that also names the cluster, so a node never
//! accepts Raft traffic from another cluster. The reply carries
//! `Result<Response, RaftError>` so remote Raft errors reach openraft as such.
//!
//! One tonic `Channel` is kept per peer (openraft asks for a new client on
//! every election round and replication restart) and every call is bounded by
//! openraft's own deadline. Transport failures are reported as
//! `RPCError::Unreachable`, the only error after which openraft backs off
//! instead of retrying at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_core::NodeInfo;
use tandem_proto::v1::RaftMessage;
use tandem_proto::v1::peer_client::PeerClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::{Raft, TypeConfig};

/// The largest gRPC message between peers, both ways.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

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
#[derive(Clone, Default)]
pub struct Channels {
    by_address: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
}

impl Channels {
    /// Channels over TLS: `tls` holds the CA to verify peers against and
    /// this node's certificate and key.
    pub fn with_tls(tls: ClientTlsConfig) -> Self {
        Channels {
            by_address: Default::default(),
            tls: Some(tls),
        }
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
}

impl Network {
    /// `retry_after`: how long openraft waits before it calls an unreachable
    /// peer again. openraft's default is 500 ms; a restarted node then lags
    /// that long before it catches up, and a node that lags cannot be elected.
    pub fn new(cluster: String, channels: Channels, retry_after: Duration) -> Self {
        Network {
            cluster,
            channels,
            retry_after,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> PeerConnection {
        PeerConnection {
            cluster: self.cluster.clone(),
            retry_after: self.retry_after,
            target,
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
    target: u64,
    /// An address that cannot even form a URI is kept as an error and
    /// reported on every call, so the node stays up and says why.
    client: Result<PeerClient<Channel>, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

type RpcResult<T, E> = Result<T, RPCError<u64, NodeInfo, RaftError<u64, E>>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(&mut self, method: Method, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e.clone())))),
        };
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftMessage {
            cluster: self.cluster.clone(),
            json,
        });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::AppendEntries => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::InstallSnapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let err = TransportError(format!(
                "{} to node {}: {}",
                method.name(),
                self.target,
                status.message()
            ));
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    RPCError::Unreachable(Unreachable::new(&err))
                }
                _ => RPCError::Network(NetworkError::new(&err)),
            }
        })?;
        let decoded: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply.into_inner().json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::AppendEntries => "append_entries",
            Method::Vote => "vote",
            Method::InstallSnapshot => "install_snapshot",
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        self.call(Method::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(Method::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call(Method::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.retry_after))
    }
}

/// Why an incoming Raft message was not handed to Raft.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("message from cluster {theirs:?}, this node belongs to cluster {ours:?}")]
    WrongCluster { ours: String, theirs: String },
    #[error("undecodable Raft message: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The receiving end: decodes a Raft message, hands it to the local Raft
/// node, and encodes its result (including Raft's own errors) for the reply.
pub struct Inbound {
    pub cluster: String,
    pub raft: Raft,
}

impl Inbound {
    fn decode<T: DeserializeOwned>(&self, msg: &RaftMessage) -> Result<T, InboundError> {
        if msg.cluster != self.cluster {
            return Err(InboundError::WrongCluster {
                ours: self.cluster.clone(),
                theirs: msg.cluster.clone(),
            });
        }
        Ok(serde_json::from_slice(&msg.json)?)
    }

    fn encode<T: Serialize>(&self, result: &T) -> Result<RaftMessage, InboundError> {
        Ok(RaftMessage {
            cluster: self.cluster.clone(),
            json: serde_json::to_vec(result)?,
        })
    }

    pub async fn append_entries(&self, msg: &RaftMessage) -> Result<RaftMessage, InboundError> {
        let req: AppendEntriesRequest<TypeConfig> = self.decode(msg)?;
        self.encode(&self.raft.append_entries(req).await)
    }

    pub async fn vote(&self, msg: &RaftMessage) -> Result<RaftMessage, InboundError> {
        let req: VoteRequest<u64> = self.decode(msg)?;
        self.encode(&self.raft.vote(req).await)
    }

    pub async fn install_snapshot(&self, msg: &RaftMessage) -> Result<RaftMessage, InboundError> {
        let req: InstallSnapshotRequest<TypeConfig> = self.decode(msg)?;
        self.encode(&self.raft.install_snapshot(req).await)
    }
}
