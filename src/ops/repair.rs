//! `repair`: recovers what the data allows, and says what it could not.
//!
//! - [`repair_index`] rebuilds the index from pack headers, so lost or damaged index files and
//!   unindexed packs stop mattering.
//! - [`repair_packs`] copies every blob that still verifies out of damaged packs into new ones,
//!   re-creates lost data blobs by chunking source files the user still has (a chunk whose id
//!   matches a lost blob *is* that blob), then removes the damaged packs.
//! - [`repair_snapshots`] writes, for each snapshot that references blobs no index lists, a new
//!   snapshot without the broken files, tagged `repaired`, whose parent is the original.
//!
//! Every step writes its new data durably before it deletes anything, so a repair interrupted
//! at any point leaves a repository that a second run finishes.

use crate::error::{Error, Result};
use crate::ingest::IngestLimits;
use crate::ingest::chunker::{ChunkerConfig, for_each_batch};
use crate::ingest::packer::Packer;
use crate::ops::check::{CheckOptions, Inventory, Problem, check_inventory};
use crate::repo::Repository;
use crate::repo::heal::heal_in_place;
use crate::repo::ids::{BlobId, BlobKind, PackId, SnapshotId};
use crate::repo::index::{BlobLocation, Index, Segment, SegmentPack, into_segments};
use crate::repo::pack::pack_name;
use crate::repo::stored::read_pack_header;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind, invalid_name};
use crate::repo::writer::{Lease, WriterSession};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Packs listed in one rebuilt index file (fewer when they hold more than `MAX_SEGMENT_BLOBS`).
const PACKS_PER_SEGMENT: usize = 256;

/// The tag on snapshots written by [`repair_snapshots`].
pub const REPAIRED_TAG: &str = "repaired";

/// What [`repair_index`] did.
#[derive(Debug, Default, Serialize)]
pub struct IndexRepair {
    /// Packs now indexed.
    pub packs_indexed: usize,
    /// Blobs now indexed.
    pub blobs_indexed: usize,
    /// Packs whose header did not read and that no old index described: left unindexed.
    pub unreadable_packs: Vec<(PackId, String)>,
    /// Index files written.
    pub files_written: usize,
    /// Old index files removed.
    pub files_removed: usize,
}

/// Rebuilds the index from the headers of every stored pack (falling back to the old index for
/// a pack whose header is damaged), writes it, then removes the old index files.
pub fn repair_index(repo: &Repository) -> Result<IndexRepair> {
    let inventory = Inventory::load(repo)?;
    let mut packs: Vec<(PackId, u64)> = inventory.stored.iter().map(|(p, s)| (*p, *s)).collect();
    packs.sort();
    let described: Vec<(PackId, std::result::Result<Vec<_>, String>)> = packs
        .par_iter()
        .map(|(pack, size)| {
            let entries = match read_pack_header(repo, pack, *size) {
                Ok(entries) => Ok(entries),
                Err(e) => inventory
                    .by_pack
                    .get(pack)
                    .cloned()
                    .ok_or_else(|| e.to_string()),
            };
            (*pack, entries)
        })
        .collect();
    let mut report = IndexRepair::default();
    let mut indexed = Vec::new();
    for (pack, entries) in described {
        match entries {
            Ok(mut blobs) => {
                blobs.sort_by_key(|e| (e.offset, e.id));
                blobs.dedup();
                report.blobs_indexed += blobs.len();
                indexed.push(SegmentPack { pack, blobs });
            }
            Err(reason) => report.unreadable_packs.push((pack, reason)),
        }
    }
    report.packs_indexed = indexed.len();
    let mut written = HashSet::new();
    for segment in into_segments(indexed, PACKS_PER_SEGMENT) {
        written.insert(format!("index/{}", repo.save_index_segment(&segment)?));
    }
    report.files_written = written.len();
    let old = inventory
        .segments
        .iter()
        .map(|(name, _)| name)
        .chain(inventory.damaged_index_files.iter().map(|(name, _)| name));
    for name in old.filter(|name| !written.contains(*name)) {
        repo.backend().delete(name)?;
        report.files_removed += 1;
    }
    Ok(report)
}

/// What [`repair_packs`] did.
#[derive(Debug, Default, Serialize)]
pub struct PackRepair {
    /// Packs found damaged or missing.
    pub damaged_packs: Vec<PackId>,
    /// Blobs copied out of damaged packs into new ones.
    pub salvaged: usize,
    /// Lost blobs re-created from the source paths.
    pub recreated: usize,
    /// Blobs still lost: `repair snapshots` can drop the files that use them.
    pub still_missing: Vec<BlobId>,
    /// Damaged packs removed from the store and the index.
    pub removed_packs: usize,
    /// Packs rebuilt from their parity and written back under their names (not in
    /// `damaged_packs`: nothing else had to change).
    pub healed_packs: Vec<PackId>,
}

