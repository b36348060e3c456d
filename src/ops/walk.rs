//! Walking a snapshot's tree: resolving `SNAP:PATH` to a starting point and visiting every node
//! below it depth-first, in name order, with its path.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Node, NodeKind};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

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

/// Visits `nodes` and everything below them; `base` is prefixed to every path.
pub fn walk(
    repo: &Repository,
    index: &Index,
    nodes: &[Node],
    base: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<()>,
) -> Result<()> {
    for node in nodes {
        let path: PathBuf = base.join(OsStr::from_bytes(&node.name));
        visit(&path, node)?;
        if let (NodeKind::Dir, Some(tree)) = (node.kind, node.subtree) {
            walk(repo, index, &repo.read_tree(index, &tree)?, &path, visit)?;
        }
    }
    Ok(())
}
