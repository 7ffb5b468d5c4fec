//! Operator controls end to end: switchover and forced failover (with their
//! progress and refusals), standby, maintenance, the event filters and the
//! failover history.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::resources::{group, kill9_pid, ledger_lines, service, service_pid, spec, wait_running_on};
use crate::support::*;

/// A three-node cluster running `web` (a supervised service) on site-a.
fn web_on_site_a(extra_group_keys: &str, extra: &str) -> (TestCluster, std::path::PathBuf) {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let file = spec(
        &dir,
        "spec.toml",
        extra_group_keys,
        &format!("{}{extra}", service("http", &ledger)),
    );
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    (c, ledger)
}

/// The refusal a CLI call ended with: its exit code must be 2 (a refused
/// request), and its stderr is returned.
fn refused(c: &TestCluster, node: &str, args: &[&str]) -> String {
    let out = c.cli(node, args);
    assert_eq!(out.status.code(), Some(2), "{args:?} must be refused: {out:?}");
    stderr(&out)
}

fn history(c: &TestCluster, node: &str) -> Vec<Value> {
    let out = stdout(&c.cli_ok(node, &["history", "web", "--output", "json"]));
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

fn phase_names(t: &Value) -> Vec<String> {
    t["phases_unix_ms"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_switchover_moves_the_group_phase_by_phase_and_refuses_unfit_targets() {
    let (c, ledger) = web_on_site_a("", "");
    // Refusals, each with its reason, before anything moves.
    let why = refused(&c, "witness", &["switchover", "web", "--to", "witness"]);
    assert!(why.contains("witness is a witness"), "{why}");
    let why = refused(&c, "witness", &["switchover", "web", "--to", "site-a"]);
    assert!(why.contains("site-a is already the primary of web"), "{why}");
    let why = refused(&c, "witness", &["switchover", "web", "--to", "nowhere"]);
    assert!(why.contains("no member named \"nowhere\""), "{why}");
    let why = refused(&c, "witness", &["switchover", "nosuch"]);
    assert!(why.contains("no group \"nosuch\""), "{why}");

    // The switchover itself, asked of the witness (forwarded to the
    // coordinator when it is not the coordinator), with each phase printed.
    let out = c.cli_ok("witness", &["switchover", "web"]);
    let text = stdout(&out);
    let phases: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    for p in [
        "requested",
        "stopped",
        "assigned",
        "started",
        "healthy",
        "dns",
        "completed",
    ] {
        assert!(phases.contains(&p), "phase {p} missing from:\n{text}");
    }
    assert!(text.contains("switchover of web from site-a to site-b"), "{text}");
    // Done means done: every node's status shows it running on site-b now.
    let s = c.status_of("site-a");
    let g = group(&s, "web").unwrap();
    assert_eq!(
        (g["primary"].as_str(), g["state"].as_str()),
        (Some("site-b"), Some("running")),
        "{g}"
    );
    // Stopped on site-a before it started on site-b.
    let lines = ledger_lines(&ledger);
    let stop_a = lines.iter().position(|l| l == "stop http site-a");
    let start_b = lines.iter().position(|l| l.starts_with("start http site-b"));
    assert!(stop_a.is_some() && stop_a < start_b, "{lines:?}");
    // The DNS zone every node serves answers the new primary.
    let dns = stdout(&c.cli_ok("site-a", &["dns", "--output", "json"]));
    assert!(dns.contains("_primary.web") && dns.contains("node=site-b"), "{dns}");

    // One record with every phase's time, in order (once site-a applied it:
    // reads are local).
    let h = c.wait_for("the switchover completed in site-a's history", |c| {
        let h = history(c, "site-a");
        (h.last()?["outcome"] == "completed").then_some(h)
    });
    let t = h.last().unwrap();
    assert_eq!(
        (t["kind"].as_str(), t["outcome"].as_str()),
        (Some("switchover"), Some("completed")),
        "{t}"
    );
    assert_eq!((t["from"].as_str(), t["to"].as_str()), (Some("site-a"), Some("site-b")));
    assert!(t["actor"].as_str().unwrap().contains('@'), "who asked is recorded: {t}");
    let times: Vec<u64> = ["detected", "decided", "fenced", "started", "healthy", "dns"]
        .iter()
        .map(|p| {
            t["phases_unix_ms"][p]
                .as_u64()
                .unwrap_or_else(|| panic!("{p} missing: {t}"))
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "phases in order: {times:?}");
    let table = stdout(&c.cli_ok("witness", &["history", "web"]));
    assert!(
        table.contains("switchover of web site-a -> site-b") && table.contains("healthy"),
        "{table}"
    );

    // The event log, filtered by group and time, shows the request and the outcome.
    let ev = stdout(&c.cli_ok("site-b", &["events", "--group", "web", "--since", "5m"]));
    assert!(ev.contains("switchover of web from site-a to site-b requested"), "{ev}");
    assert!(
        ev.contains("switchover of web from site-a to site-b completed in"),
        "{ev}"
    );
    assert!(!ev.contains("node site-a joined"), "only events about web: {ev}");
    let later = stdout(&c.cli_ok("site-b", &["events", "--since", "2099-01-01T00:00:00Z"]));
    assert!(later.trim().is_empty(), "{later}");

    // `events --follow` streams new events as they commit (WatchEvents).
    let next_seq = stdout(&c.cli_ok("site-a", &["events", "--output", "json"]))
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap()
        + 1;
    let mut follow = std::process::Command::new(BIN)
        .args([
            "events",
            "--follow",
            "--group",
            "web",
            "--since-seq",
            &next_seq.to_string(),
        ])
        .args(["--endpoint", &c.node("site-a").address])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let out = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        })
    };
    c.cli_ok("site-b", &["switchover", "web", "--to", "site-a"]);
    wait_running_on(&c, "site-a");
    assert_eq!(history(&c, "witness").len(), 2);
    c.wait_for("the followed events to show the second switchover", |_| {
        let l = lines.lock().unwrap();
        l.iter()
            .any(|l| l.contains("switchover of web from site-b to site-a completed"))
            .then_some(())
    });
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .all(|l| !l.contains("switchover of web from site-a to site-b")),
        "only events from --since-seq on: {:?}",
        lines.lock().unwrap()
    );
    let _ = follow.kill();
    let _ = follow.wait();
    let _ = reader.join();
}

