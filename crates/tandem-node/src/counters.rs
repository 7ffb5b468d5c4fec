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
    /// Scheduled backups: the last verified one, the last failure.
    pub backup: std::sync::Mutex<crate::backup::BackupRecord>,
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
    /// Scheduled backups are configured on this node.
    pub backup_configured: bool,
    pub backup_failures: u64,
    /// Age of the last verified scheduled backup taken here, in seconds.
    pub backup_age_s: Option<u64>,
    /// The backups are a concern ([`crate::backup::BackupRecord::warning`]).
    pub backup_warning: bool,
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

    /// The counters, with the backup figures as of `now_unix_ms`.
    pub fn snapshot_at(&self, now_unix_ms: u64) -> NodeCountersSnapshot {
        let b = self.backup.lock().unwrap_or_else(|e| e.into_inner()).clone();
        NodeCountersSnapshot {
            backup_configured: b.interval_ms.is_some(),
            backup_failures: b.failures,
            backup_age_s: b.age_s(now_unix_ms).map(|s| s as u64),
            backup_warning: b.warning(now_unix_ms).is_some(),
            ..self.snapshot()
        }
    }

    pub fn snapshot(&self) -> NodeCountersSnapshot {
        NodeCountersSnapshot {
            fence_fenced: self.fence_fenced.load(Relaxed),
            fence_failed: self.fence_failed.load(Relaxed),
            resource_failures: self.resource_failures.each_ref().map(|c| c.load(Relaxed)),
            dns_push_failures: self.dns_push_failures.load(Relaxed),
            ..NodeCountersSnapshot::default()
        }
    }
}
