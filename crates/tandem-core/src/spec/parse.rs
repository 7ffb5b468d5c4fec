//! Parsing and validation: the file as written (a raw serde form that
//! refuses unknown keys, so a typo never falls back to a default), then
//! every semantic check, each problem a [`SpecError`] naming the file, the
//! group, the resource and the field, and saying what is expected.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::model::{
    ActionTimeouts, AgentSpec, DEFAULT_DNS_TTL, DEFAULT_FAILURE_TIMEOUT, DEFAULT_FENCE_RETRIES, DEFAULT_FENCE_TIMEOUT,
    DEFAULT_HOOK_TIMEOUT, DEFAULT_MIGRATION_THRESHOLD, DEFAULT_MONITOR_INTERVAL, DnsPushSpec, DnsRecordSpec, DnsSpec,
    FenceAgentSpec, FenceDeviceSpec, FencingSpec, GroupDns, GroupKind, GroupSpec, Hooks, MAX_FENCE_RETRIES, MAX_SCORE,
    MaxLag, Placement, ResourceSpec, Spec,
};
use super::redact::{is_secret_param_name, secret_file_param};
use crate::config::valid_name;
use crate::membership::{NodeInfo, NodeRole};
use crate::timing::BadDuration;

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
}

/// The node names a spec file refers to (`prefer`, `avoid`, a group's
/// `dns.addresses`, `fencing.nodes`), read leniently (anything else
/// ignored, an unreadable file gives none): for checking a spec without the
/// cluster's member list, when those names cannot be checked.
pub fn referenced_nodes(text: &str) -> BTreeSet<String> {
    #[derive(Deserialize, Default)]
    struct Lenient {
        #[serde(default)]
        groups: Vec<LenientGroup>,
        #[serde(default)]
        fencing: LenientFencing,
    }
    #[derive(Deserialize, Default)]
    struct LenientGroup {
        #[serde(default)]
        prefer: Vec<LenientPrefer>,
        #[serde(default)]
        avoid: Vec<String>,
        #[serde(default)]
        dns: LenientDns,
    }
    #[derive(Deserialize, Default)]
    struct LenientPrefer {
        #[serde(default)]
        node: String,
    }
    #[derive(Deserialize, Default)]
    struct LenientDns {
        #[serde(default)]
        addresses: BTreeMap<String, toml::Value>,
    }
    #[derive(Deserialize, Default)]
    struct LenientFencing {
        #[serde(default)]
        nodes: BTreeMap<String, toml::Value>,
    }
    let raw: Lenient = toml::from_str(text).unwrap_or_default();
    let mut names = BTreeSet::new();
    for g in raw.groups {
        names.extend(g.prefer.into_iter().map(|p| p.node));
        names.extend(g.avoid);
        names.extend(g.dns.addresses.into_keys());
    }
    names.extend(raw.fencing.nodes.into_keys());
    names.retain(|n| !n.is_empty());
    names
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
            let d = crate::timing::parse_duration(text).map_err(|e| {
                at.err(
                    "max_lag",
                    match e {
                        BadDuration::Malformed => format!("{EXPECTED}, got {text:?}"),
                        BadDuration::TooLong => crate::timing::too_long(text),
                    },
                )
            })?;
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
    let d = crate::timing::parse_duration(text).map_err(|e| {
        at.err(
            field,
            match e {
                BadDuration::Malformed => format!(
                    "expected a duration such as \"{}\", got {text:?}",
                    humantime::format_duration(default)
                ),
                BadDuration::TooLong => crate::timing::too_long(text),
            },
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
        if let Some(param) = secret_file_param(key) {
            if !value.starts_with('/') {
                return Err(at.err(
                    field,
                    format!(
                        "expected an absolute path to a file holding the {param} (read on the node that runs the \
                         device), got {value:?}"
                    ),
                ));
            }
            if d.params.as_ref().is_some_and(|p| p.contains_key(param)) {
                return Err(at.err(
                    field,
                    format!("expected either `{param}` or `{key}`, not both: the file's content is passed as {param}"),
                ));
            }
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testing::{EXAMPLE, fence, nodes, parse, web};

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

    /// One group `web` with one resource made of `resource` (TOML lines).
    fn web_resource(resource: &str) -> String {
        format!("[[groups]]\nname = \"web\"\n[[groups.resources]]\nname = \"app\"\n{resource}\n")
    }

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
        assert_eq!(ipmi.secret_params, BTreeSet::new(), "a path is no secret");
        assert_eq!(
            ipmi.secret_files(),
            [("password", "/etc/tandem/secrets/ipmi-b.password")]
        );
        assert_eq!(ipmi.timeout, Duration::from_secs(30));
        let hv = &f.devices["hypervisor"];
        assert_eq!(
            hv.agent,
            FenceAgentSpec::Exec {
                command: "/usr/local/bin/kill-node".into(),
                args: vec!["--site".into(), "b".into()]
            }
        );
        assert_eq!(
            hv.secret_files(),
            [("api_token", "/etc/tandem/secrets/hypervisor.token")]
        );
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

    /// The value a new user tried: accepted, it made the primary's group
    /// task panic (`Instant + Duration` overflow) and left the group
    /// `starting`. Every duration of a spec has an upper bound now.
    #[test]
    fn durations_beyond_a_year_are_refused_with_their_field() {
        const HUGE: &str = "400000000000y";
        let limit = "expected at most 365days, got \"400000000000y\"";
        assert_refused(
            &web("", &format!("monitor_interval = \"{HUGE}\"")),
            Some("web"),
            Some("app"),
            "monitor_interval",
            limit,
        );
        for key in ["start", "stop", "monitor"] {
            assert_refused(
                &web("", &format!("timeouts = {{ {key} = \"{HUGE}\" }}")),
                Some("web"),
                Some("app"),
                &format!("timeouts.{key}"),
                limit,
            );
        }
        for (keys, field) in [
            (format!("failure_timeout = \"{HUGE}\""), "failure_timeout"),
            (format!("max_lag = \"{HUGE}\""), "max_lag"),
            (
                format!("hooks = {{ after_promote = \"/bin/true\", timeout = \"{HUGE}\" }}"),
                "hooks.timeout",
            ),
        ] {
            assert_refused(&web(&keys, ""), Some("web"), None, field, limit);
        }
        assert_fence_refused(
            &fence_dummy(&format!("timeout = \"{HUGE}\"")),
            "fencing.devices.pdu.timeout",
            limit,
        );
        // The bound itself is accepted.
        let spec = parse(&web("failure_timeout = \"365days\"", "monitor_interval = \"365days\"")).unwrap();
        assert_eq!(spec.groups[0].failure_timeout, crate::timing::MAX_DURATION);
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
}
