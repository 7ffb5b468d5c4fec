//! `tandem demo`: a three-node cluster on loopback that elects a
//! coordinator, loses it to `kill -9`, elects another and takes the old one
//! back; fences web's primary when its agent hangs (SIGSTOP) and moves web;
//! narrated as it happens; then a live status view until Ctrl-C.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use tandem_proto::v1 as pb;

use crate::cluster::{DemoCluster, DemoService, agreed_coordinator};
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
    for file in ["spec.toml", "web.py", "fence-node.sh"] {
        let p = dir.join(file);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Failure::runtime(format!("cannot remove {}: {e}", p.display())))?;
        }
    }
    for (name, _) in DemoCluster::NAMES {
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
    let (mut cluster, reused) = DemoCluster::prepare(&args.dir, "demo")?;
    let service = DemoService::prepare(&cluster.dir)?;
    let configs: Vec<String> = cluster.nodes.iter().map(|n| n.config.display().to_string()).collect();
    if args.configs_only {
        println!(
            "{} the configuration of three nodes:",
            if reused { "Kept" } else { "Wrote" }
        );
        for c in &configs {
            println!("  {c}");
        }
        println!("and the service spec: {}", service.spec.display());
        println!("Start each node with: tandem agent --config FILE");
        println!("then point the CLI at the cluster and apply the spec:");
        println!("export TANDEM_ENDPOINT={}", cluster.nodes[0].address);
        println!("tandem apply -f {}", service.spec.display());
        return Ok(());
    }
    println!(
        "Tandem demo: three nodes on loopback (site-a, site-b and a witness).\n{} in {}; agent logs there too.\nCtrl-C stops the cluster.\n",
        if reused { "Reusing the cluster" } else { "New cluster" },
        cluster.dir.display()
    );
    cluster.start_all()?;
    println!(
        "To use the CLI on it from another shell (tandem status, tandem events --follow):\nexport TANDEM_ENDPOINT={}\n",
        cluster.nodes[0].address
    );
    let outcome = tokio::select! {
        r = scenario(&mut cluster, &service, &args) => r,
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
    groups: BTreeMap<String, String>,
    fencing: BTreeMap<String, String>,
}

impl Narrator {
    fn new() -> Self {
        Narrator {
            start: Instant::now(),
            coordinator: None,
            states: BTreeMap::new(),
            groups: BTreeMap::new(),
            fencing: BTreeMap::new(),
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
        for (node, why) in &s.fencing_needed {
            if self.fencing.get(node) != Some(why) {
                println!("  +{:>5} ms  fencing {node}: {why}", self.ms());
                self.fencing.insert(node.clone(), why.clone());
            }
        }
        let done: Vec<String> = self
            .fencing
            .keys()
            .filter(|n| !s.fencing_needed.contains_key(*n))
            .cloned()
            .collect();
        for node in done {
            println!(
                "  +{:>5} ms  {node} is fenced (its fence device confirmed it off)",
                self.ms()
            );
            self.fencing.remove(&node);
        }
        for g in &s.groups {
            let on = if g.nodes.is_empty() {
                "no node".to_string()
            } else {
                g.nodes.join(", ")
            };
            let why = if g.blocked_reason.is_empty() {
                String::new()
            } else {
                format!(": {}", g.blocked_reason)
            };
            let line = format!("group {} is {} on {on} (epoch {}){why}", g.name, g.state, g.epoch);
            if self.groups.insert(g.name.clone(), line.clone()).as_deref() != Some(line.as_str()) {
                println!("  +{:>5} ms  {line}", self.ms());
            }
        }
    }
}

fn all_up(s: &pb::ClusterStatus, count: usize) -> bool {
    s.nodes.len() == count && s.nodes.iter().all(|n| n.state == pb::NodeState::Up as i32)
}

fn web_running(st: &[(String, Option<pb::ClusterStatus>)]) -> Option<String> {
    let mut primary = None;
    // A node that does not answer (frozen, being fenced) has no say.
    for s in st.iter().filter_map(|(_, s)| s.as_ref()) {
        let g = s.groups.iter().find(|g| g.name == "web")?;
        if g.state != "running" {
            return None;
        }
        match (&primary, &g.primary) {
            (None, Some(p)) => primary = Some(p.clone()),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
    primary
}

/// Asks the web service on `node`'s address and prints the answer.
/// What every node's DNS responder answers for web's name now.
fn dns_answers(cluster: &DemoCluster) -> String {
    let mut parts = Vec::new();
    for n in &cluster.nodes {
        let answer = match tandem_dns::client::lookup(n.dns, "web.demo.tandem.", false, Duration::from_millis(500)) {
            Ok(l) if l.rcode == "NOERROR" && l.addrs.is_empty() => "no address (not running)".to_string(),
            Ok(l) if l.rcode == "NOERROR" => l.addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            Ok(l) => l.rcode,
            Err(_) => "no answer".to_string(),
        };
        parts.push(format!("{}: {answer}", n.name));
    }
    format!("web.demo.tandem. A, asked of each node's DNS: {}", parts.join(" | "))
}

/// Waits (briefly) until every node's DNS answers `node`'s address for web, and prints the answers.
async fn ask_dns(cluster: &DemoCluster, node: &str) {
    let i = DemoCluster::NAMES.iter().position(|(n, _)| *n == node).unwrap_or(0);
    let want = DemoCluster::ip(i).to_string();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut line = dns_answers(cluster);
    while line.matches(want.as_str()).count() < cluster.nodes.iter().filter(|n| n.running()).count()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        line = dns_answers(cluster);
    }
    println!("  {line}");
}

fn ask(service: &DemoService, node: &str) {
    let i = DemoCluster::NAMES.iter().position(|(n, _)| *n == node).unwrap_or(0);
    // The process runs before it listens: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut answer = service.ask(i);
    while answer.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        answer = service.ask(i);
    }
    match answer {
        Some(answer) => println!("  http://{}:{}/ answers: {answer}", DemoCluster::ip(i), service.port),
        None => println!("  http://{}:{}/ does not answer", DemoCluster::ip(i), service.port),
    }
}

/// `kill -9` of a node's agent and, if it runs there, of the demo service.
async fn kill_node(cluster: &mut DemoCluster, node: &str) -> Outcome {
    let pid = cluster.node(node).and_then(|n| n.pid()).unwrap_or(0);
    let service = cluster.service_pid(node);
    cluster.kill9(node).await?;
    if let Some(s) = service {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(s), nix::sys::signal::Signal::SIGKILL);
        println!("  kill -9 {node}: agent (pid {pid}) and its web service (pid {s}), as a crash of the machine would");
    } else {
        println!("  kill -9 {node}: agent (pid {pid})");
    }
    Ok(())
}

/// SIGSTOP of a node's agent, as a hung agent or a frozen cgroup: its
/// service runs on, and only a real fence ends it. Returns the service's pid.
fn freeze_node(cluster: &DemoCluster, node: &str) -> Result<Option<i32>, Failure> {
    let pid = cluster.node(node).and_then(|n| n.pid()).unwrap_or(0);
    let service = cluster.service_pid(node);
    cluster
        .signal(node, nix::sys::signal::Signal::SIGSTOP)
        .map_err(|e| Failure::runtime(format!("cannot freeze {node}: {e}")))?;
    match service {
        Some(s) if alive(s) => {
            println!("  SIGSTOP {node}: agent (pid {pid}) frozen; its web service (pid {s}) still runs")
        }
        _ => println!("  SIGSTOP {node}: agent (pid {pid}) frozen"),
    }
    Ok(service)
}

/// A process that runs: there, and neither a zombie nor dead.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| !rest.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

async fn wait_back(cluster: &mut DemoCluster, node: &str, narrator: &mut Narrator, args: &DemoArgs) -> Outcome {
    let count = cluster.nodes.len();
    println!("  restarting {node}; it rejoins and catches up.");
    narrator.restart_clock();
    cluster.start(node)?;
    cluster
        .wait_for(args.timeout, &format!("{node} back and caught up"), |st| {
            narrator.look(st);
            let coordinator = agreed_coordinator(st)?;
            let mine = st.iter().find(|(n, _)| n == node)?.1.as_ref()?;
            let theirs = st.iter().find(|(n, _)| *n == coordinator.0)?.1.as_ref()?;
            (all_up(theirs, count) && mine.applied_index >= theirs.commit_index).then_some(())
        })
        .await?;
    println!("  {node} is back and caught up after {} ms\n", narrator.ms());
    Ok(())
}

/// Step 5: a planned switchover back, phase by phase, then the timeline of
/// every move the demo made.
async fn switchover(cluster: &DemoCluster, service: &DemoService, primary: &str, args: &DemoArgs) -> Outcome {
    let target = if primary == "site-a" { "site-b" } else { "site-a" };
    println!("5. Planned switchover of web from {primary} to {target}: `tandem switchover web --to {target}`.");
    let address = cluster.node("witness").map(|n| n.address.clone()).unwrap_or_default();
    let mut client = crate::client::connect_to(&address, args.timeout, &Default::default()).await?;
    let mut stream = client
        .switchover(pb::MoveRequest {
            group: "web".into(),
            to: target.into(),
            force: false,
            actor: crate::client::actor(),
            timeout_ms: u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX),
        })
        .await
        .map_err(|e| crate::client::failed("switchover", e))?
        .into_inner();
    while let Some(p) = stream
        .message()
        .await
        .map_err(|e| crate::client::failed("switchover", e))?
    {
        println!("  {:>6} ms  {:<10} {}", p.elapsed_ms, p.phase, p.message);
        if p.done {
            if !p.ok {
                return Err(Failure::runtime(format!(
                    "the switchover did not complete: {}",
                    p.message
                )));
            }
            break;
        }
    }
    ask(service, target);
    ask_dns(cluster, target).await;
    println!("\nThe timeline of every move of web (`tandem history web`):");
    let history = client
        .get_history(pb::GetHistoryRequest {
            group: "web".into(),
            limit: 10,
        })
        .await
        .map_err(|e| crate::client::failed("history", e))?
        .into_inner();
    for t in &history.transitions {
        for line in crate::output::transition_timeline(t).lines() {
            println!("  {line}");
        }
    }
    println!();
    Ok(())
}

