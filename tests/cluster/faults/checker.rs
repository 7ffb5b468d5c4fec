//! The fault suite's checker: reads the ledger's records and finds every
//! violation of the safety invariants it can see (DESIGN.md: one primary,
//! fencing tokens). Pure: records and pause windows in, findings out.

use std::collections::BTreeMap;

use serde_json::Value;

use super::lives::Lifetime;

/// One message as the ledger received it (`tests/faults/ledger.py`).
#[derive(Debug, Clone)]
pub struct Record {
    /// The ledger's receive time, CLOCK_MONOTONIC seconds.
    pub t: f64,
    /// hello, write or stop.
    pub kind: String,
    pub node: String,
    pub group: String,
    pub epoch: u64,
    pub pid: u64,
    pub accepted: bool,
}

/// Parses the ledger's file; lines that are not messages (connection
/// closes) and a last line still being written are skipped.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let kind = v["type"].as_str()?;
            if !matches!(kind, "hello" | "write" | "stop") {
                return None;
            }
            Some(Record {
                t: v["t"].as_f64()?,
                kind: kind.to_string(),
                node: v["node"].as_str()?.to_string(),
                group: v["group"].as_str()?.to_string(),
                epoch: v["epoch"].as_u64()?,
                pid: v["pid"].as_u64().unwrap_or(0),
                accepted: v["verdict"] == "accepted",
            })
        })
        .collect()
}

/// A node was SIGSTOPped at `stopped` and continued at `resumed`.
#[derive(Debug, Clone)]
pub struct Pause {
    pub node: String,
    pub stopped: f64,
    /// `f64::INFINITY` while still paused.
    pub resumed: f64,
}

/// What one (node, epoch) did for a group: from its first message to its
/// last message or stop.
#[derive(Debug, Clone)]
pub struct Interval {
    pub node: String,
    pub epoch: u64,
    pub first: f64,
    pub last: f64,
    pub messages: usize,
    /// How many service processes (pids) sent them: more than one after a
    /// restart in place or an adopted service.
    pub processes: usize,
    pub refused: usize,
    /// Its last message was a stop (it was stopped through SIGTERM, not
    /// killed and not fenced by the ledger).
    pub stopped: bool,
}

#[derive(Debug, Default)]
pub struct Findings {
    pub violations: Vec<String>,
    /// Messages the ledger refused as stale.
    pub refused: usize,
    /// Of those, sent by a node after it resumed from a pause (allowed).
    pub refused_after_pause: usize,
    /// Per group, in order of first message.
    pub intervals: BTreeMap<String, Vec<Interval>>,
    /// Per group, the shortest time from one node's last activity to
    /// another node's first (service processes' lives), in seconds: a
    /// handover's margin. Positive, or there is a violation.
    pub min_gap: BTreeMap<String, f64>,
    /// Service processes whose lives were checked.
    pub lives: usize,
}

/// Whether `r`, a message of `node`, was sent after `node` resumed from a
/// pause that began after its interval did (so: a node that was paused
/// while active and came back).
fn after_a_pause(r: &Record, interval_first: f64, pauses: &[Pause]) -> bool {
    pauses
        .iter()
        .any(|p| p.node == r.node && p.stopped >= interval_first && r.t >= p.resumed)
}

