//! Fencing end to end: Debian's unmodified `fence_dummy`, `exec` fence
//! devices, the operator's `tandem fence` and `fence confirm`, and the
//! watchdog that a failed stop stops feeding.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::resources::{group, kill9_pid, ledger_lines, service, service_pid, spec, wait_running_on};
use crate::support::*;

const FENCE_DUMMY: &str = "/usr/sbin/fence_dummy";

fn require_fence_dummy() {
    assert!(
        Path::new(FENCE_DUMMY).exists(),
        "{FENCE_DUMMY} is missing: install Debian's fence agents with `apt-get install fence-agents`"
    );
}

/// `[fencing]` tables: device `dev` fences `node`.
fn fencing(node: &str, dev: &str, device_keys: &str) -> String {
    format!("[fencing.devices.{dev}]\n{device_keys}\n\n[fencing.nodes.{node}]\nlevels = [[\"{dev}\"]]\n")
}

fn events(c: &TestCluster, node: &str) -> Vec<Value> {
    stdout(&c.cli_ok(node, &["events", "--output", "json"]))
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The position of the first event whose message contains `text`.
fn position(events: &[Value], text: &str) -> Option<usize> {
    events
        .iter()
        .position(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
}

/// Failed fencing attempts, as the coordinators (site-b, the witness) logged them.
fn fencing_attempts_failed(c: &TestCluster) -> usize {
    ["site-b", "witness"]
        .iter()
        .map(|n| {
            std::fs::read_to_string(&c.node(n).log)
                .unwrap_or_default()
                .matches("fencing failed; will retry")
                .count()
        })
        .sum()
}

/// Failures to fence `node` in the witness's event log.
fn fence_failures_recorded(c: &TestCluster, node: &str) -> usize {
    let what = format!("fencing {node} failed");
    events(c, "witness")
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with(&what)))
        .count()
}

/// Gives `node` a watchdog device (a plain file: softdog cannot be loaded in
/// this sandbox; the agent's side is the same) before it starts.
fn with_watchdog(c: &TestCluster, node: &str) -> std::path::PathBuf {
    let watchdog = c.dir.path().join(format!("watchdog-{node}"));
    std::fs::write(&watchdog, "").unwrap();
    let mut text = std::fs::read_to_string(&c.node(node).config).unwrap();
    text.push_str(&format!(
        "\n[watchdog]\ndevice = \"{}\"\ninterval = \"100ms\"\n",
        watchdog.display()
    ));
    std::fs::write(&c.node(node).config, text).unwrap();
    watchdog
}

/// `kill -9` of `node`'s agent and of its service, as a power loss would.
fn lose(c: &mut TestCluster, node: &str) {
    if let Some(pid) = service_pid(c, node, "http") {
        kill9_pid(pid);
    }
    c.kill9(node);
}

#[test]
fn a_lost_primary_is_fenced_through_fence_dummy_before_its_group_moves() {
    require_fence_dummy();
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let status_file = dir.join("pdu-a.status");
    // fence_dummy's power switch: the plug is on.
    std::fs::write(&status_file, "ON").unwrap();
    let device = format!(
        "agent = \"fence_dummy\"\nparams = {{ type = \"file\", status_file = \"{}\", password = \"hunter2-secret\" }}\ntimeout = \"10s\"",
        status_file.display()
    );
    let file = spec(
        &dir,
        "spec.toml",
        "",
        &format!("{}{}", service("http", &ledger), fencing("site-a", "pdu-a", &device)),
    );
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    let show = stdout(&c.cli_ok("witness", &["spec", "show"]));
    assert!(
        show.contains("pdu-a") && !show.contains("hunter2-secret"),
        "secrets never shown: {show}"
    );

    lose(&mut c, "site-a");
    let g = wait_running_on(&c, "site-b");
    let epoch = g["epoch"].as_u64().unwrap();

    let ev = events(&c, "site-b");
    let requested = position(&ev, "site-a must be fenced").expect("a fencing request event");
    let fenced = position(&ev, "site-a fenced: level 1: pdu-a ok").expect("a fenced event");
    let assigned = position(&ev, "web assigned to site-b").expect("the new assignment");
    assert!(
        requested < fenced && fenced < assigned,
        "fence before recover: request {requested}, fenced {fenced}, assigned {assigned}: {ev:#?}"
    );
    let status = std::fs::read_to_string(&status_file).unwrap_or_default();
    assert_eq!(status, "off", "fence_dummy switched it off");
    assert!(
        ledger_lines(&ledger).contains(&format!("start http site-b {epoch}")),
        "{:?}",
        ledger_lines(&ledger)
    );
    for n in ["site-b", "witness"] {
        let log = std::fs::read_to_string(&c.node(n).log).unwrap();
        assert!(!log.contains("hunter2-secret"), "the password leaked into {n}'s log");
    }
    assert!(
        !ev.iter().any(|e| e.to_string().contains("hunter2-secret")),
        "the password leaked into events"
    );
}

