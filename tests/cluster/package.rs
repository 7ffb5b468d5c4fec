//! The Debian package, tried as a new user would: built by
//! `deploy/deb/build-deb` (around this build's debug binary, which is the
//! `BIN` the tests run: PREBUILT, nothing rebuilt), installed with
//! apt in a clean Debian 12 container (the debootstrap root file system of
//! `deploy/container/build-image`, nothing else in it), then the binary, the
//! shipped examples, the unit, the man pages and the completions used there.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_package_installs_and_works_in_a_clean_container() {
    let built = Command::new(root().join("deploy/deb/build-deb"))
        .arg("--fast")
        .env("PROFILE", "dev")
        .env("PREBUILT", "1")
        .output()
        .expect("deploy/deb/build-deb");
    assert!(
        built.status.success(),
        "build-deb (cargo install --locked cargo-deb): {}{}",
        stdout(&built),
        stderr(&built)
    );
    let deb = stdout(&built)
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("no .deb named in {}", stdout(&built)))
        .trim()
        .to_string();
    let deb = Path::new(&deb);
    // The clean root file system (built once per machine, with the image).
    let image = Command::new(root().join("deploy/container/build-image"))
        .arg(BIN)
        .env("IMAGE_TAG", "e2e")
        .output()
        .unwrap();
    assert!(image.status.success(), "{}", stderr(&image));

    let script = format!(
        "set -e\n\
         apt-get update -qq\n\
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends /deb/{} systemd man-db >/dev/null 2>&1\n\
         tandem --version\n\
         cd /usr/share/doc/tandem/examples\n\
         tandem config check site-a.toml site-b.toml witness.toml\n\
         tandem spec check -f minimal-spec.toml -c site-a.toml -o json > /tmp/check.json\n\
         grep -q '\"ok\":true' /tmp/check.json\n\
         systemd-analyze verify /usr/lib/systemd/system/tandem.service\n\
         man -w tandem-status\n\
         test -s /usr/share/bash-completion/completions/tandem\n\
         echo installed-and-checked\n",
        deb.file_name().unwrap().to_str().unwrap()
    );
    let out = Command::new("docker")
        .args(["run", "--rm", "-v"])
        .arg(format!("{}:/deb:ro", deb.parent().unwrap().display()))
        .args(["tandem-rootfs:bookworm", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("tandem {}", tandem_core::VERSION)), "{text}");
    assert!(
        text.contains("witness.toml: ok (node witness of cluster prod, witness)"),
        "{text}"
    );
    assert!(text.contains("/usr/share/man/man1/tandem-status.1.gz"), "{text}");
    assert!(text.trim_end().ends_with("installed-and-checked"), "{text}");
}
