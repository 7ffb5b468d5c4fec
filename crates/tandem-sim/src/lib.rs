//! Deterministic simulation of a whole Tandem cluster (issue 13, first
//! slice).
//!
//! Three complete nodes (two members and a witness: openraft, the state
//! machine, the node runtime with its leases, heartbeats and relays, the
//! coordinator's placement, the executor, the zone) run in one process on
//! one current-thread tokio runtime with paused time and a seeded
//! scheduler. Only what cannot run inside a simulation is replaced, each at
//! its narrowest seam: the network to other nodes
//! ([`tandem_raft::network::PeerTransport`], [`net`]), the disk (redb's
//! in-memory backend through `Store::with_backend`, kept across a crash),
//! resource agents ([`tandem_agents::SimulatedAgents`], [`agents`]), and
//! time (each node's [`Clock::simulated`] runs at its own rate within the
//! drift margin). One seed decides everything: the fault schedule, every
//! message's delay and fate, every agent action, openraft's random draws
//! and tokio's `select!` order. [`run_seed`] returns the trace's hash (the
//! same seed gives the same hash) and the first broken invariant, checked
//! from what the simulated world really did ([`world`]).

pub mod agents;
pub mod net;
pub mod world;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use tandem_core::NodeRole;
use tandem_core::config::NodeConfig;
use tandem_core::operator::{MoveAsk, check_move};
use tandem_core::spec::Spec;
use tandem_core::state::{Command, TransitionKind};
use tandem_node::clock::Clock;
use tandem_node::start::Simulation;
use tandem_node::{Node, NodeContext, NodeParams};
use tandem_raft::network::Inbound;
use tandem_raft::runtime::SeededRuntime;
use tandem_raft::store::{Identity, Store};

use crate::agents::{AgentFaults, SimAgents};
use crate::net::{NetFaults, SimTransport};
use crate::world::{Trace, Violation, World};

/// The simulator's time step: faults are applied and invariants checked
/// after every step.
pub const STEP: Duration = Duration::from_millis(10);

/// The kinds of fault a seed may draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// One member cut off from both others, both directions.
    Partition,
    /// One direction of one link.
    OneWay,
    /// One link, both directions.
    Link,
    /// The witness cut off from both members.
    WitnessAlone,
    /// Message delay, loss, duplication and so reordering, all run long.
    Chaos,
    /// A machine stops dead and boots again later.
    Crash,
    /// Slow, failing and hanging starts and stops. A failed stop leaves
    /// the node needing fencing: once faults heal, the operator powers it
    /// off, confirms it off (as `tandem fence confirm`) and boots it again.
    Agents,
    /// An operator's switchover at a random moment.
    Switchover,
    /// An operator's failover at a random moment.
    Failover,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Link,
        FaultKind::WitnessAlone,
        FaultKind::Chaos,
        FaultKind::Crash,
        FaultKind::Agents,
        FaultKind::Switchover,
        FaultKind::Failover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Link => "link",
            FaultKind::WitnessAlone => "witness-alone",
            FaultKind::Chaos => "chaos",
            FaultKind::Crash => "crash",
            FaultKind::Agents => "agents",
            FaultKind::Switchover => "switchover",
            FaultKind::Failover => "failover",
        }
    }

    /// A comma-separated list of names (`all` for every kind).
    pub fn parse_list(text: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                kinds.extend(FaultKind::ALL);
                continue;
            }
            match FaultKind::ALL.iter().find(|k| k.name() == word) {
                Some(k) => kinds.push(*k),
                None => {
                    let known: Vec<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                    return Err(format!(
                        "unknown fault kind {word:?} (known: all, {})",
                        known.join(", ")
                    ));
                }
            }
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }
}

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Simulated time in all.
    pub duration: Duration,
    /// Faults happen before this; then everything heals and the run must
    /// converge by `duration` (the liveness bound is the difference).
    pub faults_until: Duration,
    pub faults: Vec<FaultKind>,
    /// Turns on the mutation that cuts a new coordinator's wait for its
    /// predecessor's leases (`tandem_core::mutations`).
    pub mutation: bool,
    /// A run that has not finished after this much wall time fails (a task
    /// that spins without letting paused time advance).
    pub wall_limit: Duration,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            duration: Duration::from_secs(60),
            faults_until: Duration::from_secs(40),
            faults: FaultKind::ALL.to_vec(),
            mutation: false,
            wall_limit: Duration::from_secs(300),
        }
    }
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedOutcome {
    pub seed: u64,
    pub hash: u64,
    pub violation: Option<Violation>,
    /// The trace's last lines (for a violation's report).
    pub tail: Vec<String>,
    pub simulated_ms: u64,
    pub starts: u64,
    /// Starts on another node than the group's previous one.
    pub moves: u64,
    /// The lease guard's kills.
    pub kills: u64,
    pub messages: u64,
    /// Fault episodes applied, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    pub operator_ok: u64,
    pub operator_refused: u64,
    /// Nodes the operator powered off and confirmed fenced (after a failed stop).
    pub repairs: u64,
}

