//! Upgrade in place: a data directory written by the release before
//! storage layout 2 (`fixtures/layout-1`, made by
//! `fixtures/make-layout-1.sh` with that release's binary: a one-node
//! cluster "upgrade" of node "solo" that committed a spec of two groups,
//! ran both at epoch 1 and recorded a note) is opened by this build:
//! migrated once with a log line, the spec, groups and epochs intact, and
//! the node serves reads and writes.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

const MIGRATED: &str = "migrated the data directory from storage layout 1 to 2";

/// Copies the files of `from` into `to` (created), recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The status once `solo` is coordinator and both groups run.
fn serving(c: &TestCluster) -> Value {
    c.wait_for("solo coordinating, web and db running", |c| {
        let s = c.status("solo")?;
        let groups = s["groups"].as_array()?;
        let running = groups
            .iter()
            .filter(|g| g["state"] == "running" && g["primary"] == "solo")
            .count();
        (s["coordinator"] == "solo" && running == 2).then_some(s)
    })
}

#[test]
fn a_data_directory_of_the_previous_release_is_upgraded_in_place() {
    let mut c = TestCluster::named("upgrade", &[("solo", "member")]);
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cluster/fixtures/layout-1");
    copy_dir(&fixture, &c.data_dir("solo"));

    c.start("solo");
    c.wait_for_log("solo", MIGRATED);
    let status = serving(&c);
    // What the previous release committed: spec version 1, both groups at
    // epoch 1 on solo (nothing had to move).
    assert_eq!(status["spec_version"], 1, "{status:#}");
    for group in status["groups"].as_array().unwrap() {
        assert_eq!(group["epoch"], 1, "{group:#}");
    }
    let spec = stdout(&c.cli_ok("solo", &["spec", "show"]));
    assert!(
        spec.contains("name = \"web\"") && spec.contains("name = \"db\""),
        "{spec}"
    );
    let events = stdout(&c.cli_ok("solo", &["events"]));
    assert!(events.contains("for the upgrade test"), "{events}");

    // It serves writes, and they survive a restart, which migrates nothing.
    c.cli_ok("solo", &["annotate", "after the upgrade"]);
    assert_eq!(c.sigterm("solo"), Some(0));
    c.start("solo");
    serving(&c);
    let events = stdout(&c.cli_ok("solo", &["events"]));
    assert!(events.contains("after the upgrade"), "{events}");
    let log = std::fs::read_to_string(&c.node("solo").log).unwrap();
    assert_eq!(log.matches(MIGRATED).count(), 1, "{log}");
}
