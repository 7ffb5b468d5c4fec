//! The replicated cluster state and the commands that change it.
//!
//! Raft replicates [`Command`]s; every node applies them in the same order with
//! [`ClusterState::apply`], a pure function, so every node holds the same
//! state for the same log index. Wall-clock times inside commands are put
//! there by the proposer (they are for people reading events, never for
//! decisions), so applying a command never reads a clock.
//!
//! Membership itself lives in Raft's membership configuration; this state
//! keeps what Raft does not: the cluster's name and a bounded event log.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::groups::{GroupState, NodeReport, Phase};
use crate::membership::NodeInfo;
use crate::spec::Spec;

/// How many events the replicated log keeps; older ones are dropped.
pub const EVENT_LOG_CAPACITY: usize = 1000;

/// The longest operator note accepted, in bytes.
pub const NOTE_MAX_BYTES: usize = 1024;

/// A change to the cluster state, as carried in a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Records that a node was added to the cluster (after Raft's membership
    /// change committed).
    NodeAdded {
        node: NodeInfo,
        actor: String,
        at_unix_ms: u64,
    },
    /// Records that a node left the cluster.
    NodeRemoved {
        node: NodeInfo,
        actor: String,
        at_unix_ms: u64,
    },
    /// An operator's note in the event log ("starting maintenance on rack 3").
    Note {
        message: String,
        actor: String,
        at_unix_ms: u64,
    },
    /// Replaces the spec, if its version is still `expected_version` (so two
    /// operators applying at once cannot silently overwrite each other).
    ApplySpec {
        spec: Spec,
        /// The TOML text as the operator wrote it, for `tandem spec show`.
        source: String,
        expected_version: u64,
        summary: Vec<String>,
        actor: String,
        at_unix_ms: u64,
    },
    /// The coordinator's placement decision: `group` runs on `nodes` from
    /// `epoch` on. Ignored unless `epoch` is exactly the next one, so a
    /// decision made on a stale view never applies.
    Assign {
        group: String,
        nodes: BTreeSet<String>,
        epoch: u64,
        reason: String,
        at_unix_ms: u64,
    },
    /// What a node did with a group.
    Report {
        node: String,
        group: String,
        report: NodeReport,
        /// A resource that failed (counted towards the migration threshold).
        failed_resource: Option<String>,
        /// The failure means the resource cannot run on this node at all.
        #[serde(default)]
        fatal: bool,
    },
    /// `node` must be fenced before the groups it may run start elsewhere
    /// (it was lost while it may run one, or an operator asked).
    FenceRequested {
        node: String,
        reason: String,
        actor: String,
        at_unix_ms: u64,
    },
    /// A fence device confirmed `node` off, or an operator did: it runs
    /// nothing. Its assignments are withdrawn (each with the next epoch) and
    /// it counts as stopped for every group.
    Fenced {
        node: String,
        /// How: the fence devices that succeeded, or the operator's confirmation.
        how: String,
        actor: String,
        at_unix_ms: u64,
    },
    /// A fencing attempt failed; `node` stays in `fencing_needed` and is tried again.
    FenceFailed {
        node: String,
        detail: String,
        actor: String,
        at_unix_ms: u64,
    },
    /// Forgets failure counts (`tandem resource cleanup`).
    ClearFailures {
        group: Option<String>,
        node: Option<String>,
        actor: String,
        at_unix_ms: u64,
    },
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Applied {
    /// Sequence number of the event the command recorded, if any.
    pub event_seq: Option<u64>,
    /// Why the command changed nothing (a stale spec version or epoch).
    pub rejected: Option<String>,
}

/// One entry of the replicated event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing, never reused, also after old events are dropped.
    pub seq: u64,
    pub at_unix_ms: u64,
    /// Who caused it: an operator (`user@host`) or a node (`node:NAME`).
    pub actor: String,
    pub kind: EventKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    NodeAdded,
    NodeRemoved,
    Note,
    SpecApplied,
    Assignment,
    Resource,
    FailuresCleared,
    Fence,
    Dns,
}

