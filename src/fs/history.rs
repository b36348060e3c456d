//! The history view's merge: one directory of `history/` is every name that directory has had in
//! any snapshot, and a file is the list of its distinct contents.
//!
//! A directory of `history/` is described by its *sources*: the distinct trees that directory
//! has had, each with the first snapshot that has it. Snapshots share unchanged directories by
//! tree id, so a directory unchanged in a thousand snapshots is one source, read once. Merging
//! reads each source tree once, in the order the trees first appeared, and keeps for every name
//! the distinct subtrees it has had (the sources of the merged child directory) and the distinct
//! contents of its other nodes (its versions). Because sources are visited oldest first, the
//! first time a subtree or a content is met is its first appearance in any snapshot.

use crate::error::{Error, Result};
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::tree::{Node, NodeKind};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Trees read in parallel at a time while merging: enough to keep the readers busy, few enough
/// that the parsed trees held at once stay small.
const READ_BATCH: usize = 16;

/// The first snapshot that has something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The snapshot's time, nanoseconds.
    pub time: i64,
    /// The snapshot.
    pub snapshot: SnapshotId,
}

/// One distinct tree a directory has had (`None`: an empty directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    /// The directory's tree.
    pub tree: Option<BlobId>,
    /// The first snapshot where the directory has this tree.
    pub first: Seen,
}

/// One distinct content of a non-directory name, with the attributes it had when it appeared.
#[derive(Clone, Debug)]
pub struct Version {
    /// The first snapshot where the name has this content.
    pub first: Seen,
    /// What identifies the content ([`Node::content_key`]): a version keeps its inode number when
    /// forgetting snapshots renames it.
    pub key: [u8; 32],
    /// The node as that snapshot recorded it.
    pub node: Arc<Node>,
}

/// Everything one name has been across the merged trees.
#[derive(Clone, Debug)]
pub struct MergedName {
    /// The name.
    pub name: Vec<u8>,
    /// The key of the merge of `dirs` ([`sources_key`]), computed once.
    pub key: [u8; 32],
    /// The distinct trees it has had as a directory, oldest first.
    pub dirs: Arc<[Source]>,
    /// Its distinct contents as anything else, oldest first.
    pub versions: Arc<[Version]>,
}

/// A merged directory: its names in byte order, and the memory they hold.
#[derive(Debug, Default)]
pub struct Merged {
    /// Every name any source has.
    pub names: Vec<MergedName>,
    /// Roughly the bytes the names hold (as counted while merging), for the memory budget.
    pub bytes: usize,
    /// Sources whose tree could not be read (damaged), left out, with why.
    pub skipped: Vec<(Source, Error)>,
}

impl Merged {
    /// The merged name `name`, if any source has it.
    pub fn get(&self, name: &[u8]) -> Option<&MergedName> {
        self.names
            .binary_search_by(|m| m.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.names[i])
    }
}

/// A name being merged, with what it has been seen as so far.
#[derive(Default)]
struct Building {
    dirs: Vec<Source>,
    dir_trees: HashSet<Option<BlobId>>,
    versions: Vec<Version>,
    contents: HashSet<[u8; 32]>,
}

/// What one more name, subtree or version costs while merging and once merged, beyond its own
/// bytes: map and set slots.
const SLOT: usize = 96;

