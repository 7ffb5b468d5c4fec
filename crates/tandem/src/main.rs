//! `tandem`: the node agent and the operator CLI in one binary.

mod agent;
mod bench;
mod check;
mod client;
mod cluster;
mod demo;
mod logging;
mod output;
mod security;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Tandem: a failover cluster manager.
#[derive(Parser)]
#[command(name = "tandem", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent with a configuration file.
    Agent {
        /// The node's configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Log format; overrides `log.format` of the configuration.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Show the cluster as a node sees it.
    Status {
        #[command(flatten)]
        conn: Connection,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
        /// Keep printing the status on every change (a server stream).
        #[arg(long, short)]
        watch: bool,
    },
    /// List, add or remove cluster members.
    Members {
        #[command(subcommand)]
        command: Option<MembersCommand>,
        #[command(flatten)]
        conn: Connection,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Record an operator's note in the replicated event log.
    Annotate {
        /// The note, e.g. "starting maintenance on rack 3".
        message: String,
        #[command(flatten)]
        conn: Connection,
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
        #[command(flatten)]
        conn: Connection,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
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
        #[command(flatten)]
        conn: Connection,
    },
    /// Take a node out of standby.
    Unstandby {
        node: String,
        #[command(flatten)]
        conn: Connection,
    },
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
        #[command(flatten)]
        conn: Connection,
    },
    /// The timeline of recent failovers and switchovers: each phase
    /// (detected, decided, fenced, started, healthy, dns) with its time.
    History {
        /// Only this group.
        group: Option<String>,
        /// How many of the most recent ones.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        #[command(flatten)]
        conn: Connection,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Validate a spec file in full and commit it; prints what changes.
    Apply {
        /// The spec file (TOML).
        #[arg(long, short = 'f')]
        file: PathBuf,
        #[command(flatten)]
        conn: Connection,
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
        #[command(flatten)]
        conn: Connection,
    },
    /// Resource operations.
    Resource {
        #[command(subcommand)]
        command: ResourceCommand,
        #[command(flatten)]
        conn: Connection,
    },
    /// The DNS zone as the node at --endpoint serves it now.
    Dns {
        #[command(flatten)]
        conn: Connection,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Fence a node now through its fence devices, or record that it is off.
    ///
    /// `tandem fence NODE` runs the node's fence levels (action off) and waits
    /// for the outcome; the node then counts as stopped for every group and its
    /// groups start elsewhere. `tandem fence confirm NODE` records an
    /// operator's word that a node without (working) fence devices is off.
    /// Both ask for confirmation unless --yes.
    Fence(FenceArgs),
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
    /// Remove a node through joint consensus.
    Remove { name: String },
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
        /// A node's configuration file: check node names against its
        /// members, and the zone under its cluster's name.
        #[arg(long = "config", short = 'c')]
        node_config: Option<PathBuf>,
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
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
        #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
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
    #[command(flatten)]
    conn: Connection,
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

/// Where to reach the cluster, and how long to wait.
#[derive(Args, Clone)]
struct Connection {
    /// gRPC address of any node, HOST:PORT.
    #[arg(
        long,
        short,
        env = "TANDEM_ENDPOINT",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    endpoint: String,
    /// How long to wait for an answer.
    #[arg(long, value_parser = humantime_duration, default_value = "10s", global = true)]
    timeout: Duration,
    /// A file holding the operator or viewer token, sent as
    /// `authorization: Bearer TOKEN`.
    #[arg(long, env = "TANDEM_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): connect with TLS and verify the node against it.
    #[arg(long, env = "TANDEM_CA", global = true)]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) signed by the cluster's CA: an operator credential. Needs --key and --ca.
    #[arg(long, env = "TANDEM_CERT", global = true)]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "TANDEM_KEY", global = true)]
    key: Option<PathBuf>,
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
    #[command(flatten)]
    conn: Connection,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
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
enum LogFormatArg {
    Text,
    Json,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("expected a duration such as \"500ms\" or \"10s\": {e}"))
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
    match cli.command {
        Command::Agent { config, log_format } => agent::run(&config, log_format).await,
        Command::Status { conn, output, watch } => {
            logging::init_cli();
            client::status(&conn, output, watch).await
        }
        Command::Members { command, conn, output } => {
            logging::init_cli();
            match command.unwrap_or(MembersCommand::List) {
                MembersCommand::List => client::members_list(&conn, output).await,
                MembersCommand::Add {
                    name,
                    address,
                    witness,
                    catch_up_timeout,
                } => client::members_add(&conn, name, address, witness, catch_up_timeout).await,
                MembersCommand::Remove { name } => client::members_remove(&conn, name).await,
            }
        }
        Command::Annotate { message, conn } => {
            logging::init_cli();
            client::annotate(&conn, message).await
        }
        Command::Events {
            since,
            since_seq,
            group,
            follow,
            conn,
            output,
        } => {
            logging::init_cli();
            let filter = client::EventFilter {
                since_seq,
                since_unix_ms: since.unwrap_or(0),
                group,
                follow,
            };
            client::events(&conn, filter, output).await
        }
        Command::Switchover(a) => {
            logging::init_cli();
            client::move_group(&a.conn, false, a.group, a.to, a.force, a.output).await
        }
        Command::Failover(a) => {
            logging::init_cli();
            client::move_group(&a.conn, true, a.group, a.to, a.force, a.output).await
        }
        Command::Standby {
            node,
            force,
            wait,
            conn,
        } => {
            logging::init_cli();
            client::standby(&conn, node, true, force, wait).await
        }
        Command::Unstandby { node, conn } => {
            logging::init_cli();
            client::standby(&conn, node, false, false, false).await
        }
        Command::Maintenance {
            mode,
            group,
            node,
            conn,
        } => {
            logging::init_cli();
            client::maintenance(&conn, mode == OnOff::On, group, node).await
        }
        Command::History {
            group,
            limit,
            conn,
            output,
        } => {
            logging::init_cli();
            client::history(&conn, group, limit, output).await
        }
        Command::Apply { file, conn } => {
            logging::init_cli();
            client::apply(&conn, &file, false).await
        }
        Command::Config {
            command: ConfigCommand::Check { files, output },
        } => check::config_check(&files, output),
        Command::Spec { command, conn } => {
            logging::init_cli();
            match command {
                SpecCommand::Show => client::spec_show(&conn).await,
                SpecCommand::Diff { file } => client::apply(&conn, &file, true).await,
                SpecCommand::Check {
                    file,
                    node_config,
                    output,
                } => check::spec_check(&file, node_config.as_deref(), output).await,
            }
        }
        Command::Resource { command, conn } => {
            logging::init_cli();
            match command {
                ResourceCommand::Cleanup { group, node } => client::cleanup(&conn, group, node).await,
            }
        }
        Command::Dns { conn, output } => {
            logging::init_cli();
            client::dns(&conn, output).await
        }
        Command::Fence(args) => {
            logging::init_cli();
            match (args.command, args.node) {
                (Some(FenceCommand::Confirm { node, yes }), _) => {
                    client::fence_confirm(&args.conn, node, yes || args.yes).await
                }
                (None, Some(node)) => client::fence(&args.conn, node, args.yes, args.wait).await,
                (None, None) => Err(Failure::input("name the node to fence: `tandem fence NODE`")),
            }
        }
        Command::Demo(args) => {
            logging::init_cli();
            demo::run(args).await
        }
        Command::Bench(args) => {
            logging::init_cli();
            bench::run(args).await
        }
    }
}
