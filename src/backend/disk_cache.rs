//! An optional local disk cache in front of a remote store (`mount --cache-dir`), so that what
//! a long-running mount has read once — index files, snapshots, pack ranges — is not fetched
//! over the network again. Never required: without it every read goes to the store.
//!
//! Only objects that never change under their name are cached (`data/`, `index/`,
//! `snapshots/`: named by their content's hash), each range in a file of its own named by the
//! hash of the object name and range. Whole index and snapshot files are cached only when they
//! hash to their name; pack ranges cannot be checked here (that needs the key), so a reader
//! whose bytes fail verification calls [`Backend::forget_cached`] before it reads again. Each
//! cached file's checksum is checked on every hit, and the file is opened without following
//! links or blocking, as a regular file no larger than what was asked for.
//!
//! The cache lives in `DIR/cairn-cache`, opened once: links in the path the user gave are
//! resolved at the start, then every directory of the result is opened relative to the one
//! above it without following links (as a path: search permission is enough) and checked with
//! `fstat` — each owned by root or the user and not writable by others unless sticky,
//! `cairn-cache` itself the user's and private — and every create, read, rename and unlink
//! afterwards is relative to that descriptor. Swapping a directory on the path for a link after
//! the mount starts changes nothing: the cache keeps using the directory it opened. Each cached
//! file starts with the SHA-256 of its name and bytes. Only regular files of this user named as
//! this cache names them are counted and evicted, the least recently written first, until
//! three quarters of the size remain, by one eviction at a time.

use crate::backend::{Backend, ObjectInfo, Ranges};
use crate::digest::sha256;
use crate::error::{Error, Result};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Object kinds whose bytes never change under their name.
const IMMUTABLE: [&str; 3] = ["data/", "index/", "snapshots/"];
/// Bytes before a cached file's content: its SHA-256.
const CHECKSUM_LEN: u64 = 32;
/// The directory of cairn's own inside the one the user names.
const CACHE_DIR_NAME: &str = "cairn-cache";

/// A store with a disk cache of its immutable objects in front.
pub struct DiskCached {
    inner: Arc<dyn Backend>,
    /// `DIR/cairn-cache`, opened once; every file operation is relative to it.
    dir: OwnedFd,
    /// Where it is, for messages.
    shown: String,
    /// The user the cache's files belong to.
    uid: u32,
    limit: u64,
    /// Bytes of cache files in the directory, as this process counts them.
    used: Mutex<u64>,
    /// Held by the one eviction running; others skip theirs (it frees room for them too).
    shrinking: Mutex<()>,
    /// Set when eviction could not bring the directory under its size: nothing more is cached.
    full: AtomicBool,
    /// Makes each temporary file name unique within the process.
    temps: AtomicU64,
}

/// What a cache file starts with: the SHA-256 of its name and bytes, so a file renamed under
/// another key does not pass for it.
fn checksum(file: &str, data: &[u8]) -> [u8; 32] {
    let mut keyed = Vec::with_capacity(file.len() + data.len());
    keyed.extend_from_slice(file.as_bytes());
    keyed.extend_from_slice(data);
    sha256(&keyed)
}

/// Whether `name` is one this cache gives its files: 64 hex digits.
fn is_cache_name(name: &[u8]) -> bool {
    name.len() == 64 && name.iter().all(u8::is_ascii_hexdigit)
}

/// Whether a directory on the way to the cache is safe to pass through: owned by root or
/// `uid`, and not open to others' writes unless sticky (as `/tmp` is: others cannot rename or
/// remove what the user made there).
fn safe_to_pass(stat: &FileStat, uid: u32) -> bool {
    let mode = stat.st_mode;
    let writable_by_others = mode & 0o022 != 0;
    let sticky = mode & libc::S_ISVTX != 0;
    (stat.st_uid == 0 || stat.st_uid == uid) && (!writable_by_others || sticky)
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
}

fn is_regular(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
}

/// How a directory on the way is opened: as a path only (search permission is enough, as on a
/// 0711 home), never through a link.
fn path_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens directory `name` in `parent` with `flags` (made 0700 when missing), never through a
/// link.
fn open_or_make(
    parent: &OwnedFd,
    name: &OsStr,
    flags: OFlag,
) -> std::result::Result<OwnedFd, Errno> {
    match openat(parent.as_fd(), name, flags, Mode::empty()) {
        Err(Errno::ENOENT) => {
            match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            openat(parent.as_fd(), name, flags, Mode::empty())
        }
        other => other,
    }
}

