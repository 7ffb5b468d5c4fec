//! Applying committed commands to the cluster state: one function per
//! command that does more than record an event.

use std::collections::BTreeSet;

use super::{
    Applied, ClusterState, Command, Decided, EventKind, MaintenanceScope, MoveRequest, TransitionKind,
    TransitionOutcome, rejected,
};
use crate::groups::{NodeReport, Phase};
use crate::spec::{GroupKind, Spec};

/// The event a command records.
pub(super) struct Recorded {
    kind: EventKind,
    message: String,
    actor: String,
    at_unix_ms: u64,
}

/// What applying a command did: record one event, or return without one
/// (rejected, changed nothing worth an event, or recorded its own).
pub(super) enum Step {
    Event(Recorded),
    Done(Applied),
}

fn event(kind: EventKind, message: String, actor: &str, at_unix_ms: u64) -> Step {
    Step::Event(Recorded {
        kind,
        message,
        actor: actor.to_string(),
        at_unix_ms,
    })
}

impl ClusterState {
    /// Applies one committed command. Never fails: commands are validated
    /// before they are proposed, and a command that no longer makes sense is
    /// recorded as it is rather than rejected, so every node stays identical.
    pub fn apply(&mut self, command: &Command) -> Applied {
        let first_new = self.next_event_seq;
        let group = self.command_group(command);
        let applied = match self.apply_command(command) {
            Step::Event(r) => Applied {
                event_seq: Some(self.record(r.kind, r.message, r.actor, r.at_unix_ms)),
                rejected: None,
                transition: None,
            },
            Step::Done(applied) => applied,
        };
        if group.is_some() {
            for e in self.events.iter_mut().rev().take_while(|e| e.seq >= first_new) {
                e.group.clone_from(&group);
            }
        }
        let zone_may_change = match command {
            Command::Note { .. }
            | Command::ClearFailures { .. }
            | Command::FenceFailed { .. }
            | Command::RequestMove { .. }
            | Command::EndMove { .. }
            | Command::TransitionDone { .. }
            | Command::SetStandby { .. }
            | Command::SetMaintenance { .. }
            | Command::HookRan { .. }
            | Command::Protection { .. }
            | Command::NodeStarted { .. } => false,
            Command::Report { .. } => applied.rejected.is_none() && applied.event_seq.is_some(),
            _ => applied.rejected.is_none(),
        };
        if zone_may_change {
            self.zone_serial += 1;
        }
        applied
    }

