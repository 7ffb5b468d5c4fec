//! The resource manager end to end: real agents, real services.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

pub(crate) fn group<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["groups"].as_array()?.iter().find(|g| g["name"] == name)
}

/// A spec file with group `web` built from `resources` (TOML blocks).
pub(crate) fn spec(dir: &Path, file: &str, extra_group_keys: &str, resources: &str) -> PathBuf {
    let text = format!(
        "[[groups]]\nname = \"web\"\nprefer = [{{ node = \"site-a\", score = 100 }}, {{ node = \"site-b\", score = 50 }}]\n{extra_group_keys}\n{resources}"
    );
    write(dir, file, &text)
}

/// A commands resource that logs its start and stop to `ledger`.
fn logged(name: &str, ledger: &Path, flag: &Path) -> String {
    let (l, f) = (ledger.display(), flag.display());
    format!(
        "[[groups.resources]]\nname = \"{name}\"\nagent = \"exec\"\nmonitor_interval = \"1s\"\n\
         start = \"echo start {name} $TANDEM_NODE $TANDEM_EPOCH >> {l} && touch {f}\"\n\
         stop = \"echo stop {name} $TANDEM_NODE >> {l} && rm -f {f}\"\n\
         monitor = \"test -f {f} || exit 7\"\n\n"
    )
}

/// A supervised process that logs its start and its SIGTERM to `ledger`.
pub(crate) fn service(name: &str, ledger: &Path) -> String {
    let l = ledger.display();
    format!(
        "[[groups.resources]]\nname = \"{name}\"\nagent = \"exec\"\nmonitor_interval = \"500ms\"\n\
         command = \"/bin/sh\"\n\
         args = [\"-c\", \"trap 'echo stop {name} $TANDEM_NODE >> {l}; exit 0' TERM; echo start {name} $TANDEM_NODE $TANDEM_EPOCH >> {l}; while :; do sleep 0.1; done\"]\n\n"
    )
}

fn dummy(name: &str) -> String {
    format!("[[groups.resources]]\nname = \"{name}\"\nagent = \"ocf:heartbeat:Dummy\"\nmonitor_interval = \"1s\"\n\n")
}

pub(crate) fn wait_running_on(c: &TestCluster, on: &str) -> Value {
    c.wait_for(&format!("web running on {on} in every node's status"), |c| {
        let mut last = None;
        for n in c.running() {
            let s = c.status(&n)?;
            let g = group(&s, "web")?.clone();
            if g["state"] != "running" || g["primary"] != on {
                return None;
            }
            last = Some(g);
        }
        last
    })
}

