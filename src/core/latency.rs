//! The latency histograms every sink keeps: end to end, from a value's source timestamp to its
//! confirmation by the sink's far side ([`LATENCY_BUCKETS_S`]), and the gateway's own share,
//! from the arrival of the response that carried the value to that confirmation
//! ([`ADDED_LATENCY_BUCKETS_S`], finer: it is milliseconds where the other is seconds).
//!
//! It lives in the core, not in `metrics`, because the sinks write it on their data path and
//! must not depend on the module that exposes it; `metrics` only reads it at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the end-to-end latency buckets.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Upper bounds (seconds) of the gateway-added latency buckets: fine below 100 ms, where a
/// gateway that keeps up spends its time.
pub const ADDED_LATENCY_BUCKETS_S: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Most finite buckets a [`LatencyHistogram`] has (a batch of observations is tallied in an
/// array of this size, see [`LatencyHistogram::observe_all_since`]).
pub const MAX_BOUNDS: usize = 32;

/// A latency as a Prometheus-style histogram. Lock-free (one atomic add per bucket hit), fixed
/// size.
///
/// End to end ([`Default`]), the source timestamp comes from the device's clock: a device clock
/// that runs ahead or behind shows up here too (values "from the future" count as 0).
#[derive(Debug)]
pub struct LatencyHistogram {
    bounds: &'static [f64],
    /// Observations per finite bucket (not cumulative); above the last bound only `count` grows.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// End to end: [`LATENCY_BUCKETS_S`].
impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::with_bounds(&LATENCY_BUCKETS_S)
    }
}

