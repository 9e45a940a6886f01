//! Percentiles for the benchmarks.

use std::time::Duration;

/// Summary of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

pub fn summarize(mut samples: Vec<Duration>) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let n = samples.len();
    let at = |q: f64| samples[((n as f64 - 1.0) * q).round() as usize];
    Summary {
        n,
        p50: at(0.5),
        p99: at(0.99),
        max: samples[n - 1],
        mean: samples.iter().sum::<Duration>() / n as u32,
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={:<5} p50={:>10.1?} p99={:>10.1?} max={:>10.1?} mean={:>10.1?}",
            self.n, self.p50, self.p99, self.max, self.mean
        )
    }
}

/// `a / b` of two durations.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Summarizes two sets of samples of the same thing, prints both and their ratios (p50, mean,
/// max of `a / b`), and returns the summaries.
pub fn compare(
    what: &str,
    (a_name, a): (&str, Vec<Duration>),
    (b_name, b): (&str, Vec<Duration>),
) -> (Summary, Summary) {
    let (a, b) = (summarize(a), summarize(b));
    let width = a_name.len().max(b_name.len());
    println!("{what}, {a_name:<width$} {a}");
    println!("{what}, {b_name:<width$} {b}");
    println!(
        "{a_name} / {b_name}: p50 {:.3}x, mean {:.3}x, max {:.3}x",
        ratio(a.p50, b.p50),
        ratio(a.mean, b.mean),
        ratio(a.max, b.max)
    );
    (a, b)
}
