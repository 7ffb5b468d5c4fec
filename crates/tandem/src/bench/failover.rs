//! `bench failover`: from `kill -9` of the coordinator to a new coordinator
//! committing a write; and `bench handover`: how long writes stop while the
//! coordinator stops cleanly (SIGTERM), handing its role over first.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::wait_stable;
use super::stats::report;
use crate::client::{Client, actor, connect_to};
use crate::cluster::DemoCluster;
use crate::{Failure, Outcome};

/// Commits an operator note through `client`.
async fn write(client: &mut Client, what: &str) -> bool {
    client
        .annotate(pb::AnnotateRequest {
            message: what.into(),
            actor: actor(),
        })
        .await
        .is_ok()
}

/// Clients of every running node but `except`, by name.
async fn clients(cluster: &DemoCluster, except: &str) -> Result<Vec<(String, Client)>, Failure> {
    let mut out = Vec::new();
    for n in cluster.nodes.iter().filter(|n| n.name != except && n.running()) {
        out.push((
            n.name.clone(),
            connect_to(&n.address, Duration::from_secs(2), &Default::default()).await?,
        ));
    }
    Ok(out)
}

pub(super) async fn failover(cluster: &mut DemoCluster, runs: usize, timeout: Duration) -> Outcome {
    println!("failover: {runs} runs of kill -9 of the coordinator, default timing");
    let mut elected = Vec::with_capacity(runs);
    let mut writable = Vec::with_capacity(runs);
    for run in 1..=runs {
        let victim = wait_stable(cluster, timeout).await?;
        // Let the survivors hear a few heartbeats so the kill lands at a random point of the cycle.
        tokio::time::sleep(Duration::from_millis(300 + (run as u64 * 37) % 100)).await;
        let mut survivors = clients(cluster, &victim).await?;
        cluster.kill9(&victim).await?;
        let start = Instant::now();
        let mut new: Option<(String, f64)> = None;
        let wrote = 'wrote: loop {
            for (name, client) in &mut survivors {
                if new.is_none()
                    && let Ok(r) = client.get_status(pb::GetStatusRequest {}).await
                    && r.into_inner().coordinator.as_deref() == Some(name.as_str())
                {
                    new = Some((name.clone(), start.elapsed().as_secs_f64() * 1000.0));
                }
                // Written through each survivor in turn: a follower forwards
                // to the coordinator it knows.
                if write(client, &format!("failover run {run}")).await {
                    break 'wrote start.elapsed().as_secs_f64() * 1000.0;
                }
            }
            if start.elapsed() > timeout {
                return Err(Failure::runtime(format!(
                    "run {run}: no write committed within {timeout:?} of the kill"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let (new, answered) = new.unwrap_or_else(|| ("?".into(), wrote));
        println!(
            "  run {run:>3}: {victim} killed, {new} coordinator after {answered:.1} ms, first write committed after {wrote:.1} ms"
        );
        elected.push(answered);
        writable.push(wrote);
        cluster.start(&victim)?;
    }
    report("failover (kill -9 to a new coordinator answering)", " ms", &mut elected);
    report("failover (kill -9 to the first committed write)", " ms", &mut writable);
    Ok(())
}

pub(super) async fn handover(cluster: &mut DemoCluster, runs: usize, timeout: Duration) -> Outcome {
    println!(
        "handover: {runs} runs of a clean stop (SIGTERM) of the coordinator while writing through the witness \
         without pause; the figure is the longest time between two committed writes"
    );
    let mut gaps = Vec::with_capacity(runs);
    for run in 1..=runs {
        let victim = wait_stable(cluster, timeout).await?;
        let writer_node = if victim == "witness" { "site-a" } else { "witness" };
        let Some((_, mut client)) = clients(cluster, &victim)
            .await?
            .into_iter()
            .find(|(n, _)| n == writer_node)
        else {
            return Err(Failure::runtime(format!("no client of {writer_node}")));
        };
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let writer = tokio::spawn(async move {
            let mut last_ok: Option<Instant> = None;
            let mut longest = Duration::ZERO;
            let mut writes = 0u64;
            while !*stop_rx.borrow_and_update() {
                if write(&mut client, "handover").await {
                    let now = Instant::now();
                    if let Some(prev) = last_ok {
                        longest = longest.max(now - prev);
                    }
                    last_ok = Some(now);
                    writes += 1;
                }
            }
            (longest, writes)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.sigterm(&victim, timeout).await?;
        let new = wait_stable(cluster, timeout).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_tx.send(true);
        let (gap, writes) = writer
            .await
            .map_err(|e| Failure::runtime(format!("the writer failed: {e}")))?;
        let ms = gap.as_secs_f64() * 1000.0;
        println!(
            "  run {run:>3}: {victim} stopped, {new} coordinator; longest gap between writes {ms:.1} ms ({writes} writes)"
        );
        gaps.push(ms);
        cluster.start(&victim)?;
    }
    report("handover (longest gap between committed writes)", " ms", &mut gaps);
    Ok(())
}
