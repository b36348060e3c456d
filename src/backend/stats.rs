//! What this process asked of its stores: calls, bytes each way, retries and the time spent
//! waiting for answers. A remote store's cost is in its round trips; `--stats` prints these at
//! the end of every command (and the log at `info` always has them), and the progress bars of
//! restore and copy show the bytes a second arriving.
//!
//! Counted by the retry layer, which every repository's store goes through: one call per
//! attempt (a listing counts once, however many pages it takes), bytes as delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The process's counters.
pub struct StoreStats {
    calls: AtomicU64,
    retries: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    waited_nanos: AtomicU64,
}

static STATS: StoreStats = StoreStats {
    calls: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    read: AtomicU64::new(0),
    written: AtomicU64::new(0),
    waited_nanos: AtomicU64::new(0),
};

/// The counters of every store this process opened.
pub fn store_stats() -> &'static StoreStats {
    &STATS
}

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// Calls made, each attempt counted.
    pub calls: u64,
    /// Calls repeated after a transient failure.
    pub retries: u64,
    /// Bytes received.
    pub read: u64,
    /// Bytes sent.
    pub written: u64,
    /// Time callers spent waiting for the store, summed over every thread (so it may exceed
    /// the command's time when several calls are in flight).
    pub waited: Duration,
}

impl StoreStats {
    /// Counts one call that took `took` and moved `read` and `written` bytes.
    pub fn call(&self, took: Duration, read: u64, written: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.read.fetch_add(read, Ordering::Relaxed);
        self.written.fetch_add(written, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.waited_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts a call about to be repeated.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn now(&self) -> Counted {
        Counted {
            calls: self.calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// Bytes a second received from the stores since it was made: for progress bars.
pub struct ReadRate {
    since: Instant,
    read_before: u64,
}

impl Default for ReadRate {
    fn default() -> ReadRate {
        ReadRate {
            since: Instant::now(),
            read_before: STATS.read.load(Ordering::Relaxed),
        }
    }
}

impl ReadRate {
    /// Bytes received since [`ReadRate::default`], and their rate a second.
    pub fn read_and_rate(&self) -> (u64, u64) {
        let read = STATS.read.load(Ordering::Relaxed) - self.read_before;
        let secs = self.since.elapsed().as_secs_f64().max(0.001);
        (read, (read as f64 / secs) as u64)
    }
}

/// Times one call for [`StoreStats::call`].
pub fn timed<T>(call: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let result = call();
    (result, started.elapsed())
}