/// `dir` with the links of the part that exists resolved (`/var/run/x` is `/run/x`): the user
/// named it, and every directory of the result is checked as it is opened. What does not exist
/// yet is appended as given.
fn resolved(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let absolute = std::path::absolute(dir)?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(mut real) => {
                real.extend(missing.iter().rev());
                return Ok(real);
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    missing.push(name.to_owned());
                    existing = parent;
                }
                _ => return Ok(absolute),
            },
        }
    }
}

/// Opens `dir/cairn-cache` for user `uid` as described in the module comment, making what is
/// missing; refuses a path through a link, a directory another user could change, or a cache
/// directory that is not the user's and private.
fn open_cache_dir(dir: &Path, uid: u32) -> Result<OwnedFd> {
    let shown = dir.display().to_string();
    let refuse = |what: String| Error::Invalid(format!("--cache-dir {shown}: {what}"));
    let absolute = resolved(dir).map_err(|e| refuse(e.to_string()))?;
    let mut at: OwnedFd = openat(nix::fcntl::AT_FDCWD, "/", path_flags(), Mode::empty())
        .map_err(|e| refuse(format!("opening /: {e}")))?;
    let mut walked = std::path::PathBuf::from("/");
    let check = |fd: &OwnedFd, walked: &Path| -> Result<()> {
        let stat = fstat(fd.as_fd()).map_err(|e| refuse(e.to_string()))?;
        if !is_dir(&stat) {
            return Err(refuse(format!("{} is not a directory", walked.display())));
        }
        if !safe_to_pass(&stat, uid) {
            return Err(refuse(format!(
                "{} can be changed by another user (owned by uid {}, mode {:o}): refusing to \
                 keep a cache below it",
                walked.display(),
                stat.st_uid,
                stat.st_mode & 0o7777
            )));
        }
        Ok(())
    };
    check(&at, &walked)?;
    for component in absolute.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir => {
                return Err(refuse(
                    "'..' in the path: name the directory plainly".into(),
                ));
            }
            Component::Prefix(_) => continue,
        };
        walked.push(name);
        at = open_or_make(&at, name, path_flags()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                refuse(format!("{} is a link or not a directory", walked.display()))
            }
            e => refuse(format!("opening {}: {e}", walked.display())),
        })?;
        check(&at, &walked)?;
    }
    walked.push(CACHE_DIR_NAME);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let ours = open_or_make(&at, OsStr::new(CACHE_DIR_NAME), flags)
        .map_err(|e| refuse(format!("opening {}: {e}", walked.display())))?;
    let stat = fstat(ours.as_fd()).map_err(|e| refuse(e.to_string()))?;
    if !is_dir(&stat) || stat.st_uid != uid || stat.st_mode & 0o077 != 0 {
        return Err(refuse(format!(
            "{} is not a private directory of this user (someone else's, or open to others): \
             refusing to use it",
            walked.display()
        )));
    }
    Ok(ours)
}

