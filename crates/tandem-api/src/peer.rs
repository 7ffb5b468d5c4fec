//! `tandem.v1.Peer`: Raft RPCs and heartbeats from other nodes.

use tandem_proto::v1::peer_server::Peer;
use tandem_proto::v1::{HeartbeatReply, HeartbeatRequest, RaftMessage};
use tandem_raft::network::{Inbound, InboundError};
use tonic::{Request, Response, Status};

use crate::liveness::handle_heartbeat;
use crate::node::NodeContext;

pub struct PeerService {
    ctx: NodeContext,
    inbound: Inbound,
}

impl PeerService {
    pub fn new(ctx: NodeContext) -> Self {
        let inbound = Inbound {
            cluster: ctx.cluster.clone(),
            raft: ctx.raft.clone(),
        };
        PeerService { ctx, inbound }
    }
}

fn status(e: InboundError) -> Status {
    match e {
        InboundError::WrongCluster { .. } => Status::failed_precondition(e.to_string()),
        InboundError::Decode(_) => Status::invalid_argument(e.to_string()),
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.inbound
            .append_entries(req.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.inbound
            .vote(req.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.inbound
            .install_snapshot(req.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatReply>, Status> {
        Ok(Response::new(handle_heartbeat(&self.ctx, req.get_ref())))
    }
}
