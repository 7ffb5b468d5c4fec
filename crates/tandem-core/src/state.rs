//! The replicated cluster state and the commands that change it.
//!
//! Raft replicates [`Command`]s; every node applies them in the same order with
//! [`ClusterState::apply`], a pure function, so every node holds the same
//! state for the same log index. Wall-clock times inside commands are put
//! there by the proposer (they are for people reading events, never for
//! decisions), so applying a command never reads a clock.
//!
//! Membership itself lives in Raft's membership configuration; this state
//! keeps what Raft does not: the cluster's name and a bounded event log.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::membership::NodeInfo;

/// How many events the replicated log keeps; older ones are dropped.
pub const EVENT_LOG_CAPACITY: usize = 1000;

/// The longest operator note accepted, in bytes.
pub const NOTE_MAX_BYTES: usize = 1024;

/// A change to the cluster state, as carried in a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Records that a node was added to the cluster (after Raft's membership
    /// change committed).
    NodeAdded {
        node: NodeInfo,
        actor: String,
        at_unix_ms: u64,
    },
    /// Records that a node left the cluster.
    NodeRemoved {
        node: NodeInfo,
        actor: String,
        at_unix_ms: u64,
    },
    /// An operator's note in the event log ("starting maintenance on rack 3").
    Note {
        message: String,
        actor: String,
        at_unix_ms: u64,
    },
}

/// What applying a command returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Applied {
    /// Sequence number of the event the command recorded, if any.
    pub event_seq: Option<u64>,
}

/// One entry of the replicated event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing, never reused, also after old events are dropped.
    pub seq: u64,
    pub at_unix_ms: u64,
    /// Who caused it: an operator (`user@host`) or a node (`node:NAME`).
    pub actor: String,
    pub kind: EventKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    NodeAdded,
    NodeRemoved,
    Note,
}

/// Everything the state machine holds besides Raft's own membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    pub events: VecDeque<Event>,
    pub next_event_seq: u64,
}

impl ClusterState {
    /// Applies one committed command. Never fails: commands are validated
    /// before they are proposed, and a command that no longer makes sense is
    /// recorded as it is rather than rejected, so every node stays identical.
    pub fn apply(&mut self, command: &Command) -> Applied {
        let (kind, message, actor, at_unix_ms) = match command {
            Command::NodeAdded {
                node,
                actor,
                at_unix_ms,
            } => (EventKind::NodeAdded, format!("node {node} joined"), actor, *at_unix_ms),
            Command::NodeRemoved {
                node,
                actor,
                at_unix_ms,
            } => (EventKind::NodeRemoved, format!("node {node} left"), actor, *at_unix_ms),
            Command::Note {
                message,
                actor,
                at_unix_ms,
            } => (EventKind::Note, message.clone(), actor, *at_unix_ms),
        };
        let seq = self.record(kind, message, actor.clone(), at_unix_ms);
        Applied { event_seq: Some(seq) }
    }

    fn record(&mut self, kind: EventKind, message: String, actor: String, at_unix_ms: u64) -> u64 {
        let seq = self.next_event_seq;
        self.next_event_seq += 1;
        if self.events.len() == EVENT_LOG_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq,
            at_unix_ms,
            actor,
            kind,
            message,
        });
        seq
    }
}

/// Checks an operator note before it is proposed.
pub fn validate_note(message: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("the note is empty".into());
    }
    if message.len() > NOTE_MAX_BYTES {
        return Err(format!(
            "the note is {} bytes long; at most {NOTE_MAX_BYTES} are accepted",
            message.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn note(i: usize) -> Command {
        Command::Note {
            message: format!("n{i}"),
            actor: "op@host".into(),
            at_unix_ms: i as u64,
        }
    }

    #[test]
    fn event_log_is_bounded_and_sequence_survives_dropping() {
        let mut s = ClusterState::default();
        for i in 0..EVENT_LOG_CAPACITY + 5 {
            s.apply(&note(i));
        }
        assert_eq!(s.events.len(), EVENT_LOG_CAPACITY);
        assert_eq!(s.events.front().map(|e| e.seq), Some(5));
        assert_eq!(s.next_event_seq, (EVENT_LOG_CAPACITY + 5) as u64);
    }

    #[test]
    fn commands_round_trip_through_the_log_encoding() {
        let c = Command::NodeAdded {
            node: NodeInfo {
                name: "n4".into(),
                address: "127.0.0.1:7404".into(),
                role: crate::NodeRole::Witness,
            },
            actor: "op@host".into(),
            at_unix_ms: 1,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""type":"node_added""#), "{json}");
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), c);
    }

    #[test]
    fn notes_are_checked() {
        assert!(validate_note("  ").is_err());
        assert!(
            validate_note(&"x".repeat(NOTE_MAX_BYTES + 1))
                .unwrap_err()
                .contains("at most 1024")
        );
        assert!(validate_note("rack 3 maintenance").is_ok());
    }

    proptest! {
        /// Applying the same commands yields the same state: the property
        /// every replica relies on.
        #[test]
        fn apply_is_deterministic(n in 0usize..50) {
            let mut a = ClusterState::default();
            let mut b = ClusterState::default();
            for i in 0..n {
                prop_assert_eq!(a.apply(&note(i)), b.apply(&note(i)));
            }
            prop_assert_eq!(a, b);
        }
    }
}
