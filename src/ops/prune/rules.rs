//! The decisions of the prune protocol (DESIGN §6), as pure functions of what each side read:
//! which packs phase 1 condemns or repacks,
//! which condemned packs phase 2 may delete. The commands call these, and the model test
//! (`model.rs`) explores every interleaving of the protocol's steps over them.

use crate::repo::ids::{BlobId, PackId};
use crate::repo::index::Index;
use crate::repo::pack::PackEntry;
use std::collections::{HashMap, HashSet};

/// Whether a pack can be counted on to hold its blobs from now on: stored and not condemned.
fn usable(pack: &PackId, stored: &HashSet<PackId>, condemned: &HashSet<PackId>) -> bool {
    stored.contains(pack) && !condemned.contains(pack)
}

/// Bounds on what phase 1 does.
#[derive(Clone, Copy, Debug)]
pub struct PlanLimits {
    /// A pack with more than this fraction of its bytes unused has its live blobs copied into
    /// new packs and is condemned.
    pub max_unused: f64,
    /// Live bytes copied at most in one run.
    pub max_repack: u64,
}

impl Default for PlanLimits {
    /// `prune`'s defaults: repack packs more than 5 % unused, with no bound on the copying.
    fn default() -> Self {
        PlanLimits {
            max_unused: 0.05,
            max_repack: u64::MAX,
        }
    }
}

/// What phase 1 will do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Packs none of whose blobs a snapshot needs from them, with their sizes.
    pub delete: Vec<(PackId, u64)>,
    /// Packs whose live blobs are copied first, with their sizes and those blobs.
    pub repack: Vec<(PackId, u64, Vec<PackEntry>)>,
    /// Packs left as they are, partly unused, because of the limits.
    pub kept_mixed: u64,
    /// Unused bytes in those.
    pub kept_unused_bytes: u64,
}

impl Plan {
    /// Bytes the plan frees once phase 2 has run (less what repacking writes again).
    pub fn freed_bytes(&self) -> u64 {
        let condemned: u64 = self.delete.iter().map(|(_, s)| s).sum::<u64>()
            + self.repack.iter().map(|(_, s, _)| s).sum::<u64>();
        condemned - self.repacked_bytes().min(condemned)
    }

    /// Live bytes copied into new packs.
    pub fn repacked_bytes(&self) -> u64 {
        self.repack
            .iter()
            .flat_map(|(_, _, live)| live)
            .map(PackEntry::stored_share)
            .sum()
    }

    /// Every pack the plan condemns.
    pub fn condemned(&self) -> Vec<PackId> {
        let deleted = self.delete.iter().map(|(p, _)| *p);
        deleted
            .chain(self.repack.iter().map(|(p, _, _)| *p))
            .collect()
    }
}

/// A used blob that no stored pack holds: the repository is damaged, and prune must not guess.
#[derive(Debug, PartialEq, Eq)]
pub struct MissingUsedBlob(pub BlobId);

