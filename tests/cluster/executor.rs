//! The node side of operator controls, end to end: maintenance in the
//! executor, role-change hooks, data freshness choosing the candidate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::resources::{group, kill9_pid, ledger_lines, service, service_pid, spec, wait_running_on};
use crate::support::*;

/// The events as `name` lists them (its own applied copy).
fn events(c: &TestCluster, name: &str) -> String {
    stdout(&c.cli_ok(name, &["events"]))
}

fn wait_event(c: &TestCluster, name: &str, text: &str) -> String {
    c.wait_for(&format!("{text:?} in the events on {name}"), |c| {
        let e = events(c, name);
        e.contains(text).then_some(e)
    })
}

/// `KEY=VALUE` lines of a file a hook wrote with `env`.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn wait_env_file(c: &TestCluster, path: &Path) -> BTreeMap<String, String> {
    c.wait_for(&format!("{} written by a hook", path.display()), |_| {
        let env = env_file(path);
        env.contains_key("TANDEM_CLUSTER").then_some(env)
    })
}

fn resource_of<'a>(g: &'a Value, node: &str, name: &str) -> Option<&'a Value> {
    g["resources"]
        .as_array()?
        .iter()
        .find(|r| r["node"] == node && r["name"] == name)
}

#[test]
fn maintenance_reports_a_dead_service_without_restarting_it_and_resumes_when_it_ends() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let file = spec(&dir, "spec.toml", "migration_threshold = 1", &service("app", &ledger));
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    let before = wait_running_on(&c, "site-a");
    let epoch = before["epoch"].as_u64().unwrap();

    c.cli_ok("site-b", &["maintenance", "on", "--group", "web"]);
    wait_event(&c, "site-a", "maintenance on for group web");
    let pid = c.wait_for("the service's pid", |c| service_pid(c, "site-a", "app"));
    kill9_pid(pid);

    // Reported, not acted on: the group shows failed on site-a, nothing
    // restarts it, no failure is counted (a threshold of 1 would move it).
    let g = c.wait_for("web reported failed on site-a", |c| {
        let s = c.status("site-b")?;
        let g = group(&s, "web")?.clone();
        let r = resource_of(&g, "site-a", "app")?;
        (g["state"] == "failed" && r["result"].as_str()?.starts_with("failed")).then_some(g)
    });
    assert_eq!(g["primary"], "site-a", "{g}");
    // Several monitor intervals (500 ms) without a restart or a move.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let s = c.status_of("site-b");
        let g = group(&s, "web").unwrap();
        assert_eq!(g["primary"], "site-a", "{g}");
        assert_eq!(g["epoch"].as_u64(), Some(epoch), "{g}");
        assert_eq!(resource_of(g, "site-a", "app").unwrap()["failures"], 0, "{g}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let starts = |ledger: &Path| {
        ledger_lines(ledger)
            .iter()
            .filter(|l| l.starts_with("start app site-a"))
            .count()
    };
    assert_eq!(starts(&ledger), 1, "{:?}", ledger_lines(&ledger));
    assert_eq!(service_pid(&c, "site-a", "app"), Some(pid), "the pid file stays");

    // Maintenance off: the executor resumes from what it saw and starts it again, in place.
    c.cli_ok("witness", &["maintenance", "off", "--group", "web"]);
    let after = c.wait_for("web running again on site-a with a new process", |c| {
        let s = c.status("site-b")?;
        let g = group(&s, "web")?.clone();
        let restarted = service_pid(c, "site-a", "app").is_some_and(|p| p != pid);
        (restarted && g["state"] == "running" && g["primary"] == "site-a").then_some(g)
    });
    assert_eq!(after["epoch"].as_u64(), Some(epoch), "not moved: {after}");
    assert_eq!(starts(&ledger), 2, "{:?}", ledger_lines(&ledger));
    let events = events(&c, "witness");
    assert!(events.contains("maintenance off for group web"), "{events}");
}

