//! Restore: writes a snapshot (or a path inside it) into a local directory.
//!
//! It plans first — every node, and for every needed blob the files and offsets it goes to —
//! then reads each needed pack once (whole or in merged ranges, bounded by the read window, so
//! no cache limits the pack size), verifies every blob, and writes it at its offsets in parallel.
//! All-zero blobs are not written, leaving holes in sparse files. Metadata is applied last,
//! directories deepest first so a read-only directory is filled before it is closed.
//! A damaged blob is an error naming its pack, the blob and the files that need it; the other
//! files are still restored.

use crate::error::{Error, Result};
use crate::fetch::packs::for_each_blob;
use crate::ingest::patterns::Patterns;
use crate::ops::walk::{resolve, walk};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::index::Index;
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How to restore.
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Only paths matching (or below a match); empty means everything.
    pub include: Patterns,
    /// Paths to skip (with everything below them).
    pub exclude: Patterns,
    /// Re-read every restored file and compare it with the snapshot.
    pub verify: bool,
    /// Largest read from a pack at once; packs bigger than this are read in ranges.
    pub read_window: usize,
}

/// Default read window: a default 16 MiB pack is read whole.
pub const DEFAULT_READ_WINDOW: usize = 32 << 20;

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Other nodes (symlinks, fifos, devices, hard links).
    pub others: u64,
    /// Content bytes restored.
    pub bytes: u64,
    /// Files re-read and found equal (with `verify`).
    pub verified: u64,
    /// One line per thing that could not be restored.
    pub errors: Vec<String>,
}

/// Live counters for a progress display.
#[derive(Default)]
pub struct RestoreProgress {
    /// Bytes written so far.
    pub bytes: AtomicU64,
    /// Bytes to write in all.
    pub total: AtomicU64,
}

struct PlannedFile {
    path: PathBuf,
    node: Node,
}

