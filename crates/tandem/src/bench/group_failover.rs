//! `bench group-failover`: from `kill -9` of web's primary (agent and
//! service) to the group running on the other member, with the demo's
//! HTTP service and the fencing asked for.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::{apply, coordinator, poll_dns_until, running_on, wait_stable};
use super::stats::report;
use crate::client::failed;
use crate::cluster::{DemoCluster, agreed_coordinator};
use crate::{Failure, Outcome};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum BenchFencing {
    Exec,
    FenceDummy,
    None,
}

/// The demo's spec with the fencing `mode` asks for.
fn spec_with_fencing(demo_spec: &str, dir: &std::path::Path, mode: BenchFencing) -> Result<String, Failure> {
    let marker = "# Each member has a fence device.";
    let base = demo_spec
        .split_once(marker)
        .map(|(b, _)| b)
        .ok_or_else(|| Failure::runtime("the demo spec has no fencing section"))?;
    Ok(match mode {
        BenchFencing::Exec => demo_spec.to_string(),
        BenchFencing::None => base.to_string(),
        BenchFencing::FenceDummy => {
            let mut text = base.to_string();
            for node in ["site-a", "site-b"] {
                let status = dir.join(format!("pdu-{node}.status"));
                text.push_str(&format!(
                    "[fencing.devices.pdu-{node}]\nagent = \"fence_dummy\"\nparams = {{ type = \"file\", status_file = {:?} }}\n\n\
                     [fencing.nodes.{node}]\nlevels = [[\"pdu-{node}\"]]\n\n",
                    status.display().to_string()
                ));
            }
            text
        }
    })
}

/// From `kill -9` of web's primary (agent and service) until every survivor
/// reports web running on the other member.
pub(super) async fn group_failover(
    cluster: &mut DemoCluster,
    runs: usize,
    fencing: BenchFencing,
    timeout: Duration,
) -> Outcome {
    let service = crate::cluster::DemoService::prepare(&cluster.dir)?;
    let demo_spec = std::fs::read_to_string(&service.spec).map_err(|e| Failure::runtime(e.to_string()))?;
    let spec = spec_with_fencing(&demo_spec, &cluster.dir, fencing)?;
    // fence_dummy's plugs start on; each run switches one off.
    let power_on = |cluster: &DemoCluster| {
        for node in ["site-a", "site-b"] {
            let _ = std::fs::write(cluster.dir.join(format!("pdu-{node}.status")), "ON");
        }
    };
    power_on(cluster);
    apply(cluster, spec, &service.spec.display().to_string(), timeout).await?;
    let how = match fencing {
        BenchFencing::Exec => "fenced through the demo's exec device",
        BenchFencing::FenceDummy => "fenced through fence_dummy",
        BenchFencing::None => "no fence device: lease expiry only",
    };
    println!("group failover: {runs} runs of kill -9 of web's primary (agent and service), default timing, {how}");
    let mut samples = Vec::with_capacity(runs);
    let mut dns_samples = Vec::with_capacity(runs);
    let mut with_coordinator = 0;
    for run in 1..=runs {
        wait_stable(cluster, timeout).await?;
        let primary = cluster
            .wait_for(timeout, "web running", |st| running_on(st, "web"))
            .await?;
        let statuses = cluster.statuses(Duration::from_secs(2)).await;
        let was_coordinator = agreed_coordinator(&statuses).is_some_and(|(c, _)| c == primary);
        tokio::time::sleep(Duration::from_millis(300 + (run as u64 * 37) % 100)).await;
        let pid = cluster.service_pid(&primary);
        cluster.kill9(&primary).await?;
        if let Some(p) = pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
        }
        let start = Instant::now();
        // Every survivor's DNS, asked every 2 ms from the kill on: when did
        // all of them first answer the other member's address?
        let survivors: Vec<std::net::SocketAddr> = cluster
            .nodes
            .iter()
            .filter(|n| n.name != primary && n.running())
            .map(|n| n.dns)
            .collect();
        let other = DemoCluster::NAMES
            .iter()
            .position(|(n, _)| *n != primary && *n != "witness")
            .map(DemoCluster::ip)
            .map(std::net::IpAddr::V4);
        let dns_deadline = start + timeout;
        let dns_poll = std::thread::spawn(move || {
            other.and_then(|o| poll_dns_until(survivors, o, dns_deadline, Duration::from_millis(2)))
        });
        let new = cluster
            .wait_for(timeout, "web running elsewhere", |st| {
                running_on(st, "web").filter(|p| *p != primary)
            })
            .await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let dns_at = dns_poll.join().ok().flatten();
        // The new primary's running report, as the cluster committed it.
        let events = coordinator(cluster, timeout)
            .await?
            .1
            .list_events(pb::ListEventsRequest::default())
            .await
            .map_err(|e| failed("events", e))?
            .into_inner()
            .events;
        let running_at = events
            .iter()
            .rev()
            .find(|e| e.message.starts_with(&format!("DNS: web now answers with {new}")))
            .map(|e| e.at_unix_ms);
        if let (Some(d), Some(r)) = (dns_at, running_at) {
            dns_samples.push(d.saturating_sub(r) as f64);
        }
        if was_coordinator {
            with_coordinator += 1;
        }
        println!(
            "  run {run:>3}: {primary}{} killed, web running on {new} after {ms:.0} ms",
            if was_coordinator { " (also coordinator)" } else { "" }
        );
        samples.push(ms);
        power_on(cluster);
        cluster.start(&primary)?;
    }
    println!(
        "  ({with_coordinator} of {runs} runs also lost the coordinator, which adds an election and the predecessor's lease grace)"
    );
    report(
        "group failover (kill -9 to running on the other member)",
        " ms",
        &mut samples,
    );
    report(
        "DNS repointing (the new primary's running report to every survivor's DNS answering it)",
        " ms",
        &mut dns_samples,
    );
    Ok(())
}