#[test]
fn maintenance_of_the_whole_cluster_keeps_a_running_group_as_it_is() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let file = spec(&dir, "spec.toml", "", &service("app", &ledger));
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    c.cli_ok("site-b", &["maintenance", "on"]);
    wait_event(&c, "site-a", "maintenance on for the cluster");
    // The assignment stays; the service keeps running untouched.
    std::thread::sleep(Duration::from_secs(1));
    let s = c.status_of("site-a");
    assert_eq!(group(&s, "web").unwrap()["state"], "running", "{s}");
    c.cli_ok("site-b", &["maintenance", "off"]);
    wait_event(&c, "site-a", "maintenance off for the cluster");
    wait_running_on(&c, "site-a");
    assert_eq!(
        ledger_lines(&ledger).iter().filter(|l| l.starts_with("start")).count(),
        1,
        "{:?}",
        ledger_lines(&ledger)
    );
}

/// A group's hooks write their environment to `DIR/HOOK-NODE-EPOCH`.
fn hooks_table(dir: &Path) -> String {
    let d = dir.display();
    let hook =
        |name: &str| format!("env | grep ^TANDEM_ | sort > {d}/{name}-$TANDEM_NODE-$TANDEM_EPOCH; echo {name} done");
    format!(
        "[groups.hooks]\nafter_promote = \"{}\"\nafter_demote = \"{}\"\nafter_failover = \"{}\"\ntimeout = \"10s\"\n",
        hook("promote"),
        hook("demote"),
        hook("failover")
    )
}

