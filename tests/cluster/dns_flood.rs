//! No starvation: a DNS query flood against the primary's responder (dnsperf,
//! Debian's `dnsperf`, at full speed for 20 s, the per-client rate limit
//! off) leaves its lease renewed throughout and its group where it is. The
//! responder runs on a runtime and threads of its own; this is the proof
//! that it does not take the CPU from heartbeats, Raft or the executor.
//!
//! What the node says about itself is read from its `/metrics`, scraped
//! every 100 ms during the flood: its lease renewals (a heartbeat granted
//! every 100 ms with this timing), its lease and whether it may act on it,
//! the group's epoch and whether the group is active there, and the DNS
//! queries it counted.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dns::{a_records, start_web_on_site_a};
use crate::resources::{group, ledger_lines};
use crate::support::*;

const DNSPERF: &str = "/usr/bin/dnsperf";

/// How long dnsperf floods.
const FLOOD: Duration = Duration::from_secs(20);

/// How often the flooded node's `/metrics` is read.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// The longest time allowed between two renewals of the flooded node's lease
/// as seen through its `/metrics`. Renewals come every heartbeat (100 ms
/// here) and the lease is 3 s; a node self-fences a quarter lease before
/// its end (2.25 s without a renewal). A third of the lease is far from both:
/// a starved heartbeat task shows here long before anything moves.
const MAX_RENEWAL_GAP: Duration = Duration::from_secs(1);

/// A floor that proves the flood took effect: 1,000 queries/s is the
/// default per-client rate limit, and the responder serves tens of
/// thousands a second (README's Benchmarks). Not a speed requirement.
const MIN_QPS: f64 = 1000.0;

/// One read of the flooded node's `/metrics`.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    renewals: f64,
    lease_valid: f64,
    may_act: f64,
    primary_here: f64,
    epoch: f64,
    dns_udp: f64,
    noerror: f64,
}

fn sample(http: Option<std::net::SocketAddr>, since: Instant) -> Result<Sample, String> {
    let (code, text) = http_get(http, "/metrics").ok_or("no answer from /metrics within 5 s")?;
    if code != 200 {
        return Err(format!("/metrics answered {code}"));
    }
    let m = tandem_api::metrics::parse_samples(&text).map_err(|e| format!("/metrics does not parse: {e}"))?;
    let get = |k: &str| m.get(k).copied().ok_or_else(|| format!("no {k} in /metrics"));
    Ok(Sample {
        at: since.elapsed(),
        renewals: get("tandem_lease_renewals_total")?,
        lease_valid: get("tandem_lease_valid")?,
        may_act: get("tandem_may_act")?,
        primary_here: get("tandem_group_primary_here{group=\"web\"}")?,
        epoch: get("tandem_group_epoch{group=\"web\"}")?,
        dns_udp: get("tandem_dns_queries_total{transport=\"udp\"}")?,
        noerror: get("tandem_dns_responses_total{rcode=\"NOERROR\"}")?,
    })
}

/// Reads `/metrics` every [`SCRAPE_EVERY`] until `stop`.
fn scrape_until(http: Option<std::net::SocketAddr>, since: Instant, stop: &AtomicBool) -> Vec<Result<Sample, String>> {
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        out.push(sample(http, since));
        std::thread::sleep(SCRAPE_EVERY);
    }
    out
}

/// The longest time between two reads that first saw a higher renewal
/// count: an upper bound of the longest time without a renewal (plus the
/// scrape interval), and the time of its end.
fn longest_renewal_gap(samples: &[Sample]) -> (Duration, Duration) {
    let mut longest = (Duration::ZERO, Duration::ZERO);
    let Some(first) = samples.first() else {
        return longest;
    };
    let (mut seen, mut seen_at) = (first.renewals, first.at);
    for s in samples {
        let gap = s.at.saturating_sub(seen_at);
        if gap > longest.0 {
            longest = (gap, s.at);
        }
        if s.renewals > seen {
            (seen, seen_at) = (s.renewals, s.at);
        }
    }
    longest
}

/// dnsperf, killed (this one process, by its pid) if it outlives the test.
struct Dnsperf(Child);

impl Drop for Dnsperf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsperf's figures: "Queries completed", "Queries lost", "Queries per
/// second", and the per-second rates of `-S 1`.
#[derive(Debug, Default)]
struct Flood {
    completed: f64,
    lost: f64,
    qps: f64,
    per_second: Vec<f64>,
}

fn parse_dnsperf(text: &str) -> Option<Flood> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    // `-S 1` prints one line a second: `TIMESTAMP: QPS`.
    let per_second = text
        .lines()
        .filter_map(|l| {
            let (at, qps) = l.trim().split_once(": ")?;
            at.parse::<f64>().ok()?;
            qps.trim().parse::<f64>().ok()
        })
        .collect();
    Some(Flood {
        completed: field("Queries completed:")?,
        lost: field("Queries lost:")?,
        qps: field("Queries per second:")?,
        per_second,
    })
}

