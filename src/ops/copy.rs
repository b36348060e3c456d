//! Copying snapshots between repositories (`cairn copy`), for backups kept in a second place.
//!
//! The field report this answers: a replication interrupted half way that the next run took as
//! complete. Here a destination snapshot is the last thing written, by a writer session, after
//! every blob it needs is stored and indexed; it records the source snapshot it copies
//! ([`Snapshot::copied_from`]), and that record is the only thing a re-run believes. A re-run
//! re-uses what the interrupted one stored (indexed packs, and unindexed ones via
//! [`adopt_unindexed`]) and sends only what is missing.
//!
//! Every blob is verified twice: read from the source through the verified fetch path (AEAD
//! tag and content id), and re-sealed into destination packs that the packer re-reads and
//! checks before upload. The destination must have the source's chunker and id parameters
//! (`init --copy-params-from`), so a blob's id is the same in both and trees copy unchanged.

use crate::error::{Error, Result};
use crate::fetch::packs::for_each_blob;
use crate::ingest::IngestLimits;
use crate::ingest::packer::Packer;
use crate::ops::check::find_uses;
use crate::repo::Repository;
use crate::repo::adopt::adopt_unindexed;
use crate::repo::ids::{BlobId, PackId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::pack::PackEntry;
use crate::repo::reach::reachable_noting_names;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{MAX_DEPTH, invalid_name};
use crate::repo::writer::{Lease, WriterSession};
use parking_lot::Mutex;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// How a copy runs.
#[derive(Clone, Debug)]
pub struct CopyOptions {
    /// The lease of the destination writer session.
    pub lease: Lease,
    /// Uploads in flight and the other packer bounds.
    pub limits: IngestLimits,
    /// Bytes of one source pack held at once while its blobs are read.
    pub read_window: usize,
}

/// What became of one source snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Copied {
    /// Copied now as `copy`, sending `blobs` blobs the destination lacked (`bytes` plaintext).
    /// `dropped` names the entries left out because readers refuse their names (`..`, a `/`
    /// inside): carried over, they would fail the destination's `check`.
    Now {
        source: SnapshotId,
        copy: SnapshotId,
        blobs: u64,
        bytes: u64,
        dropped: Vec<String>,
    },
    /// A complete copy was already there.
    Already {
        source: SnapshotId,
        copy: SnapshotId,
    },
}

/// Refuses a destination whose blob ids or chunking differ from the source's: its copies would
/// not share a byte with what the source's next backups make, and trees could not be copied
/// unchanged.
pub fn check_compatible(source: &Repository, dest: &Repository) -> Result<()> {
    let (a, b) = (&source.config().params, &dest.config().params);
    let probe = b"cairn copy: are blob ids computed alike?";
    let same = a.chunk_min == b.chunk_min
        && a.chunk_avg == b.chunk_avg
        && a.chunk_max == b.chunk_max
        && a.tree_split_size == b.tree_split_size
        && source.key().gear_seed() == dest.key().gear_seed()
        && source.key().blob_id(probe) == dest.key().blob_id(probe);
    match same {
        true => Ok(()),
        false => Err(Error::Invalid(format!(
            "{} has other chunker and blob-id parameters than {}: copy into a repository made \
             with `cairn init --copy-params-from {}`",
            dest.backend().location(),
            source.backend().location(),
            source.backend().location()
        ))),
    }
}

/// The destination snapshots that record a source snapshot, by that source: each (copy, its
/// root tree). A copy is complete only if its tree is the source's (trees copy unchanged).
pub fn copies_in(dest: &Repository) -> Result<HashMap<SnapshotId, Vec<(SnapshotId, BlobId)>>> {
    let mut copies: HashMap<SnapshotId, Vec<(SnapshotId, BlobId)>> = HashMap::new();
    for (id, snapshot) in dest.snapshots()? {
        if let Some(from) = snapshot.copied_from {
            copies.entry(from).or_default().push((id, snapshot.tree));
        }
    }
    Ok(copies)
}

