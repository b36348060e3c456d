//! Garbage files, `garbage/<id>`: what one prune condemned (DESIGN §6). Writers read them and
//! never de-duplicate against a blob held only by a condemned pack; a later prune deletes the
//! packs once every writer open at condemnation has ended, keeping any pack a snapshot written
//! meanwhile still needs.
//!
//! Condemnation is by pack: a blob stored again by a writer lives in a new pack, so "this pack
//! may go" is the only statement a writer and a pruner need to agree on.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::crypto::{MasterKey, fill_random};
use crate::repo::ids::{GarbageId, PackId, SessionId};
use crate::repo::serial;
use crate::repo::session::{Liveness, SessionFile};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

const GARBAGE_AAD: &[u8] = b"cairn garbage";

/// Largest garbage file read: 32 bytes per condemned pack, for some millions of packs.
pub const MAX_GARBAGE_LEN: u64 = 256 << 20;

/// One prune's condemnation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageFile {
    /// When the packs were condemned, in seconds since the epoch.
    pub created: i64,
    /// Packs to delete: none of their blobs was reachable, or the reachable ones were first
    /// copied into new packs.
    pub packs: Vec<PackId>,
    /// Their stored bytes, for reports.
    pub bytes: u64,
    /// The writer sessions open when the packs were condemned; `None` until recorded (a prune
    /// that crashed between writing the file and listing sessions: the next one records them
    /// and waits for them). Stored beside the file, in `garbage/<id>.sessions`, written once:
    /// no garbage file is ever rewritten, so no listing can miss one being replaced.
    #[serde(skip)]
    pub sessions: Option<Vec<SessionId>>,
    /// Packs whose parity object was stored without the pack (a writer between the two, or a
    /// prune between deleting them), to remove once every session open now has ended if the
    /// pack is still not stored. Stored beside the file, in `garbage/<id>.parity`, so that
    /// nothing that reads which packs are condemned ever counts them: such a pack may yet
    /// arrive, and is then a pack like any other.
    #[serde(skip)]
    pub orphan_parity: Vec<PackId>,
}

impl GarbageFile {
    fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.seal(&serial::encode(self), GARBAGE_AAD)
    }

    fn open(key: &MasterKey, name: &str, sealed: &[u8]) -> Result<GarbageFile> {
        let plain = key
            .open(sealed, GARBAGE_AAD)
            .map_err(|e| Error::corrupt(name, e))?;
        serial::decode(&plain, name)
    }
}

/// A fresh random garbage id.
pub fn new_garbage_id() -> GarbageId {
    let mut id = GarbageId::default();
    fill_random(&mut id.0);
    id
}

/// Writes a new garbage file (its sessions apart, with [`record_sessions`]), its orphan parity
/// first: a garbage file never exists without it.
pub fn write(repo: &Repository, id: &GarbageId, file: &GarbageFile) -> Result<()> {
    if !file.orphan_parity.is_empty() {
        let sealed = repo
            .key()
            .seal(&serial::encode(&file.orphan_parity), GARBAGE_AAD);
        repo.backend()
            .put(&format!("garbage/{id}{PARITY_SUFFIX}"), &sealed)?;
    }
    repo.backend()
        .put(&format!("garbage/{id}"), &file.seal(repo.key()))
}

/// What names the orphan parity a garbage file condemns: `garbage/<id>.parity`.
const PARITY_SUFFIX: &str = ".parity";

/// The orphan parity garbage file `id` condemns (none if it has no such record).
fn read_orphan_parity(repo: &Repository, id: &GarbageId) -> Result<Vec<PackId>> {
    Ok(read_record(repo, &format!("garbage/{id}{PARITY_SUFFIX}"))?.unwrap_or_default())
}

/// What names the sessions recorded for a garbage file: `garbage/<id>.sessions`.
const SESSIONS_SUFFIX: &str = ".sessions";

/// Records the sessions open after garbage file `id` was written, once: a second recording
/// (two prunes at once) keeps the first, which is as valid — any writer not in it started
/// after the garbage file existed, and so avoids its packs.
pub fn record_sessions(repo: &Repository, id: &GarbageId, sessions: &[SessionId]) -> Result<()> {
    let sealed = repo.key().seal(&serial::encode(&sessions), GARBAGE_AAD);
    repo.backend()
        .put_if_absent(&format!("garbage/{id}{SESSIONS_SUFFIX}"), &sealed)
        .map(drop)
}

/// Records, for garbage file `id` whose prune has not recorded its sessions yet, the sessions
/// open now and `me` (listed or not), as the next prune would; returns the record that holds
/// (this one, or one written first). A writer's commit calls this: a garbage file recording it
/// waits for it.
pub fn record_sessions_now(
    repo: &Repository,
    id: &GarbageId,
    me: SessionId,
) -> Result<Vec<SessionId>> {
    let mut open: Vec<SessionId> = crate::repo::session::list(repo)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    if !open.contains(&me) {
        open.push(me);
    }
    record_sessions(repo, id, &open)?;
    Ok(read_sessions(repo, id)?.unwrap_or(open))
}

