//! `tandem bench`: measurements on a local three-node cluster, printed as
//! figures (median, percentiles, over several runs), never pass/fail.
//! Build with `--release` for numbers worth comparing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tandem_proto::v1 as pb;
use tandem_proto::v1::tandem_client::TandemClient;
use tonic::transport::Channel;

use crate::client::{actor, connect_to, failed};
use crate::cluster::{LocalCluster, agreed_coordinator};
use crate::{Failure, Outcome};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
    /// Directory for the cluster's files (default: a new temporary directory, removed afterwards).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// How long to wait for the cluster in each step.
    #[arg(long, value_parser = crate::humantime_duration, default_value = "30s", global = true)]
    timeout: Duration,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// From `kill -9` of the coordinator to a new coordinator answering
    /// GetStatus as coordinator.
    Failover {
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Latency of small committed writes (an operator note), fsync'ed on a majority.
    Commit {
        #[arg(long, default_value_t = 1000)]
        writes: usize,
    },
    /// Resident memory and CPU of idle agents.
    Idle {
        /// How long to sample.
        #[arg(long, value_parser = crate::humantime_duration, default_value = "20s")]
        duration: Duration,
    },
}

/// Percentile of sorted samples, nearest-rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(label: &str, unit: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    println!(
        "{label}: n={} min={:.1}{unit} p50={:.1}{unit} p90={:.1}{unit} p99={:.1}{unit} max={:.1}{unit}",
        samples.len(),
        samples.first().copied().unwrap_or(f64::NAN),
        percentile(samples, 50.0),
        percentile(samples, 90.0),
        percentile(samples, 99.0),
        samples.last().copied().unwrap_or(f64::NAN),
    );
}

pub async fn run(args: BenchArgs) -> Outcome {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = TempDir::new()?;
            temp.path.clone()
        }
    };
    let (mut cluster, _) = LocalCluster::prepare(&dir, "bench")?;
    cluster.start_all()?;
    let result = tokio::select! {
        r = async {
            wait_stable(&cluster, args.timeout).await?;
            match args.what {
                BenchCommand::Failover { runs } => failover(&mut cluster, runs, args.timeout).await,
                BenchCommand::Commit { writes } => commit(&cluster, writes).await,
                BenchCommand::Idle { duration } => idle(&cluster, duration).await,
            }
        } => r,
        signal = crate::cluster::interrupted() => Err(Failure::runtime(format!("interrupted by {signal}"))),
    };
    cluster.stop_all(Duration::from_secs(10)).await;
    result
}

/// Waits until all agree on one coordinator, every node is up and has
/// applied everything the coordinator committed.
async fn wait_stable(cluster: &LocalCluster, timeout: Duration) -> Result<String, Failure> {
    let count = cluster.nodes.iter().filter(|n| n.running()).count();
    cluster
        .wait_for(timeout, "a stable, caught-up cluster", |st| {
            let (c, _) = agreed_coordinator(st)?;
            let committed = st.iter().find(|(n, _)| *n == c)?.1.as_ref()?.commit_index;
            st.iter()
                .all(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.applied_index >= committed
                            && s.nodes.iter().filter(|n| n.state == pb::NodeState::Up as i32).count() >= count
                    })
                })
                .then_some(c)
        })
        .await
}

async fn failover(cluster: &mut LocalCluster, runs: usize, timeout: Duration) -> Outcome {
    println!("failover: {runs} runs of kill -9 of the coordinator, default timing");
    let mut samples = Vec::with_capacity(runs);
    for run in 1..=runs {
        let victim = wait_stable(cluster, timeout).await?;
        // Let the survivors hear a few heartbeats so the kill lands at a random point of the cycle.
        tokio::time::sleep(Duration::from_millis(300 + (run as u64 * 37) % 100)).await;
        let mut survivors: Vec<(String, TandemClient<Channel>)> = Vec::new();
        for n in cluster.nodes.iter().filter(|n| n.name != victim) {
            survivors.push((n.name.clone(), connect_to(&n.address, Duration::from_secs(2)).await?));
        }
        cluster.kill9(&victim).await?;
        let start = Instant::now();
        let new = 'found: loop {
            for (name, client) in &mut survivors {
                if let Ok(r) = client.get_status(pb::GetStatusRequest {}).await {
                    let s = r.into_inner();
                    if s.coordinator.as_deref() == Some(name.as_str()) {
                        break 'found name.clone();
                    }
                }
            }
            if start.elapsed() > timeout {
                return Err(Failure::runtime(format!(
                    "run {run}: no new coordinator within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        println!("  run {run:>3}: {victim} killed, {new} coordinator after {ms:.1} ms");
        samples.push(ms);
        cluster.start(&victim)?;
    }
    report("failover (kill -9 to new coordinator answering)", " ms", &mut samples);
    Ok(())
}

async fn commit(cluster: &LocalCluster, writes: usize) -> Outcome {
    let statuses = cluster.statuses(Duration::from_secs(2)).await;
    let (coordinator, _) = agreed_coordinator(&statuses).ok_or_else(|| Failure::runtime("no agreed coordinator"))?;
    let address = cluster
        .node(&coordinator)
        .map(|n| n.address.clone())
        .ok_or_else(|| Failure::runtime("coordinator is not a local node"))?;
    let mut client = connect_to(&address, Duration::from_secs(10)).await?;
    println!("commit: {writes} sequential notes through the coordinator ({coordinator}), each fsync'ed on a majority");
    let who = actor();
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        let start = Instant::now();
        client
            .annotate(pb::AnnotateRequest {
                message: format!("bench write {i}"),
                actor: who.clone(),
            })
            .await
            .map_err(|e| failed("annotate", e))?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    report("commit latency", " ms", &mut samples);
    Ok(())
}

/// (resident KiB, CPU ticks) of a process, from /proc.
fn proc_sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((rss, utime + stime))
}

async fn idle(cluster: &LocalCluster, duration: Duration) -> Outcome {
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    println!(
        "idle: sampling the three agents for {}",
        humantime::format_duration(duration)
    );
    let pids: Vec<(String, u32)> = cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.pid()?)))
        .collect();
    let before: Vec<Option<(u64, u64)>> = pids.iter().map(|(_, p)| proc_sample(*p)).collect();
    let start = Instant::now();
    let mut rss_peak = vec![0u64; pids.len()];
    while start.elapsed() < duration {
        for (i, (_, p)) in pids.iter().enumerate() {
            if let Some((rss, _)) = proc_sample(*p) {
                rss_peak[i] = rss_peak[i].max(rss);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    for (i, (name, pid)) in pids.iter().enumerate() {
        let (Some((_, t0)), Some((rss, t1))) = (before[i], proc_sample(*pid)) else {
            println!("  {name}: process gone");
            continue;
        };
        let cpu = (t1.saturating_sub(t0)) as f64 / ticks_per_s / elapsed * 100.0;
        println!(
            "  {name:<8} rss {:.1} MB (peak {:.1} MB)  cpu {cpu:.2}% of a core",
            rss as f64 / 1024.0,
            rss_peak[i] as f64 / 1024.0
        );
    }
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<TempDir, Failure> {
        let path = std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| Failure::runtime(format!("{}: {e}", path.display())))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
