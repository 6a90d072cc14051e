//! How long handlers take: a fixed-bucket histogram, recorded with relaxed atomics on the hot
//! path and read as a plain snapshot by stats, the monitor and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (inclusive, in microseconds) of the histogram's buckets; a last bucket takes
/// everything slower than 10 s. From a map lookup to a handler stuck on a slow service.
pub const LATENCY_BOUNDS_MICROS: [u64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 50_000, 250_000, 1_000_000, 10_000_000,
];

const BUCKETS: usize = LATENCY_BOUNDS_MICROS.len() + 1;

/// A snapshot of a latency histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative): `buckets[i]` counts durations above
    /// `LATENCY_BOUNDS_MICROS[i - 1]` and at most `LATENCY_BOUNDS_MICROS[i]`; the last bucket
    /// counts the rest.
    pub buckets: [u64; BUCKETS],
    /// Sum of all observations, in microseconds.
    pub sum_micros: u64,
}

impl LatencyHistogram {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The upper bound of the bucket holding the `q`-quantile (0.0..=1.0): the true value is
    /// at most this. `None` without observations or when it falls in the last bucket.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return LATENCY_BOUNDS_MICROS
                    .get(bucket)
                    .map(|&micros| Duration::from_micros(micros));
            }
        }
        None
    }

    /// Mean duration, `None` without observations.
    pub fn mean(&self) -> Option<Duration> {
        let count = self.count();
        (count > 0).then(|| Duration::from_micros(self.sum_micros / count))
    }
}

/// The live histogram a processor records into.
#[derive(Debug, Default)]
pub(crate) struct LatencyRecorder {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl LatencyRecorder {
    pub(crate) fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_their_bounds_and_quantiles_report_the_bucket_bound() {
        let recorder = LatencyRecorder::default();
        for micros in [5, 6, 10, 11, 900, 20_000_000] {
            recorder.record(Duration::from_micros(micros));
        }
        let h = recorder.snapshot();
        assert_eq!(h.count(), 6);
        assert_eq!(h.buckets[0], 1, "5 µs is in the first bucket (<= 5)");
        assert_eq!(h.buckets[1], 2, "6 and 10 µs are in (5, 10]");
        assert_eq!(h.buckets[2], 1, "11 µs is in (10, 25]");
        assert_eq!(h.buckets[7], 1, "900 µs is in (500, 1000]");
        assert_eq!(h.buckets[BUCKETS - 1], 1, "20 s is beyond every bound");
        assert_eq!(h.sum_micros, 5 + 6 + 10 + 11 + 900 + 20_000_000);
        assert_eq!(h.quantile_bound(0.5), Some(Duration::from_micros(10)));
        assert_eq!(h.quantile_bound(0.8), Some(Duration::from_micros(1_000)));
        assert_eq!(
            h.quantile_bound(1.0),
            None,
            "the slowest is beyond the last bound"
        );
        assert_eq!(LatencyHistogram::default().quantile_bound(0.5), None);
        assert_eq!(LatencyHistogram::default().mean(), None);
    }
}
