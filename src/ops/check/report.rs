//! What `check` found: each problem, where it is, and who uses what it makes unreadable.

use crate::repo::ids::{BlobId, PackId, SnapshotId};
use serde::Serialize;
use std::fmt;

/// One place where a blob is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Use {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// The file (or directory, for a tree blob) inside it.
    pub path: String,
}

/// One thing wrong with the repository.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// An index file that does not open.
    DamagedIndex { file: String, reason: String },
    /// A snapshot file that does not open.
    DamagedSnapshot { file: String, reason: String },
    /// The index lists blobs in a pack the store does not have.
    MissingPack {
        pack: PackId,
        blobs: usize,
        /// Every one of its blobs is stored in another pack too: only the index entries naming
        /// this pack are wrong (an old index file replayed after `repair packs`).
        stale: bool,
    },
    /// A pack shorter than the index says it must be.
    ShortPack {
        pack: PackId,
        size: u64,
        needed: u64,
    },
    /// A pack whose header is unreadable or lists other blobs than the index.
    HeaderMismatch { pack: PackId, reason: String },
    /// A blob a snapshot references that no index lists.
    MissingBlob { blob: BlobId, uses: Vec<Use> },
    /// A pack whose bytes do not hash to its name, or that cannot be read.
    DamagedPack { pack: PackId, reason: String },
    /// A tree entry whose name is not one path component (`..`, `/x`, empty, with NUL or `/`):
    /// crafted or damaged. Readers skip it; `repair snapshots` drops it.
    InvalidName {
        tree: BlobId,
        name: String,
        reason: &'static str,
    },
    /// A damaged pack's sectors against its parity: how many are bad, how many it can rebuild.
    DamagedSectors {
        pack: PackId,
        bad: u32,
        limit: u32,
        repairable: bool,
    },
    /// A pack without the parity the repository keeps for every pack.
    ParityMissing { pack: PackId },
    /// A parity object that cannot be read or disagrees with its sound pack.
    ParityDamaged { pack: PackId, reason: String },
    /// A compression dictionary with a damaged copy (`repairable`: `scrub` rewrites it from the
    /// other) or none left intact, or one that does not open.
    DamagedDictionary {
        /// Its object name, `dicts/<zstd id>-<id>` (blob errors name the zstd id).
        dictionary: String,
        reason: String,
        repairable: bool,
    },
    /// A blob compressed with a dictionary that is missing or does not open. Its pack may be
    /// sound: `repair` leaves it be (the dictionary is what to restore).
    NoDictionary {
        pack: PackId,
        blob: BlobId,
        reason: String,
        uses: Vec<Use>,
    },
    /// A blob that does not open or whose content does not match its id.
    DamagedBlob {
        pack: PackId,
        blob: BlobId,
        reason: String,
        uses: Vec<Use>,
    },
}

impl Problem {
    /// The blob this problem makes unreadable, if it is about one.
    pub fn blob(&self) -> Option<BlobId> {
        match self {
            Problem::MissingBlob { blob, .. }
            | Problem::DamagedBlob { blob, .. }
            | Problem::NoDictionary { blob, .. } => Some(*blob),
            _ => None,
        }
    }

    pub(super) fn uses_mut(&mut self) -> Option<&mut Vec<Use>> {
        match self {
            Problem::MissingBlob { uses, .. }
            | Problem::DamagedBlob { uses, .. }
            | Problem::NoDictionary { uses, .. } => Some(uses),
            _ => None,
        }
    }
}

