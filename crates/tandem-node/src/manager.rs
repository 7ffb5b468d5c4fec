//! The coordinator side of the resource manager: on every pass, asks the
//! core where each group should run ([`tandem_core::placement::plan`]) and
//! commits each decision with the next epoch, and whether each group still
//! has an eligible standby ([`tandem_core::placement::protection`]),
//! committing the warning's start and end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tandem_agents::fence::{FenceAction, fence_node};
use tandem_core::membership::node_id;
use tandem_core::placement::{AnswerFacts, NodeFacts, Operator, Plan, answers_settled, plan_with, protection};
use tandem_core::state::Command;
use tandem_core::{Millis, NodeId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::node::NodeContext;

/// The nodes as this node sees them now, for placement.
pub fn node_facts(ctx: &NodeContext) -> Vec<NodeFacts> {
    let now = ctx.clock.now();
    let term = ctx.raft.term();
    let members: BTreeSet<NodeId> = ctx.member_ids();
    let (view, _) = ctx.liveness.view(now, &members);
    let state = ctx.state.borrow().clone();
    // What each node's agents last reported (kept for nodes not heard from).
    let mut freshness = ctx.liveness.freshness();
    let mut facts: Vec<NodeFacts> = view
        .iter()
        .filter_map(|e| {
            let info = ctx.member(e.id)?;
            Some(NodeFacts {
                role: info.role,
                state: e.state,
                lease_expired: ctx.liveness.lease_certainly_expired(term, e.id, now),
                standby: state.cluster.standby.contains(&info.name),
                freshness: freshness.remove(&e.id).unwrap_or_default(),
                name: info.name,
            })
        })
        .collect();
    // A node removed from the cluster may still run what it ran: it counts
    // as stopped only once its lease has certainly expired.
    let mut gone: BTreeSet<String> = BTreeSet::new();
    for g in state.cluster.groups.values() {
        gone.extend(g.may_run().into_iter().filter(|n| !facts.iter().any(|f| &f.name == n)));
    }
    for name in gone {
        facts.push(NodeFacts {
            lease_expired: ctx.liveness.lease_certainly_expired(term, node_id(&name), now),
            name,
            role: tandem_core::NodeRole::Member,
            state: tandem_core::lease::NodeState::Down,
            standby: false,
            freshness: BTreeMap::new(),
        });
    }
    facts
}

/// The placement plan as this node sees the cluster now. Decisions are only
/// committed by the coordinator; other nodes use it to explain what blocks.
pub fn current_plan(ctx: &NodeContext) -> Plan {
    plan_for(ctx, &node_facts(ctx))
}

fn plan_for(ctx: &NodeContext, facts: &[NodeFacts]) -> Plan {
    let state = ctx.state.borrow().clone();
    let c = &state.cluster;
    let operator = Operator {
        maintenance: Some(&c.maintenance),
        moves: Some(&c.moves),
    };
    plan_with(
        &c.spec,
        &c.groups,
        &c.fencing_needed,
        operator,
        facts,
        ctx.clock.unix_ms(),
    )
}

/// When the coordinator first saw each node not `up` (missed heartbeats):
/// the `detected` phase of the failovers this causes.
#[derive(Default)]
struct Detection {
    not_up_since: BTreeMap<String, u64>,
}

impl Detection {
    fn observe(&mut self, facts: &[NodeFacts], now: u64) {
        for f in facts {
            if f.state == tandem_core::lease::NodeState::Up {
                self.not_up_since.remove(&f.name);
            } else {
                self.not_up_since.entry(f.name.clone()).or_insert(now);
            }
        }
    }

    /// When the fault behind moving a group away from its primary was
    /// detected: the primary stopped heartbeating, or it reported the group
    /// failed at the current epoch. None for a planned move (its operator's
    /// request or the drain is the detection) and when nothing failed.
    fn detected(&self, ctx: &NodeContext, d: &tandem_core::placement::Decision) -> Option<u64> {
        if d.planned {
            return None;
        }
        let state = ctx.state.borrow();
        let g = state.cluster.groups.get(&d.group)?;
        let holder = g.assigned.iter().next()?;
        self.not_up_since.get(holder).copied().or_else(|| {
            g.reports
                .get(holder)
                .filter(|r| r.epoch == g.epoch && r.phase == tandem_core::groups::Phase::Failed)
                .map(|r| r.at_unix_ms)
        })
    }
}

/// Runs placement passes while this node is the coordinator, until `shutdown`.
pub async fn run_manager(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
    let mut state = ctx.state.clone();
    let mut liveness = ctx.liveness.subscribe();
    let mut fencer = Fencer::default();
    let mut detection = Detection::default();
    let mut answers = AnswerFence::default();
    let mut tick = tokio::time::interval(ctx.timing.heartbeat_interval * 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = state.changed() => if r.is_err() { return },
            r = liveness.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        if !ctx.is_coordinator() {
            fencer.abort_all();
            detection = Detection::default();
            answers = AnswerFence::default();
            continue;
        }
        let facts = node_facts(&ctx);
        detection.observe(&facts, ctx.clock.unix_ms());
        let p = plan_for(&ctx, &facts);
        finish_transitions(&ctx).await;
        for (group, (transition, reason)) in p.abandon {
            warn!(%group, transition, %reason, "abandoning a requested move");
            let cmd = Command::EndMove {
                group: group.clone(),
                transition,
                reason,
                actor: "coordinator".into(),
                at_unix_ms: ctx.clock.unix_ms(),
            };
            if let Err(e) = ctx.raft.write(cmd).await {
                warn!(%group, error = %e, "could not commit the end of a move");
            }
        }
        for (node, why) in p.fence {
            if ctx.state.borrow().cluster.fencing_needed.contains_key(&node) {
                continue;
            }
            warn!(%node, reason = %why, "node must be fenced");
            let cmd = Command::FenceRequested {
                node: node.clone(),
                reason: why,
                actor: "coordinator".into(),
                at_unix_ms: ctx.clock.unix_ms(),
            };
            if let Err(e) = ctx.raft.write(cmd).await {
                warn!(%node, error = %e, "could not commit the fencing request");
            }
        }
        fencer.poll(&ctx);
        answers.observe(&ctx);
        for d in p.decisions {
            if let Err(why) = answers.settled(&ctx, &facts, &d) {
                answers.say_waiting(&d.group, why);
                continue;
            }
            // The epoch the plan was made for: if anything moved the group
            // meanwhile, the state machine refuses this stale decision.
            let epoch = d.epoch;
            info!(group = %d.group, nodes = ?d.assign, epoch, reason = %d.reason, "assigning");
            let cmd = Command::Assign {
                detected_unix_ms: detection.detected(&ctx, &d),
                group: d.group.clone(),
                nodes: d.assign,
                epoch,
                reason: d.reason,
                at_unix_ms: ctx.clock.unix_ms(),
                planned: d.planned,
            };
            match ctx.raft.write(cmd).await {
                Ok(r) => {
                    if let Some(why) = r.applied.rejected {
                        warn!(group = %d.group, reason = %why, "assignment not applied");
                    }
                }
                Err(e) => {
                    warn!(group = %d.group, error = %e, "could not commit the assignment");
                    break;
                }
            }
        }
        commit_protection(&ctx, &facts).await;
        commit_started(&ctx, &facts).await;
    }
}

/// Records each member heard up for the first time (`Command::NodeStarted`),
/// what a node restarted on an empty data directory is refused by.
async fn commit_started(ctx: &NodeContext, facts: &[NodeFacts]) {
    let new: Vec<String> = {
        let state = ctx.state.borrow();
        facts
            .iter()
            .filter(|f| f.state == tandem_core::lease::NodeState::Up && !state.cluster.started.contains(&f.name))
            .filter(|f| ctx.member_ids().contains(&node_id(&f.name)))
            .map(|f| f.name.clone())
            .collect()
    };
    for node in new {
        let cmd = Command::NodeStarted {
            node: node.clone(),
            at_unix_ms: ctx.clock.unix_ms(),
        };
        if let Err(e) = ctx.raft.write(cmd).await {
            warn!(%node, error = %e, "could not record that a node started");
            return;
        }
        info!(%node, "recorded that the node started in this cluster");
    }
}

/// Invariant 5 across a move, on the coordinator: a released exclusive group
/// is given to another node only once every node either reported applying
/// the release or holds no lease ([`answers_settled`]). The release's index
/// is taken as this coordinator's applied index when it first saw the group
/// released (the release was applied at or before it), whichever command or
/// coordinator released it.
#[derive(Default)]
struct AnswerFence {
    released_at: BTreeMap<String, u64>,
    /// What each group waits for, as last logged.
    waiting: BTreeMap<String, String>,
}

impl AnswerFence {
    fn observe(&mut self, ctx: &NodeContext) {
        let state = ctx.state.borrow();
        let applied = state.last_applied.map_or(0, |l| l.index);
        let c = &state.cluster;
        let released: BTreeSet<&String> = c
            .groups
            .iter()
            .filter(|(name, g)| {
                g.assigned.is_empty()
                    && g.epoch > 0
                    && c.spec
                        .group(name)
                        .is_some_and(|s| s.kind == tandem_core::spec::GroupKind::Exclusive)
            })
            .map(|(name, _)| name)
            .collect();
        self.released_at.retain(|g, _| released.contains(g));
        self.waiting.retain(|g, _| released.contains(g));
        for g in released {
            self.released_at.entry(g.clone()).or_insert(applied);
        }
    }

    fn settled(
        &self,
        ctx: &NodeContext,
        facts: &[NodeFacts],
        d: &tandem_core::placement::Decision,
    ) -> Result<(), String> {
        let Some(&release_index) = self.released_at.get(&d.group) else {
            return Ok(());
        };
        if d.assign.is_empty() {
            return Ok(());
        }
        let nodes: Vec<AnswerFacts> = facts
            .iter()
            .filter(|f| f.name != ctx.me.name)
            .map(|f| AnswerFacts {
                applied_index: ctx.liveness.reported_applied(node_id(&f.name)),
                lease_expired: f.lease_expired,
                name: f.name.clone(),
            })
            .collect();
        answers_settled(release_index, &nodes)
    }

    fn say_waiting(&mut self, group: &str, why: String) {
        if self.waiting.get(group) != Some(&why) {
            info!(%group, reason = %why, "not assigning yet");
            self.waiting.insert(group.to_string(), why);
        }
    }
}

/// Commits the start or the end of each group's protection warning (a group
/// without an eligible standby): only changes of the core's judgement, so a
/// pass that finds what is already committed writes nothing.
async fn commit_protection(ctx: &NodeContext, facts: &[NodeFacts]) {
    let now = ctx.clock.unix_ms();
    let changes = {
        let state = ctx.state.borrow();
        let c = &state.cluster;
        let judged = protection(&c.spec, &c.groups, &c.fencing_needed, Some(&c.maintenance), facts, now);
        c.protection_changes(&judged, now)
    };
    for cmd in changes {
        if let Err(e) = ctx.raft.write(cmd).await {
            warn!(error = %e, "could not commit a protection warning");
            return;
        }
    }
}

/// Completes every transition whose new primary reported healthy: this
/// coordinator applied that report, so from now on it (and every node that
/// applied it) answers DNS with the new primary.
async fn finish_transitions(ctx: &NodeContext) {
    let done: Vec<u64> = {
        let state = ctx.state.borrow();
        state
            .cluster
            .transitions
            .iter()
            .filter(|t| {
                t.outcome == tandem_core::state::TransitionOutcome::InProgress
                    && t.phases.healthy_unix_ms.is_some()
                    && t.phases.dns_unix_ms.is_none()
            })
            .map(|t| t.id)
            .collect()
    };
    for transition in done {
        let cmd = Command::TransitionDone {
            transition,
            dns_unix_ms: ctx.clock.unix_ms(),
        };
        if let Err(e) = ctx.raft.write(cmd).await {
            warn!(transition, error = %e, "could not record the end of a transition");
        }
    }
}

/// The pause after a node's first failed fencing attempt; it doubles after
/// each further failure, up to [`FENCE_RETRY_MAX`].
pub const FENCE_RETRY: Duration = Duration::from_secs(2);
pub const FENCE_RETRY_MAX: Duration = Duration::from_secs(30);

/// The coordinator's fencing: one attempt at a time per node in
/// `fencing_needed` that has devices, retried with a growing pause; each
/// success is committed (`Fenced`), and a failure when its detail differs
/// from the last one committed (`FenceFailed`), so a device that stays
/// broken does not flood the event log. It never guesses: a node without
/// devices waits for an operator's `tandem fence confirm`.
#[derive(Default)]
struct Fencer {
    running: BTreeMap<String, JoinHandle<()>>,
    /// When to try a node again, and the pause after the next failure.
    next_try: BTreeMap<String, (Millis, Duration)>,
}

impl Fencer {
    fn poll(&mut self, ctx: &NodeContext) {
        let state = ctx.state.borrow().clone();
        let c = &state.cluster;
        // An attempt for a node no longer waiting (fenced meanwhile, or
        // confirmed by an operator) must not power it off later.
        self.running.retain(|node, t| {
            if !c.fencing_needed.contains_key(node) {
                t.abort();
                return false;
            }
            !t.is_finished()
        });
        self.next_try.retain(|n, _| c.fencing_needed.contains_key(n));
        for node in c.fencing_needed.keys() {
            if !c.spec.fencing.has_devices(node) || self.running.contains_key(node) {
                continue;
            }
            let (at, pause) = self
                .next_try
                .get(node)
                .copied()
                .unwrap_or((ctx.clock.now(), FENCE_RETRY));
            if ctx.clock.now() < at {
                continue;
            }
            if *node == ctx.me.name {
                // Its device may power this node off before the outcome is
                // committed; the request is, so the next coordinator fences
                // it again (off is idempotent) and commits.
                error!(%node, "this node, the coordinator, needs fencing: fencing itself");
            }
            self.next_try.insert(
                node.clone(),
                (ctx.clock.now().plus(pause), (pause * 2).min(FENCE_RETRY_MAX)),
            );
            let (ctx, node2, fencing) = (ctx.clone(), node.clone(), c.spec.fencing.clone());
            let last_failure = c.fence_failures.get(node).cloned();
            let task = tokio::spawn(async move {
                let _ = fence_and_commit(ctx, node2, fencing, last_failure).await;
            });
            self.running.insert(node.clone(), task);
        }
    }

    /// A deposed coordinator stops fencing: its successor decides anew.
    fn abort_all(&mut self) {
        for (_, t) in std::mem::take(&mut self.running) {
            t.abort();
        }
        self.next_try.clear();
    }
}

/// Runs `node`'s fence levels (action off) and commits the outcome (a
/// failure only when it differs from `last_failure`, the one committed last).
pub async fn fence_and_commit(
    ctx: NodeContext,
    node: String,
    fencing: tandem_core::spec::FencingSpec,
    last_failure: Option<String>,
) -> Result<String, String> {
    info!(%node, "fencing");
    let result = fence_node(&fencing, &node, FenceAction::Off).await;
    ctx.counters.fence_attempt(result.fenced);
    let summary = result.summary();
    let actor = format!("node:{}", ctx.me.name);
    let cmd = if result.fenced {
        info!(%node, %summary, "fenced");
        Command::Fenced {
            node: node.clone(),
            how: summary.clone(),
            actor,
            at_unix_ms: ctx.clock.unix_ms(),
        }
    } else {
        warn!(%node, %summary, "fencing failed; will retry");
        if last_failure.as_deref() == Some(summary.as_str()) {
            return Err(summary);
        }
        Command::FenceFailed {
            node: node.clone(),
            detail: summary.clone(),
            actor,
            at_unix_ms: ctx.clock.unix_ms(),
        }
    };
    match ctx.raft.write(cmd).await {
        Ok(_) if result.fenced => Ok(summary),
        Ok(_) => Err(summary),
        Err(e) => {
            warn!(%node, error = %e, "could not commit the fencing outcome");
            Err(format!("{summary}; the outcome could not be committed: {e}"))
        }
    }
}
