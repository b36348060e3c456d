//! Backup: walks the given paths in parallel (rayon, one task per directory entry), re-uses the
//! content of files unchanged since the parent snapshot (same size, mtime, ctime and inode)
//! without reading them, chunks and stores the rest, writes one tree blob per directory, and
//! commits the snapshot last — only after the packer reports every blob durably stored.
//!
//! A file that cannot be read, or changes or vanishes while read, is a warning: the snapshot
//! still commits (with what was read) and the caller exits 3. A repository error is fatal: no
//! snapshot is written.

use crate::error::{Error, Result};
use crate::ingest::IngestLimits;
use crate::ingest::chunker::ChunkerConfig;
use crate::ingest::content::{FileError, store_content};
use crate::ingest::packer::{CorruptHook, Packer};
use crate::ingest::patterns::Patterns;
use crate::ingest::place::{HeldDirs, Place};
use crate::ingest::progress::Progress;
use crate::ingest::sample::SampleRules;
use crate::ingest::walker::{EntryStat, OwnerNames, node_from_stat, read_xattrs, read_xattrs_of};
use crate::repo::Repository;
use crate::repo::adopt::adopt_unindexed;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind};
use crate::repo::writer::{Lease, WriterSession};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Deepest directory the walk enters: its entries are still within the [`MAX_DEPTH`] levels every
/// reader of the snapshot descends (the snapshot's root tree is one more).
const MAX_WALK_DEPTH: usize = MAX_DEPTH - 2;

/// Which snapshot an incremental backup compares against.
#[derive(Clone, Debug)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    Latest,
    /// None: read every file.
    Nothing,
    /// This one.
    Id(SnapshotId),
}

/// What to back up and how.
#[derive(Clone)]
pub struct BackupOptions {
    /// Paths to back up; each becomes one entry of the root tree, named by its last component.
    pub paths: Vec<PathBuf>,
    /// Entries to skip.
    pub excludes: Patterns,
    /// Do not descend into other file systems.
    pub one_file_system: bool,
    /// Labels for the snapshot.
    pub tags: Vec<String>,
    /// Host name recorded (and used to pick the parent).
    pub hostname: String,
    /// Parent snapshot for incremental backup.
    pub parent: ParentChoice,
    /// Read and chunk everything but store nothing.
    pub dry_run: bool,
    /// Pipeline bounds.
    pub limits: IngestLimits,
    /// The writer session's lease (DESIGN §6).
    pub lease: Lease,
}

/// What a backup produced.
pub struct BackupOutcome {
    /// The committed snapshot (none on a dry run).
    pub id: Option<SnapshotId>,
    /// Its manifest.
    pub snapshot: Snapshot,
    /// One line per file that could not be backed up completely.
    pub warnings: Vec<String>,
    /// The highest zstd level blobs were compressed at (see [`crate::ingest::CompressionMode`]).
    pub top_level: i32,
}

/// Runs a backup into `repo`. `hook` is the test hook that corrupts plaintext before sealing.
pub fn backup(
    repo: Arc<Repository>,
    opts: &BackupOptions,
    progress: &Progress,
    hook: Option<CorruptHook>,
) -> Result<BackupOutcome> {
    prepare_backup(repo, opts, progress, hook)?.commit()
}

/// A backup whose data is stored and indexed, its snapshot not yet written: the first of a
/// backup's two steps, apart so that a test can put a prune between them.
pub struct PreparedBackup {
    session: Option<WriterSession>,
    snapshot: Snapshot,
    warnings: Vec<String>,
    top_level: i32,
}

impl PreparedBackup {
    /// The snapshot [`PreparedBackup::commit`] will write.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The writer session (none on a dry run).
    pub fn session_mut(&mut self) -> Option<&mut WriterSession> {
        self.session.as_mut()
    }

    /// Writes the snapshot through the session's commit (DESIGN §6) and ends the session.
    pub fn commit(self) -> Result<BackupOutcome> {
        let id = match self.session {
            None => None,
            Some(session) => {
                let id = session.commit(&self.snapshot)?;
                session.end();
                Some(id)
            }
        };
        Ok(BackupOutcome {
            id,
            snapshot: self.snapshot,
            warnings: self.warnings,
            top_level: self.top_level,
        })
    }
}