/// Checks the records of every group:
///
/// (a) accepted messages have non-decreasing epochs in receive order, every
///     refusal was of a really stale epoch, and no two nodes ever got the
///     same epoch (the fencing token is unique per assignment);
/// (b) the intervals of different nodes never overlap. A node that was
///     paused while active may send messages after it resumed while
///     another node holds the group, as long as every one of them was
///     refused: those are left out of its interval (and counted). Any
///     other refused message is a stale writer that was still active, and
///     a violation.
pub fn check(records: &[Record], pauses: &[Pause]) -> Findings {
    let mut f = Findings::default();
    let mut by_group: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_group.entry(&r.group).or_default().push(r);
    }
    for (group, recs) in by_group {
        // (a) fencing tokens.
        let mut newest: Option<u64> = None;
        let mut last_t = f64::NEG_INFINITY;
        let mut epoch_owner: BTreeMap<u64, &str> = BTreeMap::new();
        for r in &recs {
            if r.t < last_t {
                f.violations
                    .push(format!("{group}: ledger records out of time order at t={:.3}", r.t));
            }
            last_t = r.t;
            if r.accepted {
                if let Some(n) = newest.filter(|n| r.epoch < *n) {
                    f.violations.push(format!(
                        "{group}: stale {} of {} with epoch {} accepted at t={:.3} after epoch {n}",
                        r.kind, r.node, r.epoch, r.t
                    ));
                }
                newest = newest.max(Some(r.epoch));
            } else {
                f.refused += 1;
                if newest.is_none_or(|n| r.epoch >= n) {
                    f.violations.push(format!(
                        "{group}: the ledger refused a current {} of {} (epoch {}) at t={:.3}",
                        r.kind, r.node, r.epoch, r.t
                    ));
                }
            }
            if let Some(other) = epoch_owner.insert(r.epoch, &r.node)
                && other != r.node
            {
                f.violations.push(format!(
                    "{group}: epoch {} used by both {other} and {}",
                    r.epoch, r.node
                ));
            }
        }

        // (b) one primary at a time.
        let mut intervals: Vec<Interval> = Vec::new();
        let mut members: Vec<Vec<&Record>> = Vec::new();
        let mut pids: Vec<Vec<u64>> = Vec::new();
        for r in &recs {
            match intervals.iter().position(|i| i.node == r.node && i.epoch == r.epoch) {
                Some(k) => {
                    let i = &mut intervals[k];
                    i.last = r.t;
                    i.messages += 1;
                    i.refused += usize::from(!r.accepted);
                    i.stopped = r.kind == "stop";
                    members[k].push(r);
                    if !pids[k].contains(&r.pid) {
                        pids[k].push(r.pid);
                        i.processes += 1;
                    }
                }
                None => {
                    intervals.push(Interval {
                        node: r.node.clone(),
                        epoch: r.epoch,
                        first: r.t,
                        last: r.t,
                        messages: 1,
                        processes: 1,
                        refused: usize::from(!r.accepted),
                        stopped: r.kind == "stop",
                    });
                    members.push(vec![r]);
                    pids.push(vec![r.pid]);
                }
            }
        }
        // Refusals: each must be a paused node's message after it resumed.
        // Those do not count as activity: the overlap check below uses each
        // interval without them (from its first to its last other message).
        let mut active: Vec<Option<(f64, f64)>> = Vec::new();
        for (k, i) in intervals.iter().enumerate() {
            let mut span: Option<(f64, f64)> = None;
            for r in &members[k] {
                if !r.accepted && after_a_pause(r, i.first, pauses) {
                    f.refused_after_pause += 1;
                    continue;
                }
                if !r.accepted {
                    f.violations.push(format!(
                        "{group}: {} with stale epoch {} was still active at t={:.3} (refused, never paused)",
                        r.node, r.epoch, r.t
                    ));
                }
                span = Some(span.map_or((r.t, r.t), |(a, _)| (a, r.t)));
            }
            active.push(span);
        }
        for a in 0..intervals.len() {
            for b in a + 1..intervals.len() {
                let (x, y) = (&intervals[a], &intervals[b]);
                let (Some((x0, x1)), Some((y0, y1))) = (active[a], active[b]) else {
                    continue;
                };
                if x.node == y.node || x0.max(y0) > x1.min(y1) {
                    continue;
                }
                f.violations.push(format!(
                    "{group}: two primaries: {} (epoch {}, {x0:.3}..{x1:.3}) and {} (epoch {}, {y0:.3}..{y1:.3}) overlap for {:.3} s",
                    x.node,
                    x.epoch,
                    y.node,
                    y.epoch,
                    x1.min(y1) - x0.max(y0)
                ));
            }
        }
        f.intervals.insert(group.to_string(), intervals);
    }
    f
}

