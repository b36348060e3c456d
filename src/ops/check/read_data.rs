//! `check --read-data`: the selected packs read once each, streamed in bounded pieces, several
//! at a time, hashed against their names and every blob opened and re-hashed.

use super::{CheckReport, DataSubset, Inventory, Problem, read_pack_header};
use crate::backend::salvage::{is_unreadable, read_range_by_sectors};
use crate::error::Error;
use crate::repo::Repository;
use crate::repo::blob::{OpenFailure, open_blob};
use crate::repo::crypto::fill_random;
use crate::repo::ids::PackId;
use crate::repo::index::BlobLocation;
use crate::repo::opened_groups::OpenedGroups;
use crate::repo::pack::{PackEntry, pack_name};
use crate::repo::parity::{
    Parity, SECTOR, SectorCrcs, largest_object, largest_recovery, parity_name,
};
use parking_lot::Mutex;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;

/// The packs a subset names, in id order.
pub(super) fn select_packs(
    stored: &HashMap<PackId, u64>,
    subset: &DataSubset,
) -> Vec<(PackId, u64)> {
    let mut all: Vec<(PackId, u64)> = stored.iter().map(|(p, s)| (*p, *s)).collect();
    all.sort();
    let shuffled = |mut packs: Vec<(PackId, u64)>| {
        let mut keys = vec![0u8; packs.len() * 8];
        fill_random(&mut keys);
        let mut keyed: Vec<(u64, (PackId, u64))> = packs
            .drain(..)
            .zip(keys.chunks_exact(8))
            .map(|(p, k)| (u64::from_le_bytes(k.try_into().expect("8 bytes")), p))
            .collect();
        keyed.sort();
        keyed.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    let mut chosen = match subset {
        DataSubset::All => all,
        DataSubset::Part { n, of } => all
            .into_iter()
            .filter(|(pack, _)| {
                let bucket = u32::from_be_bytes(pack.0[..4].try_into().expect("4 bytes"));
                bucket % of == n - 1
            })
            .collect(),
        DataSubset::Percent(p) => {
            let count = ((all.len() as f64) * p / 100.0).ceil() as usize;
            shuffled(all).into_iter().take(count).collect()
        }
        DataSubset::Bytes(limit) => {
            let mut total = 0u64;
            shuffled(all)
                .into_iter()
                .take_while(|(_, size)| {
                    let take = total < *limit;
                    total += size;
                    take
                })
                .collect()
        }
    };
    chosen.sort();
    chosen
}

/// What one read of a pack found.
#[derive(Debug, Default)]
pub struct PackReading {
    /// Blobs that did not open, with the reason.
    pub damaged: Vec<(PackEntry, String)>,
    /// Blobs that name a compression dictionary the repository cannot give: not damage of
    /// the pack, and no reason to read it again.
    pub no_dictionary: Vec<(PackEntry, String)>,
    /// Why the pack as a whole failed (hash, read error), if it did.
    pub failure: Option<String>,
    /// The CRC32C of each 4 KiB sector read, for the parity to compare (fewer than the pack
    /// has when a read failed).
    pub sector_crcs: Vec<u32>,
    /// Sectors the device could not read (EIO), read around as zeros.
    pub lost_sectors: Vec<u32>,
    /// Whether the device failed a read (EIO): lost sectors, not a transient fault, so the
    /// pack is not read a second time.
    pub unreadable: bool,
    /// Bytes read.
    pub read_len: u64,
}

impl PackReading {
    /// Records why `entry` did not open.
    fn note(&mut self, entry: PackEntry, failure: OpenFailure) {
        match failure {
            OpenFailure::Damaged(reason) => self.damaged.push((entry, reason)),
            OpenFailure::NoDictionary(reason) => self.no_dictionary.push((entry, reason)),
            OpenFailure::Store(error) => self.no_dictionary.push((entry, error.to_string())),
        }
    }

    /// The problems of blobs whose dictionary is missing.
    fn dictionary_problems(&self, pack: PackId) -> impl Iterator<Item = Problem> + '_ {
        self.no_dictionary
            .iter()
            .map(move |(entry, reason)| Problem::NoDictionary {
                pack,
                blob: entry.id,
                reason: reason.clone(),
                uses: Vec::new(),
            })
    }

    /// Whether everything read back right.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.failure.is_none()
    }
}

