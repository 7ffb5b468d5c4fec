//! `bench failover`: from `kill -9` of the coordinator to a new coordinator
//! answering GetStatus as coordinator.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::wait_stable;
use super::stats::report;
use crate::client::connect_to;
use crate::cluster::DemoCluster;
use crate::{Failure, Outcome};

pub(super) async fn failover(cluster: &mut DemoCluster, runs: usize, timeout: Duration) -> Outcome {
    println!("failover: {runs} runs of kill -9 of the coordinator, default timing");
    let mut samples = Vec::with_capacity(runs);
    for run in 1..=runs {
        let victim = wait_stable(cluster, timeout).await?;
        // Let the survivors hear a few heartbeats so the kill lands at a random point of the cycle.
        tokio::time::sleep(Duration::from_millis(300 + (run as u64 * 37) % 100)).await;
        let mut survivors: Vec<(String, crate::client::Client)> = Vec::new();
        for n in cluster.nodes.iter().filter(|n| n.name != victim) {
            survivors.push((
                n.name.clone(),
                connect_to(&n.address, Duration::from_secs(2), &Default::default()).await?,
            ));
        }
        cluster.kill9(&victim).await?;
        let start = Instant::now();
        let new = 'found: loop {
            for (name, client) in &mut survivors {
                if let Ok(r) = client.get_status(pb::GetStatusRequest {}).await {
                    let s = r.into_inner();
                    if s.coordinator.as_deref() == Some(name.as_str()) {
                        break 'found name.clone();
                    }
                }
            }
            if start.elapsed() > timeout {
                return Err(Failure::runtime(format!(
                    "run {run}: no new coordinator within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        println!("  run {run:>3}: {victim} killed, {new} coordinator after {ms:.1} ms");
        samples.push(ms);
        cluster.start(&victim)?;
    }
    report("failover (kill -9 to new coordinator answering)", " ms", &mut samples);
    Ok(())
}
