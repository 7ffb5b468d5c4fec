//! The lease guard process: invariant 3 when the agent itself is frozen or
//! dead.
//!
//! The executor's lease guard is a task inside the agent: a frozen agent
//! (SIGSTOP, a hung disk, a debugger) or a killed one runs no task, while the
//! services it started run on, and the coordinator may start them elsewhere
//! once the lease certainly expired. So a member's agent also starts this
//! small process (`tandem guard`, in its own session). It shares nothing with
//! the agent but the data directory:
//!
//! * `lease-end`: the end of the node's lease on the boot-time clock
//!   ([`crate::lease_file`]), brought up to date before anything exclusive
//!   starts and then as the lease is renewed;
//! * `run/GROUP/.guarded`: an exclusive group that may be active here
//!   (written before a start, removed after a stop succeeded);
//! * `run/GROUP/RESOURCE.pid`: its supervised processes (pid and start time).
//!
//! Once the recorded end has passed, every live supervised process of a
//! marked group is SIGKILLed with its process group, whatever the agent is
//! doing. The record errs early (it is written when the lease moved by more
//! than [`crate::lease_file::rewrite_after`], and /proc/uptime is truncated
//! early), so the guard acts at or before the lease's end, which is before
//! the coordinator's bound (the lease plus the drift margin after its last
//! grant). Resources Tandem does not supervise (commands, OCF, systemd) are
//! out of its reach: those need a fence device or the watchdog.
//!
//! The newest guard of a data directory writes `guard.pid`; an older one
//! (of an agent that crashed and was started again) sees it and leaves, as
//! the new one reads the same files. A guard leaves too when its agent is
//! gone and nothing it guards runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{error, info, warn};

use crate::lease_file::{recorded_end, uptime_ms};

/// The longest the guard sleeps between looks (at its agent, a newer guard).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How often it looks while the lease is over (or was never recorded).
const OVER_POLL: Duration = Duration::from_millis(200);

/// The guard's files in a node's data directory.
pub struct GuardPaths {
    pub lease_file: PathBuf,
    pub state_dir: PathBuf,
    pub pid_file: PathBuf,
}

impl GuardPaths {
    pub fn new(data_dir: &Path) -> GuardPaths {
        GuardPaths {
            lease_file: data_dir.join("lease-end"),
            state_dir: data_dir.join("run"),
            pid_file: data_dir.join("guard.pid"),
        }
    }
}

/// `PID STARTTIME` of this process into `guard.pid`, so an older guard of
/// the same data directory knows it was replaced.
fn claim(paths: &GuardPaths, me: i32) -> std::io::Result<u64> {
    let start = tandem_agents::guarded::start_time(me).unwrap_or(0);
    let tmp = paths.pid_file.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{me} {start}\n"))?;
    std::fs::rename(&tmp, &paths.pid_file)?;
    Ok(start)
}

/// Whether `guard.pid` names another live guard than this one.
fn replaced(paths: &GuardPaths, me: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(&paths.pid_file) else {
        return false;
    };
    let mut words = text.split_whitespace();
    let (Some(pid), Some(start)) = (
        words.next().and_then(|w| w.parse::<i32>().ok()),
        words.next().and_then(|w| w.parse::<u64>().ok()),
    ) else {
        return false;
    };
    pid != me && tandem_agents::guarded::alive(pid, start)
}

/// One look: once the recorded lease is over (or was never recorded),
/// kills every live supervised process of a marked group. Returns how long
/// to sleep before the next look. The state directory is only scanned when
/// the lease is over: a healthy node's guard reads one small file a second.
pub fn look(paths: &GuardPaths) -> Duration {
    // /proc/uptime is truncated to 10 ms: count "now" as late as it may be.
    let now = uptime_ms().map(|n| n + 10);
    let end = recorded_end(&paths.lease_file);
    if let (Some(now), Some(end)) = (now, end)
        && end > now
    {
        return Duration::from_millis(end - now).min(MAX_SLEEP);
    }
    // Over (or never recorded): nothing guarded may run here.
    for p in tandem_agents::guarded::processes(&paths.state_dir) {
        if tandem_agents::guarded::kill(&paths.state_dir, &p) {
            error!(
                group = %p.group,
                resource = %p.resource,
                pid = p.pid,
                "the node's lease is over and its agent did not stop this service (frozen or dead?): SIGKILLed its process group"
            );
        }
    }
    OVER_POLL
}

