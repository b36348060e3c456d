//! Compression dictionaries. A small file compressed alone starts with an empty window and
//! compresses badly; a zstd dictionary trained on a backup's small chunks is the window they
//! share (on linux/, level 3 with one makes small files 8 % smaller). A repository holds a few
//! ([`MAX_DICTIONARIES`]), each immutable and named by its content.
//!
//! A blob compressed with a dictionary names it in its own zstd frame header (Dictionary_ID):
//! the name travels inside the sealed payload, so pack headers and the index are unchanged and
//! a reader learns which dictionary a blob needs from the authenticated bytes it opens.
//!
//! Stored form (`dicts/<zstd id>-<id>`): the sealed dictionary twice, each copy led by its
//! length and the first padded to whole 4 KiB sectors, so one lost or damaged sector, or a
//! truncation, cannot lose it (a dictionary is as precious as every blob compressed with it).
//! The id is the SHA-256 of one sealed copy; `scrub` rewrites a damaged object from the intact
//! copy without the key.

use crate::backend::Backend;
use crate::backend::salvage::read_salvaging;
use crate::error::{Error, Result};
use crate::repo::crypto::MasterKey;
use crate::repo::ids::{DictId, sha256};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zstd::dict::DecoderDictionary;

/// The largest dictionary trained or loaded: zstd gains little beyond ~100 KiB for chunks of
/// source files, and every reader holds each dictionary it meets.
pub const MAX_DICT_LEN: usize = 128 << 10;
/// The most dictionaries a writer creates in one repository, and a reader loads.
pub const MAX_DICTIONARIES: usize = 16;
/// The sector the two stored copies are aligned to (as parity's).
const SECTOR: usize = 4096;
/// Bytes sealing adds (nonce, tag), generously.
const SEAL_SLACK: usize = 64;
/// The largest stored dictionary object: two sealed copies, the first padded.
pub const MAX_DICT_OBJECT: u64 = (2 * (MAX_DICT_LEN + SEAL_SLACK + SECTOR)) as u64;
const AAD: &[u8] = b"cairn dictionary";
/// zstd reserves dictionary ids below this for registered dictionaries.
const FIRST_PRIVATE_ID: u32 = 1 << 15;
const DICT_MAGIC: [u8; 4] = 0xEC30_A437u32.to_le_bytes();

/// The object name of a dictionary: its zstd id (what a blob names) and its content id.
pub fn dict_name(zstd_id: u32, id: &DictId) -> String {
    format!("dicts/{zstd_id:08x}-{id}")
}

/// The zstd id and content id an object name states, if it is a dictionary's name.
pub fn parse_name(name: &str) -> Option<(u32, DictId)> {
    let (zstd_id, id) = name.strip_prefix("dicts/")?.split_once('-')?;
    let parsed = (
        u32::from_str_radix(zstd_id, 16).ok()?,
        DictId::from_hex(id).ok()?,
    );
    // Only the one spelling writers use: another (upper case, a sign) would be read under
    // the name it parses to, which is not there.
    (dict_name(parsed.0, &parsed.1) == name).then_some(parsed)
}

/// One dictionary, ready to compress and decompress with.
pub struct Dictionary {
    /// Its content id (object name).
    pub id: DictId,
    /// The id zstd writes into each frame compressed with it.
    pub zstd_id: u32,
    bytes: Vec<u8>,
    decoder: DecoderDictionary<'static>,
}

impl Dictionary {
    /// Checks that `bytes` are a zstd dictionary cairn could have written.
    fn new(id: DictId, bytes: Vec<u8>) -> std::result::Result<Dictionary, String> {
        let zstd_id = zstd_id_of(&bytes)?;
        let decoder = DecoderDictionary::try_copy(&bytes)
            .map_err(|e| format!("zstd refuses the dictionary: {e}"))?;
        Ok(Dictionary {
            id,
            zstd_id,
            bytes,
            decoder,
        })
    }

