//! Prometheus metrics of a node (`GET /metrics`, OpenMetrics text format).
//!
//! Two kinds:
//!
//! - **Counters that accumulate while the process runs** ([`Counters`]):
//!   events applied by kind, failover phase histograms.
//!   They live as long as the process; [`Metrics::follow`] feeds the ones
//!   derived from the applied state (events with a higher sequence number
//!   than the last seen, transitions completed and not yet observed).
//! - **Values read at scrape time** ([`Scrape`]): node and group states,
//!   leases, Raft indexes, the counters the node runtime keeps (fencing
//!   attempts, heartbeats and leases) and the DNS responder's. Built into a fresh registry on every scrape from one
//!   snapshot, so a node or group that disappears leaves no stale series.
//!
//! Nothing here carries a secret: only names, states and numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tandem_core::state::{ClusterState, Transition, TransitionKind, TransitionOutcome};
use tandem_dns::StatsSnapshot;
use tandem_node::counters::NodeCountersSnapshot;
use tandem_node::liveness::LeaseCountersSnapshot;
use tandem_proto::v1 as pb;

use crate::convert::event_kind_str;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`to_text_format`]'s output: Prometheus' classic
/// text format, for clients that ask for `text/plain` (promtool, older
/// scrapers).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for the classic text format rather than
/// OpenMetrics (which stays the default, and wins when both are accepted).
pub fn wants_text_format(accept: &str) -> bool {
    accept.contains("text/plain") && !accept.contains("application/openmetrics-text")
}

/// An OpenMetrics exposition ([`Metrics::render`]) in Prometheus' classic
/// text format (0.0.4): a counter family's HELP and TYPE name its samples'
/// `_total` name, and there is no `# EOF` or `# UNIT`. Everything else is
/// written the same in both.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub kind: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub kind: String,
    pub outcome: String,
}

/// Buckets for failover durations, in seconds: from a fast switchover
/// (tens of milliseconds) to a fenced failover behind a slow device.
const DURATION_BUCKETS: [f64; 14] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Metrics that accumulate while the process runs.
///
/// To add a family: a field here, its construction in [`Counters::new`] and
/// one line in [`Counters::register`]; whoever counts reaches it through
/// `ApiContext::metrics`. What the node runtime counts is kept there as
/// plain atomics and read per scrape ([`Scrape`]).
#[derive(Clone, Debug)]
pub struct Counters {
    /// `tandem_events_total{kind}`: events applied since start, by kind.
    pub events: Family<KindLabels, Counter>,
    /// `tandem_transitions_total{kind,outcome}`: failovers and switchovers
    /// that ended since start, `completed` or `abandoned`.
    pub transitions: Family<TransitionLabels, Counter>,
    /// `tandem_failover_phase_seconds{kind,phase}`: time from the previous
    /// reached phase to this one, per completed transition.
    pub failover_phase_seconds: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// `tandem_failover_duration_seconds{kind}`: from the first reached phase
    /// to the last, per completed transition.
    pub failover_duration_seconds: Family<KindLabels, Histogram, fn() -> Histogram>,
    /// `tandem_leader_changes_total`: elections this node saw won (a
    /// coordinator in a newer term than the last one it knew).
    pub leader_changes: Counter,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            events: Family::default(),
            transitions: Family::default(),
            failover_phase_seconds: Family::new_with_constructor(duration_histogram),
            failover_duration_seconds: Family::new_with_constructor(duration_histogram),
            leader_changes: Counter::default(),
        }
    }

    fn register(&self, r: &mut Registry) {
        r.register(
            "tandem_events",
            "Events applied since the process started, by kind",
            self.events.clone(),
        );
        r.register(
            "tandem_transitions",
            "Failovers and switchovers that ended since the process started, by kind and outcome (completed, abandoned)",
            self.transitions.clone(),
        );
        r.register(
            "tandem_failover_phase_seconds",
            "Duration of each phase of a completed failover or switchover (detected, decided, fenced, started, healthy, dns), from the previous reached phase",
            self.failover_phase_seconds.clone(),
        );
        r.register(
            "tandem_failover_duration_seconds",
            "Duration of a completed failover or switchover, from its first reached phase to its last",
            self.failover_duration_seconds.clone(),
        );
        r.register(
            "tandem_leader_changes",
            "Coordinator (Raft leader) changes this node saw since the process started: a leader in a newer term",
            self.leader_changes.clone(),
        );
    }
}

