//! Operator commands that talk to a running node over gRPC.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tandem_core::config::check_peer_address;
use tandem_proto::v1 as pb;
use tandem_proto::v1::tandem_client::TandemClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::output::{
    event_json, rfc3339_ms, role_name, simulation_json, simulation_table, state_name, status_json, status_table,
};
use crate::security::{client_tls, read_tls, read_token};
use crate::{Connection, Failure, Outcome, OutputFormat, root_cause};

/// A client of the operator API, with the caller's credentials.
pub type Client = TandemClient<InterceptedService<Channel, Credentials>>;

/// Adds `authorization: Bearer TOKEN` to every call when a token is given.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        Ok(req)
    }
}

/// How the CLI authenticates: a token, TLS (with or without a client
/// certificate). The default is neither (the demo, the benchmarks).
#[derive(Clone, Default)]
pub struct ClientSecurity {
    credentials: Credentials,
    tls: Option<ClientTlsConfig>,
}

impl ClientSecurity {
    /// From `--token-file`, `--ca`, `--cert`, `--key` (or their variables).
    pub fn from_connection(conn: &Connection) -> Result<ClientSecurity, Failure> {
        let authorization = match &conn.token_file {
            None => None,
            Some(path) => {
                let token = read_token(path, "--token-file")?;
                let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    Failure::input(format!(
                        "--token-file: {} does not hold a usable token (the token is not shown)",
                        path.display()
                    ))
                })?;
                // Never indexed by HPACK, and printed as "Sensitive".
                value.set_sensitive(true);
                Some(value)
            }
        };
        let tls = match (&conn.ca, &conn.cert, &conn.key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(Failure::input(
                    "--cert and --key need --ca (the cluster's CA certificate): client certificates are used over TLS only",
                ));
            }
            (Some(ca), cert, key) => {
                let material = read_tls(cert.as_deref(), key.as_deref(), ca, ("--cert", "--key", "--ca"))?;
                Some(client_tls(&material, "--ca/--cert/--key")?)
            }
        };
        Ok(ClientSecurity {
            credentials: Credentials { authorization },
            tls,
        })
    }
}

/// Connects to the node at `conn.endpoint`; an unreachable endpoint is a
/// one-line error with exit code 1.
pub async fn connect(conn: &Connection) -> Result<Client, Failure> {
    let security = ClientSecurity::from_connection(conn)?;
    connect_to(&conn.endpoint, conn.timeout, &security).await
}

pub async fn connect_to(address: &str, timeout: Duration, security: &ClientSecurity) -> Result<Client, Failure> {
    connect_with(address, timeout, security, true).await
}

/// `deadline`: every call must be answered within `timeout`; without, only
/// the connection (and keep-alives) are bounded by it, for long streams.
async fn connect_with(
    address: &str,
    timeout: Duration,
    security: &ClientSecurity,
    deadline: bool,
) -> Result<Client, Failure> {
    check_peer_address(address).map_err(|e| Failure::input(format!("endpoint: {e}")))?;
    let endpoint = match &security.tls {
        None => Endpoint::from_shared(format!("http://{address}")),
        Some(tls) => Endpoint::from_shared(format!("https://{address}")).and_then(|e| e.tls_config(tls.clone())),
    };
    let endpoint = endpoint
        .map_err(|e| Failure::input(format!("endpoint {address:?}: {e}")))?
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .tcp_nodelay(true)
        // A stream (status --watch) notices a vanished node within the timeout.
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(true);
    let endpoint = if deadline { endpoint.timeout(timeout) } else { endpoint };
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::runtime(format!(
            "cannot reach a Tandem node at {address}: {} (is the agent running? set --endpoint or TANDEM_ENDPOINT)",
            root_cause(&e)
        ))
    })?;
    Ok(TandemClient::with_interceptor(channel, security.credentials.clone()))
}

/// Turns a gRPC error into a failure: refusals (bad input, a change the
/// cluster will not make) exit with 2, everything else with 1.
pub fn failed(context: &str, s: tonic::Status) -> Failure {
    use tonic::Code::*;
    let message = format!("{context}: {}", s.message());
    match s.code() {
        InvalidArgument | FailedPrecondition | AlreadyExists | NotFound | OutOfRange | Unauthenticated
        | PermissionDenied => Failure::input(message),
        _ => Failure::runtime(message),
    }
}

