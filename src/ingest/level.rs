//! The zstd level a job compresses at: fixed, or under `--compression auto` raised while the
//! store, not the CPU, is what the job waits for (as `zstd --adapt` does), and lowered back to
//! the repository's level once the store keeps up.

use crate::ingest::CompressionMode;
use std::sync::atomic::{AtomicI32, Ordering};

/// The highest level `--compression auto` climbs to: beyond it zstd's speed falls by more
/// than the size it saves on the data backups hold.
pub const AUTO_MAX_LEVEL: i32 = 12;

/// The level small blobs are compressed at with a dictionary, when blobs alone get `level`: one
/// lower. Measured on linux/ (first backup into tmpfs, 2 cores, 2 runs each, plain blobs at 3;
/// docs/DEPARTURES.md 38): with the dictionary at 1 the repository is 266 MB in 8.8-10.0 s, at
/// 2 256 MB in 9.6-9.8 s, at 3 252 MB in 10.8 s; without dictionaries 267 MB in 8.6-9.1 s. Level
/// 2 keeps most of the dictionary's gain for half the CPU level 3 adds.
pub fn dictionary_level(level: i32) -> i32 {
    (level - 1).max(1)
}

/// One job's level, shared by its sealing threads.
pub struct Level {
    now: AtomicI32,
    base: i32,
    top: AtomicI32,
    auto: bool,
}

impl Level {
    /// The level of a job in `mode` in a repository whose level is `repository`.
    pub fn new(mode: CompressionMode, repository: i32) -> Level {
        let base = match mode {
            CompressionMode::Auto => repository,
            CompressionMode::Fixed(level) => level,
        };
        Level {
            now: AtomicI32::new(base),
            base,
            top: AtomicI32::new(base),
            auto: mode == CompressionMode::Auto,
        }
    }

    /// The level blobs compressed alone get now.
    pub fn now(&self) -> i32 {
        self.now.load(Ordering::Relaxed)
    }

    /// The highest level used so far.
    pub fn top(&self) -> i32 {
        self.top.load(Ordering::Relaxed)
    }

    /// Called as each finished pack is queued for upload: under `auto`, one level up when the
    /// queue is full (`store_behind`), one down towards the base when it is empty
    /// (`store_idle`).
    pub fn adapt(&self, store_behind: bool, store_idle: bool) {
        if !self.auto {
            return;
        }
        let now = self.now();
        let next = if store_behind {
            (now + 1).min(AUTO_MAX_LEVEL.max(self.base))
        } else if store_idle {
            (now - 1).max(self.base)
        } else {
            now
        };
        if next != now {
            tracing::debug!("compression level {now} -> {next}");
            self.now.store(next, Ordering::Relaxed);
            self.top.fetch_max(next, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_climbs_while_the_store_is_behind_and_never_leaves_its_bounds() {
        let level = Level::new(CompressionMode::Auto, 3);
        for _ in 0..20 {
            level.adapt(true, false);
        }
        assert_eq!((level.now(), level.top()), (AUTO_MAX_LEVEL, AUTO_MAX_LEVEL));
        level.adapt(false, false);
        assert_eq!(
            level.now(),
            AUTO_MAX_LEVEL,
            "a queue neither full nor empty keeps it"
        );
        for _ in 0..20 {
            level.adapt(false, true);
        }
        assert_eq!((level.now(), level.top()), (3, AUTO_MAX_LEVEL));
        let fixed = Level::new(CompressionMode::Fixed(7), 3);
        fixed.adapt(true, false);
        assert_eq!((fixed.now(), fixed.top()), (7, 7));
        // A repository level above the ceiling is never lowered to it.
        let high = Level::new(CompressionMode::Auto, 15);
        high.adapt(true, false);
        assert_eq!(high.now(), 15);
        assert_eq!(dictionary_level(3), 2);
        assert_eq!(dictionary_level(1), 1);
    }
}
