//! Restore: writes a snapshot (or a path inside it) into a local directory.
//!
//! It plans first — every node, and for every needed blob the files and offsets it goes to —
//! then reads each needed pack once (whole or in merged ranges, bounded by the read window, so
//! no cache limits the pack size), verifies every blob, and writes it at its offsets in parallel.
//! All-zero blobs are not written, leaving holes in sparse files. Metadata is applied last,
//! directories deepest first so a read-only directory is filled before it is closed.
//! A damaged blob is an error naming its pack, the blob and the files that need it; the other
//! files are still restored.
//!
//! Restore writes only inside its target and never through a link it did not create: every
//! entry is reached from the target's open descriptor ([`beneath`]), what already stands at a
//! name is replaced (or kept, by [`Overwrite`]) and never written through, and files and
//! directories stay private until their recorded mode is set.

pub mod beneath;

use crate::error::{Error, Result};
use crate::fetch::packs::for_each_blob;
use crate::ingest::patterns::Patterns;
use crate::ops::walk::{WalkBudget, resolve, walk};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::index::Index;
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use beneath::{Existing, Identity, Target};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What to do with an entry that already stands where the snapshot has one, as restic 0.17's
/// `--overwrite`. Whatever is chosen, an existing entry is replaced, never written through: a
/// link in the target stays a link to nowhere restore writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace every existing entry with the snapshot's.
    #[default]
    Always,
    /// Keep an existing regular file whose size and modification time equal the snapshot's;
    /// replace everything else.
    IfChanged,
    /// Replace an existing entry only when the snapshot's is newer (by modification time).
    IfNewer,
    /// Keep every existing entry.
    Never,
}

impl std::str::FromStr for Overwrite {
    type Err = Error;
    fn from_str(s: &str) -> Result<Overwrite> {
        match s {
            "always" => Ok(Overwrite::Always),
            "if-changed" => Ok(Overwrite::IfChanged),
            "if-newer" => Ok(Overwrite::IfNewer),
            "never" => Ok(Overwrite::Never),
            _ => Err(Error::Invalid(format!(
                "--overwrite {s:?}: expected always, if-changed, if-newer or never"
            ))),
        }
    }
}

impl Overwrite {
    /// Whether `existing` gives way to `node`. A directory where the snapshot has a directory is
    /// always kept (restore fills it); where the kinds differ, `IfChanged` replaces.
    fn replaces(self, existing: &Existing, node: &Node) -> bool {
        if node.kind == NodeKind::Dir && existing.is_dir() {
            return false;
        }
        match self {
            Overwrite::Always => true,
            Overwrite::IfChanged => {
                !(node.kind == NodeKind::File
                    && existing.is_kind(NodeKind::File)
                    && existing.size == node.size
                    && existing.mtime == node.mtime)
            }
            Overwrite::IfNewer => node.mtime > existing.mtime,
            Overwrite::Never => false,
        }
    }
}

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
    /// What to do where the target already has an entry.
    pub overwrite: Overwrite,
    /// Remove entries of restored directories that the snapshot does not have.
    pub delete: bool,
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
    /// Existing entries kept by the overwrite policy.
    pub skipped: u64,
    /// Entries removed because the snapshot does not have them (with `delete`).
    pub deleted: u64,
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

/// An entry to restore, by its path relative to the target.
struct Planned {
    rel: PathBuf,
    node: Node,
    /// The inode restore made for it (or kept, for a directory merged into): metadata and
    /// (for a file reopened for its next chunk) data go to that inode only. Unset when nothing
    /// was made: nothing is written or set then.
    identity: OnceLock<Identity>,
    /// For a file, its chunk writes still to come: the write that brings it to zero sets the
    /// file's metadata through its own descriptor, so a file gets its recorded mode only once
    /// complete, and one left incomplete stays private.
    remaining: AtomicU32,
}

impl Planned {
    fn new(rel: &Path, node: &Node) -> Planned {
        Planned {
            rel: rel.to_path_buf(),
            node: node.clone(),
            identity: OnceLock::new(),
            remaining: AtomicU32::new(node.content.len() as u32),
        }
    }