/// What [`Metrics::follow`] has counted so far.
#[derive(Debug, Default)]
struct Followed {
    /// The next event sequence number not yet counted; None before the
    /// first look (which only takes the baseline: counts are since start).
    next_event_seq: Option<u64>,
    /// Transitions already counted (completed or abandoned), kept while
    /// they are still in the state.
    seen_transitions: BTreeSet<u64>,
    /// The term of the last leader seen; None before the first look.
    leader_term: Option<u64>,
}

/// The node's metrics. Shared by the faces through `ApiContext`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub counters: Counters,
    followed: Mutex<Followed>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let counters = Counters::new();
        let mut registry = Registry::default();
        counters.register(&mut registry);
        Metrics {
            registry,
            counters,
            followed: Mutex::new(Followed::default()),
        }
    }

    /// Counts what `state` holds that was not counted yet: events with a
    /// higher sequence number than the last seen, transitions that ended.
    /// The first call only takes the baseline (what happened before the
    /// process started is not counted). Idempotent for the same state.
    pub fn follow(&self, state: &ClusterState) {
        let mut f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let ended = |t: &Transition| !matches!(t.outcome, TransitionOutcome::InProgress);
        let Some(next) = f.next_event_seq else {
            f.next_event_seq = Some(state.next_event_seq);
            f.seen_transitions = state.transitions.iter().filter(|t| ended(t)).map(|t| t.id).collect();
            return;
        };
        for e in state.events.iter().filter(|e| e.seq >= next) {
            self.counters
                .events
                .get_or_create(&KindLabels {
                    kind: event_kind_str(e.kind).to_string(),
                })
                .inc();
        }
        f.next_event_seq = Some(next.max(state.next_event_seq));
        for t in state.transitions.iter().filter(|t| ended(t)) {
            if f.seen_transitions.insert(t.id) {
                self.observe_transition(t);
            }
        }
        // Forget ids that left the state: ids only grow, they never return.
        if let Some(oldest) = state.transitions.front().map(|t| t.id) {
            f.seen_transitions.retain(|id| *id >= oldest);
        }
    }

    /// Counts a leader change: `leader` known in `term`, newer than the
    /// last leader's term. The first look takes the baseline.
    pub fn follow_leader(&self, term: u64, leader: Option<u64>) {
        if leader.is_none() {
            return;
        }
        let mut f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        match f.leader_term {
            None => f.leader_term = Some(term),
            Some(last) if term > last => {
                f.leader_term = Some(term);
                self.counters.leader_changes.inc();
            }
            Some(_) => {}
        }
    }

    fn observe_transition(&self, t: &Transition) {
        let kind = kind_str(t.kind).to_string();
        let outcome = match t.outcome {
            TransitionOutcome::Completed => "completed",
            _ => "abandoned",
        };
        self.counters
            .transitions
            .get_or_create(&TransitionLabels {
                kind: kind.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        if t.outcome != TransitionOutcome::Completed {
            return;
        }
        let phases = phase_times(t);
        for pair in phases.windows(2) {
            if let [(_, prev), (name, at)] = pair {
                self.counters
                    .failover_phase_seconds
                    .get_or_create(&PhaseLabels {
                        kind: kind.clone(),
                        phase: (*name).to_string(),
                    })
                    .observe(seconds(at.saturating_sub(*prev)));
            }
        }
        if let (Some((_, first)), Some((_, last))) = (phases.first(), phases.last()) {
            self.counters
                .failover_duration_seconds
                .get_or_create(&KindLabels { kind })
                .observe(seconds(last.saturating_sub(*first)));
        }
    }

    /// The whole exposition: the accumulated counters and the values of
    /// `scrape`, in OpenMetrics text format.
    pub fn render(&self, scrape: &Scrape) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &scrape.registry())?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

fn seconds(ms: u64) -> f64 {
    // Exact for any duration below 2^53 ms.
    ms as f64 / 1000.0
}

pub fn kind_str(kind: TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Failover => "failover",
        TransitionKind::Switchover => "switchover",
    }
}

