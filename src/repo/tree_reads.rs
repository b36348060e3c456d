//! Reading trees the way a walk needs them: restore, check, copy, find, diff, dump and backup's
//! look at its parent each read a snapshot's directories one after another. On a store tens of
//! milliseconds away, one request per directory is what such a walk waits for. So a tree not
//! yet read brings the trees stored around it in its pack with it (one request for a window of
//! [`WINDOW`] bytes): they are the directories written just before and after it, which a walk
//! reaches next. The opened trees are kept, verified, in a byte-bounded LRU.

use crate::backend::Backend;
use crate::repo::blob::{FindDictionary, open_blob};
use crate::repo::crypto::MasterKey;
use crate::repo::ids::BlobId;
use crate::repo::index::{BlobLocation, Index};
use crate::repo::pack::pack_name;
use lru::LruCache;
use parking_lot::Mutex;
use std::sync::Arc;

/// Bytes of a pack read around a tree that is not at hand.
pub const WINDOW: u32 = 1 << 20;
/// Bytes of opened trees kept.
pub const KEPT: usize = 32 << 20;
/// The most trees one read around a tree asks for.
const MAX_NEAR: usize = 4096;

struct Kept {
    trees: LruCache<BlobId, Arc<Vec<u8>>>,
    bytes: usize,
}

/// Opened tree blobs, kept for the walks of one repository handle.
pub struct TreeReads {
    kept: Mutex<Kept>,
}

impl Default for TreeReads {
    fn default() -> TreeReads {
        TreeReads {
            kept: Mutex::new(Kept {
                trees: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }
}

impl TreeReads {
    /// The plaintext of tree `at`, if kept.
    pub fn kept(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.kept.lock().trees.get(id).cloned()
    }

    /// Reads the trees stored around `at` in one request, keeps those that open, and returns
    /// `at`'s — or `None` when it did not open, for the caller's own read to report.
    pub fn read_around(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
        dictionaries: &dyn FindDictionary,
        index: &Index,
        at: &BlobLocation,
    ) -> Option<Arc<Vec<u8>>> {
        // Neighbours whole inside the window only, and not too many: one an index written by a
        // liar says is 256 MiB long, or thousands laid over each other, would make every read
        // near them fetch that much.
        let window_end = u64::from(at.entry.offset) + u64::from(WINDOW / 2);
        let near: Vec<_> = index
            .trees_near(at, WINDOW)
            .into_iter()
            .filter(|e| {
                e.id == at.entry.id
                    || (u64::from(e.offset) + u64::from(e.sealed_len) <= window_end
                        && !self.kept.lock().trees.contains(&e.id))
            })
            .take(MAX_NEAR)
            .collect();
        if !near.iter().any(|e| e.id == at.entry.id) {
            return None;
        }
        let ranges: Vec<_> = near
            .iter()
            .map(|e| u64::from(e.offset)..u64::from(e.offset) + u64::from(e.sealed_len))
            .collect();
        let got = backend.get_ranges(&pack_name(&at.pack), &ranges).ok()?;
        let mut wanted = None;
        for (i, entry) in near.iter().enumerate() {
            let Some(plain) = got
                .range(i)
                .and_then(|sealed| open_blob(key, dictionaries, &entry.meta(), sealed).ok())
            else {
                continue;
            };
            let plain = Arc::new(plain);
            if entry.id == at.entry.id {
                wanted = Some(plain.clone());
            }
            self.keep(entry.id, plain);
        }
        wanted
    }

    fn keep(&self, id: BlobId, plain: Arc<Vec<u8>>) {
        let mut kept = self.kept.lock();
        kept.bytes += plain.len();
        if let Some(old) = kept.trees.put(id, plain) {
            kept.bytes -= old.len();
        }
        while kept.bytes > KEPT {
            match kept.trees.pop_lru() {
                Some((_, gone)) => kept.bytes -= gone.len(),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_bytes() {
        let reads = TreeReads::default();
        for i in 0..40u8 {
            reads.keep(BlobId([i; 32]), Arc::new(vec![i; 1 << 20]));
        }
        assert!(reads.kept.lock().bytes <= KEPT);
        assert!(reads.kept(&BlobId([39; 32])).is_some());
        assert!(reads.kept(&BlobId([0; 32])).is_none());
    }
}
