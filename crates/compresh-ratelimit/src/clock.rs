//! Time sources: the [`Clock`] seam, the default [`CoarseClock`], the exact [`MonotonicClock`]
//! and a [`FakeClock`] for tests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A monotonic time source in nanoseconds since the clock's own origin.
///
/// The limiter stores every key's state as a time on this scale, so one clock must be used for the
/// whole life of a limiter. `unix_nanos_at` maps a reading to wall-clock time so that header values
/// (`X-RateLimit-Reset`) are derived from the same reading as the decision itself.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's origin. Must never decrease between calls.
    fn now(&self) -> u64;

    /// Unix time, in nanoseconds, of the reading `now` (a value returned by [`Clock::now`]).
    fn unix_nanos_at(&self, now: u64) -> u128;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> u64 {
        (**self).now()
    }

    fn unix_nanos_at(&self, now: u64) -> u128 {
        (**self).unix_nanos_at(now)
    }
}

/// How far a reading must be past the last published time before it is published (an atomic
/// read-modify-write). Readings closer than this return the published time, a plain load.
pub(crate) const PUBLISH_GRAIN_NS: u64 = 1_000;

/// The real clock: the CPU's time-stamp counter through [`quanta`] (falling back to the OS
/// monotonic clock where the TSC is not invariant), in nanoseconds since construction, mapped to
/// Unix time through a [`SystemTime`] captured once at construction (so wall-clock jumps never
/// move the limiter's time).
///
/// Readings never go backwards, even across threads and cores: every value returned has been
/// published in one shared atomic (a maximum), so a later reading, by any thread that has seen
/// an earlier one, is at least as large. A TSC that lags on one core cannot move time back. To
/// keep the hot path free of read-modify-writes, a reading is only published once it is at
/// least 1 µs past the published time; closer readings return the published time. The limiter
/// therefore sees time in steps of at least 1 µs, at most 1 µs late, which only ever makes it
/// stricter, never more generous.
///
/// The first `MonotonicClock` of a process calibrates the TSC against the OS clock (typically
/// 10–20 ms, at most 200 ms); later ones reuse that calibration.
///
/// [`quanta`]: https://docs.rs/quanta
pub struct MonotonicClock {
    source: quanta::Clock,
    /// The raw counter value at construction: readings are nanoseconds since then.
    origin_raw: u64,
    unix_origin_nanos: u128,
    published: Published,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let source = quanta::Clock::new();
        let origin_raw = source.raw();
        // A system clock set before 1970 is a broken host; fall back to the epoch rather than fail.
        let unix_origin_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        Self {
            source,
            origin_raw,
            unix_origin_nanos,
            published: Published::default(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MonotonicClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonotonicClock")
            .field("unix_origin_nanos", &self.unix_origin_nanos)
            .field("published", &self.published.last.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> u64 {
        // `delta_as_nanos` returns 0 for a raw value at or before the origin (another core's
        // TSC may lag ours slightly), and the published maximum takes care of the rest.
        let reading = self
            .source
            .delta_as_nanos(self.origin_raw, self.source.raw());
        self.published.observe(reading)
    }

    #[inline]
    fn unix_nanos_at(&self, now: u64) -> u128 {
        self.unix_origin_nanos + u128::from(now)
    }
}

/// The never-backwards guard: the highest time published so far.
#[derive(Default)]
struct Published {
    last: AtomicU64,
}

impl Published {
    /// Turns a raw reading into a published, never-decreasing time.
    ///
    /// Every value returned is a value `last` held at some point, and `last` only grows (loads
    /// and `fetch_max` on one atomic are ordered by its modification order), so returned times
    /// never decrease for a thread, nor between threads that synchronise. `Relaxed` suffices:
    /// the time is the only data and needs no ordering with other memory.
    #[inline]
    fn observe(&self, reading: u64) -> u64 {
        let last = self.last.load(Ordering::Relaxed);
        if reading < last.saturating_add(PUBLISH_GRAIN_NS) {
            return last;
        }
        self.last.fetch_max(reading, Ordering::Relaxed).max(reading)
    }
}

/// The default clock: the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`), in
/// nanoseconds since construction, mapped to Unix time through a [`SystemTime`] captured once at
/// construction (so wall-clock jumps never move the limiter's time).
///
/// Why it is the default: reading it is a few loads from the vDSO data page, no `rdtsc` and no
/// system call (~6-12 ns against ~22-27 ns for a TSC read on the VM we measured), and the kernel
/// guarantees it never goes backwards on any CPU, so no cross-core guard is needed.
///
/// The price is resolution: it advances once per timer tick ([`CoarseClock::resolution`],
/// typically 1-4 ms). It lags real time by less than one tick, so the limiter is at most one
/// tick stricter than with an exact clock, never more generous: a request may be refused up to a
/// tick before it would have been allowed, and a caller sleeping exactly a `retry_after` may need
/// up to one more tick. For limits measured in requests per minute (Compresh's plans: 2,000/min,
/// one request every 30 ms) and headers in whole seconds this is invisible. For emission
/// intervals near the tick (hundreds of requests per second per key with a burst of 1) use
/// [`MonotonicClock`], which is exact to 1 µs.
///
/// Where the coarse clock does not exist (not Linux, Android or FreeBSD) this reads
/// [`std::time::Instant`] instead.
pub struct CoarseClock {
    /// The coarse reading at construction: readings are nanoseconds since then.
    origin: u64,
    unix_origin_nanos: u128,
}

impl CoarseClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        let origin = coarse::now_nanos();
        // A system clock set before 1970 is a broken host; fall back to the epoch rather than fail.
        let unix_origin_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        Self {
            origin,
            unix_origin_nanos,
        }
    }

    /// How often the clock advances (the kernel's timer tick), as reported by `clock_getres`.
    pub fn resolution(&self) -> Duration {
        coarse::resolution()
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CoarseClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoarseClock")
            .field("unix_origin_nanos", &self.unix_origin_nanos)
            .field("resolution", &self.resolution())
            .finish_non_exhaustive()
    }
}

impl Clock for CoarseClock {
    #[inline]
    fn now(&self) -> u64 {
        coarse::now_nanos().saturating_sub(self.origin)
    }