    /// Notes the inode made for this entry.
    fn made(&self, identity: Identity) {
        let _ = self.identity.set(identity);
    }
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
    let target = Target::open(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let shown = |rel: &Path| opts.target.join(rel).display().to_string();
    let errors = Mutex::new(Vec::new());
    let fail = |what: String| errors.lock().push(what);

    let start_is_dir = start.node.as_ref().is_none_or(|n| n.kind == NodeKind::Dir);
    let mut plan = Plan::new(&target, opts, start_is_dir);
    let mut budget = WalkBudget::default();
    walk(
        repo,
        index,
        start.nodes,
        Path::new(""),
        &mut budget,
        &mut |rel, node| {
            if let Err((at, e)) = plan.visit(rel, node) {
                fail(format!("{}: {e}", shown(&at)));
            }
            Ok(())
        },
    )?;
    plan.finish_deletes()
        .unwrap_or_else(|(at, e)| fail(format!("{}: {e}", shown(&at))));
    let Plan {
        dirs,
        files,
        others,
        links,
        skipped,
        deleted,
        ..
    } = plan;

    // Map blobs to where they go. A file of one blob is created when its blob arrives; others are
    // created now at their final size (holes wherever nothing is written).
    let mut targets: HashMap<BlobId, Vec<(u32, u64)>> = HashMap::new();
    let mut by_pack: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    let mut total = 0u64;
    for (i, file) in files.iter().enumerate() {
        let mut offset = 0u64;
        for id in &file.node.content {
            let Some(at) = index.get(id) else {
                fail(format!(
                    "{}: blob {id} is not in the index",
                    shown(&file.rel)
                ));
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
    let as_root = nix::unistd::geteuid().is_root();
    files
        .par_iter()
        .filter(|f| f.node.content.len() != 1)
        .for_each(|file| {
            let made = target
                .parent(&file.rel)
                .and_then(|(dir, name)| beneath::create_file(dir.as_fd(), name))
                .and_then(|f| {
                    file.made(Identity::of_file(&f)?);
                    f.set_len(file.node.size)?;
                    if file.node.content.is_empty() {
                        beneath::apply_on_descriptor(&f, &file.node, as_root)?;
                    }
                    Ok(())
                });
            if let Err(e) = made {
                fail(format!("{}: {e}", shown(&file.rel)));
            }
        });
    progress.total.store(total, Ordering::Relaxed);

    // Fetch: each pack once, its blobs verified and written wherever they belong.
    let deliver = |id: &BlobId, data: &[u8]| {
        let runs = non_zero_runs(data);
        for &(i, offset) in &targets[id] {
            let file = &files[i as usize];
            if let Err(e) = write_blob(&target, file, data, &runs, offset, as_root) {
                fail(format!("{}: {e}", shown(&file.rel)));
            }
            progress
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
    };
    // A blob its pack did not yield may be listed in another pack too (an old index file
    // replayed after `repair packs`): read from there before calling it lost.
    let deliver_or_fail = |id: &BlobId, pack: &PackId, error: &dyn std::fmt::Display| {
        let elsewhere = index
            .locations(id)
            .into_iter()
            .filter(|at| at.pack != *pack)
            .find_map(|at| repo.read_blob(&at).ok());
        match elsewhere {
            Some(data) => deliver(id, &data),
            None => {
                let uses = &targets[id];
                let users: Vec<String> = uses
                    .iter()
                    .map(|(i, _)| shown(&files[*i as usize].rel))
                    .collect();
                fail(format!("{error} (needed by {})", users.join(", ")));
            }
        }
    };
    let packs: Vec<(PackId, Vec<PackEntry>)> = by_pack.into_iter().collect();
    packs.par_iter().for_each(|(pack, wanted)| {
        let mut handled: HashSet<BlobId> = HashSet::new();
        let read = for_each_blob(
            repo,
            pack,
            wanted.clone(),
            opts.read_window,
            |entry, plain| {
                handled.insert(entry.id);
                match plain {
                    Ok(data) => deliver(&entry.id, &data),
                    Err(e) => deliver_or_fail(&entry.id, pack, &e),
                }
                Ok(())
            },
        );
        if let Err(e) = read {
            let error = format!("pack {pack}: {e}");
            for entry in wanted.iter().filter(|e| !handled.contains(&e.id)) {
                deliver_or_fail(&entry.id, pack, &error);
            }
        }
    });

    // Everything else, then hard links, then metadata, directories last and deepest first.
    let made_at =
        |rel: &Path, make: &dyn Fn(std::os::fd::BorrowedFd<'_>, &OsStr) -> io::Result<()>| {
            target
                .parent(rel)
                .and_then(|(dir, name)| make(dir.as_fd(), name))
        };
    for other in &others {
        if let Err(e) = made_at(&other.rel, &|dir, name| {
            if let Some(identity) = beneath::create_special(dir, name, &other.node)? {
                other.made(identity);
            }
            Ok(())
        }) {
            fail(format!("{}: {e}", shown(&other.rel)));
        }
    }
    for (rel, first) in &links {
        let linked = target.parent(first).and_then(|(from, from_name)| {
            made_at(rel, &|dir, name| {
                beneath::hard_link(from.as_fd(), from_name, dir, name)
            })
        });
        if let Err(e) = linked {
            fail(format!("{}: {e}", shown(rel)));
        }
    }
    let apply = |entry: &Planned| {
        // Nothing made (a failure already reported, or a directory left as it was).
        let Some(&identity) = entry.identity.get() else {
            return;
        };
        let applied = made_at(&entry.rel, &|dir, name| {
            beneath::apply_metadata(dir, name, &entry.node, identity, as_root)
        });
        if let Err(e) = applied {
            fail(format!("{}: {e}", shown(&entry.rel)));
        }
    };
    others
        .iter()
        .filter(|o| o.node.kind != NodeKind::Socket)
        .for_each(apply);
    for dir in dirs.iter().rev() {
        apply(dir);
    }
    let mut outcome = RestoreOutcome::default();
    if opts.verify {
        let verified = AtomicU64::new(0);
        files
            .par_iter()
            .for_each(|f| match verify_file(repo, index, &target, f) {
                Ok(()) => {
                    verified.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => fail(format!("{}: verification failed: {e}", shown(&f.rel))),
            });
        outcome.verified = verified.into_inner();
    }
    outcome.dirs = dirs.len() as u64;
    outcome.files = files.len() as u64;
    outcome.others = (others.len() + links.len()) as u64;
    outcome.bytes = total;
    outcome.skipped = skipped;
    outcome.deleted = deleted;
    outcome.errors = errors.into_inner();
    Ok(outcome)
}

/// A failure while planning, with the path (relative to the target) it concerns.
type PlanError = (PathBuf, io::Error);

/// The first pass: decides, entry by entry in walk order, what to create, replace, keep and
/// delete, and creates the directories (private) so later passes find them.
struct Plan<'a> {
    target: &'a Target,
    opts: &'a RestoreOptions,
    dirs: Vec<Planned>,
    files: Vec<Planned>,
    others: Vec<Planned>,
    /// Hard links: the path to make and the path of the file it links to.
    links: Vec<(PathBuf, PathBuf)>,
    /// The first path seen of each hard-linked file, by (device, inode).
    first_link: HashMap<(u64, u64), (PathBuf, [u8; 32])>,
    /// A directory kept as something else (overwrite policy): nothing below it is restored.
    blocked: Option<PathBuf>,
    /// Directories `--include` did not select, by path, with their place in `dirs`: made only
    /// as parents of what it did.
    unselected_dirs: HashMap<PathBuf, usize>,
    /// Directories this restore made (empty, and private to it until their metadata is set).
    fresh: HashSet<PathBuf>,
    /// With `delete`: the restored directories still being walked, with the names the
    /// snapshot has in each. A directory's extra entries are removed when the walk leaves it.
    open_dirs: Vec<(PathBuf, HashSet<OsString>)>,
    skipped: u64,
    deleted: u64,
}

impl<'a> Plan<'a> {
    fn new(target: &'a Target, opts: &'a RestoreOptions, start_is_dir: bool) -> Plan<'a> {
        let open_dirs = if opts.delete && start_is_dir {
            vec![(PathBuf::new(), HashSet::new())]
        } else {
            Vec::new()
        };
        Plan {
            target,
            opts,
            dirs: Vec::new(),
            files: Vec::new(),
            others: Vec::new(),
            links: Vec::new(),
            first_link: HashMap::new(),
            blocked: None,
            unselected_dirs: HashMap::new(),
            fresh: HashSet::new(),
            open_dirs,
            skipped: 0,
            deleted: 0,
        }
    }

    fn visit(&mut self, rel: &Path, node: &Node) -> std::result::Result<(), PlanError> {
        let at = |e: io::Error| (rel.to_path_buf(), e);
        self.leave_dirs_not_above(rel)?;
        if let Some((_, names)) = self.open_dirs.last_mut() {
            names.insert(OsStr::from_bytes(&node.name).to_os_string());
        }
        if self.blocked.as_ref().is_some_and(|b| rel.starts_with(b)) {
            return Ok(());
        }
        self.blocked = None;
        let opts = self.opts;
        if !opts.exclude.is_empty() && opts.exclude.matches_path_or_parent(rel) {
            return Ok(());
        }
        let selected = opts.include.is_empty() || opts.include.matches_path_or_parent(rel);
        if !selected {
            if node.kind == NodeKind::Dir {
                // Made only if something below is selected (make_parents notes it then); its
                // metadata is applied only if restore made it.
                self.unselected_dirs
                    .insert(rel.to_path_buf(), self.dirs.len());
                self.dirs.push(Planned::new(rel, node));
            }
            return Ok(());
        }
        // A directory restore made is private to it and was empty: nothing can stand in it, so
        // files and other entries need no look at the disk now, directories only their mkdir.
        let fresh_parent = self.fresh.contains(rel.parent().unwrap_or(Path::new("")));
        if fresh_parent && node.kind != NodeKind::Dir {
            self.plan_non_dir(rel, node);
            return Ok(());
        }
        let (dir, name) = self.make_parents(rel).map_err(at)?;
        let existing = if fresh_parent {
            None
        } else {
            beneath::existing(dir.as_fd(), name).map_err(at)?
        };
        let kept = match existing {
            None => None,
            Some(existing) if !opts.overwrite.replaces(&existing, node) => {
                if !(node.kind == NodeKind::Dir && existing.is_dir()) {
                    self.skipped += 1;
                    self.block(rel, node);
                    return Ok(());
                }
                Some(existing)
            }
            Some(existing) => {
                beneath::remove(dir.as_fd(), name, existing).map_err(at)?;
                None
            }
        };
        let planned = Planned::new(rel, node);
        match node.kind {
            NodeKind::Dir => {
                match kept {
                    // A directory merged into gets the snapshot's metadata, unless existing
                    // entries are to be left alone (`never`).
                    Some(existing) if opts.overwrite != Overwrite::Never => {
                        planned.made(existing.identity)
                    }
                    Some(_) => {}
                    None => {
                        planned.made(beneath::make_dir(dir.as_fd(), name).map_err(at)?);
                        self.fresh.insert(rel.to_path_buf());
                    }
                }
                if opts.delete {
                    self.open_dirs.push((rel.to_path_buf(), HashSet::new()));
                }
                self.dirs.push(planned);
            }
            _ => self.plan_non_dir(rel, node),
        }
        Ok(())
    }

    /// Notes a file (or the hard link to an earlier one), symlink, fifo or device to make.
    fn plan_non_dir(&mut self, rel: &Path, node: &Node) {
        let planned = Planned::new(rel, node);
        match node.kind {
            NodeKind::File if node.links > 1 => {
                // Linked only to a first file of the same content: a crafted tree could give
                // another file the same (device, inode), which must not make it come out with
                // the first one's bytes.
                let content = node.content_key();
                match self.first_link.get(&(node.device, node.inode)) {
                    Some((first, same)) if *same == content => {
                        self.links.push((rel.to_path_buf(), first.clone()))
                    }
                    Some(_) => self.files.push(planned),
                    None => {
                        self.first_link
                            .insert((node.device, node.inode), (rel.to_path_buf(), content));
                        self.files.push(planned);
                    }
                }
            }
            NodeKind::File => self.files.push(planned),
            _ => self.others.push(planned),
        }
    }

    /// Keeps what stands at `rel`: a directory of the snapshot kept as something else blocks
    /// everything below it.
    fn block(&mut self, rel: &Path, node: &Node) {
        if node.kind == NodeKind::Dir {
            self.blocked = Some(rel.to_path_buf());
        }
    }

    /// Opens `rel`'s parent, making any missing directory on the way (a parent not selected by
    /// `--include` is made here, private, when something below it is selected).
    fn make_parents<'p>(&mut self, rel: &'p Path) -> io::Result<(std::os::fd::OwnedFd, &'p OsStr)> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        match self.target.dir(parent) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let mut made = PathBuf::new();
                for component in parent.components() {
                    let dir = self.target.dir(&made)?;
                    let name = component.as_os_str();
                    made.push(name);
                    if beneath::existing(dir.as_fd(), name)?.is_none() {
                        let identity = beneath::make_dir(dir.as_fd(), name)?;
                        self.fresh.insert(made.clone());
                        if let Some(&at) = self.unselected_dirs.get(&made) {
                            self.dirs[at].made(identity);
                        }
                    }
                }
                self.target.parent(rel)
            }
            other => Ok((other?, rel.file_name().unwrap_or_default())),
        }
    }

    /// Closes, in the delete bookkeeping, every directory `rel` is not inside of.
    fn leave_dirs_not_above(&mut self, rel: &Path) -> std::result::Result<(), PlanError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        while self
            .open_dirs
            .last()
            .is_some_and(|(dir, _)| !parent.starts_with(dir))
        {
            self.close_dir()?;
        }
        Ok(())
    }