/// Stores everything a backup needs and returns it ready to commit.
pub fn prepare_backup(
    repo: Arc<Repository>,
    opts: &BackupOptions,
    progress: &Progress,
    hook: Option<CorruptHook>,
) -> Result<PreparedBackup> {
    let start = Instant::now();
    let time = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let paths = absolute_paths(&opts.paths)?;
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    // The session is open before the index is read: a prune that condemns packs from here on
    // waits for this backup, and one that condemned them before is in `unusable_packs`.
    let session = match opts.dry_run {
        true => None,
        false => Some(WriterSession::begin(repo.clone(), "backup", opts.lease)?),
    };
    let mut index = Arc::new(repo.load_index()?);
    let unusable = match &session {
        Some(session) => {
            let unusable = session.unusable_packs(&index)?;
            // Packs a failed run stored but never indexed: indexed now, so they are not sent
            // again.
            if adopt_unindexed(&repo, &index, &unusable)?.packs > 0 {
                index = Arc::new(repo.load_index()?);
            }
            unusable
        }
        None => HashSet::new(),
    };
    let parent = find_parent(&repo, opts, &path_strings)?;
    let parent_roots = match &parent {
        Some((_, snap)) => repo.read_tree(&index, &snap.tree)?,
        None => Vec::new(),
    };
    let mut packer = Packer::new(
        repo.clone(),
        index.clone(),
        opts.limits.clone(),
        opts.dry_run,
    );
    if let Some(hook) = hook {
        packer.set_corrupt_hook(hook);
    }
    packer.avoid_packs(unusable);
    packer.sample_dictionaries_across(SampleRules {
        roots: paths.to_vec(),
        excludes: opts.excludes.clone(),
        one_file_system: opts.one_file_system,
    });
    let archiver = Archiver {
        repo: &repo,
        index: &index,
        packer,
        chunker: ChunkerConfig::new(&repo.config().params, repo.key().gear_seed()),
        opts,
        owners: OwnerNames::default(),
        progress,
        warnings: Mutex::new(Vec::new()),
        dirs: AtomicU64::new(0),
        xattr_nodes: AtomicU64::new(0),
        held_dirs: HeldDirs::default(),
    };
    let walked = archiver.walk_roots(&paths, &parent_roots);
    let Archiver {
        packer,
        warnings,
        dirs,
        xattr_nodes,
        ..
    } = archiver;
    // The packer's first error is the cause (e.g. a pack that failed verification); the walk
    // may only have seen that the job had stopped.
    let finished = packer.finish();
    let (tree, totals) = match (walked, finished) {
        (Ok(tree), Ok(totals)) => (tree, totals),
        (_, Err(cause)) | (Err(cause), Ok(_)) => return Err(cause),
    };
    let warnings = warnings.into_inner();
    let snapshot = Snapshot {
        time,
        hostname: opts.hostname.clone(),
        username: crate::repo::identity::username(),
        paths: path_strings,
        tags: opts.tags.clone(),
        parent: parent.map(|(id, _)| id),
        tree,
        program_version: concat!("cairn ", env!("CARGO_PKG_VERSION")).to_string(),
        copied_from: None,
        summary: Summary {
            files: progress.files.load(Ordering::Relaxed),
            dirs: dirs.into_inner(),
            bytes: progress.bytes.load(Ordering::Relaxed),
            files_read: progress.files_read.load(Ordering::Relaxed),
            new_blobs: totals.new_blobs,
            new_bytes: totals.new_bytes,
            stored_bytes: totals.stored_bytes,
            duration_ms: start.elapsed().as_millis() as u64,
            warnings: warnings.len() as u64,
            xattr_nodes: Some(xattr_nodes.into_inner()),
        },
    };
    Ok(PreparedBackup {
        session,
        snapshot,
        warnings,
        top_level: totals.top_level,
    })
}

fn absolute_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give at least one path".into(),
        ));
    }
    paths
        .iter()
        .map(|p| {
            let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
            fs::symlink_metadata(&abs).map_err(|e| Error::io(&abs, e))?;
            Ok(abs.components().collect())
        })
        .collect()
}

fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    match &opts.parent {
        ParentChoice::Nothing => Ok(None),
        ParentChoice::Id(id) => Ok(Some((*id, repo.snapshot(*id)?))),
        ParentChoice::Latest => {
            let mut wanted = paths.to_vec();
            wanted.sort();
            Ok(repo.snapshots()?.into_iter().rev().find(|(_, s)| {
                let mut have = s.paths.clone();
                have.sort();
                s.hostname == opts.hostname && have == wanted
            }))
        }
    }
}

