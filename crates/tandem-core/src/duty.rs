//! What a node must do with one group now: the executor's decisions.
//!
//! The executor carries duties out (it starts, monitors and stops through
//! resource agents, and reports); every choice of *whether* to run is made
//! here, from the committed state, this node's lease and what it runs, so
//! that it can be tested exhaustively and simulated. Invariant 3
//! (self-fencing) lives here: an exclusive group stops a margin before this
//! node's lease ends ([`OwnLease::may_keep`]), and nothing exclusive starts
//! without a lease on a state as fresh as the grant ([`OwnLease::may_start`]).

use std::fmt;

use crate::lease::OwnLease;
use crate::spec::GroupKind;
use crate::state::ClusterState;
use crate::timing::{Millis, Timing};

/// What a node must do with a group now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duty {
    /// Start what is not started yet, in order, and monitor what runs.
    Run,
    /// Stop everything of the group here, in reverse order.
    Stop { why: StopReason },
    /// Start nothing and stop nothing: what runs keeps running (and is
    /// monitored, or only observed in maintenance); what does not, stays so.
    Keep { why: KeepReason },
}

/// Why a group must stop on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The group left the spec.
    LeftSpec,
    /// The group is assigned elsewhere (or nowhere) at `epoch`.
    NotAssigned { epoch: u64, to: Option<String> },
    /// This node's lease ends within the self-fencing margin (or has ended):
    /// an exclusive group stops before anyone may start it elsewhere.
    LeaseRunningOut,
    /// The agent is stopping: its exclusive groups stop (and move) while its
    /// heartbeats, lease guard and watchdog still run.
    Leaving,
    /// What runs was started here under epoch `from`, and the group is
    /// assigned here at the later epoch `to`: it was released and given back
    /// while this node did not see it, and the release was never carried
    /// out. Epochs change only by assignment, so the service stops and
    /// starts again under `to`, with that epoch as its fencing token.
    Reassigned { from: u64, to: u64 },
}

impl StopReason {
    /// Whether the stop is self-fencing: then every resource gets its stop,
    /// even after one failed, so that everything that can be stopped is.
    pub fn is_self_fencing(&self) -> bool {
        matches!(self, StopReason::LeaseRunningOut)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::LeftSpec => f.write_str("the group left the spec"),
            StopReason::NotAssigned { epoch, to: Some(to) } => {
                write!(f, "assigned to {to} at epoch {epoch}, not here")
            }
            StopReason::NotAssigned { epoch, to: None } => {
                write!(f, "assigned to no node at epoch {epoch}")
            }
            StopReason::LeaseRunningOut => f.write_str(
                "self-fencing: this node's lease runs out (no coordinator renewed it), so its exclusive group \
                 stops before it may start elsewhere",
            ),
            StopReason::Leaving => f.write_str("the agent is stopping: its exclusive group stops and moves first"),
            StopReason::Reassigned { from, to } => write!(
                f,
                "released and given back while this node was busy (epoch {from} to {to}): what runs under epoch \
                 {from} stops, to start again with epoch {to}"
            ),
        }
    }
}

/// Why a group neither starts nor stops on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// Not in the spec (and nothing of it runs here).
    NotInSpec,
    /// Assigned elsewhere or nowhere (and nothing of it runs here).
    NotAssigned,
    /// Assigned here, but this node holds no lease long enough to start an
    /// exclusive group (none, or it ends within the self-fencing margin; an
    /// inherited lease only keeps what runs).
    NoLease,
    /// Assigned here with a lease, but this node has not yet applied the log
    /// as far as the coordinator had when granting it.
    CatchingUp { applied: u64, needed: u64 },
    /// The agent is stopping: nothing exclusive starts.
    Leaving,
    /// Found running when the agent started: kept, untouched, until this
    /// run holds a lease (or the inherited lease runs out).
    FoundAfterRestart,
    /// Maintenance covers the group here: observe and report only.
    Maintenance(String),
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::NotInSpec => f.write_str("not in the spec"),
            KeepReason::NotAssigned => f.write_str("not assigned here"),
            KeepReason::NoLease => f.write_str("assigned here, waiting for a lease to start"),
            KeepReason::CatchingUp { applied, needed } => write!(
                f,
                "assigned here, catching up before starting (applied {applied}, the lease needs {needed})"
            ),
            KeepReason::Leaving => f.write_str("the agent is stopping: nothing exclusive starts"),
            KeepReason::FoundAfterRestart => f.write_str(
                "found running after an agent restart: kept as it is until this run holds a lease, at most until \
                 the previous run's lease runs out",
            ),
            KeepReason::Maintenance(why) => write!(f, "maintenance ({why}): monitoring and reporting only"),
        }
    }
}

