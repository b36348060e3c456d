//! The overlay stage: `rsync` into the kernel's overlayfs, at the kernel's speed.
//!
//! A FUSE stage answers every request of the copy itself — eleven round trips per file for
//! rsync — so it cannot come near `cairn backup`. Here the kernel's overlayfs is mounted on the
//! stage's directory instead, with the parent snapshot's read-only view ([`crate::fs::view`])
//! as its lower layer and upper and work directories in a private spool ([`spool`]): rsync's
//! quick check still finds every unchanged file's size and mtime, and what it writes goes to a
//! local directory with no round trip to cairn at all. A watcher chunks and stores each file as
//! the copy closes it ([`watch`]); the commit makes the mount read-only, walks only the upper
//! directory and merges it over the parent's trees ([`upper`]).
//!
//! Mounting overlayfs needs CAP_SYS_ADMIN, as does the watcher (fanotify): root has it, and a
//! user running `cairn stage DIR -- COMMAND` has it in a user namespace of their own
//! ([`namespace`]), where overlayfs keeps its attributes under `user.` and inotify watches the
//! directories instead. Other users get the FUSE stage ([`crate::fs::stage`]).

mod dir_watch;
mod mount;
pub mod namespace;
mod spool;
mod target;
mod upper;
mod watch;

use crate::error::{Error, Result};
use crate::fs::stage::{StageSnapshot, begin_stage, snapshot_record};
use crate::fs::view::{Scope, View, ViewOptions};
use crate::ingest::IngestLimits;
use crate::ingest::chunker::ChunkerConfig;
use crate::ingest::packer::Packer;
use crate::ingest::walker::OwnerNames;
use crate::repo::Repository;
use crate::repo::ids::SnapshotId;
use crate::repo::index::Index;
use crate::repo::tree::Node;
use crate::repo::writer::WriterSession;
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use namespace::Namespace;
use spool::Spool;
use target::StageDir;
use upper::UpperWalk;
use watch::{Chunking, Records, Watcher};

/// The overlay stage's bounds.
#[derive(Clone, Debug)]
pub struct OverlayOptions {
    /// The user's private directory the spool goes in (the upper directory holds every file
    /// the copy writes until the commit).
    pub spool_base: PathBuf,
    /// Bytes of memory the parent's view may use for its caches.
    pub cache_bytes: usize,
    /// Packs uploaded at once.
    pub parallel_uploads: usize,
    /// Where the mounts are made ([`namespace::enter_private`] for a user without root).
    pub namespace: Namespace,
}

/// The commit's stack: its walk recurses once per directory level.
const COMMIT_STACK: usize = 256 << 20;

/// The error of a stage already committed or aborted.
fn gone() -> Error {
    Error::Invalid("the stage was already committed or aborted".into())
}

/// Snapshot content is indexed every this many packs, so a killed stage's packs are found.
const INDEX_FLUSH_PACKS: usize = 2;

/// A mounted overlay stage, shared by whoever commits or aborts it.
pub struct OverlayStage {
    repo: Arc<Repository>,
    index: Arc<Index>,
    /// The writer session a prune waits for; `None` once committed or aborted.
    session: Mutex<Option<WriterSession>>,
    /// `None` once committed or aborted.
    packer: Mutex<Option<Arc<Packer>>>,
    watcher: Mutex<Option<Watcher>>,
    /// Our own copy of the overlay's mount ([`mount::clone_tree`]); `None` once released.
    tree: Mutex<Option<OwnedFd>>,
    records: Arc<Records>,
    chunker: ChunkerConfig,
    /// Dropped last: removing it needs the mounts gone.
    spool: Spool,
    target: PathBuf,
    /// The parent's directory the stage started from.
    root: Node,
    owners: OwnerNames,
    started: (SystemTime, Instant),
    snapshot: StageSnapshot,
    namespace: Namespace,
}