impl fmt::Display for SeedOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k}={n}")).collect();
        write!(
            f,
            "seed {} hash {:016x}: {} simulated s, {} starts, {} moves, {} lease-guard kills, {} messages, operator {} ok / {} refused, {} fenced by the operator, faults [{}]",
            self.seed,
            self.hash,
            self.simulated_ms / 1000,
            self.starts,
            self.moves,
            self.kills,
            self.messages,
            self.operator_ok,
            self.operator_refused,
            self.repairs,
            faults.join(" ")
        )
    }
}

/// One node's place in the simulation.
pub struct Slot {
    pub name: String,
    pub address: String,
    pub incarnation: u64,
    pub alive: bool,
    pub ctx: Option<NodeContext>,
    pub inbound: Option<Arc<Inbound>>,
}

/// Everything the simulated network, agents and driver share. One thread
/// runs it all; the lock is never held across an await.
pub struct Shared {
    inner: Mutex<Inner>,
}

pub struct Inner {
    pub rng: StdRng,
    start: tokio::time::Instant,
    pub nodes: Vec<Slot>,
    pub net: NetFaults,
    pub agent_faults: AgentFaults,
    pub world: World,
    pub trace: Trace,
    pub messages: u64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Whether this incarnation of `node` is the one running.
    pub fn alive(&self, node: usize, incarnation: u64) -> bool {
        let slot = &self.nodes[node];
        slot.alive && slot.incarnation == incarnation
    }

    /// Simulated milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(tokio::time::Instant::now().duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
}

/// A disk that outlives its node: the same in-memory bytes are opened
/// again after a crash (every commit is durable at once, so a crash keeps
/// exactly what was committed).
#[derive(Debug, Clone)]
struct Disk(Arc<InMemoryBackend>);

impl StorageBackend for Disk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

const NAMES: [&str; 3] = ["a", "b", "w"];
const GROUPS: [&str; 2] = ["web", "db"];

fn node_config(i: usize, data_dir: &std::path::Path) -> Result<NodeConfig, String> {
    let role = |i: usize| if NAMES[i] == "w" { "witness" } else { "member" };
    let mut text = format!(
        "[cluster]\nname = \"sim\"\n\n[node]\nname = \"{}\"\nrole = \"{}\"\ndata_dir = \"{}\"\n\
         grpc_listen = \"10.0.0.{}:7400\"\ndns_listen = \"10.0.0.{}:53\"\n",
        NAMES[i],
        role(i),
        data_dir.display(),
        i + 1,
        i + 1
    );
    for (j, name) in NAMES.iter().enumerate() {
        text.push_str(&format!(
            "\n[[members]]\nname = \"{name}\"\naddress = \"10.0.0.{}:7400\"\nrole = \"{}\"\n",
            j + 1,
            role(j)
        ));
    }
    NodeConfig::parse(&text, &format!("{}.toml", NAMES[i])).map_err(|e| e.to_string())
}

fn spec_text() -> String {
    let mut text = String::new();
    for g in GROUPS {
        text.push_str(&format!(
            "[[groups]]\nname = \"{g}\"\n[[groups.resources]]\nname = \"app\"\nagent = \"exec\"\n\
             command = \"/usr/bin/sim-{g}\"\nmonitor_interval = \"500ms\"\n\
             timeouts = {{ start = \"3s\", stop = \"3s\", monitor = \"1s\" }}\n\n"
        ));
    }
    text
}

