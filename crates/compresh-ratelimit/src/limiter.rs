//! The keyed GCRA limiter: sharded map of key → one `AtomicU64` (theoretical arrival time).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::clock::{Clock, CoarseClock};
use crate::decision::Decision;
use crate::policy::Policy;
use crate::slot_cache;

/// A shard is swept on insert once it holds more than this many entries and twice as many as
/// after its last sweep (amortised O(1) per insert).
const MIN_SWEEP_LEN: usize = 64;

/// The state word of a slot that has left the map: it refuses every update, so a thread still
/// holding the slot in its [`slot_cache`] cannot count requests on it. Live TATs stay below it.
const RETIRED: u64 = u64::MAX;

/// Ids tag thread-cached slots with their limiter; 0 is never issued (an empty cache way).
static NEXT_LIMITER_ID: AtomicU64 = AtomicU64::new(1);

/// The backend seam: callers hold `&dyn RateLimiter<str>` (or a generic), so a distributed
/// backend (Redis) can replace [`KeyedLimiter`] later.
pub trait RateLimiter<K: ?Sized>: Send + Sync {
    /// Counts one request for `key` under `policy` and decides whether it may proceed.
    fn check(&self, key: &K, policy: &Policy) -> Decision;
}

/// An in-process GCRA limiter keyed by `K`, lock-free per key on the hot path.
///
/// State is one `AtomicU64` per key (its theoretical arrival time, TAT, in nanoseconds of `C`).
/// The map is split into shards of `RwLock<HashTable>`. A thread that checks a key twice in a
/// row caches the key's slot in a small thread-local cache, so checking a hot key is a CAS loop
/// on its atomic with no lock at all; other checks take one shard's read lock. Only the first
/// request of a key (or the first after eviction) takes a write lock.
///
/// Entries whose TAT is not after now are indistinguishable from fresh keys and are evicted
/// automatically (see the crate docs), so memory is bounded by recently active keys.
///
/// Keys are stored as given and are not zeroized: key the limiter by an API key's id or hash,
/// not by the secret itself.
///
/// `S` hashes keys; the default is hashbrown's (foldhash, randomly seeded), see the crate docs
/// (Hashing) for when to pass std's SipHash `RandomState` instead.
pub struct KeyedLimiter<K, C: Clock = CoarseClock, S = DefaultHashBuilder> {
    /// Unique per limiter in the process: tags this limiter's entries in thread caches.
    id: u64,
    shards: Box<[Shard<K>]>,
    /// `64 - log2(shards.len())`.
    shard_shift: u32,
    hasher: S,
    clock: C,
    /// Clock time at which the next time-based sweep of every shard is due.
    next_sweep: AtomicU64,
    /// Longest policy period seen on insert, in nanoseconds: the time-based sweep interval.
    sweep_interval: AtomicU64,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> KeyedLimiter<K, CoarseClock> {
    /// A limiter on the default clock, [`CoarseClock`] (see its docs for the trade-off against
    /// the exact [`MonotonicClock`](crate::MonotonicClock)).
    pub fn new() -> Self {
        Self::with_clock(CoarseClock::new())
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Default for KeyedLimiter<K, CoarseClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static, C: Clock> KeyedLimiter<K, C> {
    /// A limiter reading time from `clock` (4 shards per available CPU, at least 8).
    pub fn with_clock(clock: C) -> Self {
        Self::with_clock_and_hasher(clock, DefaultHashBuilder::default())
    }
}

impl<K, C, S> KeyedLimiter<K, C, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    C: Clock,
    S: BuildHasher + Send + Sync + 'static,
{
    /// A limiter reading time from `clock` and hashing keys with `hasher` (4 shards per
    /// available CPU, at least 8).
    pub fn with_clock_and_hasher(clock: C, hasher: S) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let shard_count = (cpus * 4).next_power_of_two().clamp(8, 1024);
        let shards = (0..shard_count)
            .map(|_| Shard {
                inner: RwLock::new(ShardInner {
                    table: HashTable::new(),
                    len_after_sweep: 0,
                }),
            })
            .collect();
        Self {
            id: NEXT_LIMITER_ID.fetch_add(1, Ordering::Relaxed),
            shards,
            shard_shift: 64 - shard_count.trailing_zeros(),
            hasher,
            clock,
            next_sweep: AtomicU64::new(0),
            sweep_interval: AtomicU64::new(0),
        }
    }

    /// Counts one request for `key` under `policy` and decides whether it may proceed.
    ///
    /// A denied request is not counted. The policy is read on every call, so changing a key's
    /// policy takes effect on its next check (see the crate docs for how state carries over).
    #[inline]
    pub fn check<Q>(&self, key: &Q, policy: &Policy) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let now = self.clock.now();
        let looked_up = slot_cache::lookup(self.id, hash, |slot: &Slot<K>| {
            if slot.key.borrow() == key {
                slot.acquire(policy, now)
            } else {
                None
            }
        });
        let (allowed, tat) = match looked_up {
            slot_cache::Lookup::Hit(outcome) => outcome,
            slot_cache::Lookup::Miss { admit } => self.check_in_map(hash, key, policy, now, admit),
        };
        self.maybe_sweep(now);
        self.decision(policy, now, allowed, tat)
    }

    /// A check that missed the thread's cache: through the shard (read lock, or write lock for
    /// a new key), caching the slot if `admit`.
    fn check_in_map<Q>(
        &self,
        hash: u64,
        key: &Q,
        policy: &Policy,
        now: u64,
        admit: bool,
    ) -> (bool, u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let shard = &self.shards[self.shard_index(hash)];
        let found = {
            let guard = shard.read();
            guard
                .table
                .find(hash, |slot| slot.key.borrow() == key)
                .map(|slot| {
                    (
                        slot.acquire_live(policy, now),
                        admit.then(|| Arc::clone(slot)),
                    )
                })
        };
        let (outcome, to_cache) = match found {
            Some(found) => found,
            None => self.insert(shard, hash, key, policy, now, admit),
        };
        if let Some(slot) = to_cache {
            slot_cache::fill(self.id, hash, slot);
        }
        outcome
    }

    /// The decision a request for `key` would get now, without counting one: `remaining` is
    /// the whole requests available now (including the one a request would use), and
    /// `retry_after` is set when a request would be denied. Never inserts a key.
    pub fn peek<Q>(&self, key: &Q, policy: &Policy) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[self.shard_index(hash)];
        let now = self.clock.now();
        let stored = shard
            .read()
            .table
            .find(hash, |slot| slot.key.borrow() == key)
            .map_or(0, |slot| slot.tat.load(Ordering::Relaxed));
        let tat = stored.max(now);
        let allowed = tat - now <= policy.tolerance_ns();
        self.decision(policy, now, allowed, tat)
    }

