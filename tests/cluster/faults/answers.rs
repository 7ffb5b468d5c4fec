//! What clients are told during a fault run: every node's DNS answer for
//! every group, asked from the client host every 20 ms (real UDP queries to
//! the real responders, from a thread inside the client's network
//! namespace), stamped on CLOCK_MONOTONIC like the ledger's records.
//!
//! The check (invariant 5, no stale answers): once a group's new holder made
//! its first accepted write, no node may answer the previous holder's
//! address later than the record's TTL after that write (a resolver may keep
//! an answer for the TTL; a node must not hand it out fresh).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use super::checker::Record;
use super::net::mono;

/// How often every node is asked about every group.
pub const EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Addr(Ipv4Addr),
    /// NOERROR without an address (no primary), or another code.
    Code(ResponseCode),
    /// No answer within the round.
    Silent,
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// When the query was sent (CLOCK_MONOTONIC seconds).
    pub t: f64,
    pub node: &'static str,
    pub group: &'static str,
    pub answer: Answer,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Sample>, String>>>,
}

impl Sampler {
    /// Starts asking `servers` (node, DNS address) about `groups` in `zone`,
    /// from inside the network namespace at `netns` (a /run/netns path).
    pub fn start(
        netns: std::path::PathBuf,
        servers: Vec<(&'static str, SocketAddr)>,
        groups: Vec<&'static str>,
        zone: String,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || sample(&netns, &servers, &groups, &zone, &stopped));
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; everything sampled.
    pub fn finish(&mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(samples))) => samples,
            Some(Ok(Err(e))) => panic!("the DNS sampler failed: {e}"),
            Some(Err(_)) => panic!("the DNS sampler panicked"),
            None => Vec::new(),
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn sample(
    netns: &std::path::Path,
    servers: &[(&'static str, SocketAddr)],
    groups: &[&'static str],
    zone: &str,
    stop: &AtomicBool,
) -> Result<Vec<Sample>, String> {
    // This thread alone moves into the client host's network namespace.
    let ns = std::fs::File::open(netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let names: Vec<Name> = groups
        .iter()
        .map(|g| Name::from_str(&format!("{g}.{zone}")).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut samples = Vec::new();
    let mut id: u16 = 0;
    while !stop.load(Ordering::SeqCst) {
        let round = std::time::Instant::now();
        let t = mono();
        // id -> (node, group)
        let mut asked: BTreeMap<u16, (&'static str, &'static str)> = BTreeMap::new();
        for (node, server) in servers {
            for (g, name) in groups.iter().zip(&names) {
                id = id.wrapping_add(1);
                let mut q = Message::new(id, MessageType::Query, OpCode::Query);
                q.metadata.recursion_desired = false;
                q.add_query(Query::query(name.clone(), RecordType::A));
                let bytes = q.to_bytes().map_err(|e| e.to_string())?;
                let _ = socket.send_to(&bytes, server);
                asked.insert(id, (node, g));
            }
        }
        let mut buf = [0u8; 1500];
        while !asked.is_empty() {
            let left = EVERY.saturating_sub(round.elapsed());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            let Ok((n, _)) = socket.recv_from(&mut buf) else { break };
            let Ok(m) = Message::from_bytes(&buf[..n]) else {
                continue;
            };
            let Some((node, group)) = asked.remove(&m.metadata.id) else {
                continue;
            };
            let addr = m.answers.iter().find_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            });
            let answer = match addr {
                Some(a) => Answer::Addr(a),
                None => Answer::Code(m.metadata.response_code),
            };
            samples.push(Sample { t, node, group, answer });
        }
        for (node, group) in asked.into_values() {
            samples.push(Sample {
                t,
                node,
                group,
                answer: Answer::Silent,
            });
        }
        std::thread::sleep(EVERY.saturating_sub(round.elapsed()));
    }
    Ok(samples)
}

/// Every answer, after a group moved, that still gave the previous holder's
/// address more than `ttl` after the new holder's first accepted write.
/// `addr_of` maps a node to its service address. Moves come from the
/// ledger's accepted records (a new node or epoch).
pub fn stale_answers(
    records: &[Record],
    samples: &[Sample],
    ttl: Duration,
    addr_of: impl Fn(&str) -> Option<Ipv4Addr>,
) -> Vec<String> {
    let mut found = Vec::new();
    let groups: std::collections::BTreeSet<&str> = records.iter().map(|r| r.group.as_str()).collect();
    for group in groups {
        // Holder changes: (first accepted write of the new holder, old node).
        let mut holder: Option<(&str, u64)> = None;
        let mut moves: Vec<(f64, String, String)> = Vec::new();
        for r in records.iter().filter(|r| r.group == group && r.accepted) {
            match holder {
                Some((node, epoch)) if node == r.node && epoch == r.epoch => {}
                Some((node, _)) => {
                    if node != r.node {
                        moves.push((r.t, node.to_string(), r.node.clone()));
                    }
                    holder = Some((&r.node, r.epoch));
                }
                None => holder = Some((&r.node, r.epoch)),
            }
        }
        for (t, old, new) in moves {
            let Some(old_addr) = addr_of(&old) else { continue };
            // Until the group moves back to the old node (a later move).
            let back = records
                .iter()
                .find(|r| r.group == group && r.accepted && r.node == old && r.t > t)
                .map_or(f64::INFINITY, |r| r.t);
            for s in samples.iter().filter(|s| {
                s.group == group && s.t > t + ttl.as_secs_f64() && s.t < back && s.answer == Answer::Addr(old_addr)
            }) {
                found.push(format!(
                    "{group}: {} answered {old} ({old_addr}) {:.3} s after {new}'s first accepted write",
                    s.node,
                    s.t - t
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: f64, node: &str, epoch: u64) -> Record {
        Record {
            t,
            node: node.to_string(),
            group: "alpha".to_string(),
            epoch,
            accepted: true,
            kind: "write".to_string(),
            pid: 0,
        }
    }

    fn ans(t: f64, node: &'static str, a: [u8; 4]) -> Sample {
        Sample {
            t,
            node,
            group: "alpha",
            answer: Answer::Addr(Ipv4Addr::from(a)),
        }
    }

    fn addr(n: &str) -> Option<Ipv4Addr> {
        match n {
            "a" => Some(Ipv4Addr::new(10, 0, 0, 1)),
            "b" => Some(Ipv4Addr::new(10, 0, 0, 2)),
            _ => None,
        }
    }

    #[test]
    fn an_answer_naming_the_old_holder_past_the_ttl_after_the_move_is_found() {
        let records = vec![rec(1.0, "a", 1), rec(2.0, "a", 1), rec(5.0, "b", 3), rec(6.0, "b", 3)];
        let ttl = Duration::from_secs(1);
        // Within the TTL after the move: allowed. After: stale.
        let ok = vec![
            ans(4.0, "w", [10, 0, 0, 1]),
            ans(5.9, "w", [10, 0, 0, 1]),
            ans(6.5, "w", [10, 0, 0, 2]),
        ];
        assert!(stale_answers(&records, &ok, ttl, addr).is_empty());
        let stale = vec![ans(6.2, "w", [10, 0, 0, 1])];
        let found = stale_answers(&records, &stale, ttl, addr);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("w answered a"), "{found:?}");
    }

    #[test]
    fn a_move_back_ends_the_window() {
        let records = vec![rec(1.0, "a", 1), rec(5.0, "b", 3), rec(9.0, "a", 5)];
        let samples = vec![ans(9.5, "w", [10, 0, 0, 1])];
        assert!(stale_answers(&records, &samples, Duration::from_secs(1), addr).is_empty());
    }
}