#[test]
fn a_failing_fence_device_blocks_the_group_until_it_works_again() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let broken = dir.join("switch-broken");
    std::fs::write(&broken, "").unwrap();
    // A broken switch that echoes what it was sent (its password too) in its
    // error; once repaired, its status answers off (site-a is killed by the
    // test itself: this switch only stands in for one).
    let device = format!(
        "agent = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"if test -e {}; then cat >&2; exit 1; fi; test $TANDEM_FENCE_ACTION != status || exit 2\"]\n\
         params = {{ login = \"admin\", password = \"s3cret-pw\" }}\ntimeout = \"5s\"\nretries = 0",
        broken.display()
    );
    let file = spec(
        &dir,
        "spec.toml",
        "",
        &format!("{}{}", service("http", &ledger), fencing("site-a", "switch", &device)),
    );
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");

    lose(&mut c, "site-a");
    let blocked = c.wait_for("web blocked on a failed fence", |c| {
        let s = c.status("site-b")?;
        let g = group(&s, "web")?;
        let why = s["fencing_needed"]["site-a"].as_str()?;
        (g["state"] == "blocked" && why.contains("last attempt failed")).then(|| (g.clone(), why.to_string()))
    });
    assert!(
        blocked.0["blocked_reason"]
            .as_str()
            .unwrap()
            .contains("site-a needs fencing"),
        "{blocked:?}"
    );
    assert!(blocked.1.contains("level 1: switch failed"), "{blocked:?}");
    assert!(
        blocked.1.contains("password=<redacted>"),
        "the device's own words, without the secret: {blocked:?}"
    );
    // It keeps trying, and never guesses.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !ledger_lines(&ledger).iter().any(|l| l.contains("site-b")),
        "web must not start anywhere while site-a is not fenced: {:?}",
        ledger_lines(&ledger)
    );
    let attempts = fencing_attempts_failed(&c);
    assert!(attempts >= 2, "fencing is retried: {attempts} attempts");
    let failures = fence_failures_recorded(&c, "site-a");
    assert_eq!(failures, 1, "the same failure is recorded once, not on every retry");

    std::fs::remove_file(&broken).unwrap();
    wait_running_on(&c, "site-b");
    let s = c.status_of("site-b");
    assert!(s["fencing_needed"].as_object().is_none_or(|m| m.is_empty()), "{s}");
    // The password never shows, though the device printed it.
    let ev = stdout(&c.cli_ok("witness", &["events", "--output", "json"]));
    assert!(ev.contains("<redacted>") && !ev.contains("s3cret-pw"), "{ev}");
    for n in ["site-b", "witness"] {
        let log = std::fs::read_to_string(&c.node(n).log).unwrap();
        assert!(!log.contains("s3cret-pw"), "the password leaked into {n}'s log");
    }
    let show = stdout(&c.cli_ok("witness", &["spec", "show"]));
    assert!(!show.contains("s3cret-pw"), "{show}");
    let status = stdout(&c.cli_ok("witness", &["status", "--output", "json"]));
    assert!(!status.contains("s3cret-pw"), "{status}");
}

