//! How the CLI prints: human tables and the stable JSON documented in the README.

use std::fmt::Write as _;

use serde_json::{Value, json};
use tandem_proto::v1 as pb;

pub fn role_name(role: i32) -> &'static str {
    match pb::NodeRole::try_from(role) {
        Ok(pb::NodeRole::Witness) => "witness",
        Ok(pb::NodeRole::Member) => "member",
        _ => "unknown",
    }
}

pub fn state_name(state: i32) -> &'static str {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Up) => "up",
        Ok(pb::NodeState::Suspect) => "suspect",
        Ok(pb::NodeState::Down) => "down",
        _ => "unknown",
    }
}

/// The stable JSON form of a status (see README, "Status JSON").
pub fn status_json(s: &pb::ClusterStatus) -> Value {
    json!({
        "cluster": s.cluster,
        "coordinator": s.coordinator,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "answered_by": s.answered_by,
        "view_fresh": s.view_fresh,
        "at_unix_ms": s.at_unix_ms,
        "backup": s.backup.as_ref().map(|b| json!({
            "interval_ms": b.interval_ms,
            "dir": b.dir,
            "keep": b.keep,
            "coordinator": b.coordinator,
            "last_file": (!b.last_file.is_empty()).then_some(&b.last_file),
            "last_index": b.last_index,
            "last_unix_ms": b.last_unix_ms,
            "age_ms": (!b.last_file.is_empty()).then(|| s.at_unix_ms.saturating_sub(b.last_unix_ms)),
            "last_failure": (!b.last_failure.is_empty()).then_some(&b.last_failure),
            "failures": b.failures,
            "warning": (!b.warning.is_empty()).then_some(&b.warning),
        })),
        "nodes": s.nodes.iter().map(|n| json!({
            "name": n.name,
            "role": role_name(n.role),
            "state": state_name(n.state),
            "address": n.address,
            "voter": n.voter,
            "lease_valid": n.lease_valid,
            "last_heartbeat_age_ms": n.last_heartbeat_age_ms,
            "version": n.version,
            "matched_index": n.matched_index,
            "standby": n.standby,
            "maintenance": n.maintenance,
        })).collect::<Vec<_>>(),
        "maintenance": s.maintenance,
        "transitions": s.transitions.iter().map(transition_json).collect::<Vec<_>>(),
        "spec_version": s.spec_version,
        "fencing_needed": s.fencing_needed,
        "groups": s.groups.iter().map(|g| json!({
            "name": g.name,
            "kind": g.kind,
            "state": g.state,
            "primary": g.primary,
            "nodes": g.nodes,
            "epoch": g.epoch,
            "blocked_reason": g.blocked_reason,
            "reason": g.reason,
            "maintenance": g.maintenance,
            "pending_move": (!g.pending_move.is_empty()).then_some(&g.pending_move),
            "unprotected": g.unprotected_since_unix_ms.map(|since| json!({
                "reason": g.unprotected,
                "since_unix_ms": since,
            })),
            "resources": g.resources.iter().map(|r| json!({
                "name": r.name,
                "node": r.node,
                "last_action": r.last_action,
                "result": r.result,
                "failures": r.failures,
            })).collect::<Vec<_>>(),
            "candidates": g.candidates.iter().map(|c| json!({
                "node": c.node,
                "freshness": (!c.freshness.is_empty()).then_some(&c.freshness),
                "position": c.position,
                "lag_ms": c.lag_ms,
                "behind": c.behind,
                "eligible": c.eligible,
                "reason": c.reason,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{ms}ms"),
        Some(ms) => format!("{}s", ms / 1000),
    }
}

/// A human table of a status.
pub fn status_table(s: &pb::ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}  coordinator {}  term {}  commit {}  (as seen by {}{})",
        s.cluster,
        s.coordinator.as_deref().unwrap_or("none"),
        s.term,
        s.commit_index,
        s.answered_by,
        if s.view_fresh {
            ""
        } else {
            "; no recent word from a coordinator"
        }
    );
    if let Some(b) = &s.backup {
        let last = if b.last_file.is_empty() {
            "none yet".to_string()
        } else {
            format!(
                "{} (index {}, {} old)",
                b.last_file,
                b.last_index,
                age(Some(s.at_unix_ms.saturating_sub(b.last_unix_ms)))
            )
        };
        let _ = writeln!(out, "backup: every {}, last verified {last}", age(Some(b.interval_ms)));
        if !b.warning.is_empty() {
            let _ = writeln!(out, "  WARNING: {}", b.warning);
        }
    }
    let _ = writeln!(
        out,
        "{:<14} {:<8} {:<8} {:<6} {:<10} {:<8} {:<22} VERSION",
        "NODE", "ROLE", "STATE", "LEASE", "HEARTBEAT", "VOTER", "ADDRESS"
    );
    for n in &s.nodes {
        let marker = if s.coordinator.as_deref() == Some(n.name.as_str()) {
            "*"
        } else {
            ""
        };
        let mode = match (n.standby, n.maintenance) {
            (true, true) => "+standby+maint",
            (true, false) => "+standby",
            (false, true) => "+maint",
            (false, false) => "",
        };
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:<8} {:<6} {:<10} {:<8} {:<22} {}",
            format!("{}{marker}", n.name),
            role_name(n.role),
            format!("{}{mode}", state_name(n.state)),
            if n.lease_valid { "valid" } else { "-" },
            age(n.last_heartbeat_age_ms),
            if n.voter { "voter" } else { "learner" },
            n.address,
            if n.version.is_empty() { "-" } else { &n.version }
        );
    }
    if !s.groups.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<14} {:<10} {:<9} {:<14} {:<6} WHY",
            "GROUP", "KIND", "STATE", "ON", "EPOCH"
        );
        for g in &s.groups {
            let why = if g.blocked_reason.is_empty() {
                &g.reason
            } else {
                &g.blocked_reason
            };
            let _ = writeln!(
                out,
                "{:<14} {:<10} {:<9} {:<14} {:<6} {}",
                g.name,
                g.kind,
                g.state,
                if g.nodes.is_empty() {
                    "-".to_string()
                } else {
                    g.nodes.join(",")
                },
                g.epoch,
                match (g.maintenance, g.pending_move.is_empty()) {
                    (true, _) => format!("[maintenance] {why}"),
                    (false, false) => format!("[{}] {why}", g.pending_move),
                    (false, true) => why.clone(),
                }
            );
            for r in &g.resources {
                let _ = writeln!(
                    out,
                    "  {:<12} {:<10} {:<8} {} (failures {})",
                    r.name, r.node, r.last_action, r.result, r.failures
                );
            }
            // Freshness only matters (and is shown) once agents report it.
            if g.candidates.iter().any(|c| !c.freshness.is_empty()) {
                for c in &g.candidates {
                    let fresh = if c.freshness.is_empty() {
                        "no freshness reported".to_string()
                    } else {
                        match c.behind {
                            Some(0) => format!("{} (most current)", c.freshness),
                            Some(b) if c.position.is_some() => format!("{} ({b} behind)", c.freshness),
                            _ => c.freshness.clone(),
                        }
                    };
                    let fit = if c.eligible {
                        "eligible".to_string()
                    } else {
                        format!("not eligible: {}", c.reason)
                    };
                    let _ = writeln!(out, "  candidate {:<14} {:<32} {fit}", c.node, fresh);
                }
            }
        }
    }
    for g in &s.groups {
        if let Some(since) = g.unprotected_since_unix_ms {
            let _ = writeln!(
                out,
                "warning: {} is unprotected since {}: {}",
                g.name,
                rfc3339_ms(since),
                g.unprotected
            );
        }
    }
    for (node, why) in &s.fencing_needed {
        let _ = writeln!(out, "needs fencing: {node}: {why}");
    }
    if s.maintenance {
        let _ = writeln!(
            out,
            "the cluster is in maintenance: Tandem does not start, stop or move anything"
        );
    }
    for t in s.transitions.iter().filter(|t| t.outcome == "in_progress") {
        let _ = write!(out, "\nin progress: {}", transition_timeline(t));
    }
    out
}

