//! The view's `history/`: one path merged across every snapshot, computed on lookup.
//!
//! `history/<path>/` lists every name the directory `<path>` has had in any snapshot; a name
//! that was a file (or link, or device) is a directory of its distinct contents, each named by
//! the time of the first snapshot that has it and served like any file of the view. Merges
//! ([`crate::fs::history::merge`]) read each distinct tree once and are kept in a cache charged
//! to the mount's one memory budget, so listing a path again costs nothing and a thousand
//! snapshots that share a directory read it once. A merge is refused (EIO, one log line) when
//! it would not fit the cache's share for merges, whatever the repository holds.
//!
//! The merge of a directory the kernel holds is pinned: looking up its entries one by one
//! (`stat` of each, as `ls -l` without READDIRPLUS does) must not merge it again each time
//! other merges push it out. One thread merges a directory while others wait for it.

use super::*;
use crate::fetch::batch::plan_reads;
use crate::fs::history::{
    Merged, MergedName, Seen, Source, Version, distinct, merge, sources_key, version_names,
};
use crate::fs::node_path::NodePath;
use std::collections::HashMap;

/// Merged directories remembered, with the bytes they hold, and which of them live inodes use.
pub(super) struct MergeCache {
    merges: LruCache<[u8; 32], (Arc<Merged>, usize)>,
    bytes: usize,
    /// Merge key -> live history inodes that merge it.
    pins: HashMap<[u8; 32], usize>,
    /// Merges being computed, so a second asker waits instead of merging again.
    merging: HashMap<[u8; 32], Arc<Mutex<()>>>,
}

impl MergeCache {
    /// An empty cache.
    pub(super) fn new() -> MergeCache {
        MergeCache {
            merges: LruCache::unbounded(),
            bytes: 0,
            pins: HashMap::new(),
            merging: HashMap::new(),
        }
    }

    /// Drops the least recently used merges no live inode uses until the cache is within
    /// `limit`; returns the bytes released.
    fn shrink(&mut self, limit: usize) -> usize {
        let mut released = 0;
        while self.bytes > limit {
            let victim = self
                .merges
                .iter()
                .rev()
                .map(|(key, _)| *key)
                .find(|key| !self.pins.contains_key(key));
            let Some(key) = victim else { break };
            if let Some((_, bytes)) = self.merges.pop(&key) {
                released += bytes;
                self.bytes -= bytes;
            }
        }
        released
    }
}

/// A directory of `history/`: what it merges, and its path for log lines.
pub(super) struct HistoryDir {
    /// The key of the merge of `dirs`.
    pub key: [u8; 32],
    /// The distinct trees the path has had as a directory, oldest first.
    pub dirs: Arc<[Source]>,
    /// Its distinct contents as anything else, oldest first.
    pub versions: Arc<[Version]>,
    pub path: NodePath,
}

/// One entry of a directory of `history/`.
pub(super) struct HistoryChild {
    pub name: Vec<u8>,
    pub ino: u64,
    pub entry: Entry,
}

impl View {
    /// The sources of `history/` itself: every snapshot's root tree, oldest first.
    pub(super) fn history_roots(&self, contents: &Contents) -> Arc<[Source]> {
        distinct(contents.snapshots.iter().map(|s| Source {
            tree: Some(s.snapshot.tree),
            first: Seen {
                time: s.snapshot.time,
                snapshot: s.id,
            },
        }))
        .into()
    }

    /// The directory of `history/` that `entry` is, if it is one (`history/` itself merges
    /// the snapshots listed now).
    pub(super) fn history_dir(&self, entry: &Entry) -> Option<HistoryDir> {
        match entry {
            Entry::Virtual(VirtualDir::History) => {
                let dirs = self.history_roots(&self.refreshed());
                Some(HistoryDir {
                    key: sources_key(&dirs),
                    dirs,
                    versions: Arc::from(Vec::new()),
                    path: NodePath::root("history"),
                })
            }
            Entry::History {
                key,
                dirs,
                versions,
                path,
            } => Some(HistoryDir {
                key: *key,
                dirs: dirs.clone(),
                versions: versions.clone(),
                path: path.clone(),
            }),
            _ => None,
        }
    }