fn read_sessions(repo: &Repository, id: &GarbageId) -> Result<Option<Vec<SessionId>>> {
    read_record(repo, &format!("garbage/{id}{SESSIONS_SUFFIX}"))
}

/// A sealed record stored beside a garbage file, `None` if there is none.
fn read_record<T: serde::de::DeserializeOwned>(repo: &Repository, name: &str) -> Result<Option<T>> {
    match repo.backend().get_bounded(name, MAX_GARBAGE_LEN) {
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
        Ok(sealed) => {
            let plain = repo
                .key()
                .open(&sealed, GARBAGE_AAD)
                .map_err(|e| Error::corrupt(name, e))?;
            serial::decode(&plain, name).map(Some)
        }
    }
}

/// Removes a garbage file, then its sessions: its packs are deleted or were taken back into
/// use.
pub fn remove(repo: &Repository, id: &GarbageId) -> Result<()> {
    repo.backend().delete(&format!("garbage/{id}"))?;
    repo.backend()
        .delete(&format!("garbage/{id}{SESSIONS_SUFFIX}"))?;
    repo.backend()
        .delete(&format!("garbage/{id}{PARITY_SUFFIX}"))
}

/// One garbage file, `None` once a prune finished it.
pub fn read(repo: &Repository, id: &GarbageId) -> Result<Option<GarbageFile>> {
    let name = format!("garbage/{id}");
    match repo.backend().get_bounded(&name, MAX_GARBAGE_LEN) {
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
        Ok(sealed) => {
            let mut file = GarbageFile::open(repo.key(), &name, &sealed)?;
            file.sessions = read_sessions(repo, id)?;
            file.orphan_parity = read_orphan_parity(repo, id)?;
            Ok(Some(file))
        }
    }
}

/// Every garbage file. One that does not open is an error, never skipped: a writer that
/// ignored it could de-duplicate against a pack about to be deleted. A name no prune gives a
/// garbage file (`garbage/README`, an editor's backup) is skipped with a warning, as
/// `sessions/` does: no prune wrote it, so it condemns nothing, and it must not stop every
/// backup and prune.
pub fn list(repo: &Repository) -> Result<Vec<(GarbageId, GarbageFile)>> {
    let mut out = Vec::new();
    for info in repo.backend().list("garbage/")? {
        if info.name.contains(CLAIM_INFIX)
            || info.name.ends_with(SESSIONS_SUFFIX)
            || info.name.ends_with(PARITY_SUFFIX)
        {
            continue;
        }
        // Exactly `garbage/<id>`: a copy in a subdirectory is not one.
        let tail = info.name.strip_prefix("garbage/").unwrap_or_default();
        let Ok(id) = GarbageId::from_hex(tail) else {
            tracing::warn!("{}: not a garbage file name; ignored", info.name);
            continue;
        };
        let sealed = match repo.backend().get_bounded(&info.name, MAX_GARBAGE_LEN) {
            Err(Error::NotFound(_)) => continue, // a prune finished it meanwhile
            other => other?,
        };
        let mut file = GarbageFile::open(repo.key(), &info.name, &sealed)?;
        file.sessions = read_sessions(repo, &id)?;
        file.orphan_parity = read_orphan_parity(repo, &id)?;
        out.push((id, file));
    }
    Ok(out)
}

/// What names a prune's claim on sweeping a garbage file: `garbage/<id>.claim.<claim id>`.
const CLAIM_INFIX: &str = ".claim.";

/// How long a claim holds: far longer than a sweep takes. A claim older than this was left by
/// a prune that died (elsewhere; on this host a dead prune's claim lapses at once), and is
/// ignored and removed; a sweep still running past it stops before it deletes.
pub const CLAIM_SECS: i64 = 3600;

/// A prune's claim on sweeping one garbage file (DESIGN §6 leaves two prunes at once open; an
/// exhaustive model shows that two sweeps of one garbage file decide apart — one takes a pack
/// back into use while the other deletes it — unless one of them backs off).
pub struct Claim {
    name: String,
    /// When it was made, in seconds since the epoch.
    pub made: i64,
}

/// Claims garbage file `gid` for the prune `me` describes (its host, process and a lease of
/// [`CLAIM_SECS`]): the claim is written, *then* the others' read. `None` (and no claim left
/// behind) when another prune holds a live claim on it: that one sweeps it. A claim whose
/// lease ran out or whose process is gone from this host is ignored and removed, so a killed
/// prune holds nothing back for long. Two prunes claiming at once may both back off; the next
/// run sweeps.
pub fn claim(repo: &Repository, gid: &GarbageId, me: &SessionFile) -> Result<Option<Claim>> {
    claim_named(repo, &format!("garbage/{gid}"), me)
}

