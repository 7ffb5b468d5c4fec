//! What the fuzz targets (`fuzz/`, cargo-fuzz) and their stable slice in
//! this crate's tests feed arbitrary bytes to: the spec and configuration
//! parsers, and what a parsed spec then drives in the core. None of it may
//! panic, whatever the input: a spec comes from an operator's file or over
//! the network (`tandem apply`), a configuration from a file.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{NodeConfig, check_cluster};
use crate::lease::NodeState;
use crate::membership::{NodeInfo, NodeRole};
use crate::placement::NodeFacts;
use crate::spec::{Spec, diff, redact_source};
use crate::state::{ClusterState, Command};
use crate::whatif::{Hypothesis, simulate};

/// The cluster every fuzzed spec is parsed for: the demo's two sites and
/// a witness.
pub fn members() -> Vec<NodeInfo> {
    ["site-a", "site-b", "witness"]
        .into_iter()
        .map(|name| NodeInfo {
            name: name.to_string(),
            address: format!("{name}:7400"),
            role: if name == "witness" {
                NodeRole::Witness
            } else {
                NodeRole::Member
            },
        })
        .collect()
}

/// Parses `data` as a spec; one that parses is diffed against the empty
/// spec both ways, redacted, applied to a fresh state through the state
/// machine's own `apply`, and played forward by placement (what-if) with
/// every node up, then with each member lost and in standby.
/// Returns whether the spec parsed.
pub fn spec(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let members = members();
    let Ok(spec) = Spec::parse(text, "fuzz.toml", &members) else {
        return false;
    };
    let empty = Spec::default();
    let _ = diff(&empty, &spec);
    let _ = diff(&spec, &empty);
    let _ = redact_source(text, &spec);

    let mut state = ClusterState::default();
    state.apply(&Command::ApplySpec {
        spec: spec.clone(),
        source: text.to_string(),
        expected_version: 0,
        summary: Vec::new(),
        actor: "fuzz".to_string(),
        at_unix_ms: 0,
    });
    let facts: Vec<NodeFacts> = members
        .iter()
        .map(|m| NodeFacts {
            name: m.name.clone(),
            role: m.role,
            state: NodeState::Up,
            lease_expired: false,
            standby: false,
            freshness: BTreeMap::new(),
        })
        .collect();
    let mut hypotheses = vec![Hypothesis::default()];
    for m in members.iter().filter(|m| m.role == NodeRole::Member) {
        let one = BTreeSet::from([m.name.clone()]);
        hypotheses.push(Hypothesis {
            nodes_down: one.clone(),
            ..Hypothesis::default()
        });
        hypotheses.push(Hypothesis {
            standby: one,
            ..Hypothesis::default()
        });
    }
    for what in &hypotheses {
        let _ = simulate(&state, &facts, what, 0);
    }
    // The same spec as a change of the one in force.
    let _ = simulate(
        &ClusterState::default(),
        &facts,
        &Hypothesis {
            spec: Some(spec),
            ..Hypothesis::default()
        },
        0,
    );
    true
}

/// Parses `data` as a node configuration; one that parses is checked as a
/// cluster of one file, and its members listed by id. Returns whether it
/// parsed.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(config) = NodeConfig::parse(text, "fuzz.toml") else {
        return false;
    };
    let _ = config.members_by_id();
    let _ = check_cluster(&[("fuzz.toml".to_string(), config)]);
    true
}
