//! Starting and stopping a node: the library entry point of the runtime.
//!
//! A node starts in three steps, so that its caller can bind the sockets
//! of its faces where a taken port should be found: [`Node::open`] opens the
//! data directory (refusing another node's), [`OpenedNode::start`] starts
//! Raft, bootstraps a new cluster where this node should and binds the DNS
//! responder (every error of a start happens by then, and nothing runs
//! yet), and [`StartedNode::run`] spawns the tasks: heartbeats, following Raft, the witness's fallback, the manager, the
//! executor, the zone and its pushes, the lease file and the watchdog.
//! [`Node::leave_and_stop`] takes it down again: it first leaves (stops
//! the exclusive groups running here while heartbeats, the lease guard and
//! the watchdog still run), then stops Raft and the tasks.
//!
//! The caller reads files, arguments and the environment; this crate only
//! gets what was parsed ([`NodeParams`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_core::NodeRole;
use tandem_core::config::NodeConfig;
use tandem_dns::{Responder, Stats, Zone};
use tandem_raft::network::Channels;
use tandem_raft::store::{AppliedState, Identity, OpenError, Store};
use tandem_raft::{Bootstrap, Consensus, ConsensusConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::ClientTlsConfig;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::executor::{ExecutorConfig, any_exclusive_active, run_executor};
use crate::heartbeat::{follow_raft, run_heartbeats, run_witness_fallback};
use crate::liveness::Liveness;
use crate::manager::run_manager;
use crate::node::NodeContext;
use crate::watchdog::{SelfFence, run_watchdog};

/// How long a stopping node waits for its exclusive groups to stop (systemd's
/// `TimeoutStopSec` in deploy/systemd/tandem.service allows for it).
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(80);

/// How long a stopping coordinator waits for another voter to take its role.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a node needs to start, as its caller parsed it.
pub struct NodeParams {
    pub config: NodeConfig,
    /// TLS for connections to other nodes (`[tls]`); `None`: plain TCP.
    pub client_tls: Option<ClientTlsConfig>,
    /// Where OCF resource agents live (normally /usr/lib/ocf).
    pub ocf_root: PathBuf,
    /// The node's clock: [`Clock::system`] for a real node.
    pub clock: Clock,
    /// Seeds the witness's election jitter; `None`: the node id.
    pub jitter_seed: Option<u64>,
    /// What the deterministic simulator replaces; `None` for a real node.
    pub simulation: Option<Simulation>,
}

/// The seams of the deterministic simulator (`tandem-sim`), each the
/// narrowest there is: the disk (a store on an in-memory backend, kept
/// across a simulated crash), the network to other nodes (every Raft,
/// heartbeat and report call) and the resource agents. The DNS responder
/// binds no socket (the zone is still built and followed).
#[derive(Clone)]
pub struct Simulation {
    pub store: Store,
    pub transport: Arc<dyn tandem_raft::network::PeerTransport>,
    pub agents: Arc<dyn tandem_agents::SimulatedAgents>,
}

/// Why a node did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The data directory belongs to another node or another cluster.
    WrongIdentity(String),
    /// The timing makes no valid Raft configuration.
    Timing(String),
    /// The node could not start (its storage, Raft, the DNS port).
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::WrongIdentity(m) | StartError::Timing(m) | StartError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StartError {}

/// A node whose data directory is open; nothing runs yet.
pub struct OpenedNode {
    params: NodeParams,
    store: Store,
    initialized: bool,
}

/// A node whose Raft runs and whose DNS responder is bound; its tasks do
/// not run yet.
pub struct StartedNode {
    params: NodeParams,
    store: Store,
    ctx: NodeContext,
    initial: Arc<AppliedState>,
    /// `None` in the simulator: no socket.
    dns: Option<Responder>,
    zone_tx: crate::dns::ZonePublisher,
    dns_stats: Arc<Stats>,
}

/// A running node.
pub struct Node {
    ctx: NodeContext,
    initial: Arc<AppliedState>,
    dns_stats: Arc<Stats>,
    zone: watch::Receiver<Arc<Zone>>,
    store: Store,
    shutdown_tx: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
    /// Per group: whether it may be active here as an exclusive group.
    exclusive_active: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
    tasks: Tasks,
}

/// The node's tasks, in the order they are awaited when it stops.
struct Tasks {
    heartbeats: JoinHandle<()>,
    follower: JoinHandle<()>,
    manager: JoinHandle<()>,
    backups: Option<JoinHandle<()>>,
    executor: Option<JoinHandle<()>>,
    fallback: Option<JoinHandle<()>>,
    watchdog: Option<JoinHandle<()>>,
    zone: JoinHandle<()>,
    lease: JoinHandle<()>,
    push: JoinHandle<()>,
    /// Given two seconds to end.
    dns: JoinHandle<()>,
}

/// A node that stopped; dropping it closes its store.
pub struct StoppedNode {
    _store: Store,
}

impl Node {
    /// Opens the node's data directory: refuses one of another node or
    /// cluster, and tells whether it holds Raft state already.
    pub fn open(params: NodeParams) -> Result<OpenedNode, StartError> {
        let config = &params.config;
        let identity = Identity {
            cluster: config.cluster.clone(),
            node_name: config.node.name.clone(),
            node_id: config.node_id,
        };
        let opened = match &params.simulation {
            Some(sim) => Ok(sim.store.clone()),
            None => Store::open(&config.data_dir, &identity),
        };
        let store = opened.map_err(|e| match e {
            OpenError::WrongIdentity { .. } => StartError::WrongIdentity(e.to_string()),
            OpenError::NewerLayout { .. } | OpenError::Storage { .. } => StartError::Failed(e.to_string()),
        })?;
        let initialized = store.has_raft_state().map_err(|e| StartError::Failed(e.to_string()))?;
        Ok(OpenedNode {
            params,
            store,
            initialized,
        })
    }

    /// The runtime's context, for the faces.
    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// The applied state when Raft started: what counters since the start
    /// count from.
    pub fn initial_state(&self) -> &Arc<AppliedState> {
        &self.initial
    }

    /// The DNS responder's counters.
    pub fn dns_stats(&self) -> Arc<Stats> {
        self.dns_stats.clone()
    }

    /// The zone the DNS responder answers from, as it changes.
    pub fn zone(&self) -> watch::Receiver<Arc<Zone>> {
        self.zone.clone()
    }

    /// Set when the node stops (after it left): whatever serves it ends then.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Resolves when Raft stopped with a fatal error.
    pub async fn failed(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.ctx.raft.fatal().is_some() {
                return;
            }
        }
    }

    /// Takes the node down: first it leaves (its exclusive groups stop while
    /// heartbeats, the lease guard and the watchdog still run, so they move
    /// at once and a slow stop stays covered by the lease rules; at most
    /// [`LEAVE_TIMEOUT`]), then Raft stops, so the others elect a
    /// coordinator at once, and then every task.
    pub async fn leave_and_stop(self, reason: &str) -> StoppedNode {
        let ctx = &self.ctx;
        if any_exclusive_active(&self.exclusive_active) {
            info!(reason = %reason, "leaving: stopping the exclusive groups running here first");
            ctx.leaving.store(true, Ordering::SeqCst);
            ctx.liveness.poke();
            let start = ctx.clock.now();
            while any_exclusive_active(&self.exclusive_active) && ctx.clock.now().since(start) < LEAVE_TIMEOUT {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if any_exclusive_active(&self.exclusive_active) {
                warn!(
                    timeout_s = LEAVE_TIMEOUT.as_secs(),
                    "exclusive groups still stopping; shutting down anyway"
                );
            }
        }
        if ctx.is_coordinator() {
            // Hand over first: the most current voter campaigns at once
            // instead of waiting out an election timeout.
            if let Err(e) = crate::membership::hand_over(ctx, None, TRANSFER_TIMEOUT, reason).await {
                warn!(error = %e.message(), "could not hand the coordinator role over; the others elect one when Raft stops");
            }
        }
        info!(reason = %reason, "shutting down: stopping Raft first so the others elect a coordinator at once, then draining requests");
        let _ = self.shutdown_tx.send(true);
        if let Err(e) = ctx.raft.shutdown().await {
            error!(error = %e, "Raft did not shut down cleanly");
        }
        let t = self.tasks;
        let _ = t.heartbeats.await;
        let _ = t.follower.await;
        let _ = t.manager.await;
        if let Some(b) = t.backups {
            let _ = b.await;
        }
        if let Some(e) = t.executor {
            let _ = e.await;
        }
        if let Some(f) = t.fallback {
            let _ = f.await;
        }
        if let Some(w) = t.watchdog {
            let _ = w.await;
        }
        let _ = t.zone.await;
        let _ = t.lease.await;
        let _ = t.push.await;
        let _ = tokio::time::timeout(Duration::from_secs(2), t.dns).await;
        // Every write was fsync'ed as it was made; the store closes when
        // the caller drops what is returned.
        StoppedNode { _store: self.store }
    }

    /// The machine stops dead (the simulator's crash): nothing leaves, hands
    /// over or stops a service; every task of the runtime ends where it is
    /// and Raft stops. What it wrote stays in its store.
    pub async fn crash(self) -> StoppedNode {
        let _ = self.shutdown_tx.send(true);
        let t = self.tasks;
        for handle in [
            &t.heartbeats,
            &t.follower,
            &t.manager,
            &t.zone,
            &t.lease,
            &t.push,
            &t.dns,
        ] {
            handle.abort();
        }
        for handle in [&t.executor, &t.fallback, &t.watchdog].into_iter().flatten() {
            handle.abort();
        }
        if let Err(e) = self.ctx.raft.shutdown().await {
            warn!(error = %e, "Raft did not shut down cleanly");
        }
        StoppedNode { _store: self.store }
    }
}

impl OpenedNode {
    /// Starts Raft, bootstraps the cluster where this node should (exactly
    /// once: only a member that never held Raft state, never a node meant
    /// to join, never a witness) and binds the DNS responder, so a taken
    /// port is an error at start. Nothing runs yet but Raft.
    pub async fn start(self) -> Result<StartedNode, StartError> {
        let OpenedNode {
            params,
            store,
            initialized,
        } = self;
        let config = &params.config;
        let raft_config = raft_config(config)?;
        let state_machine = store.state_machine().await.map_err(|e| {
            StartError::Failed(format!(
                "cannot load the state machine from {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let state = state_machine.subscribe();
        let channels = match (&params.simulation, params.client_tls.clone()) {
            (Some(sim), _) => Channels::simulated(sim.transport.clone()),
            (None, Some(tls)) => Channels::with_tls(tls),
            (None, None) => Channels::default(),
        };
        if !initialized && !config.join {
            // Before Raft runs: a wiped voter must not answer a single vote.
            refuse_if_wiped(config, &channels).await?;
        }
        let raft = Consensus::start(config.node_id, &raft_config, channels.clone(), &store, state_machine)
            .await
            .map_err(StartError::Failed)?;
        let ctx = NodeContext {
            cluster: config.cluster.clone(),
            me: config.node.clone(),
            id: config.node_id,
            timing: config.timing,
            raft: raft.clone(),
            state,
            channels,
            clock: params.clock.clone(),
            liveness: Arc::new(Liveness::new(config.timing)),
            ocf_root: params.ocf_root.clone(),
            self_fence: Arc::new(SelfFence::default()),
            leaving: Arc::new(AtomicBool::new(false)),
            counters: Arc::default(),
            membership_lock: Arc::default(),
        };
        let initial = ctx.state.borrow().clone();

        if initialized {
            info!("Raft state found; resuming (no bootstrap)");
        } else if config.join {
            info!("empty data directory and join = true: waiting to be added with `tandem members add`");
        } else if config.node.role == NodeRole::Witness {
            // Raft campaigns right after initialising, whatever `enable_elect`
            // says; a witness should lead only when no member can, so it leaves
            // the bootstrap to the members and receives the membership from them.
            info!("witness with an empty data directory: waiting for a member to bootstrap the cluster");
        } else {
            // Every initial member does it with the same member list, which
            // Raft accepts even when they all start at once.
            match raft.initialize(config.members_by_id()).await {
                Ok(Bootstrap::Done) => info!(
                    members = config.members.len(),
                    "bootstrapped the cluster from the initial members"
                ),
                Ok(Bootstrap::AlreadyDone(why)) => info!(reason = %why, "already bootstrapped"),
                Err(e) => return Err(StartError::Failed(format!("cannot bootstrap the cluster: {e}"))),
            }
        }

        let (dns, zone_tx, dns_stats) = if params.simulation.is_some() {
            let (zone, index) = crate::dns::initial_zone(&ctx).map_err(|e| StartError::Failed(e.to_string()))?;
            (
                None,
                crate::dns::ZonePublisher::new(zone, index),
                Arc::new(Stats::new(1)),
            )
        } else {
            let (dns, zone_tx, dns_stats) = crate::dns::bind_dns(ctx.clone(), config.dns_listen, config.dns_rate_limit)
                .await
                .map_err(|e| StartError::Failed(format!("cannot serve DNS on {}: {e}", config.dns_listen)))?;
            info!(dns = %config.dns_listen, "DNS responder listening");
            (Some(dns), zone_tx, dns_stats)
        };
        Ok(StartedNode {
            params,
            store,
            ctx,
            initial,
            dns,
            zone_tx,
            dns_stats,
        })
    }
}

/// How long each peer may take to answer a [`refuse_if_wiped`] probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A node about to start on an empty data directory (not joining) asks the
/// other configured members whether the cluster already knows it as a
/// member that ran. If one says so, its data directory was wiped (or
/// replaced): bootstrapping again or voting with a blank vote could elect
/// two coordinators in one term, so it is refused with the commands that
/// bring it back. Peers that do not answer (a new cluster whose nodes all
/// start now) count as not knowing it.
async fn refuse_if_wiped(config: &NodeConfig, channels: &Channels) -> Result<(), StartError> {
    use tandem_proto::v1::ProbeRequest;
    use tandem_proto::v1::peer_client::PeerClient;
    let me = &config.node.name;
    let probes = config.members.iter().filter(|m| m.name != *me).map(|m| async move {
        let channel = channels.get(&m.address).ok()?;
        let req = ProbeRequest {
            cluster: config.cluster.clone(),
            node: me.clone(),
        };
        let reply = tokio::time::timeout(PROBE_TIMEOUT, PeerClient::new(channel).probe(req))
            .await
            .ok()?
            .ok()?;
        Some(reply.into_inner())
    });
    let replies = futures::future::join_all(probes).await;
    let Some(known) = replies
        .into_iter()
        .flatten()
        .find(|r| r.cluster == config.cluster && r.member && r.started)
    else {
        return Ok(());
    };
    let witness = if config.node.role == NodeRole::Witness {
        " --witness"
    } else {
        ""
    };
    Err(StartError::Failed(format!(
        "refusing to start: the data directory {dir} is empty, but node {me:?} already ran as a member of \
         cluster {cluster:?} ({peer} says so, at log index {index}). Starting would re-bootstrap it or let it \
         vote as its old self with a blank vote. To bring it back: on a running node `tandem members remove {me}`, \
         then set `join = true` in this node's configuration, start it, and run `tandem members add {me} {addr}{witness}`; \
         if a majority of the cluster is lost for good, recover from a survivor instead (`tandem recover`).",
        dir = config.data_dir.display(),
        cluster = config.cluster,
        peer = known.answered_by,
        index = known.applied_index,
        addr = config.node.address,
    )))
}

impl StartedNode {
    /// The runtime's context.
    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// Spawns the node's tasks; it runs until [`Node::leave_and_stop`].
    pub fn run(self) -> Node {
        let StartedNode {
            params,
            store,
            ctx,
            initial,
            dns,
            zone_tx,
            dns_stats,
        } = self;
        let config = &params.config;
        let (shutdown_tx, shutdown) = watch::channel(false);
        // Read the previous run's lease end before this run records its own.
        let lease_file = config.data_dir.join("lease-end");
        let left = crate::lease_file::previous_lease_remaining(&lease_file, config.timing.lease, &ctx.clock);
        info!(
            left_ms = left.as_millis() as u64,
            "what is left of the previous run's lease"
        );
        // What runs may be kept until then (less the self-fencing margin),
        // and the lease guard ends what still runs there; nothing starts on it.
        ctx.liveness
            .inherit_lease((!left.is_zero()).then(|| ctx.clock.now().plus(left)));
        let lease = tokio::spawn(crate::lease_file::persist_lease(
            ctx.clone(),
            lease_file.clone(),
            shutdown.clone(),
        ));
        let dns_task = match dns {
            Some(dns) => tokio::spawn(dns.run(shutdown.clone())),
            None => tokio::spawn(async {}),
        };
        let zone = zone_tx.subscribe();
        let zone_task = tokio::spawn(crate::dns::follow_zone(ctx.clone(), zone_tx, shutdown.clone()));
        let push = tokio::spawn(crate::dns::run_dns_push(ctx.clone(), shutdown.clone()));
        let heartbeats = tokio::spawn(run_heartbeats(ctx.clone(), shutdown.clone()));
        let follower = tokio::spawn(follow_raft(ctx.clone(), shutdown.clone()));
        let manager = tokio::spawn(run_manager(ctx.clone(), shutdown.clone()));
        let backups = config
            .backup
            .clone()
            .map(|cfg| tokio::spawn(crate::backup::run_scheduled(ctx.clone(), cfg, shutdown.clone())));
        // A witness hosts nothing, so it runs no executor.
        let exclusive_active: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>> = Arc::default();
        let executor = (config.node.role == NodeRole::Member).then(|| {
            let exec_config = ExecutorConfig {
                state_dir: config.data_dir.join("run"),
                lease_file: lease_file.clone(),
                ocf_root: ctx.ocf_root.clone(),
                active: exclusive_active.clone(),
                agents: params.simulation.as_ref().map(|s| s.agents.clone()),
            };
            tokio::spawn(run_executor(ctx.clone(), exec_config, shutdown.clone()))
        });
        let watchdog = config.watchdog.clone().map(|w| {
            tokio::spawn(run_watchdog(
                w.device,
                w.interval,
                ctx.self_fence.clone(),
                shutdown.clone(),
            ))
        });
        let seed = params.jitter_seed.unwrap_or(ctx.id);
        let fallback = (config.node.role == NodeRole::Witness)
            .then(|| tokio::spawn(run_witness_fallback(ctx.clone(), seed, shutdown.clone())));
        Node {
            ctx,
            initial,
            dns_stats,
            zone,
            store,
            shutdown_tx,
            shutdown,
            exclusive_active,
            tasks: Tasks {
                heartbeats,
                follower,
                manager,
                backups,
                executor,
                fallback,
                watchdog,
                zone: zone_task,
                lease,
                push,
                dns: dns_task,
            },
        }
    }
}

fn raft_config(config: &NodeConfig) -> Result<ConsensusConfig, StartError> {
    let t = &config.timing;
    let raft = ConsensusConfig {
        cluster: config.cluster.clone(),
        heartbeat_interval: t.heartbeat_interval,
        election_timeout: t.election_timeout,
        // A witness votes but does not campaign on Raft's timer, so a member
        // becomes coordinator whenever one can (see run_witness_fallback).
        campaigns: config.node.role != NodeRole::Witness,
        install_snapshot_timeout: t.lease.max(Duration::from_secs(1)),
        snapshot_after_entries: config.snapshot_after_entries,
        // openraft's default is 500 ms; a restarted node then lags that long
        // before it catches up, and a node that lags cannot be elected.
        retry_after: t.heartbeat_interval * 2,
    };
    raft.validate()
        .map_err(|e| StartError::Timing(format!("timing: {e}")))?;
    Ok(raft)
}
