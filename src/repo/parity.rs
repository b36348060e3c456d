//! The parity of a pack: Reed-Solomon recovery sectors that rebuild a pack's stored bytes when
//! some of its 4 KiB sectors are lost or wrong — without the original files, and without the key
//! (parity is over the encrypted bytes, so it reveals nothing). Disks lose whole sectors, and
//! de-duplication concentrates the risk: one bad sector can lose a chunk every snapshot shares
//! (DESIGN §9).
//!
//! The pack is cut into sectors aligned to its file offsets, so one unreadable disk sector costs
//! exactly one shard. Each group of up to [`GROUP`] sectors gets `max(4, ⌈n/d⌉)` recovery
//! sectors (`d` = 40 for data packs, 10 for tree packs); any that many bad sectors in any pattern
//! heal. A CRC32C of every sector, stored twice, says which sectors are bad; the pack's name (the
//! SHA-256 of its bytes) proves the result, so a damaged or hostile parity object can make a heal
//! fail, never change a byte that is served. Byte layout: docs/FORMAT.md, "Parity objects".

use crate::digest::sha256;
use crate::error::{Error, Result};
use crate::repo::ids::{BlobKind, PackId};
use parking_lot::Mutex;
use reed_solomon_simd::ReedSolomonEncoder;
use std::borrow::Cow;
use std::ops::Range;

/// Bytes per sector: the disks' unit of loss.
pub const SECTOR: usize = 4096;
/// Data sectors per Reed-Solomon group (128 MiB): the codec takes up to 32768 original shards
/// with any number of recovery shards up to 32768.
pub const GROUP: u32 = 32_768;
/// Data sectors per recovery sector in a data pack: 2.7 % of a 16 MiB pack.
pub const DATA_DENSITY: u32 = 40;
/// Data sectors per recovery sector in a tree pack: a lost tree loses directories in every
/// snapshot.
pub const TREE_DENSITY: u32 = 10;
/// Recovery sectors a group gets at least, however small.
const MIN_RECOVERY: u32 = 4;

const MAGIC: &[u8; 8] = b"cairnpar";
const VERSION: u32 = 1;
/// The fixed fields, then their SHA-256.
const FIELDS: usize = 72;
const HEADER: usize = FIELDS + 32;

/// Why a parity object cannot be used, or a pack cannot be healed.
#[derive(Debug, PartialEq, Eq)]
pub enum ParityError {
    /// The object is not a parity object of this format, or its header is damaged.
    Malformed(String),
    /// The object belongs to another pack.
    OtherPack,
    /// Both copies of the sector table are damaged.
    TablesDamaged,
    /// More sectors are bad in a group than its recovery sectors can rebuild.
    NotRepairable {
        /// Bad data sectors, pack-wide.
        bad: u32,
        /// Recovery sectors of the group that failed, usable ones.
        limit: u32,
    },
    /// The rebuilt bytes are not the pack (a wrong table or hostile parity).
    Mismatch,
}

impl std::fmt::Display for ParityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParityError::Malformed(why) => write!(f, "malformed parity object: {why}"),
            ParityError::OtherPack => write!(f, "the parity object is another pack's"),
            ParityError::TablesDamaged => write!(f, "both sector tables of the parity are damaged"),
            ParityError::NotRepairable { bad, limit } => write!(
                f,
                "not repairable: {bad} bad sectors, a group can rebuild at most {limit}"
            ),
            ParityError::Mismatch => {
                write!(
                    f,
                    "the parity does not rebuild the pack (the parity is damaged)"
                )
            }
        }
    }
}

/// How a pack's parity is laid out: everything follows from the pack's length, the group size
/// and the density.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    len: u64,
    group: u32,
    density: u32,
}

impl Layout {
    /// Data sectors.
    fn sectors(&self) -> u32 {
        u32::try_from(self.len.div_ceil(SECTOR as u64)).unwrap_or(u32::MAX)
    }

    /// Each group's data sectors and recovery sectors, in order.
    fn groups(&self) -> impl Iterator<Item = (Range<u32>, Range<u32>)> + '_ {
        let n = self.sectors();
        let mut recovery = 0;
        (0..n.div_ceil(self.group)).map(move |g| {
            let data = g * self.group..n.min((g + 1) * self.group);
            let r = recovery_count(data.len() as u32, self.density);
            let range = recovery..recovery + r;
            recovery += r;
            (data, range)
        })
    }

    /// Recovery sectors in all.
    fn recovery(&self) -> u32 {
        self.groups().map(|(_, r)| r.len() as u32).sum()
    }

    /// One copy of the sector table: a CRC32C per data and recovery sector, then their SHA-256.
    fn table_len(&self) -> usize {
        4 * (self.sectors() as usize + self.recovery() as usize) + 32
    }

    /// The whole object.
    fn object_len(&self) -> usize {
        HEADER + 2 * self.table_len() + self.recovery() as usize * SECTOR
    }
}

