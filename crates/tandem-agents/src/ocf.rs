//! The `ocf` class: Open Cluster Framework resource agents
//! (`OCF_ROOT/resource.d/PROVIDER/TYPE ACTION`, parameters as
//! `OCF_RESKEY_NAME`), as Pacemaker runs them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_core::groups::Freshness;
use tokio::process::Command;

use crate::exec::{self, End, describe};
use crate::output::LogCtx;
use crate::{Action, Env, Outcome, is_executable, tandem_env};

/// Time allowed for `meta-data` during validation.
const META_DATA_TIMEOUT: Duration = Duration::from_secs(20);
/// Directories every agent's PATH contains (agents call tools in sbin).
const PATH_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// What the OCF exit codes mean (OCF resource agent API 1.1, with the
/// Pacemaker extensions 8, 9, 190, 191).
pub(crate) fn meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "generic error",
        2 => "invalid arguments",
        3 => "unimplemented action",
        4 => "insufficient privileges",
        5 => "not installed",
        6 => "not configured",
        7 => "not running",
        8 => "running promoted",
        9 => "failed promoted",
        190 => "degraded",
        191 => "degraded promoted",
        _ => "unknown code",
    }
}

/// Maps an OCF exit code to an outcome for `action`.
pub(crate) fn outcome(action: Action, code: i32) -> Outcome {
    let failed = || format!("OCF exit {code} ({})", meaning(code));
    match (action, code) {
        (_, 0) => Outcome::Ok,
        (Action::Monitor, 7) => Outcome::NotRunning,
        // Stopping what does not run succeeded.
        (Action::Stop, 7) => Outcome::Ok,
        // Running, though degraded (Pacemaker also counts it as running).
        (Action::Monitor, 190) => Outcome::Ok,
        (_, 5 | 6) => Outcome::Unavailable(failed()),
        _ => Outcome::Failed(failed()),
    }
}

fn part_ok(p: &str) -> bool {
    !p.is_empty() && p != "." && p != ".." && !p.contains('/') && !p.contains('\0')
}

fn param_ok(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `OCF_ROOT/resource.d/PROVIDER/TYPE`, if the names are plain names.
fn agent_path(ocf_root: &Path, provider: &str, agent: &str) -> Result<PathBuf, String> {
    if !part_ok(provider) || !part_ok(agent) {
        return Err(format!("ocf:{provider}:{agent} is not a valid OCF agent name"));
    }
    Ok(ocf_root.join("resource.d").join(provider).join(agent))
}

/// The current PATH with the standard directories appended where missing.
fn agent_path_var() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in PATH_DIRS {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| PATH_DIRS.join(":").into())
}

/// The agent's PATH with Tandem's attribute shims first.
fn shims_first(shims: &Path) -> OsString {
    let mut dirs = vec![shims.to_path_buf()];
    dirs.extend(std::env::split_paths(&agent_path_var()));
    std::env::join_paths(dirs).unwrap_or_else(|_| agent_path_var())
}

/// The agent command with a clean OCF environment (nothing OCF-ish inherited
/// from the Tandem agent's own environment).
fn base_command(path: &Path, ocf_root: &Path) -> Command {
    let mut cmd = Command::new(path);
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && (key.starts_with("OCF_") || key == "HA_RSCTMP")
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("OCF_ROOT", ocf_root).env("PATH", agent_path_var());
    cmd
}

pub(crate) struct Call<'a> {
    pub ocf_root: &'a Path,
    pub state_dir: &'a Path,
    pub provider: &'a str,
    pub agent: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub monitor_interval: Duration,
}

