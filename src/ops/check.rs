//! `check`: proves the repository whole, or says exactly what is not.
//!
//! Without `--read-data` it checks structure: every index entry lies inside a stored pack of the
//! right size, every pack header agrees with the index, every blob every snapshot references is
//! indexed, and which packs no index lists (reported apart: an interrupted job leaves them and
//! they harm nothing). With it, the selected packs are read once each —
//! streamed in bounded pieces, several at a time — their SHA-256 checked against their names and
//! every blob opened and re-hashed. A pack that fails is read a second time before it is
//! reported, to tell a transient read fault from damage at rest. Each damaged or missing blob is
//! reported with every snapshot and path that uses it.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::blob::open_blob;
use crate::repo::crypto::fill_random;
use crate::repo::ids::{BlobId, PackId, SnapshotId};
use crate::repo::index::{Index, Segment};
use crate::repo::pack::{PackEntry, TRAILER_LEN, header_len_from_trailer, pack_name, parse_header};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::NodeKind;
use parking_lot::Mutex;
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// Which packs `--read-data` reads.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSubset {
    /// Every pack.
    All,
    /// Part `n` (1-based) of `of`: run every part once, on different days, to read everything.
    Part { n: u32, of: u32 },
    /// A random share, in percent.
    Percent(f64),
    /// Random packs adding up to about this many bytes.
    Bytes(u64),
}

impl DataSubset {
    /// Parses `N/M`, `P%` or a size such as `500MiB`.
    pub fn parse(
        text: &str,
        parse_size: impl Fn(&str) -> std::result::Result<u64, String>,
    ) -> std::result::Result<DataSubset, String> {
        if let Some((n, of)) = text.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| format!("bad part {text:?}"))?;
            let of: u32 = of
                .trim()
                .parse()
                .map_err(|_| format!("bad part {text:?}"))?;
            if n == 0 || n > of {
                return Err(format!("part {text:?} must be N/M with 1 <= N <= M"));
            }
            return Ok(DataSubset::Part { n, of });
        }
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent
                .trim()
                .parse()
                .map_err(|_| format!("bad percentage {text:?}"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("percentage {text:?} must be in (0, 100]"));
            }
            return Ok(DataSubset::Percent(p));
        }
        parse_size(text).map(DataSubset::Bytes)
    }
}

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Read pack contents too, of these packs.
    pub read_data: Option<DataSubset>,
    /// Bytes of one pack held at once while reading it.
    pub window: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            read_data: None,
            window: 16 << 20,
        }
    }
}

/// One place where a blob is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Use {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// The file (or directory, for a tree blob) inside it.
    pub path: String,
}

/// One thing wrong with the repository.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// An index file that does not open.
    DamagedIndex { file: String, reason: String },
    /// A snapshot file that does not open.
    DamagedSnapshot { file: String, reason: String },
    /// The index lists blobs in a pack the store does not have.
    MissingPack { pack: PackId, blobs: usize },
    /// A pack shorter than the index says it must be.
    ShortPack {
        pack: PackId,
        size: u64,
        needed: u64,
    },
    /// A pack whose header is unreadable or lists other blobs than the index.
    HeaderMismatch { pack: PackId, reason: String },
    /// A blob a snapshot references that no index lists.
    MissingBlob { blob: BlobId, uses: Vec<Use> },
    /// A pack whose bytes do not hash to its name, or that cannot be read.
    DamagedPack { pack: PackId, reason: String },
    /// A blob that does not open or whose content does not match its id.
    DamagedBlob {
        pack: PackId,
        blob: BlobId,
        reason: String,
        uses: Vec<Use>,
    },
}

impl Problem {
    /// The blob this problem makes unreadable, if it is about one.
    pub fn blob(&self) -> Option<BlobId> {
        match self {
            Problem::MissingBlob { blob, .. } | Problem::DamagedBlob { blob, .. } => Some(*blob),
            _ => None,
        }
    }

    fn uses_mut(&mut self) -> Option<&mut Vec<Use>> {
        match self {
            Problem::MissingBlob { uses, .. } | Problem::DamagedBlob { uses, .. } => Some(uses),
            _ => None,
        }
    }
}

