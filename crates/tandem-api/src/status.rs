//! The cluster status as one node sees it, built from local state only.

use std::sync::Arc;

use tandem_core::groups::{GroupState, Phase};
use tandem_core::spec::GroupKind;
use tandem_node::node::NodeContext;
use tandem_proto::v1 as pb;
use tandem_raft::store::AppliedState;
use tokio::sync::watch;

use crate::convert::{role_to_pb, state_to_pb};

/// How old a cached status may be when nothing it is built from changed:
/// only heartbeat ages, `at_unix_ms` and states derived from ages (up,
/// suspect, down; lease validity) move on their own, by at most this much.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_millis(5);

/// The last status built, shared by every GetStatus and WatchStatus of a
/// node: rebuilt when the applied state, the Raft metrics or the liveness
/// changed since, or when it is older than [`MAX_AGE`]. Under load a node
/// builds a status at most a few hundred times a second, however many
/// clients ask.
pub struct StatusCache {
    last: std::sync::Mutex<Option<Cached>>,
}

struct Cached {
    built: std::time::Instant,
    status: Arc<pb::ClusterStatus>,
    /// What the status was built from, marked seen when it was built.
    state: watch::Receiver<Arc<AppliedState>>,
    metrics: tandem_raft::ViewWatch,
    liveness: watch::Receiver<u64>,
}

impl Cached {
    fn current(&self) -> bool {
        // A closed channel counts as a change: rebuild, and let build say what it can.
        self.built.elapsed() < MAX_AGE
            && !self.state.has_changed().unwrap_or(true)
            && !self.metrics.has_changed().unwrap_or(true)
            && !self.liveness.has_changed().unwrap_or(true)
    }
}

impl Default for StatusCache {
    fn default() -> Self {
        StatusCache {
            last: std::sync::Mutex::new(None),
        }
    }
}

impl StatusCache {
    /// The status as of at most [`MAX_AGE`] ago, reflecting every change
    /// of state, metrics and liveness published before the call.
    pub fn get(&self, ctx: &NodeContext) -> Arc<pb::ClusterStatus> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = last.as_ref()
            && c.current()
        {
            return c.status.clone();
        }
        let (mut state, mut metrics, mut liveness) = match last.take() {
            Some(c) => (c.state, c.metrics, c.liveness),
            None => (ctx.state.clone(), ctx.raft.watch(), ctx.liveness.subscribe()),
        };
        // Seen before building: a change during the build makes the next call rebuild.
        state.mark_unchanged();
        metrics.mark_unchanged();
        liveness.mark_unchanged();
        let status = Arc::new(build(ctx));
        *last = Some(Cached {
            built: std::time::Instant::now(),
            status: status.clone(),
            state,
            metrics,
            liveness,
        });
        status
    }
}

