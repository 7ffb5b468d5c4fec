//! Per-client token buckets for UDP queries.
//!
//! A client is an IPv4 address or an IPv6 /64. Each has a bucket of
//! `rate` tokens refilled at `rate` per second; a query takes one. A query
//! over the limit is dropped, except every second one, which gets an empty
//! truncated answer (TC, "slip" as in BIND's RRL), so a real client whose
//! address is being spoofed in a flood falls back to TCP (never limited)
//! and still gets its answer. The table is bounded: when a shard is full,
//! idle buckets are evicted, and if none are, the shard starts afresh.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 16;
const MAX_PER_SHARD: usize = 8192;
const MILLI: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    Slip,
    Drop,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Thousandths of a token.
    milli_tokens: u64,
    /// Milliseconds since `RateLimiter::start` at the last refill.
    at_ms: u64,
    excess: u32,
}

pub(crate) struct RateLimiter {
    rate: u64,
    start: Instant,
    shards: Vec<Mutex<HashMap<u128, Bucket>>>,
}

fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        // Top 64 bits: the /64; a marker bit keeps them apart from IPv4.
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | 1u128 << 32,
    }
}

impl RateLimiter {
    pub fn new(rate_per_sec: u32) -> RateLimiter {
        RateLimiter {
            rate: u64::from(rate_per_sec.max(1)),
            start: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        let key = client_key(ip);
        let now_ms = u64::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX);
        let capacity = self.rate * MILLI;
        let shard_index = (key ^ (key >> 64) ^ (key >> 17)) as usize % SHARDS;
        let Some(shard) = self.shards.get(shard_index) else {
            return Verdict::Allow;
        };
        let mut table = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if table.len() >= MAX_PER_SHARD && !table.contains_key(&key) {
            // Evict buckets that have refilled completely (idle clients).
            let rate = self.rate;
            table.retain(|_, b| {
                b.milli_tokens
                    .saturating_add(now_ms.saturating_sub(b.at_ms).saturating_mul(rate))
                    < capacity
            });
            if table.len() >= MAX_PER_SHARD {
                table.clear();
            }
        }
        let bucket = table.entry(key).or_insert(Bucket {
            milli_tokens: capacity,
            at_ms: now_ms,
            excess: 0,
        });
        let elapsed = now_ms.saturating_sub(bucket.at_ms);
        bucket.milli_tokens = bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(capacity);
        bucket.at_ms = now_ms;
        if bucket.milli_tokens >= MILLI {
            bucket.milli_tokens -= MILLI;
            Verdict::Allow
        } else {
            bucket.excess = bucket.excess.wrapping_add(1);
            if bucket.excess % 2 == 0 {
                Verdict::Slip
            } else {
                Verdict::Drop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_rate_then_slips_and_drops_then_refills() {
        let rl = RateLimiter::new(10);
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert_eq!(rl.check(ip, t0), Verdict::Allow);
        }
        assert_eq!(rl.check(ip, t0), Verdict::Drop);
        assert_eq!(rl.check(ip, t0), Verdict::Slip);
        // Another client is not affected.
        assert_eq!(rl.check("192.0.2.2".parse().unwrap(), t0), Verdict::Allow);
        // 100 ms later: one more token.
        assert_eq!(rl.check(ip, t0 + Duration::from_millis(100)), Verdict::Allow);
        assert_ne!(rl.check(ip, t0 + Duration::from_millis(100)), Verdict::Allow);
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let rl = RateLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(rl.check("2001:db8::1".parse().unwrap(), t0), Verdict::Allow);
        assert_ne!(rl.check("2001:db8::2".parse().unwrap(), t0), Verdict::Allow);
        assert_eq!(rl.check("2001:db8:0:1::1".parse().unwrap(), t0), Verdict::Allow);
    }

    #[test]
    fn table_stays_bounded() {
        let rl = RateLimiter::new(5);
        let t0 = Instant::now();
        for i in 0..(SHARDS * MAX_PER_SHARD * 2) as u32 {
            rl.check(IpAddr::V4(i.into()), t0);
        }
        let total: usize = rl.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * MAX_PER_SHARD);
    }
}
