//! Backups: taken through the coordinator at a committed index, verified,
//! never holding a secret; a damaged file is refused with its problem named.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

const INLINE_SECRET: &str = "backup-s3cret-2718";

/// A spec with one group and a fence device whose password is inline.
fn spec(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "[[groups]]\nname = \"web\"\nprefer = [{{ node = \"site-a\", score = 100 }}]\n\
         [[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/sh\"\n\
         args = [\"-c\", \"while [ -d {} ]; do sleep 0.5; done\"]\n\n\
         [fencing.devices.ipmi-b]\nagent = \"exec\"\ncommand = [\"/bin/true\"]\n\
         params = {{ login = \"admin\", password = \"{INLINE_SECRET}\" }}\n\n\
         [fencing.nodes.site-b]\nlevels = [[\"ipmi-b\"]]\n",
        dir.display()
    );
    write(dir, "spec.toml", &text)
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn a_backup_is_taken_verified_and_shown_without_secrets_and_a_flipped_byte_is_refused() {
    let mut c = TestCluster::three();
    c.start_all();
    c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let spec = spec(&dir);
    c.cli_ok("site-a", &["apply", "-f", spec.to_str().unwrap()]);
    let noted = json(&c.cli_ok("site-a", &["annotate", "before the backup", "-o", "json"]));
    let noted_at = noted["log_index"].as_u64().unwrap();

    // Through a node that is not necessarily the coordinator (the witness
    // forwards); the file is written and verified.
    let file = dir.join("b1.jsonl");
    let f = file.to_str().unwrap();
    let out = c.cli_ok("witness", &["backup", "create", "-f", f, "-o", "json"]);
    let created = json(&out);
    assert_eq!(created["verified"], true, "{created}");
    let index = created["index"].as_u64().unwrap();
    assert!(index > 0);
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(!text.contains(INLINE_SECRET), "the secret is in the backup");
    assert!(text.contains("<redacted>"));
    assert!(text.contains("before the backup"), "the events are in the backup");

    // A linearizable read: the backup holds everything committed before
    // the call, wherever the call landed.
    assert!(index >= noted_at, "backup at {index}, the note committed at {noted_at}");

    // Never over an existing file: a clear error naming it, the file intact.
    let out = c.cli("site-a", &["backup", "create", "-f", f]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("b1.jsonl") && stderr(&out).contains("already exists"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    let out = tandem(&["backup", "verify", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("verified"), "{}", stdout(&out));
    let out = tandem(&["backup", "verify", f, "--cluster", &c.cluster]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tandem(&["backup", "verify", f, "--cluster", "another"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not of \"another\""), "{}", stderr(&out));

    let out = tandem(&["backup", "show", f, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = json(&out);
    assert_eq!(shown["cluster"], c.cluster.as_str(), "{shown}");
    assert_eq!(shown["index"].as_u64(), Some(index));
    assert_eq!(shown["counts"]["groups"], 1, "{shown}");
    assert_eq!(shown["counts"]["resources"], 1, "{shown}");
    assert_eq!(shown["counts"]["members"], 3, "{shown}");
    assert_eq!(shown["counts"]["spec_version"], 1, "{shown}");
    assert!(shown["counts"]["events"].as_u64().unwrap() >= 2, "{shown}");
    assert_eq!(shown["tandem_version"], env!("CARGO_PKG_VERSION"));
    let out = tandem(&["backup", "show", f]);
    assert!(stdout(&out).contains("resources     1"), "{}", stdout(&out));

    // One byte of the payload flipped: verify and show fail, naming the
    // file and the checksum.
    let mut bad = bytes.clone();
    let at = bad.iter().position(|&b| b == b'\n').unwrap() + bad.len() / 3;
    bad[at] ^= 0x20;
    let bad_file = write(&dir, "bad.jsonl", "");
    std::fs::write(&bad_file, &bad).unwrap();
    for cmd in ["verify", "show"] {
        let out = tandem(&["backup", cmd, bad_file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("bad.jsonl") && err.contains("SHA-256"), "{err}");
    }
    // A truncated file and a file that is no backup at all.
    std::fs::write(&bad_file, &bytes[..bytes.len() - 10]).unwrap();
    let err = stderr(&tandem(&["backup", "verify", bad_file.to_str().unwrap()]));
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(&bad_file, "hello\n").unwrap();
    let err = stderr(&tandem(&["backup", "verify", bad_file.to_str().unwrap()]));
    assert!(err.contains("not a Tandem backup"), "{err}");
}

#[test]
fn a_voter_restarted_on_an_empty_data_directory_is_refused_and_a_late_first_start_is_not() {
    let mut c = TestCluster::three();
    // A new cluster whose site-b starts late: site-b still bootstraps from
    // its initial members and joins (it never ran before).
    c.start("site-a");
    c.start("witness");
    c.wait_for_agreed_coordinator(None);
    c.start("site-b");
    let coordinator = c.wait_for_agreed_coordinator(None);
    let victim = if coordinator == "site-b" { "site-a" } else { "site-b" };
    c.wait_for("the coordinator to record the victim started", |c| {
        let log = std::fs::read_to_string(&c.node(&coordinator).log).ok()?;
        log.lines()
            .any(|l| l.contains("recorded that the node started") && l.contains(&format!("node={victim}")))
            .then_some(())
    });
    let before = c.status_of(&coordinator);
    let term = before["term"].as_u64().unwrap();

    // Wiped: the agent refuses to start, naming the commands that bring it back.
    c.kill9(victim);
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();
    c.start(victim);
    let code = c.wait_exit(victim);
    assert_ne!(code, Some(0));
    let log = std::fs::read_to_string(&c.node(victim).log).unwrap();
    assert!(
        log.contains("refusing to start")
            && log.contains(&format!("tandem members remove {victim}"))
            && log.contains(&format!("tandem members add {victim}"))
            && log.contains("join = true"),
        "{log}"
    );
    // The refusal came before Raft ran: only the genuine first start
    // bootstrapped.
    assert!(
        log.matches("bootstrapped the cluster from the initial members").count() <= 1,
        "{log}"
    );

    // The others carry on: same coordinator, same term.
    let after = c.status_of(&coordinator);
    assert_eq!(after["coordinator"], coordinator.as_str(), "{after}");
    assert_eq!(after["term"].as_u64(), Some(term), "{after}");
}

#[test]
fn scheduled_backups_are_verified_pruned_and_shown_and_a_failure_is_a_warning() {
    let mut c = TestCluster::three();
    let backups = c.dir.path().join("backups");
    let table = format!(
        "\n[backup]\ndir = \"{}\"\ninterval = \"1s\"\nkeep = 2\n",
        backups.display()
    );
    for n in ["site-a", "site-b", "witness"] {
        c.append_config(n, &table);
    }
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let prefix = format!("tandem-backup-{}-", c.cluster);
    let list = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        v.retain(|n| n.starts_with(&prefix) && n.ends_with(".jsonl"));
        v.sort();
        v
    };
    // At least four taken (the events say so), two kept, each one verifies.
    c.wait_for("four scheduled backups", |c| {
        let out = c.cli("site-a", &["events", "-o", "json"]);
        let n = stdout(&out).matches("backup verified: ").count();
        (n >= 4).then_some(())
    });
    let kept = list(&backups);
    assert_eq!(kept.len(), 2, "{kept:?}");
    for f in &kept {
        let out = tandem(&["backup", "verify", backups.join(f).to_str().unwrap()]);
        assert!(out.status.success(), "{f}: {}", stderr(&out));
    }

    // Status and metrics on the coordinator.
    let s = c.status_of(&coordinator);
    let b = &s["backup"];
    assert_eq!(b["coordinator"], true, "{s}");
    assert!(b["last_file"].as_str().unwrap().contains(&prefix), "{b}");
    assert!(b["age_ms"].as_u64().unwrap() < 60_000, "{b}");
    assert!(b["warning"].is_null(), "{b}");
    let out = c.cli(&coordinator, &["status", "--check"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let metrics = http_get(c.node(&coordinator).http, "/metrics").unwrap().1;
    assert!(
        metrics.contains("tandem_backup_last_verified_age_seconds "),
        "{metrics}"
    );
    assert!(metrics.contains("tandem_backup_failures_total 0"), "{metrics}");
    assert!(metrics.contains("tandem_backup_warning 0"), "{metrics}");

    // The directory becomes unwritable (a file where it was): the next
    // backups fail; status, --check, metrics and events say so.
    std::fs::remove_dir_all(&backups).unwrap();
    std::fs::write(&backups, "not a directory").unwrap();
    c.wait_for("a failed backup in status", |c| {
        let s = c.status(&coordinator)?;
        s["backup"]["warning"].as_str()?.contains("failed").then_some(())
    });
    let out = c.cli(&coordinator, &["status", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("backup"), "{}", stdout(&out));
    let metrics = http_get(c.node(&coordinator).http, "/metrics").unwrap().1;
    assert!(metrics.contains("tandem_backup_warning 1"), "{metrics}");
    assert!(!metrics.contains("tandem_backup_failures_total 0"), "{metrics}");
    let out = c.cli("site-a", &["events", "-o", "json"]);
    assert!(stdout(&out).contains("backup failed: "), "{}", stdout(&out));
}