/// Everything the state machine holds besides Raft's own membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    pub events: VecDeque<Event>,
    pub next_event_seq: u64,
    pub spec: Spec,
    pub spec_source: String,
    /// Raised by every applied spec; 0 before the first.
    pub spec_version: u64,
    pub groups: BTreeMap<String, GroupState>,
    /// Nodes that must be fenced before their groups start elsewhere, and why.
    pub fencing_needed: BTreeMap<String, String>,
    /// The last failed fencing attempt per node still to be fenced.
    #[serde(default)]
    pub fence_failures: BTreeMap<String, String>,
    /// Raised by every command that may change the DNS zone's content
    /// (spec, assignments, reports, fencing, membership): the zone's SOA
    /// serial, the same on every node for the same state.
    #[serde(default)]
    pub zone_serial: u64,
    /// The recent failovers and switchovers of exclusive groups, oldest first.
    #[serde(default)]
    pub transitions: VecDeque<Transition>,
}

/// One failover or switchover of an exclusive group, with its phase times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Unique and increasing.
    pub id: u64,
    pub group: String,
    pub kind: TransitionKind,
    /// The primary it moves away from, if any.
    pub from: Option<String>,
    /// The new primary, once chosen.
    pub to: Option<String>,
    pub reason: String,
    /// Who caused it: an operator (user@host) or `coordinator`.
    pub actor: String,
    /// The epoch the new primary runs at (0 until assigned).
    pub epoch: u64,
    pub phases: TransitionPhases,
    pub outcome: TransitionOutcome,
}

/// Wall-clock times (unix ms) of each phase; None until reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TransitionPhases {
    pub detected_unix_ms: Option<u64>,
    pub decided_unix_ms: Option<u64>,
    /// The old primary known stopped: it reported stopped, was fenced, or its lease certainly expired.
    pub fenced_unix_ms: Option<u64>,
    pub started_unix_ms: Option<u64>,
    pub healthy_unix_ms: Option<u64>,
    pub dns_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    Failover,
    Switchover,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum TransitionOutcome {
    InProgress,
    Completed,
    Abandoned(String),
}

impl ClusterState {
    /// Applies one committed command. Never fails: commands are validated
    /// before they are proposed, and a command that no longer makes sense is
    /// recorded as it is rather than rejected, so every node stays identical.
    pub fn apply(&mut self, command: &Command) -> Applied {
        let applied = self.apply_command(command);
        let zone_may_change = match command {
            Command::Note { .. } | Command::ClearFailures { .. } | Command::FenceFailed { .. } => false,
            Command::Report { .. } => applied.rejected.is_none() && applied.event_seq.is_some(),
            _ => applied.rejected.is_none(),
        };
        if zone_may_change {
            self.zone_serial += 1;
        }
        applied
    }

