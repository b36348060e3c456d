//! Live counters of a running job, updated by worker threads and read by whatever shows
//! progress (a terminal bar in the command line). Relaxed atomics: the numbers are for humans.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a backup has done so far.
#[derive(Default)]
pub struct Progress {
    /// Files finished.
    pub files: AtomicU64,
    /// Content bytes finished (read or re-used).
    pub bytes: AtomicU64,
    /// Files whose content was read (not re-used from the parent).
    pub files_read: AtomicU64,
    /// Content bytes actually read.
    pub bytes_read: AtomicU64,
}

impl Progress {
    /// Counts one file of `size` bytes whose content was re-used from the parent.
    pub fn file_reused(&self, size: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// Counts one file whose content was read: `read` bytes.
    pub fn file_read(&self, read: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.files_read.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(read, Ordering::Relaxed);
        self.bytes_read.fetch_add(read, Ordering::Relaxed);
    }
}