/// Claims the whole repository for one prune: two prunes at once are refused. `Err` with
/// the other prune's description when one holds a live claim. Backups, stages and mounts
/// never look at it.
pub fn claim_pruning(repo: &Repository, me: &SessionFile) -> Result<Claim> {
    match claim_named(repo, "garbage/prune", me)? {
        Some(claim) => Ok(claim),
        None => Err(Error::Invalid(
            "another prune is running on this repository (two at once could delete what the \
             other keeps): run prune again once it has finished; a prune that was killed holds \
             nothing back (at once on its own host, after two hours elsewhere)"
                .into(),
        )),
    }
}

fn claim_named(repo: &Repository, scope: &str, me: &SessionFile) -> Result<Option<Claim>> {
    let mut cid = [0u8; 16];
    fill_random(&mut cid);
    let prefix = format!("{scope}{CLAIM_INFIX}");
    let name = format!("{prefix}{}", hex::encode(cid));
    let sealed = repo.key().seal(&me.to_bytes(), GARBAGE_AAD);
    repo.backend().put(&name, &sealed)?;
    let mut contested = false;
    // Listings are by directory: the claims are the names in `garbage/` that start with it.
    let claims = repo.backend().list("garbage/")?;
    for info in claims.iter().filter(|i| i.name.starts_with(&prefix)) {
        if info.name == name {
            continue;
        }
        let holder = repo
            .backend()
            .get_bounded(&info.name, MAX_CLAIM_LEN)
            .ok()
            .and_then(|sealed| repo.key().open(&sealed, GARBAGE_AAD).ok())
            .and_then(|plain| SessionFile::from_bytes(&plain, &info.name).ok());
        match holder {
            Some(holder) if holder.liveness(me.started, 0) == Liveness::Open => contested = true,
            // Left by a prune that died (or unreadable): it holds nothing back.
            _ => repo.backend().delete(&info.name)?,
        }
    }
    if contested {
        repo.backend().delete(&name)?;
        return Ok(None);
    }
    Ok(Some(Claim {
        name,
        made: me.started,
    }))
}

impl Claim {
    /// The claim file's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Rewrites a claim with `me` (a later expiry), keeping a long prune's claim alive.
pub fn renew(repo: &Repository, name: &str, me: &SessionFile) -> Result<()> {
    repo.backend()
        .put(name, &repo.key().seal(&me.to_bytes(), GARBAGE_AAD))
}

/// Removes what garbage files leave behind once they are gone: recorded sessions, orphan
/// parity records and claims of garbage files that no longer exist (a prune killed between removing a garbage file and
/// these).
pub fn remove_orphans(repo: &Repository) -> Result<()> {
    let listed = repo.backend().list("garbage/")?;
    let names: HashSet<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    for info in &listed {
        let owner = info
            .name
            .strip_suffix(SESSIONS_SUFFIX)
            .or_else(|| info.name.strip_suffix(PARITY_SUFFIX))
            .or_else(|| info.name.split_once(CLAIM_INFIX).map(|(owner, _)| owner));
        let Some(owner) = owner else { continue };
        let is_garbage_id = owner
            .strip_prefix("garbage/")
            .is_some_and(|id| GarbageId::from_hex(id).is_ok());
        if is_garbage_id && !names.contains(owner) {
            repo.backend().delete(&info.name)?;
        }
    }
    Ok(())
}

/// Gives a claim up: the sweep is done or abandoned.
pub fn release(repo: &Repository, claim: Claim) -> Result<()> {
    repo.backend().delete(&claim.name)
}

/// A claim file: the claimant, sealed.
const MAX_CLAIM_LEN: u64 = 4 << 10;

/// Every pack some garbage file condemns.
pub fn condemned(files: &[(GarbageId, GarbageFile)]) -> HashSet<PackId> {
    files
        .iter()
        .flat_map(|(_, file)| file.packs.iter().copied())
        .collect()
}

/// Packs a writer must not de-duplicate against: condemned by a garbage file (about to be
/// deleted), or named by the index but no longer stored (an index file a concurrent prune had
/// not yet rewritten).
pub fn unusable_packs(
    indexed: &[PackId],
    stored: &HashSet<PackId>,
    condemned: &HashSet<PackId>,
) -> HashSet<PackId> {
    indexed
        .iter()
        .filter(|p| condemned.contains(p) || !stored.contains(p))
        .copied()
        .chain(condemned.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterSecrets;

    #[test]
    fn garbage_files_round_trip_and_reject_tampering() {
        let key = MasterKey::new(MasterSecrets::generate());
        let file = GarbageFile {
            created: 9,
            packs: vec![PackId([1; 32]), PackId([2; 32])],
            bytes: 77,
            sessions: Some(vec![SessionId([3; 32])]),
            orphan_parity: Vec::new(),
        };
        let mut sealed = file.seal(&key);
        // The sessions are stored apart.
        let opened = GarbageFile::open(&key, "g", &sealed).unwrap();
        assert_eq!(opened.sessions, None);
        assert_eq!(
            opened,
            GarbageFile {
                sessions: None,
                ..file.clone()
            }
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(GarbageFile::open(&key, "g", &sealed).is_err());
        let both = condemned(&[
            (GarbageId([0; 32]), file.clone()),
            (GarbageId([1; 32]), file),
        ]);
        assert_eq!(both.len(), 2);
    }
}
