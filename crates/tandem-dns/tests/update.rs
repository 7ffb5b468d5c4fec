//! RFC 2136 updates signed with TSIG, pushed to a real Knot DNS server
//! (`knotd`, package `knot`) started on 127.0.0.1 with a free port, and
//! checked with `kdig` (package `knot-dnsutils`).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_dns::update::{NameErrorKind, PushError, PushRecord, PushTarget, TsigAlgorithmName, push};

const ZONE: &str = "corp.example.";
const SECRET_256: &[u8] = b"tandem-test-secret-0123456789abc";
const SECRET_512: &[u8] = b"tandem-test-secret-sha512-0123456789abcdef0123456789abcdef012345";
const READONLY_SECRET: &[u8] = b"a-key-the-server-knows-but-no-acl";

/// A knotd serving `corp.example.` from a temporary directory; killed (by
/// PID) on drop. Keys: `tandem-key.` (hmac-sha256) and `tandem-key512.`
/// (hmac-sha512) may update the zone; `readonly-key.` is known but may not.
struct Knot {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Knot {
    fn start() -> Knot {
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
    fn wait_ready(&mut self) -> bool {
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

    fn target(&self) -> PushTarget {
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
    fn records(&self, name: &str) -> Vec<String> {
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
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
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

fn base64(bytes: &[u8]) -> String {
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

fn rec(name: &str, ttl: u64, addrs: &[&str]) -> PushRecord {
    PushRecord {
        name: name.to_string(),
        ttl: Duration::from_secs(ttl),
        addrs: addrs.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
    }
}

/// The only per-name error of a failed push.
fn single_error(result: Result<(), PushError>) -> (String, NameErrorKind) {
    match result {
        Err(e @ PushError::Names(_)) => {
            let text = e.to_string();
            let PushError::Names(mut v) = e else { unreachable!() };
            assert_eq!(v.len(), 1, "{text}");
            (text, v.remove(0).kind)
        }
        other => panic!("expected one name error, got {other:?}"),
    }
}

#[test]
fn base64_matches_the_reference() {
    assert_eq!(base64(SECRET_256), "dGFuZGVtLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODlhYmM=");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"a"), "YQ==");
}

#[tokio::test]
async fn push_adds_replaces_and_removes_records() {
    let knot = Knot::start();
    let target = knot.target();
    assert_eq!(knot.records("web"), Vec::<String>::new());

    push(&target, &[rec("web", 5, &["198.18.1.1"])]).await.unwrap();
    assert_eq!(knot.records("web"), ["5 A 198.18.1.1"]);

    // Another address replaces it: no leftover.
    push(&target, &[rec("web", 5, &["198.18.1.2"])]).await.unwrap();
    assert_eq!(knot.records("web"), ["5 A 198.18.1.2"]);

    // Several names in one push; A and AAAA together; the TTL changes.
    push(
        &target,
        &[
            rec("web", 7, &["198.18.1.3", "2001:db8::3"]),
            rec("db", 1, &["198.18.2.1", "198.18.2.2"]),
        ],
    )
    .await
    .unwrap();
    assert_eq!(knot.records("web"), ["7 A 198.18.1.3", "7 AAAA 2001:db8::3"]);
    assert_eq!(knot.records("db"), ["1 A 198.18.2.1", "1 A 198.18.2.2"]);

    // The same push again changes nothing (and succeeds).
    push(&target, &[rec("db", 1, &["198.18.2.1", "198.18.2.2"])])
        .await
        .unwrap();
    assert_eq!(knot.records("db"), ["1 A 198.18.2.1", "1 A 198.18.2.2"]);

    // No addresses: both RRsets are removed; other names are untouched.
    push(&target, &[rec("web", 7, &[])]).await.unwrap();
    assert_eq!(knot.records("web"), Vec::<String>::new());
    assert_eq!(knot.records("db"), ["1 A 198.18.2.1", "1 A 198.18.2.2"]);
}

#[tokio::test]
async fn hmac_sha512_key_works() {
    let knot = Knot::start();
    let mut target = knot.target();
    target.key_name = "tandem-key512.".to_string();
    target.key_secret = SECRET_512.to_vec();
    target.algorithm = TsigAlgorithmName::HmacSha512;
    push(&target, &[rec("web", 5, &["198.18.1.1"])]).await.unwrap();
    assert_eq!(knot.records("web"), ["5 A 198.18.1.1"]);
}

#[tokio::test]
async fn wrong_secret_is_refused_with_badsig_and_changes_nothing() {
    let knot = Knot::start();
    let good = knot.target();
    push(&good, &[rec("web", 5, &["198.18.1.1"])]).await.unwrap();

    let mut bad = knot.target();
    bad.key_secret = b"not-the-secret-the-server-has!!!".to_vec();
    let (text, kind) = single_error(push(&bad, &[rec("web", 5, &["198.18.1.9"])]).await);
    assert!(
        matches!(&kind, NameErrorKind::Tsig { rcode, tsig_error, .. } if rcode == "NOTAUTH" && tsig_error == "BADSIG"),
        "{kind:?}"
    );
    for part in [
        &knot.addr.to_string(),
        "web.corp.example.",
        "zone corp.example.",
        "TSIG",
        "BADSIG",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert!(!text.contains("not-the-secret"), "{text}");
    assert_eq!(knot.records("web"), ["5 A 198.18.1.1"]);

    // The wrong algorithm for the right key name is refused too.
    let mut bad = knot.target();
    bad.algorithm = TsigAlgorithmName::HmacSha512;
    let (text, kind) = single_error(push(&bad, &[rec("web", 5, &["198.18.1.9"])]).await);
    assert!(matches!(kind, NameErrorKind::Tsig { .. }), "{text}");
    assert_eq!(knot.records("web"), ["5 A 198.18.1.1"]);
}

#[tokio::test]
async fn unknown_key_is_refused_with_badkey() {
    let knot = Knot::start();
    let mut target = knot.target();
    target.key_name = "no-such-key.".to_string();
    let (text, kind) = single_error(push(&target, &[rec("web", 5, &["198.18.1.1"])]).await);
    assert!(
        matches!(&kind, NameErrorKind::Tsig { tsig_error, .. } if tsig_error == "BADKEY"),
        "{text}"
    );
    assert!(text.contains(&knot.addr.to_string()), "{text}");
    assert_eq!(knot.records("web"), Vec::<String>::new());
}

#[tokio::test]
async fn key_without_update_right_and_foreign_zone_are_refused() {
    let knot = Knot::start();
    let mut target = knot.target();
    target.key_name = "readonly-key.".to_string();
    target.key_secret = READONLY_SECRET.to_vec();
    let (text, kind) = single_error(push(&target, &[rec("web", 5, &["198.18.1.1"])]).await);
    // Knot: NOTAUTH/BADKEY (no ACL matches the key); BIND: REFUSED.
    assert!(
        matches!(&kind, NameErrorKind::Tsig { tsig_error, .. } if tsig_error == "BADKEY")
            || matches!(&kind, NameErrorKind::Rcode { rcode, .. } if rcode == "NOTAUTH" || rcode == "REFUSED"),
        "{text}"
    );
    assert_eq!(knot.records("web"), Vec::<String>::new());

    let mut target = knot.target();
    target.zone = "other.example.".to_string();
    let (text, kind) = single_error(push(&target, &[rec("web", 5, &["198.18.1.1"])]).await);
    assert!(matches!(kind, NameErrorKind::Rcode { .. }), "{text}");
    assert!(
        text.contains("web.other.example.") && text.contains("zone other.example."),
        "{text}"
    );
}

#[tokio::test]
async fn silent_server_times_out_within_the_timeout() {
    // Bound but never read: datagrams are dropped, no ICMP error.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap();
    let target = PushTarget {
        server,
        zone: ZONE.to_string(),
        key_name: "tandem-key.".to_string(),
        key_secret: SECRET_256.to_vec(),
        algorithm: TsigAlgorithmName::HmacSha256,
        timeout: Duration::from_millis(700),
    };
    let started = Instant::now();
    let result = push(&target, &[rec("web", 5, &["198.18.1.1"]), rec("db", 5, &[])]).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_millis(700 + 1000),
        "took {took:?}"
    );
    let Err(PushError::Names(errors)) = result else {
        panic!("expected name errors, got {result:?}")
    };
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].kind, NameErrorKind::Timeout(Duration::from_millis(700)));
    assert_eq!(errors[1].kind, NameErrorKind::NotSent);
    let text = errors[0].to_string();
    for part in [&server.to_string(), "web.corp.example.", "no answer within 700ms"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    drop(silent);
}

#[tokio::test]
async fn closed_port_fails_fast() {
    let port = free_port();
    let target = PushTarget {
        server: SocketAddr::from(([127, 0, 0, 1], port)),
        zone: ZONE.to_string(),
        key_name: "tandem-key.".to_string(),
        key_secret: SECRET_256.to_vec(),
        algorithm: TsigAlgorithmName::HmacSha256,
        timeout: Duration::from_secs(5),
    };
    let started = Instant::now();
    let (text, kind) = single_error(push(&target, &[rec("web", 5, &["198.18.1.1"])]).await);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(kind, NameErrorKind::Network(_)), "{text}");
    assert!(text.contains(&port.to_string()), "{text}");
}
