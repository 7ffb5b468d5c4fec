//! Secrets of fence devices kept out of sight: which parameters are
//! secret, their values replaced in any text, `Debug` of a device, and the
//! spec's source text as `tandem spec show` prints it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::model::{FenceDeviceSpec, Spec};

impl FenceDeviceSpec {
    /// Whether the value of parameter `name` is secret: listed in
    /// `secret_params`, or a name that is always secret.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret_params.contains(name) || is_secret_param_name(name)
    }

    /// The parameters whose value is read from a file on the node that runs
    /// the device ([`secret_file_param`]): (parameter passed, file path).
    pub fn secret_files(&self) -> Vec<(&str, &str)> {
        self.params
            .iter()
            .filter_map(|(name, path)| secret_file_param(name).map(|param| (param, path.as_str())))
            .collect()
    }

    /// The secret parameters written in the spec itself (non-empty values),
    /// which the replicated state therefore holds: worth a warning.
    pub fn inline_secret_params(&self) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(name, value)| !value.is_empty() && self.is_secret(name))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The values of the secret parameters (non-empty ones), to be kept out
    /// of logs and messages.
    pub fn secret_values(&self) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(name, value)| !value.is_empty() && self.is_secret(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// `text` with every occurrence of a secret parameter value replaced by
    /// [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        redact_values(text, &self.secret_values())
    }
}

impl fmt::Debug for FenceDeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Prints a string as it is (no quotes, no escapes).
        struct Raw<'a>(&'a str);
        impl fmt::Debug for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        let params: BTreeMap<&str, &str> = self
            .params
            .iter()
            .map(|(name, value)| {
                let shown = if self.is_secret(name) { REDACTED } else { value.as_str() };
                (name.as_str(), shown)
            })
            .collect();
        // A secret value may also appear in an exec command's arguments.
        let agent = self.redact(&format!("{:?}", self.agent));
        f.debug_struct("FenceDeviceSpec")
            .field("name", &self.name)
            .field("agent", &Raw(&agent))
            .field("params", &params)
            .field("secret_params", &self.secret_params)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// What a secret value is replaced with wherever it would be shown.
pub const REDACTED: &str = "<redacted>";

