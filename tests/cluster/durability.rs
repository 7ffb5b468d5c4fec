use crate::support::*;

#[test]
fn acknowledged_writes_survive_kill9_of_every_node() {
    let mut c = TestCluster::three();
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let term_before = c.status_of(&coordinator)["term"].as_u64().unwrap();
    for i in 0..5 {
        c.cli_ok("site-b", &["annotate", &format!("acknowledged note {i}")]);
    }
    for n in ["site-a", "site-b", "witness"] {
        c.kill9(n);
    }
    c.start_all();
    let after = c.wait_for_agreed_coordinator(None);
    for n in ["site-a", "site-b", "witness"] {
        let events = c.wait_for("every note back on the node", |c| {
            let out = c.cli(n, &["events", "--output", "json"]);
            let text = stdout(&out);
            (0..5)
                .all(|i| text.contains(&format!("acknowledged note {i}")))
                .then_some(text)
        });
        assert_eq!(events.lines().count(), 5, "{events}");
    }
    let s = c.status_of(&after);
    // openraft may resume a leader in its committed term after a restart.
    assert!(s["term"].as_u64().unwrap() >= term_before, "the term never goes back");
    assert_eq!(
        s["nodes"].as_array().unwrap().len(),
        3,
        "the cluster was not bootstrapped again"
    );
    // Resumed, not bootstrapped again.
    for n in ["site-a", "site-b", "witness"] {
        let log = std::fs::read_to_string(&c.node(n).log).unwrap();
        let second_run = log
            .split("agent starting")
            .nth(2)
            .unwrap_or_else(|| panic!("{n} started twice: {log}"));
        assert!(second_run.contains("Raft state found; resuming"), "{second_run}");
        assert!(!second_run.contains("bootstrapped the cluster"), "{second_run}");
    }
}

#[test]
fn a_node_that_missed_compacted_entries_catches_up_from_a_snapshot() {
    // Snapshots every 10 entries: the log is compacted soon after.
    let mut c = TestCluster::three_with("\n[storage]\nsnapshot_after_entries = 10\n");
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let away = if coordinator == "site-a" { "site-b" } else { "site-a" };
    c.kill9(away);
    for i in 0..60 {
        c.cli_ok(&coordinator, &["annotate", &format!("while away {i}")]);
    }
    c.start(away);
    let events = c.wait_for("the returning node holding every note", |c| {
        let text = stdout(&c.cli(away, &["events"]));
        (text.matches("while away").count() == 60).then_some(text)
    });
    assert!(events.contains("while away 59"), "{events}");
    let log = std::fs::read_to_string(&c.node(away).log).unwrap();
    assert!(
        log.contains("installed a snapshot sent by the coordinator"),
        "caught up through a snapshot: {}",
        c.logs_tail()
    );
}

/// The coordinator's disk turns slow (every fsync and fdatasync of its agent
/// delayed 300 ms, by strace's fault injection) while a spec is applied every
/// second. Leases rest on Raft's record of when a quorum last acknowledged
/// the coordinator, not on its state machine catching up, so no node loses
/// its lease and the group neither stops nor moves. (With the quorum
/// confirmed by a linearizable read under a 200 ms timeout, as before, every
/// lease ran out and every group stopped.)
#[test]
fn a_slow_coordinator_disk_stops_no_group() {
    use crate::resources::{group, ledger_lines, service, spec, wait_running_on};

    let mut c = TestCluster::three();
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let record = |i: usize| {
        format!(
            "[dns]\nzone = \"svc.test.\"\n\n[[dns.records]]\nname = \"change\"\ntype = \"TXT\"\ndata = \"change {i}\"\nttl = \"60s\"\n"
        )
    };
    let file = spec(
        &dir,
        "spec.toml",
        "",
        &format!("{}{}", service("svc", &ledger), record(0)),
    );
    c.cli_ok(&coordinator, &["apply", "-f", file.to_str().unwrap()]);
    let epoch = wait_running_on(&c, "site-a")["epoch"].as_u64().unwrap();

    let pid = c.node(&coordinator).pid().unwrap().to_string();
    let trace = dir.join("strace.log");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-qq", "-p", &pid, "-e", "trace=fsync,fdatasync"])
        .args(["-e", "inject=fsync,fdatasync:delay_enter=300000", "-o"])
        .arg(&trace)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace (Debian's strace package) runs");
    let slow = std::time::Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    for i in 1..=10 {
        let file = spec(
            &dir,
            "spec.toml",
            "",
            &format!("{}{}", service("svc", &ledger), record(i)),
        );
        let started = std::time::Instant::now();
        c.cli_ok(&coordinator, &["apply", "-f", file.to_str().unwrap()]);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(std::time::Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
    let slow_for = slow.elapsed();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(strace.id()).unwrap()),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = strace.wait();

    // The fault took effect: the agent's syncs were delayed, commits with them.
    let delayed = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .matches("(DELAYED)")
        .count();
    assert!(delayed >= 10, "only {delayed} delayed syncs in {}", trace.display());
    assert!(
        slowest >= std::time::Duration::from_millis(300),
        "a spec apply waited for the slow disk (slowest {slowest:?})"
    );
    // The tests' lease is 3 s: slow for longer than two leases.
    assert!(slow_for > std::time::Duration::from_secs(6), "slow for {slow_for:?}");

    // Nothing stopped or moved, and every node held its lease throughout.
    assert_eq!(
        ledger_lines(&ledger),
        vec![format!("start svc site-a {epoch}")],
        "the service started once and never stopped"
    );
    for n in c.running() {
        let s = c.status_of(&n);
        let g = group(&s, "web").unwrap();
        assert_eq!(
            (g["primary"].as_str(), g["epoch"].as_u64()),
            (Some("site-a"), Some(epoch)),
            "{g}"
        );
        assert_eq!(s["coordinator"], coordinator.as_str(), "no election: {s}");
        assert!(
            s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["lease_valid"] == true && n["state"] == "up"),
            "{s}"
        );
    }
}
