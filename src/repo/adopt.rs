//! Finding the work of an interrupted job: packs that a backup, stage or copy stored before it
//! died (a dropped connection, a kill) but never named in an index. Their blobs are as good as
//! any, so the next job indexes them and de-duplicates against them instead of sending them
//! again; a backup that failed after hours re-sends only what never arrived.
//!
//! A pack is adopted only when its bytes are exactly what its writer verified before the
//! upload: the whole pack is read (in windows of [`READ_WINDOW`], whatever its size) and must
//! hash to its name, and its header must open. A pack
//! that fails (damaged on the wire and stored anyway by a server that checked too late) is left
//! alone and named in a warning; `check` reports it, `prune` removes it.

use crate::error::Result;
use crate::repo::Repository;
use crate::repo::ids::PackId;
use crate::repo::index::{Index, SegmentPack, into_segments};
use crate::repo::pack::pack_name;
use crate::repo::stored::{read_pack_header, stored_packs};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Packs indexed per segment written: segments stay small, as the packer's do.
const PACKS_PER_SEGMENT: usize = 64;

/// Bytes of one pack held at once while it is hashed.
const READ_WINDOW: u64 = 8 << 20;

/// What adoption found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Packs now indexed.
    pub packs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Unindexed packs not re-used: their bytes do not match their name, or did not read.
    pub damaged: u64,
}

/// Indexes every stored pack that `index` does not name and `unusable` (condemned by a prune)
/// does not hold, after verifying it. Call with the writer's session open and its unusable
/// packs read first, as for any de-duplication.
pub fn adopt_unindexed(
    repo: &Repository,
    index: &Index,
    unusable: &HashSet<PackId>,
) -> Result<Adopted> {
    let indexed: HashSet<&PackId> = index.packs().iter().collect();
    let largest = repo.config().params.largest_pack();
    let mut oversized = 0;
    let orphans: Vec<(PackId, u64)> = stored_packs(repo)?
        .into_iter()
        .filter(|(pack, _)| !indexed.contains(pack) && !unusable.contains(pack))
        .filter(|(pack, size)| {
            // A size no writer of this repository makes (a phantom in a lying listing): not
            // worth reading, whatever the listing says.
            let plausible = *size <= largest;
            if !plausible {
                tracing::warn!(
                    "pack {pack} is listed with {size} bytes, more than a pack of this \
                     repository can hold ({largest}); not re-used"
                );
                oversized += 1;
            }
            plausible
        })
        .collect();
    if orphans.is_empty() {
        return Ok(Adopted {
            damaged: oversized,
            ..Adopted::default()
        });
    }
    let verified: Vec<Result<Option<SegmentPack>>> = orphans
        .par_iter()
        .map(|(pack, size)| verify(repo, pack, *size))
        .collect();
    let mut found = Vec::new();
    let mut adopted = Adopted {
        damaged: oversized,
        ..Adopted::default()
    };
    for ((pack_id, size), pack) in orphans.iter().zip(verified) {
        // Adoption only saves sending again: a pack that does not read is left for check and
        // prune to deal with, never a reason to fail the job.
        let pack = pack.unwrap_or_else(|e| {
            tracing::warn!("pack {pack_id} not re-used: {e}");
            None
        });
        match pack {
            Some(pack) => {
                adopted.packs += 1;
                adopted.bytes += size;
                found.push(pack);
            }
            None => adopted.damaged += 1,
        }
    }
    for segment in into_segments(found, PACKS_PER_SEGMENT) {
        repo.save_index_segment(&segment)?;
    }
    if adopted.packs > 0 {
        tracing::info!(
            "re-using {} packs ({} bytes) an interrupted job stored",
            adopted.packs,
            adopted.bytes
        );
    }
    Ok(adopted)
}

/// The index entry of `pack` (of `size` bytes) if its bytes hash to its name and its header
/// opens; `None` (with a warning) if not. A pack gone meanwhile (a prune) is `None` too.
fn verify(repo: &Repository, pack: &PackId, size: u64) -> Result<Option<SegmentPack>> {
    let name = pack_name(pack);
    let mut hasher = Sha256::new();
    let mut window = Vec::new();
    let mut at = 0;
    while at < size {
        let end = size.min(at + READ_WINDOW);
        match repo.backend().get_into(&name, at..end, &mut window) {
            Ok(()) => hasher.update(&window),
            Err(crate::Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        at = end;
    }
    if hasher.finalize().as_slice() != pack.0 {
        tracing::warn!("{name}: stored bytes do not hash to its name; not re-used");
        return Ok(None);
    }
    match read_pack_header(repo, pack, size) {
        Ok(blobs) => Ok(Some(SegmentPack { pack: *pack, blobs })),
        Err(crate::Error::NotFound(_)) => Ok(None),
        Err(e) => {
            tracing::warn!("{e}; not re-used");
            Ok(None)
        }
    }
}
