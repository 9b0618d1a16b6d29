//! Where a check's time goes: each piece of `KeyedLimiter::check` measured alone (clock reads,
//! the monotonic guard, hashing a key id, the shard read lock, the CAS, the division that
//! `remaining` needs), next to whole checks with a free clock (`FakeClock`) and the default one.
//!
//! Run: `cargo bench -p compresh-ratelimit --bench pieces -- --warm-up-time 1 --measurement-time 2`.

use std::collections::hash_map::RandomState as SipState;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use compresh_ratelimit::{Clock, CoarseClock, FakeClock, KeyedLimiter, MonotonicClock, Policy};
use criterion::{criterion_main, Criterion, Throughput};

/// The shape of an API key id: short ASCII.
const KEY: &str = "key_0000000000000007";

fn clocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pieces_clock");
    group.throughput(Throughput::Elements(1));
    let origin = Instant::now();
    group.bench_function("std_instant_elapsed", |b| {
        b.iter(|| black_box(origin.elapsed()));
    });
    let quanta = quanta::Clock::new();
    group.bench_function("quanta_raw", |b| b.iter(|| black_box(quanta.raw())));
    let start = quanta.raw();
    group.bench_function("quanta_raw_scaled", |b| {
        b.iter(|| black_box(quanta.delta_as_nanos(start, quanta.raw())));
    });
    let last = AtomicU64::new(0);
    let mut n = 0u64;
    group.bench_function("fetch_max_advancing", |b| {
        b.iter(|| {
            n += 1;
            black_box(last.fetch_max(black_box(n), Ordering::Relaxed))
        });
    });
    let clock = MonotonicClock::new();
    group.bench_function("monotonic_clock_now", |b| b.iter(|| black_box(clock.now())));
    let coarse = CoarseClock::new();
    group.bench_function("coarse_clock_now", |b| b.iter(|| black_box(coarse.now())));
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let mut group = c.benchmark_group("pieces_hash");
    group.throughput(Throughput::Elements(1));
    let sip = SipState::new();
    group.bench_function("siphash13_std", |b| {
        b.iter(|| black_box(sip.hash_one(black_box(KEY))));
    });
    let fold = hashbrown::DefaultHashBuilder::default();
    group.bench_function("foldhash_fast", |b| {
        b.iter(|| black_box(fold.hash_one(black_box(KEY))));
    });
    group.finish();
}

fn sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("pieces_sync");
    group.throughput(Throughput::Elements(1));
    let lock = RwLock::new(0u64);
    group.bench_function("rwlock_read_unlock", |b| {
        b.iter(|| black_box(*lock.read().unwrap()));
    });
    let word = AtomicU64::new(0);
    group.bench_function("cas_uncontended", |b| {
        b.iter(|| {
            let current = word.load(Ordering::Relaxed);
            black_box(word.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ))
        });
    });
    let divisor = black_box(30_000_000u64);
    let mut x = 60_000_000_000u64;
    group.bench_function("u64_div_runtime_divisor", |b| {
        b.iter(|| {
            x = x.wrapping_add(7);
            black_box(black_box(x) / divisor)
        });
    });
    group.finish();
}

fn whole_checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pieces_check");
    group.throughput(Throughput::Elements(1));
    // Never denies within a run and never goes idle (see `benches/limiter.rs`).
    let policy = Policy::new(NonZeroU32::MAX, Duration::from_millis(u64::from(u32::MAX)))
        .unwrap()
        .with_burst(NonZeroU32::MAX);
    let fake: KeyedLimiter<String, FakeClock> = KeyedLimiter::with_clock(FakeClock::default());
    assert!(fake.check(KEY, &policy).allowed);
    group.bench_function("check_fake_clock", |b| {
        b.iter(|| black_box(fake.check(black_box(KEY), &policy)));
    });
    let real: KeyedLimiter<String> = KeyedLimiter::new();
    assert!(real.check(KEY, &policy).allowed);
    group.bench_function("check_default_clock", |b| {
        b.iter(|| black_box(real.check(black_box(KEY), &policy)));
    });
    group.finish();
}

mod group {
    // `criterion_group!` generates an undocumented `pub fn`.
    #![allow(missing_docs)]
    use super::{clocks, hashing, sync, whole_checks};

    criterion::criterion_group!(benches, clocks, hashing, sync, whole_checks);
}

criterion_main!(group::benches);
