//! `tandem agent`: wires the core, Raft, storage and the services into a
//! running node, and takes it down cleanly on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::error::{InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};
use tandem_api::ApiContext;
use tandem_api::auth::AuthLayer;
use tandem_api::peer::PeerService;
use tandem_api::service::TandemService;
use tandem_core::NodeRole;
use tandem_core::config::{LogFormat, NodeConfig};
use tandem_core::timing::duration_ms;
use tandem_node::NodeContext;
use tandem_node::clock::Clock;
use tandem_node::executor::{ExecutorConfig, run_executor};
use tandem_node::heartbeat::{confirm_quorum, follow_raft, run_heartbeats, run_witness_fallback};
use tandem_node::liveness::Liveness;
use tandem_node::manager::run_manager;
use tandem_node::watchdog::{SelfFence, run_watchdog};
use tandem_proto::v1::peer_server::PeerServer;
use tandem_proto::v1::tandem_server::TandemServer;
use tandem_raft::Raft;
use tandem_raft::network::{Channels, MAX_MESSAGE, Network};
use tandem_raft::store::{Identity, OpenError, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tracing::{error, info, warn};

use crate::{Failure, LogFormatArg, Outcome};

/// Reads and validates a configuration file; relative `data_dir`s are taken
/// from the file's directory.
pub fn load_config(path: &Path) -> Result<NodeConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("{}: cannot read the configuration file: {e}", path.display())))?;
    let mut config =
        NodeConfig::parse(&text, &path.display().to_string()).map_err(|e| Failure::input(e.to_string()))?;
    if config.data_dir.is_relative() {
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.data_dir = base.join(&config.data_dir);
    }
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    for p in [
        config.security.operator_token_file.as_mut(),
        config.security.viewer_token_file.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        crate::security::resolve(base, p);
    }
    if let Some(tls) = config.tls.as_mut() {
        for p in [&mut tls.cert, &mut tls.key, &mut tls.ca] {
            crate::security::resolve(base, p);
        }
    }
    Ok(config)
}

fn raft_config(config: &NodeConfig) -> Result<Config, Failure> {
    let t = &config.timing;
    Config {
        cluster_name: config.cluster.clone(),
        heartbeat_interval: duration_ms(t.heartbeat_interval),
        election_timeout_min: duration_ms(t.election_timeout),
        election_timeout_max: duration_ms(t.election_timeout_max()),
        install_snapshot_timeout: duration_ms(t.lease).max(1000),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
        max_in_snapshot_log_to_keep: config.snapshot_after_entries.min(1000),
        // A witness votes but does not campaign on Raft's timer, so a member
        // becomes coordinator whenever one can (see run_witness_fallback).
        enable_elect: config.node.role != NodeRole::Witness,
        ..Config::default()
    }
    .validate()
    .map_err(|e| Failure::input(format!("timing: {e}")))
}

