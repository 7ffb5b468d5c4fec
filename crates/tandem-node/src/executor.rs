//! The node side of the resource manager: carries out the committed
//! assignments on this node, monitors what runs, restarts in place, and
//! reports every result back to the coordinator.
//!
//! One task per group. A group runs here only while it is assigned to this
//! node and, for an exclusive group, while this node holds a lease: a node
//! whose lease lapses stops its exclusive groups by itself, before the
//! coordinator may reassign them (invariant 3).
//!
//! Maintenance (`ClusterState::maintenance` covering the group here: the
//! cluster, the group or this node): the task starts, stops and restarts
//! nothing, also when the assignment changes or a monitor fails. It keeps
//! monitoring every resource of a group that is assigned here or may run
//! here and reports what it sees; a failed monitor is reported (phase
//! `failed`, the resource's result) but not counted towards the migration
//! threshold and not acted on. When maintenance ends it resumes from what it
//! observed: what is assigned and not running is started (a resource found
//! stopped under a running one is stopped down to it first), what runs
//! where it is not assigned is stopped. Self-fencing stays on: an exclusive
//! group still stops when this node's lease runs out, and the lease guard
//! still acts at its end.
//!
//! Role-change hooks ([`crate::hooks`]) run beside the task, never in its way.
//!
//! Freshness: every monitor's reported freshness is kept as this node's for
//! the group and sent with heartbeats. For groups whose spec sets `max_lag`,
//! or whose agents reported freshness anywhere, a node that does not run the
//! group probes it: it runs the monitors at their interval and keeps only
//! the freshness (a stopped resource's "not running" is expected).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tandem_agents::{Action, ActionResult, Env, Outcome, Runner, SimulatedAgents};
use tandem_core::Millis;
use tandem_core::duty::{Duty, DutyInput, KeepReason, duty};
use tandem_core::groups::{NodeReport, Phase, ResourceReport};
use tandem_core::spec::{GroupKind, GroupSpec, ResourceSpec};
use tandem_core::state::{Command, TransitionOutcome};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::hooks::{Hook, HookCall, HookMemory};
use crate::node::NodeContext;
use crate::report::send_report;

/// Where the executor keeps its runtime files and finds OCF agents.
#[derive(Clone)]
pub struct ExecutorConfig {
    pub state_dir: PathBuf,
    pub ocf_root: PathBuf,
    /// The record of the lease's end (`lease_file`), brought up to date
    /// before an exclusive group is marked guarded, so the out-of-process
    /// guard (`guard`) never judges a start by an older run's lease.
    pub lease_file: PathBuf,
    /// Per group: whether it may be active here as an exclusive group (the
    /// agent waits for all to clear before it stops).
    pub active: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
    /// The simulator's agents instead of processes (`None` on a real node).
    pub agents: Option<Arc<dyn SimulatedAgents>>,
}

/// Whether any exclusive group may still be active on this node.
pub fn any_exclusive_active(active: &Mutex<BTreeMap<String, Arc<AtomicBool>>>) -> bool {
    active
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .any(|a| a.load(Ordering::SeqCst))
}

/// Starts and ends a task per group as groups appear in the spec.
pub async fn run_executor(ctx: NodeContext, config: ExecutorConfig, mut shutdown: watch::Receiver<bool>) {
    let mut tasks: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let mut state = ctx.state.clone();
    loop {
        let names: Vec<String> = {
            let s = state.borrow_and_update();
            let mut names: Vec<String> = s.cluster.spec.groups.iter().map(|g| g.name.clone()).collect();
            // Groups that left the spec but may still run here: their task stops them.
            names.extend(s.cluster.groups.keys().cloned());
            names
        };
        tasks.retain(|_, t| !t.is_finished());
        for name in names {
            if let std::collections::btree_map::Entry::Vacant(slot) = tasks.entry(name) {
                let task = GroupTask::new(ctx.clone(), slot.key().clone(), &config);
                config
                    .active
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(slot.key().clone(), task.guard.clone());
                slot.insert(tokio::spawn(task.run(shutdown.clone())));
            }
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for (_, t) in tasks {
        let _ = t.await;
    }
}

struct GroupTask {
    ctx: NodeContext,
    name: String,
    state_dir: PathBuf,
    lease_file: PathBuf,
    ocf_root: PathBuf,
    agents: Option<Arc<dyn SimulatedAgents>>,
    /// The spec the runners were built from.
    spec: Option<GroupSpec>,
    runners: Vec<Runner>,
    /// How many resources, from the first, are started.
    started: usize,
    /// The epoch under which this executor started what runs (`None`:
    /// nothing runs, or it was found running after an agent restart).
    started_epoch: Option<u64>,
    next_monitor: Vec<Millis>,
    phase: Phase,
    /// The epoch this node last acted on.
    epoch: u64,
    last: BTreeMap<String, ResourceReport>,
    /// A report not yet committed; resent until it is.
    pending: Option<Command>,
    /// A stop failed: nothing more is done until an operator or fencing intervenes.
    stuck: bool,
    /// After a failure, the next start waits until then (no retry storm).
    retry_at: Option<Millis>,
    /// A start found the resource cannot run here; nothing is retried until
    /// the assignment changes (this epoch).
    gave_up: Option<u64>,
    /// Set while this exclusive group may be active here: the lease guard
    /// ends it if the lease runs out first.
    guard: Arc<AtomicBool>,
    /// The resources the guard may have to end.
    guarded: Arc<Mutex<Vec<ResourceSpec>>>,
    /// Maintenance covered the group here at the last step.
    in_maintenance: bool,
    /// In maintenance: what each resource's last monitor found.
    observed: Vec<Seen>,
    /// Monitors (or probes) due up to this resource, beside the started ones.
    monitored: usize,
    /// The exclusive group ran here (as primary) since it last stopped: its
    /// stop or release runs `after_demote`.
    was_primary: bool,
    /// Which hooks already ran (kept across agent restarts).
    hooks: HookMemory,
    /// `after_demote` is due once this node may act again (its state is
    /// then current, so the hook sees the epoch and the new primary).
    demote_pending: bool,
    /// Why the group last neither started nor stopped here (logged when it changes).
    keeping: Option<KeepReason>,
    /// This group's agents reported freshness here.
    reports_freshness: bool,
    /// The resource whose monitor reported this node's freshness last.
    freshness_from: Option<usize>,
}

/// What a monitor found, in maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Not monitored since maintenance began.
    Unknown,
    Running,
    /// Cleanly not running.
    NotRunning,
    /// Failed or hung: something may still run.
    Failing,
}

/// The pause between a failure and the next start on the same node.
const RESTART_DELAY: Duration = Duration::from_secs(1);

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::NotRunning => "not running".into(),
        Outcome::Failed(r) => format!("failed: {r}"),
        Outcome::TimedOut => "timed out".into(),
        Outcome::Unavailable(r) => format!("unavailable: {r}"),
    }
}

