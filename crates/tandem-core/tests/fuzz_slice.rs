//! The stable slice of the fuzz targets in `fuzz/` (the long campaign is a
//! README command on cargo-fuzz): the shipped examples, mutated line by line
//! and byte by byte, through the spec and configuration parsers and what a
//! parsed spec drives. A panic anywhere fails the test; so does a slice
//! whose mutants almost never parse, since it would then test only the
//! parser's front door.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tandem_core::fuzz;

const SPECS: [&str; 2] = [
    include_str!("../../../deploy/examples/spec.toml"),
    include_str!("../../../deploy/examples/minimal-spec.toml"),
];
const CONFIGS: [&str; 3] = [
    include_str!("../../../deploy/examples/site-a.toml"),
    include_str!("../../../deploy/examples/site-b.toml"),
    include_str!("../../../deploy/examples/witness.toml"),
];

/// Values a mutant puts where a value was: limits, wrong types, names of
/// nodes and groups that exist and do not.
const VALUES: &[&str] = &[
    "\"0s\"",
    "\"1ms\"",
    "\"500us\"",
    "\"365days\"",
    "\"366days\"",
    "\"400000000000y\"",
    "\"18446744073709551615s\"",
    "0",
    "-1",
    "1",
    "65536",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "nan",
    "true",
    "\"\"",
    "\" \"",
    "\"site-a\"",
    "\"site-b\"",
    "\"witness\"",
    "\"web\"",
    "\"nowhere\"",
    "\"../../etc/passwd\"",
    "\"a..b\"",
    "\"*\"",
    "[]",
    "[\"site-a\", \"site-a\"]",
    "[{ node = \"site-a\", score = -1000000 }]",
    "{}",
    "\"\\u0000\"",
    "\"ÿ\"",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value of line `line` (one with `=`) by `VALUES[value]`.
    Value {
        line: usize,
        value: usize,
    },
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Flip one bit of byte `at`.
    FlipBit {
        at: usize,
        bit: u8,
    },
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = 1usize << 16;
    prop_oneof![
        6 => (0..n, 0..VALUES.len()).prop_map(|(line, value)| Mutation::Value { line, value }),
        1 => (0..n).prop_map(Mutation::DeleteLine),
        1 => (0..n).prop_map(Mutation::DuplicateLine),
        1 => (0..n, 0..n).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => (0..n, 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => (0..n).prop_map(Mutation::Truncate),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut bytes_after = Vec::new();
    for m in mutations {
        let len = lines.len().max(1);
        match *m {
            Mutation::Value { line, value } => {
                let with_value: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].contains('=')).collect();
                if let Some(&i) = with_value.get(line % with_value.len().max(1)) {
                    let key = lines[i].split('=').next().unwrap_or_default().to_string();
                    lines[i] = format!("{key}= {}", VALUES[value]);
                }
            }
            Mutation::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % len);
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % len].clone();
                lines.insert(i % len, l);
            }
            Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % len, b % len),
            Mutation::FlipBit { at, bit } => bytes_after.push((at, bit)),
            Mutation::Truncate(at) => {
                let mut joined = lines.join("\n");
                let mut cut = at % (joined.len() + 1);
                while !joined.is_char_boundary(cut) {
                    cut -= 1;
                }
                joined.truncate(cut);
                lines = joined.lines().map(str::to_string).collect();
            }
            _ => {}
        }
    }
    let mut bytes = lines.join("\n").into_bytes();
    for (at, bit) in bytes_after {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
        }
    }
    bytes
}

/// Runs `target` on `cases` mutants of `inputs`; returns how many parsed.
fn run(inputs: &'static [&'static str], target: fn(&[u8]) -> bool, cases: u32) -> u32 {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let parsed = std::cell::Cell::new(0u32);
    let strategy = (0..inputs.len(), prop::collection::vec(mutation(), 1..4));
    runner
        .run(&strategy, |(input, mutations)| {
            let bytes = mutate(inputs[input], &mutations);
            if target(&bytes) {
                parsed.set(parsed.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("a mutant broke the code: {e}"));
    parsed.get()
}

#[test]
fn the_examples_themselves_reach_past_the_parser() {
    for s in SPECS {
        assert!(fuzz::spec(s.as_bytes()));
    }
    for c in CONFIGS {
        assert!(fuzz::config(c.as_bytes()));
    }
}

#[test]
fn mutated_specs_never_panic() {
    let cases = 3000;
    let parsed = run(&SPECS, fuzz::spec, cases);
    assert!(parsed > cases / 20, "only {parsed} of {cases} mutants parsed");
}

#[test]
fn mutated_configurations_never_panic() {
    let cases = 3000;
    let parsed = run(&CONFIGS, fuzz::config, cases);
    assert!(parsed > cases / 20, "only {parsed} of {cases} mutants parsed");
}