fn describe_uses(uses: &[Use]) -> String {
    if uses.is_empty() {
        return "used by no snapshot".into();
    }
    let listed: Vec<String> = uses
        .iter()
        .map(|u| format!("{}:{}", u.snapshot.short(), u.path))
        .collect();
    format!("used by {}", listed.join(", "))
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DamagedIndex { file, reason } => write!(f, "index file {file}: {reason}"),
            Problem::DamagedSnapshot { file, reason } => {
                write!(f, "snapshot file {file}: {reason}")
            }
            Problem::MissingPack { pack, blobs } => {
                write!(f, "pack {pack} is missing ({blobs} indexed blobs)")
            }
            Problem::ShortPack { pack, size, needed } => write!(
                f,
                "pack {pack} has {size} bytes but its index entries need {needed}"
            ),
            Problem::HeaderMismatch { pack, reason } => write!(f, "pack {pack} header: {reason}"),
            Problem::MissingBlob { blob, uses } => {
                write!(f, "blob {blob} is in no index; {}", describe_uses(uses))
            }
            Problem::DamagedPack { pack, reason } => write!(f, "pack {pack}: {reason}"),
            Problem::DamagedBlob {
                pack,
                blob,
                reason,
                uses,
            } => write!(
                f,
                "blob {blob} in pack {pack} is damaged ({reason}); {}",
                describe_uses(uses)
            ),
        }
    }
}

/// What `check` found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots read.
    pub snapshots: usize,
    /// Distinct trees walked.
    pub trees: usize,
    /// Packs stored.
    pub packs: usize,
    /// Blobs indexed.
    pub blobs: usize,
    /// Packs whose contents were read.
    pub packs_read: usize,
    /// Bytes read for that.
    pub bytes_read: u64,
    /// Index entries listed more than once (harmless; `repair index` removes them).
    pub duplicate_entries: usize,
    /// Stored packs no index lists, with their sizes: left by a job that stopped between storing
    /// a pack and indexing it. Harmless — no snapshot can reference a blob only they hold — and
    /// `repair index` makes their blobs reusable.
    pub unindexed_packs: Vec<(PackId, u64)>,
    /// Packs that failed a first read and passed a second: a read fault, not damage at rest.
    pub transient_faults: Vec<String>,
    /// Everything wrong, in the order found.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The repository's index and stored packs side by side, as check and repair compare them.
pub struct Inventory {
    /// Index files that opened, by name.
    pub segments: Vec<(String, Segment)>,
    /// Index files that did not open.
    pub damaged_index_files: Vec<(String, String)>,
    /// The index built from the segments that opened.
    pub index: Index,
    /// Each indexed pack's entries (deduplicated, by offset).
    pub by_pack: HashMap<PackId, Vec<PackEntry>>,
    /// Every stored pack and its size.
    pub stored: HashMap<PackId, u64>,
}

impl Inventory {
    /// Reads every index file and lists every pack.
    pub fn load(repo: &Repository) -> Result<Inventory> {
        let mut segments = Vec::new();
        let mut damaged_index_files = Vec::new();
        for (name, opened) in repo.index_files()? {
            match opened {
                Ok(segment) => segments.push((name, segment)),
                Err(e) => damaged_index_files.push((name, e.to_string())),
            }
        }
        let mut by_pack: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        for (_, segment) in &segments {
            for sp in &segment.packs {
                by_pack
                    .entry(sp.pack)
                    .or_default()
                    .extend(sp.blobs.iter().copied());
            }
        }
        for entries in by_pack.values_mut() {
            entries.sort_by_key(|e| (e.offset, e.id));
            entries.dedup();
        }
        let index = Index::from_segments(segments.iter().map(|(_, s)| s.clone()).collect());
        let stored = stored_packs(repo)?;
        Ok(Inventory {
            segments,
            damaged_index_files,
            index,
            by_pack,
            stored,
        })
    }
}

/// Every pack in the store, by id, with its size.
pub fn stored_packs(repo: &Repository) -> Result<HashMap<PackId, u64>> {
    let mut stored = HashMap::new();
    for info in repo.backend().list("data/")? {
        let id = info.name.rsplit('/').next().unwrap_or_default();
        match PackId::from_hex(id) {
            Ok(pack) => {
                stored.insert(pack, info.size);
            }
            Err(_) => tracing::warn!("{}: not a pack name; ignored", info.name),
        }
    }
    Ok(stored)
}

