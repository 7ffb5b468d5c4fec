//! The declarative spec: service groups, their resources and placement.
//!
//! Applied with `tandem apply -f FILE`, validated in full before it is
//! committed ([`Spec::parse`]), versioned in the cluster state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole spec, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Spec {
    pub groups: Vec<GroupSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GroupKind {
    /// Runs on one node at a time: the primary.
    #[default]
    Exclusive,
    /// Runs on every eligible node.
    Clone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub name: String,
    pub kind: GroupKind,
    /// Started in this order, stopped in reverse.
    pub resources: Vec<ResourceSpec>,
    pub placement: Placement,
    /// Failures on one node (within `failure_timeout`) before the group leaves it.
    pub migration_threshold: u32,
    /// Failures older than this are forgotten; zero: never.
    pub failure_timeout: Duration,
    /// Groups that must be running before this one starts (no cycles).
    pub after: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Placement {
    /// Preferred nodes and their scores; higher wins. Members not listed
    /// score 0 and remain eligible.
    pub prefer: Vec<(String, i64)>,
    /// Nodes the group never runs on.
    pub avoid: Vec<String>,
    /// Groups this one never shares a node with.
    pub anti_affinity: Vec<String>,
    /// Move back to a better-scored node when it returns (default: stay).
    pub fail_back: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSpec {
    pub name: String,
    pub agent: AgentSpec,
    pub timeouts: ActionTimeouts,
    /// How often the monitor action runs while the resource is started.
    pub monitor_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTimeouts {
    pub start: Duration,
    pub stop: Duration,
    pub monitor: Duration,
}

impl Default for ActionTimeouts {
    fn default() -> Self {
        ActionTimeouts {
            start: Duration::from_secs(20),
            stop: Duration::from_secs(20),
            monitor: Duration::from_secs(10),
        }
    }
}

/// How a resource is driven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum AgentSpec {
    /// A long-running process supervised by Tandem; its exit is a failure.
    Process {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        workdir: Option<String>,
        user: Option<String>,
    },
    /// Three shell commands (`/bin/sh -c`): start, stop and monitor. Monitor
    /// exits 0 when running, 7 when cleanly not running, anything else: failed.
    Commands {
        start: String,
        stop: String,
        monitor: String,
    },
    /// An Open Cluster Framework agent: `ocf:PROVIDER:TYPE`.
    Ocf {
        provider: String,
        agent: String,
        params: BTreeMap<String, String>,
    },
    /// A systemd unit, through systemctl.
    Systemd { unit: String },
}