pub fn event_json(e: &pb::Event) -> Value {
    json!({
        "seq": e.seq,
        "at_unix_ms": e.at_unix_ms,
        "actor": e.actor,
        "kind": e.kind,
        "message": e.message,
        "group": (!e.group.is_empty()).then_some(&e.group),
    })
}

pub fn transition_json(t: &pb::Transition) -> Value {
    let phases: serde_json::Map<String, Value> =
        t.phases.iter().map(|p| (p.name.clone(), json!(p.at_unix_ms))).collect();
    json!({
        "id": t.id,
        "group": t.group,
        "kind": t.kind,
        "from": (!t.from.is_empty()).then_some(&t.from),
        "to": (!t.to.is_empty()).then_some(&t.to),
        "reason": t.reason,
        "actor": t.actor,
        "epoch": t.epoch,
        "phases_unix_ms": phases,
        "outcome": t.outcome,
        "outcome_reason": (!t.outcome_reason.is_empty()).then_some(&t.outcome_reason),
    })
}

/// A transition as a timeline: its phases as offsets from the first, and
/// the time spent in each.
pub fn transition_timeline(t: &pb::Transition) -> String {
    let mut out = String::new();
    let first = t.phases.first().map_or(0, |p| p.at_unix_ms);
    let outcome = match t.outcome.as_str() {
        "abandoned" => format!("abandoned: {}", t.outcome_reason),
        o => o.replace('_', " "),
    };
    let total = match (t.outcome.as_str(), t.phases.last()) {
        ("completed", Some(last)) => format!(" in {} ms", last.at_unix_ms.saturating_sub(first)),
        _ => String::new(),
    };
    let from = if t.from.is_empty() { "-" } else { &t.from };
    let to = if t.to.is_empty() { "?" } else { &t.to };
    out.push_str(&format!(
        "#{} {} of {} {from} -> {to} (epoch {}), {outcome}{total}\n    by {}: {}\n",
        t.id, t.kind, t.group, t.epoch, t.actor, t.reason
    ));
    let mut prev = first;
    for p in &t.phases {
        out.push_str(&format!(
            "    {:<9} {}  +{:>6} ms  (step {:>6} ms)\n",
            p.name,
            rfc3339_ms(p.at_unix_ms),
            p.at_unix_ms.saturating_sub(first),
            p.at_unix_ms.saturating_sub(prev)
        ));
        prev = p.at_unix_ms;
    }
    out
}

