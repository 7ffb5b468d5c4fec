//! RFC 2136 updates signed with TSIG, pushed to a real Knot DNS server
//! (`knotd`, package `knot`) started on 127.0.0.1 with a free port, and
//! checked with `kdig` (package `knot-dnsutils`).
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tandem_dns::update::{NameErrorKind, PushError, PushRecord, PushTarget, TsigAlgorithmName, push};

mod knot;
use knot::*;

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

/// The header and question (zone section) of `message`, as a response with
/// TC set and nothing else: what a server sends when the answer does not fit.
fn truncated_answer(message: &[u8]) -> Vec<u8> {
    let mut end = 12;
    while message[end] != 0 {
        end += 1 + message[end] as usize;
    }
    end += 1 + 4;
    let mut reply = message[..end].to_vec();
    reply[2] |= 0x82; // QR, TC
    reply[6..12].fill(0);
    reply
}

#[tokio::test]
async fn a_truncated_answer_sends_the_update_again_over_tcp_signed() {
    let knot = Knot::start();
    // In front of Knot: over UDP every update gets a truncated answer, TCP
    // connections go through to Knot.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let front = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(front).await.unwrap();
    let (asked_tx, mut asked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = asked_tx.send(());
            let _ = udp.send_to(&truncated_answer(&buf[..n]), from).await;
        }
    });
    let upstream = knot.addr;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let mut target = knot.target();
    target.server = front;
    push(&target, &[rec("web", 5, &["198.18.1.1"])]).await.unwrap();
    assert!(asked.try_recv().is_ok(), "the update did not go over UDP first");
    assert_eq!(knot.records("web"), ["5 A 198.18.1.1"]);

    // A wrong key over TCP: refused, and said so.
    target.key_secret = b"not-the-secret-the-server-has!!!".to_vec();
    let (text, _) = single_error(push(&target, &[rec("web", 5, &["198.18.1.9"])]).await);
    assert!(text.contains("web.corp.example."), "{text}");
    assert_eq!(knot.records("web"), ["5 A 198.18.1.1"]);
}
