//! Prune without locks (DESIGN §6). Phase 1 ([`condemn`]) marks what the snapshots reach,
//! copies the live blobs of mostly-unused packs into new packs, and writes a garbage file
//! condemning the packs that may go, recording the writer sessions open at that moment.
//! Phase 2 ([`sweep`]), in a later run or at once with `--now`, deletes a garbage file's packs
//! once every recorded session has ended or lapsed, keeping any pack a snapshot written
//! meanwhile needs. Both phases are idempotent: a prune killed anywhere is finished by the next.

mod condemn;
pub mod rules;
mod sweep;

#[cfg(test)]
mod model;

use crate::error::{Error, Result};
use crate::ops::check::Inventory;
use crate::repo::Repository;
use crate::repo::garbage;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::reach::used_blobs;
use crate::repo::session::{self, Liveness, SessionFile};
use crate::repo::snapshot::Snapshot;
use crate::repo::writer::{Lease, now_secs};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;

pub use condemn::condemn;
pub use sweep::sweep;

/// How a prune runs.
#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    /// Limits of phase 1.
    pub limits: rules::PlanLimits,
    /// Report what would be condemned and deleted; change nothing.
    pub dry_run: bool,
    /// Run phase 2 on the packs just condemned too, when no session holds it back.
    pub now: bool,
    /// The writers' lease and margin: a session is lapsed once both have passed.
    pub lease: Lease,
}

/// What a prune did (or, dry, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Packs phase 1 condemned whole (no live blob).
    pub condemned_packs: u64,
    /// Their bytes.
    pub condemned_bytes: u64,
    /// Packs whose live blobs were copied into new packs, then condemned.
    pub repacked_packs: u64,
    /// Their bytes.
    pub repacked_pack_bytes: u64,
    /// Live bytes copied.
    pub repacked_live_bytes: u64,
    /// Partly unused packs left alone because of `--max-repack`.
    pub kept_mixed_packs: u64,
    /// Packs deleted by phase 2.
    pub deleted_packs: u64,
    /// Their bytes: what this run freed.
    pub freed_bytes: u64,
    /// Condemned packs taken back because a snapshot written meanwhile needs them.
    pub revived_packs: u64,
    /// Index files rewritten without deleted packs.
    pub index_files_rewritten: u64,
    /// Garbage files finished.
    pub garbage_done: u64,
    /// Garbage files still waiting, each with the session it waits for.
    pub waiting: Vec<String>,
    /// Session files of dead or lapsed writers removed.
    pub sessions_removed: u64,
    /// Parity objects without their pack phase 1 condemned.
    pub condemned_parity: u64,
    /// Parity objects without their pack phase 2 removed.
    pub removed_parity: u64,
}

/// Progress of a long step: its name, what is done and the total (0 when unknown).
pub type Progress<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// Runs a prune: phase 2 for garbage files whose sessions have all ended, then phase 1, then,
/// with `now`, phase 2 for what phase 1 condemned (when no session was open).
///
/// One prune runs at a time: it claims the repository first and a second one stops with an
/// error (two at once, each reading the other's half-done work, could each keep a pack only
/// the other deletes — a review reproduced it). The claim is no lock on anything else.
pub fn prune(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    progress: Progress,
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    if opts.dry_run {
        condemn(repo, opts, &mut report, progress)?;
        return Ok(report);
    }
    let me = SessionFile::for_this_process("prune", now_secs(), garbage::CLAIM_SECS);
    let claim = garbage::claim_pruning(repo, &me)?;
    let renewer = ClaimRenewer::start(repo.clone(), claim.name().to_string(), me);
    let result = (|| {
        remove_lapsed_sessions(repo, opts.lease, &mut report)?;
        sweep(repo, opts.lease, &mut report, progress)?;
        condemn(repo, opts, &mut report, progress)?;
        if opts.now {
            report.waiting.clear();
            sweep(repo, opts.lease, &mut report, progress)?;
        }
        Ok(())
    })();
    drop(renewer);
    garbage::release(repo, claim)?;
    result.map(|()| report)
}

