//! Phase 2: for each garbage file whose recorded writer sessions have all ended or lapsed,
//! remove the lapsed sessions' files, *then* read the snapshots again, take back every
//! condemned pack a snapshot written meanwhile needs, write the index without the rest, delete
//! them, and only then remove the garbage file (DESIGN §6; the index is rewritten before the
//! deletions, not after, so that `check` passes wherever a prune is killed). A writer therefore
//! always sees the garbage file or finds the packs gone. Killed at any point, the next run
//! redoes what is left.

use super::rules;
use super::{Progress, PruneReport, all_snapshots, mark, refuse_empty_listing, whole_inventory};
use crate::error::{Error, Result};
use crate::ops::check::Inventory;
use crate::repo::Repository;
use crate::repo::garbage::{self, GarbageFile};
use crate::repo::ids::{GarbageId, PackId, SessionId};
use crate::repo::index::{Segment, SegmentPack};
use crate::repo::pack::pack_name;
use crate::repo::parity::parity_name;
use crate::repo::session::{self, Liveness, SessionFile};
use crate::repo::writer::{Lease, now_secs};
use std::collections::HashSet;

/// Runs phase 2 over every garbage file, adding what it did to `report`.
pub fn sweep(
    repo: &Repository,
    lease: Lease,
    report: &mut PruneReport,
    progress: Progress,
) -> Result<()> {
    garbage::remove_orphans(repo)?;
    for (gid, listed) in garbage::list(repo)? {
        if listed.sessions.is_none() {
            report.waiting.push(record_sessions(repo, &gid)?);
            continue;
        }
        // One sweeper per garbage file: two would decide apart (DESIGN §6 does not say; the
        // model in model.rs shows the loss).
        let me = SessionFile::for_this_process("prune", now_secs(), garbage::CLAIM_SECS);
        let Some(claim) = garbage::claim(repo, &gid, &me)? else {
            report.waiting.push(format!(
                "garbage/{}: another prune is deleting it",
                gid.short()
            ));
            continue;
        };
        let swept = sweep_claimed(repo, &gid, claim.made, lease, report, progress);
        garbage::release(repo, claim)?;
        swept?;
    }
    Ok(())
}

/// Phase 2 for one garbage file this prune has claimed: read again (another prune may have
/// finished it since the listing), wait for its sessions, then delete.
fn sweep_claimed(
    repo: &Repository,
    gid: &GarbageId,
    claimed: i64,
    lease: Lease,
    report: &mut PruneReport,
    progress: Progress,
) -> Result<()> {
    let Some(file) = garbage::read(repo, gid)? else {
        return Ok(());
    };
    match ready(repo, gid, &file, lease)? {
        Ready::Wait(why) => report.waiting.push(why),
        Ready::Go(lapsed) => {
            for id in &lapsed {
                session::mark_lapsed(repo, id, now_secs())?;
                report.sessions_removed += 1;
            }
            delete_condemned(repo, gid, &file, claimed, report, progress)?;
        }
    }
    Ok(())
}

/// A garbage file whose prune stopped before it recorded the open sessions: they are
/// recorded now (any writer not among them started after the file was written, and so avoids
/// its packs), and the file waits for them.
fn record_sessions(repo: &Repository, gid: &GarbageId) -> Result<String> {
    let open: Vec<_> = session::list(repo)?.into_iter().map(|(id, _)| id).collect();
    garbage::record_sessions(repo, gid, &open)?;
    Ok(format!(
        "garbage/{}: sessions recorded now (its prune stopped before); deleted once they end",
        gid.short()
    ))
}

enum Ready {
    /// Recorded sessions that lapsed: their files go first.
    Go(Vec<SessionId>),
    /// Why the garbage file waits.
    Wait(String),
}

/// Whether every session recorded in `file` has ended or lapsed. A file whose sessions were
/// never recorded (its prune died in between) has them recorded now and waits for them.
///
/// The recorded list is not trusted alone (DESIGN §6, "Defence in depth": a key holder can
/// write a garbage file recording no session, and a lagging listing can leave a writer out):
/// every session listed now that does not name this garbage file as seen — so may have
/// de-duplicated against its packs — is waited for as well.
fn ready(repo: &Repository, gid: &GarbageId, file: &GarbageFile, lease: Lease) -> Result<Ready> {
    let Some(recorded) = &file.sessions else {
        return Ok(Ready::Wait(record_sessions(repo, gid)?));
    };
    let mut waited_for: Vec<(SessionId, Option<Result<SessionFile>>)> =
        recorded.iter().map(|id| (*id, None)).collect();
    for (id, listed) in session::list(repo)? {
        let names_this = listed
            .as_ref()
            .is_ok_and(|open| open.seen_garbage.contains(gid));
        if !recorded.contains(&id) && !names_this {
            waited_for.push((id, Some(listed)));
        }
    }
    let now = now_secs();
    let mut lapsed = Vec::new();
    for (id, listed) in waited_for {
        let read = match listed {
            Some(listed) => listed,
            None => session::read(repo, &id),
        };
        match read {
            Err(Error::NotFound(_)) => {}
            Ok(open) => match open.liveness(now, lease.margin_secs) {
                Liveness::Lapsed => lapsed.push(id),
                Liveness::Open => {
                    return Ok(Ready::Wait(format!(
                        "garbage/{}: waits for {} to finish (lease until {})",
                        gid.short(),
                        open.describe(),
                        open.describe_expiry(now)
                    )));
                }
            },
            // A session file that is damaged cannot say when it lapses: it is given this
            // prune's lease (at least the default hour) and margin from the condemnation on.
            // Any other error (the store not answering) waits.
            Err(e @ Error::Corrupt { .. })
                if now
                    > file
                        .created
                        .saturating_add(lease.secs.max(3600))
                        .saturating_add(lease.margin_secs.max(3600)) =>
            {
                tracing::warn!("session {}: {e}; treated as lapsed", id.short());
                lapsed.push(id);
            }
            Err(e) => {
                return Ok(Ready::Wait(format!(
                    "garbage/{}: waits for session {} ({e})",
                    gid.short(),
                    id.short()
                )));
            }
        }
    }
    Ok(Ready::Go(lapsed))
}