/// Prints the answer to a command that changes something: `text` as it is,
/// or `json` as one line.
fn print_done(output: OutputFormat, text: &str, json: serde_json::Value) {
    match output {
        OutputFormat::Json => println!("{json}"),
        OutputFormat::Table => println!("{text}"),
    }
}

/// Username and host of whoever runs the CLI, for the event log.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

fn print_status(s: &pb::ClusterStatus, output: OutputFormat, clear: bool) {
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            let _ = writeln!(out, "{}", status_json(s));
        }
        OutputFormat::Table => {
            if clear {
                let _ = write!(out, "\x1b[2J\x1b[H");
            }
            let _ = writeln!(out, "{}", status_table(s));
        }
    }
    let _ = out.flush();
}

pub async fn status(conn: &Connection, output: OutputFormat, watch: bool) -> Outcome {
    let mut client = connect(conn).await?;
    if !watch {
        let s = client
            .get_status(pb::GetStatusRequest {})
            .await
            .map_err(|e| failed("status", e))?
            .into_inner();
        print_status(&s, output, false);
        return Ok(());
    }
    // The stream has no overall deadline; each message must come within the timeout.
    let mut stream = client
        .watch_status(pb::WatchStatusRequest { max_interval_ms: 0 })
        .await
        .map_err(|e| failed("watch", e))?
        .into_inner();
    let clear = std::io::stdout().is_terminal();
    loop {
        tokio::select! {
            m = stream.message() => match m {
                Ok(Some(s)) => print_status(&s, output, clear),
                Ok(None) => return Err(Failure::runtime(format!("{} ended the status stream", conn.endpoint))),
                Err(e) => return Err(failed("watch", e)),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `tandem status --check`: one line for a monitoring system and the
/// Nagios plugin exit code ([`crate::output::health`]); 3 (unknown) when
/// the node cannot be asked.
pub async fn status_check(conn: &Connection, output: OutputFormat) -> Outcome {
    let asked = async {
        let mut client = connect(conn).await?;
        client
            .get_status(pb::GetStatusRequest {})
            .await
            .map_err(|e| failed("status", e))
            .map(tonic::Response::into_inner)
    };
    let (code, line, json) = match asked.await {
        Ok(s) => {
            let h = crate::output::health(&s);
            (h.code, h.line(), h.json())
        }
        Err(f) => (
            3,
            format!("TANDEM UNKNOWN - {}", f.message),
            serde_json::json!({ "status": "unknown", "code": 3, "problems": [f.message] }),
        ),
    };
    print_done(output, &line, json);
    match code {
        0 => Ok(()),
        1 => Err(Failure {
            code: 1,
            message: "status check: degraded".into(),
        }),
        2 => Err(Failure {
            code: 2,
            message: "status check: critical".into(),
        }),
        _ => Err(Failure::unknown("status check: unknown")),
    }
}

pub async fn members_list(conn: &Connection, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let s = client
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|e| failed("members", e))?
        .into_inner();
    match output {
        OutputFormat::Json => {
            let members: Vec<_> = s
                .nodes
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "name": n.name,
                        "role": role_name(n.role),
                        "address": n.address,
                        "voter": n.voter,
                        "state": state_name(n.state),
                    })
                })
                .collect();
            println!("{}", serde_json::Value::Array(members));
        }
        OutputFormat::Table => {
            println!("{:<14} {:<8} {:<8} {:<8} ADDRESS", "NODE", "ROLE", "VOTER", "STATE");
            for n in &s.nodes {
                println!(
                    "{:<14} {:<8} {:<8} {:<8} {}",
                    n.name,
                    role_name(n.role),
                    if n.voter { "voter" } else { "learner" },
                    state_name(n.state),
                    n.address
                );
            }
        }
    }
    Ok(())
}

pub async fn members_add(
    conn: &Connection,
    name: String,
    address: String,
    witness: bool,
    catch_up: Duration,
    output: OutputFormat,
) -> Outcome {
    check_peer_address(&address).map_err(|e| Failure::input(format!("address: {e}")))?;
    // The call waits for the catch-up; give it that long plus the usual timeout.
    let security = ClientSecurity::from_connection(conn)?;
    let mut client = connect_to(&conn.endpoint, conn.timeout + catch_up, &security).await?;
    let role = if witness {
        pb::NodeRole::Witness
    } else {
        pb::NodeRole::Member
    };
    eprintln!(
        "adding {name} ({address}) as a learner; waiting for it to catch up (up to {})",
        humantime::format_duration(catch_up)
    );
    let reply = client
        .add_member(pb::AddMemberRequest {
            name: name.clone(),
            address,
            role: role.into(),
            actor: actor(),
            catch_up_timeout_ms: u32::try_from(catch_up.as_millis()).unwrap_or(u32::MAX),
        })
        .await
        .map_err(|e| failed(&format!("cannot add {name}"), e))?
        .into_inner();
    print_done(
        output,
        &format!(
            "added {name} as a voter at log index {}; voters: {}",
            reply.log_index,
            reply.voters.join(", ")
        ),
        serde_json::json!({ "added": name, "log_index": reply.log_index, "voters": reply.voters }),
    );
    Ok(())
}

