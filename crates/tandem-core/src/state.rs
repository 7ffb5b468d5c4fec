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

mod apply;

/// How many events the replicated log keeps; older ones are dropped.
pub const EVENT_LOG_CAPACITY: usize = 1000;

/// The longest operator note accepted, in bytes.
pub const NOTE_MAX_BYTES: usize = 1024;

/// How many failover and switchover records are kept; older ones are dropped.
pub const TRANSITIONS_KEPT: usize = 100;

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
        /// When the coordinator first saw the fault this decision answers
        /// (a node stopped heartbeating, a resource failed), if any.
        #[serde(default)]
        detected_unix_ms: Option<u64>,
        /// A planned move (standby, fail-back), not a failure: a release
        /// starts a switchover record rather than a failover record.
        #[serde(default)]
        planned: bool,
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
    /// An operator asks to move an exclusive group to `to` (`tandem
    /// switchover` / `tandem failover`); the coordinator's placement carries
    /// it out (two steps: stop, then start) until it completes or
    /// `deadline_unix_ms` passes.
    RequestMove {
        group: String,
        kind: TransitionKind,
        /// The primary when asked, if any.
        from: Option<String>,
        to: String,
        /// The operator overrode the freshness and health checks.
        force: bool,
        deadline_unix_ms: u64,
        actor: String,
        at_unix_ms: u64,
    },
    /// Ends a move request that did not complete: it timed out or cannot be
    /// carried out any more.
    EndMove {
        group: String,
        transition: u64,
        reason: String,
        actor: String,
        at_unix_ms: u64,
    },
    /// The coordinator answers DNS with the new primary of a transition (it
    /// applied the healthy report): the transition is complete.
    TransitionDone { transition: u64, dns_unix_ms: u64 },
    /// Drains a node (nothing new lands there, what runs there moves away by
    /// switchover) or brings it back.
    SetStandby {
        node: String,
        on: bool,
        actor: String,
        at_unix_ms: u64,
    },
    /// Tandem stops acting (no starts, stops, restarts or moves; monitoring
    /// and reports go on) for the whole cluster, a group, or a node.
    SetMaintenance {
        scope: MaintenanceScope,
        on: bool,
        actor: String,
        at_unix_ms: u64,
    },
    /// A role-change hook ran on a node.
    HookRan {
        node: String,
        group: String,
        hook: String,
        epoch: u64,
        ok: bool,
        outcome: String,
        at_unix_ms: u64,
    },
    /// Forgets failure counts (`tandem resource cleanup`).
    ClearFailures {
        group: Option<String>,
        node: Option<String>,
        actor: String,
        at_unix_ms: u64,
    },
    /// The coordinator saw `group` lose its last eligible standby
    /// (`unprotected`: the loss of a node would stop it) or get one back
    /// ([`crate::placement::protection`]); committed only when that changes.
    Protection {
        group: String,
        unprotected: bool,
        reason: String,
        at_unix_ms: u64,
    },
    /// The coordinator heard `node` up for the first time: from then on the
    /// node has Raft state of this cluster, so a start of it on an empty
    /// data directory is a wiped voter, refused (never re-bootstrapped).
    NodeStarted { node: String, at_unix_ms: u64 },
}

impl Command {
    /// The command's kind, as in its JSON `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::NodeAdded { .. } => "node_added",
            Command::NodeRemoved { .. } => "node_removed",
            Command::Note { .. } => "note",
            Command::ApplySpec { .. } => "apply_spec",
            Command::Assign { .. } => "assign",
            Command::Report { .. } => "report",
            Command::FenceRequested { .. } => "fence_requested",
            Command::Fenced { .. } => "fenced",
            Command::FenceFailed { .. } => "fence_failed",
            Command::RequestMove { .. } => "request_move",
            Command::EndMove { .. } => "end_move",
            Command::TransitionDone { .. } => "transition_done",
            Command::SetStandby { .. } => "set_standby",
            Command::SetMaintenance { .. } => "set_maintenance",
            Command::HookRan { .. } => "hook_ran",
            Command::ClearFailures { .. } => "clear_failures",
            Command::Protection { .. } => "protection",
            Command::NodeStarted { .. } => "node_started",
        }
    }
}