/// Keeps the repository claim of a long prune alive: rewritten with a later expiry every
/// sixth of its lease, so a prune of hours is not taken for a dead one by another machine.
struct ClaimRenewer {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClaimRenewer {
    fn start(repo: Arc<Repository>, name: String, me: SessionFile) -> ClaimRenewer {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let every = std::time::Duration::from_secs((garbage::CLAIM_SECS / 6) as u64);
        let thread = std::thread::spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(every)
            {
                let renewed = SessionFile {
                    expires: now_secs().saturating_add(garbage::CLAIM_SECS),
                    ..me.clone()
                };
                if let Err(e) = garbage::renew(&repo, &name, &renewed) {
                    tracing::warn!("renewing the prune's claim: {e}");
                }
            }
        });
        ClaimRenewer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ClaimRenewer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Removes the session files of writers whose lease lapsed long ago or whose process is gone:
/// they can no longer commit, and would hold every later prune back.
fn remove_lapsed_sessions(repo: &Repository, lease: Lease, report: &mut PruneReport) -> Result<()> {
    let now = now_secs();
    for (id, file) in session::list(repo)? {
        if let Ok(file) = file
            && file.liveness(now, lease.margin_secs) == Liveness::Lapsed
        {
            tracing::info!(
                "removing the session of a writer that stopped: {}",
                file.describe()
            );
            // Marked, not merely removed: a refresher that writes the file back cannot hide
            // from the writer's read-back that a prune gave up on it.
            session::mark_lapsed(repo, &id, now)?;
            report.sessions_removed += 1;
        }
    }
    for (id, set) in session::lapsed_markers(repo)? {
        if set.is_none_or(|set| now.saturating_sub(set) > MARKER_SECS) {
            session::remove_marker(repo, &id)?;
        }
    }
    Ok(())
}

/// How long the marker of a session a prune gave up on is kept: far longer than a writer can
/// sit between its lease check and its snapshot write, which is all the marker guards.
const MARKER_SECS: i64 = 86_400;

/// Every snapshot, all of which must open: a snapshot prune cannot read could reference
/// anything, and pruning around it would delete its data.
fn all_snapshots(repo: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    repo.snapshot_files()?
        .into_iter()
        .map(|(name, opened)| {
            opened.map_err(|e| {
                Error::Invalid(format!(
                    "{name} does not open ({e}): prune needs every snapshot; `cairn check` \
                     names it, `cairn forget <id>` removes it"
                ))
            })
        })
        .collect()
}

/// Refuses to go on when the snapshot listing names no snapshot while the index names packs:
/// that is what a store whose listing lags shows right after a backup, and believing it would
/// condemn every pack. A repository whose snapshots were all forgotten on purpose is better
/// deleted than pruned.
fn refuse_empty_listing(snapshots: &[(SnapshotId, Snapshot)], inventory: &Inventory) -> Result<()> {
    if snapshots.is_empty() && !inventory.by_pack.is_empty() {
        return Err(Error::Invalid(format!(
            "the store lists no snapshot, yet the index names {} packs: prune stops rather than \
             delete them all (a store whose listings lag shows this; it must be list-after-write \
             consistent). If every snapshot was forgotten on purpose, delete the repository \
             instead",
            inventory.by_pack.len()
        )));
    }
    Ok(())
}

/// The index as stored, refusing a damaged index file (its packs' contents would be unknown).
fn whole_inventory(repo: &Repository) -> Result<Inventory> {
    let inventory = Inventory::load(repo)?;
    if let Some((name, e)) = inventory.damaged_index_files.first() {
        return Err(Error::Invalid(format!(
            "{name} does not open ({e}): prune needs the whole index; run `cairn repair index`"
        )));
    }
    Ok(inventory)
}

/// Every blob the snapshots reach, with a progress line.
fn mark(
    repo: &Repository,
    inventory: &Inventory,
    snapshots: &[(SnapshotId, Snapshot)],
    progress: Progress,
) -> Result<HashSet<BlobId>> {
    progress("marking what the snapshots use", 0, snapshots.len() as u64);
    let used = used_blobs(repo, &inventory.index, snapshots)?;
    progress(
        "marking what the snapshots use",
        snapshots.len() as u64,
        snapshots.len() as u64,
    );
    Ok(used)
}