thread_local! {
    /// The piece buffer of this thread, re-used from piece to piece (at most a window).
    static PIECE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads a pack once, start to end, in pieces of at most `window` bytes (or one blob, if larger),
/// hashing every byte and opening every one of `entries` on the way.
pub fn read_pack(
    repo: &Repository,
    pack: &PackId,
    size: u64,
    entries: &[PackEntry],
    window: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> PackReading {
    let name = pack_name(pack);
    let window = window.max(1) as u64;
    let mut entries = entries.to_vec();
    entries.sort_by_key(|e| e.offset);
    let mut reading = PackReading::default();
    let end_of = |e: &PackEntry| u64::from(e.offset) + u64::from(e.sealed_len);
    let (inside, outside): (Vec<PackEntry>, Vec<PackEntry>) =
        entries.into_iter().partition(|e| end_of(e) <= size);
    for entry in outside {
        reading
            .damaged
            .push((entry, "lies beyond the end of the pack".into()));
    }
    // Pieces end where blobs end, so no blob is split between two reads.
    let mut cuts: Vec<u64> = inside.iter().map(end_of).collect();
    cuts.push(size);
    cuts.sort_unstable();
    cuts.dedup();
    let mut hasher = Sha256::new();
    let mut crcs = SectorCrcs::default();
    let mut opened = vec![false; inside.len()];
    // A solid group's members are opened from the group opened for the first of them.
    let groups = OpenedGroups::default();
    let mut next = 0usize;
    let mut pos = 0u64;
    while pos < size {
        let fits = cuts.partition_point(|&c| c <= pos + window);
        let end = match cuts[..fits].last() {
            Some(&c) if c > pos => c,
            _ => cuts[cuts.partition_point(|&c| c <= pos)],
        };
        let read = PIECE.with(|piece| {
            let mut bytes = piece.borrow_mut();
            repo.backend()
                .get_into(&name, pos..end, &mut bytes)
                .map(|()| std::mem::take(&mut *bytes))
        });
        let bytes = match read {
            Ok(bytes) if bytes.len() as u64 == end - pos => bytes,
            Ok(bytes) => {
                reading.failure = Some(format!(
                    "short read: {} of {} bytes at offset {pos}",
                    bytes.len(),
                    end - pos
                ));
                reading.sector_crcs = whole_sectors(crcs, pos);
                return reading;
            }
            // A device that lost sectors: read around them, so the parity learns which.
            Err(e) if is_unreadable(&e) => {
                reading.unreadable = true;
                // No parity rebuilds more than its recovery sectors: stop reading around there.
                let most = largest_recovery(size).saturating_sub(reading.lost_sectors.len() as u32);
                match read_range_by_sectors(
                    repo.backend().as_ref(),
                    &name,
                    pos..end,
                    SECTOR as u64,
                    most as usize,
                ) {
                    Ok(read) => {
                        reading.lost_sectors.extend(read.lost);
                        read.bytes
                    }
                    Err(e) => {
                        reading.failure = Some(format!("unreadable: {e}"));
                        reading.sector_crcs = whole_sectors(crcs, pos);
                        return reading;
                    }
                }
            }
            Err(e) => {
                reading.failure = Some(format!("unreadable: {e}"));
                reading.sector_crcs = whole_sectors(crcs, pos);
                return reading;
            }
        };
        hasher.update(&bytes);
        crcs.update(&bytes);
        reading.read_len += bytes.len() as u64;
        progress(bytes.len() as u64);
        while next < inside.len() && u64::from(inside[next].offset) < end {
            let entry = &inside[next];
            if u64::from(entry.offset) >= pos && end_of(entry) <= end {
                let from = (u64::from(entry.offset) - pos) as usize;
                let sealed = &bytes[from..from + entry.sealed_len as usize];
                let at = BlobLocation {
                    pack: *pack,
                    entry: *entry,
                };
                if let Err(failure) = groups.open(repo.key(), repo, &at, Cow::Borrowed(sealed)) {
                    reading.note(*entry, failure);
                }
                opened[next] = true;
            }
            next += 1;
        }
        pos = end;
        // Hand the buffer back for the next piece, of this pack or the next one on this thread.
        PIECE.with(|piece| *piece.borrow_mut() = bytes);
    }
    // Entries that overlap others (a damaged index) were not inside one piece: open them alone.
    for (entry, _) in inside.iter().zip(&opened).filter(|(_, done)| !**done) {
        let range = u64::from(entry.offset)..end_of(entry);
        let opened = repo
            .backend()
            .get(&name, Some(range))
            .map_err(|e| OpenFailure::Damaged(e.to_string()))
            .and_then(|sealed| open_blob(repo.key(), repo, &entry.meta(), &sealed).map(drop));
        if let Err(failure) = opened {
            reading.note(*entry, failure);
        }
    }
    // A sector met by two pieces was lost once.
    reading.lost_sectors.dedup();
    if !reading.lost_sectors.is_empty() {
        reading.failure = Some(format!(
            "{} sectors cannot be read (the device fails them)",
            reading.lost_sectors.len()
        ));
    } else if PackId(hasher.finalize().into()) != *pack {
        reading.failure = Some("content does not match its name".into());
    }
    reading.sector_crcs = crcs.finish();
    reading
}

/// The CRCs of the sectors read whole before a read stopped at `pos`.
fn whole_sectors(crcs: SectorCrcs, pos: u64) -> Vec<u32> {
    let mut all = crcs.finish();
    all.truncate((pos / SECTOR as u64) as usize);
    all
}

/// What the parity of `pack` (`size` bytes, read as `reading`) says: missing (where the
/// repository keeps parity), unreadable or damaged, or, for a damaged pack, how many sectors are
/// bad and whether it can rebuild them.
fn parity_problems(
    repo: &Repository,
    pack: &PackId,
    size: u64,
    reading: &PackReading,
) -> Vec<Problem> {
    let name = parity_name(pack);
    let largest = largest_object(repo.config().params.largest_pack().max(size));
    let object = match repo.backend().get_bounded(&name, largest) {
        Ok(object) => object,
        Err(Error::NotFound(_)) if !repo.config().params.parity() => return Vec::new(),
        // Deleted with its pack by a prune since the pack was read: nothing is missing.
        Err(Error::NotFound(_)) if repo.backend().stat(&pack_name(pack)).is_err() => {
            return Vec::new();
        }
        Err(Error::NotFound(_)) => return vec![Problem::ParityMissing { pack: *pack }],
        Err(e) => {
            return vec![Problem::ParityDamaged {
                pack: *pack,
                reason: e.to_string(),
            }];
        }
    };
    let parity = match Parity::parse(&object, pack) {
        Ok(parity) => parity,
        Err(e) => {
            return vec![Problem::ParityDamaged {
                pack: *pack,
                reason: e.to_string(),
            }];
        }
    };
    let mut crcs: Vec<Option<u32>> = reading.sector_crcs.iter().copied().map(Some).collect();
    for &lost in &reading.lost_sectors {
        if let Some(crc) = crcs.get_mut(lost as usize) {
            *crc = None;
        }
    }
    let damage = parity.damage_by_crc(&crcs, reading.read_len);
    let mut problems = Vec::new();
    if reading.is_clean() {
        if !damage.bad_sectors.is_empty() {
            problems.push(Problem::ParityDamaged {
                pack: *pack,
                reason: format!(
                    "its table disagrees with {} sectors of the sound pack",
                    damage.bad_sectors.len()
                ),
            });
        }
    } else {
        problems.push(Problem::DamagedSectors {
            pack: *pack,
            bad: damage.bad_sectors.len() as u32,
            limit: damage.limit,
            repairable: damage.repairable,
        });
    }
    if damage.bad_recovery > 0 {
        problems.push(Problem::ParityDamaged {
            pack: *pack,
            reason: format!("{} recovery sectors are damaged", damage.bad_recovery),
        });
    }
    problems
}

/// Reads the selected packs in parallel; a pack that fails is read once more before it counts.
pub(super) fn read_packs(
    repo: &Repository,
    inventory: &Inventory,
    selected: &[(PackId, u64)],
    window: usize,
    progress: &(dyn Fn(u64) + Sync),
    report: &mut CheckReport,
) {
    let transient = Mutex::new(Vec::new());
    let found: Vec<Vec<Problem>> = selected
        .par_iter()
        .map(|(pack, size)| {
            let entries = match inventory.by_pack.get(pack) {
                Some(entries) => entries.clone(),
                // Unindexed: its own header says what to open, when it reads.
                None => read_pack_header(repo, pack, *size).unwrap_or_default(),
            };
            let first = read_pack(repo, pack, *size, &entries, window, progress);
            if first.is_clean() {
                let mut problems = parity_problems(repo, pack, *size, &first);
                problems.extend(first.dictionary_problems(*pack));
                return problems;
            }
            // Sectors the device cannot read are not a transient fault: no second read (each
            // lost sector may cost the device seconds).
            let second = if !first.unreadable {
                let second = read_pack(repo, pack, *size, &entries, window, &|_| {});
                if second.is_clean() {
                    transient.lock().push(format!(
                        "pack {pack}: first read failed ({}), second read was clean",
                        first
                            .failure
                            .clone()
                            .or_else(|| first.damaged.first().map(|(_, r)| r.clone()))
                            .unwrap_or_default()
                    ));
                    let mut problems = parity_problems(repo, pack, *size, &second);
                    problems.extend(second.dictionary_problems(*pack));
                    return problems;
                }
                second
            } else {
                first
            };
            let mut problems = parity_problems(repo, pack, *size, &second);
            problems.extend(second.dictionary_problems(*pack));
            if let Some(reason) = second.failure.clone() {
                problems.push(Problem::DamagedPack {
                    pack: *pack,
                    reason,
                });
            }
            for (entry, reason) in second.damaged {
                problems.push(Problem::DamagedBlob {
                    pack: *pack,
                    blob: entry.id,
                    reason,
                    uses: Vec::new(),
                });
            }
            problems
        })
        .collect();
    report.packs_read = selected.len();
    report.bytes_read = selected.iter().map(|(_, s)| s).sum();
    report.problems.extend(found.into_iter().flatten());
    report.transient_faults = transient.into_inner();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> std::result::Result<u64, String> {
        text.strip_suffix("MiB")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n << 20)
            .ok_or_else(|| format!("bad size {text}"))
    }

    #[test]
    fn subsets_parse_and_select_what_they_say() {
        assert_eq!(
            DataSubset::parse("2/5", size),
            Ok(DataSubset::Part { n: 2, of: 5 })
        );
        assert_eq!(
            DataSubset::parse("10%", size),
            Ok(DataSubset::Percent(10.0))
        );
        assert_eq!(
            DataSubset::parse("5MiB", size),
            Ok(DataSubset::Bytes(5 << 20))
        );
        for bad in ["0/3", "4/3", "0%", "150%", "x"] {
            assert!(DataSubset::parse(bad, size).is_err(), "{bad}");
        }
        let stored: HashMap<PackId, u64> = (0..100u8)
            .map(|i| (PackId(crate::repo::ids::sha256(&[i])), 1 << 20))
            .collect();
        // The parts of a split cover every pack exactly once.
        let mut parts: Vec<(PackId, u64)> = (1..=3)
            .flat_map(|n| select_packs(&stored, &DataSubset::Part { n, of: 3 }))
            .collect();
        parts.sort();
        assert_eq!(parts, select_packs(&stored, &DataSubset::All));
        assert_eq!(parts.len(), 100);
        assert_eq!(select_packs(&stored, &DataSubset::Percent(10.0)).len(), 10);
        assert_eq!(select_packs(&stored, &DataSubset::Bytes(5 << 20)).len(), 5);
    }
}