impl GroupTask {
    fn new(ctx: NodeContext, name: String, config: &ExecutorConfig) -> Self {
        GroupTask {
            ctx,
            name,
            state_dir: config.state_dir.clone(),
            lease_file: config.lease_file.clone(),
            ocf_root: config.ocf_root.clone(),
            agents: config.agents.clone(),
            spec: None,
            runners: Vec::new(),
            started: 0,
            started_epoch: None,
            next_monitor: Vec::new(),
            phase: Phase::Stopped,
            epoch: 0,
            last: BTreeMap::new(),
            pending: None,
            stuck: false,
            retry_at: None,
            gave_up: None,
            guard: Arc::new(AtomicBool::new(false)),
            guarded: Arc::new(Mutex::new(Vec::new())),
            in_maintenance: false,
            observed: Vec::new(),
            monitored: 0,
            was_primary: false,
            hooks: HookMemory::default(),
            demote_pending: false,
            reports_freshness: false,
            freshness_from: None,
            keeping: None,
        }
    }

    fn env(&self, resource: &str) -> Env {
        Env {
            group: self.name.clone(),
            resource: resource.to_string(),
            epoch: self.epoch,
            node: self.ctx.me.name.clone(),
        }
    }

    fn build_runners(&mut self, spec: &GroupSpec) {
        let dir: &Path = &self.state_dir;
        self.runners = spec
            .resources
            .iter()
            .map(|r| match &self.agents {
                Some(agents) => Runner::simulated(r, agents.clone()),
                None => Runner::new(r, dir, &self.ocf_root),
            })
            .collect();
        self.next_monitor = vec![self.ctx.clock.now(); spec.resources.len()];
        *self.guarded.lock().unwrap_or_else(|p| p.into_inner()) = spec.resources.clone();
        self.spec = Some(spec.clone());
    }

    /// Builds the runners from the committed `spec` when nothing runs here
    /// and they were built from another spec (or not yet). Returns whether
    /// it did.
    fn rebuild_runners(&mut self, spec: Option<&GroupSpec>) -> bool {
        let Some(new) = spec else { return false };
        if self.started > 0 || (self.spec.as_ref() == Some(new) && !self.runners.is_empty()) {
            return false;
        }
        self.build_runners(new);
        true
    }

    /// The group's committed spec and epoch, and what this node must do
    /// with it now: the core's [`duty`], from the committed state, this
    /// node's lease, whether the agent is leaving and what runs here.
    fn duty(&self) -> (Option<GroupSpec>, u64, Duty) {
        let s = self.ctx.state.borrow();
        let spec = s.cluster.spec.group(&self.name).cloned();
        let epoch = s.cluster.groups.get(&self.name).map_or(0, |g| g.epoch);
        // What would run: the runners while something runs, else the spec.
        let total = match &spec {
            Some(g) if self.started == 0 => g.resources.len(),
            _ => self.runners.len(),
        };
        let lease = self.ctx.liveness.own_lease();
        let duty = duty(&DutyInput {
            cluster: &s.cluster,
            applied: s.last_applied.map_or(0, |l| l.index),
            group: &self.name,
            me: &self.ctx.me.name,
            lease: &lease,
            leaving: self.ctx.leaving.load(Ordering::SeqCst),
            kind_here: self.spec.as_ref().map(|g| g.kind),
            started: self.started,
            started_epoch: self.started_epoch.filter(|_| self.started > 0),
            total,
            now: self.ctx.clock.now(),
            timing: &self.ctx.timing,
        });
        (spec, epoch, duty)
    }

