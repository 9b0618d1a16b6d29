//! A small per-thread cache of recently checked keys' state, so that checking a hot key skips
//! the shard lock.
//!
//! Why: on the hot path every atomic read-modify-write costs ~15 ns on the machines we measured,
//! and a shard read lock is two of them (lock, unlock) on top of the one CAS a check needs. A
//! hit here is a thread-local array lookup instead.
//!
//! Correctness rests on the limiter's retirement rule: a slot leaves the map only after its
//! state word was swapped to `RETIRED` (under the shard's write lock), and a retired slot refuses
//! every update. A thread holding a stale cached slot therefore cannot count requests on it; it
//! sees `RETIRED`, falls back to the map and finds (or inserts) the key's one live slot.
//!
//! Admission is "second miss in a row": a way remembers the last missed key's hash and caches its
//! slot only when the same key misses there again. A thread cycling through many keys (more than
//! the ways) then pays no reference-count traffic; a thread checking a hot key caches it on its
//! second check.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Arc;

/// Direct-mapped ways per thread, shared by every limiter of the process (entries are tagged
/// with the limiter's id). 64 × 32 bytes: a few cache lines per thread.
const WAYS: usize = 64;

/// A cached slot, type-erased so one thread-local serves limiters of any key type.
pub(crate) type ErasedSlot = Arc<dyn Any + Send + Sync>;

struct Way {
    limiter: u64,
    hash: u64,
    slot: Option<ErasedSlot>,
}

impl Way {
    /// Limiter ids start at 1, so an empty way never matches.
    const EMPTY: Way = Way {
        limiter: 0,
        hash: 0,
        slot: None,
    };
}

thread_local! {
    static CACHE: RefCell<[Way; WAYS]> = const { RefCell::new([const { Way::EMPTY }; WAYS]) };
}

#[inline]
fn way_index(hash: u64) -> usize {
    // The shard uses the bits below the top 7 and hashbrown the low ones; these are independent.
    (hash >> 32) as usize % WAYS
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<R> {
    /// The slot was cached and `use_slot` returned this.
    Hit(R),
    /// Go through the map; if `admit`, [`fill`] the way with the slot found there (the same key
    /// missed in this way last time too, or its cached slot went stale).
    Miss {
        /// Whether to cache the slot the map returns.
        admit: bool,
    },
}

/// Runs `use_slot` on the slot cached for `(limiter, hash)` if there is one of type `T`, else
/// records the miss. One thread-local access either way. `use_slot` declining (a retired slot,
/// or another key with the same hash) counts as a miss. While the cache is unavailable (thread
/// teardown, or a re-entrant check from inside a key's `Eq` or `Drop`) every lookup misses
/// without admission.
#[inline]
pub(crate) fn lookup<T: Any, R>(
    limiter: u64,
    hash: u64,
    use_slot: impl FnOnce(&T) -> Option<R>,
) -> Lookup<R> {
    CACHE
        .try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return Lookup::Miss { admit: false };
            };
            let way = &mut cache[way_index(hash)];
            if way.limiter == limiter && way.hash == hash {
                let cached = way
                    .slot
                    .as_deref()
                    .and_then(|slot| slot.downcast_ref::<T>());
                return match cached.and_then(use_slot) {
                    Some(outcome) => Lookup::Hit(outcome),
                    None => Lookup::Miss { admit: true },
                };
            }
            // Dropping a previously cached slot here is one reference-count decrement; keys
            // cycling through a way rarely get that far, since they are not admitted.
            *way = Way {
                limiter,
                hash,
                slot: None,
            };
            Lookup::Miss { admit: false }
        })
        .unwrap_or(Lookup::Miss { admit: false })
}

/// Caches `slot` for `(limiter, hash)` on this thread.
pub(crate) fn fill(limiter: u64, hash: u64, slot: ErasedSlot) {
    // Best effort: during thread teardown or a re-entrant check there is simply no caching.
    let _ = CACHE.try_with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            cache[way_index(hash)] = Way {
                limiter,
                hash,
                slot: Some(slot),
            };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(limiter: u64, hash: u64) -> Lookup<u32> {
        lookup(limiter, hash, |n: &u32| Some(*n))
    }

    #[test]
    fn second_miss_admits_and_hits_are_tagged_by_limiter_hash_and_type() {
        let hash = 0xdead_beef_0000_0042;
        assert_eq!(read(7, hash), Lookup::Miss { admit: false });
        assert_eq!(read(7, hash), Lookup::Miss { admit: true });
        fill(7, hash, Arc::new(5u32));
        assert_eq!(read(7, hash), Lookup::Hit(5));
        // Another type, or a declining closure (a retired slot): a miss that re-admits.
        assert_eq!(
            lookup(7, hash, |n: &u64| Some(*n)),
            Lookup::Miss { admit: true }
        );
        assert_eq!(
            lookup(7, hash, |_: &u32| None::<u32>),
            Lookup::Miss { admit: true }
        );
        assert_eq!(read(7, hash), Lookup::Hit(5));
        // Another limiter takes the way over; so does another key (hash) of the same way.
        assert_eq!(read(8, hash), Lookup::Miss { admit: false });
        assert_eq!(read(7, hash), Lookup::Miss { admit: false });
        let rival = hash ^ 1;
        assert_eq!(way_index(rival), way_index(hash));
        assert_eq!(read(7, rival), Lookup::Miss { admit: false });
        assert_eq!(read(7, hash), Lookup::Miss { admit: false });
        assert_eq!(read(7, hash), Lookup::Miss { admit: true });
    }

    #[test]
    fn re_entrant_use_is_a_miss_not_a_panic() {
        let hash = 0x1234_5678_0000_0001;
        fill(9, hash, Arc::new(1u32));
        let nested = lookup(9, hash, |_: &u32| Some(read(9, hash)));
        assert_eq!(nested, Lookup::Hit(Lookup::Miss { admit: false }));
        assert_eq!(read(9, hash), Lookup::Hit(1));
    }
}
