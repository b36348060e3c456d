//! The writer's half of the prune protocol (DESIGN §6), shared by backup, stage and repair: a
//! session file with a lease refreshed in the background, the packs the writer must not
//! de-duplicate against, and a commit that refuses after a lapsed lease and reads its session
//! back after writing the snapshot. No lock is taken: a prune waits for open sessions, and a
//! writer that a prune gave up on finds out before it reports success.

use crate::error::{Error, Result};
use crate::ops::prune::rules::unusable_packs;
use crate::ops::usage::used_blobs;
use crate::repo::Repository;
use crate::repo::garbage;
use crate::repo::ids::{PackId, SessionId, SnapshotId};
use crate::repo::index::Index;
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
            .unwrap_or(DEFAULT_LEASE_SECS);
        Lease::of_secs(secs)
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What the refresher and the committer share.
struct LeaseState {
    file: SessionFile,
    /// Set once the lease ran out unrefreshed: the writer may no longer commit, even if its
    /// session file is rewritten (a prune may already have given up on it).
    lapsed: bool,
}

/// An open writer session. Dropping it ends the session (its file is removed).
pub struct WriterSession {
    repo: Arc<Repository>,
    id: SessionId,
    state: Arc<Mutex<LeaseState>>,
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
        let (stop, stopped) = bounded::<()>(1);
        let refresher = {
            let (repo, state) = (repo.clone(), state.clone());
            let every = Duration::from_secs((lease.secs as u64 / 3).max(1));
            std::thread::spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    if !refresh(&repo, &id, &state, lease.secs) {
                        break;
                    }
                }
            })
        };
        Ok(WriterSession {
            repo,
            id,
            state,
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
    pub fn unusable_packs(&self, index: &Index) -> Result<HashSet<PackId>> {
        let condemned = garbage::condemned(&garbage::list(&self.repo)?);
        let stored = stored_pack_ids(&self.repo)?;
        Ok(unusable_packs(index.packs(), &stored, &condemned))
    }

    /// Commits `snapshot`, whose blobs this session stored or found usable. Refused once the
    /// lease has run out. After the snapshot is written the session file is read back: if a
    /// prune removed it as lapsed, the snapshot is checked against the garbage files and the
    /// stored packs as they are now, and deleted (with an error) if it needs a condemned or
    /// deleted pack.
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
            Ok(()) => Ok(id),
            Err(gone) => {
                tracing::warn!(
                    "the session is gone or was given up by a prune ({gone}): checking the \
                     snapshot against what prune condemned and deleted"
                );
                match still_stored(&self.repo, snapshot) {
                    Ok(()) => Ok(id),
                    Err(why) => {
                        let removed = self.repo.backend().delete(&format!("snapshots/{id}"));
                        let removed = match removed {
                            Ok(()) => "it was removed".to_string(),
                            Err(e) => format!("removing it failed ({e}): `cairn forget {id}`"),
                        };
                        Err(Error::Invalid(format!(
                            "snapshot {} not committed: {why}; a prune gave up on this session \
                             while it was paused; {removed}; run the command again",
                            id.short()
                        )))
                    }
                }
            }
        }
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
        Ok(()) => state.file = file,
        Err(e) => tracing::warn!("refreshing the session lease: {e} (retrying)"),
    }
    true
}

/// Every stored pack's id.
pub fn stored_pack_ids(repo: &Repository) -> Result<HashSet<PackId>> {
    Ok(crate::ops::check::stored_packs(repo)?.into_keys().collect())
}

/// Whether every blob `snapshot` references is in a stored pack no garbage file condemns,
/// read now: the check of a writer whose session a prune removed.
pub fn still_stored(repo: &Repository, snapshot: &Snapshot) -> std::result::Result<(), String> {
    let look = || -> Result<std::result::Result<(), String>> {
        let condemned = garbage::condemned(&garbage::list(repo)?);
        let stored = stored_pack_ids(repo)?;
        let index = repo.load_index()?;
        let unusable = unusable_packs(index.packs(), &stored, &condemned);
        let used = used_blobs(repo, &index, &[(SnapshotId::default(), snapshot.clone())])
            .map_err(|e| Error::Invalid(e.to_string()));
        let used = match used {
            Ok(used) => used,
            Err(e) => return Ok(Err(e.to_string())),
        };
        Ok(
            match used
                .iter()
                .find(|id| !index.contains_outside(id, &unusable))
            {
                Some(blob) => Err(format!(
                    "blob {blob} is only in a pack a prune condemned or deleted"
                )),
                None => Ok(()),
            },
        )
    };
    look().unwrap_or_else(|e| Err(format!("could not confirm its blobs are stored: {e}")))
}