impl DiskCached {
    /// A cache of at most `limit` bytes in `dir/cairn-cache`, in front of `inner`, for the
    /// user running this process.
    pub fn open(inner: Arc<dyn Backend>, dir: &Path, limit: u64) -> Result<DiskCached> {
        let uid = nix::unistd::geteuid().as_raw();
        let fd = open_cache_dir(dir, uid)?;
        let cache = DiskCached {
            inner,
            dir: fd,
            shown: dir.join(CACHE_DIR_NAME).display().to_string(),
            uid,
            limit,
            used: Mutex::new(0),
            shrinking: Mutex::new(()),
            full: AtomicBool::new(false),
            temps: AtomicU64::new(0),
        };
        // Temporary files of a process killed while writing one: never renamed, never counted.
        // (One being written by a concurrent mount only loses its rename: not cached.)
        for (name, _) in cache.entries(|name| name.starts_with(b".tmp-")) {
            let _ = unlinkat(
                cache.dir.as_fd(),
                name.as_slice(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        let used = cache.cache_files().iter().map(|f| f.1).sum();
        *cache.used.lock() = used;
        Ok(cache)
    }

    /// The entries of the cache directory whose names pass `wanted` and that are regular files
    /// of this user, each with its `fstatat` (never following a link).
    fn entries(&self, wanted: impl Fn(&[u8]) -> bool) -> Vec<(Vec<u8>, FileStat)> {
        // Opened afresh through the descriptor: its own offset, the same directory.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let Ok(mut listing) = Dir::openat(self.dir.as_fd(), ".", flags, Mode::empty()) else {
            return Vec::new();
        };
        let names: Vec<Vec<u8>> = listing
            .iter()
            .flatten()
            .map(|entry| entry.file_name().to_bytes().to_vec())
            .filter(|name| wanted(name))
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let stat = fstatat(
                    self.dir.as_fd(),
                    name.as_slice(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .ok()?;
                (is_regular(&stat) && stat.st_uid == self.uid).then_some((name, stat))
            })
            .collect()
    }

    /// The cache files, with their write time and size.
    fn cache_files(&self) -> Vec<((i64, i64), u64, Vec<u8>)> {
        self.entries(is_cache_name)
            .into_iter()
            .map(|(name, stat)| {
                (
                    (stat.st_mtime, stat.st_mtime_nsec),
                    stat.st_size as u64,
                    name,
                )
            })
            .collect()
    }

    fn file_of(&self, name: &str, range: &Option<Range<u64>>) -> String {
        let key = match range {
            Some(r) => format!("{name}:{}-{}", r.start, r.end),
            None => name.to_string(),
        };
        hex::encode(sha256(key.as_bytes()))
    }

    fn remove(&self, file: &str) {
        let _ = unlinkat(self.dir.as_fd(), file, UnlinkatFlags::NoRemoveDir);
    }

    /// The cached bytes of at most `max` bytes, if present and intact; a damaged file is
    /// removed. Never follows a link, never blocks on a FIFO.
    fn lookup(&self, file: &str, max: u64) -> Option<Vec<u8>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let opened = openat(self.dir.as_fd(), file, flags, Mode::empty()).ok()?;
        let stat = fstat(opened.as_fd()).ok()?;
        let len = stat.st_size as u64;
        if !is_regular(&stat)
            || stat.st_uid != self.uid
            || len < CHECKSUM_LEN
            || len > max + CHECKSUM_LEN
        {
            self.remove(file);
            return None;
        }
        let mut stored = Vec::with_capacity(len as usize);
        File::from(opened)
            .take(max + CHECKSUM_LEN)
            .read_to_end(&mut stored)
            .ok()?;
        if stored.len() as u64 >= CHECKSUM_LEN {
            let (sum, data) = stored.split_at(CHECKSUM_LEN as usize);
            if checksum(file, data) == sum {
                return Some(data.to_vec());
            }
        }
        tracing::warn!("{}/{file}: damaged cache file, read again", self.shown);
        self.remove(file);
        None
    }

    /// Stores `data` as `file` (best effort: a full disk only means no cache).
    fn remember(&self, file: &str, data: &[u8]) {
        // A range larger than a quarter of the cache is not kept: it would push out most of
        // what is there, and itself be next.
        if self.full.load(Ordering::Relaxed) || data.len() as u64 + CHECKSUM_LEN > self.limit / 4 {
            return;
        }
        let n = self.temps.fetch_add(1, Ordering::Relaxed);
        let mut salt = [0u8; 8];
        crate::random::fill_random(&mut salt);
        // Random as well as numbered: two mounts in containers may both be pid 1.
        let temp = format!(".tmp-{}-{n}-{}", std::process::id(), hex::encode(salt));
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Ok(fd) = openat(
            self.dir.as_fd(),
            temp.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        ) else {
            // Not made here (the name was taken, the disk is full): nothing of ours to remove.
            return;
        };
        let written = {
            let mut f = File::from(fd);
            f.write_all(&checksum(file, data))
                .and_then(|()| f.write_all(data))
        }
        .and_then(|()| {
            renameat(self.dir.as_fd(), temp.as_str(), self.dir.as_fd(), file)
                .map_err(std::io::Error::from)
        });
        if written.is_err() {
            self.remove(&temp);
            return;
        }
        let over = {
            let mut used = self.used.lock();
            *used += data.len() as u64 + CHECKSUM_LEN;
            *used > self.limit
        };
        if over {
            self.shrink();
        }
    }

    /// Removes the oldest cache files until three quarters of the limit remain. One eviction
    /// at a time (the mount reads on several threads); a file already gone counts as removed,
    /// and the count is taken again from the directory afterwards, so files other threads
    /// added meanwhile are not forgotten. Caching stops only when a file cannot be removed.
    fn shrink(&self) {
        let Some(_shrinking) = self.shrinking.try_lock() else {
            return;
        };
        let mut files = self.cache_files();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        let mut stuck = None;
        for (_, len, name) in files {
            if total <= self.limit / 4 * 3 {
                break;
            }
            match unlinkat(
                self.dir.as_fd(),
                name.as_slice(),
                UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => total -= len,
                Err(e) => stuck = Some(e),
            }
        }
        let recounted: u64 = self.cache_files().iter().map(|f| f.1).sum();
        *self.used.lock() = recounted;
        if let Some(e) = stuck
            && recounted > self.limit
        {
            tracing::warn!(
                "{}: cannot shrink the cache ({e}); caching stops",
                self.shown
            );
            self.full.store(true, Ordering::Relaxed);
        }
    }

    fn cacheable(name: &str) -> bool {
        IMMUTABLE.iter().any(|p| name.starts_with(p))
    }
}

/// Whether a whole index or snapshot file's bytes are what its name promises.
fn matches_name(name: &str, data: &[u8]) -> bool {
    name.rsplit('/').next() == Some(hex::encode(sha256(data)).as_str())
}

impl Backend for DiskCached {
    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let range = match range {
            Some(range) if Self::cacheable(name) => range,
            other => return self.inner.get(name, other),
        };
        let file = self.file_of(name, &Some(range.clone()));
        if let Some(data) = self.lookup(&file, range.end - range.start) {
            return Ok(data);
        }
        let data = self.inner.get(name, Some(range))?;
        self.remember(&file, &data);
        Ok(data)
    }

