//! What the benchmarks do on the cluster alike: wait until it is stable,
//! find the coordinator, commit a spec, see where a group runs, and poll
//! every node's DNS.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use crate::client::{actor, connect_to, failed};
use crate::cluster::{DemoCluster, agreed_coordinator};
use crate::{Failure, Outcome};

/// Waits until all agree on one coordinator, every node is up and has
/// applied everything the coordinator committed.
pub(super) async fn wait_stable(cluster: &DemoCluster, timeout: Duration) -> Result<String, Failure> {
    let count = cluster.nodes.iter().filter(|n| n.running()).count();
    cluster
        .wait_for(timeout, "a stable, caught-up cluster", |st| {
            let (c, _) = agreed_coordinator(st)?;
            let committed = st.iter().find(|(n, _)| *n == c)?.1.as_ref()?.commit_index;
            st.iter()
                .all(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.applied_index >= committed
                            && s.nodes.iter().filter(|n| n.state == pb::NodeState::Up as i32).count() >= count
                    })
                })
                .then_some(c)
        })
        .await
}

/// The coordinator's name and a client connected to it.
pub(super) async fn coordinator(
    cluster: &DemoCluster,
    timeout: Duration,
) -> Result<(String, crate::client::Client), Failure> {
    let statuses = cluster.statuses(Duration::from_secs(2)).await;
    let (name, _) = agreed_coordinator(&statuses).ok_or_else(|| Failure::runtime("no agreed coordinator"))?;
    let address = cluster
        .node(&name)
        .map(|n| n.address.clone())
        .ok_or_else(|| Failure::runtime("the coordinator is not a local node"))?;
    Ok((name, connect_to(&address, timeout, &Default::default()).await?))
}

/// Commits `spec` through the coordinator.
pub(super) async fn apply(cluster: &DemoCluster, spec: String, file: &str, timeout: Duration) -> Outcome {
    coordinator(cluster, timeout)
        .await?
        .1
        .apply_spec(pb::ApplySpecRequest {
            spec,
            file: file.into(),
            dry_run: false,
            actor: actor(),
        })
        .await
        .map_err(|e| failed("apply", e))?;
    Ok(())
}

/// The node every answering node reports running `group` on, if they agree.
pub(super) fn running_on(st: &[(String, Option<pb::ClusterStatus>)], group: &str) -> Option<String> {
    let mut on = None;
    for (_, s) in st {
        let g = s.as_ref()?.groups.iter().find(|g| g.name == group)?;
        if g.state != "running" || g.primary.is_none() || (on.is_some() && on != g.primary) {
            return None;
        }
        on = g.primary.clone();
    }
    on
}

/// The member `group` does not run on now (site-a or site-b), and its
/// address on loopback: where a switchover sends it.
pub(super) fn other_member(primary: &str) -> Result<(&'static str, std::net::Ipv4Addr), Failure> {
    let target = if primary == "site-a" { "site-b" } else { "site-a" };
    DemoCluster::NAMES
        .iter()
        .position(|(n, _)| *n == target)
        .map(|i| (target, DemoCluster::ip(i)))
        .ok_or_else(|| Failure::runtime("no such node"))
}

/// A switchover of `group` to `target` through `client` (the coordinator),
/// until its progress stream says it is done: its transition, with the
/// phase times the cluster recorded.
pub(super) async fn switchover_to(
    client: &mut crate::client::Client,
    group: &str,
    target: &str,
    timeout: Duration,
) -> Result<Option<pb::Transition>, Failure> {
    let mut stream = client
        .switchover(pb::MoveRequest {
            group: group.into(),
            to: target.into(),
            force: false,
            actor: actor(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })
        .await
        .map_err(|e| failed("switchover", e))?
        .into_inner();
    while let Some(p) = stream.message().await.map_err(|e| failed("switchover", e))? {
        if p.done {
            if !p.ok {
                return Err(Failure::runtime(format!("switchover failed: {}", p.message)));
            }
            return Ok(p.transition);
        }
    }
    Err(Failure::runtime("the switchover's stream ended before it was done"))
}

/// Asks every DNS server, `every` so often, until all answer `addr` for
/// `web.demo.tandem.`; returns when they did (unix ms).
pub(super) fn poll_dns_until(
    servers: Vec<std::net::SocketAddr>,
    addr: std::net::IpAddr,
    deadline: Instant,
    every: Duration,
) -> Option<u64> {
    while Instant::now() < deadline {
        let all = servers.iter().all(|s| {
            tandem_dns::client::lookup(*s, "web.demo.tandem.", false, Duration::from_millis(200))
                .is_ok_and(|l| l.addrs == vec![addr])
        });
        if all {
            return Some(crate::client::unix_ms_now());
        }
        std::thread::sleep(every);
    }
    None
}