#[test]
fn standby_drains_a_node_and_refuses_to_strand_a_group() {
    let (mut c, _) = web_on_site_a("", "");
    let why = refused(&c, "site-b", &["standby", "witness"]);
    assert!(why.contains("witness is a witness"), "{why}");
    let out = c.cli_ok("site-b", &["standby", "site-a", "--wait"]);
    assert!(stdout(&out).contains("site-a is drained"), "{out:?}");
    wait_running_on(&c, "site-b");
    let s = c.status_of("witness");
    assert_eq!(node_in(&s, "site-a").unwrap()["standby"], true, "{s}");
    // Draining is a planned move: a switchover in the history.
    let h = history(&c, "witness");
    assert_eq!(h.last().unwrap()["kind"], "switchover", "{h:?}");
    // Nothing may move to a node in standby, and draining the only other
    // host would strand the group.
    let why = refused(&c, "witness", &["switchover", "web", "--to", "site-a"]);
    assert!(why.contains("site-a is in standby"), "{why}");
    let why = refused(&c, "witness", &["standby", "site-b"]);
    assert!(why.contains("would stop web with nowhere to go"), "{why}");
    // Committed state: it survives a restart of every agent.
    for n in ["site-a", "site-b", "witness"] {
        c.sigterm(n);
        c.start(n);
    }
    c.wait_for_agreed_coordinator(None);
    c.wait_for("site-a still in standby after the restarts", |c| {
        let s = c.status("site-b")?;
        (node_in(&s, "site-a")?["standby"] == true).then_some(())
    });
    c.cli_ok("witness", &["unstandby", "site-a"]);
    // Read where it was written: a forwarded write is answered once the
    // node that forwarded it applied it (another node may lag a moment).
    let s = c.status_of("witness");
    assert_eq!(node_in(&s, "site-a").unwrap()["standby"], false, "{s}");
    let events = stdout(&c.cli_ok("witness", &["events"]));
    assert!(
        events.contains("site-a in standby") && events.contains("site-a out of standby"),
        "{events}"
    );
}