/// `2026-11-22T11:13:09.123Z` from Unix milliseconds.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The cluster's health for a monitoring system (`tandem status --check`,
/// Nagios plugin conventions).
pub struct Health {
    /// 0 ok, 1 degraded (warning), 2 critical.
    pub code: u8,
    pub problems: Vec<String>,
    pub summary: String,
    nodes_up: usize,
    nodes: usize,
    groups_running: usize,
    groups: usize,
}

/// Critical: no coordinator (no quorum: nothing can change, leases run
/// out), or a group failed, blocked or stopped (its service is down).
/// Degraded: a node not up, a group starting or stopping, a node waiting to
/// be fenced, or a view the answering node has not refreshed from a
/// coordinator within a lease.
pub fn health(s: &pb::ClusterStatus) -> Health {
    let mut critical = Vec::new();
    let mut degraded = Vec::new();
    if s.coordinator.is_none() {
        critical.push(format!("no coordinator (no quorum) as {} sees it", s.answered_by));
    }
    for g in &s.groups {
        match g.state.as_str() {
            "running" => {}
            "failed" | "blocked" | "stopped" => {
                let why = if g.blocked_reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", g.blocked_reason)
                };
                critical.push(format!("group {} {}{why}", g.name, g.state));
            }
            other => degraded.push(format!("group {} {other}", g.name)),
        }
    }
    for n in &s.nodes {
        let state = state_name(n.state);
        if state != "up" {
            degraded.push(format!("node {} {state}", n.name));
        }
    }
    for (node, why) in &s.fencing_needed {
        degraded.push(format!("node {node} must be fenced: {why}"));
    }
    if let Some(b) = &s.backup
        && !b.warning.is_empty()
    {
        degraded.push(format!("backup: {}", b.warning));
    }
    if !s.view_fresh {
        degraded.push(format!(
            "{} has not heard from a coordinator within a lease",
            s.answered_by
        ));
    }
    let code = if !critical.is_empty() {
        2
    } else if !degraded.is_empty() {
        1
    } else {
        0
    };
    let nodes_up = s.nodes.iter().filter(|n| state_name(n.state) == "up").count();
    let groups_running = s.groups.iter().filter(|g| g.state == "running").count();
    let summary = format!(
        "cluster {}: coordinator {}, {nodes_up}/{} nodes up, {groups_running}/{} groups running",
        s.cluster,
        s.coordinator.as_deref().unwrap_or("none"),
        s.nodes.len(),
        s.groups.len()
    );
    critical.extend(degraded);
    Health {
        code,
        problems: critical,
        summary,
        nodes_up,
        nodes: s.nodes.len(),
        groups_running,
        groups: s.groups.len(),
    }
}

