//! The view's list of snapshots, with their directory names, and the index that serves them.
//! Refreshed at most every few seconds when a listing asks, so snapshots made while mounted
//! appear without remounting; the index is reloaded only when the set of snapshots changed.

use crate::error::Result;
use crate::repo::Repository;
use crate::repo::ids::SnapshotId;
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the snapshot list may be re-read.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// One snapshot as the view shows it.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Its id.
    pub id: SnapshotId,
    /// Its manifest.
    pub snapshot: Snapshot,
    /// Its directory name under `snapshots/`: the local time, `-<shortid>` added on collision.
    pub name: String,
}

/// A consistent pair of snapshot list and index.
pub struct Contents {
    /// Snapshots, oldest first.
    pub snapshots: Vec<Listed>,
    /// An index covering every listed snapshot.
    pub index: Arc<Index>,
    /// When this list of snapshots was read (nanoseconds): the modification time of the
    /// made-up directories, so that the kernel drops listings it cached (`snapshots/`,
    /// `history/…`) when snapshots come or go, a forget of an old one included.
    pub changed: i64,
}

impl Contents {
    fn new(snapshots: Vec<(SnapshotId, Snapshot)>, index: Index) -> Contents {
        for (id, snapshot) in &snapshots {
            let labels = std::iter::once(&snapshot.hostname).chain(&snapshot.tags);
            for label in labels.filter(|l| crate::repo::tree::invalid_name(l.as_bytes()).is_some())
            {
                tracing::warn!(
                    "snapshot {}: host or tag {label:?} is not a valid directory name: not shown \
                     under hosts/ or tags/",
                    id.short()
                );
            }
        }
        let changed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Contents {
            snapshots: names(snapshots),
            index: Arc::new(index),
            changed,
        }
    }
}

/// The refreshable catalog.
pub struct Catalog {
    repo: Arc<Repository>,
    current: Mutex<(Arc<Contents>, Instant)>,
    /// When the index was last reloaded because a pack was missing.
    index_reloaded: Mutex<Option<Instant>>,
}

/// How often a missing pack may make the index be read again, so that a damaged repository
/// does not make every read reload it.
const INDEX_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

fn names(snaps: Vec<(SnapshotId, Snapshot)>) -> Vec<Listed> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, s) in &snaps {
        *seen
            .entry(crate::fs::history::time_name(s.time))
            .or_default() += 1;
    }
    snaps
        .into_iter()
        .map(|(id, snapshot)| {
            let time = crate::fs::history::time_name(snapshot.time);
            let name = if seen[&time] > 1 {
                format!("{time}-{}", id.short())
            } else {
                time
            };
            Listed { id, snapshot, name }
        })
        .collect()
}

impl Catalog {
    /// Loads the snapshots and index.
    pub fn load(repo: Arc<Repository>) -> Result<Catalog> {
        let contents = Contents::new(repo.snapshots()?, repo.load_index()?);
        Ok(Catalog {
            repo,
            current: Mutex::new((Arc::new(contents), Instant::now())),
            index_reloaded: Mutex::new(None),
        })
    }

    /// Reads the index again after a read through `failed` found a pack gone: a prune may
    /// have moved the blob into a new pack and deleted the old one. If the index was already
    /// replaced since `failed` was taken, the newer one is returned; otherwise it is read again
    /// (at most once per [`INDEX_RELOAD_INTERVAL`]: a repository that really lost a pack makes
    /// a failing read wait, not reload the index on every read) and replaces the current one
    /// (the snapshot list stays). `None` when it cannot be read.
    pub fn reload_index(&self, failed: &Index) -> Option<Arc<Index>> {
        let mut last = self.index_reloaded.lock();
        let current = self.current.lock().0.index.clone();
        if !std::ptr::eq(Arc::as_ptr(&current), failed) {
            return Some(current);
        }
        if let Some(at) = *last {
            std::thread::sleep(INDEX_RELOAD_INTERVAL.saturating_sub(at.elapsed()));
        }
        *last = Some(Instant::now());
        let index = match self.repo.load_index() {
            Ok(index) => Arc::new(index),
            Err(e) => {
                tracing::warn!("reloading the index after a missing pack: {e}");
                return None;
            }
        };
        let mut current = self.current.lock();
        let snapshots = current.0.snapshots.clone();
        current.0 = Arc::new(Contents {
            snapshots,
            index: index.clone(),
            changed: current.0.changed,
        });
        Some(index)
    }

    /// What is known now, without refreshing.
    pub fn contents(&self) -> Arc<Contents> {
        self.current.lock().0.clone()
    }

    /// What is known now, re-reading the repository first if the last look is old enough.
    pub fn refreshed(&self) -> Arc<Contents> {
        let mut current = self.current.lock();
        if current.1.elapsed() < REFRESH_INTERVAL {
            return current.0.clone();
        }
        current.1 = Instant::now();
        let listed: Option<Vec<String>> = self
            .repo
            .backend()
            .list("snapshots/")
            .ok()
            .map(|l| l.into_iter().map(|o| o.name).collect());
        let known: Vec<String> = current
            .0
            .snapshots
            .iter()
            .map(|s| format!("snapshots/{}", s.id))
            .collect();
        let mut known_sorted = known.clone();
        known_sorted.sort();
        if listed.is_some_and(|l| l != known_sorted) {
            // Index first: a snapshot is only written after its index, so this order never
            // shows a snapshot whose blobs the index lacks.
            let reloaded = self
                .repo
                .load_index()
                .and_then(|index| Ok((index, self.repo.snapshots()?)));
            match reloaded {
                Ok((index, snaps)) => {
                    current.0 = Arc::new(Contents::new(snaps, index));
                }
                Err(e) => tracing::warn!("refreshing the snapshot list failed: {e}"),
            }
        }
        current.0.clone()
    }
}
