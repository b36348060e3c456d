//! Reads the wanted blobs of one pack in bounded windows and hands each out verified.

use crate::backend::salvage::is_unreadable;
use crate::error::{Error, Result};
use crate::repo::Repository;
use crate::repo::ids::PackId;
use crate::repo::index::BlobLocation;
use crate::repo::pack::{PackEntry, pack_name};
use std::borrow::Cow;

/// Ranges closer than this are read together rather than as two requests.
const MERGE_GAP: u64 = 256 << 10;

/// Calls `on_blob` with each of `wanted` (blobs of `pack`) and its verified plaintext — or the
/// error that names it, if it is damaged — in pack order. At most `window` bytes are held at
/// once, unless a single blob is larger. Only the ranges the index gives are asked for, merged
/// when close: no round trip to learn the pack's size first, and every blob is proven by its
/// own tag and id, so nothing is gained by reading (and hashing) the pack whole.
pub fn for_each_blob(
    repo: &Repository,
    pack: &PackId,
    mut wanted: Vec<PackEntry>,
    window: usize,
    mut on_blob: impl FnMut(&PackEntry, Result<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    // The members of a solid group share its sealed range: read once, opened once. Only an
    // entry listed twice is dropped (two members may share a place: an empty one and the next).
    wanted.sort_by_key(|e| (e.offset, e.group.map(|g| g.start), e.id));
    wanted.dedup();
    let name = pack_name(pack);
    let window = window as u64;
    let mut i = 0;
    while i < wanted.len() {
        let start = u64::from(wanted[i].offset);
        let mut end = start + u64::from(wanted[i].sealed_len);
        let mut j = i + 1;
        while j < wanted.len() {
            let next_end = u64::from(wanted[j].offset) + u64::from(wanted[j].sealed_len);
            // A range already read (another member of the same group) always joins.
            let grows = next_end > end;
            if u64::from(wanted[j].offset) > end + MERGE_GAP || grows && next_end - start > window {
                break;
            }
            end = end.max(next_end);
            j += 1;
        }
        let mut ranges: Vec<_> = wanted[i..j].iter().map(PackEntry::sealed_range).collect();
        ranges.dedup();
        match repo.backend().get_ranges(&name, &ranges) {
            Ok(got) => {
                let mut k = 0;
                for entry in &wanted[i..j] {
                    if entry.sealed_range() != ranges[k] {
                        k += 1;
                    }
                    deliver(repo, pack, entry, got.range(k), &mut on_blob)?;
                }
            }
            // A device that lost a sector of the window fails all of it: each blob on its own
            // then, read around the loss or healed from the pack's parity by `read_blob_again`.
            Err(e) if is_unreadable(&e) => {
                for entry in &wanted[i..j] {
                    on_blob(
                        entry,
                        repo.read_blob_again(&BlobLocation {
                            pack: *pack,
                            entry: *entry,
                        }),
                    )?;
                }
            }
            Err(e) => return Err(e),
        }
        i = j;
    }
    Ok(())
}

/// Opens the sealed bytes of `entry` (`None` when the store sent fewer than the index says) and
/// hands the plaintext to `on_blob`. A blob that fails is fetched once more on its own: a
/// transient read fault is then not reported as damage at rest.
fn deliver(
    repo: &Repository,
    pack: &PackId,
    entry: &PackEntry,
    sealed: Option<&[u8]>,
    on_blob: &mut impl FnMut(&PackEntry, Result<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let sealed =
        sealed.ok_or_else(|| Error::corrupt(pack_name(pack), "shorter than its index says"))?;
    let at = BlobLocation {
        pack: *pack,
        entry: *entry,
    };
    let plain = match repo.open_sealed(&at, Cow::Borrowed(sealed)) {
        Ok(plain) => Ok(plain),
        // Its pack is not at fault: reading it again would not help.
        Err(failure @ Error::NoDictionary { .. }) => Err(failure),
        Err(_) => repo.read_blob_again(&at),
    };
    on_blob(entry, plain)
}