/// Copies `snapshots` of `source` into `dest`, oldest first, calling `done` after each. A
/// snapshot whose copy fails stops the run with an error naming the blob, pack and files;
/// the snapshots copied before it stay.
pub fn copy_snapshots(
    source: &Arc<Repository>,
    dest: &Arc<Repository>,
    mut snapshots: Vec<(SnapshotId, Snapshot)>,
    opts: &CopyOptions,
    done: &mut dyn FnMut(&Copied),
) -> Result<()> {
    check_compatible(source, dest)?;
    snapshots.sort_by_key(|(id, s)| (s.time, *id));
    let existing = copies_in(dest)?;
    let source_index = source.load_index()?;
    // What an interrupted run stored is looked for once, by the first snapshot copied.
    let mut adopt = true;
    for (id, snapshot) in snapshots {
        let copies = existing.get(&id).map(Vec::as_slice).unwrap_or_default();
        let mut complete = copies.iter().find(|(_, tree)| *tree == snapshot.tree);
        // A copy of a snapshot with names readers refuse has a tree of its own: the source's
        // with those entries left out, computed again here (without storing) to recognise it.
        if complete.is_none() && !copies.is_empty() {
            let dry = Packer::new(
                dest.clone(),
                Arc::new(Index::default()),
                opts.limits.clone(),
                true,
            );
            let cleaned = NameCleaner::new(source, &source_index, &dry).clean(snapshot.tree)?;
            complete = copies.iter().find(|(_, tree)| *tree == cleaned);
        }
        let outcome = match complete {
            Some((copy, _)) => Copied::Already {
                source: id,
                copy: *copy,
            },
            None => {
                let copied = copy_one(source, &source_index, dest, id, snapshot, opts, adopt)?;
                adopt = false;
                copied
            }
        };
        done(&outcome);
    }
    Ok(())
}

fn copy_one(
    source: &Arc<Repository>,
    source_index: &Index,
    dest: &Arc<Repository>,
    id: SnapshotId,
    snapshot: Snapshot,
    opts: &CopyOptions,
    adopt: bool,
) -> Result<Copied> {
    let session = WriterSession::begin(dest.clone(), "copy", opts.lease)?;
    // Read with the session open, so it holds what earlier snapshots of this run stored, and
    // their blobs are re-used only outside condemned packs.
    let mut index = Arc::new(dest.load_index()?);
    let unusable = session.unusable_packs(&index)?;
    if adopt && adopt_unindexed(dest, &index, &unusable)?.packs > 0 {
        index = Arc::new(dest.load_index()?);
    }
    let (reached, invalid_names) =
        reachable_noting_names(source, source_index, vec![snapshot.tree])?;
    let needed: Vec<BlobId> = reached
        .into_iter()
        .filter(|b| !index.contains_outside(b, &unusable))
        .collect();
    let mut by_pack: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for blob in &needed {
        let at = source_index.get(blob).ok_or(Error::MissingBlob(*blob))?;
        by_pack.entry(at.pack).or_default().push(at.entry);
    }
    let mut packer = Packer::new(dest.clone(), index, opts.limits.clone(), false);
    packer.avoid_packs(unusable);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let packs: Vec<(PackId, Vec<PackEntry>)> = by_pack.into_iter().collect();
    packs.par_iter().for_each(|(pack, wanted)| {
        if failure.lock().is_some() {
            return;
        }
        let copied = for_each_blob(
            source,
            pack,
            wanted.clone(),
            opts.read_window,
            |entry, plain| {
                let stored = packer.add(entry.kind, &plain?)?;
                if stored != entry.id {
                    return Err(Error::Invalid(format!(
                        "blob {} of pack {pack} got id {stored} in the destination: the \
                     repositories' parameters differ (make the destination with \
                     `cairn init --copy-params-from`)",
                        entry.id
                    )));
                }
                Ok(())
            },
        );
        if let Err(e) = copied {
            failure.lock().get_or_insert(e);
        }
    });
    if let Some(error) = failure.into_inner() {
        // Best effort: what was stored is indexed, so the next run does not send it again.
        let _ = packer.finish();
        session.end();
        return Err(name_users(source, source_index, id, &snapshot, error));
    }
    let (tree, dropped) = match invalid_names {
        false => (Ok(snapshot.tree), Vec::new()),
        true => {
            let mut cleaner = NameCleaner::new(source, source_index, &packer);
            let tree = cleaner.clean(snapshot.tree);
            (tree, cleaner.dropped)
        }
    };
    let totals = packer.finish()?;
    let copy = Snapshot {
        copied_from: Some(id),
        tree: tree?,
        ..snapshot
    };
    let copy_id = session.commit(&copy)?;
    session.end();
    Ok(Copied::Now {
        source: id,
        copy: copy_id,
        blobs: totals.new_blobs,
        bytes: totals.new_bytes,
        dropped,
    })
}

