//! The local directory backend (the default). Writes go to a temporary name in the target
//! directory, are fsynced, then renamed (or, for create-if-absent, hard-linked, which fails if
//! the name exists); the directory is fsynced after, so a stored object survives a crash.

use crate::backend::{Backend, ObjectInfo};
use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Mode of every directory of a repository: only its owner may list or enter it.
const DIR_MODE: u32 = 0o700;
/// Mode of every object: stored once, never changed, read only by its owner.
const FILE_MODE: u32 = 0o400;

/// A repository in a local directory.
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// One pass over the directories under `prefix`.
    fn list_once(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut pending = vec![prefix.trim_end_matches('/').to_string()];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(self.path(&dir)) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::storage_error(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Self::storage_error(&dir, e))?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if file_name.starts_with(".tmp-") {
                    continue;
                }
                let name = format!("{dir}/{file_name}");
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Deleted between the directory read and the stat (a prune, a forget, a
                    // session ending): not listed, as if listed a moment later.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(Self::storage_error(&name, e)),
                };
                if meta.is_dir() {
                    pending.push(name);
                } else {
                    out.push(ObjectInfo {
                        name,
                        size: meta.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A backend over `root` (which need not exist yet: `init` creates it).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend { root: root.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn storage_error(name: &str, source: std::io::Error) -> Error {
        if source.kind() == ErrorKind::NotFound {
            Error::NotFound(name.to_string())
        } else {
            Error::Storage {
                name: name.to_string(),
                source,
            }
        }
    }

    /// Opens object `name` for reading. Without blocking (a FIFO put in its place would hang the
    /// open), and only if it is a regular file: a link to `/dev/zero` or a FIFO is a damaged
    /// repository, not something to read without end.
    fn open_object(&self, name: &str) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |e| Self::storage_error(name, e);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.path(name))
            .map_err(err)?;
        if !file.metadata().map_err(err)?.is_file() {
            return Err(Error::corrupt(name, "not a regular file"));
        }
        Ok(file)
    }

    /// Writes `data` to a fresh temporary file beside `name` and fsyncs it. Directories are made
    /// 0700 and files 0400 (every object is immutable): key files and everything else stay
    /// unreadable to other local users whatever the umask, as restic and borg do.
    fn write_temp(&self, name: &str, data: &[u8]) -> Result<PathBuf> {
        let target = self.path(name);
        let dir = target.parent().expect("object names have a directory");
        let err = |e| Self::storage_error(name, e);
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(err)?;
        }
        let mut suffix = [0u8; 8];
        crate::random::fill_random(&mut suffix);
        let temp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&temp)?;
            let direct = super::uncached::write_uncached(&mut file, data)?;
            tracing::trace!(
                "{name}: {direct} of {} bytes written past the page cache",
                data.len()
            );
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(err(e));
        }
        Ok(temp)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        match range {
            Some(range) => self.get_into(name, range, &mut out)?,
            None => {
                let mut file = self.open_object(name)?;
                file.read_to_end(&mut out)
                    .map_err(|e| Self::storage_error(name, e))?;
            }
        }
        Ok(out)
    }

    /// Refused unread when larger than `limit`, and read with `limit` as a hard stop: a file
    /// that grows while it is read (another process appending) costs no more either.
    fn get_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let err = |e| Self::storage_error(name, e);
        let file = self.open_object(name)?;
        let size = file.metadata().map_err(err)?.len();
        if size > limit {
            return Err(super::too_large(name, size, limit));
        }
        let mut out = Vec::with_capacity(size as usize);
        file.take(limit + 1).read_to_end(&mut out).map_err(err)?;
        if out.len() as u64 > limit {
            return Err(super::too_large(name, out.len() as u64, limit));
        }
        Ok(out)
    }

    fn get_into(&self, name: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        let err = |e| Self::storage_error(name, e);
        let file = self.open_object(name)?;
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|_| Error::Invalid(format!("range {range:?} of {name} is too large")))?;
        let size = file.metadata().map_err(err)?.len();
        if range.end > size || range.start > range.end {
            return Err(Error::corrupt(
                name,
                format!("bytes {range:?} requested but the object has {size}"),
            ));
        }
        // Read into spare capacity: no zero-filling of what is about to be overwritten.
        buf.clear();
        buf.reserve_exact(len);
        let mut file = file;
        file.seek(SeekFrom::Start(range.start)).map_err(err)?;
        let read = file.take(len as u64).read_to_end(buf).map_err(err)?;
        if read != len {
            return Err(Error::corrupt(
                name,
                format!("bytes {range:?} requested but only {read} could be read"),
            ));
        }
        Ok(())
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        let temp = self.write_temp(name, data)?;
        let target = self.path(name);
        let done = fs::rename(&temp, &target)
            .and_then(|_| sync_dir(target.parent().expect("has a directory")));
        done.map_err(|e| {
            let _ = fs::remove_file(&temp);
            Self::storage_error(name, e)
        })
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool> {
        let temp = self.write_temp(name, data)?;
        let target = self.path(name);
        let linked = fs::hard_link(&temp, &target);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                sync_dir(target.parent().expect("has a directory"))
                    .map_err(|e| Self::storage_error(name, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Self::storage_error(name, e)),
        }
    }

    /// Lists twice and returns what either pass saw. A directory read is not a snapshot: a
    /// file created or removed during it may or may not be returned (POSIX leaves it open), so
    /// one pass can miss both the old and the new index file while a prune replaces one with the
    /// other. A file present throughout the second pass is in it, and one replaced during the
    /// second pass was present throughout the first.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut seen: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for _ in 0..2 {
            for info in self.list_once(prefix)? {
                seen.insert(info.name, info.size);
            }
        }
        Ok(seen
            .into_iter()
            .map(|(name, size)| ObjectInfo { name, size })
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::storage_error(name, e)),
        }
    }

    fn stat(&self, name: &str) -> Result<u64> {
        fs::metadata(self.path(name))
            .map(|m| m.len())
            .map_err(|e| Self::storage_error(name, e))
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_range_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        backend.put("data/ab/abc", b"0123456789").unwrap();
        backend.put("index/one", b"x").unwrap();
        assert_eq!(backend.get("data/ab/abc", Some(2..5)).unwrap(), b"234");
        assert!(backend.get("data/ab/abc", Some(5..11)).is_err());
        let names: Vec<_> = backend
            .list("data/")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["data/ab/abc"]);
        assert_eq!(backend.stat("data/ab/abc").unwrap(), 10);
        backend.delete("data/ab/abc").unwrap();
        assert!(matches!(
            backend.get("data/ab/abc", None),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn put_if_absent_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path());
        assert!(backend.put_if_absent("snapshots/s", b"first").unwrap());
        assert!(!backend.put_if_absent("snapshots/s", b"second").unwrap());
        assert_eq!(backend.get("snapshots/s", None).unwrap(), b"first");
        assert_eq!(
            fs::read_dir(dir.path().join("snapshots")).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