    fn apply_command(&mut self, command: &Command) -> Step {
        match command {
            Command::NodeAdded {
                node,
                actor,
                at_unix_ms,
            } => event(EventKind::NodeAdded, format!("node {node} joined"), actor, *at_unix_ms),
            Command::NodeRemoved {
                node,
                actor,
                at_unix_ms,
            } => {
                // Added again later, it starts afresh (join = true).
                self.started.remove(&node.name);
                event(EventKind::NodeRemoved, format!("node {node} left"), actor, *at_unix_ms)
            }
            Command::Note {
                message,
                actor,
                at_unix_ms,
            } => event(EventKind::Note, message.clone(), actor, *at_unix_ms),
            Command::ApplySpec {
                spec,
                source,
                expected_version,
                summary,
                actor,
                at_unix_ms,
            } => self
                .apply_spec(spec, source, *expected_version, summary)
                .map_or_else(Step::Done, |m| event(EventKind::SpecApplied, m, actor, *at_unix_ms)),
            Command::Assign {
                group,
                nodes,
                epoch,
                reason,
                at_unix_ms,
                detected_unix_ms,
                planned,
            } => {
                let decided = Decided {
                    kind: if *planned {
                        TransitionKind::Switchover
                    } else {
                        TransitionKind::Failover
                    },
                    reason: reason.clone(),
                    at_unix_ms: *at_unix_ms,
                    detected_unix_ms: *detected_unix_ms,
                };
                self.assign(group, nodes, *epoch, decided)
            }
            Command::Report {
                node,
                group,
                report,
                failed_resource,
                fatal,
            } => self.report(node, group, report, failed_resource.as_deref(), *fatal),
            Command::FenceRequested {
                node,
                reason,
                actor,
                at_unix_ms,
            } => {
                if self.fencing_needed.contains_key(node) {
                    return Step::Done(Applied::default());
                }
                self.fencing_needed.insert(node.clone(), reason.clone());
                event(
                    EventKind::Fence,
                    format!("{node} must be fenced: {reason}"),
                    actor,
                    *at_unix_ms,
                )
            }
            Command::Fenced {
                node,
                how,
                actor,
                at_unix_ms,
            } => {
                let withdrawn = self.fenced(node, *at_unix_ms);
                let message = if withdrawn.is_empty() {
                    format!("{node} fenced: {how}")
                } else {
                    format!("{node} fenced: {how}; withdrawn from {}", withdrawn.join(", "))
                };
                event(EventKind::Fence, message, actor, *at_unix_ms)
            }
            Command::FenceFailed {
                node,
                detail,
                actor,
                at_unix_ms,
            } => {
                if self.fencing_needed.contains_key(node) {
                    self.fence_failures.insert(node.clone(), detail.clone());
                }
                event(
                    EventKind::Fence,
                    format!("fencing {node} failed: {detail}"),
                    actor,
                    *at_unix_ms,
                )
            }
            Command::RequestMove {
                group,
                kind,
                from,
                to,
                force,
                deadline_unix_ms,
                actor,
                at_unix_ms,
            } => {
                let request = MoveRequest {
                    kind: *kind,
                    from: from.clone(),
                    to: to.clone(),
                    force: *force,
                    deadline_unix_ms: *deadline_unix_ms,
                    actor: actor.clone(),
                    transition: 0,
                };
                Step::Done(self.request_move(group, request, *at_unix_ms))
            }
            Command::EndMove {
                group,
                transition,
                reason,
                actor,
                at_unix_ms,
            } => self
                .end_move(group, *transition, reason)
                .map_or_else(Step::Done, |m| event(EventKind::Move, m, actor, *at_unix_ms)),
            Command::TransitionDone {
                transition,
                dns_unix_ms,
            } => self
                .transition_done(*transition, *dns_unix_ms)
                .map_or_else(Step::Done, |m| {
                    event(EventKind::Transition, m, "coordinator", *dns_unix_ms)
                }),
            Command::SetStandby {
                node,
                on,
                actor,
                at_unix_ms,
            } => {
                let message = if *on {
                    self.standby.insert(node.clone());
                    format!("{node} in standby: its groups move elsewhere, nothing new starts there")
                } else {
                    self.standby.remove(node);
                    format!("{node} out of standby")
                };
                event(EventKind::Mode, message, actor, *at_unix_ms)
            }
            Command::SetMaintenance {
                scope,
                on,
                actor,
                at_unix_ms,
            } => {
                let message = self.set_maintenance(scope, *on);
                event(EventKind::Mode, message, actor, *at_unix_ms)
            }
            Command::HookRan {
                node,
                group,
                hook,
                epoch,
                ok,
                outcome,
                at_unix_ms,
            } => {
                let message = format!(
                    "hook {hook} of {group} on {node} (epoch {epoch}) {}: {outcome}",
                    if *ok { "succeeded" } else { "failed" }
                );
                event(EventKind::Hook, message, &format!("node:{node}"), *at_unix_ms)
            }
            Command::ClearFailures {
                group,
                node,
                actor,
                at_unix_ms,
            } => {
                let message = self.clear_failures(group.as_deref(), node.as_deref());
                event(EventKind::FailuresCleared, message, actor, *at_unix_ms)
            }
            Command::Protection {
                group,
                unprotected,
                reason,
                at_unix_ms,
            } => self
                .protection(group, *unprotected, reason, *at_unix_ms)
                .map_or_else(Step::Done, |m| {
                    event(EventKind::Protection, m, "coordinator", *at_unix_ms)
                }),
            Command::NodeStarted { node, .. } => {
                self.started.insert(node.clone());
                Step::Done(Applied::default())
            }
        }
    }

    /// A group's warning starts or ends: an event only when it changes
    /// (a repeated command, e.g. from a new coordinator, records nothing).
    fn protection(&mut self, group: &str, unprotected: bool, reason: &str, at_unix_ms: u64) -> Result<String, Applied> {
        let was = self.unprotected.contains_key(group);
        if unprotected == was {
            return Err(Applied::default());
        }
        if unprotected {
            self.unprotected.insert(
                group.to_string(),
                super::Unprotected {
                    reason: reason.to_string(),
                    since_unix_ms: at_unix_ms,
                },
            );
            Ok(format!("{group} is unprotected: {reason}"))
        } else {
            self.unprotected.remove(group);
            Ok(format!("{group} is no longer unprotected: {reason}"))
        }
    }

