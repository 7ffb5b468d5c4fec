//! `tandem bench`: measurements on a local three-node cluster, printed as
//! figures (median, percentiles, over several runs), never pass/fail.
//! Build with `--release` for numbers worth comparing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tandem_proto::v1 as pb;

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
    /// From `kill -9` of the primary node (agent and service) to the group
    /// running on the other member, with the demo's HTTP service.
    GroupFailover {
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// How the lost primary is made safe: through the demo's exec fence
        /// device, through Debian's fence_dummy agent, or by lease expiry alone.
        #[arg(long, value_enum, default_value_t = BenchFencing::Exec)]
        fencing: BenchFencing,
    },
    /// Placement for many resources on many nodes: the pure computation,
    /// then validating and committing such a spec on a local cluster.
    Placement {
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        #[arg(long, default_value_t = 1000)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        resources_per_group: usize,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Resident memory and CPU of idle agents.
    Idle {
        /// How long to sample.
        #[arg(long, value_parser = crate::humantime_duration, default_value = "20s")]
        duration: Duration,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchFencing {
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
    if let BenchCommand::Placement {
        nodes,
        groups,
        resources_per_group,
        runs,
    } = args.what
    {
        placement_compute(nodes, groups, resources_per_group, runs);
    }
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
                BenchCommand::GroupFailover { runs, fencing } => {
                    group_failover(&mut cluster, runs, fencing, args.timeout).await
                }
                BenchCommand::Placement { groups, resources_per_group, runs, .. } => {
                    placement_apply(&cluster, groups, resources_per_group, runs).await
                }
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
        let mut survivors: Vec<(String, crate::client::Client)> = Vec::new();
        for n in cluster.nodes.iter().filter(|n| n.name != victim) {
            survivors.push((
                n.name.clone(),
                connect_to(&n.address, Duration::from_secs(2), &Default::default()).await?,
            ));
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

/// The coordinator's name and a client connected to it.
async fn coordinator(cluster: &LocalCluster, timeout: Duration) -> Result<(String, crate::client::Client), Failure> {
    let statuses = cluster.statuses(Duration::from_secs(2)).await;
    let (name, _) = agreed_coordinator(&statuses).ok_or_else(|| Failure::runtime("no agreed coordinator"))?;
    let address = cluster
        .node(&name)
        .map(|n| n.address.clone())
        .ok_or_else(|| Failure::runtime("the coordinator is not a local node"))?;
    Ok((name, connect_to(&address, timeout, &Default::default()).await?))
}

async fn commit(cluster: &LocalCluster, writes: usize) -> Outcome {
    let (coordinator, mut client) = coordinator(cluster, Duration::from_secs(10)).await?;
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

/// The pure placement computation on a synthetic cluster: every group
/// prefers three nodes, clones one in ten, anti-affinity between neighbours.
fn placement_compute(nodes: usize, groups: usize, per_group: usize, runs: usize) {
    use std::collections::BTreeMap;
    use tandem_core::NodeRole;
    use tandem_core::lease::NodeState;
    use tandem_core::placement::{NodeFacts, plan};
    use tandem_core::spec::{ActionTimeouts, AgentSpec, GroupKind, GroupSpec, Placement, ResourceSpec, Spec};

    let names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
    let facts: Vec<NodeFacts> = names
        .iter()
        .map(|n| NodeFacts {
            name: n.clone(),
            role: NodeRole::Member,
            state: NodeState::Up,
            lease_expired: false,
            standby: false,
        })
        .collect();
    let spec = Spec {
        groups: (0..groups)
            .map(|g| GroupSpec {
                name: format!("group-{g}"),
                kind: if g % 10 == 9 {
                    GroupKind::Clone
                } else {
                    GroupKind::Exclusive
                },
                resources: (0..per_group)
                    .map(|r| ResourceSpec {
                        name: format!("r{r}"),
                        agent: AgentSpec::Commands {
                            start: "true".into(),
                            stop: "true".into(),
                            monitor: "true".into(),
                        },
                        timeouts: ActionTimeouts::default(),
                        monitor_interval: Duration::from_secs(10),
                    })
                    .collect(),
                placement: Placement {
                    prefer: (0..3)
                        .map(|k| (names[(g + k * 7) % nodes].clone(), 100 - 10 * k as i64))
                        .collect(),
                    avoid: Vec::new(),
                    anti_affinity: if g > 0 {
                        vec![format!("group-{}", g - 1)]
                    } else {
                        Vec::new()
                    },
                    fail_back: false,
                },
                migration_threshold: 3,
                failure_timeout: Duration::from_secs(600),
                after: Vec::new(),
                dns: Default::default(),
            })
            .collect(),
        ..Spec::default()
    };
    println!(
        "placement: {} resources in {groups} groups on {nodes} nodes, {runs} runs of the pure computation",
        groups * per_group
    );
    let no_groups = BTreeMap::new();
    let no_fencing = BTreeMap::new();
    let mut samples = Vec::with_capacity(runs);
    let mut decisions = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let p = plan(&spec, &no_groups, &no_fencing, &facts, 0);
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        decisions = p.decisions.len();
    }
    println!("  {decisions} decisions per run");
    report("placement compute (fresh cluster)", " ms", &mut samples);
}

/// Validating and committing a large spec through `ApplySpec` on the local
/// cluster. Its groups avoid every node, so the figure is the spec's own
/// cost, not that of starting thousands of processes.
async fn placement_apply(cluster: &LocalCluster, groups: usize, per_group: usize, runs: usize) -> Outcome {
    use std::fmt::Write as _;
    let mut text = String::new();
    for g in 0..groups {
        let _ = writeln!(
            text,
            "[[groups]]\nname = \"group-{g}\"\navoid = [\"site-a\", \"site-b\"]"
        );
        for r in 0..per_group {
            let _ = writeln!(
                text,
                "[[groups.resources]]\nname = \"r{r}\"\nagent = \"exec\"\nstart = \"true\"\nstop = \"true\"\nmonitor = \"true\""
            );
        }
    }
    let (_, mut client) = coordinator(cluster, Duration::from_secs(120)).await?;
    println!(
        "placement: applying a spec of {} resources in {groups} groups ({} KiB of TOML), {runs} runs alternating two versions",
        groups * per_group,
        text.len() / 1024
    );
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        // Alternate so that every apply is a real change.
        let spec = if run % 2 == 0 {
            text.clone()
        } else {
            text.replace("monitor = \"true\"", "monitor = \"true \"")
        };
        let start = Instant::now();
        client
            .apply_spec(pb::ApplySpecRequest {
                spec,
                file: "bench.toml".into(),
                dry_run: false,
                actor: actor(),
            })
            .await
            .map_err(|e| failed("apply", e))?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    report("apply (validate, diff, commit on 3 nodes)", " ms", &mut samples);
    Ok(())
}

/// From `kill -9` of web's primary (agent and service) until every survivor
/// reports web running on the other member.
async fn group_failover(cluster: &mut LocalCluster, runs: usize, fencing: BenchFencing, timeout: Duration) -> Outcome {
    let service = crate::cluster::DemoService::prepare(&cluster.dir)?;
    let demo_spec = std::fs::read_to_string(&service.spec).map_err(|e| Failure::runtime(e.to_string()))?;
    let spec = spec_with_fencing(&demo_spec, &cluster.dir, fencing)?;
    // fence_dummy's plugs start on; each run switches one off.
    let power_on = |cluster: &LocalCluster| {
        for node in ["site-a", "site-b"] {
            let _ = std::fs::write(cluster.dir.join(format!("pdu-{node}.status")), "ON");
        }
    };
    power_on(cluster);
    coordinator(cluster, timeout)
        .await?
        .1
        .apply_spec(pb::ApplySpecRequest {
            spec,
            file: service.spec.display().to_string(),
            dry_run: false,
            actor: actor(),
        })
        .await
        .map_err(|e| failed("apply", e))?;
    let how = match fencing {
        BenchFencing::Exec => "fenced through the demo's exec device",
        BenchFencing::FenceDummy => "fenced through fence_dummy",
        BenchFencing::None => "no fence device: lease expiry only",
    };
    println!("group failover: {runs} runs of kill -9 of web's primary (agent and service), default timing, {how}");
    let running_on = |st: &[(String, Option<pb::ClusterStatus>)]| -> Option<String> {
        let mut on = None;
        for (_, s) in st {
            let g = s.as_ref()?.groups.iter().find(|g| g.name == "web")?;
            if g.state != "running" || (on.is_some() && on != g.primary) {
                return None;
            }
            on = g.primary.clone();
        }
        on
    };
    let mut samples = Vec::with_capacity(runs);
    let mut dns_samples = Vec::with_capacity(runs);
    let mut with_coordinator = 0;
    for run in 1..=runs {
        wait_stable(cluster, timeout).await?;
        let primary = cluster.wait_for(timeout, "web running", |st| running_on(st)).await?;
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
        let other = LocalCluster::NAMES
            .iter()
            .position(|(n, _)| *n != primary && *n != "witness")
            .map(LocalCluster::ip)
            .map(std::net::IpAddr::V4);
        let dns_deadline = start + timeout;
        let dns_poll = std::thread::spawn(move || {
            while Instant::now() < dns_deadline {
                let all = survivors.iter().all(|s| {
                    tandem_dns::client::lookup(*s, "web.demo.tandem.", false, Duration::from_millis(200))
                        .is_ok_and(|l| other.is_some_and(|o| l.addrs == vec![o]))
                });
                if all {
                    return Some(crate::client::unix_ms_now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        let new = cluster
            .wait_for(timeout, "web running elsewhere", |st| {
                running_on(st).filter(|p| *p != primary)
            })
            .await?;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let dns_at = dns_poll.join().ok().flatten();
        // The new primary's running report, as the cluster committed it.
        let events = coordinator(cluster, timeout)
            .await?
            .1
            .list_events(pb::ListEventsRequest { since_seq: 0 })
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
