//! What the spec's tests share: the cluster they parse for, the shipped
//! example, and small spec texts.

use super::model::Spec;
use super::parse::SpecError;
use crate::membership::{NodeInfo, NodeRole};

pub const EXAMPLE: &str = include_str!("../../../../deploy/examples/spec.toml");

pub fn nodes() -> Vec<NodeInfo> {
    let node = |name: &str, role| NodeInfo {
        name: name.to_string(),
        address: format!("{name}:7400"),
        role,
    };
    vec![
        node("site-a", NodeRole::Member),
        node("site-b", NodeRole::Member),
        node("witness", NodeRole::Witness),
    ]
}

pub fn parse(text: &str) -> Result<Spec, SpecError> {
    Spec::parse(text, "spec.toml", &nodes())
}

/// One group `web` with one supervised process, plus `group_keys` and
/// `resource_keys` (TOML lines) added to the group and the resource.
pub fn web(group_keys: &str, resource_keys: &str) -> String {
    format!(
        "[[groups]]\nname = \"web\"\n{group_keys}\n\
         [[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/app\"\n{resource_keys}\n"
    )
}

/// `[fencing.devices.pdu]` with `device` (TOML lines) plus `rest`.
pub fn fence(device: &str, rest: &str) -> String {
    format!("[fencing.devices.pdu]\n{device}\n{rest}\n")
}
