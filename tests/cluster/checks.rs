//! Offline checks of the real binary, no cluster: `tandem config check` and
//! `tandem spec check`, their reports (text and JSON) and exit codes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

/// The repository's `deploy/examples/`, and a file in it.
pub fn example(file: &str) -> String {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/examples");
    dir.join(file).to_str().unwrap().to_string()
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

const NODE: &str = r#"
[cluster]
name = "prod"

[node]
name = "NAME"
role = "ROLE"
data_dir = "/var/lib/tandem"
grpc_listen = "10.0.0.IP:7400"
dns_listen = "10.0.0.IP:53"
http_listen = "10.0.0.IP:8400"

[[members]]
name = "site-a"
address = "10.0.0.1:7400"

[[members]]
name = "site-b"
address = "10.0.0.2:7400"

[[members]]
name = "witness"
address = "10.0.0.3:7400"
role = "witness"

[timing]
lease = "2s"
"#;

fn node(name: &str, ip: u8, role: &str) -> String {
    NODE.replace("NAME", name)
        .replace("ROLE", role)
        .replace("IP", &ip.to_string())
}

#[test]
fn config_check_takes_a_cluster_s_files_together() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "site-a.toml", &node("site-a", 1, "member"));
    let b = write(dir.path(), "site-b.toml", &node("site-b", 2, "member"));
    let w = write(dir.path(), "witness.toml", &node("witness", 3, "witness"));
    let (a, b, w) = (a.to_str().unwrap(), b.to_str().unwrap(), w.to_str().unwrap());

    let out = tandem(&["config", "check", a, b, w]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("site-a.toml: ok (node site-a of cluster prod, member)"),
        "{}",
        stdout(&out)
    );
    let out = tandem(&["config", "check", "--output", "json", a, b, w]);
    assert_eq!(out.status.code(), Some(0));
    let report = json_of(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["files"].as_array().unwrap().len(), 3);
    assert_eq!(report["files"][2]["role"], "witness");
    assert_eq!(report["errors"], serde_json::json!([]));

    // site-b with another lease and a wrong member address; the witness's
    // file given twice under two names.
    let b2 = write(
        dir.path(),
        "site-b.toml",
        &node("site-b", 2, "member")
            .replace("lease = \"2s\"", "lease = \"3s\"")
            .replace("\"10.0.0.3:7400\"", "\"10.0.0.9:7400\""),
    );
    let w2 = write(dir.path(), "witness-copy.toml", &node("witness", 3, "witness"));
    let out = tandem(&[
        "config",
        "check",
        "-o",
        "json",
        a,
        b2.to_str().unwrap(),
        w,
        w2.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("config check: 6 problems in 4 files"),
        "{}",
        stderr(&out)
    );
    let report = json_of(&out);
    assert_eq!(report["ok"], false);
    let errors = report["errors"].as_array().unwrap();
    let find = |file: &str, key: &str| {
        errors
            .iter()
            .find(|e| e["file"].as_str().unwrap().ends_with(file) && e["key"] == key)
            .unwrap_or_else(|| panic!("no error for {file} {key} in {errors:?}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let lease = find("site-b.toml", "timing.lease");
    assert!(
        lease.starts_with("expected \"2s\" as in ") && lease.ends_with("got \"3s\""),
        "{lease}"
    );
    assert!(find("site-b.toml", "members").contains("witness 10.0.0.9:7400 witness"));
    assert!(find("witness-copy.toml", "node.name").contains("configures \"witness\" too"));
    for key in ["node.grpc_listen", "node.dns_listen", "node.http_listen"] {
        assert!(find("witness-copy.toml", key).contains("two nodes cannot listen on one address"));
    }
    assert_eq!(report["files"][1]["ok"], false);
    assert_eq!(report["files"][0]["ok"], true);

    // One file alone: its own problems, named by file and key, with the value.
    let bad = write(
        dir.path(),
        "bad.toml",
        &node("site-a", 1, "member").replace("address = \"10.0.0.1:7400\"", "address = \"10.0.0.1\""),
    );
    let out = tandem(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(
        text.contains("bad.toml: key `members[0].address`: expected HOST:PORT"),
        "{text}"
    );
    assert!(text.contains("got \"10.0.0.1\""), "{text}");
    let missing = dir.path().join("missing.toml");
    let out = tandem(&["config", "check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).contains("missing.toml: cannot read the configuration file"),
        "{}",
        stdout(&out)
    );
    assert!(!stderr(&out).contains("panicked"));
}

const SPEC: &str = r#"
[[groups]]
name = "web"
prefer = [{ node = "site-a", score = 10 }]

  [[groups.resources]]
  name = "app"
  agent = "exec"
  command = "/bin/sleep"
  args = ["1000"]
"#;

#[test]
fn spec_check_runs_apply_s_checks_offline() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "spec.toml", SPEC);
    let spec = spec.to_str().unwrap();
    let config = write(dir.path(), "site-a.toml", &node("site-a", 1, "member"));
    let config = config.to_str().unwrap();

    // Without the member list, node names are not checked (and it says so).
    let out = tandem(&["spec", "check", "-f", spec, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["spec"]["groups"], 1);
    let result = check_result;
    assert_eq!(result(&report, "node names"), "skipped");
    assert_eq!(result(&report, "resource agents"), "ok");
    assert_eq!(result(&report, "live cluster"), "needs-cluster");
    let out = tandem(&["spec", "check", "-f", spec, "--config", config, "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(result(&json_of(&out), "node names"), "ok");

    // A node that is not a member: found only with --config.
    let other = write(dir.path(), "other.toml", &SPEC.replace("site-a", "site-c"));
    let other = other.to_str().unwrap();
    assert_eq!(tandem(&["spec", "check", "-f", other]).status.code(), Some(0));
    let out = tandem(&["spec", "check", "-f", other, "-c", config, "-o", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report = json_of(&out);
    let e = &report["errors"][0];
    assert_eq!(e["group"], "web");
    assert_eq!(e["field"], "prefer[0].node");
    assert!(e["message"].as_str().unwrap().contains("got \"site-c\""), "{e}");
    assert!(e["file"].as_str().unwrap().ends_with("other.toml"), "{e}");

    // What apply checks on the machine: the command must exist.
    let missing = write(
        dir.path(),
        "missing.toml",
        &SPEC.replace("/bin/sleep", "/nonexistent/daemon"),
    );
    let out = tandem(&["spec", "check", "-f", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("resource agents  failed"), "{text}");
    assert!(
        text.contains("missing.toml: group \"web\": resource \"app\": ") && text.contains("/nonexistent/daemon"),
        "{text}"
    );
    assert!(stderr(&out).contains("spec check: 1 problem in"), "{}", stderr(&out));

    // A file that is not a spec at all.
    let junk = write(dir.path(), "junk.toml", "[[groups]]\nname = \"web\"\ncolour = 1\n");
    let out = tandem(&["spec", "check", "-f", junk.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let report = json_of(&out);
    assert_eq!(result(&report, "file"), "failed");
    assert_eq!(result(&report, "resource agents"), "skipped");
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`")
    );
}

/// The result of check `check` in a spec check report.
fn check_result(report: &Value, check: &str) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no check {check}: {report}"))["result"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_example_passes_the_offline_checks() {
    let nodes = ["site-a.toml", "site-b.toml", "witness.toml"].map(example);
    let all: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let out = tandem(&[["config", "check", "-o", "json"].as_slice(), &all].concat());
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["warnings"], serde_json::json!([]), "{report}");
    for node in &nodes {
        let out = tandem(&["config", "check", node]);
        assert_eq!(out.status.code(), Some(0), "{node}: {}{}", stdout(&out), stderr(&out));
        // Every node serves HTTP (load balancers and Prometheus poll all of them).
        let text = std::fs::read_to_string(node).unwrap();
        assert!(text.lines().any(|l| l.starts_with("http_listen = ")), "{node}");
    }

    // The compose cluster's files too.
    let compose: Vec<String> = ["site-a.toml", "site-b.toml", "witness.toml"]
        .iter()
        .map(|f| example(&format!("../compose/{f}")))
        .collect();
    let all: Vec<&str> = compose.iter().map(String::as_str).collect();
    let out = tandem(&[["config", "check"].as_slice(), &all].concat());
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));

    // The minimal spec passes every check, against every node's file.
    for node in &nodes {
        let out = tandem(&[
            "spec",
            "check",
            "-f",
            &example("minimal-spec.toml"),
            "-c",
            node,
            "-o",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    }

    // The production spec is complete and consistent; what this machine
    // lacks is only the site's own fence hardware and secret files.
    let out = tandem(&[
        "spec",
        "check",
        "-f",
        &example("spec.toml"),
        "-c",
        &nodes[0],
        "-o",
        "json",
    ]);
    let report = json_of(&out);
    for check in ["file", "node names", "resource agents", "dns zone"] {
        assert_eq!(check_result(&report, check), "ok", "{check}: {report}");
    }
    for e in report["errors"].as_array().unwrap() {
        assert_eq!(e["check"], "fence devices", "{e}");
    }
}

#[test]
fn the_minimal_example_applies_on_a_fresh_cluster_and_runs() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let out = c.cli_ok("site-b", &["apply", "-f", &example("minimal-spec.toml")]);
    assert!(stdout(&out).contains("applied as spec version 1"), "{}", stdout(&out));
    c.wait_for("hello running on site-a", |c| {
        let s = c.status("site-b")?;
        let g = s["groups"].as_array()?.iter().find(|g| g["name"] == "hello")?.clone();
        (g["state"] == "running" && g["primary"] == "site-a").then_some(())
    });
    let (code, _) = http_get(c.node("site-a").http, "/primary/hello").unwrap();
    assert_eq!(code, 200);
    // The example's service outlives its agent (by design): stop it through
    // the cluster before the agents go.
    let empty = write(c.dir.path(), "empty.toml", "");
    c.cli_ok("site-b", &["apply", "-f", empty.to_str().unwrap()]);
    c.wait_for("hello stopped", |c| {
        let s = c.status("site-a")?;
        let stopped = s["groups"].as_array()?.iter().all(|g| g["state"] == "stopped");
        stopped.then_some(())
    });
}

#[test]
fn the_install_steps_agree_with_the_shipped_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let readme = read("README.md");
    let unit = read("deploy/systemd/tandem.service");
    let cargo = read("crates/tandem/Cargo.toml");
    // Where the README installs the binary and the configuration is where
    // the unit (and the package) look for them.
    assert!(readme.contains("install -m 0755 ~/.cargo/bin/tandem /usr/bin/tandem"));
    assert!(readme.contains("install -m 0640 deploy/examples/site-a.toml /etc/tandem/tandem.toml"));
    assert!(unit.contains("ExecStart=/usr/bin/tandem agent --config /etc/tandem/tandem.toml"));
    assert!(cargo.contains("[\"target/release/tandem\", \"usr/bin/\", \"755\"]"));
    // Every file the package takes from the tree exists (the generated
    // completions and man pages come from deploy/deb/build-deb).
    let deb = &cargo[cargo.find("[package.metadata.deb]").expect("cargo-deb metadata")..];
    for source in deb.lines().filter_map(|l| l.trim().strip_prefix("[\"../../")) {
        let source = source.split('"').next().unwrap();
        if source.starts_with("target/") {
            continue;
        }
        let path = source.trim_end_matches("/*");
        assert!(root.join(path).exists(), "{source}");
    }
    assert!(deb.contains("unit-scripts = \"../../deploy/systemd\""));
    assert!(root.join("deploy/deb/build-deb").exists());
}

/// A new user's `monitor_interval = "400000000000y"` was accepted by
/// `tandem apply` and then panicked the primary's group task. Every
/// duration Tandem takes from a spec, a configuration or a command line has
/// an upper bound, refused with the field named and exit 2, no panic.
#[test]
fn durations_beyond_a_year_are_refused_everywhere_they_are_read() {
    const HUGE: &str = "400000000000y";
    let dir = tempfile::tempdir().unwrap();
    let limit = format!("expected at most 365days, got \"{HUGE}\"");

    let spec = write(
        dir.path(),
        "huge.toml",
        &SPEC.replace(
            "args = [\"1000\"]",
            &format!("args = [\"1000\"]\n  monitor_interval = \"{HUGE}\""),
        ),
    );
    let out = tandem(&["spec", "check", "-f", spec.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    let e = &json_of(&out)["errors"][0];
    assert_eq!(
        (e["group"].as_str(), e["field"].as_str()),
        (Some("web"), Some("monitor_interval")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains(&limit), "{e}");

    let config = write(
        dir.path(),
        "site-a.toml",
        &node("site-a", 1, "member").replace("lease = \"2s\"", &format!("lease = \"{HUGE}\"")),
    );
    let out = tandem(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("site-a.toml") && text.contains("lease") && text.contains(&limit),
        "{text}"
    );

    let out = tandem(&["status", "--timeout", HUGE, "--endpoint", "127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("--timeout") && stderr(&out).contains(&limit),
        "{}",
        stderr(&out)
    );
}
