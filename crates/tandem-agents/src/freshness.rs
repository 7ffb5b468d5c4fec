//! How a resource agent tells Tandem how current its data is.
//!
//! * `exec` with commands: a line `tandem-freshness: position=N` or
//!   `tandem-freshness: lag=DURATION` (`1500ms`, `2s`; a bare number is
//!   milliseconds) on the monitor's output; the last such line wins.
//! * `ocf`: the Pacemaker attribute convention. Tandem puts a directory with
//!   small `crm_attribute`, `attrd_updater` and `crm_master` stand-ins first
//!   in the agent's PATH; they record `--name tandem-position|tandem-lag
//!   --update VALUE` (also `-n`, `-v`, `-U`, `--name=`...) into a file Tandem
//!   reads after the action, and accept every other call with success.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_core::groups::Freshness;

/// The prefix of an `exec` monitor's freshness line.
pub const LINE_PREFIX: &str = "tandem-freshness:";

/// The attribute names the OCF convention uses.
pub const POSITION_ATTRIBUTE: &str = "tandem-position";
pub const LAG_ATTRIBUTE: &str = "tandem-lag";

/// The freshness a line reports, if it is a well-formed freshness line.
pub fn parse_line(line: &str) -> Option<Freshness> {
    let rest = line.trim().strip_prefix(LINE_PREFIX)?.trim();
    let (key, value) = rest.split_once('=')?;
    parse_value(key.trim(), value.trim())
}

/// `position` / `tandem-position` with a number, `lag` / `tandem-lag` with a
/// duration (or a bare number of milliseconds).
pub fn parse_value(key: &str, value: &str) -> Option<Freshness> {
    match key {
        "position" | POSITION_ATTRIBUTE => value.parse::<u64>().ok().map(Freshness::Position),
        "lag" | LAG_ATTRIBUTE => parse_lag(value).map(Freshness::LagMs),
        _ => None,
    }
}

/// A lag in milliseconds: `1500ms`, `2s`, `1m 30s`, or a bare number of ms.
pub fn parse_lag(value: &str) -> Option<u64> {
    if let Ok(ms) = value.parse::<u64>() {
        return Some(ms);
    }
    let d: Duration = humantime::parse_duration(value).ok()?;
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The shim every attribute tool name runs. It needs only POSIX sh.
const SHIM: &str = r#"#!/bin/sh
# Written by Tandem: a stand-in for Pacemaker's attribute tools inside OCF
# agents run by Tandem. Records tandem-position and tandem-lag for Tandem
# (into $TANDEM_ATTRIBUTES_FILE); accepts every other call with success.
name=""
value=""
set=""
while [ $# -gt 0 ]; do
    case "$1" in
        -n|--name) name="$2"; shift ;;
        --name=*) name="${1#--name=}" ;;
        -v|-U|--update|--attr-value) value="$2"; set=1; shift ;;
        --update=*|--attr-value=*) value="${1#*=}"; set=1 ;;
        -N|-l|-t|-i|-s|-d|-P|-z|--node|--lifetime|--type|--id|--set-name|--set|--default|--delay) shift ;;
    esac
    [ $# -gt 0 ] && shift
done
case "$name" in
    tandem-position|tandem-lag)
        if [ -n "$set" ] && [ -n "$TANDEM_ATTRIBUTES_FILE" ]; then
            printf '%s=%s\n' "$name" "$value" >> "$TANDEM_ATTRIBUTES_FILE"
        fi ;;
esac
exit 0
"#;

/// The tool names the shim stands in for.
const SHIM_NAMES: [&str; 3] = ["crm_attribute", "attrd_updater", "crm_master"];

/// Writes the shims into `dir` (once: an existing file with the same content
/// is left alone; otherwise written to a temporary name and renamed, so a
/// concurrent agent never runs half a script). Returns `dir`.
pub(crate) fn install_shims(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for name in SHIM_NAMES {
        let path = dir.join(name);
        let current = std::fs::read_to_string(&path).ok();
        let executable = std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if current.as_deref() == Some(SHIM) && executable {
            continue;
        }
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::write(&tmp, SHIM)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(dir.to_path_buf())
}

/// The freshness recorded in an attributes file (`name=value` lines, the
/// last freshness attribute wins); unknown or malformed lines are ignored.
pub(crate) fn parse_attributes(text: &str) -> Option<Freshness> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| parse_value(k.trim(), v.trim()))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_freshness_lines() {
        assert_eq!(
            parse_line("tandem-freshness: position=42"),
            Some(Freshness::Position(42))
        );
        assert_eq!(
            parse_line("  tandem-freshness:position = 7 "),
            Some(Freshness::Position(7))
        );
        assert_eq!(parse_line("tandem-freshness: lag=1500ms"), Some(Freshness::LagMs(1500)));
        assert_eq!(parse_line("tandem-freshness: lag=2s"), Some(Freshness::LagMs(2000)));
        assert_eq!(parse_line("tandem-freshness: lag=250"), Some(Freshness::LagMs(250)));
        for bad in [
            "",
            "position=1",
            "tandem-freshness:",
            "tandem-freshness: position=-1",
            "tandem-freshness: position=x",
            "tandem-freshness: lag=soon",
            "tandem-freshness: offset=3",
            "tandem-freshness: position",
            "tandem-freshness: position=99999999999999999999999",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_last_attribute_wins() {
        let text = "master-db=100\ntandem-position=5\ngarbage\ntandem-lag=3s\n";
        assert_eq!(parse_attributes(text), Some(Freshness::LagMs(3000)));
        assert_eq!(
            parse_attributes("tandem-position=9\ntandem-position=bad\n"),
            Some(Freshness::Position(9))
        );
        assert_eq!(parse_attributes(""), None);
    }

    fn run_shim(dir: &Path, tool: &str, args: &[&str], file: &Path) -> std::process::ExitStatus {
        std::process::Command::new(dir.join(tool))
            .args(args)
            .env("TANDEM_ATTRIBUTES_FILE", file)
            .status()
            .unwrap()
    }

    #[test]
    fn the_shims_record_only_tandem_attributes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = install_shims(&tmp.path().join("bin")).unwrap();
        // Installing again leaves them as they are.
        install_shims(&dir).unwrap();
        let file = tmp.path().join("attrs");
        let calls: [(&str, &[&str]); 7] = [
            (
                "crm_attribute",
                &["-l", "reboot", "-N", "node1", "-n", "master-db", "-v", "100"],
            ),
            ("crm_attribute", &["--name", "tandem-position", "--update", "17"]),
            ("crm_attribute", &["-q", "-G", "-n", "tandem-position"]),
            ("attrd_updater", &["-n", "tandem-lag", "-U", "1500ms"]),
            ("attrd_updater", &["--name=tandem-position", "--update=23", "-d", "5s"]),
            ("crm_master", &["-l", "reboot", "-v", "100"]),
            ("attrd_updater", &["-D", "-n", "other"]),
        ];
        for (tool, args) in calls {
            assert!(run_shim(&dir, tool, args, &file).success(), "{tool} {args:?}");
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, "tandem-position=17\ntandem-lag=1500ms\ntandem-position=23\n");
        assert_eq!(parse_attributes(&text), Some(Freshness::Position(23)));
    }
}