    /// The dictionary prepared for decompressing.
    pub fn decoder(&self) -> &DecoderDictionary<'static> {
        &self.decoder
    }

    /// Its bytes, as zstd takes them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The zstd id of dictionary `bytes`, if they can be a dictionary cairn writes: zstd's magic, at
/// most [`MAX_DICT_LEN`] bytes, a private id.
fn zstd_id_of(bytes: &[u8]) -> std::result::Result<u32, String> {
    if bytes.len() > MAX_DICT_LEN || bytes.len() < 8 || bytes[..4] != DICT_MAGIC {
        return Err(format!(
            "not a zstd dictionary of at most {MAX_DICT_LEN} bytes"
        ));
    }
    let zstd_id = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if zstd_id < FIRST_PRIVATE_ID {
        return Err(format!("dictionary id {zstd_id} is reserved"));
    }
    Ok(zstd_id)
}

/// Trains a dictionary of at most [`MAX_DICT_LEN`] on `samples` and gives it `zstd_id`. `None`
/// when zstd cannot (too few or too uniform samples): the blobs are then compressed alone.
pub fn train(samples: &[&[u8]], zstd_id: u32) -> Option<Vec<u8>> {
    let total: usize = samples.iter().map(|s| s.len()).sum();
    // zstd wants samples of about ten times the dictionary's size.
    let size = (total / 10).clamp(1024, MAX_DICT_LEN);
    let mut bytes = zstd::dict::from_samples(samples, size).ok()?;
    if bytes.len() < 8 || bytes[..4] != DICT_MAGIC {
        return None;
    }
    bytes[4..8].copy_from_slice(&zstd_id.to_le_bytes());
    Some(bytes)
}

/// A random private zstd dictionary id that none of `taken` has.
pub fn fresh_zstd_id(taken: &[u32]) -> u32 {
    loop {
        let mut raw = [0u8; 4];
        crate::random::fill_random(&mut raw);
        let id = FIRST_PRIVATE_ID + u32::from_le_bytes(raw) % (u32::MAX / 2 - FIRST_PRIVATE_ID);
        if !taken.contains(&id) {
            return id;
        }
    }
}

/// The stored form of a sealed dictionary: two copies, each its length (u32 LE) then its bytes,
/// the first padded to whole sectors.
pub fn mirrored(sealed: &[u8]) -> Vec<u8> {
    let copy_len = 4 + sealed.len();
    let mut stored = Vec::with_capacity(2 * copy_len + SECTOR);
    for _ in 0..2 {
        stored.resize(stored.len().next_multiple_of(SECTOR), 0);
        stored.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        stored.extend_from_slice(sealed);
    }
    stored
}

/// The sealed copy at sector boundary `at`, as its length prefix states, if it fits.
fn copy_at(stored: &[u8], at: usize) -> Option<&[u8]> {
    let len = u32::from_le_bytes(stored.get(at..at + 4)?.try_into().ok()?) as usize;
    if len > MAX_DICT_LEN + SEAL_SLACK {
        return None;
    }
    stored.get(at + 4..at + 4 + len)
}

/// What reading a stored dictionary object found.
pub struct Inspected<'a> {
    /// A sealed copy whose hash is the object's name, if any is.
    pub intact: Option<&'a [u8]>,
    /// Whether the object is exactly its two intact copies; otherwise `scrub` rewrites it.
    pub whole: bool,
}

/// Finds an intact copy of a stored dictionary: the first sector boundary where a length
/// prefix and the bytes it announces hash to the name. Whatever one lost sector or a truncation
/// took, the other copy is found. Needs no key: `scrub` uses it.
pub fn inspect<'a>(id: &DictId, stored: &'a [u8]) -> Inspected<'a> {
    let sound = |at: usize| copy_at(stored, at).filter(|copy| sha256(copy) == id.0);
    let intact = (0..stored.len().saturating_sub(3))
        .step_by(SECTOR)
        .find_map(sound);
    let whole = intact.is_some_and(|copy| {
        let second = (4 + copy.len()).next_multiple_of(SECTOR);
        sound(0).is_some() && sound(second).is_some() && stored.len() == second + 4 + copy.len()
    });
    Inspected { intact, whole }
}