/// The status this node reports now. Never goes through Raft, so it stays
/// cheap to poll during a failover.
pub fn build(ctx: &NodeContext) -> pb::ClusterStatus {
    let now = ctx.clock.now();
    let members = ctx.member_ids();
    let (view, fresh) = ctx.liveness.view(now, &members);
    let raft = ctx.raft.view();
    let progress = ctx.raft.progress();
    let leading = raft.is_leader(ctx.id);
    let matched = |id: u64| -> Option<u64> {
        if !leading {
            return None;
        }
        if id == ctx.id {
            return progress.last_log_index;
        }
        progress.matched.as_ref()?.get(&id).copied().flatten()
    };
    // What this node applied is certainly committed; a higher commit index
    // would need the joint-consensus majority rules to report honestly.
    let applied_index = progress.last_applied.unwrap_or(0);
    let commit_index = applied_index;
    let modes = {
        let st = ctx.state.borrow();
        (st.cluster.standby.clone(), st.cluster.maintenance.clone())
    };
    let nodes = view
        .iter()
        .filter_map(|e| {
            let info = raft.members.get(&e.id)?;
            let lease_valid = if e.id == ctx.id {
                ctx.liveness.own_lease_valid(now)
            } else {
                e.lease_valid(&ctx.timing)
            };
            Some(pb::NodeStatus {
                name: info.name.clone(),
                role: role_to_pb(info.role).into(),
                address: info.address.clone(),
                state: state_to_pb(e.state).into(),
                lease_valid,
                last_heartbeat_age_ms: e.age.map(tandem_core::timing::duration_ms),
                version: e.version.clone(),
                voter: raft.voters.contains(&e.id),
                matched_index: matched(e.id),
                standby: modes.0.contains(&info.name),
                maintenance: modes.1.cluster || modes.1.nodes.contains(&info.name),
            })
        })
        .collect();
    let (groups, spec_version, fencing_needed) = groups(ctx);
    let transitions = recent_transitions(ctx);
    let backup = {
        let b = ctx.counters.backup.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now_ms = ctx.clock.unix_ms();
        b.interval_ms.map(|interval_ms| pb::BackupStatus {
            interval_ms,
            dir: b.dir.clone(),
            keep: b.keep,
            last_file: b.last_file.clone().unwrap_or_default(),
            last_index: b.last_index,
            last_unix_ms: b.last_unix_ms,
            last_failure: b.last_failure.clone().unwrap_or_default(),
            failures: b.failures,
            warning: b.warning(now_ms).unwrap_or_default(),
            coordinator: b.coordinator_since_unix_ms.is_some(),
        })
    };
    pb::ClusterStatus {
        backup,
        groups,
        spec_version,
        fencing_needed,
        cluster: ctx.cluster.clone(),
        coordinator: raft.coordinator().map(|(_, n)| n.name),
        term: raft.term,
        commit_index,
        applied_index,
        answered_by: ctx.me.name.clone(),
        nodes,
        at_unix_ms: ctx.clock.unix_ms(),
        view_fresh: fresh,
        maintenance: modes.1.cluster,
        transitions,
    }
}

/// How many completed or abandoned transitions a status carries, besides
/// those in progress.
const RECENT_TRANSITIONS: usize = 5;

/// Transitions in progress and the last few finished ones, oldest first.
fn recent_transitions(ctx: &NodeContext) -> Vec<pb::Transition> {
    let state = ctx.state.borrow();
    let all = &state.cluster.transitions;
    let mut finished = 0;
    let mut out: Vec<pb::Transition> = all
        .iter()
        .rev()
        .filter(|t| {
            let open = t.outcome == tandem_core::state::TransitionOutcome::InProgress;
            if !open {
                finished += 1;
            }
            open || finished <= RECENT_TRANSITIONS
        })
        .map(crate::convert::transition_to_pb)
        .collect();
    out.reverse();
    out
}

/// The parts of a status a watcher cares about: everything but ages and
/// timestamps, which change all the time.
pub fn significant(s: &pb::ClusterStatus) -> pb::ClusterStatus {
    let mut s = s.clone();
    s.at_unix_ms = 0;
    for n in &mut s.nodes {
        n.last_heartbeat_age_ms = None;
        n.matched_index = None;
    }
    s
}