/// A damaged source blob's error, with the files of the snapshot that use it.
fn name_users(
    source: &Repository,
    index: &Index,
    id: SnapshotId,
    snapshot: &Snapshot,
    error: Error,
) -> Error {
    let (Error::BadBlob { blob, .. } | Error::NoDictionary { blob, .. }) = &error else {
        return error;
    };
    let bad: HashSet<BlobId> = [*blob].into();
    let uses = find_uses(source, index, &[(id, snapshot.clone())], &bad);
    let mut paths: Vec<String> = uses
        .get(blob)
        .into_iter()
        .flatten()
        .map(|u| u.path.clone())
        .collect();
    paths.sort();
    let shown = paths.len().min(10);
    let more = match paths.len() - shown {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Error::Invalid(format!(
        "snapshot {} not copied: {error} (used by {}{more}); nothing of it was committed",
        id.short(),
        paths[..shown].join(", ")
    ))
}

/// Rewrites a source tree without the entries whose names readers refuse ([`invalid_name`]),
/// as restore and the mount skip them, storing the rewritten trees through `packer` (a dry
/// packer only computes their ids). Trees holding no such name, at any depth, keep their ids.
struct NameCleaner<'a> {
    source: &'a Repository,
    index: &'a Index,
    packer: &'a Packer,
    /// Tree id → its id without invalid names and the paths it left out (relative to it), each
    /// distinct tree rewritten once.
    done: HashMap<BlobId, (BlobId, Vec<String>)>,
    /// The paths left out, for the user (every path, also below a tree met twice).
    dropped: Vec<String>,
}

impl<'a> NameCleaner<'a> {
    fn new(source: &'a Repository, index: &'a Index, packer: &'a Packer) -> Self {
        NameCleaner {
            source,
            index,
            packer,
            done: HashMap::new(),
            dropped: Vec::new(),
        }
    }

    /// The id of the root `tree` without invalid names.
    fn clean(&mut self, tree: BlobId) -> Result<BlobId> {
        let mut dropped = Vec::new();
        let cleaned = self.clean_at(tree, 0, &mut dropped)?;
        self.dropped = dropped;
        Ok(cleaned)
    }

    /// `tree` cleaned, with the paths it left out (relative to it) appended to `dropped`.
    fn clean_at(
        &mut self,
        tree: BlobId,
        depth: usize,
        dropped: &mut Vec<String>,
    ) -> Result<BlobId> {
        if let Some((cleaned, below)) = self.done.get(&tree) {
            dropped.extend(below.iter().cloned());
            return Ok(*cleaned);
        }
        if depth >= MAX_DEPTH {
            return Err(Error::Invalid(format!(
                "tree {tree} lies deeper than {MAX_DEPTH} directories: not copied"
            )));
        }
        let nodes = self.source.read_tree_unfiltered(self.index, &tree)?;
        let mut changed = false;
        let mut left_out = Vec::new();
        let mut kept = Vec::with_capacity(nodes.len());
        for mut node in nodes {
            // Escaped: a crafted name must not reach a terminal as control characters.
            let shown = String::from_utf8_lossy(&node.name)
                .escape_debug()
                .to_string();
            if invalid_name(&node.name).is_some() {
                left_out.push(format!("/\"{shown}\""));
                changed = true;
                continue;
            }
            if let Some(sub) = node.subtree {
                let mut below = Vec::new();
                let cleaned = self.clean_at(sub, depth + 1, &mut below)?;
                left_out.extend(below.into_iter().map(|path| format!("/{shown}{path}")));
                changed |= cleaned != sub;
                node.subtree = Some(cleaned);
            }
            kept.push(node);
        }
        let cleaned = match changed {
            true => self.packer.store_tree(kept)?,
            false => tree,
        };
        dropped.extend(left_out.iter().cloned());
        self.done.insert(tree, (cleaned, left_out));
        Ok(cleaned)
    }
}
