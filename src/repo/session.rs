//! Writer session files, `sessions/<id>`: how a backup, stage or repair tells a prune it is
//! running (DESIGN §6). A prune records the sessions open when it condemned packs and deletes
//! nothing until each has ended or lapsed; a session whose lease ran out long ago is a dead
//! writer's, and prune removes it.
//!
//! A session is sealed like a snapshot (it names a host and a process), rewritten in place as
//! its lease is refreshed, and small.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::crypto::{MasterKey, fill_random};
use crate::repo::ids::{GarbageId, SessionId};
use crate::repo::serial;
use serde::{Deserialize, Serialize};

const SESSION_AAD: &[u8] = b"cairn session";

/// Largest session file read: a few names and numbers.
pub const MAX_SESSION_LEN: u64 = 64 << 10;

/// The longest lease a session may claim: one day. A writer refreshes its lease every third
/// of it, so no honest writer needs more; a session file claiming more (a crafted one with a
/// lease of `i64::MAX`) counts as claiming this, so it cannot hold every prune back forever.
pub const MAX_LEASE_SECS: i64 = 86_400;

/// How far another machine's clock may be ahead of this one's before what its session files
/// claim stops being believed: a day, so that a host whose clock is hours off (a hardware
/// clock kept in local time) is never taken for a crafted file.
const CLOCK_SKEW_SECS: i64 = 86_400;

/// One open writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFile {
    /// What is writing (`backup`, `stage`, `repair`), for messages.
    pub command: String,
    /// The writer's host name.
    pub host: String,
    /// The host's boot id, so a pid is compared only within the boot that gave it out.
    pub boot_id: String,
    /// The writer's pid namespace (`/proc/self/ns/pid`), so a pid is compared only within the
    /// namespace that gave it out: two containers may share a host name and a boot.
    pub pid_namespace: String,
    /// The writer's process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot, so a reused pid is not mistaken for
    /// the writer.
    pub process_start: u64,
    /// When the session began, in seconds since the epoch.
    pub started: i64,
    /// Until when the writer promises to refresh or finish, in seconds since the epoch.
    pub expires: i64,
    /// The writer's lease: a prune waits at least this long past `expires` (the margin), even
    /// if its own setting is shorter.
    pub lease_secs: i64,
    /// The garbage files the writer read before it de-duplicated: it avoids their packs, so a
    /// prune deleting them need not wait for it. Any other garbage file waits for this session
    /// whether or not it recorded it (DESIGN §6, "Defence in depth").
    pub seen_garbage: Vec<GarbageId>,
}

/// The session format written: 2 added `seen_garbage`.
const SESSION_VERSION: u8 = 2;

/// A session as the first format had it, read from writers not yet upgraded.
#[derive(Deserialize)]
struct SessionFileV1 {
    command: String,
    host: String,
    boot_id: String,
    pid_namespace: String,
    pid: u32,
    process_start: u64,
    started: i64,
    expires: i64,
    lease_secs: i64,
}

impl From<SessionFileV1> for SessionFile {
    fn from(v1: SessionFileV1) -> SessionFile {
        SessionFile {
            command: v1.command,
            host: v1.host,
            boot_id: v1.boot_id,
            pid_namespace: v1.pid_namespace,
            pid: v1.pid,
            process_start: v1.process_start,
            started: v1.started,
            expires: v1.expires,
            lease_secs: v1.lease_secs,
            seen_garbage: Vec::new(),
        }
    }
}

/// Whether a recorded session still holds back a prune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Within its lease (plus the margin): the writer may still commit.
    Open,
    /// Its lease ran out more than the margin ago, or its process is gone from this host.
    Lapsed,
}

impl SessionFile {
    /// A session for this process, valid for `lease_secs` from `now`.
    pub fn for_this_process(command: &str, now: i64, lease_secs: i64) -> SessionFile {
        let pid = std::process::id();
        SessionFile {
            command: command.to_string(),
            host: crate::repo::identity::hostname(),
            boot_id: boot_id(),
            pid,
            pid_namespace: pid_namespace(),
            process_start: process_start(pid).unwrap_or(0),
            started: now,
            expires: now.saturating_add(lease_secs),
            lease_secs,
            seen_garbage: Vec::new(),
        }
    }