/// Where the parity of `pack` is stored: beside the pack, under the pack's name.
pub fn parity_name(pack: &PackId) -> String {
    let hex = pack.to_hex();
    format!("parity/{}/{}", &hex[..2], hex)
}

/// The parity object of a pack a writer is about to store (`bytes`, named `id`, holding blobs
/// of `kind`), checked against the pack before anyone relies on it: read back, it must name the
/// pack and find every sector sound.
pub fn for_pack(bytes: &[u8], id: &PackId, kind: BlobKind) -> Result<Vec<u8>> {
    let density = match kind {
        BlobKind::Data => DATA_DENSITY,
        BlobKind::Tree => TREE_DENSITY,
    };
    let object = build(bytes, id, density);
    let fail = |why: String| Error::Invalid(format!("the parity of pack {} {why}", id.short()));
    let parity =
        Parity::parse(&object, id).map_err(|e| fail(format!("does not read back: {e}")))?;
    if !parity.fits(bytes) {
        return Err(fail(
            "does not match the pack (memory or a bug changed one)".into(),
        ));
    }
    Ok(object)
}

/// The CRC32C of each 4 KiB sector of a pack read as a stream, in pieces of any size: what
/// [`Parity::damage_by_crc`] compares with the parity's table.
#[derive(Default)]
pub struct SectorCrcs {
    done: Vec<u32>,
    current: u32,
    filled: usize,
}

impl SectorCrcs {
    /// Adds the next bytes of the pack.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (SECTOR - self.filled).min(bytes.len());
            self.current = crc32c::crc32c_append(self.current, &bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == SECTOR {
                self.done.push(std::mem::take(&mut self.current));
                self.filled = 0;
            }
        }
    }

    /// The CRCs, the last sector zero-padded.
    pub fn finish(mut self) -> Vec<u32> {
        if self.filled > 0 {
            let pad = [0u8; SECTOR];
            self.current = crc32c::crc32c_append(self.current, &pad[..SECTOR - self.filled]);
            self.done.push(self.current);
        }
        self.done
    }
}

/// The density a parity object's header names, if its header is sound (whatever the rest).
pub fn density_of(object: &[u8]) -> Option<u32> {
    let header = object.get(..HEADER)?;
    let sound = &header[..8] == MAGIC && sha256(&header[..FIELDS]) == header[FIELDS..HEADER];
    let density = u32::from_le_bytes(header[64..68].try_into().ok()?);
    (sound && [DATA_DENSITY, TREE_DENSITY].contains(&density)).then_some(density)
}

/// The largest parity object a pack of `pack_len` bytes can have (tree density, the writers'
/// groups): readers refuse a larger one unread.
pub fn largest_object(pack_len: u64) -> u64 {
    Layout {
        len: pack_len.max(1),
        group: GROUP,
        density: TREE_DENSITY,
    }
    .object_len() as u64
}

/// The most recovery sectors any parity of a pack of `pack_len` bytes has (tree density, the
/// writers' groups): no more of its sectors can be rebuilt, so a reader stops reading around
/// lost ones there.
pub fn largest_recovery(pack_len: u64) -> u32 {
    Layout {
        len: pack_len.max(1),
        group: GROUP,
        density: TREE_DENSITY,
    }
    .recovery()
}

/// Recovery sectors of a group of `n` data sectors at `density`.
pub fn recovery_count(n: u32, density: u32) -> u32 {
    MIN_RECOVERY.max(n.div_ceil(density.max(1)))
}

/// Data sector `i` of `pack`, zero-padded to a whole sector (the last one is short); a sector
/// past the end is all zeros.
fn sector(pack: &[u8], i: u32) -> Cow<'_, [u8]> {
    let start = (i as usize * SECTOR).min(pack.len());
    let end = (start + SECTOR).min(pack.len());
    let bytes = &pack[start..end];
    if bytes.len() == SECTOR {
        Cow::Borrowed(bytes)
    } else {
        let mut padded = bytes.to_vec();
        padded.resize(SECTOR, 0);
        Cow::Owned(padded)
    }
}