/// Rewrites the index without the packs of one garbage file that no snapshot needs any more,
/// deletes those packs, then removes the garbage file.
fn delete_condemned(
    repo: &Repository,
    gid: &GarbageId,
    file: &GarbageFile,
    claimed: i64,
    report: &mut PruneReport,
    progress: Progress,
) -> Result<()> {
    let snapshots = all_snapshots(repo)?;
    // Garbage files before the packs, as in phase 1: a pack another prune deletes in between
    // is seen condemned or gone, never as the usable copy that lets this one go.
    let condemned_anywhere = garbage::condemned(&garbage::list(repo)?);
    let inventory = whole_inventory(repo)?;
    refuse_empty_listing(&snapshots, &inventory)?;
    let used = mark(repo, &inventory, &snapshots, progress)?;
    let stored: HashSet<PackId> = inventory.stored.keys().copied().collect();
    let (delete, revived) = rules::deletable(
        &file.packs,
        &inventory.by_pack,
        &inventory.index,
        &used,
        &stored,
        &condemned_anywhere,
    );
    if !revived.is_empty() {
        tracing::info!(
            "garbage/{}: {} packs kept: snapshots written since they were condemned use them",
            gid.short(),
            revived.len()
        );
    }
    // A sweep that took longer than its claim holds (the process was paused) stops here:
    // another prune may have taken the garbage file over.
    if now_secs().saturating_sub(claimed) > garbage::CLAIM_SECS {
        return Err(Error::Invalid(format!(
            "garbage/{}: this prune held its claim too long (it was paused); run prune again",
            gid.short()
        )));
    }
    // The index first: killed after it, the packs are merely unindexed (harmless, and `check`
    // passes); the other way round the index would name packs that are gone.
    let gone: HashSet<PackId> = delete.iter().copied().collect();
    report.index_files_rewritten += rewrite_index(repo, &inventory, &gone)?;
    for (i, pack) in delete.iter().enumerate() {
        tracing::debug!("garbage/{}: deleting pack {}", gid.short(), pack.short());
        repo.backend().delete(&pack_name(pack))?;
        // Its parity goes with it (one a crash leaves behind is removed as an orphan).
        match repo.backend().delete(&parity_name(pack)) {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        report.freed_bytes += inventory.stored.get(pack).copied().unwrap_or(0);
        progress("deleting packs", i as u64 + 1, delete.len() as u64);
    }
    // Parity stored without its pack: every writer that could still store the pack has
    // ended. A pack that arrived after all (or that a lagging listing hid) keeps its parity.
    for pack in &file.orphan_parity {
        if !matches!(
            repo.backend().stat(&pack_name(pack)),
            Err(Error::NotFound(_))
        ) {
            continue;
        }
        match repo.backend().stat(&parity_name(pack)) {
            Ok(_) => {
                repo.backend().delete(&parity_name(pack))?;
                report.removed_parity += 1;
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    report.deleted_packs += delete.len() as u64;
    report.revived_packs += revived.len() as u64;
    garbage::remove(repo, gid)?;
    report.garbage_done += 1;
    Ok(())
}

/// Writes every index file that names a pack in `deleted` (this prune deleted it) or one that
/// is gone — not in `inventory.stored`, which [`Inventory::load`] confirmed by asking for each
/// unlisted pack by name, so a listing that lags or omits a live pack does not strip the index
/// of it — again without it (the new file first, then the old one removed), so a writer never
/// de-duplicates against a pack that is gone once the garbage file that condemned it is
/// removed, and `check` finds no index entry without its pack. Returns the files rewritten.
pub(super) fn rewrite_index(
    repo: &Repository,
    inventory: &Inventory,
    deleted: &HashSet<PackId>,
) -> Result<u64> {
    let mut rewritten = 0;
    for (name, segment) in &inventory.segments {
        let keeps = |sp: &&SegmentPack| {
            inventory.stored.contains_key(&sp.pack) && !deleted.contains(&sp.pack)
        };
        if segment.packs.iter().all(|sp| keeps(&sp)) {
            continue;
        }
        let kept = Segment {
            packs: segment.packs.iter().filter(keeps).cloned().collect(),
        };
        if !kept.packs.is_empty() {
            repo.save_index_segment(&kept)?;
        }
        repo.backend().delete(name)?;
        rewritten += 1;
    }
    Ok(rewritten)
}
