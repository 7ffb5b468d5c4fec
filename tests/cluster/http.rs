//! The HTTP endpoints end to end: `/healthz`, `/primary/GROUP` (what a load
//! balancer checks) and `/metrics` on real agents, through a failover and a
//! lost lease.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::resources::{kill9_pid, service, service_pid, spec, wait_running_on};
use crate::support::*;

/// `GET path` on `node`'s HTTP listener: the status code and the body as JSON.
fn get_json(c: &TestCluster, node: &str, path: &str) -> Option<(u16, Value)> {
    let (code, body) = http_get(c.node(node).http, path)?;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{node} {path}: not JSON ({e}): {body}"));
    Some((code, json))
}

fn code(c: &TestCluster, node: &str, path: &str) -> Option<u16> {
    http_get(c.node(node).http, path).map(|(code, _)| code)
}

fn metrics(c: &TestCluster, node: &str) -> BTreeMap<String, f64> {
    let (code, text) = http_get(c.node(node).http, "/metrics").expect("an answer from /metrics");
    assert_eq!(code, 200, "{text}");
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF: {text}"
    );
    tandem_api::metrics::parse_samples(&text).unwrap_or_else(|e| panic!("{node}: /metrics does not parse: {e}\n{text}"))
}

fn sum_prefix(samples: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until `/primary/web` answers 200 on `on` and 503 on every other running node.
fn wait_primary_answers(c: &TestCluster, on: &str) {
    c.wait_for(&format!("/primary/web 200 on {on} only"), |c| {
        c.running()
            .iter()
            .all(|n| code(c, n, "/primary/web") == Some(if n == on { 200 } else { 503 }))
            .then_some(())
    });
}

#[test]
fn healthz_primary_and_metrics_follow_the_cluster() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let nodes = ["site-a", "site-b", "witness"];
    c.wait_for("/healthz 200 on every node", |c| {
        nodes.iter().all(|n| code(c, n, "/healthz") == Some(200)).then_some(())
    });
    let (_, health) = get_json(&c, "site-b", "/healthz").unwrap();
    assert_eq!(health["node"], "site-b", "{health}");
    assert_eq!(health["lease_valid"], true, "{health}");
    assert!(health["coordinator"].is_string(), "{health}");
    assert!(health.get("reason").is_none(), "{health}");

    let dir = c.dir.path().to_path_buf();
    let file = spec(&dir, "spec.toml", "", &service("http", &dir.join("ledger")));
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    let g = wait_running_on(&c, "site-a");
    wait_primary_answers(&c, "site-a");
    let (code_b, body_b) = get_json(&c, "site-b", "/primary/web").unwrap();
    assert_eq!(code_b, 503);
    assert_eq!(body_b["primary"], "site-a", "the 503 says who the primary is: {body_b}");
    assert_eq!(body_b["active"], false, "{body_b}");
    let (code_a, body_a) = get_json(&c, "site-a", "/primary/web").unwrap();
    assert_eq!(code_a, 200, "{body_a}");
    assert_eq!(body_a["epoch"], g["epoch"], "{body_a}");
    let (code_x, body_x) = get_json(&c, "witness", "/primary/nope").unwrap();
    assert_eq!(code_x, 404, "{body_x}");
    assert_eq!(code(&c, "witness", "/no/such/page"), Some(404));

    // Metrics: parse, and a few values agree with the status.
    let m = metrics(&c, "site-a");
    let get = |m: &BTreeMap<String, f64>, k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing: {m:?}"));
    assert!(get(&m, "tandem_raft_term") >= 1.0, "{m:?}");
    assert!(get(&m, "tandem_raft_applied_index") >= 1.0, "{m:?}");
    assert_eq!(
        get(&m, "tandem_group_epoch{group=\"web\"}"),
        g["epoch"].as_f64().unwrap()
    );
    assert_eq!(get(&m, "tandem_group_primary_here{group=\"web\"}"), 1.0);
    assert_eq!(get(&m, "tandem_group_state{group=\"web\",state=\"running\"}"), 1.0);
    assert_eq!(get(&m, "tandem_node_up{node=\"site-b\"}"), 1.0);
    assert_eq!(get(&m, "tandem_lease_valid"), 1.0);
    assert!(get(&m, "tandem_lease_renewals_total") >= 1.0, "{m:?}");
    assert!(
        m.keys().any(|k| k.starts_with("tandem_dns_queries_total")),
        "DNS counters are there: {m:?}"
    );
    let coordinators: f64 = nodes
        .iter()
        .map(|n| get(&metrics(&c, n), "tandem_is_coordinator"))
        .sum();
    assert_eq!(coordinators, 1.0, "exactly one node says it is the coordinator");
    let mb = metrics(&c, "site-b");
    assert_eq!(get(&mb, "tandem_group_primary_here{group=\"web\"}"), 0.0);
    // Events applied since start are counted, and more as they come.
    let before = sum_prefix(&m, "tandem_events_total");
    assert!(
        before >= 1.0,
        "the spec and the assignment were applied after start: {m:?}"
    );
    c.cli_ok("witness", &["annotate", "counted by the metrics"]);
    c.wait_for("tandem_events_total{kind=\"note\"} on site-a", |c| {
        let m = metrics(c, "site-a");
        (m.get("tandem_events_total{kind=\"note\"}") == Some(&1.0) && sum_prefix(&m, "tandem_events_total") > before)
            .then_some(())
    });

    // Lose the primary: the new one answers 200, the witness still 503.
    if let Some(pid) = service_pid(&c, "site-a", "http") {
        kill9_pid(pid);
    }
    c.kill9("site-a");
    wait_primary_answers(&c, "site-b");
    let (_, body) = get_json(&c, "witness", "/primary/web").unwrap();
    assert_eq!(body["primary"], "site-b", "{body}");
    let mb = metrics(&c, "site-b");
    assert_eq!(get(&mb, "tandem_group_primary_here{group=\"web\"}"), 1.0);
    assert!(get(&mb, "tandem_group_epoch{group=\"web\"}") > g["epoch"].as_f64().unwrap());
    assert_eq!(get(&mb, "tandem_node_up{node=\"site-a\"}"), 0.0, "{mb:?}");

    // Cut site-b off (the only other node left is paused): once its lease
    // runs out, /healthz and /primary/web answer 503 with the reason.
    c.signal("witness", nix::sys::signal::Signal::SIGSTOP);
    let paused = Instant::now();
    let health = loop {
        let h = get_json(&c, "site-b", "/healthz");
        if h.as_ref().is_some_and(|(code, _)| *code == 503) || paused.elapsed() > WAIT {
            break h;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let primary = get_json(&c, "site-b", "/primary/web");
    c.signal("witness", nix::sys::signal::Signal::SIGCONT);
    let (code_h, body_h) = health.expect("site-b answers /healthz");
    assert_eq!(code_h, 503, "after {:?}: {body_h}", paused.elapsed());
    assert!(
        body_h["reason"].as_str().is_some_and(|r| r.contains("lease")),
        "the reason names the lease: {body_h}"
    );
    assert_eq!(body_h["lease_valid"], false, "{body_h}");
    let (code_p, body_p) = primary.expect("site-b answers /primary/web");
    assert_eq!(code_p, 503, "{body_p}");
    // Back with the witness: healthy again.
    c.wait_for("site-b healthy again", |c| {
        (code(c, "site-b", "/healthz") == Some(200)).then_some(())
    });
}

/// `/metrics` asked for with `Accept: text/plain; version=0.0.4`.
fn metrics_as_text(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("200 OK") && head.contains("text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(!body.contains("# EOF"), "{body}");
    body.to_string()
}

/// The value of sample `k`; the test fails when it is missing.
fn get(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    *m.get(k).unwrap_or_else(|| panic!("{k} missing: {m:?}"))
}

/// The value of sample `k`, 0 while it is missing.
fn or_zero(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    m.get(k).copied().unwrap_or(0.0)
}

/// `promtool check metrics` (Debian's prometheus package) on `text`: its
/// output, or None when it accepted it.
fn promtool_problems(text: &str) -> Option<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (!out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty())
        .then(|| format!("{}{}", stdout(&out), stderr(&out)))
}

#[test]
fn metrics_pass_promtool_and_count_process_failures_and_pushes() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    // A monitor that fails once on every node that runs it, and a push to a
    // site DNS server whose key file is missing.
    let flag = format!("{}/web.$TANDEM_NODE", dir.display());
    let resources = format!(
        "[[groups.resources]]\nname = \"app\"\nagent = \"exec\"\nmonitor_interval = \"300ms\"\n\
         start = \"touch {flag}\"\nstop = \"rm -f {flag}\"\n\
         monitor = \"test -f {flag} || exit 7; test -f {flag}.failed-once || {{ touch {flag}.failed-once; exit 1; }}\"\n\n\
         [[dns.push]]\nserver = \"127.0.0.1:1\"\nzone = \"corp.example.\"\nkey_name = \"k.\"\nkey_file = \"/nonexistent/tsig.key\"\n"
    );
    let file = spec(&dir, "spec.toml", "", &resources);
    c.cli_ok("witness", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    let coordinator = c.wait_for_agreed_coordinator(None);
    let (pushes, failures) = c.wait_for("a failed monitor and a failed push counted", |c| {
        let pushes = or_zero(&metrics(c, &coordinator), "tandem_dns_push_failures_total");
        let failures = or_zero(
            &metrics(c, "site-a"),
            "tandem_resource_action_failures_total{action=\"monitor\"}",
        );
        (pushes >= 1.0 && failures >= 1.0).then_some((pushes, failures))
    });
    assert!(pushes >= 1.0 && failures >= 1.0);

    for node in ["site-a", "site-b", "witness"] {
        // promtool reads Prometheus' classic text format (Debian's 2.42
        // does not know OpenMetrics' counter naming): ask for it.
        let text = metrics_as_text(c.node(node).http.unwrap());
        if let Some(problems) = promtool_problems(&text) {
            panic!("promtool check metrics on {node}'s /metrics:\n{problems}\n{text}");
        }
        let m = metrics(&c, node);
        assert_eq!(
            get(
                &m,
                &format!("tandem_build_info{{version=\"{}\"}}", tandem_core::VERSION)
            ),
            1.0
        );
        assert!(get(&m, "process_resident_memory_bytes") > 1e6, "{node}");
        assert!(get(&m, "process_open_fds") >= 3.0, "{node}");
        assert!(get(&m, "process_cpu_seconds_total") > 0.0, "{node}");
        assert!(get(&m, "process_start_time_seconds") > 1.6e9, "{node}");
        assert!(m.contains_key("tandem_leader_changes_total"), "{node}");
    }
    // A new coordinator is a leader change on the nodes that stay.
    c.kill9(&coordinator);
    let survivor = ["site-a", "site-b", "witness"]
        .into_iter()
        .find(|n| *n != coordinator)
        .unwrap();
    c.wait_for("a leader change counted", |c| {
        (or_zero(&metrics(c, survivor), "tandem_leader_changes_total") >= 1.0).then_some(())
    });
}
