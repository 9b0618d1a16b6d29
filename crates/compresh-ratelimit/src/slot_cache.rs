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

/// Runs `use_slot` on the slot cached for `(limiter, hash)` if there is one of type `T`.
/// `None` means a miss: nothing cached, another key's slot, `use_slot` declined, or the cache is
/// unavailable (thread teardown, or a re-entrant check from inside a key's `Eq`).
#[inline]
pub(crate) fn with_cached<T: Any, R>(
    limiter: u64,
    hash: u64,
    use_slot: impl FnOnce(&T) -> Option<R>,
) -> Option<R> {
    CACHE
        .try_with(|cache| {
            let cache = cache.try_borrow().ok()?;
            let way = &cache[way_index(hash)];
            if way.limiter != limiter || way.hash != hash {
                return None;
            }
            let slot = way.slot.as_deref()?.downcast_ref::<T>()?;
            use_slot(slot)
        })
        .ok()
        .flatten()
}

/// Records a miss for `(limiter, hash)` and says whether the caller should [`fill`] the way:
/// true when the same key missed there last time too (or its cached slot went stale).
#[inline]
pub(crate) fn admit(limiter: u64, hash: u64) -> bool {
    CACHE
        .try_with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return false;
            };
            let way = &mut cache[way_index(hash)];
            if way.limiter == limiter && way.hash == hash {
                return true;
            }
            // Dropping a previously cached slot here is one reference-count decrement; cycling
            // keys rarely get that far, since they are not admitted.
            *way = Way {
                limiter,
                hash,
                slot: None,
            };
            false
        })
        .unwrap_or(false)
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

    #[test]
    fn second_miss_admits_and_hits_are_tagged_by_limiter_hash_and_type() {
        let hash = 0xdead_beef_0000_0042;
        assert_eq!(with_cached(7, hash, |n: &u32| Some(*n)), None);
        assert!(!admit(7, hash));
        assert!(admit(7, hash));
        fill(7, hash, Arc::new(5u32));
        assert_eq!(with_cached(7, hash, |n: &u32| Some(*n)), Some(5));
        // Another limiter, another hash in the same way, another type, a declining closure.
        assert_eq!(with_cached(8, hash, |n: &u32| Some(*n)), None);
        assert_eq!(with_cached(7, hash ^ 1, |n: &u32| Some(*n)), None);
        assert_eq!(with_cached(7, hash, |n: &u64| Some(*n)), None);
        assert_eq!(with_cached(7, hash, |_: &u32| None::<u32>), None);
        // A different key missing in the same way replaces the entry without admitting.
        let rival = hash ^ 1;
        assert_eq!(way_index(rival), way_index(hash));
        assert!(!admit(7, rival));
        assert_eq!(with_cached(7, hash, |n: &u32| Some(*n)), None);
    }

    #[test]
    fn re_entrant_use_is_a_miss_not_a_panic() {
        let hash = 0x1234_5678_0000_0001;
        fill(9, hash, Arc::new(1u8));
        let nested = with_cached(9, hash, |_: &u8| {
            // A check from inside a key's Eq while the way is borrowed.
            Some((admit(9, hash), with_cached(9, hash, |n: &u8| Some(*n))))
        });
        assert_eq!(nested, Some((false, Some(1))));
    }
}