/// The parity object of `pack` (its stored bytes, non-empty, whose SHA-256 is `id`: the caller
/// has it already, and hashing the pack again would cost a third of the build) at `density`.
pub fn build(pack: &[u8], id: &PackId, density: u32) -> Vec<u8> {
    build_with(pack, id, density, GROUP)
}

/// One encoder kept between the packs of a job: its working space holds a group's sectors
/// (16 MiB for a full data pack), which would otherwise be allocated and faulted in afresh for
/// every pack a writer stores. Builds running at once while it is taken make their own; one is
/// kept, until the job ends ([`release_spare_encoder`]).
static SPARE_ENCODER: Mutex<Option<ReedSolomonEncoder>> = Mutex::new(None);

/// Frees the encoder kept between packs: a writer calls it as its job ends, so a long-running
/// process (the stage, the mount's cache) does not hold a pack's worth of working space.
pub fn release_spare_encoder() {
    let spare = SPARE_ENCODER.lock().take();
    drop(spare);
}

/// Appends the `recovery` recovery sectors of `data` (sectors of `pack`) to `out`.
fn encode_group(pack: &[u8], data: Range<u32>, recovery: usize, out: &mut Vec<u8>) {
    // Within the codec's limits by construction: at most GROUP originals, fewer recovery.
    fn within<T>(done: std::result::Result<T, reed_solomon_simd::Error>) -> T {
        done.unwrap_or_else(|e| unreachable!("group within the codec's limits: {e}"))
    }
    let originals = data.len();
    // Taken and put back in statements of their own: the lock is never held while a working
    // space is allocated or freed.
    let spare = SPARE_ENCODER.lock().take();
    let mut encoder = match spare {
        Some(mut spare) => {
            within(spare.reset(originals, recovery, SECTOR));
            spare
        }
        None => within(ReedSolomonEncoder::new(originals, recovery, SECTOR)),
    };
    for i in data {
        within(encoder.add_original_shard(sector(pack, i)));
    }
    for shard in within(encoder.encode()).recovery_iter() {
        out.extend_from_slice(shard);
    }
    let surplus = SPARE_ENCODER.lock().replace(encoder);
    drop(surplus);
}

/// [`build`] with groups of `group` sectors (small ones let tests reach several groups).
fn build_with(pack: &[u8], id: &PackId, density: u32, group: u32) -> Vec<u8> {
    let layout = Layout {
        len: pack.len() as u64,
        group,
        density,
    };
    let mut recovery = Vec::with_capacity(layout.recovery() as usize * SECTOR);
    for (data, r) in layout.groups() {
        encode_group(pack, data, r.len(), &mut recovery);
    }
    let mut table = Vec::with_capacity(layout.table_len());
    for i in 0..layout.sectors() {
        table.extend_from_slice(&crc32c::crc32c(&sector(pack, i)).to_le_bytes());
    }
    for shard in recovery.chunks(SECTOR) {
        table.extend_from_slice(&crc32c::crc32c(shard).to_le_bytes());
    }
    let table_hash = sha256(&table);
    table.extend_from_slice(&table_hash);

    let mut out = Vec::with_capacity(layout.object_len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(SECTOR as u32).to_le_bytes());
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&layout.len.to_le_bytes());
    out.extend_from_slice(&layout.sectors().to_le_bytes());
    out.extend_from_slice(&layout.group.to_le_bytes());
    out.extend_from_slice(&layout.density.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let header_hash = sha256(&out);
    out.extend_from_slice(&header_hash);
    out.extend_from_slice(&table);
    out.extend_from_slice(&table);
    out.extend_from_slice(&recovery);
    out
}

/// A parity object, checked and ready to heal with.
pub struct Parity<'a> {
    pack: PackId,
    layout: Layout,
    /// CRC32C of each data sector, then of each recovery sector.
    crcs: Vec<u32>,
    recovery: &'a [u8],
}

/// A pack's sectors against its parity.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Damage {
    /// Data sectors that are unreadable, missing or wrong.
    pub bad_sectors: Vec<u32>,
    /// Recovery sectors that are wrong (unusable).
    pub bad_recovery: u32,
    /// The fewest usable recovery sectors of a group with bad sectors (the most it can heal).
    pub limit: u32,
    /// Whether every group has at least as many usable recovery sectors as bad data sectors.
    pub repairable: bool,
}

