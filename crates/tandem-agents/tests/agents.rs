//! Real processes, real OCF agents (Debian's resource-agents package).

// Helpers outside #[test] functions unwrap too (as in tests/cluster).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_agents::{Action, Env, Outcome, Runner, validate};
use tandem_core::spec::{ActionTimeouts, AgentSpec, ResourceSpec};

const OCF_ROOT: &str = "/usr/lib/ocf";

fn env(resource: &str) -> Env {
    Env {
        group: "web".into(),
        resource: resource.into(),
        epoch: 7,
        node: "node-a".into(),
    }
}

fn resource(name: &str, agent: AgentSpec) -> ResourceSpec {
    ResourceSpec {
        name: name.into(),
        agent,
        timeouts: ActionTimeouts {
            start: Duration::from_secs(10),
            stop: Duration::from_secs(10),
            monitor: Duration::from_secs(10),
        },
        monitor_interval: Duration::from_secs(10),
    }
}

/// A supervised `/bin/sh -c SCRIPT`.
fn shell_process(script: &str, vars: &[(&str, &str)]) -> AgentSpec {
    AgentSpec::Process {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        workdir: None,
        user: None,
    }
}

fn commands(start: &str, stop: &str, monitor: &str) -> AgentSpec {
    AgentSpec::Commands {
        start: start.into(),
        stop: stop.into(),
        monitor: monitor.into(),
    }
}

fn ocf(agent: &str, params: &[(&str, &str)]) -> AgentSpec {
    AgentSpec::Ocf {
        provider: "heartbeat".into(),
        agent: agent.into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// Running and not a zombie (an orphan reparented to a PID 1 that does not
/// reap may linger as a zombie: it runs nothing).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().next().unwrap();
    state != "Z" && state != "X"
}

fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits (up to 5 s) until `path` exists and is not empty.
async fn wait_for_file(path: &Path) -> String {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", path.display());
}

async fn wait_dead(pid: i32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The OCF tests need the real agents: a missing package fails them with
/// the fix, rather than letting them pass without testing anything.
fn ocf_installed() -> bool {
    assert!(
        Path::new(OCF_ROOT).join("resource.d/heartbeat/Dummy").exists(),
        "{OCF_ROOT} is absent: install Debian's resource-agents package (apt-get install resource-agents)"
    );
    true
}

// ---------------------------------------------------------------------------
// exec: supervised process

#[tokio::test]
async fn process_start_monitor_stop_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env.txt");
    let spec = resource(
        "app",
        shell_process(
            "env > \"$OUT.tmp\" && mv \"$OUT.tmp\" \"$OUT\"; echo hello from app; exec sleep 1000",
            &[("OUT", out.to_str().unwrap()), ("COLOUR", "blue")],
        ),
    );
    let state = dir.path().join("run");
    let mut runner = Runner::new(&spec, &state, Path::new(OCF_ROOT));
    let e = env("app");

    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
    let started = runner.run(Action::Start, &e).await;
    assert_eq!(started.outcome, Outcome::Ok, "{started:?}");
    let pid_file = state.join("web/app.pid");
    let pid = pid_in(&pid_file);
    assert!(alive(pid));

    let vars = wait_for_file(&out).await;
    for want in [
        "TANDEM_EPOCH=7",
        "TANDEM_NODE=node-a",
        "TANDEM_GROUP=web",
        "TANDEM_RESOURCE=app",
        "COLOUR=blue",
    ] {
        assert!(vars.lines().any(|l| l == want), "{want} missing from:\n{vars}");
    }

    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::Ok);
    let log = std::fs::read_to_string(state.join("web/app.log")).unwrap();
    assert!(log.contains("hello from app"), "{log}");

    let stopped = runner.run(Action::Stop, &e).await;
    assert_eq!(stopped.outcome, Outcome::Ok, "{stopped:?}");
    assert!(stopped.output_tail.contains("hello from app"), "{stopped:?}");
    assert!(!alive(pid), "process {pid} still alive after stop");
    assert!(!pid_file.exists());
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
    assert_eq!(
        runner.run(Action::Stop, &e).await.outcome,
        Outcome::Ok,
        "stop is idempotent"
    );
}