    fn get_ranges(&self, name: &str, ranges: &[Range<u64>]) -> Result<Ranges> {
        if !Self::cacheable(name) {
            return self.inner.get_ranges(name, ranges);
        }
        let mut found: Vec<Option<Vec<u8>>> = ranges
            .iter()
            .map(|r| self.lookup(&self.file_of(name, &Some(r.clone())), r.end - r.start))
            .collect();
        let missing: Vec<Range<u64>> = ranges
            .iter()
            .zip(&found)
            .filter(|(_, hit)| hit.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        let fetched = self.inner.get_ranges(name, &missing)?;
        let mut next_fetched = 0;
        let mut out = Ranges::default();
        for (range, hit) in ranges.iter().zip(found.iter_mut()) {
            let bytes = match hit.take() {
                Some(bytes) => bytes,
                None => {
                    let bytes = fetched
                        .range(next_fetched)
                        .ok_or_else(|| Error::corrupt(name, "the store sent fewer bytes"))?
                        .to_vec();
                    next_fetched += 1;
                    self.remember(&self.file_of(name, &Some(range.clone())), &bytes);
                    bytes
                }
            };
            let start = out.bytes.len();
            out.bytes.extend_from_slice(&bytes);
            out.at.push(start..out.bytes.len());
        }
        Ok(out)
    }

    fn get_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        if !Self::cacheable(name) {
            return self.inner.get_bounded(name, limit);
        }
        let file = self.file_of(name, &None);
        if let Some(data) = self.lookup(&file, limit) {
            return Ok(data);
        }
        let data = self.inner.get_bounded(name, limit)?;
        if matches_name(name, &data) {
            self.remember(&file, &data);
        }
        Ok(data)
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.inner.put(name, data)
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool> {
        self.inner.put_if_absent(name, data)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }

    fn stat(&self, name: &str) -> Result<u64> {
        self.inner.stat(name)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn forget_cached(&self, name: &str, range: Option<Range<u64>>) {
        self.remove(&self.file_of(name, &range));
        self.inner.forget_cached(name, range);
    }
}