impl<'a> Parity<'a> {
    /// Reads a parity object, which must be `pack`'s.
    pub fn parse(object: &'a [u8], pack: &PackId) -> Result<Parity<'a>, ParityError> {
        let malformed = |why: &str| ParityError::Malformed(why.to_string());
        let header = object.get(..HEADER).ok_or_else(|| malformed("too short"))?;
        if &header[..8] != MAGIC {
            return Err(malformed("not a parity object"));
        }
        if sha256(&header[..FIELDS]) != header[FIELDS..HEADER] {
            return Err(malformed("damaged header"));
        }
        let u32_at =
            |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or_default());
        if u32_at(8) != VERSION || u32_at(12) != SECTOR as u32 {
            return Err(malformed("unknown version"));
        }
        if header[16..48] != pack.0 {
            return Err(ParityError::OtherPack);
        }
        let len = u64::from_le_bytes(header[48..56].try_into().unwrap_or_default());
        let layout = Layout {
            len,
            group: u32_at(60),
            density: u32_at(64),
        };
        // Every data sector takes 8 bytes of tables and every group at least four recovery
        // sectors: a header claiming more than the object can hold is refused before its
        // layout is worked out (which walks the groups).
        let room = object.len() - HEADER;
        let n = u64::from(u32_at(56));
        let sensible = len > 0
            && layout.sectors() == u32_at(56)
            && (1..=GROUP).contains(&layout.group)
            && [DATA_DENSITY, TREE_DENSITY].contains(&layout.density)
            && n * 8 <= room as u64
            && n.div_ceil(u64::from(layout.group)) * u64::from(MIN_RECOVERY) * SECTOR as u64
                <= room as u64;
        if !sensible || object.len() != layout.object_len() {
            return Err(malformed("inconsistent lengths"));
        }
        let table_len = layout.table_len();
        let tables = [HEADER, HEADER + table_len].map(|at| &object[at..at + table_len]);
        let table = tables
            .iter()
            .find(|t| sha256(&t[..table_len - 32]) == t[table_len - 32..])
            .ok_or(ParityError::TablesDamaged)?;
        let crcs = table[..table_len - 32]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        Ok(Parity {
            pack: *pack,
            layout,
            crcs,
            recovery: &object[HEADER + 2 * table_len..],
        })
    }

    /// The pack's length, as the parity records it.
    pub fn pack_len(&self) -> u64 {
        self.layout.len
    }

    /// Which sectors of `pack` (as read: perhaps short, perhaps with `unreadable` sectors) are
    /// bad, and whether the parity can rebuild them.
    pub fn damage(&self, pack: &[u8], unreadable: &[u32]) -> Damage {
        let n = self.layout.sectors();
        let unreadable: std::collections::HashSet<u32> = unreadable.iter().copied().collect();
        let readable = |i: u32| (i as usize + 1) * SECTOR <= pack.len() || i + 1 == n;
        let crcs: Vec<Option<u32>> = (0..n)
            .map(|i| {
                (readable(i) && !unreadable.contains(&i)).then(|| crc32c::crc32c(&sector(pack, i)))
            })
            .collect();
        self.damage_by_crc(&crcs, pack.len() as u64)
    }

    /// [`Parity::damage`] from the CRC32C of each (zero-padded) data sector as read, `None`
    /// where it could not be read, for a pack that read as `read_len` bytes: what a reader that
    /// streams the pack computes on the way.
    pub fn damage_by_crc(&self, crcs: &[Option<u32>], read_len: u64) -> Damage {
        let n = self.layout.sectors();
        let mut damage = Damage {
            repairable: true,
            limit: u32::MAX,
            ..Damage::default()
        };
        for (data, recovery) in self.layout.groups() {
            let bad: Vec<u32> = data
                .filter(|&i| crcs.get(i as usize).copied().flatten() != Some(self.crcs[i as usize]))
                .collect();
            let usable = recovery.clone().filter(|&j| self.recovery_ok(j)).count() as u32;
            damage.bad_recovery += recovery.len() as u32 - usable;
            if !bad.is_empty() {
                damage.limit = damage.limit.min(usable);
                damage.repairable &= bad.len() as u32 <= usable;
            }
            damage.bad_sectors.extend(bad);
        }
        // A pack longer than it was written: its end is cut off by the heal.
        if read_len > self.layout.len && damage.bad_sectors.is_empty() {
            damage.bad_sectors.push(n - 1);
        }
        if damage.limit == u32::MAX {
            damage.limit = 0;
        }
        damage
    }

    /// Recovery sectors in all: no more sectors than this can be rebuilt, so a reader that
    /// reads around lost ones stops there.
    pub fn recovery_sectors(&self) -> u32 {
        self.layout.recovery()
    }

    /// Whether this parity fits `pack` (its sound bytes) in every data and recovery sector.
    pub fn fits(&self, pack: &[u8]) -> bool {
        let damage = self.damage(pack, &[]);
        damage.bad_sectors.is_empty() && damage.bad_recovery == 0
    }