/// Restores `path` of `snapshot` (empty for all of it) into `opts.target`.
pub fn restore(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    path: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreOutcome> {
    let start = resolve(repo, index, snapshot, path)?;
    fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let mut outcome = RestoreOutcome::default();
    let errors = Mutex::new(Vec::new());
    let fail = |what: String| errors.lock().push(what);

    // Plan: walk the tree once, create directories and empty files, note where each blob goes.
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut files: Vec<PlannedFile> = Vec::new();
    let mut others: Vec<(PathBuf, Node)> = Vec::new();
    let mut links: Vec<(PathBuf, usize)> = Vec::new();
    let mut first_link: HashMap<(u64, u64), usize> = HashMap::new();
    walk(
        repo,
        index,
        &start.nodes,
        Path::new(""),
        &mut |rel, node| {
            if !opts.exclude.is_empty() && opts.exclude.matches_path_or_parent(rel) {
                return Ok(());
            }
            let selected = opts.include.is_empty() || opts.include.matches_path_or_parent(rel);
            let dest = opts.target.join(rel);
            if node.kind == NodeKind::Dir {
                if selected {
                    fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
                }
                dirs.push((dest, node.clone()));
                return Ok(());
            }
            if !selected {
                return Ok(());
            }
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            if node.kind == NodeKind::File {
                if node.links > 1 {
                    if let Some(&first) = first_link.get(&(node.device, node.inode)) {
                        links.push((dest, first));
                        return Ok(());
                    }
                    first_link.insert((node.device, node.inode), files.len());
                }
                files.push(PlannedFile {
                    path: dest,
                    node: node.clone(),
                });
            } else {
                others.push((dest, node.clone()));
            }
            Ok(())
        },
    )?;

    // Map blobs to where they go. A file of one blob is created when its blob arrives; others are
    // created now at their final size (holes wherever nothing is written).
    let mut targets: HashMap<BlobId, Vec<(u32, u64)>> = HashMap::new();
    let mut by_pack: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    let mut total = 0u64;
    let unrestorable = Mutex::new(std::collections::HashSet::new());
    for (i, file) in files.iter().enumerate() {
        let mut offset = 0u64;
        for id in &file.node.content {
            let Some(at) = index.get(id) else {
                fail(format!(
                    "{}: blob {id} is not in the index",
                    file.path.display()
                ));
                unrestorable.lock().insert(i);
                break;
            };
            let uses = targets.entry(*id).or_default();
            if uses.is_empty() {
                by_pack.entry(at.pack).or_default().push(at.entry);
            }
            uses.push((i as u32, offset));
            offset += u64::from(at.entry.raw_len);
        }
        total += offset;
    }
    files
        .par_iter()
        .enumerate()
        .filter(|(_, f)| f.node.content.len() != 1)
        .for_each(|(i, file)| {
            if let Err(e) = File::create(&file.path).and_then(|f| f.set_len(file.node.size)) {
                fail(format!("{}: {e}", file.path.display()));
                unrestorable.lock().insert(i);
            }
        });
    progress.total.store(total, Ordering::Relaxed);

    // Fetch: each pack once, its blobs verified and written wherever they belong.
    let packs: Vec<(PackId, Vec<PackEntry>)> = by_pack.into_iter().collect();
    packs.par_iter().try_for_each(|(pack, wanted)| {
        let result = for_each_blob(
            repo,
            pack,
            wanted.clone(),
            opts.read_window,
            |entry, plain| {
                let uses = &targets[&entry.id];
                let data = match plain {
                    Ok(data) => data,
                    Err(e) => {
                        let users: Vec<String> = uses
                            .iter()
                            .map(|(i, _)| files[*i as usize].path.display().to_string())
                            .collect();
                        fail(format!("{e} (needed by {})", users.join(", ")));
                        unrestorable
                            .lock()
                            .extend(uses.iter().map(|(i, _)| *i as usize));
                        return Ok(());
                    }
                };
                let runs = non_zero_runs(&data);
                for &(i, offset) in uses {
                    let file = &files[i as usize];
                    if let Err(e) = write_blob(file, &data, &runs, offset) {
                        fail(format!("{}: {e}", file.path.display()));
                        unrestorable.lock().insert(i as usize);
                    }
                    progress
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            },
        );
        result.or_else(|e: Error| {
            fail(format!("pack {pack}: {e}"));
            Ok::<(), Error>(())
        })
    })?;
    let unrestorable = unrestorable.into_inner();

    // Everything else, then hard links, then metadata, directories last and deepest first.
    for (dest, node) in &others {
        if let Err(e) = create_special(dest, node) {
            fail(format!("{}: {e}", dest.display()));
        }
    }
    for (dest, first) in &links {
        let _ = fs::remove_file(dest);
        if let Err(e) = fs::hard_link(&files[*first].path, dest) {
            fail(format!("{}: {e}", dest.display()));
        }
    }
    let as_root = nix::unistd::geteuid().is_root();
    files
        .par_iter()
        .enumerate()
        .filter(|(i, _)| !unrestorable.contains(i))
        .for_each(|(_, f)| {
            if let Err(e) = apply_metadata(&f.path, &f.node, as_root) {
                fail(format!("{}: {e}", f.path.display()));
            }
        });
    for (dest, node) in others.iter().filter(|(_, n)| n.kind != NodeKind::Socket) {
        if let Err(e) = apply_metadata(dest, node, as_root) {
            fail(format!("{}: {e}", dest.display()));
        }
    }
    for (dest, node) in dirs.iter().rev() {
        if dest.exists() {
            outcome.dirs += 1;
            if let Err(e) = apply_metadata(dest, node, as_root) {
                fail(format!("{}: {e}", dest.display()));
            }
        }
    }
    if opts.verify {
        let verified = AtomicU64::new(0);
        files
            .par_iter()
            .for_each(|f| match verify_file(repo, index, f) {
                Ok(()) => {
                    verified.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => fail(format!("{}: verification failed: {e}", f.path.display())),
            });
        outcome.verified = verified.into_inner();
    }
    outcome.files = files.len() as u64;
    outcome.others = (others.len() + links.len()) as u64;
    outcome.bytes = total;
    outcome.errors = errors.into_inner();
    Ok(outcome)
}

/// Writes one blob's non-zero `runs` at `offset` of `file`. A file made of this one blob is
/// created here, in one open; larger files were created at their final size beforehand.
fn write_blob(
    file: &PlannedFile,
    data: &[u8],
    runs: &[std::ops::Range<usize>],
    offset: u64,
) -> io::Result<()> {
    let whole = file.node.content.len() == 1;
    let handle = if whole {
        File::create(&file.path)?
    } else {
        OpenOptions::new().write(true).open(&file.path)?
    };
    for run in runs {
        handle.write_all_at(&data[run.clone()], offset + run.start as u64)?;
    }
    if whole && runs.last().is_none_or(|r| r.end < data.len()) {
        handle.set_len(file.node.size)?;
    }
    Ok(())
}

/// Zero blocks smaller than this are written anyway: a hole costs a block either way.
const HOLE_BLOCK: usize = 4096;

/// The ranges of `data` to write: everything but whole zero blocks, which the file's final
/// size already reads as zeros, so runs of zeros become holes.
fn non_zero_runs(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let range = i * HOLE_BLOCK..i * HOLE_BLOCK + block.len();
        match runs.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => runs.push(range),
        }
    }
    runs
}

fn create_special(dest: &Path, node: &Node) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    let _ = fs::remove_file(dest);
    let mode = Mode::from_bits_truncate(node.mode);
    match node.kind {
        NodeKind::Symlink => std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), dest),
        NodeKind::Fifo => nix::unistd::mkfifo(dest, mode).map_err(io::Error::from),
        NodeKind::CharDevice => {
            mknod(dest, SFlag::S_IFCHR, mode, node.rdev).map_err(io::Error::from)
        }
        NodeKind::BlockDevice => {
            mknod(dest, SFlag::S_IFBLK, mode, node.rdev).map_err(io::Error::from)
        }
        // A socket belongs to the process that listened on it; there is nothing to re-create.
        NodeKind::Socket | NodeKind::File | NodeKind::Dir => Ok(()),
    }
}

