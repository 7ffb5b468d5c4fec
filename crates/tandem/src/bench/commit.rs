//! `bench commit`: latency of small committed writes (an operator note),
//! fsync'ed on a majority; with `--vs-etcd`, the same on a three-member etcd
//! cluster beside it, in alternating rounds; with `--spec-resources`, the
//! same after specs of those sizes, in alternating rounds.

use std::path::Path;
use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::{apply, coordinator};
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

/// Rounds of `--spec-resources`: every size is applied and timed this many
/// times, in turn.
const SPEC_ROUNDS: usize = 3;

/// A spec of `resources` resources in groups of 10 that avoid both members
/// (nothing is placed or started: the figure is the state's size, not the
/// cost of starting thousands of processes); `variant` changes every
/// resource's monitor command, so each apply is a real change.
fn spec_of(resources: usize, variant: usize) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    for g in 0..resources.div_ceil(10) {
        let _ = writeln!(
            text,
            "[[groups]]\nname = \"group-{g}\"\navoid = [\"site-a\", \"site-b\"]"
        );
        for r in 0..(resources - g * 10).min(10) {
            let _ = writeln!(
                text,
                "[[groups.resources]]\nname = \"r{r}\"\nagent = \"exec\"\nstart = \"true\"\nstop = \"true\"\n\
                 monitor = \"true {variant}\""
            );
        }
    }
    text
}

/// `--spec-resources`: for each size in turn, commit a spec of that size,
/// then time `writes / SPEC_ROUNDS` small writes; figures per size.
pub(super) async fn after_specs(cluster: &DemoCluster, writes: usize, sizes: &[usize], timeout: Duration) -> Outcome {
    let per_round = writes.div_ceil(SPEC_ROUNDS).max(1);
    println!(
        "commit: after specs of {} resources, {SPEC_ROUNDS} rounds of {per_round} sequential notes each through the \
         coordinator, each fsync'ed on a majority",
        sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    );
    let who = actor();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut applies: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    let mut k = 0;
    for round in 0..SPEC_ROUNDS {
        for (i, &size) in sizes.iter().enumerate() {
            let start = Instant::now();
            apply(cluster, spec_of(size, round), "bench.toml", timeout).await?;
            applies[i].push(start.elapsed().as_secs_f64() * 1000.0);
            let (_, mut client) = coordinator(cluster, timeout).await?;
            for _ in 0..per_round {
                samples[i].push(note(&mut client, &who, k).await?);
                k += 1;
            }
        }
    }
    for (i, size) in sizes.iter().enumerate() {
        report(&format!("apply of a spec of {size} resources"), " ms", &mut applies[i]);
        report("commit latency after it", " ms", &mut samples[i]);
    }
    Ok(())
}
