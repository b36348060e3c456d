//! What snapshots reach: every tree, piece and content blob below their roots, each distinct
//! tree read once. Prune marks with it, usage counts with it, copy sends what it finds, and a
//! writer's commit confirms with it that what its snapshot needs is still stored, so it lives
//! below all of them.

use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Tree, invalid_name};
use std::collections::HashSet;

/// The blobs `snapshots` reference: every tree reachable from their roots and every data blob
/// those trees list.
pub fn used_blobs(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<HashSet<BlobId>> {
    reachable(repo, index, snapshots.iter().map(|(_, s)| s.tree).collect())
}

/// Every blob reachable from the trees `roots` — trees, the pieces of split directories, file
/// content — each tree read once.
pub fn reachable(repo: &Repository, index: &Index, roots: Vec<BlobId>) -> Result<HashSet<BlobId>> {
    walk(repo, index, roots, false).map(|(used, _)| used)
}

/// What readers reach from `roots`: [`reachable`] without descending into entries whose names
/// are not one path component ([`invalid_name`]), which restore, the mount and copy leave
/// out; and whether any tree reached holds such a name (copy must then rewrite those trees
/// rather than carry them over).
pub fn reachable_noting_names(
    repo: &Repository,
    index: &Index,
    roots: Vec<BlobId>,
) -> Result<(HashSet<BlobId>, bool)> {
    walk(repo, index, roots, true)
}

/// Every blob below `roots`; with `skip_invalid`, not below entries whose names are invalid.
fn walk(
    repo: &Repository,
    index: &Index,
    roots: Vec<BlobId>,
    skip_invalid: bool,
) -> Result<(HashSet<BlobId>, bool)> {
    let mut invalid_names = false;
    let mut used: HashSet<BlobId> = HashSet::new();
    let mut pending = roots;
    while let Some(tree) = pending.pop() {
        if !used.insert(tree) {
            continue;
        }
        let unreadable =
            |e: Error| Error::Invalid(format!("tree {tree} does not read ({e}): run check"));
        let nodes = match repo.read_tree_blob(index, &tree).map_err(unreadable)? {
            Tree::Nodes(nodes) => nodes,
            // A piece is a tree blob of its own; pieces of pieces are damage, which
            // read_tree_unfiltered reports.
            Tree::Pieces(pieces) => {
                used.extend(pieces.iter().map(|p| p.tree));
                repo.read_tree_unfiltered(index, &tree)
                    .map_err(unreadable)?
            }
        };
        for node in nodes {
            if invalid_name(&node.name).is_some() {
                invalid_names = true;
                if skip_invalid {
                    continue;
                }
            }
            used.extend(node.content.iter().copied());
            if let Some(sub) = node.subtree {
                pending.push(sub);
            }
        }
    }
    Ok((used, invalid_names))
}