/// Merges the directories `sources` (oldest first, distinct trees), reading each tree once
/// with `read`, a few in parallel. A source that does not read is left out and reported in
/// [`Merged::skipped`]; a merge that would hold more than `limit` bytes is refused (the
/// mount's memory budget bounds it, whatever the number and size of the snapshots).
pub fn merge(
    sources: &[Source],
    read: &(dyn Fn(&BlobId) -> Result<Vec<Node>> + Sync),
    limit: usize,
) -> Result<Merged> {
    let mut names: BTreeMap<Vec<u8>, Building> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut held = 0usize;
    let over = || {
        Error::Invalid(format!(
            "merging {} trees needs more than {} MiB, the share of the mount's cache merges may \
             take: mount with a larger --cache-size",
            sources.len(),
            limit >> 20
        ))
    };
    for batch in sources.chunks(READ_BATCH) {
        let trees: Vec<Result<Vec<Node>>> = batch
            .par_iter()
            .map(|source| match &source.tree {
                Some(tree) => read(tree),
                None => Ok(Vec::new()),
            })
            .collect();
        for (source, nodes) in batch.iter().zip(trees) {
            let nodes = match nodes {
                Ok(nodes) => nodes,
                Err(e) => {
                    skipped.push((*source, e));
                    continue;
                }
            };
            for node in nodes {
                let building = match names.get_mut(&node.name) {
                    Some(b) => b,
                    None => {
                        held += SLOT + node.name.len();
                        names.entry(node.name.clone()).or_default()
                    }
                };
                if node.kind == NodeKind::Dir {
                    if building.dir_trees.insert(node.subtree) {
                        held += SLOT;
                        building.dirs.push(Source {
                            tree: node.subtree,
                            first: source.first,
                        });
                    }
                } else {
                    let key = node.content_key();
                    if building.contents.insert(key) {
                        held += SLOT + node.memory_size();
                        building.versions.push(Version {
                            first: source.first,
                            key,
                            node: Arc::new(node),
                        });
                    }
                }
                if held > limit {
                    return Err(over());
                }
            }
        }
    }
    let names = names
        .into_iter()
        .map(|(name, b)| MergedName {
            name,
            key: sources_key(&b.dirs),
            dirs: b.dirs.into(),
            versions: b.versions.into(),
        })
        .collect();
    Ok(Merged {
        names,
        bytes: held,
        skipped,
    })
}

/// The distinct trees of `sources`, keeping each one's first appearance; `sources` must be
/// oldest first.
pub fn distinct(sources: impl IntoIterator<Item = Source>) -> Vec<Source> {
    let mut seen = HashSet::new();
    sources
        .into_iter()
        .filter(|s| seen.insert(s.tree))
        .collect()
}

/// A key naming a set of sources, for caching their merge.
pub fn sources_key(sources: &[Source]) -> [u8; 32] {
    let mut h = Sha256::new();
    for s in sources {
        match &s.tree {
            Some(tree) => h.update(tree.0),
            None => h.update([0u8; 32]),
        }
        h.update(s.first.time.to_le_bytes());
        h.update(s.first.snapshot.0);
    }
    h.finalize().into()
}

/// The name of a snapshot time in the view: its local time to the second, as `snapshots/`
/// names snapshots.
pub fn time_name(time: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(time)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The name of a version first seen at `time`: its UTC time to the second, marked `Z`, as
/// `2026-12-05_14-09-00Z`. UTC, not local time, because local time repeats an hour when clocks
/// go back, and names in local time would then sort out of time order. The name sorts by time
/// and has none of the characters FAT, exFAT and SMB shares refuse (`: \ * ? " < > |`), so a
/// version copies to a USB stick or a Windows share.
pub fn version_time_name(time: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(time)
        .format("%Y-%m-%d_%H-%M-%SZ")
        .to_string()
}

/// The extension of file name `name` with its dot (`.txt`), kept on the names of its versions
/// so that a file manager and the application a double-click opens know the type; empty when it
/// has none, or one that is not a short run of letters and digits.
pub fn extension(name: &[u8]) -> &str {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return "";
    };
    let ext = &name[dot + 1..];
    if dot == 0 || ext.is_empty() || ext.len() > 16 || !ext.iter().all(u8::is_ascii_alphanumeric) {
        return "";
    }
    std::str::from_utf8(&name[dot..]).unwrap_or_default()
}

