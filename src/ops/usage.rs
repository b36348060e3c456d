//! Which stored blobs the snapshots still use, and how much of the repository they leave
//! unused: what `stats` reports after a `forget`, and the marking half of a future prune.
//!
//! Every distinct tree of every snapshot is read once (a tree named by many snapshots or
//! directories is not read again), so the cost follows the stored trees, not the paths. A tree
//! that cannot be read is an error: nothing below it could be marked, and a count that left it
//! out would call its blobs unused.

use crate::error::{Error, Result};
use crate::ops::check::Inventory;
use crate::ops::prune::rules::{self, PlanLimits};
use crate::repo::Repository;
use crate::repo::garbage;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::index::Index;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::Tree;
use std::collections::HashSet;

/// How much of the repository the snapshots use.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Distinct blobs some snapshot references.
    pub used_blobs: u64,
    /// Indexed blobs no snapshot references.
    pub unused_blobs: u64,
    /// Their stored (sealed) bytes.
    pub unused_bytes: u64,
    /// Stored packs none of whose blobs any snapshot references (indexed or not): deletable
    /// without copying anything.
    pub unused_packs: u64,
    /// Their stored bytes.
    pub unused_pack_bytes: u64,
    /// Packs holding both used and unused blobs: freeing those bytes means copying the rest.
    pub mixed_packs: u64,
    /// Unused bytes inside the mixed packs.
    pub mixed_unused_bytes: u64,
    /// Bytes `cairn prune` (default limits) would free once both its phases ran.
    pub prune_would_free: u64,
    /// Live bytes it would copy into new packs to do so.
    pub prune_would_repack: u64,
    /// Packs earlier prunes condemned and have not yet deleted (waiting for writers).
    pub condemned_packs: u64,
    /// Their bytes.
    pub condemned_bytes: u64,
}

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
            used.extend(node.content.iter().copied());
            if let Some(sub) = node.subtree {
                pending.push(sub);
            }
        }
    }
    Ok(used)
}

/// How much of the repository `snapshots` use.
pub fn usage(
    repo: &Repository,
    inventory: &Inventory,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<Usage> {
    let used = used_blobs(repo, &inventory.index, snapshots)?;
    let mut usage = Usage::default();
    let condemned = garbage::condemned(&garbage::list(repo)?);
    for pack in &condemned {
        if let Some(size) = inventory.stored.get(pack) {
            usage.condemned_packs += 1;
            usage.condemned_bytes += size;
        }
    }
    let plan = rules::plan(
        &inventory.stored,
        &inventory.by_pack,
        &inventory.index,
        &used,
        &condemned,
        PlanLimits::default(),
    );
    if let Ok(plan) = plan {
        usage.prune_would_free = plan.freed_bytes() + usage.condemned_bytes;
        usage.prune_would_repack = plan.repacked_bytes();
    }
    for at in inventory.index.iter() {
        if used.contains(&at.entry.id) {
            usage.used_blobs += 1;
        } else {
            usage.unused_blobs += 1;
            usage.unused_bytes += u64::from(at.entry.sealed_len);
        }
    }
    for (pack, size) in &inventory.stored {
        let entries = inventory
            .by_pack
            .get(pack)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let unused: u64 = entries
            .iter()
            .filter(|e| !used.contains(&e.id))
            .map(|e| u64::from(e.sealed_len))
            .sum();
        let any_used = entries.iter().any(|e| used.contains(&e.id));
        if !any_used {
            usage.unused_packs += 1;
            usage.unused_pack_bytes += size;
        } else if unused > 0 {
            usage.mixed_packs += 1;
            usage.mixed_unused_bytes += unused;
        }
    }
    Ok(usage)
}
