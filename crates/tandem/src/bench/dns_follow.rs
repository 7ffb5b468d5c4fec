//! `bench dns-follow`: how fast every node's DNS follows a committed change.
//! Planned switchovers of a trivial service back and forth; for each, the
//! time from the commit that made the new primary active (the coordinator
//! applying its running report: the transition's `dns` phase, stamped by
//! the coordinator) to the moment each node's DNS first answered the new
//! address, asked over UDP by a thread of its own per node every
//! millisecond. The coordinator stamps the `dns` phase when its placement
//! loop sees the applied report, which can be a few milliseconds after the
//! commit: a node answering before the stamp shows as a negative time. The
//! spread from the first node's answer to the last's involves no stamp.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::common::{apply, coordinator, other_member, running_on, switchover_to, wait_stable};
use super::stats::report;
use super::switchover::SWITCHOVER_SPEC;
use crate::cluster::DemoCluster;
use crate::{Failure, Outcome};

/// The name the switchover spec's group answers.
const NAME: &str = "web.demo.tandem.";

/// How often each node's DNS is asked.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// Wall-clock time in microseconds since the epoch (the cluster stamps
/// phases with the same clock, in milliseconds).
fn unix_us_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Asks `server` for `NAME`'s A records every [`POLL_EVERY`] until it
/// answers `want`; returns when that answer arrived (unix µs).
fn first_answer(server: SocketAddr, want: Ipv4Addr, deadline: Instant) -> Result<u64, String> {
    let failed = |e: std::io::Error| format!("asking {server}: {e}");
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(failed)?;
    socket.connect(server).map_err(failed)?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(failed)?;
    let name = Name::from_ascii(NAME).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let mut id: u16 = 0;
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        let mut query = Message::query();
        query.metadata.id = id;
        query.metadata.recursion_desired = false;
        query.add_query(Query::query(name.clone(), RecordType::A));
        socket
            .send(&query.to_vec().map_err(|e| e.to_string())?)
            .map_err(failed)?;
        // An answer to an earlier query that timed out is skipped by its id.
        while let Ok(n) = socket.recv(&mut buf) {
            let at = unix_us_now();
            let Ok(reply) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if reply.metadata.id != id {
                continue;
            }
            if reply
                .answers
                .iter()
                .any(|r| matches!(&r.data, RData::A(a) if a.0 == want))
            {
                return Ok(at);
            }
            break;
        }
        std::thread::sleep(POLL_EVERY);
    }
    Err(format!("{server} did not answer {want} in time"))
}

/// Milliseconds from `from_ms` (unix ms) to `to_us` (unix µs), negative if
/// the answer came first.
fn ms_between(from_ms: u64, to_us: u64) -> f64 {
    (to_us as f64 - from_ms as f64 * 1000.0) / 1000.0
}

pub(super) async fn dns_follow(cluster: &DemoCluster, runs: usize, timeout: Duration) -> Outcome {
    apply(cluster, SWITCHOVER_SPEC.into(), "bench-dns-follow.toml", timeout).await?;
    println!(
        "dns-follow: {runs} planned switchovers of a trivial service (a sleep) between site-a and site-b; \
         from the commit that makes the new primary active (the coordinator applying its running report, \
         the transition's `dns` phase) to each node's DNS answering {NAME} with its address; \
         every node asked over UDP every {POLL_EVERY:?} by a thread of its own"
    );
    let mut to_last = Vec::with_capacity(runs);
    let mut to_coordinator = Vec::with_capacity(runs);
    let mut to_others = Vec::with_capacity(runs * 2);
    let mut report_to_last = Vec::with_capacity(runs);
    let mut first_to_last = Vec::with_capacity(runs);
    for run in 1..=runs {
        let coordinator_name = wait_stable(cluster, timeout).await?;
        let primary = cluster
            .wait_for(timeout, "web running", |st| running_on(st, "web"))
            .await?;
        let (target, target_ip) = other_member(&primary)?;
        let (_, mut client) = coordinator(cluster, timeout).await?;
        let deadline = Instant::now() + timeout;
        let pollers: Vec<(String, std::thread::JoinHandle<Result<u64, String>>)> = cluster
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(|n| {
                let dns = n.dns;
                (
                    n.name.clone(),
                    std::thread::spawn(move || first_answer(dns, target_ip, deadline)),
                )
            })
            .collect();
        let transition = switchover_to(&mut client, "web", target, timeout)
            .await
            .map_err(|mut e| {
                e.message = format!("run {run}: {}", e.message);
                e
            })?
            .ok_or_else(|| Failure::runtime(format!("run {run}: the switchover returned no transition")))?;
        let phase = |name: &str| transition.phases.iter().find(|p| p.name == name).map(|p| p.at_unix_ms);
        let (Some(committed), Some(healthy)) = (phase("dns"), phase("healthy")) else {
            return Err(Failure::runtime(format!(
                "run {run}: the transition has no dns or healthy phase: {:?}",
                transition.phases
            )));
        };
        let mut answered = Vec::new();
        for (name, poller) in pollers {
            let at = tokio::task::spawn_blocking(move || poller.join())
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?
                .map_err(|_| Failure::runtime("a DNS poller panicked"))?
                .map_err(|e| Failure::runtime(format!("run {run}: {e}")))?;
            answered.push((name, at));
        }
        let mut line = Vec::new();
        for (name, at) in &answered {
            let ms = ms_between(committed, *at);
            if *name == coordinator_name {
                to_coordinator.push(ms);
            } else {
                to_others.push(ms);
            }
            line.push(format!("{name} {ms:+.1}"));
        }
        let last = answered.iter().map(|(_, at)| *at).max().unwrap_or(0);
        let first = answered.iter().map(|(_, at)| *at).min().unwrap_or(0);
        first_to_last.push(last.saturating_sub(first) as f64 / 1000.0);
        to_last.push(ms_between(committed, last));
        report_to_last.push(ms_between(healthy, last));
        println!(
            "  run {run:>3}: {primary} -> {target} (coordinator {coordinator_name}): last node {:.1} ms after the commit ({} ms)",
            ms_between(committed, last),
            line.join(", ")
        );
    }
    report(
        "dns-follow: the commit making the new primary active -> the last of the 3 nodes' DNS answering it",
        " ms",
        &mut to_last,
    );
    report("  the coordinator's own DNS", " ms", &mut to_coordinator);
    report("  each other node's DNS", " ms", &mut to_others);
    report(
        "  the first node's DNS answering it -> the last's (no stamp involved)",
        " ms",
        &mut first_to_last,
    );
    report(
        "  the new primary's running report (its own stamp, before the commit) -> the last node answering",
        " ms",
        &mut report_to_last,
    );
    Ok(())
}