/// Parameter names whose values are always secret, whether or not `secret`
/// lists them: `password`, `passwd` and any name containing "password",
/// "passwd", "secret" or "token" (case-insensitive); not a file that holds
/// one ([`secret_file_param`]: its value is a path).
pub fn is_secret_param_name(name: &str) -> bool {
    if secret_file_param(name).is_some() {
        return false;
    }
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

/// For a parameter `NAME_file` whose `NAME` is a secret name
/// ([`is_secret_param_name`]: `password_file`, `passwd_file`,
/// `api_token_file`...), `NAME`: the parameter's value is the absolute path
/// of a file holding the secret, read on the node that runs the device and
/// passed to the agent as `NAME=SECRET`, so the secret is never in the spec
/// nor in the replicated state.
pub fn secret_file_param(name: &str) -> Option<&str> {
    let stem = name.strip_suffix("_file")?;
    (!stem.is_empty() && is_secret_param_name(stem)).then_some(stem)
}

/// `text` with every occurrence of each of `secrets` (empty ones ignored)
/// replaced by [`REDACTED`]. One pass from left to right, longest secret
/// first at each position, so a secret that contains another is replaced
/// whole and the replacement itself is never rewritten.
pub fn redact_values(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return text.to_string();
    }
    secrets.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    secrets.dedup();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(secret) = secrets.iter().find(|s| rest.starts_with(**s)) {
            out.push_str(REDACTED);
            rest = &rest[secret.len()..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Just enough of a spec file to find where fence device parameters are
/// written (unknown keys ignored: the file was validated already, or is only
/// being shown).
#[derive(Deserialize, Default)]
struct SourceSpans {
    #[serde(default)]
    fencing: SourceFencing,
}

#[derive(Deserialize, Default)]
struct SourceFencing {
    #[serde(default)]
    devices: BTreeMap<String, SourceDevice>,
}

#[derive(Deserialize, Default)]
struct SourceDevice {
    #[serde(default)]
    params: BTreeMap<String, toml::Spanned<toml::Value>>,
}

/// The spec's source text (as `tandem spec show` prints it) with every
/// secret fence parameter value replaced by `"<redacted>"`.
///
/// Two passes in one: the value of each secret parameter, wherever the file
/// writes it (inline table, `[fencing.devices.X.params]` table, dotted key;
/// any TOML string or scalar form), is replaced whole by the TOML string
/// `"<redacted>"`; and any other occurrence of a secret value (in a comment,
/// in an exec command's argument...) by `<redacted>`. Secrets are those of
/// `spec` (its devices' secret parameters) and, so that a source that does
/// not match `spec` leaks nothing either, every parameter of the source whose
/// name [`is_secret_param_name`] or is secret in `spec`'s device of that name.
/// A source that is not TOML gets the second pass only.
pub fn redact_source(text: &str, spec: &Spec) -> String {
    let source: SourceSpans = toml::from_str(text).unwrap_or_default();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();
    for d in spec.fencing.devices.values() {
        secrets.extend(d.secret_values().into_iter().map(str::to_string));
    }
    for (name, d) in &source.fencing.devices {
        let device = spec.fencing.devices.get(name);
        for (key, value) in &d.params {
            if !(is_secret_param_name(key) || device.is_some_and(|dev| dev.is_secret(key))) {
                continue;
            }
            spans.push(value.span());
            let shown = match value.get_ref() {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            secrets.push(shown);
        }
    }
    spans.sort_by_key(|r| r.start);
    // As a TOML basic string would write them, too ("a\"b" for a"b).
    let escaped: Vec<String> = secrets
        .iter()
        .map(|s| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\t', "\\t"))
        .collect();
    secrets.extend(escaped);
    let mut secrets: Vec<&str> = secrets.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    secrets.sort_unstable_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    secrets.dedup();

    let mut out = String::with_capacity(text.len());
    let mut spans = spans.into_iter().peekable();
    let mut i = 0;
    while i < text.len() {
        // Spans that start behind us overlap one already replaced.
        while spans.peek().is_some_and(|r| r.start < i) {
            spans.next();
        }
        let rest = &text[i..];
        if let Some(span) = spans.next_if(|r| r.start == i && r.end <= text.len() && text.is_char_boundary(r.end)) {
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
            i = span.end.max(i + 1);
        } else if let Some(secret) = secrets.iter().find(|s| rest.starts_with(**s)) {
            out.push_str(REDACTED);
            i += secret.len();
        } else if let Some(c) = rest.chars().next() {
            out.push(c);
            i += c.len_utf8();
        } else {
            break;
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testing::{EXAMPLE, fence, parse, web};

    #[test]
    fn secret_names() {
        for name in [
            "password",
            "passwd",
            "PASSWORD",
            "snmp_priv_passwd",
            "api_token",
            "client_secret",
            "Token",
        ] {
            assert!(is_secret_param_name(name), "{name}");
        }
        for name in [
            "ip",
            "username",
            "login",
            "plug",
            "pass",
            "password_file",
            "api_token_file",
        ] {
            assert!(!is_secret_param_name(name), "{name}");
        }
    }

    #[test]
    fn secret_files() {
        assert_eq!(secret_file_param("password_file"), Some("password"));
        assert_eq!(secret_file_param("snmp_priv_passwd_file"), Some("snmp_priv_passwd"));
        assert_eq!(secret_file_param("identity_file"), None);
        assert_eq!(secret_file_param("_file"), None);
        assert_eq!(secret_file_param("password"), None);
        let spec = parse(&fence(
            "agent = \"fence_ipmilan\"\nparams = { ip = \"10.0.0.9\", password_file = \"/etc/tandem/ipmi.pw\", community = \"c0m\" }\nsecret = [\"community\"]",
            "",
        ))
        .unwrap();
        let d = &spec.fencing.devices["pdu"];
        assert_eq!(d.secret_files(), [("password", "/etc/tandem/ipmi.pw")]);
        assert_eq!(d.inline_secret_params(), ["community"]);
        // The path is not a secret: shown as it is.
        let source = "[fencing.devices.pdu]\nparams = { password_file = \"/etc/tandem/ipmi.pw\" }\n";
        assert_eq!(redact_source(source, &spec), source);
        assert!(format!("{d:?}").contains("/etc/tandem/ipmi.pw"));
        // A relative path, or the secret and its file both: refused.
        let msg = parse(&fence(
            "agent = \"fence_ipmilan\"\nparams = { password_file = \"ipmi.pw\" }",
            "",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            msg,
            "spec.toml: field `fencing.devices.pdu.params.password_file`: expected an absolute path to a file \
             holding the password (read on the node that runs the device), got \"ipmi.pw\""
        );
        let msg = parse(&fence(
            "agent = \"fence_ipmilan\"\nparams = { password = \"x\", password_file = \"/p\" }",
            "",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("expected either `password` or `password_file`, not both"),
            "{msg}"
        );
    }

    #[test]
    fn debug_of_a_device_hides_secrets() {
        let spec = parse(&fence(
            "agent = \"exec\"\ncommand = [\"/bin/kill-node\", \"--key\", \"k3y-s3cret\"]\n\
             params = { login = \"admin\", password = \"hunter2-pw\", key = \"k3y-s3cret\" }\nsecret = [\"key\"]",
            "",
        ))
        .unwrap();
        let d = &spec.fencing.devices["pdu"];
        let shown = format!("{d:?} {spec:?} {:#?}", spec.fencing);
        assert!(
            !shown.contains("hunter2-pw") && !shown.contains("k3y-s3cret"),
            "{shown}"
        );
        assert!(shown.contains("\"admin\"") && shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("/bin/kill-node"), "{shown}");
        assert_eq!(d.secret_values(), ["k3y-s3cret", "hunter2-pw"]);
        assert_eq!(
            d.redact("login admin password hunter2-pw key=k3y-s3cret."),
            "login admin password <redacted> key=<redacted>."
        );
    }

    #[test]
    fn redact_values_replaces_every_occurrence() {
        assert_eq!(redact_values("abc", &[]), "abc");
        assert_eq!(redact_values("abc", &[""]), "abc");
        assert_eq!(
            redact_values("xx-pw-pw-pwd", &["pw", "pwd"]),
            "xx-<redacted>-<redacted>-<redacted>"
        );
        // The replacement is never rewritten, even by a secret it contains.
        assert_eq!(redact_values("e", &["e"]), "<redacted>");
        assert_eq!(
            redact_values("été pw", &["é", "pw"]),
            "<redacted>t<redacted> <redacted>"
        );
    }

    const SECRET_SOURCE: &str = r#"# fencing with secrets; the old password was "hunter2-pw"
[fencing.devices.pdu]
agent = "fence_apc_snmp"
params = { ip = "10.0.0.1", community = 'c0mmunity', password = "hunter2-pw", token = 123456 }
secret = ["community"]

[fencing.devices.ipmi]
agent = "exec"
command = ["/bin/kill-node", "--password", "ipmi\"pw"]
[fencing.devices.ipmi.params]
username = "admin"
passwd = """ipmi"pw"""
api_token = "tok-en"

[fencing.nodes.site-a]
levels = [["pdu"], ["ipmi"]]
"#;

    #[test]
    fn redact_source_hides_every_secret_value() {
        let text = SECRET_SOURCE;
        let spec = parse(text).unwrap();
        let shown = redact_source(text, &spec);
        for secret in ["hunter2-pw", "c0mmunity", "123456", "ipmi\"pw", "ipmi\\\"pw", "tok-en"] {
            assert!(!shown.contains(secret), "{secret} in\n{shown}");
        }
        assert!(shown.contains(r#"params = { ip = "10.0.0.1", community = "<redacted>", password = "<redacted>", token = "<redacted>" }"#), "{shown}");
        assert!(shown.contains("passwd = \"<redacted>\"\n"), "{shown}");
        assert!(shown.contains("api_token = \"<redacted>\"\n"), "{shown}");
        assert!(shown.contains("the old password was \"<redacted>\""), "{shown}");
        assert!(shown.contains("username = \"admin\""), "{shown}");
        // The rest is untouched, and the result is still a valid spec.
        assert_eq!(shown.lines().count(), text.lines().count());
        let again = parse(&shown).unwrap();
        assert_eq!(again.fencing.devices["pdu"].params["password"], "<redacted>");
        assert_eq!(again.fencing.levels, spec.fencing.levels);
        // A source without secrets comes back as it is.
        assert_eq!(
            redact_source(EXAMPLE, &Spec::default()).lines().count(),
            EXAMPLE.lines().count()
        );
        let plain = web("", "");
        assert_eq!(redact_source(&plain, &parse(&plain).unwrap()), plain);
        // The shipped example shows no secret either.
        let example = redact_source(EXAMPLE, &parse(EXAMPLE).unwrap());
        for secret in ["\"change-me\"", "change-me-too", "\"private\""] {
            assert!(!example.contains(secret), "{secret}");
        }
        // Even a source that no longer parses keeps the spec's secrets hidden.
        let broken = format!("{text}\n[[[oops");
        assert!(!redact_source(&broken, &spec).contains("hunter2-pw"));
    }
}
