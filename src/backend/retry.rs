//! Retries transient store errors with exponential backoff.
//!
//! A store that hiccups (a dropped connection, an interrupted call, a busy device) should not end
//! a long backup. Only errors that can pass are retried: a missing object, a full disk, a refused
//! permission or damaged content are answered at once. Every retried read is verified again by
//! its caller, as every read is.

use crate::backend::stats::{store_stats, timed};
use crate::backend::{Backend, ObjectInfo, Ranges};
use crate::error::{Error, Result};
use std::io::ErrorKind;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The first wait; each further one doubles, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// A backend that retries transient failures of `inner` up to `retries` times.
pub struct RetryingBackend {
    inner: Arc<dyn Backend>,
    retries: u32,
}

impl RetryingBackend {
    /// Wraps `inner`; `retries` is the number of attempts after the first.
    pub fn new(inner: Arc<dyn Backend>, retries: u32) -> Self {
        RetryingBackend { inner, retries }
    }

    /// Runs `op` until it succeeds, fails for good (`transient` says which errors may pass) or
    /// the retries are spent, counting each attempt in the process's [`store_stats`] with the
    /// bytes `moved` says it moved.
    fn retry<T>(
        &self,
        what: &str,
        transient: fn(&Error) -> bool,
        mut op: impl FnMut() -> Result<T>,
        moved: impl Fn(&T) -> (u64, u64),
    ) -> Result<T> {
        let mut delay = FIRST_DELAY;
        let mut attempt = 0;
        loop {
            let (result, took) = timed(&mut op);
            let (read, written) = result.as_ref().map_or((0, 0), &moved);
            store_stats().call(took, read, written);
            match result {
                Err(e) if attempt < self.retries && transient(&e) => {
                    attempt += 1;
                    store_stats().retry();
                    tracing::warn!(
                        "{what}: {e}; retry {attempt} of {} in {delay:?}",
                        self.retries
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(MAX_DELAY);
                }
                other => return other,
            }
        }
    }
}

/// Whether a read's error may go away if the read is repeated: as [`is_transient`], except EIO.
/// A disk that cannot read a sector has retried already; the reader reads around the lost
/// sectors (`backend::salvage`) rather than wait on them. (A write or listing that meets EIO,
/// as a network file system answers a blip, is retried.)
pub fn is_transient_read(error: &Error) -> bool {
    is_transient(error) && !crate::backend::salvage::is_unreadable(error)
}

/// Whether an error may go away if the call is repeated.
pub fn is_transient(error: &Error) -> bool {
    let Error::Storage { source, .. } = error else {
        return false;
    };
    if matches!(
        source.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
    ) {
        return false;
    }
    !matches!(
        source.kind(),
        ErrorKind::NotFound
            | ErrorKind::AlreadyExists
            | ErrorKind::PermissionDenied
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidData
            | ErrorKind::StorageFull
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::Unsupported
            | ErrorKind::OutOfMemory
    )
}

impl Backend for RetryingBackend {
    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        self.retry(
            name,
            is_transient_read,
            || self.inner.get(name, range.clone()),
            |data| (data.len() as u64, 0),
        )
    }

    fn get_into(&self, name: &str, range: Range<u64>, buf: &mut Vec<u8>) -> Result<()> {
        let len = range.end - range.start;
        self.retry(
            name,
            is_transient_read,
            || self.inner.get_into(name, range.clone(), buf),
            |()| (len, 0),
        )
    }

    fn get_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        self.retry(
            name,
            is_transient_read,
            || self.inner.get_bounded(name, limit),
            |data| (data.len() as u64, 0),
        )
    }

    fn get_ranges(&self, name: &str, ranges: &[Range<u64>]) -> Result<Ranges> {
        self.retry(
            name,
            is_transient_read,
            || self.inner.get_ranges(name, ranges),
            |got| (got.bytes.len() as u64, 0),
        )
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.retry(
            name,
            is_transient,
            || self.inner.put(name, data),
            |()| (0, data.len() as u64),
        )
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool> {
        self.retry(
            name,
            is_transient,
            || self.inner.put_if_absent(name, data),
            |_| (0, data.len() as u64),
        )
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.retry(prefix, is_transient, || self.inner.list(prefix), |_| (0, 0))
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.retry(name, is_transient, || self.inner.delete(name), |()| (0, 0))
    }

    fn stat(&self, name: &str) -> Result<u64> {
        self.retry(
            name,
            is_transient_read,
            || self.inner.stat(name),
            |_| (0, 0),
        )
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn forget_cached(&self, name: &str, range: Option<Range<u64>>) {
        self.inner.forget_cached(name, range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::faulty::{FaultPlan, FaultyBackend};
    use crate::backend::local::LocalBackend;

    fn faulty(plan: FaultPlan) -> (tempfile::TempDir, Arc<FaultyBackend>) {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path()));
        (dir, Arc::new(FaultyBackend::new(local, plan)))
    }

    #[test]
    fn transient_failures_are_retried_until_they_pass() {
        let (_dir, store) = faulty(FaultPlan {
            transient_failures: 2,
            ..FaultPlan::default()
        });
        let retrying = RetryingBackend::new(store.clone(), 3);
        retrying.put("a", b"hello").unwrap();
        assert_eq!(retrying.get("a", None).unwrap(), b"hello");
    }

    #[test]
    fn retries_are_bounded_and_permanent_errors_are_not_retried() {
        let (_dir, store) = faulty(FaultPlan {
            transient_failures: 10,
            ..FaultPlan::default()
        });
        let retrying = RetryingBackend::new(store.clone(), 2);
        let err = retrying.put("a", b"x").unwrap_err();
        assert!(is_transient(&err), "{err}");
        store.set_plan(FaultPlan::default());
        assert!(matches!(
            retrying.get("missing", None),
            Err(Error::NotFound(_))
        ));
        let full = Error::Storage {
            name: "x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(!is_transient(&full));
        let lost_sector = Error::Storage {
            name: "x".into(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert!(is_transient(&lost_sector));
        assert!(!is_transient_read(&lost_sector));
    }
}
