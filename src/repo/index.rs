//! The index: which pack holds each blob, and where. On disk it is a set of sealed segments, each
//! listing packs and their blobs; writers add a segment every few packs and at the end, so an
//! interrupted job's packs are found and re-used. In memory it is one sorted array of 56-byte
//! slots with pack ids interned, searched by binary search.

use crate::error::Result;
use crate::repo::blob::GroupPlace;
use crate::repo::crypto::MasterKey;
use crate::repo::ids::{BlobId, BlobKind, PackId};
use crate::repo::pack::{ENTRIES_VERSION, PackEntry, PackEntryV1, decode_entries, entries_version};
use crate::repo::serial;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

const SEGMENT_AAD: &[u8] = b"cairn index segment";

/// Blobs a writer puts in one index segment at most (about 50 MB encoded): writers flush a
/// segment when it reaches this many blobs, whatever their pack count.
pub const MAX_SEGMENT_BLOBS: usize = 1 << 20;

/// Largest index file read: [`MAX_SEGMENT_BLOBS`] entries with room to spare. Segments written
/// before the blob bound could be larger only for packs of millions of tiny blobs.
pub const MAX_SEGMENT_LEN: u64 = 256 << 20;

/// `packs` in segments of at most `per_segment` packs and [`MAX_SEGMENT_BLOBS`] blobs (a pack
/// listing more is a segment alone): packs of tiny files list up to 200,000 blobs each, so a
/// count of packs alone does not bound a segment.
pub fn into_segments(packs: Vec<SegmentPack>, per_segment: usize) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut segment = Segment::default();
    let mut blobs = 0;
    for pack in packs {
        let full =
            segment.packs.len() >= per_segment || blobs + pack.blobs.len() > MAX_SEGMENT_BLOBS;
        if full && !segment.packs.is_empty() {
            segments.push(std::mem::take(&mut segment));
            blobs = 0;
        }
        blobs += pack.blobs.len();
        segment.packs.push(pack);
    }
    if !segment.packs.is_empty() {
        segments.push(segment);
    }
    segments
}

/// One sealed index file: packs and the blobs each holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Packs described by this segment.
    pub packs: Vec<SegmentPack>,
}

/// One pack in a segment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentPack {
    /// The pack's id.
    pub pack: PackId,
    /// Its blobs, as its header lists them.
    pub blobs: Vec<PackEntry>,
}

/// A segment as format version 1 writes it (no solid groups): read, and written when no blob in
/// it is a group member.
#[derive(Serialize, Deserialize)]
struct SegmentV1 {
    packs: Vec<SegmentPackV1>,
}

#[derive(Serialize, Deserialize)]
struct SegmentPackV1 {
    pack: PackId,
    blobs: Vec<PackEntryV1>,
}

impl From<SegmentV1> for Segment {
    fn from(v1: SegmentV1) -> Segment {
        let packs = v1.packs.into_iter().map(|p| SegmentPack {
            pack: p.pack,
            blobs: p.blobs.into_iter().map(PackEntry::from).collect(),
        });
        Segment {
            packs: packs.collect(),
        }
    }
}

impl Segment {
    /// Seals the segment for storage, in the oldest format version that holds its entries
    /// ([`entries_version`]).
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        let entries = self.packs.iter().flat_map(|p| &p.blobs);
        let plain = match entries_version(entries) {
            ENTRIES_VERSION => serial::encode_version(ENTRIES_VERSION, self),
            old => {
                let packs = self.packs.iter().map(|p| SegmentPackV1 {
                    pack: p.pack,
                    blobs: p.blobs.iter().map(Into::into).collect(),
                });
                let v1 = SegmentV1 {
                    packs: packs.collect(),
                };
                serial::encode_version(old, &v1)
            }
        };
        key.seal(&plain, SEGMENT_AAD)
    }

    /// Parses a segment's plaintext, of either format version (nothing is checked beyond the
    /// encoding: [`Segment::open`] checks the entries).
    pub fn decode(plain: &[u8], name: &str) -> Result<Segment> {
        decode_entries(plain, name, |v1: SegmentV1| Segment::from(v1))
    }

    /// Opens and parses a stored segment; `name` is used in errors. An entry claiming a blob
    /// larger than cairn writes makes the segment damaged ([`PackEntry::implausible`]).
    pub fn open(key: &MasterKey, name: &str, sealed: &[u8]) -> Result<Segment> {
        let plain = key
            .open(sealed, SEGMENT_AAD)
            .map_err(|e| crate::Error::corrupt(name, e))?;
        let segment = Segment::decode(&plain, name)?;
        let entries = segment.packs.iter().flat_map(|p| &p.blobs);
        if let Some(reason) = entries.filter_map(PackEntry::implausible).next() {
            return Err(crate::Error::corrupt(name, reason));
        }
        Ok(segment)
    }
}

