//! Where each group should run: a pure, deterministic function of the spec,
//! the replicated group state and the coordinator's view of the nodes.
//!
//! The coordinator calls [`plan`] on every pass and commits each
//! [`Decision`] through Raft with a new epoch. Safety lives here:
//!
//! * a witness never hosts anything;
//! * an exclusive group is assigned to a node only when every other node that
//!   may still run it is known stopped: it reported `stopped`, or its lease
//!   has certainly expired (invariant 2) and no stop of it failed;
//! * otherwise the group is first unassigned (so its holder stops it), or
//!   stays blocked with the reason.

/// The judgement [`protection`] returns; a state value (the state machine
/// commits its changes), so it lives in [`crate::state`].
pub use crate::state::Protection;
use std::collections::{BTreeMap, BTreeSet};

use crate::groups::{Freshness, GroupState, Phase};
use crate::lease::NodeState;
use crate::membership::NodeRole;
use crate::spec::{GroupKind, GroupSpec, MaxLag, Spec};
use crate::state::{Maintenance, MoveRequest, TransitionKind};

/// One node as the coordinator sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub role: NodeRole,
    pub state: NodeState,
    /// No lease of this node, from this coordinator or a predecessor, can
    /// still be valid.
    pub lease_expired: bool,
    /// Drained by an operator: nothing new lands there, what runs moves away.
    pub standby: bool,
    /// How current its copy of each group's data is (by group), as last
    /// reported by its resource agent; missing when it reported none.
    pub freshness: BTreeMap<String, Freshness>,
}

/// A change of assignment to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub group: String,
    pub assign: BTreeSet<String>,
    /// The epoch the decision was made for (the group's next one when
    /// planned): a decision that meets a newer state is refused when applied.
    pub epoch: u64,
    /// Why, in words for the operator ("site-a is down; moving to site-b").
    pub reason: String,
    /// A planned move (an operator's switchover, standby, fail-back), not a
    /// failure.
    pub planned: bool,
}

/// What operators asked for: modes and pending moves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Operator<'a> {
    pub maintenance: Option<&'a Maintenance>,
    pub moves: Option<&'a BTreeMap<String, MoveRequest>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub decisions: Vec<Decision>,
    /// Groups that cannot be placed as desired, and why.
    pub blocked: BTreeMap<String, String>,
    /// Nodes to fence before a group they may run can start elsewhere, and
    /// why: lost nodes that have fence devices (with devices, a lapsed lease
    /// alone is not trusted: the node's agent may be dead while its services
    /// run on).
    pub fence: BTreeMap<String, String>,
    /// Operators' move requests that can no longer be carried out (their
    /// deadline passed or their target became unfit), by group, with the
    /// transition they started and why.
    pub abandon: BTreeMap<String, (u64, String)>,
}

/// Why a node cannot yet count as stopped for a group.
enum Obstacle {
    /// Wait (for a report, a lease, an operator), with the reason.
    Wait(String),
    /// The node must be fenced first.
    Fence { node: String, blocked: String, why: String },
}

struct Ctx<'a> {
    spec: &'a Spec,
    groups: &'a BTreeMap<String, GroupState>,
    /// For each group, the groups it must not share a node with (both
    /// directions of every `anti_affinity`), computed once per plan.
    conflicts: BTreeMap<&'a str, Vec<&'a str>>,
    fencing_needed: &'a BTreeMap<String, String>,
    nodes: &'a BTreeMap<&'a str, &'a NodeFacts>,
    now_unix_ms: u64,
    maintenance: Option<&'a Maintenance>,
}

impl Ctx<'_> {
    fn state(&self, group: &str) -> Option<&GroupState> {
        self.groups.get(group)
    }

    fn failures(&self, g: &GroupSpec, node: &str) -> u32 {
        self.state(&g.name)
            .map_or(0, |s| s.failure_count(node, self.now_unix_ms, g.failure_timeout))
    }

    /// Why `node` may not host `g` given the planned assignments (`None`: it may).
    fn unfit(&self, g: &GroupSpec, node: &str, planned: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
        self.unfit_counting(g, node, planned, true)
    }

    /// [`Ctx::unfit`], with the migration threshold checked only if
    /// `count_failures` (an operator's forced move overrides it, nothing else).
    fn unfit_counting(
        &self,
        g: &GroupSpec,
        node: &str,
        planned: &BTreeMap<String, BTreeSet<String>>,
        count_failures: bool,
    ) -> Option<String> {
        let Some(facts) = self.nodes.get(node) else {
            return Some(format!("{node} is not a member"));
        };
        if facts.role == NodeRole::Witness {
            return Some(format!("{node} is a witness"));
        }
        if facts.standby {
            return Some(format!("{node} is in standby"));
        }
        if let Some(reason) = self.fencing_needed.get(node) {
            return Some(format!("{node} needs fencing ({reason})"));
        }
        if self.maintenance.is_some_and(|m| m.nodes.contains(node)) {
            return Some(format!("{node} is in maintenance"));
        }
        if g.placement.avoid.iter().any(|a| a == node) {
            return Some(format!("{node} is avoided"));
        }
        let failures = self.failures(g, node);
        if count_failures && failures >= g.migration_threshold {
            return Some(format!(
                "{node} reached the migration threshold ({failures} failures >= {})",
                g.migration_threshold
            ));
        }
        for other in self.conflicts.get(g.name.as_str()).into_iter().flatten() {
            if planned.get(*other).is_some_and(|n| n.contains(node)) {
                return Some(format!("{node} runs {other} (anti-affinity)"));
            }
        }
        None
    }

    /// Why `node` cannot start `g` now (stricter than staying: it must be up).
    fn not_eligible(&self, g: &GroupSpec, node: &str, planned: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
        self.not_eligible_counting(g, node, planned, true)
    }

    fn not_eligible_counting(
        &self,
        g: &GroupSpec,
        node: &str,
        planned: &BTreeMap<String, BTreeSet<String>>,
        count_failures: bool,
    ) -> Option<String> {
        if let Some(r) = self.unfit_counting(g, node, planned, count_failures) {
            return Some(r);
        }
        match self.nodes.get(node).map(|f| f.state) {
            Some(NodeState::Up) => None,
            Some(s) => Some(format!("{node} is {s}")),
            None => Some(format!("{node} is not a member")),
        }
    }

    /// Why `node` cannot keep `g` (a suspect node keeps it: moving on a late
    /// heartbeat would stop a healthy service for nothing).
    fn must_leave(&self, g: &GroupSpec, node: &str, planned: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
        if let Some(r) = self.unfit(g, node, planned) {
            return Some(r);
        }
        let facts = self.nodes.get(node)?;
        if facts.lease_expired || facts.state == NodeState::Down {
            return Some(format!("{node} is down"));
        }
        None
    }

    fn score(g: &GroupSpec, node: &str) -> i64 {
        g.placement
            .prefer
            .iter()
            .find(|(n, _)| n == node)
            .map_or(0, |(_, s)| *s)
    }

    /// The best node to start `g` on: the most current data first (when
    /// agents report freshness), then the highest score, then by name.
    /// Candidates lagging beyond the group's `max_lag` are refused.
    fn best(&self, g: &GroupSpec, planned: &BTreeMap<String, BTreeSet<String>>) -> Result<String, String> {
        self.best_except(g, planned, None, false)
    }

    fn best_except(
        &self,
        g: &GroupSpec,
        planned: &BTreeMap<String, BTreeSet<String>>,
        except: Option<&str>,
        force: bool,
    ) -> Result<String, String> {
        if !force && let Some(waiting) = self.freshness_pending(g, planned, except) {
            return Err(waiting);
        }
        let mut reasons = Vec::new();
        let mut best: Option<(u64, i64, &str)> = None;
        for name in self.nodes.keys() {
            if Some(*name) == except {
                continue;
            }
            let why = self
                .not_eligible(g, name, planned)
                .or_else(|| if force { None } else { self.too_far_behind(g, name) });
            match why {
                Some(r) => reasons.push(r),
                None => {
                    let lag = self.lag(g, name).unwrap_or(u64::MAX);
                    let s = Self::score(g, name);
                    if best.is_none_or(|(bl, bs, _)| lag < bl || (lag == bl && s > bs)) {
                        best = Some((lag, s, name));
                    }
                }
            }
        }
        best.map(|(_, _, n)| n.to_string())
            .ok_or_else(|| format!("no eligible node: {}", reasons.join("; ")))
    }

    /// With `max_lag` set, the most current candidate can only be told once
    /// every candidate that is up has reported: until then (a probe takes up
    /// to a monitor interval), choosing among those that did could pick one
    /// that is far behind. Names the candidates still to report, if any
    /// other node reported.
    fn freshness_pending(
        &self,
        g: &GroupSpec,
        planned: &BTreeMap<String, BTreeSet<String>>,
        except: Option<&str>,
    ) -> Option<String> {
        g.max_lag?;
        let reported = |f: &NodeFacts| f.freshness.contains_key(&g.name);
        if !self.nodes.values().any(|f| reported(f)) {
            return None;
        }
        let missing: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(name, f)| Some(**name) != except && !reported(f))
            .filter(|(name, _)| self.not_eligible(g, name, planned).is_none())
            .map(|(name, _)| *name)
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "waiting for {} to report data freshness (max_lag {} is set)",
                missing.join(", "),
                g.max_lag.map(|m| m.to_string()).unwrap_or_default()
            )
        })
    }

    /// How far `node`'s data for `g` is behind, in the unit it reports: its
    /// lag in ms, or its distance from the most current position any node
    /// reported. `None`: it reports nothing.
    fn lag(&self, g: &GroupSpec, node: &str) -> Option<u64> {
        let newest = self
            .nodes
            .values()
            .filter_map(|f| match f.freshness.get(&g.name) {
                Some(Freshness::Position(p)) => Some(*p),
                _ => None,
            })
            .max();
        match self.nodes.get(node)?.freshness.get(&g.name)? {
            Freshness::LagMs(ms) => Some(*ms),
            Freshness::Position(p) => Some(newest.unwrap_or(*p).saturating_sub(*p)),
        }
    }

    /// Why `node`'s data is too old to take `g` over (`None`: it is current
    /// enough, or the group sets no `max_lag`).
    fn too_far_behind(&self, g: &GroupSpec, node: &str) -> Option<String> {
        let max = g.max_lag?;
        let reported = self.nodes.get(node).and_then(|f| f.freshness.get(&g.name).copied());
        let lag = self.lag(g, node);
        match (max, reported, lag) {
            (_, None, _) | (_, _, None) => Some(format!(
                "{node} reports no data freshness for {} (max_lag {max} is set)",
                g.name
            )),
            (MaxLag::Time(d), Some(Freshness::LagMs(_)), Some(lag)) => {
                let max_ms = crate::timing::duration_ms(d);
                (lag > max_ms).then(|| format!("{node} is behind: lag {lag} ms > max_lag {max}"))
            }
            (MaxLag::Position(max_p), Some(Freshness::Position(_)), Some(lag)) => {
                (lag > max_p).then(|| format!("{node} is behind: {lag} positions > max_lag {max}"))
            }
            (_, Some(f), _) => Some(format!(
                "{node} reports {f} for {} but max_lag is {max}: a lag needs a duration, a position a number",
                g.name
            )),
        }
    }

    /// Why `node` may not take `g` over by an operator's request (`force`
    /// overrides freshness and recent failures, never safety).
    fn unfit_for_move(&self, g: &GroupSpec, node: &str, force: bool) -> Option<String> {
        let planned: BTreeMap<String, BTreeSet<String>> = self
            .groups
            .iter()
            .map(|(n, s)| (n.clone(), s.assigned.clone()))
            .collect();
        if let Some(why) = self.not_eligible_counting(g, node, &planned, !force) {
            return Some(why);
        }
        if force {
            return None;
        }
        let failures = self.failures(g, node);
        if failures > 0 {
            return Some(format!(
                "{node} is failing its monitors ({failures} recent failures of {}; `tandem resource cleanup` clears them)",
                g.name
            ));
        }
        self.too_far_behind(g, node)
    }

    /// What the operator must do for a node that needs fencing.
    fn fence_hint(&self, node: &str) -> &'static str {
        if self.spec.fencing.has_devices(node) {
            "fencing through its devices"
        } else {
            "it has no fence device: once it is off, run `tandem fence confirm`"
        }
    }

    /// Why `node` may not be considered stopped for `g` (`None`: it is). An
    /// operator's forced failover fences an unresponsive node that has
    /// devices at once instead of waiting for its lease.
    fn not_known_stopped(&self, g: &str, node: &str, forced: bool) -> Option<Obstacle> {
        let report = self.state(g).and_then(|s| s.reports.get(node));
        if let Some(reason) = self.fencing_needed.get(node) {
            return Some(Obstacle::Wait(format!(
                "{node} needs fencing ({reason}; {})",
                self.fence_hint(node)
            )));
        }
        if report.is_some_and(|r| r.phase == Phase::StopFailed) {
            return Some(Obstacle::Fence {
                node: node.to_string(),
                blocked: format!("a stop of {g} failed on {node}; it needs fencing"),
                why: format!("a stop of {g} failed or timed out"),
            });
        }
        // A `stopped` counts only if it is at least as new as the release.
        let released_at = self.state(g).and_then(|s| s.released.get(node)).copied().unwrap_or(0);
        if report.is_some_and(|r| r.phase == Phase::Stopped && r.epoch >= released_at) {
            return None;
        }
        let unresponsive = self.nodes.get(node).is_none_or(|f| f.state != NodeState::Up);
        if forced && unresponsive && self.spec.fencing.has_devices(node) {
            return Some(Obstacle::Fence {
                node: node.to_string(),
                blocked: format!("forced failover: waiting for {node} to be fenced"),
                why: format!("a forced failover of {g} while {node} does not answer"),
            });
        }
        if self.nodes.get(node).is_some_and(|f| f.lease_expired) {
            if self.spec.fencing.has_devices(node) {
                return Some(Obstacle::Fence {
                    node: node.to_string(),
                    blocked: format!("waiting for {node} to be fenced"),
                    why: format!("lost while it may run {g}"),
                });
            }
            // Its lease is over: it stopped itself (invariant 3).
            return None;
        }
        Some(Obstacle::Wait(format!("waiting for {node} to stop {g}")))
    }

    /// Whether `g`'s prerequisites run somewhere.
    fn waiting_for(&self, g: &GroupSpec) -> Option<String> {
        g.after
            .iter()
            .find(|dep| {
                let Some(s) = self.state(dep) else { return true };
                s.active_nodes().next().is_none()
            })
            .map(|dep| format!("waiting for group {dep} to run"))
    }
}

