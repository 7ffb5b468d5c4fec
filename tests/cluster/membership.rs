use crate::support::*;

#[test]
fn a_node_added_becomes_a_voter_and_a_node_removed_leaves() {
    let mut c = TestCluster::three();
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let follower = ["site-a", "site-b"].into_iter().find(|n| *n != coordinator).unwrap();

    let address = c.add_joiner("site-c", "member");
    c.start("site-c");
    // Asked of a follower: the request is forwarded to the coordinator.
    let out = c.cli(
        follower,
        &["members", "add", "site-c", &address, "--catch-up-timeout", "30s"],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), c.logs_tail());
    assert!(stdout(&out).contains("added site-c as a voter"), "{}", stdout(&out));

    c.wait_for("site-c listed as an up voter by every node", |c| {
        c.running()
            .iter()
            .all(|n| {
                c.status(n).is_some_and(|s| {
                    node_in(&s, "site-c").is_some_and(|m| m["voter"] == true && m["state"] == "up")
                        && s["nodes"].as_array().unwrap().len() == 4
                })
            })
            .then_some(())
    });

    // The new node knows the cluster: it answers with the same coordinator.
    c.wait_for("site-c agreeing on the coordinator", |c| {
        let s = c.status("site-c")?;
        (s["coordinator"] == c.status(&coordinator)?["coordinator"]).then_some(())
    });

    c.cli_ok(follower, &["members", "remove", "site-c"]);
    c.wait_for("site-c gone from every remaining node's status", |c| {
        ["site-a", "site-b", "witness"]
            .iter()
            .all(|n| {
                c.status(n)
                    .is_some_and(|s| node_in(&s, "site-c").is_none() && s["nodes"].as_array().unwrap().len() == 3)
            })
            .then_some(())
    });

    let events = stdout(&c.cli("witness", &["events"]));
    assert!(
        events.contains("node_added") && events.contains("node_removed"),
        "{events}"
    );
}

#[test]
fn a_change_that_would_leave_no_majority_is_refused_with_the_reason() {
    let mut c = TestCluster::three();
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let other = ["site-a", "site-b"].into_iter().find(|n| *n != coordinator).unwrap();
    c.kill9(other);
    c.wait_for("the killed member no longer up", |c| {
        c.status(&coordinator)
            .and_then(|s| (node_in(&s, other)?["state"] != "up").then_some(()))
    });

    // Removing the witness would leave {coordinator, other} with only one up.
    let out = c.cli(&coordinator, &["members", "remove", "witness"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("majority"), "{}", stderr(&out));

    // Unknown names and duplicates are refused too, nothing changes.
    let out = c.cli(&coordinator, &["members", "remove", "nobody"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"nobody\" is not a member"), "{}", stderr(&out));
    let addr = c.node("witness").address.clone();
    let out = c.cli(&coordinator, &["members", "add", "witness", &addr]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already a member"), "{}", stderr(&out));

    let s = c.status_of(&coordinator);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3);
}

#[test]
fn adding_a_node_that_never_catches_up_is_rolled_back() {
    let mut c = TestCluster::three();
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    // Nobody listens at this address.
    let address = format!("127.0.0.1:{}", free_port());
    let out = c.cli(
        &coordinator,
        &["members", "add", "ghost", &address, "--catch-up-timeout", "2s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not catch up"), "{}", stderr(&out));
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    c.wait_for("the ghost learner removed again", |c| {
        c.status(&coordinator)
            .and_then(|s| node_in(&s, "ghost").is_none().then_some(()))
    });
}