/// Reads a pack's header from its tail: the entries it lists.
pub fn read_pack_header(repo: &Repository, pack: &PackId, size: u64) -> Result<Vec<PackEntry>> {
    let name = pack_name(pack);
    let trailer_len = TRAILER_LEN as u64;
    if size < trailer_len {
        return Err(Error::corrupt(&name, "shorter than a pack trailer"));
    }
    let trailer = repo.backend().get(&name, Some(size - trailer_len..size))?;
    let header_len = u64::from(header_len_from_trailer(pack, &trailer)?);
    let header_end = size - trailer_len;
    let header_start = header_end
        .checked_sub(header_len)
        .ok_or_else(|| Error::corrupt(&name, "header longer than the pack"))?;
    let sealed = repo.backend().get(&name, Some(header_start..header_end))?;
    parse_header(repo.key(), pack, &sealed, header_start)
}

/// Checks the repository as `opts` asks; `progress` is called with bytes of pack data read.
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CheckReport> {
    check_inventory(repo, &Inventory::load(repo)?, opts, progress)
}

/// [`check`] against an inventory the caller already loaded (repair goes on to use it).
pub fn check_inventory(
    repo: &Repository,
    inventory: &Inventory,
    opts: &CheckOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<CheckReport> {
    let mut report = CheckReport {
        packs: inventory.stored.len(),
        blobs: inventory.index.len(),
        duplicate_entries: inventory.index.duplicates(),
        ..CheckReport::default()
    };
    for (file, reason) in &inventory.damaged_index_files {
        report.problems.push(Problem::DamagedIndex {
            file: file.clone(),
            reason: reason.clone(),
        });
    }
    check_packs(repo, inventory, &mut report);
    let snapshots = load_snapshots(repo, &mut report)?;
    report.snapshots = snapshots.len();
    // The tree walk is one thread's work: let the pack reading run beside it.
    let mut read = CheckReport::default();
    rayon::join(
        || check_snapshots(repo, &inventory.index, &snapshots, &mut report),
        || {
            if let Some(subset) = &opts.read_data {
                let selected = select_packs(&inventory.stored, subset);
                read_packs(repo, inventory, &selected, opts.window, progress, &mut read);
            }
        },
    );
    report.packs_read = read.packs_read;
    report.bytes_read = read.bytes_read;
    report.transient_faults = read.transient_faults;
    report.problems.extend(read.problems);
    attach_uses(repo, &inventory.index, &snapshots, &mut report);
    Ok(report)
}

/// Every snapshot that opens; those that do not become problems.
fn load_snapshots(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut snapshots = Vec::new();
    for (file, opened) in repo.snapshot_files()? {
        match opened {
            Ok(snap) => snapshots.push(snap),
            Err(e) => report.problems.push(Problem::DamagedSnapshot {
                file,
                reason: e.to_string(),
            }),
        }
    }
    snapshots.sort_by_key(|(id, s)| (s.time, *id));
    Ok(snapshots)
}

/// Index against store: missing, short and unindexed packs, and headers that disagree.
fn check_packs(repo: &Repository, inventory: &Inventory, report: &mut CheckReport) {
    let mut packs: Vec<&PackId> = inventory.by_pack.keys().collect();
    packs.sort();
    let found: Vec<Problem> = packs
        .par_iter()
        .filter_map(|pack| {
            let entries = &inventory.by_pack[*pack];
            let Some(&size) = inventory.stored.get(*pack) else {
                return Some(Problem::MissingPack {
                    pack: **pack,
                    blobs: entries.len(),
                });
            };
            let needed = entries
                .iter()
                .map(|e| u64::from(e.offset) + u64::from(e.sealed_len))
                .max()
                .unwrap_or(0)
                + TRAILER_LEN as u64;
            if size < needed {
                return Some(Problem::ShortPack {
                    pack: **pack,
                    size,
                    needed,
                });
            }
            match read_pack_header(repo, pack, size) {
                Err(e) => Some(Problem::HeaderMismatch {
                    pack: **pack,
                    reason: e.to_string(),
                }),
                Ok(mut header) => {
                    header.sort_by_key(|e| (e.offset, e.id));
                    (header != *entries).then(|| Problem::HeaderMismatch {
                        pack: **pack,
                        reason: format!(
                            "lists {} blobs, the index {} (or they differ)",
                            header.len(),
                            entries.len()
                        ),
                    })
                }
            }
        })
        .collect();
    report.problems.extend(found);
    let mut unindexed: Vec<(&PackId, &u64)> = inventory
        .stored
        .iter()
        .filter(|(pack, _)| !inventory.by_pack.contains_key(*pack))
        .collect();
    unindexed.sort();
    report.unindexed_packs = unindexed.into_iter().map(|(p, s)| (*p, *s)).collect();
}

/// Walks every distinct tree of every snapshot: each tree and data blob must be indexed and each
/// tree must read.
fn check_snapshots(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
) {
    let mut visited: HashSet<BlobId> = HashSet::new();
    let mut pending: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    let mut missing: HashSet<BlobId> = HashSet::new();
    while let Some(tree) = pending.pop() {
        if !visited.insert(tree) {
            continue;
        }
        if !index.contains(&tree) {
            missing.insert(tree);
            continue;
        }
        match repo.read_tree(index, &tree) {
            Ok(nodes) => {
                for node in nodes {
                    if let Some(sub) = node.subtree {
                        pending.push(sub);
                    }
                    for id in &node.content {
                        if !index.contains(id) {
                            missing.insert(*id);
                        }
                    }
                }
            }
            Err(Error::MissingBlob(piece)) => {
                missing.insert(piece);
            }
            Err(e) => {
                let (pack, blob) = match &e {
                    Error::BadBlob { pack, blob, .. } => (*pack, *blob),
                    _ => (index.get(&tree).map(|at| at.pack).unwrap_or_default(), tree),
                };
                report.problems.push(Problem::DamagedBlob {
                    pack,
                    blob,
                    reason: e.to_string(),
                    uses: Vec::new(),
                });
            }
        }
    }
    report.trees = visited.len();
    let mut missing: Vec<BlobId> = missing.into_iter().collect();
    missing.sort();
    for blob in missing {
        report.problems.push(Problem::MissingBlob {
            blob,
            uses: Vec::new(),
        });
    }
}

/// The packs a subset names, in id order.
fn select_packs(stored: &HashMap<PackId, u64>, subset: &DataSubset) -> Vec<(PackId, u64)> {
    let mut all: Vec<(PackId, u64)> = stored.iter().map(|(p, s)| (*p, *s)).collect();
    all.sort();
    let shuffled = |mut packs: Vec<(PackId, u64)>| {
        let mut keys = vec![0u8; packs.len() * 8];
        fill_random(&mut keys);
        let mut keyed: Vec<(u64, (PackId, u64))> = packs
            .drain(..)
            .zip(keys.chunks_exact(8))
            .map(|(p, k)| (u64::from_le_bytes(k.try_into().expect("8 bytes")), p))
            .collect();
        keyed.sort();
        keyed.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    let mut chosen = match subset {
        DataSubset::All => all,
        DataSubset::Part { n, of } => all
            .into_iter()
            .filter(|(pack, _)| {
                let bucket = u32::from_be_bytes(pack.0[..4].try_into().expect("4 bytes"));
                bucket % of == n - 1
            })
            .collect(),
        DataSubset::Percent(p) => {
            let count = ((all.len() as f64) * p / 100.0).ceil() as usize;
            shuffled(all).into_iter().take(count).collect()
        }
        DataSubset::Bytes(limit) => {
            let mut total = 0u64;
            shuffled(all)
                .into_iter()
                .take_while(|(_, size)| {
                    let take = total < *limit;
                    total += size;
                    take
                })
                .collect()
        }
    };
    chosen.sort();
    chosen
}

/// What one read of a pack found.
#[derive(Debug, Default)]
pub struct PackReading {
    /// Blobs that did not open, with the reason.
    pub damaged: Vec<(PackEntry, String)>,
    /// Why the pack as a whole failed (hash, read error), if it did.
    pub failure: Option<String>,
}

impl PackReading {
    /// Whether everything read back right.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.failure.is_none()
    }
}

thread_local! {
    /// The piece buffer of this thread, re-used from piece to piece (at most a window).
    static PIECE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads a pack once, start to end, in pieces of at most `window` bytes (or one blob, if larger),
/// hashing every byte and opening every one of `entries` on the way.
pub fn read_pack(
    repo: &Repository,
    pack: &PackId,
    size: u64,
    entries: &[PackEntry],
    window: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> PackReading {
    let name = pack_name(pack);
    let window = window.max(1) as u64;
    let mut entries = entries.to_vec();
    entries.sort_by_key(|e| e.offset);
    let mut reading = PackReading::default();
    let end_of = |e: &PackEntry| u64::from(e.offset) + u64::from(e.sealed_len);
    let (inside, outside): (Vec<PackEntry>, Vec<PackEntry>) =
        entries.into_iter().partition(|e| end_of(e) <= size);
    for entry in outside {
        reading
            .damaged
            .push((entry, "lies beyond the end of the pack".into()));
    }
    // Pieces end where blobs end, so no blob is split between two reads.
    let mut cuts: Vec<u64> = inside.iter().map(end_of).collect();
    cuts.push(size);
    cuts.sort_unstable();
    cuts.dedup();
    let mut hasher = Sha256::new();
    let mut opened = vec![false; inside.len()];
    let mut next = 0usize;
    let mut pos = 0u64;
    while pos < size {
        let fits = cuts.partition_point(|&c| c <= pos + window);
        let end = match cuts[..fits].last() {
            Some(&c) if c > pos => c,
            _ => cuts[cuts.partition_point(|&c| c <= pos)],
        };
        let read = PIECE.with(|piece| {
            let mut bytes = piece.borrow_mut();
            repo.backend()
                .get_into(&name, pos..end, &mut bytes)
                .map(|()| std::mem::take(&mut *bytes))
        });
        let bytes = match read {
            Ok(bytes) if bytes.len() as u64 == end - pos => bytes,
            Ok(bytes) => {
                reading.failure = Some(format!(
                    "short read: {} of {} bytes at offset {pos}",
                    bytes.len(),
                    end - pos
                ));
                return reading;
            }
            Err(e) => {
                reading.failure = Some(format!("unreadable: {e}"));
                return reading;
            }
        };
        hasher.update(&bytes);
        progress(bytes.len() as u64);
        while next < inside.len() && u64::from(inside[next].offset) < end {
            let entry = &inside[next];
            if u64::from(entry.offset) >= pos && end_of(entry) <= end {
                let from = (u64::from(entry.offset) - pos) as usize;
                let sealed = &bytes[from..from + entry.sealed_len as usize];
                if let Err(reason) = open_blob(repo.key(), &entry.meta(), sealed) {
                    reading.damaged.push((*entry, reason));
                }
                opened[next] = true;
            }
            next += 1;
        }
        pos = end;
        // Hand the buffer back for the next piece, of this pack or the next one on this thread.
        PIECE.with(|piece| *piece.borrow_mut() = bytes);
    }
    // Entries that overlap others (a damaged index) were not inside one piece: open them alone.
    for (entry, _) in inside.iter().zip(&opened).filter(|(_, done)| !**done) {
        let range = u64::from(entry.offset)..end_of(entry);
        let opened = repo
            .backend()
            .get(&name, Some(range))
            .map_err(|e| e.to_string())
            .and_then(|sealed| open_blob(repo.key(), &entry.meta(), &sealed).map(drop));
        if let Err(reason) = opened {
            reading.damaged.push((*entry, reason));
        }
    }
    if PackId(hasher.finalize().into()) != *pack {
        reading.failure = Some("content does not match its name".into());
    }
    reading
}

/// Reads the selected packs in parallel; a pack that fails is read once more before it counts.
fn read_packs(
    repo: &Repository,
    inventory: &Inventory,
    selected: &[(PackId, u64)],
    window: usize,
    progress: &(dyn Fn(u64) + Sync),
    report: &mut CheckReport,
) {
    let transient = Mutex::new(Vec::new());
    let found: Vec<Vec<Problem>> = selected
        .par_iter()
        .map(|(pack, size)| {
            let entries = match inventory.by_pack.get(pack) {
                Some(entries) => entries.clone(),
                // Unindexed: its own header says what to open, when it reads.
                None => read_pack_header(repo, pack, *size).unwrap_or_default(),
            };
            let first = read_pack(repo, pack, *size, &entries, window, progress);
            if first.is_clean() {
                return Vec::new();
            }
            let second = read_pack(repo, pack, *size, &entries, window, &|_| {});
            if second.is_clean() {
                transient.lock().push(format!(
                    "pack {pack}: first read failed ({}), second read was clean",
                    first
                        .failure
                        .clone()
                        .or_else(|| first.damaged.first().map(|(_, r)| r.clone()))
                        .unwrap_or_default()
                ));
                return Vec::new();
            }
            let mut problems = Vec::new();
            if let Some(reason) = second.failure {
                problems.push(Problem::DamagedPack {
                    pack: *pack,
                    reason,
                });
            }
            for (entry, reason) in second.damaged {
                problems.push(Problem::DamagedBlob {
                    pack: *pack,
                    blob: entry.id,
                    reason,
                    uses: Vec::new(),
                });
            }
            problems
        })
        .collect();
    report.packs_read = selected.len();
    report.bytes_read = selected.iter().map(|(_, s)| s).sum();
    report.problems.extend(found.into_iter().flatten());
    report.transient_faults = transient.into_inner();
}

/// Fills in, for every damaged or missing blob, every snapshot and path that uses it.
fn attach_uses(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
) {
    let bad: HashSet<BlobId> = report.problems.iter().filter_map(Problem::blob).collect();
    if bad.is_empty() {
        return;
    }
    let uses = find_uses(repo, index, snapshots, &bad);
    for problem in &mut report.problems {
        if let Some(blob) = problem.blob()
            && let (Some(found), Some(slot)) = (uses.get(&blob), problem.uses_mut())
        {
            *slot = found.clone();
        }
    }
}

/// Every snapshot and path that uses one of `bad` (file content, or a directory's tree). Trees
/// known to hold none of them are not walked again in later snapshots.
pub fn find_uses(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
    bad: &HashSet<BlobId>,
) -> HashMap<BlobId, Vec<Use>> {
    let mut uses: HashMap<BlobId, Vec<Use>> = HashMap::new();
    let mut clean: HashSet<BlobId> = HashSet::new();
    for (id, snapshot) in snapshots {
        let mut walker = UseWalker {
            repo,
            index,
            bad,
            snapshot: *id,
            uses: &mut uses,
            clean: &mut clean,
        };
        walker.walk(snapshot.tree, "");
    }
    uses
}

struct UseWalker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    bad: &'a HashSet<BlobId>,
    snapshot: SnapshotId,
    uses: &'a mut HashMap<BlobId, Vec<Use>>,
    clean: &'a mut HashSet<BlobId>,
}

impl UseWalker<'_> {
    /// Walks `tree` at `path`; returns whether anything below uses a bad blob.
    fn walk(&mut self, tree: BlobId, path: &str) -> bool {
        if self.clean.contains(&tree) {
            return false;
        }
        let mut dirty = false;
        if self.bad.contains(&tree) {
            self.record(tree, if path.is_empty() { "/" } else { path });
            dirty = true;
        }
        // A tree that does not read has its own problem; nothing below it can be named.
        let Ok(nodes) = self.repo.read_tree(self.index, &tree) else {
            return true;
        };
        for node in nodes {
            let child = format!("{path}/{}", String::from_utf8_lossy(&node.name));
            if node.kind == NodeKind::File {
                for id in node.content.iter().filter(|id| self.bad.contains(*id)) {
                    self.record(*id, &child);
                    dirty = true;
                }
            }
            if let Some(sub) = node.subtree {
                dirty |= self.walk(sub, &child);
            }
        }
        if !dirty {
            self.clean.insert(tree);
        }
        dirty
    }

    fn record(&mut self, blob: BlobId, path: &str) {
        let found = self.uses.entry(blob).or_default();
        let used = Use {
            snapshot: self.snapshot,
            path: path.to_string(),
        };
        if !found.contains(&used) {
            found.push(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> std::result::Result<u64, String> {
        text.strip_suffix("MiB")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n << 20)
            .ok_or_else(|| format!("bad size {text}"))
    }

    #[test]
    fn subsets_parse_and_select_what_they_say() {
        assert_eq!(
            DataSubset::parse("2/5", size),
            Ok(DataSubset::Part { n: 2, of: 5 })
        );
        assert_eq!(
            DataSubset::parse("10%", size),
            Ok(DataSubset::Percent(10.0))
        );
        assert_eq!(
            DataSubset::parse("5MiB", size),
            Ok(DataSubset::Bytes(5 << 20))
        );
        for bad in ["0/3", "4/3", "0%", "150%", "x"] {
            assert!(DataSubset::parse(bad, size).is_err(), "{bad}");
        }
        let stored: HashMap<PackId, u64> = (0..100u8)
            .map(|i| (PackId(crate::repo::ids::sha256(&[i])), 1 << 20))
            .collect();
        // The parts of a split cover every pack exactly once.
        let mut parts: Vec<(PackId, u64)> = (1..=3)
            .flat_map(|n| select_packs(&stored, &DataSubset::Part { n, of: 3 }))
            .collect();
        parts.sort();
        assert_eq!(parts, select_packs(&stored, &DataSubset::All));
        assert_eq!(parts.len(), 100);
        assert_eq!(select_packs(&stored, &DataSubset::Percent(10.0)).len(), 10);
        assert_eq!(select_packs(&stored, &DataSubset::Bytes(5 << 20)).len(), 5);
    }
}