impl Call<'_> {
    /// Runs `action`; the freshness is what the agent recorded through the
    /// attribute shims (see [`crate::freshness`]).
    pub(crate) async fn run(
        &self,
        action: Action,
        env: &Env,
        timeout: Duration,
        ctx: &LogCtx,
    ) -> (Outcome, String, Option<Freshness>) {
        let (outcome, tail) = self.run_inner(action, env, timeout, ctx).await;
        let freshness = std::fs::read_to_string(self.attributes_file(env))
            .ok()
            .and_then(|t| crate::freshness::parse_attributes(&t));
        (outcome, tail, freshness)
    }

    /// Where the shims record attributes for this resource's current action.
    fn attributes_file(&self, env: &Env) -> PathBuf {
        self.state_dir
            .join(".ocf-attributes")
            .join(format!("{}.{}", env.group, env.resource))
    }

    async fn run_inner(&self, action: Action, env: &Env, timeout: Duration, ctx: &LogCtx) -> (Outcome, String) {
        let path = match agent_path(self.ocf_root, self.provider, self.agent) {
            Ok(p) => p,
            Err(why) => return (Outcome::Unavailable(why), String::new()),
        };
        if !is_executable(&path) {
            return (
                Outcome::Unavailable(format!(
                    "OCF agent {} is not installed on this node (missing or not executable)",
                    path.display()
                )),
                String::new(),
            );
        }
        if let Some(bad) = self.params.keys().find(|k| !param_ok(k)) {
            return (
                Outcome::Unavailable(format!("OCF parameter name {bad:?} is not usable as OCF_RESKEY_{bad}")),
                String::new(),
            );
        }
        let rsctmp = self.state_dir.join("ocf-tmp");
        if let Err(e) = std::fs::create_dir_all(&rsctmp) {
            return (
                Outcome::Failed(format!("cannot create {}: {e}", rsctmp.display())),
                String::new(),
            );
        }
        // The attribute shims and the file they record into (emptied first:
        // only what this action records counts).
        let attributes = self.attributes_file(env);
        let shims = match crate::freshness::install_shims(&self.state_dir.join(".ocf-bin")).and_then(|dir| {
            attributes
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .map(|()| dir)
        }) {
            Ok(dir) => dir,
            Err(e) => {
                return (
                    Outcome::Failed(format!(
                        "cannot prepare the attribute tools under {}: {e}",
                        self.state_dir.display()
                    )),
                    String::new(),
                );
            }
        };
        if let Err(e) = std::fs::remove_file(&attributes)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return (
                Outcome::Failed(format!("cannot remove {}: {e}", attributes.display())),
                String::new(),
            );
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string();
        let interval = if action == Action::Monitor {
            self.monitor_interval
        } else {
            Duration::ZERO
        };

        let mut cmd = base_command(&path, self.ocf_root);
        cmd.env("PATH", shims_first(&shims)).arg(action.as_str());
        for (name, value) in self.params {
            cmd.env(format!("OCF_RESKEY_{name}"), value);
        }
        cmd.env("OCF_RESOURCE_INSTANCE", &env.resource)
            .env("OCF_RESOURCE_TYPE", self.agent)
            .env("OCF_RESOURCE_PROVIDER", self.provider)
            .env("OCF_RA_VERSION_MAJOR", "1")
            .env("OCF_RA_VERSION_MINOR", "0")
            .env("OCF_RESKEY_CRM_meta_timeout", millis(timeout))
            .env("OCF_RESKEY_CRM_meta_interval", millis(interval))
            .env("HA_RSCTMP", &rsctmp)
            .env("TANDEM_ATTRIBUTES_FILE", &attributes);
        tandem_env(&mut cmd, env);

        let ran = exec::run(cmd, timeout, ctx, false).await;
        let outcome = match ran.end {
            End::Exited(status) => match status.code() {
                Some(code) => outcome(action, code),
                None => Outcome::Failed(format!("OCF agent {}", describe(status))),
            },
            End::TimedOut => Outcome::TimedOut,
            End::SpawnError(e) => Outcome::Unavailable(format!("cannot run OCF agent {}: {e}", path.display())),
            End::WaitError(e) => Outcome::Failed(format!("waiting for the OCF agent failed: {e}")),
        };
        (outcome, ran.tail)
    }
}