    /// Logs why the group neither starts nor stops here, when that changes
    /// (at debug: waiting is the ordinary state of a secondary).
    fn note_keep(&mut self, duty: &Duty) {
        let keep = match duty {
            Duty::Keep { why } => Some(why.clone()),
            _ => None,
        };
        if keep != self.keeping {
            if let Some(why) = &keep {
                match why {
                    KeepReason::NoLease | KeepReason::CatchingUp { .. } | KeepReason::FoundAfterRestart => {
                        info!(group = %self.name, %why, "not starting")
                    }
                    _ => debug!(group = %self.name, %why, "nothing to do here"),
                }
            }
            self.keeping = keep;
        }
    }

    fn exclusive(&self) -> bool {
        self.spec.as_ref().is_some_and(|g| g.kind == GroupKind::Exclusive)
    }

    /// Whether a stop now is self-fencing: an exclusive group on a node whose
    /// lease is running out. Such a stop goes on past a failed resource, so
    /// that everything that can be stopped is.
    fn self_fencing(&self) -> bool {
        matches!(self.duty().2, Duty::Stop { why } if why.is_self_fencing())
    }

    /// Tells the lease guard whether this exclusive group may be active here.
    /// Marks whether this exclusive group may be active here, for the lease
    /// guards: the task beside this one, and the guard process that outlives
    /// a frozen or killed agent (`crate::guard`), through a marker in the
    /// group's state directory. Armed before a start, disarmed once a stop
    /// succeeded. Arming first brings the lease's record up to date.
    fn arm_guard(&self, active: bool) {
        let on = active && self.exclusive();
        let was = self.guard.swap(on, std::sync::atomic::Ordering::SeqCst);
        if on && !was {
            crate::lease_file::record_now(&self.ctx, &self.lease_file);
        }
        if on != was
            && let Err(e) = tandem_agents::guarded::set(&self.state_dir, &self.name, on)
        {
            warn!(group = %self.name, error = %e, "cannot mark the group for the lease guard process");
        }
    }

    async fn act(&mut self, index: usize, action: Action) -> ActionResult {
        let name = self
            .spec
            .as_ref()
            .map(|s| s.resources[index].name.clone())
            .unwrap_or_default();
        let env = self.env(&name);
        let result = self.runners[index].run(action, &env).await;
        if action == Action::Monitor {
            self.note_freshness_from(index, result.freshness);
        }
        let action_name = match action {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Monitor => "monitor",
        };
        self.last.insert(
            name.clone(),
            ResourceReport {
                name: name.clone(),
                action: action_name.into(),
                result: outcome_text(&result.outcome),
                at_unix_ms: self.ctx.clock.unix_ms(),
            },
        );
        if matches!(
            result.outcome,
            Outcome::Failed(_) | Outcome::TimedOut | Outcome::Unavailable(_)
        ) {
            self.ctx.counters.resource_failure(action_name);
        }
        if !matches!(result.outcome, Outcome::Ok | Outcome::NotRunning) || action != Action::Monitor {
            info!(
                group = %self.name,
                resource = %name,
                action = action_name,
                epoch = self.epoch,
                result = %outcome_text(&result.outcome),
                duration_ms = result.duration.as_millis() as u64,
                "resource action"
            );
        }
        result
    }

    fn report(&mut self, phase: Phase, failed_resource: Option<String>) {
        self.report_failure(phase, failed_resource, false);
    }

    fn report_failure(&mut self, phase: Phase, failed_resource: Option<String>, fatal: bool) {
        self.phase = phase;
        if phase == Phase::StopFailed && self.spec.as_ref().is_some_and(|g| g.kind == GroupKind::Exclusive) {
            self.ctx
                .self_fence
                .escalate(format!("a stop of {} failed or timed out", self.name));
        }
        if failed_resource.is_some() {
            self.retry_at = Some(self.ctx.clock.now().plus(RESTART_DELAY));
        }
        let resources = self
            .spec
            .as_ref()
            .map(|s| {
                s.resources
                    .iter()
                    .filter_map(|r| self.last.get(&r.name).cloned())
                    .collect()
            })
            .unwrap_or_default();
        self.pending = Some(Command::Report {
            node: self.ctx.me.name.clone(),
            group: self.name.clone(),
            report: NodeReport {
                epoch: self.epoch,
                phase,
                resources,
                at_unix_ms: self.ctx.clock.unix_ms(),
            },
            failed_resource,
            fatal,
        });
    }

    /// Sends the pending report to the coordinator (or proposes it here).
    /// Bounded: a report must never hold up a stop (the loop also waits
    /// for the lease's end).
    async fn flush(&mut self) {
        let Some(command) = self.pending.clone() else { return };
        let bound = self.ctx.timing.election_timeout * 2;
        if let Ok(Ok(())) = tokio::time::timeout(bound, send_report(&self.ctx, &command)).await {
            self.pending = None;
        }
    }

