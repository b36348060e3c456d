//! Walking a snapshot's tree: resolving `SNAP:PATH` to a starting point and visiting every node
//! below it depth-first, in name order, with its path.
//!
//! The walk is iterative (a stack of directories, not of calls), so no tree is deep enough to
//! overflow the stack, and it is bounded twice, because a tree may have been crafted by anyone who
//! holds a key: by depth ([`MAX_DEPTH`]) and by the number of entries visited ([`WalkBudget`]).
//! A tree is content-addressed and so cannot contain itself, but its directories can name one
//! subtree many times: 40 levels of directories that each name the next one twice expand to 2^40
//! paths from 80 stored entries. The budget turns that into an error instead of a walk that never
//! ends.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{MAX_DEPTH, Node, NodeKind};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Files and directories a walk may visit beyond twice what the snapshot says it holds.
pub const WALK_SLACK: u64 = 100_000;

/// How many files and directories a walk may visit before it calls the tree damaged. Other
/// entries (symlinks, fifos, devices) are not counted, as the snapshot's summary does not count
/// them; a directory's own size is bounded by its stored tree, so they add no unbounded work.
#[derive(Clone, Copy, Debug)]
pub struct WalkBudget {
    /// Entries left to visit.
    pub entries: u64,
}

impl WalkBudget {
    /// The budget for walking `snapshot`: twice the files and directories its summary records,
    /// plus [`WALK_SLACK`]. An honest tree never reaches it; one that names a subtree over and
    /// over does, after work proportional to what the snapshot claims to hold.
    pub fn for_snapshot(snapshot: &Snapshot) -> WalkBudget {
        let recorded = snapshot
            .summary
            .files
            .saturating_add(snapshot.summary.dirs)
            .saturating_mul(2);
        WalkBudget {
            entries: recorded.saturating_add(WALK_SLACK),
        }
    }

    /// Counts one visited entry; an error once the budget is spent.
    fn spend(&mut self, path: &Path) -> Result<()> {
        self.entries = self.entries.checked_sub(1).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: the snapshot's tree expands to far more entries than the snapshot records \
                 (a subtree named over and over): damaged or crafted, not walked further",
                path.display()
            ))
        })?;
        Ok(())
    }
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
    let mut nodes = repo.read_tree(index, &snapshot.tree)?;
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
        let found = nodes
            .iter()
            .find(|n| n.name == name)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("{} is not in the snapshot", path.display())))?;
        nodes = match (found.kind, found.subtree) {
            (NodeKind::Dir, Some(tree)) => repo.read_tree(index, &tree)?,
            _ => vec![found.clone()],
        };
        node = Some(found);
    }
    Ok(Start { nodes, node })
}

/// Visits `nodes` and everything below them, parents before their entries; `base` is prefixed
/// to every path. Fails, having visited what came before, on a tree deeper than [`MAX_DEPTH`]
/// or once `budget` is spent.
pub fn walk(
    repo: &Repository,
    index: &Index,
    nodes: Vec<Node>,
    base: &Path,
    budget: &mut WalkBudget,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<()>,
) -> Result<()> {
    // One open directory per level: its path and the entries not yet visited.
    let mut stack: Vec<(PathBuf, std::vec::IntoIter<Node>)> =
        vec![(base.to_path_buf(), nodes.into_iter())];
    while let Some((dir, entries)) = stack.last_mut() {
        let Some(node) = entries.next() else {
            stack.pop();
            continue;
        };
        let path = dir.join(OsStr::from_bytes(&node.name));
        if matches!(node.kind, NodeKind::File | NodeKind::Dir) {
            budget.spend(&path)?;
        }
        visit(&path, &node)?;
        if let (NodeKind::Dir, Some(tree)) = (node.kind, node.subtree) {
            if stack.len() >= MAX_DEPTH {
                return Err(Error::Invalid(format!(
                    "{}: directories nested deeper than {MAX_DEPTH} levels: damaged or crafted, \
                     not walked further",
                    path.display()
                )));
            }
            let below = repo.read_tree(index, &tree)?;
            stack.push((path, below.into_iter()));
        }
    }
    Ok(())
}
