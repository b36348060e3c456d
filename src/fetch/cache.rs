//! A byte-bounded LRU of verified plaintext blobs, shared by every reader, with concurrent
//! requests for the same blob merged into one fetch. The cache is an accelerator, never a
//! capacity: a blob larger than the whole cache is fetched, returned and simply not kept.
//!
//! The bound is one memory budget: other caches of the same process (the view's parsed trees
//! and inode table) [`BlobCache::charge`] what they hold against it, and chunks make room.
//! Memory freed by evictions is handed back to the system every [`RETURN_AFTER`] bytes, so the
//! process's resident size follows the budget rather than the allocator's high-water mark.

use crate::error::{Error, Result};
use crate::repo::ids::BlobId;
use lru::LruCache;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes evicted between two looks at whether freed memory should go back to the system.
const RETURN_AFTER: usize = 4 << 20;

/// Resident bytes beyond the budget that are tolerated before freed memory is handed back
/// (what the process needs besides its caches is a few MiB; the rest is the allocator's, and
/// the mount lets it keep 16 MiB per heap). With a 256 MiB cache, 48 MiB let `cp -a` of
/// linux/ peak at 330 MiB and 32 MiB at 304–308; 24 MiB (300) made random reads slower, each
/// eviction then handing memory back only to fault it in again (median 1.9 -> 2.2 ms).
const RESIDENT_SLACK: usize = 32 << 20;

/// Verified plaintext, shared without copying.
pub type Plain = Arc<Vec<u8>>;

/// How a fetch in progress ended.
#[derive(Clone)]
enum Outcome {
    Fetched(std::result::Result<Plain, String>),
    /// A read ahead that claimed the blob did not deliver it: whoever waits fetches it.
    Abandoned,
}

/// A fetch in progress that later requests for the same blob wait on.
#[derive(Default)]
struct InFlight {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
}

impl InFlight {
    fn end(&self, outcome: Outcome) {
        *self.outcome.lock() = Some(outcome);
        self.ready.notify_all();
    }
}

struct Lru {
    entries: LruCache<BlobId, Plain>,
    bytes: usize,
    /// Bytes evicted since freed memory was last handed back.
    evicted: usize,
}

/// The shared blob cache.
pub struct BlobCache {
    capacity: usize,
    lru: Mutex<Lru>,
    /// Bytes other caches hold against the same budget.
    charged: AtomicUsize,
    in_flight: Mutex<HashMap<BlobId, Arc<InFlight>>>,
}

