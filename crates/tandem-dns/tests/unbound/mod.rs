//! A real Unbound resolver for tests (`unbound`, Debian package `unbound`),
//! with a stub zone pointing at the responders under test, started on
//! 127.0.0.1 with a free port and killed by PID on drop; shared by the
//! tandem-dns resolver tests and the cluster tests (`#[path]`).
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An unbound serving recursion to 127.0.0.1, with `zone` a stub zone
/// whose servers are `servers`; killed (by PID) on drop.
pub struct Unbound {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Unbound {
    /// Starts unbound and waits until it answers `zone`'s SOA. Answers are
    /// cached no longer than `max_ttl` seconds (0: every question goes to
    /// a stub server).
    pub fn start(zone: &str, servers: &[SocketAddr], max_ttl: u32) -> Unbound {
        let unbound = ["/usr/sbin/unbound", "/usr/bin/unbound"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("unbound is not installed: apt-get install unbound"));
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.local_addr().unwrap().port()
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let d = dir.path().display();
            let stubs: String = servers
                .iter()
                .map(|s| format!("    stub-addr: {}@{}\n", s.ip(), s.port()))
                .collect();
            // test., example. and the like are special-use names unbound
            // answers itself unless told not to.
            let conf = format!(
                "server:\n    interface: 127.0.0.1\n    port: {port}\n    do-ip6: no\n    do-daemonize: no\n\
                 \x20   chroot: \"\"\n    username: \"\"\n    directory: \"{d}\"\n    pidfile: \"{d}/unbound.pid\"\n\
                 \x20   use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    num-threads: 1\n\
                 \x20   access-control: 127.0.0.0/8 allow\n    do-not-query-localhost: no\n\
                 \x20   module-config: \"iterator\"\n    qname-minimisation: no\n    cache-max-ttl: {max_ttl}\n\
                 \x20   cache-max-negative-ttl: {max_ttl}\n    local-zone: \"{zone}\" nodefault\n\
                 \x20   local-zone: \"test.\" nodefault\n    domain-insecure: \"{zone}\"\n\
                 remote-control:\n    control-enable: no\n\
                 stub-zone:\n    name: \"{zone}\"\n{stubs}",
            );
            let path = dir.path().join("unbound.conf");
            fs::write(&path, conf).unwrap();
            let log = fs::File::create(dir.path().join("unbound.log")).unwrap();
            let child = Command::new(&unbound)
                .arg("-d")
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e} (apt-get install unbound)", unbound.display()));
            let mut u = Unbound { child, addr, dir };
            if u.wait_ready(zone) {
                return u;
            }
            last_log = u.log();
        }
        panic!("unbound did not start (3 tries); last log:\n{last_log}");
    }

    /// Whether unbound answers `zone`'s SOA within 10 s (false if it exited).
    fn wait_ready(&mut self, zone: &str) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let soa = tandem_dns::client::lookup(self.addr, zone, false, Duration::from_millis(300));
            // Any answer will do: it listens and resolves.
            if soa.is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// What unbound logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
