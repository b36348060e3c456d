//! Reading ahead the way restore reads: the blobs a reader will want next, grouped by pack and
//! read as merged byte ranges, so a directory of small files costs a request or two rather than
//! one per file. On a store tens of milliseconds away the round trips, not the bytes, are what a
//! mount's reader waits for.
//!
//! Each blob is claimed in the shared cache before its read starts: a reader that wants it
//! meanwhile waits for that read instead of making its own request, and fetches it itself only
//! if the read ahead fails (so a damaged blob is still reported by the read that needs it, with
//! its file's name).

use crate::fetch::cache::{BlobCache, Plain};
use crate::fetch::packs::for_each_blob;
use crate::fetch::reader::Fetcher;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::index::Index;
use crate::repo::pack::PackEntry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The most one read ahead asks for at once: large enough that a request carries many small
/// files, small enough that several are in flight and the first blobs arrive early.
pub const PIECE: u64 = 4 << 20;

/// One request's worth of blobs of one pack, claimed in the cache.
pub struct BatchRead {
    pack: PackId,
    entries: Vec<PackEntry>,
    claims: Claims,
}

/// Plans reads of those of `ids` that are neither cached nor on their way: grouped by pack (in
/// the order the packs are first wanted), each group cut into reads spanning at most [`PIECE`].
/// A blob the index does not know is left to the reader that wants it.
pub fn plan_reads(cache: &Arc<BlobCache>, index: &Index, ids: &[BlobId]) -> Vec<BatchRead> {
    let mut order: Vec<PackId> = Vec::new();
    let mut by_pack: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for id in ids {
        let Some(at) = index.get(id) else { continue };
        if !cache.claim(*id) {
            continue;
        }
        by_pack
            .entry(at.pack)
            .or_insert_with(|| {
                order.push(at.pack);
                Vec::new()
            })
            .push(at.entry);
    }
    let mut reads = Vec::new();
    for pack in order {
        let mut entries = by_pack.remove(&pack).unwrap_or_default();
        entries.sort_by_key(|e| e.offset);
        let mut piece: Vec<PackEntry> = Vec::new();
        for entry in entries {
            let span_end = u64::from(entry.offset) + u64::from(entry.sealed_len);
            if let Some(first) = piece.first()
                && span_end - u64::from(first.offset) > PIECE
            {
                reads.push(BatchRead::new(cache, pack, std::mem::take(&mut piece)));
            }
            piece.push(entry);
        }
        if !piece.is_empty() {
            reads.push(BatchRead::new(cache, pack, piece));
        }
    }
    reads
}

impl BatchRead {
    fn new(cache: &Arc<BlobCache>, pack: PackId, entries: Vec<PackEntry>) -> BatchRead {
        let claims = Claims {
            cache: cache.clone(),
            pending: entries.iter().map(|e| e.id).collect(),
        };
        BatchRead {
            pack,
            entries,
            claims,
        }
    }

    /// Plaintext bytes this read delivers.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.raw_len)).sum()
    }

    /// Reads the blobs, verifies each, caches it and hands it to `on_blob`. Whatever fails is
    /// abandoned to the readers that want it.
    pub fn run(mut self, fetcher: &Fetcher, mut on_blob: impl FnMut(&BlobId, &Plain)) {
        // Entries are in offset order; one written by a liar may reach past those after it.
        let Some(first) = self.entries.first() else {
            return;
        };
        let end = self
            .entries
            .iter()
            .map(|e| u64::from(e.offset) + u64::from(e.sealed_len));
        let span = end.max().unwrap_or_default() - u64::from(first.offset);
        // The sealed bytes in flight; each blob, once opened, is the cache's.
        let cache = fetcher.cache.clone();
        let _room = cache.reserve(span as usize);
        let entries = std::mem::take(&mut self.entries);
        let read = for_each_blob(
            &fetcher.repo,
            &self.pack,
            entries,
            span as usize,
            |entry, plain| {
                self.claims.pending.remove(&entry.id);
                match plain {
                    Ok(plain) => {
                        let plain = Arc::new(plain);
                        cache.fulfil(entry.id, plain.clone());
                        on_blob(&entry.id, &plain);
                    }
                    // At once, not when the whole read ends: its reader fetches it and names
                    // the damage.
                    Err(_) => cache.abandon(entry.id),
                }
                Ok(())
            },
        );
        if let Err(e) = read {
            tracing::debug!("reading ahead in pack {}: {e}", self.pack);
        }
    }
}

/// Claims not yet fulfilled; abandoned when the read ends, however it ends.
struct Claims {
    cache: Arc<BlobCache>,
    pending: HashSet<BlobId>,
}

impl Drop for Claims {
    fn drop(&mut self) {
        for id in self.pending.drain() {
            self.cache.abandon(id);
        }
    }
}