fn context<'a>(
    spec: &'a Spec,
    groups: &'a BTreeMap<String, GroupState>,
    fencing_needed: &'a BTreeMap<String, String>,
    by_name: &'a BTreeMap<&'a str, &'a NodeFacts>,
    maintenance: Option<&'a Maintenance>,
    now_unix_ms: u64,
) -> Ctx<'a> {
    let mut conflicts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in &spec.groups {
        for other in g.placement.anti_affinity.iter().filter(|o| **o != g.name) {
            conflicts.entry(g.name.as_str()).or_default().push(other.as_str());
            conflicts.entry(other.as_str()).or_default().push(g.name.as_str());
        }
    }
    Ctx {
        spec,
        conflicts,
        groups,
        fencing_needed,
        nodes: by_name,
        now_unix_ms,
        maintenance,
    }
}

/// The assignment changes to commit now, and the groups that are blocked.
pub fn plan(
    spec: &Spec,
    groups: &BTreeMap<String, GroupState>,
    fencing_needed: &BTreeMap<String, String>,
    nodes: &[NodeFacts],
    now_unix_ms: u64,
) -> Plan {
    plan_with(spec, groups, fencing_needed, Operator::default(), nodes, now_unix_ms)
}

/// Where an operator's switchover or failover of `group` should go: `to`
/// if given and fit, else the best other candidate. The error says why not
/// (in words for the operator). `force` overrides the freshness and health
/// checks, never the safety rules.
#[allow(clippy::too_many_arguments)]
pub fn move_target(
    spec: &Spec,
    groups: &BTreeMap<String, GroupState>,
    fencing_needed: &BTreeMap<String, String>,
    maintenance: &Maintenance,
    nodes: &[NodeFacts],
    group: &str,
    to: Option<&str>,
    force: bool,
    now_unix_ms: u64,
) -> Result<String, String> {
    let Some(g) = spec.group(group) else {
        return Err(format!("there is no group {group:?} in the spec"));
    };
    if g.kind != GroupKind::Exclusive {
        return Err(format!(
            "{group} is a clone group: it runs on every eligible node, so there is no primary to move"
        ));
    }
    let state = groups.get(group);
    let may_run = state.map(GroupState::may_run).unwrap_or_default();
    if let Some(why) = maintenance.freezes(group, &may_run) {
        return Err(format!("{why}: Tandem does not move it; turn maintenance off first"));
    }
    let by_name: BTreeMap<&str, &NodeFacts> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let ctx = context(spec, groups, fencing_needed, &by_name, Some(maintenance), now_unix_ms);
    let holder = state.and_then(|s| s.assigned.iter().next().cloned());
    let hint = if force {
        ""
    } else {
        " (--force overrides freshness and failing monitors, never safety)"
    };
    if let Some(t) = to {
        if holder.as_deref() == Some(t) {
            return Err(format!("{t} is already the primary of {group}"));
        }
        return match ctx.unfit_for_move(g, t, force) {
            Some(why) => Err(format!("{why}{hint}")),
            None => Ok(t.to_string()),
        };
    }
    // The usual preference (freshness, then score) among the fit ones.
    let mut refusals = Vec::new();
    let mut best: Option<(u64, i64, &str)> = None;
    for name in by_name.keys().copied().filter(|n| Some(*n) != holder.as_deref()) {
        if let Some(why) = ctx.unfit_for_move(g, name, force) {
            refusals.push(why);
            continue;
        }
        let lag = ctx.lag(g, name).unwrap_or(u64::MAX);
        let score = Ctx::score(g, name);
        if best.is_none_or(|(bl, bs, _)| lag < bl || (lag == bl && score > bs)) {
            best = Some((lag, score, name));
        }
    }
    best.map(|(_, _, n)| n.to_string())
        .ok_or_else(|| format!("no node can take {group} over: {}{hint}", refusals.join("; ")))
}