    /// Recovery sector `j` (pack-wide numbering), if its CRC says it is sound.
    fn recovery_ok(&self, j: u32) -> bool {
        let shard = &self.recovery[j as usize * SECTOR..(j as usize + 1) * SECTOR];
        crc32c::crc32c(shard) == self.crcs[(self.layout.sectors() + j) as usize]
    }

    /// The pack's bytes rebuilt from `pack` as read (perhaps short, perhaps with `unreadable`
    /// sectors) and the parity, proven by the pack's name.
    pub fn heal(&self, pack: &[u8], unreadable: &[u32]) -> Result<Vec<u8>, ParityError> {
        self.heal_damage(pack, &self.damage(pack, unreadable))
    }

    /// [`Parity::heal`] with the damage its caller found already ([`Parity::damage`] of the
    /// same bytes), so the sectors are not checked twice.
    pub fn heal_damage(&self, pack: &[u8], damage: &Damage) -> Result<Vec<u8>, ParityError> {
        if !damage.repairable {
            return Err(ParityError::NotRepairable {
                bad: damage.bad_sectors.len() as u32,
                limit: damage.limit,
            });
        }
        let len = usize::try_from(self.layout.len).map_err(|_| ParityError::Mismatch)?;
        let mut out = Vec::with_capacity(len);
        for (data, recovery) in self.layout.groups() {
            let bad: Vec<u32> = damage
                .bad_sectors
                .iter()
                .copied()
                .filter(|i| data.contains(i))
                .collect();
            let mut restored = std::collections::BTreeMap::new();
            if !bad.is_empty() {
                let originals: Vec<(usize, Cow<'_, [u8]>)> = data
                    .clone()
                    .filter(|i| !bad.contains(i))
                    .map(|i| ((i - data.start) as usize, sector(pack, i)))
                    .collect();
                let recoveries: Vec<(usize, &[u8])> = recovery
                    .clone()
                    .filter(|&j| self.recovery_ok(j))
                    .map(|j| {
                        let at = j as usize * SECTOR;
                        (
                            (j - recovery.start) as usize,
                            &self.recovery[at..at + SECTOR],
                        )
                    })
                    .collect();
                restored = decode_group(data.len(), recovery.len(), originals, recoveries)?;
            }
            for i in data.clone() {
                let shard = match restored.get(&((i - data.start) as usize)) {
                    Some(rebuilt) => Cow::Borrowed(rebuilt.as_slice()),
                    None => sector(pack, i),
                };
                let take = (len - out.len()).min(SECTOR);
                out.extend_from_slice(&shard[..take]);
            }
        }
        if sha256(&out) != self.pack.0 {
            return Err(ParityError::Mismatch);
        }
        Ok(out)
    }
}

/// The missing data sectors of one group rebuilt from the sectors it still has (`originals`)
/// and its sound recovery sectors, by number within the group. The codec works on each 64-byte
/// column of a sector on its own, so the two halves of every sector decode apart, to the same
/// bytes, on two threads: a heal is what a reader waits for.
fn decode_group(
    originals: usize,
    recovery: usize,
    have: Vec<(usize, Cow<'_, [u8]>)>,
    recoveries: Vec<(usize, &[u8])>,
) -> Result<std::collections::BTreeMap<usize, Vec<u8>>, ParityError> {
    const HALF: usize = SECTOR / 2;
    let half = |columns: Range<usize>| {
        reed_solomon_simd::decode(
            originals,
            recovery,
            have.iter().map(|(i, s)| (*i, &s[columns.clone()])),
            recoveries.iter().map(|(j, s)| (*j, &s[columns.clone()])),
        )
        .map_err(|_| ParityError::Mismatch)
    };
    // Scoped threads, not the rayon pool: a heal runs under a lock that pool tasks may wait on.
    // A thread the system refuses is no error: both halves are decoded here then.
    let (left, right) = std::thread::scope(|scope| {
        let right = std::thread::Builder::new().spawn_scoped(scope, || half(HALF..SECTOR));
        let left = half(0..HALF);
        let right = match right {
            Ok(thread) => thread.join().unwrap_or(Err(ParityError::Mismatch)),
            Err(_) => half(HALF..SECTOR),
        };
        (left, right)
    });
    let (mut left, right) = (left?, right?);
    for (i, shard) in left.iter_mut() {
        shard.extend_from_slice(right.get(i).ok_or(ParityError::Mismatch)?);
    }
    Ok(left)
}

#[cfg(test)]
mod tests;