/// The kind only: log lines name commands without their (possibly large) bodies.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// Whether a group placed somewhere would survive the loss of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// Other nodes may take it over (an exclusive group's eligible
    /// standbys), or it runs on several (a clone).
    Protected { standbys: Vec<String> },
    /// The loss of the node it runs on would stop it, and why.
    Unprotected { reason: String },
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Applied {
    /// Sequence number of the event the command recorded, if any.
    pub event_seq: Option<u64>,
    /// Why the command changed nothing (a stale spec version or epoch).
    pub rejected: Option<String>,
    /// The transition record a move request started.
    #[serde(default)]
    pub transition: Option<u64>,
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
    /// The group it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
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
    /// An operator's switchover or failover request, or its end.
    Move,
    /// A completed failover or switchover with its phase times.
    Transition,
    /// Standby or maintenance switched on or off.
    Mode,
    Hook,
    /// A group lost its last eligible standby, or got one back.
    Protection,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NodeAdded => "node_added",
            EventKind::NodeRemoved => "node_removed",
            EventKind::Note => "note",
            EventKind::SpecApplied => "spec_applied",
            EventKind::Assignment => "assignment",
            EventKind::Resource => "resource",
            EventKind::FailuresCleared => "failures_cleared",
            EventKind::Fence => "fence",
            EventKind::Dns => "dns",
            EventKind::Move => "move",
            EventKind::Transition => "transition",
            EventKind::Mode => "mode",
            EventKind::Hook => "hook",
            EventKind::Protection => "protection",
        }
    }
}

/// What an operator's maintenance switch covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
pub enum MaintenanceScope {
    Cluster,
    Group(String),
    Node(String),
}

impl std::fmt::Display for MaintenanceScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaintenanceScope::Cluster => f.write_str("the cluster"),
            MaintenanceScope::Group(g) => write!(f, "group {g}"),
            MaintenanceScope::Node(n) => write!(f, "node {n}"),
        }
    }
}

/// Where Tandem stops acting: it neither starts, stops, restarts nor moves
/// what is covered, but keeps monitoring and reporting it. The safety rules
/// stay on: a node that loses its lease still stops its exclusive groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Maintenance {
    pub cluster: bool,
    pub groups: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
}

impl Maintenance {
    /// Why Tandem must not act on `group` on `node` now (`None`: it may).
    pub fn covers(&self, group: &str, node: &str) -> Option<String> {
        if self.cluster {
            Some("the cluster is in maintenance".into())
        } else if self.groups.contains(group) {
            Some(format!("group {group} is in maintenance"))
        } else if self.nodes.contains(node) {
            Some(format!("node {node} is in maintenance"))
        } else {
            None
        }
    }

    /// Why the coordinator must not move `group`, which `may_run` may run
    /// (`None`: it may).
    pub fn freezes(&self, group: &str, may_run: &BTreeSet<String>) -> Option<String> {
        if self.cluster {
            return Some("the cluster is in maintenance".into());
        }
        if self.groups.contains(group) {
            return Some(format!("group {group} is in maintenance"));
        }
        may_run
            .iter()
            .find(|n| self.nodes.contains(*n))
            .map(|n| format!("node {n} is in maintenance"))
    }
}

/// An operator's pending switchover or failover of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    pub kind: TransitionKind,
    pub from: Option<String>,
    pub to: String,
    pub force: bool,
    pub deadline_unix_ms: u64,
    pub actor: String,
    /// The transition record this request started.
    pub transition: u64,
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