#[test]
fn maintenance_keeps_tandem_from_moving_a_group_until_it_is_off() {
    let (mut c, _) = web_on_site_a("", "");
    let why = refused(&c, "witness", &["maintenance", "on", "--group", "nosuch"]);
    assert!(why.contains("no group \"nosuch\""), "{why}");
    c.cli_ok("witness", &["maintenance", "on"]);
    let s = c.status_of("site-b");
    assert_eq!(s["maintenance"], true, "{s}");
    let why = refused(&c, "witness", &["switchover", "web"]);
    assert!(why.contains("the cluster is in maintenance"), "{why}");
    // Lose site-a's agent and service: in maintenance nothing moves, the
    // status says why.
    if let Some(pid) = service_pid(&c, "site-a", "http") {
        kill9_pid(pid);
    }
    c.kill9("site-a");
    c.wait_for("site-a down in site-b's status", |c| {
        let s = c.status("site-b")?;
        (node_in(&s, "site-a")?["state"] == "down").then_some(())
    });
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let s = c.status_of("site-b");
        let g = group(&s, "web").unwrap();
        assert_ne!(g["primary"], "site-b", "nothing moves in maintenance: {g}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = c.status_of("site-b");
    let g = group(&s, "web").unwrap();
    assert_eq!(
        (&g["maintenance"], &g["primary"]),
        (&Value::Bool(true), &Value::from("site-a")),
        "{g}"
    );
    c.cli_ok("witness", &["maintenance", "off"]);
    wait_running_on(&c, "site-b");
    // The failover completes once every live node answers the new primary,
    // a moment after it runs.
    let t = c.wait_for("the failover completed in the history", |c| {
        let h = history(c, "witness");
        let t = h.last()?.clone();
        (t["outcome"] != "in_progress").then_some(t)
    });
    assert_eq!(
        (t["kind"].as_str(), t["outcome"].as_str()),
        (Some("failover"), Some("completed")),
        "{t}"
    );
    assert!(phase_names(&t).contains(&"detected".to_string()), "{t}");
}

#[test]
fn a_forced_failover_fences_an_unresponsive_primary_first() {
    let probe = tempfile::tempdir().unwrap();
    let fence_log = probe.path().join("fenced");
    // An exec fence device that records the plug it was asked to switch off;
    // its status answers off once it did (fencing is verified).
    let fencing = format!(
        "[fencing.devices.pdu]\nagent = \"exec\"\n\
         command = [\"/bin/sh\", \"-c\", \"case $TANDEM_FENCE_ACTION in off) sed -n 's/^plug=//p' >> {0};; status) test -s {0} && exit 2;; esac\"]\n\
         params = {{ plug = \"site-a\" }}\ntimeout = \"5s\"\n\n[fencing.nodes.site-a]\nlevels = [[\"pdu\"]]\n",
        fence_log.display()
    );
    let (c, _) = web_on_site_a("", &fencing);
    // site-a stops answering (its agent is frozen, its service runs on).
    c.signal("site-a", nix::sys::signal::Signal::SIGSTOP);
    // The target must be up as the new coordinator sees it: a coordinator
    // that just took over has heard site-b for a moment only.
    c.wait_for(
        "site-a suspect or down and site-b up, at a coordinator other than site-a",
        |c| {
            let (b, w) = (c.status("site-b")?, c.status("witness")?);
            let coordinator = b["coordinator"].as_str()?;
            let agreed = coordinator != "site-a" && w["coordinator"].as_str() == Some(coordinator);
            let seen = c.status(coordinator)?;
            let up = |n| node_in(&seen, n).map(|n| n["state"] == "up");
            (agreed && !up("site-a")? && up("site-b")?).then_some(())
        },
    );
    let why = refused(&c, "witness", &["switchover", "web"]);
    assert!(
        why.contains("does not answer") && why.contains("tandem failover"),
        "{why}"
    );
    // On a loaded machine a late heartbeat can make site-b suspect for a
    // moment, and a suspect node may take nothing over: that refusal is
    // right, so ask again (bounded) rather than fail on it.
    let mut tries = 0;
    let out = loop {
        let out = c.cli("witness", &["failover", "web"]);
        tries += 1;
        if out.status.success() || tries == 10 || !stderr(&out).contains("site-b is suspect") {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(out.status.success(), "failover refused: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("completed"), "{text}");
    assert_eq!(std::fs::read_to_string(&fence_log).unwrap_or_default().trim(), "site-a");
    wait_running_on_survivors(&c, "site-b");
    let t = history(&c, "witness").last().cloned().unwrap();
    assert_eq!(
        (t["kind"].as_str(), t["to"].as_str()),
        (Some("failover"), Some("site-b")),
        "{t}"
    );
    let events = stdout(&c.cli_ok("witness", &["events", "--group", "web"]));
    assert!(
        events.contains("failover of web from site-a to site-b requested"),
        "{events}"
    );
    let all = stdout(&c.cli_ok("witness", &["events"]));
    let fenced = all.find("site-a fenced").expect("the fence is recorded");
    let running = all.find("web on site-b: running").expect("web ran on site-b");
    assert!(fenced < running, "fenced before it started elsewhere:\n{all}");
    // Let the frozen agent go; it must not take the group back.
    c.signal("site-a", nix::sys::signal::Signal::SIGCONT);
    if let Some(pid) = service_pid(&c, "site-a", "http") {
        kill9_pid(pid);
    }
}

/// `web` running on `on` as the nodes that still answer see it.
fn wait_running_on_survivors(c: &TestCluster, on: &str) {
    c.wait_for(&format!("web running on {on}"), |c| {
        for n in ["site-b", "witness"] {
            let s = c.status(n)?;
            let g = group(&s, "web")?;
            if g["state"] != "running" || g["primary"] != on {
                return None;
            }
        }
        Some(())
    });
}
