//! `bench commit`: latency of small committed writes (an operator note),
//! fsync'ed on a majority; with `--vs-etcd`, the same on a three-member etcd
//! cluster beside it, in alternating rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::coordinator;
use super::etcd::Etcd;
use super::stats::report;
use crate::Outcome;
use crate::client::{Client, actor, failed};
use crate::cluster::DemoCluster;

/// Writes per round when Tandem and etcd take turns.
const ROUND: usize = 50;

async fn note(client: &mut Client, who: &str, i: usize) -> Result<f64, crate::Failure> {
    let start = Instant::now();
    client
        .annotate(pb::AnnotateRequest {
            message: format!("bench write {i}"),
            actor: who.to_owned(),
        })
        .await
        .map_err(|e| failed("annotate", e))?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

pub(super) async fn commit(cluster: &DemoCluster, writes: usize, vs_etcd: bool, dir: &Path) -> Outcome {
    let (coordinator, mut client) = coordinator(cluster, Duration::from_secs(10)).await?;
    let who = actor();
    let mut tandem = Vec::with_capacity(writes);
    if !vs_etcd {
        println!(
            "commit: {writes} sequential notes through the coordinator ({coordinator}), each fsync'ed on a majority"
        );
        for i in 0..writes {
            tandem.push(note(&mut client, &who, i).await?);
        }
        report("commit latency", " ms", &mut tandem);
        return Ok(());
    }
    let mut etcd = Etcd::start(dir, Duration::from_secs(30)).await?;
    println!(
        "commit: {writes} sequential small writes each, Tandem through its coordinator ({coordinator}) and a \
         three-member etcd through its leader ({}), in alternating rounds of {ROUND}, both fsync'ed on a majority",
        etcd.leader_name
    );
    let mut theirs = Vec::with_capacity(writes);
    let mut i = 0;
    while i < writes {
        let n = ROUND.min(writes - i);
        for k in i..i + n {
            tandem.push(note(&mut client, &who, k).await?);
        }
        for k in i..i + n {
            theirs.push(etcd.put(format!("bench-{k}").as_bytes()).await?.as_secs_f64() * 1000.0);
        }
        i += n;
    }
    report("commit latency, Tandem", " ms", &mut tandem);
    report("commit latency, etcd  ", " ms", &mut theirs);
    Ok(())
}