struct Archiver<'a> {
    repo: &'a Repository,
    index: &'a Index,
    packer: Packer,
    chunker: ChunkerConfig,
    opts: &'a BackupOptions,
    owners: OwnerNames,
    progress: &'a Progress,
    warnings: Mutex<Vec<String>>,
    dirs: AtomicU64,
    xattr_nodes: AtomicU64,
    held_dirs: HeldDirs,
}

impl Archiver<'_> {
    /// Backs up each path as one entry of the root tree and stores that tree.
    fn walk_roots(&self, paths: &[PathBuf], parent_roots: &[Node]) -> Result<BlobId> {
        let mut roots: Vec<Node> = Vec::new();
        for path in paths {
            let place = Place::path(path);
            let stat = place.stat().map_err(|e| Error::io(path, e))?;
            let name = path
                .file_name()
                .map(OsString::from)
                .unwrap_or_else(|| OsString::from("root"));
            let parent_node = parent_roots.iter().find(|n| n.name == name.as_bytes());
            let node = self.entry_node(place, &name, stat, parent_node, stat.dev, 1)?;
            if roots.iter().any(|n| n.name == node.name) {
                return Err(Error::Invalid(format!(
                    "two paths end in the same name {name:?}"
                )));
            }
            roots.push(node);
        }
        roots.sort_by(|a, b| a.name.cmp(&b.name));
        self.packer.store_tree(roots)
    }

    fn warn(&self, path: &Path, what: impl std::fmt::Display) {
        let line = format!("{}: {what}", path.display());
        tracing::warn!("{line}");
        self.warnings.lock().push(line);
    }

    /// Builds the node for one entry, `depth` directories down from the paths given (which are
    /// at depth 1), storing its content or subtree.
    fn entry_node(
        &self,
        place: Place,
        name: &OsString,
        stat: EntryStat,
        parent: Option<&Node>,
        root_dev: u64,
        depth: usize,
    ) -> Result<Node> {
        let path = place.path;
        let mut node = node_from_stat(name, &stat, &self.owners);
        match node.kind {
            NodeKind::File => self.file_content(place, &stat, parent, &mut node)?,
            NodeKind::Dir => {
                self.dirs.fetch_add(1, Ordering::Relaxed);
                let parent_tree = parent
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree);
                // A directory on another file system is not entered: not opened when seen to be
                // on one, let go of when opening it mounted one (an automount).
                let other_fs = self.opts.one_file_system && stat.dev != root_dev;
                let too_deep = depth >= MAX_WALK_DEPTH;
                if too_deep {
                    self.warn(
                        path,
                        format!("nested deeper than {MAX_WALK_DEPTH} levels: its entries are not backed up"),
                    );
                }
                let opened = match (!other_fs && !too_deep).then(|| place.open_dir(&stat)) {
                    Some(Ok((_, dev))) if self.opts.one_file_system && dev != root_dev => None,
                    opened => opened.map(|opened| opened.map(|(dir, _)| dir)),
                };
                node.xattrs = self.xattrs_of(path, opened.as_ref().and_then(|o| o.as_ref().ok()));
                node.subtree = Some(match opened {
                    None => self.packer.store_tree(Vec::new())?,
                    Some(Ok(dir)) => self.dir_tree(dir, path, parent_tree, root_dev, depth)?,
                    Some(Err(e)) => {
                        self.warn(path, format!("cannot list directory: {e}"));
                        self.packer.store_tree(Vec::new())?
                    }
                });
            }
            NodeKind::Symlink => {
                node.xattrs = self.xattrs_of(path, None);
                match place.read_link() {
                    Ok(target) => node.target = target,
                    Err(e) => self.warn(path, format!("cannot read link: {e}")),
                }
            }
            _ => node.xattrs = self.xattrs_of(path, None),
        }
        if !node.xattrs.is_empty() {
            self.xattr_nodes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(node)
    }

    /// The extended attributes of the entry at `path`, read through `open` when the walk has it
    /// open; none, with a warning, when they cannot be read.
    fn xattrs_of(&self, path: &Path, open: Option<&File>) -> Vec<crate::repo::tree::Xattr> {
        let read = match open {
            Some(file) => read_xattrs_of(file),
            None => read_xattrs(path),
        };
        read.unwrap_or_else(|e| {
            self.warn(path, format!("cannot read extended attributes: {e}"));
            Vec::new()
        })
    }

    /// Fills a file node's content: re-used from the parent when unchanged, read otherwise.
    fn file_content(
        &self,
        place: Place,
        stat: &EntryStat,
        parent: Option<&Node>,
        node: &mut Node,
    ) -> Result<()> {
        let unchanged = parent.filter(|p| {
            p.kind == NodeKind::File
                && p.size == node.size
                && p.mtime == node.mtime
                && p.ctime == node.ctime
                && p.inode == node.inode
                && p.content.iter().all(|id| self.packer.is_known(id))
        });
        if let Some(p) = unchanged {
            // ctime unchanged means the xattrs are unchanged too: no need to list them.
            node.content = p.content.clone();
            node.xattrs = p.xattrs.clone();
            self.progress.file_reused(node.size);
            return Ok(());
        }
        let path = place.path;
        let opened = place.open_file();
        node.xattrs = self.xattrs_of(path, opened.as_ref().ok());
        let read = opened
            .map_err(FileError::Local)
            .and_then(|file| self.read_content(&file, path, stat));
        match read {
            Ok((content, read)) => {
                node.content = content;
                if read != node.size {
                    self.warn(
                        path,
                        format!(
                            "size changed while reading ({} bytes expected, {read} read)",
                            node.size
                        ),
                    );
                    node.size = read;
                }
                self.progress.file_read(read);
                Ok(())
            }
            Err(FileError::Local(e)) => {
                self.warn(path, format!("cannot read: {e}"));
                node.size = 0;
                node.content.clear();
                self.progress.file_read(0);
                Ok(())
            }
            Err(FileError::Repo(e)) => Err(e),
        }
    }

    /// Chunks and stores the content of `file` (at `path`, as `stat` saw it) in bounded
    /// batches, chunks of a batch in parallel.
    fn read_content(
        &self,
        file: &File,
        path: &Path,
        stat: &EntryStat,
    ) -> Result<(Vec<BlobId>, u64), FileError> {
        let (content, read) = store_content(
            &self.chunker,
            &self.packer,
            file,
            stat.size,
            self.opts.limits.read_batch,
        )?;
        let after = file.metadata()?;
        if EntryStat::from(&after).mtime != stat.mtime || after.size() != read {
            self.warn(path, "changed while being read; stored what was read");
        }
        Ok((content, read))
    }

    /// Stores the tree of directory `dir` (at `path`, `depth` down), visiting its entries in
    /// parallel.
    fn dir_tree(
        &self,
        dir: File,
        path: &Path,
        parent_tree: Option<BlobId>,
        root_dev: u64,
        depth: usize,
    ) -> Result<BlobId> {
        let mut names: Vec<OsString> = match crate::ingest::noatime::names_in(&dir) {
            Ok(names) => names,
            Err(e) => {
                self.warn(path, format!("cannot list directory: {e}"));
                return self.packer.store_tree(Vec::new());
            }
        };
        // Past the budget, entries are reached by path and the directory is let go of at once.
        let held = self.held_dirs.hold(dir);
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let parent_nodes = match parent_tree {
            Some(id) => self.repo.read_tree(self.index, &id).unwrap_or_else(|e| {
                self.warn(
                    path,
                    format!("parent tree unreadable, reading every file: {e}"),
                );
                Vec::new()
            }),
            None => Vec::new(),
        };
        let nodes = names
            .par_iter()
            .map(|name| {
                let child = path.join(name);
                if self.opts.excludes.matches(&child, name) {
                    return Ok(None);
                }
                let place = match &held {
                    Some(held) => Place::in_dir(&held.dir, name, &child),
                    None => Place::path(&child),
                };
                let stat = match place.stat() {
                    Ok(stat) => stat,
                    Err(e) => {
                        self.warn(&child, format!("vanished or unreadable: {e}"));
                        return Ok(None);
                    }
                };
                let parent = parent_nodes
                    .binary_search_by(|n| n.name.as_slice().cmp(name.as_bytes()))
                    .ok()
                    .map(|i| &parent_nodes[i]);
                self.entry_node(place, name, stat, parent, root_dev, depth + 1)
                    .map(Some)
            })
            .collect::<Result<Vec<Option<Node>>>>()?;
        self.packer
            .store_tree(nodes.into_iter().flatten().collect())
    }
}
