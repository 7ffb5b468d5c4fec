//! Counters, sharded per worker so that the hot path never shares a cache
//! line between threads; read them with [`Stats::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::query::{Outcome, Transport};

/// Response codes counted individually (0..=16, BADVERS is 16); others in the last slot.
pub const RCODE_SLOTS: usize = 18;

#[derive(Default)]
#[repr(align(128))]
struct Shard {
    queries_udp: AtomicU64,
    queries_tcp: AtomicU64,
    by_rcode: [AtomicU64; RCODE_SLOTS],
    truncated: AtomicU64,
    dropped: AtomicU64,
    transfers: AtomicU64,
    rate_limited_dropped: AtomicU64,
    rate_limited_slipped: AtomicU64,
}

/// The responder's counters, readable from outside (e.g. for Prometheus).
pub struct Stats {
    shards: Box<[Shard]>,
}

/// The counters at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Queries received over UDP (including dropped and rate-limited ones).
    pub queries_udp: u64,
    /// Queries received over TCP.
    pub queries_tcp: u64,
    /// Responses sent, by response code (index = RCODE, 16 = BADVERS, 17 = other).
    pub responses_by_rcode: [u64; RCODE_SLOTS],
    /// Responses sent with TC set (too large for UDP; rate-limit slips are not counted here).
    pub truncated: u64,
    /// Packets not answered: too short, not a query, or an answer that could not be encoded.
    pub dropped: u64,
    /// Zone transfers served.
    pub transfers: u64,
    /// UDP queries dropped by the rate limit.
    pub rate_limited_dropped: u64,
    /// UDP queries answered with an empty TC response by the rate limit.
    pub rate_limited_slipped: u64,
}

impl StatsSnapshot {
    /// All queries.
    pub fn queries(&self) -> u64 {
        self.queries_udp + self.queries_tcp
    }

    /// Responses with this response code.
    pub fn responses(&self, rcode: u16) -> u64 {
        self.responses_by_rcode.get(slot(rcode)).copied().unwrap_or(0)
    }
}

fn slot(rcode: u16) -> usize {
    usize::from(rcode).min(RCODE_SLOTS - 1)
}

impl Stats {
    /// Counters in `shards` shards (about one per thread writing them).
    pub fn new(shards: usize) -> Stats {
        Stats {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    fn shard(&self, i: usize) -> Option<&Shard> {
        self.shards.get(i % self.shards.len().max(1))
    }

    pub(crate) fn record(&self, worker: usize, transport: Transport, outcome: &Outcome) {
        let Some(s) = self.shard(worker) else { return };
        match transport {
            Transport::Udp => s.queries_udp.fetch_add(1, Relaxed),
            Transport::Tcp => s.queries_tcp.fetch_add(1, Relaxed),
        };
        match outcome {
            Outcome::Reply { rcode, truncated } => {
                if let Some(c) = s.by_rcode.get(slot(*rcode)) {
                    c.fetch_add(1, Relaxed);
                }
                if *truncated {
                    s.truncated.fetch_add(1, Relaxed);
                }
            }
            Outcome::Drop => {
                s.dropped.fetch_add(1, Relaxed);
            }
            Outcome::Transfer(_) => {
                s.transfers.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn rate_limited(&self, worker: usize, slipped: bool) {
        let Some(s) = self.shard(worker) else { return };
        s.queries_udp.fetch_add(1, Relaxed);
        if slipped {
            s.rate_limited_slipped.fetch_add(1, Relaxed);
        } else {
            s.rate_limited_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Sums the shards.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut out = StatsSnapshot::default();
        for s in self.shards.iter() {
            out.queries_udp += s.queries_udp.load(Relaxed);
            out.queries_tcp += s.queries_tcp.load(Relaxed);
            for (o, c) in out.responses_by_rcode.iter_mut().zip(s.by_rcode.iter()) {
                *o += c.load(Relaxed);
            }
            out.truncated += s.truncated.load(Relaxed);
            out.dropped += s.dropped.load(Relaxed);
            out.transfers += s.transfers.load(Relaxed);
            out.rate_limited_dropped += s.rate_limited_dropped.load(Relaxed);
            out.rate_limited_slipped += s.rate_limited_slipped.load(Relaxed);
        }
        out
    }

    /// All queries so far.
    pub fn queries(&self) -> u64 {
        self.snapshot().queries()
    }
}
