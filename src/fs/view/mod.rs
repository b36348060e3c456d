//! The read-only view: every snapshot as a directory tree.
//!
//! ```text
//! snapshots/<time>/…   one directory per snapshot
//! ids/<shortid>        -> ../snapshots/<time>
//! hosts/<host>/<time>  -> ../../snapshots/<time>
//! tags/<tag>/<time>    -> ../../snapshots/<time>
//! latest               -> snapshots/<newest>
//! history/<path>/…     one path merged across every snapshot; a file is a directory of its
//!                      distinct contents, named by the time each first appeared
//! ```
//!
//! Lookups and listings are answered on the session threads from cached trees; reads are
//! handed, with their reply, to a worker pool, so the session loop never waits on a fetch.
//! Every byte served was verified (AEAD tag and content id) by the fetch layer. A damaged
//! chunk fails only the reads that touch it, with EIO and one log line naming the file, the
//! offset, the pack and the blob. Snapshots never change, so attributes and entries get long
//! TTLs and open files keep the kernel's page cache.

mod ahead;
mod history;
mod lookup;
mod read_path;
mod trees;

use crate::error::{Error, Result};
use crate::fetch::cache::BlobCache;
use crate::fetch::reader::{Fetcher, FileReader};
use crate::fs::attrs::{file_type, system_time, xattr_names, xattr_reply};
use crate::fs::catalog::{Catalog, Contents};
use crate::fs::inodes::{
    Entry, InodeTable, ROOT, VirtualDir, child_ino, node_child_ino, virtual_ino,
};
use crate::fs::kernel_pages::KernelPages;
use crate::fs::workers::Workers;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::tree::{Node, NodeKind};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use read_path::OpenFile;
use trees::Children;

/// Snapshot content never changes: the kernel may keep what it learnt this long.
const NODE_TTL: Duration = Duration::from_secs(3600);
/// The made-up directories change as snapshots appear.
const VIRTUAL_TTL: Duration = Duration::from_secs(1);
/// Files whose read state (chunk offsets, sequential position) is kept; a file read again after
/// falling out only loses its prefetch position.
const READ_STATES: usize = 1024;

/// The view's bounds.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// Bytes of memory for caches: verified plaintext chunks, parsed trees and live inodes
    /// share it.
    pub cache_bytes: usize,
    /// Threads answering reads.
    pub read_workers: usize,
    /// Chunks fetched ahead of a sequential reader (16 measured 1.19 s against 4's 1.36 s for
    /// `cat` of a 1 GiB file, median of four fresh mounts).
    pub prefetch_chunks: usize,
}

/// The share of the cache budget parsed trees may take; live inodes and chunks share the rest.
const TREE_SHARE: usize = 4;
/// How far out of order the reads of one stream may arrive (the kernel's readahead requests
/// for `cat` of a 1 GiB file arrived up to 5 MiB apart from the previous one answered), and how
/// far behind the latest read the chunks of a stream are kept for the stragglers.
const STREAM_SLACK: u64 = 8 << 20;
/// Reads at least this large may arrive out of order and still continue a stream: the kernel's
/// readahead requests are (a stream's first is 128 KiB or more), a random reader's are not.
const STREAM_READ_MIN: u64 = 128 << 10;
/// The share of the cache chunks fetched ahead of one sequential reader may take.
const STREAM_AHEAD_SHARE: usize = 4;

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            cache_bytes: 256 << 20,
            read_workers: 4,
            prefetch_chunks: 16,
        }
    }
}

/// What the mount shows: every snapshot, or one directory of one snapshot.
pub enum Scope {
    /// The layout above.
    All,
    /// One snapshot's directory as the root.
    One {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The directory node shown as the root.
        node: Box<Node>,
    },
}

/// The read-only file system.
pub struct View {
    catalog: Arc<Catalog>,
    fetcher: Arc<Fetcher>,
    inodes: InodeTable,
    trees: Arc<trees::Trees>,
    /// Merged directories of `history/`.
    merges: Mutex<history::MergeCache>,
    read_states: Mutex<LruCache<u64, Arc<OpenFile>>>,
    /// What a walk through a snapshot reads next.
    ahead: Mutex<ahead::ReadAhead>,
    /// The kernel agreed to skip open/opendir when they answer ENOSYS.
    no_open: bool,
    /// Whether a snapshot in view may have extended attributes. When none has, getxattr and
    /// listxattr answer ENOSYS once and the kernel stops asking (`cp -a` asks three times per
    /// file); a snapshot with xattrs that appears later is reported, its xattrs unseen until
    /// the next mount.
    xattrs: bool,
    /// A later snapshot with xattrs was reported.
    xattrs_missed: AtomicBool,
    pool: Workers,
    /// The threads reading ahead ([`crate::fetch::batch`]), apart from `pool`: a read waiting
    /// for a blob a read ahead has claimed holds its worker, and must never hold the thread
    /// that would deliver it.
    ahead_pool: Workers,
    /// Where chunks fetched ahead go, so that their reads never reach the view.
    kernel_pages: KernelPages,
    opts: ViewOptions,
    owner: (u32, u32),
}