    /// Number of keys currently stored (active keys plus idle ones not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.read().table.len())
            .sum()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts every key that is idle now (its state is that of a fresh key). Happens
    /// automatically during [`check`](Self::check); call it to reclaim memory eagerly.
    pub fn retain_recent(&self) {
        self.sweep_all(self.clock.now());
    }

    /// The clock this limiter reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        // hashbrown uses the low bits for the bucket and the top 7 bits as a tag, so pick the
        // shard from the bits just below the tag; otherwise every key in a shard would share
        // its low bits and crowd a fraction of the buckets.
        ((hash << 7) >> self.shard_shift) as usize
    }

    /// The slow path: first request of a key. Inserts under the shard's write lock (re-checking,
    /// since another thread may have inserted meanwhile) and sweeps the shard if it has doubled.
    /// Returns the outcome and, if `admit`, the slot for the thread's cache.
    #[cold]
    fn insert<Q>(
        &self,
        shard: &Shard<K>,
        hash: u64,
        key: &Q,
        policy: &Policy,
        now: u64,
        admit: bool,
    ) -> ((bool, u64), Option<Arc<Slot<K>>>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.sweep_interval
            .fetch_max(duration_nanos(policy.period()), Ordering::Relaxed);
        let mut guard = shard.write();
        let inner = &mut *guard;
        let outcome = {
            let slot = inner
                .table
                .entry(
                    hash,
                    |slot| slot.key.borrow() == key,
                    |slot| self.hasher.hash_one(&slot.key),
                )
                .or_insert_with(|| {
                    Arc::new(Slot {
                        key: key.to_owned(),
                        tat: AtomicU64::new(0),
                    })
                })
                .into_mut();
            (
                slot.acquire_live(policy, now),
                admit.then(|| Arc::clone(slot)),
            )
        };
        if inner.table.len() > (inner.len_after_sweep * 2).max(MIN_SWEEP_LEN) {
            // The new key survives: its first request is always allowed, so its TAT > now.
            inner.sweep(now);
        }
        outcome
    }

    /// Time-based sweep of all shards, at most once per sweep interval (the longest period
    /// seen), so idle keys go even when no shard grows. One caller wins the CAS and sweeps.
    #[inline]
    fn maybe_sweep(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let interval = self.sweep_interval.load(Ordering::Relaxed).max(1);
        if self
            .next_sweep
            .compare_exchange(
                due,
                now.saturating_add(interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.sweep_all(now);
        }
    }

    fn sweep_all(&self, now: u64) {
        for shard in &*self.shards {
            shard.write().sweep(now);
        }
    }

    /// The decision for a check at `now` that left the key at `tat`. Only the verdict is
    /// computed here; the header values are derived on demand (see [`Decision`]).
    #[inline]
    fn decision(&self, policy: &Policy, now: u64, allowed: bool, tat: u64) -> Decision {
        Decision::from_nanos(
            allowed,
            policy,
            tat.saturating_sub(now),
            self.clock.unix_nanos_at(now),
        )
    }
}

