//! The CLI's habits, against real agents: global options, `-c NODE.toml`,
//! `--output json` on commands that change things, `status --check` with
//! Nagios exit codes, the exit code of an outcome not known yet, shell
//! completions and manual pages, and a gRPC health service that follows the
//! node's lease.

use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// The gRPC health status of `service` on the node at `address`
/// (`tonic_health`'s `ServingStatus` as i32), or None when it cannot answer.
pub fn grpc_health(address: &str, service: &str) -> Option<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .ok()?;
        Some(reply.into_inner().status)
    })
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

#[test]
fn grpc_health_follows_the_lease() {
    let mut c = TestCluster::three();
    // One voter of three: no quorum, no coordinator, no lease.
    c.start("site-a");
    let address = c.node("site-a").address.clone();
    c.wait_for("site-a's gRPC answering", |_| grpc_health(&address, "tandem.v1.Peer"));
    for service in ["", "tandem.v1.Tandem"] {
        assert_eq!(
            grpc_health(&address, service),
            Some(NOT_SERVING),
            "{service:?} without a lease"
        );
    }
    assert_eq!(grpc_health(&address, "tandem.v1.Peer"), Some(SERVING));
    c.start("site-b");
    c.start("witness");
    c.wait_for("site-a SERVING once it holds a lease", |_| {
        (grpc_health(&address, "") == Some(SERVING) && grpc_health(&address, "tandem.v1.Tandem") == Some(SERVING))
            .then_some(())
    });
}

#[test]
fn status_check_speaks_nagios_and_outcomes_have_their_codes() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    // A group that stops slowly, so that a short wait ends before its move does.
    let flag = format!("{}/web.$TANDEM_NODE", dir.display());
    let spec = write(
        &dir,
        "spec.toml",
        &format!(
            "[[groups]]\nname = \"web\"\nprefer = [{{ node = \"site-a\", score = 100 }}]\n\
             [[groups.resources]]\nname = \"app\"\nagent = \"exec\"\nmonitor_interval = \"1s\"\n\
             timeouts = {{ stop = \"30s\" }}\n\
             start = \"touch {flag}\"\nstop = \"sleep 6; rm -f {flag}\"\nmonitor = \"test -f {flag} || exit 7\"\n"
        ),
    );
    let out = c.cli_ok("site-b", &["apply", "-f", spec.to_str().unwrap(), "--output", "json"]);
    let applied: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["version"], 1);
    assert!(
        applied["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("web"))
    );

    let check = |c: &TestCluster, node: &str| {
        let out = c.cli(node, &["status", "--check"]);
        (out.status.code(), stdout(&out))
    };
    let (code, line) = c.wait_for("status --check OK with web running", |c| {
        let (code, line) = check(c, "witness");
        (code == Some(0) && line.contains("1/1 groups running")).then_some((code, line))
    });
    assert_eq!(code, Some(0));
    assert!(
        line.starts_with("TANDEM OK - cluster ")
            && line.contains("3/3 nodes up, 1/1 groups running | nodes_up=3;;;0;3"),
        "{line}"
    );
    let out = c.cli("witness", &["status", "--check", "-o", "json"]);
    let json: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!((json["status"].as_str(), json["code"].as_u64()), (Some("ok"), Some(0)));

    // JSON answers of commands that change things.
    let out = c.cli_ok("site-a", &["annotate", "checking", "-o", "json"]);
    let note: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(note["event_seq"].as_u64().unwrap() > 0, "{note}");
    let out = c.cli_ok("site-a", &["-o", "json", "spec", "show"]);
    let shown: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(shown["version"], 1);

    // A switchover whose wait ends before the old primary stopped: the
    // outcome is not known yet (3), unlike a refusal (2).
    let out = c.cli("site-a", &["switchover", "web", "--to", "witness"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = tandem(&[
        "switchover",
        "web",
        "--to",
        "site-b",
        "--timeout",
        "1500ms",
        "-e",
        &c.node("site-a").address,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("outcome unknown"), "{}", stderr(&out));
    c.wait_for("web running on site-b", |c| {
        let s = c.status("witness")?;
        let g = s["groups"].as_array()?.iter().find(|g| g["name"] == "web")?.clone();
        (g["state"] == "running" && g["primary"] == "site-b").then_some(())
    });

    // Degraded: a node lost.
    c.kill9("site-a");
    let (code, line) = c.wait_for("status --check WARNING", |c| {
        let (code, line) = check(c, "witness");
        (code == Some(1)).then_some((code, line))
    });
    assert_eq!(code, Some(1));
    assert!(line.starts_with("TANDEM WARNING - node site-a "), "{line}");

    // Critical: a group that can run nowhere.
    let nowhere = write(
        &dir,
        "nowhere.toml",
        "[[groups]]\nname = \"web\"\navoid = [\"site-a\", \"site-b\"]\n\
         [[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    c.cli_ok("site-b", &["apply", "-f", nowhere.to_str().unwrap()]);
    let line = c.wait_for("status --check CRITICAL", |c| {
        let (code, line) = check(c, "witness");
        (code == Some(2)).then_some(line)
    });
    assert!(line.starts_with("TANDEM CRITICAL - group web "), "{line}");

    // Unknown: nobody answers.
    let out = tandem(&[
        "status",
        "--check",
        "-e",
        &format!("127.0.0.1:{}", free_port()),
        "--timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).starts_with("TANDEM UNKNOWN - cannot reach"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_cli_takes_its_endpoint_from_a_node_s_configuration() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let config = c.node("site-b").config.to_str().unwrap().to_string();
    // -c wins over the environment; an explicit --endpoint wins over -c.
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("TANDEM_ENDPOINT", format!("127.0.0.1:{}", free_port()))
            .output()
            .unwrap()
    };
    let out = run(&["-c", &config, "status", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(status["answered_by"], "site-b");
    let out = run(&[
        "status",
        "--config",
        &config,
        "--output",
        "json",
        "-e",
        &c.node("witness").address,
    ]);
    let status: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(status["answered_by"], "witness");
    let out = run(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the environment's endpoint, where nobody listens"
    );
    // A bad node configuration is refused like the agent refuses it.
    let bad = write(c.dir.path(), "bad.toml", "[cluster]\nname = \"x\"\n");
    let out = run(&["-c", bad.to_str().unwrap(), "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
}

#[test]
fn completions_and_manual_pages_come_from_the_cli_itself() {
    let out = tandem(&["completions", "bash"]);
    assert!(out.status.success());
    let script = stdout(&out);
    assert!(script.contains("_tandem()") && script.contains("switchover") && script.contains("--endpoint"));
    for shell in ["zsh", "fish"] {
        assert!(tandem(&["completions", shell]).status.success(), "{shell}");
    }
    let out = tandem(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is refused");
    let out = tandem(&["man"]);
    assert!(out.status.success());
    assert!(
        stdout(&out).starts_with(".ie") && stdout(&out).contains(".TH tandem 1"),
        "{}",
        stdout(&out)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tandem(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "tandem.1",
        "tandem-status.1",
        "tandem-spec-check.1",
        "tandem-config-check.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}