/// The reached phases of `t` in order (detected, decided, fenced, started,
/// healthy, dns), with their times; skipped phases are left out.
pub fn phase_times(t: &Transition) -> Vec<(&'static str, u64)> {
    let p = &t.phases;
    [
        ("detected", p.detected_unix_ms),
        ("decided", p.decided_unix_ms),
        ("fenced", p.fenced_unix_ms),
        ("started", p.started_unix_ms),
        ("healthy", p.healthy_unix_ms),
        ("dns", p.dns_unix_ms),
    ]
    .into_iter()
    .filter_map(|(name, at)| at.map(|at| (name, at)))
    .collect()
}

/// Everything read at scrape time, from one look at the node.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub status: pb::ClusterStatus,
    /// This node's role (member, witness).
    pub role: String,
    pub own_lease_valid: bool,
    /// It holds a lease and applied the log as far as the coordinator had
    /// when granting it (`Liveness::may_act`).
    pub may_act: bool,
    pub is_coordinator: bool,
    /// Per group in the spec: whether it is active on this node (the rule
    /// of `GET /primary/GROUP`).
    pub active_here: BTreeMap<String, bool>,
    pub lease: LeaseCountersSnapshot,
    /// The node runtime's counters (fencing attempts).
    pub node: NodeCountersSnapshot,
    pub dns: Option<StatsSnapshot>,
    /// gRPC calls refused for want of a credential: (method, reason, count).
    pub refused: Vec<(String, String, u64)>,
    /// Raft RPCs to peers that failed: (method, cause, count).
    pub raft_rpc_failures: Vec<(String, String, u64)>,
    /// This process, from /proc/self.
    pub process: crate::process::ProcessStats,
}

type Labels = Vec<(&'static str, String)>;

/// A family of gauges set once.
fn gauges(r: &mut Registry, name: &str, help: &str, values: impl IntoIterator<Item = (Labels, i64)>) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).set(v);
    }
    r.register(name, help, family);
}

/// A family of counters read from elsewhere (atomics of this process).
fn counters(r: &mut Registry, name: &str, help: &str, values: impl IntoIterator<Item = (Labels, u64)>) {
    let family = Family::<Labels, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    r.register(name, help, family);
}

/// One gauge without labels.
fn gauge(r: &mut Registry, name: &str, help: &str, v: impl Into<i64>) {
    let g = Gauge::<i64>::default();
    g.set(v.into());
    r.register(name, help, g);
}

/// One counter without labels, read from elsewhere.
fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(v);
    r.register(name, help, c);
}

pub const NODE_STATES: [&str; 3] = ["up", "suspect", "down"];
pub const GROUP_STATES: [&str; 6] = ["starting", "running", "stopping", "stopped", "failed", "blocked"];

/// Names of response codes for the `rcode` label.
fn rcode_label(slot: usize) -> String {
    match slot {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        9 => "NOTAUTH".into(),
        16 => "BADVERS".into(),
        n if n + 1 >= tandem_dns::RCODE_SLOTS => "other".into(),
        n => format!("RCODE{n}"),
    }
}

pub fn node_state_str(state: i32) -> &'static str {
    match pb::NodeState::try_from(state) {
        Ok(pb::NodeState::Up) => "up",
        Ok(pb::NodeState::Down) => "down",
        _ => "suspect",
    }
}

pub fn role_str(role: i32) -> &'static str {
    match pb::NodeRole::try_from(role) {
        Ok(pb::NodeRole::Witness) => "witness",
        _ => "member",
    }
}