impl BlobCache {
    /// A cache holding at most `capacity` bytes of plaintext.
    pub fn new(capacity: usize) -> BlobCache {
        BlobCache {
            capacity,
            lru: Mutex::new(Lru {
                entries: LruCache::unbounded(),
                bytes: 0,
                evicted: 0,
            }),
            charged: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes of chunks held now.
    pub fn bytes(&self) -> usize {
        self.lru.lock().bytes
    }

    /// The whole budget.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counts `bytes` another cache now holds against the budget; chunks make room.
    pub fn charge(&self, bytes: usize) {
        self.charged.fetch_add(bytes, Ordering::Relaxed);
        let trim = self.make_room(&mut self.lru.lock());
        if trim {
            self.return_freed_memory();
        }
    }

    /// Counts `bytes` about to be allocated (a fetch in flight) against the budget until the
    /// returned guard is dropped, so chunks make room before the memory is taken rather than
    /// after: four workers fetching 8 MiB chunks at once would otherwise overshoot by 32 MiB.
    pub fn reserve(&self, bytes: usize) -> Reservation<'_> {
        self.charge(bytes);
        Reservation { cache: self, bytes }
    }

    /// Another cache released `bytes` it had charged.
    pub fn discharge(&self, bytes: usize) {
        self.charged.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether `id` is cached (without touching its recency).
    pub fn contains(&self, id: &BlobId) -> bool {
        self.lru.lock().entries.contains(id)
    }

    /// Whether `id` is cached or being fetched: a read of it will not wait for a new request.
    pub fn has_or_coming(&self, id: &BlobId) -> bool {
        self.contains(id) || self.in_flight.lock().contains_key(id)
    }

    /// Drops `id` from the cache. For chunks a sequential reader has passed: the kernel keeps
    /// what it read in its own page cache, and keeping the chunks here as well would push out
    /// everything else (a stream longer than the cache would empty it).
    pub fn forget(&self, id: &BlobId) {
        let mut lru = self.lru.lock();
        if let Some(passed) = lru.entries.pop(id) {
            lru.bytes -= passed.len();
        }
    }

    /// Makes `id` the first to go when room is needed, without dropping it: for chunks the
    /// kernel now holds in its page cache. Those reads never reach the cache, so the chunk should
    /// not push out chunks still to be read; but the kernel may let the pages go before the read
    /// comes (memory pressure, or a proactive reclaimer such as DAMON, which pages out what
    /// nobody has touched yet), and a read that comes before the cache needs the room finds the
    /// chunk here instead of fetching it again.
    pub fn let_go_first(&self, id: &BlobId) {
        self.lru.lock().entries.demote(id);
    }

    /// The blob if it is cached, without fetching.
    pub fn get(&self, id: &BlobId) -> Option<Plain> {
        self.lru.lock().entries.get(id).cloned()
    }

    /// The blob from the cache, or from `fetch` — run once however many threads ask at once.
    /// A blob a read ahead has claimed is waited for, and fetched here if it is abandoned.
    pub fn get_or_fetch(
        &self,
        id: BlobId,
        fetch: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Plain> {
        loop {
            if let Some(hit) = self.lru.lock().entries.get(&id) {
                return Ok(hit.clone());
            }
            let (slot, leader) = {
                let mut in_flight = self.in_flight.lock();
                match in_flight.get(&id) {
                    Some(slot) => (slot.clone(), false),
                    None => {
                        let slot = Arc::new(InFlight::default());
                        in_flight.insert(id, slot.clone());
                        (slot, true)
                    }
                }
            };
            if leader {
                // Should `fetch` unwind, the guard abandons the flight: its waiters fetch for
                // themselves rather than wait for an end that never comes.
                let lead = Leading { cache: self, id };
                let fetched = fetch().map(Arc::new);
                std::mem::forget(lead);
                match &fetched {
                    Ok(plain) => self.fulfil(id, plain.clone()),
                    Err(e) => self.end_flight(id, Outcome::Fetched(Err(e.to_string()))),
                }
                return fetched;
            }
            let mut outcome = slot.outcome.lock();
            while outcome.is_none() {
                slot.ready.wait(&mut outcome);
            }
            match outcome.clone().expect("set above") {
                Outcome::Fetched(result) => return result.map_err(Error::Invalid),
                Outcome::Abandoned => continue,
            }
        }
    }

    /// Marks `id` as being fetched by a read ahead, unless it is cached or on its way already
    /// (then false). Readers of a claimed blob wait for it rather than fetch it a second time;
    /// the claimant must end the claim with [`BlobCache::fulfil`] or [`BlobCache::abandon`].
    pub fn claim(&self, id: BlobId) -> bool {
        if self.lru.lock().entries.contains(&id) {
            return false;
        }
        let mut in_flight = self.in_flight.lock();
        if in_flight.contains_key(&id) {
            return false;
        }
        in_flight.insert(id, Arc::new(InFlight::default()));
        true
    }

    /// Delivers the verified plaintext of a claimed (or led) fetch of `id`: cached, and handed
    /// to whoever waits.
    pub fn fulfil(&self, id: BlobId, plain: Plain) {
        self.insert(id, plain.clone());
        self.end_flight(id, Outcome::Fetched(Ok(plain)));
    }

    /// Gives up a claim on `id`: a reader waiting for it fetches it itself (and reports what
    /// fails).
    pub fn abandon(&self, id: BlobId) {
        self.end_flight(id, Outcome::Abandoned);
    }

    fn end_flight(&self, id: BlobId, outcome: Outcome) {
        if let Some(slot) = self.in_flight.lock().remove(&id) {
            slot.end(outcome);
        }
    }

    fn insert(&self, id: BlobId, plain: Plain) {
        if plain.len() > self.capacity {
            return;
        }
        let trim = {
            let mut lru = self.lru.lock();
            lru.bytes += plain.len();
            if let Some(old) = lru.entries.put(id, plain) {
                lru.bytes -= old.len();
            }
            self.make_room(&mut lru)
        };
        if trim {
            self.return_freed_memory();
        }
    }

    /// Evicts the least recently used chunks until chunks and charges fit the budget; true when
    /// enough was evicted that freed memory should be handed back (outside the lock).
    fn make_room(&self, lru: &mut Lru) -> bool {
        let charged = self.charged.load(Ordering::Relaxed);
        while lru.bytes + charged > self.capacity {
            match lru.entries.pop_lru() {
                Some((_, evicted)) => {
                    lru.bytes -= evicted.len();
                    lru.evicted += evicted.len();
                }
                None => break,
            }
        }
        if lru.evicted >= RETURN_AFTER {
            lru.evicted = 0;
            return true;
        }
        false
    }

    /// Hands memory the allocator holds free back to the system when the process is resident
    /// well beyond the budget. Chunks of every size come and go; glibc keeps freed space inside
    /// its heaps (between live blocks, out of reach of its top-only trimming), so without this
    /// the resident size drifts towards twice the cache. Not done below the slack: trimmed
    /// pages cost a fault each when reused, measurable on a streaming read.
    fn return_freed_memory(&self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if resident_bytes().is_some_and(|rss| rss > self.capacity + RESIDENT_SLACK) {
            // SAFETY: malloc_trim only releases free pages of the allocator's own heaps.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Bytes counted against the budget while a fetch is in flight ([`BlobCache::reserve`]).
pub struct Reservation<'a> {
    cache: &'a BlobCache,
    bytes: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.cache.discharge(self.bytes);
    }
}

/// The process's resident size, from /proc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(pages * page)
}

/// The flight a [`BlobCache::get_or_fetch`] leads, abandoned if its fetch unwinds.
struct Leading<'a> {
    cache: &'a BlobCache,
    id: BlobId,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.cache.abandon(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A cache of `capacity` bytes after fetching `count` chunks of `len` bytes, oldest first
    /// (chunk `i` is `len` bytes of `i`, id `[i; 32]`).
    fn after_fetching(capacity: usize, count: u8, len: usize) -> BlobCache {
        let cache = BlobCache::new(capacity);
        for i in 0..count {
            cache
                .get_or_fetch(BlobId([i; 32]), || Ok(vec![i; len]))
                .unwrap();
        }
        cache
    }

    #[test]
    fn evicts_by_bytes_and_passes_oversized_blobs_through() {
        let cache = after_fetching(100, 5, 40);
        assert!(cache.bytes() <= 100);
        assert!(cache.contains(&BlobId([4; 32])));
        assert!(!cache.contains(&BlobId([0; 32])));
        let big = cache
            .get_or_fetch(BlobId([9; 32]), || Ok(vec![1; 500]))
            .unwrap();
        assert_eq!(
            big.len(),
            500,
            "a blob larger than the cache is still served"
        );
        assert!(!cache.contains(&BlobId([9; 32])));
    }

    #[test]
    fn charges_of_other_caches_make_chunks_leave() {
        let cache = after_fetching(100, 2, 40);
        cache.charge(30);
        assert_eq!(cache.bytes(), 40, "the older chunk made room");
        assert!(cache.contains(&BlobId([1; 32])));
        cache.charge(100);
        assert_eq!(cache.bytes(), 0);
        // Still serving, just not keeping.
        assert_eq!(
            *cache
                .get_or_fetch(BlobId([3; 32]), || Ok(vec![3; 10]))
                .unwrap(),
            vec![3; 10]
        );
        assert!(!cache.contains(&BlobId([3; 32])));
        cache.discharge(130);
        cache
            .get_or_fetch(BlobId([3; 32]), || Ok(vec![3; 10]))
            .unwrap();
        assert!(cache.contains(&BlobId([3; 32])));
    }

    #[test]
    fn a_fetch_in_flight_makes_room_before_its_bytes_arrive() {
        let cache = after_fetching(100, 2, 40);
        let fetched = cache
            .get_or_fetch(BlobId([2; 32]), || {
                let _room = cache.reserve(60);
                assert_eq!(cache.bytes(), 40, "the older chunk left before the fetch");
                Ok(vec![2; 60])
            })
            .unwrap();
        assert_eq!(fetched.len(), 60);
        assert_eq!(cache.bytes(), 100, "the reservation ended with the fetch");
        assert!(cache.contains(&BlobId([1; 32])));
        assert!(cache.contains(&BlobId([2; 32])));
    }

    #[test]
    fn forgotten_blobs_free_their_bytes() {
        let cache = after_fetching(100, 2, 30);
        cache.forget(&BlobId([0; 32]));
        cache.forget(&BlobId([7; 32]));
        assert_eq!(cache.bytes(), 30);
        assert!(!cache.contains(&BlobId([0; 32])));
        assert!(cache.contains(&BlobId([1; 32])));
    }

    #[test]
    fn a_blob_let_go_first_is_served_until_room_is_needed_and_leaves_before_older_ones() {
        let cache = after_fetching(100, 2, 40);
        cache.let_go_first(&BlobId([1; 32]));
        assert!(
            cache.contains(&BlobId([1; 32])),
            "still there to serve a read"
        );
        cache
            .get_or_fetch(BlobId([2; 32]), || Ok(vec![2; 40]))
            .unwrap();
        assert!(!cache.contains(&BlobId([1; 32])), "the newest, but let go");
        assert!(cache.contains(&BlobId([0; 32])), "older, kept");
        assert!(cache.contains(&BlobId([2; 32])));
    }

    #[test]
    fn concurrent_requests_for_one_blob_fetch_once() {
        let cache = Arc::new(BlobCache::new(1 << 20));
        let fetches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, fetches) = (cache.clone(), fetches.clone());
                std::thread::spawn(move || {
                    cache
                        .get_or_fetch(BlobId([1; 32]), || {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(vec![7; 10])
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(*t.join().unwrap(), vec![7; 10]);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_claimed_blob_is_waited_for_and_fetched_by_the_reader_if_abandoned() {
        let cache = Arc::new(BlobCache::new(1 << 20));
        assert!(cache.claim(BlobId([1; 32])));
        assert!(!cache.claim(BlobId([1; 32])), "claimed once");
        let waiting = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache
                    .get_or_fetch(BlobId([1; 32]), || panic!("delivered by the claim"))
                    .unwrap()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.fulfil(BlobId([1; 32]), Arc::new(vec![5; 3]));
        assert_eq!(*waiting.join().unwrap(), vec![5; 3]);
        assert!(!cache.claim(BlobId([1; 32])), "cached now");

        assert!(cache.claim(BlobId([2; 32])));
        let waiting = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache
                    .get_or_fetch(BlobId([2; 32]), || Ok(vec![6; 2]))
                    .unwrap()
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.abandon(BlobId([2; 32]));
        assert_eq!(*waiting.join().unwrap(), vec![6; 2]);
    }

    #[test]
    fn failures_are_not_cached() {
        let cache = BlobCache::new(100);
        assert!(
            cache
                .get_or_fetch(BlobId([1; 32]), || Err(Error::Invalid("bad".into())))
                .is_err()
        );
        assert_eq!(
            *cache.get_or_fetch(BlobId([1; 32]), || Ok(vec![1])).unwrap(),
            vec![1]
        );
    }

    /// A fetch that unwinds ends its flight: a reader waiting on it fetches for itself instead
    /// of waiting for ever.
    #[test]
    fn a_fetch_that_unwinds_leaves_no_flight_behind() {
        let cache = Arc::new(BlobCache::new(1 << 20));
        let id = BlobId([3; 32]);
        let (started, go) = (
            Arc::new(std::sync::Barrier::new(2)),
            Arc::new(std::sync::Barrier::new(2)),
        );
        let leader = {
            let (cache, started, go) = (cache.clone(), started.clone(), go.clone());
            std::thread::spawn(move || {
                cache.get_or_fetch(id, || {
                    started.wait();
                    go.wait();
                    panic!("a fetch that unwinds")
                })
            })
        };
        started.wait();
        let waiter = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.get_or_fetch(id, || Ok(vec![7; 4])))
        };
        // Not a timing asserted: time for the waiter to find the flight and wait on it, so the
        // unwinding is what it must outlive (without the guard it waits for ever).
        std::thread::sleep(std::time::Duration::from_millis(100));
        go.wait();
        assert!(leader.join().is_err());
        assert_eq!(*waiter.join().unwrap().unwrap(), vec![7; 4]);
    }
}
