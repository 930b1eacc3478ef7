//! Summaries of latency samples: percentiles (nearest rank) and the mean.

use serde::Serialize;

/// A summary of one subject's samples, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The fastest sample.
    pub min_ns: u64,
    /// The median (nearest rank).
    pub p50_ns: u64,
    /// The 90th percentile.
    pub p90_ns: u64,
    /// The 99th percentile.
    pub p99_ns: u64,
    /// The 99.9th percentile.
    pub p999_ns: u64,
    /// The slowest sample.
    pub max_ns: u64,
    /// The arithmetic mean.
    pub mean_ns: f64,
}

impl Summary {
    /// Summarises `samples` (any order); `None` when there are none.
    pub fn of(samples: &[u64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: u128 = sorted.iter().map(|&s| u128::from(s)).sum();
        Some(Summary {
            n: sorted.len(),
            min_ns: sorted[0],
            p50_ns: percentile(&sorted, 0.50),
            p90_ns: percentile(&sorted, 0.90),
            p99_ns: percentile(&sorted, 0.99),
            p999_ns: percentile(&sorted, 0.999),
            max_ns: sorted[sorted.len() - 1],
            mean_ns: total as f64 / sorted.len() as f64,
        })
    }
}

/// The `q`-quantile (0 < q ≤ 1) of ascending `sorted` by the nearest-rank method: the smallest
/// sample with at least `q·n` samples at or below it.
///
/// # Panics
///
/// If `sorted` is empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// `value / base`, or `None` when the base is zero.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| value / base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=1000).rev().collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.n, 1000);
        assert_eq!(s.min_ns, 1);
        assert_eq!(s.p50_ns, 500);
        assert_eq!(s.p90_ns, 900);
        assert_eq!(s.p99_ns, 990);
        assert_eq!(s.p999_ns, 999);
        assert_eq!(s.max_ns, 1000);
        assert!((s.mean_ns - 500.5).abs() < 1e-9);
    }

    #[test]
    fn small_and_empty_inputs() {
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&[7]).unwrap();
        assert_eq!((one.p50_ns, one.p999_ns, one.max_ns), (7, 7, 7));
        assert_eq!(percentile(&[1, 2, 3], 0.5), 2);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
    }
}