    /// Whether the session holds back a prune at `now`. A writer refuses to commit once its
    /// lease has run out; prune waits a margin longer — its own, or the writer's lease if that
    /// is longer — so a writer that passed that check a moment before its lease ran out still
    /// finds its session at the read-back. A session of this host, boot and pid namespace
    /// whose process is certainly gone lapses at once: its writer cannot commit.
    ///
    /// What a session claims is capped (a key holder can write any session file): a lease
    /// longer than [`MAX_LEASE_SECS`] counts as that long, a session that says it began more
    /// than a day in the future has lapsed, and an expiry further ahead than any refresh could
    /// have set is not believed — the session then expires one capped lease after it began. So
    /// no session file holds prunes back for more than a few days after it was written.
    pub fn liveness(&self, now: i64, margin: i64) -> Liveness {
        if self.started > now.saturating_add(CLOCK_SKEW_SECS) {
            return Liveness::Lapsed;
        }
        let margin = margin.max(self.capped_lease());
        if now > self.expiry(now).saturating_add(margin) || self.process_gone() {
            Liveness::Lapsed
        } else {
            Liveness::Open
        }
    }

    /// The lease the session is granted: its own, at most [`MAX_LEASE_SECS`].
    fn capped_lease(&self) -> i64 {
        self.lease_secs.clamp(0, MAX_LEASE_SECS)
    }

    /// When the session's lease ends as far as a prune at `now` believes it: the expiry it
    /// claims, unless that is further ahead than a refresh at `now` could have set (a crafted
    /// or clock-broken file), in which case one capped lease after it began.
    pub fn expiry(&self, now: i64) -> i64 {
        let lease = self.capped_lease();
        if self.expires > now.saturating_add(lease).saturating_add(CLOCK_SKEW_SECS) {
            self.started.saturating_add(lease)
        } else {
            self.expires
        }
    }

    /// The end of the lease for messages, as a prune at `now` counts it: a full local date.
    pub fn describe_expiry(&self, now: i64) -> String {
        let expiry = self.expiry(now);
        chrono::DateTime::from_timestamp(expiry, 0)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|| format!("{expiry} s after 1970"))
    }

    /// Whether the writer's process is known to be gone: only when the pid was given out by
    /// this very kernel and namespace, and the process either does not exist (`kill(pid, 0)`
    /// says so even where `/proc` hides other users' processes) or is another one (its start
    /// time differs). Anything uncertain counts as alive.
    fn process_gone(&self) -> bool {
        let here = !self.boot_id.is_empty()
            && self.boot_id == boot_id()
            && !self.pid_namespace.is_empty()
            && self.pid_namespace == pid_namespace()
            && self.host == crate::repo::identity::hostname();
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        if !here || pid <= 0 {
            return false;
        }
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::ESRCH) => true,
            _ => process_start(self.pid).is_some_and(|start| start != self.process_start),
        }
    }

    /// One line for messages: `backup on host (pid 42) since 14:05`.
    pub fn describe(&self) -> String {
        let since = chrono::DateTime::from_timestamp(self.started, 0)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        format!(
            "{} on {} (pid {}) since {since}",
            self.command, self.host, self.pid
        )
    }

    fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.seal(&self.to_bytes(), SESSION_AAD)
    }

    fn open(key: &MasterKey, name: &str, sealed: &[u8]) -> Result<SessionFile> {
        let plain = key
            .open(sealed, SESSION_AAD)
            .map_err(|e| Error::corrupt(name, e))?;
        SessionFile::from_bytes(&plain, name)
    }

    /// The serialized session, at [`SESSION_VERSION`] (claims carry one too).
    pub fn to_bytes(&self) -> Vec<u8> {
        serial::encode_version(SESSION_VERSION, self)
    }

    /// Parses a session of any version written so far; `what` names it in errors. A first
    /// version's session named no garbage files as seen.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<SessionFile> {
        match serial::split_version(bytes, what)? {
            (1, body) => serial::decode_body::<SessionFileV1>(body, what).map(SessionFile::from),
            (SESSION_VERSION, body) => serial::decode_body(body, what),
            (version, _) => Err(serial::unknown_version(version, what)),
        }
    }
}

