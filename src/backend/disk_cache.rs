//! An optional local disk cache in front of a remote store (`mount --cache-dir`), so that what
//! a long-running mount has read once — index files, snapshots, pack ranges — is not fetched
//! over the network again. Never required: without it every read goes to the store.
//!
//! Only objects that never change under their name are cached (`data/`, `index/`,
//! `snapshots/`: named by their content's hash), each range in a file of its own named by the
//! hash of the object name and range. Whole index and snapshot files are cached only when they
//! hash to their name; pack ranges cannot be checked here (that needs the key), so a reader
//! whose bytes fail verification calls [`Backend::forget_cached`] before it reads again. Each
//! cached file starts with the SHA-256 of its bytes, checked on every hit, and is opened
//! without following links or blocking, as a regular file no larger than what was asked for.
//! The caller hands over a private directory (the CLI checks owner and mode); only files named
//! as this cache names them are counted and evicted, the least recently written first, until
//! three quarters of the size remain.

use crate::backend::{Backend, ObjectInfo};
use crate::error::{Error, Result};
use crate::digest::sha256;
use parking_lot::Mutex;
use std::fs;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Object kinds whose bytes never change under their name.
const IMMUTABLE: [&str; 3] = ["data/", "index/", "snapshots/"];
/// Bytes before a cached file's content: its SHA-256.
const CHECKSUM_LEN: u64 = 32;

/// A store with a disk cache of its immutable objects in front.
pub struct DiskCached {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    limit: u64,
    /// Bytes of cache files in the directory, as this process counts them.
    used: Mutex<u64>,
    /// Set when eviction could not bring the directory under its size: nothing more is cached.
    full: AtomicBool,
    /// Makes each temporary file name unique within the process.
    temps: AtomicU64,
}

/// Whether `name` is one this cache gives its files: 64 hex digits.
fn is_cache_file(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The cache files in `dir`, with their write time and size.
fn cache_files(dir: &Path) -> Vec<(std::time::SystemTime, u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| is_cache_file(&e.file_name()))
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect()
}

impl DiskCached {
    /// A cache of at most `limit` bytes in the private directory `dir`, in front of `inner`.
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf, limit: u64) -> Result<DiskCached> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: not a directory",
                dir.display()
            )));
        }
        // Temporary files of a process killed while writing one: never renamed, never counted.
        // (One being written by a concurrent mount only loses its rename: not cached.)
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let used = cache_files(&dir).iter().map(|f| f.1).sum();
        Ok(DiskCached {
            inner,
            dir,
            limit,
            used: Mutex::new(used),
            full: AtomicBool::new(false),
            temps: AtomicU64::new(0),
        })
    }

    fn file_of(&self, name: &str, range: &Option<Range<u64>>) -> PathBuf {
        let key = match range {
            Some(r) => format!("{name}:{}-{}", r.start, r.end),
            None => name.to_string(),
        };
        self.dir.join(hex::encode(sha256(key.as_bytes())))
    }

    /// The cached bytes of at most `max` bytes, if present and intact; a damaged file is
    /// removed. Never follows a link, never blocks on a FIFO.
    fn lookup(&self, file: &Path, max: u64) -> Option<Vec<u8>> {
        let mut opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(file)
            .ok()?;
        let meta = opened.metadata().ok()?;
        if !meta.is_file() || meta.len() < CHECKSUM_LEN || meta.len() > max + CHECKSUM_LEN {
            let _ = fs::remove_file(file);
            return None;
        }
        let mut stored = Vec::with_capacity(meta.len() as usize);
        opened.read_to_end(&mut stored).ok()?;
        let (sum, data) = stored.split_at(CHECKSUM_LEN as usize);
        if sha256(data) == sum {
            return Some(data.to_vec());
        }
        tracing::warn!("{}: damaged cache file, read again", file.display());
        let _ = fs::remove_file(file);
        None
    }

    /// Stores `data` as `file` (best effort: a full disk only means no cache).
    fn remember(&self, file: &Path, data: &[u8]) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let n = self.temps.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(&sha256(data))?;
                f.write_all(data)
            })
            .and_then(|()| fs::rename(&temp, file));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
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

    /// Removes the oldest cache files until three quarters of the limit remain.
    fn shrink(&self) {
        let mut files = cache_files(&self.dir);
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files {
            if total <= self.limit / 4 * 3 {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        if total > self.limit {
            tracing::warn!(
                "{}: cannot shrink the cache; caching stops",
                self.dir.display()
            );
            self.full.store(true, Ordering::Relaxed);
        }
        *self.used.lock() = total;
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
        let _ = fs::remove_file(self.file_of(name, &range));
        self.inner.forget_cached(name, range);
    }
}
