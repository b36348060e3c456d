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
use crate::ops::adopt::adopt_unindexed;
use crate::ops::check::find_uses;
use crate::ops::session::{Lease, WriterSession};
use crate::ops::usage::reachable;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::pack::PackEntry;
use crate::repo::snapshot::Snapshot;
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
    Now {
        source: SnapshotId,
        copy: SnapshotId,
        blobs: u64,
        bytes: u64,
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
        let complete = existing
            .get(&id)
            .and_then(|copies| copies.iter().find(|(_, tree)| *tree == snapshot.tree));
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
    let needed: Vec<BlobId> = reachable(source, source_index, vec![snapshot.tree])?
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
    let totals = packer.finish()?;
    let copy = Snapshot {
        copied_from: Some(id),
        ..snapshot
    };
    let copy_id = session.commit(&copy)?;
    session.end();
    Ok(Copied::Now {
        source: id,
        copy: copy_id,
        blobs: totals.new_blobs,
        bytes: totals.new_bytes,
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
    let Error::BadBlob { blob, .. } = &error else {
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
