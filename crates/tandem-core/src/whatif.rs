//! What-if: what the coordinator would decide if nodes were lost, put in
//! standby, or a new spec applied (`tandem simulate`, like Pacemaker's
//! `crm_simulate`). Nothing here is committed: the decisions come from the
//! very functions the coordinator and the state machine use
//! ([`placement::plan_with`], [`ClusterState::apply`]) on a copy of the
//! state, played forward until placement has nothing more to do.
//!
//! What the real cluster does between two placement passes is assumed to
//! succeed: a node asked to stop a group stops it, a node assigned one
//! starts it, every fence device works. A lost node is taken as down with
//! its lease certainly expired (the state placement reaches a lease after
//! the loss). The outcome says so in its `assumptions`.

use std::collections::{BTreeMap, BTreeSet};

use crate::groups::{NodeReport, Phase};
use crate::lease::NodeState;
use crate::membership::NodeRole;
use crate::operator::check_standby;
use crate::placement::{self, NodeFacts, Operator, Protection};
use crate::spec::{GroupKind, Spec};
use crate::state::{ClusterState, Command};

/// The changes to imagine.
#[derive(Debug, Clone, Default)]
pub struct Hypothesis {
    /// Nodes lost (their agent, services and site gone).
    pub nodes_down: BTreeSet<String>,
    /// Nodes an operator puts in standby (`tandem standby`).
    pub standby: BTreeSet<String>,
    /// A spec to apply instead of the one in force (already validated).
    pub spec: Option<Spec>,
}

/// What the coordinator would end up deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every group of the (new) spec, and those it removes, by name.
    pub groups: Vec<GroupOutcome>,
    /// Nodes that would need fencing, by name.
    pub fences: BTreeMap<String, Fence>,
    /// What the prediction takes for granted.
    pub assumptions: Vec<String>,
    /// Operator commands among the changes that the cluster would refuse
    /// (the prediction shows what would happen if they were forced).
    pub refusals: Vec<String>,
    /// Placement found nothing more to do within the round limit.
    pub settled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOutcome {
    pub name: String,
    /// `None`: the group leaves the spec.
    pub kind: Option<GroupKind>,
    /// Where it is assigned now, and its epoch.
    pub now: BTreeSet<String>,
    pub epoch_now: u64,
    /// Where it would be assigned in the end, and its epoch.
    pub then: BTreeSet<String>,
    pub epoch_then: u64,
    /// Each assignment the coordinator would commit, in order, with its reason.
    pub steps: Vec<String>,
    /// Why it would be blocked in the end (`None`: it is not).
    pub blocked: Option<String>,
    /// Why it would have no eligible standby in the end (`None`: it has one,
    /// or it is placed nowhere).
    pub unprotected: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub reason: String,
    /// Through its fence devices; otherwise it waits for an operator's
    /// `tandem fence confirm`, and what it may run stays blocked.
    pub devices: bool,
}

/// The actor recorded in the copy's events (never committed).
const ACTOR: &str = "what-if";

