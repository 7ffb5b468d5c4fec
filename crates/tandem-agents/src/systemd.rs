//! The `systemd` class: `systemctl start|stop UNIT`, `systemctl is-active UNIT`.
//!
//! The TANDEM_ variables reach `systemctl`, not the unit's processes: a unit
//! that needs the epoch must get it another way.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::exec::{self, End, describe};
use crate::output::LogCtx;
use crate::{Action, Env, Outcome, tandem_env};

/// Present exactly when systemd is the init system (sd_booted(3)).
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

pub(crate) async fn run(unit: &str, action: Action, env: &Env, timeout: Duration, ctx: &LogCtx) -> (Outcome, String) {
    if !Path::new(SYSTEMD_RUN_DIR).is_dir() {
        return (
            Outcome::Unavailable(format!(
                "systemd is not running on this node (no {SYSTEMD_RUN_DIR}); use the exec or ocf class"
            )),
            String::new(),
        );
    }
    if unit.is_empty() || unit.starts_with('-') || unit.contains('/') {
        return (
            Outcome::Unavailable(format!("{unit:?} is not a systemd unit name")),
            String::new(),
        );
    }
    let mut cmd = Command::new("systemctl");
    match action {
        Action::Start => cmd.args(["--no-ask-password", "start", "--", unit]),
        Action::Stop => cmd.args(["--no-ask-password", "stop", "--", unit]),
        Action::Monitor => cmd.args(["is-active", "--", unit]),
    };
    tandem_env(&mut cmd, env);
    let ran = exec::run(cmd, timeout, ctx, action == Action::Monitor).await;
    let status = match ran.end {
        End::Exited(status) => status,
        End::TimedOut => return (Outcome::TimedOut, ran.tail),
        End::SpawnError(e) => return (Outcome::Unavailable(format!("cannot run systemctl: {e}")), ran.tail),
        End::WaitError(e) => return (Outcome::Failed(format!("waiting for systemctl failed: {e}")), ran.tail),
    };
    let outcome = match action {
        Action::Monitor => {
            let stdout = ran.stdout.unwrap_or_default();
            let state = stdout.lines().next().unwrap_or("").trim();
            active_state(state, &describe(status))
        }
        _ => match status.code() {
            Some(0) => Outcome::Ok,
            // LSB "not installed": the unit does not exist (stopping it is done).
            Some(5) if action == Action::Stop => Outcome::Ok,
            Some(5) => Outcome::Unavailable(format!("unit {unit} is not installed on this node")),
            _ => Outcome::Failed(format!("systemctl {action} {unit}: {}", describe(status))),
        },
    };
    (outcome, ran.tail)
}

/// `systemctl is-active` prints the unit's ActiveState.
fn active_state(state: &str, exit: &str) -> Outcome {
    match state {
        "active" | "activating" | "reloading" | "refreshing" | "deactivating" => Outcome::Ok,
        "inactive" => Outcome::NotRunning,
        "failed" => Outcome::Failed("unit is in the failed state".to_string()),
        "" => Outcome::Failed(format!("systemctl is-active printed nothing ({exit})")),
        other => Outcome::Failed(format!("unit is {other:?} ({exit})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_states() {
        assert_eq!(active_state("active", "exit 0"), Outcome::Ok);
        assert_eq!(active_state("activating", "exit 3"), Outcome::Ok);
        assert_eq!(active_state("inactive", "exit 3"), Outcome::NotRunning);
        assert!(matches!(active_state("failed", "exit 3"), Outcome::Failed(_)));
        assert!(matches!(active_state("", "exit 1"), Outcome::Failed(_)));
    }
}
