//! An optional local disk cache in front of a remote store (`mount --cache-dir`), so that what
//! a long-running mount has read once — index files, snapshots, pack ranges — is not fetched
//! over the network again. Never required: without it every read goes to the store.
//!
//! Only objects that never change under their name are cached (`data/`, `index/`,
//! `snapshots/`: named by their content's hash), each range in a file of its own named by the
//! hash of the object name and range. Each cached file starts with the SHA-256 of its bytes,
//! checked on every hit, so a damaged cache file is dropped and read again from the store; the
//! bytes are verified again above anyway (AEAD tag and content id). The directory is created
//! private (0700) and files 0600. When the cache grows past its size, the least recently
//! written files are removed until it holds three quarters of it.

use crate::backend::{Backend, ObjectInfo};
use crate::error::{Error, Result};
use crate::repo::ids::sha256;
use parking_lot::Mutex;
use std::fs;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

/// Object kinds whose bytes never change under their name.
const IMMUTABLE: [&str; 3] = ["data/", "index/", "snapshots/"];

/// A store with a disk cache of its immutable objects in front.
pub struct DiskCached {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    limit: u64,
    /// Bytes in the cache directory, as this process counts them.
    used: Mutex<u64>,
}

impl DiskCached {
    /// A cache of at most `limit` bytes in `dir` (created if missing) in front of `inner`.
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf, limit: u64) -> Result<DiskCached> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(&dir, e))?;
        let used = fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        Ok(DiskCached {
            inner,
            dir,
            limit,
            used: Mutex::new(used),
        })
    }

    fn file_of(&self, name: &str, range: &Option<Range<u64>>) -> PathBuf {
        let key = match range {
            Some(r) => format!("{name}:{}-{}", r.start, r.end),
            None => name.to_string(),
        };
        self.dir.join(hex::encode(sha256(key.as_bytes())))
    }

    /// The cached bytes, if present and intact; a damaged file is removed.
    fn lookup(&self, file: &PathBuf) -> Option<Vec<u8>> {
        let stored = fs::read(file).ok()?;
        if stored.len() >= 32 && sha256(&stored[32..]) == stored[..32] {
            return Some(stored[32..].to_vec());
        }
        tracing::warn!("{}: damaged cache file, read again", file.display());
        let _ = fs::remove_file(file);
        None
    }

    /// Stores `data` as `file` (best effort: a full disk only means no cache).
    fn remember(&self, file: &PathBuf, data: &[u8]) {
        let temp = file.with_extension(format!("tmp{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
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
            *used += data.len() as u64 + 32;
            *used > self.limit
        };
        if over {
            self.shrink();
        }
    }

    /// Removes the oldest files until the cache holds three quarters of its limit.
    fn shrink(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
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
        *self.used.lock() = total;
    }
}

impl Backend for DiskCached {
    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        if !IMMUTABLE.iter().any(|p| name.starts_with(p)) {
            return self.inner.get(name, range);
        }
        let file = self.file_of(name, &range);
        if let Some(data) = self.lookup(&file) {
            return Ok(data);
        }
        let data = self.inner.get(name, range)?;
        self.remember(&file, &data);
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
}
