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

use crate::fetch::cache::Plain;
use crossbeam_channel::{Receiver, Sender, bounded};
use fuser::{INodeNo, Notifier};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Bytes waiting to be stored at most; the chunks are usually shared with the cache, but one
/// evicted meanwhile is held only here.
const QUEUED_BYTES: usize = 16 << 20;
/// Stores waiting at most.
const QUEUED_STORES: usize = 4096;

/// One chunk for the kernel: file `ino`, at `offset`.
struct Store {
    ino: u64,
    offset: u64,
    data: Plain,
}

/// A handle on the storing thread; clones share it. The thread ends when every handle is gone.
#[derive(Clone)]
pub struct KernelPages {
    queue: Sender<Store>,
    queued: Arc<AtomicUsize>,
    kernel: Arc<OnceLock<Notifier>>,
}

impl KernelPages {
    /// Starts the storing thread; stores are dropped until [`KernelPages::connect`].
    pub fn start() -> std::io::Result<KernelPages> {
        let (queue, stores) = bounded(QUEUED_STORES);
        let pages = KernelPages {
            queue,
            queued: Arc::new(AtomicUsize::new(0)),
            kernel: Arc::new(OnceLock::new()),
        };
        let (queued, kernel) = (pages.queued.clone(), pages.kernel.clone());
        std::thread::Builder::new()
            .name("cairn-pages".into())
            .spawn(move || store_all(&stores, &queued, &kernel))?;
        Ok(pages)
    }

    /// Connects to the mounted session: from now on stores reach the kernel.
    pub fn connect(&self, notifier: Notifier) {
        let _ = self.kernel.set(notifier);
    }

    /// Offers `data`, verified, as the bytes of file `ino` at `offset`. The kernel keeps only
    /// whole pages (and the file's last one), and only of files it has an inode for.
    pub fn offer(&self, ino: u64, offset: u64, data: Plain) {
        if self.kernel.get().is_none() {
            return;
        }
        let len = data.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        if self.queue.try_send(Store { ino, offset, data }).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }
}

/// The storing thread's loop. A refused store is not an error worth more than a debug line:
/// the kernel may have dropped the inode or be unmounting, and the read simply asks.
fn store_all(stores: &Receiver<Store>, queued: &AtomicUsize, kernel: &OnceLock<Notifier>) {
    for store in stores {
        if let Some(notifier) = kernel.get()
            && let Err(e) = notifier.store(INodeNo(store.ino), store.offset, &store.data)
        {
            tracing::debug!("storing pages of inode {}: {e}", store.ino);
        }
        queued.fetch_sub(store.data.len(), Ordering::Relaxed);
    }
}