/// Reads dictionary object `name` (around unreadable sectors: the other copy may be whole).
pub fn read_stored(backend: &dyn Backend, name: &str) -> Result<Vec<u8>> {
    let most_lost = (MAX_DICT_OBJECT as usize).div_ceil(SECTOR);
    Ok(read_salvaging(backend, name, MAX_DICT_OBJECT, SECTOR as u64, most_lost)?.bytes)
}

/// Opens a stored dictionary: an intact copy, authenticated, is a zstd dictionary with the
/// zstd id its name states.
pub fn open(key: &MasterKey, zstd_id: u32, id: DictId, stored: &[u8]) -> Result<Dictionary> {
    let name = dict_name(zstd_id, &id);
    let intact = inspect(&id, stored)
        .intact
        .ok_or_else(|| Error::corrupt(&name, "neither copy matches its name"))?;
    let bytes = key
        .open(intact, AAD)
        .map_err(|_| Error::corrupt(&name, "does not authenticate under this repository's key"))?;
    let dictionary = Dictionary::new(id, bytes).map_err(|reason| Error::corrupt(&name, reason))?;
    if dictionary.zstd_id != zstd_id {
        return Err(Error::corrupt(
            &name,
            format!(
                "holds dictionary {:08x}, not the one its name states",
                dictionary.zstd_id
            ),
        ));
    }
    Ok(dictionary)
}

/// Seals a dictionary for storing ([`crate::repo::Repository::store_dictionary`]): the
/// dictionary ready for use, and its stored form. The sealed copy is opened again
/// and compared before it is returned, so memory damage between training and storing is
/// caught before any blob depends on the dictionary.
pub fn seal(key: &MasterKey, bytes: Vec<u8>) -> Result<(Dictionary, Vec<u8>)> {
    let sealed = key.seal(&bytes, AAD);
    let id = DictId(sha256(&sealed));
    let stored = mirrored(&sealed);
    let zstd_id = zstd_id_of(&bytes).map_err(Error::Invalid)?;
    let reopened = open(key, zstd_id, id, &stored)?;
    if reopened.bytes != bytes {
        return Err(Error::Invalid(
            "a dictionary changed between sealing and storing (memory damage?)".into(),
        ));
    }
    Ok((reopened, stored))
}

/// The most dictionaries one reader loads (crafted repositories aside, writers keep a
/// repository to [`MAX_DICTIONARIES`]; two writers at that bound at once may each add one).
const MAX_LOADED: usize = 4 * MAX_DICTIONARIES;
/// Dictionaries that open kept for one zstd id: only a crafted repository has more than one.
const MAX_CANDIDATES: usize = 4;
/// Objects of one zstd id read at most, those that do not open included.
const MAX_READS: usize = 16;

/// Why [`Dictionaries::find`] has no dictionary for an id.
#[derive(Debug)]
pub enum FindError {
    /// None is stored, or none of those stored opens.
    Missing(String),
    /// The store could not be listed or read.
    Store(Error),
}
/// How long a zstd id found in no listing is not looked for again: a store whose listing lags
/// shows it later, and a crafted pack naming many ids must not make every blob list `dicts/`.
const MISSING_FOR: Duration = Duration::from_secs(30);

/// The dictionaries of one repository a process has met, loaded on first need by the zstd id
/// a blob names (its object name states it) and kept, at most [`MAX_LOADED`].
#[derive(Default)]
pub struct Dictionaries {
    loaded: RwLock<HashMap<u32, Vec<Arc<Dictionary>>>>,
    /// Held while listing and loading, so a reader that needs a dictionary another is loading
    /// waits for it rather than finding it missing.
    loading: Mutex<Loading>,
}

