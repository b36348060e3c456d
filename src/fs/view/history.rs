//! The view's `history/`: one path merged across every snapshot, computed on lookup.
//!
//! `history/<path>/` lists every name the directory `<path>` has had in any snapshot; a name
//! that was a file (or link, or device) is a directory of its distinct contents, each named by
//! the time of the first snapshot that has it and served like any file of the view. Merges
//! ([`crate::fs::history::merge`]) read each distinct tree once and are kept in a cache charged
//! to the mount's one memory budget, so listing a path again costs nothing and a thousand
//! snapshots that share a directory read it once.

use super::*;
use crate::fs::history::{
    Merged, MergedName, Seen, Source, Version, distinct, merge, sources_key, version_names,
};
use crate::fs::node_path::NodePath;

/// Merged directories remembered, with the bytes they hold.
pub(super) struct MergeCache {
    merges: LruCache<[u8; 32], (Arc<Merged>, usize)>,
    bytes: usize,
}

impl MergeCache {
    /// An empty cache.
    pub(super) fn new() -> MergeCache {
        MergeCache {
            merges: LruCache::unbounded(),
            bytes: 0,
        }
    }
}

/// A directory of `history/`: what it merges, and its path for log lines.
pub(super) struct HistoryDir {
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
            Entry::Virtual(VirtualDir::History) => Some(HistoryDir {
                dirs: self.history_roots(&self.refreshed()),
                versions: Arc::from(Vec::new()),
                path: NodePath::root("history"),
            }),
            Entry::History {
                dirs,
                versions,
                path,
            } => Some(HistoryDir {
                dirs: dirs.clone(),
                versions: versions.clone(),
                path: path.clone(),
            }),
            _ => None,
        }
    }

    /// The merge of `dirs`, from the cache or read now; a failure is logged with the path and
    /// becomes EIO.
    fn merged(&self, dirs: &[Source], path: &NodePath) -> std::result::Result<Arc<Merged>, Errno> {
        let key = sources_key(dirs);
        if let Some((hit, _)) = self.merges.lock().merges.get(&key) {
            return Ok(hit.clone());
        }
        let index = self.catalog.contents().index.clone();
        let merged = merge(dirs, &|tree| self.fetcher.tree(&index, tree)).map_err(|e| {
            tracing::error!("{path}: {e}");
            Errno::EIO
        })?;
        let merged = Arc::new(merged);
        let bytes = merged.bytes;
        let budget = &self.fetcher.cache;
        let limit = budget.capacity() / TREE_SHARE;
        let mut released = 0;
        {
            let mut cache = self.merges.lock();
            if let Some((_, old)) = cache.merges.put(key, (merged.clone(), bytes)) {
                released += old;
                cache.bytes -= old;
            }
            cache.bytes += bytes;
            while cache.bytes > limit && cache.merges.len() > 1 {
                if let Some((_, (_, evicted))) = cache.merges.pop_lru() {
                    released += evicted;
                    cache.bytes -= evicted;
                }
            }
        }
        budget.discharge(released);
        budget.charge(bytes);
        Ok(merged)
    }

    /// The entries of the history directory `ino`: every merged name as a history directory,
    /// then every version as a file named by its first snapshot's time. `only` restricts them
    /// to one name (a lookup).
    pub(super) fn history_children(
        &self,
        ino: u64,
        dir: &HistoryDir,
        only: Option<&[u8]>,
    ) -> std::result::Result<Vec<HistoryChild>, Errno> {
        let (versions, path) = (&dir.versions, &dir.path);
        let merged = self.merged(&dir.dirs, path)?;
        let mut out = Vec::new();
        let names: &[MergedName] = match only {
            None => &merged.names,
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
        for (version, label) in versions.iter().zip(labels) {
            let label = label.into_bytes();
            if only.is_some_and(|name| name != label.as_slice()) {
                continue;
            }
            let mut node = (*version.node).clone();
            node.name = label.clone();
            out.push(HistoryChild {
                ino: child_ino(ino, &label, None, None),
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

/// The newest first appearance among a history directory's sources and versions: its time.
pub(super) fn history_time(dirs: &[Source], versions: &[Version]) -> i64 {
    let dir = dirs.iter().map(|s| s.first.time).max();
    let version = versions.iter().map(|v| v.first.time).max();
    dir.max(version).unwrap_or(0)
}
