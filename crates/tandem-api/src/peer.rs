//! `tandem.v1.Peer`: Raft RPCs and heartbeats from other nodes.

use tandem_core::state::Command;
use tandem_node::heartbeat::answer_heartbeat;
use tandem_node::node::NodeContext;
use tandem_node::write::propose;
use tandem_proto::v1::peer_server::Peer;
use tandem_proto::v1::{HeartbeatReply, HeartbeatRequest, ProbeReply, ProbeRequest, RaftMessage, ReportReply};
use tandem_raft::network::{Inbound, InboundError};
use tonic::{Request, Response, Status};

use crate::errors::report_status;

pub struct PeerService {
    ctx: NodeContext,
    inbound: Inbound,
}

impl PeerService {
    pub fn new(ctx: NodeContext) -> Self {
        let inbound = ctx.raft.inbound();
        PeerService { ctx, inbound }
    }
}

fn status(e: InboundError) -> Status {
    match e {
        InboundError::WrongCluster { .. } => Status::failed_precondition(e.to_string()),
        InboundError::Decode(_) => Status::invalid_argument(e.to_string()),
        InboundError::Task(_) => Status::internal(e.to_string()),
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

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.inbound
            .pre_vote(req.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn full_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.inbound
            .full_snapshot(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn transfer_leader(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.inbound
            .transfer_leader(req.get_ref())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn report(&self, req: Request<RaftMessage>) -> Result<Response<ReportReply>, Status> {
        // Under TLS a node may only report for itself: its certificate's
        // common name must be the reporting node's name (otherwise any
        // holder of a cluster certificate could report a primary stopped).
        let certified = match req.extensions().get::<crate::auth::Caller>() {
            Some(crate::auth::Caller::ClientCert(cn)) => Some(cn.clone()),
            _ => None,
        };
        let msg = req.into_inner();
        if msg.cluster != self.ctx.cluster {
            return Err(Status::failed_precondition(format!(
                "message from cluster {:?}, this node belongs to cluster {:?}",
                msg.cluster, self.ctx.cluster
            )));
        }
        let command: Command = serde_json::from_slice(&msg.json)
            .map_err(|e| Status::invalid_argument(format!("undecodable report: {e}")))?;
        let node = match &command {
            Command::Report { node, .. } | Command::HookRan { node, .. } => node,
            _ => {
                return Err(Status::invalid_argument(
                    "only reports and hook outcomes are accepted from peers",
                ));
            }
        };
        if let Some(cn) = certified
            && cn.as_deref() != Some(node.as_str())
        {
            return Err(Status::permission_denied(format!(
                "a report for {node} must come with {node}'s certificate (common name {node}), not {}",
                cn.map_or("one without a common name".to_string(), |cn| format!("CN={cn}"))
            )));
        }
        if !self.ctx.is_coordinator() {
            return Err(Status::unavailable("this node is not the coordinator"));
        }
        let (log_index, applied) = propose(&self.ctx, command).await.map_err(report_status)?;
        if let Some(why) = applied.rejected {
            // The sender must not act as if the cluster knew (a stale report
            // is one from before this node was fenced).
            return Err(Status::failed_precondition(why));
        }
        Ok(Response::new(ReportReply { log_index }))
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatReply>, Status> {
        answer_heartbeat(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::unavailable)
    }

    async fn probe(&self, req: Request<ProbeRequest>) -> Result<Response<ProbeReply>, Status> {
        let req = req.into_inner();
        let state = self.ctx.state.borrow().clone();
        let initialized = state.last_applied.is_some();
        let same = req.cluster == self.ctx.cluster;
        let member = same
            && state
                .last_membership
                .membership()
                .nodes()
                .any(|(_, n)| n.name == req.node);
        Ok(Response::new(ProbeReply {
            cluster: self.ctx.cluster.clone(),
            initialized,
            member,
            started: same && state.cluster.started.contains(&req.node),
            applied_index: state.last_applied.map_or(0, |l| l.index),
            answered_by: self.ctx.me.name.clone(),
        }))
    }
}