/// The names of `versions` (of one path) inside their directory, in the order of `versions`:
/// each the time of its first snapshot ([`version_time_name`]) and the path's extension, all
/// distinct and none a name for which `taken` is true (the merged directory's own entries), so
/// a listing never shows a name twice.
///
/// Versions first seen in the same second are numbered before the extension (`-1`, `-2`, …,
/// zero-padded to one width) in the order of their snapshots' times, then ids, so their names
/// sort as they happened; a lone version whose name is taken is numbered too. A number whose
/// name is taken is skipped.
pub fn version_names(versions: &[Version], taken: impl Fn(&[u8]) -> bool) -> Vec<String> {
    let ext = versions
        .first()
        .map_or("", |v| extension(&v.node.name))
        .to_string();
    let mut same_second: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, v) in versions.iter().enumerate() {
        same_second
            .entry(version_time_name(v.first.time))
            .or_default()
            .push(i);
    }
    let mut names = vec![String::new(); versions.len()];
    let mut used = HashSet::new();
    let free = |name: &str, used: &HashSet<String>| !taken(name.as_bytes()) && !used.contains(name);
    for (stamp, mut group) in same_second {
        let bare = format!("{stamp}{ext}");
        if let [only] = group[..]
            && free(&bare, &used)
        {
            used.insert(bare.clone());
            names[only] = bare;
            continue;
        }
        group.sort_by_key(|&i| (versions[i].first.time, versions[i].first.snapshot.0));
        let width = group.len().to_string().len();
        // Each number tried is a new name, and only finitely many names are taken or used: the
        // search ends.
        let mut numbers = 1usize..;
        for i in group {
            let name = numbers
                .by_ref()
                .map(|n| format!("{stamp}-{n:0width$}{ext}"))
                .find(|name| free(name, &used))
                .unwrap_or_default();
            used.insert(name.clone());
            names[i] = name;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tree::tests::node;
    use std::collections::HashMap;

    fn seen(n: u8) -> Seen {
        Seen {
            time: i64::from(n) * 1_000_000_000,
            snapshot: SnapshotId([n; 32]),
        }
    }

    fn file(name: &str, chunk: u8, mode: u32) -> Node {
        let mut n = node(name.as_bytes());
        n.kind = NodeKind::File;
        n.mode = mode;
        n.content = vec![BlobId([chunk; 32])];
        n
    }

    fn dir(name: &str, tree: u8) -> Node {
        let mut n = node(name.as_bytes());
        n.kind = NodeKind::Dir;
        n.subtree = Some(BlobId([tree; 32]));
        n
    }

    #[test]
    fn names_merge_and_versions_are_distinct_contents_first_seen() {
        let trees: HashMap<BlobId, Vec<Node>> = [
            (1, vec![file("a", 1, 0o644), dir("d", 10)]),
            // Same content, other mode: not a new version.
            (
                2,
                vec![file("a", 1, 0o600), dir("d", 10), file("b", 5, 0o644)],
            ),
            (3, vec![file("a", 2, 0o644), dir("d", 11)]),
            // `a` back to its first content: no new version either.
            (4, vec![file("a", 1, 0o644), file("d", 7, 0o644)]),
        ]
        .into_iter()
        .map(|(t, nodes)| (BlobId([t; 32]), nodes))
        .collect();
        let sources: Vec<Source> = (1..=4)
            .map(|n| Source {
                tree: Some(BlobId([n; 32])),
                first: seen(n),
            })
            .collect();
        let merged = merge(&sources, &|id| Ok(trees[id].clone()), 1 << 20).unwrap();
        let names: Vec<&[u8]> = merged.names.iter().map(|m| m.name.as_slice()).collect();
        assert_eq!(names, [b"a".as_slice(), b"b", b"d"]);
        let a = merged.get(b"a").unwrap();
        assert!(a.dirs.is_empty());
        let firsts: Vec<Seen> = a.versions.iter().map(|v| v.first).collect();
        assert_eq!(firsts, [seen(1), seen(3)]);
        assert_eq!(
            a.versions[0].node.mode, 0o644,
            "attributes of the first snapshot"
        );
        let d = merged.get(b"d").unwrap();
        let dirs: Vec<Source> = d.dirs.to_vec();
        assert_eq!(
            dirs,
            [
                Source {
                    tree: Some(BlobId([10; 32])),
                    first: seen(1)
                },
                Source {
                    tree: Some(BlobId([11; 32])),
                    first: seen(3)
                }
            ]
        );
        assert_eq!(d.versions.len(), 1, "a file that was a directory before");
        assert!(merged.get(b"c").is_none());
        // A budget too small is an error, not a merge beyond it.
        let refused = merge(&sources, &|id| Ok(trees[id].clone()), 1000).unwrap_err();
        assert!(refused.to_string().contains("--cache-size"), "{refused}");
        // A damaged source is left out and named.
        let partial = merge(
            &sources,
            &|id| {
                if id.0[0] == 3 {
                    Err(Error::MissingBlob(*id))
                } else {
                    Ok(trees[id].clone())
                }
            },
            1 << 20,
        )
        .unwrap();
        assert_eq!(partial.skipped.len(), 1);
        assert_eq!(partial.get(b"a").unwrap().versions.len(), 1);
    }

    fn version(first: Seen, chunk: u8) -> Version {
        Version {
            first,
            key: [chunk; 32],
            node: Arc::new(file("notes.txt", chunk, 0)),
        }
    }

    #[test]
    fn versions_first_seen_in_the_same_second_are_numbered_in_time_order() {
        // The later of the two has the smaller snapshot id: time decides, not the id.
        let early = Seen {
            time: seen(1).time,
            snapshot: SnapshotId([9; 32]),
        };
        let late = Seen {
            time: seen(1).time + 1,
            snapshot: SnapshotId([2; 32]),
        };
        // Same time, to the nanosecond: the id decides.
        let tie = Seen {
            time: late.time,
            snapshot: SnapshotId([3; 32]),
        };
        let versions = [
            version(tie, 4),
            version(late, 2),
            version(early, 1),
            version(seen(9), 3),
        ];
        let at = |s: &Seen| version_time_name(s.time);
        let names = version_names(&versions, |_| false);
        assert_eq!(
            names,
            [
                format!("{}-3.txt", at(&seen(1))),
                format!("{}-2.txt", at(&seen(1))),
                format!("{}-1.txt", at(&seen(1))),
                format!("{}.txt", at(&seen(9))),
            ]
        );
        let mut sorted = names.clone();
        sorted.sort();
        let in_time_order = [2, 1, 0, 3].map(|i| names[i].clone());
        assert_eq!(sorted, in_time_order);
    }

    #[test]
    fn ten_or_more_versions_in_one_second_are_zero_padded_to_sort() {
        let versions: Vec<Version> = (0..12)
            .map(|n| {
                let first = Seen {
                    time: seen(1).time + i64::from(n),
                    snapshot: SnapshotId([n; 32]),
                };
                version(first, n)
            })
            .collect();
        let names = version_names(&versions, |_| false);
        let stamp = version_time_name(seen(1).time);
        assert_eq!(names[0], format!("{stamp}-01.txt"));
        assert_eq!(names[11], format!("{stamp}-12.txt"));
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
    }

    #[test]
    fn version_names_are_never_a_name_the_directory_already_has() {
        let stamp = |s: Seen| version_time_name(s.time);
        let twin = Seen {
            time: seen(1).time + 1,
            snapshot: SnapshotId([2; 32]),
        };
        let versions = [version(seen(1), 1), version(twin, 2), version(seen(9), 3)];
        // The entries: the lone version's plain name and its first number, and the twins'
        // first number.
        let entries = [
            format!("{}.txt", stamp(seen(9))),
            format!("{}-1.txt", stamp(seen(9))),
            format!("{}-1.txt", stamp(seen(1))),
        ];
        let names = version_names(&versions, |n| entries.iter().any(|e| e.as_bytes() == n));
        assert_eq!(
            names,
            [
                format!("{}-2.txt", stamp(seen(1))),
                format!("{}-3.txt", stamp(seen(1))),
                format!("{}-2.txt", stamp(seen(9))),
            ]
        );
    }

    #[test]
    fn version_names_keep_the_extension_sort_by_time_and_suit_any_file_system() {
        // UTC, whatever this machine's time zone: no name repeats when clocks go back.
        let name = version_time_name(1_764_943_740_000_000_000);
        assert_eq!(name, "2025-12-05_14-09-00Z");
        assert!(!name.contains([':', '\\', '*', '?', '"', '<', '>', '|', ' ']));
        assert!(version_time_name(10_000_000_000) < version_time_name(99_000_000_000));
        assert_eq!(extension(b"thesis.tex"), ".tex");
        assert_eq!(extension(b"archive.tar.gz"), ".gz");
        for none in [&b"Makefile"[..], b".bashrc", b"odd.", b"a.b c", b"x.\xff"] {
            assert_eq!(extension(none), "", "{}", String::from_utf8_lossy(none));
        }
    }
}