impl Health {
    fn status(&self) -> &'static str {
        match self.code {
            0 => "ok",
            1 => "warning",
            _ => "critical",
        }
    }

    /// `TANDEM OK - summary | perfdata`, problems first when there are any.
    pub fn line(&self) -> String {
        let problems = if self.problems.is_empty() {
            String::new()
        } else {
            format!("{}; ", self.problems.join("; "))
        };
        format!(
            "TANDEM {} - {problems}{} | nodes_up={};;;0;{} groups_running={};;;0;{}",
            self.status().to_ascii_uppercase(),
            self.summary,
            self.nodes_up,
            self.nodes,
            self.groups_running,
            self.groups
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "status": self.status(),
            "code": self.code,
            "problems": self.problems,
            "summary": self.summary,
            "nodes_up": self.nodes_up,
            "nodes": self.nodes,
            "groups_running": self.groups_running,
            "groups": self.groups,
        })
    }
}

/// The stable JSON form of a what-if (`tandem simulate --output json`).
pub fn simulation_json(r: &pb::SimulateReply) -> Value {
    json!({
        "answered_by": r.answered_by,
        "spec_version": r.spec_version,
        "settled": r.settled,
        "groups": r.groups.iter().map(|g| json!({
            "name": g.name,
            "kind": (!g.kind.is_empty()).then_some(&g.kind),
            "nodes_now": g.nodes_now,
            "epoch_now": g.epoch_now,
            "nodes": g.nodes,
            "epoch": g.epoch,
            "moves": g.nodes != g.nodes_now,
            "steps": g.steps,
            "blocked_reason": (!g.blocked_reason.is_empty()).then_some(&g.blocked_reason),
            "unprotected": (!g.unprotected.is_empty()).then_some(&g.unprotected),
        })).collect::<Vec<_>>(),
        "fences": r.fences.iter().map(|f| json!({
            "node": f.node,
            "reason": f.reason,
            "devices": f.devices,
        })).collect::<Vec<_>>(),
        "assumptions": r.assumptions,
        "refusals": r.refusals,
    })
}

/// A what-if for people: each group where it runs now and would run, why,
/// then fences, refusals and assumptions.
pub fn simulation_table(r: &pb::SimulateReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "simulated on {} from spec version {}; nothing was committed",
        r.answered_by, r.spec_version
    );
    let nodes = |n: &[String]| if n.is_empty() { "-".to_string() } else { n.join(",") };
    let _ = writeln!(out, "\n{:<14} {:<14} {:<14} WHAT", "GROUP", "NOW", "THEN");
    for g in &r.groups {
        let what = if !g.blocked_reason.is_empty() {
            format!("blocked: {}", g.blocked_reason)
        } else if g.nodes == g.nodes_now {
            "stays".to_string()
        } else if g.kind.is_empty() {
            "leaves the spec".to_string()
        } else {
            format!("moves (epoch {} -> {})", g.epoch_now, g.epoch)
        };
        let _ = writeln!(
            out,
            "{:<14} {:<14} {:<14} {what}",
            g.name,
            nodes(&g.nodes_now),
            nodes(&g.nodes)
        );
        for step in &g.steps {
            let _ = writeln!(out, "  step: {step}");
        }
        if !g.unprotected.is_empty() {
            let _ = writeln!(out, "  warning: unprotected: {}", g.unprotected);
        }
    }
    for f in &r.fences {
        let how = if f.devices {
            "through its fence devices"
        } else {
            "it has no fence device: it waits for `tandem fence confirm`"
        };
        let _ = writeln!(out, "would fence: {} ({}; {how})", f.node, f.reason);
    }
    for refusal in &r.refusals {
        let _ = writeln!(out, "refused: {refusal}");
    }
    for a in &r.assumptions {
        let _ = writeln!(out, "assuming {a}");
    }
    out
}