pub async fn run(path: &Path, log_format: Option<LogFormatArg>) -> Outcome {
    // Installed first, so a SIGTERM during start-up still ends the agent cleanly.
    let mut signals =
        Signals::install().map_err(|e| Failure::runtime(format!("cannot install signal handlers: {e}")))?;
    let config = load_config(path)?;
    let json = match log_format {
        Some(f) => f == LogFormatArg::Json,
        None => config.log_format == LogFormat::Json,
    };
    crate::logging::init_agent(config.log_level.as_deref(), json);
    let security = crate::security::load_node(&config, path)?;

    let identity = Identity {
        cluster: config.cluster.clone(),
        node_name: config.node.name.clone(),
        node_id: config.node_id,
    };
    let store = Store::open(&config.data_dir, &identity).map_err(|e| match e {
        OpenError::WrongIdentity { .. } => Failure::input(format!("{}: key `node.data_dir`: {e}", path.display())),
        OpenError::Storage { .. } => Failure::runtime(e.to_string()),
    })?;
    let initialized = store.has_raft_state().map_err(|e| Failure::runtime(e.to_string()))?;

    let listener = TcpListener::bind(config.grpc_listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "; another process (another tandem agent?) already listens there"
        } else {
            ""
        };
        Failure::runtime(format!(
            "cannot listen on {} (key `node.grpc_listen` of {}): {e}{hint}",
            config.grpc_listen,
            path.display()
        ))
    })?;

    let raft_config = Arc::new(raft_config(&config)?);
    let state_machine = store.state_machine().await.map_err(|e| {
        Failure::runtime(format!(
            "cannot load the state machine from {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let state = state_machine.subscribe();
    let channels = match security.client_tls.clone() {
        Some(tls) => Channels::with_tls(tls),
        None => Channels::default(),
    };
    let raft = Raft::new(
        config.node_id,
        raft_config,
        Network::new(
            config.cluster.clone(),
            channels.clone(),
            config.timing.heartbeat_interval * 2,
        ),
        store.log_store(),
        state_machine,
    )
    .await
    .map_err(|e| Failure::runtime(format!("cannot start Raft: {e}")))?;

    let ctx = NodeContext {
        cluster: config.cluster.clone(),
        me: config.node.clone(),
        id: config.node_id,
        timing: config.timing,
        raft: raft.clone(),
        state,
        channels,
        clock: Clock::system(),
        liveness: Arc::new(Liveness::new(config.timing)),
        ocf_root: ocf_root(),
        self_fence: Arc::new(SelfFence::default()),
        leaving: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        counters: Arc::default(),
        membership_lock: Arc::default(),
    };
    // Counters are since start: what the loaded state already holds is the baseline.
    let api = ApiContext::new(ctx.clone());

    info!(
        cluster = %config.cluster,
        node = %config.node.name,
        role = %config.node.role,
        grpc = %config.grpc_listen,
        http = ?config.http_listen,
        data_dir = %config.data_dir.display(),
        version = tandem_core::VERSION,
        tls = config.tls.is_some(),
        operator_token = security.policy.operator_token.is_some(),
        viewer_token = security.policy.viewer_token.is_some(),
        "agent starting"
    );

    // Bootstrap exactly once: only a member that never held Raft state, and
    // never a node meant to join. Every initial member does it with the same
    // member list, which Raft accepts even when they all start at once.
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
        match raft.initialize(config.members_by_id()).await {
            Ok(()) => info!(
                members = config.members.len(),
                "bootstrapped the cluster from the initial members"
            ),
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => info!(reason = %e, "already bootstrapped"),
            Err(e) => return Err(Failure::runtime(format!("cannot bootstrap the cluster: {e}"))),
        }
    }

    // DNS: bound before anything runs, so a taken port is an error at start.
    let (dns, zone_tx, dns_stats) = tandem_node::dns::bind_dns(ctx.clone(), config.dns_listen, config.dns_rate_limit)
        .await
        .map_err(|e| Failure::runtime(format!("cannot serve DNS on {}: {e}", config.dns_listen)))?;
    info!(dns = %config.dns_listen, "DNS responder listening");
    // HTTP (optional): bound before anything runs too.
    let http_listener = match config.http_listen {
        None => None,
        Some(addr) => Some(tandem_api::http::bind(addr).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; another process already listens there"
            } else {
                ""
            };
            Failure::runtime(format!(
                "cannot listen on {addr} (key `node.http_listen` of {}): {e}{hint}",
                path.display()
            ))
        })?),
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Read the previous run's lease end before this run records its own.
    let lease_file = config.data_dir.join("lease-end");
    let left = tandem_node::lease_file::previous_lease_remaining(&lease_file, config.timing.lease);
    info!(
        left_ms = left.as_millis() as u64,
        "what is left of the previous run's lease"
    );
    let previous_lease_until = Some(ctx.clock.now().plus(left));
    let lease_task = tokio::spawn(tandem_node::lease_file::persist_lease(
        ctx.clone(),
        lease_file,
        shutdown_rx.clone(),
    ));
    let dns_task = tokio::spawn(dns.run(shutdown_rx.clone()));
    let metrics_task = tokio::spawn(tandem_api::http::follow_metrics(api.clone(), shutdown_rx.clone()));
    let http_task = http_listener.map(|l| {
        tokio::spawn(tandem_api::http::serve(
            l,
            api.clone(),
            Some(dns_stats.clone()),
            shutdown_rx.clone(),
        ))
    });
    let zone_task = tokio::spawn(tandem_node::dns::follow_zone(ctx.clone(), zone_tx, shutdown_rx.clone()));
    let push_task = tokio::spawn(tandem_node::dns::run_dns_push(ctx.clone(), shutdown_rx.clone()));
    let heartbeats = tokio::spawn(run_heartbeats(ctx.clone(), shutdown_rx.clone()));
    let follower = tokio::spawn(follow_raft(ctx.clone(), shutdown_rx.clone()));
    let confirmer = tokio::spawn(confirm_quorum(ctx.clone(), shutdown_rx.clone()));
    let manager = tokio::spawn(run_manager(ctx.clone(), shutdown_rx.clone()));
    // A witness hosts nothing, so it runs no executor.
    let exclusive_active: Arc<
        std::sync::Mutex<std::collections::BTreeMap<String, Arc<std::sync::atomic::AtomicBool>>>,
    > = Default::default();
    let executor = (config.node.role == NodeRole::Member).then(|| {
        let exec_config = ExecutorConfig {
            state_dir: config.data_dir.join("run"),
            ocf_root: ctx.ocf_root.clone(),
            previous_lease_until,
            active: exclusive_active.clone(),
        };
        tokio::spawn(run_executor(ctx.clone(), exec_config, shutdown_rx.clone()))
    });
    let watchdog = config.watchdog.clone().map(|w| {
        tokio::spawn(run_watchdog(
            w.device,
            w.interval,
            ctx.self_fence.clone(),
            shutdown_rx.clone(),
        ))
    });
    let fallback = (config.node.role == NodeRole::Witness)
        .then(|| tokio::spawn(run_witness_fallback(ctx.clone(), ctx.id, shutdown_rx.clone())));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<TandemServer<TandemService>>().await;
    health_reporter.set_serving::<PeerServer<PeerService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Failure::runtime(format!("cannot build the reflection service: {e}")))?;

    let mut signal_rx = shutdown_rx.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.server_tls.clone() {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Failure::input(format!("{}: [tls]: {}", path.display(), crate::client::root_cause(&e))))?;
    }
    let server = builder
        .layer(AuthLayer::new(security.policy.clone(), api.auth_stats.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(TandemServer::new(TandemService::new(api.clone(), shutdown_rx.clone())))
        .add_service(
            PeerServer::new(PeerService::new(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        // TCP_NODELAY on every accepted connection: without it a reply
        // written in more than one segment waits for the client's delayed
        // ACK (40 ms on Linux), which capped a poller at ~23 GetStatus/s.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            let _ = signal_rx.wait_for(|stop| *stop).await;
        });
    let mut server = tokio::spawn(server);
    info!("serving");

    let raft_failed = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if raft.metrics().borrow().running_state.is_err() {
                return;
            }
        }
    };
    let reason = tokio::select! {
        signal = signals.next() => signal.to_string(),
        r = &mut server => format!("the gRPC server stopped ({})", match r {
            Ok(Ok(())) => "no error".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }),
        _ = raft_failed => "Raft stopped with a fatal error".to_string(),
    };
    // Leave first: stop the exclusive groups running here while heartbeats,
    // the lease guard and the watchdog still run, so they move at once and a
    // slow stop stays covered by the lease rules.
    if tandem_node::executor::any_exclusive_active(&exclusive_active) {
        info!(reason = %reason, "leaving: stopping the exclusive groups running here first");
        ctx.leaving.store(true, std::sync::atomic::Ordering::SeqCst);
        ctx.liveness.poke();
        let start = tokio::time::Instant::now();
        while tandem_node::executor::any_exclusive_active(&exclusive_active) && start.elapsed() < LEAVE_TIMEOUT {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if tandem_node::executor::any_exclusive_active(&exclusive_active) {
            warn!(
                timeout_s = LEAVE_TIMEOUT.as_secs(),
                "exclusive groups still stopping; shutting down anyway"
            );
        }
    }
    info!(reason = %reason, "shutting down: stopping Raft first so the others elect a coordinator at once, then draining requests");
    let _ = shutdown_tx.send(true);
    if let Err(e) = raft.shutdown().await {
        error!(error = %e, "Raft did not shut down cleanly");
    }
    let _ = heartbeats.await;
    let _ = follower.await;
    let _ = confirmer.await;
    let _ = manager.await;
    if let Some(e) = executor {
        let _ = e.await;
    }
    if let Some(f) = fallback {
        let _ = f.await;
    }
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    let _ = zone_task.await;
    let _ = lease_task.await;
    let _ = push_task.await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), dns_task).await;
    let _ = metrics_task.await;
    if let Some(mut http) = http_task {
        match tokio::time::timeout(std::time::Duration::from_secs(2), &mut http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                warn!("HTTP server did not drain within 2 s; closing");
                http.abort();
            }
        }
    }
    if !server.is_finished() {
        match tokio::time::timeout(std::time::Duration::from_secs(2), &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "gRPC server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "gRPC server task failed"),
            Err(_) => {
                warn!("gRPC server did not drain within 2 s; closing");
                server.abort();
            }
        }
    }
    // Every write was fsync'ed as it was made; dropping the store closes the file.
    drop(store);
    info!("stopped");
    if reason.starts_with("SIG") {
        Ok(())
    } else {
        Err(Failure::runtime(format!("agent stopped: {reason}")))
    }
}

/// Where OCF agents live: `OCF_ROOT` if set, else the standard /usr/lib/ocf.
fn ocf_root() -> PathBuf {
    std::env::var_os("OCF_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/ocf"))
}

/// How long a stopping agent waits for its exclusive groups to stop (systemd's
/// `TimeoutStopSec` in deploy/systemd/tandem.service allows for it).
const LEAVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(80);

/// SIGTERM and SIGINT, the signals that stop an agent cleanly.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next one and names it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