/// Reads every pack; heals from its parity each damaged pack the parity can rebuild; salvages
/// the good blobs of the other damaged ones; re-creates lost data blobs from `sources`; stores
/// all that; then removes those damaged packs from the store and the index.
pub fn repair_packs(
    repo: &Arc<Repository>,
    sources: &[PathBuf],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PackRepair> {
    let opts = CheckOptions {
        read_data: Some(crate::ops::check::DataSubset::All),
        ..CheckOptions::default()
    };
    // A writer like any other (DESIGN §6): a prune waits for the packs it stores, and it does
    // not de-duplicate against packs a prune condemned.
    let session = WriterSession::begin(repo.clone(), "repair", Lease::configured())?;
    let inventory = Inventory::load(repo)?;
    let unusable = session.unusable_packs(&inventory.index)?;
    let found = check_inventory(repo, &inventory, &opts, progress)?;
    // Blobs that only lack their dictionary would look lost to a salvage of their pack: the
    // dictionary is what needs restoring, and no pack is touched until it is.
    if let Some(problem) = found
        .problems
        .iter()
        .find(|p| matches!(p, Problem::NoDictionary { .. }))
    {
        return Err(Error::Invalid(format!(
            "{problem}: restore the compression dictionary (from a copy of the repository's \
             dicts/) before repairing packs"
        )));
    }
    // First what parity heals, with no source: those packs are whole again under their names.
    // Every damaged stored pack is tried (the heal itself says whether its parity suffices).
    let pack_of = |problem: &Problem| match problem {
        Problem::DamagedSectors { pack, .. }
        | Problem::DamagedPack { pack, .. }
        | Problem::DamagedBlob { pack, .. }
        | Problem::ShortPack { pack, .. }
        | Problem::HeaderMismatch { pack, .. } => Some(*pack),
        _ => None,
    };
    let mut healed = BTreeSet::new();
    let candidates: BTreeSet<PackId> = found.problems.iter().filter_map(pack_of).collect();
    for pack in candidates
        .iter()
        .filter(|p| inventory.stored.contains_key(p))
    {
        match heal_in_place(repo, pack) {
            Ok(()) => {
                tracing::info!("pack {pack}: healed from its parity");
                healed.insert(*pack);
            }
            Err(e) => tracing::warn!("{e}: salvaging what it holds instead"),
        }
    }
    let mut damaged: BTreeSet<PackId> = BTreeSet::new();
    let mut lost: HashSet<BlobId> = HashSet::new();
    let about_healed = |problem: &Problem| pack_of(problem).is_some_and(|p| healed.contains(&p));
    for problem in found.problems.iter().filter(|p| !about_healed(p)) {
        match problem {
            Problem::DamagedPack { pack, .. }
            | Problem::MissingPack { pack, .. }
            | Problem::ShortPack { pack, .. } => {
                damaged.insert(*pack);
            }
            Problem::DamagedBlob { pack, blob, .. } => {
                damaged.insert(*pack);
                lost.insert(*blob);
            }
            Problem::MissingBlob { blob, .. } => {
                lost.insert(*blob);
            }
            _ => {}
        }
    }
    let mut report = PackRepair {
        damaged_packs: damaged.iter().copied().collect(),
        healed_packs: healed.iter().copied().collect(),
        ..PackRepair::default()
    };
    // Deduplicate only against healthy packs: a blob whose one copy is damaged is stored anew.
    let healthy = Index::from_segments(
        inventory
            .segments
            .iter()
            .map(|(_, segment)| without_packs(segment, &damaged))
            .collect(),
    );
    let mut packer = Packer::new(
        repo.clone(),
        Arc::new(healthy),
        IngestLimits::default(),
        false,
    );
    packer.avoid_packs(unusable);
    for pack in &damaged {
        let entries = inventory.by_pack.get(pack).cloned().unwrap_or_default();
        let stored = inventory.stored.contains_key(pack);
        for entry in entries {
            if lost.contains(&entry.id) || packer.is_known(&entry.id) {
                continue;
            }
            let plain = if stored {
                repo.read_blob(&BlobLocation { pack: *pack, entry })
            } else {
                Err(Error::NotFound(pack_name(pack)))
            };
            match plain {
                Ok(plain) => {
                    packer.add(entry.kind, &plain)?;
                    report.salvaged += 1;
                }
                // Not lost: its dictionary is (and this pack must not be deleted for it).
                Err(e @ Error::NoDictionary { .. }) => return Err(e),
                Err(_) => {
                    lost.insert(entry.id);
                }
            }
        }
    }
    if !lost.is_empty() && !sources.is_empty() {
        report.recreated = recreate_from_sources(repo, &packer, sources, &lost)?;
    }
    packer.finish()?;
    // Everything recovered is stored and indexed: now the damaged packs can go.
    for (name, segment) in &inventory.segments {
        if segment.packs.iter().any(|sp| damaged.contains(&sp.pack)) {
            let kept = without_packs(segment, &damaged);
            let written = if kept.packs.is_empty() {
                None
            } else {
                Some(format!("index/{}", repo.save_index_segment(&kept)?))
            };
            if written.as_deref() != Some(name.as_str()) {
                repo.backend().delete(name)?;
            }
        }
    }
    for pack in &damaged {
        if inventory.stored.contains_key(pack) {
            repo.backend().delete(&pack_name(pack))?;
            report.removed_packs += 1;
        }
    }
    let index = repo.load_index()?;
    let mut still: Vec<BlobId> = lost
        .iter()
        .filter(|id| !index.contains(id))
        .copied()
        .collect();
    still.sort();
    report.still_missing = still;
    session.end();
    Ok(report)
}

fn without_packs(segment: &Segment, packs: &BTreeSet<PackId>) -> Segment {
    Segment {
        packs: segment
            .packs
            .iter()
            .filter(|sp| !packs.contains(&sp.pack))
            .cloned()
            .collect(),
    }
}

/// Chunks every file under `sources` as a backup would and stores each chunk whose id is lost.
/// Returns how many lost blobs were found.
fn recreate_from_sources(
    repo: &Repository,
    packer: &Packer,
    sources: &[PathBuf],
    lost: &HashSet<BlobId>,
) -> Result<usize> {
    let config = ChunkerConfig::new(&repo.config().params, repo.key().gear_seed());
    let mut found: HashSet<BlobId> = HashSet::new();
    let mut pending: Vec<PathBuf> = sources.to_vec();
    while let Some(path) = pending.pop() {
        if found.len() == lost.len() {
            break;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
                pending.push(entry.map_err(|e| Error::io(&path, e))?.path());
            }
        } else if meta.is_file() {
            chunk_file(&path, meta.len(), &config, |chunk| {
                let id = repo.key().blob_id(chunk);
                if lost.contains(&id) && found.insert(id) {
                    packer.add(BlobKind::Data, chunk)?;
                }
                Ok(())
            })?;
        }
    }
    Ok(found.len())
}