    /// Removes what the innermost open directory holds beyond the snapshot's names, except what
    /// the filters leave out of the restore.
    fn close_dir(&mut self) -> std::result::Result<(), PlanError> {
        let Some((dir_rel, names)) = self.open_dirs.pop() else {
            return Ok(());
        };
        let at = |e: io::Error| (dir_rel.clone(), e);
        let dir = self.target.dir(&dir_rel).map_err(at)?;
        let mut listing =
            nix::dir::Dir::from_fd(dir.try_clone().map_err(at)?).map_err(|e| at(e.into()))?;
        let mut extra = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(|e| at(e.into()))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." && !names.contains(name) {
                extra.push(name.to_os_string());
            }
        }
        for name in extra {
            let rel = dir_rel.join(&name);
            let opts = self.opts;
            if (!opts.exclude.is_empty() && opts.exclude.matches_path_or_parent(&rel))
                || !(opts.include.is_empty() || opts.include.matches_path_or_parent(&rel))
            {
                continue;
            }
            let existing = beneath::existing(dir.as_fd(), &name).map_err(|e| (rel.clone(), e))?;
            if let Some(existing) = existing {
                beneath::remove(dir.as_fd(), &name, existing).map_err(|e| (rel.clone(), e))?;
                self.deleted += 1;
            }
        }
        Ok(())
    }

    /// Closes every directory still open once the walk is done.
    fn finish_deletes(&mut self) -> std::result::Result<(), PlanError> {
        while !self.open_dirs.is_empty() {
            self.close_dir()?;
        }
        Ok(())
    }
}

