//! `tandem bench`: measurements on a local three-node cluster, printed as
//! figures (median, percentiles, over several runs), never pass/fail.
//! Build with `--release` for numbers worth comparing.
//!
//! One file per benchmark; `stats` holds the figures and how they are
//! printed, `common` the steps every benchmark takes on the cluster.

mod commit;
mod common;
mod dns_follow;
mod etcd;
mod failover;
mod group_failover;
mod idle;
mod placement;
mod stats;
mod status_load;
mod switchover;
mod watch_memory;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cluster::DemoCluster;
use crate::{Failure, Outcome};
use common::wait_stable;
use group_failover::BenchFencing;
use status_load::StatusLoad;

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
    /// GetStatus as coordinator, and to the first write it commits.
    Failover {
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Writes stopped during a clean stop (SIGTERM) of the coordinator,
    /// which hands its role over first: the longest gap between two
    /// committed writes.
    Handover {
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Latency of small committed writes (an operator note), fsync'ed on a majority.
    Commit {
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        /// Also run a three-member etcd cluster (Debian's etcd-server) and
        /// time the same small writes on it, in alternating rounds.
        #[arg(long)]
        vs_etcd: bool,
        /// Spec sizes in resources, e.g. `0,10000`: for each in turn (3
        /// rounds), commit a spec of that many resources (groups of 10 that
        /// avoid every node, so nothing starts), then time the small writes
        /// after it; figures per size.
        #[arg(long, value_delimiter = ',', conflicts_with = "vs_etcd")]
        spec_resources: Vec<usize>,
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
    /// How fast every node's DNS follows a commit: planned switchovers back
    /// and forth, from the commit making the new primary active to each
    /// node's DNS answering its address.
    DnsFollow {
        #[arg(long, default_value_t = 50)]
        runs: usize,
    },
    /// Resident memory and CPU of idle agents.
    Idle {
        /// How long to sample.
        #[arg(long, value_parser = crate::humantime_duration, default_value = "20s")]
        duration: Duration,
    },
}

pub async fn run(args: BenchArgs) -> Outcome {
    if let BenchCommand::Placement {
        nodes,
        groups,
        resources_per_group,
        runs,
    } = args.what
    {
        placement::compute(nodes, groups, resources_per_group, runs);
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
        watch_memory::raise_nofile(connections as u64 * 2 + 256)?;
    }
    let (mut cluster, _) = DemoCluster::prepare(&dir, "bench")?;
    cluster.start_all()?;
    let result = tokio::select! {
        r = async {
            wait_stable(&cluster, args.timeout).await?;
            match args.what {
                BenchCommand::Failover { runs } => failover::failover(&mut cluster, runs, args.timeout).await,
                BenchCommand::Handover { runs } => failover::handover(&mut cluster, runs, args.timeout).await,
                BenchCommand::Commit { writes, vs_etcd, spec_resources } if !spec_resources.is_empty() && !vs_etcd => {
                    commit::after_specs(&cluster, writes, &spec_resources, args.timeout).await
                }
                BenchCommand::Commit { writes, vs_etcd, .. } => commit::commit(&cluster, writes, vs_etcd, &dir).await,
                BenchCommand::Idle { duration } => idle::idle(&cluster, duration).await,
                BenchCommand::Switchover { runs } => switchover::switchover(&cluster, runs, args.timeout).await,
                BenchCommand::DnsFollow { runs } => dns_follow::dns_follow(&cluster, runs, args.timeout).await,
                BenchCommand::GroupFailover { runs, fencing } => {
                    group_failover::group_failover(&mut cluster, runs, fencing, args.timeout).await
                }
                BenchCommand::Placement { groups, resources_per_group, runs, .. } => {
                    placement::apply(&cluster, groups, resources_per_group, runs).await
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
                    status_load::status_load(&mut cluster, load, args.timeout).await
                }
                BenchCommand::WatchMemory { streams, connections, steady, node } => {
                    watch_memory::watch_memory(&cluster, streams, connections.max(1), steady, node, args.timeout).await
                }
            }
        } => r,
        signal = crate::cluster::interrupted() => Err(Failure::runtime(format!("interrupted by {signal}"))),
    };
    cluster.stop_all(Duration::from_secs(10)).await;
    result
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
