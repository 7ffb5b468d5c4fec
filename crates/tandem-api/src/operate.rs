//! Operator controls: switchover and failover (with their progress streamed
//! phase by phase), standby, maintenance, the event stream and the failover
//! history. The service forwards writes to the coordinator; these run there
//! (reads run on any node, from its local state).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tandem_core::operator::{MoveAsk, MovePlan, check_move, check_standby};
use tandem_core::state::{Command, MaintenanceScope, Transition, TransitionKind, TransitionOutcome};
use tandem_node::manager::{current_plan, node_facts};
use tandem_node::node::NodeContext;
use tandem_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{info, warn};

use crate::convert::{actor, event_to_pb, transition_to_pb};
use crate::errors::{refusal_status, write_status};

pub type MoveStream = Pin<Box<dyn Stream<Item = Result<pb::MoveProgress, Status>> + Send>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

/// How long a move may take unless the caller says otherwise.
pub const DEFAULT_MOVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest wait a caller may ask for.
pub const MAX_MOVE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How many transitions `GetHistory` returns unless asked otherwise.
const DEFAULT_HISTORY: usize = 20;

/// Commits `command` on this node, the coordinator: its log index and what
/// applying it returned.
pub(crate) async fn propose(ctx: &NodeContext, command: Command) -> Result<(u64, tandem_core::state::Applied), Status> {
    tandem_node::write::propose(ctx, command).await.map_err(write_status)
}

fn is_member(ctx: &NodeContext, node: &str) -> Option<tandem_core::NodeRole> {
    ctx.raft.view().find(node).map(|(_, n)| n.role)
}