    /// A new spec, if it was diffed against the current version. Returns
    /// the event's message, or the rejection.
    fn apply_spec(
        &mut self,
        spec: &Spec,
        source: &str,
        expected_version: u64,
        summary: &[String],
    ) -> Result<String, Applied> {
        if expected_version != self.spec_version {
            return Err(rejected(format!(
                "the spec changed meanwhile (version {} now, {} expected); review and apply again",
                self.spec_version, expected_version
            )));
        }
        self.spec = spec.clone();
        self.spec_source = source.to_string();
        self.spec_version += 1;
        let changes = if summary.is_empty() {
            "no changes".to_string()
        } else {
            summary.join("; ")
        };
        Ok(format!("spec version {} applied: {changes}", self.spec_version))
    }

    /// The coordinator's assignment of `group` at `epoch`: only the next
    /// epoch lands, so a decision made on a stale view never does.
    fn assign(&mut self, group: &str, nodes: &BTreeSet<String>, epoch: u64, decided: Decided) -> Step {
        let state = self.groups.entry(group.to_string()).or_default();
        if epoch != state.epoch + 1 {
            return Step::Done(rejected(format!(
                "stale decision for {group}: epoch {epoch}, current {}",
                state.epoch
            )));
        }
        let before = state.assigned.clone();
        state.assign(nodes, epoch);
        state.reason = decided.reason.clone();
        let (reason, at_unix_ms) = (decided.reason.clone(), decided.at_unix_ms);
        self.track_assignment(group, &before, nodes, epoch, decided);
        let on = if nodes.is_empty() {
            "no node".to_string()
        } else {
            nodes.iter().cloned().collect::<Vec<_>>().join(", ")
        };
        let message = format!("{group} assigned to {on} (epoch {epoch}): {reason}");
        event(EventKind::Assignment, message, "coordinator", at_unix_ms)
    }

    /// A node's report on a group: its phase, failures, and whether a stop failed.
    fn report(
        &mut self,
        node: &str,
        group: &str,
        report: &NodeReport,
        failed_resource: Option<&str>,
        fatal: bool,
    ) -> Step {
        let state = self.groups.entry(group.to_string()).or_default();
        // Reports from one node carry non-decreasing epochs; an older one
        // arriving after fencing recorded this node stopped at a newer epoch
        // is stale and must not bring it back.
        if let Some(newer) = state.reports.get(node).filter(|r| r.epoch > report.epoch) {
            return Step::Done(rejected(format!(
                "stale report from {node} for {group}: epoch {}, already at {}",
                report.epoch, newer.epoch
            )));
        }
        let previous = state.record_report(node, report.clone());
        if let Some(resource) = failed_resource {
            state.record_failure(node, resource, report.at_unix_ms, fatal);
        }
        self.track_report(group, node, report);
        if report.phase == Phase::StopFailed {
            self.fencing_needed
                .insert(node.to_string(), format!("a stop of {group} failed or timed out"));
        }
        let phase_changed = previous.is_none_or(|p| p.phase != report.phase || p.epoch != report.epoch);
        if !phase_changed && failed_resource.is_none() {
            return Step::Done(Applied::default());
        }
        // An exclusive group's new primary running: the moment every node
        // with a valid lease starts answering its address. (The report is
        // recorded: active now means this report made it so.)
        let exclusive = self.spec.group(group).is_some_and(|g| g.kind == GroupKind::Exclusive);
        if exclusive && phase_changed && self.groups.get(group).is_some_and(|g| g.active_on(node)) {
            self.record(
                EventKind::Dns,
                format!("DNS: {group} now answers with {node} (epoch {})", report.epoch),
                "coordinator".into(),
                report.at_unix_ms,
            );
        }
        let detail = report
            .resources
            .iter()
            .filter(|r| r.result != "ok")
            .map(|r| format!("{} {}: {}", r.name, r.action, r.result))
            .collect::<Vec<_>>()
            .join("; ");
        let message = format!(
            "{group} on {node}: {} (epoch {}){}",
            report.phase,
            report.epoch,
            if detail.is_empty() {
                String::new()
            } else {
                format!(" - {detail}")
            }
        );
        event(EventKind::Resource, message, &format!("node:{node}"), report.at_unix_ms)
    }