impl<K, Q, C, S> RateLimiter<Q> for KeyedLimiter<K, C, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static + Borrow<Q>,
    Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    C: Clock,
    S: BuildHasher + Send + Sync + 'static,
{
    fn check(&self, key: &Q, policy: &Policy) -> Decision {
        KeyedLimiter::check(self, key, policy)
    }
}

impl<K, C: Clock, S> fmt::Debug for KeyedLimiter<K, C, S> {
    /// Shows sizes only: keys may be sensitive.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len: usize = self
            .shards
            .iter()
            .map(|shard| shard.read().table.len())
            .sum();
        f.debug_struct("KeyedLimiter")
            .field("shards", &self.shards.len())
            .field("len", &len)
            .finish_non_exhaustive()
    }
}

/// One shard, aligned to its own cache lines so shard locks do not false-share.
#[repr(align(128))]
struct Shard<K> {
    inner: RwLock<ShardInner<K>>,
}

impl<K> Shard<K> {
    // The shard's data is atomics plus a table that is never left half-updated by our code, so a
    // poisoned lock (a panic in a user's Hash/Eq impl) is safe to keep using.
    #[inline]
    fn read(&self) -> RwLockReadGuard<'_, ShardInner<K>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, ShardInner<K>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

struct ShardInner<K> {
    /// Slots are shared with thread caches, hence the `Arc`.
    table: HashTable<Arc<Slot<K>>>,
    len_after_sweep: usize,
}

impl<K> ShardInner<K> {
    /// Drops entries with TAT <= now: for any policy they behave exactly like an absent key.
    /// Each is retired first, so copies in thread caches go stale instead of staying usable.
    fn sweep(&mut self, now: u64) {
        self.table.retain(|slot| !slot.retire_if_idle(now));
        self.len_after_sweep = self.table.len();
    }
}

struct Slot<K> {
    key: K,
    /// Theoretical arrival time in clock nanoseconds; 0 for a fresh key, [`RETIRED`] once the
    /// slot has left the map.
    tat: AtomicU64,
}

impl<K> Slot<K> {
    /// GCRA on this key: `(allowed, TAT after the decision)`, or `None` if the slot is retired
    /// (the caller must go through the map instead).
    ///
    /// With `T` the emission interval and `τ = T × (burst − 1)`: `tat = max(stored, now)`; allow
    /// iff `tat − now <= τ`, then store `tat + T`. A fresh key (tat = now) thus allows exactly
    /// `burst` requests at one instant. Denials write nothing. `Relaxed` suffices: the atomic is
    /// the only state and the CAS orders all updates to it, retirement included.
    #[inline]
    fn acquire(&self, policy: &Policy, now: u64) -> Option<(bool, u64)> {
        let emission = policy.emission_ns();
        let tolerance = policy.tolerance_ns();
        let mut current = self.tat.load(Ordering::Relaxed);
        loop {
            if current == RETIRED {
                return None;
            }
            let tat = current.max(now);
            if tat - now > tolerance {
                return Some((false, tat));
            }
            let next = tat.saturating_add(emission).min(RETIRED - 1);
            match self.tat.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((true, next)),
                Err(actual) => current = actual,
            }
        }
    }

