//! Operator commands that talk to a running node over gRPC.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tandem_core::config::check_peer_address;
use tandem_proto::v1 as pb;
use tandem_proto::v1::tandem_client::TandemClient;
use tonic::transport::{Channel, Endpoint};

use crate::output::{event_json, rfc3339_ms, role_name, state_name, status_json, status_table};
use crate::{Connection, Failure, Outcome, OutputFormat};

/// Connects to the node at `conn.endpoint`; an unreachable endpoint is a
/// one-line error with exit code 1.
pub async fn connect(conn: &Connection) -> Result<TandemClient<Channel>, Failure> {
    connect_to(&conn.endpoint, conn.timeout).await
}

pub async fn connect_to(address: &str, timeout: Duration) -> Result<TandemClient<Channel>, Failure> {
    check_peer_address(address).map_err(|e| Failure::input(format!("endpoint: {e}")))?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Failure::input(format!("endpoint {address:?}: {e}")))?
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .tcp_nodelay(true)
        // A stream (status --watch) notices a vanished node within the timeout.
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::runtime(format!(
            "cannot reach a Tandem node at {address}: {} (is the agent running? set --endpoint or TANDEM_ENDPOINT)",
            root_cause(&e)
        ))
    })?;
    Ok(TandemClient::new(channel))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Turns a gRPC error into a failure: refusals (bad input, a change the
/// cluster will not make) exit with 2, everything else with 1.
pub fn failed(context: &str, s: tonic::Status) -> Failure {
    use tonic::Code::*;
    let message = format!("{context}: {}", s.message());
    match s.code() {
        InvalidArgument | FailedPrecondition | AlreadyExists | NotFound | OutOfRange => Failure::input(message),
        _ => Failure::runtime(message),
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
) -> Outcome {
    check_peer_address(&address).map_err(|e| Failure::input(format!("address: {e}")))?;
    // The call waits for the catch-up; give it that long plus the usual timeout.
    let mut client = connect_to(&conn.endpoint, conn.timeout + catch_up).await?;
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
    println!(
        "added {name} as a voter at log index {}; voters: {}",
        reply.log_index,
        reply.voters.join(", ")
    );
    Ok(())
}

pub async fn members_remove(conn: &Connection, name: String) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .remove_member(pb::RemoveMemberRequest {
            name: name.clone(),
            actor: actor(),
        })
        .await
        .map_err(|e| failed(&format!("cannot remove {name}"), e))?
        .into_inner();
    println!(
        "removed {name} at log index {}; voters: {}",
        reply.log_index,
        reply.voters.join(", ")
    );
    Ok(())
}

pub async fn annotate(conn: &Connection, message: String) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .annotate(pb::AnnotateRequest {
            message,
            actor: actor(),
        })
        .await
        .map_err(|e| failed("annotate", e))?
        .into_inner();
    println!("recorded as event {} (log index {})", reply.event_seq, reply.log_index);
    Ok(())
}

pub async fn maintenance(conn: &Connection, on: bool, group: Option<String>, node: Option<String>) -> Outcome {
    let mut client = connect(conn).await?;
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
    println!(
        "maintenance {} recorded as event {} (log index {})",
        if on { "on" } else { "off" },
        reply.event_seq,
        reply.log_index
    );
    Ok(())
}

pub async fn events(conn: &Connection, since: u64, output: OutputFormat) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .list_events(pb::ListEventsRequest { since_seq: since })
        .await
        .map_err(|e| failed("events", e))?
        .into_inner();
    for e in &reply.events {
        match output {
            OutputFormat::Json => println!("{}", event_json(e)),
            OutputFormat::Table => println!(
                "{:>5}  {}  {:<13} {:<24} {}",
                e.seq,
                rfc3339_ms(e.at_unix_ms),
                e.kind,
                e.actor,
                e.message
            ),
        }
    }
    Ok(())
}

pub async fn apply(conn: &Connection, file: &std::path::Path, dry_run: bool) -> Outcome {
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
    if reply.changes.is_empty() {
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

pub async fn spec_show(conn: &Connection) -> Outcome {
    let mut client = connect(conn).await?;
    let reply = client
        .get_spec(pb::GetSpecRequest {})
        .await
        .map_err(|e| failed("spec show", e))?
        .into_inner();
    if reply.version == 0 {
        println!("# no spec applied yet");
    } else {
        println!("# spec version {}", reply.version);
        print!("{}", reply.spec);
    }
    Ok(())
}

pub async fn cleanup(conn: &Connection, group: Option<String>, node: Option<String>) -> Outcome {
    let mut client = connect(conn).await?;
    client
        .cleanup_resource(pb::CleanupResourceRequest {
            group: group.clone().unwrap_or_default(),
            node: node.clone().unwrap_or_default(),
            actor: actor(),
        })
        .await
        .map_err(|e| failed("cleanup", e))?;
    println!(
        "failure counts cleared for {} on {}",
        group.as_deref().unwrap_or("every group"),
        node.as_deref().unwrap_or("every node")
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

pub async fn fence(conn: &Connection, node: String, yes: bool, wait: Duration) -> Outcome {
    if !yes {
        confirm(&format!(
            "This powers off {node} through its fence devices; whatever runs there stops at once."
        ))?;
    }
    let mut client = connect_to(&conn.endpoint, wait + Duration::from_secs(5)).await?;
    eprintln!("fencing {node} (waiting up to {})...", humantime::format_duration(wait));
    let reply = client
        .fence_node(pb::FenceNodeRequest {
            node: node.clone(),
            actor: actor(),
            timeout_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
        })
        .await
        .map_err(|e| failed("fence", e))?
        .into_inner();
    if reply.fenced {
        println!("{node} fenced: {}", reply.summary);
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "fencing {node} failed: {}; the cluster retries (see `tandem events`)",
            reply.summary
        )))
    }
}

pub async fn fence_confirm(conn: &Connection, node: String, yes: bool) -> Outcome {
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
    println!(
        "{node} recorded as fenced: {} (log index {})",
        reply.summary, reply.log_index
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