    /// An operator's move request: opens its transition record.
    fn request_move(&mut self, group: &str, mut request: MoveRequest, at_unix_ms: u64) -> Applied {
        let forced = if request.force { " (forced)" } else { "" };
        let what = request.kind.as_str();
        let reason = format!("{what} requested by {}{forced}", request.actor);
        let id = self.start_transition(
            group,
            request.kind,
            request.from.clone(),
            Decided {
                kind: request.kind,
                reason,
                at_unix_ms,
                detected_unix_ms: Some(at_unix_ms),
            },
        );
        if let Some(t) = self.transitions.back_mut() {
            t.to = Some(request.to.clone());
            t.actor = request.actor.clone();
        }
        let from_text = request.from.as_ref().map_or(String::new(), |f| format!(" from {f}"));
        let message = format!("{what} of {group}{from_text} to {} requested{forced}", request.to);
        let actor = request.actor.clone();
        request.transition = id;
        self.moves.insert(group.to_string(), request);
        let seq = self.record(EventKind::Move, message, actor, at_unix_ms);
        Applied {
            event_seq: Some(seq),
            rejected: None,
            transition: Some(id),
        }
    }

    /// Ends a move request that did not complete. Returns the event's message.
    fn end_move(&mut self, group: &str, transition: u64, reason: &str) -> Result<String, Applied> {
        if self.moves.get(group).is_some_and(|m| m.transition == transition) {
            self.moves.remove(group);
        }
        let released = self.groups.get(group).is_some_and(|g| g.assigned.is_empty());
        let Some(t) = self
            .transitions
            .iter_mut()
            .find(|t| t.id == transition && t.outcome == TransitionOutcome::InProgress)
        else {
            return Err(rejected(format!(
                "transition {transition} of {group} is not in progress"
            )));
        };
        Ok(if released && t.epoch == 0 && t.from.is_some() {
            // The old primary was already released: the group moves on, to
            // wherever placement puts it, in this record.
            t.to = None;
            t.reason = format!("{}; the request ended ({reason}), placement chooses the node", t.reason);
            format!(
                "{} of {group} no longer goes to a chosen node: {reason}; placement places it",
                t.kind.as_str()
            )
        } else {
            t.outcome = TransitionOutcome::Abandoned(reason.to_string());
            format!("{} of {group} abandoned: {reason}", t.kind.as_str())
        })
    }

    /// DNS answers the new primary everywhere: the transition completes.
    fn transition_done(&mut self, transition: u64, dns_unix_ms: u64) -> Result<String, Applied> {
        let Some(t) = self.transitions.iter_mut().find(|t| {
            t.id == transition && t.outcome == TransitionOutcome::InProgress && t.phases.healthy_unix_ms.is_some()
        }) else {
            return Err(rejected(format!("transition {transition} is not waiting for DNS")));
        };
        t.phases.dns_unix_ms = Some(dns_unix_ms);
        t.outcome = TransitionOutcome::Completed;
        let first = t.phases.named().iter().find_map(|(_, at)| *at).unwrap_or(dns_unix_ms);
        Ok(format!(
            "{} of {}{} to {} completed in {} ms ({})",
            t.kind.as_str(),
            t.group,
            t.from.as_ref().map_or(String::new(), |f| format!(" from {f}")),
            t.to.as_deref().unwrap_or("?"),
            dns_unix_ms.saturating_sub(first),
            t.phases.summary()
        ))
    }

    fn set_maintenance(&mut self, scope: &MaintenanceScope, on: bool) -> String {
        let m = &mut self.maintenance;
        match scope {
            MaintenanceScope::Cluster => m.cluster = on,
            MaintenanceScope::Group(g) if on => _ = m.groups.insert(g.clone()),
            MaintenanceScope::Group(g) => _ = m.groups.remove(g),
            MaintenanceScope::Node(n) if on => _ = m.nodes.insert(n.clone()),
            MaintenanceScope::Node(n) => _ = m.nodes.remove(n),
        }
        if on {
            format!("maintenance on for {scope}: Tandem monitors and reports but does not start, stop, restart or move")
        } else {
            format!("maintenance off for {scope}")
        }
    }

    fn clear_failures(&mut self, group: Option<&str>, node: Option<&str>) -> String {
        for (name, state) in &mut self.groups {
            if group.is_some_and(|g| g != name) {
                continue;
            }
            match node {
                Some(n) => _ = state.failures.remove(n),
                None => state.failures.clear(),
            }
        }
        format!(
            "failure counts cleared for {} on {}",
            group.unwrap_or("every group"),
            node.unwrap_or("every node")
        )
    }
}
