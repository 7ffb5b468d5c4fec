//! What-if and protection warnings end to end: `tandem simulate` predicts
//! what placement then really does; a group whose only other candidate is
//! lost is reported unprotected (status, events, metrics) until it is back.

use serde_json::Value;

use crate::resources::{group, kill9_pid, service, service_pid, spec, wait_running_on};
use crate::support::*;

fn events(c: &TestCluster, node: &str) -> Vec<Value> {
    stdout(&c.cli_ok(node, &["events", "--output", "json"]))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn messages(c: &TestCluster, node: &str, starting: &str) -> Vec<String> {
    events(c, node)
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(starting))
        .map(str::to_string)
        .collect()
}

fn position(c: &TestCluster, node: &str, text: &str) -> Option<usize> {
    events(c, node)
        .iter()
        .position(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
}

/// The sample `name` in `node`'s /metrics, if present.
fn metric(c: &TestCluster, node: &str, name: &str) -> Option<f64> {
    let (_, text) = http_get(c.node(node).http, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn simulate_node_down_predicts_the_fence_and_the_failover_placement_then_makes() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    // site-a has the demo's fence device (kills its agent and services,
    // says off once none remains).
    let fence = c.write_fence_device().unwrap();
    let fencing = format!(
        "[fencing.devices.switch-a]\nagent = \"exec\"\ncommand = [\"/bin/sh\", {:?}, \"site-a\"]\ntimeout = \"10s\"\n\n\
         [fencing.nodes.site-a]\nlevels = [[\"switch-a\"]]\n",
        fence.display().to_string()
    );
    let resources = format!("{}{fencing}", service("http", &dir.join("ledger")));
    let file = spec(&dir, "spec.toml", "", &resources);
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    let before = wait_running_on(&c, "site-a");
    let epoch_now = before["epoch"].as_u64().unwrap();

    // Bad input is refused with the name of what is wrong.
    let out = c.cli("site-b", &["simulate", "--node-down", "site-z"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"site-z\""), "{}", stderr(&out));
    let broken = write(&dir, "broken.toml", "[[groups]]\nname = 7\n");
    let out = c.cli("site-b", &["simulate", "--apply", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("broken.toml"), "{}", stderr(&out));

    // The prediction, from site-b's view once it sees every node up.
    c.wait_for("every node up in site-b's view", |c| {
        let s = c.status("site-b")?;
        s["nodes"].as_array()?.iter().all(|n| n["state"] == "up").then_some(())
    });
    let out = c.cli_ok("site-b", &["simulate", "--node-down", "site-a", "--output", "json"]);
    let sim: Value = serde_json::from_slice(&out.stdout).unwrap();
    let web = sim["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "web")
        .unwrap();
    assert_eq!(web["nodes_now"], serde_json::json!(["site-a"]), "{sim}");
    assert_eq!(web["nodes"], serde_json::json!(["site-b"]), "{sim}");
    assert_eq!(web["blocked_reason"], Value::Null, "{sim}");
    let predicted_epoch = web["epoch"].as_u64().unwrap();
    assert!(predicted_epoch > epoch_now, "{sim}");
    let fences = sim["fences"].as_array().unwrap();
    assert_eq!(fences.len(), 1, "{sim}");
    assert_eq!(
        (&fences[0]["node"], &fences[0]["devices"]),
        (&Value::from("site-a"), &Value::from(true)),
        "{sim}"
    );
    // The witness simulates from its own view: wait until it sees every node
    // up (a late heartbeat under load shows a node suspect, and a suspect
    // node may not take a group over).
    c.wait_for("every node up in the witness's view", |c| {
        let s = c.status("witness")?;
        s["nodes"].as_array()?.iter().all(|n| n["state"] == "up").then_some(())
    });
    let table = stdout(&c.cli_ok("witness", &["simulate", "--node-down", "site-a"]));
    assert!(
        table.contains("would fence: site-a (lost while it may run web; through its fence devices)")
            && table.contains("moves (epoch"),
        "{table}"
    );
    // Nothing was committed: web still runs on site-a at its epoch.
    let s = c.status_of("site-b");
    let g = group(&s, "web").unwrap();
    assert_eq!(
        (&g["primary"], &g["epoch"]),
        (&Value::from("site-a"), &Value::from(epoch_now))
    );
    assert!(s["fencing_needed"].as_object().unwrap().is_empty(), "{s}");

    // Now for real: site-a is lost.
    if let Some(pid) = service_pid(&c, "site-a", "http") {
        kill9_pid(pid);
    }
    c.kill9("site-a");
    let after = wait_running_on(&c, "site-b");
    assert_eq!(after["epoch"].as_u64(), Some(predicted_epoch), "{after}");
    let fenced = position(&c, "site-b", "site-a fenced:").expect("site-a fenced, as predicted");
    let assigned = position(&c, "site-b", "web assigned to site-b").expect("web assigned to site-b");
    assert!(fenced < assigned, "fence before recover");
}

#[test]
fn a_group_whose_only_other_candidate_is_lost_is_unprotected_until_it_returns() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let file = spec(&dir, "spec.toml", "", &service("http", &dir.join("ledger")));
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    let g = wait_running_on(&c, "site-a");
    assert_eq!(g["unprotected"], Value::Null, "site-b stands by: {g}");
    assert_eq!(
        metric(&c, "site-a", "tandem_group_unprotected{group=\"web\"}"),
        Some(0.0)
    );

    // The only other candidate is lost.
    c.kill9("site-b");
    let g = c.wait_for("web unprotected in the witness's status", |c| {
        let s = c.status("witness")?;
        let g = group(&s, "web")?.clone();
        g["unprotected"].is_object().then_some(g)
    });
    let reason = g["unprotected"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("a loss of site-a would stop it") && reason.contains("site-b is down"),
        "{g}"
    );
    assert_eq!(g["primary"], "site-a", "nothing moves: {g}");
    let table = stdout(&c.cli_ok("site-a", &["status"]));
    assert!(table.contains("warning: web is unprotected since"), "{table}");
    c.wait_for("the metric on site-a", |c| {
        (metric(c, "site-a", "tandem_group_unprotected{group=\"web\"}") == Some(1.0)).then_some(())
    });
    let (_, page) = http_get(c.node("witness").http, "/api/status").unwrap();
    let page: Value = serde_json::from_str(&page).unwrap();
    let pg = group(&page, "web").unwrap();
    assert!(
        pg["unprotected"]["reason"].as_str().unwrap().contains("site-b is down"),
        "{pg}"
    );
    let started = messages(&c, "site-a", "web is unprotected: ");
    assert_eq!(started.len(), 1, "{started:?}");

    // It comes back: the warning ends, with one event.
    c.start("site-b");
    c.wait_for("web protected again", |c| {
        let s = c.status("witness")?;
        group(&s, "web")?["unprotected"].is_null().then_some(())
    });
    let ended = c.wait_for("the end event", |c| {
        let m = messages(c, "witness", "web is no longer unprotected: ");
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(
        ended,
        vec!["web is no longer unprotected: site-b may take it over".to_string()]
    );
    c.wait_for("the metric back to 0", |c| {
        (metric(c, "site-a", "tandem_group_unprotected{group=\"web\"}") == Some(0.0)).then_some(())
    });
    // One start and one end, however many passes the coordinator made.
    assert_eq!(messages(&c, "witness", "web is unprotected: ").len(), 1);
    assert_eq!(messages(&c, "witness", "web is no longer unprotected: ").len(), 1);
}
