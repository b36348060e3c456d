//! Phase 1: mark what the snapshots reach, copy the live blobs of mostly-unused packs into new
//! packs, and condemn in a garbage file the packs that may go; *then* record the writer
//! sessions open at that moment (DESIGN §6). Nothing is deleted here.

use super::rules::{self, MissingUsedBlob};
use super::{
    Progress, PruneOptions, PruneReport, all_snapshots, mark, refuse_empty_listing, whole_inventory,
};
use crate::error::{Error, Result};
use crate::fetch::packs::for_each_blob;
use crate::ingest::IngestLimits;
use crate::ingest::packer::Packer;
use crate::repo::Repository;
use crate::repo::garbage::{self, GarbageFile, new_garbage_id};
use crate::repo::ids::PackId;
use crate::repo::index::Index;
use crate::repo::session;
use crate::repo::writer::now_secs;
use std::collections::HashSet;
use std::sync::Arc;

/// Bytes of one pack read at a time while repacking.
const REPACK_WINDOW: usize = 32 << 20;

/// Runs phase 1, adding what it condemned (or, dry, would condemn) to `report`.
pub fn condemn(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    report: &mut PruneReport,
    progress: Progress,
) -> Result<()> {
    let snapshots = all_snapshots(repo)?;
    // Garbage files before the packs: a pack another prune deletes in between is then either
    // seen condemned or seen gone, never as a usable copy of a blob.
    let files = garbage::list(repo)?;
    let condemned = garbage::condemned(&files);
    // Orphan parity a garbage file condemns already is not condemned again.
    let listed: HashSet<PackId> = files
        .iter()
        .flat_map(|(_, f)| f.orphan_parity.iter().copied())
        .collect();
    let inventory = whole_inventory(repo)?;
    refuse_empty_listing(&snapshots, &inventory)?;
    let used = mark(repo, &inventory, &snapshots, progress)?;
    let plan = rules::plan(
        &inventory.stored,
        &inventory.by_pack,
        &inventory.index,
        &used,
        &condemned,
        opts.limits,
    )
    .map_err(|MissingUsedBlob(blob)| {
        Error::Invalid(format!(
            "a snapshot references blob {blob}, which no stored pack holds: prune stops rather \
             than guess; run `cairn check` and `cairn repair`"
        ))
    })?;
    report.condemned_packs += plan.delete.len() as u64;
    report.condemned_bytes += plan.delete.iter().map(|(_, s)| s).sum::<u64>();
    report.repacked_packs += plan.repack.len() as u64;
    report.repacked_pack_bytes += plan.repack.iter().map(|(_, s, _)| s).sum::<u64>();
    report.repacked_live_bytes += plan.repacked_bytes();
    report.kept_mixed_packs += plan.kept_mixed;
    let doomed = plan.condemned();
    // Parity without its pack waits like a pack no index lists (a writer that stored it may be
    // about to store the pack): removed once every session open now has ended, and recorded
    // apart from the condemned packs, which writers avoid.
    let orphans: Vec<PackId> = (inventory.orphan_parity.iter())
        .filter(|p| !listed.contains(p))
        .copied()
        .collect();
    report.condemned_parity += orphans.len() as u64;
    if opts.dry_run {
        return Ok(());
    }
    // Index entries of packs that are gone (two prunes rewrote one index file at once, or an
    // old index file was put back) are dropped here, so the next check is clean again.
    report.index_files_rewritten += super::sweep::rewrite_index(repo, &inventory, &HashSet::new())?;
    if doomed.is_empty() && orphans.is_empty() {
        return Ok(());
    }
    if !plan.repack.is_empty() {
        let mut unusable: HashSet<PackId> = condemned;
        unusable.extend(doomed.iter().copied());
        repack(repo, Arc::new(inventory.index), &plan, unusable, progress)?;
    }
    let gid = new_garbage_id();
    tracing::debug!(
        "garbage/{}: condemning {:?}, repacked {:?}",
        gid.short(),
        plan.delete
            .iter()
            .map(|(p, _)| p.short())
            .collect::<Vec<_>>(),
        plan.repack
            .iter()
            .map(|(p, _, _)| p.short())
            .collect::<Vec<_>>()
    );
    let file = GarbageFile {
        created: now_secs(),
        packs: doomed,
        bytes: plan.delete.iter().map(|(_, s)| s).sum::<u64>()
            + plan.repack.iter().map(|(_, s, _)| s).sum::<u64>(),
        sessions: None,
        orphan_parity: orphans,
    };
    garbage::write(repo, &gid, &file)?;
    // Only now: a writer whose session file appears after this listing reads the garbage file
    // written above, so every writer is either recorded here or avoids the condemned packs.
    let open: Vec<_> = session::list(repo)?.into_iter().map(|(id, _)| id).collect();
    garbage::record_sessions(repo, &gid, &open)
}

/// Copies the live blobs of the packs to repack into new packs and indexes them, verifying
/// each on the way (a damaged live blob stops the prune, naming it, before anything is
/// condemned).
fn repack(
    repo: &Arc<Repository>,
    index: Arc<Index>,
    plan: &rules::Plan,
    unusable: HashSet<PackId>,
    progress: Progress,
) -> Result<()> {
    let total = plan.repacked_bytes();
    let mut done = 0;
    let mut packer = Packer::new(repo.clone(), index, IngestLimits::default(), false);
    packer.avoid_packs(unusable);
    for (pack, _, live) in &plan.repack {
        for_each_blob(repo, pack, live.clone(), REPACK_WINDOW, |entry, plain| {
            packer.add(entry.kind, &plain?)?;
            done += entry.stored_share();
            progress("repacking live blobs", done, total);
            Ok(())
        })?;
    }
    packer.finish().map(drop)
}
