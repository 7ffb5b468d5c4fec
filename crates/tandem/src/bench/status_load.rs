//! `bench status-load`: GetStatus throughput and latency of many concurrent
//! pollers on one node, optionally while the group's primary is killed
//! again and again.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::{apply, running_on, wait_stable};
use super::stats::{latency_line, percentile, report};
use crate::client::connect_to;
use crate::cluster::DemoCluster;
use crate::{Failure, Outcome};

/// A trivial exclusive group for the load benchmarks: commands that always
/// succeed, preferring site-a, staying where it is after a failover.
const TRIVIAL_SPEC: &str = r#"[[groups]]
name = "g"
kind = "exclusive"
prefer = [{ node = "site-a", score = 100 }, { node = "site-b", score = 50 }]
fail_back = false

  [[groups.resources]]
  name = "r"
  agent = "exec"
  start = "true"
  stop = "true"
  monitor = "true"
  monitor_interval = "1s"
"#;

pub(super) struct StatusLoad {
    pub(super) pollers: usize,
    pub(super) per_connection: usize,
    pub(super) duration: Duration,
    pub(super) runs: usize,
    pub(super) during_failover: bool,
    pub(super) node: String,
}

/// What the pollers of one run saw: latencies in microseconds of the
/// answered requests, split by whether a failover was in progress when the
/// request was sent or answered.
#[derive(Default)]
struct PollResult {
    calm: Vec<u32>,
    failover: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
}

impl PollResult {
    fn answered(&self) -> usize {
        self.calm.len() + self.failover.len()
    }
}

/// `pollers` tasks calling GetStatus on `address` back to back until
/// `deadline`, `per_connection` of them sharing one HTTP/2 connection.
async fn poll_status(
    address: &str,
    pollers: usize,
    per_connection: usize,
    deadline: Instant,
    in_failover: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<PollResult, Failure> {
    use std::sync::atomic::Ordering;
    let mut clients = Vec::new();
    for _ in 0..pollers.div_ceil(per_connection) {
        clients.push(connect_to(address, Duration::from_secs(5), &Default::default()).await?);
    }
    let mut tasks = Vec::with_capacity(pollers);
    for i in 0..pollers {
        let mut client = clients[i / per_connection].clone();
        let in_failover = in_failover.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = PollResult::default();
            while Instant::now() < deadline {
                let during = in_failover.load(Ordering::Relaxed);
                let start = Instant::now();
                match client.get_status(pb::GetStatusRequest {}).await {
                    Ok(_) => {
                        let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
                        if during || in_failover.load(Ordering::Relaxed) {
                            r.failover.push(us);
                        } else {
                            r.calm.push(us);
                        }
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.first_error.is_none() {
                            r.first_error = Some(format!("{:?}: {}", e.code(), e.message()));
                        }
                        // An unreachable node fails at once; do not spin.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            r
        }));
    }
    let mut all = PollResult::default();
    for t in tasks {
        let r = t.await.map_err(|e| Failure::runtime(format!("a poller failed: {e}")))?;
        all.calm.extend(r.calm);
        all.failover.extend(r.failover);
        all.errors += r.errors;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
    }
    all.calm.sort_unstable();
    all.failover.sort_unstable();
    Ok(all)
}

/// Until `deadline`: waits for `g` running, kills its primary's agent
/// (flagging a failover in progress), waits until every survivor reports
/// it running on the other member, restarts the killed agent and waits
/// until the cluster is whole again. The failover times, in ms.
async fn kill_primaries(
    cluster: &mut DemoCluster,
    deadline: Instant,
    in_failover: &std::sync::atomic::AtomicBool,
    timeout: Duration,
) -> Result<Vec<f64>, Failure> {
    use std::sync::atomic::Ordering;
    let mut times = Vec::new();
    loop {
        // A calm stretch between failovers.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if Instant::now() >= deadline {
            return Ok(times);
        }
        let primary = cluster.wait_for(timeout, "g running", |st| running_on(st, "g")).await?;
        in_failover.store(true, Ordering::Relaxed);
        cluster.kill9(&primary).await?;
        let start = Instant::now();
        let moved = cluster
            .wait_for(timeout, "g running elsewhere", |st| {
                running_on(st, "g").filter(|p| *p != primary)
            })
            .await;
        in_failover.store(false, Ordering::Relaxed);
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let new = moved?;
        println!("    {primary} killed, g running on {new} after {ms:.0} ms");
        times.push(ms);
        cluster.start(&primary)?;
        wait_stable(cluster, timeout).await?;
    }
}

