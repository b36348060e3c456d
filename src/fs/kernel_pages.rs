//! Verified bytes stored straight into the kernel's page cache (FUSE notify-store), so that the
//! reads which would have asked for them never leave the kernel.
//!
//! `cp -a`, `rsync` and `tar` read a directory's files one after another, one request each; on
//! these machines each round trip costs about as much as the copy itself. The view fetches a
//! directory's files ahead anyway; handing each fetched chunk to the kernel turns those reads
//! into page-cache hits. A store may wait for a page the kernel has locked for a read in flight,
//! which only a reply to that read releases: so stores run on their own thread, never on a
//! worker that may be the one to reply. What does not fit the queue is simply not stored (the
//! read then asks, as without this).
//!
//! A chunk the kernel now holds in full is the first to leave the view's cache: its reads are
//! page-cache hits, and keeping it ahead of others would only push out chunks still to be read
//! (without this a `cp -a` filled the whole cache with files already copied). It is not dropped
//! at once: the kernel may let the pages go before anyone reads them — on these machines a
//! DAMON pageout scheme reclaims page-cache pages nobody has touched within seconds — and the
//! read then finds the chunk in the cache instead of fetching it again.

use crate::fetch::cache::{BlobCache, Plain};
use crate::repo::ids::BlobId;
use crossbeam_channel::{Receiver, Sender, bounded};
use fuser::{INodeNo, Notifier};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Bytes waiting to be stored at most; the chunks are usually shared with the cache, but one
/// evicted meanwhile is held only here.
const QUEUED_BYTES: usize = 16 << 20;
/// Stores waiting at most.
const QUEUED_STORES: usize = 4096;

/// The kernel's page size: it keeps stored bytes only in whole pages.
const PAGE: u64 = 4096;

/// One chunk for the kernel: `blob`, the bytes of file `ino` at `offset`.
struct Store {
    ino: u64,
    offset: u64,
    blob: BlobId,
    data: Plain,
    /// Whether the kernel keeps every byte ([`kept_whole`]).
    whole: bool,
}

/// A handle on the storing thread; clones share it. The thread ends when every handle is gone.
#[derive(Clone)]
pub struct KernelPages {
    queue: Sender<Store>,
    queued: Arc<AtomicUsize>,
    kernel: Arc<OnceLock<Notifier>>,
}

impl KernelPages {
    /// Starts the storing thread; stores are dropped until [`KernelPages::connect`]. Chunks
    /// stored whole are the first to leave `cache`.
    pub fn start(cache: Arc<BlobCache>) -> std::io::Result<KernelPages> {
        let (queue, stores) = bounded(QUEUED_STORES);
        let pages = KernelPages {
            queue,
            queued: Arc::new(AtomicUsize::new(0)),
            kernel: Arc::new(OnceLock::new()),
        };
        let (queued, kernel) = (pages.queued.clone(), pages.kernel.clone());
        std::thread::Builder::new()
            .name("cairn-pages".into())
            .spawn(move || store_all(&stores, &queued, &kernel, &cache))?;
        Ok(pages)
    }

    /// Connects to the mounted session: from now on stores reach the kernel.
    pub fn connect(&self, notifier: Notifier) {
        let _ = self.kernel.set(notifier);
    }

    /// Offers `data`, the verified plaintext of `blob`, as the bytes of file `ino` (of
    /// `file_size` bytes) at `offset`. The kernel keeps only whole pages (and the file's last
    /// one), and only of files it has an inode for.
    pub fn offer(&self, ino: u64, offset: u64, blob: BlobId, data: Plain, file_size: u64) {
        if self.kernel.get().is_none() {
            return;
        }
        let len = data.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        let store = Store {
            ino,
            offset,
            blob,
            whole: kept_whole(offset, len as u64, file_size),
            data,
        };
        if self.queue.try_send(store).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

/// Whether the kernel keeps every byte of `len` bytes stored at `offset` of a file of
/// `file_size` bytes: they start on a page and end on one or at the end of the file (whose last
/// page the kernel keeps however short).
fn kept_whole(offset: u64, len: u64, file_size: u64) -> bool {
    let end = offset + len;
    offset.is_multiple_of(PAGE) && (end.is_multiple_of(PAGE) || end == file_size)
}

/// The storing thread's loop. A refused store is not an error worth more than a debug line:
/// the kernel may have dropped the inode or be unmounting, and the read simply asks.
fn store_all(
    stores: &Receiver<Store>,
    queued: &AtomicUsize,
    kernel: &OnceLock<Notifier>,
    cache: &BlobCache,
) {
    for store in stores {
        if let Some(notifier) = kernel.get() {
            match notifier.store(INodeNo(store.ino), store.offset, &store.data) {
                Ok(()) if store.whole => cache.let_go_first(&store.blob),
                Ok(()) => {}
                Err(e) => tracing::debug!("storing pages of inode {}: {e}", store.ino),
            }
        }
        queued.fetch_sub(store.data.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chunks_on_page_boundaries_or_ending_the_file_are_kept_whole() {
        assert!(kept_whole(0, 100, 100), "a small file");
        assert!(
            kept_whole(0, 8192, 10_000),
            "a first chunk ending on a page"
        );
        assert!(
            kept_whole(8192, 1808, 10_000),
            "a last chunk, short last page"
        );
        assert!(!kept_whole(0, 5000, 10_000), "its last page is partial");
        assert!(!kept_whole(5000, 5000, 10_000), "its first page is partial");
    }
}
