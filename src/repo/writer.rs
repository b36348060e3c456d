//! The writer's half of the prune protocol (DESIGN §6), shared by backup, stage and repair: a
//! session file with a lease refreshed in the background, the packs the writer must not
//! de-duplicate against, and a commit that refuses after a lapsed lease and reads its session
//! back after writing the snapshot. No lock is taken: a prune waits for open sessions, and a
//! writer that a prune gave up on finds out before it reports success.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::garbage::{self, unusable_packs};
use crate::repo::ids::{GarbageId, PackId, SessionId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::reach::used_blobs;
use crate::repo::session::{self, SessionFile, new_session_id};
use crate::repo::snapshot::Snapshot;
use crossbeam_channel::{Sender, bounded};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A session's lease, and how long after it a prune waits before it treats the session as
/// lapsed (DESIGN §6: the margin covers a writer paused between its lease check and its
/// snapshot write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// How long a session stays valid without a refresh; refreshed every third of it.
    pub secs: i64,
    /// How much longer a prune waits before it treats a session as lapsed.
    pub margin_secs: i64,
}

/// One hour, as DESIGN §6 has it.
const DEFAULT_LEASE_SECS: i64 = 3600;

impl Lease {
    /// A lease of `secs`, with a margin of the lease again.
    pub fn of_secs(secs: i64) -> Lease {
        Lease {
            secs,
            margin_secs: secs,
        }
    }

    /// The lease commands use: an hour (DESIGN §6). `CAIRN_LEASE_SECS` shortens it, for tests
    /// that let sessions lapse.
    pub fn configured() -> Lease {
        let secs = std::env::var("CAIRN_LEASE_SECS")
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_LEASE_SECS)
            .min(crate::repo::session::MAX_LEASE_SECS);
        Lease::of_secs(secs)
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What the refresher and the committer share.
struct LeaseState {
    /// The session file as last written; a writer of it holds [`WriterSession::writing`]
    /// from taking its copy to storing it, so no rewrite undoes another.
    file: SessionFile,
    /// Set once the lease ran out unrefreshed: the writer may no longer commit, even if its
    /// session file is rewritten (a prune may already have given up on it).
    lapsed: bool,
}

/// What a writer counts on, as read by [`WriterSession::unusable_packs`]: the commit confirms
/// it is still there (DESIGN §6, "Defence in depth").
#[derive(Default)]
struct Reliance {
    /// Packs the index named, stored and not condemned, when the writer looked: what it may
    /// have de-duplicated against.
    packs: HashSet<PackId>,
    /// The garbage files it read then (and so avoided), named in its session file so that a
    /// prune deleting their packs need not wait for it.
    seen: HashSet<GarbageId>,
}

/// An open writer session. Dropping it ends the session (its file is removed).
pub struct WriterSession {
    repo: Arc<Repository>,
    id: SessionId,
    state: Arc<Mutex<LeaseState>>,
    /// Held across each rewrite of the session file (see [`LeaseState::file`]).
    writing: Arc<Mutex<()>>,
    reliance: Mutex<Reliance>,
    /// How many packs the repository handle had indexed when the session began: those it
    /// indexes after are this session's own.
    indexed_from: usize,
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl WriterSession {
    /// Opens a session for `command`: its file is stored before anything else is read, so a
    /// prune that condemns packs after this point records it, and one that condemned before is
    /// seen by [`WriterSession::unusable_packs`].
    pub fn begin(repo: Arc<Repository>, command: &str, lease: Lease) -> Result<WriterSession> {
        let id = new_session_id();
        let file = SessionFile::for_this_process(command, now_secs(), lease.secs);
        session::write(&repo, &id, &file)?;
        let state = Arc::new(Mutex::new(LeaseState {
            file,
            lapsed: false,
        }));
        let writing = Arc::new(Mutex::new(()));
        let (stop, stopped) = bounded::<()>(1);
        let refresher = {
            let (repo, state, writing) = (repo.clone(), state.clone(), writing.clone());
            let every = Duration::from_secs((lease.secs as u64 / 3).max(1));
            std::thread::spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let _writing = writing.lock();
                    if !refresh(&repo, &id, &state, lease.secs) {
                        break;
                    }
                }
            })
        };
        let indexed_from = repo.packs_indexed_count();
        Ok(WriterSession {
            repo,
            id,
            state,
            writing,
            reliance: Mutex::new(Reliance::default()),
            indexed_from,
            stop: Some(stop),
            refresher: Some(refresher),
        })
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The packs this writer must not de-duplicate against: those garbage files condemn, and
    /// those `index` names that are no longer stored. Read after the session file is stored.
    ///
    /// The garbage files read are then named in the session file: a prune that did not record
    /// this session (a lagging listing, or a garbage file a key holder wrote) waits for it
    /// unless it names that garbage file, whose packs this writer avoids.
    pub fn unusable_packs(&self, index: &Index) -> Result<HashSet<PackId>> {
        let listed = garbage::list(&self.repo)?;
        let condemned = garbage::condemned(&listed);
        let stored = stored_pack_ids(&self.repo)?;
        let unusable = unusable_packs(index.packs(), &stored, &condemned);
        let seen: Vec<GarbageId> = {
            let mut reliance = self.reliance.lock();
            reliance.packs.extend(
                index
                    .packs()
                    .iter()
                    .filter(|pack| !unusable.contains(pack))
                    .copied(),
            );
            reliance.seen.extend(listed.iter().map(|(gid, _)| *gid));
            reliance.seen.iter().copied().collect()
        };
        if !listed.is_empty() {
            self.name_seen_garbage(seen)?;
        }
        Ok(unusable)
    }