#[tokio::test]
async fn process_exit_is_a_failure_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = resource("crashy", shell_process("sleep 1.5; echo dying >&2; exit 3", &[]));
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("crashy");

    assert_eq!(runner.run(Action::Start, &e).await.outcome, Outcome::Ok);
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::Ok);
    let pid = pid_in(&dir.path().join("web/crashy.pid"));
    assert!(wait_dead(pid).await);
    for _ in 0..2 {
        let r = runner.run(Action::Monitor, &e).await;
        match &r.outcome {
            Outcome::Failed(why) => assert!(why.contains("exit 3"), "{why}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(r.output_tail.contains("dying"), "{r:?}");
    }
    // A new runner (agent restart) cannot know the status, but knows it is gone.
    let mut other = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    match other.run(Action::Monitor, &e).await.outcome {
        Outcome::Failed(why) => assert!(why.contains("gone"), "{why}"),
        o => panic!("expected Failed, got {o:?}"),
    }
    assert_eq!(runner.run(Action::Stop, &e).await.outcome, Outcome::Ok);
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
}

#[tokio::test]
async fn process_exiting_at_once_fails_start() {
    let dir = tempfile::tempdir().unwrap();
    let spec = resource("bad", shell_process("echo config is broken >&2; exit 2", &[]));
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let r = runner.run(Action::Start, &env("bad")).await;
    match &r.outcome {
        Outcome::Failed(why) => assert!(why.contains("exit 2"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(r.output_tail.contains("config is broken"), "{r:?}");
}

#[tokio::test]
async fn process_killed_by_signal_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = resource("victim", shell_process("exec sleep 1000", &[]));
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("victim");
    assert_eq!(runner.run(Action::Start, &e).await.outcome, Outcome::Ok);
    let pid = pid_in(&dir.path().join("web/victim.pid"));
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    match runner.run(Action::Monitor, &e).await.outcome {
        Outcome::Failed(why) => assert!(why.contains("killed by signal 9 (SIGKILL)"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(runner.run(Action::Stop, &e).await.outcome, Outcome::Ok);
}

#[tokio::test]
async fn process_no_duplicate_start_after_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let launches = dir.path().join("launches");
    let spec = resource(
        "once",
        shell_process(
            "echo $$ >> \"$LAUNCHES\"; exec sleep 1000",
            &[("LAUNCHES", launches.to_str().unwrap())],
        ),
    );
    let state = dir.path().join("run");
    let e = env("once");
    let mut first = Runner::new(&spec, &state, Path::new(OCF_ROOT));
    assert_eq!(first.run(Action::Start, &e).await.outcome, Outcome::Ok);
    let pid = pid_in(&state.join("web/once.pid"));
    wait_for_file(&launches).await;

    // The agent restarts: a new runner on the same state directory.
    let mut second = Runner::new(&spec, &state, Path::new(OCF_ROOT));
    assert_eq!(second.run(Action::Monitor, &e).await.outcome, Outcome::Ok);
    assert_eq!(second.run(Action::Start, &e).await.outcome, Outcome::Ok);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&launches).unwrap();
    assert_eq!(text.lines().count(), 1, "started twice: {text}");
    assert_eq!(pid_in(&state.join("web/once.pid")), pid);

    assert_eq!(second.run(Action::Stop, &e).await.outcome, Outcome::Ok);
    assert!(wait_dead(pid).await);
    assert_eq!(first.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
    assert_eq!(second.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
}

#[tokio::test]
async fn process_ignoring_sigterm_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    let mut spec = resource(
        "stubborn",
        shell_process(
            "trap '' TERM; sh -c 'trap \"\" TERM; echo $$ > \"$CHILD\"; while :; do sleep 0.1; done' & \
             while :; do sleep 0.1; done",
            &[("CHILD", child_pid.to_str().unwrap())],
        ),
    );
    spec.timeouts.stop = Duration::from_millis(700);
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("stubborn");
    assert_eq!(runner.run(Action::Start, &e).await.outcome, Outcome::Ok);
    let leader = pid_in(&dir.path().join("web/stubborn.pid"));
    let helper: i32 = wait_for_file(&child_pid).await.trim().parse().unwrap();
    assert!(alive(leader) && alive(helper));

    let r = runner.run(Action::Stop, &e).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(r.duration >= Duration::from_millis(700), "{r:?}");
    assert!(r.output_tail.contains("process group was killed"), "{r:?}");
    assert!(wait_dead(leader).await, "leader {leader} survived");
    assert!(wait_dead(helper).await, "helper {helper} survived");
}

#[tokio::test]
async fn process_stop_sweeps_its_group() {
    // The leader exits on SIGTERM, a helper in its group ignores it.
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    let spec = resource(
        "leaky",
        shell_process(
            "sh -c 'trap \"\" TERM; echo $$ > \"$CHILD\"; while :; do sleep 0.1; done' & exec sleep 1000",
            &[("CHILD", child_pid.to_str().unwrap())],
        ),
    );
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("leaky");
    assert_eq!(runner.run(Action::Start, &e).await.outcome, Outcome::Ok);
    let helper: i32 = wait_for_file(&child_pid).await.trim().parse().unwrap();
    let r = runner.run(Action::Stop, &e).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(wait_dead(helper).await, "helper {helper} survived the stop");
}

#[tokio::test]
async fn process_pid_reuse_is_not_mistaken_for_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let spec = resource("ghost", shell_process("exec sleep 1000", &[]));
    // A pid file naming a live process (this test) with another start time.
    std::fs::create_dir_all(dir.path().join("web")).unwrap();
    std::fs::write(dir.path().join("web/ghost.pid"), format!("{} 1\n", std::process::id())).unwrap();
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("ghost");
    assert!(matches!(
        runner.run(Action::Monitor, &e).await.outcome,
        Outcome::Failed(_)
    ));
    // Stop must not signal that process (it would kill this test).
    assert_eq!(runner.run(Action::Stop, &e).await.outcome, Outcome::Ok);
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
}

#[tokio::test]
async fn process_unavailable_cases() {
    let dir = tempfile::tempdir().unwrap();
    let e = env("x");
    let cases = [
        (
            AgentSpec::Process {
                command: "/nonexistent/daemon".into(),
                args: vec![],
                env: BTreeMap::new(),
                workdir: None,
                user: None,
            },
            "/nonexistent/daemon",
        ),
        (
            AgentSpec::Process {
                command: "/bin/sleep".into(),
                args: vec!["1000".into()],
                env: BTreeMap::new(),
                workdir: None,
                user: Some("no-such-user-tandem".into()),
            },
            "no-such-user-tandem",
        ),
        (
            AgentSpec::Process {
                command: "/bin/sleep".into(),
                args: vec!["1000".into()],
                env: BTreeMap::new(),
                workdir: Some("/nonexistent/dir".into()),
                user: None,
            },
            "/nonexistent/dir",
        ),
    ];
    for (agent, named) in cases {
        let mut runner = Runner::new(&resource("x", agent), dir.path(), Path::new(OCF_ROOT));
        match runner.run(Action::Start, &e).await.outcome {
            Outcome::Unavailable(why) => assert!(why.contains(named), "{why}"),
            other => panic!("expected Unavailable naming {named}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn process_runs_as_user() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "switching users needs root: run the tests as root"
    );
    let out = dir.path().join("id.txt");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let spec = resource(
        "nobody",
        AgentSpec::Process {
            command: "sh".into(),
            args: vec![
                "-c".into(),
                "echo \"$(id -u) $USER $PWD\" > \"$OUT\"; exec sleep 1000".into(),
            ],
            env: [("OUT".to_string(), out.to_str().unwrap().to_string())].into(),
            workdir: Some("/tmp".into()),
            user: Some("nobody".into()),
        },
    );
    let state = dir.path().join("run");
    let mut runner = Runner::new(&spec, &state, Path::new(OCF_ROOT));
    let e = env("nobody");
    assert_eq!(runner.run(Action::Start, &e).await.outcome, Outcome::Ok);
    let id = wait_for_file(&out).await;
    assert_eq!(id.trim(), "65534 nobody /tmp");
    assert_eq!(runner.run(Action::Stop, &e).await.outcome, Outcome::Ok);
}

// ---------------------------------------------------------------------------
// exec: three commands

#[tokio::test]
async fn commands_exit_codes_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let e = env("cmd");
    let cases: [(&str, Action, Outcome); 8] = [
        ("exit 0", Action::Start, Outcome::Ok),
        ("exit 0", Action::Stop, Outcome::Ok),
        ("exit 0", Action::Monitor, Outcome::Ok),
        ("exit 7", Action::Monitor, Outcome::NotRunning),
        ("exit 7", Action::Start, Outcome::Failed("exit 7".into())),
        ("exit 3", Action::Monitor, Outcome::Failed("exit 3".into())),
        (
            "kill -9 $$",
            Action::Stop,
            Outcome::Failed("killed by signal 9 (SIGKILL)".into()),
        ),
        (
            "test \"$TANDEM_EPOCH/$TANDEM_NODE/$TANDEM_GROUP/$TANDEM_RESOURCE\" = 7/node-a/web/cmd",
            Action::Start,
            Outcome::Ok,
        ),
    ];
    for (script, action, want) in cases {
        let mut runner = Runner::new(
            &resource("cmd", commands(script, script, script)),
            dir.path(),
            Path::new(OCF_ROOT),
        );
        let r = runner.run(action, &e).await;
        assert_eq!(r.outcome, want, "{script:?} as {action}");
    }

    // Output: both streams, in order, the last 20 lines, any bytes.
    let script = "for i in $(seq 1 30); do echo out $i; done; echo err line >&2; printf '\\377\\376 binary\\n'; \
                  printf 'no newline'";
    let mut runner = Runner::new(
        &resource("cmd", commands(script, "true", "true")),
        dir.path(),
        Path::new(OCF_ROOT),
    );
    let r = runner.run(Action::Start, &e).await;
    assert_eq!(r.outcome, Outcome::Ok);
    // One pipe for both streams: the order is the order of writing.
    let mut want: Vec<String> = (14..=30).map(|i| format!("out {i}")).collect();
    want.extend(["err line", "\u{fffd}\u{fffd} binary", "no newline"].map(String::from));
    let lines: Vec<&str> = r.output_tail.lines().collect();
    assert_eq!(lines, want);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let script = format!(
        "sleep 1000 & echo $! > {p}.grandchild; echo $$ > {p}.child; sleep 1000; echo never",
        p = pids.display()
    );
    let mut spec = resource("hang", commands(&script, "true", "true"));
    spec.timeouts.start = Duration::from_millis(800);
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let r = runner.run(Action::Start, &env("hang")).await;
    assert_eq!(r.outcome, Outcome::TimedOut, "{r:?}");
    assert!(r.duration >= Duration::from_millis(800), "{r:?}");
    assert!(r.duration < Duration::from_secs(5), "{r:?}");
    let child: i32 = std::fs::read_to_string(format!("{}.child", pids.display()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let grandchild: i32 = std::fs::read_to_string(format!("{}.grandchild", pids.display()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_dead(child).await, "child {child} alive after timeout");
    assert!(
        wait_dead(grandchild).await,
        "grandchild {grandchild} alive after timeout"
    );
}

#[tokio::test]
async fn a_daemon_holding_the_pipes_does_not_block_the_action() {
    // `sleep 1000 &` keeps stdout open after the shell exits.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("daemon.pid");
    let script = format!("echo starting; sleep 1000 & echo $! > {}", pid_file.display());
    let mut runner = Runner::new(
        &resource("bg", commands(&script, "true", "true")),
        dir.path(),
        Path::new(OCF_ROOT),
    );
    let r = runner.run(Action::Start, &env("bg")).await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(r.duration < Duration::from_secs(2), "{r:?}");
    assert!(r.output_tail.contains("starting"));
    let daemon: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(alive(daemon), "the action's daemon must be left running");
    std::process::Command::new("kill")
        .arg(daemon.to_string())
        .status()
        .unwrap();
}

// ---------------------------------------------------------------------------
// ocf

#[tokio::test]
async fn ocf_dummy_lifecycle() {
    if !ocf_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = resource("dummy", ocf("Dummy", &[]));
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("dummy");
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
    let r = runner.run(Action::Start, &e).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    // Dummy keeps its state in HA_RSCTMP, which is ours.
    assert!(dir.path().join("ocf-tmp/Dummy-dummy.state").exists());
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::Ok);
    assert_eq!(runner.run(Action::Stop, &e).await.outcome, Outcome::Ok);
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
    assert_eq!(runner.run(Action::Stop, &e).await.outcome, Outcome::Ok);
}

#[tokio::test]
async fn ocf_anything_runs_a_daemon() {
    if !ocf_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("anything.pid");
    let spec = resource(
        "sleeper",
        ocf(
            "anything",
            &[
                ("binfile", "/bin/sleep"),
                ("cmdline_options", "1000"),
                ("pidfile", pidfile.to_str().unwrap()),
            ],
        ),
    );
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("sleeper");
    let r = runner.run(Action::Start, &e).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    let daemon = pid_in(&pidfile);
    assert!(alive(daemon));
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::Ok);
    let r = runner.run(Action::Stop, &e).await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert!(wait_dead(daemon).await, "sleep {daemon} survived the stop");
    assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
}

#[tokio::test]
async fn ocf_missing_agent_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let spec = resource("nope", ocf("NoSuchAgent", &[]));
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    match runner.run(Action::Start, &env("nope")).await.outcome {
        Outcome::Unavailable(why) => assert!(why.contains("NoSuchAgent"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// An OCF agent of our own, in a private OCF root: shows the environment
/// and exit code mapping.
fn fake_ocf_root(dir: &Path) -> PathBuf {
    let root = dir.join("ocf");
    let agent_dir = root.join("resource.d/test");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = agent_dir.join("probe");
    std::fs::write(
        &agent,
        "#!/bin/sh\n\
         case \"$1\" in\n\
         meta-data) echo '<resource-agent name=\"probe\"><parameters>\
         <parameter name=\"code\" required=\"1\"/></parameters></resource-agent>'; exit 0;;\n\
         esac\n\
         env > \"$OCF_RESKEY_envfile\"\n\
         exit \"$OCF_RESKEY_code\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    root
}

#[tokio::test]
async fn ocf_environment_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let root = fake_ocf_root(dir.path());
    let envfile = dir.path().join("env.txt");
    let state = dir.path().join("run");
    let run = |code: &str, action: Action| {
        let spec = ResourceSpec {
            agent: AgentSpec::Ocf {
                provider: "test".into(),
                agent: "probe".into(),
                params: [
                    ("code".to_string(), code.to_string()),
                    ("envfile".to_string(), envfile.to_str().unwrap().to_string()),
                ]
                .into(),
            },
            ..resource("db", commands("", "", ""))
        };
        let root = root.clone();
        let state = state.clone();
        async move { Runner::new(&spec, &state, &root).run(action, &env("db")).await.outcome }
    };

    assert_eq!(run("0", Action::Start).await, Outcome::Ok);
    let vars = std::fs::read_to_string(&envfile).unwrap();
    for want in [
        format!("OCF_ROOT={}", root.display()),
        "OCF_RESKEY_code=0".to_string(),
        "OCF_RESOURCE_INSTANCE=db".to_string(),
        "OCF_RESOURCE_TYPE=probe".to_string(),
        "OCF_RESOURCE_PROVIDER=test".to_string(),
        "OCF_RA_VERSION_MAJOR=1".to_string(),
        "OCF_RA_VERSION_MINOR=0".to_string(),
        "OCF_RESKEY_CRM_meta_timeout=10000".to_string(),
        format!("HA_RSCTMP={}", state.join("ocf-tmp").display()),
        "TANDEM_EPOCH=7".to_string(),
        "TANDEM_NODE=node-a".to_string(),
        "TANDEM_GROUP=web".to_string(),
        "TANDEM_RESOURCE=db".to_string(),
    ] {
        assert!(vars.lines().any(|l| l == want), "{want} missing from:\n{vars}");
    }
    let path = vars.lines().find_map(|l| l.strip_prefix("PATH=")).unwrap();
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        assert!(path.split(':').any(|p| p == d), "{d} not in PATH {path}");
    }
    assert!(state.join("ocf-tmp").is_dir());

    assert_eq!(run("7", Action::Monitor).await, Outcome::NotRunning);
    assert_eq!(run("7", Action::Stop).await, Outcome::Ok);
    assert_eq!(
        run("7", Action::Start).await,
        Outcome::Failed("OCF exit 7 (not running)".into())
    );
    assert_eq!(
        run("1", Action::Monitor).await,
        Outcome::Failed("OCF exit 1 (generic error)".into())
    );
    assert!(matches!(run("5", Action::Start).await, Outcome::Unavailable(m) if m.contains("not installed")));
    assert!(matches!(run("6", Action::Monitor).await, Outcome::Unavailable(m) if m.contains("not configured")));

    // validate reads this agent's meta-data too.
    let spec = resource("db", commands("", "", ""));
    let spec = ResourceSpec {
        agent: AgentSpec::Ocf {
            provider: "test".into(),
            agent: "probe".into(),
            params: BTreeMap::new(),
        },
        ..spec
    };
    let err = validate(&spec, &root).await.unwrap_err();
    assert!(err.contains("\"code\""), "{err}");
}

// ---------------------------------------------------------------------------
// validate

#[tokio::test]
async fn validate_ocf() {
    if !ocf_installed() {
        return;
    }
    let root = Path::new(OCF_ROOT);
    let err = validate(&resource("s", ocf("anything", &[("cmdline_options", "1000")])), root)
        .await
        .unwrap_err();
    assert!(err.contains("binfile"), "{err}");

    validate(&resource("s", ocf("anything", &[("binfile", "/bin/sleep")])), root)
        .await
        .unwrap();
    validate(&resource("d", ocf("Dummy", &[("whatever_unknown", "1")])), root)
        .await
        .unwrap();

    let err = validate(&resource("n", ocf("NoSuchAgent", &[])), root)
        .await
        .unwrap_err();
    assert!(err.contains("NoSuchAgent") && err.contains("not installed"), "{err}");
}

#[tokio::test]
async fn validate_exec_and_systemd() {
    let root = Path::new(OCF_ROOT);
    let process = |command: &str, user: Option<&str>| {
        resource(
            "p",
            AgentSpec::Process {
                command: command.into(),
                args: vec![],
                env: BTreeMap::new(),
                workdir: None,
                user: user.map(String::from),
            },
        )
    };
    validate(&process("/bin/sleep", None), root).await.unwrap();
    validate(&process("sleep", Some("root")), root).await.unwrap();
    let err = validate(&process("/nonexistent/daemon", None), root).await.unwrap_err();
    assert!(err.contains("/nonexistent/daemon"), "{err}");
    let err = validate(&process("no-such-program-tandem", None), root)
        .await
        .unwrap_err();
    assert!(err.contains("no-such-program-tandem"), "{err}");
    let err = validate(&process("sleep", Some("no-such-user-tandem")), root)
        .await
        .unwrap_err();
    assert!(err.contains("no-such-user-tandem"), "{err}");

    validate(&resource("c", commands("true", "true", "true")), root)
        .await
        .unwrap();
    let err = validate(&resource("c", commands("true", " ", "true")), root)
        .await
        .unwrap_err();
    assert!(err.contains("stop"), "{err}");

    validate(
        &resource(
            "u",
            AgentSpec::Systemd {
                unit: "nginx.service".into(),
            },
        ),
        root,
    )
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------
// systemd

#[tokio::test]
async fn systemd_class() {
    let dir = tempfile::tempdir().unwrap();
    let spec = resource(
        "unit",
        AgentSpec::Systemd {
            unit: "tandem-test-no-such-unit.service".into(),
        },
    );
    let mut runner = Runner::new(&spec, dir.path(), Path::new(OCF_ROOT));
    let e = env("unit");
    if !Path::new("/run/systemd/system").exists() {
        for action in [Action::Start, Action::Monitor, Action::Stop] {
            match runner.run(action, &e).await.outcome {
                Outcome::Unavailable(why) => assert!(why.contains("systemd is not running"), "{why}"),
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
    } else {
        assert_eq!(runner.run(Action::Monitor, &e).await.outcome, Outcome::NotRunning);
        assert_ne!(runner.run(Action::Start, &e).await.outcome, Outcome::Ok);
        assert_eq!(runner.run(Action::Stop, &e).await.outcome, Outcome::Ok);
    }
}

// ---------------------------------------------------------------------------
// freshness

#[tokio::test]
async fn an_exec_monitor_reports_freshness_on_its_output() {
    use tandem_core::groups::Freshness;
    let dir = tempfile::tempdir().unwrap();
    let e = env("db");
    let cases: [(&str, Outcome, Option<Freshness>); 5] = [
        (
            "echo tandem-freshness: position=10; echo tandem-freshness: position=12",
            Outcome::Ok,
            Some(Freshness::Position(12)),
        ),
        // A stopped candidate still says how current its data is.
        (
            "echo 'tandem-freshness: lag=1500ms' >&2; exit 7",
            Outcome::NotRunning,
            Some(Freshness::LagMs(1500)),
        ),
        (
            "echo tandem-freshness: lag=2s; for i in $(seq 1 40); do echo noise; done",
            Outcome::Ok,
            Some(Freshness::LagMs(2000)),
        ),
        ("echo tandem-freshness: position=soon", Outcome::Ok, None),
        ("echo nothing", Outcome::Ok, None),
    ];
    for (monitor, outcome, freshness) in cases {
        let mut runner = Runner::new(
            &resource("db", commands("true", "true", monitor)),
            dir.path(),
            Path::new(OCF_ROOT),
        );
        let r = runner.run(Action::Monitor, &e).await;
        assert_eq!((r.outcome, r.freshness), (outcome, freshness), "{monitor}");
    }
    // Only monitors report it.
    let mut runner = Runner::new(
        &resource("db", commands("echo tandem-freshness: position=1", "true", "true")),
        dir.path(),
        Path::new(OCF_ROOT),
    );
    assert_eq!(runner.run(Action::Start, &e).await.freshness, None);
}

#[tokio::test]
async fn an_ocf_agent_reports_freshness_through_the_attribute_tools() {
    use tandem_core::groups::Freshness;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ocf");
    let agent_dir = root.join("resource.d/test");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = agent_dir.join("replica");
    std::fs::write(
        &agent,
        "#!/bin/sh\n\
         crm_attribute -l reboot -n master-db -v 100 || exit 1\n\
         case \"$OCF_RESKEY_mode\" in\n\
         position) crm_attribute -l reboot -n tandem-position -v 40 || exit 1\n\
                   attrd_updater -n tandem-position -U 41 || exit 1;;\n\
         lag) attrd_updater -n tandem-lag -U 3s || exit 1;;\n\
         esac\n\
         exit \"$OCF_RESKEY_code\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let state = dir.path().join("run");
    let run = |mode: &str, code: &str| {
        let spec = ResourceSpec {
            agent: AgentSpec::Ocf {
                provider: "test".into(),
                agent: "replica".into(),
                params: [
                    ("mode".to_string(), mode.to_string()),
                    ("code".to_string(), code.to_string()),
                ]
                .into(),
            },
            ..resource("db", commands("", "", ""))
        };
        let (root, state) = (root.clone(), state.clone());
        async move {
            let r = Runner::new(&spec, &state, &root).run(Action::Monitor, &env("db")).await;
            (r.outcome, r.freshness)
        }
    };
    assert_eq!(run("position", "0").await, (Outcome::Ok, Some(Freshness::Position(41))));
    assert_eq!(
        run("lag", "7").await,
        (Outcome::NotRunning, Some(Freshness::LagMs(3000)))
    );
    // Nothing recorded by this action: nothing reported (an earlier
    // action's record does not linger).
    assert_eq!(run("none", "0").await, (Outcome::Ok, None));
}

// ---------------------------------------------------------------------------
// role-change hooks

#[tokio::test]
async fn hooks_run_in_their_own_group_with_a_timeout() {
    use tandem_agents::run_hook;
    let vars = [
        ("TANDEM_HOOK", "after_promote".to_string()),
        ("TANDEM_GROUP", "db".to_string()),
    ];
    let r = run_hook(
        "db",
        "after_promote",
        "echo first; echo \"$TANDEM_HOOK $TANDEM_GROUP\"",
        &vars,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        (r.ok, r.status.as_str(), r.last_line.as_str()),
        (true, "exit 0", "after_promote db")
    );

    let r = run_hook(
        "db",
        "h",
        "echo the password is hunter2; exit 3",
        &[],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!((r.ok, r.status.as_str()), (false, "exit 3"));
    assert!(!r.last_line.contains("hunter2"), "{r:?}");

    let long = "x".repeat(1000);
    let r = run_hook("db", "h", &format!("echo {long}"), &[], Duration::from_secs(5)).await;
    assert!(
        r.ok && r.last_line.chars().count() == tandem_agents::HOOK_LINE_MAX + 1,
        "{r:?}"
    );

    // A hook past its timeout is killed with everything it started.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
    let began = std::time::Instant::now();
    let r = run_hook("db", "h", &script, &[], Duration::from_millis(300)).await;
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(!r.ok && r.status.starts_with("timed out after 300ms"), "{r:?}");
    let child = pid_in(&pidfile);
    assert!(wait_dead(child).await, "the hook's child survived");
}
