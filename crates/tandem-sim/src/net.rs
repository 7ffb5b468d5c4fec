//! The simulated network: every Raft, heartbeat and report call between
//! nodes, carried through [`tandem_raft::network::PeerTransport`] with a
//! seeded delay, loss, duplication (and so reordering) and partitions
//! (a blocked direction drops what is sent on it). A crashed machine
//! answers nothing; a caller times out exactly as over gRPC.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tandem_core::state::Command;
use tandem_node::NodeContext;
use tandem_proto::v1::RaftMessage;
use tandem_raft::network::{Inbound, PeerAnswer, PeerCall, PeerFuture, PeerTransport};
use tonic::Status;

use crate::Shared;

/// The network's faults now.
#[derive(Debug, Clone, Default)]
pub struct NetFaults {
    /// (from, to): messages sent from `from` to `to` are dropped.
    pub blocked: BTreeSet<(usize, usize)>,
    /// Per mille of messages lost.
    pub loss_pm: u32,
    /// Per mille of requests delivered twice.
    pub dup_pm: u32,
    /// Each message takes 1 ms to this long.
    pub max_delay_ms: u64,
}

/// One node incarnation's end of the network.
pub struct SimTransport {
    pub shared: Arc<Shared>,
    pub from: usize,
    pub incarnation: u64,
}

impl PeerTransport for SimTransport {
    fn call(&self, address: &str, call: PeerCall, timeout: Duration) -> PeerFuture {
        let shared = self.shared.clone();
        let (from, incarnation) = (self.from, self.incarnation);
        let address = address.to_string();
        Box::pin(async move {
            match tokio::time::timeout(timeout, deliver(shared, from, incarnation, address, call)).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded("simulated network: no answer in time")),
            }
        })
    }
}

fn kind(call: &PeerCall) -> &'static str {
    match call {
        PeerCall::Raft(m, _) => m.name(),
        PeerCall::Heartbeat(h) if h.relay => "heartbeat(relay)",
        PeerCall::Heartbeat(_) => "heartbeat",
        PeerCall::Report(_) => "report",
    }
}

/// What happens to one message on the link `from` -> `to`.
struct Fate {
    lost: bool,
    delay: Duration,
}

fn fate(shared: &Shared, from: usize, to: usize) -> Fate {
    let mut s = shared.lock();
    let blocked = s.net.blocked.contains(&(from, to));
    let loss = s.net.loss_pm;
    let max = s.net.max_delay_ms.max(1);
    let lost = blocked || (loss > 0 && s.rng.gen_range(0..1000) < loss);
    let delay = Duration::from_millis(s.rng.gen_range(1..=max));
    Fate { lost, delay }
}

async fn deliver(
    shared: Arc<Shared>,
    from: usize,
    incarnation: u64,
    address: String,
    call: PeerCall,
) -> Result<PeerAnswer, Status> {
    let to = {
        let mut s = shared.lock();
        if !s.alive(from, incarnation) {
            None
        } else {
            let Some(to) = s.nodes.iter().position(|n| n.address == address) else {
                return Err(Status::unavailable(format!("no node at {address}")));
            };
            let now = s.now_ms();
            let what = format!("{from}>{to} {}", kind(&call));
            s.trace.note(now, what.as_bytes());
            s.messages += 1;
            Some(to)
        }
    };
    let Some(to) = to else {
        return std::future::pending().await;
    };
    let there = fate(&shared, from, to);
    let dup = {
        let mut s = shared.lock();
        let pm = s.net.dup_pm;
        pm > 0 && s.rng.gen_range(0..1000) < pm
    };
    if there.lost {
        return std::future::pending().await;
    }
    if dup {
        // A copy arrives a little later; its answer is lost.
        let (shared, call) = (shared.clone(), call.clone());
        let later = there.delay + Duration::from_millis(3);
        tokio::spawn(async move {
            tokio::time::sleep(later).await;
            let _ = handle(&shared, to, call).await;
        });
    }
    tokio::time::sleep(there.delay).await;
    let reply = handle(&shared, to, call).await;
    let back = fate(&shared, to, from);
    if back.lost {
        return std::future::pending().await;
    }
    tokio::time::sleep(back.delay).await;
    let alive = shared.lock().alive(from, incarnation);
    if !alive {
        return std::future::pending().await;
    }
    reply
}

/// Runs the call on node `to` as its `tandem.v1.Peer` service would, in a
/// task of its own (a server's handler goes on when the caller gives up).
/// A machine that is down answers nothing.
async fn handle(shared: &Arc<Shared>, to: usize, call: PeerCall) -> Result<PeerAnswer, Status> {
    let target = {
        let s = shared.lock();
        let slot = &s.nodes[to];
        match (&slot.ctx, &slot.inbound) {
            (Some(ctx), Some(inbound)) if slot.alive => Some((ctx.clone(), inbound.clone())),
            _ => None,
        }
    };
    let Some((ctx, inbound)) = target else {
        return std::future::pending().await;
    };
    let task = tokio::spawn(async move { serve(ctx, inbound, call).await });
    match task.await {
        Ok(r) => r,
        Err(e) => Err(Status::internal(format!("the handler failed: {e}"))),
    }
}

async fn serve(ctx: NodeContext, inbound: Arc<Inbound>, call: PeerCall) -> Result<PeerAnswer, Status> {
    match call {
        PeerCall::Raft(method, msg) => inbound
            .handle(method, msg)
            .await
            .map(PeerAnswer::Raft)
            .map_err(|e| Status::failed_precondition(e.to_string())),
        PeerCall::Heartbeat(req) => tandem_node::heartbeat::answer_heartbeat(&ctx, req)
            .await
            .map(PeerAnswer::Heartbeat)
            .map_err(Status::unavailable),
        PeerCall::Report(msg) => report(&ctx, msg).await.map(|()| PeerAnswer::Report),
    }
}

/// `Peer/Report` as tandem-api's peer service answers it (without TLS).
async fn report(ctx: &NodeContext, msg: RaftMessage) -> Result<(), Status> {
    if msg.cluster != ctx.cluster {
        return Err(Status::failed_precondition("another cluster"));
    }
    let command: Command =
        serde_json::from_slice(&msg.json).map_err(|e| Status::invalid_argument(format!("undecodable report: {e}")))?;
    if !matches!(command, Command::Report { .. } | Command::HookRan { .. }) {
        return Err(Status::invalid_argument("only reports and hook outcomes"));
    }
    if !ctx.is_coordinator() {
        return Err(Status::unavailable("this node is not the coordinator"));
    }
    let (_, applied) = tandem_node::write::propose(ctx, command)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    match applied.rejected {
        Some(why) => Err(Status::failed_precondition(why)),
        None => Ok(()),
    }
}
