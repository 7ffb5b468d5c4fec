//! `tandem bench`: figures, not pass/fail.

use clap::Args;

use crate::Outcome;

#[derive(Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> Outcome {
    Ok(())
}
