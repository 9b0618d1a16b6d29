//! Compresh's `KeyedLimiter` against governor's keyed limiter (DashMap state, default quanta
//! clock), side by side in each scenario. Both use a policy that never denies (T = 1 ns, burst
//! `u32::MAX`), so both do the same work on every check: look up the key, read the clock, CAS.
//!
//! `compresh` uses the default `MonotonicClock` (std `Instant`); `compresh_quanta` plugs the same
//! TSC clock governor uses into our `Clock` trait, to separate the clock's cost from the
//! limiter's.
//!
//! Run: `cargo bench -p compresh-ratelimit -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use compresh_ratelimit::{Clock, KeyedLimiter, Policy};
use criterion::{criterion_main, Criterion, Throughput};
use governor::{DefaultKeyedRateLimiter, Quota};

const KEYS: usize = 10_000;

fn key(i: usize) -> String {
    // The shape of an API key id: short ASCII.
    format!("key_{i:016x}")
}

/// A TSC clock through quanta, as governor's default clock is: how an embedder with a faster
/// time source plugs it in.
struct QuantaClock {
    clock: quanta::Clock,
    origin: u64,
    unix_origin: u128,
}

impl QuantaClock {
    fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        let unix_origin = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Self {
            clock,
            origin,
            unix_origin,
        }
    }
}

impl Clock for QuantaClock {
    fn now(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }

    fn unix_nanos_at(&self, now: u64) -> u128 {
        self.unix_origin + u128::from(now)
    }
}

fn never_denies() -> Policy {
    Policy::new(NonZeroU32::MAX, Duration::from_nanos(u64::from(u32::MAX)))
        .unwrap()
        .with_burst(NonZeroU32::MAX)
}

fn ours() -> (KeyedLimiter<String>, Policy) {
    (KeyedLimiter::new(), never_denies())
}

fn ours_quanta() -> (KeyedLimiter<String, QuantaClock>, Policy) {
    (KeyedLimiter::with_clock(QuantaClock::new()), never_denies())
}

fn governor() -> DefaultKeyedRateLimiter<String> {
    let quota = Quota::with_period(Duration::from_nanos(1))
        .unwrap()
        .allow_burst(NonZeroU32::MAX);
    governor::RateLimiter::keyed(quota)
}

fn single_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("single_key_uncontended");
    group.throughput(Throughput::Elements(1));
    let k = key(7);
    let (limiter, policy) = ours();
    assert!(limiter.check(k.as_str(), &policy).allowed);
    group.bench_function("compresh", |b| {
        b.iter(|| black_box(limiter.check(black_box(k.as_str()), &policy)));
    });
    let (limiter, policy) = ours_quanta();
    assert!(limiter.check(k.as_str(), &policy).allowed);
    group.bench_function("compresh_quanta", |b| {
        b.iter(|| black_box(limiter.check(black_box(k.as_str()), &policy)));
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
    let (limiter, policy) = ours();
    for k in &keys {
        assert!(limiter.check(k.as_str(), &policy).allowed);
    }
    group.bench_function("compresh", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(limiter.check(keys[i].as_str(), &policy))
        });
    });
    let (limiter, policy) = ours_quanta();
    for k in &keys {
        assert!(limiter.check(k.as_str(), &policy).allowed);
    }
    group.bench_function("compresh_quanta", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(limiter.check(keys[i].as_str(), &policy))
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
    let (limiter, policy) = ours();
    group.bench_function("compresh", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                black_box(limiter.check(k.as_str(), &policy));
            })
        });
    });
    let (limiter, policy) = ours_quanta();
    group.bench_function("compresh_quanta", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                black_box(limiter.check(k.as_str(), &policy));
            })
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
