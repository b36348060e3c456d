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

mod acl;
mod entries;
mod fuse;
mod privilege;

pub use fuse::StageFs;

use crate::error::{Error, Result};
use crate::fetch::cache::BlobCache;
use crate::fs::attrs::{file_type, system_time, xattr_names, xattr_reply};
use crate::fs::stage_file::Store;
use crate::fs::stage_stream::Cutter;
use crate::fs::stage_tree::{Inode, ROOT, StageTree, TreeError, now_nanos};
use crate::ingest::IngestLimits;
use crate::ingest::chunker::ChunkerConfig;
use crate::ingest::packer::{Packer, PackerTotals};
use crate::ingest::walker::OwnerNames;
use crate::repo::Repository;
use crate::repo::ids::{PackId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{Node, NodeKind, Xattr};
use crate::repo::writer::{Lease, WriterSession};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use entries::errno_of;

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
    /// Packs uploaded at once.
    pub parallel_uploads: usize,
}

/// The stage's state, shared by the FUSE session and whoever commits.
pub struct Stage {
    repo: Arc<Repository>,
    index: Arc<Index>,
    /// The writer session a prune waits for; `None` once committed or aborted.
    session: Mutex<Option<WriterSession>>,
    tree: Mutex<StageTree>,
    /// `None` once committed or aborted.
    packer: RwLock<Option<Arc<Packer>>>,
    /// Cuts what is written sequentially, storing into the packer.
    cutter: Cutter,
    cache: BlobCache,
    chunker: ChunkerConfig,
    spool_dir: PathBuf,
    owners: OwnerNames,
    /// What the user running the stage may do.
    caller: privilege::Caller,
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
        let (session, index, unusable) = begin_stage(&repo, &root, &snapshot)?;
        let limits = IngestLimits {
            index_flush_packs: INDEX_FLUSH_PACKS,
            track_locations: true,
            sealer_threads: SEALER_THREADS,
            parallel_uploads: opts.parallel_uploads,
            ..IngestLimits::default()
        };
        let mut packer = Packer::new(repo.clone(), index.clone(), limits, false);
        packer.avoid_packs(unusable);
        let packer = Arc::new(packer);
        let chunker = ChunkerConfig::new(&repo.config().params, repo.key().gear_seed());
        let cutter = Cutter::start(packer.clone(), chunker)?;
        let cache = BlobCache::new(opts.cache_bytes);
        let tree = {
            let store = Store {
                repo: &repo,
                index: &index,
                packer: &packer,
                cache: &cache,
                chunker: &chunker,
                spool_dir: &opts.spool_dir,
                cutter: &cutter,
            };
            StageTree::new(root, &store)
        };
        Ok(Stage {
            repo,
            index,
            session: Mutex::new(Some(session)),
            tree: Mutex::new(tree),
            packer: RwLock::new(Some(packer)),
            cutter,
            cache,
            chunker,
            spool_dir: opts.spool_dir,
            owners: OwnerNames::default(),
            caller: privilege::Caller::current(),
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
            cutter: &self.cutter,
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
            cutter: &self.cutter,
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
        // Every file is cut (the walk settled each): the thread lets go of the packer.
        self.cutter.stop();
        let packer = Arc::try_unwrap(packer)
            .map_err(|_| Error::Invalid("the cutting thread still holds the packer".into()))?;
        let totals = packer.finish()?;
        let snapshot = self.snapshot_of(tree, &totals, summary);
        let session =
            self.session.lock().take().ok_or_else(|| {
                Error::Invalid("the stage was already committed or aborted".into())
            })?;
        let id = session.commit(&snapshot)?;
        session.end();
        Ok(id)
    }

    /// Discards the stage: nothing more is stored and no snapshot is written. What was stored
    /// stays indexed, so a later stage re-uses it.
    pub fn abort(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        self.cutter.stop();
        if let Some(packer) = self.packer.write().take()
            && let Ok(packer) = Arc::try_unwrap(packer)
        {
            let _ = packer.finish();
        }
        if let Some(session) = self.session.lock().take() {
            session.end();
        }
    }

    fn snapshot_of(
        &self,
        tree: crate::repo::ids::BlobId,
        totals: &PackerTotals,
        counted: Summary,
    ) -> Snapshot {
        let started = (self.started, self.clock.elapsed());
        snapshot_record(&self.snapshot, &self.owners, started, tree, totals, counted)
    }
}

/// The snapshot a stage commits: what `snapshot` says, the tree, and the counts of what was
/// stored (`totals`) and what the tree holds (`counted`). `started` is when the stage started and
/// how long ago that was.
pub(crate) fn snapshot_record(
    snapshot: &StageSnapshot,
    owners: &OwnerNames,
    started: (SystemTime, Duration),
    tree: crate::repo::ids::BlobId,
    totals: &PackerTotals,
    counted: Summary,
) -> Snapshot {
    let time = started
        .0
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Snapshot {
        time,
        hostname: snapshot.hostname.clone(),
        username: owners.user(nix::unistd::geteuid().as_raw()),
        paths: vec![snapshot.path.clone()],
        tags: snapshot.tags.clone(),
        parent: snapshot.parent,
        tree,
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        copied_from: None,
        summary: Summary {
            new_blobs: totals.new_blobs,
            new_bytes: totals.new_bytes,
            stored_bytes: totals.stored_bytes,
            duration_ms: u64::try_from(started.1.as_millis()).unwrap_or(u64::MAX),
            ..counted
        },
    }
}

/// Opens a stage's writer session (before anything is de-duplicated, so a prune waits for it),
/// loads the index and checks the parent; gives the session, the index and the packs a prune
/// condemned, which the stage must not de-duplicate against.
pub(crate) fn begin_stage(
    repo: &Arc<Repository>,
    root: &Node,
    snapshot: &StageSnapshot,
) -> Result<(WriterSession, Arc<Index>, HashSet<PackId>)> {
    let session = WriterSession::begin(repo.clone(), "stage", Lease::configured())?;
    let index = Arc::new(repo.load_index()?);
    let unusable = session.unusable_packs(&index)?;
    check_parent(repo, &index, root, snapshot, &unusable)?;
    Ok((session, index, unusable))
}

/// Refuses a parent the stage cannot build on safely once its session is open: one that was
/// forgotten meanwhile (a prune may already have deleted its data), or one holding blobs only
/// in packs a prune condemned (DESIGN §6: a writer never de-duplicates against those). Walking
/// the parent is needed only while a prune has condemned something.
fn check_parent(
    repo: &Repository,
    index: &Index,
    root: &Node,
    snapshot: &StageSnapshot,
    unusable: &HashSet<PackId>,
) -> Result<()> {
    let Some(parent) = snapshot.parent else {
        return Ok(());
    };
    if let Err(Error::NotFound(_)) = repo.backend().stat(&format!("snapshots/{parent}")) {
        return Err(Error::Invalid(format!(
            "the parent snapshot {} was forgotten while the stage started: stage again",
            parent.short()
        )));
    }
    let (Some(subtree), false) = (root.subtree, unusable.is_empty()) else {
        return Ok(());
    };
    let used = crate::repo::reach::reachable(repo, index, vec![subtree])?;
    match used.iter().find(|id| !index.contains_outside(id, unusable)) {
        Some(blob) => Err(Error::Invalid(format!(
            "the parent snapshot {} holds blob {blob} only in a pack a prune has condemned: run \
             `cairn prune` to finish that prune, or stage from a newer snapshot",
            parent.short()
        ))),
        None => Ok(()),
    }
}
