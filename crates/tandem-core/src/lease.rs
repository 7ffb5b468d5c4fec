//! Lease arithmetic and node liveness.
//!
//! A node holds a lease while the coordinator keeps acknowledging its
//! heartbeats. The node counts its lease from the moment it *sent* the
//! heartbeat that earned it, on its own clock: `valid until sent + lease`.
//! The coordinator counts from the moment it *received* that heartbeat and adds
//! the clock-drift margin: the lease is certainly over after
//! `received + lease + clock_drift_margin`. Since `sent <= received`, the node
//! always gives its lease up first, whatever the rate difference of the two
//! clocks within the margin.
//!
//! A coordinator grants leases only while a quorum of voters confirmed it as
//! coordinator recently: they acknowledged a Raft message it sent less than
//! [`Timing::quorum_staleness`] ago ([`may_grant_lease`]; the time is the
//! message's *send* time, so a pause of the process only makes it look
//! older). A newly elected coordinator knows nothing of what its predecessor
//! granted; the predecessor's last confirmation cannot be later than the new
//! election (a voter of the new majority would have had to acknowledge its
//! message before voting), so it may still have granted a lease up to
//! `quorum_staleness` after that election, and the successor treats a node it
//! has not heard from as certainly without a lease only
//! [`Timing::predecessor_grace`] after its own election.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::membership::NodeId;
use crate::timing::{Millis, Timing, duration_ms};

/// How a node looks from the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeats arrive on time.
    Up,
    /// Heartbeats are late; the node may still hold its lease.
    Suspect,
    /// The node's lease has certainly expired: it runs nothing on Tandem's
    /// authority any more.
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Timing {
    /// Heartbeats older than this make a node `suspect`: two were missed.
    pub fn suspect_after(&self) -> Duration {
        self.heartbeat_interval.saturating_mul(3)
    }

    /// After this long without granting a node a lease, the coordinator
    /// knows that lease has expired.
    pub fn lease_expired_after(&self) -> Duration {
        self.lease.saturating_add(self.clock_drift_margin)
    }

    /// The oldest quorum confirmation on which a lease may still be granted.
    pub fn quorum_staleness(&self) -> Duration {
        self.election_timeout.saturating_mul(2)
    }

    /// How long a new coordinator waits from its election before it treats a
    /// node it has not heard from as certainly without a lease.
    pub fn predecessor_grace(&self) -> Duration {
        self.lease_expired_after().saturating_add(self.quorum_staleness())
    }
}

impl Timing {
    /// How long before its lease ends a node starts stopping its exclusive
    /// groups (self-fencing), so that a graceful stop has that long before
    /// the lease guard kills what still runs; nothing is started in it.
    pub fn self_fence_margin(&self) -> Duration {
        self.lease / 4
    }
}

/// A node's own lease, as the node itself counts it: the node half of
/// invariant 2 ("fence before recover"). The coordinator's half is
/// [`LeaseTable::lease_certainly_expired`]; the property tests below run the
/// two against each other.
///
/// * A grant counts from when the node *sent* the heartbeat that earned it,
///   for the shorter of the granted and the node's own configured lease.
/// * The node may *act* (start anything, run hooks) only while the lease is
///   valid and it applied the log at least as far as the coordinator had when
///   it granted the lease, so it knows every assignment made before the grant.
/// * It may *keep* running exclusive groups only until a self-fencing margin
///   ([`Timing::self_fence_margin`]) before the lease ends; at the lease's end
///   the lease guard kills whatever still runs ([`OwnLease::end`]).
/// * A restarted agent inherits the lease its previous run recorded: it may
///   keep what it finds running until that lease ends (less the margin), but
///   it starts nothing on it (it has not applied anything since).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnLease {
    /// When the lease granted in this run ends.
    until: Option<Millis>,
    /// The coordinator's applied index when it granted the lease.
    index: u64,
    /// The end of the previous run's lease, found at start.
    inherited: Option<Millis>,
}

