//! The lease runtime: heartbeats out, heartbeats in, and the liveness view.
//!
//! Every node sends a heartbeat to the coordinator each heartbeat interval.
//! The coordinator grants a lease when the core says it may
//! ([`tandem_core::lease::may_grant_lease`]) and replies with its view of every
//! node, so that any node can report who is up. The arithmetic is the core's
//! ([`tandem_core::lease`]); this module feeds it the clock and Raft's metrics.
//! The tasks that send, answer and relay heartbeats are in [`crate::heartbeat`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tandem_core::groups::Freshness;
use tandem_core::lease::{LeaseTable, NodeState, OwnLease, liveness, may_grant_lease};
use tandem_core::{Millis, NodeId, Timing};
use tandem_proto::v1::{GroupFreshness, HeartbeatReply, NodeView, group_freshness};
use tokio::sync::watch;
use tracing::info;

/// One node as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewEntry {
    pub id: NodeId,
    /// Age of the last heartbeat the coordinator acknowledged.
    pub age: Option<Duration>,
    pub state: NodeState,
    pub version: String,
}

impl ViewEntry {
    /// Whether the node holds a lease: its last acknowledged heartbeat is
    /// younger than one lease.
    pub fn lease_valid(&self, timing: &Timing) -> bool {
        self.age.is_some_and(|a| a <= timing.lease)
    }
}

/// This node's state while it is the coordinator of `term`.
struct CoordinatorSide {
    term: u64,
    table: LeaseTable,
    versions: BTreeMap<NodeId, String>,
    /// The highest applied index each node reported in a heartbeat this
    /// coordinator granted: what its DNS and `/primary` answers are at least
    /// as new as, for as long as the lease runs.
    applied: BTreeMap<NodeId, u64>,
}

/// The last view a coordinator sent this node.
struct ReceivedView {
    at: Millis,
    nodes: Vec<ViewEntry>,
}

#[derive(Default)]
struct Inner {
    coordinator: Option<CoordinatorSide>,
    view: Option<ReceivedView>,
    /// This node's own lease (the core's arithmetic).
    own: OwnLease,
    /// When a coordinator last answered this node's heartbeat at all.
    last_reply: Option<Millis>,
    /// The term and start time of the last successful quorum confirmation
    /// round while this node was coordinator.
    confirmed: Option<(u64, Millis)>,
    /// This node's own freshness per group, as its executor last saw it
    /// (sent with every heartbeat).
    /// `None`: it reported one before but not any more (its monitor stopped
    /// saying): sent as "unknown" so the coordinator forgets the old value.
    own_freshness: BTreeMap<String, Option<Freshness>>,
    /// Every node's last known freshness per group: on the coordinator from
    /// the heartbeats it granted, elsewhere from the views it received. A
    /// node not heard from keeps its last values (a lost primary's last
    /// position is the reference its candidates are measured against), and
    /// a new coordinator starts from what it knew as a follower.
    freshness: BTreeMap<NodeId, BTreeMap<String, Freshness>>,
}

/// Lease and liveness bookkeeping of one node. Shared by the heartbeat loop,
/// the peer service and the status builders.
pub struct Liveness {
    timing: Timing,
    inner: Mutex<Inner>,
    /// Bumped whenever leases or views change, for status watchers.
    changed: watch::Sender<u64>,
    /// Heartbeat and lease counters since the process started (for metrics).
    pub counters: LeaseCounters,
}