    /// Stops resources in reverse order down to `keep` started ones, and
    /// logs `why`. Returns false when a stop failed (the node then needs
    /// fencing).
    async fn stop_down_to(&mut self, keep: usize, why: &str) -> bool {
        if self.started > keep {
            info!(group = %self.name, epoch = self.epoch, started = self.started, keep, %why, "stopping");
        }
        // Self-fencing: every resource gets its stop, even after one failed.
        // (A stop that outlives the lease is the lease guard's to end.)
        let self_fencing = self.self_fencing();
        let mut ok = true;
        let mut i = self.started;
        while i > keep {
            i -= 1;
            let r = self.act(i, Action::Stop).await;
            // Unavailable: the agent cannot run here at all, so nothing of it runs.
            if !matches!(r.outcome, Outcome::Ok | Outcome::NotRunning | Outcome::Unavailable(_)) {
                warn!(group = %self.name, resource = i, "stop failed; this node must be fenced before the group runs elsewhere");
                ok = false;
                if !self_fencing {
                    return false;
                }
                continue;
            }
            if ok {
                self.started = i;
            }
        }
        if ok {
            self.arm_guard(self.started > 0);
        }
        ok
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let guard = tokio::spawn(lease_guard(
            self.ctx.clone(),
            self.name.clone(),
            self.state_dir.clone(),
            self.agents.clone(),
            self.guard.clone(),
            self.guarded.clone(),
            shutdown.clone(),
        ));
        let mut state = self.ctx.state.clone();
        let mut liveness = self.ctx.liveness.subscribe();
        // Find out what already runs here (after an agent restart), where it
        // may: the group is assigned here, or this node last reported it as
        // anything but stopped. Probing every group of a large spec on every
        // node would spawn thousands of monitor processes for nothing.
        let (spec, _, _) = self.duty();
        let (may_run_here, last_ran_here) = {
            let s = self.ctx.state.borrow();
            self.hooks = HookMemory::load(&self.state_dir, &self.name, &s.cluster);
            let me = &self.ctx.me.name;
            let ran = s
                .cluster
                .groups
                .get(&self.name)
                .and_then(|g| g.reports.get(me))
                .is_some_and(|r| r.phase != Phase::Stopped);
            let assigned = s
                .cluster
                .groups
                .get(&self.name)
                .is_some_and(|g| g.assigned.contains(me));
            (assigned || ran, ran)
        };
        // It last ran here (this node was its primary before a restart):
        // once it is known stopped here, that is a demotion.
        self.was_primary = last_ran_here && spec.as_ref().is_some_and(|g| g.kind == GroupKind::Exclusive);
        if let Some(spec) = spec.filter(|_| may_run_here) {
            self.build_runners(&spec);
            for i in 0..self.runners.len() {
                let r = self.act(i, Action::Monitor).await;
                // Only a clean "not running" proves nothing runs: a failing
                // or hanging monitor may hide a live process, which must
                // then be stopped like a running one.
                if !matches!(r.outcome, Outcome::NotRunning | Outcome::Unavailable(_)) {
                    self.started = i + 1;
                }
            }
            if self.started > 0 {
                info!(group = %self.name, started = self.started, "found the group partly or fully running");
                self.phase = Phase::Running;
                self.arm_guard(true);
                if self.exclusive() {
                    self.was_primary = true;
                }
            }
        }
        // A restarted agent that found services running keeps them as they
        // are until this run holds a lease, so a restart does not stop
        // healthy services; but never past the lease its previous run held
        // (the cluster may start them elsewhere right after): the duty is
        // `Keep { FoundAfterRestart }` until then, and self-fencing a margin
        // before that lease's end.
        loop {
            self.step().await;
            self.flush().await;
            let wake = self
                .next_monitor
                .iter()
                .take(self.started.max(self.monitored))
                .min()
                .copied();
            let retry = if self.pending.is_some() {
                Some(self.ctx.clock.now().plus(self.ctx.timing.heartbeat_interval * 2))
            } else {
                None
            };
            // Invariant 3: an exclusive group stops the moment the lease
            // lapses, not at the next monitor (and what was found running
            // after a restart is decided on once its inherited lease lapses).
            let lease_end = (self.started > 0)
                .then(|| self.ctx.liveness.own_lease().self_fence_at(&self.ctx.timing))
                .flatten();
            let until = if self.stuck {
                retry
            } else {
                [wake, retry, lease_end, self.retry_at].into_iter().flatten().min()
            };
            let sleep = until.map(|t| t.since(self.ctx.clock.now()));
            tokio::select! {
                r = state.changed() => if r.is_err() { break },
                r = liveness.changed() => if r.is_err() { break },
                _ = async { match sleep { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {}
                _ = shutdown.changed() => {
                    // A node whose agent stops leaves the cluster: nobody
                    // would stop its exclusive groups when its lease ends.
                    if self.exclusive() && self.started > 0 {
                        self.phase = Phase::Stopping;
                        if !self.stop_down_to(0, "the agent is stopping: its exclusive group stops first").await {
                            self.ctx
                                .self_fence
                                .escalate(format!("a stop of {} failed while the agent was stopping", self.name));
                        }
                    }
                    break;
                }
            }
            let gone = !self.ctx.state.borrow().cluster.groups.contains_key(&self.name)
                && self.ctx.state.borrow().cluster.spec.group(&self.name).is_none();
            if gone && self.started == 0 {
                break;
            }
        }
        // Clone groups keep running when the agent stops (a restarted agent
        // finds them again); exclusive groups were stopped above.
        guard.abort();
        if self.ctx.state.borrow().cluster.spec.group(&self.name).is_none() {
            self.ctx.liveness.set_own_freshness(&self.name, None);
        }
    }

    async fn step(&mut self) {
        if self.stuck {
            return;
        }
        if self.retry_at.is_some_and(|t| self.ctx.clock.now() >= t) {
            self.retry_at = None;
        }
        self.monitored = 0;
        self.check_failover();
        self.fire_demote();
        if let Some(why) = self.maintenance() {
            self.maintain(&why).await;
            return;
        }
        if self.in_maintenance {
            self.in_maintenance = false;
            if !self.resume_after_maintenance().await {
                return;
            }
        }
        let (spec, epoch, duty) = self.duty();
        // A changed resource list: stop everything under the old spec first.
        if let Some(new) = &spec
            && self.spec.as_ref().is_some_and(|old| old.resources != new.resources)
            && self.started > 0
            && duty == Duty::Run
        {
            self.phase = Phase::Stopping;
            if !self
                .stop_down_to(0, "the group's resources changed: stopping under the old spec first")
                .await
            {
                self.stuck = true;
                self.report(Phase::StopFailed, None);
                return;
            }
        }
        self.rebuild_runners(spec.as_ref());
        let total = self.runners.len();
        self.note_keep(&duty);
        if duty == Duty::Run {
            if epoch != self.epoch {
                self.epoch = epoch;
                // Still running under a new assignment (a clone's node set
                // changed): say so for the new epoch.
                if total > 0 && self.started == total {
                    self.report(Phase::Running, None);
                    return;
                }
            }
            let waiting = self.retry_at.is_some_and(|t| self.ctx.clock.now() < t) || self.gave_up == Some(epoch);
            if self.started < total && waiting {
                return;
            }
            if self.started < total {
                self.arm_guard(true);
                // The cluster must know this node may run the group before
                // it does: a start without a committed report could be
                // missed by the coordinator's safety check.
                if self.phase != Phase::Starting || self.pending.is_some() {
                    self.report(Phase::Starting, None);
                    self.flush().await;
                    if self.pending.is_some() {
                        self.retry_at = Some(self.ctx.clock.now().plus(self.ctx.timing.heartbeat_interval * 2));
                        return;
                    }
                }
                while self.started < total {
                    // The lease or the assignment may have gone during a long start.
                    if self.duty().2 != Duty::Run {
                        return;
                    }
                    let i = self.started;
                    let r = self.act(i, Action::Start).await;
                    if r.outcome != Outcome::Ok {
                        let name = self.spec.as_ref().map(|s| s.resources[i].name.clone());
                        let fatal = matches!(r.outcome, Outcome::Unavailable(_));
                        if fatal {
                            warn!(group = %self.name, resource = ?name, epoch, "cannot run on this node; not retrying here");
                            self.gave_up = Some(epoch);
                        }
                        // Undo a partial start (the failed one included).
                        self.started = i + 1;
                        let why = format!(
                            "undoing a partial start: {} failed to start",
                            name.as_deref().unwrap_or("?")
                        );
                        let ok = self.stop_down_to(0, &why).await;
                        if !ok {
                            self.stuck = true;
                            self.report_failure(Phase::StopFailed, name, fatal);
                        } else {
                            self.report_failure(Phase::Failed, name, fatal);
                        }
                        return;
                    }
                    if self.started == 0 {
                        self.started_epoch = Some(epoch);
                    }
                    self.started = i + 1;
                    let interval = self
                        .spec
                        .as_ref()
                        .map_or(Duration::from_secs(10), |s| s.resources[i].monitor_interval);
                    self.next_monitor[i] = self.ctx.clock.now().plus(interval);
                }
                self.report(Phase::Running, None);
                self.promoted(epoch);
                return;
            }
            // Running: monitor what is due.
            for i in 0..self.started {
                if self.ctx.clock.now() < self.next_monitor[i] {
                    continue;
                }
                let r = self.act(i, Action::Monitor).await;
                let interval = self
                    .spec
                    .as_ref()
                    .map_or(Duration::from_secs(10), |s| s.resources[i].monitor_interval);
                self.next_monitor[i] = self.ctx.clock.now().plus(interval);
                if r.outcome != Outcome::Ok {
                    let name = self.spec.as_ref().map(|s| s.resources[i].name.clone());
                    warn!(group = %self.name, resource = ?name, result = %outcome_text(&r.outcome), "monitor failed; restarting in place");
                    // Restart in place: stop it and everything after it, start again next step.
                    let why = format!(
                        "restarting in place: the monitor of {} failed",
                        name.as_deref().unwrap_or("?")
                    );
                    let ok = self.stop_down_to(i, &why).await;
                    if !ok {
                        self.stuck = true;
                        self.report(Phase::StopFailed, name);
                        return;
                    }
                    self.started = i;
                    self.report(Phase::Failed, name);
                    return;
                }
            }
        } else if let Duty::Stop { why } = &duty {
            // What is reported carries the current epoch, so that it
            // confirms the release made by that epoch.
            self.epoch = epoch;
            if why.is_self_fencing() {
                warn!(group = %self.name, epoch, %why, "self-fencing");
            }
            // Stop first, report after: self-fencing never waits on the network.
            self.phase = Phase::Stopping;
            if self.stop_down_to(0, &why.to_string()).await {
                self.report(Phase::Stopped, None);
                self.demoted();
            } else {
                self.stuck = true;
                self.report(Phase::StopFailed, None);
            }
        } else if self.started == 0 {
            // Keep, with nothing running here.
            self.epoch = epoch;
            if self.pending.is_none() && self.cluster_thinks_it_may_run_here() {
                self.report(Phase::Stopped, None);
            }
            // Released after a failure, or found stopped after a restart
            // (not merely waiting for a lease while still assigned).
            if !self.assigned_here() {
                self.demoted();
            }
            if self.should_probe() {
                self.probe().await;
            }
        }
    }

    /// Why maintenance covers this group on this node now (`None`: it does not).
    fn maintenance(&self) -> Option<String> {
        self.ctx
            .state
            .borrow()
            .cluster
            .maintenance
            .covers(&self.name, &self.ctx.me.name)
    }

    /// One step in maintenance: monitor and report, act only to self-fence.
    async fn maintain(&mut self, why: &str) {
        if !self.in_maintenance {
            info!(group = %self.name, %why, "maintenance: monitoring and reporting only; nothing is started, stopped or restarted here");
            self.in_maintenance = true;
            self.observed = vec![Seen::Unknown; self.runners.len()];
        }
        let (spec, epoch, duty) = self.duty();
        // Invariant 3 holds in maintenance too: an exclusive group stops
        // before this node's lease runs out, and when its agent leaves
        // (nobody would stop it at the lease's end). The duty says so.
        if let Duty::Stop { why } = &duty
            && self.started > 0
        {
            warn!(group = %self.name, %why, "maintenance, but the exclusive group must stop");
            self.epoch = epoch;
            self.phase = Phase::Stopping;
            if self.stop_down_to(0, &format!("in maintenance: {why}")).await {
                self.observed = vec![Seen::NotRunning; self.runners.len()];
                self.report(Phase::Stopped, None);
                self.demoted();
            } else {
                self.stuck = true;
                self.report(Phase::StopFailed, None);
            }
            return;
        }
        if self.rebuild_runners(spec.as_ref()) {
            self.observed = vec![Seen::Unknown; self.runners.len()];
        }
        let assigned = self.assigned_here();
        if !assigned && self.started == 0 && !self.cluster_thinks_it_may_run_here() {
            if self.should_probe() {
                self.probe().await;
            }
            return;
        }
        let total = self.runners.len();
        self.observed.resize(total, Seen::Unknown);
        self.monitored = total;
        let mut monitored = false;
        for i in 0..total {
            if self.ctx.clock.now() < self.next_monitor[i] {
                continue;
            }
            monitored = true;
            let r = self.act(i, Action::Monitor).await;
            self.observed[i] = match r.outcome {
                Outcome::Ok => Seen::Running,
                Outcome::NotRunning | Outcome::Unavailable(_) => Seen::NotRunning,
                Outcome::Failed(_) | Outcome::TimedOut => Seen::Failing,
            };
            let interval = self
                .spec
                .as_ref()
                .map_or(Duration::from_secs(10), |s| s.resources[i].monitor_interval);
            self.next_monitor[i] = self.ctx.clock.now().plus(interval);
        }
        if !monitored && epoch == self.epoch {
            return;
        }
        // What was not monitored yet is as it was: running if started.
        let before = self.started;
        let seen: Vec<Seen> = (0..total)
            .map(|i| match self.observed[i] {
                Seen::Unknown if i < before => Seen::Running,
                Seen::Unknown => Seen::NotRunning,
                s => s,
            })
            .collect();
        // Only a clean "not running" proves nothing runs.
        self.started = seen.iter().rposition(|s| *s != Seen::NotRunning).map_or(0, |i| i + 1);
        self.arm_guard(self.started > 0);
        let phase = if total > 0 && seen.iter().all(|s| *s == Seen::Running) {
            Phase::Running
        } else if !assigned && seen.iter().all(|s| *s == Seen::NotRunning) {
            Phase::Stopped
        } else {
            Phase::Failed
        };
        if phase != self.phase || epoch != self.epoch || self.pending.is_some() {
            if phase == Phase::Failed {
                let names: Vec<String> = self
                    .spec
                    .as_ref()
                    .map(|s| {
                        s.resources
                            .iter()
                            .zip(&seen)
                            .filter(|(_, s)| **s != Seen::Running)
                            .map(|(r, _)| r.name.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                warn!(group = %self.name, resources = ?names, "maintenance: not running or failing here; reported, not acted on");
            }
            self.epoch = epoch;
            // No failed resource: a failure in maintenance is not counted
            // towards the migration threshold.
            self.report(phase, None);
            if phase == Phase::Running && assigned && self.exclusive() {
                self.was_primary = true;
            }
        }
    }

    /// Maintenance ended: act again, from what the monitors found. A
    /// resource found stopped or failing under a running one is stopped down
    /// to it (not counted as a failure); the usual step then starts what is
    /// missing or stops what must not run. False when a stop failed.
    async fn resume_after_maintenance(&mut self) -> bool {
        let gap = (0..self.started).find(|&i| matches!(self.observed.get(i), Some(Seen::NotRunning | Seen::Failing)));
        info!(group = %self.name, started = self.started, "maintenance over: resuming from what runs here");
        self.observed.clear();
        if let Some(i) = gap {
            self.phase = Phase::Stopping;
            if !self
                .stop_down_to(
                    i,
                    "maintenance over: a resource under a running one was found stopped or failing",
                )
                .await
            {
                self.stuck = true;
                self.report(Phase::StopFailed, None);
                return false;
            }
            self.started = i;
            // The start that follows reports `starting` again.
            self.phase = Phase::Failed;
        }
        true
    }

    fn assigned_here(&self) -> bool {
        self.ctx
            .state
            .borrow()
            .cluster
            .groups
            .get(&self.name)
            .is_some_and(|g| g.assigned.contains(&self.ctx.me.name))
    }

    /// This node's agents reported `f` for the group: it is sent to the
    /// coordinator with the next heartbeat.
    /// What a monitor of resource `index` said about freshness. The resource
    /// that reported it last must keep saying so: a monitor of it that
    /// fails, times out or prints no freshness makes this node's value
    /// unknown (a replica whose replication broke must not stay the most
    /// current candidate on its last word).
    fn note_freshness_from(&mut self, index: usize, f: Option<tandem_core::groups::Freshness>) {
        match f {
            Some(f) => {
                self.freshness_from = Some(index);
                self.note_freshness(f);
            }
            None if self.freshness_from == Some(index) => {
                self.ctx.liveness.set_own_freshness(&self.name, None);
            }
            None => {}
        }
    }

    fn note_freshness(&mut self, f: tandem_core::groups::Freshness) {
        self.reports_freshness = true;
        self.ctx.liveness.set_own_freshness(&self.name, Some(f));
    }

    /// Whether this node, which does not run the group, should run its
    /// monitors for the freshness of its data: the group sets `max_lag` or
    /// its agents report freshness, and this node may host it.
    fn should_probe(&self) -> bool {
        let Some(spec) = &self.spec else { return false };
        if self.runners.is_empty() || spec.placement.avoid.contains(&self.ctx.me.name) {
            return false;
        }
        spec.max_lag.is_some() || self.reports_freshness || self.ctx.liveness.freshness_known(&self.name)
    }

    /// Runs the monitors that are due for their freshness only (nothing
    /// else of a probe is kept or reported). At each resource's monitor
    /// interval, one resource at a time, each bounded by its timeout.
    async fn probe(&mut self) {
        let total = self.runners.len();
        self.monitored = total;
        for i in 0..total {
            if self.ctx.clock.now() < self.next_monitor[i] {
                continue;
            }
            let Some(r) = self.spec.as_ref().map(|s| s.resources[i].clone()) else {
                return;
            };
            let env = self.env(&r.name);
            let result = self.runners[i].run(Action::Monitor, &env).await;
            self.note_freshness_from(i, result.freshness);
            self.next_monitor[i] = self.ctx.clock.now().plus(r.monitor_interval);
        }
    }

    /// The exclusive group reached `running` here at `epoch`: `after_promote`
    /// runs, once per epoch (again only after a demotion in between).
    fn promoted(&mut self, epoch: u64) {
        if !self.exclusive() {
            return;
        }
        self.was_primary = true;
        if self.hooks.promoted_epoch == epoch {
            return;
        }
        self.hooks.promoted_epoch = epoch;
        self.hooks.save(&self.state_dir, &self.name);
        let old_primary = {
            let s = self.ctx.state.borrow();
            crate::hooks::old_primary_for(&s.cluster, &self.name, epoch, &self.ctx.me.name)
        };
        self.spawn_hook(HookCall {
            hook: Hook::AfterPromote,
            group: self.name.clone(),
            epoch,
            old_primary,
            new_primary: Some(self.ctx.me.name.clone()),
        });
    }

    /// The exclusive group that ran here is known stopped here now (stopped,
    /// released, or found stopped after a restart): `after_demote` runs.
    fn demoted(&mut self) {
        if !self.was_primary {
            return;
        }
        self.was_primary = false;
        // A later promotion at the same epoch (the lease came back) is one again.
        self.hooks.promoted_epoch = 0;
        self.hooks.save(&self.state_dir, &self.name);
        self.demote_pending = true;
        self.fire_demote();
    }

    /// Runs a pending `after_demote` once this node may act (it holds a
    /// lease and applied the log as far as its grant): a node that stopped
    /// its group on a stale state (a restart, a lost lease) runs it with the
    /// current epoch and new primary.
    fn fire_demote(&mut self) {
        if !self.demote_pending {
            return;
        }
        let applied = self.ctx.state.borrow().last_applied.map_or(0, |l| l.index);
        if !self.ctx.liveness.may_act(self.ctx.clock.now(), applied) {
            return;
        }
        self.demote_pending = false;
        let (epoch, new_primary) = {
            let s = self.ctx.state.borrow();
            let me = &self.ctx.me.name;
            let g = s.cluster.groups.get(&self.name);
            let assigned = g.and_then(|g| g.assigned.iter().find(|n| *n != me).cloned());
            let next = assigned.or_else(|| {
                s.cluster
                    .transition_in_progress(&self.name)
                    .filter(|t| t.from.as_deref() == Some(me.as_str()))
                    .and_then(|t| t.to.clone())
            });
            (g.map_or(self.epoch, |g| g.epoch), next)
        };
        self.spawn_hook(HookCall {
            hook: Hook::AfterDemote,
            group: self.name.clone(),
            epoch,
            old_primary: Some(self.ctx.me.name.clone()),
            new_primary,
        });
    }

    /// Runs `after_failover` once for each transition of this group to this
    /// node that completed while it is still the primary at that epoch
    /// (remembered by id, so never again after a restart; a node that is
    /// catching up, without a lease, waits).
    fn check_failover(&mut self) {
        let applied = self.ctx.state.borrow().last_applied.map_or(0, |l| l.index);
        if !self.ctx.liveness.may_act(self.ctx.clock.now(), applied) {
            return;
        }
        let call = {
            let s = self.ctx.state.borrow();
            let me = self.ctx.me.name.as_str();
            let Some(t) = s
                .cluster
                .transitions
                .iter()
                .filter(|t| {
                    t.group == self.name
                        && t.outcome == TransitionOutcome::Completed
                        && t.to.as_deref() == Some(me)
                        && t.id >= self.hooks.failover_next
                })
                .max_by_key(|t| t.id)
            else {
                return;
            };
            self.hooks.failover_next = t.id + 1;
            let current = s
                .cluster
                .groups
                .get(&self.name)
                .is_some_and(|g| g.epoch == t.epoch && g.assigned.contains(me));
            current.then(|| HookCall {
                hook: Hook::AfterFailover,
                group: self.name.clone(),
                epoch: t.epoch,
                old_primary: t.from.clone(),
                new_primary: t.to.clone(),
            })
        };
        self.hooks.save(&self.state_dir, &self.name);
        if let Some(call) = call {
            self.spawn_hook(call);
        }
    }

    fn spawn_hook(&self, call: HookCall) {
        let hooks = self
            .ctx
            .state
            .borrow()
            .cluster
            .spec
            .group(&self.name)
            .map(|g| g.hooks.clone());
        if let Some(hooks) = hooks {
            crate::hooks::spawn(&self.ctx, &hooks, call);
        }
    }

    /// Whether the committed state still counts this node among those that
    /// may run the group though it is not assigned here (a report from
    /// before a restart, a release not yet confirmed).
    fn cluster_thinks_it_may_run_here(&self) -> bool {
        let s = self.ctx.state.borrow();
        s.cluster.groups.get(&self.name).is_some_and(|g| {
            let me = &self.ctx.me.name;
            !g.assigned.contains(me) && g.may_run().contains(me)
        })
    }
}

/// Invariant 3's last resort, beside a group's task (which may be busy in a
/// long action): if the node's lease ends while the exclusive group may be
/// active here, every supervised process of the group is SIGKILLed with its
/// process group, and if the group has resources Tandem cannot kill (commands,
/// OCF, systemd), self-fencing escalates to the watchdog.
async fn lease_guard(
    ctx: NodeContext,
    group: String,
    state_dir: PathBuf,
    agents: Option<Arc<dyn SimulatedAgents>>,
    active: Arc<AtomicBool>,
    resources: Arc<Mutex<Vec<ResourceSpec>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut liveness = ctx.liveness.subscribe();
    let poll = ctx.timing.heartbeat_interval;
    loop {
        // Wake at the lease's end (or every heartbeat while there is none):
        // this run's lease, or the one inherited from the previous run.
        let now = ctx.clock.now();
        let until = ctx.liveness.own_lease().end();
        let wait = until.map_or(poll, |t| t.since(now).max(Duration::from_millis(1)));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = liveness.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let now = ctx.clock.now();
        let ended = ctx.liveness.own_lease().ended(now);
        if !ended || !active.load(Ordering::SeqCst) {
            continue;
        }
        let specs = resources.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut unkillable = Vec::new();
        for r in &specs {
            let env = Env {
                group: group.clone(),
                resource: r.name.clone(),
                epoch: 0,
                node: ctx.me.name.clone(),
            };
            let killed = match &agents {
                Some(agents) if matches!(r.agent, tandem_core::spec::AgentSpec::Process { .. }) => agents.kill(r, &env),
                Some(_) => None,
                None => tandem_agents::kill_supervised(r, &state_dir, &env),
            };
            if let Some(pid) = killed {
                error!(%group, resource = %r.name, pid, "the lease ended with the service still running: killed its process group");
            } else if !matches!(r.agent, tandem_core::spec::AgentSpec::Process { .. }) {
                unkillable.push(r.name.clone());
            }
        }
        if !unkillable.is_empty() {
            ctx.self_fence.escalate(format!(
                "the lease ended while {group} may still run here ({} cannot be killed by Tandem)",
                unkillable.join(", ")
            ));
        }
        // Once per lapse: wait for the group to stop or the lease to return.
        while active.load(Ordering::SeqCst) && ctx.liveness.own_lease().ended(ctx.clock.now()) {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
