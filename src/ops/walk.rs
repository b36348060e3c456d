//! Walking a snapshot's tree: resolving `SNAP:PATH` to a starting point and visiting every node
//! below it depth-first, in name order, with its path.
//!
//! The walk is iterative (a stack of directories, not of calls), so no tree is deep enough to
//! overflow the stack, and it is bounded twice, because a tree may have been crafted by anyone who
//! holds a key: by depth ([`MAX_DEPTH`]) and by the number of entries visited ([`WalkBudget`]).
//! A tree is content-addressed and so cannot contain itself, but its directories can name one
//! subtree many times: 40 levels of directories that each name the next one twice expand to 2^40
//! paths from 80 stored entries. The budget turns that into an error instead of a walk that never
//! ends: the whole tree's work is counted from its distinct directories before the walk
//! starts, so such a tree is refused before a single entry is visited or made.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind};
use crate::repo::tree_sum::{SumError, sum_below};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Work no walk may exceed: about 67 million entries and chunk references. A snapshot's
/// summary cannot set it (a key holder writes the summary too, and honest summaries leave out
/// symlinks, fifos and devices); restore plans what it walks in memory, so this also bounds its
/// plan (a few GiB at most).
pub const MAX_WALK_WORK: u64 = 1 << 26;

/// How much a walk may do before it calls the tree damaged. Work is counted in entries (of any
/// kind) plus the chunk references of files, what a restore's plan holds in memory. Before a
/// walk starts, the whole tree's work is counted from its distinct directories (each read once,
/// however often it is named), so a tree over the budget is refused before anything is made.
#[derive(Clone, Copy, Debug)]
pub struct WalkBudget {
    /// Work left.
    pub work: u64,
}

impl Default for WalkBudget {
    /// [`MAX_WALK_WORK`].
    fn default() -> WalkBudget {
        WalkBudget {
            work: MAX_WALK_WORK,
        }
    }
}

impl WalkBudget {
    /// Counts the work of visiting `node`; an error once the budget is spent.
    fn spend(&mut self, node: &Node, path: &Path) -> Result<()> {
        self.work = self
            .work
            .checked_sub(work_of(node))
            .ok_or_else(|| over_budget(path))?;
        Ok(())
    }
}

/// What visiting `node` costs: itself and its chunk references.
fn work_of(node: &Node) -> u64 {
    1 + node.content.len() as u64
}

fn over_budget(path: &Path) -> Error {
    Error::Invalid(format!(
        "{}: the snapshot's tree expands to more than {MAX_WALK_WORK} entries and chunks \
         (a subtree named over and over): damaged or crafted, not walked",
        path.display()
    ))
}

/// The work of walking `nodes` and everything below them, counted from the distinct
/// directories (each read once) and stopping as soon as it exceeds `limit`.
fn expanded_work(
    repo: &Repository,
    index: &Index,
    nodes: &[Node],
    limit: u64,
    base: &Path,
) -> Result<u64> {
    let mut memo: HashMap<BlobId, u64> = HashMap::new();
    let mut total = 0u64;
    for node in nodes {
        let path = || base.join(OsStr::from_bytes(&node.name));
        total = total.saturating_add(work_of(node));
        if let (NodeKind::Dir, Some(tree)) = (node.kind, node.subtree) {
            // The walk holds one level for the entries it starts from.
            let below = sum_below(repo, index, tree, 1, &mut memo, &work_of, &|sum| {
                *sum > limit
            })
            .map_err(|e| match e {
                SumError::TooDeep => too_deep(&path()),
                SumError::Over => over_budget(&path()),
                SumError::Repo(e) => e,
            })?;
            total = total.saturating_add(below);
        }
        if total > limit {
            return Err(over_budget(&path()));
        }
    }
    Ok(total)
}

fn too_deep(path: &Path) -> Error {
    Error::Invalid(format!(
        "{}: directories nested deeper than {MAX_DEPTH} levels: damaged or crafted, not walked",
        path.display()
    ))
}

/// Where a walk starts: the nodes at a path inside a snapshot.
pub struct Start {
    /// The nodes to visit: a directory's entries, or a single file.
    pub nodes: Vec<Node>,
    /// The node the path names, when it is not the snapshot root.
    pub node: Option<Node>,
}

/// Resolves `path` (relative to the snapshot root; empty for the root) to its node(s).
pub fn resolve(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    path: &Path,
) -> Result<Start> {
    let root = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir));
    if root {
        return Ok(Start {
            nodes: repo.read_tree(index, &snapshot.tree)?,
            node: None,
        });
    }
    let found = lookup(repo, index, snapshot, path)?
        .ok_or_else(|| Error::Invalid(format!("{} is not in the snapshot", path.display())))?;
    let nodes = match (found.kind, found.subtree) {
        (NodeKind::Dir, Some(tree)) => repo.read_tree(index, &tree)?,
        _ => vec![found.clone()],
    };
    Ok(Start {
        nodes,
        node: Some(found),
    })
}

/// The node at `path` in `snapshot` (relative to its root, not empty), if it has one there;
/// an error only when the repository cannot be read or the path has `..`.
pub fn lookup(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    path: &Path,
) -> Result<Option<Node>> {
    let mut tree = Some(snapshot.tree);
    let mut node = None;
    for component in path.components() {
        let name = match component {
            Component::Normal(name) => name.as_bytes(),
            Component::RootDir | Component::CurDir => continue,
            _ => {
                return Err(Error::Invalid(format!(
                    "path {} may not contain '..'",
                    path.display()
                )));
            }
        };
        let Some(dir) = tree else { return Ok(None) };
        let nodes = repo.read_tree(index, &dir)?;
        let Some(found) = nodes.into_iter().find(|n| n.name == name) else {
            return Ok(None);
        };
        tree = match found.kind {
            NodeKind::Dir => found.subtree,
            _ => None,
        };
        node = Some(found);
    }
    Ok(node)
}

/// Visits `nodes` and everything below them, parents before their entries; `base` is prefixed
/// to every path. A tree deeper than [`MAX_DEPTH`] or whose work exceeds `budget` is refused
/// before anything is visited.
pub fn walk(
    repo: &Repository,
    index: &Index,
    nodes: Vec<Node>,
    base: &Path,
    budget: &mut WalkBudget,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<()>,
) -> Result<()> {
    expanded_work(repo, index, &nodes, budget.work, base)?;
    // One open directory per level: its path and the entries not yet visited.
    let mut stack: Vec<(PathBuf, std::vec::IntoIter<Node>)> =
        vec![(base.to_path_buf(), nodes.into_iter())];
    while let Some((dir, entries)) = stack.last_mut() {
        let Some(node) = entries.next() else {
            stack.pop();
            continue;
        };
        let path = dir.join(OsStr::from_bytes(&node.name));
        budget.spend(&node, &path)?;
        visit(&path, &node)?;
        if let (NodeKind::Dir, Some(tree)) = (node.kind, node.subtree) {
            if stack.len() >= MAX_DEPTH {
                return Err(too_deep(&path));
            }
            let below = repo.read_tree(index, &tree)?;
            stack.push((path, below.into_iter()));
        }
    }
    Ok(())
}