/// A fault episode: from `at` until `until` (simulated ms).
#[derive(Debug, Clone)]
struct Episode {
    kind: FaultKind,
    at: u64,
    until: u64,
    /// The node concerned (cut off, crashed, the group's index for operators).
    x: usize,
    /// The other end of a link.
    y: usize,
    applied: bool,
    ended: bool,
}

/// Draws the fault schedule from the seed alone (before anything runs).
fn schedule(rng: &mut StdRng, cfg: &SimConfig) -> Vec<Episode> {
    let episodic: Vec<FaultKind> = cfg
        .faults
        .iter()
        .copied()
        .filter(|k| !matches!(k, FaultKind::Chaos | FaultKind::Agents))
        .collect();
    let until = u64::try_from(cfg.faults_until.as_millis()).unwrap_or(u64::MAX);
    let mut episodes = Vec::new();
    if episodic.is_empty() || until <= 3_000 {
        return episodes;
    }
    let count = rng.gen_range(6..=14);
    for _ in 0..count {
        let kind = episodic[rng.gen_range(0..episodic.len())];
        let at = rng.gen_range(3_000..until) / 10 * 10;
        let length = rng.gen_range(300..8_000) / 10 * 10;
        let x = rng.gen_range(0..3);
        let y = (x + rng.gen_range(1..3)) % 3;
        let (x, y) = match kind {
            FaultKind::Partition => (rng.gen_range(0..2), y),
            FaultKind::WitnessAlone => (2, y),
            FaultKind::Switchover | FaultKind::Failover => (rng.gen_range(0..GROUPS.len()), rng.gen_range(0..3)),
            _ => (x, y),
        };
        episodes.push(Episode {
            kind,
            at,
            until: (at + length).min(until),
            x,
            y,
            applied: false,
            ended: false,
        });
    }
    episodes.sort_by_key(|e| e.at);
    episodes
}

/// The driver's own state beside what it shares.
struct Driver {
    cfg: SimConfig,
    shared: Arc<Shared>,
    configs: Vec<NodeConfig>,
    disks: Vec<Arc<InMemoryBackend>>,
    rates: Vec<u64>,
    running: Vec<Option<Node>>,
    faults: BTreeMap<&'static str, u64>,
    operator_ok: Arc<std::sync::atomic::AtomicU64>,
    operator_refused: Arc<std::sync::atomic::AtomicU64>,
    /// Nodes the operator powered off to confirm them fenced.
    repairing: std::collections::BTreeSet<usize>,
    repairs: u64,
    _dir: tempfile::TempDir,
}

fn event(shared: &Shared, line: String) {
    let mut s = shared.lock();
    let now = s.now_ms();
    s.trace.event(now, line);
}

impl Driver {
    async fn start_node(&mut self, i: usize) -> Result<(), String> {
        let incarnation = {
            let mut s = self.shared.lock();
            let slot = &mut s.nodes[i];
            slot.incarnation += 1;
            slot.alive = true;
            slot.incarnation
        };
        let config = self.configs[i].clone();
        let identity = Identity {
            cluster: config.cluster.clone(),
            node_name: config.node.name.clone(),
            node_id: config.node_id,
        };
        let store = Store::with_backend(Disk(self.disks[i].clone()), &format!("sim:{}", NAMES[i]), &identity)
            .map_err(|e| e.to_string())?;
        let now = self.shared.lock().now_ms();
        let clock = Clock::simulated(
            self.rates[i],
            1_700_000_000_000 + now,
            format!("{}-boot-{incarnation}", NAMES[i]),
        );
        let params = NodeParams {
            config,
            client_tls: None,
            ocf_root: "/nonexistent/ocf".into(),
            clock,
            jitter_seed: Some(self.cfg.seed ^ i as u64),
            simulation: Some(Simulation {
                store,
                transport: Arc::new(SimTransport {
                    shared: self.shared.clone(),
                    from: i,
                    incarnation,
                }),
                agents: Arc::new(SimAgents {
                    shared: self.shared.clone(),
                    node: i,
                    incarnation,
                }),
            }),
        };
        let raft_seed = self.cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((i as u64) << 32) ^ incarnation;
        let started = SeededRuntime::scope(raft_seed, async move { Node::open(params)?.start().await })
            .await
            .map_err(|e| format!("{} did not start: {e}", NAMES[i]))?;
        let node = started.run();
        {
            let mut s = self.shared.lock();
            let slot = &mut s.nodes[i];
            slot.ctx = Some(node.context().clone());
            slot.inbound = Some(Arc::new(node.context().raft.inbound()));
            let now = s.now_ms();
            s.trace
                .event(now, format!("{}: boots (incarnation {incarnation})", NAMES[i]));
        }
        self.running[i] = Some(node);
        Ok(())
    }