/// Everything a group's duty on a node depends on.
#[derive(Debug, Clone, Copy)]
pub struct DutyInput<'a> {
    /// The committed state as this node applied it.
    pub cluster: &'a ClusterState,
    /// How far this node applied the log.
    pub applied: u64,
    pub group: &'a str,
    /// This node's name.
    pub me: &'a str,
    pub lease: &'a OwnLease,
    /// The agent is stopping.
    pub leaving: bool,
    /// The kind of the group as it runs here (the spec its resources were
    /// started from), when it differs from or outlived the committed spec.
    pub kind_here: Option<GroupKind>,
    /// How many of the group's resources, from the first, run here.
    pub started: usize,
    /// The epoch under which this node started what runs here; `None`
    /// when nothing runs or what runs was found after an agent restart.
    pub started_epoch: Option<u64>,
    /// How many resources the group has (as this node would run it).
    pub total: usize,
    pub now: Millis,
    pub timing: &'a Timing,
}

/// What this node must do with the group now.
pub fn duty(i: &DutyInput<'_>) -> Duty {
    let c = i.cluster;
    let spec = c.spec.group(i.group);
    let kind = spec.map(|g| g.kind).or(i.kind_here);
    let exclusive = kind == Some(GroupKind::Exclusive);
    let running = i.started > 0;
    let keep = |why| Duty::Keep { why };
    let stop = |why| Duty::Stop { why };
    // Invariant 3 first: whatever else holds, an exclusive group that runs
    // here stops before this node's lease runs out, and when its agent leaves.
    if running && exclusive {
        if !i.lease.may_keep(i.now, i.timing) {
            return stop(StopReason::LeaseRunningOut);
        }
        if i.leaving {
            return stop(StopReason::Leaving);
        }
    }
    // After an agent restart, what runs was found running on a state that
    // may be stale: until a lease of this run (and the log applied as far
    // as it requires) confirms that state, nothing is stopped or started on
    // it. Only self-fencing (above) acts, by the inherited lease's end.
    if running && i.lease.until().is_none() && i.lease.may_keep(i.now, i.timing) {
        return keep(KeepReason::FoundAfterRestart);
    }
    if let Some(why) = c.maintenance.covers(i.group, i.me) {
        return keep(KeepReason::Maintenance(why));
    }
    let Some(spec) = spec else {
        return if running {
            stop(StopReason::LeftSpec)
        } else {
            keep(KeepReason::NotInSpec)
        };
    };
    let gs = c.groups.get(i.group);
    if !gs.is_some_and(|g| g.assigned.contains(i.me)) {
        return if running {
            stop(StopReason::NotAssigned {
                epoch: gs.map_or(0, |g| g.epoch),
                to: gs.and_then(|g| g.assigned.iter().next().cloned()),
            })
        } else {
            keep(KeepReason::NotAssigned)
        };
    }
    if spec.kind == GroupKind::Clone {
        return Duty::Run;
    }
    if let (true, Some(from), Some(g)) = (running, i.started_epoch, gs)
        && from < g.epoch
    {
        return stop(StopReason::Reassigned { from, to: g.epoch });
    }
    if i.leaving {
        return keep(KeepReason::Leaving);
    }
    if i.started >= i.total && running {
        // Fully running: keeping it needs only the lease (checked above); a
        // node a few entries behind must not stop a healthy service.
        return Duty::Run;
    }
    if i.lease.may_start(i.now, i.applied, i.timing) {
        return Duty::Run;
    }
    if i.lease.may_start(i.now, u64::MAX, i.timing) {
        return keep(KeepReason::CatchingUp {
            applied: i.applied,
            needed: i.lease.index(),
        });
    }
    keep(KeepReason::NoLease)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::groups::GroupState;
    use crate::spec::Spec;

    const T: Timing = Timing {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(100),
        lease: Duration::from_millis(2000),
        clock_drift_margin: Duration::from_millis(200),
    };

    fn cluster(kind: &str, assigned: &[&str]) -> ClusterState {
        let text = format!(
            "[[groups]]\nname = \"web\"\nkind = \"{kind}\"\n[[groups.resources]]\nname = \"a\"\nagent = \"exec\"\ncommand = \"/bin/a\"\n[[groups.resources]]\nname = \"b\"\nagent = \"exec\"\ncommand = \"/bin/b\"\n"
        );
        let mut c = ClusterState {
            spec: Spec::parse(&text, "spec.toml", &[]).unwrap_or_else(|e| panic!("{e}")),
            ..ClusterState::default()
        };
        let mut g = GroupState::default();
        g.assign(&assigned.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(), 5);
        c.groups.insert("web".into(), g);
        c
    }

    fn leased(sent: u64, index: u64) -> OwnLease {
        let mut l = OwnLease::default();
        l.record_grant(Millis(sent), T.lease, index, &T);
        l
    }

    fn input<'a>(c: &'a ClusterState, lease: &'a OwnLease, started: usize, now: u64) -> DutyInput<'a> {
        DutyInput {
            cluster: c,
            applied: 10,
            group: "web",
            me: "a",
            lease,
            leaving: false,
            kind_here: None,
            started,
            started_epoch: None,
            total: 2,
            now: Millis(now),
            timing: &T,
        }
    }

    #[test]
    fn a_release_this_node_missed_stops_what_ran_under_the_old_epoch() {
        let lease = leased(1000, 1);
        let c = cluster("exclusive", &["a"]);
        let under = |epoch| DutyInput {
            started_epoch: epoch,
            ..input(&c, &lease, 2, 1100)
        };
        assert_eq!(
            duty(&under(Some(3))),
            Duty::Stop {
                why: StopReason::Reassigned { from: 3, to: 5 }
            }
        );
        assert_eq!(duty(&under(Some(5))), Duty::Run);
        // Found after an agent restart: the epoch it started under is not known.
        assert_eq!(duty(&under(None)), Duty::Run);
        // A clone's node set changes its epoch: it runs on.
        let clone = cluster("clone", &["a"]);
        let lease = leased(1000, 1);
        let i = DutyInput {
            started_epoch: Some(3),
            ..input(&clone, &lease, 2, 1100)
        };
        assert_eq!(duty(&i), Duty::Run);
    }

    #[test]
    fn an_assigned_exclusive_group_runs_with_a_fresh_lease() {
        let c = cluster("exclusive", &["a"]);
        let l = leased(1_000, 10);
        assert_eq!(duty(&input(&c, &l, 0, 1_000)), Duty::Run);
        assert_eq!(duty(&input(&c, &l, 2, 2_400)), Duty::Run);
    }

    #[test]
    fn the_ordinary_self_fencing_stop_says_why() {
        let c = cluster("exclusive", &["a"]);
        let l = leased(1_000, 10);
        // The lease ends at 3000; the margin is 500.
        let d = duty(&input(&c, &l, 2, 2_500));
        assert_eq!(
            d,
            Duty::Stop {
                why: StopReason::LeaseRunningOut
            }
        );
        let Duty::Stop { why } = d else { unreachable!() };
        assert!(why.is_self_fencing());
        assert!(why.to_string().contains("lease runs out"), "{why}");
        // Nothing started: nothing to stop, and nothing starts without a lease.
        assert_eq!(
            duty(&input(&c, &l, 0, 2_500)),
            Duty::Keep {
                why: KeepReason::NoLease
            }
        );
    }

    #[test]
    fn starting_needs_the_log_applied_as_far_as_the_grant_but_keeping_does_not() {
        let c = cluster("exclusive", &["a"]);
        let l = leased(1_000, 12);
        assert_eq!(
            duty(&input(&c, &l, 0, 1_000)),
            Duty::Keep {
                why: KeepReason::CatchingUp {
                    applied: 10,
                    needed: 12
                }
            }
        );
        assert_eq!(
            duty(&input(&c, &l, 2, 1_000)),
            Duty::Run,
            "a healthy service is not stopped"
        );
        // Partly started: nothing more starts until caught up, what runs stays.
        assert!(matches!(duty(&input(&c, &l, 1, 1_000)), Duty::Keep { .. }));
    }

    #[test]
    fn a_group_assigned_elsewhere_stops_naming_the_new_primary() {
        let c = cluster("exclusive", &["b"]);
        let l = leased(1_000, 0);
        let d = duty(&input(&c, &l, 1, 1_000));
        assert_eq!(
            d,
            Duty::Stop {
                why: StopReason::NotAssigned {
                    epoch: 5,
                    to: Some("b".into())
                }
            }
        );
        assert_eq!(
            duty(&input(&c, &l, 0, 1_000)),
            Duty::Keep {
                why: KeepReason::NotAssigned
            }
        );
    }

    #[test]
    fn leaving_stops_exclusive_groups_but_not_clones() {
        let l = leased(1_000, 0);
        let c = cluster("exclusive", &["a"]);
        let mut i = input(&c, &l, 2, 1_000);
        i.leaving = true;
        assert_eq!(
            duty(&i),
            Duty::Stop {
                why: StopReason::Leaving
            }
        );
        i.started = 0;
        assert_eq!(
            duty(&i),
            Duty::Keep {
                why: KeepReason::Leaving
            }
        );
        let c = cluster("clone", &["a"]);
        let mut i = input(&c, &l, 2, 1_000);
        i.leaving = true;
        assert_eq!(duty(&i), Duty::Run);
    }

    #[test]
    fn clones_run_without_a_lease() {
        let c = cluster("clone", &["a"]);
        let none = OwnLease::default();
        assert_eq!(duty(&input(&c, &none, 0, 1_000)), Duty::Run);
    }

    #[test]
    fn maintenance_keeps_everything_but_self_fencing() {
        let mut c = cluster("exclusive", &["b"]);
        c.maintenance.nodes.insert("a".into());
        let l = leased(1_000, 0);
        assert!(matches!(
            duty(&input(&c, &l, 2, 1_000)),
            Duty::Keep {
                why: KeepReason::Maintenance(_)
            }
        ));
        assert_eq!(
            duty(&input(&c, &l, 2, 2_600)),
            Duty::Stop {
                why: StopReason::LeaseRunningOut
            }
        );
    }

    #[test]
    fn a_group_that_left_the_spec_stops_and_self_fences_by_the_kind_it_ran_as() {
        let mut c = cluster("exclusive", &["a"]);
        c.spec = Spec::default();
        let l = leased(1_000, 0);
        assert_eq!(
            duty(&input(&c, &l, 1, 1_000)),
            Duty::Stop {
                why: StopReason::LeftSpec
            }
        );
        let mut i = input(&c, &l, 1, 2_600);
        i.kind_here = Some(GroupKind::Exclusive);
        assert_eq!(
            duty(&i),
            Duty::Stop {
                why: StopReason::LeaseRunningOut
            }
        );
    }

    #[test]
    fn a_restarted_agent_keeps_what_it_found_until_its_inherited_lease_runs_out() {
        let c = cluster("exclusive", &["a"]);
        let l = OwnLease::inherited(Some(Millis(3_000)));
        let found = Duty::Keep {
            why: KeepReason::FoundAfterRestart,
        };
        assert_eq!(duty(&input(&c, &l, 2, 2_000)), found, "fully running: kept");
        assert_eq!(
            duty(&input(&c, &l, 1, 2_000)),
            found,
            "nothing more starts on an inherited lease"
        );
        assert_eq!(
            duty(&input(&c, &l, 0, 2_000)),
            Duty::Keep {
                why: KeepReason::NoLease
            }
        );
        // Assigned elsewhere by a state that may be stale: not stopped on it.
        let moved = cluster("exclusive", &["b"]);
        assert_eq!(duty(&input(&moved, &l, 2, 2_000)), found);
        // A lease of this run confirms the state: then it stops.
        let mut granted = l;
        granted.record_grant(Millis(2_000), T.lease, 0, &T);
        assert!(matches!(duty(&input(&moved, &granted, 2, 2_000)), Duty::Stop { .. }));
        // No record (nothing inherited): nothing is kept on it.
        let none = OwnLease::inherited(None);
        assert!(matches!(duty(&input(&moved, &none, 2, 2_000)), Duty::Stop { .. }));
        assert_eq!(
            duty(&input(&c, &l, 2, 2_500)),
            Duty::Stop {
                why: StopReason::LeaseRunningOut
            }
        );
    }

    proptest! {
        /// Invariant 3 over random inputs: an exclusive group is never run
        /// or kept here unless the lease lasts beyond the self-fencing
        /// margin, never *started* (nothing or part running) without a lease
        /// on a state as fresh as the grant, and never run unassigned.
        #[test]
        fn exclusive_groups_run_only_under_a_lease(
            assigned_here in any::<bool>(),
            sent in 0u64..10_000,
            index in 0u64..20,
            applied in 0u64..20,
            inherited in proptest::option::of(0u64..10_000),
            granted in any::<bool>(),
            leaving in any::<bool>(),
            started in 0usize..=2,
            now in 0u64..12_000,
        ) {
            let c = cluster("exclusive", if assigned_here { &["a"] } else { &["b"] });
            let mut lease = OwnLease::inherited(inherited.map(Millis));
            if granted {
                lease.record_grant(Millis(sent), T.lease, index, &T);
            }
            let mut i = input(&c, &lease, started, now);
            i.applied = applied;
            i.leaving = leaving;
            let d = duty(&i);
            if started > 0 && !granted && lease.may_keep(Millis(now), &T) && !leaving {
                prop_assert_eq!(&d, &Duty::Keep { why: KeepReason::FoundAfterRestart });
            }
            if d == Duty::Run {
                prop_assert!(assigned_here && !leaving);
                prop_assert!(lease.may_keep(Millis(now), &T));
                if started < 2 {
                    prop_assert!(lease.may_start(Millis(now), applied, &T));
                }
            }
            if started > 0 && !lease.may_keep(Millis(now), &T) {
                prop_assert_eq!(&d, &Duty::Stop { why: StopReason::LeaseRunningOut });
            }
            if !assigned_here && started > 0 && granted {
                prop_assert!(matches!(d, Duty::Stop { .. }), "{:?}", d);
            }
        }
    }
}
