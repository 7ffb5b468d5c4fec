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

pub use crate::clock::uptime_ms;

/// This boot's id, from `/proc` (for the guard process, which runs outside
/// any node; a node reads it through its [`Clock::boot_id`]).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The recorded end of the lease on the boot-time clock (milliseconds since
/// boot), if the record is readable and from this boot (as `/proc` tells it).
pub fn recorded_end(path: &Path) -> Option<u64> {
    recorded_end_of_boot(path, &boot_id())
}

/// The recorded end of the lease, if the record is readable and from the
/// boot `boot`: a record from before a reboot means nothing now.
fn recorded_end_of_boot(path: &Path, boot: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    let end = words.next()?.parse::<u64>().ok()?;
    (words.next()? == boot).then_some(end)
}

/// What is left of the previous run's lease: zero when it ended, when there
/// is no readable record, or when the record is from another boot; never more
/// than one lease. Boot time and id come from `clock` ([`Clock::boot_ms`],
/// [`Clock::boot_id`]).
pub fn previous_lease_remaining(path: &Path, lease: Duration, clock: &Clock) -> Duration {
    let Some(end) = recorded_end_of_boot(path, &clock.boot_id()) else {
        return Duration::ZERO;
    };
    // /proc/uptime is truncated to 10 ms: count "now" as late as it may be.
    let Some(now) = clock.boot_ms().map(|n| n + 10) else {
        return Duration::ZERO;
    };
    Duration::from_millis(end.saturating_sub(now)).min(lease)
}

/// One writer at a time (the persisting task and an executor arming a
/// group), and never an earlier end over a later one.
static WRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Records `end` (boot-time milliseconds) unless the record already holds a
/// later end of this boot. Written to a temporary file and renamed: never
/// seen half-written.
fn write_if_later(path: &Path, end: u64, boot: &str) -> std::io::Result<()> {
    let _one = WRITE.lock().unwrap_or_else(|p| p.into_inner());
    if recorded_end_of_boot(path, boot).is_some_and(|e| e >= end) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{end} {boot}\n"))?;
    std::fs::rename(&tmp, path)
}

/// This process's clock origin on the boot-time clock (read through the
/// node's clock: simulated in the simulator). /proc/uptime is truncated, so
/// this errs early: a record may only err towards an earlier end.
fn boot_offset(ctx: &NodeContext) -> Option<u64> {
    Some(ctx.clock.boot_ms()?.saturating_sub(ctx.clock.now().0))
}

/// Records the current lease's end now, if this run holds one (before an
/// exclusive group is marked for the guard process, which must not judge
/// it by an older record).
pub fn record_now(ctx: &NodeContext, path: &Path) {
    let (Some(until), Some(offset)) = (ctx.liveness.lease_until(), boot_offset(ctx)) else {
        return;
    };
    if let Err(e) = write_if_later(path, offset + until.0, &ctx.clock.boot_id()) {
        warn!(path = %path.display(), error = %e, "cannot record the lease's end");
    }
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
    let Some(offset) = boot_offset(&ctx) else {
        warn!("cannot read /proc/uptime: a restarted agent will not know when this run's lease ended");
        return;
    };
    let boot = ctx.clock.boot_id();
    let mut liveness = ctx.liveness.subscribe();
    let mut written = None;
    loop {
        if let Some(until) = ctx.liveness.lease_until()
            && written.is_none_or(|w: tandem_core::timing::Millis| until.since(w) > rewrite_after(&ctx.timing))
        {
            if let Err(e) = write_if_later(&path, offset + until.0, &boot) {
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
