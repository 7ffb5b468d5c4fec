//! `tandem demo`: a three-node cluster on loopback that elects a
//! coordinator, loses it to `kill -9`, elects another and takes the old one
//! back, narrated as it happens; then a live status view until Ctrl-C.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use tandem_proto::v1 as pb;

use crate::cluster::{LocalCluster, agreed_coordinator};
use crate::output::{state_name, status_table};
use crate::{Failure, Outcome};

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the configuration files, data and logs of the demo nodes.
    #[arg(long, default_value = "tandem-demo")]
    dir: PathBuf,
    /// Only write DIR/site-a.toml, DIR/site-b.toml and DIR/witness.toml.
    #[arg(long)]
    configs_only: bool,
    /// Delete the demo's files in DIR first (configs, data, logs) for a new cluster.
    #[arg(long)]
    fresh: bool,
    /// Stop after the failover scenario instead of showing the live status.
    #[arg(long)]
    once: bool,
    /// How long to wait for each step of the scenario.
    #[arg(long, value_parser = crate::humantime_duration, default_value = "30s")]
    timeout: Duration,
}

/// Removes what the demo writes in `dir`, and nothing else.
fn remove_demo_files(dir: &std::path::Path) -> Outcome {
    for (name, _) in LocalCluster::NAMES {
        for file in [format!("{name}.toml"), format!("{name}.log")] {
            let p = dir.join(file);
            if p.exists() {
                std::fs::remove_file(&p)
                    .map_err(|e| Failure::runtime(format!("cannot remove {}: {e}", p.display())))?;
            }
        }
        let data = dir.join(format!("{name}-data"));
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .map_err(|e| Failure::runtime(format!("cannot remove {}: {e}", data.display())))?;
        }
    }
    Ok(())
}

pub async fn run(args: DemoArgs) -> Outcome {
    if args.fresh {
        remove_demo_files(&args.dir)?;
    }
    let (mut cluster, reused) = LocalCluster::prepare(&args.dir, "demo")?;
    let configs: Vec<String> = cluster.nodes.iter().map(|n| n.config.display().to_string()).collect();
    if args.configs_only {
        println!(
            "{} the configuration of three nodes:",
            if reused { "Kept" } else { "Wrote" }
        );
        for c in &configs {
            println!("  {c}");
        }
        println!("Start each with: tandem agent --config FILE");
        return Ok(());
    }
    println!(
        "Tandem demo: three nodes on loopback (site-a, site-b and a witness).\n{} in {}; agent logs there too.\nCtrl-C stops the cluster.\n",
        if reused { "Reusing the cluster" } else { "New cluster" },
        cluster.dir.display()
    );
    cluster.start_all()?;
    let outcome = tokio::select! {
        r = scenario(&mut cluster, &args) => r,
        signal = crate::cluster::interrupted() => { println!("\n{signal}"); Ok(()) }
    };
    println!("stopping the agents (SIGTERM)...");
    cluster.stop_all(Duration::from_secs(10)).await;
    println!("stopped. Data, configs and logs are kept in {}.", cluster.dir.display());
    outcome
}

/// Prints what changed between two looks at the cluster.
struct Narrator {
    start: Instant,
    coordinator: Option<String>,
    states: BTreeMap<String, String>,
}

impl Narrator {
    fn new() -> Self {
        Narrator {
            start: Instant::now(),
            coordinator: None,
            states: BTreeMap::new(),
        }
    }

    fn restart_clock(&mut self) {
        self.start = Instant::now();
    }

    fn ms(&self) -> u128 {
        self.start.elapsed().as_millis()
    }

    /// Narrates the view of the first node that answered with a coordinator.
    fn look(&mut self, statuses: &[(String, Option<pb::ClusterStatus>)]) {
        let Some(s) = statuses
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .find(|s| s.coordinator.is_some())
        else {
            return;
        };
        if s.coordinator != self.coordinator {
            if let Some(c) = &s.coordinator {
                println!("  +{:>5} ms  coordinator is now {c} (term {})", self.ms(), s.term);
            }
            self.coordinator = s.coordinator.clone();
        }
        for n in &s.nodes {
            let state = state_name(n.state).to_string();
            let prev = self.states.insert(n.name.clone(), state.clone());
            if prev.as_deref() != Some(state.as_str()) {
                println!(
                    "  +{:>5} ms  {} is {state}{}",
                    self.ms(),
                    n.name,
                    prev.map(|p| format!(" (was {p})")).unwrap_or_default()
                );
            }
        }
    }
}