    async fn crash_node(&mut self, i: usize) {
        {
            let mut s = self.shared.lock();
            let slot = &mut s.nodes[i];
            slot.alive = false;
            slot.ctx = None;
            slot.inbound = None;
            s.world.crash(i);
            let now = s.now_ms();
            s.trace
                .event(now, format!("{}: crashes (its services end with it)", NAMES[i]));
        }
        if let Some(node) = self.running[i].take()
            && tokio::time::timeout(Duration::from_secs(5), node.crash())
                .await
                .is_err()
        {
            event(
                &self.shared,
                format!("{}: Raft did not stop within 5 s of the crash", NAMES[i]),
            );
        }
    }

    fn coordinator(&self) -> Option<NodeContext> {
        let s = self.shared.lock();
        s.nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.ctx.clone())
            .find(|c| c.is_coordinator())
    }

    /// Commits the spec through the coordinator, retrying until one takes it.
    async fn apply_spec(&mut self) -> Result<(), String> {
        let text = spec_text();
        for _ in 0..400 {
            if let Some(ctx) = self.coordinator() {
                let members: Vec<_> = ctx.members().into_iter().map(|(_, n)| n).collect();
                let spec = Spec::parse(&text, "sim-spec.toml", &members).map_err(|e| e.to_string())?;
                let command = Command::ApplySpec {
                    spec,
                    source: text.clone(),
                    expected_version: 0,
                    summary: Vec::new(),
                    actor: "sim".into(),
                    at_unix_ms: ctx.clock.unix_ms(),
                };
                if ctx.raft.write(command).await.is_ok() {
                    event(&self.shared, "the spec is committed".into());
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("no coordinator took the spec within 20 s".into())
    }

    /// An operator's switchover or failover, checked and committed as the
    /// API does it, in a task of its own.
    fn operator(&mut self, kind: FaultKind, group: usize, to: usize) {
        let Some(ctx) = self.coordinator() else {
            event(&self.shared, format!("operator: no coordinator for a {}", kind.name()));
            self.operator_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        let group = GROUPS[group].to_string();
        let transition = if kind == FaultKind::Failover {
            TransitionKind::Failover
        } else {
            TransitionKind::Switchover
        };
        // Sometimes a target, sometimes the best candidate.
        let to = (to < 2).then(|| NAMES[to].to_string());
        let shared = self.shared.clone();
        let (ok, refused) = (self.operator_ok.clone(), self.operator_refused.clone());
        tokio::spawn(async move {
            let result = operator_move(&ctx, &group, transition, to.as_deref()).await;
            let line = match &result {
                Ok(line) => {
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    line.clone()
                }
                Err(why) => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    format!("operator: {} of {group} refused: {why}", transition.as_str())
                }
            };
            event(&shared, line);
        });
    }

    /// Starts and ends fault episodes due at `now`.
    async fn apply_faults(&mut self, episodes: &mut [Episode], now: u64) {
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for (k, e) in episodes.iter_mut().enumerate() {
            if !e.applied && e.at <= now {
                e.applied = true;
                starts.push(k);
            }
            if e.applied && !e.ended && e.until <= now {
                e.ended = true;
                ends.push(k);
            }
        }
        for k in starts {
            let e = episodes[k].clone();
            *self.faults.entry(e.kind.name()).or_default() += 1;
            let (x, y) = (NAMES[e.x], NAMES[e.y]);
            match e.kind {
                FaultKind::Crash => {
                    if self.running[e.x].is_some() {
                        self.crash_node(e.x).await;
                    }
                }
                FaultKind::Switchover | FaultKind::Failover => self.operator(e.kind, e.x, e.y),
                FaultKind::Partition | FaultKind::WitnessAlone => event(
                    &self.shared,
                    format!("fault: {x} cut off from both others until {} ms", e.until),
                ),
                FaultKind::OneWay => event(&self.shared, format!("fault: {x} -> {y} dropped until {} ms", e.until)),
                FaultKind::Link => event(&self.shared, format!("fault: {x} <-> {y} cut until {} ms", e.until)),
                FaultKind::Chaos | FaultKind::Agents => {}
            }
        }
        for k in ends {
            let e = episodes[k].clone();
            if e.kind == FaultKind::Crash && self.running[e.x].is_none() {
                if let Err(why) = self.start_node(e.x).await {
                    event(&self.shared, format!("restart failed: {why}"));
                }
            } else if matches!(
                e.kind,
                FaultKind::Partition | FaultKind::WitnessAlone | FaultKind::OneWay | FaultKind::Link
            ) {
                event(&self.shared, format!("heals: {} of {}", e.kind.name(), NAMES[e.x]));
            }
        }
        // The links blocked now: the union of the partitions under way.
        let mut blocked = std::collections::BTreeSet::new();
        for e in episodes.iter().filter(|e| e.applied && !e.ended) {
            match e.kind {
                FaultKind::Partition | FaultKind::WitnessAlone => {
                    for o in (0..3).filter(|o| *o != e.x) {
                        blocked.insert((e.x, o));
                        blocked.insert((o, e.x));
                    }
                }
                FaultKind::OneWay => {
                    blocked.insert((e.x, e.y));
                }
                FaultKind::Link => {
                    blocked.insert((e.x, e.y));
                    blocked.insert((e.y, e.x));
                }
                _ => {}
            }
        }
        self.shared.lock().net.blocked = blocked;
    }

    /// Once faults healed, what an operator does for a node that needs
    /// fencing and has no fence device: powers it off, confirms it off once
    /// the coordinator accepts that (its lease certainly expired, checked
    /// as `tandem fence confirm` checks it), and boots it again.
    async fn repair(&mut self) {
        let Some(ctx) = self.coordinator() else { return };
        // First boot again what was confirmed fenced.
        let fenced: Vec<usize> = {
            let state = ctx.state.borrow();
            self.repairing
                .iter()
                .copied()
                .filter(|i| !state.cluster.fencing_needed.contains_key(NAMES[*i]))
                .collect()
        };
        for i in fenced {
            self.repairing.remove(&i);
            if self.running[i].is_none()
                && let Err(why) = self.start_node(i).await
            {
                event(&self.shared, format!("restart failed: {why}"));
            }
        }
        let needing: Vec<usize> = {
            let state = ctx.state.borrow();
            state
                .cluster
                .fencing_needed
                .keys()
                .filter_map(|n| NAMES.iter().position(|x| x == n))
                .collect()
        };
        for i in needing {
            if !self.repairing.contains(&i) {
                // One machine at a time: powering off a second one too
                // would leave no majority to confirm the first.
                if !self.repairing.is_empty() {
                    continue;
                }
                self.repairing.insert(i);
                self.repairs += 1;
                event(
                    &self.shared,
                    format!("operator: powers {} off to confirm it fenced", NAMES[i]),
                );
                if self.running[i].is_some() {
                    self.crash_node(i).await;
                }
                // The coordinator may have been the one: look again next time.
                return;
            }
            let id = self.configs[i].node_id;
            let now = ctx.clock.now();
            let (view, _) = ctx.liveness.view(now, &ctx.member_ids());
            let seen = view.iter().find(|e| e.id == id);
            let allowed = tandem_core::operator::check_fence_confirm(
                NAMES[i],
                ctx.liveness.lease_certainly_expired(ctx.raft.term(), id, now),
                seen.map_or(tandem_core::lease::NodeState::Suspect, |e| e.state),
                seen.and_then(|e| e.age),
            );
            if allowed.is_ok() {
                let command = Command::Fenced {
                    node: NAMES[i].to_string(),
                    how: "confirmed off by the sim operator".into(),
                    actor: "sim operator".into(),
                    at_unix_ms: ctx.clock.unix_ms(),
                };
                if tandem_node::write::propose(&ctx, command).await.is_ok() {
                    event(&self.shared, format!("operator: {} confirmed fenced", NAMES[i]));
                }
            }
        }
    }

    /// What the cluster believes, traced whenever it changes.
    fn observe(&self, last: &mut String) {
        let mut line = String::new();
        let s = self.shared.lock();
        for slot in &s.nodes {
            match &slot.ctx {
                Some(ctx) if slot.alive => {
                    let role = if ctx.is_coordinator() { "C" } else { "f" };
                    line.push_str(&format!("{}:{role}{} ", slot.name, ctx.raft.term()));
                }
                _ => line.push_str(&format!("{}:down ", slot.name)),
            }
        }
        if let Some(ctx) = s
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.ctx.as_ref())
            .find(|c| c.is_coordinator())
        {
            let state = ctx.state.borrow();
            for (name, g) in &state.cluster.groups {
                let on: Vec<&str> = g.assigned.iter().map(String::as_str).collect();
                line.push_str(&format!("| {name}@{} on [{}] ", g.epoch, on.join(",")));
            }
        }
        drop(s);
        if *last != line {
            event(&self.shared, format!("view: {line}"));
            *last = line;
        }
    }
}

async fn operator_move(
    ctx: &NodeContext,
    group: &str,
    kind: TransitionKind,
    to: Option<&str>,
) -> Result<String, String> {
    let facts = tandem_node::manager::node_facts(ctx);
    let state = ctx.state.borrow().clone();
    let plan = check_move(
        &state.cluster,
        &facts,
        |n| ctx.raft.view().find(n).map(|(_, i)| i.role),
        MoveAsk {
            group,
            to,
            kind,
            force: false,
        },
        ctx.clock.unix_ms(),
    )
    .map_err(|r| r.to_string())?;
    let now = ctx.clock.unix_ms();
    let (_, applied) = tandem_node::write::propose(
        ctx,
        Command::RequestMove {
            group: group.to_string(),
            kind,
            from: plan.from.clone(),
            to: plan.to.clone(),
            force: false,
            deadline_unix_ms: now + 30_000,
            actor: "sim operator".into(),
            at_unix_ms: now,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    match applied.rejected {
        Some(why) => Err(why),
        None => Ok(format!(
            "operator: {} of {group} to {} committed",
            kind.as_str(),
            plan.to
        )),
    }
}

async fn drive(cfg: SimConfig) -> SeedOutcome {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut episodes = schedule(&mut rng, &cfg);
    let chaos = cfg.faults.contains(&FaultKind::Chaos);
    let net = NetFaults {
        blocked: Default::default(),
        loss_pm: if chaos { rng.gen_range(0..100) } else { 0 },
        dup_pm: if chaos { rng.gen_range(0..50) } else { 0 },
        max_delay_ms: if chaos { rng.gen_range(2..40) } else { 2 },
    };
    let agent_faults = if cfg.faults.contains(&FaultKind::Agents) {
        AgentFaults {
            slow_start_pm: rng.gen_range(0..300),
            failing_start_pm: rng.gen_range(0..100),
            hanging_start_pm: rng.gen_range(0..50),
            slow_stop_pm: rng.gen_range(0..300),
            failing_stop_pm: rng.gen_range(0..150),
            hanging_stop_pm: rng.gen_range(0..150),
        }
    } else {
        AgentFaults::default()
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return failed_outcome(&cfg, "setup", format!("no temporary directory: {e}")),
    };
    let mut configs = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let data_dir = dir.path().join(name);
        if let Err(e) = std::fs::create_dir_all(&data_dir) {
            return failed_outcome(&cfg, "setup", format!("cannot create {}: {e}", data_dir.display()));
        }
        match node_config(i, &data_dir) {
            Ok(c) => configs.push(c),
            Err(e) => return failed_outcome(&cfg, "setup", e),
        }
    }
    // Clock rates: each at most 9/10 of the drift margin (per lease) faster
    // than true time, so any two differ by less than the margin.
    let timing = configs[0].timing;
    let max_extra = (timing.clock_drift_margin.as_micros() * 900_000 / timing.lease.as_micros().max(1)) as u64;
    let rates: Vec<u64> = (0..3).map(|_| 1_000_000 + rng.gen_range(0..=max_extra)).collect();
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            rng: StdRng::seed_from_u64(cfg.seed ^ 0x5eed),
            start: tokio::time::Instant::now(),
            nodes: (0..3)
                .map(|i| Slot {
                    name: NAMES[i].into(),
                    address: format!("10.0.0.{}:7400", i + 1),
                    incarnation: 0,
                    alive: false,
                    ctx: None,
                    inbound: None,
                })
                .collect(),
            net,
            agent_faults,
            world: World::default(),
            trace: Trace::default(),
            messages: 0,
        }),
    });
    event(
        &shared,
        format!(
            "seed {}: clock rates {:?} ppm, {} episodes, net {:?}",
            cfg.seed,
            rates,
            episodes.len(),
            shared.lock().net
        ),
    );
    let mut d = Driver {
        cfg: cfg.clone(),
        shared: shared.clone(),
        configs,
        disks: (0..3).map(|_| Arc::new(InMemoryBackend::new())).collect(),
        rates,
        running: (0..3).map(|_| None).collect(),
        faults: BTreeMap::new(),
        operator_ok: Arc::default(),
        operator_refused: Arc::default(),
        repairing: Default::default(),
        repairs: 0,
        _dir: dir,
    };
    let result = run(&mut d, &mut episodes).await;
    // Everything stops dead; the runtime drops the rest.
    for i in 0..3 {
        if d.running[i].is_some() {
            d.shared.lock().nodes[i].alive = false;
            if let Some(node) = d.running[i].take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), node.crash()).await;
            }
        }
    }
    let s = shared.lock();
    let violation = match result {
        Err(v) => Some(v),
        Ok(()) => s.world.violation.clone(),
    };
    SeedOutcome {
        seed: cfg.seed,
        hash: s.trace.hash(),
        violation,
        tail: s.trace.tail(),
        simulated_ms: s.now_ms(),
        starts: s.world.starts,
        moves: s.world.moves,
        kills: s.world.kills,
        messages: s.messages,
        faults: d.faults.clone(),
        operator_ok: d.operator_ok.load(std::sync::atomic::Ordering::Relaxed),
        operator_refused: d.operator_refused.load(std::sync::atomic::Ordering::Relaxed),
        repairs: d.repairs,
    }
}