impl OverlayStage {
    /// Mounts a stage over `root` (a directory node; its subtree, if any, is the parent's
    /// content) on `target`. The returned session is the parent's view, the overlay's lower
    /// layer: it ends once [`OverlayStage::release`] unmounted both.
    pub fn mount(
        repo: Arc<Repository>,
        root: Node,
        snapshot: StageSnapshot,
        opts: OverlayOptions,
        target: &Path,
    ) -> Result<(OverlayStage, fuser::BackgroundSession)> {
        let dir = StageDir::open(target, &opts.spool_base)?;
        let (session, index, unusable) = begin_stage(&repo, &root, &snapshot)?;
        let limits = IngestLimits {
            index_flush_packs: INDEX_FLUSH_PACKS,
            sealer_threads: 1,
            parallel_uploads: opts.parallel_uploads,
            ..IngestLimits::default()
        };
        let mut packer = Packer::new(repo.clone(), index.clone(), limits, false);
        packer.avoid_packs(unusable);
        let packer = Arc::new(packer);
        let chunker = ChunkerConfig::new(&repo.config().params, repo.key().gear_seed());
        let spool = Spool::create(&opts.spool_base)?;
        dress_like(&spool.upper(), &root, opts.namespace)?;
        let view = View::new(
            repo.clone(),
            Scope::One {
                snapshot: snapshot.parent.unwrap_or_default(),
                node: Box::new(root.clone()),
            },
            ViewOptions {
                cache_bytes: opts.cache_bytes,
                ..ViewOptions::default()
            },
        )?;
        let kernel_pages = view.kernel_pages();
        let lower = fuser::spawn_mount(view, spool.lower(), &view_config())
            .map_err(|e| Error::io(spool.lower(), e))?;
        kernel_pages.connect(lower.notifier());
        let target = &dir.path;
        let mounting = |e: std::io::Error| {
            Error::Invalid(format!("mounting overlayfs on {}: {e}", target.display()))
        };
        mount::mount_overlay(
            &dir.by_descriptor(),
            [&spool.lower(), &spool.upper(), &spool.work()],
            opts.namespace,
        )
        .map_err(mounting)?;
        let tree = match mount::clone_tree(target) {
            Ok(tree) => tree,
            Err(e) => {
                let _ = mount::detach(target);
                return Err(mounting(e));
            }
        };
        let records = Arc::new(Records::default());
        let watcher = Watcher::start(
            target,
            opts.namespace,
            Chunking {
                packer: packer.clone(),
                chunker,
                read_batch: IngestLimits::default().read_batch,
                records: records.clone(),
            },
        );
        let watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                let _ = mount::detach(target);
                return Err(e);
            }
        };
        let stage = OverlayStage {
            repo,
            index,
            session: Mutex::new(Some(session)),
            packer: Mutex::new(Some(packer)),
            watcher: Mutex::new(Some(watcher)),
            tree: Mutex::new(Some(tree)),
            records,
            chunker,
            spool,
            target: target.to_path_buf(),
            root,
            owners: OwnerNames::default(),
            started: (SystemTime::now(), Instant::now()),
            snapshot,
            namespace: opts.namespace,
        };
        Ok((stage, lower))
    }

    /// Whether the overlay is still mounted on the stage's directory (the user may unmount it).
    pub fn is_mounted(&self) -> bool {
        mount::is_mounted(&self.target, &self.spool.upper())
    }

    /// Makes the stage read-only, stores what the copy changed and commits the snapshot. Refused,
    /// with the stage left as it was, while a file in it is open for writing; after any other
    /// failure the stage stays read-only and the commit may be tried again.
    pub fn commit(&self) -> Result<SnapshotId> {
        self.make_read_only()?;
        let merged = {
            let tree = self.tree.lock();
            let tree = tree.as_ref().ok_or_else(gone)?;
            PathBuf::from(format!("/proc/self/fd/{}", tree.as_raw_fd()))
        };
        if let Some(watcher) = self.watcher.lock().take() {
            watcher.stop();
        }
        // The walk recurses once per directory level (up to the trees' depth limit).
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("cairn-commit".into())
                .stack_size(COMMIT_STACK)
                .spawn_scoped(scope, || self.commit_from(&merged))
                .map_err(|e| Error::Invalid(format!("starting the commit: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("the commit panicked".into())))
        })
    }

    /// Makes the stage read-only, every mount of it (again, if it already is): refused while a
    /// file in it is open for writing.
    pub fn make_read_only(&self) -> Result<()> {
        let tree = self.tree.lock();
        let tree = tree.as_ref().ok_or_else(gone)?;
        mount::freeze(tree).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => Error::Invalid(format!(
                "a file in {} is still open for writing (commit once it is closed)",
                self.target.display()
            )),
            _ => Error::Invalid(format!("making {} read-only: {e}", self.target.display())),
        })
    }

    /// The commit proper, the stage read-only at `merged`.
    fn commit_from(&self, merged: &Path) -> Result<SnapshotId> {
        let packer = self.packer.lock().take().ok_or_else(gone)?;
        let name = Path::new(&self.snapshot.path)
            .file_name()
            .map_or_else(|| b"stage".to_vec(), |n| n.as_bytes().to_vec());
        let mut walk = UpperWalk::new(
            &self.repo,
            &self.index,
            &packer,
            &self.chunker,
            &self.records,
            &self.owners,
        );
        walk.descend_lower = self.spool.has_index_entries();
        walk.namespace = self.namespace;
        let walked = walk
            .root(&self.spool.upper(), merged, &name, &self.root)
            .and_then(|root| packer.store_tree(vec![root]));
        let summary = std::mem::take(&mut walk.summary);
        let tree = match walked {
            Ok(tree) => tree,
            Err(e) => {
                // Nothing is lost: the next attempt walks again.
                *self.packer.lock() = Some(packer);
                return Err(e);
            }
        };
        let packer = Arc::try_unwrap(packer)
            .map_err(|_| Error::Invalid("the chunking thread still holds the packer".into()))?;
        let totals = packer.finish()?;
        let started = (self.started.0, self.started.1.elapsed());
        let snapshot = snapshot_record(
            &self.snapshot,
            &self.owners,
            started,
            tree,
            &totals,
            summary,
        );
        let session = self.session.lock().take().ok_or_else(gone)?;
        let id = session.commit(&snapshot)?;
        session.end();
        Ok(id)
    }

    /// Unmounts the overlay (lazily: files still open there keep it until closed) and the
    /// parent's view below it.
    pub fn release(&self) {
        if self.is_mounted()
            && let Err(e) = mount::detach(&self.target)
        {
            tracing::warn!("unmounting {}: {e}", self.target.display());
        }
        self.tree.lock().take();
        if let Err(e) = mount::detach(&self.spool.lower()) {
            tracing::debug!("unmounting the parent's view: {e}");
        }
    }

    /// The stage's private directory (the upper directory is in it).
    pub fn spool_dir(&self) -> &Path {
        self.spool.dir()
    }

    /// Removes the spool and everything the copy wrote there, once the overlay is unmounted.
    pub fn clean_up(&self) {
        self.spool.remove();
    }

    /// Discards the stage: no snapshot is written. What was stored stays indexed, so a later
    /// stage or backup re-uses it.
    pub fn abort(&self) {
        if let Some(watcher) = self.watcher.lock().take() {
            watcher.stop();
        }
        if let Some(packer) = self.packer.lock().take()
            && let Ok(packer) = Arc::try_unwrap(packer)
        {
            let _ = packer.finish();
        }
        if let Some(session) = self.session.lock().take() {
            session.end();
        }
    }
}

