//! The replicated state of service groups: assignments with their epochs,
//! what each node reported, and failure counts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::timing::duration_ms;

/// Failures kept per node and group; older ones are dropped first.
pub const FAILURES_KEPT: usize = 64;

/// What a node says it is doing with a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Running,
    Stopping,
    /// Every resource stopped: the node runs nothing of the group.
    Stopped,
    /// A resource failed; the node is recovering or gave up.
    Failed,
    /// A stop failed or timed out: the node may still run part of the
    /// group and must be fenced before the group starts elsewhere.
    StopFailed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::StopFailed => "stop_failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last action on one resource, as its node reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReport {
    pub name: String,
    /// start, stop or monitor.
    pub action: String,
    /// ok, not running, failed: ..., timed out, unavailable: ...
    pub result: String,
    pub at_unix_ms: u64,
}

/// What one node last reported about one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The group epoch the node acted on.
    pub epoch: u64,
    pub phase: Phase,
    pub resources: Vec<ResourceReport>,
    pub at_unix_ms: u64,
}

/// How current a node's copy of a group's data is, as its resource agent
/// reported it: a position in a replication stream (higher is newer) or a
/// lag behind the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    Position(u64),
    LagMs(u64),
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Freshness::Position(p) => write!(f, "position {p}"),
            Freshness::LagMs(ms) => write!(f, "lag {ms} ms"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub resource: String,
    pub at_unix_ms: u64,
    /// The resource cannot run on that node at all (an OCF agent missing or
    /// not configured there): the group leaves the node at once.
    #[serde(default)]
    pub fatal: bool,
}

/// The replicated state of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GroupState {
    /// Raised on every assignment: the fencing token handed to the service.
    pub epoch: u64,
    /// Nodes the group should run on now (at most one for exclusive groups).
    pub assigned: BTreeSet<String>,
    /// Why the coordinator made the current assignment.
    pub reason: String,
    pub reports: BTreeMap<String, NodeReport>,
    pub failures: BTreeMap<String, Vec<Failure>>,
    /// Nodes an assignment took the group away from, with the epoch of that
    /// assignment: they may still run it until they report `stopped` for
    /// that epoch or later (a `stopped` from before does not count).
    #[serde(default)]
    pub released: BTreeMap<String, u64>,
}

impl GroupState {
    /// Failures on `node` younger than `timeout` at `now_unix_ms` (zero
    /// timeout: all of them count).
    pub fn failure_count(&self, node: &str, now_unix_ms: u64, timeout: Duration) -> u32 {
        let Some(list) = self.failures.get(node) else { return 0 };
        let horizon = if timeout.is_zero() {
            0
        } else {
            now_unix_ms.saturating_sub(duration_ms(timeout))
        };
        let recent = list.iter().filter(|f| f.at_unix_ms >= horizon);
        if recent.clone().any(|f| f.fatal) {
            return u32::MAX;
        }
        u32::try_from(recent.count()).unwrap_or(u32::MAX)
    }

    pub fn record_failure(&mut self, node: &str, resource: &str, at_unix_ms: u64, fatal: bool) {
        let list = self.failures.entry(node.to_string()).or_default();
        if list.len() == FAILURES_KEPT {
            list.remove(0);
        }
        list.push(Failure {
            resource: resource.to_string(),
            at_unix_ms,
            fatal,
        });
    }

    /// Whether the group is active on `node` at its current epoch: assigned
    /// there now, and the node's last report is `running` at that epoch.
    ///
    /// Architecture invariant: this is the one definition of "active on a
    /// node" in the replicated state. DNS answers, `/primary/GROUP`,
    /// placement (prerequisites, fail-back) and the state machine's DNS
    /// event all follow it; on a node, it is and-ed with that node's own
    /// `may_act` before it is answered.
    pub fn active_on(&self, node: &str) -> bool {
        self.assigned.contains(node)
            && self
                .reports
                .get(node)
                .is_some_and(|r| r.epoch == self.epoch && r.phase == Phase::Running)
    }

    /// The nodes the group is active on (see [`GroupState::active_on`]).
    pub fn active_nodes(&self) -> impl Iterator<Item = &String> {
        self.assigned.iter().filter(|n| self.active_on(n))
    }

    /// Nodes that may still run some of the group: assigned now, released
    /// and not yet confirmed stopped, or whose last report is anything but
    /// `stopped`.
    pub fn may_run(&self) -> BTreeSet<String> {
        let mut nodes = self.assigned.clone();
        nodes.extend(self.released.keys().cloned());
        for (node, r) in &self.reports {
            if r.phase != Phase::Stopped {
                nodes.insert(node.clone());
            }
        }
        nodes
    }

    /// Applies an assignment: nodes that lose the group are released.
    pub fn assign(&mut self, nodes: &BTreeSet<String>, epoch: u64) {
        for n in self.assigned.difference(nodes) {
            self.released.insert(n.clone(), epoch);
        }
        for n in nodes {
            self.released.remove(n);
        }
        self.assigned = nodes.clone();
        self.epoch = epoch;
    }

    /// Records a node's report; a `stopped` for the releasing epoch or later
    /// confirms the release.
    pub fn record_report(&mut self, node: &str, report: NodeReport) -> Option<NodeReport> {
        if report.phase == Phase::Stopped && self.released.get(node).is_some_and(|e| report.epoch >= *e) {
            self.released.remove(node);
        }
        self.reports.insert(node.to_string(), report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(epoch: u64, phase: Phase) -> NodeReport {
        NodeReport {
            epoch,
            phase,
            resources: Vec::new(),
            at_unix_ms: 0,
        }
    }

    #[test]
    fn active_means_assigned_and_running_at_the_current_epoch() {
        let mut g = GroupState::default();
        assert!(!g.active_on("a"), "nothing assigned");
        g.assign(&BTreeSet::from(["a".to_string()]), 3);
        assert!(!g.active_on("a"), "assigned but no report");
        g.record_report("a", report(2, Phase::Running));
        assert!(!g.active_on("a"), "running at an older epoch");
        g.record_report("a", report(3, Phase::Starting));
        assert!(!g.active_on("a"), "still starting");
        g.record_report("a", report(3, Phase::Running));
        assert!(g.active_on("a"));
        assert_eq!(g.active_nodes().collect::<Vec<_>>(), vec!["a"]);
        // Released: its report still says running, but it is not assigned.
        g.assign(&BTreeSet::from(["b".to_string()]), 4);
        assert!(!g.active_on("a"));
        assert!(
            g.may_run().contains("a"),
            "but it may still run until it reports stopped"
        );
        assert_eq!(g.active_nodes().count(), 0);
    }
}