fn failed_outcome(cfg: &SimConfig, invariant: &'static str, detail: String) -> SeedOutcome {
    SeedOutcome {
        seed: cfg.seed,
        hash: 0,
        violation: Some(Violation {
            invariant,
            at_ms: 0,
            detail,
        }),
        tail: Vec::new(),
        simulated_ms: 0,
        starts: 0,
        moves: 0,
        kills: 0,
        messages: 0,
        faults: BTreeMap::new(),
        operator_ok: 0,
        operator_refused: 0,
        repairs: 0,
    }
}

async fn run(d: &mut Driver, episodes: &mut [Episode]) -> Result<(), Violation> {
    let setup = |detail: String| Violation {
        invariant: "setup",
        at_ms: 0,
        detail,
    };
    for i in 0..3 {
        d.start_node(i).await.map_err(setup)?;
    }
    d.apply_spec().await.map_err(setup)?;
    let start = d.shared.lock().start;
    let duration = u64::try_from(d.cfg.duration.as_millis()).unwrap_or(u64::MAX);
    let faults_until = u64::try_from(d.cfg.faults_until.as_millis()).unwrap_or(u64::MAX);
    let step_ms = u64::try_from(STEP.as_millis()).unwrap_or(10);
    let mut healed = false;
    let mut last_view = String::new();
    let mut now = d.shared.lock().now_ms() / step_ms * step_ms;
    while now < duration {
        now += step_ms;
        tokio::time::sleep_until(start + Duration::from_millis(now)).await;
        if !healed && now >= faults_until {
            healed = true;
            for e in episodes.iter_mut().filter(|e| !e.ended) {
                e.until = e.until.min(now);
                e.at = e.at.min(now);
            }
            let mut s = d.shared.lock();
            s.net = NetFaults {
                max_delay_ms: 2,
                ..NetFaults::default()
            };
            s.agent_faults = AgentFaults::default();
            s.trace.event(now, "every fault heals".into());
        }
        d.apply_faults(episodes, now).await;
        if healed && now.is_multiple_of(100) {
            d.repair().await;
        }
        d.observe(&mut last_view);
        let mut s = d.shared.lock();
        let names = s.names();
        s.world.write_to_store(&names, now);
        if let Some(v) = s.world.violation.clone() {
            return Err(v);
        }
    }
    // Liveness: every group runs on exactly one member.
    let s = d.shared.lock();
    let running = s.world.running_on();
    for g in GROUPS {
        let on: Vec<&str> = running
            .get(g)
            .map(|v| v.iter().map(|n| NAMES[*n]).collect())
            .unwrap_or_default();
        let members_only = on.iter().all(|n| *n != "w");
        if on.len() != 1 || !members_only {
            return Err(Violation {
                invariant: "convergence",
                at_ms: now,
                detail: format!(
                    "{g} runs on [{}] {} s after every fault healed (bound {} s); the last view: {last_view}",
                    on.join(", "),
                    (duration - faults_until) / 1000,
                    (duration - faults_until) / 1000
                ),
            });
        }
    }
    Ok(())
}

