//! The declarative spec: service groups, their resources and placement.
//!
//! Applied with `tandem apply -f FILE`, validated in full before it is
//! committed ([`Spec::parse`]), versioned in the cluster state. The file
//! format is TOML; `deploy/examples/spec.toml` shows and explains every key.
//!
//! Parsing has two steps, as for the node configuration: a raw serde form that
//! refuses unknown keys (so a typo never falls back to a default), then
//! semantic validation. Every problem is a [`SpecError`] naming the file, the
//! group, the resource and the field, and saying what is expected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::valid_name;
use crate::membership::{NodeInfo, NodeRole};

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
    /// [`is_secret_param_name`].
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

impl FenceDeviceSpec {
    /// Whether the value of parameter `name` is secret: listed in
    /// `secret_params`, or a name that is always secret.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret_params.contains(name) || is_secret_param_name(name)
    }

    /// The values of the secret parameters (non-empty ones), to be kept out
    /// of logs and messages.
    pub fn secret_values(&self) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(name, value)| !value.is_empty() && self.is_secret(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// `text` with every occurrence of a secret parameter value replaced by
    /// [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        redact_values(text, &self.secret_values())
    }
}

impl fmt::Debug for FenceDeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Prints a string as it is (no quotes, no escapes).
        struct Raw<'a>(&'a str);
        impl fmt::Debug for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        let params: BTreeMap<&str, &str> = self
            .params
            .iter()
            .map(|(name, value)| {
                let shown = if self.is_secret(name) { REDACTED } else { value.as_str() };
                (name.as_str(), shown)
            })
            .collect();
        // A secret value may also appear in an exec command's arguments.
        let agent = self.redact(&format!("{:?}", self.agent));
        f.debug_struct("FenceDeviceSpec")
            .field("name", &self.name)
            .field("agent", &Raw(&agent))
            .field("params", &params)
            .field("secret_params", &self.secret_params)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// What a secret value is replaced with wherever it would be shown.
pub const REDACTED: &str = "<redacted>";

/// Parameter names whose values are always secret, whether or not `secret`
/// lists them: `password`, `passwd` and any name containing "password",
/// "passwd", "secret" or "token" (case-insensitive).
pub fn is_secret_param_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