/// Agent installed and executable; every `required="1"` parameter of its
/// meta-data given.
pub(crate) async fn validate(
    ocf_root: &Path,
    provider: &str,
    agent: &str,
    params: &BTreeMap<String, String>,
    resource: &str,
) -> Result<(), String> {
    let path = agent_path(ocf_root, provider, agent)?;
    if !is_executable(&path) {
        return Err(format!(
            "OCF agent ocf:{provider}:{agent} is not installed: {} is missing or not executable",
            path.display()
        ));
    }
    if let Some(bad) = params.keys().find(|k| !param_ok(k)) {
        return Err(format!(
            "OCF parameter name {bad:?} must be letters, digits and '_' (passed as OCF_RESKEY_NAME)"
        ));
    }
    let mut cmd = base_command(&path, ocf_root);
    cmd.arg("meta-data")
        .env("OCF_RESOURCE_INSTANCE", resource)
        .env("OCF_RESOURCE_TYPE", agent)
        .env("OCF_RESOURCE_PROVIDER", provider);
    let ctx = LogCtx {
        group: String::new(),
        resource: resource.to_string(),
        action: "meta-data",
        quiet: true,
    };
    let ran = exec::run(cmd, META_DATA_TIMEOUT, &ctx, true).await;
    match ran.end {
        End::Exited(status) if status.success() => {}
        End::Exited(status) => {
            return Err(format!(
                "ocf:{provider}:{agent} meta-data failed ({}): {}",
                describe(status),
                ran.tail
            ));
        }
        End::TimedOut => {
            return Err(format!(
                "ocf:{provider}:{agent} meta-data did not finish within {META_DATA_TIMEOUT:?}"
            ));
        }
        End::SpawnError(e) | End::WaitError(e) => {
            return Err(format!("cannot run {} meta-data: {e}", path.display()));
        }
    }
    let xml = ran.stdout.unwrap_or_default();
    if !xml.contains("<resource-agent") {
        return Err(format!(
            "ocf:{provider}:{agent} meta-data did not print OCF meta-data (no <resource-agent> element)"
        ));
    }
    let missing: Vec<String> = required_params(&xml)
        .into_iter()
        .filter(|p| !params.contains_key(p))
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => Err(format!(
            "ocf:{provider}:{agent} requires parameter {one:?}, which is missing"
        )),
        many => Err(format!(
            "ocf:{provider}:{agent} requires parameters {}, which are missing",
            many.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Names of the `<parameter ... required="1">` elements of OCF meta-data.
/// A small scanner, not an XML parser: meta-data is simple and regular.
pub(crate) fn required_params(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<parameter") {
        let after = &rest[i + "<parameter".len()..];
        let end = after.find('>').unwrap_or(after.len());
        let tag = &after[..end];
        rest = &after[end..];
        // `<parameters>` is the enclosing element, not a parameter.
        if !tag.starts_with(|c: char| c.is_ascii_whitespace()) {
            continue;
        }
        if let (Some(name), Some(required)) = (attr(tag, "name"), attr(tag, "required"))
            && matches!(required.trim(), "1" | "true" | "yes")
        {
            out.push(name.to_string());
        }
    }
    out
}

/// The value of attribute `name` in the inside of a start tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = tag[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at > 0 && tag[..at].ends_with(|c: char| c.is_ascii_whitespace());
        let rest = tag[from..].trim_start();
        if !before_ok {
            continue;
        }
        let Some(rest) = rest.strip_prefix('=') else {
            continue;
        };
        let rest = rest.trim_start();
        let quote = rest.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let value = &rest[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(outcome(Action::Start, 0), Outcome::Ok);
        assert_eq!(outcome(Action::Monitor, 7), Outcome::NotRunning);
        assert_eq!(outcome(Action::Stop, 7), Outcome::Ok);
        assert_eq!(
            outcome(Action::Start, 7),
            Outcome::Failed("OCF exit 7 (not running)".into())
        );
        assert_eq!(
            outcome(Action::Monitor, 1),
            Outcome::Failed("OCF exit 1 (generic error)".into())
        );
        assert!(matches!(outcome(Action::Start, 5), Outcome::Unavailable(m) if m == "OCF exit 5 (not installed)"));
        assert!(matches!(outcome(Action::Monitor, 6), Outcome::Unavailable(m) if m.contains("not configured")));
        assert_eq!(outcome(Action::Monitor, 190), Outcome::Ok);
        assert_eq!(
            outcome(Action::Stop, 42),
            Outcome::Failed("OCF exit 42 (unknown code)".into())
        );
    }

    #[test]
    fn finds_required_parameters() {
        let xml = r#"<?xml version="1.0"?>
<resource-agent name="x">
<parameters>
<parameter name="binfile" required="1" unique="0">
<content type="string"/>
</parameter>
<parameter required='1' name='other'><content/></parameter>
<parameter name="optional" required="0"/>
<parameter name="plain">
<parameter unique="1" name="uniq_required" required="1"/>
</parameters>
</resource-agent>"#;
        assert_eq!(required_params(xml), ["binfile", "other", "uniq_required"]);
        assert!(required_params("").is_empty());
        assert!(required_params("<parameter name=").is_empty());
        assert!(required_params("<parameter name=\"x\" required=\"1").is_empty());
    }

    #[test]
    fn agent_names_stay_under_the_root() {
        let root = Path::new("/usr/lib/ocf");
        assert!(agent_path(root, "heartbeat", "Dummy").is_ok());
        assert!(agent_path(root, "..", "x").is_err());
        assert!(agent_path(root, "heartbeat", "../../x").is_err());
        assert!(agent_path(root, "", "x").is_err());
    }
}
