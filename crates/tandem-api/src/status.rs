//! The cluster status as one node sees it, built from local state only.

use tandem_proto::v1 as pb;

use crate::clock::unix_ms;
use crate::convert::{role_to_pb, state_to_pb};
use crate::liveness::member_ids;
use crate::node::NodeContext;

/// The status this node reports now. Never goes through Raft, so it stays
/// cheap to poll during a failover.
pub fn build(ctx: &NodeContext) -> pb::ClusterStatus {
    let now = ctx.clock.now();
    let members = member_ids(ctx);
    let (view, fresh) = ctx.liveness.view(now, &members);
    let metrics = ctx.raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let leading = m.state.is_leader() && m.current_leader == Some(ctx.id);
    let matched = |id: u64| -> Option<u64> {
        if !leading {
            return None;
        }
        if id == ctx.id {
            return m.last_log_index;
        }
        m.replication.as_ref()?.get(&id)?.as_ref().map(|l| l.index)
    };
    let applied_index = m.last_applied.map_or(0, |l| l.index);
    // The coordinator knows the commit index: the highest index a majority of
    // voters hold. Other nodes report what they applied, which they know is
    // committed.
    let commit_index = if leading {
        let mut held: Vec<u64> = voters.iter().map(|&id| matched(id).unwrap_or(0)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        held.get(voters.len() / 2).copied().unwrap_or(0).max(applied_index)
    } else {
        applied_index
    };
    let nodes = view
        .iter()
        .filter_map(|e| {
            let info = membership.get_node(&e.id)?;
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
                voter: voters.contains(&e.id),
                matched_index: matched(e.id),
            })
        })
        .collect();
    pb::ClusterStatus {
        cluster: ctx.cluster.clone(),
        coordinator: m
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|n| n.name.clone()),
        term: m.current_term,
        commit_index,
        applied_index,
        answered_by: ctx.me.name.clone(),
        nodes,
        at_unix_ms: unix_ms(),
        view_fresh: fresh,
    }
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
