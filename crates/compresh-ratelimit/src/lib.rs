//! Per-key rate limiting for the Compresh gateway, built to sit on a hot path.
//!
//! Compresh limits requests per API key by plan tier (default 2,000 requests per minute) and
//! reports the state in response headers on every response. This crate is a leaf: no I/O, no
//! async, nothing of ours; another Rust service can embed [`KeyedLimiter`] as is.
//!
//! # Quick start
//!
//! ```
//! use std::num::NonZeroU32;
//! use compresh_ratelimit::{KeyedLimiter, Policy, Tiers};
//!
//! let limiter: KeyedLimiter<String> = KeyedLimiter::new();
//! let tiers = Tiers::default(); // "free", "pro" and unknown plans: 2,000/min
//! let policy = tiers.policy_for("pro", None);
//!
//! let decision = limiter.check("key_id_123", &policy); // &str lookup, String keys
//! assert!(decision.allowed);
//! assert_eq!(decision.remaining(), 1_999);
//! for (name, value) in decision.headers() {
//!     // response.headers_mut().insert(HeaderName::from_static(name), value.parse()?);
//!     println!("{name}: {value}");
//! }
//!
//! // A small policy: 2 per second.
//! let strict = Policy::per_minute(NonZeroU32::new(120).unwrap())
//!     .with_burst(NonZeroU32::new(2).unwrap());
//! assert!(limiter.check("other", &strict).allowed);
//! assert!(limiter.check("other", &strict).allowed);
//! let denied = limiter.check("other", &strict);
//! assert!(!denied.allowed); // a value, not an error: answer 429 with denied.headers()
//! assert_eq!(denied.retry_after_secs(), Some(1));
//! ```
//!
//! # The algorithm: GCRA
//!
//! A [`Policy`] is `limit` requests per `period` with a `burst` (default `limit`). Requests are
//! spaced by the emission interval `T = period / limit` (2,000/min → 30 ms), in whole
//! nanoseconds rounded down. Each key keeps one number, its theoretical arrival time (TAT), in
//! one `AtomicU64`. With tolerance `τ = T × (burst − 1)`, a request at `now` is checked as
//!
//! ```text
//! tat = max(stored_tat, now)
//! allowed  iff  tat − now <= τ      then stored_tat = tat + T   (one CAS)
//! ```
//!
//! so a fresh key can make exactly `burst` requests at one instant, then one more every `T`.
//! Denied requests are not counted. From the same numbers: `remaining = ⌊(now + T×burst − tat) /
//! T⌋`, `reset_after = tat − now` (when the bucket is full again), and on denial `retry_after =
//! tat − τ − now`. This is equivalent to a token bucket of `burst` tokens refilled one per `T`
//! (the tests check it against one).
//!
//! **Policy changes.** The policy is passed on every check, so a new policy applies to a key's
//! next request. The stored TAT is absolute time, so what carries over is the key's debt
//! `TAT − now` in nanoseconds: for the same period, the fraction of the window already used
//! carries over and is then repaid at the new rate. An exhausted key upgraded from 2,000/min to
//! 4,000/min waits one new `T` (15 ms), not a whole window; a key downgraded keeps its debt.
//!
//! # Concurrency and memory
//!
//! Keys live in shards (4 per CPU, at least 8) of `RwLock<hashbrown::HashTable>`, hashed once
//! (the same hash picks the shard and the bucket). Checking an existing key takes a shard read
//! lock and a compare-and-swap loop on that key's atomic; only a key's first request takes a
//! write lock. A check returns a [`Decision`] holding the raw GCRA state; the header values
//! (`remaining`, `reset`, ...) are derived when asked for, so the hot path does no division.
//!
//! **Hot keys skip the lock.** Each thread keeps a 64-way direct-mapped cache of key slots
//! (shared by all limiters of the process, tagged by limiter). A key that misses twice in a row
//! on a thread is cached there, after which checking it is a hash, a thread-local lookup, a key
//! comparison and the CAS: no lock, no read-modify-write besides the CAS. Eviction stays safe
//! because a slot is *retired* (its state word swapped to a sentinel that refuses updates) before
//! it leaves the map; a thread holding a retired slot falls back to the map and finds the key's
//! one live slot, so two slots can never count the same key. Cached slots keep their key's
//! memory alive until the thread caches something else in that way (64 per thread at most).
//!
//! An entry whose TAT is not after now is indistinguishable from an absent key (under any
//! policy), so it is evicted without changing any decision. Eviction is automatic and
//! amortised, triggered from [`KeyedLimiter::check`]:
//! - inserting into a shard that has grown past twice its size after its last sweep (and past
//!   64 entries) sweeps that shard;
//! - once per the longest policy period seen, the first check after that time sweeps all shards.
//!
//! So memory is bounded by the keys active within about two periods. [`KeyedLimiter::len`] and
//! [`KeyedLimiter::retain_recent`] are there for explicit use. The limiter stores keys as given
//! and does not zeroize them: key it by an API key's id or hash, never the secret.
//!
//! # Hashing
//!
//! Keys are hashed with hashbrown's default hasher, foldhash, seeded randomly per process and
//! per limiter: about 5 ns for a 20-byte key id against about 22 ns for std's SipHash (see
//! `benches/pieces.rs`). foldhash is "minimally DoS-resistant": without the seed an attacker
//! cannot precompute colliding keys, but it is not a keyed PRF, so someone who can time many
//! requests could in principle learn enough to build collisions. Compresh's hot-path keys are
//! server-generated API key ids, which a client cannot choose, so this is not an attack surface
//! there. Where keys are attacker-chosen strings (e-mail addresses, user names), pass std's
//! SipHash: `KeyedLimiter::with_clock_and_hasher(CoarseClock::new(), RandomState::new())`.
//!
//! # Clocks
//!
//! Time comes from a [`Clock`]: nanoseconds since the clock's own origin, plus a mapping of a
//! reading to Unix time so header values (`X-RateLimit-Reset`) come from the same reading as the
//! decision. [`FakeClock`] is driven by hand for deterministic tests.
//!
//! [`CoarseClock`] (the default) reads the kernel's `CLOCK_MONOTONIC_COARSE` through the vDSO:
//! a few loads, no `rdtsc`, no system call (~6-12 ns on the VM we measured, against ~22 ns for a
//! TSC read and ~45 ns for `Instant::now()`), and the kernel guarantees it never goes backwards
//! on any CPU. Its resolution is the timer tick (1-4 ms, [`CoarseClock::resolution`]); it lags
//! real time by less than a tick, which makes the limiter at most one tick *stricter*, never
//! more generous. Against 30 ms emission intervals (2,000/min) and whole-second headers that is
//! invisible; the clock was the largest part of a check, so this is where the time went. Where
//! sub-millisecond precision matters (hundreds of requests per second per key with a burst of
//! 1), use the exact [`MonotonicClock`]: `KeyedLimiter::with_clock(MonotonicClock::new())`.
//!
//! [`MonotonicClock`] reads the CPU's time-stamp counter through `quanta` (as governor's
//! default clock does), calibrated against the OS monotonic clock, and maps readings to Unix
//! time through a [`SystemTime`] captured once at construction.
//!
//! The TSC caveats, and what `MonotonicClock` does about them:
//! - **Cores may disagree.** On some multi-socket hosts and VMs the TSCs of different cores are
//!   not exactly in step, so a thread that migrates may read an earlier time. Every reading goes
//!   through a shared atomic maximum (`fetch_max`), so the limiter's time never goes backwards,
//!   across threads and cores; a core that runs ahead pushes shared time forward by its skew.
//!   To keep that atomic off the hot path, a reading is only published (a read-modify-write)
//!   once it is at least 1 µs past the published time; closer readings return the published
//!   time (a plain load). The limiter thus sees time in steps of at least 1 µs, at most 1 µs
//!   late, which is negligible against emission intervals of milliseconds and only ever makes
//!   it stricter.
//! - **Only an invariant TSC is used.** quanta checks CPUID for an invariant TSC (and
//!   `rdtscp`); without one it falls back to `clock_gettime(CLOCK_MONOTONIC)`.
//! - **Calibration and drift.** The first `MonotonicClock` in a process calibrates the TSC
//!   (typically 10-20 ms, at most 200 ms). Unix times are origin + elapsed, so over a long
//!   uptime `X-RateLimit-Reset` may drift from the wall clock by the calibration error (parts
//!   per million) plus any NTP slew; headers are in whole seconds, so this is invisible in
//!   practice. Like `CLOCK_MONOTONIC`, the TSC does not count time a machine is suspended.
//!
//! # Backends
//!
//! [`RateLimiter`] is the seam for a distributed backend: callers can hold
//! `&dyn RateLimiter<str>` and a Redis implementation can come later.
//!
//! [`SystemTime`]: std::time::SystemTime

mod clock;
mod decision;
mod limiter;
mod policy;
mod slot_cache;

pub use clock::{Clock, CoarseClock, FakeClock, MonotonicClock};
pub use decision::{
    Decision, RATELIMIT, RATELIMIT_POLICY, RETRY_AFTER, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING,
    X_RATELIMIT_RESET,
};
pub use limiter::{KeyedLimiter, RateLimiter};
pub use policy::{Policy, Tiers, DEFAULT_REQUESTS_PER_MINUTE};

/// Errors of this crate. Checking a request never fails; only building a policy can.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// The policy's parameters cannot be enforced; the message says which rule was broken.
    #[error("invalid rate-limit policy: {0}")]
    InvalidPolicy(&'static str),
}