    #[inline]
    fn unix_nanos_at(&self, now: u64) -> u128 {
        self.unix_origin_nanos + u128::from(now)
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
mod coarse {
    use std::time::Duration;

    use rustix::time::{clock_getres, clock_gettime, ClockId, Timespec};

    fn nanos(ts: Timespec) -> u64 {
        // Monotonic clocks never report negative times; 0 would only make the limiter stricter.
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let subsec = u64::try_from(ts.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(subsec)
    }

    #[inline]
    pub(super) fn now_nanos() -> u64 {
        nanos(clock_gettime(ClockId::MonotonicCoarse))
    }

    pub(super) fn resolution() -> Duration {
        Duration::from_nanos(nanos(clock_getres(ClockId::MonotonicCoarse)))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
mod coarse {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    static ORIGIN: OnceLock<Instant> = OnceLock::new();

    #[inline]
    pub(super) fn now_nanos() -> u64 {
        let elapsed = ORIGIN.get_or_init(Instant::now).elapsed();
        super::duration_to_nanos(elapsed)
    }

    pub(super) fn resolution() -> Duration {
        Duration::from_nanos(1)
    }
}

/// A manually driven clock for deterministic tests. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use compresh_ratelimit::{Clock, FakeClock};
///
/// let clock = FakeClock::new(Duration::from_secs(1_700_000_000));
/// let shared = clock.clone();
/// clock.advance(Duration::from_millis(30));
/// assert_eq!(shared.now(), 30_000_000);
/// assert_eq!(shared.unix_nanos_at(shared.now()), 1_700_000_000_030_000_000);
/// ```
#[derive(Clone, Debug)]
pub struct FakeClock {
    now: Arc<AtomicU64>,
    unix_origin: Duration,
}

impl FakeClock {
    /// A clock reading zero, whose origin is `unix_origin` after the Unix epoch.
    pub fn new(unix_origin: Duration) -> Self {
        Self {
            now: Arc::new(AtomicU64::new(0)),
            unix_origin,
        }
    }

    /// Moves time forward by `by` (saturating at `u64::MAX` nanoseconds).
    pub fn advance(&self, by: Duration) {
        let by = duration_to_nanos(by);
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Sets the time since the origin. Unlike a real clock this may move time backwards, which
    /// the limiter tolerates (it treats readings before a key's state as "not yet").
    pub fn set(&self, since_origin: Duration) {
        self.now
            .store(duration_to_nanos(since_origin), Ordering::SeqCst);
    }

    /// The current time since the origin.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now.load(Ordering::SeqCst))
    }

    /// The Unix time of this clock's origin.
    pub fn unix_origin(&self) -> Duration {
        self.unix_origin
    }
}

impl Default for FakeClock {
    /// A clock at the Unix epoch.
    fn default() -> Self {
        Self::new(Duration::ZERO)
    }
}

impl Clock for FakeClock {
    fn now(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn unix_nanos_at(&self, now: u64) -> u128 {
        self.unix_origin.as_nanos() + u128::from(now)
    }
}

/// Whole nanoseconds of `duration`, saturating at `u64::MAX`.
pub(crate) fn duration_to_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_readings_never_decrease() {
        let clock = MonotonicClock::new();
        let mut previous = clock.now();
        for _ in 0..10_000 {
            let reading = clock.now();
            assert!(reading >= previous);
            previous = reading;
        }
    }

    #[test]
    fn monotonic_guard_returns_the_highest_reading_seen() {
        let clock = MonotonicClock::new();
        // Simulate another thread (or a core whose TSC runs ahead) having published a later time.
        let far = u64::MAX / 2;
        clock.published.last.store(far, Ordering::Relaxed);
        assert_eq!(clock.now(), far);
    }

    #[test]
    fn published_time_steps_by_the_grain_and_never_decreases() {
        let guard = Published::default();
        assert_eq!(guard.observe(PUBLISH_GRAIN_NS - 1), 0);
        assert_eq!(guard.observe(PUBLISH_GRAIN_NS), PUBLISH_GRAIN_NS);
        // Within the grain: the published time, no write.
        assert_eq!(guard.observe(2 * PUBLISH_GRAIN_NS - 1), PUBLISH_GRAIN_NS);
        assert_eq!(guard.last.load(Ordering::Relaxed), PUBLISH_GRAIN_NS);
        // A lagging reading (another core's TSC) returns the published time.
        assert_eq!(guard.observe(5), PUBLISH_GRAIN_NS);
        assert_eq!(
            guard.observe(5 * PUBLISH_GRAIN_NS + 7),
            5 * PUBLISH_GRAIN_NS + 7
        );
        assert_eq!(guard.observe(u64::MAX), u64::MAX);
        assert_eq!(guard.observe(3), u64::MAX);
    }

    #[test]
    fn monotonic_clock_advances_with_real_time() {
        let clock = MonotonicClock::new();
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let later = clock.now();
        // Lower bound only: the TSC calibration is good to far better than 10 %.
        assert!(later - start >= 18_000_000, "advanced {} ns", later - start);
    }

    /// Four threads read `clock` 100,000 times each; no thread may see time go back, and a
    /// reading after they are joined is at least every thread's last one.
    fn assert_never_decreases_across_threads<C: Clock>(clock: &Arc<C>) {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let clock = Arc::clone(clock);
                std::thread::spawn(move || {
                    let mut previous = clock.now();
                    for _ in 0..100_000 {
                        let reading = clock.now();
                        assert!(reading >= previous);
                        previous = reading;
                    }
                    previous
                })
            })
            .collect();
        let highest = handles.into_iter().map(|h| h.join().unwrap()).max();
        assert!(clock.now() >= highest.unwrap());
    }

    #[test]
    fn monotonic_readings_never_decrease_across_threads() {
        assert_never_decreases_across_threads(&Arc::new(MonotonicClock::new()));
    }

    #[test]
    fn monotonic_unix_mapping_matches_system_time() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let clock = MonotonicClock::new();
        let now = clock.now();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let unix = clock.unix_nanos_at(now);
        assert!(unix >= before.as_nanos());
        // Generous bound: the mapping is origin + reading, so it cannot be far past `after`.
        assert!(unix <= after.as_nanos() + u128::from(now));
        assert_eq!(clock.unix_nanos_at(now + 5) - unix, 5);
    }

    #[test]
    fn coarse_clock_is_monotonic_across_threads_and_follows_real_time() {
        let clock = Arc::new(CoarseClock::new());
        let resolution = clock.resolution();
        assert!(resolution > Duration::ZERO && resolution <= Duration::from_millis(20));
        let start = clock.now();
        assert_never_decreases_across_threads(&clock);
        std::thread::sleep(Duration::from_millis(50));
        // It lags real time by less than one tick at either end.
        let advanced = clock.now() - start;
        let lower = duration_to_nanos(Duration::from_millis(50) - resolution);
        assert!(advanced >= lower, "advanced {advanced} ns");
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let fresh = CoarseClock::new();
        assert!(fresh.unix_nanos_at(fresh.now()) >= before.as_nanos());
        assert_eq!(fresh.unix_nanos_at(7) - fresh.unix_nanos_at(0), 7);
    }

    #[test]
    fn fake_clock_advance_set_and_shared_clones() {
        let clock = FakeClock::new(Duration::from_secs(100));
        let other = clock.clone();
        assert_eq!(clock.now(), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(other.now(), 1_000_000);
        other.set(Duration::from_secs(2));
        assert_eq!(clock.elapsed(), Duration::from_secs(2));
        assert_eq!(clock.unix_origin(), Duration::from_secs(100));
        assert_eq!(clock.unix_nanos_at(clock.now()), 102_000_000_000);
        clock.set(Duration::from_nanos(u64::MAX - 1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), u64::MAX);
    }

    #[test]
    fn arc_clock_delegates() {
        let fake = FakeClock::new(Duration::from_secs(7));
        let shared: Arc<dyn Clock> = Arc::new(fake.clone());
        fake.advance(Duration::from_nanos(9));
        assert_eq!(shared.now(), 9);
        assert_eq!(shared.unix_nanos_at(9), 7_000_000_009);
    }
}