/// Whether any supervised process of a marked group still runs.
pub fn guarding(paths: &GuardPaths) -> bool {
    !tandem_agents::guarded::processes(&paths.state_dir).is_empty()
}

/// The guard's loop, until its agent (`agent`, its parent) is gone and
/// nothing guarded runs, or a newer guard took over. Returns the exit code.
pub fn run(data_dir: &Path, agent: u32) -> i32 {
    let paths = GuardPaths::new(data_dir);
    let me = std::process::id() as i32;
    if let Err(e) = claim(&paths, me) {
        error!(path = %paths.pid_file.display(), error = %e, "the lease guard cannot record itself");
        return 1;
    }
    info!(agent, data_dir = %data_dir.display(), "lease guard watching");
    let mut said_gone = false;
    loop {
        if replaced(&paths, me) {
            info!("a newer lease guard took over this data directory");
            return 0;
        }
        let sleep = look(&paths);
        let agent_gone = std::os::unix::process::parent_id() != agent;
        if agent_gone && !guarding(&paths) {
            info!("the agent is gone and nothing guarded runs: the lease guard leaves");
            return 0;
        }
        if agent_gone && !said_gone {
            said_gone = true;
            warn!("the agent is gone; guarding what it left running until its lease ends");
        }
        std::thread::sleep(sleep);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    fn boot_id() -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
            .to_string()
    }

    /// A real service: `sleep` leading its own process group, recorded in
    /// `run/GROUP/svc.pid` as the executor's supervisor records it.
    fn service(paths: &GuardPaths, group: &str, marked: bool) -> std::process::Child {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let dir = paths.state_dir.join(group);
        std::fs::create_dir_all(&dir).unwrap();
        let start = tandem_agents::guarded::start_time(pid).unwrap();
        std::fs::write(dir.join("svc.pid"), format!("{pid} {start}\n")).unwrap();
        tandem_agents::guarded::set(&paths.state_dir, group, marked).unwrap();
        child
    }

    fn record_lease_end(paths: &GuardPaths, from_now_ms: i64) {
        let now = uptime_ms().unwrap() as i64;
        let end = (now + from_now_ms).max(0);
        std::fs::write(&paths.lease_file, format!("{end} {}\n", boot_id())).unwrap();
    }

    fn gone(child: &mut std::process::Child) -> bool {
        for _ in 0..100 {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_marked_service_lives_while_the_recorded_lease_runs_and_is_killed_once_it_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let paths = GuardPaths::new(dir.path());
        let mut exclusive = service(&paths, "db", true);
        let mut clone = service(&paths, "web", false);
        record_lease_end(&paths, 5_000);
        let sleep = look(&paths);
        assert!(guarding(&paths));
        assert!(sleep <= MAX_SLEEP && sleep > Duration::ZERO, "{sleep:?}");
        assert!(exclusive.try_wait().unwrap().is_none(), "killed while the lease runs");

        record_lease_end(&paths, -100);
        look(&paths);
        assert!(gone(&mut exclusive), "the exclusive service outlived the lease");
        assert!(!guarding(&paths), "nothing guarded runs any more");
        // An unmarked group (a clone, or a stopped one) is not the guard's.
        assert!(
            clone.try_wait().unwrap().is_none(),
            "an unmarked group's service was killed"
        );
        clone.kill().unwrap();
        clone.wait().unwrap();
    }

    #[test]
    fn no_record_or_a_record_of_another_boot_counts_as_over() {
        let dir = tempfile::tempdir().unwrap();
        let paths = GuardPaths::new(dir.path());
        let mut svc = service(&paths, "db", true);
        std::fs::write(&paths.lease_file, "99999999999 not-this-boot\n").unwrap();
        look(&paths);
        assert!(gone(&mut svc), "a record of another boot protected the service");
    }

    #[test]
    fn a_newer_guard_replaces_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let paths = GuardPaths::new(dir.path());
        let me = std::process::id() as i32;
        claim(&paths, me).unwrap();
        assert!(!replaced(&paths, me), "replaced by itself");
        // Another live process claims the directory.
        let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        claim(&paths, other.id() as i32).unwrap();
        assert!(replaced(&paths, me));
        other.kill().unwrap();
        other.wait().unwrap();
        // A claim by a process that is gone replaces nobody.
        assert!(!replaced(&paths, me));
    }
}