pub async fn members_remove(conn: &Connection, name: String, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .remove_member(pb::RemoveMemberRequest {
            name: name.clone(),
            actor: actor(),
        })
        .await
        .map_err(|e| failed(&format!("cannot remove {name}"), e))?
        .into_inner();
    print_done(
        output,
        &format!(
            "removed {name} at log index {}; voters: {}",
            reply.log_index,
            reply.voters.join(", ")
        ),
        serde_json::json!({ "removed": name, "log_index": reply.log_index, "voters": reply.voters }),
    );
    Ok(())
}

pub async fn members_transfer_leader(
    conn: &Connection,
    to: Option<String>,
    timeout: Duration,
    output: OutputFormat,
) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .transfer_leader(pb::TransferLeaderRequest {
            to: to.unwrap_or_default(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            actor: actor(),
        })
        .await
        .map_err(|e| failed("cannot hand the coordinator role over", e))?
        .into_inner();
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"from": reply.from, "to": reply.to, "elapsed_ms": reply.elapsed_ms})
        ),
        OutputFormat::Table => println!(
            "coordinator role handed over from {} to {} in {} ms",
            reply.from, reply.to, reply.elapsed_ms
        ),
    }
    Ok(())
}

pub async fn annotate(conn: &Connection, message: String, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .annotate(pb::AnnotateRequest {
            message,
            actor: actor(),
        })
        .await
        .map_err(|e| failed("annotate", e))?
        .into_inner();
    print_done(
        output,
        &format!("recorded as event {} (log index {})", reply.event_seq, reply.log_index),
        serde_json::json!({ "event_seq": reply.event_seq, "log_index": reply.log_index }),
    );
    Ok(())
}

fn print_event(e: &pb::Event, output: OutputFormat) {
    match output {
        OutputFormat::Json => println!("{}", event_json(e)),
        OutputFormat::Table => println!(
            "{:>5}  {}  {:<16} {:<24} {}",
            e.seq,
            rfc3339_ms(e.at_unix_ms),
            e.kind,
            e.actor,
            e.message
        ),
    }
}

/// Which events `tandem events` shows.
pub struct EventFilter {
    pub since_seq: u64,
    pub since_unix_ms: u64,
    pub group: Option<String>,
    pub follow: bool,
}

pub async fn events(conn: &Connection, filter: EventFilter, output: OutputFormat) -> Outcome {
    let req = pb::ListEventsRequest {
        since_seq: filter.since_seq,
        group: filter.group.unwrap_or_default(),
        since_unix_ms: filter.since_unix_ms,
    };
    if filter.follow {
        // A stream: no deadline on the call, but a vanished node is noticed
        // through keep-alives within the timeout.
        let mut client = connect_to_stream(conn).await?;
        let mut stream = client
            .watch_events(req)
            .await
            .map_err(|e| failed("events", e))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(e)) => print_event(&e, output),
                Ok(None) => return Err(Failure::runtime("events: the node ended the stream (shutting down?)")),
                Err(e) => return Err(failed("events", e)),
            }
        }
    }
    let mut client = connect(conn).await?;
    let reply = client
        .list_events(req)
        .await
        .map_err(|e| failed("events", e))?
        .into_inner();
    for e in &reply.events {
        print_event(e, output);
    }
    Ok(())
}

/// A connection for a long stream: no per-call deadline (keep-alives notice
/// a vanished node within `conn.timeout`).
async fn connect_to_stream(conn: &Connection) -> Result<Client, Failure> {
    let security = ClientSecurity::from_connection(conn)?;
    connect_with(&conn.endpoint, conn.timeout, &security, false).await
}

