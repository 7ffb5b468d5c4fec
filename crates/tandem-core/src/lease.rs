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
//! coordinator recently: a confirmation round started less than
//! [`Timing::quorum_staleness`] ago ([`may_grant_lease`]; the time is taken
//! *before* the round is sent, so a pause of the process only makes it look
//! older). A newly elected coordinator knows nothing of what its predecessor
//! granted; the predecessor's last confirmation cannot be later than the new
//! election (a voter of the new majority would have had to confirm it after
//! voting), so it may still have granted a lease up to
//! `quorum_staleness` after that election, and the successor treats a node it
//! has not heard from as certainly without a lease only
//! [`Timing::predecessor_grace`] after its own election.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::membership::NodeId;
use crate::timing::{Millis, Timing};

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

    /// How often the coordinator asks a quorum to confirm it.
    pub fn quorum_check_interval(&self) -> Duration {
        self.election_timeout
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
        if since_election <= timing.predecessor_grace() {
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

    proptest! {
        /// The heart of invariant 2: whenever the coordinator believes a
        /// node's lease has certainly expired, the node itself (counting from
        /// when it sent the heartbeat, on a clock whose rate differs by at most
        /// the drift margin over a lease) has already stopped believing in it.
        #[test]
        fn node_gives_up_its_lease_before_the_coordinator_reassigns(
            sent in 0u64..100_000,
            transit in 0u64..1_000,
            elected_before in 0u64..100_000,
            // node clock runs slow: its lease lasts longer in real time, by up to the margin
            slowdown in 0u64..=200,
            check_at in 0u64..10_000,
        ) {
            let received = sent + transit;
            let elected = received.saturating_sub(elected_before);
            let mut table = LeaseTable::new(Millis(elected));
            table.record_grant(9, Millis(received));
            let now = received + check_at;
            let node_lease_end_real = sent + 2000 + slowdown;
            if table.lease_certainly_expired(9, Millis(now), &T) {
                prop_assert!(now > node_lease_end_real);
            }
        }

        /// The successor's side of invariant 2. A deposed coordinator's last
        /// quorum confirmation round started no later than the successor's
        /// election (`confirmed <= elected`), and it grants only while that
        /// confirmation is younger than the staleness bound. Whatever lease it
        /// granted, the successor, which never heard from the node, treats the
        /// lease as expired only after the node (on a clock drifting within
        /// the margin) gave it up.
        #[test]
        fn a_successor_honours_every_lease_its_predecessor_could_grant(
            elected in 1_000u64..100_000,
            confirmed_before in 0u64..1_000,
            grant_after_confirm in 0u64..300,
            transit in 0u64..200,
            slowdown in 0u64..=200,
            check_after in 0u64..10_000,
        ) {
            let confirmed = elected - confirmed_before;
            prop_assume!(may_grant_lease(Some(Duration::from_millis(grant_after_confirm)), &T));
            let granted = confirmed + grant_after_confirm;
            let sent = granted.saturating_sub(transit);
            let node_lease_end_real = sent + 2000 + slowdown;
            let successor = LeaseTable::new(Millis(elected));
            let now = elected + check_after;
            if successor.lease_certainly_expired(9, Millis(now), &T) {
                prop_assert!(now > node_lease_end_real, "now {} lease end {}", now, node_lease_end_real);
            }
        }

        /// Liveness never improves as a heartbeat ages.
        #[test]
        fn liveness_is_monotonic(a in 0u64..10_000, b in 0u64..10_000) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(liveness(Duration::from_millis(lo), &T) <= liveness(Duration::from_millis(hi), &T));
        }
    }
}