fn describe_uses(uses: &[Use]) -> String {
    if uses.is_empty() {
        return "used by no snapshot".into();
    }
    let listed: Vec<String> = uses
        .iter()
        .map(|u| format!("{}:{}", u.snapshot.short(), u.path))
        .collect();
    format!("used by {}", listed.join(", "))
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DamagedIndex { file, reason } => write!(f, "index file {file}: {reason}"),
            Problem::DamagedDictionary {
                dictionary,
                reason,
                repairable,
            } => match repairable {
                true => write!(
                    f,
                    "{dictionary}: {reason}, repairable from its other copy (`cairn scrub`)"
                ),
                false => write!(
                    f,
                    "{dictionary}: {reason}; blobs compressed with it cannot be read \
                     (`cairn check --read-data` names them and their files)"
                ),
            },
            Problem::DamagedSnapshot { file, reason } => {
                write!(f, "snapshot file {file}: {reason}")
            }
            Problem::MissingPack {
                pack,
                blobs,
                stale: false,
            } => write!(f, "pack {pack} is missing ({blobs} indexed blobs)"),
            Problem::MissingPack {
                pack,
                blobs,
                stale: true,
            } => write!(
                f,
                "pack {pack} is missing, but its {blobs} indexed blobs are all stored in other \
                 packs: the index entries naming it are stale (`repair index` drops them)"
            ),
            Problem::ShortPack { pack, size, needed } => write!(
                f,
                "pack {pack} has {size} bytes but its index entries need {needed}"
            ),
            Problem::HeaderMismatch { pack, reason } => write!(f, "pack {pack} header: {reason}"),
            Problem::MissingBlob { blob, uses } => {
                write!(f, "blob {blob} is in no index; {}", describe_uses(uses))
            }
            Problem::DamagedPack { pack, reason } => write!(f, "pack {pack}: {reason}"),
            Problem::DamagedSectors {
                pack,
                bad,
                limit,
                repairable: true,
            } => write!(
                f,
                "pack {pack}: {bad} bad sectors, repairable from its parity (limit {limit}): \
                 `repair packs` heals it"
            ),
            Problem::DamagedSectors {
                pack, bad, limit, ..
            } => write!(
                f,
                "pack {pack}: {bad} bad sectors, not repairable from its parity (limit {limit})"
            ),
            Problem::ParityMissing { pack } => write!(f, "pack {pack} has no parity"),
            Problem::ParityDamaged { pack, reason } => {
                write!(f, "parity of pack {pack} is damaged: {reason}")
            }
            Problem::InvalidName { tree, name, reason } => write!(
                f,
                "tree {tree}: entry {name}: {reason} (skipped when read; `repair snapshots` drops it)"
            ),
            Problem::DamagedBlob {
                pack,
                blob,
                reason,
                uses,
            } => write!(
                f,
                "blob {blob} in pack {pack} is damaged ({reason}); {}",
                describe_uses(uses)
            ),
            Problem::NoDictionary {
                pack,
                blob,
                reason,
                uses,
            } => write!(
                f,
                "blob {blob} in pack {pack} cannot be read: {reason}; {}",
                describe_uses(uses)
            ),
        }
    }
}

/// What `check` found.
#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    /// Snapshots read.
    pub snapshots: usize,
    /// Distinct trees walked.
    pub trees: usize,
    /// Packs stored.
    pub packs: usize,
    /// Blobs indexed.
    pub blobs: usize,
    /// Packs whose contents were read.
    pub packs_read: usize,
    /// Bytes read for that.
    pub bytes_read: u64,
    /// Index entries listed more than once (harmless; `repair index` removes them).
    pub duplicate_entries: usize,
    /// Stored packs no index lists, with their sizes: left by a job that stopped between storing
    /// a pack and indexing it. Harmless — no snapshot can reference a blob only they hold — and
    /// `repair index` makes their blobs reusable.
    pub unindexed_packs: Vec<(PackId, u64)>,
    /// Parity objects whose pack is not stored: left by a job stopped between the two (a
    /// writer stores the parity first, a prune deletes it last). Harmless; the next prune
    /// removes them.
    pub orphan_parity: Vec<PackId>,
    /// Packs the index names that are gone, none of whose blobs a snapshot uses: left when two
    /// prunes rewrote one index file at once. Harmless — writers do not de-duplicate against
    /// packs that are not stored — and the next prune drops the entries.
    pub gone_unused_packs: Vec<PackId>,
    /// Packs that failed a first read and passed a second: a read fault, not damage at rest.
    pub transient_faults: Vec<String>,
    /// Everything wrong, in the order found.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}