    /// [`acquire`](Self::acquire) on a slot found in the map under its shard's lock.
    #[inline]
    fn acquire_live(&self, policy: &Policy, now: u64) -> (bool, u64) {
        // Slots are retired only under the shard's write lock, in the same critical section that
        // removes them from the map, so a slot reached through the map is never retired.
        self.acquire(policy, now)
            .expect("a slot in the map is never retired")
    }

    /// Retires the slot if it is idle at `now` (its state is that of a fresh key). A concurrent
    /// check that moves its TAT past `now` wins and keeps the slot.
    fn retire_if_idle(&self, now: u64) -> bool {
        let mut current = self.tat.load(Ordering::Relaxed);
        while current <= now {
            match self.tat.compare_exchange_weak(
                current,
                RETIRED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    crate::clock::duration_to_nanos(duration)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::{Arc, Barrier};

    use proptest::prelude::*;

    use super::*;
    use crate::clock::FakeClock;

    const UNIX_ORIGIN: Duration = Duration::from_secs(1_700_000_000);

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn limiter() -> KeyedLimiter<String, FakeClock> {
        KeyedLimiter::with_clock(FakeClock::new(UNIX_ORIGIN))
    }

    /// 10 per second: T = 100 ms.
    fn ten_per_sec() -> Policy {
        Policy::new(nz(10), Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn fresh_key_gets_exactly_burst_then_retry_after_t() {
        let limiter = limiter();
        let policy = Policy::per_minute(nz(2_000));
        let first = limiter.check("k", &policy);
        assert_eq!(
            first,
            Decision::new(true, &policy, Duration::from_millis(30), UNIX_ORIGIN)
        );
        assert!(first.allowed);
        assert_eq!(first.limit(), 2_000);
        assert_eq!(first.remaining(), 1_999);
        assert_eq!(first.reset(), 1_700_000_001);
        assert_eq!(first.reset_after(), Duration::from_millis(30));
        assert_eq!(first.retry_after(), None);
        assert_eq!(first.window_secs(), 60);
        for i in 2..2_000 {
            let decision = limiter.check("k", &policy);
            assert!(decision.allowed, "request {i}");
            assert_eq!(decision.remaining(), 2_000 - i);
        }
        let last = limiter.check("k", &policy);
        assert!(last.allowed);
        assert_eq!(last.remaining(), 0);
        assert_eq!(last.reset_after(), Duration::from_secs(60));
        assert_eq!(last.reset(), 1_700_000_060);
        let denied = limiter.check("k", &policy);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining(), 0);
        assert_eq!(denied.retry_after(), Some(Duration::from_millis(30)));
        assert_eq!(denied.retry_after_secs(), Some(1));
        assert_eq!(denied.reset_after(), Duration::from_secs(60));
        // Denials are not counted: the wait does not grow.
        assert_eq!(
            limiter.check("k", &policy).retry_after(),
            Some(Duration::from_millis(30))
        );
    }

    #[test]
    fn refill_is_exactly_one_per_emission_interval() {
        let limiter = limiter();
        let policy = ten_per_sec();
        for _ in 0..10 {
            assert!(limiter.check("k", &policy).allowed);
        }
        assert!(!limiter.check("k", &policy).allowed);
        limiter
            .clock()
            .advance(Duration::from_millis(100) - Duration::from_nanos(1));
        let almost = limiter.check("k", &policy);
        assert!(!almost.allowed);
        assert_eq!(almost.retry_after(), Some(Duration::from_nanos(1)));
        limiter.clock().advance(Duration::from_nanos(1));
        let refilled = limiter.check("k", &policy);
        assert!(refilled.allowed);
        assert_eq!(refilled.remaining(), 0);
        assert!(!limiter.check("k", &policy).allowed);
        // Partial refill: 350 ms later, 3 whole requests are available.
        limiter.clock().advance(Duration::from_millis(350));
        let partial = limiter.check("k", &policy);
        assert!(partial.allowed);
        assert_eq!(partial.remaining(), 2);
        assert_eq!(partial.reset_after(), Duration::from_millis(750));
        assert_eq!(limiter.peek("k", &policy).remaining(), 2);
        // Idle for a full period: fresh again.
        limiter.clock().advance(Duration::from_secs(1));
        assert_eq!(limiter.check("k", &policy).remaining(), 9);
    }

    #[test]
    fn reset_is_rounded_up_unix_seconds_from_the_same_reading() {
        let clock = FakeClock::new(Duration::new(1_700_000_000, 900_000_000));
        let limiter: KeyedLimiter<String, FakeClock> = KeyedLimiter::with_clock(clock);
        let policy = ten_per_sec();
        let first = limiter.check("k", &policy);
        // 1_700_000_000.9 + 0.1 = exactly 1_700_000_001.
        assert_eq!(first.reset(), 1_700_000_001);
        let second = limiter.check("k", &policy);
        assert_eq!(second.reset(), 1_700_000_002);
        assert_eq!(second.headers()[4].1, "\"default\";r=8;t=1");
    }

    #[test]
    fn burst_smaller_than_limit() {
        let limiter = limiter();
        let policy = Policy::per_minute(nz(60)).with_burst(nz(3));
        let decisions: Vec<bool> = (0..4)
            .map(|_| limiter.check("k", &policy).allowed)
            .collect();
        assert_eq!(decisions, [true, true, true, false]);
        let denied = limiter.check("k", &policy);
        assert_eq!(denied.limit(), 60);
        assert_eq!(denied.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(denied.reset_after(), Duration::from_secs(3));
    }

    #[test]
    fn keys_are_independent_and_borrowed_lookup_works() {
        let limiter = limiter();
        let policy = Policy::new(nz(1), Duration::from_secs(1)).unwrap();
        assert!(limiter.check("a", &policy).allowed);
        assert!(!limiter.check(&"a".to_owned(), &policy).allowed);
        assert!(limiter.check("b", &policy).allowed);
        assert_eq!(limiter.len(), 2);
        let dynamic: &dyn RateLimiter<str> = &limiter;
        assert!(!dynamic.check("b", &policy).allowed);
        assert!(dynamic.check("c", &policy).allowed);
    }

    #[test]
    fn peek_does_not_consume_or_insert() {
        let limiter = limiter();
        let policy = Policy::new(nz(2), Duration::from_secs(1)).unwrap();
        let fresh = limiter.peek("k", &policy);
        assert!(fresh.allowed);
        assert_eq!(fresh.remaining(), 2);
        assert_eq!(fresh.reset_after(), Duration::ZERO);
        assert!(limiter.is_empty());
        limiter.check("k", &policy);
        limiter.check("k", &policy);
        let exhausted = limiter.peek("k", &policy);
        assert!(!exhausted.allowed);
        assert_eq!(exhausted.remaining(), 0);
        assert_eq!(exhausted.retry_after(), Some(Duration::from_millis(500)));
        assert_eq!(limiter.peek("k", &policy), exhausted);
    }

    #[test]
    fn policy_change_keeps_the_time_debt() {
        // The stored TAT is absolute time, so what carries over is the debt `TAT - now` in
        // nanoseconds: with the same period, the used fraction of the window carries over and
        // is then repaid at the new rate.
        let limiter = limiter();
        let small = Policy::per_minute(nz(2_000));
        for _ in 0..2_000 {
            assert!(limiter.check("k", &small).allowed);
        }
        // Upgrade to 4,000/min: a full window of debt (60 s) exceeds τ = 3,999 × 15 ms, so the
        // key waits 15 ms (the new T), not the old 30 ms.
        let big = Policy::per_minute(nz(4_000));
        let denied = limiter.check("k", &big);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after(), Some(Duration::from_millis(15)));
        limiter.clock().advance(Duration::from_millis(15));
        assert!(limiter.check("k", &big).allowed);

        // Downgrade: one request (30 ms of debt) under 2,000/min, then 10/min (T = 6 s):
        // 30 ms + 6 s of debt leaves 8 whole requests of the 10-request burst.
        let other = "other";
        assert!(limiter.check(other, &small).allowed);
        let tiny = Policy::per_minute(nz(10));
        let after = limiter.check(other, &tiny);
        assert!(after.allowed);
        assert_eq!(after.remaining(), 8);
        assert_eq!(after.reset_after(), Duration::from_millis(6_030));
    }

    #[test]
    fn clock_moving_backwards_is_tolerated() {
        let limiter = limiter();
        let policy = Policy::new(nz(1), Duration::from_secs(1)).unwrap();
        limiter.clock().set(Duration::from_secs(10));
        assert!(limiter.check("k", &policy).allowed);
        limiter.clock().set(Duration::from_secs(5));
        let denied = limiter.check("k", &policy);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn frozen_clock_eight_threads_get_exactly_the_limit() {
        let limiter = Arc::new(limiter());
        let policy = Policy::per_minute(nz(2_000));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..1_000)
                        .filter(|_| limiter.check("shared", &policy).allowed)
                        .count()
                })
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(allowed, 2_000);
        assert_eq!(limiter.peek("shared", &policy).remaining(), 0);
    }

    #[test]
    fn a_thread_cached_slot_goes_stale_when_its_key_is_evicted() {
        let limiter = limiter();
        let policy = Policy::new(nz(3), Duration::from_millis(30)).unwrap();
        // Two checks in a row put the key's slot in this thread's cache.
        for _ in 0..3 {
            assert!(limiter.check("k", &policy).allowed);
        }
        assert!(!limiter.check("k", &policy).allowed);
        limiter.clock().advance(Duration::from_millis(30));
        limiter.retain_recent();
        assert!(limiter.is_empty());
        // The cached slot is retired: the check goes through the map and inserts a fresh key.
        assert_eq!(limiter.check("k", &policy).remaining(), 2);
        assert_eq!(limiter.len(), 1);
        assert_eq!(limiter.check("k", &policy).remaining(), 1);
        assert_eq!(limiter.check("k", &policy).remaining(), 0);
        assert!(!limiter.check("k", &policy).allowed);
        assert_eq!(limiter.peek("k", &policy).remaining(), 0);
    }

    #[test]
    fn eviction_racing_cached_checks_never_allows_more_than_the_burst() {
        // Each round starts with the key idle. Long-lived checkers have the previous round's
        // slot in their caches; a thread spawned for the round has an empty cache and goes
        // through the map. The key is evicted before the round (even rounds) or while the
        // checks run (odd rounds). The clock is frozen within a round, so exactly `burst`
        // requests may pass in total, whichever slot each thread reaches.
        const CHECKERS: usize = 3;
        const ROUNDS: usize = 300;
        let limiter = Arc::new(limiter());
        let policy = Policy::new(nz(5), Duration::from_millis(1)).unwrap();
        let start = Arc::new(Barrier::new(CHECKERS + 2));
        let end = Arc::new(Barrier::new(CHECKERS + 2));
        let hammer = move |limiter: &KeyedLimiter<String, FakeClock>| {
            (0..10)
                .filter(|_| limiter.check("k", &policy).allowed)
                .count()
        };
        let checkers: Vec<_> = (0..CHECKERS)
            .map(|_| {
                let (limiter, start, end) = (limiter.clone(), start.clone(), end.clone());
                std::thread::spawn(move || {
                    let mut per_round = Vec::with_capacity(ROUNDS);
                    for _ in 0..ROUNDS {
                        start.wait();
                        per_round.push(hammer(&limiter));
                        end.wait();
                    }
                    per_round
                })
            })
            .collect();
        let mut fresh_counts = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                limiter.retain_recent();
            }
            let fresh = {
                let (limiter, start, end) = (limiter.clone(), start.clone(), end.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let allowed = hammer(&limiter);
                    end.wait();
                    allowed
                })
            };
            start.wait();
            if round % 2 == 1 {
                limiter.retain_recent();
            }
            end.wait();
            fresh_counts.push(fresh.join().unwrap());
            limiter.clock().advance(Duration::from_millis(1));
        }
        let counts: Vec<Vec<usize>> = checkers.into_iter().map(|h| h.join().unwrap()).collect();
        for (round, fresh) in fresh_counts.iter().enumerate() {
            let allowed: usize = fresh
                + counts
                    .iter()
                    .map(|per_round| per_round[round])
                    .sum::<usize>();
            assert_eq!(allowed, 5, "round {round}");
        }
    }

    #[test]
    fn eviction_of_a_million_idle_keys() {
        let clock = FakeClock::new(UNIX_ORIGIN);
        let limiter: KeyedLimiter<u64, FakeClock> = KeyedLimiter::with_clock(clock.clone());
        let policy = Policy::new(nz(1), Duration::from_millis(1)).unwrap();
        for key in 0..1_000_000u64 {
            assert!(limiter.check(&key, &policy).allowed);
        }
        // The clock is frozen, so nothing is idle yet: amortised sweeps must not drop live keys.
        assert_eq!(limiter.len(), 1_000_000);
        assert!(!limiter.check(&42, &policy).allowed);
        clock.advance(Duration::from_millis(2));
        for key in 2_000_000..2_000_003u64 {
            assert!(limiter.check(&key, &policy).allowed);
        }
        assert!(limiter.len() <= 3, "len = {}", limiter.len());
        // An evicted key behaves exactly like a fresh one.
        assert_eq!(limiter.check(&42, &policy).remaining(), 0);
        assert!(limiter.check(&43, &policy).allowed);
    }

    #[test]
    fn amortised_shard_sweep_keeps_len_bounded_without_time_sweeps() {
        // A long period keeps the time-based sweep away; shard growth alone must evict.
        let clock = FakeClock::new(UNIX_ORIGIN);
        let limiter: KeyedLimiter<u64, FakeClock> = KeyedLimiter::with_clock(clock.clone());
        let long = Policy::new(nz(1), Duration::from_secs(3_600)).unwrap();
        assert!(limiter.check(&u64::MAX, &long).allowed);
        let short = Policy::new(nz(1), Duration::from_millis(1)).unwrap();
        let shards = limiter.shards.len();
        for key in 0..100_000u64 {
            limiter.check(&key, &short);
            clock.advance(Duration::from_millis(1));
        }
        // Each shard sweeps when it doubles, and all but the last key are idle by then.
        assert!(
            limiter.len() <= shards * MIN_SWEEP_LEN * 2 + 1,
            "len = {}",
            limiter.len()
        );
    }

    #[test]
    fn retain_recent_evicts_only_idle_keys() {
        let limiter = limiter();
        let short = Policy::new(nz(1), Duration::from_millis(10)).unwrap();
        let long = Policy::new(nz(1), Duration::from_secs(10)).unwrap();
        limiter.check("short", &short);
        limiter.check("long", &long);
        assert_eq!(limiter.len(), 2);
        limiter.retain_recent();
        assert_eq!(limiter.len(), 2);
        limiter.clock().advance(Duration::from_millis(10));
        limiter.retain_recent();
        assert_eq!(limiter.len(), 1);
        assert!(!limiter.check("long", &long).allowed);
        assert!(!limiter.is_empty());
        assert_eq!(
            format!("{limiter:?}"),
            format!(
                "KeyedLimiter {{ shards: {}, len: 1, .. }}",
                limiter.shards.len()
            )
        );
    }

    /// Reference model: a token bucket counting credit in nanoseconds (no floats). Capacity
    /// `burst × T`, refilled 1 ns per ns, a request costs `T`.
    struct Bucket {
        credit: u64,
        last: u64,
    }

    impl Bucket {
        fn arrive(&mut self, policy: &Policy, now: u64) -> (bool, u64, u64, Option<u64>) {
            let t = policy.emission_interval().as_nanos() as u64;
            let capacity = t * u64::from(policy.burst());
            self.credit = (self.credit + (now - self.last)).min(capacity);
            self.last = now;
            if self.credit >= t {
                self.credit -= t;
                (true, self.credit / t, capacity - self.credit, None)
            } else {
                (false, 0, capacity - self.credit, Some(t - self.credit))
            }
        }
    }

    proptest! {
        #[test]
        fn matches_token_bucket_model(
            limit in 1u32..50,
            period_factor in 1u64..1_000,
            burst in 1u32..60,
            gaps in prop::collection::vec(0u64..200_000, 1..200),
        ) {
            let period = u64::from(limit) * period_factor;
            let policy = Policy::new(nz(limit), Duration::from_nanos(period))
                .unwrap()
                .with_burst(nz(burst));
            let clock = FakeClock::new(UNIX_ORIGIN);
            clock.set(Duration::from_secs(1));
            let limiter: KeyedLimiter<u8, FakeClock> = KeyedLimiter::with_clock(clock.clone());
            let t = policy.emission_interval().as_nanos() as u64;
            let mut model = Bucket { credit: t * u64::from(burst), last: clock.now() };
            for gap in gaps {
                // Gaps up to 4 periods, with many zero gaps to exercise bursts.
                let gap = if gap % 3 == 0 { 0 } else { gap % (4 * period) };
                clock.advance(Duration::from_nanos(gap));
                let (allowed, remaining, reset_after, retry_after) =
                    model.arrive(&policy, clock.now());
                let decision = limiter.check(&0, &policy);
                prop_assert_eq!(decision.allowed, allowed);
                prop_assert_eq!(u64::from(decision.remaining()), remaining);
                prop_assert_eq!(decision.reset_after(), Duration::from_nanos(reset_after));
                prop_assert_eq!(decision.retry_after(), retry_after.map(Duration::from_nanos));
            }
        }
    }
}