impl Scrape {
    /// Prometheus' usual process metrics (those that could be read).
    fn register_process(&self, r: &mut Registry) {
        let p = &self.process;
        let int = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        for (name, help, v) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                int(p.resident_memory_bytes),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                int(p.virtual_memory_bytes),
            ),
            ("process_open_fds", "Number of open file descriptors", int(p.open_fds)),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                int(p.max_fds),
            ),
            ("process_threads", "Number of OS threads in the process", int(p.threads)),
        ] {
            if let Some(v) = v {
                gauge(r, name, help, v);
            }
        }
        if let Some(cpu) = p.cpu_seconds {
            let c = Counter::<f64, std::sync::atomic::AtomicU64>::default();
            c.inc_by(cpu);
            r.register(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                c,
            );
        }
        if let Some(start) = p.start_time_seconds {
            let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            g.set(start);
            r.register(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                g,
            );
        }
    }

    fn registry(&self) -> Registry {
        let s = &self.status;
        let mut r = Registry::default();
        counters(
            &mut r,
            "tandem_api_refused",
            "gRPC calls refused: no or an invalid credential, or a viewer calling an operator method",
            self.refused
                .iter()
                .map(|(method, reason, n)| (vec![("method", method.clone()), ("reason", reason.clone())], *n)),
        );
        let node = |n: &str| vec![("node", n.to_string())];
        gauges(
            &mut r,
            "tandem_build_info",
            "The build of this agent: its version (always 1)",
            [(vec![("version", tandem_core::VERSION.to_string())], 1)],
        );
        self.register_process(&mut r);
        counters(
            &mut r,
            "tandem_resource_action_failures",
            "Resource actions run on this node that failed (failed, timed out, agent unavailable), by action",
            tandem_node::counters::RESOURCE_ACTIONS
                .iter()
                .zip(self.node.resource_failures)
                .map(|(action, n)| (vec![("action", action.to_string())], n)),
        );
        counter(
            &mut r,
            "tandem_dns_push_failures",
            "RFC 2136 pushes to a site's DNS server that failed (this node as coordinator; each is retried)",
            self.node.dns_push_failures,
        );
        if self.node.backup_configured {
            counter(
                &mut r,
                "tandem_backup_failures",
                "Scheduled backups this node failed to take, write or verify (as coordinator)",
                self.node.backup_failures,
            );
            gauge(
                &mut r,
                "tandem_backup_warning",
                "1 when the last scheduled backup failed or the last verified one is older than two intervals (on the coordinator)",
                i64::from(self.node.backup_warning),
            );
            if let Some(age) = self.node.backup_age_s {
                gauge(
                    &mut r,
                    "tandem_backup_last_verified_age_seconds",
                    "Age of the last scheduled backup this node wrote and verified",
                    i64::try_from(age).unwrap_or(i64::MAX),
                );
            }
        }
        gauges(
            &mut r,
            "tandem_info",
            "This node: its name, role, cluster and version (always 1)",
            [(
                vec![
                    ("node", s.answered_by.clone()),
                    ("role", self.role.clone()),
                    ("cluster", s.cluster.clone()),
                    ("version", tandem_core::VERSION.to_string()),
                ],
                1,
            )],
        );
        gauges(
            &mut r,
            "tandem_node_state",
            "Each member's state as this node sees it (1 for its current state: up, suspect, down)",
            s.nodes.iter().flat_map(|n| {
                let state = node_state_str(n.state);
                NODE_STATES.iter().map(move |st| {
                    (
                        vec![("node", n.name.clone()), ("state", (*st).to_string())],
                        i64::from(*st == state),
                    )
                })
            }),
        );
        gauges(
            &mut r,
            "tandem_node_up",
            "1 while the member is up (heartbeats arrive), else 0",
            s.nodes
                .iter()
                .map(|n| (node(&n.name), i64::from(node_state_str(n.state) == "up"))),
        );
        gauges(
            &mut r,
            "tandem_node_lease_valid",
            "1 while the member holds a lease, as this node sees it",
            s.nodes.iter().map(|n| (node(&n.name), i64::from(n.lease_valid))),
        );
        let ages = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for n in &s.nodes {
            if let Some(ms) = n.last_heartbeat_age_ms {
                ages.get_or_create(&node(&n.name)).set(seconds(ms));
            }
        }
        r.register(
            "tandem_node_heartbeat_age_seconds",
            "Age of the member's last heartbeat acknowledged by the coordinator (absent when none)",
            ages,
        );
        gauge(
            &mut r,
            "tandem_lease_valid",
            "1 while this node holds a lease",
            self.own_lease_valid,
        );
        gauge(
            &mut r,
            "tandem_may_act",
            "1 while this node may act on its lease (it holds one and applied the log as far as the coordinator had)",
            self.may_act,
        );
        gauge(
            &mut r,
            "tandem_is_coordinator",
            "1 while this node is the coordinator (the Raft leader)",
            self.is_coordinator,
        );
        gauge(
            &mut r,
            "tandem_view_fresh",
            "1 while this node heard from a coordinator within a lease",
            s.view_fresh,
        );
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(&mut r, "tandem_raft_term", "Raft term", n(s.term));
        gauge(
            &mut r,
            "tandem_raft_commit_index",
            "Highest log index this node knows committed",
            n(s.commit_index),
        );
        gauge(
            &mut r,
            "tandem_raft_applied_index",
            "Highest log index this node applied",
            n(s.applied_index),
        );
        gauge(
            &mut r,
            "tandem_spec_version",
            "Version of the spec in force (0 before the first apply)",
            n(s.spec_version),
        );
        gauges(
            &mut r,
            "tandem_group_state",
            "Each group's state (1 for its current state: starting, running, stopping, stopped, failed, blocked)",
            s.groups.iter().flat_map(|g| {
                GROUP_STATES.iter().map(move |st| {
                    (
                        vec![("group", g.name.clone()), ("state", (*st).to_string())],
                        i64::from(g.state == *st),
                    )
                })
            }),
        );
        gauges(
            &mut r,
            "tandem_group_epoch",
            "Each group's epoch (its fencing token, raised on every assignment)",
            s.groups.iter().map(|g| (vec![("group", g.name.clone())], n(g.epoch))),
        );
        gauges(
            &mut r,
            "tandem_group_unprotected",
            "1 while the group has no eligible standby (the loss of its node would stop it), as the coordinator committed it",
            s.groups.iter().map(|g| {
                (
                    vec![("group", g.name.clone())],
                    i64::from(g.unprotected_since_unix_ms.is_some()),
                )
            }),
        );
        gauges(
            &mut r,
            "tandem_group_primary_here",
            "1 while the group is active on this node: assigned here at the current epoch, running at it, and this node may act on its lease",
            self.active_here
                .iter()
                .map(|(g, active)| (vec![("group", g.clone())], i64::from(*active))),
        );
        gauges(
            &mut r,
            "tandem_fencing_needed",
            "1 for each node that must be fenced before its groups start elsewhere",
            s.fencing_needed.keys().map(|k| (node(k), 1)),
        );
        counter(
            &mut r,
            "tandem_lease_renewals",
            "Leases this node was granted since the process started",
            self.lease.lease_renewals,
        );
        counters(
            &mut r,
            "tandem_heartbeats",
            "Heartbeats this node sent since the process started, by outcome (granted, refused, unanswered)",
            [
                (vec![("outcome", "granted".to_string())], self.lease.lease_renewals),
                (vec![("outcome", "refused".to_string())], self.lease.heartbeats_refused),
                (
                    vec![("outcome", "unanswered".to_string())],
                    self.lease.heartbeats_unanswered,
                ),
            ],
        );
        counters(
            &mut r,
            "tandem_raft_rpc_failures",
            "Raft RPCs this node sent that failed, by method and cause (unreachable, timeout, refused, stopped, error)",
            self.raft_rpc_failures
                .iter()
                .map(|(method, cause, n)| (vec![("method", method.clone()), ("cause", cause.clone())], *n)),
        );
        counters(
            &mut r,
            "tandem_fence_attempts",
            "Fencing attempts this node ran as coordinator, by outcome (fenced, failed)",
            // Only outcomes that happened: a series appears with its first attempt.
            [("fenced", self.node.fence_fenced), ("failed", self.node.fence_failed)]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(outcome, n)| (vec![("outcome", outcome.to_string())], n)),
        );
        counter(
            &mut r,
            "tandem_leases_granted",
            "Leases this node granted as coordinator since the process started",
            self.lease.leases_granted,
        );
        if let Some(d) = &self.dns {
            counters(
                &mut r,
                "tandem_dns_queries",
                "DNS queries received, by transport",
                [
                    (vec![("transport", "udp".to_string())], d.queries_udp),
                    (vec![("transport", "tcp".to_string())], d.queries_tcp),
                ],
            );
            counters(
                &mut r,
                "tandem_dns_responses",
                "DNS responses sent, by response code",
                d.responses_by_rcode
                    .iter()
                    .enumerate()
                    .filter(|(i, v)| **v > 0 || [0, 2, 3, 5].contains(i))
                    .map(|(i, v)| (vec![("rcode", rcode_label(i))], *v)),
            );
            counter(
                &mut r,
                "tandem_dns_truncated",
                "DNS responses sent with TC set",
                d.truncated,
            );
            counter(
                &mut r,
                "tandem_dns_dropped",
                "DNS packets not answered (malformed, not a query)",
                d.dropped,
            );
            counter(&mut r, "tandem_dns_transfers", "DNS zone transfers served", d.transfers);
            counters(
                &mut r,
                "tandem_dns_rate_limited",
                "DNS queries over the per-client rate limit, by action (dropped, slipped)",
                [
                    (vec![("action", "dropped".to_string())], d.rate_limited_dropped),
                    (vec![("action", "slipped".to_string())], d.rate_limited_slipped),
                ],
            );
        }
        r
    }
}