/// Counters of heartbeats and leases since the process started, read by
/// `/metrics`.
#[derive(Debug, Default)]
pub struct LeaseCounters {
    /// Leases this node was granted (each one renews its lease).
    pub lease_renewals: AtomicU64,
    /// Heartbeats of this node a coordinator answered with a refusal.
    pub heartbeats_refused: AtomicU64,
    /// Heartbeats of this node no coordinator answered, directly or relayed.
    pub heartbeats_unanswered: AtomicU64,
    /// Leases this node granted while coordinator (its own included).
    pub leases_granted: AtomicU64,
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseCountersSnapshot {
    pub lease_renewals: u64,
    pub heartbeats_refused: u64,
    pub heartbeats_unanswered: u64,
    pub leases_granted: u64,
}

impl LeaseCounters {
    pub fn snapshot(&self) -> LeaseCountersSnapshot {
        LeaseCountersSnapshot {
            lease_renewals: self.lease_renewals.load(Relaxed),
            heartbeats_refused: self.heartbeats_refused.load(Relaxed),
            heartbeats_unanswered: self.heartbeats_unanswered.load(Relaxed),
            leases_granted: self.leases_granted.load(Relaxed),
        }
    }
}

impl Liveness {
    pub fn new(timing: Timing) -> Self {
        Liveness {
            timing,
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            counters: LeaseCounters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wakes everything that follows [`Liveness::subscribe`] (the executor,
    /// when the agent starts leaving).
    pub fn poke(&self) {
        self.bump();
    }

    /// Notified on every change of leases or views.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Follows Raft: starts a fresh lease table when this node becomes the
    /// coordinator of a new term (dating the election no earlier than now,
    /// which only makes the successor wait longer), drops it when it stops
    /// being the coordinator.
    pub fn observe_raft(&self, now: Millis, leader_term: Option<u64>) {
        let mut inner = self.lock();
        match (leader_term, &inner.coordinator) {
            (Some(term), Some(c)) if c.term == term => {}
            (Some(term), _) => {
                info!(
                    term,
                    "became coordinator; leases granted by a predecessor are honoured until they certainly expired"
                );
                inner.coordinator = Some(CoordinatorSide {
                    term,
                    table: LeaseTable::new(now),
                    versions: BTreeMap::new(),
                    applied: BTreeMap::new(),
                });
                drop(inner);
                self.bump();
            }
            (None, Some(c)) => {
                info!(term = c.term, "no longer coordinator");
                inner.coordinator = None;
                drop(inner);
                self.bump();
            }
            (None, None) => {}
        }
    }

    /// How long this node has been coordinator, if it is.
    pub fn coordinating_for(&self, now: Millis) -> Option<Duration> {
        let inner = self.lock();
        let side = inner.coordinator.as_ref()?;
        Some(now.since(side.table.coordinator_since()))
    }

    /// Records a quorum acknowledgement of `term`: a quorum acknowledged a
    /// message this coordinator sent at `started_at`.
    pub fn confirm_quorum(&self, term: u64, started_at: Millis) {
        let mut inner = self.lock();
        if inner
            .confirmed
            .is_none_or(|(t, at)| t < term || (t == term && at < started_at))
        {
            inner.confirmed = Some((term, started_at));
        }
    }

    /// The coordinator's answer to a heartbeat received at `now`, while this
    /// node leads `term`.
    ///
    /// `members` are the nodes of the current membership. Refuses (without a
    /// lease) when the sender is not a member, or when no quorum confirmed
    /// this coordinator recently in this term.
    /// `applied_index` is the sender's applied index when it sent the
    /// heartbeat (see [`Liveness::reported_applied`]).
    #[allow(clippy::too_many_arguments)]
    pub fn grant(
        &self,
        now: Millis,
        term: u64,
        node: NodeId,
        version: &str,
        applied_index: u64,
        members: &BTreeSet<NodeId>,
    ) -> Result<Vec<ViewEntry>, String> {
        self.observe_raft(now, Some(term));
        let mut inner = self.lock();
        let since_confirmed = inner.confirmed.filter(|(t, _)| *t == term).map(|(_, at)| now.since(at));
        let Some(side) = inner.coordinator.as_mut() else {
            return Err("this node is not the coordinator".into());
        };
        if !members.contains(&node) {
            return Err(format!("node id {node} is not a member of this cluster"));
        }
        if !may_grant_lease(since_confirmed, &self.timing) {
            return Err(format!(
                "no quorum confirmed this coordinator recently (last confirmation {})",
                since_confirmed.map_or("none in this term".into(), |d| format!("{} ms ago", d.as_millis()))
            ));
        }
        let before = side.table.state(node, now, &self.timing);
        side.table.record_grant(node, now);
        let applied = side.applied.entry(node).or_default();
        *applied = (*applied).max(applied_index);
        if side.versions.get(&node).map(String::as_str) != Some(version) {
            side.versions.insert(node, version.to_string());
        }
        let view = coordinator_view(side, now, members, &self.timing);
        drop(inner);
        self.counters.leases_granted.fetch_add(1, Relaxed);
        if before != NodeState::Up {
            self.bump();
        }
        Ok(view)
    }

    /// Records the coordinator's reply to a heartbeat this node sent at `sent_at`.
    ///
    /// The lease runs from `sent_at`, for the shorter of what was granted and
    /// this node's own configured lease. The coordinator's view is dated
    /// `sent_at` too, so ages read from it are never understated.
    pub fn record_reply(&self, now: Millis, sent_at: Millis, reply: &HeartbeatReply) {
        if reply.granted {
            self.counters.lease_renewals.fetch_add(1, Relaxed);
        } else {
            self.counters.heartbeats_refused.fetch_add(1, Relaxed);
        }
        let mut inner = self.lock();
        let had_lease = inner.own.valid(now);
        inner.last_reply = Some(now);
        if reply.granted {
            let granted = Duration::from_millis(reply.lease_ms);
            inner
                .own
                .record_grant(sent_at, granted, reply.applied_index, &self.timing);
        }
        let mut changed = had_lease != reply.granted;
        // A refusal carries no view: keep the last one, and let it age.
        if reply.granted {
            // The coordinator's values replace this node's for every node it
            // knows something of (so what it forgot is forgotten here too).
            for n in reply.nodes.iter().filter(|n| !n.freshness.is_empty()) {
                inner.freshness.remove(&n.node_id);
                merge_freshness(&mut inner.freshness, n.node_id, &n.freshness);
            }
            let nodes: Vec<ViewEntry> = reply.nodes.iter().map(view_entry_from_pb).collect();
            changed |= inner.view.as_ref().is_none_or(|v| !same_states(&v.nodes, &nodes));
            inner.view = Some(ReceivedView { at: sent_at, nodes });
        }
        drop(inner);
        if changed {
            self.bump();
        }
    }

    /// Records this node's own freshness for `group` (`None`: forget it, the
    /// group left the spec), sent with the next heartbeats.
    pub fn set_own_freshness(&self, group: &str, freshness: Option<Freshness>) {
        let mut inner = self.lock();
        match freshness {
            Some(f) => _ = inner.own_freshness.insert(group.to_string(), Some(f)),
            None => {
                if let Some(v) = inner.own_freshness.get_mut(group) {
                    *v = None;
                }
            }
        }
    }

    /// This node's own freshness, as sent in a heartbeat.
    pub fn own_freshness_pb(&self) -> Vec<GroupFreshness> {
        self.lock()
            .own_freshness
            .iter()
            .map(|(group, f)| GroupFreshness {
                group: group.clone(),
                value: f.map(freshness_value),
            })
            .collect()
    }

    /// On the coordinator: records the freshness a granted heartbeat of
    /// `node` carried (merged: groups it did not mention keep their values).
    pub fn record_freshness(&self, node: NodeId, reported: &[GroupFreshness]) {
        merge_freshness(&mut self.lock().freshness, node, reported);
    }

    /// Every node's last known freshness per group.
    pub fn freshness(&self) -> BTreeMap<NodeId, BTreeMap<String, Freshness>> {
        self.lock().freshness.clone()
    }

    /// Whether any node ever reported freshness for `group`.
    pub fn freshness_known(&self, group: &str) -> bool {
        self.lock().freshness.values().any(|m| m.contains_key(group))
    }

    /// `node`'s last known freshness per group, as sent in a view.
    pub fn freshness_pb(&self, node: NodeId) -> Vec<GroupFreshness> {
        self.lock()
            .freshness
            .get(&node)
            .map(freshness_to_pb)
            .unwrap_or_default()
    }

    /// On the coordinator of `term`: whether no lease of `node` can still be
    /// valid. Elsewhere, or for another term, always false (this node cannot know).
    pub fn lease_certainly_expired(&self, term: u64, node: NodeId, now: Millis) -> bool {
        self.lock()
            .coordinator
            .as_ref()
            .is_some_and(|c| c.term == term && c.table.lease_certainly_expired(node, now, &self.timing))
    }

    /// On the coordinator: the highest applied index `node` reported with a
    /// heartbeat this coordinator granted (0 when none). A node answers DNS
    /// and `/primary` from its applied state only while its lease runs, so
    /// once this reaches an index, or the lease certainly expired, nothing
    /// older is answered by it.
    pub fn reported_applied(&self, node: NodeId) -> u64 {
        self.lock()
            .coordinator
            .as_ref()
            .and_then(|c| c.applied.get(&node).copied())
            .unwrap_or(0)
    }

    /// How long since a coordinator last answered this node's heartbeat.
    pub fn since_last_reply(&self, now: Millis) -> Option<Duration> {
        self.lock().last_reply.map(|t| now.since(t))
    }

    /// Whether this node holds a lease granted in this run at `now`.
    pub fn own_lease_valid(&self, now: Millis) -> bool {
        self.lock().own.valid(now)
    }

    /// This node's own lease as it stands (the core decides with it).
    pub fn own_lease(&self) -> OwnLease {
        self.lock().own
    }

    /// Takes over the lease this agent's previous run recorded (its end on
    /// this run's clock; `None`: it ended or was not recorded): what runs
    /// may be kept until then, nothing starts on it.
    pub fn inherit_lease(&self, until: Option<Millis>) {
        self.lock().own.inherit(until);
    }

    /// The coordinator's applied index when it granted this node's lease:
    /// how far this node must have applied before it may act on it.
    pub fn lease_index(&self) -> u64 {
        self.lock().own.index()
    }

    /// When this node's lease granted in this run ends, if it holds one.
    pub fn lease_until(&self) -> Option<Millis> {
        self.lock().own.until()
    }

    /// Whether this node may act on its lease ([`OwnLease::may_act`]).
    pub fn may_act(&self, now: Millis, applied_index: u64) -> bool {
        self.lock().own.may_act(now, applied_index)
    }

    /// Every member's state at `now` and whether the view is fresh: taken
    /// from this node's lease table when it is the coordinator, else from the
    /// coordinator's last reply, aged by the time since (a view older than a
    /// lease is not fresh).
    pub fn view(&self, now: Millis, members: &BTreeSet<NodeId>) -> (Vec<ViewEntry>, bool) {
        let inner = self.lock();
        if let Some(side) = &inner.coordinator {
            return (coordinator_view(side, now, members, &self.timing), true);
        }
        let Some(view) = &inner.view else {
            let unknown = members
                .iter()
                .map(|&id| ViewEntry {
                    id,
                    age: None,
                    state: NodeState::Suspect,
                    version: String::new(),
                })
                .collect();
            return (unknown, false);
        };
        let elapsed = now.since(view.at);
        let nodes = members
            .iter()
            .map(|&id| match view.nodes.iter().find(|e| e.id == id) {
                Some(e) => {
                    let age = e.age.map(|a| a + elapsed);
                    let aged = age.map_or(e.state, |a| liveness(a, &self.timing));
                    ViewEntry {
                        id,
                        age,
                        state: e.state.max(aged),
                        version: e.version.clone(),
                    }
                }
                None => ViewEntry {
                    id,
                    age: None,
                    state: NodeState::Suspect,
                    version: String::new(),
                },
            })
            .collect();
        (nodes, elapsed <= self.timing.lease)
    }
}

fn same_states(a: &[ViewEntry], b: &[ViewEntry]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.id == y.id && x.state == y.state && x.version == y.version)
}

fn coordinator_view(
    side: &CoordinatorSide,
    now: Millis,
    members: &BTreeSet<NodeId>,
    timing: &Timing,
) -> Vec<ViewEntry> {
    members
        .iter()
        .map(|&id| ViewEntry {
            id,
            age: side.table.age(id, now),
            state: side.table.state(id, now, timing),
            version: side.versions.get(&id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Freshness as carried in heartbeats and views.
pub fn freshness_to_pb(map: &BTreeMap<String, Freshness>) -> Vec<GroupFreshness> {
    map.iter()
        .map(|(group, f)| GroupFreshness {
            group: group.clone(),
            value: Some(freshness_value(*f)),
        })
        .collect()
}

fn freshness_value(f: Freshness) -> group_freshness::Value {
    match f {
        Freshness::Position(p) => group_freshness::Value::Position(p),
        Freshness::LagMs(ms) => group_freshness::Value::LagMs(ms),
    }
}

/// Merges what `node` reported into `table` (an entry without a value
/// forgets the group's: the node no longer knows; bounded by the groups a node names, at most [`MAX_FRESHNESS`]).
fn merge_freshness(
    table: &mut BTreeMap<NodeId, BTreeMap<String, Freshness>>,
    node: NodeId,
    reported: &[GroupFreshness],
) {
    if reported.is_empty() {
        return;
    }
    let entry = table.entry(node).or_default();
    for g in reported.iter().take(MAX_FRESHNESS) {
        let f = match g.value {
            Some(group_freshness::Value::Position(p)) => Freshness::Position(p),
            Some(group_freshness::Value::LagMs(ms)) => Freshness::LagMs(ms),
            None => {
                entry.remove(&g.group);
                continue;
            }
        };
        if entry.len() < MAX_FRESHNESS || entry.contains_key(&g.group) {
            entry.insert(g.group.clone(), f);
        }
    }
}

/// The most groups whose freshness is kept per node (a bound against a
/// misbehaving peer; a spec has far fewer groups).
pub const MAX_FRESHNESS: usize = 10_000;

fn view_entry_from_pb(v: &NodeView) -> ViewEntry {
    ViewEntry {
        id: v.node_id,
        age: v.age_ms.map(Duration::from_millis),
        state: match v.state.as_str() {
            "up" => NodeState::Up,
            "down" => NodeState::Down,
            _ => NodeState::Suspect,
        },
        version: v.version.clone(),
    }
}

pub(crate) fn view_entry_to_pb(e: &ViewEntry, freshness: Vec<GroupFreshness>) -> NodeView {
    NodeView {
        node_id: e.id,
        age_ms: e.age.map(tandem_core::timing::duration_ms),
        state: e.state.as_str().to_string(),
        version: e.version.clone(),
        freshness,
    }
}

#[cfg(test)]
mod freshness_tests {
    use super::*;

    fn entry(group: &str, value: Option<group_freshness::Value>) -> GroupFreshness {
        GroupFreshness {
            group: group.into(),
            value,
        }
    }

    #[test]
    fn a_value_reported_as_unknown_is_forgotten_and_others_are_kept() {
        let mut table = BTreeMap::new();
        merge_freshness(
            &mut table,
            1,
            &[
                entry("db", Some(group_freshness::Value::Position(42))),
                entry("web", Some(group_freshness::Value::LagMs(5))),
            ],
        );
        merge_freshness(&mut table, 1, &[entry("db", None)]);
        assert_eq!(table[&1].get("db"), None);
        assert_eq!(table[&1].get("web"), Some(&Freshness::LagMs(5)));
        // Nothing reported: nothing changes (a node not heard from keeps its values).
        merge_freshness(&mut table, 1, &[]);
        assert_eq!(table[&1].len(), 1);
    }

    #[test]
    fn a_node_sends_unknown_once_its_monitor_stops_reporting() {
        let l = Liveness::new(tandem_core::Timing::default());
        l.set_own_freshness("ghost", None);
        assert!(l.own_freshness_pb().is_empty(), "never reported: nothing to forget");
        l.set_own_freshness("db", Some(Freshness::Position(7)));
        l.set_own_freshness("db", None);
        assert_eq!(l.own_freshness_pb(), vec![entry("db", None)]);
    }
}
