//! The spec's model: what a committed spec is, with the defaults of every
//! key the file may leave out. Built by [`Spec::parse`](super::Spec::parse),
//! stored in the cluster state (serde), read by placement and the executor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole spec, as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Spec {
    pub groups: Vec<GroupSpec>,
    #[serde(default)]
    pub dns: DnsSpec,
    /// Fence devices and, for each node, the levels of devices that fence it.
    #[serde(default)]
    pub fencing: FencingSpec,
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
    /// How the group appears in the cluster's DNS zone.
    #[serde(default)]
    pub dns: GroupDns,
    /// The most a candidate's data may lag behind before a failover or
    /// switchover refuses it (unless forced); `None`: freshness only orders
    /// candidates.
    #[serde(default)]
    pub max_lag: Option<MaxLag>,
    /// Commands run on role changes.
    #[serde(default)]
    pub hooks: Hooks,
}

/// How far behind a candidate's data may be: as a time lag reported by its
/// agent (`max_lag = "10s"`), or as a distance from the most current known
/// position (`max_lag = 1048576`, e.g. bytes of a replication log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxLag {
    Time(Duration),
    Position(u64),
}

impl fmt::Display for MaxLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxLag::Time(d) => write!(f, "{}", humantime::format_duration(*d)),
            MaxLag::Position(p) => write!(f, "{p} positions"),
        }
    }
}

/// Commands a group runs on role changes, each with `TANDEM_NODE`,
/// `TANDEM_GROUP`, `TANDEM_EPOCH`, `TANDEM_OLD_PRIMARY`, `TANDEM_NEW_PRIMARY`
/// and `TANDEM_HOOK` in its environment, run by `/bin/sh -c`; the outcome is
/// recorded in the events. A hook never blocks or undoes the role change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// Run on a node after the group started running there as primary.
    pub after_promote: Option<String>,
    /// Run on a node after the group stopped there (it is no longer primary).
    pub after_demote: Option<String>,
    /// Run on the new primary once a failover or switchover completed.
    pub after_failover: Option<String>,
    /// Each hook is killed (with its process group) after this long.
    pub timeout: Duration,
}

/// How long a hook may run unless the spec says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            after_promote: None,
            after_demote: None,
            after_failover: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.after_promote.is_none() && self.after_demote.is_none() && self.after_failover.is_none()
    }
}

/// A group's DNS records: `GROUP.ZONE` answers the addresses of the nodes
/// that run it (healthy, now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDns {
    pub ttl: Duration,
    /// Adds `_GROUP._tcp.ZONE` SRV records.
    pub port: Option<u16>,
    /// The service's address on each node (default: the node's own address).
    pub addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
}

/// The TTL of a group's records unless the spec says otherwise: low, so
/// resolvers follow a failover quickly.
pub const DEFAULT_DNS_TTL: Duration = Duration::from_secs(1);

impl Default for GroupDns {
    fn default() -> Self {
        GroupDns {
            ttl: DEFAULT_DNS_TTL,
            port: None,
            addresses: BTreeMap::new(),
        }
    }
}

/// The cluster's DNS zone (`[dns]`), served by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DnsSpec {
    /// The zone's name, e.g. `svc.example.`; none: `CLUSTER.tandem.`.
    pub zone: Option<String>,
    /// Clients allowed zone transfers (AXFR); none by default.
    pub allow_transfer: Vec<std::net::IpAddr>,
    /// Static records, checked when the spec is applied.
    pub records: Vec<DnsRecordSpec>,
    /// External DNS servers the coordinator keeps up to date with RFC 2136
    /// updates signed with TSIG.
    pub push: Vec<DnsPushSpec>,
}

/// An external DNS server that gets `GROUP.ZONE` A/AAAA records on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsPushSpec {
    pub server: std::net::SocketAddr,
    /// The server's zone the records go into (absolute).
    pub zone: String,
    /// The TSIG key's name, as the server knows it.
    pub key_name: String,
    /// A file holding the key's secret in base64, read on the coordinator
    /// when it pushes (the secret is never in the spec, the state or logs).
    pub key_file: String,
    /// `hmac-sha256` or `hmac-sha512`.
    pub algorithm: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecordSpec {
    /// Relative to the zone, `@` for the apex, or absolute inside it.
    pub name: String,
    /// A, AAAA, CNAME, TXT, SRV or MX.
    pub rtype: String,
    /// As in a zone file.
    pub data: String,
    pub ttl: Duration,
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

/// Fence devices, and how each node is fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct FencingSpec {
    /// By name (the key in `[fencing.devices.NAME]`).
    pub devices: BTreeMap<String, FenceDeviceSpec>,
    /// For each node: its levels, tried in order. Every device of a level must
    /// succeed; if any fails, the next level is tried.
    pub levels: BTreeMap<String, Vec<Vec<String>>>,
}

