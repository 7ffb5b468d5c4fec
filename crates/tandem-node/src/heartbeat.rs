//! The lease runtime's tasks and its wire edge: heartbeats out (straight to
//! the coordinator, else relayed through the other nodes), the
//! coordinator's answer to heartbeats in (granted on Raft's quorum
//! acknowledgement), following Raft's leadership, and a witness's fallback
//! campaign. The
//! bookkeeping they feed is [`crate::liveness::Liveness`].

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tandem_core::lease::witness_should_campaign;
use tandem_core::operator::{PeerTiming, check_peer_timing};
use tandem_core::timing::duration_ms;
use tandem_core::{NodeId, Timing};
use tandem_proto::v1::peer_client::PeerClient;
use tandem_proto::v1::{HeartbeatReply, HeartbeatRequest};
use tandem_raft::network::{PeerAnswer, PeerCall};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::liveness::view_entry_to_pb;
use crate::node::NodeContext;

/// The coordinator's side of a heartbeat (also used for its own heartbeat).
pub fn handle_heartbeat(ctx: &NodeContext, req: &HeartbeatRequest) -> HeartbeatReply {
    let now = ctx.clock.now();
    let term = ctx.raft.term();
    if req.cluster != ctx.cluster {
        return refusal(
            term,
            format!("this node belongs to cluster {:?}, not {:?}", ctx.cluster, req.cluster),
        );
    }
    if !ctx.is_coordinator() {
        return refusal(term, "this node is not the coordinator".into());
    }
    // The newest proof that no other coordinator can have been elected:
    // Raft's own record of when it *sent* the last message a quorum
    // acknowledged, so a pause of this process (SIGSTOP, a frozen VM) can
    // only make it look older. Reading it costs no round trip and never
    // waits for the state machine: a slow disk or a burst of commits cannot
    // take every node's lease away.
    if let Some((acked_term, age)) = ctx.raft.quorum_ack_age() {
        ctx.liveness.confirm_quorum(acked_term, now.minus(age));
    }
    let theirs = PeerTiming {
        lease_ms: req.lease_ms,
        clock_drift_margin_ms: req.clock_drift_margin_ms,
        election_timeout_ms: req.election_timeout_ms,
    };
    if let Err(why) = check_peer_timing(&req.node, theirs, &ctx.timing) {
        return refusal(term, why);
    }
    match ctx.liveness.grant(
        now,
        term,
        req.node_id,
        &req.version,
        req.applied_index,
        &ctx.member_ids(),
    ) {
        Ok(view) => {
            ctx.liveness.record_freshness(req.node_id, &req.freshness);
            HeartbeatReply {
                applied_index: ctx.state.borrow().last_applied.map_or(0, |l| l.index),
                granted: true,
                lease_ms: duration_ms(ctx.timing.lease),
                refusal: String::new(),
                term,
                nodes: view
                    .iter()
                    .map(|e| view_entry_to_pb(e, ctx.liveness.freshness_pb(e.id)))
                    .collect(),
            }
        }
        Err(reason) => refusal(term, reason),
    }
}

/// A heartbeat another node sent here (`Peer/Heartbeat`): answered here on
/// the coordinator; one with `relay` set, on a node that is not, forwarded
/// one hop to its coordinator (the forwarded copy is not relayed again).
/// `Err`: no coordinator answered (what to say, for a retry elsewhere).
pub async fn answer_heartbeat(ctx: &NodeContext, req: HeartbeatRequest) -> Result<HeartbeatReply, String> {
    if req.relay && !ctx.is_coordinator() && req.cluster == ctx.cluster {
        let Some((_, coordinator)) = ctx.coordinator() else {
            return Err("no coordinator known here either".into());
        };
        let forwarded = HeartbeatRequest { relay: false, ..req };
        return send_heartbeat(ctx, &coordinator.address, forwarded, ctx.timing.election_timeout).await;
    }
    Ok(handle_heartbeat(ctx, &req))
}

fn refusal(term: u64, reason: String) -> HeartbeatReply {
    HeartbeatReply {
        applied_index: 0,
        granted: false,
        lease_ms: 0,
        refusal: reason,
        term,
        nodes: Vec::new(),
    }
}

/// Sends this node's heartbeat to the coordinator every heartbeat interval
/// until `shutdown` fires.
pub async fn run_heartbeats(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(ctx.timing.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_refusal = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let known = ctx.coordinator();
        let request = HeartbeatRequest {
            cluster: ctx.cluster.clone(),
            node_id: ctx.id,
            node: ctx.me.name.clone(),
            version: tandem_core::VERSION.to_string(),
            applied_index: ctx.state.borrow().last_applied.map_or(0, |l| l.index),
            lease_ms: duration_ms(ctx.timing.lease),
            clock_drift_margin_ms: duration_ms(ctx.timing.clock_drift_margin),
            election_timeout_ms: duration_ms(ctx.timing.election_timeout),
            relay: false,
            freshness: ctx.liveness.own_freshness_pb(),
        };
        let sent_at = ctx.clock.now();
        let direct = match &known {
            Some((id, _)) if *id == ctx.id => Ok(handle_heartbeat(&ctx, &request)),
            Some((_, info)) => send_heartbeat(&ctx, &info.address, request.clone(), ctx.timing.election_timeout).await,
            None => Err("no coordinator known".to_string()),
        };
        let reply = match direct {
            Ok(r) => r,
            Err(e) => {
                // The coordinator may be out of reach from here alone (the
                // link between the sites cut): ask the other nodes to relay.
                debug!(error = %e, "heartbeat not acknowledged directly; relaying");
                match relay_heartbeat(&ctx, known.as_ref().map(|(id, _)| *id), request).await {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(error = %e, "heartbeat not acknowledged through any relay");
                        ctx.liveness.counters.heartbeats_unanswered.fetch_add(1, Relaxed);
                        continue;
                    }
                }
            }
        };
        let coordinator_name = known.as_ref().map_or("?", |(_, i)| i.name.as_str()).to_string();
        if !reply.granted && reply.refusal != last_refusal {
            warn!(coordinator = %coordinator_name, reason = %reply.refusal, "lease not granted");
        }
        last_refusal = reply.refusal.clone();
        ctx.liveness.record_reply(ctx.clock.now(), sent_at, &reply);
    }
}

