//! Offline checks, no cluster needed: `tandem config check FILE...` (one
//! node's file, or a whole cluster's files together) and `tandem spec check
//! -f SPEC [--config NODE.toml]` (everything `apply` checks that can be
//! checked here). Both print a report (`--output json`: one object) and exit
//! 0 when nothing is wrong, 2 when anything is.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tandem_api::spec_check::{self, SpecRefusal};
use tandem_core::config::{ConfigError, NodeConfig, check_cluster};
use tandem_core::spec::referenced_nodes;
use tandem_core::{NodeInfo, NodeRole};
use tandem_raft::store::AppliedState;

use crate::{Failure, Outcome, OutputFormat};

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Exit 0 without problems; 2 with them, saying how many and where.
fn verdict(check: &str, problems: usize, checked: &str) -> Outcome {
    if problems == 0 {
        Ok(())
    } else {
        Err(Failure::input(format!(
            "{check}: {problems} problem{} in {checked}",
            plural(problems)
        )))
    }
}

fn config_error_json(e: &ConfigError) -> Value {
    json!({ "file": e.file, "key": e.key, "message": e.message })
}

/// Files a configuration names (tokens, TLS) that this machine cannot read:
/// warnings, since the check may run elsewhere than on the node.
fn unreadable_files(file: &Path, c: &NodeConfig) -> Vec<ConfigError> {
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let mut named: Vec<(&str, &PathBuf)> = Vec::new();
    if let Some(p) = &c.security.operator_token_file {
        named.push(("security.operator_token_file", p));
    }
    if let Some(p) = &c.security.viewer_token_file {
        named.push(("security.viewer_token_file", p));
    }
    if let Some(t) = &c.tls {
        named.extend([("tls.cert", &t.cert), ("tls.key", &t.key), ("tls.ca", &t.ca)]);
    }
    named
        .into_iter()
        .filter_map(|(key, p)| {
            let path = base.join(p);
            std::fs::File::open(&path).err().map(|e| ConfigError {
                file: file.display().to_string(),
                key: key.to_string(),
                message: format!(
                    "{} cannot be read on this machine ({e}); the agent refuses to start without it",
                    path.display()
                ),
            })
        })
        .collect()
}

/// `tandem config check FILE...`.
pub fn config_check(files: &[PathBuf], output: OutputFormat) -> Outcome {
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut warnings: Vec<ConfigError> = Vec::new();
    let mut parsed: Vec<(String, NodeConfig)> = Vec::new();
    let mut per_file: Vec<Value> = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let result = std::fs::read_to_string(path)
            .map_err(|e| ConfigError {
                file: name.clone(),
                key: String::new(),
                message: format!("cannot read the configuration file: {e}"),
            })
            .and_then(|text| NodeConfig::parse(&text, &name));
        match result {
            Ok(c) => {
                warnings.extend(unreadable_files(path, &c));
                per_file.push(json!({
                    "file": name, "ok": true, "cluster": c.cluster, "node": c.node.name,
                    "role": c.node.role.as_str(),
                }));
                parsed.push((name, c));
            }
            Err(e) => {
                per_file.push(json!({ "file": name, "ok": false }));
                errors.push(e);
            }
        }
    }
    let together = check_cluster(&parsed);
    for e in &together.errors {
        if let Some(f) = per_file.iter_mut().find(|f| f["file"] == e.file.as_str()) {
            f["ok"] = json!(false);
        }
    }
    errors.extend(together.errors);
    warnings.extend(together.warnings);

    match output {
        OutputFormat::Json => {
            let report = json!({
                "ok": errors.is_empty(),
                "files": per_file,
                "errors": errors.iter().map(config_error_json).collect::<Vec<_>>(),
                "warnings": warnings.iter().map(config_error_json).collect::<Vec<_>>(),
            });
            println!("{report}");
        }
        OutputFormat::Table => {
            for (file, c) in &parsed {
                if !errors.iter().any(|e| &e.file == file) {
                    println!(
                        "{file}: ok (node {} of cluster {}, {})",
                        c.node.name, c.cluster, c.node.role
                    );
                }
            }
            for e in &errors {
                println!("error: {e}");
            }
            for w in &warnings {
                println!("warning: {w}");
            }
        }
    }
    verdict(
        "config check",
        errors.len(),
        &format!("{} file{}", files.len(), plural(files.len())),
    )
}

/// One check of `spec check` and how it went.
struct Check {
    name: &'static str,
    /// `ok`, `failed`, `skipped` (could not run here) or `needs-cluster`.
    result: &'static str,
    detail: String,
}

fn refusal_json(check: &str, e: &SpecRefusal) -> Value {
    match e {
        SpecRefusal::Spec(e) => json!({
            "check": check, "file": e.file, "group": e.group, "resource": e.resource,
            "field": e.field, "message": e.message, "text": e.to_string(),
        }),
        SpecRefusal::Resource {
            file,
            group,
            resource,
            message,
        } => json!({
            "check": check, "file": file, "group": group, "resource": resource,
            "field": "agent", "message": message, "text": e.to_string(),
        }),
        SpecRefusal::Dns { file, message } => json!({
            "check": check, "file": file, "group": null, "resource": null,
            "field": "dns", "message": message, "text": e.to_string(),
        }),
        SpecRefusal::Fence { file, device, message } => json!({
            "check": check, "file": file, "group": null, "resource": null,
            "field": format!("fencing.devices.{device}"), "message": message, "text": e.to_string(),
        }),
    }
}