/// Every group's status, derived from the replicated state and the local
/// placement plan (for the reasons a group is blocked).
fn groups(ctx: &NodeContext) -> (Vec<pb::GroupStatus>, u64, std::collections::HashMap<String, String>) {
    let plan = tandem_node::manager::current_plan(ctx);
    let facts = tandem_node::manager::node_facts(ctx);
    let state = ctx.state.borrow().clone();
    let c = &state.cluster;
    let now = ctx.clock.unix_ms();
    let mut names: Vec<String> = c.spec.groups.iter().map(|g| g.name.clone()).collect();
    for n in c.groups.keys() {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let out = names
        .iter()
        .map(|name| {
            let spec = c.spec.groups.iter().find(|g| &g.name == name);
            let gs = c.groups.get(name).cloned().unwrap_or_default();
            let kind = spec.map_or(GroupKind::Exclusive, |g| g.kind);
            let blocked = plan.blocked.get(name).cloned().unwrap_or_default();
            let state = group_state(&gs, &blocked);
            let timeout = spec.map_or(std::time::Duration::ZERO, |g| g.failure_timeout);
            let mut resources = Vec::new();
            for (node, report) in &gs.reports {
                if !gs.assigned.contains(node) && report.phase == Phase::Stopped {
                    continue;
                }
                for r in &report.resources {
                    let horizon = if timeout.is_zero() {
                        0
                    } else {
                        now.saturating_sub(tandem_core::timing::duration_ms(timeout))
                    };
                    let failures = gs.failures.get(node).map_or(0, |l| {
                        l.iter()
                            .filter(|f| f.resource == r.name && f.at_unix_ms >= horizon)
                            .count()
                    });
                    resources.push(pb::ResourceStatus {
                        name: r.name.clone(),
                        node: node.clone(),
                        last_action: r.action.clone(),
                        result: r.result.clone(),
                        failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    });
                }
            }
            pb::GroupStatus {
                name: name.clone(),
                kind: match kind {
                    GroupKind::Exclusive => "exclusive".into(),
                    GroupKind::Clone => "clone".into(),
                },
                state: state.into(),
                primary: (kind == GroupKind::Exclusive)
                    .then(|| gs.assigned.iter().next().cloned())
                    .flatten(),
                nodes: gs.assigned.iter().cloned().collect(),
                epoch: gs.epoch,
                blocked_reason: if state == "blocked" { blocked } else { String::new() },
                reason: gs.reason.clone(),
                resources,
                maintenance: c.maintenance.cluster || c.maintenance.groups.contains(name),
                pending_move: c
                    .moves
                    .get(name)
                    .map(|m| format!("{} to {} requested by {}", m.kind.as_str(), m.to, m.actor))
                    .unwrap_or_default(),
                candidates: candidates(c, &facts, name, now),
                unprotected: c.unprotected.get(name).map(|u| u.reason.clone()).unwrap_or_default(),
                unprotected_since_unix_ms: c.unprotected.get(name).map(|u| u.since_unix_ms),
            }
        })
        .collect();
    let fencing = c
        .fencing_needed
        .iter()
        .map(|(node, why)| {
            let text = match c.fence_failures.get(node) {
                Some(failed) => format!("{why}; last attempt failed: {failed}"),
                None => why.clone(),
            };
            (node.clone(), text)
        })
        .collect();
    (out, c.spec_version, fencing)
}

/// starting, running, stopping, stopped, failed or blocked.
fn group_state(gs: &GroupState, blocked: &str) -> &'static str {
    if gs.reports.values().any(|r| r.phase == Phase::StopFailed) {
        return "blocked";
    }
    if gs.assigned.is_empty() {
        if !blocked.is_empty() {
            return "blocked";
        }
        let stopping = gs.reports.values().any(|r| r.phase != Phase::Stopped);
        return if stopping { "stopping" } else { "stopped" };
    }
    let reports: Vec<_> = gs
        .assigned
        .iter()
        .map(|n| gs.reports.get(n).filter(|r| r.epoch == gs.epoch).map(|r| r.phase))
        .collect();
    if reports.contains(&Some(Phase::Failed)) {
        "failed"
    } else if reports.contains(&Some(Phase::Stopping)) || reports.contains(&Some(Phase::Stopped)) {
        // Assigned, but stopped there (its lease lapsed, its resources changed).
        "stopping"
    } else if reports.iter().all(|p| *p == Some(Phase::Running)) {
        "running"
    } else {
        "starting"
    }
}

/// Every member that may host `group`, with its data's freshness and
/// whether placement would consider it now.
fn candidates(
    c: &tandem_core::state::ClusterState,
    facts: &[tandem_core::placement::NodeFacts],
    group: &str,
    now_unix_ms: u64,
) -> Vec<pb::Candidate> {
    use tandem_core::groups::Freshness;
    tandem_core::placement::candidates(
        &c.spec,
        &c.groups,
        &c.fencing_needed,
        Some(&c.maintenance),
        facts,
        group,
        now_unix_ms,
    )
    .into_iter()
    .map(|k| pb::Candidate {
        node: k.node,
        freshness: k.freshness.map(|f| f.to_string()).unwrap_or_default(),
        position: match k.freshness {
            Some(Freshness::Position(p)) => Some(p),
            _ => None,
        },
        lag_ms: match k.freshness {
            Some(Freshness::LagMs(ms)) => Some(ms),
            _ => None,
        },
        behind: k.behind,
        eligible: k.unfit.is_none(),
        reason: k.unfit.unwrap_or_default(),
    })
    .collect()
}