async fn scenario(cluster: &mut DemoCluster, service: &DemoService, args: &DemoArgs) -> Outcome {
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
    println!("  elected {coordinator} after {} ms", narrator.ms());
    for n in &cluster.nodes {
        if let Some(http) = n.http {
            println!(
                "  {}: live status page http://{http}/ (also /healthz, /primary/web, /metrics)",
                n.name
            );
        }
    }
    println!();

    println!(
        "2. Applying {}: group web, preferring site-a, failing over to site-b.",
        service.spec.display()
    );
    let spec = std::fs::read_to_string(&service.spec)
        .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", service.spec.display())))?;
    let address = cluster
        .node(&coordinator)
        .map(|n| n.address.clone())
        .unwrap_or_default();
    let mut client = crate::client::connect_to(&address, args.timeout, &Default::default()).await?;
    let reply = client
        .apply_spec(pb::ApplySpecRequest {
            spec,
            file: service.spec.display().to_string(),
            dry_run: false,
            actor: crate::client::actor(),
        })
        .await
        .map_err(|e| crate::client::failed("apply", e))?
        .into_inner();
    for c in &reply.changes {
        println!("  {c}");
    }
    narrator.restart_clock();
    let mut primary = cluster
        .wait_for(args.timeout, "web running", |st| {
            narrator.look(st);
            web_running(st)
        })
        .await?;
    println!("  web runs on {primary} after {} ms", narrator.ms());
    ask(service, &primary);
    ask_dns(cluster, &primary).await;
    println!();
    print_table(cluster).await;

    println!("3. kill -9 of the coordinator, {coordinator}.");
    let victim = coordinator.clone();
    kill_node(cluster, &victim).await?;
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
    if primary == victim {
        primary = wait_moved(cluster, &mut narrator, &victim, args).await?;
        ask(service, &primary);
        ask_dns(cluster, &primary).await;
    }
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
    wait_back(cluster, &victim, &mut narrator, args).await?;

    if primary != victim {
        println!("4. web's primary, {primary}, hangs: its agent is frozen (SIGSTOP) while its service runs on.");
        let old = primary.clone();
        let pid = freeze_node(cluster, &old)?;
        narrator.restart_clock();
        primary = wait_moved(cluster, &mut narrator, &old, args).await?;
        let gone = pid.is_none_or(|p| !alive(p));
        println!(
            "  {old}'s service {}",
            if gone {
                "is gone: its fence device killed it with the frozen agent, and said off only then"
            } else {
                "STILL RUNS: the fence was not real"
            }
        );
        ask(service, &primary);
        ask_dns(cluster, &primary).await;
        println!();
        // Reaps the fenced agent's process before it starts again.
        cluster.kill9(&old).await?;
        wait_back(cluster, &old, &mut narrator, args).await?;
    }
    println!("web stays on {primary}: fail_back = false, so a returning node does not take it back.\n");
    print_table(cluster).await;
    switchover(cluster, service, &primary, args).await?;

    if args.once {
        println!("Scenario complete.");
        return Ok(());
    }
    println!("Live status (Ctrl-C to stop):");
    live(cluster).await
}

/// Waits until web runs on a node other than `old` and says how long it took.
async fn wait_moved(
    cluster: &DemoCluster,
    narrator: &mut Narrator,
    old: &str,
    args: &DemoArgs,
) -> Result<String, Failure> {
    let primary = cluster
        .wait_for(args.timeout, "web running elsewhere", |st| {
            narrator.look(st);
            web_running(st).filter(|p| p != old)
        })
        .await?;
    println!(
        "  web runs on {primary} {} ms after the fault (lease expiry, fencing, then a new epoch)",
        narrator.ms()
    );
    Ok(primary)
}

async fn print_table(cluster: &DemoCluster) {
    for (_, s) in cluster.statuses(Duration::from_secs(2)).await {
        if let Some(s) = s {
            println!("{}", status_table(&s));
            return;
        }
    }
}

/// Follows the status stream of a running node, moving to another when it stops answering.
async fn live(cluster: &DemoCluster) -> Outcome {
    let clear = std::io::stdout().is_terminal();
    loop {
        for node in cluster.nodes.iter().filter(|n| n.running()) {
            let Ok(mut client) =
                crate::client::connect_to(&node.address, Duration::from_secs(2), &Default::default()).await
            else {
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
                println!("{}", dns_answers(cluster));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