/// A copy of a [`LatencyHistogram`] taken at scrape time, in the form Prometheus encoders take.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, observations in this bucket alone: not cumulative). The last
    /// bound is `f64::INFINITY`, so the counts add up to `count`.
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of all observed latencies, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// A histogram with these finite upper bounds (seconds, ascending; at most
    /// [`MAX_BOUNDS`]).
    pub fn with_bounds(bounds: &'static [f64]) -> LatencyHistogram {
        assert!(
            bounds.len() <= MAX_BOUNDS,
            "at most {MAX_BOUNDS} latency buckets"
        );
        LatencyHistogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one value confirmed now whose source timestamp is `source_ts_nanos`.
    pub fn observe_since(&self, source_ts_nanos: i64, now_nanos: i64) {
        let micros = (now_nanos.saturating_sub(source_ts_nanos) / 1000).max(0) as u64;
        self.observe_micros(micros, 1);
    }

    /// [`Self::observe_since`] for many values confirmed at the same `now_nanos`, e.g. a flush
    /// or a window of a sink: the same counts and sum, tallied locally and added with a few
    /// atomic adds per call instead of three per value (with a bucket search each), which a
    /// sink paid for every value it delivered.
    pub fn observe_all_since<I>(&self, source_ts_nanos: I, now_nanos: i64)
    where
        I: IntoIterator<Item = i64>,
    {
        let bounds = self.bounds;
        let mut tally = [0u64; MAX_BOUNDS];
        let (mut count, mut sum) = (0u64, 0u64);
        // Values of one flush mostly share a bucket: the one of the value before is tried first.
        let mut last = usize::MAX;
        for ts in source_ts_nanos {
            let micros = (now_nanos.saturating_sub(ts) / 1000).max(0) as u64;
            let secs = micros as f64 / 1e6;
            count += 1;
            // As `fetch_add` does for each value.
            sum = sum.wrapping_add(micros);
            let hit = last < bounds.len()
                && secs <= bounds[last]
                && (last == 0 || secs > bounds[last - 1]);
            if !hit {
                match bounds.iter().position(|b| secs <= *b) {
                    Some(i) => last = i,
                    // Above the last bound: only `count` and `sum` grow.
                    None => {
                        last = usize::MAX;
                        continue;
                    }
                }
            }
            tally[last] += 1;
        }
        if count == 0 {
            return;
        }
        for (bucket, n) in self.buckets.iter().zip(tally) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(count, Ordering::Relaxed);
        self.sum_micros.fetch_add(sum, Ordering::Relaxed);
    }

    /// Records `n` values that took `micros` microseconds each.
    pub fn observe_micros(&self, micros: u64, n: u64) {
        let secs = micros as f64 / 1e6;
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(micros.saturating_mul(n), Ordering::Relaxed);
    }

    /// The current time in the nanoseconds `observe_since` expects.
    pub fn now_nanos() -> i64 {
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Reads the counters (a few atomic loads, no lock). An observation that runs concurrently
    /// may be seen in its bucket but not yet in `count`: the count is then raised to the sum of
    /// the buckets, so the `+Inf` bucket always equals the count, as the format requires.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        let mut finite = 0u64;
        for (counter, bound) in self.buckets.iter().zip(self.bounds) {
            let n = counter.load(Ordering::Relaxed);
            buckets.push((*bound, n));
            finite += n;
        }
        let count = self.count().max(finite);
        buckets.push((f64::INFINITY, count - finite));
        LatencySnapshot {
            buckets,
            count,
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_counts_every_observation_in_one_bucket() {
        let h = LatencyHistogram::default();
        let now = 1_000_000_000_000;
        h.observe_since(now - 3_000_000, now); // 3 ms
        h.observe_since(now - 2_000_000_000, now); // 2 s
        h.observe_since(now - 1_000_000_000_000, now); // 1000 s: only +Inf
        h.observe_since(now + 5_000_000, now); // from the future: 0
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.005, 2), "{s:?}");
        assert_eq!(s.buckets[8], (2.5, 1), "{s:?}");
        assert_eq!(s.buckets[LATENCY_BUCKETS_S.len()], (f64::INFINITY, 1));
        assert_eq!(s.buckets.iter().map(|b| b.1).sum::<u64>(), 4);
        assert!((s.sum_seconds - 1002.003).abs() < 1e-6, "{}", s.sum_seconds);
    }

    /// A batch counts exactly what one observation per value counts: every bucket, its edges,
    /// values from the future, above every bound, and runs that stay in and leave a bucket.
    #[test]
    fn a_batch_of_observations_counts_what_single_observations_count() {
        for bounds in [&LATENCY_BUCKETS_S[..], &ADDED_LATENCY_BUCKETS_S[..]] {
            let now = 2_000_000_000_000_000;
            let mut ts: Vec<i64> = vec![now + 1, now, i64::MIN, now - 999, now - 1_000];
            for b in bounds {
                let edge = (b * 1e9) as i64;
                ts.extend([
                    now - edge,
                    now - edge - 1_000,
                    now - edge + 1_000,
                    now - edge,
                ]);
            }
            ts.extend([now - 1_000_000_000_000, now - 7_000_000, now - 7_000_001]);
            let (single, batch) = (
                LatencyHistogram::with_bounds(bounds),
                LatencyHistogram::with_bounds(bounds),
            );
            for t in &ts {
                single.observe_since(*t, now);
            }
            // In two calls, the second empty.
            batch.observe_all_since(ts.iter().copied(), now);
            batch.observe_all_since(std::iter::empty(), now);
            assert_eq!(single.snapshot(), batch.snapshot());
            assert_eq!(batch.count(), ts.len() as u64);
        }
    }

    #[test]
    fn added_latency_counts_a_record_of_values_at_once() {
        let h = LatencyHistogram::with_bounds(&ADDED_LATENCY_BUCKETS_S);
        h.observe_micros(12_000, 1000); // 12 ms, a record of 1,000 values
        h.observe_micros(500, 3); // 0.5 ms
        let s = h.snapshot();
        assert_eq!(s.count, 1003);
        assert_eq!(s.buckets.len(), ADDED_LATENCY_BUCKETS_S.len() + 1);
        assert_eq!(s.buckets[0], (0.001, 3), "{s:?}");
        assert_eq!(s.buckets[5], (0.015, 1000), "{s:?}");
        assert!((s.sum_seconds - 12.0015).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