/// Phase 1's decision. Each used blob is kept in one place — its first location in a usable
/// pack — so a duplicate elsewhere does not keep a pack alive. A stored pack (indexed or not)
/// that keeps nothing is condemned whole; one that keeps something but is more than
/// `max_unused` unused is repacked, the most unused first, up to `max_repack` live bytes.
/// Packs already condemned are left to their garbage file. A used blob held only by condemned
/// packs needs nothing now: phase 2 takes its pack back into use.
pub fn plan(
    stored: &HashMap<PackId, u64>,
    by_pack: &HashMap<PackId, Vec<PackEntry>>,
    index: &Index,
    used: &HashSet<BlobId>,
    condemned: &HashSet<PackId>,
    limits: PlanLimits,
) -> Result<Plan, MissingUsedBlob> {
    let stored_set: HashSet<PackId> = stored.keys().copied().collect();
    let mut keeper: HashMap<BlobId, PackId> = HashMap::with_capacity(used.len());
    for id in used {
        let locations = index.locations(id);
        match locations
            .iter()
            .find(|at| usable(&at.pack, &stored_set, condemned))
        {
            Some(at) => {
                keeper.insert(*id, at.pack);
            }
            None if locations.iter().any(|at| stored_set.contains(&at.pack)) => {}
            None => return Err(MissingUsedBlob(*id)),
        }
    }
    let mut plan = Plan::default();
    let mut candidates = Vec::new();
    let mut packs: Vec<(&PackId, &u64)> = stored.iter().collect();
    packs.sort();
    for (pack, &size) in packs {
        if condemned.contains(pack) {
            continue;
        }
        let entries = by_pack.get(pack).map(Vec::as_slice).unwrap_or(&[]);
        let live: Vec<PackEntry> = entries
            .iter()
            .filter(|e| keeper.get(&e.id) == Some(pack))
            .copied()
            .collect();
        if live.is_empty() {
            plan.delete.push((*pack, size));
            continue;
        }
        let live_bytes: u64 = live.iter().map(PackEntry::stored_share).sum();
        // Unused is what the dead blobs take, with their entries' share of the header; the
        // live ones' share is not, or every repacked pack of small blobs would count as unused
        // again. (A pack of tiny group members is mostly header.)
        let listed: u64 = entries.iter().map(PackEntry::stored_share).sum();
        let header = size.saturating_sub(listed);
        let dead_entries = (entries.len() - live.len()) as u64;
        let dead_header = header * dead_entries / entries.len() as u64;
        let unused = listed.saturating_sub(live_bytes) + dead_header;
        if unused as f64 > limits.max_unused * size as f64 {
            candidates.push((unused, *pack, size, live, live_bytes));
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut budget = limits.max_repack;
    for (unused, pack, size, live, live_bytes) in candidates {
        if live_bytes <= budget {
            budget -= live_bytes;
            plan.repack.push((pack, size, live));
        } else {
            plan.kept_mixed += 1;
            plan.kept_unused_bytes += unused;
        }
    }
    Ok(plan)
}

/// Phase 2's decision for one garbage file: of the packs it condemned (`condemned_here`), those
/// that may be deleted now. A pack holding a blob that `used` (the snapshots as they are now)
/// needs is taken back into use when no usable pack — stored, condemned by no garbage file —
/// holds that blob too: a writer open at condemnation may have de-duplicated against it.
/// Returns the packs to delete and the packs taken back.
pub fn deletable(
    condemned_here: &[PackId],
    by_pack: &HashMap<PackId, Vec<PackEntry>>,
    index: &Index,
    used: &HashSet<BlobId>,
    stored: &HashSet<PackId>,
    condemned_anywhere: &HashSet<PackId>,
) -> (Vec<PackId>, Vec<PackId>) {
    let here: HashSet<PackId> = condemned_here
        .iter()
        .filter(|p| stored.contains(p))
        .copied()
        .collect();
    let mut revived: HashSet<PackId> = HashSet::new();
    for pack in &here {
        let entries = by_pack.get(pack).map(Vec::as_slice).unwrap_or(&[]);
        for entry in entries.iter().filter(|e| used.contains(&e.id)) {
            let locations = index.locations(&entry.id);
            if !locations
                .iter()
                .any(|at| usable(&at.pack, stored, condemned_anywhere))
            {
                revived.extend(
                    locations
                        .iter()
                        .map(|at| at.pack)
                        .filter(|p| here.contains(p)),
                );
            }
        }
    }
    let mut delete: Vec<PackId> = here.difference(&revived).copied().collect();
    delete.sort();
    let mut revived: Vec<PackId> = revived.into_iter().collect();
    revived.sort();
    (delete, revived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ids::BlobKind;
    use crate::repo::index::{Segment, SegmentPack};

    fn entry(blob: u8, offset: u32, len: u32) -> PackEntry {
        PackEntry {
            id: BlobId([blob; 32]),
            kind: BlobKind::Data,
            offset,
            sealed_len: len,
            raw_len: len,
            compressed: false,
            group: None,
        }
    }

    /// Packs `p` holding blobs listed in `layout` (pack byte, [(blob byte, sealed len)]).
    fn repo_of(
        layout: &[(u8, &[(u8, u32)])],
    ) -> (HashMap<PackId, u64>, HashMap<PackId, Vec<PackEntry>>, Index) {
        let mut stored = HashMap::new();
        let mut by_pack = HashMap::new();
        let mut packs = Vec::new();
        for (pack, blobs) in layout {
            let mut offset = 0;
            let entries: Vec<PackEntry> = blobs
                .iter()
                .map(|(b, len)| {
                    let e = entry(*b, offset, *len);
                    offset += len;
                    e
                })
                .collect();
            stored.insert(PackId([*pack; 32]), u64::from(offset));
            by_pack.insert(PackId([*pack; 32]), entries.clone());
            packs.push(SegmentPack {
                pack: PackId([*pack; 32]),
                blobs: entries,
            });
        }
        (
            stored,
            by_pack,
            Index::from_segments(vec![Segment { packs }]),
        )
    }

    fn used(blobs: &[u8]) -> HashSet<BlobId> {
        blobs.iter().map(|b| BlobId([*b; 32])).collect()
    }

    const LIMITS: PlanLimits = PlanLimits {
        max_unused: 0.05,
        max_repack: u64::MAX,
    };

    #[test]
    fn unused_packs_are_condemned_and_mostly_unused_ones_repacked() {
        let (stored, by_pack, index) = repo_of(&[
            (1, &[(1, 100), (2, 100)]),
            (2, &[(3, 100), (4, 5)]),
            (3, &[(5, 100)]),
        ]);
        let plan = plan(
            &stored,
            &by_pack,
            &index,
            &used(&[1, 2, 3]),
            &HashSet::new(),
            LIMITS,
        )
        .unwrap();
        assert_eq!(plan.delete, vec![(PackId([3; 32]), 100)]);
        // pack 2 is 5/105 unused: under 5 %, kept as it is.
        assert!(plan.repack.is_empty());
        let plan = plan_with(&stored, &by_pack, &index, &[1, 3]);
        assert_eq!(plan.repack.len(), 1);
        assert_eq!(plan.repack[0].0, PackId([1; 32]));
        assert_eq!(plan.repack[0].2, vec![entry(1, 0, 100)]);
        assert_eq!(plan.freed_bytes(), 100 + 200 - 100);
    }

    #[test]
    fn dead_entries_count_with_their_share_of_the_header() {
        // Ten tiny blobs behind a header ten times their size: four dead ones leave 40 bytes of
        // blobs (under 5 %) and 400 of their header entries unused.
        let blobs: Vec<(u8, u32)> = (1..=10).map(|b| (b, 10)).collect();
        let (mut stored, by_pack, index) = repo_of(&[(1, &blobs)]);
        *stored.get_mut(&PackId([1; 32])).unwrap() += 1000;
        let plan = plan_with(&stored, &by_pack, &index, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(plan.repack.len(), 1);
        assert!(
            plan_with(&stored, &by_pack, &index, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
                .repack
                .is_empty(),
            "a live pack's header is not unused"
        );
    }

    fn plan_with(
        stored: &HashMap<PackId, u64>,
        by_pack: &HashMap<PackId, Vec<PackEntry>>,
        index: &Index,
        live: &[u8],
    ) -> Plan {
        plan(stored, by_pack, index, &used(live), &HashSet::new(), LIMITS).unwrap()
    }

    #[test]
    fn a_duplicate_does_not_keep_a_second_pack_alive_and_the_repack_budget_holds() {
        let (stored, by_pack, index) =
            repo_of(&[(1, &[(1, 100)]), (2, &[(1, 100)]), (3, &[(2, 50), (9, 50)])]);
        let plan = plan(
            &stored,
            &by_pack,
            &index,
            &used(&[1, 2]),
            &HashSet::new(),
            PlanLimits {
                max_unused: 0.05,
                max_repack: 10,
            },
        )
        .unwrap();
        assert_eq!(plan.delete, vec![(PackId([2; 32]), 100)]);
        assert!(plan.repack.is_empty());
        assert_eq!((plan.kept_mixed, plan.kept_unused_bytes), (1, 50));
    }

    #[test]
    fn a_used_blob_nowhere_stored_stops_the_plan() {
        let (mut stored, by_pack, index) = repo_of(&[(1, &[(1, 100)])]);
        stored.clear();
        let err = plan(
            &stored,
            &by_pack,
            &index,
            &used(&[1]),
            &HashSet::new(),
            LIMITS,
        );
        assert_eq!(err, Err(MissingUsedBlob(BlobId([1; 32]))));
    }

    #[test]
    fn condemned_packs_holding_the_only_copy_of_a_used_blob_are_taken_back() {
        let (stored, by_pack, index) =
            repo_of(&[(1, &[(1, 10)]), (2, &[(2, 10)]), (3, &[(2, 10)])]);
        let stored: HashSet<PackId> = stored.keys().copied().collect();
        let here = [PackId([1; 32]), PackId([2; 32])];
        // Blob 2 is used again, but pack 3 (usable) also holds it: pack 2 may go.
        let condemned: HashSet<PackId> = here.iter().copied().collect();
        let (delete, revived) =
            deletable(&here, &by_pack, &index, &used(&[2]), &stored, &condemned);
        assert_eq!(delete, here.to_vec());
        assert!(revived.is_empty());
        // With pack 3 condemned by another garbage file, pack 2 is taken back.
        let mut anywhere = condemned.clone();
        anywhere.insert(PackId([3; 32]));
        let (delete, revived) = deletable(&here, &by_pack, &index, &used(&[2]), &stored, &anywhere);
        assert_eq!(delete, vec![PackId([1; 32])]);
        assert_eq!(revived, vec![PackId([2; 32])]);
    }

    #[test]
    fn writers_avoid_condemned_and_vanished_packs() {
        let stored: HashSet<PackId> = [PackId([1; 32]), PackId([2; 32])].into();
        let condemned: HashSet<PackId> = [PackId([2; 32])].into();
        let indexed = [PackId([1; 32]), PackId([2; 32]), PackId([3; 32])];
        let unusable = crate::repo::garbage::unusable_packs(&indexed, &stored, &condemned);
        assert_eq!(unusable, [PackId([2; 32]), PackId([3; 32])].into());
    }
}
