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
    /// GetStatus throughput and latency: many concurrent pollers on one
    /// node, optionally while the group's primary is killed again and again.
    StatusLoad {
        /// Concurrent pollers, each calling GetStatus as fast as it can.
        #[arg(long, default_value_t = 50)]
        pollers: usize,
        /// Pollers sharing one HTTP/2 connection.
        #[arg(long, default_value_t = 10)]
        pollers_per_connection: usize,
        /// Length of each run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Kill the group's primary (kill -9 of its agent) again and again
        /// while polling, and restart it after each failover.
        #[arg(long)]
        during_failover: bool,
        /// The node polled (default: the witness, which is never killed).
        #[arg(long)]
        node: Option<String>,
    },
    /// Resident memory of a node holding many WatchStatus streams.
    WatchMemory {
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// HTTP/2 connections the streams are spread over.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// How long to keep reading once all are open.
        #[arg(long, value_parser = crate::humantime_duration, default_value = "10s")]
        steady: Duration,
        /// The node watched (default: the coordinator, whose liveness changes most often).
        #[arg(long)]
        node: Option<String>,
    },
    /// Planned switchover of a trivial service: from the command to every
    /// node's DNS answering the new primary, back and forth.
    Switchover {
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
    nearest_rank(sorted, p).unwrap_or(f64::NAN)
}

