//! Every check a spec passes before it is committed, in one place: `apply`
//! (on the coordinator, against the live cluster) and `tandem spec check`
//! (offline, on the operator's machine) run the same functions.
//!
//! The checks, in order: the file itself ([`Spec::parse`]: syntax, keys,
//! names, values, cycles, node names against the members); each resource's
//! agent on this machine ([`tandem_agents::validate`]: the OCF agent and its
//! required parameters, the command and user); the DNS zone the spec gives
//! (static records, names, sizes); each fence device on this machine
//! ([`tandem_agents::fence::validate_device`]: the agent or command, the
//! parameters, the files secrets are read from). [`warnings`]: what is
//! accepted but deserves a word.

use std::fmt;
use std::path::Path;

use tandem_core::NodeInfo;
use tandem_core::spec::{Spec, SpecError};
use tandem_raft::store::AppliedState;

/// Why a spec is refused: which check, and where in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecRefusal {
    /// The file itself.
    Spec(SpecError),
    /// A resource's agent cannot run here.
    Resource {
        file: String,
        group: String,
        resource: String,
        message: String,
    },
    /// The zone the spec gives does not build.
    Dns { file: String, message: String },
    /// A fence device cannot run here (secrets redacted).
    Fence {
        file: String,
        device: String,
        message: String,
    },
}

impl fmt::Display for SpecRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecRefusal::Spec(e) => e.fmt(f),
            SpecRefusal::Resource {
                file,
                group,
                resource,
                message,
            } => write!(f, "{file}: group {group:?}: resource {resource:?}: {message}"),
            SpecRefusal::Dns { file, message } => write!(f, "{file}: dns: {message}"),
            SpecRefusal::Fence { file, device, message } => {
                write!(f, "{file}: fencing.devices.{device}: {message}")
            }
        }
    }
}

impl std::error::Error for SpecRefusal {}

/// The file itself, against `members` (CPU work for a large spec: call it
/// off the async workers).
pub fn parse(text: &str, file: &str, members: &[NodeInfo]) -> Result<Spec, SpecRefusal> {
    Spec::parse(text, file, members).map_err(SpecRefusal::Spec)
}

/// Every resource's agent, as this machine has it; all problems, in the
/// spec's order.
pub async fn check_resources(spec: &Spec, file: &str, ocf_root: &Path) -> Vec<SpecRefusal> {
    let mut problems = Vec::new();
    for g in &spec.groups {
        for r in &g.resources {
            if let Err(message) = tandem_agents::validate(r, ocf_root).await {
                problems.push(SpecRefusal::Resource {
                    file: file.to_string(),
                    group: g.name.clone(),
                    resource: r.name.clone(),
                    message,
                });
            }
        }
    }
    problems
}

/// The zone `spec` would give on a cluster named `cluster` in `state` (the
/// applied state now; the default state offline) with `members`.
pub fn check_zone(
    spec: &Spec,
    file: &str,
    cluster: &str,
    state: &AppliedState,
    members: &[NodeInfo],
) -> Result<(), SpecRefusal> {
    let mut trial = state.clone();
    trial.cluster.spec = spec.clone();
    tandem_node::dns::build_zone(cluster, &trial, members)
        .map(|_| ())
        .map_err(|message| SpecRefusal::Dns {
            file: file.to_string(),
            message,
        })
}

/// Every fence device, as this machine would run it; all problems.
pub fn check_fence_devices(spec: &Spec, file: &str) -> Vec<SpecRefusal> {
    spec.fencing
        .devices
        .iter()
        .filter_map(|(name, d)| {
            tandem_agents::fence::validate_device(d)
                .err()
                .map(|e| SpecRefusal::Fence {
                    file: file.to_string(),
                    device: name.clone(),
                    message: d.redact(&e),
                })
        })
        .collect()
}

/// What is accepted but deserves a word: fence secrets written in the spec
/// itself, which the replicated state (Raft log, snapshots, backups) then
/// holds on every node. Never the secret, only where it is.
pub fn warnings(spec: &Spec, file: &str) -> Vec<String> {
    spec.fencing
        .devices
        .iter()
        .flat_map(|(name, d)| {
            d.inline_secret_params().into_iter().map(move |param| {
                let instead = if tandem_core::spec::is_secret_param_name(param) {
                    format!(
                        "put it in a file on every node that may become coordinator and write \
                         `{param}_file = \"/etc/tandem/secrets/{name}.{param}\"` instead"
                    )
                } else {
                    "pass it through an exec device that reads it on the node instead".to_string()
                };
                format!(
                    "{file}: fencing.devices.{name}.params.{param}: the secret is written in the spec, so the \
                     replicated state (the Raft log, snapshots and backups of every node) holds it; {instead}"
                )
            })
        })
        .collect()
}