/// A snapshot's root shown as a directory named `name`.
pub fn snapshot_root(
    name: &str,
    snapshot: &crate::repo::snapshot::Snapshot,
    owner: (u32, u32),
) -> Node {
    let mut node = Node::new(NodeKind::Dir, 0o755, owner, snapshot.time);
    node.name = name.as_bytes().to_vec();
    node.subtree = Some(snapshot.tree);
    node
}

impl View {
    /// A view of `repo` showing `scope`.
    pub fn new(repo: Arc<Repository>, scope: Scope, opts: ViewOptions) -> Result<View> {
        let catalog = Arc::new(Catalog::load(repo.clone())?);
        let pool = Workers::start(opts.read_workers, "cairn-read")
            .map_err(|e| Error::Invalid(format!("starting read workers: {e}")))?;
        let ahead_pool = Workers::start(opts.read_workers, "cairn-ahead")
            .map_err(|e| Error::Invalid(format!("starting read-ahead workers: {e}")))?;
        let cache = Arc::new(BlobCache::new(opts.cache_bytes));
        let kernel_pages = KernelPages::start(cache.clone())
            .map_err(|e| Error::Invalid(format!("starting the page-cache thread: {e}")))?;
        let owner = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let xattrs = catalog
            .contents()
            .snapshots
            .iter()
            .filter(|s| match &scope {
                Scope::All => true,
                Scope::One { snapshot, .. } => s.id == *snapshot,
            })
            .any(may_have_xattrs);
        // A prune may move blobs to new packs while mounted: a read that finds its pack gone
        // reads the index again.
        let reload_from = catalog.clone();
        let fetcher = Arc::new(Fetcher {
            repo,
            cache,
            reload: Some(Arc::new(move |failed| reload_from.reload_index(failed))),
        });
        let trees = Arc::new(trees::Trees::new(
            fetcher.cache.clone(),
            opts.cache_bytes / TREE_SHARE,
        ));
        let view = View {
            catalog,
            fetcher,
            inodes: InodeTable::default(),
            trees,
            merges: Mutex::new(history::MergeCache::new()),
            read_states: Mutex::new(LruCache::new(
                NonZeroUsize::new(READ_STATES).expect("a non-zero constant"),
            )),
            ahead: Mutex::new(ahead::ReadAhead::default()),
            no_open: false,
            xattrs,
            xattrs_missed: AtomicBool::new(false),
            pool,
            ahead_pool,
            kernel_pages,
            opts,
            owner,
        };
        let root = match scope {
            Scope::All => Entry::Virtual(VirtualDir::Root),
            Scope::One { snapshot, node } => Entry::Node {
                snapshot,
                parent: ROOT,
                node: Arc::new(*node),
                path: crate::fs::node_path::NodePath::root(""),
            },
        };
        view.inodes.pin(ROOT, Arc::new(root));
        Ok(view)
    }

    /// The handle to connect to the mounted session ([`KernelPages::connect`]).
    pub fn kernel_pages(&self) -> KernelPages {
        self.kernel_pages.clone()
    }

    /// The catalog, refreshed if due; reports (once) a new snapshot whose xattrs this mount
    /// cannot show.
    fn refreshed(&self) -> Arc<Contents> {
        let contents = self.catalog.refreshed();
        if !self.xattrs
            && contents.snapshots.iter().any(may_have_xattrs)
            && !self.xattrs_missed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "a new snapshot has extended attributes; this mount does not show them (mount again)"
            );
        }
        contents
    }

    /// Records a lookup of `ino` by the kernel, charging a newly live inode to the budget; false
    /// (and a log line) when `ino` is live as another entry: the lookup must fail.
    fn remember(&self, ino: u64, entry: Entry) -> bool {
        let bytes = entry.memory_size();
        let pinned = match &entry {
            Entry::History { key, .. } => Some(*key),
            _ => None,
        };
        if let Some(key) = &pinned {
            self.pin_merge(key, true);
        }
        let entry = Arc::new(entry);
        match self.inodes.remember(ino, entry.clone()) {
            Err(held) => {
                if let Some(key) = &pinned {
                    self.pin_merge(key, false);
                }
                collision(&entry, &held);
                return false;
            }
            Ok(None) => self.fetcher.cache.charge(bytes),
            // Looked up again (most lookups): only a change of size is charged.
            Ok(Some(old)) => {
                let old_bytes = old.memory_size();
                if bytes > old_bytes {
                    self.fetcher.cache.charge(bytes - old_bytes);
                }
                self.let_go_but(&old, bytes.min(old_bytes));
            }
        }
        true
    }

    /// Whether `ino` may be sent for `entry` in a listing: not when it is live as another entry
    /// (a log line says which; the entry is left out of the listing).
    fn may_list(&self, ino: u64, entry: &Entry) -> bool {
        match self.inodes.collides(ino, entry) {
            Some(held) => {
                collision(entry, &held);
                false
            }
            None => true,
        }
    }

    /// Releases what a live inode's entry held: its charge, and its pin of a merge.
    fn let_go(&self, entry: &Entry) {
        self.let_go_but(entry, 0);
    }

    /// [`View::let_go`], keeping `kept` bytes of its charge (taken over by its replacement).
    fn let_go_but(&self, entry: &Entry, kept: usize) {
        self.fetcher.cache.discharge(entry.memory_size() - kept);
        if let Entry::History { key, .. } = entry {
            self.pin_merge(key, false);
        }
    }
}

