//! Throughput of the responder against Knot DNS, both on this machine, with
//! dnsperf over loopback UDP.
//!
//! ```text
//! cargo run --release -p tandem-dns --example dnsperf_vs_knot -- [ROUNDS] [SECONDS] [CLIENTS]
//! ```
//! (defaults 5 rounds, 10 s, 2 clients). Needs `knotd`, `dnsperf` (Debian:
//! `apt-get install knot dnsperf`). Starts the responder on 127.0.0.1 with a
//! small zone (one group, a few static records), writes the same zone for
//! Knot (from `Zone::records`), starts knotd on another loopback port with a
//! minimal configuration (no rate limiting), then runs dnsperf against each,
//! alternating, for each query set, and prints QPS median/min/max and the
//! ratio, and the size of an A answer from each.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tandem_dns::{
    ActiveNode, DnsConfig, GroupKind, LeaseCheck, Responder, StaticRecord, Zone, ZoneGroup, ZoneInput, ZoneNode,
};

type Error = Box<dyn std::error::Error>;

fn zone_input() -> Result<ZoneInput, Error> {
    let mut input = ZoneInput::new("svc.example.");
    input.serial = 7;
    input.nodes = vec![
        ZoneNode {
            name: "n1".into(),
            addrs: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))],
        },
        ZoneNode {
            name: "n2".into(),
            addrs: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))],
        },
    ];
    let mut web = ZoneGroup::new("web", GroupKind::Exclusive);
    web.port = Some(443);
    web.active = vec![ActiveNode {
        node: "n1".into(),
        addrs: vec!["10.0.0.1".parse()?],
        epoch: 3,
    }];
    input.groups = vec![web];
    let ttl = Duration::from_secs(300);
    input.static_records = vec![
        StaticRecord::new("www", ttl, "CNAME", "web")?,
        StaticRecord::new("@", ttl, "MX", "10 mail")?,
        StaticRecord::new("mail", ttl, "A", "10.0.0.25")?,
        StaticRecord::new("info", ttl, "TXT", "\"hello world\"")?,
    ];
    Ok(input)
}

const QUERY_SETS: [(&str, &str); 2] = [
    ("A web", "web.svc.example A\n"),
    (
        "mix",
        "web.svc.example A\nwww.svc.example A\n_primary.web.svc.example TXT\nsvc.example NS\n\
         _web._tcp.svc.example SRV\nnothere.svc.example A\nmail.svc.example AAAA\nsvc.example SOA\n",
    ),
];

struct Knot(Child);

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

fn start_knot(dir: &std::path::Path, zone: &Zone, port: u16) -> Result<Knot, Error> {
    let mut text = String::new();
    for (name, ttl, rtype, data) in zone.records() {
        text.push_str(&format!("{name} {ttl} IN {rtype} {data}\n"));
    }
    std::fs::write(dir.join("zone.txt"), &text)?;
    let d = dir.display();
    let conf = format!(
        "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
         database:\n    storage: \"{d}\"\n\
         log:\n  - target: stderr\n    any: warning\n\
         zone:\n  - domain: {}\n    file: \"{d}/zone.txt\"\n",
        zone.origin()
    );
    std::fs::write(dir.join("knot.conf"), conf)?;
    let child = Command::new("knotd")
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting knotd: {e}"))?;
    let knot = Knot(child);
    // Wait until it answers.
    for _ in 0..50 {
        if answer_size(port, false).is_ok() {
            return Ok(knot);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("knotd did not answer".into())
}

/// Bytes of the answer to `web.svc.example. A`, with or without EDNS.
fn answer_size(port: u16, edns: bool) -> Result<usize, Error> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut m = Message::query();
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(Name::from_ascii("web.svc.example.")?, RecordType::A));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    socket.send_to(&m.to_vec()?, ("127.0.0.1", port))?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf)?;
    let reply = Message::from_vec(&buf[..n])?;
    if reply.answers.len() != 1 {
        return Err(format!("unexpected answer: {reply}").into());
    }
    Ok(n)
}

fn dnsperf(port: u16, file: &std::path::Path, seconds: u32, clients: u32) -> Result<f64, Error> {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-l",
            &seconds.to_string(),
            "-c",
            &clients.to_string(),
        ])
        .arg("-d")
        .arg(file)
        .output()
        .map_err(|e| format!("running dnsperf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| {
            format!(
                "no QPS in dnsperf output:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let lost = text
        .lines()
        .find(|l| l.contains("Queries lost"))
        .unwrap_or("")
        .trim()
        .to_string();
    eprintln!("    port {port}: {qps:.0} qps ({lost})");
    Ok(qps)
}

fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.is_empty() { 0.0 } else { v[v.len() / 2] };
    (
        median,
        v.first().copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let seconds: u32 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let clients: u32 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(2);

    let zone = Arc::new(Zone::build(&zone_input()?)?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (_zone_tx, zone_rx) = tokio::sync::watch::channel(zone.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let responder = runtime.block_on(Responder::bind(
        DnsConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
        zone_rx,
        LeaseCheck::always(),
    ))?;
    let ours = responder.local_addr().port();
    let stats = responder.stats();
    let server = std::thread::spawn(move || runtime.block_on(responder.run(stop_rx)));

    let dir = tempfile::Builder::new().prefix("tandem-dns-bench-").tempdir()?;
    let knot_port = free_port()?;
    let knot = start_knot(dir.path(), &zone, knot_port)?;

    println!(
        "responder 127.0.0.1:{ours}, knotd 127.0.0.1:{knot_port}; {rounds} rounds of {seconds} s, {clients} clients"
    );
    for (label, queries) in QUERY_SETS {
        let file = dir.path().join("queries.txt");
        std::fs::write(&file, queries)?;
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!("  {label}, round {}", round + 1);
            // Alternate which goes first.
            if round % 2 == 0 {
                mine.push(dnsperf(ours, &file, seconds, clients)?);
                theirs.push(dnsperf(knot_port, &file, seconds, clients)?);
            } else {
                theirs.push(dnsperf(knot_port, &file, seconds, clients)?);
                mine.push(dnsperf(ours, &file, seconds, clients)?);
            }
        }
        let (m, mmin, mmax) = summary(&mut mine);
        let (k, kmin, kmax) = summary(&mut theirs);
        println!("{label:>6}: tandem-dns median {m:.0} qps (min {mmin:.0}, max {mmax:.0})");
        println!("{label:>6}: knotd      median {k:.0} qps (min {kmin:.0}, max {kmax:.0})");
        println!("{label:>6}: ratio tandem/knot {:.2}", if k > 0.0 { m / k } else { 0.0 });
    }
    for edns in [false, true] {
        println!(
            "A answer size{}: tandem-dns {} B, knotd {} B",
            if edns { " with EDNS" } else { "" },
            answer_size(ours, edns)?,
            answer_size(knot_port, edns)?
        );
    }
    let s = stats.snapshot();
    println!(
        "responder stats: {} queries, {} NOERROR, {} NXDOMAIN",
        s.queries(),
        s.responses(0),
        s.responses(3)
    );
    drop(knot);
    stop_tx.send(true)?;
    let _ = server.join();
    Ok(())
}
