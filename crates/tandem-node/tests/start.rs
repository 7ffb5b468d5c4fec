//! The runtime's entry point in process, without the binary or any face: a
//! one-node cluster opens its data directory, starts Raft, leads, holds a
//! lease counted on the clock it was given, and leaves and stops.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tandem_core::Millis;
use tandem_core::config::NodeConfig;
use tandem_node::clock::Clock;
use tandem_node::{Node, NodeParams, StartError};

fn config(dir: &std::path::Path, cluster: &str) -> NodeConfig {
    // The gRPC address is only this member's record: nothing serves it here.
    let text = format!(
        r#"
[cluster]
name = "{cluster}"

[node]
name = "solo"
role = "member"
data_dir = "{}"
grpc_listen = "127.0.0.1:9"
dns_listen = "127.0.0.1:0"

[[members]]
name = "solo"
address = "127.0.0.1:9"
"#,
        dir.display()
    );
    NodeConfig::parse(&text, "solo.toml").unwrap()
}

fn params(config: NodeConfig, clock: Clock) -> NodeParams {
    NodeParams {
        config,
        client_tls: None,
        ocf_root: "/usr/lib/ocf".into(),
        clock,
        jitter_seed: None,
        simulation: None,
    }
}

/// Opens, starts and runs the node `solo` of `cluster` in `dir`.
async fn run_solo(dir: &std::path::Path, cluster: &str, clock: Clock) -> Node {
    Node::open(params(config(dir, cluster), clock))
        .unwrap()
        .start()
        .await
        .unwrap()
        .run()
}

/// Polls `f` every 20 ms for up to 20 s.
async fn wait_for(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_node_cluster_leads_and_counts_its_lease_on_the_clock_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, hand) = Clock::manual(1_700_000_000_000);
    let node = run_solo(dir.path(), "lib", clock.clone()).await;
    let ctx = node.context().clone();
    let lease = ctx.timing.lease;
    wait_for("leading", || ctx.is_coordinator()).await;
    // The clock stands still: every heartbeat is sent at 0, so the lease
    // always ends one lease after 0.
    wait_for("a lease counted from 0", || {
        ctx.liveness.lease_until() == Some(Millis(0).plus(lease))
    })
    .await;
    assert!(
        ctx.liveness
            .may_act(clock.now(), ctx.state.borrow().last_applied.map_or(0, |l| l.index))
    );
    // Ten seconds on: the old lease has run out on this clock, and the next
    // heartbeats renew it from their send time.
    hand.advance(Duration::from_secs(10));
    assert!(
        !ctx.liveness.own_lease_valid(clock.now()) || ctx.liveness.lease_until() == Some(Millis(10_000).plus(lease)),
        "a lease from 0 is not valid at 10 s"
    );
    wait_for("a lease counted from 10 s", || {
        ctx.liveness.lease_until() == Some(Millis(10_000).plus(lease))
    })
    .await;
    let stopped = node.leave_and_stop("the test is over").await;
    drop(stopped);
    assert!(
        dir.path().join("lease-end").exists(),
        "the lease's end is recorded for a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_data_directory_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    // Opening records the directory's identity; nothing of cluster one runs.
    drop(Node::open(params(config(dir.path(), "one"), Clock::system())).unwrap());
    match Node::open(params(config(dir.path(), "two"), Clock::system())) {
        Err(StartError::WrongIdentity(why)) => assert!(why.contains("one"), "{why}"),
        Err(e) => panic!("expected a wrong identity, got {e}"),
        Ok(_) => panic!("another cluster's data directory was accepted"),
    }
}

/// Found by the fault suite's random schedules (a run that never
/// converged): the coordinator released `web` from this node (epoch 2) and
/// gave it back (epoch 3) while the executor was busy, so it never saw the
/// release. It went on reporting the service as running at epoch 3 while
/// the service kept the fencing token of epoch 1 for good. A release this
/// node did not carry out must still end what ran under it: the service
/// runs again, with the epoch it is assigned at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_and_reassignment_the_executor_missed_restarts_the_service_with_its_new_epoch() {
    use std::collections::BTreeSet;
    use tandem_core::spec::Spec;
    use tandem_core::state::Command;

    let dir = tempfile::tempdir().unwrap();
    let epochs = dir.path().join("epochs");
    let node = run_solo(dir.path(), "epochs", Clock::system()).await;
    let ctx = node.context().clone();
    wait_for("leading", || ctx.is_coordinator()).await;
    wait_for("a lease", || ctx.liveness.lease_until().is_some()).await;
    let text = format!(
        "[[groups]]\nname = \"web\"\n[[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/sh\"\n\
         args = [\"-c\", \"echo $TANDEM_EPOCH >> {}; exec sleep 600\"]\nmonitor_interval = \"200ms\"\n",
        epochs.display()
    );
    let members: Vec<_> = ctx.members().into_iter().map(|(_, n)| n).collect();
    let spec = Spec::parse(&text, "spec.toml", &members).unwrap();
    ctx.raft
        .write(Command::ApplySpec {
            spec,
            source: text,
            expected_version: 0,
            summary: Vec::new(),
            actor: "test".into(),
            at_unix_ms: 0,
        })
        .await
        .unwrap();
    let group = || ctx.state.borrow().cluster.groups.get("web").cloned();
    let ran = || std::fs::read_to_string(&epochs).unwrap_or_default();
    wait_for("web running at epoch 1", || {
        group().is_some_and(|g| g.epoch == 1 && g.active_on("solo")) && ran() == "1\n"
    })
    .await;

    // Released and given back in one breath: the executor sees epoch 3 next.
    let assign = |nodes: &[&str], epoch| Command::Assign {
        group: "web".into(),
        nodes: nodes.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>(),
        epoch,
        reason: "the test".into(),
        at_unix_ms: 0,
        detected_unix_ms: None,
        planned: false,
    };
    let (a, b) = tokio::join!(ctx.raft.write(assign(&[], 2)), ctx.raft.write(assign(&["solo"], 3)));
    a.unwrap();
    b.unwrap();
    wait_for("web running again, under the epoch it is assigned at", || {
        let Some(g) = group() else { return false };
        g.active_on("solo") && ran().lines().last() == Some(&g.epoch.to_string())
    })
    .await;
    let last = ran();
    assert!(last.starts_with("1\n") && last.lines().count() >= 2, "{last:?}");
    drop(node.leave_and_stop("the test is over").await);
}