/// Writes one blob's non-zero `runs` at `offset` of `file`. A file made of this one blob is
/// created here, in one open; larger files were created at their final size beforehand.
fn write_blob(
    target: &Target,
    file: &Planned,
    data: &[u8],
    runs: &[std::ops::Range<usize>],
    offset: u64,
    as_root: bool,
) -> io::Result<()> {
    let whole = file.node.content.len() == 1;
    let handle = if whole {
        let (dir, name) = target.parent(&file.rel)?;
        beneath::create_file(dir.as_fd(), name)?
    } else {
        // Reopened by name: it must still be the inode restore created (an entry swapped in
        // by another user would otherwise get the data and the recorded owner and mode).
        let reopened = target.open_file(&file.rel)?;
        let made = file
            .identity
            .get()
            .ok_or_else(|| io::Error::other("not created by this restore: left as found"))?;
        if Identity::of_file(&reopened)? != *made {
            return Err(beneath::replaced());
        }
        reopened
    };
    for run in runs {
        handle.write_all_at(&data[run.clone()], offset + run.start as u64)?;
    }
    if whole && runs.last().is_none_or(|r| r.end < data.len()) {
        handle.set_len(file.node.size)?;
    }
    // The last chunk in: the file is complete, its metadata goes on through this descriptor.
    if file.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        beneath::apply_on_descriptor(&handle, &file.node, as_root)?;
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

/// Re-reads a restored file and checks every chunk against its blob id.
fn verify_file(repo: &Repository, index: &Index, target: &Target, file: &Planned) -> Result<()> {
    let shown = || file.rel.clone();
    let mut reader: File = target
        .read_file(&file.rel)
        .map_err(|e| Error::io(shown(), e))?;
    let mut buf = Vec::new();
    for id in &file.node.content {
        let at = index.get(id).ok_or(Error::MissingBlob(*id))?;
        buf.resize(at.entry.raw_len as usize, 0);
        reader
            .read_exact(&mut buf)
            .map_err(|e| Error::io(shown(), e))?;
        if repo.key().blob_id(&buf) != *id {
            return Err(Error::Invalid(format!("content differs from blob {id}")));
        }
    }
    let mut extra = [0u8; 1];
    if reader.read(&mut extra).map_err(|e| Error::io(shown(), e))? != 0 {
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