pub(super) async fn status_load(cluster: &mut DemoCluster, o: StatusLoad, timeout: Duration) -> Outcome {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let address = cluster
        .node(&o.node)
        .map(|n| n.address.clone())
        .ok_or_else(|| Failure::input(format!("no local node {:?}", o.node)))?;
    if o.during_failover && o.node != "witness" {
        return Err(Failure::input(
            "--during-failover kills site-a and site-b in turn; poll the witness",
        ));
    }
    apply(cluster, TRIVIAL_SPEC.into(), "bench.toml", timeout).await?;
    let connections = o.pollers.div_ceil(o.per_connection);
    println!(
        "status load: {} pollers calling GetStatus back to back on {} over {connections} HTTP/2 connection(s) \
         ({} pollers per connection), {} runs of {} s, one exclusive group{}",
        o.pollers,
        o.node,
        o.per_connection,
        o.runs,
        o.duration.as_secs(),
        if o.during_failover {
            "; its primary's agent is killed (kill -9) again and again, lease expiry only, and restarted after each failover"
        } else {
            ""
        }
    );
    println!("  targets to compare with: > 20,000 requests/s with 50 pollers; p99 < 20 ms during a failover");
    let mut rates = Vec::with_capacity(o.runs);
    let mut calm_all = Vec::new();
    let mut failover_all = Vec::new();
    let mut failover_times = Vec::new();
    for run in 1..=o.runs {
        wait_stable(cluster, timeout).await?;
        cluster.wait_for(timeout, "g running", |st| running_on(st, "g")).await?;
        let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let in_failover = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let deadline = start + o.duration;
        let pollers = tokio::spawn({
            let address = address.clone();
            let in_failover = in_failover.clone();
            async move { poll_status(&address, o.pollers, o.per_connection, deadline, in_failover).await }
        });
        let times = if o.during_failover {
            kill_primaries(cluster, deadline, &in_failover, timeout).await?
        } else {
            Vec::new()
        };
        let r = pollers
            .await
            .map_err(|e| Failure::runtime(format!("the pollers failed: {e}")))??;
        let elapsed = o.duration.as_secs_f64();
        let rate = r.answered() as f64 / elapsed;
        println!(
            "  run {run}: {} answered in {elapsed:.0} s = {rate:.0} requests/s, {} errors{} (load average before: {})",
            r.answered(),
            r.errors,
            r.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        if o.during_failover {
            println!("    {} failovers", times.len());
            println!("    failover in progress: {}", latency_line(&r.failover));
            println!("    no failover:          {}", latency_line(&r.calm));
        } else {
            println!("    latency: {}", latency_line(&r.calm));
        }
        rates.push(rate);
        calm_all.extend(r.calm);
        failover_all.extend(r.failover);
        failover_times.extend(times);
    }
    rates.sort_by(f64::total_cmp);
    calm_all.sort_unstable();
    failover_all.sort_unstable();
    println!(
        "all runs: requests/s median {:.0} (min {:.0}, max {:.0}) over {} runs",
        percentile(&rates, 50.0),
        rates.first().copied().unwrap_or(f64::NAN),
        rates.last().copied().unwrap_or(f64::NAN),
        rates.len()
    );
    if o.during_failover {
        println!("  {} failovers in all", failover_times.len());
        println!("  latency, failover in progress: {}", latency_line(&failover_all));
        println!("  latency, no failover:          {}", latency_line(&calm_all));
        report(
            "  failover (kill -9 to running on the other member)",
            " ms",
            &mut failover_times,
        );
    } else {
        println!("  latency: {}", latency_line(&calm_all));
    }
    Ok(())
}
