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