#[derive(Default)]
struct Loading {
    /// Objects read for good: loaded, or authenticated as damaged (not read again for every
    /// blob that names them). A read that failed otherwise (the store) is tried again.
    settled: HashSet<DictId>,
    /// Why a zstd id's objects failed to load.
    failures: HashMap<u32, String>,
    /// zstd ids no listing showed, and when that was last seen.
    missing: HashMap<u32, Instant>,
    count: usize,
}

impl Dictionaries {
    /// The dictionaries with zstd id `zstd_id` (one, unless a crafted repository holds several),
    /// loaded from the store when not yet known: listed objects of that id are read in order,
    /// past any that do not open, until [`MAX_CANDIDATES`] open (at most [`MAX_READS`] reads).
    /// The error says why there is none; a store that cannot be read is a store error.
    pub fn find(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
        zstd_id: u32,
    ) -> std::result::Result<Vec<Arc<Dictionary>>, FindError> {
        if let Some(found) = self.loaded.read().get(&zstd_id) {
            return Ok(found.clone());
        }
        let mut loading = self.loading.lock();
        if let Some(found) = self.loaded.read().get(&zstd_id) {
            return Ok(found.clone());
        }
        let recently_missing = loading
            .missing
            .get(&zstd_id)
            .is_some_and(|seen| seen.elapsed() < MISSING_FOR);
        if !recently_missing {
            let names: Vec<DictId> = list(backend)
                .map_err(FindError::Store)?
                .into_iter()
                .filter(|(z, _)| *z == zstd_id)
                .map(|(_, id)| id)
                .take(MAX_READS)
                .collect();
            let mut store_error = None;
            for id in &names {
                let opened = self.loaded.read().get(&zstd_id).map_or(0, Vec::len);
                if opened >= MAX_CANDIDATES {
                    break;
                }
                if let Err(e) = self.load(&mut loading, backend, key, zstd_id, *id) {
                    store_error = Some(e);
                }
            }
            if let Some(found) = self.loaded.read().get(&zstd_id) {
                return Ok(found.clone());
            }
            if let Some(e) = store_error {
                return Err(FindError::Store(e));
            }
            if names.is_empty() {
                if loading.missing.len() >= 1024 {
                    loading.missing.clear();
                }
                loading.missing.insert(zstd_id, Instant::now());
            }
        }
        let name = format!("dicts/{zstd_id:08x}-…");
        Err(FindError::Missing(match loading.failures.get(&zstd_id) {
            None => format!("its compression dictionary {name} is not in the repository"),
            Some(why) => format!("its compression dictionary {name} cannot be read: {why}"),
        }))
    }

    /// The repository's dictionaries, for a writer choosing one: every listed object read
    /// (at most [`MAX_LOADED`]), those that open, and every zstd id a name states (taken, even
    /// by a damaged object).
    pub fn all(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
    ) -> Result<(Vec<Arc<Dictionary>>, Vec<u32>)> {
        let listed = list(backend)?;
        let mut loading = self.loading.lock();
        for (zstd_id, id) in listed.iter().take(MAX_LOADED) {
            self.load(&mut loading, backend, key, *zstd_id, *id)?;
        }
        let mut all: Vec<Arc<Dictionary>> =
            self.loaded.read().values().flatten().cloned().collect();
        all.sort_by_key(|d| d.id);
        Ok((all, listed.iter().map(|(z, _)| *z).collect()))
    }

