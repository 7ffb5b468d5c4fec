//! The fault suite: a Tandem cluster on separate hosts (network
//! namespaces on a bridge), faults injected for real (links cut with
//! nftables, in both directions or one, `kill -9`, SIGSTOP, agent
//! restarts), and a ledger that records what the service under test really
//! did, so a checker can prove the safety invariants over the whole run.
//!
//! * `net.rs`: the hosts, the cluster on them, the faults, convergence.
//! * `checker.rs`: the invariants over the ledger's records.
//! * `answers.rs`: every node's DNS answer for every group, sampled from the
//!   client host every 20 ms, checked against the ledger's holders (no node
//!   answers a previous holder beyond the TTL after the new one's first
//!   accepted write).
//! * `tests/faults/ledger.py`: the ledger (on the client host), a fencing
//!   store: it refuses a write whose epoch is older than the newest it
//!   accepted for the group.
//! * `tests/faults/service.py`: the service Tandem runs on the nodes
//!   (an `exec` supervised process): writes to the ledger every 50 ms with
//!   its `TANDEM_EPOCH`, announces its stop on SIGTERM, and exits when the
//!   ledger refuses it.
//!
//! The spec has two exclusive groups: alpha prefers site-a, beta site-b.
//! Every test ends with [`FaultCluster::finish`]: heal, converge within
//! 60 s, the acknowledged spec is intact, zero violations; it prints a
//! `FAULT-SUMMARY` line (see it with `--success-output immediate` or
//! `--no-capture`). `TANDEM_FAULT_SEED=N` replays a random schedule;
//! `TANDEM_FAULT_KEEP=1` keeps the logs and the ledger of every test.
//!
//! Three scenarios reproduce bugs this suite found, fixed since
//! (ARCHITECTURE.md): cutting only the link between the sites, a witness
//! that fell behind, an isolated primary's agent restarting. The random
//! schedules draw every fault kind on every node, the witness included,
//! whatever else is wrong at the time; `TANDEM_FAULT_RUNS=N` runs N of them
//! in a row with progress and a `RANDOM-SUMMARY` line.
//!
//! Needs root, iproute2, nftables and python3 (`.ci/run` installs them).

mod answers;
mod checker;
mod lives;
mod net;

use std::time::Duration;

use net::{FaultCluster, GROUPS, Holder, LEASE, Life, MEMBERS, NODES, WAIT, mono};

/// The holders of both groups now (from the ledger).
fn holders(c: &FaultCluster) -> Vec<(&'static str, Holder)> {
    GROUPS.iter().map(|(g, _, _)| (*g, c.holder(g).unwrap())).collect()
}

fn other_member(m: &str) -> &'static str {
    MEMBERS.iter().copied().find(|n| *n != m).unwrap()
}