/// `text` with every occurrence of each of `secrets` (empty ones ignored)
/// replaced by [`REDACTED`]. One pass from left to right, longest secret
/// first at each position, so a secret that contains another is replaced
/// whole and the replacement itself is never rewritten.
pub fn redact_values(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return text.to_string();
    }
    secrets.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    secrets.dedup();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(secret) = secrets.iter().find(|s| rest.starts_with(**s)) {
            out.push_str(REDACTED);
            rest = &rest[secret.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
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

/// A spec problem: which file, where (group, resource, field), what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file as the caller named it.
    pub file: String,
    /// The group concerned, by the name the file gives it.
    pub group: Option<String>,
    /// The resource concerned, within `group`.
    pub resource: Option<String>,
    /// The key within the group or resource, dotted (`timeouts.start`,
    /// `prefer[1].node`, `params.ip`); in the fencing section, the whole path
    /// (`fencing.devices.pdu-a.params.ip`, `fencing.nodes.site-a.levels[0][1]`),
    /// which names the device or node; empty when the file could not be read
    /// as a spec at all (TOML syntax, unknown or missing key, wrong type), in
    /// which case `message` is toml's own, showing the line.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if let Some(group) = &self.group {
            write!(f, "group {group:?}: ")?;
        }
        if let Some(resource) = &self.resource {
            write!(f, "resource {resource:?}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    groups: Vec<RawGroup>,
    #[serde(default)]
    fencing: RawFencing,
    #[serde(default)]
    dns: RawDns,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDns {
    zone: Option<String>,
    #[serde(default)]
    allow_transfer: Vec<std::net::IpAddr>,
    #[serde(default)]
    records: Vec<RawDnsRecord>,
    #[serde(default)]
    push: Vec<RawDnsPush>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsPush {
    server: String,
    zone: String,
    key_name: String,
    key_file: String,
    algorithm: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnsRecord {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    data: String,
    ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroupDns {
    ttl: Option<String>,
    port: Option<u16>,
    #[serde(default)]
    addresses: BTreeMap<String, Vec<std::net::IpAddr>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFencing {
    #[serde(default)]
    devices: BTreeMap<String, RawFenceDevice>,
    #[serde(default)]
    nodes: BTreeMap<String, RawFenceNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFenceDevice {
    agent: String,
    /// exec only: program and arguments.
    command: Option<Vec<String>>,
    params: Option<BTreeMap<String, toml::Value>>,
    /// Names of parameters whose values are secret (beyond the usual names).
    secret: Option<Vec<String>>,
    timeout: Option<String>,
    retries: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFenceNode {
    levels: Vec<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    #[serde(default)]
    kind: GroupKind,
    #[serde(default)]
    prefer: Vec<RawPrefer>,
    #[serde(default)]
    avoid: Vec<String>,
    #[serde(default)]
    anti_affinity: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    fail_back: bool,
    migration_threshold: Option<u32>,
    failure_timeout: Option<String>,
    #[serde(default)]
    resources: Vec<RawResource>,
    dns: Option<RawGroupDns>,
    max_lag: Option<toml::Value>,
    hooks: Option<RawHooks>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    after_promote: Option<String>,
    after_demote: Option<String>,
    after_failover: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrefer {
    node: String,
    score: i64,
}

/// Every key any agent class takes; which ones a resource may use depends on
/// its `agent` and is checked after parsing, with a message saying why.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: String,
    agent: String,
    monitor_interval: Option<String>,
    #[serde(default)]
    timeouts: RawTimeouts,
    // ocf
    params: Option<BTreeMap<String, toml::Value>>,
    // exec, supervised process
    command: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, toml::Value>>,
    workdir: Option<String>,
    user: Option<String>,
    // exec, three commands
    start: Option<String>,
    stop: Option<String>,
    monitor: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    start: Option<String>,
    stop: Option<String>,
    monitor: Option<String>,
}

// ---------------------------------------------------------------------------
// Validation.

const NAME_EXPECTED: &str = "expected 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'";
const AGENT_EXPECTED: &str = r#"expected one of "exec", "ocf:PROVIDER:TYPE", "systemd:UNIT""#;
const EXEC_FORMS: &str = "`command` (a supervised process) or `start`, `stop` and `monitor` (three commands)";

/// Where in the file a check is: builds [`SpecError`]s.
#[derive(Clone, Copy)]
struct At<'a> {
    file: &'a str,
    group: Option<&'a str>,
    resource: Option<&'a str>,
    /// Within the fencing section: the table (`fencing.devices`,
    /// `fencing.nodes`) and the key, which prefix every field.
    fencing: Option<(&'a str, &'a str)>,
}

impl<'a> At<'a> {
    fn group(self, group: &'a str) -> Self {
        At {
            group: Some(group),
            ..self
        }
    }

    fn resource(self, resource: &'a str) -> Self {
        At {
            resource: Some(resource),
            ..self
        }
    }

    fn fence_device(self, device: &'a str) -> Self {
        At {
            fencing: Some(("fencing.devices", device)),
            ..self
        }
    }

    fn fence_node(self, node: &'a str) -> Self {
        At {
            fencing: Some(("fencing.nodes", node)),
            ..self
        }
    }

    fn err(self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
        let mut field = field.into();
        if let Some((table, key)) = self.fencing {
            // The key as TOML writes it: bare when it can be, quoted otherwise.
            let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let key = if bare { key.to_string() } else { format!("{key:?}") };
            field = if field.is_empty() {
                format!("{table}.{key}")
            } else {
                format!("{table}.{key}.{field}")
            };
        }
        SpecError {
            file: self.file.to_string(),
            group: self.group.map(str::to_string),
            resource: self.resource.map(str::to_string),
            field,
            message: message.into(),
        }
    }
}

/// `a, b, c`, or `none` for an empty list.
fn known<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let list: Vec<&str> = names.into_iter().collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

impl Spec {
    /// Parses and validates a spec file; `file` is used only in error
    /// messages. `nodes`: the cluster's current members (name, role), used to
    /// refuse unknown node names in `prefer`/`avoid`/`fencing.nodes`, and a
    /// witness in `prefer` or `fencing.nodes` (witnesses never host groups).
    ///
    /// An empty file is the empty spec ([`Spec::default`]). The first problem
    /// found is returned.
    pub fn parse(text: &str, file: &str, nodes: &[NodeInfo]) -> Result<Spec, SpecError> {
        let at = At {
            file,
            group: None,
            resource: None,
            fencing: None,
        };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            // toml's message names the key and shows the offending line.
            at.err("", e.to_string().trim_end().replace('\n', "\n  "))
        })?;

        // Names first: the other checks refer to groups by name.
        let mut names = BTreeSet::new();
        for g in &raw.groups {
            let at = at.group(&g.name);
            if !valid_name(&g.name) {
                return Err(at.err("name", format!("{NAME_EXPECTED}, got {:?}", g.name)));
            }
            if !names.insert(g.name.as_str()) {
                return Err(at.err(
                    "name",
                    format!("expected unique group names, {:?} is listed twice", g.name),
                ));
            }
        }

        let groups = raw
            .groups
            .iter()
            .map(|g| group(at.group(&g.name), g, &names, nodes))
            .collect::<Result<Vec<_>, _>>()?;

        if let Some(cycle) = find_after_cycle(&groups) {
            return Err(at.group(&cycle[0]).err(
                "after",
                format!(
                    "expected no cycle in `after`, found {} (A -> B: A starts after B)",
                    cycle.join(" -> ")
                ),
            ));
        }
        let fencing = fencing(at, &raw.fencing, nodes)?;
        let dns = dns(at, &raw.dns)?;
        Ok(Spec { groups, fencing, dns })
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }
}

fn group(at: At<'_>, g: &RawGroup, groups: &BTreeSet<&str>, nodes: &[NodeInfo]) -> Result<GroupSpec, SpecError> {
    let all_nodes = || known(nodes.iter().map(|n| n.name.as_str()));
    let member_nodes = || {
        known(
            nodes
                .iter()
                .filter(|n| n.role == NodeRole::Member)
                .map(|n| n.name.as_str()),
        )
    };

    let mut prefer = Vec::with_capacity(g.prefer.len());
    for (i, p) in g.prefer.iter().enumerate() {
        let field = format!("prefer[{i}].node");
        match nodes.iter().find(|n| n.name == p.node) {
            None => {
                return Err(at.err(
                    field,
                    format!(
                        "expected a node of the cluster (known: {}), got {:?}",
                        all_nodes(),
                        p.node
                    ),
                ));
            }
            Some(n) if n.role == NodeRole::Witness => {
                return Err(at.err(
                    field,
                    format!(
                        "expected a member node (known: {}), got the witness {:?}: witnesses never host groups",
                        member_nodes(),
                        p.node
                    ),
                ));
            }
            Some(_) => {}
        }
        if prefer.iter().any(|(node, _)| *node == p.node) {
            return Err(at.err(
                field,
                format!(
                    "expected each node at most once in prefer, {:?} is listed twice",
                    p.node
                ),
            ));
        }
        if !(0..=MAX_SCORE).contains(&p.score) {
            return Err(at.err(
                format!("prefer[{i}].score"),
                format!(
                    "expected a score from 0 to {MAX_SCORE}, got {} (to keep the group off a node, list it in avoid)",
                    p.score
                ),
            ));
        }
        prefer.push((p.node.clone(), p.score));
    }

    let mut avoid: Vec<String> = Vec::with_capacity(g.avoid.len());
    for (i, node) in g.avoid.iter().enumerate() {
        let field = format!("avoid[{i}]");
        if !nodes.iter().any(|n| n.name == *node) {
            return Err(at.err(
                field,
                format!("expected a node of the cluster (known: {}), got {node:?}", all_nodes()),
            ));
        }
        if avoid.contains(node) {
            return Err(at.err(
                field,
                format!("expected each node at most once in avoid, {node:?} is listed twice"),
            ));
        }
        if prefer.iter().any(|(p, _)| p == node) {
            return Err(at.err(
                field,
                format!("expected a node in prefer or in avoid, not both; {node:?} is in both"),
            ));
        }
        avoid.push(node.clone());
    }

    let anti_affinity = group_refs(at, "anti_affinity", &g.anti_affinity, &g.name, groups)?;
    let after = group_refs(at, "after", &g.after, &g.name, groups)?;

    let migration_threshold = g.migration_threshold.unwrap_or(DEFAULT_MIGRATION_THRESHOLD);
    if migration_threshold == 0 {
        return Err(at.err(
            "migration_threshold",
            "expected a number of failures of 1 or more, got 0",
        ));
    }
    let failure_timeout = duration(
        at,
        "failure_timeout",
        g.failure_timeout.as_deref(),
        DEFAULT_FAILURE_TIMEOUT,
        ZeroIs::Allowed,
    )?;

    if g.resources.is_empty() {
        return Err(at.err("resources", "expected at least one [[groups.resources]] entry"));
    }
    let mut resources: Vec<ResourceSpec> = Vec::with_capacity(g.resources.len());
    for r in &g.resources {
        let at = at.resource(&r.name);
        if !valid_name(&r.name) {
            return Err(at.err("name", format!("{NAME_EXPECTED}, got {:?}", r.name)));
        }
        if resources.iter().any(|other| other.name == r.name) {
            return Err(at.err(
                "name",
                format!(
                    "expected unique resource names within a group, {:?} is listed twice",
                    r.name
                ),
            ));
        }
        resources.push(resource(at, r)?);
    }

    Ok(GroupSpec {
        name: g.name.clone(),
        kind: g.kind,
        resources,
        placement: Placement {
            prefer,
            avoid,
            anti_affinity,
            fail_back: g.fail_back,
        },
        migration_threshold,
        failure_timeout,
        after,
        dns: group_dns(at, g.dns.as_ref(), nodes)?,
        max_lag: max_lag(at, g.max_lag.as_ref())?,
        hooks: hooks(at, g.hooks.as_ref())?,
    })
}

fn max_lag(at: At<'_>, raw: Option<&toml::Value>) -> Result<Option<MaxLag>, SpecError> {
    const EXPECTED: &str = "expected a duration (\"10s\", for agents reporting a lag) or a number of 0 or more (for agents reporting a position)";
    match raw {
        None => Ok(None),
        Some(toml::Value::Integer(n)) => u64::try_from(*n)
            .map(|n| Some(MaxLag::Position(n)))
            .map_err(|_| at.err("max_lag", format!("{EXPECTED}, got {n}"))),
        Some(toml::Value::String(text)) => {
            let d =
                humantime::parse_duration(text).map_err(|_| at.err("max_lag", format!("{EXPECTED}, got {text:?}")))?;
            Ok(Some(MaxLag::Time(d)))
        }
        Some(other) => Err(at.err("max_lag", format!("{EXPECTED}, got {other}"))),
    }
}

fn hooks(at: At<'_>, raw: Option<&RawHooks>) -> Result<Hooks, SpecError> {
    let Some(raw) = raw else { return Ok(Hooks::default()) };
    let command = |field: &str, c: &Option<String>| -> Result<Option<String>, SpecError> {
        match c {
            Some(c) if c.trim().is_empty() => {
                Err(at.err(format!("hooks.{field}"), "expected a command, got an empty string"))
            }
            c => Ok(c.clone()),
        }
    };
    Ok(Hooks {
        after_promote: command("after_promote", &raw.after_promote)?,
        after_demote: command("after_demote", &raw.after_demote)?,
        after_failover: command("after_failover", &raw.after_failover)?,
        timeout: duration(
            at,
            "hooks.timeout",
            raw.timeout.as_deref(),
            DEFAULT_HOOK_TIMEOUT,
            ZeroIs::Refused,
        )?,
    })
}

/// The longest TTL accepted for any record (a day).
const MAX_DNS_TTL: Duration = Duration::from_secs(86_400);

fn dns_ttl(at: At<'_>, field: &str, text: Option<&str>) -> Result<Duration, SpecError> {
    let ttl = duration(at, field, text, DEFAULT_DNS_TTL, ZeroIs::Allowed)?;
    if ttl > MAX_DNS_TTL || ttl.subsec_nanos() != 0 {
        return Err(at.err(
            field,
            format!(
                "expected whole seconds from 0 to 1 day, got {}",
                humantime::format_duration(ttl)
            ),
        ));
    }
    Ok(ttl)
}

fn group_dns(at: At<'_>, raw: Option<&RawGroupDns>, nodes: &[NodeInfo]) -> Result<GroupDns, SpecError> {
    let Some(raw) = raw else { return Ok(GroupDns::default()) };
    for (node, addrs) in &raw.addresses {
        if !nodes.iter().any(|n| n.name == *node) {
            return Err(at.err(
                format!("dns.addresses.{node}"),
                format!("expected a node of the cluster, got {node:?}"),
            ));
        }
        if addrs.is_empty() {
            return Err(at.err(format!("dns.addresses.{node}"), "expected at least one address"));
        }
    }
    if raw.port == Some(0) {
        return Err(at.err("dns.port", "expected a port from 1 to 65535, got 0"));
    }
    Ok(GroupDns {
        ttl: dns_ttl(at, "dns.ttl", raw.ttl.as_deref())?,
        port: raw.port,
        addresses: raw.addresses.clone(),
    })
}

fn dns(at: At<'_>, raw: &RawDns) -> Result<DnsSpec, SpecError> {
    if let Some(zone) = &raw.zone {
        let labels: Vec<&str> = zone.trim_end_matches('.').split('.').collect();
        if !zone.ends_with('.') || labels.iter().any(|l| !valid_name(&l.to_ascii_lowercase())) {
            return Err(at.err(
                "dns.zone",
                format!("expected an absolute domain name ending in '.', such as \"svc.example.\", got {zone:?}"),
            ));
        }
    }
    let mut records = Vec::with_capacity(raw.records.len());
    for (i, r) in raw.records.iter().enumerate() {
        records.push(DnsRecordSpec {
            name: r.name.clone(),
            rtype: r.rtype.to_ascii_uppercase(),
            data: r.data.clone(),
            ttl: dns_ttl(at, &format!("dns.records[{i}].ttl"), r.ttl.as_deref())?,
        });
    }
    let mut push = Vec::with_capacity(raw.push.len());
    for (i, p) in raw.push.iter().enumerate() {
        let field = |f: &str| format!("dns.push[{i}].{f}");
        let server = p.server.parse().map_err(|_| {
            at.err(
                field("server"),
                format!("expected IP:PORT such as \"10.0.0.53:53\", got {:?}", p.server),
            )
        })?;
        if !p.zone.ends_with('.') || p.zone.len() < 2 {
            return Err(at.err(
                field("zone"),
                format!("expected an absolute domain name ending in '.', got {:?}", p.zone),
            ));
        }
        if !p.key_file.starts_with('/') {
            return Err(at.err(
                field("key_file"),
                format!(
                    "expected an absolute path to a file holding the base64 secret, got {:?}",
                    p.key_file
                ),
            ));
        }
        let algorithm = p
            .algorithm
            .clone()
            .unwrap_or_else(|| "hmac-sha256".into())
            .to_ascii_lowercase();
        if !["hmac-sha256", "hmac-sha512"].contains(&algorithm.as_str()) {
            return Err(at.err(
                field("algorithm"),
                format!("expected \"hmac-sha256\" or \"hmac-sha512\", got {algorithm:?}"),
            ));
        }
        push.push(DnsPushSpec {
            server,
            zone: p.zone.to_ascii_lowercase(),
            key_name: p.key_name.clone(),
            key_file: p.key_file.clone(),
            algorithm,
            timeout: duration(
                at,
                &field("timeout"),
                p.timeout.as_deref(),
                Duration::from_secs(3),
                ZeroIs::Refused,
            )?,
        });
    }
    Ok(DnsSpec {
        zone: raw.zone.as_ref().map(|z| z.to_ascii_lowercase()),
        allow_transfer: raw.allow_transfer.clone(),
        records,
        push,
    })
}

/// Checks a list of group names (`anti_affinity`, `after`).
fn group_refs(
    at: At<'_>,
    key: &str,
    refs: &[String],
    me: &str,
    groups: &BTreeSet<&str>,
) -> Result<Vec<String>, SpecError> {
    let mut out: Vec<String> = Vec::with_capacity(refs.len());
    for (i, name) in refs.iter().enumerate() {
        let field = format!("{key}[{i}]");
        if name == me {
            return Err(at.err(
                field,
                format!("expected the name of another group, got the group's own name {name:?}"),
            ));
        }
        if !groups.contains(name.as_str()) {
            let others = known(groups.iter().copied().filter(|g| *g != me));
            return Err(at.err(
                field,
                format!("expected the name of another group of this spec (known: {others}), got {name:?}"),
            ));
        }
        if out.contains(name) {
            return Err(at.err(
                field,
                format!("expected each group at most once in {key}, {name:?} is listed twice"),
            ));
        }
        out.push(name.clone());
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ZeroIs {
    Allowed,
    Refused,
}

/// Parses an optional duration (humantime: "500ms", "20s", "10m", "1h 30m").
/// Non-zero durations must be at least 1ms: decisions count whole milliseconds.
fn duration(
    at: At<'_>,
    field: &str,
    text: Option<&str>,
    default: Duration,
    zero: ZeroIs,
) -> Result<Duration, SpecError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text).map_err(|_| {
        at.err(
            field,
            format!(
                "expected a duration such as \"{}\", got {text:?}",
                humantime::format_duration(default)
            ),
        )
    })?;
    if d.is_zero() {
        if zero == ZeroIs::Refused {
            return Err(at.err(field, format!("expected a duration greater than zero, got {text:?}")));
        }
    } else if d < Duration::from_millis(1) {
        return Err(at.err(field, format!("expected a duration of at least 1ms, got {text:?}")));
    }
    Ok(d)
}

fn resource(at: At<'_>, r: &RawResource) -> Result<ResourceSpec, SpecError> {
    let agent = agent(at, r)?;
    let defaults = ActionTimeouts::default();
    let timeouts = ActionTimeouts {
        start: duration(
            at,
            "timeouts.start",
            r.timeouts.start.as_deref(),
            defaults.start,
            ZeroIs::Refused,
        )?,
        stop: duration(
            at,
            "timeouts.stop",
            r.timeouts.stop.as_deref(),
            defaults.stop,
            ZeroIs::Refused,
        )?,
        monitor: duration(
            at,
            "timeouts.monitor",
            r.timeouts.monitor.as_deref(),
            defaults.monitor,
            ZeroIs::Refused,
        )?,
    };
    let monitor_interval = duration(
        at,
        "monitor_interval",
        r.monitor_interval.as_deref(),
        DEFAULT_MONITOR_INTERVAL,
        ZeroIs::Refused,
    )?;
    Ok(ResourceSpec {
        name: r.name.clone(),
        agent,
        timeouts,
        monitor_interval,
    })
}

/// Turns `agent` and the class-specific keys into an [`AgentSpec`], refusing
/// keys that belong to another class.
fn agent(at: At<'_>, r: &RawResource) -> Result<AgentSpec, SpecError> {
    let present = [
        ("params", r.params.is_some()),
        ("command", r.command.is_some()),
        ("args", r.args.is_some()),
        ("env", r.env.is_some()),
        ("workdir", r.workdir.is_some()),
        ("user", r.user.is_some()),
        ("start", r.start.is_some()),
        ("stop", r.stop.is_some()),
        ("monitor", r.monitor.is_some()),
    ];
    // The first key present that `allowed` does not list.
    let foreign = |allowed: &[&str]| {
        present
            .iter()
            .find(|(key, there)| *there && !allowed.contains(key))
            .map(|(key, _)| *key)
    };
    let owner = |key: &str| if key == "params" { "ocf" } else { "exec" };

    let agent = r.agent.as_str();
    if agent == "exec" {
        if let Some(key) = foreign(&["command", "args", "env", "workdir", "user", "start", "stop", "monitor"]) {
            return Err(at.err(
                key,
                format!(
                    "not a key of exec resources (`{key}` is for {} resources); exec takes {EXEC_FORMS}",
                    owner(key)
                ),
            ));
        }
        return exec(at, r);
    }
    if let Some(rest) = agent.strip_prefix("ocf:") {
        let part_ok = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        let Some((provider, kind)) = rest.split_once(':').filter(|(p, t)| part_ok(p) && part_ok(t)) else {
            return Err(at.err(
                "agent",
                format!(
                    "expected \"ocf:PROVIDER:TYPE\", PROVIDER and TYPE made of letters, digits, '_', '-' or '.' \
                     (for example \"ocf:heartbeat:IPaddr2\"), got {agent:?}"
                ),
            ));
        };
        if let Some(key) = foreign(&["params"]) {
            return Err(at.err(
                key,
                format!(
                    "not a key of ocf resources (`{key}` is for {} resources); ocf takes `params`",
                    owner(key)
                ),
            ));
        }
        let mut params = BTreeMap::new();
        for (name, value) in r.params.iter().flatten() {
            let field = format!("params.{name}");
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(at.err(
                    field,
                    format!(
                        "expected a parameter name of letters, digits and '_' (passed as OCF_RESKEY_NAME), got {name:?}"
                    ),
                ));
            }
            params.insert(name.clone(), scalar(at, &field, value)?);
        }
        return Ok(AgentSpec::Ocf {
            provider: provider.to_string(),
            agent: kind.to_string(),
            params,
        });
    }
    if let Some(unit) = agent.strip_prefix("systemd:") {
        let unit_ok = !unit.is_empty()
            && unit.len() <= 255
            && !unit.starts_with('-')
            && unit
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
        if !unit_ok {
            return Err(at.err(
                "agent",
                format!(
                    "expected \"systemd:UNIT\", UNIT a unit name of letters, digits, ':', '-', '_', '.', '\\' or '@', \
                     not starting with '-' (for example \"systemd:nginx.service\"), got {agent:?}"
                ),
            ));
        }
        if let Some(key) = foreign(&[]) {
            return Err(at.err(
                key,
                format!(
                    "not a key of systemd resources (`{key}` is for {} resources); systemd takes none, \
                     configure the unit itself",
                    owner(key)
                ),
            ));
        }
        return Ok(AgentSpec::Systemd { unit: unit.to_string() });
    }
    Err(at.err("agent", format!("{AGENT_EXPECTED}, got {agent:?}")))
}

/// An `exec` resource: a supervised process or three commands.
fn exec(at: At<'_>, r: &RawResource) -> Result<AgentSpec, SpecError> {
    let commands = [("start", &r.start), ("stop", &r.stop), ("monitor", &r.monitor)];
    let any_command = commands.iter().any(|(_, c)| c.is_some());
    match (&r.command, any_command) {
        (Some(_), true) => Err(at.err("command", format!("expected either {EXEC_FORMS}, not both"))),
        (None, false) => Err(at.err(
            "command",
            format!("expected either {EXEC_FORMS} on an exec resource, found neither"),
        )),
        (Some(command), false) => {
            if command.trim().is_empty() {
                return Err(at.err(
                    "command",
                    "expected a program to run (such as \"/usr/bin/python3\"), got an empty string",
                ));
            }
            no_nul(at, "command", command)?;
            let args = r.args.clone().unwrap_or_default();
            for (i, arg) in args.iter().enumerate() {
                no_nul(at, &format!("args[{i}]"), arg)?;
            }
            let mut env = BTreeMap::new();
            for (name, value) in r.env.iter().flatten() {
                let field = format!("env.{name}");
                let name_ok = name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !name_ok {
                    return Err(at.err(
                        field,
                        format!(
                            "expected a variable name of letters, digits and '_', not starting with a digit, got {name:?}"
                        ),
                    ));
                }
                if name.starts_with("TANDEM_") {
                    return Err(at.err(
                        field,
                        format!(
                            "expected a name not starting with TANDEM_ (reserved for what Tandem passes, such as \
                             the epoch), got {name:?}"
                        ),
                    ));
                }
                env.insert(name.clone(), scalar(at, &field, value)?);
            }
            if let Some(workdir) = &r.workdir {
                if !workdir.starts_with('/') {
                    return Err(at.err(
                        "workdir",
                        format!("expected an absolute directory path, got {workdir:?}"),
                    ));
                }
                no_nul(at, "workdir", workdir)?;
            }
            if let Some(user) = &r.user {
                let user_ok = !user.is_empty() && !user.bytes().any(|b| b.is_ascii_whitespace() || b == b':' || b == 0);
                if !user_ok {
                    return Err(at.err("user", format!("expected a user name or a numeric uid, got {user:?}")));
                }
            }
            Ok(AgentSpec::Process {
                command: command.clone(),
                args,
                env,
                workdir: r.workdir.clone(),
                user: r.user.clone(),
            })
        }
        (None, true) => {
            if let Some((missing, _)) = commands.iter().find(|(_, c)| c.is_none()) {
                return Err(at.err(
                    *missing,
                    format!("expected `start`, `stop` and `monitor` together, `{missing}` is missing"),
                ));
            }
            let process_keys = [
                ("args", r.args.is_some()),
                ("env", r.env.is_some()),
                ("workdir", r.workdir.is_some()),
                ("user", r.user.is_some()),
            ];
            if let Some((key, _)) = process_keys.iter().find(|(_, there)| *there) {
                return Err(at.err(
                    *key,
                    format!(
                        "`{key}` applies only to an exec resource with `command` (a supervised process), \
                         not to one with `start`, `stop` and `monitor`"
                    ),
                ));
            }
            let text = |key: &str, command: &Option<String>| {
                let command = command.as_deref().unwrap_or_default();
                if command.trim().is_empty() {
                    return Err(at.err(key, "expected a shell command, got an empty string"));
                }
                no_nul(at, key, command)?;
                Ok(command.to_string())
            };
            let start = text("start", &r.start)?;
            let stop = text("stop", &r.stop)?;
            let monitor = text("monitor", &r.monitor)?;
            Ok(AgentSpec::Commands { start, stop, monitor })
        }
    }
}

/// A parameter or environment value: strings as they are, integers and
/// booleans in their TOML spelling (`cidr_netmask = 24` is "24").
fn scalar(at: At<'_>, field: &str, value: &toml::Value) -> Result<String, SpecError> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => {
            return Err(at.err(
                field,
                format!(
                    "expected a string, an integer or a boolean, got {} {}",
                    if other.is_array() { "an" } else { "a" },
                    other.type_str()
                ),
            ));
        }
    };
    no_nul(at, field, &text)?;
    Ok(text)
}

/// Text handed to the operating system cannot hold a NUL byte.
fn no_nul(at: At<'_>, field: &str, text: &str) -> Result<(), SpecError> {
    if text.contains('\0') {
        return Err(at.err(field, "expected text without NUL bytes"));
    }
    Ok(())
}

const FENCE_AGENT_EXPECTED: &str = "expected a fence agent's name (\"fence_\" then letters, digits, '_', '-' or '.', \
     such as \"fence_ipmilan\"), an absolute path to one, or \"exec\" (with `command`)";

/// The `fencing` section: devices, then each node's levels.
fn fencing(at: At<'_>, raw: &RawFencing, nodes: &[NodeInfo]) -> Result<FencingSpec, SpecError> {
    let mut devices = BTreeMap::new();
    for (name, d) in &raw.devices {
        let at = at.fence_device(name);
        if !valid_name(name) {
            return Err(at.err("", format!("{NAME_EXPECTED}, got {name:?}")));
        }
        devices.insert(name.clone(), fence_device(at, name, d)?);
    }

    let mut levels = BTreeMap::new();
    for (node, n) in &raw.nodes {
        let at = at.fence_node(node);
        let members = || {
            known(
                nodes
                    .iter()
                    .filter(|n| n.role == NodeRole::Member)
                    .map(|n| n.name.as_str()),
            )
        };
        match nodes.iter().find(|info| info.name == *node) {
            None => {
                return Err(at.err(
                    "",
                    format!(
                        "expected a member node of the cluster (known: {}), got {node:?}",
                        members()
                    ),
                ));
            }
            Some(info) if info.role == NodeRole::Witness => {
                return Err(at.err(
                    "",
                    format!(
                        "expected a member node (known: {}), got the witness {node:?}: witnesses host no groups, \
                         so nothing waits for them to be fenced",
                        members()
                    ),
                ));
            }
            Some(_) => {}
        }
        if n.levels.is_empty() {
            return Err(at.err(
                "levels",
                "expected at least one level (a list of device names), such as [[\"pdu-a\"]]",
            ));
        }
        for (i, level) in n.levels.iter().enumerate() {
            if level.is_empty() {
                return Err(at.err(
                    format!("levels[{i}]"),
                    "expected at least one device in a level, got []",
                ));
            }
            for (j, device) in level.iter().enumerate() {
                let field = format!("levels[{i}][{j}]");
                if !devices.contains_key(device) {
                    return Err(at.err(
                        field,
                        format!(
                            "expected a fence device of this spec (known: {}), got {device:?}",
                            known(devices.keys().map(String::as_str))
                        ),
                    ));
                }
                if level[..j].contains(device) {
                    return Err(at.err(
                        field,
                        format!("expected each device at most once in a level, {device:?} is listed twice"),
                    ));
                }
            }
        }
        levels.insert(node.clone(), n.levels.clone());
    }
    Ok(FencingSpec { devices, levels })
}

fn fence_device(at: At<'_>, name: &str, d: &RawFenceDevice) -> Result<FenceDeviceSpec, SpecError> {
    let agent = if d.agent == "exec" {
        let Some(command) = &d.command else {
            return Err(at.err(
                "command",
                "expected `command` = [PROGRAM, ARGUMENTS...] with agent = \"exec\", found none",
            ));
        };
        let Some((program, args)) = command.split_first() else {
            return Err(at.err("command", "expected a program and its arguments, got an empty list"));
        };
        if program.trim().is_empty() {
            return Err(at.err(
                "command[0]",
                "expected a program to run (such as \"/usr/local/bin/kill-node\"), got an empty string",
            ));
        }
        if program.contains('/') && !program.starts_with('/') {
            return Err(at.err(
                "command[0]",
                format!("expected an absolute path or a program name found on PATH, got {program:?}"),
            ));
        }
        for (i, arg) in command.iter().enumerate() {
            no_nul(at, &format!("command[{i}]"), arg)?;
        }
        FenceAgentSpec::Exec {
            command: program.clone(),
            args: args.to_vec(),
        }
    } else {
        let agent = d.agent.as_str();
        let bare_ok = agent.strip_prefix("fence_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        });
        let path_ok =
            agent.len() > 1 && agent.starts_with('/') && !agent.ends_with('/') && !agent.chars().any(char::is_control);
        if !bare_ok && !path_ok {
            return Err(at.err("agent", format!("{FENCE_AGENT_EXPECTED}, got {agent:?}")));
        }
        if d.command.is_some() {
            return Err(at.err(
                "command",
                format!(
                    "`command` applies only to agent = \"exec\"; a fence agent ({agent}) is run without \
                     arguments and reads its parameters on stdin: use `params`"
                ),
            ));
        }
        FenceAgentSpec::Agent {
            path: agent.to_string(),
        }
    };

    let mut params = BTreeMap::new();
    for (key, value) in d.params.iter().flatten() {
        let field = format!("params.{key}");
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(at.err(
                field,
                format!(
                    "expected a parameter name of letters, digits, '_' or '-' (passed as a NAME=VALUE line on \
                     the agent's stdin), got {key:?}"
                ),
            ));
        }
        if key == "action" {
            return Err(at.err(
                field,
                "expected no `action` parameter: Tandem sets it (off, on, reboot, status or monitor)",
            ));
        }
        let value = scalar(at, &field, value)?;
        if value.contains(['\n', '\r']) {
            return Err(at.err(
                field,
                "expected a value on one line (parameters are passed as NAME=VALUE lines on the agent's stdin)",
            ));
        }
        params.insert(key.clone(), value);
    }

    let mut secret_params: BTreeSet<String> = params.keys().filter(|k| is_secret_param_name(k)).cloned().collect();
    for (i, key) in d.secret.iter().flatten().enumerate() {
        if !params.contains_key(key) {
            return Err(at.err(
                format!("secret[{i}]"),
                format!(
                    "expected the name of a parameter of this device (known: {}), got {key:?}",
                    known(params.keys().map(String::as_str))
                ),
            ));
        }
        secret_params.insert(key.clone());
    }

    let timeout = duration(
        at,
        "timeout",
        d.timeout.as_deref(),
        DEFAULT_FENCE_TIMEOUT,
        ZeroIs::Refused,
    )?;
    let retries = d.retries.unwrap_or(DEFAULT_FENCE_RETRIES);
    if retries > MAX_FENCE_RETRIES {
        return Err(at.err(
            "retries",
            format!("expected 0 to {MAX_FENCE_RETRIES} extra attempts, got {retries}"),
        ));
    }
    Ok(FenceDeviceSpec {
        name: name.to_string(),
        agent,
        params,
        secret_params,
        timeout,
        retries,
    })
}

/// A cycle in `after`, as group names from its first group back to it.
fn find_after_cycle(groups: &[GroupSpec]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        i: usize,
        groups: &[GroupSpec],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::OnPath;
        path.push(i);
        for dep in &groups[i].after {
            let Some(&j) = index.get(dep.as_str()) else {
                continue;
            };
            match marks[j] {
                Mark::OnPath => {
                    let from = path.iter().position(|&k| k == j).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..].iter().map(|&k| groups[k].name.clone()).collect();
                    cycle.push(groups[j].name.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(j, groups, index, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        None
    }

    let index: HashMap<&str, usize> = groups.iter().enumerate().map(|(i, g)| (g.name.as_str(), i)).collect();
    let mut marks = vec![Mark::New; groups.len()];
    let mut path = Vec::new();
    (0..groups.len()).find_map(|i| {
        if marks[i] == Mark::New {
            visit(i, groups, &index, &mut marks, &mut path)
        } else {
            None
        }
    })
}

// ---------------------------------------------------------------------------
// Diff.

/// Human-readable change list from `old` to `new`, for `tandem apply` to show
/// before it commits: removed groups first, then added and changed groups in
/// the new spec's order. Empty when the specs are equal (group order aside,
/// which carries no meaning).
///
/// Lines look like `+ group web (exclusive, 2 resources)`, `- group old`,
/// `~ group web: placement changed (prefer [site-a=100] -> [site-b=100])`,
/// `~ group web: + resource cache (exec)`, `~ group web: resource app: command
/// changed`. Fencing follows the groups: `- fence device old`, `+ fence device
/// pdu-a (fence_apc_snmp)`, `~ fence device pdu-a: param password changed`,
/// `+ fencing of site-a: levels [[pdu-a], [ipmi-a, pdu-b]]`, `~ fencing of
/// site-a: levels [[pdu-a]] -> [[ipmi-a]]`. Values that may hold secrets
/// (commands, arguments, environment and parameter values) are never shown,
/// only which ones changed.
pub fn diff(old: &Spec, new: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    for g in &old.groups {
        if new.group(&g.name).is_none() {
            out.push(format!("- group {}", g.name));
        }
    }
    for g in &new.groups {
        match old.group(&g.name) {
            None => {
                let n = g.resources.len();
                out.push(format!(
                    "+ group {} ({}, {n} resource{})",
                    g.name,
                    g.kind,
                    if n == 1 { "" } else { "s" }
                ));
            }
            Some(before) => diff_group(before, g, &mut out),
        }
    }
    diff_fencing(&old.fencing, &new.fencing, &mut out);
    for g in &new.groups {
        if let Some(before) = old.group(&g.name)
            && before.dns != g.dns
        {
            out.push(format!("~ group {}: dns records changed", g.name));
        }
    }
    if old.dns.zone != new.dns.zone {
        out.push(format!(
            "~ dns zone: {} -> {}",
            old.dns.zone.as_deref().unwrap_or("(default)"),
            new.dns.zone.as_deref().unwrap_or("(default)")
        ));
    }
    if old.dns.allow_transfer != new.dns.allow_transfer {
        out.push("~ dns allow_transfer changed".to_string());
    }
    if old.dns.push != new.dns.push {
        out.push(format!(
            "~ dns push targets: {} -> {}",
            old.dns.push.len(),
            new.dns.push.len()
        ));
    }
    if old.dns.records != new.dns.records {
        out.push(format!(
            "~ dns static records: {} -> {}",
            old.dns.records.len(),
            new.dns.records.len()
        ));
    }
    out
}

fn diff_fencing(old: &FencingSpec, new: &FencingSpec, out: &mut Vec<String>) {
    for name in old.devices.keys() {
        if !new.devices.contains_key(name) {
            out.push(format!("- fence device {name}"));
        }
    }
    for (name, d) in &new.devices {
        let Some(before) = old.devices.get(name) else {
            out.push(format!("+ fence device {name} ({})", d.agent));
            continue;
        };
        let p = format!("~ fence device {name}: ");
        match (&before.agent, &d.agent) {
            (a, b) if a == b => {}
            // Both exec: the command or its arguments (which may hold secrets).
            (FenceAgentSpec::Exec { .. }, FenceAgentSpec::Exec { .. }) => out.push(format!("{p}command changed")),
            (a, b) => out.push(format!("{p}agent {a} -> {b}")),
        }
        map_changes(&p, "param", &before.params, &d.params, out);
        if before.secret_params != d.secret_params {
            let names = |s: &BTreeSet<String>| list(&s.iter().cloned().collect::<Vec<_>>());
            out.push(format!(
                "{p}secret {} -> {}",
                names(&before.secret_params),
                names(&d.secret_params)
            ));
        }
        if before.timeout != d.timeout {
            out.push(format!("{p}timeout {} -> {}", dur(before.timeout), dur(d.timeout)));
        }
        if before.retries != d.retries {
            out.push(format!("{p}retries {} -> {}", before.retries, d.retries));
        }
    }

    let levels = |v: &[Vec<String>]| list(&v.iter().map(|level| list(level)).collect::<Vec<_>>());
    for node in old.levels.keys() {
        if !new.levels.contains_key(node) {
            out.push(format!("- fencing of {node}"));
        }
    }
    for (node, l) in &new.levels {
        match old.levels.get(node) {
            None => out.push(format!("+ fencing of {node}: levels {}", levels(l))),
            Some(before) if before != l => out.push(format!(
                "~ fencing of {node}: levels {} -> {}",
                levels(before),
                levels(l)
            )),
            Some(_) => {}
        }
    }
}

/// Names of map keys added, removed or changed, as `PREFIX WHAT NAME added`...
/// (never the values).
fn map_changes(p: &str, what: &str, a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, out: &mut Vec<String>) {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        match (a.get(key), b.get(key)) {
            (None, Some(_)) => out.push(format!("{p}{what} {key} added")),
            (Some(_), None) => out.push(format!("{p}{what} {key} removed")),
            (Some(x), Some(y)) if x != y => out.push(format!("{p}{what} {key} changed")),
            _ => {}
        }
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn diff_group(old: &GroupSpec, new: &GroupSpec, out: &mut Vec<String>) {
    let p = format!("~ group {}: ", new.name);
    if old.kind != new.kind {
        out.push(format!("{p}kind {} -> {}", old.kind, new.kind));
    }

    let (a, b) = (&old.placement, &new.placement);
    let mut placement = Vec::new();
    if a.prefer != b.prefer {
        let prefer = |v: &[(String, i64)]| list(&v.iter().map(|(n, s)| format!("{n}={s}")).collect::<Vec<_>>());
        placement.push(format!("prefer {} -> {}", prefer(&a.prefer), prefer(&b.prefer)));
    }
    if a.avoid != b.avoid {
        placement.push(format!("avoid {} -> {}", list(&a.avoid), list(&b.avoid)));
    }
    if a.anti_affinity != b.anti_affinity {
        placement.push(format!(
            "anti_affinity {} -> {}",
            list(&a.anti_affinity),
            list(&b.anti_affinity)
        ));
    }
    if a.fail_back != b.fail_back {
        placement.push(format!("fail_back {} -> {}", a.fail_back, b.fail_back));
    }
    if !placement.is_empty() {
        out.push(format!("{p}placement changed ({})", placement.join(", ")));
    }

    if old.migration_threshold != new.migration_threshold {
        out.push(format!(
            "{p}migration_threshold {} -> {}",
            old.migration_threshold, new.migration_threshold
        ));
    }
    if old.failure_timeout != new.failure_timeout {
        out.push(format!(
            "{p}failure_timeout {} -> {}",
            dur(old.failure_timeout),
            dur(new.failure_timeout)
        ));
    }
    if old.after != new.after {
        out.push(format!("{p}after {} -> {}", list(&old.after), list(&new.after)));
    }
    if old.max_lag != new.max_lag {
        let lag = |m: &Option<MaxLag>| m.map_or("none".to_string(), |m| m.to_string());
        out.push(format!("{p}max_lag {} -> {}", lag(&old.max_lag), lag(&new.max_lag)));
    }
    if old.hooks != new.hooks {
        out.push(format!("{p}hooks changed"));
    }

    let find = |g: &'_ GroupSpec, name: &str| g.resources.iter().find(|r| r.name == name).cloned();
    for r in &old.resources {
        if find(new, &r.name).is_none() {
            out.push(format!("{p}- resource {}", r.name));
        }
    }
    for r in &new.resources {
        match find(old, &r.name) {
            None => out.push(format!("{p}+ resource {} ({})", r.name, r.agent)),
            Some(before) => diff_resource(&format!("{p}resource {}: ", r.name), &before, r, out),
        }
    }
    // Start order of the resources both versions have.
    let kept = |from: &GroupSpec, other: &GroupSpec| -> Vec<String> {
        from.resources
            .iter()
            .filter(|r| other.resources.iter().any(|o| o.name == r.name))
            .map(|r| r.name.clone())
            .collect()
    };
    let (before, after) = (kept(old, new), kept(new, old));
    if before != after {
        out.push(format!("{p}resource order {} -> {}", list(&before), list(&after)));
    }
}

fn diff_resource(p: &str, old: &ResourceSpec, new: &ResourceSpec, out: &mut Vec<String>) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_string());

    match (&old.agent, &new.agent) {
        (
            AgentSpec::Process {
                command: c1,
                args: a1,
                env: e1,
                workdir: w1,
                user: u1,
            },
            AgentSpec::Process {
                command: c2,
                args: a2,
                env: e2,
                workdir: w2,
                user: u2,
            },
        ) => {
            if c1 != c2 {
                out.push(format!("{p}command changed"));
            }
            if a1 != a2 {
                out.push(format!("{p}args changed"));
            }
            map_changes(p, "env", e1, e2, out);
            if w1 != w2 {
                out.push(format!("{p}workdir {} -> {}", opt(w1), opt(w2)));
            }
            if u1 != u2 {
                out.push(format!("{p}user {} -> {}", opt(u1), opt(u2)));
            }
        }
        (
            AgentSpec::Commands {
                start: s1,
                stop: t1,
                monitor: m1,
            },
            AgentSpec::Commands {
                start: s2,
                stop: t2,
                monitor: m2,
            },
        ) => {
            for (what, x, y) in [("start", s1, s2), ("stop", t1, t2), ("monitor", m1, m2)] {
                if x != y {
                    out.push(format!("{p}{what} command changed"));
                }
            }
        }
        (
            AgentSpec::Ocf {
                provider: p1,
                agent: k1,
                params: q1,
            },
            AgentSpec::Ocf {
                provider: p2,
                agent: k2,
                params: q2,
            },
        ) => {
            if (p1, k1) != (p2, k2) {
                out.push(format!("{p}agent {} -> {}", old.agent, new.agent));
            }
            map_changes(p, "param", q1, q2, out);
        }
        (a, b) if a != b => out.push(format!("{p}agent {} -> {}", agent_label(a), agent_label(b))),
        _ => {}
    }

    let (a, b) = (&old.timeouts, &new.timeouts);
    for (what, x, y) in [
        ("start", a.start, b.start),
        ("stop", a.stop, b.stop),
        ("monitor", a.monitor, b.monitor),
    ] {
        if x != y {
            out.push(format!("{p}timeouts.{what} {} -> {}", dur(x), dur(y)));
        }
    }
    if old.monitor_interval != new.monitor_interval {
        out.push(format!(
            "{p}monitor_interval {} -> {}",
            dur(old.monitor_interval),
            dur(new.monitor_interval)
        ));
    }
}

/// The agent, telling the two `exec` forms apart.
fn agent_label(agent: &AgentSpec) -> String {
    match agent {
        AgentSpec::Process { .. } => "exec (command)".to_string(),
        AgentSpec::Commands { .. } => "exec (start/stop/monitor)".to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Redaction of the source text.

/// Just enough of a spec file to find where fence device parameters are
/// written (unknown keys ignored: the file was validated already, or is only
/// being shown).
#[derive(Deserialize, Default)]
struct SourceSpans {
    #[serde(default)]
    fencing: SourceFencing,
}

#[derive(Deserialize, Default)]
struct SourceFencing {
    #[serde(default)]
    devices: BTreeMap<String, SourceDevice>,
}

#[derive(Deserialize, Default)]
struct SourceDevice {
    #[serde(default)]
    params: BTreeMap<String, toml::Spanned<toml::Value>>,
}

/// The spec's source text (as `tandem spec show` prints it) with every
/// secret fence parameter value replaced by `"<redacted>"`.
///
/// Two passes in one: the value of each secret parameter, wherever the file
/// writes it (inline table, `[fencing.devices.X.params]` table, dotted key;
/// any TOML string or scalar form), is replaced whole by the TOML string
/// `"<redacted>"`; and any other occurrence of a secret value (in a comment,
/// in an exec command's argument...) by `<redacted>`. Secrets are those of
/// `spec` (its devices' secret parameters) and, so that a source that does
/// not match `spec` leaks nothing either, every parameter of the source whose
/// name [`is_secret_param_name`] or is secret in `spec`'s device of that name.
/// A source that is not TOML gets the second pass only.
pub fn redact_source(text: &str, spec: &Spec) -> String {
    let source: SourceSpans = toml::from_str(text).unwrap_or_default();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    for d in spec.fencing.devices.values() {
        secrets.extend(d.secret_values().into_iter().map(str::to_string));
    }
    for (name, d) in &source.fencing.devices {
        let device = spec.fencing.devices.get(name);
        for (key, value) in &d.params {
            if !(is_secret_param_name(key) || device.is_some_and(|dev| dev.is_secret(key))) {
                continue;
            }
            spans.push(value.span());
            let shown = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            secrets.push(shown);
        }
    }
    spans.sort_by_key(|r| r.start);
    // As a TOML basic string would write them, too ("a\"b" for a"b).
    let escaped: Vec<String> = secrets
        .iter()
        .map(|s| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\t', "\\t"))
        .collect();
    secrets.extend(escaped);
    let mut secrets: Vec<&str> = secrets.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    secrets.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    secrets.dedup();

    let mut out = String::with_capacity(text.len());
    let mut spans = spans.into_iter().peekable();
    let mut i = 0;
    while i < text.len() {
        // Spans that start behind us overlap one already replaced.
        while spans.peek().is_some_and(|r| r.start < i) {
            spans.next();
        }
        let rest = &text[i..];
        if let Some(span) = spans.next_if(|r| r.start == i && r.end <= text.len() && text.is_char_boundary(r.end)) {
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
            i = span.end.max(i + 1);
        } else if let Some(secret) = secrets.iter().find(|s| rest.starts_with(**s)) {
            out.push_str(REDACTED);
            i += secret.len();
        } else if let Some(c) = rest.chars().next() {
            out.push(c);
            i += c.len_utf8();
        } else {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<NodeInfo> {
        let node = |name: &str, role| NodeInfo {
            name: name.to_string(),
            address: format!("{name}:7400"),
            role,
        };
        vec![
            node("site-a", NodeRole::Member),
            node("site-b", NodeRole::Member),
            node("witness", NodeRole::Witness),
        ]
    }

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, "spec.toml", &nodes())
    }

    fn refused(text: &str) -> SpecError {
        match parse(text) {
            Ok(spec) => panic!("accepted: {spec:?}"),
            Err(e) => e,
        }
    }

    /// Asserts where the error points and that its message contains `expected`.
    #[track_caller]
    fn assert_refused(text: &str, group: Option<&str>, resource: Option<&str>, field: &str, expected: &str) {
        let e = refused(text);
        assert_eq!(e.group.as_deref(), group, "{e}");
        assert_eq!(e.resource.as_deref(), resource, "{e}");
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(expected), "{e}");
    }

    /// One group `web` with one supervised process, plus `group_keys` and
    /// `resource_keys` (TOML lines) added to the group and the resource.
    fn web(group_keys: &str, resource_keys: &str) -> String {
        format!(
            "[[groups]]\nname = \"web\"\n{group_keys}\n\
             [[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/app\"\n{resource_keys}\n"
        )
    }

    /// One group `web` with one resource made of `resource` (TOML lines).
    fn web_resource(resource: &str) -> String {
        format!("[[groups]]\nname = \"web\"\n[[groups.resources]]\nname = \"app\"\n{resource}\n")
    }

    const EXAMPLE: &str = include_str!("../../../../deploy/examples/spec.toml");

    #[test]
    fn the_shipped_example_parses() {
        let spec = Spec::parse(EXAMPLE, "spec.toml", &nodes()).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web", "batch", "node-exporter"]);

        let web = spec.group("web").unwrap();
        assert_eq!(web.kind, GroupKind::Exclusive);
        assert_eq!(
            web.placement.prefer,
            [("site-a".to_string(), 100), ("site-b".to_string(), 50)]
        );
        assert_eq!(web.resources.len(), 2);
        let vip = &web.resources[0];
        assert_eq!(vip.name, "vip");
        assert_eq!(vip.monitor_interval, Duration::from_secs(5));
        let AgentSpec::Ocf {
            provider,
            agent,
            params,
        } = &vip.agent
        else {
            panic!("{:?}", vip.agent)
        };
        assert_eq!((provider.as_str(), agent.as_str()), ("heartbeat", "IPaddr2"));
        assert_eq!(params["ip"], "198.18.0.10");
        assert_eq!(vip.agent.to_string(), "ocf:heartbeat:IPaddr2");
        let AgentSpec::Process { command, env, user, .. } = &web.resources[1].agent else {
            panic!("{:?}", web.resources[1].agent)
        };
        assert_eq!(command, "/usr/bin/python3");
        assert_eq!(env["MODE"], "prod");
        assert_eq!(user.as_deref(), Some("www-data"));

        let batch = spec.group("batch").unwrap();
        assert!(matches!(batch.resources[0].agent, AgentSpec::Commands { .. }));
        assert_eq!(batch.after, ["web"]);
        assert_eq!(batch.placement.anti_affinity, ["web"]);
        assert_eq!(batch.failure_timeout, Duration::ZERO);
        assert_eq!(batch.migration_threshold, 1);
        assert_eq!(batch.resources[0].timeouts.start, Duration::from_secs(60));
        assert_eq!(batch.resources[0].timeouts.monitor, Duration::from_secs(10));

        let clone = spec.group("node-exporter").unwrap();
        assert_eq!(clone.kind, GroupKind::Clone);
        assert_eq!(
            clone.resources[0].agent,
            AgentSpec::Systemd {
                unit: "prometheus-node-exporter.service".into()
            }
        );
        assert!(spec.group("nope").is_none());

        let f = &spec.fencing;
        assert_eq!(
            f.devices.keys().map(String::as_str).collect::<Vec<_>>(),
            ["hypervisor", "ipmi-a", "ipmi-b", "pdu-a"]
        );
        let pdu = &f.devices["pdu-a"];
        assert_eq!(
            pdu.agent,
            FenceAgentSpec::Agent {
                path: "fence_apc_snmp".into()
            }
        );
        assert_eq!(pdu.params["plug"], "1");
        assert_eq!(pdu.secret_params, BTreeSet::from(["community".to_string()]));
        assert_eq!((pdu.timeout, pdu.retries), (Duration::from_secs(20), 1));
        let ipmi = &f.devices["ipmi-b"];
        assert_eq!(ipmi.params["lanplus"], "true");
        assert_eq!(ipmi.secret_params, BTreeSet::from(["password".to_string()]));
        assert_eq!(ipmi.timeout, Duration::from_secs(30));
        let hv = &f.devices["hypervisor"];
        assert_eq!(
            hv.agent,
            FenceAgentSpec::Exec {
                command: "/usr/local/bin/kill-node".into(),
                args: vec!["--site".into(), "b".into()]
            }
        );
        assert_eq!(hv.secret_params, BTreeSet::from(["api_token".to_string()]));
        assert_eq!(hv.retries, 0);
        assert_eq!(
            f.levels_for("site-a"),
            [vec!["ipmi-a".to_string()], vec!["pdu-a".to_string()]]
        );
        assert!(f.has_devices("site-b"));
        assert!(!f.has_devices("witness"));
        assert!(f.levels_for("nope").is_empty());
    }

    #[test]
    fn empty_file_is_the_empty_spec() {
        assert_eq!(parse("").unwrap(), Spec::default());
        assert_eq!(parse("# nothing yet\n\n").unwrap(), Spec::default());
        assert_eq!(parse("groups = []").unwrap(), Spec::default());
        // And the empty spec is valid with any member list, even none.
        assert_eq!(Spec::parse("", "spec.toml", &[]).unwrap(), Spec::default());
    }

    #[test]
    fn defaults_are_applied() {
        let spec = parse(&web("", "")).unwrap();
        let g = &spec.groups[0];
        assert_eq!(g.kind, GroupKind::Exclusive);
        assert_eq!(g.placement, Placement::default());
        assert_eq!(g.migration_threshold, DEFAULT_MIGRATION_THRESHOLD);
        assert_eq!(g.failure_timeout, Duration::from_secs(600));
        assert!(g.after.is_empty());
        let r = &g.resources[0];
        assert_eq!(r.timeouts, ActionTimeouts::default());
        assert_eq!(r.monitor_interval, Duration::from_secs(10));
        assert_eq!(
            r.agent,
            AgentSpec::Process {
                command: "/bin/app".into(),
                args: vec![],
                env: BTreeMap::new(),
                workdir: None,
                user: None,
            }
        );
    }

    #[test]
    fn display_names_file_group_resource_and_field() {
        let e = refused(&web("", "timeouts = { start = \"soon\" }"));
        assert_eq!(
            e.to_string(),
            "spec.toml: group \"web\": resource \"app\": field `timeouts.start`: \
             expected a duration such as \"20s\", got \"soon\""
        );
        let e = refused(&web("migration_threshold = 0", ""));
        assert_eq!(
            e.to_string(),
            "spec.toml: group \"web\": field `migration_threshold`: expected a number of failures of 1 or more, got 0"
        );
    }

    #[test]
    fn toml_errors_carry_tomls_message_with_the_line() {
        let e = refused(&web("", "comand = \"/bin/app\""));
        assert_eq!((e.group.as_deref(), e.field.as_str()), (None, ""));
        let msg = e.to_string();
        assert!(msg.starts_with("spec.toml: "), "{msg}");
        assert!(msg.contains("unknown field `comand`"), "{msg}");
        assert!(msg.contains("line 8"), "{msg}");

        let msg = refused("[[groups]\nname = \"web\"").to_string();
        assert!(msg.starts_with("spec.toml: "), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");

        let msg = refused(&web("kind = \"clon\"", "")).to_string();
        assert!(msg.contains("unknown variant `clon`"), "{msg}");
        let msg = refused(&web("priority = 1", "")).to_string();
        assert!(msg.contains("unknown field `priority`"), "{msg}");
        let msg = refused(&web("", "timeouts = { start = \"1s\", restart = \"1s\" }")).to_string();
        assert!(msg.contains("unknown field `restart`"), "{msg}");
        let msg = refused("[[groups]]\n[[groups.resources]]\nname = \"a\"\nagent = \"exec\"\n").to_string();
        assert!(msg.contains("missing field `name`"), "{msg}");
    }

    #[test]
    fn names_must_be_dns_labels() {
        assert_refused(
            &web("", "").replace("name = \"web\"", "name = \"Web\""),
            Some("Web"),
            None,
            "name",
            "expected 1 to 63 lowercase letters",
        );
        assert_refused(
            &web("", "").replace("name = \"app\"", "name = \"my_app\""),
            Some("web"),
            Some("my_app"),
            "name",
            "got \"my_app\"",
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let twice = format!("{}{}", web("", ""), web("", ""));
        assert_refused(
            &twice,
            Some("web"),
            None,
            "name",
            "expected unique group names, \"web\" is listed twice",
        );
        let text = web("", "") + "[[groups.resources]]\nname = \"app\"\nagent = \"systemd:app.service\"\n";
        assert_refused(
            &text,
            Some("web"),
            Some("app"),
            "name",
            "expected unique resource names within a group, \"app\" is listed twice",
        );
    }

    #[test]
    fn a_group_needs_resources() {
        assert_refused(
            "[[groups]]\nname = \"web\"\n",
            Some("web"),
            None,
            "resources",
            "expected at least one [[groups.resources]] entry",
        );
    }

    #[test]
    fn unknown_agents_are_refused() {
        for agent in ["docker", "exec:app", "ocf", "lsb:legacy"] {
            assert_refused(
                &web_resource(&format!("agent = \"{agent}\"")),
                Some("web"),
                Some("app"),
                "agent",
                &format!("expected one of \"exec\", \"ocf:PROVIDER:TYPE\", \"systemd:UNIT\", got \"{agent}\""),
            );
        }
        for agent in [
            "ocf:heartbeat",
            "ocf::IPaddr2",
            "ocf:a:b:c",
            "ocf:../x:y",
            "ocf:heartbeat:..",
        ] {
            assert_refused(
                &web_resource(&format!("agent = \"{agent}\"")),
                Some("web"),
                Some("app"),
                "agent",
                "expected \"ocf:PROVIDER:TYPE\"",
            );
        }
        for agent in ["systemd:", "systemd:--now", "systemd:a b.service", "systemd:../x"] {
            assert_refused(
                &web_resource(&format!("agent = \"{agent}\"")),
                Some("web"),
                Some("app"),
                "agent",
                "expected \"systemd:UNIT\"",
            );
        }
        let spec = parse(&web_resource("agent = \"systemd:getty@tty1.service\"")).unwrap();
        assert_eq!(
            spec.groups[0].resources[0].agent.to_string(),
            "systemd:getty@tty1.service"
        );
    }

    #[test]
    fn exec_needs_exactly_one_form() {
        assert_refused(
            &web("", "start = \"x\"\nstop = \"y\"\nmonitor = \"z\""),
            Some("web"),
            Some("app"),
            "command",
            "expected either `command` (a supervised process) or `start`, `stop` and `monitor` (three commands), \
             not both",
        );
        assert_refused(
            &web_resource("agent = \"exec\""),
            Some("web"),
            Some("app"),
            "command",
            "found neither",
        );
        assert_refused(
            &web_resource("agent = \"exec\"\nstart = \"a\"\nmonitor = \"c\""),
            Some("web"),
            Some("app"),
            "stop",
            "expected `start`, `stop` and `monitor` together, `stop` is missing",
        );
        assert_refused(
            &web_resource("agent = \"exec\"\nstart = \"a\"\nstop = \"b\"\nmonitor = \"  \""),
            Some("web"),
            Some("app"),
            "monitor",
            "expected a shell command, got an empty string",
        );
        assert_refused(
            &web_resource("agent = \"exec\"\ncommand = \"\""),
            Some("web"),
            Some("app"),
            "command",
            "expected a program to run",
        );
        let spec = parse(&web_resource(
            "agent = \"exec\"\nstart = \"a\"\nstop = \"b\"\nmonitor = \"c\"",
        ))
        .unwrap();
        assert_eq!(
            spec.groups[0].resources[0].agent,
            AgentSpec::Commands {
                start: "a".into(),
                stop: "b".into(),
                monitor: "c".into()
            }
        );
    }

    #[test]
    fn keys_of_another_agent_class_are_refused() {
        assert_refused(
            &web("", "params = { ip = \"10.0.0.1\" }"),
            Some("web"),
            Some("app"),
            "params",
            "not a key of exec resources (`params` is for ocf resources)",
        );
        assert_refused(
            &web_resource("agent = \"ocf:heartbeat:IPaddr2\"\ncommand = \"/bin/ip\""),
            Some("web"),
            Some("app"),
            "command",
            "not a key of ocf resources (`command` is for exec resources); ocf takes `params`",
        );
        assert_refused(
            &web_resource("agent = \"systemd:app.service\"\nenv = { A = \"1\" }"),
            Some("web"),
            Some("app"),
            "env",
            "not a key of systemd resources",
        );
        assert_refused(
            &web_resource("agent = \"systemd:app.service\"\nparams = { a = \"1\" }"),
            Some("web"),
            Some("app"),
            "params",
            "not a key of systemd resources (`params` is for ocf resources)",
        );
        assert_refused(
            &web_resource("agent = \"exec\"\nstart = \"a\"\nstop = \"b\"\nmonitor = \"c\"\nenv = { A = \"1\" }"),
            Some("web"),
            Some("app"),
            "env",
            "`env` applies only to an exec resource with `command`",
        );
    }

    #[test]
    fn process_details_are_checked() {
        assert_refused(
            &web("", "workdir = \"srv/app\""),
            Some("web"),
            Some("app"),
            "workdir",
            "expected an absolute directory path, got \"srv/app\"",
        );
        assert_refused(
            &web("", "user = \"www data\""),
            Some("web"),
            Some("app"),
            "user",
            "expected a user name or a numeric uid",
        );
        assert_refused(
            &web("", "env = { \"1X\" = \"a\" }"),
            Some("web"),
            Some("app"),
            "env.1X",
            "expected a variable name",
        );
        assert_refused(
            &web("", "env = { TANDEM_EPOCH = \"7\" }"),
            Some("web"),
            Some("app"),
            "env.TANDEM_EPOCH",
            "reserved",
        );
        assert_refused(
            &web("", "env = { A = [1] }"),
            Some("web"),
            Some("app"),
            "env.A",
            "expected a string, an integer or a boolean, got an array",
        );
        assert_refused(
            &web("", "args = [\"a\\u0000b\"]"),
            Some("web"),
            Some("app"),
            "args[0]",
            "NUL",
        );
        let spec = parse(&web("", "env = { PORT = 8080, DEBUG = false }")).unwrap();
        let AgentSpec::Process { env, .. } = &spec.groups[0].resources[0].agent else {
            panic!()
        };
        assert_eq!((env["PORT"].as_str(), env["DEBUG"].as_str()), ("8080", "false"));
    }

    #[test]
    fn ocf_params_are_checked_and_scalars_accepted() {
        let vip = |params: &str| web_resource(&format!("agent = \"ocf:heartbeat:IPaddr2\"\nparams = {params}"));
        let spec = parse(&vip("{ ip = \"10.0.0.1\", cidr_netmask = 24, lvs_support = true }")).unwrap();
        let AgentSpec::Ocf { params, .. } = &spec.groups[0].resources[0].agent else {
            panic!()
        };
        assert_eq!(params["cidr_netmask"], "24");
        assert_eq!(params["lvs_support"], "true");
        assert_refused(
            &vip("{ \"ip-addr\" = \"10.0.0.1\" }"),
            Some("web"),
            Some("app"),
            "params.ip-addr",
            "expected a parameter name of letters, digits and '_'",
        );
        assert_refused(
            &vip("{ ratio = 1.5 }"),
            Some("web"),
            Some("app"),
            "params.ratio",
            "got a float",
        );
        // An ocf resource without params is fine.
        assert!(parse(&web_resource("agent = \"ocf:heartbeat:Dummy\"")).is_ok());
    }

    #[test]
    fn bad_durations_are_refused() {
        assert_refused(
            &web("", "monitor_interval = \"often\""),
            Some("web"),
            Some("app"),
            "monitor_interval",
            "expected a duration such as \"10s\", got \"often\"",
        );
        assert_refused(
            &web("failure_timeout = \"later\"", ""),
            Some("web"),
            None,
            "failure_timeout",
            "expected a duration such as \"10m\", got \"later\"",
        );
        for key in ["start", "stop", "monitor"] {
            assert_refused(
                &web("", &format!("timeouts = {{ {key} = \"0s\" }}")),
                Some("web"),
                Some("app"),
                &format!("timeouts.{key}"),
                "expected a duration greater than zero, got \"0s\"",
            );
        }
        assert_refused(
            &web("", "monitor_interval = \"0ms\""),
            Some("web"),
            Some("app"),
            "monitor_interval",
            "expected a duration greater than zero",
        );
        assert_refused(
            &web("", "monitor_interval = \"500us\""),
            Some("web"),
            Some("app"),
            "monitor_interval",
            "expected a duration of at least 1ms",
        );
        // Zero is allowed where it means "never".
        let spec = parse(&web("failure_timeout = \"0s\"", "timeouts = { stop = \"1m 30s\" }")).unwrap();
        assert_eq!(spec.groups[0].failure_timeout, Duration::ZERO);
        assert_eq!(spec.groups[0].resources[0].timeouts.stop, Duration::from_secs(90));
        assert_eq!(spec.groups[0].resources[0].timeouts.start, Duration::from_secs(20));
    }

    #[test]
    fn migration_threshold_zero_is_refused() {
        assert_refused(
            &web("migration_threshold = 0", ""),
            Some("web"),
            None,
            "migration_threshold",
            "expected a number of failures of 1 or more, got 0",
        );
        assert_eq!(
            parse(&web("migration_threshold = 1", "")).unwrap().groups[0].migration_threshold,
            1
        );
    }

    #[test]
    fn placement_nodes_are_checked() {
        assert_refused(
            &web("prefer = [{ node = \"site-c\", score = 10 }]", ""),
            Some("web"),
            None,
            "prefer[0].node",
            "expected a node of the cluster (known: site-a, site-b, witness), got \"site-c\"",
        );
        assert_refused(
            &web("avoid = [\"site-a\", \"site-z\"]", ""),
            Some("web"),
            None,
            "avoid[1]",
            "expected a node of the cluster (known: site-a, site-b, witness), got \"site-z\"",
        );
        assert_refused(
            &web("prefer = [{ node = \"witness\", score = 10 }]", ""),
            Some("web"),
            None,
            "prefer[0].node",
            "expected a member node (known: site-a, site-b), got the witness \"witness\": witnesses never host",
        );
        assert_refused(
            &web("prefer = [{ node = \"site-a\", score = 10 }]\navoid = [\"site-a\"]", ""),
            Some("web"),
            None,
            "avoid[0]",
            "expected a node in prefer or in avoid, not both; \"site-a\" is in both",
        );
        assert_refused(
            &web(
                "prefer = [{ node = \"site-a\", score = 10 }, { node = \"site-a\", score = 20 }]",
                "",
            ),
            Some("web"),
            None,
            "prefer[1].node",
            "expected each node at most once in prefer, \"site-a\" is listed twice",
        );
        assert_refused(
            &web("avoid = [\"site-b\", \"site-b\"]", ""),
            Some("web"),
            None,
            "avoid[1]",
            "listed twice",
        );
        assert_refused(
            &web("prefer = [{ node = \"site-a\", score = -5 }]", ""),
            Some("web"),
            None,
            "prefer[0].score",
            "expected a score from 0 to 1000000, got -5",
        );
        // Avoiding the witness is pointless but harmless.
        assert!(parse(&web("avoid = [\"witness\"]", "")).is_ok());
        // With no known nodes, the message says so.
        let e = Spec::parse(&web("avoid = [\"site-a\"]", ""), "spec.toml", &[]).unwrap_err();
        assert!(e.message.contains("(known: none)"), "{e}");
    }

    #[test]
    fn group_references_are_checked() {
        let two = |web_keys: &str| format!("{}{}", web(web_keys, ""), web("", "").replace("\"web\"", "\"db\""));
        assert!(parse(&two("after = [\"db\"]\nanti_affinity = [\"db\"]")).is_ok());
        for key in ["after", "anti_affinity"] {
            assert_refused(
                &two(&format!("{key} = [\"dbx\"]")),
                Some("web"),
                None,
                &format!("{key}[0]"),
                "expected the name of another group of this spec (known: db), got \"dbx\"",
            );
            assert_refused(
                &two(&format!("{key} = [\"db\", \"web\"]")),
                Some("web"),
                None,
                &format!("{key}[1]"),
                "expected the name of another group, got the group's own name \"web\"",
            );
            assert_refused(
                &two(&format!("{key} = [\"db\", \"db\"]")),
                Some("web"),
                None,
                &format!("{key}[1]"),
                "listed twice",
            );
        }
    }

    #[test]
    fn a_cycle_in_after_is_refused_with_its_path() {
        let group = |name: &str, after: &str| web(&format!("after = [{after}]"), "").replace("\"web\"", name);
        let text = [
            group("\"a\"", ""),
            group("\"b\"", "\"c\""),
            group("\"c\"", "\"d\""),
            group("\"d\"", "\"a\", \"b\""),
        ]
        .concat();
        let e = refused(&text);
        assert_eq!((e.group.as_deref(), e.field.as_str()), (Some("b"), "after"));
        assert!(
            e.message
                .contains("expected no cycle in `after`, found b -> c -> d -> b"),
            "{e}"
        );
        let text = [group("\"a\"", "\"b\""), group("\"b\"", "\"a\"")].concat();
        assert!(refused(&text).to_string().contains("found a -> b -> a"));
        // A diamond is no cycle.
        let text = [
            group("\"a\"", ""),
            group("\"b\"", "\"a\""),
            group("\"c\"", "\"a\""),
            group("\"d\"", "\"b\", \"c\""),
        ]
        .concat();
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn diff_of_equal_specs_is_empty() {
        let spec = parse(EXAMPLE).unwrap();
        assert!(diff(&spec, &spec).is_empty());
        assert!(diff(&Spec::default(), &Spec::default()).is_empty());
        // Group order carries no meaning.
        let mut reversed = spec.clone();
        reversed.groups.reverse();
        assert!(diff(&spec, &reversed).is_empty());
    }

    #[test]
    fn diff_lists_added_and_removed_groups() {
        let mut spec = parse(EXAMPLE).unwrap();
        spec.fencing = FencingSpec::default();
        spec.dns = DnsSpec::default();
        assert_eq!(
            diff(&Spec::default(), &spec),
            [
                "+ group web (exclusive, 2 resources)",
                "+ group batch (exclusive, 1 resource)",
                "+ group node-exporter (clone, 1 resource)",
            ]
        );
        assert_eq!(
            diff(&spec, &Spec::default()),
            ["- group web", "- group batch", "- group node-exporter"]
        );
    }

    #[test]
    fn diff_lists_group_changes() {
        let old = parse(EXAMPLE).unwrap();
        let new_text = EXAMPLE
            .replace(
                "prefer = [{ node = \"site-a\", score = 100 }, { node = \"site-b\", score = 50 }]",
                "prefer = [{ node = \"site-b\", score = 100 }]",
            )
            .replace("fail_back = false", "fail_back = true")
            .replace("migration_threshold = 3", "migration_threshold = 5")
            .replace("kind = \"clone\"", "kind = \"exclusive\"")
            .replace("failure_timeout = \"0s\"", "failure_timeout = \"1h\"")
            .replace("after = [\"web\"]", "after = []");
        let new = parse(&new_text).unwrap();
        assert_eq!(
            diff(&old, &new),
            [
                "~ group web: placement changed (prefer [site-a=100, site-b=50] -> [site-b=100], \
                 fail_back false -> true)",
                "~ group web: migration_threshold 3 -> 5",
                "~ group batch: failure_timeout 0s -> 1h",
                "~ group batch: after [web] -> []",
                "~ group node-exporter: kind clone -> exclusive",
            ]
        );
    }

    #[test]
    fn diff_lists_resource_changes() {
        let old = parse(EXAMPLE).unwrap();
        let mut new = old.clone();
        {
            let web = &mut new.groups[0];
            // vip: a parameter changed, one added; a timeout changed.
            let AgentSpec::Ocf { params, .. } = &mut web.resources[0].agent else {
                panic!()
            };
            params.insert("ip".into(), "198.18.0.11".into());
            params.insert("nic".into(), "eth0".into());
            web.resources[0].timeouts.start = Duration::from_secs(30);
            // app: command and an env value changed, moved before vip.
            let AgentSpec::Process { command, env, .. } = &mut web.resources[1].agent else {
                panic!()
            };
            *command = "/usr/bin/python3.12".into();
            env.insert("MODE".into(), "staging".into());
            web.resources.swap(0, 1);
            web.resources.push(ResourceSpec {
                name: "cache".into(),
                agent: AgentSpec::Systemd {
                    unit: "redis.service".into(),
                },
                timeouts: ActionTimeouts::default(),
                monitor_interval: DEFAULT_MONITOR_INTERVAL,
            });
            // batch: one of the three commands changed.
            let AgentSpec::Commands { monitor, .. } = &mut new.groups[1].resources[0].agent else {
                panic!()
            };
            *monitor = "true".into();
            // node-exporter: the resource replaced by another of another class.
            let exporter = &mut new.groups[2].resources[0];
            exporter.agent = AgentSpec::Process {
                command: "/usr/bin/node_exporter".into(),
                args: vec![],
                env: BTreeMap::new(),
                workdir: None,
                user: None,
            };
            exporter.monitor_interval = Duration::from_secs(10);
        }
        assert_eq!(
            diff(&old, &new),
            [
                "~ group web: resource app: command changed",
                "~ group web: resource app: env MODE changed",
                "~ group web: resource vip: param ip changed",
                "~ group web: resource vip: param nic added",
                "~ group web: resource vip: timeouts.start 20s -> 30s",
                "~ group web: + resource cache (systemd:redis.service)",
                "~ group web: resource order [vip, app] -> [app, vip]",
                "~ group batch: resource legacy: monitor command changed",
                "~ group node-exporter: resource exporter: agent systemd:prometheus-node-exporter.service -> \
                 exec (command)",
                "~ group node-exporter: resource exporter: monitor_interval 30s -> 10s",
            ]
        );
        let mut fewer = old.clone();
        fewer.groups[0].resources.remove(0);
        assert_eq!(diff(&old, &fewer), ["~ group web: - resource vip"]);
        // Secrets stay out of the change list.
        assert!(diff(&old, &new).iter().all(|line| !line.contains("staging")));
    }

    // --- Fencing -----------------------------------------------------------

    /// `[fencing.devices.pdu]` with `device` (TOML lines) plus `rest`.
    fn fence(device: &str, rest: &str) -> String {
        format!("[fencing.devices.pdu]\n{device}\n{rest}\n")
    }

    /// A fence_dummy device `pdu` and site-a fenced by it, plus `device` lines.
    fn fence_dummy(device: &str) -> String {
        fence(
            &format!("agent = \"fence_dummy\"\n{device}"),
            "[fencing.nodes.site-a]\nlevels = [[\"pdu\"]]",
        )
    }

    #[track_caller]
    fn assert_fence_refused(text: &str, field: &str, expected: &str) {
        let e = refused(text);
        assert_eq!((e.group.as_deref(), e.resource.as_deref()), (None, None), "{e}");
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(expected), "{e}");
    }

    #[test]
    fn fencing_parses_with_defaults() {
        let spec = parse(&fence_dummy(
            "params = { type = \"file\", status_file = \"/run/pdu\", delay = 0 }",
        ))
        .unwrap();
        let d = &spec.fencing.devices["pdu"];
        assert_eq!(d.name, "pdu");
        assert_eq!(
            d.agent,
            FenceAgentSpec::Agent {
                path: "fence_dummy".into()
            }
        );
        assert_eq!(d.params["status_file"], "/run/pdu");
        assert_eq!(d.params["delay"], "0");
        assert!(d.secret_params.is_empty());
        assert_eq!(d.timeout, DEFAULT_FENCE_TIMEOUT);
        assert_eq!(d.retries, DEFAULT_FENCE_RETRIES);
        assert_eq!(spec.fencing.levels["site-a"], [vec!["pdu".to_string()]]);
        // A spec without fencing has none; so does a file with an empty section.
        assert_eq!(parse(&web("", "")).unwrap().fencing, FencingSpec::default());
        assert_eq!(parse("[fencing]\n").unwrap(), Spec::default());
        // Absolute paths and the other forms.
        let spec = parse(&fence(
            "agent = \"/opt/fence/fence_custom\"\ntimeout = \"1m\"\nretries = 0\n\
             [fencing.devices.pdu.params]\nlogin = \"admin\"\nPassword = \"x\"\nsnmp_auth_token = \"y\"\n\
             plug = 3\nnodename = \"host-a\"",
            "",
        ))
        .unwrap();
        let d = &spec.fencing.devices["pdu"];
        assert_eq!(d.agent.to_string(), "/opt/fence/fence_custom");
        assert_eq!((d.timeout, d.retries), (Duration::from_secs(60), 0));
        assert_eq!(
            d.secret_params,
            BTreeSet::from(["Password".to_string(), "snmp_auth_token".to_string()])
        );
        // Devices may exist without being used (yet).
        assert!(spec.fencing.levels.is_empty());
    }

    #[test]
    fn fencing_levels_keep_their_order() {
        let text = "[fencing.devices.a]\nagent = \"fence_dummy\"\n[fencing.devices.b]\nagent = \"fence_dummy\"\n\
                    [fencing.devices.c]\nagent = \"fence_dummy\"\n\
                    [fencing.nodes.site-b]\nlevels = [[\"c\"], [\"b\", \"a\"], [\"c\"]]\n";
        let spec = parse(text).unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            spec.fencing.levels_for("site-b"),
            [s(&["c"]), s(&["b", "a"]), s(&["c"])]
        );
        assert!(!spec.fencing.has_devices("site-a"));
    }

    #[test]
    fn fence_devices_are_checked() {
        assert_fence_refused(
            &fence("agent = \"fence_dummy\"", "").replace("devices.pdu", "devices.PDU"),
            "fencing.devices.PDU",
            "expected 1 to 63 lowercase letters",
        );
        assert_fence_refused(
            &fence("agent = \"fence_dummy\"", "").replace("devices.pdu", "devices.\"pdu a\""),
            "fencing.devices.\"pdu a\"",
            "got \"pdu a\"",
        );
        for agent in [
            "dummy",
            "fence_",
            "fence_a b",
            "bin/fence_x",
            "/",
            "/usr/sbin/",
            "stonith:x",
        ] {
            assert_fence_refused(
                &fence(&format!("agent = \"{agent}\""), ""),
                "fencing.devices.pdu.agent",
                &format!(
                    "expected a fence agent's name (\"fence_\" then letters, digits, '_', '-' or '.', such as \
                          \"fence_ipmilan\"), an absolute path to one, or \"exec\" (with `command`), got \"{agent}\""
                ),
            );
        }
        assert_fence_refused(
            &fence("agent = \"exec\"", ""),
            "fencing.devices.pdu.command",
            "expected `command` = [PROGRAM, ARGUMENTS...] with agent = \"exec\", found none",
        );
        assert_fence_refused(
            &fence("agent = \"exec\"\ncommand = []", ""),
            "fencing.devices.pdu.command",
            "expected a program and its arguments, got an empty list",
        );
        assert_fence_refused(
            &fence("agent = \"exec\"\ncommand = [\" \"]", ""),
            "fencing.devices.pdu.command[0]",
            "expected a program to run",
        );
        assert_fence_refused(
            &fence("agent = \"exec\"\ncommand = [\"bin/kill\"]", ""),
            "fencing.devices.pdu.command[0]",
            "expected an absolute path or a program name found on PATH, got \"bin/kill\"",
        );
        assert_fence_refused(
            &fence("agent = \"exec\"\ncommand = [\"/bin/kill\", \"a\\u0000\"]", ""),
            "fencing.devices.pdu.command[1]",
            "NUL",
        );
        assert_fence_refused(
            &fence("agent = \"fence_dummy\"\ncommand = [\"/bin/true\"]", ""),
            "fencing.devices.pdu.command",
            "`command` applies only to agent = \"exec\"",
        );
        let spec = parse(&fence("agent = \"exec\"\ncommand = [\"kill-node\", \"-9\"]", "")).unwrap();
        assert_eq!(
            spec.fencing.devices["pdu"].agent,
            FenceAgentSpec::Exec {
                command: "kill-node".into(),
                args: vec!["-9".into()]
            }
        );
        assert_eq!(spec.fencing.devices["pdu"].agent.to_string(), "exec");
    }

    #[test]
    fn fence_params_are_checked() {
        assert_fence_refused(
            &fence_dummy("params = { action = \"reboot\" }"),
            "fencing.devices.pdu.params.action",
            "expected no `action` parameter: Tandem sets it",
        );
        for key in ["a=b", "a b", "", "ключ"] {
            assert_fence_refused(
                &fence_dummy(&format!("params = {{ \"{key}\" = \"1\" }}")),
                &format!("fencing.devices.pdu.params.{key}"),
                "expected a parameter name of letters, digits, '_' or '-'",
            );
        }
        assert_fence_refused(
            &fence_dummy("params = { \"a\\nb\" = \"1\" }"),
            "fencing.devices.pdu.params.a\nb",
            "expected a parameter name",
        );
        for value in ["\"q9z\\ny\"", "\"q9z\\r\"", "\"\"\"\nq9z 1\nline 2\"\"\""] {
            let e = refused(&fence_dummy(&format!(
                "params = {{ ip = \"1.2.3.4\", password = {value} }}"
            )));
            assert_eq!(e.field, "fencing.devices.pdu.params.password", "{e}");
            assert!(e.message.contains("expected a value on one line"), "{e}");
            // The message names the parameter, never its value.
            assert!(!e.to_string().contains("q9z"), "{e}");
        }
        assert_fence_refused(
            &fence_dummy("params = { ip = [1] }"),
            "fencing.devices.pdu.params.ip",
            "expected a string, an integer or a boolean, got an array",
        );
        assert_fence_refused(
            &fence_dummy("params = { ip = \"1\" }\nsecret = [\"ip\", \"pasword\"]"),
            "fencing.devices.pdu.secret[1]",
            "expected the name of a parameter of this device (known: ip), got \"pasword\"",
        );
        // nodename, port and plug are the device's business: allowed.
        let spec = parse(&fence_dummy("params = { nodename = \"vm-a\", port = \"3\", plug = 4 }")).unwrap();
        assert_eq!(spec.fencing.devices["pdu"].params.len(), 3);
    }

    #[test]
    fn fence_timeout_and_retries_are_checked() {
        assert_fence_refused(
            &fence_dummy("timeout = \"0s\""),
            "fencing.devices.pdu.timeout",
            "expected a duration greater than zero, got \"0s\"",
        );
        assert_fence_refused(
            &fence_dummy("timeout = \"soon\""),
            "fencing.devices.pdu.timeout",
            "expected a duration such as \"20s\", got \"soon\"",
        );
        assert_fence_refused(
            &fence_dummy("retries = 11"),
            "fencing.devices.pdu.retries",
            "expected 0 to 10 extra attempts, got 11",
        );
        let msg = refused(&fence_dummy("retries = -1")).to_string();
        assert!(msg.contains("retries"), "{msg}");
        let msg = refused(&fence_dummy("timout = \"1s\"")).to_string();
        assert!(msg.contains("unknown field `timout`"), "{msg}");
    }

    #[test]
    fn fence_nodes_are_checked() {
        let device = "[fencing.devices.pdu]\nagent = \"fence_dummy\"\n";
        let node = |name: &str, levels: &str| format!("{device}[fencing.nodes.{name}]\nlevels = {levels}\n");
        assert_fence_refused(
            &node("site-c", "[[\"pdu\"]]"),
            "fencing.nodes.site-c",
            "expected a member node of the cluster (known: site-a, site-b), got \"site-c\"",
        );
        assert_fence_refused(
            &node("witness", "[[\"pdu\"]]"),
            "fencing.nodes.witness",
            "expected a member node (known: site-a, site-b), got the witness \"witness\": witnesses host no groups",
        );
        assert_fence_refused(
            &node("site-a", "[]"),
            "fencing.nodes.site-a.levels",
            "expected at least one level",
        );
        assert_fence_refused(
            &node("site-a", "[[\"pdu\"], []]"),
            "fencing.nodes.site-a.levels[1]",
            "expected at least one device in a level, got []",
        );
        assert_fence_refused(
            &node("site-a", "[[\"pdu\"], [\"pdu\", \"ipmi\"]]"),
            "fencing.nodes.site-a.levels[1][1]",
            "expected a fence device of this spec (known: pdu), got \"ipmi\"",
        );
        assert_fence_refused(
            &node("site-a", "[[\"pdu\", \"pdu\"]]"),
            "fencing.nodes.site-a.levels[0][1]",
            "expected each device at most once in a level, \"pdu\" is listed twice",
        );
        let msg = refused(&format!("{device}[fencing.nodes.site-a]\n")).to_string();
        assert!(msg.contains("missing field `levels`"), "{msg}");
        let msg = refused("[fencing.node.site-a]\nlevels = []\n").to_string();
        assert!(msg.contains("unknown field `node`"), "{msg}");
        // With no known nodes the message says so.
        let e = Spec::parse(&node("site-a", "[[\"pdu\"]]"), "spec.toml", &[]).unwrap_err();
        assert!(e.message.contains("(known: none)"), "{e}");
        // And the whole error reads well.
        assert_eq!(
            refused(&node("site-a", "[[\"ipmi\"]]")).to_string(),
            "spec.toml: field `fencing.nodes.site-a.levels[0][0]`: \
             expected a fence device of this spec (known: pdu), got \"ipmi\""
        );
        assert_eq!(
            refused(&fence_dummy("retries = 99")).to_string(),
            "spec.toml: field `fencing.devices.pdu.retries`: expected 0 to 10 extra attempts, got 99"
        );
    }

    #[test]
    fn secret_names() {
        for name in [
            "password",
            "passwd",
            "PASSWORD",
            "snmp_priv_passwd",
            "api_token",
            "client_secret",
            "Token",
        ] {
            assert!(is_secret_param_name(name), "{name}");
        }
        for name in ["ip", "username", "login", "plug", "pass"] {
            assert!(!is_secret_param_name(name), "{name}");
        }
    }

    #[test]
    fn debug_of_a_device_hides_secrets() {
        let spec = parse(&fence(
            "agent = \"exec\"\ncommand = [\"/bin/kill-node\", \"--key\", \"k3y-s3cret\"]\n\
             params = { login = \"admin\", password = \"hunter2-pw\", key = \"k3y-s3cret\" }\nsecret = [\"key\"]",
            "",
        ))
        .unwrap();
        let d = &spec.fencing.devices["pdu"];
        let shown = format!("{d:?} {spec:?} {:#?}", spec.fencing);
        assert!(
            !shown.contains("hunter2-pw") && !shown.contains("k3y-s3cret"),
            "{shown}"
        );
        assert!(shown.contains("\"admin\"") && shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("/bin/kill-node"), "{shown}");
        assert_eq!(d.secret_values(), ["k3y-s3cret", "hunter2-pw"]);
        assert_eq!(
            d.redact("login admin password hunter2-pw key=k3y-s3cret."),
            "login admin password <redacted> key=<redacted>."
        );
    }

    #[test]
    fn redact_values_replaces_every_occurrence() {
        assert_eq!(redact_values("abc", &[]), "abc");
        assert_eq!(redact_values("abc", &[""]), "abc");
        assert_eq!(
            redact_values("xx-pw-pw-pwd", &["pw", "pwd"]),
            "xx-<redacted>-<redacted>-<redacted>"
        );
        // The replacement is never rewritten, even by a secret it contains.
        assert_eq!(redact_values("e", &["e"]), "<redacted>");
        assert_eq!(
            redact_values("été pw", &["é", "pw"]),
            "<redacted>t<redacted> <redacted>"
        );
    }

    const SECRET_SOURCE: &str = r#"# fencing with secrets; the old password was "hunter2-pw"
[fencing.devices.pdu]
agent = "fence_apc_snmp"
params = { ip = "10.0.0.1", community = 'c0mmunity', password = "hunter2-pw", token = 123456 }
secret = ["community"]

[fencing.devices.ipmi]
agent = "exec"
command = ["/bin/kill-node", "--password", "ipmi\"pw"]
[fencing.devices.ipmi.params]
username = "admin"
passwd = """ipmi"pw"""
api_token = "tok-en"

[fencing.nodes.site-a]
levels = [["pdu"], ["ipmi"]]
"#;

    #[test]
    fn redact_source_hides_every_secret_value() {
        let text = SECRET_SOURCE;
        let spec = parse(text).unwrap();
        let shown = redact_source(text, &spec);
        for secret in ["hunter2-pw", "c0mmunity", "123456", "ipmi\"pw", "ipmi\\\"pw", "tok-en"] {
            assert!(!shown.contains(secret), "{secret} in\n{shown}");
        }
        assert!(shown.contains(r#"params = { ip = "10.0.0.1", community = "<redacted>", password = "<redacted>", token = "<redacted>" }"#), "{shown}");
        assert!(shown.contains("passwd = \"<redacted>\"\n"), "{shown}");
        assert!(shown.contains("api_token = \"<redacted>\"\n"), "{shown}");
        assert!(shown.contains("the old password was \"<redacted>\""), "{shown}");
        assert!(shown.contains("username = \"admin\""), "{shown}");
        // The rest is untouched, and the result is still a valid spec.
        assert_eq!(shown.lines().count(), text.lines().count());
        let again = parse(&shown).unwrap();
        assert_eq!(again.fencing.devices["pdu"].params["password"], "<redacted>");
        assert_eq!(again.fencing.levels, spec.fencing.levels);
        // A source without secrets comes back as it is.
        assert_eq!(
            redact_source(EXAMPLE, &Spec::default()).lines().count(),
            EXAMPLE.lines().count()
        );
        let plain = web("", "");
        assert_eq!(redact_source(&plain, &parse(&plain).unwrap()), plain);
        // The shipped example shows no secret either.
        let example = redact_source(EXAMPLE, &parse(EXAMPLE).unwrap());
        for secret in ["\"change-me\"", "change-me-too", "\"private\""] {
            assert!(!example.contains(secret), "{secret}");
        }
        // Even a source that no longer parses keeps the spec's secrets hidden.
        let broken = format!("{text}\n[[[oops");
        assert!(!redact_source(&broken, &spec).contains("hunter2-pw"));
    }

    #[test]
    fn diff_lists_dns_changes() {
        let new = parse(EXAMPLE).unwrap();
        let mut old = new.clone();
        old.dns = DnsSpec::default();
        old.groups[0].dns = GroupDns::default();
        assert_eq!(
            diff(&old, &new),
            [
                "~ group web: dns records changed",
                "~ dns zone: (default) -> svc.example.",
                "~ dns push targets: 0 -> 1",
                "~ dns static records: 0 -> 1",
            ]
        );
        // The key file's path is shown nowhere, and no secret is in the spec.
        assert!(!diff(&old, &new).iter().any(|l| l.contains("tsig.key")));
    }

    #[test]
    fn dns_refusals_name_the_field() {
        let nodes = [NodeInfo {
            name: "site-a".into(),
            address: "127.0.0.1:7400".into(),
            role: NodeRole::Member,
        }];
        let bad = |text: &str| Spec::parse(text, "s.toml", &nodes).unwrap_err().to_string();
        assert!(bad("[dns]\nzone = \"svc.example\"\n").contains("dns.zone"));
        let push =
            "[[dns.push]]\nserver = \"10.0.0.53\"\nzone = \"c.example.\"\nkey_name = \"k.\"\nkey_file = \"/k\"\n";
        assert!(bad(push).contains("dns.push[0].server"));
        let push =
            "[[dns.push]]\nserver = \"10.0.0.53:53\"\nzone = \"c.example.\"\nkey_name = \"k.\"\nkey_file = \"k\"\n";
        assert!(bad(push).contains("dns.push[0].key_file"));
        let push = "[[dns.push]]\nserver = \"10.0.0.53:53\"\nzone = \"c.example.\"\nkey_name = \"k.\"\nkey_file = \"/k\"\nalgorithm = \"md5\"\n";
        assert!(bad(push).contains("dns.push[0].algorithm"));
        let group = "[[groups]]\nname = \"web\"\ndns = { ttl = \"2d\" }\n[[groups.resources]]\nname = \"r\"\nagent = \"exec\"\nstart = \"true\"\nstop = \"true\"\nmonitor = \"true\"\n";
        assert!(bad(group).contains("dns.ttl"));
        let group = "[[groups]]\nname = \"web\"\ndns = { addresses = { nowhere = [\"10.0.0.1\"] } }\n[[groups.resources]]\nname = \"r\"\nagent = \"exec\"\nstart = \"true\"\nstop = \"true\"\nmonitor = \"true\"\n";
        assert!(bad(group).contains("dns.addresses.nowhere"));
    }

    #[test]
    fn diff_lists_fencing_changes() {
        let old = parse(EXAMPLE).unwrap();
        let bare = Spec {
            groups: old.groups.clone(),
            dns: old.dns.clone(),
            ..Spec::default()
        };
        assert_eq!(
            diff(&bare, &old),
            [
                "+ fence device hypervisor (exec)",
                "+ fence device ipmi-a (fence_ipmilan)",
                "+ fence device ipmi-b (fence_ipmilan)",
                "+ fence device pdu-a (fence_apc_snmp)",
                "+ fencing of site-a: levels [[ipmi-a], [pdu-a]]",
                "+ fencing of site-b: levels [[ipmi-b], [hypervisor]]",
            ]
        );
        assert_eq!(
            diff(&old, &bare),
            [
                "- fence device hypervisor",
                "- fence device ipmi-a",
                "- fence device ipmi-b",
                "- fence device pdu-a",
                "- fencing of site-a",
                "- fencing of site-b",
            ]
        );
        let new_text = EXAMPLE
            .replace(
                "password = \"change-me\", lanplus = true }\n\n[fencing.devices.ipmi-b]",
                "password = \"n3w-pass\", lanplus = true }\n\n[fencing.devices.ipmi-b]",
            )
            .replace("agent = \"fence_apc_snmp\"", "agent = \"fence_eaton_snmp\"")
            .replace("secret = [\"community\"]", "secret = [\"community\", \"ip\"]")
            .replace("timeout = \"30s\"", "timeout = \"45s\"")
            .replace("\"--site\", \"b\"]", "\"--site\", \"c\"]\nretries = 3")
            .replace("retries = 0\n", "")
            .replace(
                "levels = [[\"ipmi-b\"], [\"hypervisor\"]]",
                "levels = [[\"ipmi-b\", \"pdu-a\"]]",
            );
        let new = parse(&new_text).unwrap();
        let lines = diff(&old, &new);
        assert_eq!(
            lines,
            [
                "~ fence device hypervisor: command changed",
                "~ fence device hypervisor: retries 0 -> 3",
                "~ fence device ipmi-a: param password changed",
                "~ fence device ipmi-b: timeout 30s -> 45s",
                "~ fence device pdu-a: agent fence_apc_snmp -> fence_eaton_snmp",
                "~ fence device pdu-a: secret [community] -> [community, ip]",
                "~ fencing of site-b: levels [[ipmi-b], [hypervisor]] -> [[ipmi-b, pdu-a]]",
            ]
        );
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("change-me") && !l.contains("n3w-pass"))
        );
        // Exec <-> agent.
        let mut swapped = old.clone();
        swapped.fencing.devices.get_mut("ipmi-a").unwrap().agent = FenceAgentSpec::Exec {
            command: "/bin/x".into(),
            args: vec![],
        };
        assert_eq!(
            diff(&old, &swapped),
            ["~ fence device ipmi-a: agent fence_ipmilan -> exec"]
        );
    }

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