/// The running kernel's boot id; empty where there is none (then no pid is trusted).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This process's pid namespace, e.g. `pid:[4026531836]`; empty where unknown.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// A fresh random session id.
pub fn new_session_id() -> SessionId {
    let mut id = SessionId::default();
    fill_random(&mut id.0);
    id
}

fn name_of(id: &SessionId) -> String {
    format!("sessions/{id}")
}

/// Writes (or rewrites) a session file.
pub fn write(repo: &Repository, id: &SessionId, file: &SessionFile) -> Result<()> {
    repo.backend().put(&name_of(id), &file.seal(repo.key()))
}

/// Reads a session file; [`Error::NotFound`] once it has ended or been removed as lapsed.
pub fn read(repo: &Repository, id: &SessionId) -> Result<SessionFile> {
    let name = name_of(id);
    let sealed = repo.backend().get_bounded(&name, MAX_SESSION_LEN)?;
    SessionFile::open(repo.key(), &name, &sealed)
}

/// Removes a session file: its writer ended it.
pub fn remove(repo: &Repository, id: &SessionId) -> Result<()> {
    repo.backend().delete(&name_of(id))?;
    repo.backend()
        .delete(&format!("{}{LAPSED_SUFFIX}", name_of(id)))
}

/// What marks a session a prune gave up on: `sessions/<id>.lapsed`.
const LAPSED_SUFFIX: &str = ".lapsed";

/// Gives up on a lapsed session: a marker is stored, *then* the session file removed. The
/// marker outlives anything the writer does — a refresher that rewrites the session file a
/// moment later cannot hide it — so the writer's read-back at commit finds out for certain.
pub fn mark_lapsed(repo: &Repository, id: &SessionId, now: i64) -> Result<()> {
    let marker = repo.key().seal(&serial::encode(&now), SESSION_AAD);
    repo.backend()
        .put(&format!("{}{LAPSED_SUFFIX}", name_of(id)), &marker)?;
    repo.backend().delete(&name_of(id))
}

