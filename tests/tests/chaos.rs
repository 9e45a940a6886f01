//! The short seeded chaos run of the test command (about 2 minutes): three real hosts, tansu
//! and Docker under 30 activations/s with a fault every 12 s (see `keepwarm_tests::chaos`).
//! `make chaos SEED=.. DURATION=..` runs a long one.

use keepwarm_tests::chaos::{run, ChaosConfig};
use std::time::Duration;

#[test]
fn a_seeded_chaos_run_loses_nothing_runs_nothing_stale_and_leaks_nothing() {
    let seed = std::env::var("KW_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let report = run(&ChaosConfig {
        seed,
        load: Duration::from_secs(60),
        rate: 30,
        fault_every: Duration::from_secs(12),
    });
    eprintln!("chaos seed {seed}\n{}", report.table());
    assert!(report.faults.len() >= 3, "{}", report.table());
    assert_eq!(report.lost, 0, "{}", report.table());
    assert_eq!(report.stale_runs, 0, "{}", report.table());
    assert_eq!(report.leaked, 0, "{}", report.table());
    assert_eq!(report.keepwarm_errors, 0, "{}", report.table());
    // the delivery contract's default: exactly one completion per activation
    assert_eq!(report.duplicates, 0, "{}", report.table());
}
