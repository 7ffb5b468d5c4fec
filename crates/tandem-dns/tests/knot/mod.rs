//! A real Knot DNS server for tests (`knotd`, Debian package `knot`), started
//! on 127.0.0.1 with a free port and killed by PID on drop; shared by the
//! tandem-dns update tests and the cluster tests (`#[path]`).
#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_dns::update::{PushTarget, TsigAlgorithmName};

pub const ZONE: &str = "corp.example.";
pub const SECRET_256: &[u8] = b"tandem-test-secret-0123456789abc";
pub const SECRET_512: &[u8] = b"tandem-test-secret-sha512-0123456789abcdef0123456789abcdef012345";
pub const READONLY_SECRET: &[u8] = b"a-key-the-server-knows-but-no-acl";

/// A knotd serving `corp.example.` from a temporary directory; killed (by
/// PID) on drop. Keys: `tandem-key.` (hmac-sha256) and `tandem-key512.`
/// (hmac-sha512) may update the zone; `readonly-key.` is known but may not.
pub struct Knot {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Knot {
    pub fn start() -> Knot {
        let knotd = ["/usr/sbin/knotd", "/usr/bin/knotd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("knotd (Knot DNS) is not installed: apt-get install knot"));
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let conf = write_config(dir.path(), port);
            let log = fs::File::create(dir.path().join("knotd.log")).unwrap();
            let child = Command::new(&knotd)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e} (apt-get install knot)", knotd.display()));
            let mut knot = Knot { child, addr, dir };
            if knot.wait_ready() {
                return knot;
            }
            last_log = fs::read_to_string(knot.dir.path().join("knotd.log")).unwrap_or_default();
        }
        panic!("knotd did not start (3 tries); last log:\n{last_log}");
    }

    /// Whether knotd answers for the zone within 10 s (false if it exited).
    pub fn wait_ready(&mut self) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let soa = tandem_dns::client::lookup(self.addr, ZONE, false, Duration::from_millis(200));
            if soa.is_ok_and(|l| l.rcode == "NOERROR") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn target(&self) -> PushTarget {
        PushTarget {
            server: self.addr,
            zone: ZONE.to_string(),
            key_name: "tandem-key.".to_string(),
            key_secret: SECRET_256.to_vec(),
            algorithm: TsigAlgorithmName::HmacSha256,
            timeout: Duration::from_secs(3),
        }
    }

    /// `NAME.ZONE` A and AAAA as kdig prints them: `["5 A 198.18.1.1", ...]`, sorted.
    pub fn records(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for rtype in ["A", "AAAA"] {
            let output = Command::new("kdig")
                .arg(format!("@{}", self.addr.ip()))
                .args(["-p", &self.addr.port().to_string()])
                .args(["+noall", "+answer", "+norecurse", "+time=2", "+retry=1"])
                .arg(format!("{name}.{ZONE}"))
                .arg(rtype)
                .output()
                .unwrap_or_else(|e| panic!("cannot run kdig: {e} (apt-get install knot-dnsutils)"));
            assert!(output.status.success(), "kdig failed: {output:?}");
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [owner, ttl, "IN", t, data] = f[..]
                    && owner.eq_ignore_ascii_case(&format!("{name}.{ZONE}"))
                {
                    out.push(format!("{ttl} {t} {data}"));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (just now).
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub fn write_config(dir: &Path, port: u16) -> PathBuf {
    fs::write(
        dir.join("corp.example.zone"),
        "$ORIGIN corp.example.\n$TTL 300\n\
         @ IN SOA ns1 hostmaster 1 60 10 600 1\n\
         @ IN NS ns1\n\
         ns1 IN A 127.0.0.1\n",
    )
    .unwrap();
    let d = dir.display();
    let conf = format!(
        "server:\n    rundir: {d}\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         log:\n  - target: stderr\n    any: info\n\
         database:\n    storage: {d}\n\
         key:\n\
         \x20 - id: tandem-key.\n    algorithm: hmac-sha256\n    secret: {}\n\
         \x20 - id: tandem-key512.\n    algorithm: hmac-sha512\n    secret: {}\n\
         \x20 - id: readonly-key.\n    algorithm: hmac-sha256\n    secret: {}\n\
         acl:\n\
         \x20 - id: update\n    key: [tandem-key., tandem-key512.]\n    action: update\n\
         \x20 - id: readonly\n    key: readonly-key.\n    action: transfer\n\
         zone:\n  - domain: {ZONE}\n    storage: {d}\n    file: corp.example.zone\n    zonefile-sync: -1\n    acl: [update, readonly]\n",
        base64(SECRET_256),
        base64(SECRET_512),
        base64(READONLY_SECRET),
    );
    let path = dir.join("knot.conf");
    fs::write(&path, conf).unwrap();
    path
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