fn chunk_file(
    path: &Path,
    size: u64,
    config: &ChunkerConfig,
    mut on_chunk: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    /// Reading the file, or storing a chunk.
    enum Failure {
        Read(std::io::Error),
        Store(Error),
    }
    impl From<std::io::Error> for Failure {
        fn from(e: std::io::Error) -> Self {
            Failure::Read(e)
        }
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let read = for_each_batch::<_, Failure>(config, file, size, 16 << 20, |chunks| {
        chunks
            .into_iter()
            .try_for_each(|chunk| on_chunk(chunk).map_err(Failure::Store))
    });
    match read {
        Ok(_) => Ok(()),
        Err(Failure::Read(e)) => Err(Error::io(path, e)),
        Err(Failure::Store(e)) => Err(e),
    }
}

/// One snapshot [`repair_snapshots`] rewrote.
#[derive(Debug, Serialize)]
pub struct RepairedSnapshot {
    /// The original.
    pub original: SnapshotId,
    /// The new snapshot without the broken files.
    pub repaired: SnapshotId,
    /// Paths left out (files with lost content, directories whose tree is lost).
    pub removed: Vec<String>,
}

/// What [`repair_snapshots`] did.
#[derive(Debug, Default, Serialize)]
pub struct SnapshotRepair {
    /// Snapshots rewritten.
    pub repaired: Vec<RepairedSnapshot>,
    /// Snapshots whose root tree is lost: nothing of them can be kept.
    pub lost: Vec<SnapshotId>,
    /// Originals removed (with `forget`).
    pub forgotten: usize,
}

/// Writes, for each snapshot that references a blob no index lists, a new snapshot without the
/// files (and directories) that cannot be read, tagged [`REPAIRED_TAG`], with the original as
/// its parent. With `forget` the originals are removed once the new ones are committed.
pub fn repair_snapshots(repo: &Arc<Repository>, forget: bool) -> Result<SnapshotRepair> {
    let session = WriterSession::begin(repo.clone(), "repair", Lease::configured())?;
    let index = Arc::new(repo.load_index()?);
    // Repaired snapshots keep their originals' data blobs without storing them again: that is
    // safe only while no prune has condemned packs (DESIGN §6).
    if !session.unusable_packs(&index)?.is_empty() {
        return Err(Error::Invalid(
            "a prune has condemned packs and not yet deleted them: run `cairn prune` to finish \
             it (or remove stale index files with `repair index`), then repair snapshots"
                .into(),
        ));
    }
    let snapshots = repo.snapshots()?;
    let packer = Packer::new(repo.clone(), index.clone(), IngestLimits::default(), false);
    let mut rewriter = Rewriter {
        repo,
        index: &index,
        packer: &packer,
        done: HashMap::new(),
    };
    let mut report = SnapshotRepair::default();
    let mut pending = Vec::new();
    for (id, snapshot) in &snapshots {
        let mut removed = Vec::new();
        match rewriter.rewrite(snapshot.tree, "", 0, &mut removed)? {
            None => report.lost.push(*id),
            Some(tree) if tree == snapshot.tree => {}
            Some(tree) => {
                let mut fixed = snapshot.clone();
                fixed.tree = tree;
                fixed.parent = Some(*id);
                // No longer a complete copy of anything: a copy run must send it again.
                fixed.copied_from = None;
                if !fixed.tags.iter().any(|t| t == REPAIRED_TAG) {
                    fixed.tags.push(REPAIRED_TAG.into());
                }
                pending.push((*id, fixed, removed));
            }
        }
    }
    // The new trees are stored and indexed before any snapshot refers to them.
    packer.finish()?;
    for (original, fixed, removed) in pending {
        let repaired = session.commit(&fixed)?;
        if forget {
            repo.backend().delete(&format!("snapshots/{original}"))?;
            report.forgotten += 1;
        }
        report.repaired.push(RepairedSnapshot {
            original,
            repaired,
            removed,
        });
    }
    session.end();
    Ok(report)
}

/// Rewrites trees without what cannot be read, each distinct tree once.
struct Rewriter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    packer: &'a Packer,
    /// Tree id → its rewritten id (None: unreadable) and the paths it dropped, relative to it.
    done: HashMap<BlobId, (Option<BlobId>, Vec<String>)>,
}

