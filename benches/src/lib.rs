//! Benchmark support for Compresh: criterion benches of the request path's stages
//! (`benches/hot_path.rs`) and `loadgen`, the open-loop load generator that `benches/load.sh`
//! drives to measure proxy overhead (gateway minus direct, nginx minus direct, in one run).
//!
//! This library holds what `loadgen` needs that deserves unit tests: the latency [`Histogram`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use compresh_benches::Histogram;
//!
//! let mut h = Histogram::new();
//! for us in 1..=1000 {
//!     h.record(Duration::from_micros(us));
//! }
//! let p50 = h.percentile(50.0).as_micros();
//! assert!((490..=510).contains(&p50), "{p50}");
//! assert_eq!(h.max(), Duration::from_micros(1000));
//! ```

use std::time::Duration;

/// Sub-bucket bits: 1024 linear sub-buckets per power of two, so a bucket is at most 1/512
/// (≈0.2 %) wide relative to its value and the midpoint is within ≈0.1 % of any value in it:
/// under a microsecond at the proxies' p99s (200–600 µs). With 32 per power of two (until the
/// fourteenth pass) a bucket there was 8 µs wide, coarser than the differences being judged.
const SUB_BITS: u32 = 10;
const SUB_COUNT: u64 = 1 << SUB_BITS;
const HALF: u64 = SUB_COUNT / 2;
/// Enough buckets for every `u64` nanosecond value.
const BUCKETS: usize = ((64 - SUB_BITS as usize + 1) * HALF as usize) + HALF as usize;

/// A log-bucketed latency histogram in nanoseconds (HdrHistogram's layout, ~3 significant
/// digits): constant memory (224 KiB), O(1) record, mergeable across connections.
///
/// Values below 1024 ns are exact; above, each power of two is split into 512 equal buckets,
/// and percentiles report a bucket's midpoint. `max` and `count` are exact.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
            sum: 0,
        }
    }

    /// Record one latency (saturating at `u64::MAX` nanoseconds, about 584 years).
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(nanos)] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
        self.sum += u128::from(nanos);
    }

    /// Add every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest recorded value (exact).
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// The mean of the recorded values (exact), zero when empty.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(u64::try_from(self.sum / u128::from(self.count)).unwrap_or(u64::MAX))
    }

    /// The value at percentile `p` (0–100): the midpoint of the bucket holding the
    /// `ceil(p% × count)`-th smallest value, capped at `max` (exactly `max` for the last rank).
    /// Zero when empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * self.count as f64).ceil() as u64;
        let rank = rank.clamp(1, self.count);
        if rank == self.count {
            // The largest value is known exactly; a bucket midpoint could understate it.
            return self.max();
        }
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bounds(i);
                return Duration::from_nanos((low + (high - low) / 2).min(self.max));
            }
        }
        self.max()
    }
}

/// Bucket of a value: exact below `SUB_COUNT`, then `HALF` buckets per power of two.
fn index(value: u64) -> usize {
    let bits = 64 - value.leading_zeros();
    if bits <= SUB_BITS {
        return value as usize;
    }
    let shift = bits - SUB_BITS;
    // `value >> shift` is in [HALF, SUB_COUNT): the top SUB_BITS bits, leading one included.
    (u64::from(shift) * HALF + (value >> shift)) as usize
}

/// Smallest and largest value of bucket `i` (inclusive).
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_COUNT {
        return (i, i);
    }
    let shift = i / HALF - 1;
    let top = i % HALF + HALF;
    let low = top << shift;
    (low, low + ((1u64 << shift) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_that_contains_it() {
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((0..64).map(|s| 1u64 << s));
        values.extend((1..64).map(|s| (1u64 << s) - 1));
        values.extend((1..64).map(|s| (1u64 << s) + 1));
        values.push(u64::MAX);
        for value in values {
            let i = index(value);
            assert!(i < BUCKETS, "{value} -> {i}");
            let (low, high) = bounds(i);
            assert!(
                low <= value && value <= high,
                "{value} not in {low}..={high}"
            );
            // Relative width bounded: the precision the docs promise.
            assert!(
                (high - low) as f64 <= (low as f64) / 512.0 + 1.0,
                "{low}..={high}"
            );
        }
    }

    #[test]
    fn buckets_are_contiguous() {
        for i in 1..BUCKETS {
            assert_eq!(bounds(i - 1).1 + 1, bounds(i).0, "gap before bucket {i}");
        }
        assert_eq!(bounds(BUCKETS - 1).1, u64::MAX);
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = Histogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let close = |got: Duration, want_ms: f64| {
            let got = got.as_secs_f64() * 1e3;
            assert!(
                (got - want_ms).abs() <= want_ms * 0.001,
                "{got} vs {want_ms}"
            );
        };
        close(h.percentile(50.0), 50.0);
        close(h.percentile(90.0), 90.0);
        close(h.percentile(99.0), 99.0);
        close(h.percentile(100.0), 100.0);
        close(h.percentile(0.0), 1.0);
        assert_eq!(h.max(), Duration::from_millis(100));
        assert_eq!(h.count(), 100);
        assert_eq!(h.mean(), Duration::from_micros(50_500));
    }

    #[test]
    fn a_single_outlier_shows_in_max_and_p100_only() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_secs(2));
        assert!(h.percentile(99.0) < Duration::from_nanos(100_100));
        assert_eq!(h.percentile(100.0), Duration::from_secs(2));
        assert_eq!(h.max(), Duration::from_secs(2));
    }

    #[test]
    fn p99s_a_microsecond_apart_are_told_apart() {
        let p99_of = |tail_us: u64| {
            let mut h = Histogram::new();
            for _ in 0..980 {
                h.record(Duration::from_micros(250));
            }
            for _ in 0..20 {
                h.record(Duration::from_micros(tail_us));
            }
            h.percentile(99.0)
        };
        for tail_us in [400, 401, 402, 511, 512, 513] {
            let p99 = p99_of(tail_us);
            assert!(
                p99.abs_diff(Duration::from_micros(tail_us)) < Duration::from_nanos(300),
                "{tail_us} µs: {p99:?}"
            );
        }
        assert!(p99_of(400) < p99_of(401));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(Duration::from_micros(10));
        b.record(Duration::from_micros(30));
        b.record(Duration::from_micros(40));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), Duration::from_micros(40));
        assert!(a.percentile(34.0) > Duration::from_micros(25));
        assert!(a.percentile(33.0) < Duration::from_micros(11));
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!(h.percentile(99.0), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
    }
}
