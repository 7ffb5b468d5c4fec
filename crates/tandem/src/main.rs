//! `tandem`: the node agent and the operator CLI in one binary.

mod agent;
mod backup;
mod bench;
mod check;
mod cli_docs;
mod client;
mod cluster;
mod demo;
mod logging;
mod output;
mod security;
mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Tandem: a failover cluster manager.
///
/// Exit codes: 0 done; 1 failed (unreachable node, I/O, an agent that
/// failed); 2 refused (bad input or configuration, a change the cluster will
/// not make, a missing credential, problems found by a check); 3 outcome
/// unknown (a move or fence still going on when the wait ended; `status
/// --check`: the state could not be read). `status --check` exits 0 ok, 1
/// degraded, 2 critical.
#[derive(Parser)]
#[command(name = "tandem", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after its name.
#[derive(Args, Clone)]
struct GlobalArgs {
    /// gRPC address of any node, HOST:PORT. Default: the node of --config,
    /// else $TANDEM_ENDPOINT, else 127.0.0.1:7400.
    #[arg(long, short, global = true)]
    endpoint: Option<String>,
    /// A node's configuration file (TOML). `agent` runs that node; other
    /// commands take from it the endpoint (the node's member address) and
    /// credentials (its operator token file, its TLS CA, certificate and
    /// key) that no option gives; `spec check` checks against its members.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// How to print: a human table, or JSON (one object per answer).
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
    /// How long to wait for an answer.
    #[arg(long, value_parser = humantime_duration, default_value = "10s", global = true)]
    timeout: Duration,
    /// A file holding the operator or viewer token, sent as
    /// `authorization: Bearer TOKEN`. Default: $TANDEM_TOKEN_FILE.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): connect with TLS and verify the
    /// node against it. Default: $TANDEM_CA.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) signed by the cluster's CA: an operator
    /// credential. Needs --key and --ca. Default: $TANDEM_CERT.
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM). Default: $TANDEM_KEY.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent of the node configured in --config FILE.
    Agent {
        /// Log format; overrides `log.format` of the configuration.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// The lease guard process a member's agent starts beside itself (not
    /// for operators): SIGKILLs the node's exclusive services once the lease
    /// recorded in DATA_DIR is over, also when the agent is frozen or dead.
    #[command(hide = true)]
    Guard {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The agent's pid: the guard leaves once it is gone and nothing
        /// guarded runs.
        #[arg(long)]
        agent: u32,
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Show the cluster as a node sees it.
    Status {
        /// Keep printing the status on every change (a server stream).
        #[arg(long, short, conflicts_with = "check")]
        watch: bool,
        /// A monitoring check (Nagios plugin conventions): one line, exit 0
        /// ok, 1 degraded (a node not up, a group starting or stopping, a
        /// node to fence, a stale view), 2 critical (no coordinator, a group
        /// failed, blocked or stopped), 3 unknown (no answer).
        #[arg(long)]
        check: bool,
    },
    /// List, add or remove cluster members.
    Members {
        #[command(subcommand)]
        command: Option<MembersCommand>,
    },
    /// Record an operator's note in the replicated event log.
    Annotate {
        /// The note, e.g. "starting maintenance on rack 3".
        message: String,
    },
    /// Show the replicated event log: every decision, action, result,
    /// fence, mode change and operator command, with who caused it.
    Events {
        /// Only events since this time: a duration ago ("10m", "2h") or an
        /// RFC 3339 time ("2026-11-22T17:00:00Z").
        #[arg(long, value_parser = since_time)]
        since: Option<u64>,
        /// Only events with this sequence number or later.
        #[arg(long, default_value_t = 0)]
        since_seq: u64,
        /// Only events about this group.
        #[arg(long, short)]
        group: Option<String>,
        /// Keep printing new events as they commit.
        #[arg(long, short)]
        follow: bool,
    },
    /// Move an exclusive group to another node on purpose: stop it on its
    /// primary, start it on the target, and wait (up to --timeout) until it
    /// is healthy and DNS answers the new primary, printing each phase.
    ///
    /// Refused, with the reason, when the target is down, in standby, a
    /// witness, failing its monitors or behind on data (--force overrides the
    /// last two, never safety). Without --to, the most current healthy
    /// candidate is chosen.
    Switchover(MoveArgs),
    /// Move an exclusive group now, even when its primary does not answer: a
    /// primary that does not answer is fenced first where it has fence
    /// devices (otherwise its lease must have certainly expired).
    Failover(MoveArgs),
    /// Drain a node: its groups move elsewhere by switchover and nothing new
    /// starts there, until `tandem unstandby`.
    Standby {
        node: String,
        /// Also when a group there has nowhere else to go (it stops).
        #[arg(long)]
        force: bool,
        /// Wait (up to --timeout) until no group runs there any more.
        #[arg(long)]
        wait: bool,
    },
    /// Take a node out of standby.
    Unstandby { node: String },
    /// Maintenance mode: Tandem keeps monitoring and reporting but does not
    /// start, stop, restart or move anything covered (the whole cluster, one
    /// group, or one node). A node that loses its lease still stops its
    /// exclusive groups.
    Maintenance {
        #[arg(value_enum)]
        mode: OnOff,
        #[arg(long, conflicts_with = "node")]
        group: Option<String>,
        #[arg(long)]
        node: Option<String>,
    },
    /// The timeline of recent failovers and switchovers: each phase
    /// (detected, decided, fenced, started, healthy, dns) with its time.
    History {
        /// Only this group.
        group: Option<String>,
        /// How many of the most recent ones.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Validate a spec file in full and commit it; prints what changes.
    Apply {
        /// The spec file (TOML).
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
    /// Check node configuration files offline: each alone, and all of them
    /// together as one cluster's files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Show the current spec, what a spec file would change, or check one offline.
    Spec {
        #[command(subcommand)]
        command: SpecCommand,
    },
    /// Resource operations.
    Resource {
        #[command(subcommand)]
        command: ResourceCommand,
    },
    /// The DNS zone as the node at --endpoint serves it now.
    Dns,
    /// Fence a node now through its fence devices, or record that it is off.
    ///
    /// `tandem fence NODE` runs the node's fence levels (action off) and waits
    /// for the outcome; the node then counts as stopped for every group and its
    /// groups start elsewhere. `tandem fence confirm NODE` records an
    /// operator's word that a node without (working) fence devices is off.
    /// Both ask for confirmation unless --yes.
    Fence(FenceArgs),
    /// Print a shell completion script: `tandem completions bash >
    /// /etc/bash_completion.d/tandem` (also zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of tandem, or with --dir write one page
    /// per command there (tandem.1, tandem-status.1, ...).
    Man {
        /// Write every command's page into this directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// What the coordinator would decide, without committing anything: the
    /// real placement played forward on the cluster's current state with
    /// nodes lost, put in standby, or a new spec applied (like Pacemaker's
    /// crm_simulate). Prints each group's node now and then, the steps, what
    /// would block it, what would be fenced, and groups left unprotected.
    Simulate {
        /// Imagine this node lost (repeatable).
        #[arg(long = "node-down", value_name = "NODE")]
        node_down: Vec<String>,
        /// Imagine this node in standby (repeatable).
        #[arg(long, value_name = "NODE")]
        standby: Vec<String>,
        /// Imagine this spec file applied.
        #[arg(long, value_name = "SPEC")]
        apply: Option<PathBuf>,
    },
    /// Backups of the cluster state: take one, verify or show a file.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Run a local three-node demo cluster (site-a, site-b, witness) and show a failover.
    Demo(demo::DemoArgs),
    /// Measure failover time, commit latency and idle cost on a local cluster.
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum MembersCommand {
    /// List the members (the default).
    List,
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    Add {
        name: String,
        /// HOST:PORT of the new node's gRPC listener.
        address: String,
        /// Add the node as a witness (votes, hosts nothing).
        #[arg(long)]
        witness: bool,
        /// How long the new node may take to catch up before the change is rolled back.
        #[arg(long, value_parser = humantime_duration, default_value = "60s")]
        catch_up_timeout: Duration,
    },
    /// Remove a node through joint consensus (the coordinator hands its role
    /// over first when it is the one removed).
    Remove { name: String },
    /// Hand the coordinator role to another voter, which takes it at once
    /// (before maintenance on the coordinator's machine).
    TransferLeader {
        /// The voter to hand over to; default: the most current one.
        #[arg(long)]
        to: Option<String>,
        /// How long to wait for the new coordinator.
        #[arg(long, value_parser = humantime_duration, default_value = "5s")]
        timeout: Duration,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Take a backup through the coordinator at a committed index (secrets
    /// redacted), verify it and write it to a new file (never over one).
    Create {
        /// The file to write; default tandem-backup-CLUSTER-INDEX.jsonl here.
        #[arg(long, short = 'f', visible_alias = "output-file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Verify a backup file offline: format, checksum, identity, and a load
    /// into a scratch state machine (exit 2 naming the problem).
    Verify {
        file: PathBuf,
        /// Also require that the backup is of this cluster.
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
    /// What a backup file holds: cluster, index, term, time, version, counts.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
enum SpecCommand {
    /// Print the spec in force with its version.
    Show,
    /// Show what applying FILE would change, without applying it.
    Diff {
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
    /// Check a spec file without a cluster: everything `apply` checks that
    /// can be checked here (exit 0: no problem, 2: problems).
    Check {
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check node configuration files: one node's, or a whole cluster's
    /// together (same cluster, members and timing; a different node in each
    /// file; no clashing addresses). Exit 0: no problem, 2: problems.
    Check {
        /// The files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ResourceCommand {
    /// Forget failure counts (all, or of one group and/or node).
    Cleanup {
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        node: Option<String>,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct FenceArgs {
    #[command(subcommand)]
    command: Option<FenceCommand>,
    /// The node to fence.
    #[arg(required = true)]
    node: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// How long to wait for the outcome (fencing goes on after it).
    #[arg(long, value_parser = humantime_duration, default_value = "60s")]
    wait: Duration,
}

#[derive(Subcommand)]
enum FenceCommand {
    /// Record that NODE is off (powered down or cut off by hand): it counts as
    /// stopped for every group. Refused while NODE is up. Wrongly confirming
    /// a node that still runs its services causes a split brain.
    Confirm {
        node: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Where to reach the cluster, how long to wait and with which credentials,
/// as resolved from the options, a node's configuration and the environment
/// (in that order).
#[derive(Clone)]
pub struct Connection {
    pub endpoint: String,
    pub timeout: Duration,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl GlobalArgs {
    /// The connection: each value from its option, else from the node
    /// configuration of --config, else from its environment variable.
    fn connection(&self) -> Result<Connection, Failure> {
        let config = match &self.config {
            Some(path) => Some(agent::load_config(path)?),
            None => None,
        };
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let tls = config.as_ref().and_then(|c| c.tls.as_ref());
        Ok(Connection {
            endpoint: self
                .endpoint
                .clone()
                .or_else(|| config.as_ref().map(|c| c.node.address.clone()))
                .or_else(|| env("TANDEM_ENDPOINT").map(|v| v.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "127.0.0.1:7400".to_string()),
            timeout: self.timeout,
            token_file: self
                .token_file
                .clone()
                .or_else(|| config.as_ref().and_then(|c| c.security.operator_token_file.clone()))
                .or_else(|| env("TANDEM_TOKEN_FILE").map(PathBuf::from)),
            ca: self
                .ca
                .clone()
                .or_else(|| tls.map(|t| t.ca.clone()))
                .or_else(|| env("TANDEM_CA").map(PathBuf::from)),
            cert: self
                .cert
                .clone()
                .or_else(|| tls.map(|t| t.cert.clone()))
                .or_else(|| env("TANDEM_CERT").map(PathBuf::from)),
            key: self
                .key
                .clone()
                .or_else(|| tls.map(|t| t.key.clone()))
                .or_else(|| env("TANDEM_KEY").map(PathBuf::from)),
        })
    }
}

#[derive(Args)]
struct MoveArgs {
    /// The exclusive group to move.
    group: String,
    /// The node to move it to; default: the most current healthy candidate.
    #[arg(long)]
    to: Option<String>,
    /// Override the freshness and monitor-failure checks (never safety).
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// `--since`: a duration ago or an RFC 3339 time, as Unix milliseconds.
fn since_time(s: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now();
    let at = match humantime::parse_duration(s) {
        Ok(ago) => now
            .checked_sub(ago)
            .ok_or_else(|| format!("{s:?} reaches before 1970"))?,
        Err(_) => humantime::parse_rfc3339_weak(s).map_err(|_| {
            format!("expected a duration ago (\"10m\") or an RFC 3339 time (\"2026-11-22T17:00:00Z\"), got {s:?}")
        })?,
    };
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_millis();
    u64::try_from(ms).map_err(|_| format!("{s:?} is too far in the future"))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
    Json,
    Journald,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    tandem_core::timing::parse_duration(s).map_err(|e| match e {
        tandem_core::timing::BadDuration::Malformed => {
            format!("expected a duration such as \"500ms\" or \"10s\", got {s:?}")
        }
        tandem_core::timing::BadDuration::TooLong => tandem_core::timing::too_long(s),
    })
}

/// A failure that ends the command: a message for the operator and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    /// Bad input: configuration, arguments, a refused request.
    pub fn input(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// Anything else: unreachable endpoint, I/O, a node that failed.
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Outcome unknown: the wait ended while what was asked may still
    /// happen (a move or a fence under way), or, for `status --check`, the
    /// state could not be read.
    pub fn unknown(message: impl Into<String>) -> Self {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

pub type Outcome = Result<(), Failure>;

/// The innermost cause of an error, which is what a failure's message should
/// say (tonic and rustls wrap the cause that matters in layers of context).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Two worker threads: a CPU-heavy request (validating a large spec) must
    // never hold up Raft's heartbeats.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (streams, Raft) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("tandem: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let Cli { global, command } = cli;
    let output = global.output;
    // Commands that need no connection.
    match command {
        Command::Agent { log_format } => {
            let Some(config) = &global.config else {
                return Err(Failure::input(
                    "agent: name the node's configuration file: `tandem agent --config FILE`",
                ));
            };
            return agent::run(config, log_format).await;
        }
        Command::Guard {
            data_dir,
            agent,
            log_format,
        } => {
            crate::logging::init_agent(
                None,
                agent::log_format(log_format, tandem_core::config::LogFormat::Text),
            );
            let code = tokio::task::spawn_blocking(move || tandem_node::guard::run(&data_dir, agent))
                .await
                .unwrap_or(1);
            return if code == 0 {
                Ok(())
            } else {
                Err(Failure::runtime("the lease guard stopped"))
            };
        }
        Command::Config {
            command: ConfigCommand::Check { files },
        } => return check::config_check(&files, output),
        Command::Spec {
            command: SpecCommand::Check { file },
        } => return check::spec_check(&file, global.config.as_deref(), output).await,
        Command::Backup {
            command: BackupCommand::Verify { file, cluster },
        } => return backup::verify(&file, cluster.as_deref(), output).await,
        Command::Backup {
            command: BackupCommand::Show { file },
        } => return backup::show(&file, output).await,
        Command::Completions { shell } => return cli_docs::completions(shell),
        Command::Man { dir } => return cli_docs::man(dir.as_deref()),
        Command::Demo(args) => {
            logging::init_cli();
            return demo::run(args).await;
        }
        Command::Bench(args) => {
            logging::init_cli();
            return bench::run(args).await;
        }
        _ => {}
    }
    logging::init_cli();
    let conn = global.connection()?;
    let conn = &conn;
    match command {
        Command::Status { watch, check } => {
            if check {
                client::status_check(conn, output).await
            } else {
                client::status(conn, output, watch).await
            }
        }
        Command::Members { command } => match command.unwrap_or(MembersCommand::List) {
            MembersCommand::List => client::members_list(conn, output).await,
            MembersCommand::Add {
                name,
                address,
                witness,
                catch_up_timeout,
            } => client::members_add(conn, name, address, witness, catch_up_timeout, output).await,
            MembersCommand::Remove { name } => client::members_remove(conn, name, output).await,
            MembersCommand::TransferLeader { to, timeout } => {
                client::members_transfer_leader(conn, to, timeout, output).await
            }
        },
        Command::Annotate { message } => client::annotate(conn, message, output).await,
        Command::Events {
            since,
            since_seq,
            group,
            follow,
        } => {
            let filter = client::EventFilter {
                since_seq,
                since_unix_ms: since.unwrap_or(0),
                group,
                follow,
            };
            client::events(conn, filter, output).await
        }
        Command::Switchover(a) => client::move_group(conn, false, a.group, a.to, a.force, output).await,
        Command::Failover(a) => client::move_group(conn, true, a.group, a.to, a.force, output).await,
        Command::Standby { node, force, wait } => client::standby(conn, node, true, force, wait, output).await,
        Command::Unstandby { node } => client::standby(conn, node, false, false, false, output).await,
        Command::Maintenance { mode, group, node } => {
            client::maintenance(conn, mode == OnOff::On, group, node, output).await
        }
        Command::History { group, limit } => client::history(conn, group, limit, output).await,
        Command::Apply { file } => client::apply(conn, &file, false, output).await,
        Command::Spec { command } => match command {
            SpecCommand::Show => client::spec_show(conn, output).await,
            SpecCommand::Diff { file } => client::apply(conn, &file, true, output).await,
            SpecCommand::Check { .. } => Ok(()),
        },
        Command::Resource { command } => match command {
            ResourceCommand::Cleanup { group, node } => client::cleanup(conn, group, node, output).await,
        },
        Command::Dns => client::dns(conn, output).await,
        Command::Fence(args) => match (args.command, args.node) {
            (Some(FenceCommand::Confirm { node, yes }), _) => {
                client::fence_confirm(conn, node, yes || args.yes, output).await
            }
            (None, Some(node)) => client::fence(conn, node, args.yes, args.wait, output).await,
            (None, None) => Err(Failure::input("name the node to fence: `tandem fence NODE`")),
        },
        Command::Simulate {
            node_down,
            standby,
            apply,
        } => client::simulate(conn, node_down, standby, apply.as_deref(), output).await,
        Command::Backup { command } => match command {
            BackupCommand::Create { file } => backup::create(conn, file, output).await,
            BackupCommand::Verify { .. } | BackupCommand::Show { .. } => Ok(()),
        },
        Command::Agent { .. }
        | Command::Guard { .. }
        | Command::Config { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Demo(_)
        | Command::Bench(_) => Ok(()),
    }
}
