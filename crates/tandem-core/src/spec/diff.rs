//! The change list `tandem apply` shows before it commits: what changed
//! between two specs, never a value that may hold a secret.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::model::{AgentSpec, FenceAgentSpec, FencingSpec, GroupSpec, MaxLag, ResourceSpec, Spec};

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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::{ActionTimeouts, DEFAULT_MONITOR_INTERVAL, DnsSpec, GroupDns};
    use crate::spec::testing::{EXAMPLE, parse};

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
            .replace("secrets/ipmi-a.password", "secrets/ipmi-a.n3w-pass")
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
                "~ fence device ipmi-a: param password_file changed",
                "~ fence device ipmi-b: timeout 30s -> 45s",
                "~ fence device pdu-a: agent fence_apc_snmp -> fence_eaton_snmp",
                "~ fence device pdu-a: secret [community] -> [community, ip]",
                "~ fencing of site-b: levels [[ipmi-b], [hypervisor]] -> [[ipmi-b, pdu-a]]",
            ]
        );
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("ipmi-a.password") && !l.contains("n3w-pass"))
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
}