/// Gives the upper directory the parent root's mode, owner, times and extended attributes: the
/// overlay's root shows the upper directory's, and the snapshot records them. A user without
/// root keeps what the user cannot set (another owner, `trusted.*`), as `cp -a` would.
fn dress_like(upper: &Path, root: &Node, namespace: Namespace) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| Error::io(upper, e);
    let unless_user = |done: std::io::Result<()>| match done {
        Err(e) if namespace == Namespace::User => {
            tracing::warn!("{}: {e}", upper.display());
            Ok(())
        }
        done => done.map_err(fail),
    };
    unless_user(std::os::unix::fs::lchown(
        upper,
        Some(root.uid),
        Some(root.gid),
    ))?;
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(root.mode & 0o7777))
        .map_err(fail)?;
    for x in &root.xattrs {
        unless_user(xattr::set(
            upper,
            std::ffi::OsStr::from_bytes(&x.name),
            &x.value,
        ))?;
    }
    let time = |nanos: i64| {
        filetime::FileTime::from_unix_time(
            nanos.div_euclid(1_000_000_000),
            u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
        )
    };
    filetime::set_symlink_file_times(upper, time(root.atime), time(root.mtime)).map_err(fail)
}

/// The parent's view as the overlay's lower layer: read-only, modes checked by the kernel.
fn view_config() -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName("cairn".into()),
        fuser::MountOption::Subtype("cairn".into()),
        fuser::MountOption::NoAtime,
        fuser::MountOption::DefaultPermissions,
    ];
    config.acl = fuser::SessionACL::Owner;
    config.n_threads = Some(2);
    config.clone_fd = true;
    config
}
