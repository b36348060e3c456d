//! Storage backends: a small synchronous trait over named objects. Names are `/`-separated
//! paths such as `data/ab/<id>`; `put` is atomic (a reader sees the whole object or nothing)
//! and `put_if_absent` never replaces, which is what makes snapshot commits exclusive.

pub mod disk_cache;
pub mod faulty;
pub mod local;
pub mod retry;
pub mod s3;
pub mod salvage;
pub mod stats;
pub mod uncached;

use crate::error::{Error, Result};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Opens the backend a repository location names: `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`,
/// `s3:https://BUCKET.s3.REGION.amazonaws.com[/PREFIX]`, `local:PATH`, or a plain path, with
/// `options` for what an S3 URL does not say. One parser for every command and for `--from`/
/// `--copy-params-from`, so a location means the same thing wherever it is given.
pub fn open_location(
    location: &std::ffi::OsStr,
    options: &s3::S3Options,
) -> Result<Arc<dyn Backend>> {
    let text = location.to_str();
    if let Some(url) = text.and_then(|t| t.strip_prefix("s3:")) {
        // A refused location is not echoed: it may hold a secret (see `S3Location::parse`).
        let mut at = s3::S3Location::parse(url).map_err(|e| Error::Invalid(e.to_string()))?;
        at.virtual_host |= options.virtual_host;
        let mut credentials = s3::S3Credentials::from_env();
        if let Some(region) = &options.region {
            credentials.region = region.clone();
        }
        return Ok(Arc::new(s3::S3Backend::new(
            at,
            credentials,
            s3::S3Timeouts::configured(),
        )?));
    }
    let path = match text.and_then(|t| t.strip_prefix("local:")) {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(location),
    };
    Ok(Arc::new(local::LocalBackend::new(path)))
}

/// A stored object's name and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full name, e.g. `index/<id>`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Several ranges of one object read together ([`Backend::get_ranges`]): one buffer, and where
/// each range lies in it.
#[derive(Debug, Default)]
pub struct Ranges {
    /// The bytes read.
    pub bytes: Vec<u8>,
    /// Where each range asked for lies in `bytes`, in the order asked.
    pub at: Vec<Range<usize>>,
}

impl Ranges {
    /// The bytes of the `i`th range asked for; `None` if the store sent fewer.
    pub fn range(&self, i: usize) -> Option<&[u8]> {
        self.bytes.get(self.at.get(i)?.clone())
    }
}

/// Where a repository's objects live.
pub trait Backend: Send + Sync {
    /// Reads a whole object, or the given byte range of it. A range past the end is an error,
    /// never a short read.
    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>>;
    /// Reads `range` of an object into `buf` (replacing its content), re-using its memory:
    /// for jobs that read many large ranges one after another (check), where a fresh buffer
    /// per read costs a page fault per page.
    fn get_into(&self, name: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.get(name, Some(range))?;
        Ok(())
    }
    /// Reads the byte ranges `ranges` of one object (ascending as readers ask, though they may
    /// overlap), as one read from the lowest start to the highest end unless a layer knows
    /// better: a cache in front keeps and finds each range on its own, so what it holds does not
    /// depend on how a reader merged its reads.
    fn get_ranges(&self, name: &str, ranges: &[Range<u64>]) -> Result<Ranges> {
        // The span of them all: ranges may overlap or end out of order (a crafted index can
        // list a shorter entry at a blob's offset after it).
        let start = ranges.iter().map(|r| r.start).min();
        let end = ranges.iter().map(|r| r.end).max();
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(Ranges::default());
        };
        let bytes = self.get(name, Some(start..end))?;
        let at = ranges
            .iter()
            .map(|r| (r.start - start) as usize..(r.end - start) as usize)
            .collect();
        Ok(Ranges { bytes, at })
    }
    /// Reads a whole object that its kind bounds to `limit` bytes. A larger one is refused
    /// before its bytes are read (and, in a local store, anything that is not a regular file
    /// when it is opened), so a damaged or hostile repository file costs no more memory than
    /// its kind may hold.
    fn get_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let size = self.stat(name)?;
        if size > limit {
            return Err(too_large(name, size, limit));
        }
        let data = self.get(name, None)?;
        if data.len() as u64 > limit {
            return Err(too_large(name, data.len() as u64, limit));
        }
        Ok(data)
    }
    /// Stores an object atomically and durably, replacing any old one.
    fn put(&self, name: &str, data: &[u8]) -> Result<()>;
    /// Stores an object only if none has the name; `Ok(false)` if one had.
    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool>;
    /// Every object whose name starts with `prefix` (a directory such as `snapshots/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Removes an object; removing a missing one is not an error.
    fn delete(&self, name: &str) -> Result<()>;
    /// The size of an object; [`crate::Error::NotFound`] if absent.
    fn stat(&self, name: &str) -> Result<u64>;
    /// Where the repository is, for messages.
    fn location(&self) -> String;
    /// Drops any local copy of `range` of `name` (all of it for `None`): called by a reader
    /// whose bytes failed verification before it reads again, so a cache never replays them.
    fn forget_cached(&self, _name: &str, _range: Option<Range<u64>>) {}
}

/// The error for an object larger than its kind may be, refused unread.
pub(crate) fn too_large(name: &str, size: u64, limit: u64) -> crate::Error {
    crate::Error::corrupt(
        name,
        format!("{size} bytes, more than such a file can hold ({limit}): refused unread"),
    )
}
