//! The responder behind real DNS software: Unbound (Debian's `unbound`) as
//! the resolver in front of three responders, as clients of a cluster use
//! it, and BIND's `named-checkzone` (Debian's `bind9-utils`) on the zone a
//! responder transfers (read with `kdig`, Debian's `knot-dnsutils`).
#![allow(clippy::unwrap_used)]

mod common;
mod unbound;

use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use tandem_dns::Zone;
use unbound::Unbound;

/// What `server` answers for `name` A, asked as a stub resolver asks (RD set).
async fn resolve(server: std::net::SocketAddr, name: &'static str) -> tandem_dns::client::Lookup {
    tokio::task::spawn_blocking(move || {
        tandem_dns::client::lookup(server, name, false, Duration::from_secs(5)).unwrap()
    })
    .await
    .unwrap()
}

/// Three responders serving the same zone, each answered once (so their
/// servers run before anything blocks).
async fn three_nodes() -> Vec<Harness> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let h = Harness::start(&input()).await;
        udp(h.addr, &query(ZONE, RecordType::SOA, None)).await;
        nodes.push(h);
    }
    nodes
}

#[tokio::test]
async fn unbound_in_front_of_three_nodes_skips_one_without_a_lease() {
    let nodes = three_nodes().await;
    let servers: Vec<_> = nodes.iter().map(|h| h.addr).collect();
    // Nothing cached: every question goes to one of the nodes.
    let unbound = tokio::task::spawn_blocking(move || Unbound::start(ZONE, &servers, 0))
        .await
        .unwrap();
    let web = resolve(unbound.addr, "web.svc.example.").await;
    assert_eq!(
        (web.rcode.as_str(), web.addrs.as_slice()),
        ("NOERROR", &[ip("10.0.0.1")][..])
    );

    // One node loses its lease: it answers SERVFAIL, unbound asks another.
    nodes[1].set_lease(false);
    for i in 0..30 {
        let web = resolve(unbound.addr, "web.svc.example.").await;
        assert_eq!(
            (web.rcode.as_str(), web.addrs.as_slice()),
            ("NOERROR", &[ip("10.0.0.1")][..]),
            "question {i}; unbound's log:\n{}",
            unbound.log()
        );
    }
    let asked: Vec<u64> = nodes.iter().map(|h| h.stats.snapshot().queries()).collect();
    let servfail = nodes[1].stats.snapshot().responses(2);
    assert!(
        servfail >= 1 && asked.iter().filter(|n| **n > 1).count() >= 2,
        "unbound did not ask the node without a lease ({servfail} SERVFAIL) or asked one node only: {asked:?}"
    );
    for h in nodes {
        h.stop().await;
    }
}

#[tokio::test]
async fn unbound_follows_a_move_once_the_ttl_runs_out() {
    let nodes = three_nodes().await;
    let servers: Vec<_> = nodes.iter().map(|h| h.addr).collect();
    // Cached as long as the records say (1 s for web).
    let unbound = tokio::task::spawn_blocking(move || Unbound::start(ZONE, &servers, 86400))
        .await
        .unwrap();
    let web = resolve(unbound.addr, "web.svc.example.").await;
    assert_eq!(web.addrs, [ip("10.0.0.1")]);

    // web moves to n2, on every node.
    let moved = moved_input();
    let zone = Arc::new(Zone::build(&moved).unwrap());
    for h in &nodes {
        h.zone_tx.send(zone.clone()).unwrap();
    }
    let moved_at = Instant::now();
    let mut last = Vec::<IpAddr>::new();
    while moved_at.elapsed() < Duration::from_secs(30) {
        last = resolve(unbound.addr, "web.svc.example.").await.addrs;
        if last == [ip("10.0.0.2")] {
            break;
        }
        // Never both, never anything else.
        assert_eq!(last, [ip("10.0.0.1")], "unbound's log:\n{}", unbound.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, [ip("10.0.0.2")], "unbound never followed the move");
    eprintln!(
        "unbound answered the new address {:?} after the move",
        moved_at.elapsed()
    );
    for h in nodes {
        h.stop().await;
    }
}

#[tokio::test]
async fn the_transferred_zone_passes_named_checkzone() {
    let mut allowed = input();
    allowed.allow_transfer = vec![ip("127.0.0.1")];
    let h = Harness::start(&allowed).await;
    udp(h.addr, &query(ZONE, RecordType::SOA, None)).await;
    let addr = h.addr;
    let kdig = tokio::task::spawn_blocking(move || {
        Command::new("kdig")
            .arg(format!("@{}", addr.ip()))
            .args(["-p", &addr.port().to_string(), "+noall", "+answer", "+time=2"])
            .args([ZONE, "AXFR"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run kdig: {e} (apt-get install knot-dnsutils)"))
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&kdig.stdout).to_string();
    assert!(kdig.status.success() && text.contains("SOA"), "{kdig:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zone.txt");
    std::fs::write(&file, &text).unwrap();
    let check = Command::new("named-checkzone")
        .args([
            "-i", "full", "-k", "fail", "-n", "fail", "-m", "fail", "-M", "fail", "-S", "fail",
        ])
        .arg(ZONE)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run named-checkzone: {e} (apt-get install bind9-utils)"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        check.status.success(),
        "named-checkzone refused the zone:\n{report}\n{text}"
    );
    assert!(report.contains("serial 42") && report.contains("OK"), "{report}");
    h.stop().await;
}