impl OwnLease {
    /// A lease inherited from this agent's previous run (`None`: it ended
    /// or was not recorded, so nothing is inherited).
    pub fn inherited(until: Option<Millis>) -> Self {
        OwnLease {
            inherited: until,
            ..OwnLease::default()
        }
    }

    /// Takes over the lease the previous run recorded (see
    /// [`OwnLease::inherited`]); a lease of this run is kept.
    pub fn inherit(&mut self, until: Option<Millis>) {
        self.inherited = until;
    }

    /// Records a grant of a heartbeat sent at `sent_at` (this node's clock):
    /// the lease runs from `sent_at` for the shorter of `granted` and the
    /// configured lease. A grant never shortens a lease already held (a late
    /// reply to an older heartbeat). `coordinator_applied` is the
    /// coordinator's applied index at the grant. Returns whether the end moved.
    pub fn record_grant(
        &mut self,
        sent_at: Millis,
        granted: Duration,
        coordinator_applied: u64,
        timing: &Timing,
    ) -> bool {
        let until = sent_at.plus(granted.min(timing.lease));
        self.index = self.index.max(coordinator_applied);
        if self.until.is_none_or(|t| t < until) {
            self.until = Some(until);
            return true;
        }
        false
    }

    /// Whether a lease granted in this run is valid at `now`.
    pub fn valid(&self, now: Millis) -> bool {
        self.until.is_some_and(|t| t > now)
    }

    /// When the lease granted in this run ends.
    pub fn until(&self) -> Option<Millis> {
        self.until
    }

    /// The coordinator's applied index at the last grant: how far this node
    /// must have applied before it may act.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Whether this node may act on its lease at `now`: it holds one and has
    /// applied the log (`applied_index`) as far as the grant requires.
    pub fn may_act(&self, now: Millis, applied_index: u64) -> bool {
        self.valid(now) && applied_index >= self.index
    }

    /// Whether this node may start an exclusive group at `now`: it may act,
    /// and will still hold the lease beyond the self-fencing margin (nothing
    /// starts in the last stretch of a lease).
    pub fn may_start(&self, now: Millis, applied_index: u64, timing: &Timing) -> bool {
        self.may_act(now.plus(timing.self_fence_margin()), applied_index)
    }

    /// Whether an exclusive group already running here may keep running at
    /// `now`: a lease of this run or the inherited one lasts beyond the
    /// self-fencing margin. False means: stop it now (self-fencing).
    pub fn may_keep(&self, now: Millis, timing: &Timing) -> bool {
        self.end().is_some_and(|t| t > now.plus(timing.self_fence_margin()))
    }

    /// When self-fencing must start: the self-fencing margin before the end.
    pub fn self_fence_at(&self, timing: &Timing) -> Option<Millis> {
        self.end()
            .map(|t| Millis(t.0.saturating_sub(duration_ms(timing.self_fence_margin()))))
    }

    /// The last instant anything exclusive may run here: the later of this
    /// run's lease and the inherited one. At this moment the lease guard
    /// kills what still runs.
    pub fn end(&self) -> Option<Millis> {
        match (self.until, self.inherited) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the lease (this run's or the inherited one) ended by `now`,
    /// and there was one: the lease guard's trigger.
    pub fn ended(&self, now: Millis) -> bool {
        self.end().is_some_and(|t| t <= now)
    }
}

/// Whether a coordinator may grant or renew leases now, given how long ago
/// its last successful quorum confirmation round started (`None`: none yet in
/// its term).
pub fn may_grant_lease(since_confirmed: Option<Duration>, timing: &Timing) -> bool {
    since_confirmed.is_some_and(|age| age < timing.quorum_staleness())
}

/// Whether a witness should campaign to become coordinator.
///
/// A witness never campaigns on Raft's timer, so members are preferred. But
/// when the only surviving member's log is behind (it restarted just before
/// the other member was lost), no member can win an election and the
/// witness, which holds the whole log, is the only node that can lead. It
/// campaigns while no coordinator has answered its heartbeats (granted or
/// not) for longer than [`Timing::lease_expired_after`] (`quiet`); a
/// coordinator that answers, even with a refusal, is not deposed. It keeps trying every election
/// timeout or so: the hopeless member keeps raising its term, and the witness
/// learns the new term only from the member's refusals.
pub fn witness_should_campaign(quiet: Duration, timing: &Timing) -> bool {
    quiet > timing.lease_expired_after()
}

/// Liveness from the age of the last granted heartbeat.
pub fn liveness(age: Duration, timing: &Timing) -> NodeState {
    if age <= timing.suspect_after() {
        NodeState::Up
    } else if age <= timing.lease_expired_after() {
        NodeState::Suspect
    } else {
        NodeState::Down
    }
}

/// The coordinator's record of the heartbeats it acknowledged during its
/// current term. Dropped when the node stops being coordinator.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    coordinator_since: Millis,
    last_granted: BTreeMap<NodeId, Millis>,
}

impl LeaseTable {
    /// A table for a coordinator elected at `coordinator_since`.
    pub fn new(coordinator_since: Millis) -> Self {
        LeaseTable {
            coordinator_since,
            last_granted: BTreeMap::new(),
        }
    }