/// `tandem spec check -f SPEC [--config NODE.toml]`.
pub async fn spec_check(file: &Path, config: Option<&Path>, output: OutputFormat) -> Outcome {
    let name = file.display().to_string();
    let text =
        std::fs::read_to_string(file).map_err(|e| Failure::input(format!("{name}: cannot read the spec: {e}")))?;
    let mut checks: Vec<Check> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    let mut shown: Vec<String> = Vec::new();
    let mut fail = |check: &'static str, e: SpecRefusal, errors: &mut Vec<Value>| {
        errors.push(refusal_json(check, &e));
        shown.push(e.to_string());
    };

    let (cluster, members) = match config {
        Some(path) => {
            let config = crate::agent::load_config(path)?;
            checks.push(Check {
                name: "node names",
                result: "pending",
                detail: format!(
                    "against the initial members of {} ({}); the cluster's members may have changed since \
                     (tandem members add/remove): apply checks against the members in force",
                    path.display(),
                    config
                        .members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            (config.cluster, config.members)
        }
        None => {
            let names = referenced_nodes(&text);
            checks.push(Check {
                name: "node names",
                result: "skipped",
                detail: format!(
                    "not checked against the cluster's members without --config NODE.toml (the spec names: {}); \
                     a witness in prefer or fencing.nodes is refused only with the member list",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    }
                ),
            });
            let members = names
                .into_iter()
                .map(|name| NodeInfo {
                    name,
                    address: String::new(),
                    role: NodeRole::Member,
                })
                .collect();
            ("tandem".to_string(), members)
        }
    };

    let mut summary = Value::Null;
    let mut warnings: Vec<String> = Vec::new();
    match spec_check::parse(&text, &name, &members) {
        Err(e) => {
            fail("file", e, &mut errors);
            checks.insert(
                0,
                Check {
                    name: "file",
                    result: "failed",
                    detail: "syntax, keys, names, values, references between groups, cycles".into(),
                },
            );
            if let Some(c) = checks.iter_mut().find(|c| c.result == "pending") {
                c.result = "skipped";
            }
            for name in ["resource agents", "dns zone", "fence devices"] {
                checks.push(Check {
                    name,
                    result: "skipped",
                    detail: "the file did not parse".into(),
                });
            }
        }
        Ok(spec) => {
            checks.insert(
                0,
                Check {
                    name: "file",
                    result: "ok",
                    detail: "syntax, keys, names, values, references between groups, cycles".into(),
                },
            );
            if let Some(c) = checks.iter_mut().find(|c| c.result == "pending") {
                c.result = "ok";
            }
            warnings = spec_check::warnings(&spec, &name);
            summary = json!({
                "groups": spec.groups.len(),
                "resources": spec.groups.iter().map(|g| g.resources.len()).sum::<usize>(),
                "fence_devices": spec.fencing.devices.len(),
            });
            let problems = spec_check::check_resources(&spec, &name, &crate::agent::ocf_root()).await;
            checks.push(Check {
                name: "resource agents",
                result: if problems.is_empty() { "ok" } else { "failed" },
                detail: "OCF agents and their required parameters, commands and users, as this machine has them; \
                         apply checks them on the coordinator, and each node needs them to run the group"
                    .into(),
            });
            for e in problems {
                fail("resource agents", e, &mut errors);
            }
            let zone = spec_check::check_zone(&spec, &name, &cluster, &AppliedState::default(), &members);
            checks.push(Check {
                name: "dns zone",
                result: if zone.is_ok() { "ok" } else { "failed" },
                detail: if config.is_some() {
                    "static records, names and sizes of the zone".into()
                } else {
                    "static records, names and sizes of the zone (its default name comes from the cluster's name: \
                     give --config to check that one)"
                        .into()
                },
            });
            if let Err(e) = zone {
                fail("dns zone", e, &mut errors);
            }
            let problems = spec_check::check_fence_devices(&spec, &name);
            checks.push(Check {
                name: "fence devices",
                result: if problems.is_empty() { "ok" } else { "failed" },
                detail: "agents or commands and their parameters, as this machine has them; the coordinator runs \
                         them, so every node that may become coordinator needs them"
                    .into(),
            });
            for e in problems {
                fail("fence devices", e, &mut errors);
            }
        }
    }
    checks.push(Check {
        name: "live cluster",
        result: "needs-cluster",
        detail: "the members in force and the spec version (a concurrent apply); `tandem spec diff -f FILE` shows \
                 what apply would change"
            .into(),
    });

    match output {
        OutputFormat::Json => {
            let report = json!({
                "file": name,
                "ok": errors.is_empty(),
                "spec": summary,
                "errors": errors,
                "warnings": warnings,
                "checks": checks.iter().map(|c| json!({
                    "check": c.name, "result": c.result, "detail": c.detail,
                })).collect::<Vec<_>>(),
            });
            println!("{report}");
        }
        OutputFormat::Table => {
            for c in &checks {
                println!("{:<16} {:<14} {}", c.name, c.result, c.detail);
            }
            for e in &shown {
                println!("error: {e}");
            }
            for w in &warnings {
                println!("warning: {w}");
            }
        }
    }
    verdict("spec check", errors.len(), &name)
}
