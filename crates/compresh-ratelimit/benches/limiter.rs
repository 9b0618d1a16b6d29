//! Compresh's `KeyedLimiter` against governor's keyed limiter (DashMap state, default quanta
//! clock), side by side in each scenario. Both use a policy that never denies within a run
//! (T = 1 ms, burst `u32::MAX`: about 4 billion checks per key), so both do the same work on
//! every check: look up the key, read the clock, CAS.
//!
//! Why not T = 1 ns: each check then leaves the key's state only 1 ns ahead of now, so it is
//! idle (indistinguishable from a fresh key) almost at once, and our limiter evicts idle keys
//! automatically while governor's keyed limiter keeps them until `retain_recent` is called. With
//! 10,000 keys round-robin every check re-inserted its key (write lock, key allocation, shard
//! sweeps): that measured eviction churn, not the hot path.
//!
//! `compresh` uses the default `CoarseClock` (the kernel's coarse monotonic clock, vDSO);
//! `compresh_tsc_clock` the exact `MonotonicClock` (quanta's TSC reading, as governor's default
//! clock, plus the never-backwards guard); `compresh_fake_clock` a `FakeClock` (an atomic load),
//! to show the limiter's own cost without the clock. `benches/pieces.rs` breaks it down.
//!
//! Run: `cargo bench -p compresh-ratelimit -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use compresh_ratelimit::{Clock, CoarseClock, FakeClock, KeyedLimiter, MonotonicClock, Policy};
use criterion::measurement::WallTime;
use criterion::{criterion_main, BenchmarkGroup, Criterion, Throughput};
use governor::{DefaultKeyedRateLimiter, Quota};

const KEYS: usize = 10_000;

fn key(i: usize) -> String {
    // The shape of an API key id: short ASCII.
    format!("key_{i:016x}")
}

fn never_denies() -> Policy {
    Policy::new(NonZeroU32::MAX, Duration::from_millis(u64::from(u32::MAX)))
        .unwrap()
        .with_burst(NonZeroU32::MAX)
}

fn governor() -> DefaultKeyedRateLimiter<String> {
    let quota = Quota::with_period(Duration::from_millis(1))
        .unwrap()
        .allow_burst(NonZeroU32::MAX);
    governor::RateLimiter::keyed(quota)
}

/// Runs `scenario` on our limiter with each clock, under the names used in the README table.
fn ours(
    group: &mut BenchmarkGroup<'_, WallTime>,
    scenario: impl Fn(&mut BenchmarkGroup<'_, WallTime>, &str, &dyn Check),
) {
    let policy = never_denies();
    let coarse: KeyedLimiter<String> = KeyedLimiter::with_clock(CoarseClock::new());
    scenario(group, "compresh", &(&coarse, &policy));
    let tsc = KeyedLimiter::<String, _>::with_clock(MonotonicClock::new());
    scenario(group, "compresh_tsc_clock", &(&tsc, &policy));
    let fake = KeyedLimiter::<String, _>::with_clock(FakeClock::default());
    scenario(group, "compresh_fake_clock", &(&fake, &policy));
}

/// One check of a key, whatever the limiter's clock (a `dyn` call costs ~1 ns, the same for all
/// three variants; governor is called directly).
trait Check: Sync {
    fn check(&self, key: &str) -> bool;
}

impl<C: Clock> Check for (&KeyedLimiter<String, C>, &Policy) {
    #[inline]
    fn check(&self, key: &str) -> bool {
        self.0.check(key, self.1).allowed
    }
}

fn single_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("single_key_uncontended");
    group.throughput(Throughput::Elements(1));
    let k = key(7);
    ours(&mut group, |group, name, limiter| {
        assert!(limiter.check(&k));
        group.bench_function(name, |b| {
            b.iter(|| black_box(limiter.check(black_box(k.as_str()))));
        });
    });
    let gov = governor();
    assert!(gov.check_key(&k).is_ok());
    group.bench_function("governor", |b| {
        b.iter(|| black_box(gov.check_key(black_box(&k))));
    });
    group.finish();
}

fn many_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys_10k_round_robin");
    group.throughput(Throughput::Elements(1));
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    ours(&mut group, |group, name, limiter| {
        for k in &keys {
            assert!(limiter.check(k));
        }
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(limiter.check(keys[i].as_str()))
            });
        });
    });
    let gov = governor();
    for k in &keys {
        assert!(gov.check_key(k).is_ok());
    }
    group.bench_function("governor", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(gov.check_key(&keys[i]))
        });
    });
    group.finish();
}

/// Each of two threads makes `iters` checks on the same key; the time reported per iteration
/// is the wall time per check of one thread while the other contends.
fn contended(iters: u64, check: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            barrier.wait();
            for _ in 0..iters {
                check();
            }
        });
        barrier.wait();
        let start = Instant::now();
        for _ in 0..iters {
            check();
        }
        let mine = start.elapsed();
        // Thread panics only if a check panics; then the bench is meaningless anyway.
        other.join().unwrap();
        mine
    })
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("two_threads_one_key");
    group.throughput(Throughput::Elements(1));
    let k = key(3);
    ours(&mut group, |group, name, limiter| {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                contended(iters, || {
                    black_box(limiter.check(k.as_str()));
                })
            });
        });
    });
    let gov = governor();
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                let _ = black_box(gov.check_key(&k));
            })
        });
    });
    group.finish();
}

mod group {
    // `criterion_group!` generates an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{many_keys, single_key, two_threads};

    criterion::criterion_group!(benches, single_key, many_keys, two_threads);
}

criterion_main!(group::benches);