/// `now + wait`, or a far future for a wait too long to represent.
fn deadline_after(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// `tandem switchover` / `tandem failover`: asks for the move and prints
/// each phase as the cluster reaches it; fails unless it completed.
pub async fn move_group(
    conn: &Connection,
    failover: bool,
    group: String,
    to: Option<String>,
    force: bool,
    output: OutputFormat,
) -> Outcome {
    let what = if failover { "failover" } else { "switchover" };
    let req = pb::MoveRequest {
        group: group.clone(),
        to: to.unwrap_or_default(),
        force,
        actor: actor(),
        timeout_ms: u64::try_from(conn.timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let mut client = connect_to_stream(conn).await?;
    let call = async {
        if failover {
            client.failover(req).await
        } else {
            client.switchover(req).await
        }
    };
    let mut stream = call.await.map_err(|e| failed(what, e))?.into_inner();
    // The server ends the move at the timeout; this bound only covers a
    // node that stops answering meanwhile.
    let deadline = deadline_after(conn.timeout.saturating_add(Duration::from_secs(5)));
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await.map_err(|_| {
            Failure::unknown(format!(
                "{what} of {group}: no outcome within {:?}; see `tandem history {group}`",
                conn.timeout
            ))
        })?;
        let p = match next {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(Failure::unknown(format!(
                    "{what} of {group}: the stream ended without an outcome; see `tandem history {group}`"
                )));
            }
            Err(e) => return Err(failed(what, e)),
        };
        match output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({
                    "phase": p.phase,
                    "message": p.message,
                    "elapsed_ms": p.elapsed_ms,
                    "done": p.done,
                    "ok": p.ok,
                    "transition": p.transition.as_ref().map(crate::output::transition_json),
                })
            ),
            OutputFormat::Table => println!("{:>7} ms  {:<10} {}", p.elapsed_ms, p.phase, p.message),
        }
        if p.done {
            return if p.ok {
                Ok(())
            } else if p.phase == "timeout" {
                // Still under way: neither done nor refused.
                Err(Failure::unknown(format!(
                    "{what} of {group}: outcome unknown: {}",
                    p.message
                )))
            } else {
                Err(Failure::runtime(format!(
                    "{what} of {group} did not complete: {}",
                    p.message
                )))
            };
        }
    }
}

