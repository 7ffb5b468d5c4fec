//! The agent under systemd (`Type=notify`, `deploy/systemd/tandem.service`):
//! READY=1 once the node serves, a STATUS= line with its role and lease
//! whenever they change, STOPPING=1 when it stops, and WATCHDOG=1 only while
//! the node's own heartbeat loop makes progress (each heartbeat round ends
//! granted, refused or unanswered, and counts), so a hung agent is killed
//! and restarted by systemd rather than fed by a timer that always pings.
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use tandem_node::NodeContext;
use tokio::sync::watch;
use tracing::warn;

/// Whether the service manager listens (`NOTIFY_SOCKET` is set).
fn managed() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// The node serves: READY=1 and the first status line.
pub fn ready(ctx: &NodeContext) {
    if managed() {
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status_line(ctx)),
        ]);
    }
}

/// The node is stopping (its groups first).
pub fn stopping(reason: &str) {
    if managed() {
        let status = format!("stopping: {reason}");
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status(&status),
        ]);
    }
}

/// `coordinator, lease valid, term 4` / `member, no lease, coordinator site-a`.
fn status_line(ctx: &NodeContext) -> String {
    let role = if ctx.is_coordinator() {
        "coordinator".to_string()
    } else {
        ctx.me.role.to_string()
    };
    let lease = if ctx.liveness.own_lease_valid(ctx.clock.now()) {
        "lease valid"
    } else {
        "no lease"
    };
    let coordinator = match ctx.coordinator() {
        Some((_, c)) if !ctx.is_coordinator() => format!(", coordinator {}", c.name),
        Some(_) => String::new(),
        None => ", no coordinator".to_string(),
    };
    format!("{role}, {lease}{coordinator}")
}

/// Heartbeat rounds this node finished, whatever their outcome.
fn heartbeat_rounds(ctx: &NodeContext) -> u64 {
    let c = ctx.liveness.counters.snapshot();
    c.lease_renewals + c.heartbeats_refused + c.heartbeats_unanswered
}

/// Until `shutdown`: the status line when it changes (checked every
/// second), and, when systemd set a watchdog (`WatchdogSec=`), WATCHDOG=1
/// every half of it if the heartbeat loop finished a round since the last
/// ping. A loop that stalls stops the pings; systemd then kills the agent
/// (SIGABRT, `WatchdogSignal=`) and restarts it.
pub async fn run(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) {
    if !managed() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled();
    let ping_every = watchdog.map(|w| w / 2);
    let step = ping_every.map_or(Duration::from_secs(1), |p| p.min(Duration::from_secs(1)));
    let mut last_status = String::new();
    let mut last_rounds = heartbeat_rounds(&ctx);
    let mut since_ping = Duration::ZERO;
    let mut stalled = false;
    loop {
        let status = status_line(&ctx);
        if status != last_status {
            notify(&[sd_notify::NotifyState::Status(&status)]);
            last_status = status;
        }
        if let Some(every) = ping_every {
            since_ping += step;
            if since_ping >= every {
                let rounds = heartbeat_rounds(&ctx);
                if rounds > last_rounds {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                    since_ping = Duration::ZERO;
                    last_rounds = rounds;
                    stalled = false;
                } else if !stalled {
                    warn!(
                        rounds,
                        watchdog = ?watchdog,
                        "no heartbeat round finished since the last watchdog ping: not pinging systemd's watchdog \
                         (systemd restarts the agent when this lasts the whole WatchdogSec)"
                    );
                    stalled = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = shutdown.changed() => return,
        }
    }
}