/// The nearest-rank percentile `p` (0 to 100) of sorted samples.
fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
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
    if let BenchCommand::WatchMemory { connections, .. } = args.what {
        // Each connection is a descriptor here and one in the node (which
        // inherits this limit).
        raise_nofile(connections as u64 * 2 + 256)?;
    }
    let (mut cluster, _) = LocalCluster::prepare(&dir, "bench")?;
    cluster.start_all()?;
    let result = tokio::select! {
        r = async {
            wait_stable(&cluster, args.timeout).await?;
            match args.what {
                BenchCommand::Failover { runs } => failover(&mut cluster, runs, args.timeout).await,
                BenchCommand::Commit { writes } => commit(&cluster, writes).await,
                BenchCommand::Idle { duration } => idle(&cluster, duration).await,
                BenchCommand::Switchover { runs } => switchover(&cluster, runs, args.timeout).await,
                BenchCommand::GroupFailover { runs, fencing } => {
                    group_failover(&mut cluster, runs, fencing, args.timeout).await
                }
                BenchCommand::Placement { groups, resources_per_group, runs, .. } => {
                    placement_apply(&cluster, groups, resources_per_group, runs).await
                }
                BenchCommand::StatusLoad { pollers, pollers_per_connection, seconds, runs, during_failover, node } => {
                    let load = StatusLoad {
                        pollers: pollers.max(1),
                        per_connection: pollers_per_connection.max(1),
                        duration: Duration::from_secs(seconds.max(1)),
                        runs: runs.max(1),
                        during_failover,
                        node: node.unwrap_or_else(|| "witness".into()),
                    };
                    status_load(&mut cluster, load, args.timeout).await
                }
                BenchCommand::WatchMemory { streams, connections, steady, node } => {
                    watch_memory(&cluster, streams, connections.max(1), steady, node, args.timeout).await
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
            freshness: Default::default(),
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
                max_lag: None,
                hooks: Default::default(),
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

/// Raises this process's soft limit of open files to at least `wanted`
/// (capped by the hard limit); agents started afterwards inherit it.
fn raise_nofile(wanted: u64) -> Outcome {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| Failure::runtime(format!("cannot read the open-files limit: {e}")))?;
    if soft >= wanted {
        return Ok(());
    }
    let new = wanted.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, new, hard)
        .map_err(|e| Failure::runtime(format!("cannot raise the open-files limit from {soft} to {new}: {e}")))?;
    println!("(open-files limit raised from {soft} to {new})");
    Ok(())
}

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

/// The node every answering node reports running `group` on, if they agree.
fn running_on(st: &[(String, Option<pb::ClusterStatus>)], group: &str) -> Option<String> {
    let mut on = None;
    for (_, s) in st {
        let g = s.as_ref()?.groups.iter().find(|g| g.name == group)?;
        if g.state != "running" || g.primary.is_none() || (on.is_some() && on != g.primary) {
            return None;
        }
        on = g.primary.clone();
    }
    on
}

struct StatusLoad {
    pollers: usize,
    per_connection: usize,
    duration: Duration,
    runs: usize,
    during_failover: bool,
    node: String,
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

/// p50/p90/p99/max of sorted microsecond samples, in milliseconds.
fn latency_line(sorted: &[u32]) -> String {
    let ms = |p: f64| nearest_rank(sorted, p).map_or(f64::NAN, |us| f64::from(us) / 1000.0);
    format!(
        "n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        sorted.len(),
        ms(50.0),
        ms(90.0),
        ms(99.0),
        ms(100.0)
    )
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
    cluster: &mut LocalCluster,
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

async fn status_load(cluster: &mut LocalCluster, o: StatusLoad, timeout: Duration) -> Outcome {
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

/// Opens `streams` WatchStatus streams to one node over `connections`
/// HTTP/2 connections, keeps reading them, and reports the node's
/// resident memory before, once all are open, and after `steady`.
async fn watch_memory(
    cluster: &LocalCluster,
    streams: usize,
    connections: usize,
    steady: Duration,
    node: Option<String>,
    timeout: Duration,
) -> Outcome {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let target = match node {
        Some(n) => n,
        None => coordinator(cluster, timeout).await?.0,
    };
    let local = cluster
        .node(&target)
        .ok_or_else(|| Failure::input(format!("no local node {target:?}")))?;
    let pid = local
        .pid()
        .ok_or_else(|| Failure::runtime(format!("{target} is not running")))?;
    let rss = |what: &str| -> Result<u64, Failure> {
        proc_sample(pid)
            .map(|(kib, _)| kib)
            .ok_or_else(|| Failure::runtime(format!("{target} ({pid}) is gone {what}")))
    };
    println!(
        "watch memory: {streams} WatchStatus streams to {target} over {connections} HTTP/2 connections \
         ({} per connection; the server sets no limit of concurrent streams per connection)",
        streams.div_ceil(connections)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss("before opening")?;
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(connect_to(&local.address, timeout, &Default::default()).await?);
    }
    let opened = Arc::new(AtomicUsize::new(0));
    let failed_to_open = Arc::new(AtomicUsize::new(0));
    let with_message = Arc::new(AtomicUsize::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let note = |errors: &Mutex<BTreeMap<String, usize>>, e: String| {
        if let Ok(mut m) = errors.lock() {
            *m.entry(e).or_default() += 1;
        }
    };
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut client = clients[i % connections].clone();
        let (opened, failed_to_open, with_message, messages, errors) = (
            opened.clone(),
            failed_to_open.clone(),
            with_message.clone(),
            messages.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut stream = match client.watch_status(pb::WatchStatusRequest { max_interval_ms: 0 }).await {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    failed_to_open.fetch_add(1, Ordering::Relaxed);
                    note(&errors, format!("open: {:?}: {}", e.code(), e.message()));
                    return;
                }
            };
            opened.fetch_add(1, Ordering::Relaxed);
            let mut first = true;
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {
                        if first {
                            with_message.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {
                        note(&errors, "stream ended by the server".into());
                        return;
                    }
                    Err(e) => {
                        note(&errors, format!("read: {:?}: {}", e.code(), e.message()));
                        return;
                    }
                }
            }
        }));
    }
    while opened.load(Ordering::Relaxed) + failed_to_open.load(Ordering::Relaxed) < streams
        || with_message.load(Ordering::Relaxed) < opened.load(Ordering::Relaxed)
    {
        if start.elapsed() > timeout {
            println!(
                "  (gave up waiting for every stream after {})",
                humantime::format_duration(timeout)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_time = start.elapsed();
    let all_open = rss("once the streams were open")?;
    let (_, ticks0) = proc_sample(pid).unwrap_or_default();
    let messages0 = messages.load(Ordering::Relaxed);
    let steady_start = Instant::now();
    let mut peak = all_open;
    while steady_start.elapsed() < steady {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(rss("at steady state")?);
    }
    let (at_steady, ticks1) = proc_sample(pid).unwrap_or_default();
    let steady_s = steady_start.elapsed().as_secs_f64();
    let received = messages.load(Ordering::Relaxed) - messages0;
    for t in &tasks {
        t.abort();
    }
    drop(clients);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = rss("after closing")?;
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let n = opened.load(Ordering::Relaxed);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "  opened {n} of {streams} in {:.1} s ({} failed to open; {} got a first status)",
        open_time.as_secs_f64(),
        failed_to_open.load(Ordering::Relaxed),
        with_message.load(Ordering::Relaxed)
    );
    println!(
        "  {target} resident: before {:.1} MiB, all open {:.1} MiB, steady ({}) {:.1} MiB (peak {:.1} MiB), 2 s after closing {:.1} MiB",
        mib(before),
        mib(all_open),
        humantime::format_duration(steady),
        mib(at_steady),
        mib(peak),
        mib(closed)
    );
    if n > 0 {
        println!(
            "  per stream at steady state: {:.1} KiB",
            at_steady.saturating_sub(before) as f64 / n as f64
        );
    }
    println!(
        "  at steady state: {:.0} statuses/s received over all streams; {target} used {:.1}% of a core",
        received as f64 / steady_s,
        ticks1.saturating_sub(ticks0) as f64 / ticks_per_s / steady_s * 100.0
    );
    if let Ok(m) = errors.lock() {
        for (e, count) in m.iter() {
            println!("  error x{count}: {e}");
        }
    }
    Ok(())
}

/// A trivial service (a sleep, which SIGTERM ends at once) in the demo's DNS zone.
const SWITCHOVER_SPEC: &str = "[dns]\nzone = \"demo.tandem.\"\n\n\
[[groups]]\nname = \"web\"\nkind = \"exclusive\"\n\
prefer = [{ node = \"site-a\", score = 100 }, { node = \"site-b\", score = 50 }]\n\n\
[[groups.resources]]\nname = \"svc\"\nagent = \"exec\"\ncommand = \"/bin/sleep\"\n\
args = [\"1000000\"]\nmonitor_interval = \"1s\"\n";

/// Asks every DNS server, every millisecond, until all answer `addr` for
/// `web.demo.tandem.`; returns when they did (unix ms).
fn poll_dns_until(servers: Vec<std::net::SocketAddr>, addr: std::net::IpAddr, deadline: Instant) -> Option<u64> {
    while Instant::now() < deadline {
        let all = servers.iter().all(|s| {
            tandem_dns::client::lookup(*s, "web.demo.tandem.", false, Duration::from_millis(200))
                .is_ok_and(|l| l.addrs == vec![addr])
        });
        if all {
            return Some(crate::client::unix_ms_now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Commits `spec` through the coordinator.
async fn apply(cluster: &LocalCluster, spec: String, file: &str, timeout: Duration) -> Outcome {
    coordinator(cluster, timeout)
        .await?
        .1
        .apply_spec(pb::ApplySpecRequest {
            spec,
            file: file.into(),
            dry_run: false,
            actor: actor(),
        })
        .await
        .map_err(|e| failed("apply", e))?;
    Ok(())
}

async fn switchover(cluster: &LocalCluster, runs: usize, timeout: Duration) -> Outcome {
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
        let target = if primary == "site-a" { "site-b" } else { "site-a" };
        let target_ip = LocalCluster::NAMES
            .iter()
            .position(|(n, _)| *n == target)
            .map(LocalCluster::ip)
            .map(std::net::IpAddr::V4)
            .ok_or_else(|| Failure::runtime("no such node"))?;
        let servers: Vec<std::net::SocketAddr> = cluster.nodes.iter().filter(|n| n.running()).map(|n| n.dns).collect();
        let (_, mut client) = coordinator(cluster, timeout).await?;
        let start = Instant::now();
        let start_ms = crate::client::unix_ms_now();
        let deadline = start + timeout;
        let dns = std::thread::spawn(move || poll_dns_until(servers, target_ip, deadline));
        let mut stream = client
            .switchover(pb::MoveRequest {
                group: "web".into(),
                to: target.into(),
                force: false,
                actor: actor(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
            .await
            .map_err(|e| failed("switchover", e))?
            .into_inner();
        let mut last = None;
        while let Some(p) = stream.message().await.map_err(|e| failed("switchover", e))? {
            if p.done {
                if !p.ok {
                    return Err(Failure::runtime(format!("run {run}: switchover failed: {}", p.message)));
                }
                last = p.transition;
                break;
            }
        }
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
    use super::{latency_line, nearest_rank, percentile};

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn latency_percentiles_of_microseconds() {
        let s: Vec<u32> = (1..=1000).map(|i| i * 10).collect();
        assert_eq!(nearest_rank(&s, 99.0), Some(9900));
        assert_eq!(nearest_rank(&s, 100.0), Some(10_000));
        assert_eq!(nearest_rank::<u32>(&[], 50.0), None);
        assert_eq!(
            latency_line(&s),
            "n=1000 p50=5.00 ms p90=9.00 ms p99=9.90 ms max=10.00 ms"
        );
    }
}
