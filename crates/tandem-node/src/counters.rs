//! Counters the node runtime keeps while the process runs: plain atomics,
//! read by whoever reports them (`/metrics` turns them into Prometheus
//! values at scrape time). The lease runtime's own counters live with it
//! ([`crate::liveness::LeaseCounters`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of the node runtime since the process started.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Fencing attempts this node ran as coordinator that fenced the node.
    pub fence_fenced: AtomicU64,
    /// Fencing attempts this node ran as coordinator that failed.
    pub fence_failed: AtomicU64,
    /// Resource actions run on this node that failed (failed, timed out or
    /// the agent unavailable), by action: start, stop, monitor.
    pub resource_failures: [AtomicU64; 3],
    /// RFC 2136 pushes to a site's DNS server that failed (this node as
    /// coordinator; each is retried).
    pub dns_push_failures: AtomicU64,
}

/// The actions of [`NodeCounters::resource_failures`], in its order.
pub const RESOURCE_ACTIONS: [&str; 3] = ["start", "stop", "monitor"];

/// The counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCountersSnapshot {
    pub fence_fenced: u64,
    pub fence_failed: u64,
    pub resource_failures: [u64; 3],
    pub dns_push_failures: u64,
}

impl NodeCounters {
    /// Counts one fencing attempt by its outcome.
    pub fn fence_attempt(&self, fenced: bool) {
        let counter = if fenced { &self.fence_fenced } else { &self.fence_failed };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a failed resource action (`action`: one of [`RESOURCE_ACTIONS`]).
    pub fn resource_failure(&self, action: &str) {
        if let Some(i) = RESOURCE_ACTIONS.iter().position(|a| *a == action) {
            self.resource_failures[i].fetch_add(1, Relaxed);
        }
    }

    pub fn snapshot(&self) -> NodeCountersSnapshot {
        NodeCountersSnapshot {
            fence_fenced: self.fence_fenced.load(Relaxed),
            fence_failed: self.fence_failed.load(Relaxed),
            resource_failures: self.resource_failures.each_ref().map(|c| c.load(Relaxed)),
            dns_push_failures: self.dns_push_failures.load(Relaxed),
        }
    }
}
