//! Operator preconditions: whether a switchover, failover, standby or
//! `fence confirm` may be committed now, and if not, why.
//!
//! The coordinator checks these before it proposes the command; the faces
//! only map a [`Refusal`] to their status codes. The target of a move is
//! [`crate::placement::move_target`]'s, with placement's own rules.

use std::fmt;
use std::time::Duration;

use crate::lease::NodeState;
use crate::membership::NodeRole;
use crate::placement::{NodeFacts, move_target};
use crate::spec::GroupKind;
use crate::state::{ClusterState, TransitionKind};
use crate::timing::{Timing, duration_ms};

/// Why an operator's request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
}

/// What kind of refusal: the faces map it to their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The group or node named does not exist.
    NotFound,
    /// It exists, but the cluster is not in a state that allows the request.
    FailedPrecondition,
}

impl Refusal {
    fn not_found(message: String) -> Self {
        Refusal {
            kind: RefusalKind::NotFound,
            message,
        }
    }

    fn precondition(message: String) -> Self {
        Refusal {
            kind: RefusalKind::FailedPrecondition,
            message,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A move an operator may commit: from the current primary (if any) to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovePlan {
    pub from: Option<String>,
    pub to: String,
}

/// An operator's switchover or failover request.
#[derive(Debug, Clone, Copy)]
pub struct MoveAsk<'a> {
    pub group: &'a str,
    /// The target asked for; `None`: the best candidate.
    pub to: Option<&'a str>,
    pub kind: TransitionKind,
    /// Waives the migration threshold and freshness, never safety.
    pub force: bool,
}

/// Checks an operator's switchover or failover against the committed state
/// and the node view `facts`.
///
/// `member_role` tells whether a node name is a member (and its role).
pub fn check_move(
    c: &ClusterState,
    facts: &[NodeFacts],
    member_role: impl Fn(&str) -> Option<NodeRole>,
    ask: MoveAsk<'_>,
    now_unix_ms: u64,
) -> Result<MovePlan, Refusal> {
    let MoveAsk { group, to, kind, force } = ask;
    let what = kind.as_str();
    let Some(spec) = c.spec.group(group) else {
        return Err(Refusal::not_found(format!("there is no group {group:?} in the spec")));
    };
    if spec.kind == GroupKind::Clone {
        return Err(Refusal::precondition(format!(
            "{group} is a clone group: it runs on every eligible node, so there is no primary to move"
        )));
    }
    if let Some(t) = to
        && member_role(t).is_none()
    {
        return Err(Refusal::not_found(format!("there is no member named {t:?}")));
    }
    let from = c.groups.get(group).and_then(|g| g.assigned.iter().next().cloned());
    if kind == TransitionKind::Switchover {
        if let Some(m) = c.moves.get(group) {
            return Err(Refusal::precondition(format!(
                "a {} of {group} to {} is in progress (requested by {}); wait for it, or force a move with `tandem failover`",
                m.kind.as_str(),
                m.to,
                m.actor
            )));
        }
        let Some(primary) = &from else {
            return Err(Refusal::precondition(format!(
                "{group} has no primary to switch over from; use `tandem failover {group}` to place it"
            )));
        };
        let up = facts.iter().any(|f| &f.name == primary && f.state == NodeState::Up);
        if !up {
            return Err(Refusal::precondition(format!(
                "the primary {primary} does not answer: a switchover needs a responsive primary; \
                 use `tandem failover {group}` (it fences {primary} first where needed)"
            )));
        }
    }
    let to = move_target(
        &c.spec,
        &c.groups,
        &c.fencing_needed,
        &c.maintenance,
        facts,
        group,
        to,
        force,
        now_unix_ms,
    )
    .map_err(|why| Refusal::precondition(format!("{what} of {group} refused: {why}")))?;
    Ok(MovePlan { from, to })
}

/// Checks switching standby `on` or off for `node` (`role`: its role if it
/// is a member). Unless forced, standby is refused when it would stop an
/// exclusive group with nowhere to go: draining must move groups, not stop
/// them (the drain follows placement, which counts failures only at the
/// migration threshold and does not check freshness: so does this check).
pub fn check_standby(
    c: &ClusterState,
    facts: &[NodeFacts],
    node: &str,
    role: Option<NodeRole>,
    on: bool,
    force: bool,
    now_unix_ms: u64,
) -> Result<(), Refusal> {
    match role {
        // A node removed while in standby can still be taken out of it.
        None if !on && c.standby.contains(node) => {}
        None => return Err(Refusal::not_found(format!("there is no member named {node:?}"))),
        Some(NodeRole::Witness) => {
            return Err(Refusal::precondition(format!(
                "{node} is a witness: it hosts nothing, so standby has no effect"
            )));
        }
        Some(NodeRole::Member) => {}
    }
    if !on || force {
        return Ok(());
    }
    for g in c.spec.groups.iter().filter(|g| g.kind == GroupKind::Exclusive) {
        if !c.groups.get(&g.name).is_some_and(|s| s.assigned.contains(node)) {
            continue;
        }
        if let Err(why) = move_target(
            &c.spec,
            &c.groups,
            &c.fencing_needed,
            &c.maintenance,
            facts,
            &g.name,
            None,
            true,
            now_unix_ms,
        ) {
            return Err(Refusal::precondition(format!(
                "standby of {node} would stop {} with nowhere to go: {why}; --force stops it",
                g.name
            )));
        }
    }
    Ok(())
}

/// Checks an operator's `fence confirm` of `node`: it is recorded as off
/// only once its lease has certainly expired (until then it may still run
/// its groups on its own authority). `state` and `heard` are the
/// coordinator's view of the node (age of its last granted heartbeat).
pub fn check_fence_confirm(
    node: &str,
    lease_certainly_expired: bool,
    state: NodeState,
    heard: Option<Duration>,
) -> Result<(), Refusal> {
    if lease_certainly_expired {
        return Ok(());
    }
    let heard = heard.map_or_else(
        || "not since this coordinator's election".to_string(),
        |a| format!("{} ms ago", a.as_millis()),
    );
    Err(Refusal::precondition(format!(
        "{node} is {state} (last heartbeat {heard}): its lease may still be valid, so it may still run its \
         groups; refusing to record it as fenced until it shows down"
    )))
}

/// The timing values a heartbeat carries (lease, clock drift margin,
/// election timeout), which must equal the coordinator's: leases are only
/// safe when every node counts them alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTiming {
    pub lease_ms: u64,
    pub clock_drift_margin_ms: u64,
    pub election_timeout_ms: u64,
}

impl PeerTiming {
    pub fn of(t: &Timing) -> Self {
        PeerTiming {
            lease_ms: duration_ms(t.lease),
            clock_drift_margin_ms: duration_ms(t.clock_drift_margin),
            election_timeout_ms: duration_ms(t.election_timeout),
        }
    }
}

/// Refuses a heartbeat from `node` whose timing differs from the
/// coordinator's `ours` (no lease is granted to it).
pub fn check_peer_timing(node: &str, theirs: PeerTiming, ours: &Timing) -> Result<(), String> {
    let ours = PeerTiming::of(ours);
    if theirs == ours {
        return Ok(());
    }
    let t = |p: PeerTiming| (p.lease_ms, p.clock_drift_margin_ms, p.election_timeout_ms);
    Err(format!(
        "timing differs from the coordinator's (lease, clock_drift_margin, election_timeout in ms: \
         {:?} on {node}, {:?} on the coordinator); every node needs the same [timing]",
        t(theirs),
        t(ours)
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::groups::GroupState;
    use crate::spec::Spec;

    fn facts(name: &str, state: NodeState) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            role: NodeRole::Member,
            state,
            lease_expired: state == NodeState::Down,
            standby: false,
            freshness: BTreeMap::new(),
        }
    }

    fn cluster(kind: &str, primary: Option<&str>) -> ClusterState {
        let text = format!(
            "[[groups]]\nname = \"web\"\nkind = \"{kind}\"\n[[groups.resources]]\nname = \"a\"\nagent = \"exec\"\ncommand = \"/bin/a\"\n"
        );
        let mut c = ClusterState {
            spec: Spec::parse(&text, "spec.toml", &[]).unwrap_or_else(|e| panic!("{e}")),
            ..ClusterState::default()
        };
        let mut g = GroupState::default();
        g.assign(&primary.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(), 3);
        c.groups.insert("web".into(), g);
        c
    }

    fn member(n: &str) -> Option<NodeRole> {
        match n {
            "site-a" | "site-b" => Some(NodeRole::Member),
            "witness" => Some(NodeRole::Witness),
            _ => None,
        }
    }

    fn ask<'a>(group: &'a str, to: Option<&'a str>, kind: TransitionKind, force: bool) -> MoveAsk<'a> {
        MoveAsk { group, to, kind, force }
    }

    #[test]
    fn a_switchover_needs_a_responsive_primary_and_a_fit_target() {
        let c = cluster("exclusive", Some("site-a"));
        let up = [facts("site-a", NodeState::Up), facts("site-b", NodeState::Up)];
        let plan = check_move(&c, &up, member, ask("web", None, TransitionKind::Switchover, false), 0);
        assert_eq!(
            plan,
            Ok(MovePlan {
                from: Some("site-a".into()),
                to: "site-b".into()
            })
        );
        let down = [facts("site-a", NodeState::Suspect), facts("site-b", NodeState::Up)];
        let e = check_move(
            &c,
            &down,
            member,
            ask("web", None, TransitionKind::Switchover, false),
            0,
        )
        .unwrap_err();
        assert_eq!(e.kind, RefusalKind::FailedPrecondition);
        assert!(e.message.contains("does not answer"), "{e}");
        // A failover does not need the primary.
        assert!(
            check_move(
                &c,
                &down,
                member,
                ask("web", Some("site-b"), TransitionKind::Failover, false),
                0
            )
            .is_ok()
        );
    }

    #[test]
    fn moves_name_what_is_missing() {
        let c = cluster("exclusive", None);
        let up = [facts("site-a", NodeState::Up)];
        let e = check_move(&c, &up, member, ask("db", None, TransitionKind::Failover, false), 0).unwrap_err();
        assert_eq!(e.kind, RefusalKind::NotFound);
        let e = check_move(
            &c,
            &up,
            member,
            ask("web", Some("nowhere"), TransitionKind::Failover, false),
            0,
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.message.contains("\"nowhere\"")),
            (RefusalKind::NotFound, true)
        );
        let e = check_move(&c, &up, member, ask("web", None, TransitionKind::Switchover, false), 0).unwrap_err();
        assert!(e.message.contains("no primary to switch over from"), "{e}");
        let c = cluster("clone", None);
        let e = check_move(&c, &up, member, ask("web", None, TransitionKind::Failover, false), 0).unwrap_err();
        assert!(e.message.contains("clone group"), "{e}");
    }

