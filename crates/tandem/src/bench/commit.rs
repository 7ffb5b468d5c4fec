//! `bench commit`: latency of small committed writes (an operator note),
//! fsync'ed on a majority.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::coordinator;
use super::stats::report;
use crate::Outcome;
use crate::client::{actor, failed};
use crate::cluster::DemoCluster;

pub(super) async fn commit(cluster: &DemoCluster, writes: usize) -> Outcome {
    let (coordinator, mut client) = coordinator(cluster, Duration::from_secs(10)).await?;
    println!("commit: {writes} sequential notes through the coordinator ({coordinator}), each fsync'ed on a majority");
    let who = actor();
    let mut samples = Vec::with_capacity(writes);
    for i in 0..writes {
        let start = Instant::now();
        client
            .annotate(pb::AnnotateRequest {
                message: format!("bench write {i}"),
                actor: who.clone(),
            })
            .await
            .map_err(|e| failed("annotate", e))?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    report("commit latency", " ms", &mut samples);
    Ok(())
}