#[test]
fn role_change_hooks_run_with_their_environment_and_show_in_the_events() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let hooks_dir = dir.join("hooks");
    std::fs::create_dir_all(&hooks_dir).unwrap();
    // web: hooks that record their environment; other: a failing and a
    // hanging hook, which must not change what runs.
    let text = format!(
        "[[groups]]\nname = \"web\"\nprefer = [{{ node = \"site-a\", score = 100 }}, {{ node = \"site-b\", score = 50 }}]\n\
         {}\n{}\
         [[groups]]\nname = \"other\"\nprefer = [{{ node = \"site-a\", score = 100 }}, {{ node = \"site-b\", score = 50 }}]\n\
         [groups.hooks]\nafter_promote = \"echo broken promote; exit 3\"\nafter_failover = \"echo waiting; sleep 30\"\ntimeout = \"1s\"\n\n\
         {}",
        hooks_table(&hooks_dir),
        service("app", &ledger),
        service("worker", &ledger)
    );
    let file = write(&dir, "spec.toml", &text);
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);

    let e1 = wait_running_on(&c, "site-a")["epoch"].as_u64().unwrap();
    let env = wait_env_file(&c, &hooks_dir.join(format!("promote-site-a-{e1}")));
    let want = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let e1s = e1.to_string();
    assert_eq!(
        env,
        want(&[
            ("TANDEM_CLUSTER", &c.cluster),
            ("TANDEM_EPOCH", &e1s),
            ("TANDEM_GROUP", "web"),
            ("TANDEM_HOOK", "after_promote"),
            ("TANDEM_NEW_PRIMARY", "site-a"),
            ("TANDEM_NODE", "site-a"),
            ("TANDEM_OLD_PRIMARY", ""),
        ])
    );
    wait_event(
        &c,
        "witness",
        &format!("hook after_promote of web on site-a (epoch {e1}) succeeded: exit 0: promote done"),
    );
    wait_event(&c, "witness", "hook after_promote of other on site-a");
    let ev = wait_event(&c, "witness", "failed: exit 3: broken promote");
    assert!(ev.contains("hook after_promote of other on site-a"), "{ev}");

    // Failover: site-a's agent and services die.
    let pids: Vec<i32> = ["web/app.pid", "other/worker.pid"]
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(c.data_dir("site-a").join("run").join(p)).unwrap();
            text.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    c.kill9("site-a");
    for pid in pids {
        kill9_pid(pid);
    }
    let e2 = wait_running_on(&c, "site-b")["epoch"].as_u64().unwrap();
    assert!(e2 > e1);
    let e2s = e2.to_string();
    let env = wait_env_file(&c, &hooks_dir.join(format!("promote-site-b-{e2}")));
    assert_eq!(env["TANDEM_OLD_PRIMARY"], "site-a", "{env:?}");
    assert_eq!(env["TANDEM_NEW_PRIMARY"], "site-b", "{env:?}");
    let env = wait_env_file(&c, &hooks_dir.join(format!("failover-site-b-{e2}")));
    assert_eq!(
        env,
        want(&[
            ("TANDEM_CLUSTER", &c.cluster),
            ("TANDEM_EPOCH", &e2s),
            ("TANDEM_GROUP", "web"),
            ("TANDEM_HOOK", "after_failover"),
            ("TANDEM_NEW_PRIMARY", "site-b"),
            ("TANDEM_NODE", "site-b"),
            ("TANDEM_OLD_PRIMARY", "site-a"),
        ])
    );
    wait_event(
        &c,
        "witness",
        &format!("hook after_failover of web on site-b (epoch {e2}) succeeded"),
    );
    // The hanging hook of the other group is killed at its timeout; the group runs on.
    let ev = wait_event(&c, "witness", "failed: timed out after 1s");
    assert!(ev.contains("hook after_failover of other on site-b"), "{ev}");
    let s = c.status_of("site-b");
    assert_eq!(group(&s, "other").unwrap()["state"], "running", "{s}");
    assert_eq!(group(&s, "other").unwrap()["primary"], "site-b", "{s}");

    // The old primary returns: it learns it is no longer primary.
    c.start("site-a");
    let demote = hooks_dir.join(format!("demote-site-a-{e2}"));
    let env = wait_env_file(&c, &demote);
    assert_eq!(
        env,
        want(&[
            ("TANDEM_CLUSTER", &c.cluster),
            ("TANDEM_EPOCH", &e2s),
            ("TANDEM_GROUP", "web"),
            ("TANDEM_HOOK", "after_demote"),
            ("TANDEM_NEW_PRIMARY", "site-b"),
            ("TANDEM_NODE", "site-a"),
            ("TANDEM_OLD_PRIMARY", "site-a"),
        ])
    );
    wait_event(
        &c,
        "witness",
        &format!("hook after_demote of web on site-a (epoch {e2}) succeeded"),
    );
    // Each hook ran once: no file for another epoch, no second failover run
    // (site-b is not restarted, but the hooks memory is what prevents it).
    let files: Vec<String> = std::fs::read_dir(&hooks_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            format!("demote-site-a-{e2}"),
            format!("failover-site-b-{e2}"),
            format!("promote-site-a-{e1}"),
            format!("promote-site-b-{e2}")
        ],
        "{files:?}"
    );
    wait_running_on(&c, "site-b");
}

/// A commands resource whose monitor reports the position in
/// `DIR/NODE.pos` on every node, running or not.
fn replica(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "[[groups.resources]]\nname = \"replica\"\nagent = \"exec\"\nmonitor_interval = \"300ms\"\n\
         start = \"touch {d}/$TANDEM_NODE.running\"\n\
         stop = \"rm -f {d}/$TANDEM_NODE.running\"\n\
         monitor = \"echo tandem-freshness: position=$(cat {d}/$TANDEM_NODE.pos); test -f {d}/$TANDEM_NODE.running || exit 7\"\n\n"
    )
}