pub(crate) fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub(crate) fn service_pid(c: &TestCluster, node: &str, resource: &str) -> Option<i32> {
    let text = std::fs::read_to_string(c.data_dir(node).join("run/web").join(format!("{resource}.pid"))).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

pub(crate) fn kill9_pid(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn a_group_starts_in_order_on_its_primary_and_stops_in_reverse() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let resources = format!(
        "{}{}{}",
        logged("first", &ledger, &dir.join("first.flag")),
        dummy("second"),
        service("third", &ledger)
    );
    let file = spec(&dir, "spec.toml", "", &resources);
    let out = c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    assert!(stdout(&out).contains("+ group web"), "{}", stdout(&out));

    let g = wait_running_on(&c, "site-a");
    let epoch = g["epoch"].as_u64().unwrap();
    assert!(epoch >= 1);
    let lines = ledger_lines(&ledger);
    assert_eq!(
        lines,
        vec![
            format!("start first site-a {epoch}"),
            format!("start third site-a {epoch}")
        ],
        "in order, on the primary, with the epoch"
    );
    let resources = g["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 3, "{g}");
    assert!(
        resources.iter().all(|r| r["node"] == "site-a" && r["result"] == "ok"),
        "{g}"
    );

    let show = stdout(&c.cli_ok("witness", &["spec", "show"]));
    assert!(
        show.contains("# spec version 1") && show.contains("ocf:heartbeat:Dummy"),
        "{show}"
    );

    // An empty spec removes the group: stopped in reverse order.
    let empty = write(&dir, "empty.toml", "");
    c.cli_ok("site-a", &["apply", "-f", empty.to_str().unwrap()]);
    c.wait_for("the group stopped", |c| {
        let s = c.status("site-a")?;
        let g = group(&s, "web")?;
        (g["state"] == "stopped").then_some(())
    });
    let lines = ledger_lines(&ledger);
    assert_eq!(
        &lines[2..],
        &["stop third site-a".to_string(), "stop first site-a".to_string()],
        "{lines:?}"
    );
    let events = stdout(&c.cli_ok("site-b", &["events"]));
    assert!(
        events.contains("spec version 2 applied") && events.contains("web on site-a: stopped"),
        "{events}"
    );
}

#[test]
fn a_failed_service_restarts_in_place_then_the_group_moves() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let file = spec(&dir, "spec.toml", "migration_threshold = 2", &service("app", &ledger));
    c.cli_ok("site-a", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");

    // First failure: restarted in place.
    let pid = c.wait_for("the service's pid", |c| service_pid(c, "site-a", "app"));
    kill9_pid(pid);
    c.wait_for("a restart in place on site-a", |c| {
        let s = c.status("site-a")?;
        let g = group(&s, "web")?;
        let restarted = service_pid(c, "site-a", "app").is_some_and(|p| p != pid);
        let failures = g["resources"].as_array()?.iter().find(|r| r["node"] == "site-a")?["failures"].as_u64()?;
        (restarted && g["state"] == "running" && g["primary"] == "site-a" && failures == 1).then_some(())
    });

    // Second failure reaches the threshold: the group moves to site-b.
    let pid = service_pid(&c, "site-a", "app").unwrap();
    kill9_pid(pid);
    let g = wait_running_on(&c, "site-b");
    assert!(g["epoch"].as_u64().unwrap() >= 2, "{g}");
    let lines = ledger_lines(&ledger);
    assert!(lines.last().unwrap().starts_with("start app site-b"), "{lines:?}");

    // Cleanup forgets the failures.
    c.cli_ok("witness", &["resource", "cleanup", "--group", "web"]);
    let events = stdout(&c.cli_ok("witness", &["events"]));
    assert!(events.contains("failure counts cleared for web"), "{events}");
}

#[test]
fn kill9_of_the_primary_agent_and_its_service_moves_the_group_never_to_the_witness() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let file = spec(&dir, "spec.toml", "", &service("app", &ledger));
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    let before = wait_running_on(&c, "site-a");
    let pid = c.wait_for("the service's pid", |c| service_pid(c, "site-a", "app"));
    c.kill9("site-a");
    kill9_pid(pid);
    let after = wait_running_on(&c, "site-b");
    assert!(
        after["epoch"].as_u64() > before["epoch"].as_u64(),
        "a new epoch: {before} {after}"
    );
    for n in ["site-b", "witness"] {
        let s = c.status_of(n);
        assert_eq!(group(&s, "web").unwrap()["nodes"], serde_json::json!(["site-b"]));
    }
    assert!(!c.data_dir("witness").join("run").exists(), "the witness ran nothing");

    // site-a comes back with a stale copy of the state that still assigns web
    // to it: it must catch up before it acts, never start web a second time.
    c.start("site-a");
    c.wait_for("site-a back, up and caught up", |c| {
        let b = c.status("site-b")?;
        let a = c.status("site-a")?;
        let up = node_in(&b, "site-a")?["state"] == "up";
        (up && a["applied_index"].as_u64()? >= b["applied_index"].as_u64()?).then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    let starts_on_a = ledger_lines(&ledger)
        .iter()
        .filter(|l| l.starts_with("start app site-a"))
        .count();
    assert_eq!(
        starts_on_a,
        1,
        "web started again on site-a: {:?}",
        ledger_lines(&ledger)
    );
    wait_running_on(&c, "site-b");
}

#[test]
fn invalid_specs_are_refused_and_the_old_spec_still_runs() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let good = spec(&dir, "good.toml", "", &dummy("vip"));
    c.cli_ok("site-a", &["apply", "-f", good.to_str().unwrap()]);
    wait_running_on(&c, "site-a");

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown agent",
            dummy("x").replace("ocf:heartbeat:Dummy", "lxc:container"),
            "expected one of \"exec\"",
        ),
        (
            "missing required parameter",
            "[[groups.resources]]\nname = \"x\"\nagent = \"ocf:heartbeat:anything\"\n".into(),
            "binfile",
        ),
        (
            "bad duration",
            dummy("x").replace("\"1s\"", "\"soon\""),
            "expected a duration",
        ),
        ("duplicate resource", format!("{}{}", dummy("x"), dummy("x")), "\"x\""),
        (
            "missing OCF agent",
            dummy("x").replace("Dummy", "NoSuchAgent"),
            "NoSuchAgent",
        ),
    ];
    for (what, resources, expected) in cases {
        let file = spec(&dir, "bad.toml", "", &resources);
        let out = c.cli("site-b", &["apply", "-f", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("group \"web\""),
            "{what} names the group: {}",
            stderr(&out)
        );
    }
    let unknown_node = write(
        &dir,
        "bad-node.toml",
        &format!(
            "[[groups]]\nname = \"web\"\nprefer = [{{ node = \"site-z\", score = 1 }}]\n{}",
            dummy("x")
        ),
    );
    let out = c.cli("site-b", &["apply", "-f", unknown_node.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("site-z"), "{}", stderr(&out));
    let cycle = write(
        &dir,
        "cycle.toml",
        &format!(
            "[[groups]]\nname = \"a\"\nafter = [\"b\"]\n{}[[groups]]\nname = \"b\"\nafter = [\"a\"]\n{}",
            dummy("x"),
            dummy("y")
        ),
    );
    let out = c.cli("site-b", &["apply", "-f", cycle.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cycle"), "{}", stderr(&out));

    // Nothing changed: version 1 still in force, the group still runs.
    let show = stdout(&c.cli_ok("witness", &["spec", "show"]));
    assert!(show.contains("# spec version 1"), "{show}");
    let s = c.status_of("site-a");
    assert_eq!(s["spec_version"], 1);
    assert_eq!(group(&s, "web").unwrap()["state"], "running");
    // A diff shows without applying.
    let other = spec(&dir, "other.toml", "", &format!("{}{}", dummy("vip"), dummy("extra")));
    let out = c.cli_ok("site-b", &["spec", "diff", "-f", other.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("extra") && stdout(&out).contains("not applied"),
        "{}",
        stdout(&out)
    );
}
