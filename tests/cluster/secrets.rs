//! Fence secrets stay out of the replicated state: a device's password read
//! from a file on the node that runs it never reaches the Raft log,
//! snapshots, logs or any other file of any node; one written in the spec is
//! accepted with a warning.

use std::path::{Path, PathBuf};

use crate::support::*;

const FILE_SECRET: &str = "file-s3cret-4711";
const INLINE_SECRET: &str = "inline-s3cret-0815";

/// Every regular file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                todo.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out
}

/// The files below `dir` that hold `secret` (as bytes, anywhere in them).
fn holding(dir: &Path, secret: &str) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
        })
        .collect()
}

fn spec_with(dir: &Path, name: &str, params: &str) -> PathBuf {
    let record = dir.join("device-stdin");
    // The service ends by itself once the test's directory is gone.
    let text = format!(
        "[[groups]]\nname = \"web\"\nprefer = [{{ node = \"site-a\", score = 100 }}]\n\
         [[groups.resources]]\nname = \"app\"\nagent = \"exec\"\ncommand = \"/bin/sh\"\n\
         args = [\"-c\", \"while [ -d {} ]; do sleep 0.5; done\"]\n\n\
         [fencing.devices.ipmi-b]\nagent = \"exec\"\n\
         command = [\"/bin/sh\", \"-c\", \"cat > {}.$TANDEM_FENCE_ACTION; test $TANDEM_FENCE_ACTION != status || exit 2\"]\n\
         params = {{ {params} }}\n\n\
         [fencing.nodes.site-b]\nlevels = [[\"ipmi-b\"]]\n",
        dir.display(),
        record.display()
    );
    write(dir, name, &text)
}

#[test]
fn fence_secrets_from_files_never_reach_the_replicated_state() {
    // A snapshot every few entries, so that snapshots are covered too.
    let mut c = TestCluster::three_with("[storage]\nsnapshot_after_entries = 3\n");
    c.start_all();
    let coordinator = c.wait_for_agreed_coordinator(None);
    let dir = c.dir.path().to_path_buf();
    let secrets = tempfile::tempdir().unwrap();
    let password_file = write(secrets.path(), "ipmi-b.password", &format!("{FILE_SECRET}\n"));

    // Inline: accepted, with a warning in the reply and in the coordinator's
    // log that names the parameter, never the value; and the data directory
    // does hold it (the search below would find it).
    let inline = spec_with(
        &dir,
        "inline.toml",
        &format!("login = \"admin\", password = \"{INLINE_SECRET}\""),
    );
    let out = c.cli_ok("site-a", &["apply", "-f", inline.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(
        err.contains("tandem: warning: ")
            && err.contains("fencing.devices.ipmi-b.params.password: the secret is written in the spec")
            && err.contains("password_file = "),
        "{err}"
    );
    assert!(!err.contains(INLINE_SECRET), "{err}");
    c.wait_for_log(&coordinator, "spec applied with a warning");
    c.wait_for("the inline secret in the coordinator's data", |c| {
        (!holding(&c.data_dir(&coordinator), INLINE_SECRET).is_empty()).then_some(())
    });

    // From a file: no warning; the device gets the password on its stdin.
    let from_file = spec_with(
        &dir,
        "from-file.toml",
        &format!("login = \"admin\", password_file = \"{}\"", password_file.display()),
    );
    let out = c.cli_ok("site-a", &["apply", "-f", from_file.to_str().unwrap()]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    let out = c.cli_ok("site-a", &["fence", "site-b", "--yes"]);
    assert!(
        stdout(&out).contains("site-b fenced: level 1: ipmi-b ok"),
        "{}",
        stdout(&out)
    );
    let sent = std::fs::read_to_string(dir.join("device-stdin.off")).unwrap();
    assert!(sent.lines().any(|l| l == format!("password={FILE_SECRET}")), "{sent}");
    assert!(!sent.contains("password_file"), "{sent}");
    // More entries, so that every node takes snapshots after the change.
    for i in 0..6 {
        c.cli_ok("site-a", &["annotate", &format!("note {i}")]);
    }
    let shown = stdout(&c.cli_ok("witness", &["spec", "show"]));
    assert!(
        shown.contains(&format!("password_file = \"{}\"", password_file.display())),
        "{shown}"
    );

    // Nowhere in any node's data directory (Raft log, state machine,
    // snapshots, pid and lease files), logs or configuration.
    std::fs::remove_file(dir.join("device-stdin.off")).unwrap();
    let _ = std::fs::remove_file(dir.join("device-stdin.status"));
    let found = holding(&dir, FILE_SECRET);
    assert!(found.is_empty(), "the secret is in {found:?}");
    assert!(files_below(&c.data_dir("witness")).len() > 1, "the search saw the data");
}
