//! `tandem-sim`: runs seeds of the deterministic whole-cluster simulation
//! and prints a summary; a violation prints the seed, the invariant, the
//! trace's tail and the command that replays it, and exits 1.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tandem_sim::{FaultKind, SimConfig, run_seed};

#[derive(Parser)]
#[command(about = "Deterministic simulation of a whole Tandem cluster: three nodes, one seed each run")]
struct Args {
    /// Seeds to run: `N` (that seed), `A..B` (A up to B-1) or `A..=B`.
    #[arg(long, default_value = "1..11")]
    seeds: String,
    /// Fault kinds drawn from (comma-separated, `all`): partition, one-way,
    /// link, witness-alone, chaos, crash, agents, switchover, failover.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Simulated seconds per seed.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Faults end this many simulated seconds before the run does (the
    /// convergence bound).
    #[arg(long, default_value_t = 20)]
    heal_seconds: u64,
    /// Run a deliberately broken build (a new coordinator skips its wait
    /// for its predecessor's leases): the simulator must catch it.
    #[arg(long)]
    mutation: bool,
    /// Print every seed's line, not only failures and the summary.
    #[arg(long, short)]
    verbose: bool,
    /// Go on after a violation.
    #[arg(long)]
    keep_going: bool,
    /// Seeds run at once, each on a thread of its own (each seed stays
    /// deterministic; results are reported in seed order).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

fn parse_seeds(text: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("--seeds {text:?}: expected N, A..B or A..=B");
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    if let Some((a, b)) = text.split_once("..=") {
        return Ok(num(a)?..num(b)?.saturating_add(1));
    }
    if let Some((a, b)) = text.split_once("..") {
        return Ok(num(a)?..num(b)?);
    }
    let n = num(text)?;
    Ok(n..n.saturating_add(1))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let seeds = match parse_seeds(&args.seeds) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let faults = match FaultKind::parse_list(&args.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("--faults: {e}");
            return ExitCode::from(2);
        }
    };
    if args.heal_seconds >= args.seconds {
        eprintln!(
            "--heal-seconds {} must be below --seconds {}",
            args.heal_seconds, args.seconds
        );
        return ExitCode::from(2);
    }
    let began = Instant::now();
    let total = seeds.end.saturating_sub(seeds.start);
    let (mut runs, mut violations, mut simulated_ms) = (0u64, 0u64, 0u64);
    let (mut starts, mut moves, mut kills, mut messages, mut ops, mut repairs) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut fault_counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let template = {
        let mut cfg = SimConfig::new(0);
        cfg.duration = Duration::from_secs(args.seconds);
        cfg.faults_until = Duration::from_secs(args.seconds - args.heal_seconds);
        cfg.faults = faults.clone();
        cfg.mutation = args.mutation;
        cfg
    };
    let next = Arc::new(AtomicU64::new(seeds.start));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..args.jobs.max(1) {
        let (next, stop, tx, template, end) = (next.clone(), stop.clone(), tx.clone(), template.clone(), seeds.end);
        std::thread::spawn(move || {
            loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end || stop.load(Ordering::SeqCst) {
                    return;
                }
                let cfg = SimConfig {
                    seed,
                    ..template.clone()
                };
                if tx.send(run_seed(&cfg)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut finished: BTreeMap<u64, tandem_sim::SeedOutcome> = BTreeMap::new();
    let mut want = seeds.start;
    'results: for out in rx {
        finished.insert(out.seed, out);
        while let Some(out) = finished.remove(&want) {
            want += 1;
            let seed = out.seed;
            runs += 1;
            simulated_ms += out.simulated_ms;
            starts += out.starts;
            moves += out.moves;
            kills += out.kills;
            messages += out.messages;
            ops += out.operator_ok;
            repairs += out.repairs;
            for (k, n) in &out.faults {
                *fault_counts.entry(k).or_default() += n;
            }
            if args.verbose {
                println!("{out}");
            } else if runs % 10 == 0 {
                let minutes = began.elapsed().as_secs_f64() / 60.0;
                eprintln!(
                    "{runs}/{total} seeds, {violations} violations, {:.1} seeds/min",
                    runs as f64 / minutes
                );
            }
            if let Some(v) = &out.violation {
                violations += 1;
                println!("VIOLATION seed {seed}: {v}");
                println!("trace (last {} lines):", out.tail.len());
                for line in &out.tail {
                    println!("  {line}");
                }
                println!(
                    "replay: cargo run --release -p tandem-sim -- --seeds {seed} --faults {} --seconds {} --heal-seconds {}{}",
                    args.faults,
                    args.seconds,
                    args.heal_seconds,
                    if args.mutation { " --mutation" } else { "" }
                );
                if !args.keep_going {
                    stop.store(true, Ordering::SeqCst);
                    break 'results;
                }
            }
        }
    }
    let wall = began.elapsed();
    let faults: Vec<String> = fault_counts.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!(
        "{runs} seeds, {:.2} simulated hours, {violations} violations; {starts} starts, {moves} moves between nodes, \
         {kills} lease-guard kills, {ops} operator moves committed, {repairs} nodes fenced by the operator, \
         {messages} messages; faults: {}; \
         {:.1} s wall, {:.1} seeds/min, {:.0}x real time",
        simulated_ms as f64 / 3_600_000.0,
        faults.join(" "),
        wall.as_secs_f64(),
        runs as f64 / (wall.as_secs_f64() / 60.0),
        simulated_ms as f64 / 1000.0 / wall.as_secs_f64().max(1e-9)
    );
    if violations > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
