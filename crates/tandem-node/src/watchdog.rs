//! The last step of self-fencing: a watchdog device (a hardware watchdog, or
//! Linux's `softdog`) that the agent feeds while the node is healthy. When a
//! stop of an exclusive group fails or hangs, the executor escalates: the
//! agent stops feeding the device, and the machine resets when the device's
//! timeout runs out, which ends whatever the failed stop left running. A
//! crashed or hung agent stops feeding it too.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

/// Shared between the executor (which escalates) and the watchdog feeder.
#[derive(Default)]
pub struct SelfFence {
    escalated: Mutex<Option<String>>,
}

impl SelfFence {
    /// A stop failed: from now on the watchdog is no longer fed.
    pub fn escalate(&self, why: String) {
        let mut e = self.escalated.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            error!(reason = %why, "self-fencing escalated: the watchdog is no longer fed");
            *e = Some(why);
        }
    }

    /// Why the node escalated, if it did.
    pub fn escalated(&self) -> Option<String> {
        self.escalated.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Feeds `device` every `interval` until `shutdown` (then disarms it with the
/// magic close character, where the driver allows) or until the node
/// escalates (then it stops feeding and leaves the device armed).
pub async fn run_watchdog(
    device: PathBuf,
    interval: Duration,
    fence: std::sync::Arc<SelfFence>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut file = match std::fs::OpenOptions::new().write(true).open(&device) {
        Ok(f) => f,
        Err(e) => {
            error!(device = %device.display(), error = %e, "cannot open the watchdog device; self-fencing has no watchdog");
            return;
        }
    };
    info!(device = %device.display(), interval_ms = interval.as_millis() as u64, "feeding the watchdog");
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {
                if fence.escalated().is_none() {
                    // 'V': the magic close, so a clean shutdown does not reset the machine.
                    let _ = file.write_all(b"V").and_then(|()| file.flush());
                }
                return;
            }
        }
        if let Some(why) = fence.escalated() {
            warn!(device = %device.display(), reason = %why, "not feeding the watchdog any more");
            // Stay here without feeding; the device resets the machine.
            let _ = shutdown.changed().await;
            return;
        }
        if let Err(e) = file.write_all(b"\0").and_then(|()| file.flush()) {
            error!(device = %device.display(), error = %e, "feeding the watchdog failed");
        }
    }
}