/// Plays placement forward on a copy of `state` with `what` imagined.
/// `nodes` is the coordinator's view now (`NodeFacts`). An unknown node
/// name is an error that names it.
pub fn simulate(
    state: &ClusterState,
    nodes: &[NodeFacts],
    what: &Hypothesis,
    now_unix_ms: u64,
) -> Result<Outcome, String> {
    let known = |n: &str| nodes.iter().any(|f| f.name == n);
    let members = || nodes.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ");
    for n in what.nodes_down.iter().chain(&what.standby) {
        if !known(n) {
            return Err(format!(
                "there is no node {n:?} in the cluster (members: {})",
                members()
            ));
        }
    }
    let mut s = state.clone();
    let mut facts = nodes.to_vec();
    let mut refusals = Vec::new();
    for f in &mut facts {
        if what.nodes_down.contains(&f.name) {
            lose(f);
        }
    }
    if let Some(spec) = &what.spec {
        s.apply(&Command::ApplySpec {
            spec: spec.clone(),
            source: String::new(),
            expected_version: s.spec_version,
            summary: Vec::new(),
            actor: ACTOR.into(),
            at_unix_ms: now_unix_ms,
        });
    }
    for node in &what.standby {
        let role = facts.iter().find(|f| &f.name == node).map(|f| f.role);
        if let Err(r) = check_standby(&s, &facts, node, role, true, false, now_unix_ms) {
            refusals.push(format!("tandem standby {node} would be refused: {}", r.message));
        }
        s.apply(&Command::SetStandby {
            node: node.clone(),
            on: true,
            actor: ACTOR.into(),
            at_unix_ms: now_unix_ms,
        });
        if let Some(f) = facts.iter_mut().find(|f| &f.name == node) {
            f.standby = true;
        }
    }

    let before = s.groups.clone();
    let mut steps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut fences: BTreeMap<String, Fence> = BTreeMap::new();
    // Each group moves in at most a few steps (release, fence, assign);
    // fail-back and anti-affinity may chain a few more.
    let limit = 4 * (s.spec.groups.len() + s.groups.len()) + 8;
    let mut settled = false;
    let mut last = placement::Plan::default();
    for _ in 0..limit {
        let p = plan(&s, &facts, now_unix_ms);
        let mut changed = false;
        for (group, (transition, reason)) in &p.abandon {
            s.apply(&Command::EndMove {
                group: group.clone(),
                transition: *transition,
                reason: reason.clone(),
                actor: ACTOR.into(),
                at_unix_ms: now_unix_ms,
            });
            steps
                .entry(group.clone())
                .or_default()
                .push(format!("the requested move is abandoned: {reason}"));
            changed = true;
        }
        for (node, why) in &p.fence {
            if !s.fencing_needed.contains_key(node) {
                s.apply(&Command::FenceRequested {
                    node: node.clone(),
                    reason: why.clone(),
                    actor: ACTOR.into(),
                    at_unix_ms: now_unix_ms,
                });
                changed = true;
            }
        }
        for d in &p.decisions {
            let released: BTreeSet<String> = s.groups.get(&d.group).map(|g| g.may_run()).unwrap_or_default();
            let applied = s.apply(&Command::Assign {
                group: d.group.clone(),
                nodes: d.assign.clone(),
                epoch: d.epoch,
                reason: d.reason.clone(),
                at_unix_ms: now_unix_ms,
                detected_unix_ms: None,
                planned: d.planned,
            });
            if applied.rejected.is_some() {
                continue;
            }
            changed = true;
            let on = if d.assign.is_empty() {
                "no node".to_string()
            } else {
                d.assign.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            steps
                .entry(d.group.clone())
                .or_default()
                .push(format!("assigned to {on} (epoch {}): {}", d.epoch, d.reason));
            // The executors: what is released stops, what is assigned starts.
            for node in released.iter().filter(|n| !d.assign.contains(*n)) {
                report(&mut s, &facts, &d.group, node, d.epoch, Phase::Stopped, now_unix_ms);
            }
            for node in &d.assign {
                report(&mut s, &facts, &d.group, node, d.epoch, Phase::Running, now_unix_ms);
            }
        }
        // The fencer: every node waiting for it that has devices.
        let waiting: Vec<(String, String)> = s.fencing_needed.iter().map(|(n, w)| (n.clone(), w.clone())).collect();
        for (node, reason) in waiting {
            let devices = s.spec.fencing.has_devices(&node);
            fences.entry(node.clone()).or_insert(Fence {
                reason: reason.clone(),
                devices,
            });
            if devices {
                s.apply(&Command::Fenced {
                    node: node.clone(),
                    how: "simulated".into(),
                    actor: ACTOR.into(),
                    at_unix_ms: now_unix_ms,
                });
                if let Some(f) = facts.iter_mut().find(|f| f.name == node) {
                    lose(f);
                }
                changed = true;
            }
        }
        last = p;
        if !changed {
            settled = true;
            break;
        }
    }

    let judged = placement::protection(
        &s.spec,
        &s.groups,
        &s.fencing_needed,
        Some(&s.maintenance),
        &facts,
        now_unix_ms,
    );
    let mut names: Vec<String> = s.spec.groups.iter().map(|g| g.name.clone()).collect();
    names.extend(before.keys().filter(|n| s.spec.group(n).is_none()).cloned());
    let groups = names
        .into_iter()
        .map(|name| {
            let was = before.get(&name).cloned().unwrap_or_default();
            let is = s.groups.get(&name).cloned().unwrap_or_default();
            GroupOutcome {
                kind: s.spec.group(&name).map(|g| g.kind),
                now: was.assigned,
                epoch_now: was.epoch,
                then: is.assigned,
                epoch_then: is.epoch,
                steps: steps.remove(&name).unwrap_or_default(),
                blocked: last.blocked.get(&name).cloned(),
                unprotected: match judged.get(&name) {
                    Some(Protection::Unprotected { reason }) => Some(reason.clone()),
                    _ => None,
                },
                name,
            }
        })
        .collect();
    let mut assumptions = vec!["every stop and start the coordinator asks for succeeds".to_string()];
    if !what.nodes_down.is_empty() {
        assumptions.push(format!(
            "{} down with its lease certainly expired",
            what.nodes_down.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if fences.values().any(|f| f.devices) {
        assumptions.push("every fence device confirms its node off".into());
    }
    if !settled {
        assumptions.push(format!(
            "placement was still deciding after {limit} passes; shown as it stood"
        ));
    }
    Ok(Outcome {
        groups,
        fences,
        assumptions,
        refusals,
        settled,
    })
}

/// A node lost for good: down, its lease certainly expired.
fn lose(f: &mut NodeFacts) {
    f.state = NodeState::Down;
    f.lease_expired = true;
}

fn plan(s: &ClusterState, facts: &[NodeFacts], now_unix_ms: u64) -> placement::Plan {
    let operator = Operator {
        maintenance: Some(&s.maintenance),
        moves: Some(&s.moves),
    };
    placement::plan_with(&s.spec, &s.groups, &s.fencing_needed, operator, facts, now_unix_ms)
}

/// What `node`'s executor would report about `group` at `epoch`: nothing
/// from a node that is down or a witness.
fn report(s: &mut ClusterState, facts: &[NodeFacts], group: &str, node: &str, epoch: u64, phase: Phase, at: u64) {
    let acts = facts
        .iter()
        .any(|f| f.name == node && f.state != NodeState::Down && f.role != NodeRole::Witness);
    if !acts {
        return;
    }
    s.apply(&Command::Report {
        node: node.to_string(),
        group: group.to_string(),
        report: NodeReport {
            epoch,
            phase,
            resources: Vec::new(),
            at_unix_ms: at,
        },
        failed_resource: None,
        fatal: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::GroupState;
    use crate::membership::NodeInfo;

    const WEB: &str = "[[groups]]\nname = \"web\"\n\
                       prefer = [{ node = \"site-a\", score = 100 }, { node = \"site-b\", score = 50 }]\n\
                       [[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/app\"\n";
    const FENCE_A: &str =
        "[fencing.devices.pdu]\nagent = \"fence_dummy\"\n[fencing.nodes.site-a]\nlevels = [[\"pdu\"]]\n";

    fn members() -> Vec<NodeInfo> {
        ["site-a", "site-b", "witness"]
            .iter()
            .map(|n| NodeInfo {
                name: n.to_string(),
                address: format!("{n}:7400"),
                role: if *n == "witness" {
                    NodeRole::Witness
                } else {
                    NodeRole::Member
                },
            })
            .collect()
    }

    fn spec(text: &str) -> Spec {
        Spec::parse(text, "spec.toml", &members()).unwrap()
    }

    fn facts() -> Vec<NodeFacts> {
        members()
            .into_iter()
            .map(|m| NodeFacts {
                name: m.name,
                role: m.role,
                state: NodeState::Up,
                lease_expired: false,
                standby: false,
                freshness: BTreeMap::new(),
            })
            .collect()
    }

    /// `web` running on site-a at epoch 3, with the spec `text`.
    fn web_on_a(text: &str) -> ClusterState {
        let mut s = ClusterState {
            spec: spec(text),
            spec_version: 1,
            ..ClusterState::default()
        };
        let mut g = GroupState::default();
        g.assign(&BTreeSet::from(["site-a".to_string()]), 3);
        g.record_report(
            "site-a",
            NodeReport {
                epoch: 3,
                phase: Phase::Running,
                resources: Vec::new(),
                at_unix_ms: 0,
            },
        );
        s.groups.insert("web".into(), g);
        s
    }

    fn down(nodes: &[&str]) -> Hypothesis {
        Hypothesis {
            nodes_down: nodes.iter().map(|n| n.to_string()).collect(),
            ..Hypothesis::default()
        }
    }

    fn web(o: &Outcome) -> &GroupOutcome {
        o.groups.iter().find(|g| g.name == "web").unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_lost_primary_with_devices_is_fenced_then_its_group_moves() {
        let state = web_on_a(&format!("{WEB}{FENCE_A}"));
        let o = simulate(&state, &facts(), &down(&["site-a"]), 10).unwrap();
        assert!(o.settled, "{o:?}");
        let g = web(&o);
        assert_eq!((g.now.clone(), g.epoch_now), (set(&["site-a"]), 3));
        assert_eq!(g.then, set(&["site-b"]), "{o:?}");
        assert_eq!(g.blocked, None);
        // Released (epoch 4), then, once site-a is fenced, assigned to site-b.
        assert_eq!(g.epoch_then, 5, "{o:?}");
        assert_eq!(g.steps.len(), 2, "{:?}", g.steps);
        assert!(
            g.steps[0].starts_with("assigned to no node (epoch 4): site-a is down"),
            "{:?}",
            g.steps
        );
        assert!(g.steps[1].starts_with("assigned to site-b (epoch 5)"), "{:?}", g.steps);
        assert_eq!(
            o.fences["site-a"],
            Fence {
                reason: "lost while it may run web".into(),
                devices: true
            }
        );
        assert!(o.assumptions.iter().any(|a| a.contains("fence device")), "{o:?}");
        // site-a gone, site-b runs it alone.
        assert!(g.unprotected.as_deref().unwrap().contains("site-a is down"), "{g:?}");
        // Nothing of it reached the real state.
        assert_eq!(state, web_on_a(&format!("{WEB}{FENCE_A}")));
    }

    #[test]
    fn a_lost_primary_without_devices_moves_once_its_lease_expired() {
        let o = simulate(&web_on_a(WEB), &facts(), &down(&["site-a"]), 10).unwrap();
        let g = web(&o);
        assert_eq!((g.then.clone(), g.epoch_then), (set(&["site-b"]), 5), "{o:?}");
        assert!(o.fences.is_empty(), "{o:?}");
    }

    #[test]
    fn losing_the_standby_changes_nothing_but_leaves_the_group_unprotected() {
        let o = simulate(&web_on_a(WEB), &facts(), &down(&["site-b"]), 10).unwrap();
        let g = web(&o);
        assert_eq!((g.then.clone(), g.epoch_then), (set(&["site-a"]), 3));
        assert!(g.steps.is_empty());
        assert!(g.unprotected.as_deref().unwrap().contains("site-b is down"), "{g:?}");
        // And with nothing imagined: as it is.
        let o = simulate(&web_on_a(WEB), &facts(), &Hypothesis::default(), 10).unwrap();
        assert_eq!(
            (web(&o).then.clone(), web(&o).unprotected.clone()),
            (set(&["site-a"]), None)
        );
    }

    #[test]
    fn losing_every_member_blocks_with_the_reasons() {
        let o = simulate(&web_on_a(WEB), &facts(), &down(&["site-a", "site-b"]), 10).unwrap();
        let g = web(&o);
        assert!(g.then.is_empty(), "{o:?}");
        let blocked = g.blocked.as_deref().unwrap();
        assert!(
            blocked.contains("no eligible node") && blocked.contains("site-b is down"),
            "{blocked}"
        );
    }

    #[test]
    fn standby_moves_by_switchover_and_a_refused_standby_is_named() {
        let standby = |n: &str, down: &[&str]| Hypothesis {
            standby: set(&[n]),
            nodes_down: down.iter().map(|d| d.to_string()).collect(),
            ..Hypothesis::default()
        };
        let o = simulate(&web_on_a(WEB), &facts(), &standby("site-a", &[]), 10).unwrap();
        assert_eq!(web(&o).then, set(&["site-b"]), "{o:?}");
        assert!(o.refusals.is_empty() && o.fences.is_empty(), "{o:?}");
        // With site-b gone, the drain would strand web: refused, shown forced.
        let o = simulate(&web_on_a(WEB), &facts(), &standby("site-a", &["site-b"]), 10).unwrap();
        assert!(
            o.refusals[0].starts_with("tandem standby site-a would be refused"),
            "{o:?}"
        );
        assert!(web(&o).then.is_empty(), "{o:?}");
    }

    #[test]
    fn a_new_spec_is_placed_and_a_removed_group_stops() {
        let db = "[[groups]]\nname = \"db\"\nprefer = [{ node = \"site-b\", score = 100 }]\n\
                  [[groups.resources]]\nname = \"pg\"\nagent = \"exec\"\ncommand = \"/bin/pg\"\n";
        let what = Hypothesis {
            spec: Some(spec(db)),
            ..Hypothesis::default()
        };
        let o = simulate(&web_on_a(WEB), &facts(), &what, 10).unwrap();
        let g = o.groups.iter().find(|g| g.name == "db").unwrap();
        assert_eq!(
            (g.kind, g.now.clone(), g.then.clone()),
            (Some(GroupKind::Exclusive), set(&[]), set(&["site-b"]))
        );
        let w = web(&o);
        assert_eq!((w.kind, w.then.clone()), (None, set(&[])), "{o:?}");
        assert!(w.steps[0].contains("removed from the spec"), "{w:?}");
    }

    #[test]
    fn an_unknown_node_is_named() {
        let e = simulate(&web_on_a(WEB), &facts(), &down(&["site-z"]), 10).unwrap_err();
        assert!(e.contains("\"site-z\"") && e.contains("site-a, site-b, witness"), "{e}");
    }
}