/// Group `db` on three members: site-a preferred, then site-c, then site-b
/// (unless `avoid_b`), at most 10 positions behind.
fn db_spec(dir: &Path, file: &str, avoid_b: bool) -> std::path::PathBuf {
    let (b, avoid) = if avoid_b {
        ("", "avoid = [\"site-b\"]\n")
    } else {
        (", { node = \"site-b\", score = 50 }", "")
    };
    let text = format!(
        "[[groups]]\nname = \"db\"\nprefer = [{{ node = \"site-a\", score = 100 }}, {{ node = \"site-c\", score = 90 }}{b}]\n\
         {avoid}max_lag = 10\n\n{}",
        replica(dir)
    );
    write(dir, file, &text)
}

fn candidate<'a>(g: &'a Value, node: &str) -> Option<&'a Value> {
    g["candidates"].as_array()?.iter().find(|c| c["node"] == node)
}

#[test]
fn a_failover_takes_the_most_current_candidate_and_never_one_beyond_max_lag() {
    let mut c = TestCluster::new(&[("site-a", "member"), ("site-b", "member"), ("site-c", "member")]);
    let dir = c.dir.path().to_path_buf();
    for (node, pos) in [("site-a", 100), ("site-b", 95), ("site-c", 80)] {
        write(&dir, &format!("{node}.pos"), &format!("{pos}\n"));
    }
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let file = db_spec(&dir, "spec.toml", false);
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);

    // Every candidate probes and reports; status shows it.
    let g = c.wait_for("db running on site-a with every candidate's freshness", |c| {
        let s = c.status("site-b")?;
        let g = group(&s, "db")?.clone();
        let all = ["site-a", "site-b", "site-c"]
            .iter()
            .all(|n| candidate(&g, n).is_some_and(|k| k["position"].is_u64()));
        (g["state"] == "running" && g["primary"] == "site-a" && all).then_some(g)
    });
    let b = candidate(&g, "site-b").unwrap();
    assert_eq!(
        (b["position"].as_u64(), b["behind"].as_u64(), b["eligible"].as_bool()),
        (Some(95), Some(5), Some(true)),
        "{g}"
    );
    let k = candidate(&g, "site-c").unwrap();
    assert_eq!(k["eligible"], false, "{g}");
    assert!(
        k["reason"]
            .as_str()
            .unwrap()
            .contains("site-c is behind: 20 positions > max_lag 10"),
        "{g}"
    );
    let table = stdout(&c.cli_ok("site-b", &["status"]));
    assert!(
        table.contains("candidate site-c") && table.contains("position 80"),
        "{table}"
    );

    // The primary is lost: site-b (most current) takes over, not site-c (higher score).
    c.kill9("site-a");
    let g = c.wait_for("db running on site-b", |c| {
        let s = c.status("site-b")?;
        let g = group(&s, "db")?.clone();
        (g["state"] == "running" && g["primary"] == "site-b").then_some(g)
    });
    assert!(!dir.join("site-c.running").exists(), "site-c never ran it: {g}");
    // The lost primary's last position is still the reference.
    assert_eq!(candidate(&g, "site-a").unwrap()["position"], 100, "{g}");

    // site-b may no longer host it: the only one left is too far behind, so
    // the group stays blocked with the reason, and never starts on site-c.
    let file = db_spec(&dir, "spec2.toml", true);
    c.cli_ok("site-c", &["apply", "-f", file.to_str().unwrap()]);
    let g = c.wait_for("db blocked because site-c is behind", |c| {
        let s = c.status("site-c")?;
        let g = group(&s, "db")?.clone();
        (g["state"] == "blocked" && g["blocked_reason"].as_str()?.contains("site-c is behind")).then_some(g)
    });
    assert!(g["nodes"].as_array().unwrap().is_empty(), "{g}");
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            !dir.join("site-c.running").exists(),
            "started on a candidate beyond max_lag"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once it catches up, it is fit.
    write(&dir, "site-c.pos", "99\n");
    c.wait_for("db running on site-c once it caught up", |c| {
        let s = c.status("site-c")?;
        let g = group(&s, "db")?;
        (g["state"] == "running" && g["primary"] == "site-c").then_some(())
    });
}