/// Where a blob is: its pack and its header entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack that holds it.
    pub pack: PackId,
    /// Its entry in that pack's header.
    pub entry: PackEntry,
}

const FLAG_TREE: u32 = 1 << 31;
const FLAG_COMPRESSED: u32 = 1 << 30;
const LEN_MASK: u32 = FLAG_COMPRESSED - 1;
/// In `raw_len_and_group`: the blob is a member of a solid group (blobs are far below 2 GiB).
const FLAG_GROUPED: u32 = 1 << 31;

/// A blob's location in 56 bytes: id, interned pack, offset, sealed length with the kind and
/// compression folded into its two high bits (blobs are far below 1 GiB), raw length with
/// whether it is a member of a solid group in its high bit, and its place in the group.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    sealed_len_and_flags: u32,
    raw_len_and_group: u32,
    group_start: u32,
    group_len: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 56);

/// The in-memory index of every blob in the repository. A blob may be listed in several packs
/// (two writers stored it at once, or an old index file names a pack that `repair packs`
/// replaced): every location is kept, the first listed first, so a reader whose first pack is
/// gone falls back to the next ([`Index::locations`]).
#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    /// Sorted by id; a blob's locations are adjacent, in the order the segments listed them.
    slots: Vec<Slot>,
    /// Distinct blobs.
    distinct: usize,
    duplicates: usize,
    /// The slots of tree blobs in pack order (by pack, then offset), made on first use by
    /// [`Index::trees_near`].
    trees_in_place: std::sync::OnceLock<Vec<usize>>,
}

impl Index {
    /// Builds the index from segments. A blob listed twice in one pack is kept once; listed in
    /// several packs, it keeps each, first listed first.
    pub fn from_segments(segments: Vec<Segment>) -> Index {
        let mut interned: HashMap<PackId, u32> = HashMap::new();
        let mut packs = Vec::new();
        let mut slots = Vec::new();
        for segment in segments {
            for sp in segment.packs {
                let pack = *interned.entry(sp.pack).or_insert_with(|| {
                    packs.push(sp.pack);
                    u32::try_from(packs.len() - 1).expect("fewer than 4 billion packs")
                });
                slots.extend(sp.blobs.iter().map(|e| Slot {
                    id: e.id.0,
                    pack,
                    offset: e.offset,
                    sealed_len_and_flags: (e.sealed_len & LEN_MASK)
                        | if e.kind == BlobKind::Tree {
                            FLAG_TREE
                        } else {
                            0
                        }
                        | if e.compressed { FLAG_COMPRESSED } else { 0 },
                    raw_len_and_group: e.raw_len | if e.group.is_some() { FLAG_GROUPED } else { 0 },
                    group_start: e.group.map_or(0, |g| g.start),
                    group_len: e.group.map_or(0, |g| g.len),
                }));
            }
        }
        // Stable: a blob's locations stay in the order they were listed.
        slots.par_sort_by(|a, b| a.id.cmp(&b.id));
        let before = slots.len();
        slots.dedup_by(|a, b| a.id == b.id && a.pack == b.pack);
        let distinct = slots.chunk_by(|a, b| a.id == b.id).count();
        Index {
            packs,
            duplicates: before - distinct,
            distinct,
            slots,
            trees_in_place: Default::default(),
        }
    }

    /// The slots of `id`: all its locations.
    fn slots_of(&self, id: &BlobId) -> &[Slot] {
        let start = self.slots.partition_point(|s| s.id < id.0);
        let len = self.slots[start..].partition_point(|s| s.id == id.0);
        &self.slots[start..start + len]
    }

