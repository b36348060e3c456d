//! Which stored blobs the snapshots still use, and how much of the repository they leave
//! unused: what `stats` reports after a `forget`, and the marking half of a future prune.
//!
//! Every distinct tree of every snapshot is read once (a tree named by many snapshots or
//! directories is not read again), so the cost follows the stored trees, not the paths. A tree
//! that cannot be read is an error: nothing below it could be marked, and a count that left it
//! out would call its blobs unused.

use crate::error::Result;
use crate::ops::check::Inventory;
use crate::ops::prune::rules::{self, PlanLimits};
use crate::repo::Repository;
use crate::repo::garbage;
use crate::repo::ids::SnapshotId;
use crate::repo::reach::used_blobs;
use crate::repo::snapshot::Snapshot;

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
            usage.unused_bytes += at.entry.stored_share();
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
            .map(|e| e.stored_share())
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
