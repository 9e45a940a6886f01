//! A long chaos run: `cargo run -p keepwarm-tests --example chaos -- [SEED] [DURATION_S]
//! [RATE]` (or `make chaos SEED=7 DURATION=1800`). Prints a line per fault and the summary
//! table; exits 1 when an activation was lost, run stale, a container leaked or keepwarm
//! caused an error.

use keepwarm_tests::chaos::{run, ChaosConfig};
use std::time::Duration;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("SEED DURATION_S RATE are numbers"))
        .collect();
    let config = ChaosConfig {
        seed: args.first().copied().unwrap_or(1),
        load: Duration::from_secs(args.get(1).copied().unwrap_or(1800)),
        rate: args.get(2).copied().unwrap_or(30) as u32,
        fault_every: Duration::from_secs(12),
    };
    eprintln!(
        "[chaos] seed {}, {} s at {}/s, a fault every {} s",
        config.seed,
        config.load.as_secs(),
        config.rate,
        config.fault_every.as_secs()
    );
    let report = run(&config);
    println!("{}", report.table());
    std::process::exit(if report.clean() { 0 } else { 1 });
}
