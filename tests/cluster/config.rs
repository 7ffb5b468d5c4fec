//! Bad configurations and bad environments are refused with a message that
//! names the file, the key and what is expected.

use crate::support::*;

const GOOD: &str = r#"
[cluster]
name = "test"

[node]
name = "site-a"
role = "member"
data_dir = "data"
grpc_listen = "127.0.0.1:GRPC"
dns_listen = "127.0.0.1:DNS"

[[members]]
name = "site-a"
address = "127.0.0.1:GRPC"

[[members]]
name = "site-b"
address = "127.0.0.1:1"

[[members]]
name = "witness"
address = "127.0.0.1:2"
role = "witness"
"#;

fn good() -> String {
    GOOD.replace("GRPC", &free_port().to_string())
        .replace("DNS", &free_port().to_string())
}

/// Runs the agent on `text`; it must exit with `code` and say all of `expected`.
fn refused(text: &str, code: i32, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "node.toml", text);
    let out = tandem(&["agent", "--config", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "names the file: {err}");
    for e in expected {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn unknown_key_is_refused() {
    refused(
        &good().replace("[node]\n", "[node]\ncolour = \"blue\"\n"),
        2,
        &["unknown field `colour`", "expected one of"],
    );
}

#[test]
fn bad_address_is_refused() {
    let text = good().replace("address = \"127.0.0.1:1\"", "address = \"127.0.0.1\"");
    refused(
        &text,
        2,
        &["key `members[1].address`", "expected HOST:PORT", "\"127.0.0.1\""],
    );
    let text = good().replace("dns_listen = \"127.0.0.1:", "dns_listen = \"nowhere:");
    refused(&text, 2, &["key `node.dns_listen`", "expected IP:PORT"]);
    let text = good().replace("[node]\n", "[node]\nhttp_listen = \"localhost:8400\"\n");
    refused(
        &text,
        2,
        &["key `node.http_listen`", "expected IP:PORT", "\"localhost:8400\""],
    );
}

#[test]
fn duplicate_names_are_refused() {
    refused(
        &good().replace("name = \"site-b\"", "name = \"witness\""),
        2,
        &["key `members[2].name`", "listed twice"],
    );
}

#[test]
fn node_missing_from_its_member_list_is_refused() {
    refused(
        &good().replace("[node]\nname = \"site-a\"", "[node]\nname = \"site-z\""),
        2,
        &[
            "key `members`",
            "expected this node (\"site-z\"",
            "found only \"site-a\", \"site-b\", \"witness\"",
        ],
    );
}

#[test]
fn bad_duration_and_unsafe_timing_are_refused() {
    refused(
        &format!("{}\n[timing]\nlease = \"soon\"\n", good()),
        2,
        &["lease", "expected a duration such as"],
    );
    refused(
        &format!("{}\n[timing]\nlease = \"100ms\"\n", good()),
        2,
        &["key `timing.lease`", "expected more than"],
    );
}

#[test]
fn missing_file_is_refused() {
    let out = tandem(&["agent", "--config", "/nonexistent/tandem.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/tandem.toml: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn data_directory_of_another_node_is_refused() {
    let mut c = TestCluster::three();
    c.start("site-a");
    c.wait_for_log("site-a", "serving");
    assert_eq!(c.sigterm("site-a"), Some(0));
    // site-b pointed at site-a's data directory.
    let text = std::fs::read_to_string(&c.node("site-b").config)
        .unwrap()
        .replace("site-b-data", "site-a-data");
    let path = write(c.dir.path(), "site-b-wrong.toml", &text);
    let out = tandem(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("key `node.data_dir`"), "{err}");
    assert!(
        err.contains(&format!("belongs to node \"site-a\" of cluster \"{}\"", c.cluster)),
        "{err}"
    );
    assert!(err.contains("not to node \"site-b\""), "{err}");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("GRPC", &port.to_string())
        .replace("DNS", &free_port().to_string());
    let path = write(dir.path(), "node.toml", &text);
    let out = tandem(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
    assert!(err.contains("key `node.grpc_listen`"), "{err}");
    assert!(err.contains("already listens there"), "{err}");
}

#[test]
fn a_taken_http_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let text = good().replace("[node]\n", &format!("[node]\nhttp_listen = \"127.0.0.1:{port}\"\n"));
    let path = write(dir.path(), "node.toml", &text);
    let out = tandem(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
    assert!(err.contains("key `node.http_listen`"), "{err}");
    assert!(err.contains("already listens there"), "{err}");
}

#[test]
fn an_unreachable_endpoint_is_a_one_line_error() {
    let port = free_port();
    let out = tandem(&["status", "--endpoint", &format!("127.0.0.1:{port}"), "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot reach a Tandem node at 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn the_endpoint_comes_from_the_environment() {
    let port = free_port();
    let out = std::process::Command::new(BIN)
        .args(["status", "--timeout", "1s"])
        .env("TANDEM_ENDPOINT", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(stderr(&out).contains(&format!("127.0.0.1:{port}")), "{}", stderr(&out));
}

#[test]
fn demo_configs_only_writes_three_valid_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let out = tandem(&["demo", "--dir", dir.path().to_str().unwrap(), "--configs-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["site-a", "site-b", "witness"] {
        let path = dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("name = \"{name}\"")), "{text}");
        assert!(text.contains("127.0.0.1"), "distinct loopback addresses: {text}");
    }
    let spec = std::fs::read_to_string(dir.path().join("spec.toml")).unwrap();
    assert!(spec.contains("name = \"web\""), "{spec}");
    assert!(dir.path().join("web.py").exists());
    assert!(
        !dir.path().join("site-a-data").exists(),
        "nothing was started or applied"
    );
    // A line to paste, pointing the CLI at the demo cluster; the demo's
    // configurations pass the offline check together.
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l.starts_with("export TANDEM_ENDPOINT=127.0.0.1")),
        "{text}"
    );
    let files: Vec<String> = ["site-a", "site-b", "witness"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.toml")).display().to_string())
        .collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let check = tandem(&[["config", "check"].as_slice(), &files].concat());
    assert!(check.status.success(), "{}{}", stdout(&check), stderr(&check));
}
