//! The coordinator side of the resource manager: on every pass, asks the
//! core where each group should run ([`tandem_core::placement::plan`]) and
//! commits each decision with the next epoch.

use std::collections::BTreeSet;

use tandem_core::NodeId;
use tandem_core::membership::node_id;
use tandem_core::placement::{NodeFacts, Plan, plan};
use tandem_core::state::Command;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::unix_ms;
use crate::liveness::member_ids;
use crate::node::NodeContext;

/// The nodes as this node sees them now, for placement.
pub fn node_facts(ctx: &NodeContext) -> Vec<NodeFacts> {
    let now = ctx.clock.now();
    let term = ctx.raft.metrics().borrow().current_term;
    let members: BTreeSet<NodeId> = member_ids(ctx);
    let (view, _) = ctx.liveness.view(now, &members);
    let mut facts: Vec<NodeFacts> = view
        .iter()
        .filter_map(|e| {
            let info = ctx.member(e.id)?;
            Some(NodeFacts {
                name: info.name,
                role: info.role,
                state: e.state,
                lease_expired: ctx.liveness.lease_certainly_expired(term, e.id, now),
                standby: false,
            })
        })
        .collect();
    // A node removed from the cluster may still run what it ran: it counts
    // as stopped only once its lease has certainly expired.
    let state = ctx.state.borrow().clone();
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
        });
    }
    facts
}

/// The placement plan as this node sees the cluster now. Decisions are only
/// committed by the coordinator; other nodes use it to explain what blocks.
pub fn current_plan(ctx: &NodeContext) -> Plan {
    let facts = node_facts(ctx);
    let state = ctx.state.borrow().clone();
    let c = &state.cluster;
    plan(&c.spec, &c.groups, &c.fencing_needed, &facts, unix_ms())
}

/// Runs placement passes while this node is the coordinator, until `shutdown`.
pub async fn run_manager(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
    let mut state = ctx.state.clone();
    let mut liveness = ctx.liveness.subscribe();
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
            continue;
        }
        let p = current_plan(&ctx);
        for d in p.decisions {
            // The epoch the plan was made for: if anything moved the group
            // meanwhile, the state machine refuses this stale decision.
            let epoch = d.epoch;
            info!(group = %d.group, nodes = ?d.assign, epoch, reason = %d.reason, "assigning");
            let cmd = Command::Assign {
                group: d.group.clone(),
                nodes: d.assign,
                epoch,
                reason: d.reason,
                at_unix_ms: unix_ms(),
            };
            match ctx.raft.client_write(cmd).await {
                Ok(r) => {
                    if let Some(why) = r.data.rejected {
                        warn!(group = %d.group, reason = %why, "assignment not applied");
                    }
                }
                Err(e) => {
                    warn!(group = %d.group, error = %e, "could not commit the assignment");
                    break;
                }
            }
        }
    }
}
