//! `bench placement`: the pure placement computation for many resources on
//! many nodes, then validating and committing such a spec on the cluster.

use std::time::{Duration, Instant};

use tandem_proto::v1 as pb;

use super::common::coordinator;
use super::stats::report;
use crate::Outcome;
use crate::client::{actor, failed};
use crate::cluster::DemoCluster;

/// The pure placement computation on a synthetic cluster: every group
/// prefers three nodes, clones one in ten, anti-affinity between neighbours.
pub(super) fn compute(nodes: usize, groups: usize, per_group: usize, runs: usize) {
    use std::collections::BTreeMap;
    use tandem_core::NodeRole;
    use tandem_core::lease::NodeState;
    use tandem_core::placement::{NodeFacts, plan};
    use tandem_core::spec::{ActionTimeouts, AgentSpec, GroupKind, GroupSpec, Placement, ResourceSpec, Spec};

    let names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
    let facts: Vec<NodeFacts> = names
        .iter()
        .map(|n| NodeFacts {
            name: n.clone(),
            role: NodeRole::Member,
            state: NodeState::Up,
            lease_expired: false,
            standby: false,
            freshness: Default::default(),
        })
        .collect();
    let spec = Spec {
        groups: (0..groups)
            .map(|g| GroupSpec {
                name: format!("group-{g}"),
                kind: if g % 10 == 9 {
                    GroupKind::Clone
                } else {
                    GroupKind::Exclusive
                },
                resources: (0..per_group)
                    .map(|r| ResourceSpec {
                        name: format!("r{r}"),
                        agent: AgentSpec::Commands {
                            start: "true".into(),
                            stop: "true".into(),
                            monitor: "true".into(),
                        },
                        timeouts: ActionTimeouts::default(),
                        monitor_interval: Duration::from_secs(10),
                    })
                    .collect(),
                placement: Placement {
                    prefer: (0..3)
                        .map(|k| (names[(g + k * 7) % nodes].clone(), 100 - 10 * k as i64))
                        .collect(),
                    avoid: Vec::new(),
                    anti_affinity: if g > 0 {
                        vec![format!("group-{}", g - 1)]
                    } else {
                        Vec::new()
                    },
                    fail_back: false,
                },
                migration_threshold: 3,
                failure_timeout: Duration::from_secs(600),
                after: Vec::new(),
                dns: Default::default(),
                max_lag: None,
                hooks: Default::default(),
            })
            .collect(),
        ..Spec::default()
    };
    println!(
        "placement: {} resources in {groups} groups on {nodes} nodes, {runs} runs of the pure computation",
        groups * per_group
    );
    let no_groups = BTreeMap::new();
    let no_fencing = BTreeMap::new();
    let mut samples = Vec::with_capacity(runs);
    let mut decisions = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let p = plan(&spec, &no_groups, &no_fencing, &facts, 0);
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        decisions = p.decisions.len();
    }
    println!("  {decisions} decisions per run");
    report("placement compute (fresh cluster)", " ms", &mut samples);
}

/// Validating and committing a large spec through `ApplySpec` on the local
/// cluster. Its groups avoid every node, so the figure is the spec's own
/// cost, not that of starting thousands of processes.
pub(super) async fn apply(cluster: &DemoCluster, groups: usize, per_group: usize, runs: usize) -> Outcome {
    use std::fmt::Write as _;
    let mut text = String::new();
    for g in 0..groups {
        let _ = writeln!(
            text,
            "[[groups]]\nname = \"group-{g}\"\navoid = [\"site-a\", \"site-b\"]"
        );
        for r in 0..per_group {
            let _ = writeln!(
                text,
                "[[groups.resources]]\nname = \"r{r}\"\nagent = \"exec\"\nstart = \"true\"\nstop = \"true\"\nmonitor = \"true\""
            );
        }
    }
    let (_, mut client) = coordinator(cluster, Duration::from_secs(120)).await?;
    println!(
        "placement: applying a spec of {} resources in {groups} groups ({} KiB of TOML), {runs} runs alternating two versions",
        groups * per_group,
        text.len() / 1024
    );
    let mut samples = Vec::with_capacity(runs);
    for run in 0..runs {
        // Alternate so that every apply is a real change.
        let spec = if run % 2 == 0 {
            text.clone()
        } else {
            text.replace("monitor = \"true\"", "monitor = \"true \"")
        };
        let start = Instant::now();
        client
            .apply_spec(pb::ApplySpecRequest {
                spec,
                file: "bench.toml".into(),
                dry_run: false,
                actor: actor(),
            })
            .await
            .map_err(|e| failed("apply", e))?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    report("apply (validate, diff, commit on 3 nodes)", " ms", &mut samples);
    Ok(())
}
