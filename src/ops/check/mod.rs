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

mod read_data;
mod report;
mod trees;

pub use read_data::{PackReading, read_pack};
pub use report::{CheckReport, Problem, Use};
pub use trees::find_uses;

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::dictionary;
use crate::repo::ids::{BlobId, PackId, SnapshotId};
use crate::repo::index::{Index, Segment};
use crate::repo::pack::{PackEntry, TRAILER_LEN, pack_name};
use crate::repo::snapshot::Snapshot;
use crate::repo::stored::{listed_parity, read_pack_header, stored_packs_confirming};
use rayon::prelude::*;
use read_data::{read_packs, select_packs};
use std::collections::{HashMap, HashSet};
use trees::{attach_uses, check_snapshots};

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
    /// Packs that have a parity object but are not stored: left by a writer between storing
    /// the parity and the pack, or by a prune between deleting the pack and its parity.
    pub orphan_parity: Vec<PackId>,
}

impl Inventory {
    /// Reads every index file and lists every pack (asking for an indexed pack the listing
    /// left out by name).
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
        // Parity before packs: a writer stores a pack's parity first, so a pack stored between
        // the two listings is seen, and its parity is no orphan.
        let parity = listed_parity(repo)?;
        let stored = stored_packs_confirming(repo, by_pack.keys().copied())?;
        // One the listing left out is asked for by name (a pack in flight, or a lagging
        // listing): only a pack the store does not have makes its parity an orphan.
        let mut orphan_parity: Vec<PackId> = parity
            .into_iter()
            .filter(|pack| !stored.contains_key(pack))
            .filter(|pack| {
                matches!(
                    repo.backend().stat(&pack_name(pack)),
                    Err(Error::NotFound(_))
                )
            })
            .collect();
        orphan_parity.sort();
        Ok(Inventory {
            segments,
            damaged_index_files,
            index,
            by_pack,
            stored,
            orphan_parity,
        })
    }
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
        orphan_parity: inventory.orphan_parity.clone(),
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
    check_dictionaries(repo, &mut report)?;
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
    set_aside_unused_missing_packs(repo, inventory, &snapshots, &mut report);
    Ok(report)
}

/// Reads every compression dictionary: both copies against its name, an intact one against the
/// key and as a zstd dictionary.
fn check_dictionaries(repo: &Repository, report: &mut CheckReport) -> Result<()> {
    let backend = repo.backend().as_ref();
    for (zstd_id, id) in dictionary::list(backend)? {
        // The error names the object already: the problem says it once.
        let problem = |error: Error, repairable| Problem::DamagedDictionary {
            dictionary: dictionary::dict_name(zstd_id, &id),
            reason: match error {
                Error::Corrupt { reason, .. } => reason,
                other => other.to_string(),
            },
            repairable,
        };
        let stored = match dictionary::read_stored(backend, &dictionary::dict_name(zstd_id, &id)) {
            Ok(stored) => stored,
            Err(Error::NotFound(_)) => continue,
            Err(e) => {
                report.problems.push(problem(e, false));
                continue;
            }
        };
        if let Err(e) = dictionary::open(repo.key(), zstd_id, id, &stored) {
            report.problems.push(problem(e, false));
        } else if !dictionary::inspect(&id, &stored).whole {
            let damaged = Error::Invalid("one of its two copies is damaged".into());
            report.problems.push(problem(damaged, true));
        }
    }
    Ok(())
}

/// Moves missing packs none of whose blobs a snapshot uses from the problems to
/// [`CheckReport::gone_unused_packs`]: stale bookkeeping, not damage.
fn set_aside_unused_missing_packs(
    repo: &Repository,
    inventory: &Inventory,
    snapshots: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
) {
    let missing: Vec<PackId> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::MissingPack { pack, .. } => Some(*pack),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    let blobs_of = |pack: &PackId| -> HashSet<BlobId> {
        inventory
            .by_pack
            .get(pack)
            .map(|entries| entries.iter().map(|e| e.id).collect())
            .unwrap_or_default()
    };
    let wanted: HashSet<BlobId> = missing.iter().flat_map(blobs_of).collect();
    let used = find_uses(repo, &inventory.index, snapshots, &wanted);
    let unused: HashSet<PackId> = missing
        .into_iter()
        .filter(|pack| blobs_of(pack).iter().all(|b| !used.contains_key(b)))
        .collect();
    report.problems.retain(|p| match p {
        Problem::MissingPack { pack, .. } => !unused.contains(pack),
        _ => true,
    });
    report.gone_unused_packs = unused.into_iter().collect();
    report.gone_unused_packs.sort();
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
                let elsewhere = |entry: &PackEntry| {
                    inventory
                        .index
                        .locations(&entry.id)
                        .iter()
                        .any(|at| at.pack != **pack && inventory.stored.contains_key(&at.pack))
                };
                return Some(Problem::MissingPack {
                    pack: **pack,
                    blobs: entries.len(),
                    stale: entries.iter().all(elsewhere),
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