/// Owner (as root), mode, xattrs and times, in that order: chown clears setuid bits, and
/// setting xattrs or mode would change ctime, not mtime.
fn apply_metadata(path: &Path, node: &Node, as_root: bool) -> io::Result<()> {
    if as_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid))?;
    }
    if node.kind != NodeKind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode))?;
    }
    for xattr in &node.xattrs {
        xattr::set(path, OsStr::from_bytes(&xattr.name), &xattr.value)?;
    }
    let time = |ns: i64| {
        filetime::FileTime::from_unix_time(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    };
    filetime::set_symlink_file_times(path, time(node.atime), time(node.mtime))
}

/// Re-reads a restored file and checks every chunk against its blob id.
fn verify_file(repo: &Repository, index: &Index, file: &PlannedFile) -> Result<()> {
    let mut reader = File::open(&file.path).map_err(|e| Error::io(&file.path, e))?;
    let mut buf = Vec::new();
    for id in &file.node.content {
        let at = index.get(id).ok_or(Error::MissingBlob(*id))?;
        buf.resize(at.entry.raw_len as usize, 0);
        reader
            .read_exact(&mut buf)
            .map_err(|e| Error::io(&file.path, e))?;
        if repo.key().blob_id(&buf) != *id {
            return Err(Error::Invalid(format!("content differs from blob {id}")));
        }
    }
    let mut extra = [0u8; 1];
    if reader
        .read(&mut extra)
        .map_err(|e| Error::io(&file.path, e))?
        != 0
    {
        return Err(Error::Invalid("file is longer than in the snapshot".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_skipped_and_neighbours_joined() {
        let mut data = vec![0u8; HOLE_BLOCK * 5 + 10];
        data[5] = 1;
        data[HOLE_BLOCK + 1] = 1;
        data[HOLE_BLOCK * 5 + 3] = 1;
        assert_eq!(
            non_zero_runs(&data),
            vec![0..HOLE_BLOCK * 2, HOLE_BLOCK * 5..HOLE_BLOCK * 5 + 10]
        );
        assert!(non_zero_runs(&[0u8; 100]).is_empty());
    }
}
