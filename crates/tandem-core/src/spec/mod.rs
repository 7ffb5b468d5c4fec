//! The declarative spec: service groups, their resources and placement.
//!
//! Applied with `tandem apply -f FILE`, validated in full before it is
//! committed ([`Spec::parse`]), versioned in the cluster state. The file
//! format is TOML; `deploy/examples/spec.toml` shows and explains every key.
//!
//! Parsing has two steps, as for the node configuration: a raw serde form that
//! refuses unknown keys (so a typo never falls back to a default), then
//! semantic validation. Every problem is a [`SpecError`] naming the file, the
//! group, the resource and the field, and saying what is expected.
//!
//! * `model`: the types of a committed spec and the defaults of its keys.
//! * `parse`: the file as written and every check, [`SpecError`].
//! * `diff`: the change list shown before a spec is committed.
//! * `redact`: fence device secrets kept out of logs, `Debug` and the source.

mod diff;
mod model;
mod parse;
mod redact;
#[cfg(test)]
mod testing;

pub use diff::diff;
pub use model::{
    ActionTimeouts, AgentSpec, DEFAULT_DNS_TTL, DEFAULT_FAILURE_TIMEOUT, DEFAULT_FENCE_RETRIES, DEFAULT_FENCE_TIMEOUT,
    DEFAULT_HOOK_TIMEOUT, DEFAULT_MIGRATION_THRESHOLD, DEFAULT_MONITOR_INTERVAL, DnsPushSpec, DnsRecordSpec, DnsSpec,
    FenceAgentSpec, FenceDeviceSpec, FencingSpec, GroupDns, GroupKind, GroupSpec, Hooks, MAX_FENCE_RETRIES, MAX_SCORE,
    MaxLag, Placement, ResourceSpec, Spec,
};
pub use parse::{SpecError, referenced_nodes};
pub use redact::{REDACTED, is_secret_param_name, redact_source, redact_values, secret_file_param};