/// [`plan`] with what operators asked for: groups and nodes in
/// maintenance are left alone, requested moves are carried out.
pub fn plan_with(
    spec: &Spec,
    groups: &BTreeMap<String, GroupState>,
    fencing_needed: &BTreeMap<String, String>,
    operator: Operator<'_>,
    nodes: &[NodeFacts],
    now_unix_ms: u64,
) -> Plan {
    let by_name: BTreeMap<&str, &NodeFacts> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let ctx = context(
        spec,
        groups,
        fencing_needed,
        &by_name,
        operator.maintenance,
        now_unix_ms,
    );
    let no_moves = BTreeMap::new();
    let moves = operator.moves.unwrap_or(&no_moves);
    let mut planned: BTreeMap<String, BTreeSet<String>> =
        groups.iter().map(|(n, s)| (n.clone(), s.assigned.clone())).collect();
    let mut out = Plan::default();
    for (group, m) in moves {
        if spec.group(group).is_none_or(|g| g.kind != GroupKind::Exclusive) {
            out.abandon.insert(
                group.clone(),
                (
                    m.transition,
                    format!("{group} is no longer an exclusive group in the spec"),
                ),
            );
        }
    }

    // Groups that left the spec stop everywhere.
    for (name, s) in groups {
        if spec.group(name).is_none() && !s.assigned.is_empty() {
            if let Some(why) = operator.maintenance.and_then(|m| m.freezes(name, &s.may_run())) {
                out.blocked.insert(name.clone(), format!("{why}; left alone"));
                continue;
            }
            out.decisions.push(Decision {
                group: name.clone(),
                assign: BTreeSet::new(),
                epoch: s.epoch + 1,
                reason: "removed from the spec".into(),
                planned: true,
            });
            planned.insert(name.clone(), BTreeSet::new());
        }
    }

    for g in &spec.groups {
        let current = planned.get(&g.name).cloned().unwrap_or_default();
        let mut may_run = ctx.state(&g.name).map(GroupState::may_run).unwrap_or_default();
        may_run.extend(current.iter().cloned());
        if let Some(why) = operator.maintenance.and_then(|m| m.freezes(&g.name, &may_run)) {
            out.blocked.insert(g.name.clone(), format!("{why}; left alone"));
            continue;
        }
        let request = moves.get(&g.name).filter(|_| g.kind == GroupKind::Exclusive);
        let request = match request {
            // The deadline only ends a move that has not begun: once the old
            // primary is released, giving up would start the group wherever
            // placement prefers, often back on the node it just left.
            Some(m) if now_unix_ms >= m.deadline_unix_ms && current.iter().any(|h| *h != m.to) => {
                out.abandon.insert(
                    g.name.clone(),
                    (m.transition, format!("not under way by its deadline (to {})", m.to)),
                );
                None
            }
            Some(m) => {
                let unfit = if current.contains(&m.to) {
                    // Assigned there: it must still be allowed to stay.
                    ctx.must_leave(g, &m.to, &planned)
                } else {
                    ctx.unfit_for_move(g, &m.to, m.force)
                };
                match unfit {
                    Some(why) => {
                        out.abandon.insert(
                            g.name.clone(),
                            (m.transition, format!("{} cannot take it: {why}", m.to)),
                        );
                        None
                    }
                    None => Some(m),
                }
            }
            None => None,
        };
        let holder_leaves_voluntarily = current.len() == 1
            && current.iter().all(|h| {
                ctx.nodes.get(h.as_str()).is_some_and(|f| f.standby) || ctx.must_leave(g, h, &planned).is_none()
            });
        let planned_move = match request {
            Some(m) => m.kind == TransitionKind::Switchover,
            None => holder_leaves_voluntarily,
        };
        let forced = request.is_some_and(|m| m.kind == TransitionKind::Failover);
        let (target, reason) = match (g.kind, request) {
            (GroupKind::Exclusive, Some(m)) if current.contains(&m.to) => (None, String::new()),
            (GroupKind::Exclusive, Some(m)) => (
                Some(BTreeSet::from([m.to.clone()])),
                format!("{} to {} requested by {}", m.kind.as_str(), m.to, m.actor),
            ),
            (GroupKind::Exclusive, None) => exclusive_target(&ctx, g, &current, &planned),
            (GroupKind::Clone, _) => clone_target(&ctx, g, &current, &planned),
        };
        let (target, reason) = match (g.kind, target) {
            // Moving away from a holder always takes two steps: first take
            // the group away (the holder stops it), then, in a later pass,
            // start it elsewhere once the holder is known stopped.
            (GroupKind::Exclusive, Some(t)) if !t.is_empty() && t != current && !current.is_empty() => {
                let holders = current.iter().cloned().collect::<Vec<_>>().join(", ");
                (
                    Some(BTreeSet::new()),
                    format!("{reason}; stopping it on {holders} first"),
                )
            }
            (GroupKind::Exclusive, Some(t)) if !t.is_empty() && t != current => {
                // Fence before recover: everyone else that may run it must be known stopped.
                let may_run = ctx.state(&g.name).map(GroupState::may_run).unwrap_or_default();
                let obstacle = may_run
                    .iter()
                    .filter(|n| !t.contains(*n))
                    .find_map(|n| ctx.not_known_stopped(&g.name, n, forced));
                match obstacle {
                    None => (Some(t), reason),
                    Some(Obstacle::Wait(why)) => {
                        out.blocked.insert(g.name.clone(), why);
                        (None, reason)
                    }
                    Some(Obstacle::Fence { node, blocked, why }) => {
                        out.blocked.insert(g.name.clone(), blocked);
                        out.fence.entry(node).or_insert(why);
                        (None, reason)
                    }
                }
            }
            (_, t) => (t, reason),
        };
        match target {
            Some(t) if t != current => {
                planned.insert(g.name.clone(), t.clone());
                out.decisions.push(Decision {
                    group: g.name.clone(),
                    assign: t,
                    epoch: ctx.state(&g.name).map_or(0, |s| s.epoch) + 1,
                    reason,
                    planned: planned_move,
                });
            }
            Some(_) => {}
            None => {
                if !reason.is_empty() {
                    out.blocked.entry(g.name.clone()).or_insert(reason);
                }
            }
        }
    }
    out
}

/// `(Some(target), reason)` to change to `target`; `(None, reason)` to keep
/// the current assignment (a non-empty reason says why nothing better is possible).
fn exclusive_target(
    ctx: &Ctx<'_>,
    g: &GroupSpec,
    current: &BTreeSet<String>,
    planned: &BTreeMap<String, BTreeSet<String>>,
) -> (Option<BTreeSet<String>>, String) {
    if current.len() > 1 {
        // It was a clone group: stop it everywhere before it runs anywhere alone.
        return (
            Some(BTreeSet::new()),
            "exclusive now, but assigned to several nodes; stopping it everywhere first".into(),
        );
    }
    let holder = current.iter().next().cloned();
    if let Some(x) = &holder {
        if let Some(why) = ctx.must_leave(g, x, planned) {
            return match ctx.best(g, planned) {
                Ok(y) => (Some(BTreeSet::from([y.clone()])), format!("{why}; moving to {y}")),
                Err(none) => (Some(BTreeSet::new()), format!("{why}; {none}")),
            };
        }
        if g.placement.fail_back
            && let Ok(y) = ctx.best(g, planned)
            && Ctx::score(g, &y) > Ctx::score(g, x)
            && ctx.state(&g.name).is_some_and(|s| s.active_on(x))
        {
            return (
                Some(BTreeSet::from([y.clone()])),
                format!(
                    "failing back to {y} (score {} > {})",
                    Ctx::score(g, &y),
                    Ctx::score(g, x)
                ),
            );
        }
        return (None, String::new());
    }
    if let Some(why) = ctx.waiting_for(g) {
        return (None, why);
    }
    match ctx.best(g, planned) {
        Ok(y) => (Some(BTreeSet::from([y.clone()])), format!("placing on {y}")),
        Err(none) => (None, none),
    }
}

fn clone_target(
    ctx: &Ctx<'_>,
    g: &GroupSpec,
    current: &BTreeSet<String>,
    planned: &BTreeMap<String, BTreeSet<String>>,
) -> (Option<BTreeSet<String>>, String) {
    if let Some(why) = ctx.waiting_for(g) {
        return if current.is_empty() {
            (None, why)
        } else {
            (Some(BTreeSet::new()), why)
        };
    }
    let mut target = BTreeSet::new();
    for name in ctx.nodes.keys() {
        let keep = current.contains(*name) && ctx.must_leave(g, name, planned).is_none();
        if keep || ctx.not_eligible(g, name, planned).is_none() {
            target.insert(name.to_string());
        }
    }
    let reason = format!(
        "running on every eligible node: {}",
        target.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    (Some(target), reason)
}

/// A node that may host a group, as placement sees it now: how current its
/// data is and whether a failover would consider it (for status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    pub freshness: Option<Freshness>,
    /// How far behind the most current node: ms of lag, or positions behind
    /// the highest position any node reported. `None`: it reported nothing.
    pub behind: Option<u64>,
    /// Why placement would not start the group there now (`None`: it
    /// would consider it, most current first).
    pub unfit: Option<String>,
}

