//! The agent under systemd: the shipped unit passes `systemd-analyze
//! verify`, and the real agent speaks the notify protocol (READY, STATUS,
//! WATCHDOG, STOPPING) on a socket the test holds, as systemd would, without
//! passing that socket on to the services it runs.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::*;

const UNIT: &str = include_str!("../../deploy/systemd/tandem.service");

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    // The unit as installed, with this build's binary where the package puts it.
    let unit = write(dir.path(), "tandem.service", &UNIT.replace("/usr/bin/tandem", BIN));
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if Path::new("/usr/bin/man").exists() {
        // Documentation=man:tandem(1): the page the package installs.
        let pages = dir.path().join("man/man1");
        assert!(tandem(&["man", "--dir", pages.to_str().unwrap()]).status.success());
        cmd.env("MANPATH", dir.path().join("man"));
    } else {
        cmd.arg("--man=no");
    }
    let out = cmd
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stderr(&out), "", "no warnings");
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=tandem",
        "OOMScoreAdjust=",
        "Nice=",
        "ExecStartPre=/usr/bin/tandem config check",
    ] {
        assert!(UNIT.lines().any(|l| l.starts_with(line)), "{line}");
    }
}

/// The notify messages received on `socket` until `until` holds for one of
/// them, or the deadline.
fn messages_until(socket: &UnixDatagram, all: &mut Vec<String>, mut until: impl FnMut(&str) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = until(&m);
            all.push(m);
            if done {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_agent_speaks_sd_notify_and_keeps_the_socket_from_its_services() {
    let c = TestCluster::new(&[("solo", "member")]);
    let dir = c.dir.path().to_path_buf();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let log = std::fs::File::create(dir.join("solo-agent.log")).unwrap();
    let agent = Command::new(BIN)
        .args(["agent", "--config", c.node("solo").config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Reap(i32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
    let pid = agent.id() as i32;
    let _reap = Reap(pid);
    let mut seen = Vec::new();
    assert!(
        messages_until(&socket, &mut seen, |m| m.lines().any(|l| l == "READY=1")),
        "READY=1: {seen:?}"
    );
    assert!(
        messages_until(&socket, &mut seen, |m| m == "STATUS=coordinator, lease valid\n"),
        "the role and the lease: {seen:?}"
    );
    // WATCHDOG_USEC=1s: a ping about every half second while heartbeats go on.
    let mut pings = 0;
    assert!(
        messages_until(&socket, &mut seen, |m| {
            pings += usize::from(m == "WATCHDOG=1\n");
            pings >= 3
        }),
        "watchdog pings: {seen:?}"
    );

    // A service the agent starts does not inherit the socket.
    let env_file = dir.join("service.env");
    let spec = write(
        &dir,
        "spec.toml",
        &format!(
            "[[groups]]\nname = \"web\"\n[[groups.resources]]\nname = \"app\"\nagent = \"exec\"\n\
             command = \"/bin/sh\"\nargs = [\"-c\", \"env > {}; while [ -d {} ]; do sleep 0.5; done\"]\n",
            env_file.display(),
            dir.display()
        ),
    );
    let out = tandem(&["apply", "-f", spec.to_str().unwrap(), "-e", &c.node("solo").address]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_for("the service's environment", |_| {
        std::fs::read_to_string(&env_file)
            .ok()
            .filter(|t| t.contains("TANDEM_EPOCH"))
    });
    let env = std::fs::read_to_string(&env_file).unwrap();
    for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        assert!(!env.contains(var), "{var} passed on: {env}");
    }

    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    assert!(
        messages_until(&socket, &mut seen, |m| m.lines().any(|l| l == "STOPPING=1")),
        "STOPPING=1: {seen:?}"
    );
    let mut agent = agent;
    let status = c.wait_for("the agent's clean exit", |_| agent.try_wait().ok().flatten());
    assert_eq!(status.code(), Some(0));
}
