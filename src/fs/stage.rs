//! The writable stage: a tree that `rsync` or `cp` fills, committed as a snapshot.
//!
//! It starts as a copy-on-write view of a parent snapshot ([`stage_tree`]), so an `rsync -a`
//! of an unchanged tree finds every size and mtime equal and sends nothing. File content is
//! stored as it is written ([`stage_file`]). [`Stage::commit`] stores what is left, writes the
//! trees, waits for every pack and index segment, and only then writes the snapshot
//! (create-if-absent). If the process dies first, no snapshot exists; the packs it stored are
//! indexed every few packs, so the next stage re-uses them.
//!
//! [`stage_tree`]: crate::fs::stage_tree
//! [`stage_file`]: crate::fs::stage_file

use crate::error::{Error, Result};
use crate::fetch::cache::BlobCache;
use crate::fs::attrs::{file_type, system_time, xattr_names, xattr_reply};
use crate::fs::stage_file::Store;
use crate::fs::stage_tree::{Inode, ROOT, StageTree, TreeError, now_nanos};
use crate::ingest::IngestLimits;
use crate::ingest::chunker::ChunkerConfig;
use crate::ingest::packer::{Packer, PackerTotals};
use crate::ingest::walker::OwnerNames;
use crate::repo::Repository;
use crate::repo::ids::SnapshotId;
use crate::repo::index::Index;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{Node, NodeKind, Xattr};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every change goes through the stage, so what the kernel caches stays right.
const TTL: Duration = Duration::from_secs(60);

/// What the committed snapshot records besides its tree.
#[derive(Clone, Debug)]
pub struct StageSnapshot {
    /// Host name.
    pub hostname: String,
    /// The path the stage stands for; the snapshot's root holds it under its last component.
    pub path: String,
    /// Labels.
    pub tags: Vec<String>,
    /// The snapshot the stage started from.
    pub parent: Option<SnapshotId>,
}

/// The stage's bounds.
#[derive(Clone, Debug)]
pub struct StageOptions {
    /// Bytes of verified chunks kept for reads of existing content.
    pub cache_bytes: usize,
    /// Where spool files for out-of-order writes are made (they are unlinked at once).
    pub spool_dir: PathBuf,
}

/// The stage's state, shared by the FUSE session and whoever commits.
pub struct Stage {
    repo: Arc<Repository>,
    index: Arc<Index>,
    tree: Mutex<StageTree>,
    /// `None` once committed or aborted.
    packer: RwLock<Option<Packer>>,
    cache: BlobCache,
    chunker: ChunkerConfig,
    spool_dir: PathBuf,
    owners: OwnerNames,
    frozen: AtomicBool,
    /// Files written through opens the kernel does not report (see [`StageFs`]), oldest first.
    unreleased: Mutex<VecDeque<u64>>,
    started: SystemTime,
    clock: Instant,
    snapshot: StageSnapshot,
}

/// Snapshot content is written every this many packs, so a killed stage's packs are found.
const INDEX_FLUSH_PACKS: usize = 2;

/// Files written through unreported opens whose content may wait unstored (each holds up to
/// two maximum chunks in memory, or a spool file).
const UNRELEASED_FILES: usize = 4;

/// Compression and encryption happen off the FUSE threads, so rsync's next request is answered
/// while the last file's chunks are sealed.
const SEALER_THREADS: usize = 1;

impl Stage {
    /// A stage over `repo` starting from `root` (a directory node; its subtree, if any, is the
    /// parent's content).
    pub fn new(
        repo: Arc<Repository>,
        root: Node,
        snapshot: StageSnapshot,
        opts: StageOptions,
    ) -> Result<Stage> {
        let index = Arc::new(repo.load_index()?);
        let limits = IngestLimits {
            index_flush_packs: INDEX_FLUSH_PACKS,
            track_locations: true,
            sealer_threads: SEALER_THREADS,
            ..IngestLimits::default()
        };
        let packer = Packer::new(repo.clone(), index.clone(), limits, false);
        let chunker = ChunkerConfig::new(&repo.config().params, repo.key().gear_seed());
        let cache = BlobCache::new(opts.cache_bytes);
        let tree = {
            let store = Store {
                repo: &repo,
                index: &index,
                packer: &packer,
                cache: &cache,
                chunker: &chunker,
                spool_dir: &opts.spool_dir,
            };
            StageTree::new(root, &store)
        };
        Ok(Stage {
            repo,
            index,
            tree: Mutex::new(tree),
            packer: RwLock::new(Some(packer)),
            cache,
            chunker,
            spool_dir: opts.spool_dir,
            owners: OwnerNames::default(),
            frozen: AtomicBool::new(false),
            unreleased: Mutex::new(VecDeque::new()),
            started: SystemTime::now(),
            clock: Instant::now(),
            snapshot,
        })
    }