pub async fn standby(
    conn: &Connection,
    node: String,
    on: bool,
    force: bool,
    wait: bool,
    output: OutputFormat,
) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .set_standby(pb::SetStandbyRequest {
            node: node.clone(),
            on,
            actor: actor(),
            force,
        })
        .await
        .map_err(|e| failed(if on { "standby" } else { "unstandby" }, e))?
        .into_inner();
    let json = |drained: Option<bool>| serde_json::json!({ "node": node, "standby": on, "log_index": reply.log_index, "drained": drained });
    if !on {
        print_done(
            output,
            &format!("{node} is out of standby (log index {})", reply.log_index),
            json(None),
        );
        return Ok(());
    }
    if !wait || output == OutputFormat::Table {
        print_done(
            output,
            &format!(
                "{node} is in standby: its groups move elsewhere (log index {})",
                reply.log_index
            ),
            json(None),
        );
    }
    if !wait {
        return Ok(());
    }
    // Drained: no group is assigned there or still running there.
    let deadline = deadline_after(conn.timeout);
    let mut last = String::new();
    loop {
        let s = client
            .get_status(pb::GetStatusRequest {})
            .await
            .map_err(|e| failed("status", e))?
            .into_inner();
        let left: Vec<String> = s
            .groups
            .iter()
            .filter(|g| g.nodes.contains(&node) || g.resources.iter().any(|r| r.node == node))
            .map(|g| format!("{} ({})", g.name, g.state))
            .collect();
        if left.is_empty() {
            print_done(output, &format!("{node} is drained"), json(Some(true)));
            return Ok(());
        }
        let now = left.join(", ");
        if now != last {
            if output == OutputFormat::Table {
                println!("waiting for {now} to leave {node}");
            }
            last = now;
        }
        if tokio::time::Instant::now() >= deadline {
            if output == OutputFormat::Json {
                println!("{}", json(Some(false)));
            }
            return Err(Failure::unknown(format!(
                "{node} not drained within {:?}: {last} still there",
                conn.timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn maintenance(
    conn: &Connection,
    on: bool,
    group: Option<String>,
    node: Option<String>,
    output: OutputFormat,
) -> Outcome {
    let scope = match (&group, &node) {
        (Some(g), None) => format!("group {g}"),
        (None, Some(n)) => format!("node {n}"),
        (None, None) => "the cluster".to_string(),
        (Some(_), Some(_)) => return Err(Failure::input("name a group or a node, not both")),
    };
    let mut client = connect(conn).await?;
    let json = serde_json::json!({ "maintenance": on, "group": group, "node": node });
    let reply = client
        .set_maintenance(pb::SetMaintenanceRequest {
            on,
            group: group.unwrap_or_default(),
            node: node.unwrap_or_default(),
            actor: actor(),
        })
        .await
        .map_err(|e| failed("maintenance", e))?
        .into_inner();
    let text = if on {
        format!(
            "maintenance on for {scope}: Tandem monitors and reports but does not start, stop, restart or move (log index {})",
            reply.log_index
        )
    } else {
        format!("maintenance off for {scope} (log index {})", reply.log_index)
    };
    let mut json = json;
    json["log_index"] = reply.log_index.into();
    print_done(output, &text, json);
    Ok(())
}

pub async fn history(conn: &Connection, group: Option<String>, limit: u32, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .get_history(pb::GetHistoryRequest {
            group: group.clone().unwrap_or_default(),
            limit,
        })
        .await
        .map_err(|e| failed("history", e))?
        .into_inner();
    match output {
        OutputFormat::Json => {
            let all: Vec<_> = reply.transitions.iter().map(crate::output::transition_json).collect();
            println!("{}", serde_json::Value::Array(all));
        }
        OutputFormat::Table => {
            if reply.transitions.is_empty() {
                println!(
                    "no failover or switchover recorded{}",
                    group.map(|g| format!(" for {g}")).unwrap_or_default()
                );
            }
            for t in &reply.transitions {
                print!("{}", crate::output::transition_timeline(t));
            }
        }
    }
    Ok(())
}

pub async fn apply(conn: &Connection, file: &std::path::Path, dry_run: bool, output: OutputFormat) -> Outcome {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::input(format!("{}: cannot read the spec: {e}", file.display())))?;
    let mut client = connect(conn).await?;
    let reply = client
        .apply_spec(pb::ApplySpecRequest {
            spec: text,
            file: file.display().to_string(),
            dry_run,
            actor: actor(),
        })
        .await
        .map_err(|e| failed(if dry_run { "spec diff" } else { "apply" }, e))?
        .into_inner();
    for w in &reply.warnings {
        eprintln!("tandem: warning: {w}");
    }
    if output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({
                "applied": reply.applied, "version": reply.version,
                "changes": reply.changes, "warnings": reply.warnings,
            })
        );
    } else if reply.changes.is_empty() {
        println!("no changes (spec version {})", reply.version);
    } else {
        for c in &reply.changes {
            println!("{c}");
        }
        if reply.applied {
            println!("applied as spec version {}", reply.version);
        } else {
            println!("(not applied; the spec in force is version {})", reply.version);
        }
    }
    Ok(())
}

/// `tandem simulate`: what the coordinator would decide with `nodes_down`
/// lost, `standby` drained and the spec in `apply` (if any), from the state
/// the node at the endpoint holds; nothing is committed.
pub async fn simulate(
    conn: &Connection,
    nodes_down: Vec<String>,
    standby: Vec<String>,
    apply: Option<&std::path::Path>,
    output: OutputFormat,
) -> Outcome {
    let spec = match apply {
        None => None,
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| Failure::input(format!("{}: cannot read the spec: {e}", file.display())))?,
        ),
    };
    let mut client = connect(conn).await?;
    let reply = client
        .simulate(pb::SimulateRequest {
            nodes_down,
            standby,
            spec,
            file: apply.map(|f| f.display().to_string()).unwrap_or_default(),
        })
        .await
        .map_err(|e| failed("simulate", e))?
        .into_inner();
    match output {
        OutputFormat::Json => println!("{}", simulation_json(&reply)),
        OutputFormat::Table => print!("{}", simulation_table(&reply)),
    }
    Ok(())
}

pub async fn spec_show(conn: &Connection, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .get_spec(pb::GetSpecRequest {})
        .await
        .map_err(|e| failed("spec show", e))?
        .into_inner();
    if output == OutputFormat::Json {
        println!(
            "{}",
            serde_json::json!({ "version": reply.version, "spec": reply.spec })
        );
    } else if reply.version == 0 {
        println!("# no spec applied yet");
    } else {
        println!("# spec version {}", reply.version);
        print!("{}", reply.spec);
    }
    Ok(())
}