/// Runs dnsperf against `server` for [`FLOOD`], asking `web.svc.test. A` as
/// fast as it can (2 clients, 200 queries outstanding); returns its figures
/// and its whole output.
fn flood(server: std::net::SocketAddr, dir: &Path) -> (Flood, String) {
    assert!(
        Path::new(DNSPERF).exists(),
        "{DNSPERF} is missing: install Debian's dnsperf (`apt-get install dnsperf`; .ci/run does)"
    );
    let queries = write(dir, "dnsperf-queries", "web.svc.test. A\n");
    let out = dir.join("dnsperf.out");
    let child = Command::new(DNSPERF)
        .args(["-s", &server.ip().to_string(), "-p", &server.port().to_string()])
        .args(["-l", &FLOOD.as_secs().to_string()])
        .args(["-c", "2", "-q", "200", "-t", "1", "-S", "1"])
        .arg("-d")
        .arg(&queries)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dnsperf = Dnsperf(child);
    let deadline = Instant::now() + FLOOD + WAIT;
    let status = loop {
        if let Some(status) = dnsperf.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "dnsperf still running {WAIT:?} after its time limit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(status.success(), "dnsperf failed ({status}):\n{text}");
    let figures = parse_dnsperf(&text).unwrap_or_else(|| panic!("no statistics in dnsperf's output:\n{text}"));
    (figures, text)
}

#[test]
fn a_dns_flood_on_the_primary_leaves_its_lease_renewed_and_its_group_in_place() {
    // The flooded node serves every query: its per-client rate limit is off.
    let c = TestCluster::three();
    c.append_config("site-a", "\n[dns]\nrate_limit_per_client = 0\n");
    let c = start_web_on_site_a(c);
    c.wait_for("site-a answering web's address", |c| {
        (a_records(c, "site-a").records == vec!["A 198.18.1.1".to_string()]).then_some(())
    });
    let before = c.status_of("witness");
    let web = group(&before, "web").unwrap().clone();
    assert_eq!(web["primary"], "site-a", "{web}");
    let http = c.node("site-a").http;
    let start = Instant::now();
    let first = sample(http, start).unwrap();
    assert_eq!(
        first.primary_here, 1.0,
        "web active on site-a before the flood: {first:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || scrape_until(http, start, &stop))
    };
    let (figures, output) = flood(c.node("site-a").dns, c.dir.path());
    stop.store(true, Ordering::Relaxed);
    let scraped = scraper.join().unwrap();
    let flood_took = start.elapsed();
    let last = sample(http, start).unwrap();
    let after = c.status_of("witness");

    // Every read during the flood answered, and saw the node holding its
    // lease, allowed to act on it, and the group active there at one epoch.
    let mut samples = vec![first.clone()];
    for (i, s) in scraped.into_iter().enumerate() {
        samples.push(s.unwrap_or_else(|e| panic!("read {i} of site-a's /metrics during the flood: {e}")));
    }
    samples.push(last.clone());
    for s in &samples {
        assert!(
            s.lease_valid == 1.0 && s.may_act == 1.0 && s.primary_here == 1.0 && s.epoch == first.epoch,
            "site-a lost its lease or its group during the flood: {s:?} (epoch before {})",
            first.epoch
        );
    }
    // The lease was renewed throughout.
    let (gap, gap_end) = longest_renewal_gap(&samples);
    let renewals = last.renewals - first.renewals;
    eprintln!(
        "{} reads of /metrics in {flood_took:?}; {renewals} lease renewals; longest time between two reads seeing a new renewal: {gap:?} (ending {gap_end:?} after the start)",
        samples.len()
    );
    assert!(
        gap <= MAX_RENEWAL_GAP,
        "site-a's lease went {gap:?} without a renewal during the flood (ending {gap_end:?} after its start): {samples:#?}"
    );
    // The flood really took effect: dnsperf had its answers, the node
    // counted them, and it went on for the whole time.
    let counted = last.dns_udp - first.dns_udp;
    let answered = last.noerror - first.noerror;
    eprintln!(
        "dnsperf: {:.0} queries completed, {:.0} lost, {:.0} queries/s; site-a counted {counted} UDP queries, {answered} NOERROR; per second: {:?}",
        figures.completed, figures.lost, figures.qps, figures.per_second
    );
    assert!(
        figures.qps >= MIN_QPS && figures.completed >= MIN_QPS * FLOOD.as_secs_f64(),
        "the flood did not take effect: {figures:?}\n{output}"
    );
    assert!(
        counted >= figures.completed && answered >= figures.completed,
        "site-a did not count what dnsperf had answered: {counted} queries, {answered} NOERROR, {figures:?}"
    );
    // dnsperf's rate each second (`-S 1`): the first and the last interval
    // may be partial (its start, its end), every one between is full.
    let per_second = &figures.per_second;
    let interior = per_second
        .get(1..per_second.len().saturating_sub(1))
        .unwrap_or_default();
    assert!(
        interior.len() as u64 + 4 >= FLOOD.as_secs() && interior.iter().all(|q| *q >= MIN_QPS),
        "the flood stalled: not every second of it at {MIN_QPS} queries/s or more: {per_second:?}"
    );

    // Nothing failed over: the same primary at the same epoch in the
    // cluster's view, and the service started once and never stopped.
    let web_after = group(&after, "web").unwrap();
    assert_eq!(
        (&web_after["primary"], &web_after["epoch"], &web_after["state"]),
        (&web["primary"], &web["epoch"], &web["state"]),
        "web moved during the flood: before {web}, after {web_after}"
    );
    let ledger = ledger_lines(&c.dir.path().join("ledger"));
    assert_eq!(
        ledger.len(),
        1,
        "the service started once and never stopped: {ledger:?}"
    );
    eprintln!(
        "coordinator {} (term {}) before, {} (term {}) after",
        before["coordinator"], before["term"], after["coordinator"], after["term"]
    );
}