/// Runs one seed on a runtime of its own, in a thread of its own: a run that
/// does not finish within `cfg.wall_limit` of wall time (a task that spins
/// without letting paused time advance) is reported as such instead of
/// hanging the caller (its thread is left behind).
pub fn run_seed(cfg: &SimConfig) -> SeedOutcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let inner = cfg.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("sim-seed-{}", cfg.seed))
        .stack_size(16 * 1024 * 1024)
        .spawn(move || {
            let _ = tx.send(run_seed_here(inner));
        });
    if let Err(e) = spawned {
        return failed_outcome(cfg, "setup", format!("cannot start a thread: {e}"));
    }
    match rx.recv_timeout(cfg.wall_limit) {
        Ok(outcome) => outcome,
        Err(_) => failed_outcome(
            cfg,
            "progress",
            format!(
                "the run did not finish within {} s of wall time: a task spinning without letting the paused \
                 clock advance? (replay the seed with RUST_LOG=debug)",
                cfg.wall_limit.as_secs()
            ),
        ),
    }
}

/// Runs one seed on this thread.
pub fn run_seed_here(cfg: SimConfig) -> SeedOutcome {
    tandem_core::mutations::set_cut_predecessor_grace(cfg.mutation);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&cfg.seed.to_le_bytes()))
        .build();
    let outcome = match runtime {
        Ok(rt) => rt.block_on(drive(cfg.clone())),
        Err(e) => failed_outcome(&cfg, "setup", format!("cannot build the runtime: {e}")),
    };
    tandem_core::mutations::set_cut_predecessor_grace(false);
    outcome
}

