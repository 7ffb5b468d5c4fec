//! What the simulated machines really did, apart from what any node
//! believes: which service ran where and under which epoch, what the
//! downstream store accepted, and the trace every run is hashed from.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// One life of a group's service on one node: active from its start's first
/// moment until a stop ended, the start failed or timed out (its process was
/// killed), the lease guard killed it, or the machine crashed.
#[derive(Debug, Clone)]
pub struct Life {
    pub id: u64,
    pub epoch: u64,
    pub began_ms: u64,
    /// The start completed: the service is up (monitors say running).
    pub up: bool,
}

/// A broken invariant, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub at_ms: u64,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {} ms: {}", self.invariant, self.at_ms, self.detail)
    }
}

/// Lines of trace kept for a violation's report.
const TAIL: usize = 80;

/// The run's trace: every event is hashed (FNV-1a, stable across builds and
/// machines); the last lines are kept for a report.
#[derive(Debug)]
pub struct Trace {
    hash: u64,
    pub events: u64,
    tail: VecDeque<String>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            tail: VecDeque::new(),
        }
    }
}

impl Trace {
    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= u64::from(*b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// An event worth reading in a report: hashed and kept in the tail.
    pub fn event(&mut self, at_ms: u64, line: String) {
        let line = format!("{at_ms:>6} ms  {line}");
        self.mix(line.as_bytes());
        self.events += 1;
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// A detail only hashed (every message delivered, for instance).
    pub fn note(&mut self, at_ms: u64, what: &[u8]) {
        self.mix(&at_ms.to_le_bytes());
        self.mix(what);
        self.events += 1;
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

/// The simulated world: services' lives, the downstream store, and counts.
#[derive(Debug, Default)]
pub struct World {
    next_life: u64,
    /// (group, node index) -> the life running there.
    pub lives: BTreeMap<(String, usize), Life>,
    /// Per group: the highest epoch any start ran under, and where.
    started: BTreeMap<String, (u64, usize)>,
    /// Per group: the highest epoch the downstream store accepted.
    store: BTreeMap<String, u64>,
    pub violation: Option<Violation>,
    pub starts: u64,
    /// Starts on another node than the group's previous start.
    pub moves: u64,
    pub kills: u64,
}

impl World {
    fn violate(&mut self, invariant: &'static str, at_ms: u64, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                at_ms,
                detail,
            });
        }
    }

    /// A start action's first moment: the service may be active from now.
    /// Checks one primary and the fencing token; returns the life's id.
    pub fn start_began(&mut self, names: &[String], node: usize, group: &str, epoch: u64, at_ms: u64) -> u64 {
        self.starts += 1;
        let others: Vec<String> = self
            .lives
            .iter()
            .filter(|((g, n), _)| g == group && *n != node)
            .map(|((_, n), l)| format!("{} (epoch {}, since {} ms)", names[*n], l.epoch, l.began_ms))
            .collect();
        if !others.is_empty() {
            self.violate(
                "one primary",
                at_ms,
                format!(
                    "{group} starts on {} at epoch {epoch} while still active on {}",
                    names[node],
                    others.join(", ")
                ),
            );
        }
        match self.started.get(group) {
            Some(&(e, n)) if epoch < e || (epoch == e && n != node) => self.violate(
                "fencing token",
                at_ms,
                format!(
                    "{group} starts on {} at epoch {epoch}, after a start on {} at epoch {e}",
                    names[node], names[n]
                ),
            ),
            Some(&(_, n)) if n != node => self.moves += 1,
            _ => {}
        }
        self.started.insert(group.to_string(), (epoch, node));
        let key = (group.to_string(), node);
        if let Some(life) = self.lives.get_mut(&key) {
            // Started again over a life that never ended: still one life.
            life.epoch = epoch;
            return life.id;
        }
        self.next_life += 1;
        self.lives.insert(
            key,
            Life {
                id: self.next_life,
                epoch,
                began_ms: at_ms,
                up: false,
            },
        );
        self.next_life
    }

    /// The start of life `id` completed (ok) or ended it (failed, killed at its timeout).
    pub fn start_ended(&mut self, node: usize, group: &str, id: u64, ok: bool) {
        let key = (group.to_string(), node);
        if self.lives.get(&key).is_some_and(|l| l.id == id) {
            if ok {
                if let Some(l) = self.lives.get_mut(&key) {
                    l.up = true;
                }
            } else {
                self.lives.remove(&key);
            }
        }
    }

    /// A stop ended: nothing of the group runs on `node` any more.
    pub fn stopped(&mut self, node: usize, group: &str) {
        self.lives.remove(&(group.to_string(), node));
    }

    /// The lease guard's SIGKILL; true when something ran.
    pub fn kill(&mut self, node: usize, group: &str) -> bool {
        let killed = self.lives.remove(&(group.to_string(), node)).is_some();
        if killed {
            self.kills += 1;
        }
        killed
    }

    /// The machine stopped dead: everything on it ends.
    pub fn crash(&mut self, node: usize) {
        self.lives.retain(|(_, n), _| *n != node);
    }

    /// Whether the group's service is up on `node` (what a monitor finds).
    pub fn running(&self, node: usize, group: &str) -> bool {
        self.lives.get(&(group.to_string(), node)).is_some_and(|l| l.up)
    }

    /// Every running service writes to the downstream store, which refuses
    /// an epoch older than one it accepted: a refused writer is a stale
    /// primary still at work.
    pub fn write_to_store(&mut self, names: &[String], at_ms: u64) {
        let writers: Vec<(String, usize, u64)> = self
            .lives
            .iter()
            .filter(|(_, l)| l.up)
            .map(|((g, n), l)| (g.clone(), *n, l.epoch))
            .collect();
        for (group, node, epoch) in writers {
            let newest = self.store.entry(group.clone()).or_insert(epoch);
            if epoch < *newest {
                let newest = *newest;
                self.violate(
                    "fencing token",
                    at_ms,
                    format!(
                        "the store refused {group}'s write at epoch {epoch} from {} after accepting epoch {newest}",
                        names[node]
                    ),
                );
            } else {
                *newest = epoch;
            }
        }
    }

    /// Where each group's service is up, by group.
    pub fn running_on(&self) -> BTreeMap<String, Vec<usize>> {
        let mut by_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for ((g, n), l) in &self.lives {
            if l.up {
                by_group.entry(g.clone()).or_default().push(*n);
            }
        }
        by_group
    }
}