fn all_up(s: &pb::ClusterStatus, count: usize) -> bool {
    s.nodes.len() == count && s.nodes.iter().all(|n| n.state == pb::NodeState::Up as i32)
}

async fn scenario(cluster: &mut LocalCluster, args: &DemoArgs) -> Outcome {
    let count = cluster.nodes.len();
    let mut narrator = Narrator::new();

    println!("1. Starting the agents; waiting for a coordinator and for every node to be up.");
    let (coordinator, _) = cluster
        .wait_for(args.timeout, "a coordinator with every node up", |st| {
            narrator.look(st);
            let agreed = agreed_coordinator(st)?;
            st.iter()
                .all(|(_, s)| s.as_ref().is_some_and(|s| all_up(s, count)))
                .then_some(agreed)
        })
        .await?;
    println!("  elected {coordinator} after {} ms\n", narrator.ms());
    print_table(cluster).await;

    let victim = coordinator.clone();
    let pid = cluster.node(&victim).and_then(|n| n.pid()).unwrap_or(0);
    println!("2. kill -9 {victim} (pid {pid}), the coordinator, as a crash would.");
    cluster.kill9(&victim).await?;
    narrator.restart_clock();
    let (successor, term) = cluster
        .wait_for(args.timeout, "a new coordinator", |st| {
            narrator.look(st);
            agreed_coordinator(st).filter(|(c, _)| *c != victim)
        })
        .await?;
    println!(
        "  {successor} took over as coordinator (term {term}) {} ms after the kill",
        narrator.ms()
    );
    println!("  waiting until every survivor shows {victim} down (its lease certainly expired)...");
    cluster
        .wait_for(args.timeout, &format!("{victim} shown down"), |st| {
            narrator.look(st);
            st.iter()
                .all(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.nodes
                            .iter()
                            .any(|n| n.name == victim && n.state == pb::NodeState::Down as i32)
                    })
                })
                .then_some(())
        })
        .await?;
    println!(
        "  {victim} is down on every survivor, {} ms after the kill\n",
        narrator.ms()
    );
    print_table(cluster).await;

    println!("3. Restarting {victim}; it rejoins as a follower and catches up.");
    narrator.restart_clock();
    cluster.start(&victim)?;
    let victim_name = victim.clone();
    cluster
        .wait_for(args.timeout, &format!("{victim} back and caught up"), |st| {
            narrator.look(st);
            let coordinator = agreed_coordinator(st)?;
            let mine = st.iter().find(|(n, _)| *n == victim_name)?.1.as_ref()?;
            let theirs = st.iter().find(|(n, _)| *n == coordinator.0)?.1.as_ref()?;
            (all_up(theirs, count) && mine.applied_index >= theirs.commit_index).then_some(())
        })
        .await?;
    println!("  {victim} is back and caught up after {} ms\n", narrator.ms());
    print_table(cluster).await;

    if args.once {
        println!("Scenario complete.");
        return Ok(());
    }
    println!("Live status (Ctrl-C to stop):");
    live(cluster).await
}

async fn print_table(cluster: &LocalCluster) {
    for (_, s) in cluster.statuses(Duration::from_secs(2)).await {
        if let Some(s) = s {
            println!("{}", status_table(&s));
            return;
        }
    }
}

/// Follows the status stream of a running node, moving to another when it stops answering.
async fn live(cluster: &LocalCluster) -> Outcome {
    let clear = std::io::stdout().is_terminal();
    loop {
        for node in cluster.nodes.iter().filter(|n| n.running()) {
            let Ok(mut client) = crate::client::connect_to(&node.address, Duration::from_secs(2)).await else {
                continue;
            };
            let mut req = tonic::Request::new(pb::WatchStatusRequest { max_interval_ms: 0 });
            req.set_timeout(Duration::from_secs(24 * 3600));
            let Ok(stream) = client.watch_status(req).await else {
                continue;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(s)) = stream.message().await {
                if clear {
                    print!("\x1b[2J\x1b[H");
                }
                println!("{}", status_table(&s));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