/// Whether a prune gave up on session `id`.
pub fn marked_lapsed(repo: &Repository, id: &SessionId) -> Result<bool> {
    match repo
        .backend()
        .stat(&format!("{}{LAPSED_SUFFIX}", name_of(id)))
    {
        Ok(_) => Ok(true),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Markers of lapsed sessions whose writer has no session file left, with when each was set
/// (`None` if it does not open): a prune removes those older than any writer could still be
/// paused for.
pub fn lapsed_markers(repo: &Repository) -> Result<Vec<(SessionId, Option<i64>)>> {
    let listed = repo.backend().list("sessions/")?;
    let names: std::collections::HashSet<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    let mut out = Vec::new();
    for info in &listed {
        let Some(session) = info.name.strip_suffix(LAPSED_SUFFIX) else {
            continue;
        };
        let Ok(id) = SessionId::from_hex(session.rsplit('/').next().unwrap_or_default()) else {
            continue;
        };
        if names.contains(session) {
            continue;
        }
        let set = repo
            .backend()
            .get_bounded(&info.name, MAX_SESSION_LEN)
            .ok()
            .and_then(|sealed| repo.key().open(&sealed, SESSION_AAD).ok())
            .and_then(|plain| serial::decode::<i64>(&plain, &info.name).ok());
        out.push((id, set));
    }
    Ok(out)
}

/// Removes the marker of a lapsed session.
pub fn remove_marker(repo: &Repository, id: &SessionId) -> Result<()> {
    repo.backend()
        .delete(&format!("{}{LAPSED_SUFFIX}", name_of(id)))
}

/// Every session file, each opened on its own. A damaged one is returned as its error: prune
/// treats it as open until its lease could have run out, never as absent.
pub fn list(repo: &Repository) -> Result<Vec<(SessionId, Result<SessionFile>)>> {
    let mut out = Vec::new();
    for info in repo.backend().list("sessions/")? {
        if info.name.ends_with(LAPSED_SUFFIX) {
            continue;
        }
        let tail = info.name.rsplit('/').next().unwrap_or_default();
        let Ok(id) = SessionId::from_hex(tail) else {
            tracing::warn!("{}: not a session name; ignored", info.name);
            continue;
        };
        let file = match read(repo, &id) {
            Err(Error::NotFound(_)) => continue, // ended between the listing and the read
            other => other,
        };
        out.push((id, file));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_open_and_a_dead_pid_of_this_boot_has_lapsed() {
        let now = 1_000_000;
        let me = SessionFile::for_this_process("backup", now, 3600);
        assert_ne!(me.process_start, 0, "this process's start time is readable");
        assert_eq!(me.liveness(now, 3600), Liveness::Open);
        assert_eq!(me.liveness(now + 7199, 3600), Liveness::Open);
        assert_eq!(me.liveness(now + 7201, 3600), Liveness::Lapsed);
        let reused_pid = SessionFile {
            process_start: me.process_start + 1,
            ..me.clone()
        };
        assert_eq!(reused_pid.liveness(now, 3600), Liveness::Lapsed);
        let elsewhere = SessionFile {
            host: format!("{}-other", me.host),
            process_start: 1,
            ..me.clone()
        };
        assert_eq!(elsewhere.liveness(now, 3600), Liveness::Open);
        // Another pid namespace (a container with the same host name): the pid says nothing.
        let other_namespace = SessionFile {
            pid_namespace: "pid:[1]".into(),
            process_start: me.process_start + 1,
            ..me.clone()
        };
        assert_eq!(other_namespace.liveness(now, 3600), Liveness::Open);
        // A prune with a shorter setting still waits the writer's own lease past expiry.
        let long = SessionFile::for_this_process("backup", now, 7200);
        let gone = SessionFile {
            host: format!("{}-other", me.host),
            ..long
        };
        assert_eq!(gone.liveness(now + 7200 + 7199, 1), Liveness::Open);
        assert_eq!(gone.liveness(now + 7200 + 7201, 1), Liveness::Lapsed);
    }

    #[test]
    fn a_session_claiming_an_endless_lease_lapses_a_capped_lease_after_it_began() {
        let now = 1_000_000;
        let crafted = SessionFile {
            host: "elsewhere".into(),
            lease_secs: i64::MAX,
            expires: i64::MAX,
            ..SessionFile::for_this_process("backup", now, 3600)
        };
        let lapses = now + 2 * MAX_LEASE_SECS;
        assert_eq!(crafted.expiry(now), now + MAX_LEASE_SECS);
        assert_eq!(crafted.liveness(lapses, 3600), Liveness::Open);
        assert_eq!(crafted.liveness(lapses + 1, 3600), Liveness::Lapsed);
        assert!(crafted.describe_expiry(now).starts_with("1970-01-"));
        // One that claims to have begun in the future has lapsed already.
        let future = SessionFile {
            started: now + 10 * CLOCK_SKEW_SECS,
            ..crafted
        };
        assert_eq!(future.liveness(now, 3600), Liveness::Lapsed);
    }

    #[test]
    fn session_files_round_trip_and_reject_tampering() {
        use crate::repo::crypto::MasterSecrets;
        let key = MasterKey::new(MasterSecrets::generate());
        let file = SessionFile::for_this_process("stage", 5, 10);
        let mut sealed = file.seal(&key);
        assert_eq!(SessionFile::open(&key, "s", &sealed).unwrap(), file);
        sealed[20] ^= 1;
        assert!(matches!(
            SessionFile::open(&key, "s", &sealed),
            Err(Error::Corrupt { .. })
        ));
    }
}