/// Every node but witnesses as a candidate for `group`, with the same
/// rules placement applies when it chooses where to start it (fitness, up,
/// within `max_lag`). Empty for a group not in the spec.
pub fn candidates(
    spec: &Spec,
    groups: &BTreeMap<String, GroupState>,
    fencing_needed: &BTreeMap<String, String>,
    maintenance: Option<&Maintenance>,
    nodes: &[NodeFacts],
    group: &str,
    now_unix_ms: u64,
) -> Vec<Candidate> {
    let Some(g) = spec.group(group) else {
        return Vec::new();
    };
    let by_name: BTreeMap<&str, &NodeFacts> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let ctx = context(spec, groups, fencing_needed, &by_name, maintenance, now_unix_ms);
    let planned: BTreeMap<String, BTreeSet<String>> =
        groups.iter().map(|(n, s)| (n.clone(), s.assigned.clone())).collect();
    nodes
        .iter()
        .filter(|n| n.role != NodeRole::Witness)
        .map(|n| Candidate {
            node: n.name.clone(),
            freshness: n.freshness.get(group).copied(),
            behind: ctx.lag(g, &n.name),
            unfit: ctx
                .not_eligible(g, &n.name, &planned)
                .or_else(|| ctx.too_far_behind(g, &n.name)),
        })
        .collect()
}

/// Every group of the spec that is assigned somewhere, judged with
/// placement's own rules: a node counts as a standby when the group may stay
/// there ([`Ctx::must_leave`]: fit, not down, not in standby, maintenance or
/// fencing, not avoided, under the migration threshold, no anti-affinity
/// clash) and its data is within `max_lag`. A suspect node still counts: a
/// late heartbeat is not a lost site, and warning on each one would only
/// teach operators to ignore the warning. A group is unprotected when the
/// nodes that run it or may take it over are at most one. Groups placed
/// nowhere are not judged (their status already says why).
pub fn protection(
    spec: &Spec,
    groups: &BTreeMap<String, GroupState>,
    fencing_needed: &BTreeMap<String, String>,
    maintenance: Option<&Maintenance>,
    nodes: &[NodeFacts],
    now_unix_ms: u64,
) -> BTreeMap<String, Protection> {
    let by_name: BTreeMap<&str, &NodeFacts> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let ctx = context(spec, groups, fencing_needed, &by_name, maintenance, now_unix_ms);
    let planned: BTreeMap<String, BTreeSet<String>> =
        groups.iter().map(|(n, s)| (n.clone(), s.assigned.clone())).collect();
    let mut out = BTreeMap::new();
    for g in &spec.groups {
        let Some(assigned) = groups.get(&g.name).map(|s| &s.assigned).filter(|a| !a.is_empty()) else {
            continue;
        };
        let mut standbys = Vec::new();
        let mut refusals = Vec::new();
        for (name, facts) in &by_name {
            if facts.role == NodeRole::Witness || assigned.contains(*name) {
                continue;
            }
            match ctx
                .must_leave(g, name, &planned)
                .or_else(|| ctx.too_far_behind(g, name))
            {
                None => standbys.push(name.to_string()),
                Some(why) => refusals.push(why),
            }
        }
        let on = assigned.iter().cloned().collect::<Vec<_>>().join(", ");
        let verdict = if assigned.len() + standbys.len() >= 2 {
            let mut standbys = standbys;
            if g.kind == GroupKind::Clone {
                standbys.extend(assigned.iter().cloned());
                standbys.sort();
            }
            Protection::Protected { standbys }
        } else if refusals.is_empty() {
            Protection::Unprotected {
                reason: format!("no other node may host it: a loss of {on} would stop it"),
            }
        } else {
            Protection::Unprotected {
                reason: format!(
                    "no eligible standby, a loss of {on} would stop it ({})",
                    refusals.join("; ")
                ),
            }
        };
        out.insert(g.name.clone(), verdict);
    }
    out
}

/// What the coordinator knows of one other node's answers (DNS,
/// `/primary`): how far its applied state reached when it last renewed its
/// lease, and whether its lease certainly expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerFacts {
    pub name: String,
    /// The highest applied index it reported with a heartbeat this
    /// coordinator granted (0 when none).
    pub applied_index: u64,
    pub lease_expired: bool,
}

