//! `bench switchover`: planned switchovers of a trivial service, from the
//! command to every node's DNS answering the new primary, back and forth.

use std::time::{Duration, Instant};

use super::common::{apply, coordinator, other_member, poll_dns_until, running_on, switchover_to, wait_stable};
use super::stats::report;
use crate::cluster::DemoCluster;
use crate::{Failure, Outcome};

/// A trivial service (a sleep, which SIGTERM ends at once) in the demo's DNS zone.
pub(super) const SWITCHOVER_SPEC: &str = "[dns]\nzone = \"demo.tandem.\"\n\n\
[[groups]]\nname = \"web\"\nkind = \"exclusive\"\n\
prefer = [{ node = \"site-a\", score = 100 }, { node = \"site-b\", score = 50 }]\n\n\
[[groups.resources]]\nname = \"svc\"\nagent = \"exec\"\ncommand = \"/bin/sleep\"\n\
args = [\"1000000\"]\nmonitor_interval = \"1s\"\n";

pub(super) async fn switchover(cluster: &DemoCluster, runs: usize, timeout: Duration) -> Outcome {
    apply(cluster, SWITCHOVER_SPEC.into(), "bench-switchover.toml", timeout).await?;
    println!(
        "switchover: {runs} planned switchovers of a trivial service (a sleep), alternating between site-a and site-b; the command is sent to the coordinator; DNS of all 3 nodes polled every 1 ms"
    );
    let mut to_dns = Vec::with_capacity(runs);
    let mut to_done = Vec::with_capacity(runs);
    let mut phases: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for run in 1..=runs {
        wait_stable(cluster, timeout).await?;
        let primary = cluster
            .wait_for(timeout, "web running", |st| running_on(st, "web"))
            .await?;
        let (target, target_ip) = other_member(&primary)?;
        let target_ip = std::net::IpAddr::V4(target_ip);
        let servers: Vec<std::net::SocketAddr> = cluster.nodes.iter().filter(|n| n.running()).map(|n| n.dns).collect();
        let (_, mut client) = coordinator(cluster, timeout).await?;
        let start = Instant::now();
        let start_ms = crate::client::unix_ms_now();
        let deadline = start + timeout;
        let dns = std::thread::spawn(move || poll_dns_until(servers, target_ip, deadline, Duration::from_millis(1)));
        let last = switchover_to(&mut client, "web", target, timeout)
            .await
            .map_err(|mut e| {
                e.message = format!("run {run}: {}", e.message);
                e
            })?;
        let done_ms = start.elapsed().as_secs_f64() * 1000.0;
        let dns_at = tokio::task::spawn_blocking(move || dns.join().ok().flatten())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| Failure::runtime(format!("run {run}: DNS never answered {target}")))?;
        let dns_ms = dns_at.saturating_sub(start_ms) as f64;
        if let Some(t) = last {
            let mut prev = None;
            for ph in &t.phases {
                if let Some(p) = prev {
                    phases
                        .entry(ph.name.clone())
                        .or_default()
                        .push(ph.at_unix_ms.saturating_sub(p) as f64);
                }
                prev = Some(ph.at_unix_ms);
            }
        }
        println!("  run {run:>3}: {primary} -> {target}: DNS {dns_ms:.0} ms, command done {done_ms:.0} ms");
        to_dns.push(dns_ms);
        to_done.push(done_ms);
    }
    report(
        "switchover: command to every node's DNS answering the new primary",
        " ms",
        &mut to_dns,
    );
    report("switchover: command to the stream's completion", " ms", &mut to_done);
    for name in ["fenced", "started", "healthy", "dns"] {
        if let Some(v) = phases.get_mut(name) {
            report(&format!("  phase {name} (from the previous phase)"), " ms", v);
        }
    }
    Ok(())
}