    fn apply_command(&mut self, command: &Command) -> Applied {
        let (kind, message, actor, at_unix_ms) = match command {
            Command::NodeAdded {
                node,
                actor,
                at_unix_ms,
            } => (
                EventKind::NodeAdded,
                format!("node {node} joined"),
                actor.clone(),
                *at_unix_ms,
            ),
            Command::NodeRemoved {
                node,
                actor,
                at_unix_ms,
            } => (
                EventKind::NodeRemoved,
                format!("node {node} left"),
                actor.clone(),
                *at_unix_ms,
            ),
            Command::Note {
                message,
                actor,
                at_unix_ms,
            } => (EventKind::Note, message.clone(), actor.clone(), *at_unix_ms),
            Command::ApplySpec {
                spec,
                source,
                expected_version,
                summary,
                actor,
                at_unix_ms,
            } => {
                if *expected_version != self.spec_version {
                    return rejected(format!(
                        "the spec changed meanwhile (version {} now, {} expected); review and apply again",
                        self.spec_version, expected_version
                    ));
                }
                self.spec = spec.clone();
                self.spec_source = source.clone();
                self.spec_version += 1;
                let changes = if summary.is_empty() {
                    "no changes".to_string()
                } else {
                    summary.join("; ")
                };
                let message = format!("spec version {} applied: {changes}", self.spec_version);
                (EventKind::SpecApplied, message, actor.clone(), *at_unix_ms)
            }
            Command::Assign {
                group,
                nodes,
                epoch,
                reason,
                at_unix_ms,
            } => {
                let state = self.groups.entry(group.clone()).or_default();
                if *epoch != state.epoch + 1 {
                    return rejected(format!(
                        "stale decision for {group}: epoch {epoch}, current {}",
                        state.epoch
                    ));
                }
                state.assign(nodes, *epoch);
                state.reason = reason.clone();
                let on = if nodes.is_empty() {
                    "no node".to_string()
                } else {
                    nodes.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                let message = format!("{group} assigned to {on} (epoch {epoch}): {reason}");
                (EventKind::Assignment, message, "coordinator".to_string(), *at_unix_ms)
            }
            Command::Report {
                node,
                group,
                report,
                failed_resource,
                fatal,
            } => {
                let state = self.groups.entry(group.clone()).or_default();
                // Reports from one node carry non-decreasing epochs; an older
                // one arriving after fencing recorded this node stopped at a
                // newer epoch is stale and must not bring it back.
                if state.reports.get(node).is_some_and(|r| r.epoch > report.epoch) {
                    return rejected(format!(
                        "stale report from {node} for {group}: epoch {}, already at {}",
                        report.epoch,
                        state.reports.get(node).map_or(0, |r| r.epoch)
                    ));
                }
                let previous = state.record_report(node, report.clone());
                if let Some(resource) = failed_resource {
                    state.record_failure(node, resource, report.at_unix_ms, *fatal);
                }
                if report.phase == Phase::StopFailed {
                    self.fencing_needed
                        .insert(node.clone(), format!("a stop of {group} failed or timed out"));
                }
                let phase_changed = previous.is_none_or(|p| p.phase != report.phase || p.epoch != report.epoch);
                if !phase_changed && failed_resource.is_none() {
                    return Applied::default();
                }
                // An exclusive group's new primary running: the moment every
                // node with a valid lease starts answering its address.
                let exclusive = self
                    .spec
                    .group(group)
                    .is_some_and(|g| g.kind == crate::spec::GroupKind::Exclusive);
                let repointed = exclusive
                    && phase_changed
                    && report.phase == Phase::Running
                    && self
                        .groups
                        .get(group)
                        .is_some_and(|g| g.epoch == report.epoch && g.assigned.contains(node));
                if repointed {
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
                (EventKind::Resource, message, format!("node:{node}"), report.at_unix_ms)
            }
            Command::FenceRequested {
                node,
                reason,
                actor,
                at_unix_ms,
            } => {
                if self.fencing_needed.contains_key(node) {
                    return Applied::default();
                }
                self.fencing_needed.insert(node.clone(), reason.clone());
                let message = format!("{node} must be fenced: {reason}");
                (EventKind::Fence, message, actor.clone(), *at_unix_ms)
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
                (EventKind::Fence, message, actor.clone(), *at_unix_ms)
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
                let message = format!("fencing {node} failed: {detail}");
                (EventKind::Fence, message, actor.clone(), *at_unix_ms)
            }
            Command::ClearFailures {
                group,
                node,
                actor,
                at_unix_ms,
            } => {
                for (name, state) in &mut self.groups {
                    if group.as_ref().is_some_and(|g| g != name) {
                        continue;
                    }
                    match node {
                        Some(n) => {
                            state.failures.remove(n);
                        }
                        None => state.failures.clear(),
                    }
                }
                let message = format!(
                    "failure counts cleared for {} on {}",
                    group.as_deref().unwrap_or("every group"),
                    node.as_deref().unwrap_or("every node")
                );
                (EventKind::FailuresCleared, message, actor.clone(), *at_unix_ms)
            }
        };
        let seq = self.record(kind, message, actor, at_unix_ms);
        Applied {
            event_seq: Some(seq),
            rejected: None,
        }
    }

    /// `node` is known to run nothing: it leaves every assignment (with the
    /// group's next epoch, so its fencing token is outdated) and counts as
    /// stopped for every group it may have run. Returns the groups it left,
    /// with their new epochs.
    fn fenced(&mut self, node: &str, at_unix_ms: u64) -> Vec<String> {
        self.fencing_needed.remove(node);
        self.fence_failures.remove(node);
        let mut withdrawn = Vec::new();
        for (name, g) in &mut self.groups {
            if g.assigned.contains(node) {
                let rest: BTreeSet<String> = g.assigned.iter().filter(|n| *n != node).cloned().collect();
                let epoch = g.epoch + 1;
                g.assign(&rest, epoch);
                g.reason = format!("{node} was fenced");
                withdrawn.push(format!("{name} (epoch {epoch})"));
            }
            if g.may_run().contains(node) {
                g.record_report(
                    node,
                    NodeReport {
                        epoch: g.epoch,
                        phase: Phase::Stopped,
                        resources: Vec::new(),
                        at_unix_ms,
                    },
                );
            }
        }
        withdrawn
    }

    fn record(&mut self, kind: EventKind, message: String, actor: String, at_unix_ms: u64) -> u64 {
        let seq = self.next_event_seq;
        self.next_event_seq = self.next_event_seq.saturating_add(1);
        while self.events.len() >= EVENT_LOG_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq,
            at_unix_ms,
            actor,
            kind,
            message,
        });
        seq
    }
}