    /// Where `id` is stored (its first listed location), if anywhere.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.slots_of(id).first().map(|s| self.location(s))
    }

    /// Every location of `id`, first listed first.
    pub fn locations(&self, id: &BlobId) -> Vec<BlobLocation> {
        self.slots_of(id).iter().map(|s| self.location(s)).collect()
    }

    /// Whether `id` is stored.
    pub fn contains(&self, id: &BlobId) -> bool {
        !self.slots_of(id).is_empty()
    }

    /// Whether `id` is stored in a pack outside `unusable`: what a writer may de-duplicate
    /// against while a prune has condemned some packs (DESIGN §6).
    pub fn contains_outside(&self, id: &BlobId, unusable: &HashSet<PackId>) -> bool {
        self.slots_of(id)
            .iter()
            .any(|s| !unusable.contains(&self.packs[s.pack as usize]))
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.distinct
    }

    /// Whether the index lists no blob.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Entries listed more than once across segments (harmless; `repair index` folds them).
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// The tree blobs stored in `at`'s pack within `span` bytes around it (`at` among them), in
    /// pack order: what a walk reads next is usually stored next to what it reads now, so a
    /// reader of trees fetches them together.
    pub fn trees_near(&self, at: &BlobLocation, span: u32) -> Vec<PackEntry> {
        let in_place = self.trees_in_place.get_or_init(|| {
            let mut trees: Vec<usize> = (0..self.slots.len())
                .filter(|&i| self.slots[i].sealed_len_and_flags & FLAG_TREE != 0)
                .collect();
            trees.sort_by_key(|&i| (self.slots[i].pack, self.slots[i].offset));
            trees
        });
        let Some(pack) = self
            .slots_of(&at.entry.id)
            .iter()
            .map(|s| s.pack as usize)
            .find(|&p| self.packs[p] == at.pack)
        else {
            return Vec::new();
        };
        let from = (pack, at.entry.offset.saturating_sub(span / 2));
        let to = (pack, at.entry.offset.saturating_add(span / 2));
        let place = |i: &usize| (self.slots[*i].pack as usize, self.slots[*i].offset);
        let start = in_place.partition_point(|i| place(i) < from);
        in_place[start..]
            .iter()
            .take_while(|i| place(i) <= to)
            .map(|i| self.location(&self.slots[*i]).entry)
            .collect()
    }

    /// Every pack the index knows.
    pub fn packs(&self) -> &[PackId] {
        &self.packs
    }

    /// Every blob's first location, in id order.
    pub fn iter(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.slots
            .chunk_by(|a, b| a.id == b.id)
            .map(|same| self.location(&same[0]))
    }

    fn location(&self, slot: &Slot) -> BlobLocation {
        let flags = slot.sealed_len_and_flags;
        BlobLocation {
            pack: self.packs[slot.pack as usize],
            entry: PackEntry {
                id: BlobId(slot.id),
                kind: if flags & FLAG_TREE != 0 {
                    BlobKind::Tree
                } else {
                    BlobKind::Data
                },
                offset: slot.offset,
                sealed_len: flags & LEN_MASK,
                raw_len: slot.raw_len_and_group & !FLAG_GROUPED,
                compressed: flags & FLAG_COMPRESSED != 0,
                group: (slot.raw_len_and_group & FLAG_GROUPED != 0).then_some(GroupPlace {
                    start: slot.group_start,
                    len: slot.group_len,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterSecrets;
    use proptest::prelude::*;

    fn entry(id: u8, kind: BlobKind, compressed: bool) -> PackEntry {
        PackEntry {
            id: BlobId([id; 32]),
            kind,
            offset: id as u32 * 10,
            sealed_len: 99,
            raw_len: 77,
            compressed,
            group: None,
        }
    }

    #[test]
    fn lookup_returns_exact_location_and_flags() {
        let segment = Segment {
            packs: vec![
                SegmentPack {
                    pack: PackId([1; 32]),
                    blobs: vec![entry(5, BlobKind::Data, true)],
                },
                SegmentPack {
                    pack: PackId([2; 32]),
                    blobs: vec![entry(3, BlobKind::Tree, false)],
                },
            ],
        };
        let index = Index::from_segments(vec![segment.clone(), segment]);
        assert_eq!(index.len(), 2);
        assert_eq!(index.duplicates(), 2);
        assert_eq!(index.locations(&BlobId([3; 32])).len(), 1);
        let at = index.get(&BlobId([3; 32])).unwrap();
        assert_eq!(at.pack, PackId([2; 32]));
        assert_eq!(at.entry, entry(3, BlobKind::Tree, false));
        assert_eq!(
            index.get(&BlobId([5; 32])).unwrap().entry,
            entry(5, BlobKind::Data, true)
        );
        assert!(index.get(&BlobId([4; 32])).is_none());
    }

    #[test]
    fn a_blob_in_two_packs_keeps_both_locations_first_listed_first() {
        let in_pack = |pack: u8| SegmentPack {
            pack: PackId([pack; 32]),
            blobs: vec![
                entry(5, BlobKind::Data, false),
                entry(pack, BlobKind::Data, false),
            ],
        };
        let index = Index::from_segments(vec![
            Segment {
                packs: vec![in_pack(9)],
            },
            Segment {
                packs: vec![in_pack(1)],
            },
        ]);
        let packs: Vec<PackId> = index
            .locations(&BlobId([5; 32]))
            .iter()
            .map(|at| at.pack)
            .collect();
        assert_eq!(packs, [PackId([9; 32]), PackId([1; 32])]);
        assert_eq!(index.get(&BlobId([5; 32])).unwrap().pack, PackId([9; 32]));
        assert_eq!(index.len(), 3);
        assert_eq!(index.iter().count(), 3);
    }

    #[test]
    fn a_member_of_a_solid_group_keeps_its_place() {
        let member = PackEntry {
            group: Some(GroupPlace {
                start: 4000,
                len: 300_000,
            }),
            ..entry(3, BlobKind::Data, true)
        };
        let index = Index::from_segments(vec![Segment {
            packs: vec![SegmentPack {
                pack: PackId([1; 32]),
                blobs: vec![member, entry(4, BlobKind::Data, false)],
            }],
        }]);
        assert_eq!(index.get(&member.id).unwrap().entry, member);
        assert_eq!(index.get(&BlobId([4; 32])).unwrap().entry.group, None);
    }

    #[test]
    fn packs_are_split_into_segments_by_their_count_and_their_blobs() {
        let pack = |n: u8, blobs: usize| SegmentPack {
            pack: PackId([n; 32]),
            blobs: vec![entry(n, BlobKind::Data, false); blobs],
        };
        let shape = |segments: Vec<Segment>| -> Vec<usize> {
            segments.iter().map(|s| s.packs.len()).collect()
        };
        let few = vec![pack(1, 10), pack(2, 10), pack(3, 10)];
        assert_eq!(shape(into_segments(few, 2)), [2, 1]);
        // Two packs of tiny files hold more blobs than one segment may: one segment each.
        let half = MAX_SEGMENT_BLOBS / 2 + 1;
        assert_eq!(
            shape(into_segments(vec![pack(1, half), pack(2, half)], 64)),
            [1, 1]
        );
        assert!(into_segments(Vec::new(), 64).is_empty());
    }

    #[test]
    fn a_segment_is_written_in_the_oldest_version_that_holds_it() {
        // No group member: version 1, what builds before groups read; one member: version 2.
        let key = MasterKey::new(MasterSecrets::generate());
        let alone = Segment {
            packs: vec![SegmentPack {
                pack: PackId([1; 32]),
                blobs: vec![
                    entry(3, BlobKind::Data, true),
                    entry(4, BlobKind::Tree, false),
                ],
            }],
        };
        let mut grouped = alone.clone();
        grouped.packs[0].blobs[0].group = Some(GroupPlace { start: 0, len: 77 });
        // Version 1 byte for byte as builds before groups wrote it: (pack, [(id, kind, offset,
        // sealed_len, raw_len, compressed)]) per pack.
        let old_shape = vec![(
            PackId([1; 32]),
            vec![
                (BlobId([3; 32]), BlobKind::Data, 30u32, 99u32, 77u32, true),
                (BlobId([4; 32]), BlobKind::Tree, 40u32, 99u32, 77u32, false),
            ],
        )];
        assert_eq!(
            key.open(&alone.seal(&key), SEGMENT_AAD).unwrap(),
            serial::encode_version(1, &old_shape)
        );
        for (segment, version) in [(alone, 1), (grouped, ENTRIES_VERSION)] {
            let sealed = segment.seal(&key);
            assert_eq!(key.open(&sealed, SEGMENT_AAD).unwrap()[0], version);
            assert_eq!(Segment::open(&key, "index/x", &sealed).unwrap(), segment);
        }
    }

    proptest! {
        #[test]
        fn segment_seal_open_round_trips(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..50)) {
            let key = MasterKey::new(MasterSecrets::generate());
            let blobs = ids.iter().enumerate().map(|(i, id)| PackEntry {
                id: BlobId(*id), kind: BlobKind::Data, offset: i as u32, sealed_len: 40, raw_len: 12, compressed: i % 2 == 0,
                group: (i % 3 == 0).then_some(GroupPlace { start: i as u32, len: 100 }),
            }).collect();
            let segment = Segment { packs: vec![SegmentPack { pack: PackId([7; 32]), blobs }] };
            let sealed = segment.seal(&key);
            prop_assert_eq!(Segment::open(&key, "index/x", &sealed).unwrap(), segment);
        }

        #[test]
        fn segment_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let key = MasterKey::new(MasterSecrets::generate());
            let _ = Segment::open(&key, "index/x", &bytes);
            let _ = Segment::decode(&bytes, "index/x");
        }
    }
}