    /// Counts one more live inode of the history directory merging `key` (`live`), or one
    /// fewer.
    pub(super) fn pin_merge(&self, key: &[u8; 32], live: bool) {
        let mut cache = self.merges.lock();
        if live {
            *cache.pins.entry(*key).or_default() += 1;
        } else if let Some(count) = cache.pins.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                cache.pins.remove(key);
            }
        }
    }

    /// Reads `trees` into the cache by pack before a merge reads them one by one, as many reads
    /// in flight as there are read workers, up to an eighth of the cache: the versions of one
    /// directory lie in as many packs as there were backups, and read in turn each would be a
    /// round trip to the store.
    fn fetch_trees_now(&self, index: &Index, mut trees: Vec<BlobId>) {
        let share = (self.fetcher.cache.capacity() / 8) as u64;
        let mut planned = 0u64;
        trees.retain(|tree| {
            planned += index.get(tree).map_or(0, |at| u64::from(at.entry.raw_len));
            planned <= share
        });
        let mut reads = plan_reads(&self.fetcher.cache, index, &trees)
            .into_iter()
            .peekable();
        while reads.peek().is_some() {
            let group: Vec<_> = reads.by_ref().take(self.opts.read_workers.max(1)).collect();
            std::thread::scope(|scope| {
                for read in group {
                    scope.spawn(|| read.run(&self.fetcher, |_, _| {}));
                }
            });
        }
    }

    /// The merge of `dir`, from the cache or read now; a failure is logged with the path and
    /// becomes EIO.
    fn merged(&self, dir: &HistoryDir) -> std::result::Result<Arc<Merged>, Errno> {
        let (key, path) = (dir.key, &dir.path);
        let gate = {
            let mut cache = self.merges.lock();
            if let Some((hit, _)) = cache.merges.get(&key) {
                return Ok(hit.clone());
            }
            cache.merging.entry(key).or_default().clone()
        };
        let _merging = gate.lock();
        if let Some((hit, _)) = self.merges.lock().merges.get(&key) {
            return Ok(hit.clone());
        }
        let budget = &self.fetcher.cache;
        let limit = budget.capacity() / TREE_SHARE;
        let index = self.catalog.contents().index.clone();
        self.fetch_trees_now(&index, dir.dirs.iter().filter_map(|s| s.tree).collect());
        let result = merge(&dir.dirs, &|tree| self.fetcher.tree(&index, tree), limit);
        let merged = match result {
            Ok(merged) => Arc::new(merged),
            Err(e) => {
                self.merges.lock().merging.remove(&key);
                tracing::error!("{path}: {e}");
                return Err(Errno::EIO);
            }
        };
        for (source, e) in &merged.skipped {
            tracing::error!(
                "{path}: the version of snapshot {} left out: {e}",
                source.first.snapshot.short()
            );
        }
        let bytes = merged.bytes;
        let released = {
            let mut cache = self.merges.lock();
            cache.merging.remove(&key);
            cache.merges.put(key, (merged.clone(), bytes));
            cache.bytes += bytes;
            cache.shrink(limit)
        };
        budget.discharge(released);
        budget.charge(bytes);
        Ok(merged)
    }

    /// The entries of the history directory `ino` from the `skip`th on: every merged name as a
    /// history directory, then every version as a file named by its first snapshot's time.
    /// `only` restricts them to one name (a lookup).
    pub(super) fn history_children(
        &self,
        ino: u64,
        dir: &HistoryDir,
        only: Option<&[u8]>,
        skip: usize,
    ) -> std::result::Result<Vec<HistoryChild>, Errno> {
        let (versions, path) = (&dir.versions, &dir.path);
        let merged = self.merged(dir)?;
        let mut out = Vec::new();
        let names: &[MergedName] = match only {
            None => merged.names.get(skip..).unwrap_or_default(),
            Some(name) => match merged
                .names
                .binary_search_by(|m| m.name.as_slice().cmp(name))
            {
                Ok(i) => std::slice::from_ref(&merged.names[i]),
                Err(_) => &[],
            },
        };
        for m in names {
            out.push(HistoryChild {
                ino: child_ino(ino, &m.name, None, None),
                entry: Entry::History {
                    key: m.key,
                    dirs: m.dirs.clone(),
                    versions: m.versions.clone(),
                    path: path.child(&m.name),
                },
                name: m.name.clone(),
            });
        }
        if only.is_some() && !out.is_empty() {
            return Ok(out);
        }
        let labels = version_names(versions, |name| merged.get(name).is_some());
        let skip_versions = skip.saturating_sub(merged.names.len());
        for (version, label) in
            versions
                .iter()
                .zip(labels)
                .skip(if only.is_some() { 0 } else { skip_versions })
        {
            let label = label.into_bytes();
            if only.is_some_and(|name| name != label.as_slice()) {
                continue;
            }
            let mut node = (*version.node).clone();
            node.name = label.clone();
            out.push(HistoryChild {
                ino: version_ino(ino, version),
                entry: Entry::Node {
                    snapshot: version.first.snapshot,
                    parent: ino,
                    path: path.child(&label),
                    node: Arc::new(node),
                },
                name: label,
            });
        }
        Ok(out)
    }
}

/// The inode number of a version: from its snapshot and content, not its name, which forgetting
/// a snapshot can change (or give to another version).
fn version_ino(parent: u64, version: &Version) -> u64 {
    let mut name = b"version".to_vec();
    name.extend_from_slice(&version.first.snapshot.0);
    name.extend_from_slice(&version.key);
    child_ino(parent, &name, None, None)
}