fn rejected(reason: String) -> Applied {
    Applied {
        event_seq: None,
        rejected: Some(reason),
    }
}

/// Checks an operator note before it is proposed.
pub fn validate_note(message: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("the note is empty".into());
    }
    if message.len() > NOTE_MAX_BYTES {
        return Err(format!(
            "the note is {} bytes long; at most {NOTE_MAX_BYTES} are accepted",
            message.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn note(i: usize) -> Command {
        Command::Note {
            message: format!("n{i}"),
            actor: "op@host".into(),
            at_unix_ms: i as u64,
        }
    }

    #[test]
    fn event_log_is_bounded_and_sequence_survives_dropping() {
        let mut s = ClusterState::default();
        for i in 0..EVENT_LOG_CAPACITY + 5 {
            s.apply(&note(i));
        }
        assert_eq!(s.events.len(), EVENT_LOG_CAPACITY);
        assert_eq!(s.events.front().map(|e| e.seq), Some(5));
        assert_eq!(s.next_event_seq, (EVENT_LOG_CAPACITY + 5) as u64);
    }

    #[test]
    fn commands_round_trip_through_the_log_encoding() {
        let c = Command::NodeAdded {
            node: NodeInfo {
                name: "n4".into(),
                address: "127.0.0.1:7404".into(),
                role: crate::NodeRole::Witness,
            },
            actor: "op@host".into(),
            at_unix_ms: 1,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""type":"node_added""#), "{json}");
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
    }

    #[test]
    fn notes_are_checked() {
        assert!(validate_note("  ").is_err());
        assert!(
            validate_note(&"x".repeat(NOTE_MAX_BYTES + 1))
                .unwrap_err()
                .contains("at most 1024")
        );
        assert!(validate_note("rack 3 maintenance").is_ok());
    }

    #[test]
    fn fencing_withdraws_the_node_and_outdates_its_epoch() {
        use crate::groups::{GroupState, NodeReport, Phase};
        let mut s = ClusterState::default();
        let mut g = GroupState::default();
        g.assign(&BTreeSet::from(["site-a".to_string()]), 3);
        let running = |epoch| NodeReport {
            epoch,
            phase: Phase::Running,
            resources: Vec::new(),
            at_unix_ms: 0,
        };
        g.record_report("site-a", running(3));
        s.groups.insert("web".into(), g);
        s.apply(&Command::FenceRequested {
            node: "site-a".into(),
            reason: "lost".into(),
            actor: "coordinator".into(),
            at_unix_ms: 1,
        });
        s.apply(&Command::FenceFailed {
            node: "site-a".into(),
            detail: "level 1: pdu-a failed".into(),
            actor: "node:site-b".into(),
            at_unix_ms: 2,
        });
        assert_eq!(s.fence_failures["site-a"], "level 1: pdu-a failed");
        s.apply(&Command::Fenced {
            node: "site-a".into(),
            how: "level 1: pdu-a ok".into(),
            actor: "node:site-b".into(),
            at_unix_ms: 3,
        });
        let g = &s.groups["web"];
        assert!(g.assigned.is_empty());
        assert_eq!(g.epoch, 4, "the fenced holder's token is outdated");
        assert!(!g.may_run().contains("site-a"), "{g:?}");
        assert!(s.fencing_needed.is_empty() && s.fence_failures.is_empty());
        assert!(
            s.events
                .back()
                .is_some_and(|e| e.message == "site-a fenced: level 1: pdu-a ok; withdrawn from web (epoch 4)"),
            "{:?}",
            s.events.back()
        );
        // A report sent before the fence, committed after it, is stale.
        let r = s.apply(&Command::Report {
            node: "site-a".into(),
            group: "web".into(),
            report: running(3),
            failed_resource: None,
            fatal: false,
        });
        assert!(r.rejected.is_some_and(|why| why.contains("stale report")));
        assert!(!s.groups["web"].may_run().contains("site-a"));
    }

    proptest! {
        /// Applying the same commands yields the same state: the property
        /// every replica relies on.
        #[test]
        fn apply_is_deterministic(n in 0usize..50) {
            let mut a = ClusterState::default();
            let mut b = ClusterState::default();
            for i in 0..n {
                prop_assert_eq!(a.apply(&note(i)), b.apply(&note(i)));
            }
            prop_assert_eq!(a, b);
        }
    }
}