/// Invariant 5 across a move (no stale answers): a group taken away from
/// its holder (released, applied at or before `release_index`) may be given
/// to another node only once no node can still answer from a state in which
/// the old holder was active. Every node answers only while its lease runs
/// and only from its applied state, so each must have reported applying the
/// release, or hold no lease any more. Without this, a node cut off from the
/// coordinator (a witness behind a broken link, clients still reaching it)
/// answered the old primary for the rest of its lease while the new primary
/// already served (found by the fault suite's DNS sampler). The error names
/// who is waited for.
pub fn answers_settled(release_index: u64, nodes: &[AnswerFacts]) -> Result<(), String> {
    let behind: Vec<String> = nodes
        .iter()
        .filter(|n| !n.lease_expired && n.applied_index < release_index)
        .map(|n| format!("{} (applied {})", n.name, n.applied_index))
        .collect();
    if behind.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "waiting until {} applied the release (index {release_index}) or its lease ended, so that no node answers the old primary",
            behind.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {

    fn answers(name: &str, applied_index: u64, lease_expired: bool) -> AnswerFacts {
        AnswerFacts {
            name: name.to_string(),
            applied_index,
            lease_expired,
        }
    }

    #[test]
    fn a_move_waits_for_every_node_with_a_lease_to_apply_the_release() {
        let nodes = [answers("site-a", 12, false), answers("witness", 9, false)];
        let why = answers_settled(10, &nodes).unwrap_err();
        assert!(why.contains("witness (applied 9)"), "{why}");
        assert!(!why.contains("site-a"), "{why}");
        // It applied the release, or its lease ended: nothing stale is answered.
        assert!(answers_settled(10, &[answers("site-a", 12, false), answers("witness", 10, false)]).is_ok());
        assert!(answers_settled(10, &[answers("site-a", 12, false), answers("witness", 0, true)]).is_ok());
        assert!(answers_settled(10, &[]).is_ok());
    }
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::groups::{NodeReport, Phase};
    use crate::spec::{ActionTimeouts, AgentSpec, Placement, ResourceSpec};

    fn node(name: &str, role: NodeRole, state: NodeState) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            role,
            state,
            lease_expired: state == NodeState::Down,
            standby: false,
            freshness: BTreeMap::new(),
        }
    }

    fn resource(name: &str) -> ResourceSpec {
        ResourceSpec {
            name: name.into(),
            agent: AgentSpec::Commands {
                start: "true".into(),
                stop: "true".into(),
                monitor: "true".into(),
            },
            timeouts: ActionTimeouts::default(),
            monitor_interval: Duration::from_secs(10),
        }
    }

    fn group(name: &str, kind: GroupKind, prefer: &[(&str, i64)]) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            kind,
            resources: vec![resource("r")],
            placement: Placement {
                prefer: prefer.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
                ..Placement::default()
            },
            migration_threshold: 3,
            failure_timeout: Duration::ZERO,
            after: Vec::new(),
            dns: Default::default(),
            max_lag: None,
            hooks: Default::default(),
        }
    }

    fn three() -> Vec<NodeFacts> {
        vec![
            node("site-a", NodeRole::Member, NodeState::Up),
            node("site-b", NodeRole::Member, NodeState::Up),
            node("witness", NodeRole::Witness, NodeState::Up),
        ]
    }

    fn report(epoch: u64, phase: Phase) -> NodeReport {
        NodeReport {
            epoch,
            phase,
            resources: Vec::new(),
            at_unix_ms: 0,
        }
    }

    fn assigned(epoch: u64, node: &str, phase: Phase) -> GroupState {
        GroupState {
            epoch,
            assigned: BTreeSet::from([node.to_string()]),
            reports: BTreeMap::from([(node.to_string(), report(epoch, phase))]),
            ..GroupState::default()
        }
    }

    fn names(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_new_exclusive_group_goes_to_the_best_scored_member() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[("site-b", 10), ("site-a", 100)])],
            ..Spec::default()
        };
        let p = plan(&spec, &BTreeMap::new(), &BTreeMap::new(), &three(), 0);
        assert_eq!(p.decisions.len(), 1);
        assert_eq!(p.decisions[0].assign, names(&["site-a"]));
    }

    #[test]
    fn candidates_show_freshness_and_why_a_node_is_refused() {
        let mut g = group(
            "db",
            GroupKind::Exclusive,
            &[("site-a", 100), ("site-b", 50), ("site-c", 90)],
        );
        g.max_lag = Some(MaxLag::Position(10));
        let spec = Spec {
            groups: vec![g],
            ..Spec::default()
        };
        let mut nodes = three();
        nodes.push(node("site-c", NodeRole::Member, NodeState::Up));
        // site-a, the lost primary, was at 100: the reference.
        nodes[0].state = NodeState::Down;
        nodes[0].freshness.insert("db".into(), Freshness::Position(100));
        nodes[1].freshness.insert("db".into(), Freshness::Position(95));
        nodes[3].freshness.insert("db".into(), Freshness::Position(80));
        let c = candidates(&spec, &BTreeMap::new(), &BTreeMap::new(), None, &nodes, "db", 0);
        let by: BTreeMap<&str, &Candidate> = c.iter().map(|c| (c.node.as_str(), c)).collect();
        assert_eq!(by.len(), 3, "no witness: {c:?}");
        assert_eq!(by["site-a"].unfit.as_deref(), Some("site-a is down"));
        assert_eq!((by["site-b"].behind, by["site-b"].unfit.as_deref()), (Some(5), None));
        assert_eq!(by["site-c"].freshness, Some(Freshness::Position(80)));
        assert_eq!(
            by["site-c"].unfit.as_deref(),
            Some("site-c is behind: 20 positions > max_lag 10 positions")
        );
        // Placement agrees: the most current fit candidate, not the best score.
        let p = plan(&spec, &BTreeMap::new(), &BTreeMap::new(), &nodes, 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
    }

    /// Applies a plan's decisions the way the state machine does.
    fn apply(groups: &mut BTreeMap<String, GroupState>, p: &Plan) {
        for d in &p.decisions {
            let g = groups.entry(d.group.clone()).or_default();
            assert_eq!(d.epoch, g.epoch + 1, "decisions carry the next epoch");
            g.assign(&d.assign, d.epoch);
        }
    }

    fn judge(spec: &Spec, groups: &BTreeMap<String, GroupState>, nodes: &[NodeFacts]) -> BTreeMap<String, Protection> {
        protection(spec, groups, &BTreeMap::new(), None, nodes, 0)
    }

    fn unprotected_why(p: &Protection) -> &str {
        match p {
            Protection::Unprotected { reason } => reason,
            Protection::Protected { standbys } => panic!("protected by {standbys:?}"),
        }
    }

    #[test]
    fn a_group_without_an_eligible_standby_is_unprotected_for_placement_s_reasons() {
        let mut g = group("web", GroupKind::Exclusive, &[("site-a", 100), ("site-b", 50)]);
        let spec_with = |g: &GroupSpec| Spec {
            groups: vec![g.clone()],
            ..Spec::default()
        };
        let groups = BTreeMap::from([("web".to_string(), assigned(3, "site-a", Phase::Running))]);
        let spec = spec_with(&g);
        assert_eq!(
            judge(&spec, &groups, &three())["web"],
            Protection::Protected {
                standbys: vec!["site-b".into()]
            }
        );
        // A late heartbeat is not a lost site.
        let mut nodes = three();
        nodes[1].state = NodeState::Suspect;
        assert!(matches!(
            judge(&spec, &groups, &nodes)["web"],
            Protection::Protected { .. }
        ));
        nodes[1].state = NodeState::Down;
        let why = judge(&spec, &groups, &nodes)["web"].clone();
        assert_eq!(
            unprotected_why(&why),
            "no eligible standby, a loss of site-a would stop it (site-b is down)"
        );
        let mut nodes = three();
        nodes[1].standby = true;
        assert!(unprotected_why(&judge(&spec, &groups, &nodes)["web"]).contains("site-b is in standby"));
        g.placement.avoid = vec!["site-b".into()];
        assert!(unprotected_why(&judge(&spec_with(&g), &groups, &three())["web"]).contains("site-b is avoided"));
        g.placement.avoid.clear();
        g.max_lag = Some(MaxLag::Position(10));
        let mut nodes = three();
        with_positions(&mut nodes, &[("site-a", 100), ("site-b", 80)]);
        assert!(
            unprotected_why(&judge(&spec_with(&g), &groups, &nodes)["web"])
                .contains("site-b is behind: 20 positions > max_lag 10 positions")
        );
        with_positions(&mut nodes, &[("site-b", 95)]);
        assert!(matches!(
            judge(&spec_with(&g), &groups, &nodes)["web"],
            Protection::Protected { .. }
        ));
        // Placed nowhere: not judged.
        assert!(judge(&spec, &BTreeMap::new(), &three()).is_empty());
    }

    #[test]
    fn a_clone_is_protected_while_it_runs_or_may_run_on_two_nodes() {
        let spec = Spec {
            groups: vec![group("mon", GroupKind::Clone, &[])],
            ..Spec::default()
        };
        let mut s = GroupState::default();
        s.assign(&names(&["site-a", "site-b"]), 2);
        let groups = BTreeMap::from([("mon".to_string(), s)]);
        assert_eq!(
            judge(&spec, &groups, &three())["mon"],
            Protection::Protected {
                standbys: vec!["site-a".into(), "site-b".into()]
            }
        );
        let mut s = GroupState::default();
        s.assign(&names(&["site-a"]), 3);
        let groups = BTreeMap::from([("mon".to_string(), s)]);
        let mut nodes = three();
        nodes[1].state = NodeState::Down;
        assert!(unprotected_why(&judge(&spec, &groups, &nodes)["mon"]).contains("site-b is down"));
    }

    #[test]
    fn a_down_primary_is_replaced_once_its_lease_expired() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[("site-a", 100), ("site-b", 50)])],
            ..Spec::default()
        };
        let mut groups = BTreeMap::from([("web".to_string(), assigned(3, "site-a", Phase::Running))]);
        let mut nodes = three();
        // Suspect: stays put.
        nodes[0].state = NodeState::Suspect;
        assert!(plan(&spec, &groups, &BTreeMap::new(), &nodes, 0).decisions.is_empty());
        // Down: first taken away from site-a.
        nodes[0].state = NodeState::Down;
        let p = plan(&spec, &groups, &BTreeMap::new(), &nodes, 0);
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "{p:?}");
        assert!(
            p.decisions[0]
                .reason
                .contains("site-a is down; moving to site-b; stopping it on site-a first"),
            "{p:?}"
        );
        apply(&mut groups, &p);
        // Its lease may still be valid (a new coordinator's grace): wait.
        let p = plan(&spec, &groups, &BTreeMap::new(), &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert_eq!(p.blocked["web"], "waiting for site-a to stop web");
        // Lease certainly expired: now site-b.
        nodes[0].lease_expired = true;
        let p = plan(&spec, &groups, &BTreeMap::new(), &nodes, 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
        assert_eq!(p.decisions[0].epoch, 5);
    }

    fn web_on_a() -> crate::state::ClusterState {
        let mut state = crate::state::ClusterState::default();
        state.spec.groups = vec![group("web", GroupKind::Exclusive, &[("site-a", 100), ("site-b", 50)])];
        state.groups.insert("web".into(), assigned(3, "site-a", Phase::Running));
        state
    }

    fn request(kind: TransitionKind, to: &str) -> MoveRequest {
        MoveRequest {
            kind,
            from: Some("site-a".into()),
            to: to.into(),
            force: false,
            deadline_unix_ms: 1_000,
            actor: "op@host".into(),
            transition: 7,
        }
    }

    fn plan_state(state: &crate::state::ClusterState, nodes: &[NodeFacts], now: u64) -> Plan {
        let operator = Operator {
            maintenance: Some(&state.maintenance),
            moves: Some(&state.moves),
        };
        plan_with(&state.spec, &state.groups, &state.fencing_needed, operator, nodes, now)
    }

    #[test]
    fn a_switchover_stops_the_primary_first_then_starts_the_target() {
        let mut state = web_on_a();
        state
            .moves
            .insert("web".into(), request(TransitionKind::Switchover, "site-b"));
        let p = plan_state(&state, &three(), 0);
        assert_eq!(p.decisions.len(), 1, "{p:?}");
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "the primary stops first");
        assert!(p.decisions[0].planned, "a switchover is planned");
        assert!(
            p.decisions[0]
                .reason
                .contains("switchover to site-b requested by op@host"),
            "{p:?}"
        );
        apply(&mut state.groups, &p);
        let p = plan_state(&state, &three(), 0);
        assert!(p.decisions.is_empty(), "site-a has not stopped yet: {p:?}");
        assert_eq!(p.blocked["web"], "waiting for site-a to stop web");
        state
            .groups
            .get_mut("web")
            .unwrap()
            .record_report("site-a", report(4, Phase::Stopped));
        let p = plan_state(&state, &three(), 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
        apply(&mut state.groups, &p);
        // Done: the request no longer moves anything, even against the score.
        let p = plan_state(&state, &three(), 0);
        assert!(p.decisions.is_empty(), "{p:?}");
    }

    #[test]
    fn a_move_past_its_deadline_or_to_an_unfit_node_is_abandoned() {
        let mut state = web_on_a();
        state
            .moves
            .insert("web".into(), request(TransitionKind::Switchover, "site-b"));
        let p = plan_state(&state, &three(), 1_000);
        assert!(p.abandon["web"].1.contains("deadline"), "{p:?}");
        assert!(p.decisions.is_empty(), "nothing moves for an expired request: {p:?}");
        let mut nodes = three();
        nodes[1].state = NodeState::Down;
        let p = plan_state(&state, &nodes, 0);
        assert_eq!(
            p.abandon["web"],
            (7, "site-b cannot take it: site-b is down".to_string())
        );
    }

    #[test]
    fn a_released_move_outlives_its_deadline_but_not_its_target_or_group() {
        let mut state = web_on_a();
        state
            .moves
            .insert("web".into(), request(TransitionKind::Switchover, "site-b"));
        let p = plan_state(&state, &three(), 0);
        apply(&mut state.groups, &p);
        // Past the deadline, released, site-a not yet stopped: the move goes
        // on (giving up would put it back on site-a once it stopped).
        let p = plan_state(&state, &three(), 5_000);
        assert!(p.abandon.is_empty(), "{p:?}");
        state
            .groups
            .get_mut("web")
            .unwrap()
            .record_report("site-a", report(4, Phase::Stopped));
        let p = plan_state(&state, &three(), 5_000);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
        apply(&mut state.groups, &p);
        // Assigned to site-b, which is lost before it runs: the request ends,
        // so ordinary failover takes over.
        let mut nodes = three();
        nodes[1].state = NodeState::Down;
        nodes[1].lease_expired = true;
        let p = plan_state(&state, &nodes, 0);
        assert_eq!(p.abandon["web"].1, "site-b cannot take it: site-b is down", "{p:?}");
        // A request for a group that left the spec ends too.
        state.spec.groups.clear();
        let p = plan_state(&state, &three(), 0);
        assert!(p.abandon["web"].1.contains("no longer an exclusive group"), "{p:?}");
    }

    #[test]
    fn a_forced_failover_fences_an_unresponsive_primary_at_once() {
        let mut state = web_on_a();
        state
            .spec
            .fencing
            .levels
            .insert("site-a".into(), vec![vec!["pdu-a".into()]]);
        let mut nodes = three();
        nodes[0].state = NodeState::Suspect;
        // A switchover waits for the primary to stop (or its lease).
        state
            .moves
            .insert("web".into(), request(TransitionKind::Switchover, "site-b"));
        let p = plan_state(&state, &nodes, 0);
        apply(&mut state.groups, &p);
        let p = plan_state(&state, &nodes, 0);
        assert!(p.fence.is_empty(), "{p:?}");
        assert_eq!(p.blocked["web"], "waiting for site-a to stop web");
        // A forced failover fences it now, and is not a planned move.
        state
            .moves
            .insert("web".into(), request(TransitionKind::Failover, "site-b"));
        let p = plan_state(&state, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert_eq!(p.blocked["web"], "forced failover: waiting for site-a to be fenced");
        assert!(p.fence["site-a"].contains("forced failover of web"), "{p:?}");
        // Without a fence device, even a forced failover waits for the lease.
        state.spec.fencing.levels.clear();
        let p = plan_state(&state, &nodes, 0);
        assert!(p.fence.is_empty() && p.decisions.is_empty(), "{p:?}");
        nodes[0].state = NodeState::Down;
        nodes[0].lease_expired = true;
        let p = plan_state(&state, &nodes, 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
        assert!(!p.decisions[0].planned);
    }

    #[test]
    fn maintenance_leaves_groups_alone_and_keeps_new_ones_off_a_node() {
        let mut state = web_on_a();
        let mut nodes = three();
        nodes[0].state = NodeState::Down;
        nodes[0].lease_expired = true;
        state.maintenance.cluster = true;
        let p = plan_state(&state, &nodes, 0);
        assert!(p.decisions.is_empty() && p.fence.is_empty(), "{p:?}");
        assert_eq!(p.blocked["web"], "the cluster is in maintenance; left alone");
        state.maintenance.cluster = false;
        state.maintenance.groups.insert("web".into());
        let p = plan_state(&state, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert_eq!(p.blocked["web"], "group web is in maintenance; left alone");
        state.maintenance.groups.clear();
        state.maintenance.nodes.insert("site-a".into());
        let p = plan_state(&state, &nodes, 0);
        assert!(p.decisions.is_empty(), "its host is in maintenance: {p:?}");
        // A node in maintenance gets nothing new.
        let mut state = crate::state::ClusterState::default();
        state.spec.groups = vec![group("db", GroupKind::Exclusive, &[("site-b", 100), ("site-a", 50)])];
        state.maintenance.nodes.insert("site-b".into());
        let p = plan_state(&state, &three(), 0);
        assert_eq!(p.decisions[0].assign, names(&["site-a"]), "{p:?}");
    }

    #[test]
    fn a_standby_primary_moves_by_switchover() {
        let state = web_on_a();
        let mut nodes = three();
        nodes[0].standby = true;
        let p = plan_state(&state, &nodes, 0);
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "{p:?}");
        assert!(p.decisions[0].planned, "draining is planned: {p:?}");
        assert!(p.decisions[0].reason.contains("site-a is in standby"), "{p:?}");
    }

    fn with_positions(nodes: &mut [NodeFacts], positions: &[(&str, u64)]) {
        for (name, p) in positions {
            let n = nodes.iter_mut().find(|n| n.name == *name).unwrap();
            n.freshness.insert("web".into(), Freshness::Position(*p));
        }
    }

    #[test]
    fn failover_prefers_the_most_current_candidate_and_refuses_one_beyond_max_lag() {
        let mut state = crate::state::ClusterState::default();
        let mut web = group(
            "web",
            GroupKind::Exclusive,
            &[("site-a", 100), ("site-b", 50), ("site-c", 10)],
        );
        web.max_lag = Some(MaxLag::Position(10));
        state.spec.groups = vec![web];
        state.groups.insert(
            "web".into(),
            GroupState {
                epoch: 4,
                ..GroupState::default()
            },
        );
        let mut nodes = three();
        nodes.push(node("site-c", NodeRole::Member, NodeState::Up));
        nodes[0].state = NodeState::Down;
        nodes[0].lease_expired = true;
        // The lost primary's last position is the reference.
        with_positions(&mut nodes, &[("site-a", 100), ("site-b", 95), ("site-c", 99)]);
        let p = plan_state(&state, &nodes, 0);
        assert_eq!(
            p.decisions[0].assign,
            names(&["site-c"]),
            "the most current wins over the score: {p:?}"
        );
        with_positions(&mut nodes, &[("site-c", 80)]);
        let p = plan_state(&state, &nodes, 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
        with_positions(&mut nodes, &[("site-b", 20)]);
        let p = plan_state(&state, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        let why = &p.blocked["web"];
        assert!(
            why.contains("site-b is behind: 80 positions > max_lag 10 positions"),
            "{why}"
        );
        assert!(why.contains("site-c is behind: 20 positions"), "{why}");
        // A candidate that is up and has not reported yet is waited for:
        // until it has, the most current one cannot be told.
        nodes[3].freshness.clear();
        let p = plan_state(&state, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert_eq!(
            p.blocked["web"],
            "waiting for site-c to report data freshness (max_lag 10 positions is set)"
        );
        // Down, it is not waited for, and not trusted either.
        nodes[3].state = NodeState::Down;
        let p = plan_state(&state, &nodes, 0);
        assert!(p.blocked["web"].contains("site-c is down"), "{p:?}");
    }

    #[test]
    fn a_first_placement_waits_for_every_candidate_s_freshness() {
        // site-c reported first; site-a (most current, but silent so far)
        // must not lose the group to that race.
        let mut state = crate::state::ClusterState::default();
        let mut web = group("web", GroupKind::Exclusive, &[("site-c", 100), ("site-a", 50)]);
        web.max_lag = Some(MaxLag::Position(10));
        state.spec.groups = vec![web];
        let mut nodes = three();
        nodes.push(node("site-c", NodeRole::Member, NodeState::Up));
        with_positions(&mut nodes, &[("site-c", 80)]);
        let p = plan_state(&state, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert!(
            p.blocked["web"].starts_with("waiting for site-a, site-b to report"),
            "{p:?}"
        );
        with_positions(&mut nodes, &[("site-a", 100), ("site-b", 95)]);
        let p = plan_state(&state, &nodes, 0);
        assert_eq!(p.decisions[0].assign, names(&["site-a"]), "{p:?}");
    }

    #[test]
    fn a_move_target_is_refused_with_the_reason_unless_forced() {
        let mut state = web_on_a();
        let mut web = group("web", GroupKind::Exclusive, &[]);
        web.max_lag = Some(MaxLag::Time(Duration::from_secs(5)));
        state.spec.groups = vec![web];
        let mut nodes = three();
        nodes.push(node("site-c", NodeRole::Member, NodeState::Up));
        nodes.push(node("site-d", NodeRole::Member, NodeState::Down));
        nodes[1].freshness.insert("web".into(), Freshness::LagMs(9_000));
        nodes[3].freshness.insert("web".into(), Freshness::LagMs(100));
        nodes[3].standby = true;
        let target = |to: Option<&str>, force: bool, state: &crate::state::ClusterState, nodes: &[NodeFacts]| {
            move_target(
                &state.spec,
                &state.groups,
                &state.fencing_needed,
                &state.maintenance,
                nodes,
                "web",
                to,
                force,
                0,
            )
        };
        let refused = |to: &str| target(Some(to), false, &state, &nodes).unwrap_err();
        assert!(refused("site-a").contains("already the primary"));
        assert!(refused("witness").contains("witness is a witness"));
        assert!(refused("site-d").contains("site-d is down"));
        assert!(refused("site-c").contains("site-c is in standby"));
        let behind = refused("site-b");
        assert!(
            behind.contains("site-b is behind: lag 9000 ms > max_lag 5s"),
            "{behind}"
        );
        assert!(behind.contains("--force overrides"), "{behind}");
        assert_eq!(target(Some("site-b"), true, &state, &nodes), Ok("site-b".into()));
        assert!(
            target(Some("site-d"), true, &state, &nodes)
                .unwrap_err()
                .contains("down")
        );
        // Forcing past the migration threshold never skips the other checks.
        for _ in 0..3 {
            state
                .groups
                .get_mut("web")
                .unwrap()
                .record_failure("site-d", "r", 0, false);
        }
        let forced = target(Some("site-d"), true, &state, &nodes).unwrap_err();
        assert!(forced.contains("site-d is down"), "{forced}");
        let none = target(None, false, &state, &nodes).unwrap_err();
        assert!(none.starts_with("no node can take web over"), "{none}");
        nodes[3].standby = false;
        assert_eq!(target(None, false, &state, &nodes), Ok("site-c".into()));
        // Failing monitors refuse a target unless forced.
        state
            .groups
            .get_mut("web")
            .unwrap()
            .record_failure("site-c", "r", 0, false);
        assert!(refused_with(
            &target(Some("site-c"), false, &state, &nodes),
            "failing its monitors"
        ));
        assert_eq!(target(Some("site-c"), true, &state, &nodes), Ok("site-c".into()));
        state.maintenance.groups.insert("web".into());
        assert!(refused_with(
            &target(Some("site-c"), true, &state, &nodes),
            "group web is in maintenance"
        ));
    }

    fn refused_with(r: &Result<String, String>, what: &str) -> bool {
        r.as_ref().is_err_and(|e| e.contains(what))
    }

    #[test]
    fn a_lost_node_with_fence_devices_is_fenced_before_its_group_moves() {
        let mut state = crate::state::ClusterState::default();
        state.spec.groups = vec![group("web", GroupKind::Exclusive, &[("site-a", 100), ("site-b", 50)])];
        state
            .spec
            .fencing
            .levels
            .insert("site-a".into(), vec![vec!["pdu-a".into()]]);
        state.groups.insert("web".into(), assigned(3, "site-a", Phase::Running));
        let mut nodes = three();
        nodes[0].state = NodeState::Down;
        nodes[0].lease_expired = true;
        let p = plan(&state.spec, &state.groups, &state.fencing_needed, &nodes, 0);
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "{p:?}");
        apply(&mut state.groups, &p);
        // Its lease expired, but with a fence device that is not trusted alone.
        let p = plan(&state.spec, &state.groups, &state.fencing_needed, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert_eq!(p.blocked["web"], "waiting for site-a to be fenced");
        assert_eq!(p.fence["site-a"], "lost while it may run web");
        state.apply(&crate::state::Command::FenceRequested {
            node: "site-a".into(),
            reason: p.fence["site-a"].clone(),
            actor: "coordinator".into(),
            at_unix_ms: 1,
        });
        let p = plan(&state.spec, &state.groups, &state.fencing_needed, &nodes, 0);
        assert!(p.decisions.is_empty() && p.fence.is_empty(), "{p:?}");
        assert!(p.blocked["web"].contains("site-a needs fencing"), "{p:?}");
        state.apply(&crate::state::Command::Fenced {
            node: "site-a".into(),
            how: "level 1: pdu-a ok".into(),
            actor: "node:site-b".into(),
            at_unix_ms: 2,
        });
        let p = plan(&state.spec, &state.groups, &state.fencing_needed, &nodes, 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
        assert_eq!(p.decisions[0].epoch, 5);
    }

    #[test]
    fn a_failed_stop_without_fence_devices_waits_for_an_operator() {
        let mut state = crate::state::ClusterState::default();
        state.spec.groups = vec![group("web", GroupKind::Exclusive, &[("site-a", 100), ("site-b", 50)])];
        let mut gs = assigned(3, "site-a", Phase::Running);
        gs.assign(&BTreeSet::new(), 4);
        state.groups.insert("web".into(), gs);
        state.apply(&crate::state::Command::Report {
            node: "site-a".into(),
            group: "web".into(),
            report: report(4, Phase::StopFailed),
            failed_resource: None,
            fatal: false,
        });
        let mut nodes = three();
        nodes[0].state = NodeState::Down;
        nodes[0].lease_expired = true;
        let p = plan(&state.spec, &state.groups, &state.fencing_needed, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert!(
            p.blocked["web"].contains("once it is off, run `tandem fence confirm`"),
            "{p:?}"
        );
        state.apply(&crate::state::Command::Fenced {
            node: "site-a".into(),
            how: "confirmed off by op@host".into(),
            actor: "op@host".into(),
            at_unix_ms: 2,
        });
        let p = plan(&state.spec, &state.groups, &state.fencing_needed, &nodes, 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
    }

    #[test]
    fn a_stopped_report_from_before_the_release_does_not_count() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[("site-b", 10)])],
            ..Spec::default()
        };
        // site-a reported stopped at epoch 2, then ran it again at epoch 3
        // without that report being committed; epoch 4 takes it away.
        let mut gs = assigned(3, "site-a", Phase::Stopped);
        gs.reports.insert("site-a".into(), report(2, Phase::Stopped));
        gs.assign(&BTreeSet::new(), 4);
        let mut groups = BTreeMap::from([("web".to_string(), gs)]);
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert_eq!(p.blocked["web"], "waiting for site-a to stop web");
        let g = groups.get_mut("web").unwrap();
        g.record_report("site-a", report(4, Phase::Stopped));
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 0);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
    }

    #[test]
    fn a_clone_turned_exclusive_stops_everywhere_first() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[])],
            ..Spec::default()
        };
        let mut gs = assigned(2, "site-a", Phase::Running);
        gs.assigned.insert("site-b".into());
        let groups = BTreeMap::from([("web".to_string(), gs)]);
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 0);
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "{p:?}");
    }

    #[test]
    fn a_node_missing_from_the_view_is_not_known_stopped() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[])],
            ..Spec::default()
        };
        let mut gs = assigned(2, "gone", Phase::Running);
        gs.assign(&BTreeSet::new(), 3);
        let groups = BTreeMap::from([("web".to_string(), gs)]);
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert!(p.blocked["web"].contains("waiting for gone"), "{p:?}");
    }

    #[test]
    fn repeated_failures_move_the_group_after_it_stopped() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[("site-a", 100)])],
            ..Spec::default()
        };
        let mut gs = assigned(1, "site-a", Phase::Failed);
        for _ in 0..3 {
            gs.record_failure("site-a", "r", 1, false);
        }
        let mut groups = BTreeMap::from([("web".to_string(), gs)]);
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 10);
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "first stop it on site-a: {p:?}");
        // site-a stopped it under the empty assignment.
        let g = groups.get_mut("web").unwrap();
        g.assign(&BTreeSet::new(), 2);
        g.record_report("site-a", report(2, Phase::Stopped));
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 10);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
    }

    #[test]
    fn a_failed_stop_blocks_the_group_until_fenced() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[])],
            ..Spec::default()
        };
        let mut gs = assigned(1, "site-a", Phase::StopFailed);
        gs.assigned.clear();
        let groups = BTreeMap::from([("web".to_string(), gs)]);
        let fencing = BTreeMap::from([("site-a".to_string(), "a stop of web failed".to_string())]);
        let mut nodes = three();
        nodes[0].lease_expired = true;
        let p = plan(&spec, &groups, &fencing, &nodes, 0);
        assert!(p.decisions.is_empty(), "{p:?}");
        assert!(p.blocked["web"].contains("site-a needs fencing"), "{p:?}");
    }

    #[test]
    fn no_member_left_blocks_with_every_reason() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[])],
            ..Spec::default()
        };
        let nodes = vec![
            node("site-a", NodeRole::Member, NodeState::Down),
            node("witness", NodeRole::Witness, NodeState::Up),
        ];
        let p = plan(&spec, &BTreeMap::new(), &BTreeMap::new(), &nodes, 0);
        assert!(p.decisions.is_empty());
        let why = &p.blocked["web"];
        assert!(
            why.contains("site-a is down") && why.contains("witness is a witness"),
            "{why}"
        );
    }

    #[test]
    fn clones_run_on_every_eligible_member_and_anti_affinity_is_kept() {
        let mut db = group("db", GroupKind::Exclusive, &[("site-a", 10)]);
        db.placement.anti_affinity = vec!["web".into()];
        let spec = Spec {
            groups: vec![
                group("agent", GroupKind::Clone, &[]),
                db,
                group("web", GroupKind::Exclusive, &[("site-a", 100)]),
            ],
            ..Spec::default()
        };
        let p = plan(&spec, &BTreeMap::new(), &BTreeMap::new(), &three(), 0);
        let by: BTreeMap<_, _> = p
            .decisions
            .iter()
            .map(|d| (d.group.as_str(), d.assign.clone()))
            .collect();
        assert_eq!(by["agent"], names(&["site-a", "site-b"]));
        assert_eq!(by["db"], names(&["site-a"]));
        assert_eq!(
            by["web"],
            names(&["site-b"]),
            "anti-affinity with db wins over the score"
        );
    }

    #[test]
    fn fail_back_only_when_asked_and_only_from_a_running_group() {
        let mut g = group("web", GroupKind::Exclusive, &[("site-a", 100), ("site-b", 50)]);
        let groups = BTreeMap::from([("web".to_string(), assigned(4, "site-b", Phase::Running))]);
        let spec = Spec {
            groups: vec![g.clone()],
            ..Spec::default()
        };
        assert!(plan(&spec, &groups, &BTreeMap::new(), &three(), 0).decisions.is_empty());
        g.placement.fail_back = true;
        let spec = Spec {
            groups: vec![g],
            ..Spec::default()
        };
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 0);
        // site-b still runs it: stop it there first.
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "{p:?}");
        assert!(p.decisions[0].reason.contains("failing back to site-a"), "{p:?}");
    }

    #[test]
    fn a_fatal_failure_moves_the_group_at_once() {
        let spec = Spec {
            groups: vec![group("web", GroupKind::Exclusive, &[("site-a", 100)])],
            ..Spec::default()
        };
        let mut gs = assigned(1, "site-a", Phase::Failed);
        gs.record_failure("site-a", "r", 1, true);
        let mut groups = BTreeMap::from([("web".to_string(), gs)]);
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 10);
        assert_eq!(p.decisions[0].assign, BTreeSet::new(), "{p:?}");
        apply(&mut groups, &p);
        groups
            .get_mut("web")
            .unwrap()
            .record_report("site-a", report(2, Phase::Stopped));
        let p = plan(&spec, &groups, &BTreeMap::new(), &three(), 10);
        assert_eq!(p.decisions[0].assign, names(&["site-b"]), "{p:?}");
    }

    fn arb_phase() -> impl Strategy<Value = Phase> {
        prop_oneof![
            Just(Phase::Starting),
            Just(Phase::Running),
            Just(Phase::Stopping),
            Just(Phase::Stopped),
            Just(Phase::Failed),
            Just(Phase::StopFailed),
        ]
    }

    fn arb_state() -> impl Strategy<Value = NodeState> {
        prop_oneof![Just(NodeState::Up), Just(NodeState::Suspect), Just(NodeState::Down)]
    }

    const NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];

    prop_compose! {
        fn arb_node(i: usize)(witness in prop::bool::weighted(0.2), state in arb_state(),
                              expired in any::<bool>(), standby in prop::bool::weighted(0.2)) -> NodeFacts {
            NodeFacts {
                name: NAMES[i].into(),
                role: if witness { NodeRole::Witness } else { NodeRole::Member },
                state,
                // A down node may or may not have certainly lost its lease; an up one has not.
                lease_expired: expired && state == NodeState::Down,
                standby,
                freshness: BTreeMap::new(),
            }
        }
    }

    prop_compose! {
        fn arb_world()(
            nodes in (arb_node(0), arb_node(1), arb_node(2), arb_node(3), arb_node(4)),
            kinds in prop::collection::vec(prop::bool::weighted(0.3), 1..6),
            scores in prop::collection::vec(prop::collection::vec(-5i64..100, 5), 6),
            avoid in prop::collection::vec(prop::option::of(0usize..5), 6),
            holders in prop::collection::vec(prop::option::of(0usize..5), 6),
            reports in prop::collection::vec(prop::collection::vec(prop::option::of(arb_phase()), 5), 6),
            failures in prop::collection::vec(prop::collection::vec(0u32..5, 5), 6),
            fencing in prop::collection::vec(prop::bool::weighted(0.1), 5),
            devices in prop::collection::vec(prop::bool::weighted(0.4), 5),
        ) -> (Spec, BTreeMap<String, GroupState>, BTreeMap<String, String>, Vec<NodeFacts>) {
            let nodes = vec![nodes.0, nodes.1, nodes.2, nodes.3, nodes.4];
            let mut spec = Spec::default();
            let mut groups = BTreeMap::new();
            for (gi, clone) in kinds.iter().enumerate() {
                let name = format!("g{gi}");
                let kind = if *clone { GroupKind::Clone } else { GroupKind::Exclusive };
                let prefer: Vec<(&str, i64)> = NAMES.iter().zip(&scores[gi]).map(|(n, s)| (*n, *s)).collect();
                let mut g = group(&name, kind, &prefer);
                g.placement.avoid = avoid[gi].map(|i| NAMES[i].to_string()).into_iter().collect();
                spec.groups.push(g);
                let mut gs = GroupState { epoch: 5, ..GroupState::default() };
                if let Some(h) = holders[gi] {
                    gs.assigned.insert(NAMES[h].to_string());
                }
                for (ni, phase) in reports[gi].iter().enumerate() {
                    if let Some(p) = phase {
                        gs.reports.insert(NAMES[ni].to_string(), report(5, *p));
                    }
                    for _ in 0..failures[gi][ni] {
                        gs.record_failure(NAMES[ni], "r", 1, false);
                    }
                }
                groups.insert(name, gs);
            }
            for (n, _) in NAMES.iter().zip(&devices).filter(|(_, d)| **d) {
                spec.fencing.levels.insert(n.to_string(), vec![vec!["pdu".to_string()]]);
            }
            let fencing = NAMES.iter().zip(&fencing).filter(|(_, f)| **f)
                .map(|(n, _)| (n.to_string(), "stop failed".to_string())).collect();
            (spec, groups, fencing, nodes)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn placement_keeps_the_safety_rules((spec, groups, fencing, nodes) in arb_world()) {
            let p = plan(&spec, &groups, &fencing, &nodes, 10);
            prop_assert_eq!(&p, &plan(&spec, &groups, &fencing, &nodes, 10), "deterministic");
            let facts: BTreeMap<&str, &NodeFacts> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
            for d in &p.decisions {
                let g = spec.group(&d.group).unwrap();
                let gs = &groups[&d.group];
                for n in &d.assign {
                    let f = facts[n.as_str()];
                    prop_assert!(f.role == NodeRole::Member, "witness {} used for {}", n, d.group);
                    let new = !gs.assigned.contains(n);
                    if new {
                        prop_assert!(!f.standby, "new assignment to standby {}", n);
                        prop_assert!(f.state == NodeState::Up, "new assignment to {} {}", f.state, n);
                        prop_assert!(!g.placement.avoid.contains(n), "avoided {}", n);
                        prop_assert!(!fencing.contains_key(n), "{} needs fencing", n);
                    }
                }
                prop_assert_eq!(d.epoch, gs.epoch + 1);
                if g.kind == GroupKind::Exclusive {
                    prop_assert!(d.assign.len() <= 1, "exclusive {} on {:?}", d.group, d.assign);
                    // A holder always gives the group up before anyone else gets it.
                    if !d.assign.is_empty() {
                        prop_assert!(gs.assigned.is_empty() || gs.assigned == d.assign, "{} moved in one step", d.group);
                    }
                    // Fence before recover.
                    if let Some(y) = d.assign.iter().next() {
                        for m in gs.may_run().iter().filter(|m| *m != y) {
                            let r = gs.reports.get(m).map(|r| r.phase);
                            let released_at = gs.released.get(m).copied().unwrap_or(0);
                            let fresh_stop = gs.reports.get(m).is_some_and(|r| r.phase == Phase::Stopped && r.epoch >= released_at);
                            let stopped = fresh_stop
                                || (facts[m.as_str()].lease_expired
                                    && !spec.fencing.has_devices(m)
                                    && !fencing.contains_key(m)
                                    && r != Some(Phase::StopFailed));
                            prop_assert!(stopped, "{} moved to {} while {} may run it ({:?})", d.group, y, m, r);
                        }
                    }
                }
            }
            // Only nodes with devices are fenced, and only nodes not already waiting for it.
            for n in p.fence.keys() {
                prop_assert!(spec.fencing.has_devices(n) || fencing.contains_key(n) || groups.values().any(|g| g.reports.get(n).is_some_and(|r| r.phase == Phase::StopFailed)), "{} fenced without devices", n);
            }
            // Standby and witness holders are emptied.
            for g in &spec.groups {
                let holders = &groups[&g.name].assigned;
                for h in holders {
                    let f = facts[h.as_str()];
                    if f.standby || f.role == NodeRole::Witness {
                        let d = p.decisions.iter().find(|d| d.group == g.name);
                        prop_assert!(d.is_some_and(|d| !d.assign.contains(h)), "{} kept on {}", g.name, h);
                    }
                }
            }
        }

        #[test]
        fn fresh_exclusive_groups_go_to_the_highest_score(scores in prop::collection::vec(-5i64..100, 3)) {
            let nodes: Vec<NodeFacts> = NAMES[..3].iter().map(|n| node(n, NodeRole::Member, NodeState::Up)).collect();
            let prefer: Vec<(&str, i64)> = NAMES[..3].iter().zip(&scores).map(|(n, s)| (*n, *s)).collect();
            let spec = Spec { groups: vec![group("g", GroupKind::Exclusive, &prefer)], ..Spec::default() };
            let p = plan(&spec, &BTreeMap::new(), &BTreeMap::new(), &nodes, 0);
            let best = *scores.iter().max().unwrap();
            let chosen = p.decisions[0].assign.iter().next().unwrap().clone();
            let i = NAMES.iter().position(|n| *n == chosen).unwrap();
            prop_assert_eq!(scores[i], best);
            // Ties go to the first name.
            prop_assert!(scores[..i].iter().all(|s| *s < best));
        }
    }
}
