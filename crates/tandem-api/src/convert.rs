//! Conversions between core types and protobuf.

use tandem_core::NodeRole;
use tandem_core::lease::NodeState;
use tandem_core::state::{Event, EventKind};
use tandem_proto::v1 as pb;

pub fn role_to_pb(role: NodeRole) -> pb::NodeRole {
    match role {
        NodeRole::Member => pb::NodeRole::Member,
        NodeRole::Witness => pb::NodeRole::Witness,
    }
}

pub fn role_from_pb(role: i32) -> Option<NodeRole> {
    match pb::NodeRole::try_from(role).ok()? {
        pb::NodeRole::Member | pb::NodeRole::Unspecified => Some(NodeRole::Member),
        pb::NodeRole::Witness => Some(NodeRole::Witness),
    }
}

pub fn state_to_pb(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Up => pb::NodeState::Up,
        NodeState::Suspect => pb::NodeState::Suspect,
        NodeState::Down => pb::NodeState::Down,
    }
}

pub fn event_kind_str(kind: EventKind) -> &'static str {
    kind.as_str()
}

pub fn event_to_pb(e: &Event) -> pb::Event {
    pb::Event {
        seq: e.seq,
        at_unix_ms: e.at_unix_ms,
        actor: e.actor.clone(),
        kind: event_kind_str(e.kind).to_string(),
        message: e.message.clone(),
        group: e.group.clone().unwrap_or_default(),
    }
}

pub fn transition_to_pb(t: &tandem_core::state::Transition) -> pb::Transition {
    use tandem_core::state::TransitionOutcome;
    let (outcome, outcome_reason) = match &t.outcome {
        TransitionOutcome::InProgress => ("in_progress", String::new()),
        TransitionOutcome::Completed => ("completed", String::new()),
        TransitionOutcome::Abandoned(why) => ("abandoned", why.clone()),
    };
    pb::Transition {
        id: t.id,
        group: t.group.clone(),
        kind: t.kind.as_str().into(),
        from: t.from.clone().unwrap_or_default(),
        to: t.to.clone().unwrap_or_default(),
        reason: t.reason.clone(),
        actor: t.actor.clone(),
        epoch: t.epoch,
        phases: t
            .phases
            .named()
            .iter()
            .filter_map(|(name, at)| {
                Some(pb::TransitionPhase {
                    name: (*name).into(),
                    at_unix_ms: (*at)?,
                })
            })
            .collect(),
        outcome: outcome.into(),
        outcome_reason,
    }
}

/// The actor a request names, as recorded in events ("unknown" when none).
pub fn actor(given: &str) -> String {
    if given.trim().is_empty() {
        "unknown".to_string()
    } else {
        given.to_string()
    }
}

/// A committed membership change, as answered to the caller.
pub fn member_change_to_pb(c: tandem_node::membership::MemberChange) -> pb::MemberChangeReply {
    pb::MemberChangeReply {
        voters: c.voters,
        log_index: c.log_index,
    }
}

/// A what-if's outcome as the API's reply.
pub fn simulation_to_pb(o: tandem_core::whatif::Outcome, answered_by: String, spec_version: u64) -> pb::SimulateReply {
    use tandem_core::spec::GroupKind;
    pb::SimulateReply {
        groups: o
            .groups
            .into_iter()
            .map(|g| pb::SimulatedGroup {
                name: g.name,
                kind: match g.kind {
                    Some(GroupKind::Exclusive) => "exclusive".into(),
                    Some(GroupKind::Clone) => "clone".into(),
                    None => String::new(),
                },
                nodes_now: g.now.into_iter().collect(),
                epoch_now: g.epoch_now,
                nodes: g.then.into_iter().collect(),
                epoch: g.epoch_then,
                steps: g.steps,
                blocked_reason: g.blocked.unwrap_or_default(),
                unprotected: g.unprotected.unwrap_or_default(),
            })
            .collect(),
        fences: o
            .fences
            .into_iter()
            .map(|(node, f)| pb::SimulatedFence {
                node,
                reason: f.reason,
                devices: f.devices,
            })
            .collect(),
        assumptions: o.assumptions,
        refusals: o.refusals,
        settled: o.settled,
        answered_by,
        spec_version,
    }
}