impl Rewriter<'_> {
    /// The id of `tree` without unreadable entries and entries whose names are not one path
    /// component (itself when nothing is dropped), or None if the tree itself cannot be read or
    /// lies deeper than [`MAX_DEPTH`]. Dropped paths are appended to `removed`.
    fn rewrite(
        &mut self,
        tree: BlobId,
        path: &str,
        depth: usize,
        removed: &mut Vec<String>,
    ) -> Result<Option<BlobId>> {
        if let Some((result, dropped)) = self.done.get(&tree) {
            removed.extend(dropped.iter().map(|d| format!("{path}{d}")));
            return Ok(*result);
        }
        if depth >= MAX_DEPTH {
            return Ok(None);
        }
        let nodes = match self.repo.read_tree_unfiltered(self.index, &tree) {
            Ok(nodes) => nodes,
            Err(_) => {
                self.done.insert(tree, (None, Vec::new()));
                return Ok(None);
            }
        };
        let mut dropped = Vec::new();
        let mut kept: Vec<Node> = Vec::with_capacity(nodes.len());
        for mut node in nodes {
            let rel = format!("/{}", String::from_utf8_lossy(&node.name));
            if invalid_name(&node.name).is_some() {
                dropped.push(format!("/{:?}", String::from_utf8_lossy(&node.name)));
                continue;
            }
            if node.kind == NodeKind::File && !node.content.iter().all(|id| self.index.contains(id))
            {
                dropped.push(rel);
                continue;
            }
            if let Some(sub) = node.subtree {
                let mut below = Vec::new();
                match self.rewrite(sub, "", depth + 1, &mut below)? {
                    None => {
                        dropped.push(rel);
                        continue;
                    }
                    Some(new) => {
                        dropped.extend(below.into_iter().map(|d| format!("{rel}{d}")));
                        node.subtree = Some(new);
                    }
                }
            }
            kept.push(node);
        }
        let result = if dropped.is_empty() {
            tree
        } else {
            self.packer.store_tree(kept)?
        };
        removed.extend(dropped.iter().map(|d| format!("{path}{d}")));
        self.done.insert(tree, (Some(result), dropped));
        Ok(Some(result))
    }
}
