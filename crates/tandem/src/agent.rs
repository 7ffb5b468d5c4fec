//! `tandem agent`: reads the configuration and the credentials, starts the
//! node runtime (`tandem_node`) and serves it (`tandem_api`), and takes it
//! down cleanly on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};

use tandem_api::serve::{Listeners, Security, serve};
use tandem_core::NodeRole;
use tandem_core::config::{LogFormat, NodeConfig};
use tandem_node::clock::Clock;
use tandem_node::start::{Node, NodeParams, StartError};
use tokio::net::TcpListener;
use tracing::info;

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
    if let Some(b) = config.backup.as_mut() {
        crate::security::resolve(base, &mut b.dir);
    }
    Ok(config)
}

pub async fn run(path: &Path, log_format: Option<LogFormatArg>) -> Outcome {
    // Installed first, so a SIGTERM during start-up still ends the agent cleanly.
    let mut signals =
        Signals::install().map_err(|e| Failure::runtime(format!("cannot install signal handlers: {e}")))?;
    let config = load_config(path)?;
    let format = self::log_format(log_format, config.log_format);
    crate::logging::init_agent(config.log_level.as_deref(), format);
    let security = crate::security::load_node(&config, path)?;
    let start_failure = |e: StartError| match e {
        StartError::WrongIdentity(e) => Failure::input(format!("{}: key `node.data_dir`: {e}", path.display())),
        StartError::Timing(e) => Failure::input(e),
        StartError::Failed(e) => Failure::runtime(e),
    };

    let node = Node::open(NodeParams {
        config: config.clone(),
        client_tls: security.client_tls.clone(),
        ocf_root: ocf_root(),
        clock: Clock::system(),
        jitter_seed: None,
        simulation: None,
    })
    .map_err(start_failure)?;

    // A member's services must not outlive its lease when this agent is
    // frozen or killed: the guard process ends them (tandem_node::guard).
    if config.node.role == NodeRole::Member {
        spawn_guard(&config.data_dir, format)?;
    }

    let grpc = TcpListener::bind(config.grpc_listen).await.map_err(|e| {
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
    // Raft, the bootstrap and DNS: DNS is bound before anything runs, so a
    // taken port is an error at start.
    let node = node.start().await.map_err(start_failure)?;
    // HTTP (optional): bound before anything runs too.
    let http = match config.http_listen {
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

    let node = node.run();
    let security = Security {
        policy: security.policy,
        server_tls: security.server_tls,
    };
    let mut faces = serve(&node, Listeners { grpc, http }, security)
        .await
        .map_err(|e| match e {
            tandem_api::serve::ServeError::Tls(e) => {
                Failure::input(format!("{}: [tls]: {}", path.display(), crate::root_cause(&e)))
            }
            e => Failure::runtime(e.to_string()),
        })?;
    info!("serving");
    crate::systemd::ready(node.context());
    let manager = tokio::spawn(crate::systemd::run(node.context().clone(), node.shutdown_signal()));

    let reason = tokio::select! {
        signal = signals.next() => signal.to_string(),
        r = faces.grpc_ended() => format!("the gRPC server stopped ({r})"),
        _ = node.failed() => "Raft stopped with a fatal error".to_string(),
    };
    crate::systemd::stopping(&reason);
    let stopped = node.leave_and_stop(&reason).await;
    let _ = manager.await;
    faces.stop().await;
    drop(stopped);
    info!("stopped");
    if reason.starts_with("SIG") {
        Ok(())
    } else {
        Err(Failure::runtime(format!("agent stopped: {reason}")))
    }
}

/// The log format from `--log-format`, else the configuration's.
pub(crate) fn log_format(arg: Option<LogFormatArg>, configured: LogFormat) -> LogFormat {
    match arg {
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Journald) => LogFormat::Journald,
        None => configured,
    }
}

/// Starts `tandem guard` beside this agent, in its own process group (a
/// terminal's Ctrl-C is the agent's to handle; the guard leaves by itself
/// once the agent is gone and nothing guarded runs). Its exit is logged.
fn spawn_guard(data_dir: &Path, format: LogFormat) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::runtime(format!("cannot find this program to start the lease guard: {e}")))?;
    let format = match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
        LogFormat::Journald => "journald",
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("guard")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--agent", &std::process::id().to_string(), "--log-format", format])
        .stdin(std::process::Stdio::null())
        .process_group(0);
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| Failure::runtime(format!("cannot start the lease guard: {e}")))?;
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) if status.success() => info!("the lease guard left"),
            Ok(status) => {
                tracing::error!(%status, "the lease guard stopped: a frozen agent's services would outlive its lease")
            }
            Err(e) => tracing::error!(error = %e, "cannot wait for the lease guard"),
        }
    });
    Ok(())
}

/// Where OCF agents live: `OCF_ROOT` if set, else the standard /usr/lib/ocf.
pub(crate) fn ocf_root() -> PathBuf {
    std::env::var_os("OCF_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/ocf"))
}

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