pub async fn cleanup(conn: &Connection, group: Option<String>, node: Option<String>, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .cleanup_resource(pb::CleanupResourceRequest {
            group: group.clone().unwrap_or_default(),
            node: node.clone().unwrap_or_default(),
            actor: actor(),
        })
        .await
        .map_err(|e| failed("cleanup", e))?
        .into_inner();
    print_done(
        output,
        &format!(
            "failure counts cleared for {} on {}",
            group.as_deref().unwrap_or("every group"),
            node.as_deref().unwrap_or("every node")
        ),
        serde_json::json!({ "group": group, "node": node, "log_index": reply.log_index }),
    );
    Ok(())
}

/// Asks the operator to type `yes` (unless `--yes`); refuses without a terminal.
fn confirm(question: &str) -> Outcome {
    use std::io::BufRead;
    if !std::io::stdin().is_terminal() {
        return Err(Failure::input(format!(
            "{question}: refusing without confirmation (stdin is not a terminal); add --yes"
        )));
    }
    eprint!("{question}\nType yes to go on: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(Failure::input("not confirmed; nothing was done"))
    }
}

pub async fn fence(conn: &Connection, node: String, yes: bool, wait: Duration, output: OutputFormat) -> Outcome {
    if !yes {
        confirm(&format!(
            "This powers off {node} through its fence devices; whatever runs there stops at once."
        ))?;
    }
    let security = ClientSecurity::from_connection(conn)?;
    let mut client = connect_to(&conn.endpoint, wait + Duration::from_secs(5), &security).await?;
    eprintln!("fencing {node} (waiting up to {})...", humantime::format_duration(wait));
    let reply = client
        .fence_node(pb::FenceNodeRequest {
            node: node.clone(),
            actor: actor(),
            timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
        })
        .await
        .map_err(|e| {
            if e.code() == tonic::Code::DeadlineExceeded {
                // The wait ended, the fencing goes on: it may still succeed.
                Failure::unknown(format!("fence: outcome unknown: {}", e.message()))
            } else {
                failed("fence", e)
            }
        })?
        .into_inner();
    if reply.fenced {
        print_done(
            output,
            &format!("{node} fenced: {}", reply.summary),
            serde_json::json!({ "node": node, "fenced": true, "summary": reply.summary, "log_index": reply.log_index }),
        );
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "fencing {node} failed: {}; the cluster retries (see `tandem events`)",
            reply.summary
        )))
    }
}

pub async fn fence_confirm(conn: &Connection, node: String, yes: bool, output: OutputFormat) -> Outcome {
    eprintln!(
        "WARNING: confirming that {node} is off lets its services start elsewhere. If {node} still runs \
         them, two primaries run at once."
    );
    if !yes {
        confirm(&format!(
            "Confirm that {node} is powered off or cut off from everything it serves."
        ))?;
    }
    let mut client = connect(conn).await?;
    let reply = client
        .confirm_fenced(pb::FenceNodeRequest {
            node: node.clone(),
            actor: actor(),
            timeout_ms: 0,
        })
        .await
        .map_err(|e| failed("fence confirm", e))?
        .into_inner();
    print_done(
        output,
        &format!(
            "{node} recorded as fenced: {} (log index {})",
            reply.summary, reply.log_index
        ),
        serde_json::json!({ "node": node, "fenced": true, "summary": reply.summary, "log_index": reply.log_index }),
    );
    Ok(())
}

pub async fn dns(conn: &Connection, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let z = client
        .get_dns(pb::GetDnsRequest {})
        .await
        .map_err(|e| failed("dns", e))?
        .into_inner();
    match output {
        OutputFormat::Json => {
            let records: Vec<serde_json::Value> = z
                .records
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "ttl": r.ttl, "type": r.r#type, "data": r.data}))
                .collect();
            let v = serde_json::json!({
                "zone": z.zone,
                "serial": z.serial,
                "answering": z.answering,
                "answered_by": z.answered_by,
                "records": records,
            });
            println!("{v}");
        }
        OutputFormat::Table => {
            println!(
                "; zone {} serial {} as served by {}{}",
                z.zone,
                z.serial,
                z.answered_by,
                if z.answering {
                    ""
                } else {
                    " (no valid lease now: group names answer SERVFAIL)"
                }
            );
            for r in &z.records {
                println!("{:<40} {:>6} IN {:<6} {}", r.name, r.ttl, r.r#type, r.data);
            }
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, by the wall clock (for comparing with event times).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