    /// Runs `f` with the stores, unless the stage was committed or aborted (then EROFS).
    fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> std::result::Result<T, Errno> {
        let packer = self.packer.read();
        let Some(packer) = packer.as_ref() else {
            return Err(Errno::EROFS);
        };
        let store = Store {
            repo: &self.repo,
            index: &self.index,
            packer,
            cache: &self.cache,
            chunker: &self.chunker,
            spool_dir: &self.spool_dir,
        };
        Ok(f(&store))
    }

    /// Like [`Stage::with_store`], for changes: refused once a commit has begun.
    fn changing<T>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, TreeError>,
    ) -> std::result::Result<T, Errno> {
        if self.frozen.load(Ordering::SeqCst) {
            return Err(Errno::EROFS);
        }
        self.with_store(f)?.map_err(errno_of)
    }

    /// Stores everything, writes the trees and commits the snapshot. Changes are refused from
    /// the moment this starts.
    pub fn commit(&self) -> Result<SnapshotId> {
        self.frozen.store(true, Ordering::SeqCst);
        let packer =
            self.packer.write().take().ok_or_else(|| {
                Error::Invalid("the stage was already committed or aborted".into())
            })?;
        let store = Store {
            repo: &self.repo,
            index: &self.index,
            packer: &packer,
            cache: &self.cache,
            chunker: &self.chunker,
            spool_dir: &self.spool_dir,
        };
        let name = Path::new(&self.snapshot.path)
            .file_name()
            .map_or_else(|| b"stage".to_vec(), |n| n.as_bytes().to_vec());
        let mut summary = Summary {
            xattr_nodes: Some(0),
            ..Summary::default()
        };
        let root = self
            .tree
            .lock()
            .commit_node(ROOT, &name, &store, &packer, &mut summary)?;
        let tree = packer.store_tree(vec![root])?;
        let totals = packer.finish()?;
        let snapshot = self.snapshot_of(tree, &totals, summary);
        self.repo.save_snapshot(&snapshot)
    }

    /// Discards the stage: nothing more is stored and no snapshot is written. What was stored
    /// stays indexed, so a later stage re-uses it.
    pub fn abort(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        if let Some(packer) = self.packer.write().take() {
            let _ = packer.finish();
        }
    }

    fn snapshot_of(
        &self,
        tree: crate::repo::ids::BlobId,
        totals: &PackerTotals,
        counted: Summary,
    ) -> Snapshot {
        let time = self
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Snapshot {
            time,
            hostname: self.snapshot.hostname.clone(),
            username: self.owners.user(nix::unistd::geteuid().as_raw()),
            paths: vec![self.snapshot.path.clone()],
            tags: self.snapshot.tags.clone(),
            parent: self.snapshot.parent,
            tree,
            program_version: env!("CARGO_PKG_VERSION").to_string(),
            summary: Summary {
                new_blobs: totals.new_blobs,
                new_bytes: totals.new_bytes,
                stored_bytes: totals.stored_bytes,
                duration_ms: u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                ..counted
            },
        }
    }

    fn attr(&self, ino: u64, inode: &Inode) -> FileAttr {
        let node = &inode.node;
        let size = inode.size();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: system_time(node.atime),
            mtime: system_time(node.mtime),
            ctime: system_time(node.ctime),
            crtime: system_time(node.mtime),
            kind: file_type(node.kind),
            perm: (node.mode & 0o7777) as u16,
            nlink: if node.kind == NodeKind::Dir {
                2
            } else {
                node.links.clamp(1, u64::from(u32::MAX)) as u32
            },
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev as u32,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    /// A fresh node of `kind` owned by the caller.
    fn new_node(&self, req: &Request, kind: NodeKind, mode: u32) -> Node {
        let mut node = Node::new(kind, mode, (req.uid(), req.gid()), now_nanos());
        node.user = self.owners.user(req.uid());
        node.group = self.owners.group(req.gid());
        node
    }

    /// Adds a new node and answers with its entry.
    fn make(&self, parent: INodeNo, name: &OsStr, node: Node, reply: ReplyEntry) {
        let made = self.changing(|store| {
            let mut tree = self.tree.lock();
            let ino = tree.insert(parent.0, name.as_bytes(), node, store)?;
            Ok(self.attr(ino, tree.get(ino)?))
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// Removes a name: a directory (rmdir) when `dir`, else anything else (unlink).
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        match self.changing(|store| {
            self.tree
                .lock()
                .remove(parent.0, name.as_bytes(), dir, store)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Notes a write to `ino` through an open the kernel will not report closed. No release
    /// will store its content, so the least recently written of such files beyond
    /// [`UNRELEASED_FILES`] is stored now (the commit stores the rest): memory stays bounded. A
    /// later write to a file stored this way spools it, which is correct, only slower.
    fn wrote_unopened(&self, ino: u64) {
        let evicted = {
            let mut unreleased = self.unreleased.lock();
            if unreleased.back() == Some(&ino) {
                return;
            }
            unreleased.retain(|&i| i != ino);
            unreleased.push_back(ino);
            if unreleased.len() <= UNRELEASED_FILES {
                return;
            }
            unreleased.pop_front()
        };
        let Some(oldest) = evicted else { return };
        if let Ok(body) = self.body(oldest)
            && let Ok(Err(e)) = self.with_store(|store| body.lock().settle(store))
        {
            // The content stays where it was; the commit tries again and reports it.
            tracing::error!("stage: storing a written file: {e}");
        }
    }

    /// Calls `add(ino, next offset, name, inode)` for the entries of directory `dir` from
    /// `offset` on (0 and 1 are `.` and `..`, shown as the directory itself) until it returns
    /// true (the reply is full); returns the entries other than the dots that were added.
    fn list(
        &self,
        dir: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, &OsStr, &Inode) -> bool,
    ) -> std::result::Result<Vec<u64>, Errno> {
        let mut sent = Vec::new();
        self.with_store(|store| {
            let mut tree = self.tree.lock();
            let this = tree.get(dir)?;
            if this.node.kind != NodeKind::Dir {
                return Err(TreeError::Errno(libc::ENOTDIR));
            }
            for (at, name) in [(0, "."), (1, "..")] {
                if offset <= at && add(dir, at + 1, OsStr::new(name), this) {
                    return Ok(());
                }
            }
            let skip = offset.saturating_sub(2) as usize;
            let mut at = skip as u64 + 2;
            tree.list(dir, skip, store, |name, child, inode| {
                at += 1;
                let full = add(child, at, OsStr::from_bytes(name), inode);
                if !full {
                    sent.push(child);
                }
                full
            })
        })?
        .map_err(errno_of)?;
        Ok(sent)
    }

    /// The body of file `ino`.
    fn body(
        &self,
        ino: u64,
    ) -> std::result::Result<Arc<Mutex<crate::fs::stage_file::Body>>, Errno> {
        let tree = self.tree.lock();
        let inode = tree.get(ino).map_err(errno_of)?;
        inode.body.clone().ok_or(Errno::EISDIR)
    }
}

fn errno_of(error: TreeError) -> Errno {
    match error {
        TreeError::Errno(code) => Errno::from_i32(code),
        TreeError::Repo(e) => {
            tracing::error!("stage: {e}");
            match e {
                Error::Storage { source, .. } | Error::Io { source, .. }
                    if source.raw_os_error() == Some(libc::ENOSPC) =>
                {
                    Errno::ENOSPC
                }
                _ => Errno::EIO,
            }
        }
    }
}

fn nanos_of(time: TimeOrNow) -> i64 {
    match time {
        TimeOrNow::Now => now_nanos(),
        TimeOrNow::SpecificTime(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        },
    }
}

/// The attributes of a negative entry: inode 0 means "no such name".
fn absent() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// The FUSE face of a [`Stage`].
pub struct StageFs {
    stage: Arc<Stage>,
    /// The kernel agreed to skip open and release when open answers ENOSYS (from then on it
    /// sends no release for created files either). rsync opens every file it copied a second
    /// time, to chmod it: three round trips per file saved.
    no_open: bool,
}

impl StageFs {
    /// The FUSE face of `stage`.
    pub fn new(stage: Arc<Stage>) -> StageFs {
        StageFs {
            stage,
            no_open: false,
        }
    }
}

impl Filesystem for StageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // Clearing setuid/setgid on write is ours to do; otherwise the kernel asks for
        // `security.capability` before every write.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        self.no_open = config
            .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
            .is_ok();
        // Listings carry attributes: rsync's lstat of every file it compares costs no lookup.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.stage.with_store(|store| {
            let mut tree = self.stage.tree.lock();
            let ino = tree.lookup(parent.0, name.as_bytes(), store)?;
            Ok(self.stage.attr(ino, tree.get(ino)?))
        });
        match found.and_then(|r| r.map_err(errno_of)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            // A negative entry the kernel may keep: every creation goes through it, so it
            // never goes stale. rsync and cp look up each name before creating it.
            Err(Errno::ENOENT) => reply.entry(&TTL, &absent(), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.stage.tree.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let tree = self.stage.tree.lock();
        match tree.get(ino.0) {
            Ok(inode) => reply.attr(&TTL, &self.stage.attr(ino.0, inode)),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let Some(size) = size {
            let truncated = self.stage.body(ino.0).and_then(|body| {
                self.stage
                    .changing(|store| Ok(body.lock().truncate(store, size)?))
            });
            if let Err(e) = truncated {
                return reply.error(e);
            }
        }
        let changed = self.stage.changing(|_| {
            let mut tree = self.stage.tree.lock();
            let inode = tree.get_mut(ino.0)?;
            let node = &mut inode.node;
            if let Some(mode) = mode {
                node.mode = mode & 0o7777;
            }
            if let Some(uid) = uid {
                node.uid = uid;
                node.user = self.stage.owners.user(uid);
            }
            if let Some(gid) = gid {
                node.gid = gid;
                node.group = self.stage.owners.group(gid);
            }
            if let Some(atime) = atime {
                node.atime = nanos_of(atime);
            }
            if let Some(mtime) = mtime {
                node.mtime = nanos_of(mtime);
            } else if size.is_some() {
                node.mtime = now_nanos();
            }
            node.ctime = now_nanos();
            Ok(self.stage.attr(ino.0, inode))
        });
        match changed {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let tree = self.stage.tree.lock();
        match tree.get(ino.0) {
            Ok(inode) if inode.node.kind == NodeKind::Symlink => reply.data(&inode.node.target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => return reply.error(Errno::EINVAL),
        };
        let mut node = self.stage.new_node(req, kind, mode & !umask);
        node.rdev = u64::from(rdev);
        self.stage.make(parent, name, node, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let node = self.stage.new_node(req, NodeKind::Dir, mode & !umask);
        self.stage.make(parent, name, node, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stage.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stage.remove(parent, name, true, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut node = self.stage.new_node(req, NodeKind::Symlink, 0o777);
        node.target = target.as_os_str().as_bytes().to_vec();
        node.size = node.target.len() as u64;
        self.stage.make(parent, link_name, node, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.stage.changing(|store| {
            self.stage.tree.lock().rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                no_replace,
                store,
            )
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let linked = self.stage.changing(|store| {
            let mut tree = self.stage.tree.lock();
            tree.link(ino.0, newparent.0, newname.as_bytes(), store)?;
            Ok(self.stage.attr(ino.0, tree.get(ino.0)?))
        });
        match linked {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut tree = self.stage.tree.lock();
        match tree.get_mut(ino.0) {
            // ENOSYS tells a kernel that agreed to it never to send open or release again; files
            // written without a reported open are stored by `Stage::wrote_unopened`.
            Ok(inode) if inode.body.is_some() && self.no_open => reply.error(Errno::ENOSYS),
            Ok(inode) if inode.body.is_some() => {
                inode.opens += 1;
                reply.opened(FileHandle(0), FopenFlags::empty());
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let node = self.stage.new_node(req, NodeKind::File, mode & !umask);
        let made = self.stage.changing(|store| {
            let mut tree = self.stage.tree.lock();
            let ino = tree.insert(parent.0, name.as_bytes(), node, store)?;
            let inode = tree.get_mut(ino)?;
            // Once opens are not reported, neither is the release of a created file.
            if !self.no_open {
                inode.opens += 1;
            }
            Ok(self.stage.attr(ino, inode))
        });
        match made {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
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
        let read = self.stage.body(ino.0).and_then(|body| {
            self.stage
                .with_store(|store| body.lock().read(store, offset, size as usize))
        });
        match read {
            Ok(Ok(data)) => reply.data(&data),
            Ok(Err(e)) => reply.error(errno_of(TreeError::Repo(e))),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = self.stage.body(ino.0).and_then(|body| {
            self.stage
                .changing(|store| Ok(body.lock().write(store, offset, data)?))
        });
        match written {
            Ok(()) => {
                let unopened = match self.stage.tree.lock().get_mut(ino.0) {
                    Ok(inode) => {
                        inode.node.mtime = now_nanos();
                        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                            inode.node.mode &= !0o6000;
                        }
                        inode.opens == 0
                    }
                    Err(_) => false,
                };
                if unopened {
                    self.stage.wrote_unopened(ino.0);
                }
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Content is stored on release; ENOSYS stops the kernel sending flush at all.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let last = {
            let mut tree = self.stage.tree.lock();
            match tree.get_mut(ino.0) {
                Ok(inode) => {
                    inode.opens = inode.opens.saturating_sub(1);
                    (inode.opens == 0).then(|| inode.body.clone()).flatten()
                }
                Err(_) => None,
            }
        };
        // The last handle closed: cut what is left of the content now rather than at commit (the
        // packer's sealer thread compresses and encrypts it).
        if let Some(body) = last
            && let Ok(Err(e)) = self.stage.with_store(|store| body.lock().settle(store))
        {
            tracing::error!("stage: storing a closed file: {e}");
            return reply.error(Errno::EIO);
        }
        self.stage.tree.lock().reap(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Durability comes with the commit; until then a stage is a scratch area.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.stage.list(ino.0, offset, |child, at, name, inode| {
            reply.add(INodeNo(child), at, file_type(inode.node.kind), name)
        });
        match listed {
            Ok(_) => reply.ok(),
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
        let listed = self.stage.list(ino.0, offset, |child, at, name, inode| {
            let attr = self.stage.attr(child, inode);
            reply.add(INodeNo(child), at, name, &TTL, &attr, Generation(0))
        });
        match listed {
            Ok(sent) => {
                // The kernel counts a lookup for every entry it was sent except `.` and `..`.
                let mut tree = self.stage.tree.lock();
                for child in sent {
                    tree.remember(child);
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The repository's store has the room; report plenty, so copy tools do not refuse.
        let blocks = 1u64 << 40;
        reply.statfs(blocks, blocks, blocks, 1 << 32, 1 << 32, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let set = self.stage.changing(|_| {
            let mut tree = self.stage.tree.lock();
            let node = &mut tree.get_mut(ino.0)?.node;
            let name = name.as_bytes();
            let at = node
                .xattrs
                .binary_search_by(|x| x.name.as_slice().cmp(name));
            match at {
                Ok(_) if flags & libc::XATTR_CREATE != 0 => Err(TreeError::Errno(libc::EEXIST)),
                Err(_) if flags & libc::XATTR_REPLACE != 0 => Err(TreeError::Errno(libc::ENODATA)),
                Ok(i) => {
                    node.xattrs[i].value = value.to_vec();
                    Ok(())
                }
                Err(i) => {
                    node.xattrs.insert(
                        i,
                        Xattr {
                            name: name.to_vec(),
                            value: value.to_vec(),
                        },
                    );
                    Ok(())
                }
            }
        });
        match set {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let tree = self.stage.tree.lock();
        let inode = match tree.get(ino.0) {
            Ok(inode) => inode,
            Err(e) => return reply.error(errno_of(e)),
        };
        let Some(x) = inode.node.xattrs.iter().find(|x| x.name == name.as_bytes()) else {
            return reply.error(Errno::NO_XATTR);
        };
        xattr_reply(&x.value, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let tree = self.stage.tree.lock();
        let inode = match tree.get(ino.0) {
            Ok(inode) => inode,
            Err(e) => return reply.error(errno_of(e)),
        };
        xattr_reply(&xattr_names(&inode.node.xattrs), size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self.stage.changing(|_| {
            let mut tree = self.stage.tree.lock();
            let node = &mut tree.get_mut(ino.0)?.node;
            match node.xattrs.iter().position(|x| x.name == name.as_bytes()) {
                Some(i) => {
                    node.xattrs.remove(i);
                    Ok(())
                }
                None => Err(TreeError::Errno(libc::ENODATA)),
            }
        });
        match removed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
