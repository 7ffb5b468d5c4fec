//! `tandem completions SHELL` and `tandem man`: generated from the CLI's own
//! definition, so they never drift from it.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::{Cli, Failure, Outcome};

pub fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics when its writer fails (a
    // closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tandem", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| Failure::runtime(format!("cannot write the completion script: {e}")))
}

/// The page of `tandem` on standard output, or with `dir` one page per
/// command (`tandem.1`, `tandem-status.1`, `tandem-spec-check.1`...).
pub fn man(dir: Option<&Path>) -> Outcome {
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|e| Failure::runtime(format!("cannot write the manual page: {e}"))),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::runtime(format!("{}: cannot create the directory: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, dir)
                .map_err(|e| Failure::runtime(format!("{}: cannot write the manual pages: {e}", dir.display())))
        }
    }
}