/// One primary, from the service processes' lives (`lives.rs`): a process
/// is active from its creation to its death (or `now`, while it lives),
/// except while its node is paused (SIGSTOP of agent and services, as a
/// frozen VM). Any overlap of two nodes' activity for one group is a
/// violation, however short, with one exception: a process paused while
/// active and resumed may live on while another node holds the group if
/// the ledger accepted nothing from it after the resume (a fenced writer,
/// the fencing token's case). Every pid the ledger heard from must have a
/// life: activity the checker cannot see would let it pass by accident.
pub fn check_lives(lives: &[Lifetime], records: &[Record], pauses: &[Pause], now: f64, f: &mut Findings) {
    f.lives += lives.len();
    for r in records.iter().filter(|r| r.pid != 0) {
        if !lives.iter().any(|l| l.pid == r.pid && l.node == r.node) {
            let v = format!(
                "{}: {}'s pid {} wrote to the ledger (epoch {}) but its life was never recorded",
                r.group, r.node, r.pid, r.epoch
            );
            if !f.violations.contains(&v) {
                f.violations.push(v);
            }
        }
    }
    let mut by_group: BTreeMap<&str, Vec<&Lifetime>> = BTreeMap::new();
    for l in lives {
        by_group.entry(&l.group).or_default().push(l);
    }
    for (group, lives) in by_group {
        // Each life's active windows.
        let windows: Vec<Vec<(f64, f64)>> = lives
            .iter()
            .map(|l| {
                let end = l.died.unwrap_or(now);
                let mut w = vec![(l.born, end)];
                for p in pauses.iter().filter(|p| p.node == l.node) {
                    let fenced_after = p.stopped >= l.born
                        && !records.iter().any(|r| r.pid == l.pid && r.accepted && r.t >= p.resumed);
                    let cut_to = if fenced_after { f64::INFINITY } else { p.resumed };
                    w = w
                        .into_iter()
                        .flat_map(|(a, b)| {
                            let mut out = Vec::new();
                            if a < p.stopped.min(b) {
                                out.push((a, p.stopped.min(b)));
                            }
                            if cut_to < b && cut_to.max(a) < b {
                                out.push((cut_to.max(a), b));
                            }
                            out
                        })
                        .collect();
                }
                w
            })
            .collect();
        let mut gap = f64::INFINITY;
        for a in 0..lives.len() {
            for b in a + 1..lives.len() {
                let (x, y) = (lives[a], lives[b]);
                if x.node == y.node {
                    continue;
                }
                for &(x0, x1) in &windows[a] {
                    for &(y0, y1) in &windows[b] {
                        let overlap = x1.min(y1) - x0.max(y0);
                        if overlap > 0.0 {
                            f.violations.push(format!(
                                "{group}: two primaries: {} (epoch {}, pid {}, {x0:.3}..{x1:.3}) and {} (epoch {}, pid {}, {y0:.3}..{y1:.3}) active together for {:.1} ms",
                                x.node,
                                x.epoch,
                                x.pid,
                                y.node,
                                y.epoch,
                                y.pid,
                                overlap * 1000.0
                            ));
                        } else {
                            gap = gap.min(-overlap);
                        }
                    }
                }
            }
        }
        if gap.is_finite() {
            f.min_gap.insert(group.to_string(), gap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: f64, node: &str, epoch: u64, kind: &str, accepted: bool) -> Record {
        Record {
            t,
            kind: kind.into(),
            node: node.into(),
            group: "g".into(),
            epoch,
            pid: 1,
            accepted,
        }
    }

    #[test]
    fn a_clean_handover_passes() {
        let r = vec![
            rec(1.0, "a", 1, "hello", true),
            rec(2.0, "a", 1, "stop", true),
            rec(3.0, "b", 3, "hello", true),
            rec(4.0, "b", 3, "write", true),
        ];
        let f = check(&r, &[]);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        assert_eq!(f.intervals["g"].len(), 2);
        assert!(f.intervals["g"][0].stopped);
    }

    #[test]
    fn overlapping_primaries_and_stale_accepts_are_found() {
        let r = vec![
            rec(1.0, "a", 1, "hello", true),
            rec(2.0, "b", 3, "hello", true),
            rec(2.5, "a", 1, "write", true),
        ];
        let f = check(&r, &[]);
        assert!(
            f.violations.iter().any(|v| v.contains("two primaries")),
            "{:?}",
            f.violations
        );
        assert!(
            f.violations.iter().any(|v| v.contains("stale write")),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn refusals_are_allowed_only_after_a_pause() {
        let r = vec![
            rec(1.0, "a", 1, "hello", true),
            rec(1.5, "a", 1, "write", true),
            rec(5.0, "b", 3, "hello", true),
            rec(8.0, "a", 1, "write", false),
            rec(9.0, "b", 3, "write", true),
        ];
        let paused = [Pause {
            node: "a".into(),
            stopped: 2.0,
            resumed: 7.9,
        }];
        let f = check(&r, &paused);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        assert_eq!((f.refused, f.refused_after_pause), (1, 1));
        let f = check(&r, &[]);
        assert_eq!(f.violations.len(), 2, "{:?}", f.violations);
    }

    #[test]
    fn one_epoch_on_two_nodes_is_found() {
        let r = vec![rec(1.0, "a", 2, "hello", true), rec(2.0, "b", 2, "hello", true)];
        let f = check(&r, &[]);
        assert!(
            f.violations.iter().any(|v| v.contains("used by both")),
            "{:?}",
            f.violations
        );
    }

    fn life(node: &str, pid: u64, born: f64, died: Option<f64>) -> Lifetime {
        Lifetime {
            node: node.into(),
            group: "g".into(),
            epoch: pid,
            pid,
            born,
            died,
        }
    }

    fn lives_check(lives: &[Lifetime], records: &[Record], pauses: &[Pause]) -> Findings {
        let mut f = Findings::default();
        check_lives(lives, records, pauses, 100.0, &mut f);
        f
    }

    #[test]
    fn lives_a_handover_with_a_millisecond_to_spare_passes_and_its_margin_is_measured() {
        let f = lives_check(&[life("a", 1, 1.0, Some(2.0)), life("b", 3, 2.001, None)], &[], &[]);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        assert!((f.min_gap["g"] - 0.001).abs() < 1e-9, "{:?}", f.min_gap);
    }

    #[test]
    fn lives_any_overlap_counts_however_short() {
        let f = lives_check(&[life("a", 1, 1.0, Some(2.002)), life("b", 3, 2.0, None)], &[], &[]);
        assert_eq!(f.violations.len(), 1, "{:?}", f.violations);
        assert!(
            f.violations[0].contains("active together for 2.0 ms"),
            "{:?}",
            f.violations
        );
        // A process that never died is active until now.
        let f = lives_check(&[life("a", 1, 1.0, None), life("b", 3, 50.0, None)], &[], &[]);
        assert!(f.violations[0].contains("two primaries"), "{:?}", f.violations);
    }

    #[test]
    fn lives_a_frozen_process_is_not_active_and_a_fenced_one_after_resuming_is_allowed() {
        let lives = [life("a", 1, 1.0, Some(9.0)), life("b", 3, 5.0, None)];
        let paused = [Pause {
            node: "a".into(),
            stopped: 2.0,
            resumed: 8.0,
        }];
        let mut refused = rec(8.5, "a", 1, "write", false);
        refused.pid = 1;
        let f = lives_check(&lives, &[refused.clone()], &paused);
        assert!(f.violations.is_empty(), "{:?}", f.violations);
        // One write of it accepted after the resume: it was a primary again.
        let mut accepted = refused;
        accepted.accepted = true;
        let f = lives_check(&lives, &[accepted], &paused);
        assert!(
            f.violations.iter().any(|v| v.contains("two primaries")),
            "{:?}",
            f.violations
        );
        // Without the pause, the same lives overlap.
        let f = lives_check(&lives, &[], &[]);
        assert!(
            f.violations.iter().any(|v| v.contains("two primaries")),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn lives_a_writer_without_a_recorded_life_is_a_violation() {
        let mut r = rec(1.0, "a", 1, "hello", true);
        r.pid = 42;
        let f = lives_check(&[], &[r], &[]);
        assert!(f.violations[0].contains("never recorded"), "{:?}", f.violations);
    }
}
