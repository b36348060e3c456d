//! `find`: every path matching a pattern, across snapshots, with the snapshots it appears in.
//!
//! Snapshots share unchanged directories by tree id, so a directory met again at the same path
//! with the same tree holds the same matches: they are credited to the new snapshot without
//! reading the tree again. A thousand snapshots of a tree that changes a little each time cost
//! about one walk plus the directories that changed. Snapshots are numbered oldest first and
//! each match keeps the runs of consecutive snapshots it appears in, so a path present in every
//! snapshot holds one run, not a thousand ids.
//!
//! A tree may have been crafted by anyone who holds a key: the search is iterative (no depth
//! overflows the stack), refuses directories nested deeper than [`MAX_DEPTH`], and counts every
//! entry it visits in one snapshot against [`MAX_WALK_WORK`], so a subtree named over and over
//! at different paths ends in an error, not a search without end. The memo holds at most
//! [`MEMO_LIMIT`] match references; past that it starts afresh (later snapshots are then
//! walked again), so its memory does not grow with the number of snapshots.

use crate::error::{Error, Result};
use crate::ingest::patterns::Patterns;
use crate::ops::walk::MAX_WALK_WORK;
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Match references the memo may hold (8 bytes each) before it is emptied.
pub const MEMO_LIMIT: usize = 1 << 22;

/// One matching path with one set of attributes, and where it appears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its path in the snapshots, from their root (`/src/lib.rs`).
    pub path: PathBuf,
    /// Its kind.
    pub kind: NodeKind,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds.
    pub mtime: i64,
    /// The snapshots it appears in, as runs `[first, last]` of positions in the searched list.
    pub runs: Vec<(u32, u32)>,
}

impl Found {
    /// The positions of the snapshots it appears in, in order.
    pub fn positions(&self) -> impl Iterator<Item = u32> + '_ {
        self.runs.iter().flat_map(|&(a, b)| a..=b)
    }

    fn add(&mut self, snapshot: u32) {
        match self.runs.last_mut() {
            Some((_, last)) if *last == snapshot => {}
            Some((_, last)) if *last + 1 == snapshot => *last = snapshot,
            _ => self.runs.push((snapshot, snapshot)),
        }
    }
}

/// What a search of many snapshots found, and what it took.
#[derive(Debug, Default)]
pub struct Findings {
    /// Every match, in the order first met.
    pub found: Vec<Found>,
    /// Directories read (each distinct tree at each path once).
    pub trees_read: u64,
    /// Directories credited from an earlier snapshot without reading.
    pub trees_reused: u64,
}

/// The key of a match: path and attributes shown.
type MatchKey = (PathBuf, NodeKind, u64, i64);

/// A directory being searched: its key for the memo, its path, its entries left, and the
/// matches found below it so far.
struct Frame {
    key: Option<(BlobId, PathBuf)>,
    path: PathBuf,
    entries: std::vec::IntoIter<Node>,
    below: Vec<usize>,
}

/// Searches `snapshots` (oldest first) for entries whose name or path matches `patterns`.
pub fn find(
    repo: &Repository,
    index: &Index,
    snapshots: &[Snapshot],
    patterns: &Patterns,
) -> Result<Findings> {
    let mut out = Findings::default();
    let mut by_key: HashMap<MatchKey, usize> = HashMap::new();
    // (tree, path) -> the matches below it.
    let mut memo: HashMap<(BlobId, PathBuf), Vec<usize>> = HashMap::new();
    let mut memo_refs = 0usize;
    for (position, snapshot) in snapshots.iter().enumerate() {
        let position = position as u32;
        let mut work = 0u64;
        if memo_refs > MEMO_LIMIT {
            memo.clear();
            memo_refs = 0;
        }
        let root = PathBuf::from("/");
        let mut stack = vec![open(repo, index, snapshot.tree, root.clone(), &mut out)?];
        while let Some(frame) = stack.last_mut() {
            let Some(node) = frame.entries.next() else {
                let done = stack.pop().expect("a frame");
                if let Some(parent) = stack.last_mut() {
                    parent.below.extend(&done.below);
                }
                if let Some(key) = done.key {
                    memo_refs += done.below.len() + 1;
                    memo.insert(key, done.below);
                }
                continue;
            };
            work += 1;
            if work > MAX_WALK_WORK {
                return Err(Error::Invalid(format!(
                    "{}: the snapshots' trees expand to more than {MAX_WALK_WORK} entries \
                     (a subtree named over and over): damaged or crafted, search stopped",
                    frame.path.display()
                )));
            }
            let path = frame.path.join(OsStr::from_bytes(&node.name));
            if patterns.matches(&path, OsStr::from_bytes(&node.name)) {
                let key = (path.clone(), node.kind, node.size, node.mtime);
                let at = *by_key.entry(key).or_insert_with(|| {
                    out.found.push(Found {
                        path: path.clone(),
                        kind: node.kind,
                        size: node.size,
                        mtime: node.mtime,
                        runs: Vec::new(),
                    });
                    out.found.len() - 1
                });
                out.found[at].add(position);
                frame.below.push(at);
            }
            let (NodeKind::Dir, Some(tree)) = (node.kind, node.subtree) else {
                continue;
            };
            let memo_key = (tree, path.clone());
            if let Some(below) = memo.get(&memo_key) {
                out.trees_reused += 1;
                for &at in below {
                    out.found[at].add(position);
                }
                frame.below.extend(below);
                continue;
            }
            if stack.len() >= MAX_DEPTH {
                return Err(Error::Invalid(format!(
                    "{}: directories nested deeper than {MAX_DEPTH} levels: damaged or \
                     crafted, not searched",
                    path.display()
                )));
            }
            let mut frame = open(repo, index, tree, path, &mut out)?;
            frame.key = Some(memo_key);
            stack.push(frame);
        }
    }
    Ok(out)
}

/// A frame for the directory `tree` at `path`, its entries read.
fn open(
    repo: &Repository,
    index: &Index,
    tree: BlobId,
    path: PathBuf,
    out: &mut Findings,
) -> Result<Frame> {
    out.trees_read += 1;
    let entries = repo.read_tree(index, &tree)?;
    Ok(Frame {
        key: None,
        path,
        entries: entries.into_iter(),
        below: Vec::new(),
    })
}