/// Checks and commits an operator's move of a group (on the coordinator),
/// then streams its progress from the applied state.
pub async fn move_group(ctx: &NodeContext, req: pb::MoveRequest, kind: TransitionKind) -> Result<MoveStream, Status> {
    let what = kind.as_str();
    let timeout = match req.timeout_ms {
        0 => DEFAULT_MOVE_TIMEOUT,
        ms => Duration::from_millis(ms).min(MAX_MOVE_TIMEOUT),
    };
    let facts = node_facts(ctx);
    let ask = MoveAsk {
        group: &req.group,
        to: (!req.to.is_empty()).then_some(req.to.as_str()),
        kind,
        force: req.force,
    };
    let MovePlan { from, to } = {
        let state = ctx.state.borrow().clone();
        check_move(&state.cluster, &facts, |n| is_member(ctx, n), ask, ctx.clock.unix_ms()).map_err(refusal_status)?
    };
    let actor = actor(&req.actor);
    info!(group = %req.group, ?from, %to, force = req.force, %actor, "{what} requested");
    let now = ctx.clock.unix_ms();
    let (_, applied) = propose(
        ctx,
        Command::RequestMove {
            group: req.group.clone(),
            kind,
            from: from.clone(),
            to: to.clone(),
            force: req.force,
            deadline_unix_ms: now.saturating_add(tandem_core::timing::duration_ms(timeout)),
            actor,
            at_unix_ms: now,
        },
    )
    .await?;
    let Some(id) = applied.transition else {
        return Err(Status::internal(format!(
            "the {what} request was committed but recorded no transition: {}",
            applied.rejected.unwrap_or_default()
        )));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let ctx = ctx.clone();
    let group = req.group.clone();
    tokio::spawn(async move {
        follow_move(ctx, group, id, to, timeout, tx).await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// What a transition reached so far, as progress messages (one per phase
/// reached), and whether it ended.
fn progress_lines(t: &Transition) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let from = t.from.as_deref().unwrap_or("no node");
    let to = t.to.as_deref().unwrap_or("?");
    let p = &t.phases;
    out.push((
        "requested",
        format!("{} of {} from {from} to {to} ({})", t.kind.as_str(), t.group, t.reason),
    ));
    if p.fenced_unix_ms.is_some() {
        let how = match t.kind {
            TransitionKind::Switchover => format!("{from} stopped {}", t.group),
            TransitionKind::Failover => {
                format!("{from} is known stopped (it stopped, was fenced, or its lease expired)")
            }
        };
        out.push(("stopped", how));
    }
    if t.epoch != 0 {
        out.push(("assigned", format!("{} assigned to {to} (epoch {})", t.group, t.epoch)));
    }
    if p.started_unix_ms.is_some() {
        out.push(("started", format!("{to} started {}", t.group)));
    }
    if p.healthy_unix_ms.is_some() {
        out.push(("healthy", format!("{} runs healthy on {to}", t.group)));
    }
    if p.dns_unix_ms.is_some() {
        out.push(("dns", format!("DNS answers {} with {to}", t.group)));
    }
    match &t.outcome {
        TransitionOutcome::InProgress => {}
        TransitionOutcome::Completed => out.push(("completed", format!("completed: {}", p.summary()))),
        TransitionOutcome::Abandoned(why) => out.push(("abandoned", format!("abandoned: {why}"))),
    }
    out
}

async fn follow_move(
    ctx: NodeContext,
    group: String,
    id: u64,
    target: String,
    timeout: Duration,
    tx: tokio::sync::mpsc::Sender<Result<pb::MoveProgress, Status>>,
) {
    let started = tokio::time::Instant::now();
    // The coordinator abandons the request at its deadline; a little grace
    // lets that land before this stream gives up on its own.
    let give_up = started + timeout + Duration::from_secs(2);
    let mut state = ctx.state.clone();
    let mut sent = 0usize;
    let mut last_wait = String::new();
    loop {
        let t = state.borrow().cluster.transitions.iter().find(|t| t.id == id).cloned();
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Some(t) = t else {
            let _ = tx
                .send(Err(Status::unavailable(format!(
                    "transition #{id} of {group} is no longer in the log; see `tandem history {group}`"
                ))))
                .await;
            return;
        };
        let mut lines = progress_lines(&t);
        let done = t.outcome != TransitionOutcome::InProgress;
        // Completed, but not where it was asked to go (the request ended on
        // the way and placement chose): the operator must not read success.
        let elsewhere = t.outcome == TransitionOutcome::Completed && t.to.as_deref() != Some(target.as_str());
        if elsewhere && let Some(last) = lines.last_mut() {
            *last = (
                "elsewhere",
                format!(
                    "{} runs on {} instead of {target}: {}",
                    group,
                    t.to.as_deref().unwrap_or("?"),
                    t.reason
                ),
            );
        }
        for (i, (phase, message)) in lines.iter().enumerate().skip(sent) {
            let last = done && i + 1 == lines.len();
            let msg = pb::MoveProgress {
                phase: (*phase).into(),
                message: message.clone(),
                elapsed_ms,
                transition: Some(transition_to_pb(&t)),
                done: last,
                ok: last && t.outcome == TransitionOutcome::Completed && !elsewhere,
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        sent = lines.len();
        if done {
            return;
        }
        // Say what it waits for, when that changes.
        if let Some(why) = current_plan(&ctx).blocked.remove(&group)
            && why != last_wait
        {
            let msg = pb::MoveProgress {
                phase: "waiting".into(),
                message: why.clone(),
                elapsed_ms,
                transition: Some(transition_to_pb(&t)),
                done: false,
                ok: false,
            };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            last_wait = why;
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(give_up) => {
                let msg = pb::MoveProgress {
                    phase: "timeout".into(),
                    message: format!(
                        "not completed within {timeout:?}; a move already under way goes on: follow it with \
                         `tandem history {group}` or `tandem events --follow --group {group}`"
                    ),
                    elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    transition: Some(transition_to_pb(&t)),
                    done: true,
                    ok: false,
                };
                let _ = tx.send(Ok(msg)).await;
                return;
            }
            _ = tx.closed() => return,
        }
    }
}

/// Puts a node in standby or takes it out (on the coordinator).
pub async fn set_standby(ctx: &NodeContext, req: pb::SetStandbyRequest) -> Result<pb::ModeReply, Status> {
    {
        let facts = node_facts(ctx);
        let state = ctx.state.borrow().clone();
        let role = is_member(ctx, &req.node);
        check_standby(
            &state.cluster,
            &facts,
            &req.node,
            role,
            req.on,
            req.force,
            ctx.clock.unix_ms(),
        )
        .map_err(refusal_status)?;
    }
    let (log_index, applied) = propose(
        ctx,
        Command::SetStandby {
            node: req.node.clone(),
            on: req.on,
            actor: actor(&req.actor),
            at_unix_ms: ctx.clock.unix_ms(),
        },
    )
    .await?;
    info!(node = %req.node, on = req.on, "standby changed");
    Ok(pb::ModeReply {
        log_index,
        event_seq: applied.event_seq.unwrap_or_default(),
    })
}

/// Switches maintenance on or off for the cluster, a group or a node.
pub async fn set_maintenance(ctx: &NodeContext, req: pb::SetMaintenanceRequest) -> Result<pb::ModeReply, Status> {
    let scope = match (req.group.is_empty(), req.node.is_empty()) {
        (true, true) => MaintenanceScope::Cluster,
        (false, true) => {
            let known = {
                let s = ctx.state.borrow();
                s.cluster.spec.group(&req.group).is_some() || s.cluster.groups.contains_key(&req.group)
            };
            if !known {
                return Err(Status::not_found(format!("there is no group {:?}", req.group)));
            }
            MaintenanceScope::Group(req.group.clone())
        }
        (true, false) => {
            // A node removed while in maintenance can still be taken out of it.
            let listed = ctx.state.borrow().cluster.maintenance.nodes.contains(&req.node);
            if (req.on || !listed) && is_member(ctx, &req.node).is_none() {
                return Err(Status::not_found(format!("there is no member named {:?}", req.node)));
            }
            MaintenanceScope::Node(req.node.clone())
        }
        (false, false) => {
            return Err(Status::invalid_argument(
                "name a group or a node, not both (neither: the whole cluster)",
            ));
        }
    };
    if req.on {
        warn!(%scope, "maintenance on: Tandem stops acting there");
    }
    let (log_index, applied) = propose(
        ctx,
        Command::SetMaintenance {
            scope,
            on: req.on,
            actor: actor(&req.actor),
            at_unix_ms: ctx.clock.unix_ms(),
        },
    )
    .await?;
    Ok(pb::ModeReply {
        log_index,
        event_seq: applied.event_seq.unwrap_or_default(),
    })
}

/// Whether an event passes a `ListEvents`/`WatchEvents` filter.
pub fn event_matches(e: &tandem_core::state::Event, req: &pb::ListEventsRequest) -> bool {
    e.seq >= req.since_seq
        && e.at_unix_ms >= req.since_unix_ms
        && (req.group.is_empty() || e.group.as_deref() == Some(req.group.as_str()))
}

/// The events from `since_seq` on, then each new one as it is applied here.
pub fn watch_events(
    ctx: &NodeContext,
    req: pb::ListEventsRequest,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> EventStream {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut state = ctx.state.clone();
    tokio::spawn(async move {
        let mut next = req.since_seq;
        loop {
            let (batch, newest): (Vec<pb::Event>, u64) = {
                let s = state.borrow_and_update();
                let batch = s
                    .cluster
                    .events
                    .iter()
                    .filter(|e| e.seq >= next && event_matches(e, &req))
                    .map(event_to_pb)
                    .collect();
                (batch, s.cluster.next_event_seq)
            };
            for e in batch {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            next = next.max(newest);
            tokio::select! {
                r = state.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// The most recent transitions (of one group, or all), oldest first.
pub fn history(ctx: &NodeContext, req: &pb::GetHistoryRequest) -> pb::GetHistoryReply {
    let limit = match req.limit {
        0 => DEFAULT_HISTORY,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let state = ctx.state.borrow();
    let mut transitions: Vec<pb::Transition> = state
        .cluster
        .transitions
        .iter()
        .rev()
        .filter(|t| req.group.is_empty() || t.group == req.group)
        .take(limit)
        .map(transition_to_pb)
        .collect();
    transitions.reverse();
    pb::GetHistoryReply { transitions }
}
