//! The end of this node's lease, remembered across an agent restart.
//!
//! A restarted agent that finds exclusive services still running must not
//! keep them past the lease its previous run held: the cluster may start them
//! elsewhere right after it. The agent writes the lease's end, on the
//! system's boot-time clock (`/proc/uptime`, which a process restart does not
//! reset), to a file in its data directory whenever the lease is renewed; the
//! next run reads it before anything else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::clock::Clock;
use crate::node::NodeContext;

/// Milliseconds since boot, from `/proc/uptime`.
pub fn uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some((secs * 1000.0) as u64)
}

/// What is left of the previous run's lease: zero when it ended, when there
/// is no readable record, or when the record is from another boot (a record
/// from before a reboot means nothing now); never more than one lease. Boot
/// time and id come from `clock` ([`Clock::boot_ms`], [`Clock::boot_id`]).
pub fn previous_lease_remaining(path: &Path, lease: Duration, clock: &Clock) -> Duration {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    let mut words = text.split_whitespace();
    let (Some(end), Some(boot)) = (words.next().and_then(|w| w.parse::<u64>().ok()), words.next()) else {
        return Duration::ZERO;
    };
    if boot != clock.boot_id() {
        return Duration::ZERO;
    }
    // /proc/uptime is truncated to 10 ms: count "now" as late as it may be.
    let Some(now) = clock.boot_ms().map(|n| n + 10) else {
        return Duration::ZERO;
    };
    Duration::from_millis(end.saturating_sub(now)).min(lease)
}

/// How far the lease's end moves before its record is written again: more
/// than a heartbeat interval and at least a tenth of the lease.
pub fn rewrite_after(timing: &tandem_core::Timing) -> Duration {
    timing.heartbeat_interval.max(timing.lease / 10)
}

/// Writes the end of the lease to `path` until `shutdown`, whenever it moved
/// by more than [`rewrite_after`] since the last record (not on every
/// renewal: a record that lags the lease's real end only makes a restarted
/// agent stop what it found a little earlier). A record is only ever
/// replaced by a later lease's end: until this run holds a lease, the
/// previous run's record stays.
pub async fn persist_lease(ctx: NodeContext, path: PathBuf, mut shutdown: watch::Receiver<bool>) {
    let Some(boot_now) = ctx.clock.boot_ms() else {
        warn!("cannot read /proc/uptime: a restarted agent will not know when this run's lease ended");
        return;
    };
    // This process's clock origin on the boot-time clock. /proc/uptime is
    // truncated, so this errs early: a record may only err towards an
    // earlier end.
    let offset = boot_now.saturating_sub(ctx.clock.now().0);
    let boot = ctx.clock.boot_id();
    let mut liveness = ctx.liveness.subscribe();
    let mut written = None;
    loop {
        if let Some(until) = ctx.liveness.lease_until()
            && written.is_none_or(|w: tandem_core::timing::Millis| until.since(w) > rewrite_after(&ctx.timing))
        {
            let tmp = path.with_extension("tmp");
            let end = offset + until.0;
            let result = std::fs::write(&tmp, format!("{end} {boot}\n")).and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = result {
                warn!(path = %path.display(), error = %e, "cannot record the lease's end");
            }
            written = Some(until);
        }
        tokio::select! {
            r = liveness.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(rewrite_after(&ctx.timing)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