/// The role of a node of the simulated cluster (for reports).
pub fn role(name: &str) -> NodeRole {
    if name == "w" {
        NodeRole::Witness
    } else {
        NodeRole::Member
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse_and_a_bad_name_is_named() {
        assert_eq!(FaultKind::parse_list("all").unwrap(), FaultKind::ALL.to_vec());
        assert_eq!(
            FaultKind::parse_list("crash, partition,crash").unwrap(),
            vec![FaultKind::Partition, FaultKind::Crash]
        );
        let e = FaultKind::parse_list("crash,meteor").unwrap_err();
        assert!(e.contains("\"meteor\"") && e.contains("witness-alone"), "{e}");
    }

    #[test]
    fn a_schedule_is_drawn_from_the_seed_alone_and_ends_when_faults_do() {
        let cfg = SimConfig::new(5);
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            schedule(&mut rng, &cfg)
                .iter()
                .map(|e| (e.kind, e.at, e.until, e.x, e.y))
                .collect::<Vec<_>>()
        };
        let a = draw(5);
        assert_eq!(a, draw(5));
        assert_ne!(a, draw(6));
        assert!(a.len() >= 6, "{a:?}");
        assert!(
            a.iter()
                .all(|(_, at, until, _, _)| *at >= 3_000 && at <= until && *until <= 40_000)
        );
    }
}
