//! The coordinator hands its role over where an operator expects no gap:
//! a clean stop (SIGTERM), standby of its node, its removal, and on
//! purpose (`tandem members transfer-leader`). Each test writes through the
//! witness without pause while it happens and checks that the role moved by
//! a transfer (one term, to the other member, the old coordinator saying so)
//! and that no write was refused for longer than the transfer took.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;

/// One `tandem annotate` through the witness: when it ran and whether it
/// was committed.
struct Write {
    start: Instant,
    end: Instant,
    ok: bool,
}

/// Writes through `endpoint`, one after another, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Write>>,
}

impl Writer {
    fn start(c: &TestCluster, through: &str) -> Writer {
        let endpoint = c.node(through).address.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut writes = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                let start = Instant::now();
                let out = tandem(&[
                    "annotate",
                    &format!("write {}", writes.len()),
                    "--endpoint",
                    &endpoint,
                    "--timeout",
                    "5s",
                ]);
                writes.push(Write {
                    start,
                    end: Instant::now(),
                    ok: out.status.success(),
                });
            }
            writes
        });
        Writer { stop, thread }
    }

    fn stop(self) -> Vec<Write> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// The longest time during which writes were refused: from the start of
/// the first refused write of a run to the end of its last.
fn longest_refusal(writes: &[Write]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut run_start: Option<Instant> = None;
    for w in writes {
        match (w.ok, run_start) {
            (false, None) => {
                run_start = Some(w.start);
                longest = longest.max(w.end - w.start);
            }
            (false, Some(s)) => longest = longest.max(w.end - s),
            (true, _) => run_start = None,
        }
    }
    longest
}

/// The longest committed write: how coarse the writer's view of a gap is.
fn slowest_write(writes: &[Write]) -> Duration {
    writes
        .iter()
        .filter(|w| w.ok)
        .map(|w| w.end - w.start)
        .max()
        .unwrap_or_default()
}

/// The elapsed time of the handover `node` logged.
fn logged_handover(c: &TestCluster, node: &str) -> (String, Duration) {
    let log = std::fs::read_to_string(&c.node(node).log).unwrap();
    let line = log
        .lines()
        .rfind(|l| l.contains("coordinator role handed over"))
        .unwrap_or_else(|| panic!("{node} did not log a handover:\n{log}"));
    let field = |key: &str| -> String {
        let at = line
            .find(&format!("{key}="))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + key.len()
            + 1;
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    (field("to"), Duration::from_millis(field("elapsed_ms").parse().unwrap()))
}

/// Runs `action` on a three-node cluster while writing through the witness,
/// then checks the handover: the other member leads, one term later, and
/// writes were refused at most for the transfer (plus one write's
/// resolution on each side). Returns the cluster, the old and the new
/// coordinator.
fn handover_during(action: impl FnOnce(&mut TestCluster, &str)) -> (TestCluster, String, String) {
    let mut c = TestCluster::three();
    c.start_all();
    let old = c.wait_for_agreed_coordinator(None);
    let other = if old == "site-a" { "site-b" } else { "site-a" };
    let term_before = c.status_of("witness")["term"].as_u64().unwrap();
    c.cli_ok("witness", &["annotate", "warm up"]);
    let writer = Writer::start(&c, "witness");
    std::thread::sleep(Duration::from_millis(500));
    action(&mut c, &old);
    let new = c.wait_for_agreed_coordinator(Some(&old));
    std::thread::sleep(Duration::from_millis(500));
    let writes = writer.stop();

    assert_eq!(new, other, "the most current member takes over, not the witness");
    let (to, took) = logged_handover(&c, &old);
    assert_eq!(to, other, "{old} logged the handover to {to}");
    let term_after = c.status_of("witness")["term"].as_u64().unwrap();
    assert_eq!(
        term_after,
        term_before + 1,
        "one election, started by the transfer, with no timeout and no second round"
    );
    let committed = writes.iter().filter(|w| w.ok).count();
    assert!(committed >= 5, "the writer kept writing: {committed} writes committed");
    let refused = longest_refusal(&writes);
    let resolution = slowest_write(&writes) * 2;
    assert!(
        refused <= took + resolution,
        "writes were refused for {refused:?}, longer than the transfer ({took:?}) and the writer's \
         resolution ({resolution:?})"
    );
    eprintln!(
        "handover {old} -> {new}: transfer {took:?}, writes refused for at most {refused:?} ({} of {} writes)",
        writes.len() - committed,
        writes.len()
    );
    (c, old, new)
}

#[test]
fn sigterm_of_the_coordinator_hands_its_role_over_first() {
    let (c, old, _) = handover_during(|c, old| {
        assert_eq!(c.sigterm(old), Some(0), "{}", c.logs_tail());
    });
    assert!(!c.running().contains(&old));
}

#[test]
fn standby_of_the_coordinators_node_hands_its_role_over() {
    let (c, old, new) = handover_during(|c, old| {
        c.cli_ok(old, &["standby", old]);
    });
    // Standby itself was committed, and the old coordinator follows the new one.
    let s = c.status_of(&old);
    assert_eq!(s["coordinator"], new.as_str());
    assert_eq!(node_in(&s, &old).unwrap()["standby"], true);
}

#[test]
fn removing_the_coordinator_hands_its_role_over_first() {
    let (c, old, new) = handover_during(|c, old| {
        c.cli_ok(old, &["members", "remove", old]);
        // A removed node hears no more from the cluster: it would report
        // its last view for ever.
        c.kill9(old);
    });
    let s = c.status_of(&new);
    let voters: Vec<&str> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["voter"] == true)
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert!(
        !voters.contains(&old.as_str()),
        "{old} is no voter any more: {voters:?}"
    );
}

#[test]
fn transfer_leader_on_purpose_and_to_a_chosen_voter() {
    let (c, old, new) = handover_during(|c, old| {
        // Asked of any node: the request goes to the coordinator.
        let out = c.cli_ok("witness", &["members", "transfer-leader", "--output", "json"]);
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["from"], old);
        assert!(reply["elapsed_ms"].as_u64().is_some(), "{reply}");
    });
    // Back on purpose, to a named voter.
    let out = c.cli_ok(&new, &["members", "transfer-leader", "--to", &old]);
    assert!(
        stdout(&out).contains(&format!("from {new} to {old}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(c.wait_for_agreed_coordinator(Some(&new)), old);
    // Refusals name the problem.
    let out = c.cli(&old, &["members", "transfer-leader", "--to", "nobody"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
}