impl TransitionPhases {
    /// The phases in order, with their names.
    pub fn named(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("detected", self.detected_unix_ms),
            ("decided", self.decided_unix_ms),
            ("fenced", self.fenced_unix_ms),
            ("started", self.started_unix_ms),
            ("healthy", self.healthy_unix_ms),
            ("dns", self.dns_unix_ms),
        ]
    }

    /// "detected +0 ms, decided +120 ms, ...": each reached phase as an
    /// offset from the first.
    pub fn summary(&self) -> String {
        let named = self.named();
        let first = named.iter().find_map(|(_, t)| *t);
        named
            .iter()
            .filter_map(|(name, t)| Some(format!("{name} +{} ms", (*t)?.saturating_sub(first?))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    Failover,
    Switchover,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Failover => "failover",
            TransitionKind::Switchover => "switchover",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum TransitionOutcome {
    InProgress,
    Completed,
    Abandoned(String),
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
    /// Recent failovers and switchovers, oldest first (bounded).
    #[serde(default)]
    pub transitions: VecDeque<Transition>,
    #[serde(default)]
    pub next_transition_id: u64,
    /// Nodes drained by an operator.
    #[serde(default)]
    pub standby: BTreeSet<String>,
    #[serde(default)]
    pub maintenance: Maintenance,
    /// Operators' pending moves, per group.
    #[serde(default)]
    pub moves: BTreeMap<String, MoveRequest>,
    /// Groups without an eligible standby, as the coordinator last
    /// committed it (`Command::Protection`).
    #[serde(default)]
    pub unprotected: BTreeMap<String, Unprotected>,
    /// Members the coordinator has heard up at least once
    /// (`Command::NodeStarted`); a removed node leaves it.
    #[serde(default)]
    pub started: BTreeSet<String>,
}

/// Since when, and why, a group has no eligible standby.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unprotected {
    pub reason: String,
    pub since_unix_ms: u64,
}

impl ClusterState {
    /// The group a command is about, if it is about one.
    fn command_group(&self, command: &Command) -> Option<String> {
        match command {
            Command::Assign { group, .. }
            | Command::Report { group, .. }
            | Command::RequestMove { group, .. }
            | Command::EndMove { group, .. }
            | Command::HookRan { group, .. }
            | Command::Protection { group, .. } => Some(group.clone()),
            Command::ClearFailures { group, .. } => group.clone(),
            Command::SetMaintenance {
                scope: MaintenanceScope::Group(g),
                ..
            } => Some(g.clone()),
            Command::TransitionDone { transition, .. } => self
                .transitions
                .iter()
                .find(|t| t.id == *transition)
                .map(|t| t.group.clone()),
            _ => None,
        }
    }

    /// The `Command::Protection`s the coordinator should commit, given its
    /// judgement now ([`crate::placement::protection`]): only changes, so an
    /// unchanged judgement commits nothing. A group no longer in the spec
    /// ends its warning; a group not judged (placed nowhere) keeps it.
    pub fn protection_changes(&self, judged: &BTreeMap<String, Protection>, at_unix_ms: u64) -> Vec<Command> {
        let mut out = Vec::new();
        for (group, p) in judged {
            let was = self.unprotected.contains_key(group);
            let (unprotected, reason) = match p {
                Protection::Unprotected { reason } if !was => (true, reason.clone()),
                Protection::Protected { standbys } if was => {
                    (false, format!("{} may take it over", standbys.join(", ")))
                }
                _ => continue,
            };
            out.push(Command::Protection {
                group: group.clone(),
                unprotected,
                reason,
                at_unix_ms,
            });
        }
        for group in self.unprotected.keys().filter(|g| self.spec.group(g).is_none()) {
            out.push(Command::Protection {
                group: group.clone(),
                unprotected: false,
                reason: "it left the spec".into(),
                at_unix_ms,
            });
        }
        out
    }

    /// The transition of `group` in progress, if any.
    pub fn transition_in_progress(&self, group: &str) -> Option<&Transition> {
        self.transitions
            .iter()
            .rev()
            .find(|t| t.group == group && t.outcome == TransitionOutcome::InProgress)
    }

    fn in_progress_mut(&mut self, group: &str) -> Option<&mut Transition> {
        self.transitions
            .iter_mut()
            .rev()
            .find(|t| t.group == group && t.outcome == TransitionOutcome::InProgress)
    }

    /// Opens a transition record for `group` (one in progress is superseded).
    fn start_transition(&mut self, group: &str, kind: TransitionKind, from: Option<String>, d: Decided) -> u64 {
        let id = self.next_transition_id;
        self.next_transition_id += 1;
        if let Some(old) = self.in_progress_mut(group) {
            old.outcome = TransitionOutcome::Abandoned(format!("superseded by {} #{id}", kind.as_str()));
        }
        while self.transitions.len() >= TRANSITIONS_KEPT {
            // The oldest finished one goes first: one in progress is still
            // being filled in (and its mover waits for it).
            let finished = self
                .transitions
                .iter()
                .position(|t| t.outcome != TransitionOutcome::InProgress);
            match finished {
                Some(i) => _ = self.transitions.remove(i),
                None => _ = self.transitions.pop_front(),
            }
        }
        self.transitions.push_back(Transition {
            id,
            group: group.to_string(),
            kind,
            from,
            to: None,
            reason: d.reason,
            actor: "coordinator".into(),
            epoch: 0,
            phases: TransitionPhases {
                detected_unix_ms: d.detected_unix_ms,
                decided_unix_ms: Some(d.at_unix_ms),
                ..TransitionPhases::default()
            },
            outcome: TransitionOutcome::InProgress,
        });
        id
    }

    /// Follows an exclusive group's assignment in its transition record: a
    /// release from its primary opens one (unless an operator's request
    /// already did), an assignment to the new primary records it.
    fn track_assignment(
        &mut self,
        group: &str,
        before: &BTreeSet<String>,
        after: &BTreeSet<String>,
        epoch: u64,
        d: Decided,
    ) {
        let exclusive = self
            .spec
            .group(group)
            .is_some_and(|g| g.kind == crate::spec::GroupKind::Exclusive);
        if !exclusive || before == after {
            return;
        }
        if before.len() == 1 {
            let from = before.iter().next().cloned();
            let requested = self
                .transition_in_progress(group)
                .is_some_and(|t| t.epoch == 0 && t.from == from);
            if !requested {
                let kind = d.kind;
                self.start_transition(group, kind, from, d.clone());
            }
        }
        if after.len() == 1
            && let Some(t) = self.in_progress_mut(group)
            && t.epoch == 0
        {
            t.to = after.iter().next().cloned();
            t.epoch = epoch;
            // Placement assigns the new primary only once the old one is
            // known stopped (reported, fenced, or its lease expired).
            t.phases.fenced_unix_ms.get_or_insert(d.at_unix_ms);
        }
    }

    /// Follows the reports of a transition's old and new primary.
    fn track_report(&mut self, group: &str, node: &str, report: &NodeReport) {
        let Some(t) = self.in_progress_mut(group) else { return };
        let at = report.at_unix_ms;
        if t.epoch == 0 && t.from.as_deref() == Some(node) && report.phase == Phase::Stopped {
            t.phases.fenced_unix_ms.get_or_insert(at);
        }
        if t.epoch != 0 && t.epoch == report.epoch && t.to.as_deref() == Some(node) {
            match report.phase {
                Phase::Starting => _ = t.phases.started_unix_ms.get_or_insert(at),
                Phase::Running => {
                    t.phases.started_unix_ms.get_or_insert(at);
                    t.phases.healthy_unix_ms.get_or_insert(at);
                    let id = t.id;
                    if self.moves.get(group).is_some_and(|m| m.transition == id) {
                        self.moves.remove(group);
                    }
                }
                _ => {}
            }
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
        let mut released = Vec::new();
        for (name, g) in &mut self.groups {
            if g.may_run().contains(node) {
                released.push((name.clone(), g.assigned.contains(node)));
            }
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
        for (group, was_assigned) in released {
            let exclusive = self
                .spec
                .group(&group)
                .is_some_and(|g| g.kind == crate::spec::GroupKind::Exclusive);
            if !exclusive {
                continue;
            }
            let open = self
                .transition_in_progress(&group)
                .is_some_and(|t| t.from.as_deref() == Some(node));
            if !open && was_assigned {
                let d = Decided {
                    kind: TransitionKind::Failover,
                    reason: format!("{node} was fenced"),
                    at_unix_ms,
                    detected_unix_ms: None,
                };
                self.start_transition(&group, TransitionKind::Failover, Some(node.to_string()), d);
            }
            if let Some(t) = self.in_progress_mut(&group)
                && t.from.as_deref() == Some(node)
            {
                t.phases.fenced_unix_ms.get_or_insert(at_unix_ms);
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
            group: None,
        });
        seq
    }
}

fn rejected(reason: String) -> Applied {
    Applied {
        event_seq: None,
        rejected: Some(reason),
        transition: None,
    }
}

/// How an assignment was decided, for its transition record.
#[derive(Debug, Clone)]
struct Decided {
    kind: TransitionKind,
    reason: String,
    at_unix_ms: u64,
    detected_unix_ms: Option<u64>,
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
    fn a_started_node_is_remembered_until_it_is_removed() {
        let mut s = ClusterState::default();
        let started = Command::NodeStarted {
            node: "site-b".into(),
            at_unix_ms: 1,
        };
        let (serial, events) = (s.zone_serial, s.events.len());
        s.apply(&started);
        s.apply(&started);
        assert!(s.started.contains("site-b"));
        assert_eq!(
            (s.zone_serial, s.events.len()),
            (serial, events),
            "no event, no zone change"
        );
        let node = crate::NodeInfo {
            name: "site-b".into(),
            address: "127.0.0.1:1".into(),
            role: crate::NodeRole::Member,
        };
        s.apply(&Command::NodeRemoved {
            node,
            actor: "op@host".into(),
            at_unix_ms: 2,
        });
        assert!(!s.started.contains("site-b"), "added again, it starts afresh");
        // A state written before the field existed reads as nobody started.
        let mut json = serde_json::to_value(ClusterState::default()).unwrap();
        json.as_object_mut().unwrap().remove("started");
        let old: ClusterState = serde_json::from_value(json).unwrap();
        assert!(old.started.is_empty());
    }

    #[test]
    fn protection_warnings_are_committed_and_recorded_only_when_they_change() {
        use crate::placement::Protection;
        let mut s = ClusterState::default();
        s.spec.groups = crate::spec::Spec::parse(
            "[[groups]]\nname = \"web\"\n[[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/app\"\n",
            "spec.toml",
            &[],
        )
        .unwrap()
        .groups;
        let judged = |p: Protection| BTreeMap::from([("web".to_string(), p)]);
        let exposed = judged(Protection::Unprotected {
            reason: "no eligible standby (site-b is down)".into(),
        });
        let covered = judged(Protection::Protected {
            standbys: vec!["site-b".into()],
        });
        assert!(
            s.protection_changes(&covered, 1).is_empty(),
            "protected and known so: nothing"
        );
        let start = s.protection_changes(&exposed, 5);
        assert_eq!(
            start,
            vec![Command::Protection {
                group: "web".into(),
                unprotected: true,
                reason: "no eligible standby (site-b is down)".into(),
                at_unix_ms: 5,
            }]
        );
        let seq = s.apply(&start[0]).event_seq;
        assert!(seq.is_some());
        let e = s.events.back().unwrap();
        assert_eq!(
            (e.kind, e.message.as_str(), e.group.as_deref()),
            (
                EventKind::Protection,
                "web is unprotected: no eligible standby (site-b is down)",
                Some("web")
            )
        );
        assert_eq!(s.unprotected["web"].since_unix_ms, 5);
        // Every later pass with the same judgement commits nothing, and a
        // repeated command (a new coordinator's) records nothing.
        assert!(s.protection_changes(&exposed, 6).is_empty());
        assert_eq!(s.apply(&start[0]), Applied::default());
        // Placed nowhere for a moment (a failover): not judged, kept.
        assert!(s.protection_changes(&BTreeMap::new(), 7).is_empty());
        let end = s.protection_changes(&covered, 8);
        assert_eq!(end.len(), 1);
        s.apply(&end[0]);
        assert_eq!(
            s.events.back().unwrap().message,
            "web is no longer unprotected: site-b may take it over"
        );
        assert!(s.unprotected.is_empty());
        // A group that leaves the spec ends its warning.
        s.apply(&start[0]);
        s.spec.groups.clear();
        let gone = s.protection_changes(&BTreeMap::new(), 9);
        s.apply(&gone[0]);
        assert_eq!(
            s.events.back().unwrap().message,
            "web is no longer unprotected: it left the spec"
        );
        assert_eq!(s.events.len(), 4);
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
        // What logs name a command by is its tag.
        assert_eq!(c.kind(), "node_added");
        assert_eq!(c.to_string(), "node_added");
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

    fn exclusive_web() -> ClusterState {
        let mut s = ClusterState::default();
        s.spec.groups = vec![crate::spec::GroupSpec {
            name: "web".into(),
            kind: crate::spec::GroupKind::Exclusive,
            resources: Vec::new(),
            placement: Default::default(),
            migration_threshold: 3,
            failure_timeout: std::time::Duration::ZERO,
            after: Vec::new(),
            dns: Default::default(),
            max_lag: None,
            hooks: Default::default(),
        }];
        s
    }

    fn assign(s: &mut ClusterState, nodes: &[&str], epoch: u64, at: u64, detected: Option<u64>) {
        let r = s.apply(&Command::Assign {
            group: "web".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            epoch,
            reason: "test".into(),
            at_unix_ms: at,
            detected_unix_ms: detected,
            planned: false,
        });
        assert!(r.rejected.is_none(), "{r:?}");
    }

    fn report(s: &mut ClusterState, node: &str, epoch: u64, phase: Phase, at: u64) {
        s.apply(&Command::Report {
            node: node.into(),
            group: "web".into(),
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

    #[test]
    fn a_failover_is_one_record_with_its_phase_times() {
        let mut s = exclusive_web();
        assign(&mut s, &["site-a"], 1, 10, None);
        report(&mut s, "site-a", 1, Phase::Running, 20);
        assert!(s.transitions.is_empty(), "a first placement is no failover");
        assign(&mut s, &[], 2, 200, Some(100));
        assign(&mut s, &["site-b"], 3, 300, None);
        report(&mut s, "site-b", 3, Phase::Starting, 350);
        report(&mut s, "site-b", 3, Phase::Running, 400);
        let t = s.transition_in_progress("web").cloned().unwrap();
        assert_eq!(
            (t.kind, t.from.as_deref(), t.to.as_deref(), t.epoch),
            (TransitionKind::Failover, Some("site-a"), Some("site-b"), 3)
        );
        let p = &t.phases;
        assert_eq!(
            (
                p.detected_unix_ms,
                p.decided_unix_ms,
                p.fenced_unix_ms,
                p.started_unix_ms,
                p.healthy_unix_ms
            ),
            (Some(100), Some(200), Some(300), Some(350), Some(400))
        );
        let r = s.apply(&Command::TransitionDone {
            transition: t.id,
            dns_unix_ms: 410,
        });
        assert!(r.rejected.is_none());
        assert_eq!(s.transitions[0].outcome, TransitionOutcome::Completed);
        let e = s.events.back().unwrap();
        assert_eq!(e.kind, EventKind::Transition);
        assert_eq!(
            e.message,
            "failover of web from site-a to site-b completed in 310 ms (detected +0 ms, decided +100 ms, fenced +200 ms, started +250 ms, healthy +300 ms, dns +310 ms)"
        );
        // Done once.
        assert!(
            s.apply(&Command::TransitionDone {
                transition: t.id,
                dns_unix_ms: 500
            })
            .rejected
            .is_some()
        );
    }

    #[test]
    fn a_switchover_request_is_tracked_until_the_target_is_healthy() {
        let mut s = exclusive_web();
        assign(&mut s, &["site-a"], 1, 10, None);
        report(&mut s, "site-a", 1, Phase::Running, 20);
        let r = s.apply(&Command::RequestMove {
            group: "web".into(),
            kind: TransitionKind::Switchover,
            from: Some("site-a".into()),
            to: "site-b".into(),
            force: false,
            deadline_unix_ms: 10_000,
            actor: "op@host".into(),
            at_unix_ms: 100,
        });
        let id = r.transition.unwrap();
        assert_eq!(s.moves["web"].transition, id);
        assign(&mut s, &[], 2, 110, None);
        assert_eq!(s.transitions.len(), 1, "the release belongs to the request's record");
        report(&mut s, "site-a", 2, Phase::Stopped, 150);
        assign(&mut s, &["site-b"], 3, 160, None);
        report(&mut s, "site-b", 3, Phase::Running, 220);
        let t = &s.transitions[0];
        assert_eq!((t.kind, t.actor.as_str()), (TransitionKind::Switchover, "op@host"));
        assert_eq!(t.phases.fenced_unix_ms, Some(150), "the old primary's stop");
        assert_eq!(t.phases.healthy_unix_ms, Some(220));
        assert!(s.moves.is_empty(), "a completed request is forgotten");
        // A request that does not complete is ended, with the reason.
        s.apply(&Command::RequestMove {
            group: "web".into(),
            kind: TransitionKind::Switchover,
            from: Some("site-b".into()),
            to: "site-a".into(),
            force: false,
            deadline_unix_ms: 10_000,
            actor: "op@host".into(),
            at_unix_ms: 300,
        });
        assert_eq!(
            s.transitions[0].outcome,
            TransitionOutcome::Abandoned("superseded by switchover #1".into())
        );
        s.apply(&Command::EndMove {
            group: "web".into(),
            transition: 1,
            reason: "timed out".into(),
            actor: "coordinator".into(),
            at_unix_ms: 400,
        });
        assert!(s.moves.is_empty());
        assert_eq!(
            s.transitions[1].outcome,
            TransitionOutcome::Abandoned("timed out".into())
        );
        assert_eq!(
            s.events.back().unwrap().message,
            "switchover of web abandoned: timed out"
        );
    }

    #[test]
    fn a_request_ended_after_the_release_keeps_recording_the_move() {
        let mut s = exclusive_web();
        assign(&mut s, &["site-a"], 1, 10, None);
        let id = s
            .apply(&Command::RequestMove {
                group: "web".into(),
                kind: TransitionKind::Switchover,
                from: Some("site-a".into()),
                to: "site-b".into(),
                force: false,
                deadline_unix_ms: 10_000,
                actor: "op@host".into(),
                at_unix_ms: 100,
            })
            .transition
            .unwrap();
        assign(&mut s, &[], 2, 110, None);
        s.apply(&Command::EndMove {
            group: "web".into(),
            transition: id,
            reason: "site-b cannot take it: site-b is down".into(),
            actor: "coordinator".into(),
            at_unix_ms: 200,
        });
        assert!(s.moves.is_empty());
        let t = s.transition_in_progress("web").expect("still recorded");
        assert_eq!(t.to, None);
        assign(&mut s, &["site-c"], 3, 300, None);
        report(&mut s, "site-c", 3, Phase::Running, 400);
        let t = &s.transitions[0];
        assert_eq!((t.to.as_deref(), t.phases.healthy_unix_ms), (Some("site-c"), Some(400)));
    }

    #[test]
    fn transitions_in_progress_outlive_finished_ones_when_the_log_is_full() {
        let mut s = exclusive_web();
        for i in 0..TRANSITIONS_KEPT as u64 {
            let id = s.start_transition(
                "web",
                TransitionKind::Failover,
                None,
                Decided {
                    kind: TransitionKind::Failover,
                    reason: String::new(),
                    at_unix_ms: i,
                    detected_unix_ms: None,
                },
            );
            if i > 0 {
                s.transitions.iter_mut().find(|t| t.id == id - 1).unwrap().outcome = TransitionOutcome::Completed;
            }
        }
        // The first was superseded (finished); make it look in progress.
        s.transitions[0].outcome = TransitionOutcome::InProgress;
        s.start_transition(
            "db",
            TransitionKind::Failover,
            None,
            Decided {
                kind: TransitionKind::Failover,
                reason: String::new(),
                at_unix_ms: 1_000,
                detected_unix_ms: None,
            },
        );
        assert_eq!(s.transitions.len(), TRANSITIONS_KEPT);
        assert_eq!(s.transitions[0].id, 0, "the one in progress stays");
        assert_eq!(s.transitions[1].id, 2, "the oldest finished one went");
    }

    #[test]
    fn fencing_a_primary_opens_a_failover_record() {
        let mut s = exclusive_web();
        assign(&mut s, &["site-a"], 1, 10, None);
        report(&mut s, "site-a", 1, Phase::Running, 20);
        s.apply(&Command::Fenced {
            node: "site-a".into(),
            how: "operator".into(),
            actor: "op@host".into(),
            at_unix_ms: 50,
        });
        let t = s.transition_in_progress("web").unwrap();
        assert_eq!((t.from.as_deref(), t.phases.fenced_unix_ms), (Some("site-a"), Some(50)));
    }

    #[test]
    fn modes_are_recorded_and_scoped() {
        let mut s = ClusterState::default();
        s.apply(&Command::SetStandby {
            node: "site-a".into(),
            on: true,
            actor: "op".into(),
            at_unix_ms: 1,
        });
        assert!(s.standby.contains("site-a"));
        s.apply(&Command::SetMaintenance {
            scope: MaintenanceScope::Node("site-b".into()),
            on: true,
            actor: "op".into(),
            at_unix_ms: 2,
        });
        assert_eq!(
            s.maintenance.covers("web", "site-b").as_deref(),
            Some("node site-b is in maintenance")
        );
        assert_eq!(s.maintenance.covers("web", "site-a"), None);
        s.apply(&Command::SetMaintenance {
            scope: MaintenanceScope::Cluster,
            on: true,
            actor: "op".into(),
            at_unix_ms: 3,
        });
        assert!(s.maintenance.covers("web", "site-a").is_some());
        s.apply(&Command::SetMaintenance {
            scope: MaintenanceScope::Cluster,
            on: false,
            actor: "op".into(),
            at_unix_ms: 4,
        });
        s.apply(&Command::SetStandby {
            node: "site-a".into(),
            on: false,
            actor: "op".into(),
            at_unix_ms: 5,
        });
        assert!(s.standby.is_empty() && !s.maintenance.cluster);
        let kinds: Vec<EventKind> = s.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventKind::Mode; 5]);
        assert_eq!(s.events[1].actor, "op");
        assert_eq!(s.zone_serial, 0, "modes do not change the zone");
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
