//! A byte-bounded LRU of verified plaintext blobs, shared by every reader, with concurrent
//! requests for the same blob merged into one fetch. The cache is an accelerator, never a
//! capacity: a blob larger than the whole cache is fetched, returned and simply not kept.

use crate::error::{Error, Result};
use crate::repo::ids::BlobId;
use lru::LruCache;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::Arc;

/// Verified plaintext, shared without copying.
pub type Plain = Arc<Vec<u8>>;

/// A fetch in progress that later requests for the same blob wait on.
#[derive(Default)]
struct InFlight {
    result: Mutex<Option<std::result::Result<Plain, String>>>,
    ready: Condvar,
}

struct Lru {
    entries: LruCache<BlobId, Plain>,
    bytes: usize,
}

/// The shared blob cache.
pub struct BlobCache {
    capacity: usize,
    lru: Mutex<Lru>,
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
            }),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lru.lock().bytes
    }

    /// Whether `id` is cached (without touching its recency).
    pub fn contains(&self, id: &BlobId) -> bool {
        self.lru.lock().entries.contains(id)
    }

    /// The blob if it is cached, without fetching.
    pub fn get(&self, id: &BlobId) -> Option<Plain> {
        self.lru.lock().entries.get(id).cloned()
    }

    /// The blob from the cache, or from `fetch` — run once however many threads ask at once.
    pub fn get_or_fetch(
        &self,
        id: BlobId,
        fetch: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Plain> {
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
        if !leader {
            let mut result = slot.result.lock();
            while result.is_none() {
                slot.ready.wait(&mut result);
            }
            return result.clone().expect("set above").map_err(Error::Invalid);
        }
        let fetched = fetch().map(Arc::new);
        if let Ok(plain) = &fetched {
            self.insert(id, plain.clone());
        }
        *slot.result.lock() = Some(fetched.as_ref().map(Arc::clone).map_err(|e| e.to_string()));
        slot.ready.notify_all();
        self.in_flight.lock().remove(&id);
        fetched
    }

    fn insert(&self, id: BlobId, plain: Plain) {
        if plain.len() > self.capacity {
            return;
        }
        let mut lru = self.lru.lock();
        lru.bytes += plain.len();
        if let Some(old) = lru.entries.put(id, plain) {
            lru.bytes -= old.len();
        }
        while lru.bytes > self.capacity {
            match lru.entries.pop_lru() {
                Some((_, evicted)) => lru.bytes -= evicted.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn evicts_by_bytes_and_passes_oversized_blobs_through() {
        let cache = BlobCache::new(100);
        for i in 0..5u8 {
            cache
                .get_or_fetch(BlobId([i; 32]), || Ok(vec![i; 40]))
                .unwrap();
        }
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
}
