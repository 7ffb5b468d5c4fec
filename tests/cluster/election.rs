use crate::support::*;

#[test]
fn three_nodes_elect_exactly_one_coordinator_and_report_stable_json() {
    let mut c = TestCluster::three();
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    // Members campaign first; the witness only when no member can (see below).
    assert_ne!(coordinator, "witness", "a member is preferred as coordinator");

    // Every node answers for itself, with the documented JSON fields.
    for name in ["site-a", "site-b", "witness"] {
        let s = c.status_of(name);
        assert_eq!(s["cluster"], c.cluster.as_str());
        assert_eq!(s["coordinator"], coordinator.as_str());
        assert_eq!(s["answered_by"], name);
        assert!(s["term"].as_u64().unwrap() >= 1);
        let nodes = s["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3);
        for n in nodes {
            for key in ["name", "role", "state", "address", "voter", "lease_valid", "version"] {
                assert!(!n[key].is_null(), "{key} missing in {n}");
            }
            assert_eq!(n["voter"], true);
        }
        assert_eq!(node_in(&s, "witness").unwrap()["role"], "witness");
        assert_eq!(
            node_in(&s, "site-a").unwrap()["address"],
            c.node("site-a").address.as_str()
        );
    }

    // The table form names the coordinator too.
    let out = c.cli("site-b", &["status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("coordinator {coordinator}")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn after_kill9_of_the_coordinator_survivors_elect_another_and_the_old_one_rejoins() {
    let mut c = TestCluster::three();
    c.start_all();
    let first = c.wait_for_agreed_coordinator(None);
    c.kill9(&first);

    let second = c.wait_for_agreed_coordinator(Some(&first));
    assert_ne!(second, "witness");

    // Every survivor shows the dead node down once its lease certainly expired.
    c.wait_for("the killed coordinator shown down by every survivor", |c| {
        c.running()
            .iter()
            .all(|n| {
                c.status(n).is_some_and(|s| {
                    node_in(&s, &first).is_some_and(|d| d["state"] == "down" && d["lease_valid"] == false)
                })
            })
            .then_some(())
    });

    // Written while the old coordinator is away: it must catch up on it.
    c.cli_ok(&second, &["annotate", "written while the old coordinator was down"]);

    c.start(&first);
    c.wait_for("the old coordinator back up and caught up", |c| {
        let theirs = c.status(&second)?;
        let mine = c.status(&first)?;
        let up = node_in(&theirs, &first)?["state"] == "up";
        let caught_up = mine["applied_index"].as_u64()? >= theirs["commit_index"].as_u64()?;
        (up && caught_up && mine["coordinator"] == second.as_str()).then_some(())
    });
    let events = c.cli(&first, &["events", "--output", "json"]);
    assert!(
        stdout(&events).contains("written while the old coordinator was down"),
        "{}",
        stdout(&events)
    );
}

#[test]
fn sigterm_stops_an_agent_cleanly_with_exit_code_0() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    c.wait_for_log("site-b", "serving");
    assert_eq!(c.sigterm("site-b"), Some(0), "{}", c.logs_tail());
    let log = std::fs::read_to_string(&c.node("site-b").log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn the_witness_takes_over_when_the_only_surviving_member_is_behind() {
    let mut c = TestCluster::three();
    c.start_all();
    let x = c.wait_for_agreed_coordinator(None);
    let y = if x == "site-a" { "site-b" } else { "site-a" };
    c.kill9(y);
    // Committed by x and the witness while y is away: y's log falls behind.
    for i in 0..3 {
        c.cli_ok(&x, &["annotate", &format!("while {y} was away {i}")]);
    }
    c.kill9(&x);
    c.start(y);
    // y cannot win an election with a stale log; the witness can and must.
    let coordinator = c.wait_for_agreed_coordinator(Some(&x));
    assert_eq!(coordinator, "witness", "{}", c.logs_tail());
    let events = c.wait_for("y caught up from the witness", |c| {
        let text = stdout(&c.cli(y, &["events"]));
        text.contains("while").then_some(text)
    });
    assert_eq!(events.matches(&format!("while {y} was away")).count(), 3, "{events}");
    let log = std::fs::read_to_string(&c.node("witness").log).unwrap();
    assert!(log.contains("campaigning"), "the witness says why it campaigned: {log}");
}

#[test]
fn status_watch_streams_at_once_and_on_change_and_logs_can_be_json() {
    let mut c = TestCluster::three();
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let follower = ["site-a", "site-b"]
        .into_iter()
        .find(|n| *n != coordinator)
        .unwrap()
        .to_string();
    let mut watch = std::process::Command::new(BIN)
        .args([
            "status",
            "--watch",
            "--output",
            "json",
            "--endpoint",
            &c.node("witness").address,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()).unwrap();
    assert_eq!(first["answered_by"], "witness");
    // A change (a node going away) arrives as a new message.
    c.kill9(&follower);
    let deadline = std::time::Instant::now() + WAIT;
    let mut saw_change = false;
    while std::time::Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(5)) else {
            continue;
        };
        let s: serde_json::Value = serde_json::from_str(&line).unwrap();
        if node_in(&s, &follower).is_some_and(|n| n["state"] != "up") {
            saw_change = true;
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(saw_change, "the stream reported {follower} no longer up");

    // JSON logs: one object per line, the event's fields at the top level.
    c.sigterm("witness");
    let log = c.node("witness").log.clone();
    let config = c.node("witness").config.clone();
    std::fs::write(&log, "").unwrap();
    let mut json_agent = std::process::Command::new(BIN)
        .args(["agent", "--log-format", "json", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    c.wait_for_log("witness", "serving");
    let _ = json_agent.kill();
    let _ = json_agent.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        assert!(v.get("fields").is_none(), "flattened: {line}");
    }
    assert!(
        text.lines()
            .any(|l| l.contains("\"message\":\"agent starting\"") && l.contains("\"node\":\"witness\"")),
        "{text}"
    );
}