    pub fn coordinator_since(&self) -> Millis {
        self.coordinator_since
    }

    /// Records that a heartbeat of `node`, received at `received_at`, was
    /// acknowledged with a lease.
    pub fn record_grant(&mut self, node: NodeId, received_at: Millis) {
        let entry = self.last_granted.entry(node).or_insert(received_at);
        if *entry < received_at {
            *entry = received_at;
        }
    }

    /// Forgets a node that left the cluster.
    pub fn forget(&mut self, node: NodeId) {
        self.last_granted.remove(&node);
    }

    /// Age of the last heartbeat this coordinator granted `node`, if any.
    pub fn age(&self, node: NodeId, now: Millis) -> Option<Duration> {
        self.last_granted.get(&node).map(|t| now.since(*t))
    }

    /// The node's liveness as this coordinator sees it at `now`.
    pub fn state(&self, node: NodeId, now: Millis, timing: &Timing) -> NodeState {
        match self.age(node, now) {
            Some(age) => liveness(age, timing),
            None if self.lease_certainly_expired(node, now, timing) => NodeState::Down,
            None => NodeState::Suspect,
        }
    }

    /// True when no lease of `node`, granted by this coordinator or by any
    /// predecessor, can still be valid (invariant 2 of the safety model).
    pub fn lease_certainly_expired(&self, node: NodeId, now: Millis, timing: &Timing) -> bool {
        let since_election = now.since(self.coordinator_since);
        if since_election <= timing.predecessor_grace() && !crate::mutations::cut_predecessor_grace() {
            return false;
        }
        match self.age(node, now) {
            Some(age) => age > timing.lease_expired_after(),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Timing = Timing {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout: Duration::from_millis(150),
        lease: Duration::from_millis(2000),
        clock_drift_margin: Duration::from_millis(200),
    };

    #[test]
    fn liveness_thresholds() {
        assert_eq!(liveness(Duration::from_millis(150), &T), NodeState::Up);
        assert_eq!(liveness(Duration::from_millis(151), &T), NodeState::Suspect);
        assert_eq!(liveness(Duration::from_millis(2200), &T), NodeState::Suspect);
        assert_eq!(liveness(Duration::from_millis(2201), &T), NodeState::Down);
    }

    #[test]
    fn new_coordinator_waits_for_predecessor_leases() {
        let table = LeaseTable::new(Millis(10_000));
        // 2500 ms = lease + drift + quorum staleness (2 x election timeout).
        assert!(!table.lease_certainly_expired(7, Millis(12_500), &T));
        assert_eq!(table.state(7, Millis(12_500), &T), NodeState::Suspect);
        assert!(table.lease_certainly_expired(7, Millis(12_501), &T));
        assert_eq!(table.state(7, Millis(12_501), &T), NodeState::Down);
    }

    #[test]
    fn granted_lease_keeps_node_up_then_expires() {
        let mut table = LeaseTable::new(Millis(0));
        table.record_grant(1, Millis(5_000));
        table.record_grant(1, Millis(4_000)); // late, out of order: ignored
        assert_eq!(table.state(1, Millis(5_100), &T), NodeState::Up);
        assert!(!table.lease_certainly_expired(1, Millis(7_200), &T));
        assert!(table.lease_certainly_expired(1, Millis(7_201), &T));
    }

    #[test]
    fn witness_campaigns_only_after_a_silent_lease() {
        let ms = Duration::from_millis;
        assert!(!witness_should_campaign(ms(2200), &T));
        assert!(witness_should_campaign(ms(2201), &T));
    }

    #[test]
    fn grants_need_a_recent_quorum() {
        assert!(may_grant_lease(Some(Duration::from_millis(40)), &T));
        assert!(may_grant_lease(Some(Duration::from_millis(299)), &T));
        assert!(!may_grant_lease(Some(Duration::from_millis(300)), &T));
        assert!(!may_grant_lease(None, &T));
    }

    #[test]
    fn own_lease_counts_from_the_send_time_for_the_shorter_lease() {
        let mut own = OwnLease::default();
        assert!(!own.valid(Millis(0)) && !own.may_act(Millis(0), 0));
        // Granted 5 s, configured 2 s: 2 s from the send time.
        assert!(own.record_grant(Millis(1_000), Duration::from_secs(5), 7, &T));
        assert_eq!(own.until(), Some(Millis(3_000)));
        assert!(own.valid(Millis(2_999)) && !own.valid(Millis(3_000)));
        // A late reply to an older heartbeat never shortens it.
        assert!(!own.record_grant(Millis(500), Duration::from_secs(2), 3, &T));
        assert_eq!(own.until(), Some(Millis(3_000)));
        assert_eq!(own.index(), 7);
        // Acting needs the log applied as far as the grant.
        assert!(!own.may_act(Millis(2_000), 6));
        assert!(own.may_act(Millis(2_000), 7));
    }

    #[test]
    fn self_fencing_starts_a_margin_before_the_end_and_nothing_starts_in_it() {
        let mut own = OwnLease::default();
        own.record_grant(Millis(0), T.lease, 0, &T);
        // Margin: a quarter of 2 s.
        assert_eq!(own.self_fence_at(&T), Some(Millis(1_500)));
        assert!(own.may_keep(Millis(1_499), &T));
        assert!(!own.may_keep(Millis(1_500), &T));
        assert!(own.may_start(Millis(1_499), 0, &T));
        assert!(!own.may_start(Millis(1_500), 0, &T));
        assert!(own.may_act(Millis(1_500), 0), "hooks and DNS may still act");
        assert!(!own.ended(Millis(1_999)) && own.ended(Millis(2_000)));
    }

    #[test]
    fn an_inherited_lease_keeps_what_runs_but_starts_nothing() {
        let own = OwnLease::inherited(Some(Millis(2_000)));
        assert!(own.may_keep(Millis(1_000), &T));
        assert!(!own.may_keep(Millis(1_500), &T));
        assert!(!own.may_start(Millis(0), 0, &T));
        assert!(!own.may_act(Millis(0), 0));
        assert!(!own.valid(Millis(0)));
        // The guard ends what still runs at the inherited lease's end.
        assert!(own.ended(Millis(2_000)));
        // None inherited: nothing to keep, no end to guard.
        let none = OwnLease::inherited(None);
        assert!(!none.may_keep(Millis(0), &T) && !none.ended(Millis(u64::MAX)));
        // A new grant extends past the inherited end.
        let mut own = own;
        own.record_grant(Millis(1_000), T.lease, 4, &T);
        assert_eq!(own.end(), Some(Millis(3_000)));
        assert!(own.may_start(Millis(1_000), 4, &T));
    }

    /// Real time taken by `local` milliseconds of a node clock that runs
    /// slow by `slowdown` ms per lease (at most the drift margin), rounded up.
    fn real_ms(local: u64, slowdown: u64) -> u64 {
        let lease = duration_ms(T.lease);
        local + (local * slowdown).div_ceil(lease)
    }

    proptest! {
        /// Invariant 2 with the real functions of both halves: the node
        /// records a grant with [`OwnLease::record_grant`], starts
        /// self-fencing at [`OwnLease::self_fence_at`] with a stop that takes
        /// any time, and whatever is still running at [`OwnLease::end`] is
        /// killed there by the lease guard. The coordinator, which granted on
        /// receipt ([`LeaseTable::record_grant`]), sees the lease as certainly
        /// expired only after the node's last moment of activity, on a node
        /// clock slower by up to the drift margin.
        #[test]
        fn the_node_is_done_before_the_coordinator_believes_its_lease_expired(
            sent_real in 0u64..100_000,
            node_offset in 0u64..1_000_000,
            transit in 0u64..1_000,
            elected_before in 0u64..100_000,
            granted_ms in 0u64..5_000,
            slowdown in 0u64..=200,
            stop_takes in 0u64..10_000,
            kill_latency in 0u64..=1,
        ) {
            let received = sent_real + transit;
            let mut table = LeaseTable::new(Millis(received.saturating_sub(elected_before)));
            table.record_grant(9, Millis(received));
            // The node's clock reads sent_real + node_offset when it sends.
            let sent_local = sent_real + node_offset;
            let mut own = OwnLease::default();
            own.record_grant(Millis(sent_local), Duration::from_millis(granted_ms), 0, &T);
            let end = own.end().unwrap().0;
            let fence_at = own.self_fence_at(&T).unwrap().0;
            prop_assert!(fence_at <= end);
            // The stop ends by itself or is killed at the lease's end.
            let last_local = (fence_at + stop_takes).min(end);
            let last_real = sent_real + real_ms(last_local.saturating_sub(sent_local), slowdown) + kill_latency;
            // At the node's very last moment of activity (and so at every
            // earlier one: the bound only grows with time), the coordinator
            // must not yet believe the lease expired.
            prop_assert!(
                !table.lease_certainly_expired(9, Millis(last_real), &T),
                "the coordinator believes the lease expired while the node is active until {}", last_real
            );
        }

        /// The successor's half against the real node functions: a deposed
        /// coordinator's last grant (within the staleness bound of a
        /// confirmation that started no later than the new election) is
        /// outlived by the successor's wait.
        #[test]
        fn a_successor_waits_out_the_node_side_of_any_predecessor_grant(
            elected in 1_000u64..100_000,
            confirmed_before in 0u64..1_000,
            grant_after_confirm in 0u64..300,
            transit in 0u64..200,
            slowdown in 0u64..=200,
        ) {
            prop_assume!(may_grant_lease(Some(Duration::from_millis(grant_after_confirm)), &T));
            let granted = elected - confirmed_before + grant_after_confirm;
            let sent = granted.saturating_sub(transit);
            let mut own = OwnLease::default();
            own.record_grant(Millis(sent), T.lease, 0, &T);
            let last_real = sent + real_ms(own.end().unwrap().0 - sent, slowdown);
            let successor = LeaseTable::new(Millis(elected));
            prop_assert!(
                !successor.lease_certainly_expired(9, Millis(last_real), &T),
                "the successor believes the lease expired while the node is active until {}", last_real
            );
        }

        /// A restarted agent never keeps anything past the lease its previous
        /// run recorded, and never starts on an inherited lease alone.
        #[test]
        fn an_inherited_lease_never_outlives_the_record(end in 0u64..1_000_000, now in 0u64..1_000_000) {
            let own = OwnLease::inherited(Some(Millis(end)));
            prop_assert!(own.end() == Some(Millis(end)));
            if own.may_keep(Millis(now), &T) {
                prop_assert!(now + duration_ms(T.self_fence_margin()) < end);
            }
            prop_assert!(!own.may_start(Millis(now), 0, &T));
        }

        /// Liveness never improves as a heartbeat ages.
        #[test]
        fn liveness_is_monotonic(a in 0u64..10_000, b in 0u64..10_000) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(liveness(Duration::from_millis(lo), &T) <= liveness(Duration::from_millis(hi), &T));
        }
    }
}
