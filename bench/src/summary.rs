//! Latency histograms and their summary (the percentiles the report prints).

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The longest latency a histogram records exactly; longer ones are clamped to it (a request
/// that slow has already failed its budget many times over).
const MAX_NS: u64 = 3_600 * 1_000_000_000;

/// Latencies in nanoseconds, three significant digits (0.1% error at every magnitude).
#[derive(Debug, Clone)]
pub struct Recorder {
    histogram: Histogram<u64>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Result<Self> {
        let histogram = Histogram::new_with_bounds(1, MAX_NS, 3)
            .context("cannot create a latency histogram")?;
        Ok(Self { histogram })
    }

    /// Records one latency (clamped to one nanosecond .. one hour).
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(MAX_NS).clamp(1, MAX_NS);
        self.histogram.saturating_record(ns);
    }

    /// Adds every latency `other` recorded.
    pub fn merge(&mut self, other: &Recorder) -> Result<()> {
        self.histogram.add(&other.histogram).context("cannot merge latency histograms")
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The summary, or `None` when nothing was recorded (a percentile of nothing is not 0).
    pub fn summary(&self) -> Option<Summary> {
        if self.histogram.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        let at = |q: f64| us(self.histogram.value_at_quantile(q));
        Some(Summary {
            count: self.histogram.len(),
            min_us: us(self.histogram.min()),
            mean_us: self.histogram.mean() / 1_000.0,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: us(self.histogram.max()),
        })
    }
}

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How many latencies.
    pub count: u64,
    /// The shortest.
    pub min_us: f64,
    /// The arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The longest.
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut recorder = Recorder::new().unwrap();
        assert!(recorder.summary().is_none(), "no data is no summary, not zeros");
        // 1..=1000 µs, one each.
        for us in 1..=1000 {
            recorder.record(Duration::from_micros(us));
        }
        let summary = recorder.summary().unwrap();
        assert_eq!(summary.count, 1000);
        let close = |value: f64, expected: f64| (value - expected).abs() <= expected * 0.002;
        assert!(close(summary.min_us, 1.0), "{summary:?}");
        assert!(close(summary.p50_us, 500.0), "{summary:?}");
        assert!(close(summary.p90_us, 900.0), "{summary:?}");
        assert!(close(summary.p99_us, 990.0), "{summary:?}");
        assert!(close(summary.p999_us, 999.0), "{summary:?}");
        assert!(close(summary.max_us, 1000.0), "{summary:?}");
        assert!(close(summary.mean_us, 500.5), "{summary:?}");
    }

    #[test]
    fn extremes_are_clamped_not_lost() {
        let mut recorder = Recorder::new().unwrap();
        recorder.record(Duration::ZERO);
        recorder.record(Duration::from_secs(10 * 3_600));
        assert_eq!(recorder.len(), 2);
        let summary = recorder.summary().unwrap();
        assert!(summary.min_us > 0.0 && summary.min_us < 0.01, "{summary:?}");
        assert!(summary.max_us >= 3_599_000_000.0, "{summary:?}");
    }
}