/// Sends a heartbeat with `relay` set to every other member at once and
/// takes the first coordinator's reply that comes back through one of them.
async fn relay_heartbeat(
    ctx: &NodeContext,
    coordinator: Option<NodeId>,
    request: HeartbeatRequest,
) -> Result<HeartbeatReply, String> {
    let relays: Vec<tandem_core::NodeInfo> = ctx
        .member_ids()
        .into_iter()
        .filter(|id| *id != ctx.id && Some(*id) != coordinator)
        .filter_map(|id| ctx.member(id))
        .collect();
    if relays.is_empty() {
        return Err("no other node to relay through".into());
    }
    let calls = relays.iter().map(|r| {
        let request = HeartbeatRequest {
            relay: true,
            ..request.clone()
        };
        let call = send_heartbeat(ctx, &r.address, request, ctx.timing.election_timeout * 2);
        // Only a grant counts: a relay whose own view is stale may answer
        // with a refusal before another relay brings the grant.
        Box::pin(async move {
            match call.await {
                Ok(r) if r.granted => Ok(r),
                Ok(r) => Err(format!("refused: {}", r.refusal)),
                Err(e) => Err(e),
            }
        })
    });
    futures::future::select_ok(calls)
        .await
        .map(|(reply, _)| reply)
        .map_err(|e| format!("no relay answered: {e}"))
}

pub async fn send_heartbeat(
    ctx: &NodeContext,
    address: &str,
    request: HeartbeatRequest,
    timeout: Duration,
) -> Result<HeartbeatReply, String> {
    if let Some(transport) = ctx.channels.transport() {
        return match transport.call(address, PeerCall::Heartbeat(request), timeout).await {
            Ok(PeerAnswer::Heartbeat(reply)) => Ok(reply),
            Ok(_) => Err("a reply of another kind".into()),
            Err(s) => Err(s.message().to_string()),
        };
    }
    let channel = ctx.channels.get(address).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(request);
    req.set_timeout(timeout);
    PeerClient::new(channel)
        .heartbeat(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

/// Feeds Raft's leadership to [`Liveness::observe_raft`] until `shutdown`.
/// The view changes only when leadership or membership does.
pub async fn follow_raft(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
    let mut view = ctx.raft.watch();
    loop {
        let leader_term = view.borrow_and_update().leading_term(ctx.id);
        ctx.liveness.observe_raft(ctx.clock.now(), leader_term);
        tokio::select! {
            r = view.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

/// On a witness: campaigns when no member can become coordinator (see
/// [`witness_should_campaign`]), until `shutdown`. `seed` seeds the
/// election jitter (the node id, unless a test wants another sequence).
pub async fn run_witness_fallback(ctx: NodeContext, seed: u64, mut shutdown: watch::Receiver<bool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = ctx.clock.now();
    let mut campaigning = false;
    // Campaigns in a row: each one waits longer (up to a lease), so that a
    // witness that fell behind while cut off does not depose, again and
    // again, the coordinators the members elect once the link heals (found
    // by the fault suite: no coordinator for over a minute).
    let mut streak: u32 = 0;
    loop {
        // Jittered, so that the witness and a hopeless member do not keep colliding.
        let jitter = election_jitter(&mut rng, &ctx.timing);
        // Capped below a behind member's own retry period (about five
        // election timeouts), or the witness's terms fall behind it for good.
        let backoff = (ctx.timing.election_timeout * 2u32.saturating_pow(streak.min(8)))
            .min(ctx.timing.election_timeout * 4)
            .min(ctx.timing.lease);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.changed() => return,
        }
        let now = ctx.clock.now();
        let quiet = ctx.liveness.since_last_reply(now).unwrap_or_else(|| now.since(started));
        // Not yet part of a cluster: nothing to lead.
        let should =
            !ctx.is_coordinator() && !ctx.member_ids().is_empty() && witness_should_campaign(quiet, &ctx.timing);
        streak = if should { streak.saturating_add(1) } else { 0 };
        if should && !campaigning {
            warn!(
                quiet_ms = tandem_core::timing::duration_ms(quiet),
                "no coordinator has answered this witness for longer than a lease; campaigning, since no member \
                 seems able to (a witness may coordinate but never hosts services)"
            );
        }
        if !should && campaigning {
            info!("a coordinator answers again; the witness stops campaigning");
        }
        campaigning = should;
        if should && let Err(e) = ctx.raft.campaign().await {
            warn!(error = %e, "could not start an election");
        }
    }
}

/// A random wait of less than one election timeout, in whole milliseconds.
fn election_jitter(rng: &mut StdRng, timing: &Timing) -> Duration {
    Duration::from_millis(rng.gen_range(0..duration_ms(timing.election_timeout).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_witness_jitter_is_below_an_election_timeout_and_repeats_with_its_seed() {
        let timing = Timing::default();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50).map(|_| election_jitter(&mut rng, &timing)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert!(a.iter().all(|j| *j < timing.election_timeout), "{a:?}");
        assert_eq!(a, draw(7), "the same seed, the same waits");
        assert_ne!(a, draw(8), "another seed, other waits");
    }
}
