//! The DNS responder end to end, asked with a real DNS client (`kdig` from
//! Debian's knot-dnsutils): every node answers the zone; the group's name
//! follows its primary through a failover; a node without a lease answers
//! SERVFAIL; names outside the zone are refused; transfers are refused;
//! Unbound (Debian's `unbound`) in front of the nodes follows a failover.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::resources::{kill9_pid, service, service_pid, spec, wait_running_on};
use crate::support::*;

#[path = "../../crates/tandem-dns/tests/knot/mod.rs"]
mod knot;
#[path = "../../crates/tandem-dns/tests/unbound/mod.rs"]
mod unbound;

const KDIG: &str = "/usr/bin/kdig";

/// What a DNS server said: the status (NOERROR, SERVFAIL, ...) and the
/// answer section's records as `TYPE DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: String,
    pub(crate) records: Vec<String>,
}

fn dig(server: &str, name: &str, rtype: &str, tcp: bool) -> Answer {
    assert!(
        std::path::Path::new(KDIG).exists(),
        "{KDIG} is missing: install Debian's knot-dnsutils (`apt-get install knot-dnsutils`)"
    );
    let (ip, port) = server.rsplit_once(':').unwrap();
    let mut cmd = Command::new(KDIG);
    cmd.arg(format!("@{ip}"))
        .args(["-p", port, name, rtype, "+timeout=2", "+retry=0", "+nocookie"]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .lines()
        .find_map(|l| {
            l.split_once("status: ")
                .map(|(_, r)| r.split(';').next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| format!("no answer: {text}"));
    let mut records = Vec::new();
    let mut in_answer = false;
    for l in text.lines() {
        if l.starts_with(";; ANSWER SECTION:") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if l.trim().is_empty() || l.starts_with(";;") {
                break;
            }
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 5 {
                records.push(format!("{} {}", f[3], f[4..].join(" ")));
            }
        }
    }
    Answer { status, records }
}

pub(crate) fn web_spec(c: &TestCluster, name: &str) -> std::path::PathBuf {
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let group_keys = "dns = { port = 8080, addresses = { site-a = [\"198.18.1.1\"], site-b = [\"198.18.2.1\"] } }";
    let extra = "[dns]\nzone = \"svc.test.\"\n\n[[dns.records]]\nname = \"www\"\ntype = \"CNAME\"\ndata = \"web\"\nttl = \"60s\"\n";
    spec(&dir, name, group_keys, &format!("{}{extra}", service("http", &ledger)))
}

/// Three nodes running `web_spec`'s group on site-a.
fn web_on_site_a() -> TestCluster {
    start_web_on_site_a(TestCluster::three())
}

/// Starts `c` (three nodes, configured) and has it run `web_spec`'s group on site-a.
pub(crate) fn start_web_on_site_a(mut c: TestCluster) -> TestCluster {
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let file = web_spec(&c, "spec.toml");
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    c
}

pub(crate) fn a_records(c: &TestCluster, node: &str) -> Answer {
    dig(&c.node(node).dns.to_string(), "web.svc.test.", "A", false)
}

#[test]
fn every_node_answers_the_primary_and_follows_it_through_a_failover() {
    let mut c = web_on_site_a();
    let nodes = ["site-a", "site-b", "witness"];
    c.wait_for("every node answering site-a's address", |c| {
        nodes
            .iter()
            .all(|n| a_records(c, n).records == vec!["A 198.18.1.1".to_string()])
            .then_some(())
    });
    let mut serials = BTreeSet::new();
    for n in nodes {
        let server = &c.node(n).dns.to_string();
        let soa = dig(server, "svc.test.", "SOA", false);
        assert_eq!(soa.status, "NOERROR", "{n}: {soa:?}");
        serials.insert(soa.records[0].split_whitespace().nth(3).unwrap().to_string());
        let ns = dig(server, "svc.test.", "NS", false);
        assert_eq!(ns.records.len(), 3, "one NS per node: {ns:?}");
        let txt = dig(server, "_primary.web.svc.test.", "TXT", false);
        assert!(
            txt.records
                .iter()
                .any(|r| r.contains("node=site-a") && r.contains("epoch=")),
            "{n}: {txt:?}"
        );
        let srv = dig(server, "_web._tcp.svc.test.", "SRV", false);
        assert!(srv.records.iter().any(|r| r.contains("8080")), "{n}: {srv:?}");
        let www = dig(server, "www.svc.test.", "A", false);
        assert!(www.records.contains(&"CNAME web.svc.test.".to_string()), "{n}: {www:?}");
        let outside = dig(server, "example.com.", "A", false);
        assert_eq!(outside.status, "REFUSED", "{n}: {outside:?}");
        let axfr = dig(server, "svc.test.", "AXFR", true);
        assert!(axfr.records.is_empty(), "AXFR refused by default: {axfr:?}");
        // Over TCP too.
        assert_eq!(dig(server, "web.svc.test.", "A", true).records, vec!["A 198.18.1.1"]);
    }
    assert_eq!(serials.len(), 1, "the same serial on every node: {serials:?}");
    let dns = stdout(&c.cli_ok("witness", &["dns"]));
    assert!(dns.contains("web.svc.test.") && dns.contains("198.18.1.1"), "{dns}");

    // Lose site-a: the survivors answer site-b's address, and never two
    // different addresses at once.
    if let Some(pid) = service_pid(&c, "site-a", "http") {
        kill9_pid(pid);
    }
    c.kill9("site-a");
    let start = Instant::now();
    let mut seen: Vec<(u128, Vec<Answer>)> = Vec::new();
    loop {
        let answers: Vec<Answer> = ["site-b", "witness"].iter().map(|n| a_records(&c, n)).collect();
        let distinct: BTreeSet<&Vec<String>> = answers
            .iter()
            .filter(|a| a.status == "NOERROR" && !a.records.is_empty())
            .map(|a| &a.records)
            .collect();
        assert!(
            distinct.len() <= 1,
            "two different primaries answered at once: {answers:?} (history {seen:?})"
        );
        let done = answers.iter().all(|a| a.records == vec!["A 198.18.2.1".to_string()]);
        seen.push((start.elapsed().as_millis(), answers));
        if done {
            break;
        }
        assert!(start.elapsed() < WAIT, "no repointing within {WAIT:?}: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let events = stdout(&c.cli_ok("witness", &["events"]));
    assert!(events.contains("DNS: web now answers with site-b"), "{events}");
}

/// As clients use it: Unbound (Debian's `unbound`) resolving the zone
/// through a stub zone listing every node, across a failover.
#[test]
fn unbound_in_front_of_the_nodes_follows_a_failover() {
    let mut c = web_on_site_a();
    let servers: Vec<_> = ["site-a", "site-b", "witness"].iter().map(|n| c.node(n).dns).collect();
    let resolver = unbound::Unbound::start("svc.test.", &servers, 86400);
    let via_unbound = || dig(&resolver.addr.to_string(), "web.svc.test.", "A", false);
    c.wait_for("unbound answering site-a's address", |_| {
        (via_unbound().records == vec!["A 198.18.1.1".to_string()]).then_some(())
    });
    if let Some(pid) = service_pid(&c, "site-a", "http") {
        kill9_pid(pid);
    }
    c.kill9("site-a");
    c.wait_for("unbound answering site-b's address", |_| {
        let a = via_unbound();
        assert!(
            a.records.is_empty() || a.records.len() == 1,
            "two addresses at once: {a:?}"
        );
        (a.records == vec!["A 198.18.2.1".to_string()]).then_some(())
    });
}

#[test]
fn a_node_cut_off_from_the_majority_answers_servfail_once_its_lease_runs_out() {
    let c = web_on_site_a();
    c.wait_for("site-b answering", |c| {
        (a_records(c, "site-b").records == vec!["A 198.18.1.1".to_string()]).then_some(())
    });
    c.signal("site-a", nix::sys::signal::Signal::SIGSTOP);
    c.signal("witness", nix::sys::signal::Signal::SIGSTOP);
    let paused = Instant::now();
    let answer = loop {
        let a = a_records(&c, "site-b");
        if a.status == "SERVFAIL" || paused.elapsed() > WAIT {
            break a;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = paused.elapsed();
    // Static records and the zone's apex still answer.
    let www = dig(&c.node("site-b").dns.to_string(), "www.svc.test.", "CNAME", false);
    let soa = dig(&c.node("site-b").dns.to_string(), "svc.test.", "SOA", false);
    c.signal("site-a", nix::sys::signal::Signal::SIGCONT);
    c.signal("witness", nix::sys::signal::Signal::SIGCONT);
    assert_eq!(answer.status, "SERVFAIL", "after {took:?}: {answer:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "SERVFAIL only once the lease (3 s here) runs low, not at once: {took:?}"
    );
    assert_eq!(www.records, vec!["CNAME web.svc.test."], "{www:?}");
    assert_eq!(soa.status, "NOERROR", "{soa:?}");
    // Back with its peers: it answers again.
    c.wait_for("site-b answering again", |c| {
        (a_records(c, "site-b").status == "NOERROR").then_some(())
    });
}

#[test]
fn the_coordinator_pushes_group_records_to_an_external_knot_server_with_tsig() {
    let knot = knot::Knot::start();
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let key_file = dir.join("tsig.key");
    std::fs::write(&key_file, format!("{}\n", knot::base64(knot::SECRET_256))).unwrap();
    let ledger = dir.join("ledger");
    let group_keys = "dns = { ttl = \"5s\", addresses = { site-a = [\"198.18.1.1\"], site-b = [\"198.18.2.1\"] } }";
    let push = format!(
        "[dns]\nzone = \"svc.test.\"\n\n[[dns.push]]\nserver = \"{}\"\nzone = \"{}\"\nkey_name = \"tandem-key.\"\nkey_file = \"{}\"\n",
        knot.addr,
        knot::ZONE,
        key_file.display()
    );
    let file = spec(
        &dir,
        "spec.toml",
        group_keys,
        &format!("{}{push}", service("http", &ledger)),
    );
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    c.wait_for("Knot holding site-a's address", |_| {
        (knot.records("web") == ["5 A 198.18.1.1"]).then_some(())
    });
    if let Some(pid) = service_pid(&c, "site-a", "http") {
        kill9_pid(pid);
    }
    c.kill9("site-a");
    wait_running_on(&c, "site-b");
    c.wait_for("Knot holding site-b's address, and only it", |_| {
        (knot.records("web") == ["5 A 198.18.2.1"]).then_some(())
    });
    for n in ["site-b", "witness"] {
        let log = std::fs::read_to_string(&c.node(n).log).unwrap();
        assert!(
            !log.contains(&knot::base64(knot::SECRET_256)),
            "the TSIG secret leaked into {n}'s log"
        );
    }
}