impl FencingSpec {
    /// Whether `node` has at least one fencing level.
    pub fn has_devices(&self, node: &str) -> bool {
        !self.levels_for(node).is_empty()
    }

    /// The levels of `node` (device names), in the order they are tried;
    /// empty when the node has none.
    pub fn levels_for(&self, node: &str) -> &[Vec<String>] {
        self.levels.get(node).map_or(&[], Vec::as_slice)
    }
}

/// One fence device: a power switch, a management board, a hypervisor...
/// `Debug` shows secret parameter values as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceDeviceSpec {
    pub name: String,
    pub agent: FenceAgentSpec,
    /// key=value parameters passed on the agent's stdin (e.g. ip, username, password, plug).
    pub params: BTreeMap<String, String>,
    /// Parameter names whose values are secret: never logged, never shown.
    /// As parsed: the names listed in `secret` plus every parameter whose name
    /// [`is_secret_param_name`](super::is_secret_param_name).
    pub secret_params: BTreeSet<String>,
    /// Per attempt.
    pub timeout: Duration,
    /// Extra attempts after a failure.
    pub retries: u32,
}

/// How a fence device is driven. Either way the program gets `action=...`,
/// `nodename=...` and the device's parameters as `key=value` lines on stdin,
/// and exit status 0 means success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FenceAgentSpec {
    /// A ClusterLabs fence agent: a bare name like `fence_dummy` (looked up in
    /// /usr/sbin, then /sbin, /usr/bin) or an absolute path.
    Agent { path: String },
    /// Any command (run without a shell: program + args), same stdin
    /// protocol, exit 0 = success.
    Exec { command: String, args: Vec<String> },
}

/// The `agent` value as written in the spec: the agent's name or path, or `exec`.
impl fmt::Display for FenceAgentSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceAgentSpec::Agent { path } => f.write_str(path),
            FenceAgentSpec::Exec { .. } => f.write_str("exec"),
        }
    }
}

impl GroupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Exclusive => "exclusive",
            GroupKind::Clone => "clone",
        }
    }
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `agent` value as written in the spec: `exec`, `ocf:PROVIDER:TYPE` or
/// `systemd:UNIT`.
impl fmt::Display for AgentSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentSpec::Process { .. } | AgentSpec::Commands { .. } => f.write_str("exec"),
            AgentSpec::Ocf { provider, agent, .. } => write!(f, "ocf:{provider}:{agent}"),
            AgentSpec::Systemd { unit } => write!(f, "systemd:{unit}"),
        }
    }
}

/// Failures on one node before a group leaves it, unless the spec says otherwise.
pub const DEFAULT_MIGRATION_THRESHOLD: u32 = 3;
/// How long a failure counts, unless the spec says otherwise.
pub const DEFAULT_FAILURE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a started resource is monitored, unless the spec says otherwise.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// How long one attempt of a fence device may take, unless the spec says otherwise.
pub const DEFAULT_FENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra attempts after a fence device failed, unless the spec says otherwise.
pub const DEFAULT_FENCE_RETRIES: u32 = 1;
/// The most extra attempts a fence device may be given.
pub const MAX_FENCE_RETRIES: u32 = 10;
/// The highest score a `prefer` entry may carry (scores are added up by
/// placement; the bound keeps sums far from overflow).
pub const MAX_SCORE: i64 = 1_000_000;

impl Spec {
    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testing::{EXAMPLE, parse};

    #[test]
    fn serde_json_round_trip() {
        let spec = parse(EXAMPLE).unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        assert!(json.contains("\"class\":\"ocf\""), "{json}");
        assert!(json.contains("\"kind\":\"exec\""), "{json}");
        // A spec stored before fencing existed still reads.
        let old: Spec = serde_json::from_str(r#"{"groups":[]}"#).unwrap();
        assert_eq!(old, Spec::default());
    }
}