    /// Loads one listed object unless it was read for good already. A failure to read it
    /// (not damage: the store) is returned, and the object tried again next time.
    fn load(
        &self,
        loading: &mut Loading,
        backend: &dyn Backend,
        key: &MasterKey,
        zstd_id: u32,
        id: DictId,
    ) -> Result<()> {
        if loading.settled.contains(&id) {
            return Ok(());
        }
        if loading.count >= MAX_LOADED {
            loading.failures.insert(
                zstd_id,
                format!("more than {MAX_LOADED} dictionaries are in use (a crafted repository?)"),
            );
            return Ok(());
        }
        let name = dict_name(zstd_id, &id);
        match read_stored(backend, &name).and_then(|stored| open(key, zstd_id, id, &stored)) {
            Ok(dictionary) => {
                loading.settled.insert(id);
                loading.count += 1;
                self.loaded
                    .write()
                    .entry(zstd_id)
                    .or_default()
                    .push(Arc::new(dictionary));
            }
            Err(Error::NotFound(_)) => {}
            Err(e @ Error::Corrupt { .. }) => {
                loading.settled.insert(id);
                tracing::warn!("{e}");
                loading.failures.insert(zstd_id, e.to_string());
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Adds a dictionary this process stored.
    pub fn insert(&self, dictionary: Arc<Dictionary>) {
        let mut loading = self.loading.lock();
        if loading.settled.insert(dictionary.id) {
            loading.count += 1;
            loading.missing.remove(&dictionary.zstd_id);
            self.loaded
                .write()
                .entry(dictionary.zstd_id)
                .or_default()
                .push(dictionary);
        }
    }
}

/// The dictionaries the store lists: zstd id and content id, sorted.
pub fn list(backend: &dyn Backend) -> Result<Vec<(u32, DictId)>> {
    let mut ids: Vec<(u32, DictId)> = backend
        .list("dicts/")?
        .iter()
        .filter_map(|info| parse_name(&info.name))
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterSecrets;

    fn samples() -> Vec<Vec<u8>> {
        (0..400)
            .map(|i| {
                format!(
                    "#include <linux/module.h>\nstatic int probe_{i}(struct device *dev)\n{{\n\treturn \
                     dev_err_probe(dev, -ENODEV, \"no device {i}\");\n}}\n"
                )
                .repeat(1 + i % 3)
                .into_bytes()
            })
            .collect()
    }

    use crate::repo::blob::FindDictionary;

    /// Finds the dictionaries it was given, in that order, under any zstd id.
    struct These(Vec<Arc<Dictionary>>);

    impl FindDictionary for These {
        fn dictionaries(&self, _: u32) -> std::result::Result<Vec<Arc<Dictionary>>, FindError> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn a_group_member_opens_with_the_dictionary_that_gives_it_and_a_lying_entry_is_damage() {
        use crate::repo::blob::{
            BlobMeta, Compression, GroupPlace, OpenFailure, open_blob, seal_group,
        };
        use crate::repo::ids::BlobKind;
        let key = MasterKey::new(MasterSecrets::generate());
        let samples = samples();
        let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
        let right = Arc::new(seal(&key, train(&refs, 0x1234_5678).unwrap()).unwrap().0);
        // Another dictionary under the same zstd id (a crafted repository could hold one).
        let others: Vec<Vec<u8>> = (0..400)
            .map(|i| format!("other words {i} ").repeat(20).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = others.iter().map(|s| s.as_slice()).collect();
        let wrong = Arc::new(seal(&key, train(&refs, 0x1234_5678).unwrap()).unwrap().0);
        let members = [samples[7].as_slice(), samples[8].as_slice()];
        let plain = members.concat();
        let how = Compression {
            level: 2,
            dictionary: Some(right.as_ref()),
        };
        let group = seal_group(&key, &plain, how);
        assert!(group.compressed);
        let meta = BlobMeta {
            id: key.blob_id(members[1]),
            kind: BlobKind::Data,
            raw_len: members[1].len() as u32,
            compressed: true,
            group: Some(GroupPlace {
                start: members[0].len() as u32,
                len: group.raw_len,
            }),
        };
        let both = These(vec![wrong, right.clone()]);
        assert_eq!(
            open_blob(&key, &both, &meta, &group.bytes).unwrap(),
            members[1]
        );
        // An entry placing the member where it is not: the group opens whole, so it is damage.
        let lying = BlobMeta {
            group: Some(GroupPlace {
                start: 0,
                len: group.raw_len,
            }),
            ..meta
        };
        let only = These(vec![right]);
        let failure = open_blob(&key, &only, &lying, &group.bytes).unwrap_err();
        assert!(matches!(failure, OpenFailure::Damaged(_)), "{failure}");
        // Without the dictionary it names, it is a missing dictionary.
        let failure = open_blob(&key, &These(vec![]), &meta, &group.bytes).unwrap_err();
        assert!(matches!(failure, OpenFailure::NoDictionary(_)), "{failure}");
    }

    #[test]
    fn trained_dictionary_seals_opens_and_survives_one_damaged_copy() {
        let key = MasterKey::new(MasterSecrets::generate());
        let samples = samples();
        let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
        let bytes = train(&refs, 0x1234_5678).expect("trains");
        let (dictionary, stored) = seal(&key, bytes.clone()).unwrap();
        assert_eq!(dictionary.zstd_id, 0x1234_5678);
        assert!(stored.len() as u64 <= MAX_DICT_OBJECT);
        let zstd_id = dictionary.zstd_id;
        assert!(inspect(&dictionary.id, &stored).whole);
        // One damaged byte or length prefix in either copy, or a truncation: the other is found.
        let second = (0..stored.len())
            .step_by(SECTOR)
            .rev()
            .find(|&at| copy_at(&stored, at).is_some())
            .unwrap();
        assert!(second > 0);
        let mut cases = vec![stored[..stored.len() - 100].to_vec()];
        for damaged_at in [1, 10, second + 1, second + 10, stored.len() - 10] {
            let mut damaged = stored.clone();
            damaged[damaged_at] ^= 1;
            cases.push(damaged);
        }
        for damaged in cases {
            let inspected = inspect(&dictionary.id, &damaged);
            assert!(!inspected.whole);
            assert_eq!(mirrored(inspected.intact.unwrap()), stored);
            let opened = open(&key, zstd_id, dictionary.id, &damaged).unwrap();
            assert_eq!(opened.bytes(), bytes);
        }
        let mut both = stored.clone();
        both[10] ^= 1;
        let last = both.len() - 10;
        both[last] ^= 1;
        assert!(matches!(
            open(&key, zstd_id, dictionary.id, &both),
            Err(Error::Corrupt { .. })
        ));
        let other = MasterKey::new(MasterSecrets::generate());
        assert!(open(&other, zstd_id, dictionary.id, &stored).is_err());
        // The name must state the dictionary's own zstd id.
        assert!(open(&key, zstd_id + 1, dictionary.id, &stored).is_err());
    }

    #[test]
    fn names_state_both_ids() {
        let id = DictId([0xab; 32]);
        let name = dict_name(0x8000_abcd, &id);
        assert_eq!(parse_name(&name), Some((0x8000_abcd, id)));
        assert_eq!(parse_name("dicts/1234-00"), None);
        assert_eq!(
            parse_name(&name.to_uppercase().replace("DICTS", "dicts")),
            None
        );
        assert_eq!(parse_name(&name.replace("dicts/8", "dicts/+")), None);
        assert_eq!(parse_name(&format!("dicts/{id}")), None);
    }

    #[test]
    fn crafted_dictionary_bytes_are_refused() {
        let key = MasterKey::new(MasterSecrets::generate());
        for bytes in [vec![0u8; 100], vec![0u8; MAX_DICT_LEN + 1], {
            let mut v = DICT_MAGIC.to_vec();
            v.extend_from_slice(&5u32.to_le_bytes());
            v.extend_from_slice(&[0u8; 100]);
            v
        }] {
            let sealed = key.seal(&bytes, AAD);
            let id = DictId(sha256(&sealed));
            assert!(matches!(
                open(&key, 5, id, &mirrored(&sealed)),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}