#[test]
fn operators_fence_through_devices_and_confirm_only_nodes_that_are_down() {
    require_fence_dummy();
    let mut c = TestCluster::three();
    // site-a feeds a watchdog (a plain file here: softdog cannot be loaded
    // in this sandbox; the agent's side is the same).
    let watchdog = with_watchdog(&c, "site-a");
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let ledger = dir.join("ledger");
    let stuck = "[[groups.resources]]\nname = \"stuck\"\nagent = \"exec\"\nmonitor_interval = \"1s\"\n\
                 start = \"true\"\nstop = \"exit 1\"\nmonitor = \"true\"\n\n";
    std::fs::write(dir.join("pdu-b.status"), "ON").unwrap();
    let device = format!(
        "agent = \"fence_dummy\"\nparams = {{ type = \"file\", status_file = \"{}\" }}",
        dir.join("pdu-b.status").display()
    );
    let resources = format!(
        "{}{stuck}{}",
        service("http", &ledger),
        fencing("site-b", "pdu-b", &device)
    );
    let file = spec(&dir, "spec.toml", "", &resources);
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    let fed = std::fs::metadata(&watchdog).unwrap().len();
    assert!(fed > 0, "the watchdog is fed");

    // Without --yes and without a terminal: refused, nothing done.
    let out = c.cli("site-b", &["fence", "site-b"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("add --yes"), "{}", stderr(&out));
    // A node without devices cannot be fenced through them.
    let out = c.cli("site-b", &["fence", "witness", "--yes"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("witness has no fence device"), "{}", stderr(&out));
    // Through its devices.
    let out = c.cli("site-a", &["fence", "site-b", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("site-b fenced: level 1: pdu-b ok"),
        "{}",
        stdout(&out)
    );
    let ev = events(&c, "witness");
    let req = position(&ev, "site-b must be fenced: requested by").expect("the request names who asked");
    assert!(ev[req]["actor"].as_str().unwrap().contains('@'), "{}", ev[req]);

    // Move web away from site-a: the stop of `stuck` fails there.
    let moved = write(
        &dir,
        "spec2.toml",
        &format!("[[groups]]\nname = \"web\"\navoid = [\"site-a\"]\n{resources}"),
    );
    c.cli_ok("site-b", &["apply", "-f", moved.to_str().unwrap()]);
    let why = c.wait_for("web blocked on the failed stop", |c| {
        let s = c.status("site-b")?;
        let g = group(&s, "web")?;
        let r = g["blocked_reason"].as_str()?;
        r.contains("tandem fence confirm").then(|| r.to_string())
    });
    assert!(why.contains("site-a needs fencing"), "{why}");
    // The failed stop escalated: the watchdog is no longer fed.
    let settled = std::fs::metadata(&watchdog).unwrap().len();
    std::thread::sleep(Duration::from_millis(600));
    let later = std::fs::metadata(&watchdog).unwrap().len();
    assert!(
        later <= settled + 1,
        "still fed after the failed stop: {settled} -> {later}"
    );

    // site-a is up: confirming it is off is refused.
    let out = c.cli("site-b", &["fence", "confirm", "site-a", "--yes"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("site-a is up"), "{}", stderr(&out));

    // The operator powers it off, then confirms: refused while its lease may
    // still be valid, accepted once it shows down.
    lose(&mut c, "site-a");
    let out = c.cli("site-b", &["fence", "confirm", "site-a", "--yes"]);
    assert!(
        !out.status.success() && stderr(&out).contains("its lease may still be valid"),
        "{}",
        stderr(&out)
    );
    let start = Instant::now();
    let out = loop {
        let out = c.cli("site-b", &["fence", "confirm", "site-a", "--yes"]);
        if out.status.success() || start.elapsed() > WAIT {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("WARNING"), "{}", stderr(&out));
    let g = wait_running_on(&c, "site-b");
    let epoch = g["epoch"].as_u64().unwrap();
    assert!(ledger_lines(&ledger).contains(&format!("start http site-b {epoch}")));
    let ev = events(&c, "witness");
    assert!(
        position(&ev, "site-a fenced: confirmed off by").is_some(),
        "the confirmation is recorded with who gave it: {ev:#?}"
    );
}

#[test]
fn a_node_whose_lease_runs_out_kills_what_will_not_stop_and_stops_feeding_its_watchdog() {
    let mut c = TestCluster::three();
    let watchdog = with_watchdog(&c, "site-a");
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    // A service that ignores SIGTERM, and a resource whose stop hangs: both
    // with stop timeouts far longer than the lease (3 s in these tests).
    let resources = "[[groups.resources]]\nname = \"http\"\nagent = \"exec\"\nmonitor_interval = \"1s\"\n\
                     timeouts = { start = \"20s\", stop = \"60s\", monitor = \"10s\" }\n\
                     command = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; while :; do sleep 0.1; done\"]\n\n\
                     [[groups.resources]]\nname = \"hung\"\nagent = \"exec\"\nmonitor_interval = \"1s\"\n\
                     timeouts = { start = \"20s\", stop = \"60s\", monitor = \"10s\" }\n\
                     start = \"true\"\nstop = \"sleep 60\"\nmonitor = \"true\"\n\n";
    let file = spec(&dir, "spec.toml", "", resources);
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(&c, "site-a");
    let pid = service_pid(&c, "site-a", "http").expect("the service's pid");

    // site-a loses every peer: its lease cannot be renewed.
    c.signal("site-b", nix::sys::signal::Signal::SIGSTOP);
    c.signal("witness", nix::sys::signal::Signal::SIGSTOP);
    let paused = Instant::now();
    // Running: not gone and not a zombie (the agent reaps its child later).
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| st.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    };
    while alive(pid) && paused.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed_after = paused.elapsed();
    // The lease guard process kills at the lease's recorded end, which errs
    // early; the agent escalates the hung stop at the lease's real end. The
    // peers stay paused until then (a renewed lease would end nothing).
    let escalated = Instant::now();
    while escalated.elapsed() < Duration::from_secs(10)
        && !std::fs::read_to_string(&c.node("site-a").log).is_ok_and(|l| l.contains("self-fencing escalated"))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    c.signal("site-b", nix::sys::signal::Signal::SIGCONT);
    c.signal("witness", nix::sys::signal::Signal::SIGCONT);
    let log = std::fs::read_to_string(&c.node("site-a").log).unwrap();
    assert!(
        !alive(pid),
        "the service still runs {killed_after:?} after site-a lost its peers: {}",
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(
        killed_after < Duration::from_secs(10),
        "killed after {killed_after:?}: at the lease's end, not after the 60 s stop timeout"
    );
    let log = std::fs::read_to_string(&c.node("site-a").log).unwrap();
    // Killed by the lease guard in the agent or by the lease guard process
    // beside it, whichever looked first.
    assert!(
        log.contains("the lease ended with the service still running") || log.contains("did not stop this service"),
        "{log}"
    );
    assert!(
        log.contains("self-fencing: this node's lease runs out"),
        "the self-fencing stop says why it stops: {log}"
    );
    assert!(log.contains("self-fencing escalated"), "the hung stop escalates: {log}");
    let settled = std::fs::metadata(&watchdog).unwrap().len();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        std::fs::metadata(&watchdog).unwrap().len(),
        settled,
        "the watchdog is no longer fed"
    );
}

/// SIGKILLs, when dropped, every process group named by the pid files of
/// `web`'s `http` on the given nodes: a frozen or killed agent leaves its
/// service running, and a test must not leave it behind, also when it fails.
/// Declare it after the cluster: it then goes first, while the files exist.
struct ServiceReaper(Vec<std::path::PathBuf>);

impl ServiceReaper {
    fn new(c: &TestCluster, nodes: &[&str]) -> ServiceReaper {
        ServiceReaper(nodes.iter().map(|n| c.data_dir(n).join("run/web/http.pid")).collect())
    }
}

impl Drop for ServiceReaper {
    fn drop(&mut self) {
        for file in &self.0 {
            let pgid = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse::<i32>().ok());
            if let Some(pgid) = pgid.filter(|p| *p > 1) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pgid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// The state letter of a process (`/proc/PID/stat`), `None` once it is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Running: there, and neither a zombie nor dead.
fn alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Stops `node`'s agent with SIGSTOP (its service runs on) and checks that
/// it took effect.
fn freeze(c: &TestCluster, node: &str) -> i32 {
    let pid = i32::try_from(c.node(node).pid().expect("the agent runs")).unwrap();
    c.signal(node, nix::sys::signal::Signal::SIGSTOP);
    c.wait_for(&format!("{node}'s agent stopped"), |_| {
        (proc_state(pid) == Some('T')).then_some(())
    });
    pid
}

/// A service that records, when it starts, whether the other site's service
/// still runs (`peer=alive` or `peer=dead`, from that site's pid file): the
/// service's own record of whether two ran at once.
fn watchful_service(dir: &Path, ledger: &Path) -> String {
    let script = write(
        dir,
        "watchful.sh",
        &format!(
            "case \"$TANDEM_NODE\" in site-a) peer=site-b ;; *) peer=site-a ;; esac\n\
             p=''\n\
             read -r p _ 2> /dev/null < \"{dir}/$peer-data/run/web/http.pid\"\n\
             st=dead\n\
             if [ -n \"$p\" ] && s=$(cat /proc/$p/stat 2> /dev/null); then\n\
             \x20 case \"${{s##*) }}\" in Z* | X*) ;; *) st=alive ;; esac\n\
             fi\n\
             trap 'echo stop http $TANDEM_NODE >> {ledger}; exit 0' TERM\n\
             echo \"start http $TANDEM_NODE $TANDEM_EPOCH $$ peer=$st\" >> {ledger}\n\
             while :; do sleep 0.1; done\n",
            dir = dir.display(),
            ledger = ledger.display()
        ),
    );
    format!(
        "[[groups.resources]]\nname = \"http\"\nagent = \"exec\"\nmonitor_interval = \"500ms\"\n\
         command = \"/bin/sh\"\nargs = [{:?}]\n\n",
        script.display().to_string()
    )
}

/// Runs `web` (the watchful service, its ledger `DIR/ledger`) on site-a,
/// whose only fence device is `dev` (`device`: its TOML keys); returns the
/// ledger and the pid of site-a's service.
fn watchful_web_on_site_a(c: &TestCluster, dev: &str, device: &str) -> (std::path::PathBuf, i32) {
    let dir = c.dir.path();
    let ledger = dir.join("ledger");
    let resources = format!("{}{}", watchful_service(dir, &ledger), fencing("site-a", dev, device));
    let file = spec(dir, "spec.toml", "", &resources);
    c.cli_ok("site-b", &["apply", "-f", file.to_str().unwrap()]);
    wait_running_on(c, "site-a");
    let service = service_pid(c, "site-a", "http").expect("the service's pid");
    (ledger, service)
}

/// `web` running on `on` as site-b and the witness see it (site-a may be
/// frozen or fenced).
fn wait_running_on_survivors(c: &TestCluster, on: &str) -> Value {
    c.wait_for(&format!("web running on {on}"), |c| {
        let mut last = None;
        for n in ["site-b", "witness"] {
            let s = c.status(n)?;
            let g = group(&s, "web")?;
            if g["state"] != "running" || g["primary"] != on {
                return None;
            }
            last = Some(g.clone());
        }
        last
    })
}

#[test]
fn a_frozen_primary_is_really_fenced_before_its_group_starts_elsewhere() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let _reaper = ServiceReaper::new(&c, &["site-a", "site-b"]);
    // The demo's own device: kills site-a's agent and services, and says off
    // only once none of them remains.
    let fence = c.write_fence_device().unwrap();
    let device = format!(
        "agent = \"exec\"\ncommand = [\"/bin/sh\", {:?}, \"site-a\"]\ntimeout = \"10s\"",
        fence.display().to_string()
    );
    let (ledger, service) = watchful_web_on_site_a(&c, "switch-a", &device);

    // site-a's agent hangs; its service runs on.
    let agent = freeze(&c, "site-a");
    assert!(alive(service), "the service outlives its frozen agent");
    let g = wait_running_on_survivors(&c, "site-b");
    let epoch = g["epoch"].as_u64().unwrap();

    // The service's own record: site-a's service was dead when site-b's started.
    let started = ledger_lines(&ledger)
        .into_iter()
        .find(|l| l.starts_with(&format!("start http site-b {epoch} ")))
        .unwrap_or_else(|| panic!("site-b's start: {:?}", ledger_lines(&ledger)));
    assert!(
        started.ends_with(" peer=dead"),
        "site-b started while site-a's service still ran: {started}"
    );
    // The fence ran, was verified, and came before the new assignment.
    let ev = events(&c, "site-b");
    let fenced = position(&ev, "site-a fenced: level 1: switch-a ok, confirmed off by status")
        .unwrap_or_else(|| panic!("a verified fence: {ev:#?}"));
    let assigned = position(&ev, "web assigned to site-b").expect("the new assignment");
    assert!(fenced < assigned, "fence before recover: {ev:#?}");
    assert!(!alive(service), "the fence killed site-a's service");
    assert!(!alive(agent), "the fence killed site-a's frozen agent");
    assert!(
        !ledger_lines(&ledger).iter().any(|l| l == "stop http site-a"),
        "killed, not stopped: {:?}",
        ledger_lines(&ledger)
    );
}

#[test]
fn a_fence_device_whose_off_lies_keeps_the_group_blocked() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let _reaper = ServiceReaper::new(&c, &["site-a", "site-b"]);
    let calls = c.dir.path().join("switch-calls");
    // Says "off" and exits 0 without doing anything; its status says on.
    let device = format!(
        "agent = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", \"echo $TANDEM_FENCE_ACTION >> {}; \
         case $TANDEM_FENCE_ACTION in off) echo site-a is off ;; status) echo 'site-a: power ON' ;; esac\"]\n\
         timeout = \"2s\"\nretries = 0",
        calls.display()
    );
    let (ledger, service) = watchful_web_on_site_a(&c, "liar", &device);

    freeze(&c, "site-a");
    let (g, why) = c.wait_for("web blocked on an unconfirmed fence", |c| {
        let s = c.status("site-b")?;
        let g = group(&s, "web")?;
        let why = s["fencing_needed"]["site-a"].as_str()?;
        (g["state"] == "blocked" && why.contains("last attempt failed")).then(|| (g.clone(), why.to_string()))
    });
    assert!(
        g["blocked_reason"].as_str().unwrap().contains("site-a needs fencing"),
        "{g}"
    );
    assert!(
        why.contains("liar failed: off succeeded (exit 0: site-a is off) but the node is not confirmed off")
            && why.contains("status still says on (exit 0: site-a: power ON)"),
        "the reason, in status: {why}"
    );
    // The witness may apply the failure a moment after site-b.
    let failed = c.wait_for("the failure as an event on the witness", |c| {
        let ev = events(c, "witness");
        Some(ev[position(&ev, "fencing site-a failed")?].clone())
    });
    assert!(
        failed["message"].as_str().unwrap().contains("not confirmed off"),
        "{failed}"
    );
    // The fence ran: off, then status.
    let ran = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(ran.starts_with("off\nstatus\n"), "{ran:?}");
    // And it keeps the group blocked: nothing starts on site-b.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !ledger_lines(&ledger).iter().any(|l| l.contains("site-b")),
        "web must not start on site-b while site-a's service runs: {:?}",
        ledger_lines(&ledger)
    );
    // The device did nothing: what ended site-a's service (at its lease's
    // end) is its own lease guard process, which outlives the frozen agent.
    c.wait_for("site-a's lease guard ending its service", |_| {
        (!alive(service)).then_some(())
    });
    let log = std::fs::read_to_string(&c.node("site-a").log).unwrap();
    assert!(
        log.contains("did not stop this service"),
        "site-a's service ended, but not by its lease guard: {log}"
    );
    let s = c.status_of("witness");
    assert_eq!(group(&s, "web").unwrap()["state"], "blocked", "{s}");
    // Retried, and the same failure recorded once, not on every retry.
    c.wait_for("a second failed attempt", |c| {
        (fencing_attempts_failed(c) >= 2).then_some(())
    });
    let failures = fence_failures_recorded(&c, "site-a");
    assert_eq!(failures, 1, "the same failure is recorded once");
}