    /// Rewrites the session file naming `seen`, at most [`MAX_SEEN_GARBAGE`] of them (naming
    /// fewer only makes prunes wait longer).
    fn name_seen_garbage(&self, mut seen: Vec<GarbageId>) -> Result<()> {
        seen.sort();
        seen.truncate(MAX_SEEN_GARBAGE);
        let _writing = self.writing.lock();
        let file = {
            let mut state = self.state.lock();
            state.file.seen_garbage = seen;
            state.file.clone()
        };
        session::write(&self.repo, &self.id, &file)
    }

    /// Commits `snapshot`, whose blobs this session stored or found usable. Refused once the
    /// lease has run out. After the snapshot is written the session file is read back: if a
    /// prune removed it as lapsed, the snapshot is checked against the garbage files and the
    /// stored packs as they are now, and deleted (with an error) if it needs a condemned or
    /// deleted pack. Otherwise what it re-uses is confirmed still there
    /// ([`WriterSession::confirm_reused`]), with the same consequence if it is not.
    pub fn commit(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        {
            let state = self.state.lock();
            if state.lapsed || now_secs() >= state.file.expires {
                return Err(lapsed_error());
            }
        }
        let id = self.repo.save_snapshot(snapshot)?;
        let given_up = match session::read(&self.repo, &self.id) {
            Ok(_) => session::marked_lapsed(&self.repo, &self.id)
                .map_err(|e| e.to_string())
                .and_then(|marked| {
                    if marked {
                        Err("marked lapsed".into())
                    } else {
                        Ok(())
                    }
                }),
            Err(e) => Err(e.to_string()),
        };
        match given_up {
            Ok(()) => match self.confirm_reused(snapshot) {
                Ok(()) => Ok(id),
                Err(why) => Err(self.withdraw(
                    id,
                    &format!(
                        "{why}; a prune that did not wait for this writer (a store whose \
                         listings lag, or a garbage file that does not name its sessions) took \
                         it"
                    ),
                )),
            },
            Err(gone) => {
                tracing::warn!(
                    "the session is gone or was given up by a prune ({gone}): checking the \
                     snapshot against what prune condemned and deleted"
                );
                match still_stored(&self.repo, snapshot) {
                    Ok(()) => Ok(id),
                    Err(why) => Err(self.withdraw(
                        id,
                        &format!("{why}; a prune gave up on this session while it was paused"),
                    )),
                }
            }
        }
    }

    /// Removes snapshot `id`, just written, whose data a prune took: the error to report.
    fn withdraw(&self, id: SnapshotId, why: &str) -> Error {
        let removed = match self.repo.backend().delete(&format!("snapshots/{id}")) {
            Ok(()) => "it was removed".to_string(),
            Err(e) => format!("removing it failed ({e}): `cairn forget {id}`"),
        };
        Error::Invalid(format!(
            "snapshot {} not committed: {why}; {removed}; run the command again (what was \
             stored is re-used)",
            id.short()
        ))
    }

    /// Confirms, after the snapshot is written, that what it re-uses is still there (DESIGN
    /// §6, guard 2): every pack the writer counted on or indexed is stored, and none is
    /// condemned by a garbage file that will not wait for this writer (one that did not record
    /// its session). Two listings in the common case; only when a pack fails that does the
    /// snapshot's tree get walked, to see whether it needs one. A prune that starts later sees
    /// the snapshot; one that is deleting left its garbage file in place until done, so the
    /// read here finds it.
    fn confirm_reused(&self, snapshot: &Snapshot) -> std::result::Result<(), String> {
        let look = || -> Result<std::result::Result<(), String>> {
            let listed = garbage::list(&self.repo)?;
            // A garbage file waits for this writer if it records it. One whose sessions are not
            // recorded yet (its prune is between the two steps, or was killed there) is
            // recorded now, as the next prune would: the sessions open now, this one included.
            let mut not_waiting: HashSet<PackId> = HashSet::new();
            for (gid, file) in &listed {
                let recorded = match &file.sessions {
                    Some(recorded) => recorded.clone(),
                    None => garbage::record_sessions_now(&self.repo, gid, self.id)?,
                };
                if !recorded.contains(&self.id) {
                    not_waiting.extend(file.packs.iter().copied());
                }
            }
            let relied: HashSet<PackId> = self
                .reliance
                .lock()
                .packs
                .iter()
                .copied()
                .chain(self.repo.packs_indexed_since(self.indexed_from))
                .collect();
            // Garbage files before packs, as prune reads them; a pack counted on that the
            // listing left out is asked for by name (a listing lagging behind new packs must
            // not fail every backup).
            let stored: HashSet<PackId> =
                crate::repo::stored::stored_packs_confirming(&self.repo, relied.iter().copied())?
                    .into_keys()
                    .collect();
            let suspect = relied
                .iter()
                .any(|pack| not_waiting.contains(pack) || !stored.contains(pack));
            if !suspect {
                return Ok(Ok(()));
            }
            Ok(blobs_outside(&self.repo, snapshot, &stored, &not_waiting))
        };
        look().unwrap_or_else(|e| Err(format!("could not confirm its blobs are stored: {e}")))
    }