/// The samples of an exposition as `series -> value`, the series exactly as
/// written (`name{labels}`); comments skipped. For tests and scripts.
pub fn parse_samples(text: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {}: no value: {line:?}", i + 1))?;
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|e| format!("line {}: bad value {v:?}: {e}", i + 1))?,
        };
        out.insert(series.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tandem_core::state::{EventKind, TransitionPhases};

    fn transition(id: u64, outcome: TransitionOutcome) -> Transition {
        Transition {
            id,
            group: "web".into(),
            kind: TransitionKind::Failover,
            from: Some("site-a".into()),
            to: Some("site-b".into()),
            reason: "site-a lost".into(),
            actor: "coordinator".into(),
            epoch: 4,
            phases: TransitionPhases {
                detected_unix_ms: Some(10_000),
                decided_unix_ms: Some(13_000),
                fenced_unix_ms: None,
                started_unix_ms: Some(13_500),
                healthy_unix_ms: Some(14_000),
                dns_unix_ms: Some(14_000),
            },
            outcome,
        }
    }

    fn note(s: &mut ClusterState, i: u64) {
        s.apply(&tandem_core::state::Command::Note {
            message: format!("n{i}"),
            actor: "op@host".into(),
            at_unix_ms: i,
        });
    }

    fn rendered(m: &Metrics) -> BTreeMap<String, f64> {
        let text = m.render(&Scrape::default()).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        parse_samples(&text).unwrap()
    }

    #[test]
    fn events_are_counted_by_kind_once_and_only_since_start() {
        let m = Metrics::new();
        let mut s = ClusterState::default();
        note(&mut s, 1);
        m.follow(&s); // the baseline: the first note happened before the start
        note(&mut s, 2);
        note(&mut s, 3);
        m.follow(&s);
        m.follow(&s); // the same state again counts nothing
        let samples = rendered(&m);
        assert_eq!(
            samples.get("tandem_events_total{kind=\"note\"}"),
            Some(&2.0),
            "{samples:?}"
        );
        assert!(s.events.iter().all(|e| e.kind == EventKind::Note));
    }

    #[test]
    fn a_completed_transition_is_observed_exactly_once_with_its_phases() {
        let m = Metrics::new();
        let mut s = ClusterState::default();
        // Completed before the start: not observed.
        s.transitions.push_back(transition(1, TransitionOutcome::Completed));
        m.follow(&s);
        s.transitions.push_back(transition(2, TransitionOutcome::InProgress));
        s.transitions.push_back(transition(3, TransitionOutcome::InProgress));
        m.follow(&s);
        let samples = rendered(&m);
        assert_eq!(
            samples.get("tandem_failover_duration_seconds_count{kind=\"failover\"}"),
            None,
            "nothing completed yet: {samples:?}"
        );
        // 3 completes before 2 (another group): both are observed, once.
        s.transitions[2].outcome = TransitionOutcome::Completed;
        m.follow(&s);
        s.transitions[1].outcome = TransitionOutcome::Completed;
        m.follow(&s);
        m.follow(&s);
        s.transitions.pop_front();
        m.follow(&s);
        let samples = rendered(&m);
        let count = |k: &str| samples.get(k).copied();
        assert_eq!(
            count("tandem_failover_duration_seconds_count{kind=\"failover\"}"),
            Some(2.0),
            "{samples:?}"
        );
        assert_eq!(
            count("tandem_failover_duration_seconds_sum{kind=\"failover\"}"),
            Some(8.0),
            "4 s each"
        );
        assert_eq!(
            count("tandem_failover_phase_seconds_sum{kind=\"failover\",phase=\"decided\"}"),
            Some(6.0)
        );
        // The skipped phase: started counts from decided.
        assert_eq!(
            count("tandem_failover_phase_seconds_sum{kind=\"failover\",phase=\"started\"}"),
            Some(1.0)
        );
        assert_eq!(
            count("tandem_failover_phase_seconds_count{kind=\"failover\",phase=\"fenced\"}"),
            None
        );
        assert_eq!(
            count("tandem_failover_phase_seconds_bucket{le=\"3.0\",kind=\"failover\",phase=\"decided\"}"),
            Some(2.0),
            "{samples:?}"
        );
        assert_eq!(
            count("tandem_transitions_total{kind=\"failover\",outcome=\"completed\"}"),
            Some(2.0)
        );
        // Abandoned: counted, not observed in the histograms.
        s.transitions
            .push_back(transition(4, TransitionOutcome::Abandoned("no node may run it".into())));
        m.follow(&s);
        let samples = rendered(&m);
        assert_eq!(
            samples.get("tandem_transitions_total{kind=\"failover\",outcome=\"abandoned\"}"),
            Some(&1.0)
        );
        assert_eq!(
            samples.get("tandem_failover_duration_seconds_count{kind=\"failover\"}"),
            Some(&2.0)
        );
    }

    #[test]
    fn scrape_values_are_rendered_from_the_status() {
        let scrape = Scrape {
            status: pb::ClusterStatus {
                cluster: "prod".into(),
                answered_by: "site-a".into(),
                term: 7,
                commit_index: 42,
                applied_index: 42,
                nodes: vec![
                    pb::NodeStatus {
                        name: "site-a".into(),
                        state: pb::NodeState::Up.into(),
                        lease_valid: true,
                        last_heartbeat_age_ms: Some(150),
                        ..Default::default()
                    },
                    pb::NodeStatus {
                        name: "site-b".into(),
                        state: pb::NodeState::Down.into(),
                        ..Default::default()
                    },
                ],
                groups: vec![
                    pb::GroupStatus {
                        name: "web".into(),
                        state: "running".into(),
                        epoch: 3,
                        unprotected: "no eligible standby, a loss of site-a would stop it (site-b is down)".into(),
                        unprotected_since_unix_ms: Some(5),
                        ..Default::default()
                    },
                    pb::GroupStatus {
                        name: "db".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            role: "member".into(),
            own_lease_valid: true,
            may_act: true,
            is_coordinator: true,
            active_here: BTreeMap::from([("web".to_string(), true)]),
            lease: LeaseCountersSnapshot {
                lease_renewals: 12,
                ..Default::default()
            },
            node: NodeCountersSnapshot {
                fence_fenced: 2,
                fence_failed: 0,
                resource_failures: [0, 1, 4],
                dns_push_failures: 5,
                backup_configured: true,
                backup_failures: 2,
                backup_age_s: Some(7),
                backup_warning: true,
            },
            dns: Some(StatsSnapshot {
                queries_udp: 5,
                ..Default::default()
            }),
            refused: vec![("Switchover".into(), "viewer_not_allowed".into(), 3)],
            raft_rpc_failures: vec![("heartbeat".into(), "timeout".into(), 4)],
            process: crate::process::ProcessStats {
                resident_memory_bytes: Some(20 << 20),
                cpu_seconds: Some(1.5),
                ..Default::default()
            },
        };
        let text = Metrics::new().render(&scrape).unwrap();
        let samples = parse_samples(&text).unwrap();
        let get = |k: &str| {
            samples
                .get(k)
                .copied()
                .unwrap_or_else(|| panic!("{k} missing in\n{text}"))
        };
        assert_eq!(get("tandem_raft_term"), 7.0);
        assert_eq!(
            get("tandem_api_refused_total{method=\"Switchover\",reason=\"viewer_not_allowed\"}"),
            3.0
        );
        assert_eq!(get("tandem_raft_applied_index"), 42.0);
        assert_eq!(
            get("tandem_raft_rpc_failures_total{method=\"heartbeat\",cause=\"timeout\"}"),
            4.0
        );
        assert_eq!(get("tandem_node_up{node=\"site-a\"}"), 1.0);
        assert_eq!(get("tandem_node_up{node=\"site-b\"}"), 0.0);
        assert_eq!(get("tandem_node_state{node=\"site-b\",state=\"down\"}"), 1.0);
        assert_eq!(get("tandem_node_state{node=\"site-b\",state=\"up\"}"), 0.0);
        assert_eq!(get("tandem_node_heartbeat_age_seconds{node=\"site-a\"}"), 0.15);
        assert_eq!(get("tandem_group_state{group=\"web\",state=\"running\"}"), 1.0);
        assert_eq!(get("tandem_group_epoch{group=\"web\"}"), 3.0);
        assert_eq!(get("tandem_group_primary_here{group=\"web\"}"), 1.0);
        assert_eq!(get("tandem_group_unprotected{group=\"web\"}"), 1.0);
        assert_eq!(get("tandem_group_unprotected{group=\"db\"}"), 0.0);
        assert_eq!(get("tandem_is_coordinator"), 1.0);
        assert_eq!(get("tandem_lease_renewals_total"), 12.0);
        assert_eq!(get("tandem_heartbeats_total{outcome=\"granted\"}"), 12.0);
        assert_eq!(get("tandem_fence_attempts_total{outcome=\"fenced\"}"), 2.0);
        assert!(
            !samples.contains_key("tandem_fence_attempts_total{outcome=\"failed\"}"),
            "no failed attempt yet: {text}"
        );
        assert_eq!(get("tandem_dns_queries_total{transport=\"udp\"}"), 5.0);
        assert_eq!(get("tandem_resource_action_failures_total{action=\"monitor\"}"), 4.0);
        assert_eq!(get("tandem_resource_action_failures_total{action=\"start\"}"), 0.0);
        assert_eq!(get("tandem_dns_push_failures_total"), 5.0);
        assert_eq!(get("tandem_backup_failures_total"), 2.0);
        assert_eq!(get("tandem_backup_warning"), 1.0);
        assert_eq!(get("tandem_backup_last_verified_age_seconds"), 7.0);
        assert_eq!(get("process_resident_memory_bytes"), f64::from(20 << 20));
        assert_eq!(get("process_cpu_seconds_total"), 1.5);
        assert!(
            !samples.contains_key("process_open_fds"),
            "what could not be read is left out"
        );
        assert_eq!(
            get(&format!("tandem_build_info{{version=\"{}\"}}", tandem_core::VERSION)),
            1.0
        );
        assert_eq!(get("tandem_dns_responses_total{rcode=\"SERVFAIL\"}"), 0.0);
        assert!(text.contains("# TYPE tandem_lease_renewals counter"), "{text}");
        assert!(text.contains("# HELP tandem_raft_term Raft term"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn the_classic_text_format_names_counters_by_their_samples() {
        let om = "# HELP tandem_events Events applied.\n# TYPE tandem_events counter\n\
                  tandem_events_total{kind=\"note\"} 3\n# HELP tandem_lease_valid Lease.\n\
                  # TYPE tandem_lease_valid gauge\ntandem_lease_valid 1\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP tandem_events_total Events applied.\n# TYPE tandem_events_total counter\n\
             tandem_events_total{kind=\"note\"} 3\n# HELP tandem_lease_valid Lease.\n\
             # TYPE tandem_lease_valid gauge\ntandem_lease_valid 1\n"
        );
        assert!(wants_text_format("text/plain; version=0.0.4"));
        assert!(!wants_text_format("*/*"));
        assert!(!wants_text_format(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        ));
    }
}