/// Records, for `d`, every group that moves: a message for it from any
/// other node or epoch than its holder's before (`before`), or a holder
/// that stopped writing for two seconds. Returns what it saw.
fn watch_still(c: &FaultCluster, before: &[(&'static str, Holder)], d: Duration) -> Vec<String> {
    let from = mono();
    let start = std::time::Instant::now();
    let mut moved = Vec::new();
    while start.elapsed() < d {
        std::thread::sleep(Duration::from_millis(500));
        let records = c.records();
        for (group, h) in before {
            if let Some(r) = records
                .iter()
                .find(|r| r.group == *group && r.t > from && (r.node != h.node || r.epoch != h.epoch || !r.accepted))
            {
                let what = format!(
                    "{group} moved from {} (epoch {}) to {} (epoch {}) {:.2} s after the fault",
                    h.node,
                    h.epoch,
                    r.node,
                    r.epoch,
                    r.t - from
                );
                if !moved.contains(&what) {
                    moved.push(what);
                }
            }
            let now = c.holder(group).unwrap();
            if mono() - now.t > 2.0 {
                let what = format!("{group}'s service on {} stopped writing", now.node);
                if !moved.iter().any(|m| m.starts_with(&what)) {
                    moved.push(format!("{what} {:.2} s after the fault", now.t - from));
                }
            }
        }
    }
    moved
}

/// The first accepted message of `group` from `node` received after `t`.
fn first_from(c: &FaultCluster, group: &str, node: &str, t: f64) -> Option<checker::Record> {
    c.records()
        .into_iter()
        .find(|r| r.group == group && r.node == node && r.accepted && r.t > t)
}

/// Lose a site: `kill -9` of its agent and of the services it runs (alpha's
/// primary: site-a unless placement chose otherwise). Its groups start on
/// the other site once its lease certainly expired (there are no fence
/// devices yet); the other site's groups never move; when the lost node
/// comes back it does not run them again.
#[test]
fn losing_the_primary_site_moves_its_groups_to_the_other_site_after_the_lease() {
    let mut c = FaultCluster::start("lose_site");
    let before = holders(&c);
    let lost = before[0].1.node.clone();
    let survivor = other_member(&lost);
    let t_kill = mono();
    c.kill9(&lost);
    for (group, h) in &before {
        if h.node != lost {
            continue;
        }
        let taken = c.wait_for(&format!("{group} writing from {survivor}"), WAIT, |c| {
            first_from(c, group, survivor, t_kill)
        });
        let takeover = taken.t - t_kill;
        c.note_figure(format!(
            "{group}: takeover by {survivor} {takeover:.2} s after kill -9 of {lost}"
        ));
        assert!(taken.epoch > h.epoch, "a new epoch: {h:?} then {taken:?}");
        // The only proof that the lost node stopped is its lease: the group
        // may start elsewhere only once it certainly expired. Slack for a
        // heartbeat delayed on a loaded machine (the last grant may be
        // older than the kill by that much).
        assert!(
            takeover >= LEASE.as_secs_f64() - 1.0,
            "{group} started on {survivor} {takeover:.2} s after the kill, before {lost}'s lease ({LEASE:?}) can have expired"
        );
    }
    for (group, h) in &before {
        if h.node != lost {
            let now = c.holder(group).unwrap();
            assert_eq!(
                (&now.node, now.epoch),
                (&h.node, h.epoch),
                "{group} on the surviving site moved"
            );
        }
    }

    let (f, _) = c.finish(None);
    for (group, h) in &before {
        if h.node == lost {
            let runs = f.intervals[*group].iter().filter(|i| i.node == lost).count();
            assert_eq!(runs, 1, "{lost} ran {group} again: {:?}", f.intervals[*group]);
            assert_eq!(c.placement(group).unwrap().0, survivor, "{group} stays (no fail-back)");
        }
    }
}

/// Cut only the link between the two sites: the witness still reaches
/// both, so by DESIGN.md ("Two sites") nothing moves.
#[test]
fn cutting_only_the_link_between_the_sites_moves_nothing() {
    let mut c = FaultCluster::start("cut_sites");
    let before = holders(&c);
    c.cut("site-a", "site-b");
    let moved = watch_still(&c, &before, LEASE * 3 + Duration::from_secs(1));
    for m in &moved {
        c.note_figure(m.clone());
    }
    // Safety and convergence first, so a run shows both.
    c.finish(None);
    assert!(moved.is_empty(), "with only the link between the sites cut: {moved:?}");
}

/// Isolate the witness from both sites: nothing moves.
#[test]
fn isolating_the_witness_moves_nothing() {
    let mut c = FaultCluster::start("isolate_witness");
    let before = holders(&c);
    c.isolate("witness", &["site-a", "site-b"]);
    let moved = watch_still(&c, &before, LEASE * 3 + Duration::from_secs(1));
    assert!(moved.is_empty(), "with the witness isolated: {moved:?}");
    let (f, _) = c.finish(None);
    for (group, h) in &before {
        assert_eq!(f.intervals[*group].len(), 1, "{group} moved: {:?}", f.intervals[*group]);
        assert_eq!(f.intervals[*group][0].node, h.node);
    }
}

/// Cut a member that is not the coordinator off from everybody for longer
/// than a lease, while the others commit, then heal: with Pre-Vote it never
/// raises its term (nobody would vote for it), so it deposes nobody on its
/// return: the same coordinator, in the same term, before and after. (On
/// openraft 0.9, without Pre-Vote, a node returning like this deposed the
/// healthy coordinator in 11 of 15 tries.)
#[test]
fn a_member_cut_off_alone_and_healed_changes_no_coordinator() {
    let mut c = FaultCluster::start("member_alone");
    let coordinator = c.wait_agreed_coordinator();
    let alone = if coordinator == "site-a" { "site-b" } else { "site-a" };
    let term = |c: &FaultCluster| c.coordinator_status().and_then(|s| s["term"].as_u64());
    let before = term(&c).unwrap();
    c.isolate(alone, &others(alone));
    // The cut took effect: the member gives its lease up.
    c.wait_for(&format!("{alone} without a lease"), WAIT, |c| {
        (!c.own_lease_valid(alone)).then_some(())
    });
    c.apply_change();
    std::thread::sleep(LEASE);
    c.unisolate(alone, &others(alone));
    let after = c.wait_agreed_coordinator();
    assert_eq!(after, coordinator, "the healthy coordinator stays");
    assert_eq!(term(&c), Some(before), "no term was raised: nobody was deposed");
    c.finish(None);
}

/// Isolate the witness while the sites go on committing (a spec change):
/// its log falls behind, and after a lease it campaigns (the witness
/// fallback) with rising terms it can never win. Healed, the cluster must
/// still converge.
#[test]
fn a_witness_that_fell_behind_while_isolated_lets_the_cluster_converge() {
    let mut c = FaultCluster::start("witness_behind");
    let before = holders(&c);
    c.isolate("witness", &["site-a", "site-b"]);
    c.apply_change();
    // Past the lease: the witness campaigns.
    c.wait_for("the witness campaigning", WAIT, |c| {
        c.log_contains("witness", "campaigning, since no member seems able to")
            .then_some(())
    });
    let moved = watch_still(&c, &before, LEASE);
    assert!(moved.is_empty(), "with the witness isolated: {moved:?}");
    c.finish(None);
}

/// Isolate alpha's primary from the other site and the witness; the client
/// still reaches everybody, so its service could go on writing. It must
/// stop its service before the other site starts it: the ledger shows the
/// stop before the other site's first message (and the checker proves no
/// overlap).
#[test]
fn an_isolated_primary_stops_its_service_before_the_other_site_starts_it() {
    let mut c = FaultCluster::start("isolate_primary");
    let before = holders(&c);
    let isolated = before[0].1.node.clone();
    let other = other_member(&isolated);
    let t_cut = mono();
    c.isolate(&isolated, &[other, "witness"]);
    for (group, h) in &before {
        if h.node != isolated {
            continue;
        }
        let taken = c.wait_for(&format!("{group} writing from {other}"), WAIT, |c| {
            first_from(c, group, other, t_cut)
        });
        let records = c.records();
        let last = records
            .iter()
            .rev()
            .find(|r| r.group == *group && r.node == isolated)
            .unwrap()
            .clone();
        assert_eq!(
            last.kind, "stop",
            "{isolated}'s service was stopped by its agent (SIGTERM), not cut short: {last:?}"
        );
        assert!(
            last.t < taken.t,
            "{isolated} stopped {group} at {:.3}, after {other} started it at {:.3}",
            last.t,
            taken.t
        );
        c.note_figure(format!(
            "{group}: {isolated} stopped it {:.2} s after the cut, {other} started it {:.2} s after the cut ({:.2} s later)",
            last.t - t_cut,
            taken.t - t_cut,
            taken.t - last.t
        ));
    }
    for (group, h) in &before {
        if h.node != isolated {
            let now = c.holder(group).unwrap();
            assert_eq!((&now.node, now.epoch), (&h.node, h.epoch), "{group} on {other} moved");
        }
    }
    c.finish(None);
}

/// SIGSTOP alpha's primary (agent and services) past its lease, until alpha
/// runs on the other site; then SIGCONT, services first. The primary comes
/// back as a non-primary: its service's next write carries the old epoch
/// and the ledger refuses it; no stale write is ever accepted.
#[test]
fn a_paused_primary_resumes_fenced_and_its_stale_writes_are_refused() {
    let mut c = FaultCluster::start("pause_primary");
    let alpha = c.holder("alpha").unwrap();
    let paused = alpha.node.clone();
    let other = other_member(&paused);
    let t_pause = mono();
    c.pause(&paused);
    let taken = c.wait_for(&format!("alpha writing from {other}"), WAIT, |c| {
        first_from(c, "alpha", other, t_pause)
    });
    c.note_figure(format!(
        "{other} took alpha over {:.2} s after the pause",
        taken.t - t_pause
    ));
    // The service wakes first and writes with its old epoch; its agent
    // wakes once the ledger heard from it.
    c.resume_services_first(&paused);
    let t_resume = c.pauses[0].resumed;
    let refused = c.wait_for(&format!("{paused}'s stale write refused"), WAIT, |c| {
        c.records()
            .into_iter()
            .find(|r| r.group == "alpha" && r.node == paused && !r.accepted && r.t >= t_resume)
    });
    assert_eq!(refused.kind, "write", "{refused:?}");
    assert_eq!(refused.epoch, alpha.epoch, "{refused:?}");
    c.note_figure(format!(
        "{paused}'s stale write refused {:.3} s after its services resumed",
        refused.t - t_resume
    ));
    let (f, _) = c.finish(None);
    assert!(f.refused_after_pause >= 1, "{f:?}");
    assert_eq!(
        c.placement("alpha").unwrap().0,
        other,
        "{paused} resumed as a non-primary"
    );
    let late = c
        .records()
        .into_iter()
        .filter(|r| r.node == paused && r.epoch == alpha.epoch && r.t >= t_resume && r.accepted)
        .count();
    assert_eq!(late, 0, "stale writes accepted after the resume");
}

/// One direction only: the member that is not the coordinator stops
/// hearing the coordinator, which still hears it. Its heartbeats are relayed
/// through the witness: nothing moves, and never two primaries.
#[test]
fn a_member_that_cannot_hear_the_coordinator_never_makes_a_second_primary() {
    let mut c = FaultCluster::start("one_way");
    let coordinator = c.wait_agreed_coordinator();
    assert!(MEMBERS.contains(&coordinator.as_str()), "{coordinator}");
    let deaf = other_member(&coordinator);
    let before = holders(&c);
    c.cut_one_way(&coordinator, deaf);
    let moved = watch_still(&c, &before, LEASE * 3 + Duration::from_secs(1));
    for m in &moved {
        c.note_figure(m.clone());
    }
    c.finish(None);
    assert!(moved.is_empty(), "with one direction of the link cut: {moved:?}");
}

/// Restart the agent of a primary that is cut off from the other site and
/// the witness, a second before its lease lapses. Its group starts on the
/// other site once the lease certainly expired; the restarted agent must
/// not keep the service it finds running without a lease.
#[test]
fn restarting_the_agent_of_an_isolated_primary_never_makes_a_second_primary() {
    let mut c = FaultCluster::start("restart_isolated");
    let isolated = c.holder("alpha").unwrap().node;
    let other = other_member(&isolated);
    c.isolate(&isolated, &[other, "witness"]);
    // The schedule, not an assertion: the restart comes a second before the
    // lease the node had lapses.
    std::thread::sleep(LEASE - Duration::from_secs(1));
    c.restart_agent(&isolated);
    let t = mono();
    c.wait_for(&format!("alpha writing from {other}"), WAIT, |c| {
        first_from(c, "alpha", other, t - LEASE.as_secs_f64())
    });
    c.finish(None);
}

/// The agent of an isolated primary crashes and comes back while its service
/// runs on: the new agent finds the service, and must stop it by the end of
/// the lease its previous run held (recorded in the data directory), not a
/// lease after its own start.
#[test]
fn an_isolated_primary_whose_agent_crashes_and_returns_never_makes_a_second_primary() {
    let mut c = FaultCluster::start("crash_isolated");
    let isolated = c.holder("alpha").unwrap().node;
    let other = other_member(&isolated);
    c.isolate(&isolated, &[other, "witness"]);
    std::thread::sleep(LEASE - Duration::from_secs(1));
    c.crash_and_restart_agent(&isolated);
    let t = mono();
    c.wait_for(&format!("alpha writing from {other}"), WAIT, |c| {
        first_from(c, "alpha", other, t - LEASE.as_secs_f64())
    });
    c.finish(None);
}

/// The agent of alpha's primary freezes (SIGSTOP of the agent alone) while
/// its service runs on, and the node has no fence device: nothing can turn
/// it off, so alpha may start on the other site only once something that
/// outlives the agent has ended the old service (invariant 3): the lease
/// guard process (`tandem_node::guard`). The checker sees the services' real
/// lives: any overlap is two primaries. (Without the guard process, this
/// test found them overlapping for 9 to 35 ms, until the ledger refused the
/// old epoch.)
#[test]
fn a_frozen_agent_without_a_fence_device_never_makes_a_second_primary() {
    let mut c = FaultCluster::start("freeze_agent");
    let alpha = c.holder("alpha").unwrap();
    let frozen = alpha.node.clone();
    let other = other_member(&frozen);
    let t = mono();
    c.freeze_agent(&frozen);
    let taken = c.wait_for(&format!("alpha writing from {other}"), WAIT, |c| {
        first_from(c, "alpha", other, t)
    });
    let last = c
        .records()
        .into_iter()
        .rev()
        .find(|r| r.group == "alpha" && r.node == frozen && r.t > t);
    // The fault did what it is here for: the old service ran on after the
    // agent froze (it wrote), and the group moved.
    let last = last.unwrap_or_else(|| panic!("{frozen}'s service never wrote after its agent froze"));
    c.note_figure(format!(
        "{frozen}'s service last wrote {:.2} s after its agent froze; {other} took alpha over {:.2} s after ({:.3} s later)",
        last.t - t,
        taken.t - t,
        taken.t - last.t
    ));
    // What ended it: the lease guard process, not the ledger's refusal.
    assert!(
        c.log_contains(&frozen, "did not stop this service"),
        "{frozen}'s lease guard process did not kill the service:\n{}",
        c.logs_tail()
    );
    c.finish(None);
}

/// The agent of alpha's primary is killed (`kill -9` of the agent alone) and
/// not started again, while its service runs on, and the node has no fence
/// device: as above, alpha may start elsewhere only once the orphaned service
/// is certainly gone.
#[test]
fn a_killed_agent_without_a_fence_device_never_makes_a_second_primary() {
    let mut c = FaultCluster::start("kill_agent");
    let alpha = c.holder("alpha").unwrap();
    let dead = alpha.node.clone();
    let other = other_member(&dead);
    let t = mono();
    c.kill_agent(&dead);
    let taken = c.wait_for(&format!("alpha writing from {other}"), WAIT, |c| {
        first_from(c, "alpha", other, t)
    });
    let last = c
        .records()
        .into_iter()
        .rev()
        .find(|r| r.group == "alpha" && r.node == dead && r.t > t);
    let last = last.unwrap_or_else(|| panic!("{dead}'s service never wrote after its agent died"));
    c.note_figure(format!(
        "{dead}'s service last wrote {:.2} s after its agent died; {other} took alpha over {:.2} s after ({:.3} s later)",
        last.t - t,
        taken.t - t,
        taken.t - last.t
    ));
    // What ended it: the lease guard process, not the ledger's refusal.
    assert!(
        c.log_contains(&dead, "did not stop this service"),
        "{dead}'s lease guard process did not kill the service:\n{}",
        c.logs_tail()
    );
    c.finish(None);
}

/// A planned switchover of alpha while the witness is cut off from both
/// sites (clients still reach it). The witness keeps its lease for a while
/// and its DNS answers from the state it last applied: it must not go on
/// answering alpha's old primary once the new one wrote (the DNS sampler's
/// check in `finish`, against the TTL).
#[test]
fn a_switchover_while_the_witness_is_cut_off_leaves_no_stale_answer() {
    let mut c = FaultCluster::start("switch_no_witness");
    let alpha = c.holder("alpha").unwrap();
    let old = alpha.node.clone();
    let new = other_member(&old);
    c.isolate("witness", &MEMBERS);
    let t = mono();
    let out = c.wait_for("the switchover accepted", WAIT, |c| {
        MEMBERS.iter().find_map(|n| {
            let out = c.cli(n, &["switchover", "alpha", "--to", new], "20s");
            out.status.success().then_some(out)
        })
    });
    let taken = c.wait_for(&format!("alpha writing from {new}"), WAIT, |c| {
        first_from(c, "alpha", new, t)
    });
    c.note_figure(format!(
        "alpha switched from {old} to {new} {:.2} s after the witness was cut off ({})",
        taken.t - t,
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default()
    ));
    // Past the witness's lease and the TTL, still cut off: the sampler sees
    // what it answers all along.
    std::thread::sleep(LEASE + Duration::from_secs(1));
    c.finish(None);
}

/// splitmix64: a tiny seeded generator, so a schedule replays from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

#[derive(Debug)]
enum Fault {
    Cut(&'static str, &'static str),
    OneWay(&'static str, &'static str),
    Isolate(&'static str),
    Kill(&'static str),
    Pause(&'static str),
    Restart(&'static str),
}

/// How many faults a random schedule injects, and the bounds of each one's
/// duration: the whole test stays under about two minutes.
const RANDOM_FAULTS: usize = 4;
const MIN_HOLD_MS: u64 = 1_000;
const MAX_HOLD_MS: u64 = 8_000;

fn others(x: &str) -> Vec<&'static str> {
    NODES.iter().copied().filter(|n| *n != x).collect()
}

fn undo(c: &mut FaultCluster, f: &Fault) {
    match f {
        Fault::Cut(x, y) => c.uncut(x, y),
        Fault::OneWay(x, y) => c.uncut_one_way(x, y),
        Fault::Isolate(x) => c.unisolate(x, &others(x)),
        Fault::Kill(n) if c.life(n) == Life::Killed => c.revive(n),
        Fault::Pause(n) if c.life(n) == Life::Paused => c.resume(n),
        _ => {}
    }
}

/// One random schedule of [`RANDOM_FAULTS`] faults drawn from `seed`, on a
/// fresh cluster, finished with [`FaultCluster::finish`] (heal, converge,
/// nothing acknowledged lost, no violation). Every fault may hit any node,
/// the witness included, whatever else is wrong at the time, and a third
/// of them stay until the final heal.
fn random_schedule(seed: u64) -> (checker::Findings, Duration, Vec<String>) {
    let mut rng = SplitMix64(seed);
    let mut c = FaultCluster::start("random");
    for _ in 0..RANDOM_FAULTS {
        let running: Vec<&'static str> = NODES.iter().copied().filter(|n| c.life(n) == Life::Running).collect();
        let fault = loop {
            let x = rng.pick(&NODES);
            let y = rng.pick(&others(x));
            let f = match rng.below(6) {
                0 => Fault::Cut(x, y),
                1 => Fault::OneWay(x, y),
                2 => Fault::Isolate(x),
                3 => Fault::Kill(x),
                4 => Fault::Pause(x),
                _ => Fault::Restart(x),
            };
            let needs_running = matches!(f, Fault::Kill(_) | Fault::Pause(_) | Fault::Restart(_));
            if !needs_running || running.contains(&x) {
                break f;
            }
        };
        let hold = Duration::from_millis(MIN_HOLD_MS + rng.below(MAX_HOLD_MS - MIN_HOLD_MS));
        let keep = rng.below(3) == 0;
        match &fault {
            Fault::Cut(x, y) => c.cut(x, y),
            Fault::OneWay(x, y) => c.cut_one_way(x, y),
            Fault::Isolate(x) => c.isolate(x, &others(x)),
            Fault::Kill(n) => c.kill9(n),
            Fault::Pause(n) => c.pause(n),
            // A restarted agent may find no quorum (other faults are in
            // place): it must then keep its hands off, which the checker
            // sees; it is not waited for.
            Fault::Restart(n) => c.restart_agent(n),
        }
        // The schedule's own time, not an assertion: the fault lasts this long.
        std::thread::sleep(hold);
        if keep {
            c.note(format!("{fault:?} stays until the final heal"));
        } else {
            undo(&mut c, &fault);
        }
    }
    let (findings, convergence) = c.finish(Some(seed));
    (findings, convergence, c.faults.clone())
}

/// `TANDEM_FAULT_RUNS=N` random schedules in a row (default 1), from
/// `TANDEM_FAULT_SEED` (default: drawn from the time), each a fresh
/// cluster; progress per schedule, then the distribution of convergence
/// times and what the schedules covered. The first failing schedule stops
/// the run with its seed.
#[test]
fn random_fault_schedules_keep_the_invariants() {
    let first = match std::env::var("TANDEM_FAULT_SEED") {
        Ok(s) => s.parse().expect("TANDEM_FAULT_SEED is a number"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            t.as_nanos() as u64 ^ u64::from(std::process::id())
        }
    };
    let runs: u64 = std::env::var("TANDEM_FAULT_RUNS").map_or(1, |n| n.parse().expect("TANDEM_FAULT_RUNS is a number"));
    let mut convergence = Vec::new();
    let (mut moves, mut refused_after_pause) = (0usize, 0usize);
    let mut kinds: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let started = std::time::Instant::now();
    for i in 0..runs {
        let seed = first.wrapping_add(i);
        eprintln!(
            "random schedule {}/{runs}: seed {seed} (replay with TANDEM_FAULT_SEED={seed})",
            i + 1
        );
        let (f, took, faults) = random_schedule(seed);
        moves += f.intervals.values().map(|v| v.len().saturating_sub(1)).sum::<usize>();
        refused_after_pause += f.refused_after_pause;
        for fault in faults {
            let kind = fault.split(['(', ' ']).next().unwrap_or_default().to_string();
            *kinds.entry(kind).or_default() += 1;
        }
        convergence.push(took.as_secs_f64());
        eprintln!(
            "random schedule {}/{runs}: seed {seed}: converged in {:.2} s; {:.0} s so far",
            i + 1,
            took.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    convergence.sort_by(f64::total_cmp);
    let at = |q: f64| convergence[((convergence.len() - 1) as f64 * q).round() as usize];
    println!(
        "RANDOM-SUMMARY schedules={runs} first_seed={first} violations=0 convergence_s=[min {:.2} p50 {:.2} p90 {:.2} max {:.2}] \
         primary_changes={moves} refused_after_pause={refused_after_pause} faults={kinds:?}",
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0),
    );
}