    /// Ends the session: its file is removed, and prunes waiting for it may go on. A failure
    /// to remove it is only logged: what the session guarded is committed or abandoned, and a
    /// prune removes the file once the lease has lapsed.
    pub fn end(self) {
        drop(self);
    }

    /// Stops refreshing the lease, as a writer paused (stopped, swapped out, its machine
    /// suspended) would: for tests of what prune and commit then do.
    pub fn stop_refreshing(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.refresher.take() {
            let _ = handle.join();
        }
        // Still this writer's to remove when it ends.
        self.refresher = Some(std::thread::spawn(|| {}));
    }

    fn stop_refresher(&mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.refresher.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for WriterSession {
    fn drop(&mut self) {
        if self.refresher.is_some() {
            self.stop_refresher();
            if let Err(e) = session::remove(&self.repo, &self.id) {
                tracing::warn!(
                    "removing session file {} (a prune removes it once its lease lapses): {e}",
                    self.id.short()
                );
            }
        }
    }
}

fn lapsed_error() -> Error {
    Error::Invalid(
        "the session's lease ran out (the process was paused, or the repository unreachable, for \
         longer than the lease): nothing was committed, so a prune cannot have deleted what \
         this run needs; run the command again (what was stored is re-used)"
            .into(),
    )
}

/// Extends the lease; `false` once it has lapsed or a prune gave up on it (then the refresher
/// stops). A rewrite that finishes after the old lease ran out may have recreated a file a
/// prune had removed, so the session is then lapsed for good; and the commit's read-back looks
/// for the prune's marker, which no rewrite hides.
fn refresh(repo: &Repository, id: &SessionId, state: &Mutex<LeaseState>, lease_secs: i64) -> bool {
    let (mut file, old_expiry) = {
        let state = state.lock();
        (state.file.clone(), state.file.expires)
    };
    // A prune that gave up on the session marked it: never write the file back over that.
    if now_secs() >= old_expiry || session::marked_lapsed(repo, id).unwrap_or(false) {
        state.lock().lapsed = true;
        return false;
    }
    file.expires = now_secs().saturating_add(lease_secs);
    let written = session::write(repo, id, &file);
    let mut state = state.lock();
    if now_secs() >= old_expiry {
        state.lapsed = true;
        return false;
    }
    match written {
        // Only the expiry: what else the file says may have changed since it was copied.
        Ok(()) => state.file.expires = file.expires,
        Err(e) => tracing::warn!("refreshing the session lease: {e} (retrying)"),
    }
    true
}

/// Every stored pack's id.
pub fn stored_pack_ids(repo: &Repository) -> Result<HashSet<PackId>> {
    Ok(crate::repo::stored::stored_packs(repo)?
        .into_keys()
        .collect())
}

/// Whether every blob `snapshot` references is in a stored pack no garbage file condemns,
/// read now: the check of a writer whose session a prune removed.
pub fn still_stored(repo: &Repository, snapshot: &Snapshot) -> std::result::Result<(), String> {
    let look = || -> Result<std::result::Result<(), String>> {
        let condemned = garbage::condemned(&garbage::list(repo)?);
        let stored = stored_pack_ids(repo)?;
        Ok(blobs_outside(repo, snapshot, &stored, &condemned))
    };
    look().unwrap_or_else(|e| Err(format!("could not confirm its blobs are stored: {e}")))
}

/// Whether every blob `snapshot` references is, by the index as stored now, in a pack of
/// `stored` outside `condemned`; else which blob is not.
fn blobs_outside(
    repo: &Repository,
    snapshot: &Snapshot,
    stored: &HashSet<PackId>,
    condemned: &HashSet<PackId>,
) -> std::result::Result<(), String> {
    let index = repo.load_index().map_err(|e| e.to_string())?;
    let unusable = unusable_packs(index.packs(), stored, condemned);
    let used = used_blobs(repo, &index, &[(SnapshotId::default(), snapshot.clone())])
        .map_err(|e| e.to_string())?;
    match used
        .iter()
        .find(|id| !index.contains_outside(id, &unusable))
    {
        Some(blob) => Err(format!(
            "blob {blob} is only in a pack a prune condemned or deleted"
        )),
        None => Ok(()),
    }
}

/// Most garbage files a session file names as seen: 32 bytes each, well inside a session file.
const MAX_SEEN_GARBAGE: usize = 1024;