    #[test]
    fn standby_that_strands_a_group_is_refused_unless_forced() {
        let c = cluster("exclusive", Some("site-a"));
        let alone = [facts("site-a", NodeState::Up), facts("site-b", NodeState::Down)];
        let e = check_standby(&c, &alone, "site-a", member("site-a"), true, false, 0).unwrap_err();
        assert!(e.message.contains("nowhere to go"), "{e}");
        assert!(check_standby(&c, &alone, "site-a", member("site-a"), true, true, 0).is_ok());
        assert!(check_standby(&c, &alone, "site-a", member("site-a"), false, false, 0).is_ok());
        let both = [facts("site-a", NodeState::Up), facts("site-b", NodeState::Up)];
        assert!(check_standby(&c, &both, "site-a", member("site-a"), true, false, 0).is_ok());
        let e = check_standby(&c, &both, "witness", member("witness"), true, false, 0).unwrap_err();
        assert!(e.message.contains("witness"), "{e}");
        let e = check_standby(&c, &both, "gone", None, true, false, 0).unwrap_err();
        assert_eq!(e.kind, RefusalKind::NotFound);
        // A removed node still in standby can be taken out of it.
        let mut c = c;
        c.standby.insert("gone".into());
        assert!(check_standby(&c, &both, "gone", None, false, false, 0).is_ok());
    }

    #[test]
    fn fence_confirm_waits_until_the_lease_certainly_expired() {
        let e = check_fence_confirm("site-a", false, NodeState::Suspect, Some(Duration::from_millis(900))).unwrap_err();
        assert!(e.message.contains("suspect (last heartbeat 900 ms ago)"), "{e}");
        let e = check_fence_confirm("site-a", false, NodeState::Suspect, None).unwrap_err();
        assert!(e.message.contains("not since this coordinator's election"), "{e}");
        assert!(check_fence_confirm("site-a", true, NodeState::Down, None).is_ok());
    }

    #[test]
    fn a_heartbeat_with_other_timing_is_refused() {
        let t = Timing::default();
        assert!(check_peer_timing("site-b", PeerTiming::of(&t), &t).is_ok());
        let theirs = PeerTiming {
            lease_ms: 3000,
            ..PeerTiming::of(&t)
        };
        let e = check_peer_timing("site-b", theirs, &t).unwrap_err();
        assert!(
            e.contains("(3000, 200, 100) on site-b, (2000, 200, 100) on the coordinator"),
            "{e}"
        );
    }
}