impl Filesystem for View {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for the largest requests the kernel allows; each call may be refused, which is fine.
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // Listings carry attributes (no lookup per entry), lookups in one directory run in
        // parallel, and open/opendir/release cost no round trip: nothing here needs them.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Links never change either: without this, every path through `latest` asks for it.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        self.no_open = config
            .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT | InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.find(parent.0, name.as_bytes()) {
            Ok((ino, entry)) => {
                let attr = self.attr(ino, &entry);
                let ttl = Self::ttl(&entry);
                if self.remember(ino, entry) {
                    reply.entry(&ttl, &attr, Generation(0));
                } else {
                    reply.error(Errno::EIO);
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Some(entry) = self.inodes.forget(ino.0, nlookup) {
            self.let_go(&entry);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inodes.get(ino.0) {
            Some(entry) => reply.attr(&Self::ttl(&entry), &self.attr(ino.0, &entry)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inodes.get(ino.0).as_deref() {
            Some(Entry::Link { target, .. }) => reply.data(target.as_bytes()),
            Some(Entry::Node { node, .. }) if node.kind == NodeKind::Symlink => {
                reply.data(&node.target)
            }
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.list(ino.0, offset, |child, at, name, entry| {
            let kind = match &entry {
                Entry::Virtual(_) | Entry::History { .. } => FileType::Directory,
                Entry::Link { .. } => FileType::Symlink,
                Entry::Node { node, .. } => file_type(node.kind),
            };
            reply.add(INodeNo(child), at, kind, name)
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.list(ino.0, offset, |child, at, name, entry| {
            if at > 2 && !self.may_list(child, &entry) {
                return false;
            }
            let attr = self.attr(child, &entry);
            let full = reply.add(
                INodeNo(child),
                at,
                name,
                &Self::ttl(&entry),
                &attr,
                Generation(0),
            );
            // The kernel counts a lookup for every entry it was sent except `.` and `..`.
            if !full && at > 2 {
                self.remember(child, entry);
            }
            full
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open {
            reply.error(Errno::ENOSYS);
        } else {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.read_state(ino.0) {
            // ENOSYS tells a kernel that agreed to it never to send open (or release) again.
            Ok(_) if self.no_open => reply.error(Errno::ENOSYS),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.serve_read(ino.0, offset, size, reply);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to flush in a read-only view; ENOSYS stops the kernel sending it.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let contents = self.catalog.contents();
        let bytes: u64 = contents
            .snapshots
            .iter()
            .map(|s| s.snapshot.summary.bytes)
            .sum();
        let files: u64 = contents
            .snapshots
            .iter()
            .map(|s| s.snapshot.summary.files)
            .sum();
        reply.statfs(bytes.div_ceil(4096), 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let Some(entry) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let Entry::Node { node, .. } = &*entry else {
            return reply.error(Errno::NO_XATTR);
        };
        match node.xattrs.iter().find(|x| x.name == name.as_bytes()) {
            None => reply.error(Errno::NO_XATTR),
            Some(x) => xattr_reply(&x.value, size, reply),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let Some(entry) = self.inodes.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let names = match &*entry {
            Entry::Node { node, .. } => xattr_names(&node.xattrs),
            _ => Vec::new(),
        };
        xattr_reply(&names, size, reply);
    }
}

/// Whether a listed snapshot may have extended attributes: it counted some, or was written
/// before they were counted.
fn may_have_xattrs(listed: &crate::fs::catalog::Listed) -> bool {
    listed.snapshot.summary.xattr_nodes != Some(0)
}

/// Logs two entries whose numbers met: the one asked for is not shown.
fn collision(wanted: &Entry, held: &Entry) {
    tracing::warn!(
        "{} is not shown: its inode number is that of {} (a repository built to make them meet?)",
        entry_name(wanted),
        entry_name(held)
    );
}

/// An entry's path for a log line.
fn entry_name(entry: &Entry) -> String {
    match entry {
        Entry::Node { path, .. } | Entry::History { path, .. } => path.to_string(),
        Entry::Virtual(dir) => format!("{dir:?}"),
        Entry::Link { target, .. } => format!("the link to {target}"),
    }
}
