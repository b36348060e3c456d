//! Compression dictionaries. A small file compressed alone starts with an empty window and
//! compresses badly; a zstd dictionary trained on a backup's small chunks is the window they
//! share (on linux/, level 3 with one makes small files 8 % smaller). A repository holds a few
//! ([`MAX_DICTIONARIES`]), each immutable and named by its content.
//!
//! A blob compressed with a dictionary names it in its own zstd frame header (Dictionary_ID):
//! the name travels inside the sealed payload, so pack headers and the index are unchanged and
//! a reader learns which dictionary a blob needs from the authenticated bytes it opens.
//!
//! Stored form (`dicts/<id>`): the sealed dictionary twice, the first copy padded to whole
//! 4 KiB sectors, so one lost or damaged sector cannot lose it (a dictionary is as precious as
//! every blob compressed with it). The id is the SHA-256 of one sealed copy; `scrub` rewrites a
//! damaged copy from the intact one without the key.

use crate::backend::Backend;
use crate::backend::salvage::read_salvaging;
use crate::error::{Error, Result};
use crate::repo::crypto::MasterKey;
use crate::repo::ids::{DictId, sha256};
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
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

/// The object name of dictionary `id`.
pub fn dict_name(id: &DictId) -> String {
    format!("dicts/{id}")
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
        if bytes.len() > MAX_DICT_LEN || bytes.len() < 8 || bytes[..4] != DICT_MAGIC {
            return Err(format!(
                "not a zstd dictionary of at most {MAX_DICT_LEN} bytes"
            ));
        }
        let zstd_id = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        if zstd_id < FIRST_PRIVATE_ID {
            return Err(format!("dictionary id {zstd_id} is reserved"));
        }
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

/// The stored form of a sealed dictionary: the copy, padded to whole sectors, then the copy.
pub fn mirrored(sealed: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(2 * sealed.len() + SECTOR);
    stored.extend_from_slice(sealed);
    stored.resize(sealed.len().next_multiple_of(SECTOR), 0);
    stored.extend_from_slice(sealed);
    stored
}

/// The two copies of a stored dictionary object, or `None` when its length cannot be one: the
/// first copy's padded length `p` is the multiple of the sector with `p + len = stored` and
/// `p - SECTOR < len <= p`, which exists at most once.
pub fn copies(stored: &[u8]) -> Option<(&[u8], &[u8])> {
    let total = stored.len();
    let padded = (total / 2).next_multiple_of(SECTOR);
    let len = total.checked_sub(padded)?;
    if len == 0 || len > padded || len + SECTOR <= padded {
        return None;
    }
    Some((&stored[..len], &stored[padded..]))
}

/// What reading a stored dictionary object found.
pub struct Inspected<'a> {
    /// A copy whose hash is the object's name, if either is.
    pub intact: Option<&'a [u8]>,
    /// How many of the two copies do not hash to the name (0, 1 or 2).
    pub damaged_copies: usize,
}

/// Which copies of a stored dictionary hash to its name. Needs no key: `scrub` uses it.
pub fn inspect<'a>(id: &DictId, stored: &'a [u8]) -> Inspected<'a> {
    let Some((first, second)) = copies(stored) else {
        return Inspected {
            intact: None,
            damaged_copies: 2,
        };
    };
    let sound = |copy: &[u8]| sha256(copy) == id.0;
    let good: Vec<&[u8]> = [first, second].into_iter().filter(|c| sound(c)).collect();
    Inspected {
        intact: good.first().copied(),
        damaged_copies: 2 - good.len(),
    }
}

/// Reads dictionary object `id` (around unreadable sectors: the other copy may be whole).
pub fn read_stored(backend: &dyn Backend, id: &DictId) -> Result<Vec<u8>> {
    let most_lost = (MAX_DICT_OBJECT as usize).div_ceil(SECTOR);
    Ok(read_salvaging(
        backend,
        &dict_name(id),
        MAX_DICT_OBJECT,
        SECTOR as u64,
        most_lost,
    )?
    .bytes)
}

/// Opens a stored dictionary: an intact copy, authenticated, is a zstd dictionary.
pub fn open(key: &MasterKey, id: DictId, stored: &[u8]) -> Result<Dictionary> {
    let name = dict_name(&id);
    let intact = inspect(&id, stored)
        .intact
        .ok_or_else(|| Error::corrupt(&name, "neither copy matches its name"))?;
    let bytes = key
        .open(intact, AAD)
        .map_err(|_| Error::corrupt(&name, "does not authenticate under this repository's key"))?;
    Dictionary::new(id, bytes).map_err(|reason| Error::corrupt(&name, reason))
}

/// Seals a dictionary for storing: its id and stored form. The sealed copy is opened again
/// and compared before it is returned, so memory damage between training and storing is
/// caught before any blob depends on the dictionary.
pub fn seal(key: &MasterKey, bytes: Vec<u8>) -> Result<(Dictionary, Vec<u8>)> {
    let sealed = key.seal(&bytes, AAD);
    let id = DictId(sha256(&sealed));
    let stored = mirrored(&sealed);
    let reopened = open(key, id, &stored)?;
    if reopened.bytes != bytes {
        return Err(Error::Invalid(
            "a dictionary changed between sealing and storing (memory damage?)".into(),
        ));
    }
    Ok((reopened, stored))
}

/// The dictionaries of one repository a process has met, loaded on first need and kept (at
/// most [`MAX_DICTIONARIES`] of them, each at most [`MAX_DICT_LEN`]).
#[derive(Default)]
pub struct Dictionaries {
    by_zstd_id: RwLock<HashMap<u32, Arc<Dictionary>>>,
    /// Object names already read, loaded or not: a damaged one is not read again for every
    /// blob that names it. Held while the listing is read, so a reader that needs a dictionary
    /// another is loading waits for it rather than finding it missing.
    read: Mutex<HashSet<DictId>>,
    /// Why listed objects failed to load, for the error of a blob that needs one.
    failures: Mutex<Vec<String>>,
    /// zstd ids asked for and not found after a fresh listing.
    missing: Mutex<HashSet<u32>>,
}

impl Dictionaries {
    /// The dictionary zstd id `zstd_id` names, loading the repository's dictionaries when it
    /// is not yet known. The error says why it is missing.
    pub fn find(
        &self,
        backend: &dyn Backend,
        key: &MasterKey,
        zstd_id: u32,
    ) -> std::result::Result<Arc<Dictionary>, String> {
        if let Some(found) = self.by_zstd_id.read().get(&zstd_id) {
            return Ok(found.clone());
        }
        if !self.missing.lock().contains(&zstd_id) {
            self.load_listed(backend, key).map_err(|e| e.to_string())?;
            if let Some(found) = self.by_zstd_id.read().get(&zstd_id) {
                return Ok(found.clone());
            }
            let mut missing = self.missing.lock();
            if missing.len() >= 64 {
                missing.clear();
            }
            missing.insert(zstd_id);
        }
        let failures = self.failures.lock();
        Err(match failures.is_empty() {
            true => format!("its compression dictionary {zstd_id:08x} is not in the repository"),
            false => format!(
                "its compression dictionary {zstd_id:08x} is not in the repository ({})",
                failures.join("; ")
            ),
        })
    }

    /// Every dictionary the store lists, loaded: for a writer choosing one.
    pub fn all(&self, backend: &dyn Backend, key: &MasterKey) -> Result<Vec<Arc<Dictionary>>> {
        self.load_listed(backend, key)?;
        let mut all: Vec<Arc<Dictionary>> = self.by_zstd_id.read().values().cloned().collect();
        all.sort_by_key(|d| d.id);
        Ok(all)
    }

    /// Adds a dictionary this process stored.
    pub fn insert(&self, dictionary: Arc<Dictionary>) {
        self.read.lock().insert(dictionary.id);
        self.missing.lock().remove(&dictionary.zstd_id);
        self.by_zstd_id
            .write()
            .insert(dictionary.zstd_id, dictionary);
    }

    /// Lists `dicts/` and loads what is new, up to [`MAX_DICTIONARIES`] read in all.
    fn load_listed(&self, backend: &dyn Backend, key: &MasterKey) -> Result<()> {
        let mut read = self.read.lock();
        let listed = list(backend)?;
        for id in listed {
            if read.contains(&id) || read.len() >= MAX_DICTIONARIES {
                continue;
            }
            read.insert(id);
            match read_stored(backend, &id).and_then(|stored| open(key, id, &stored)) {
                Ok(dictionary) => {
                    let mut by = self.by_zstd_id.write();
                    by.entry(dictionary.zstd_id)
                        .or_insert_with(|| Arc::new(dictionary));
                }
                Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!("{e}");
                    self.failures.lock().push(e.to_string());
                }
            }
        }
        Ok(())
    }
}

/// The dictionary ids the store lists, sorted.
pub fn list(backend: &dyn Backend) -> Result<Vec<DictId>> {
    let mut ids: Vec<DictId> = backend
        .list("dicts/")?
        .iter()
        .filter_map(|info| DictId::from_hex(info.name.rsplit('/').next()?).ok())
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

    #[test]
    fn trained_dictionary_seals_opens_and_survives_one_damaged_copy() {
        let key = MasterKey::new(MasterSecrets::generate());
        let samples = samples();
        let refs: Vec<&[u8]> = samples.iter().map(|s| s.as_slice()).collect();
        let bytes = train(&refs, 0x1234_5678).expect("trains");
        let (dictionary, stored) = seal(&key, bytes.clone()).unwrap();
        assert_eq!(dictionary.zstd_id, 0x1234_5678);
        assert!(stored.len() as u64 <= MAX_DICT_OBJECT);
        for damaged_at in [10, stored.len() - 10] {
            let mut damaged = stored.clone();
            damaged[damaged_at] ^= 1;
            assert_eq!(inspect(&dictionary.id, &damaged).damaged_copies, 1);
            assert_eq!(open(&key, dictionary.id, &damaged).unwrap().bytes(), bytes);
        }
        let mut both = stored.clone();
        both[10] ^= 1;
        let last = both.len() - 10;
        both[last] ^= 1;
        assert!(matches!(
            open(&key, dictionary.id, &both),
            Err(Error::Corrupt { .. })
        ));
        let other = MasterKey::new(MasterSecrets::generate());
        assert!(open(&other, dictionary.id, &stored).is_err());
    }

    #[test]
    fn copies_are_found_only_at_lengths_mirroring_makes() {
        for len in [1, 100, 4095, 4096, 4097, 131_000] {
            let sealed = vec![7u8; len];
            let stored = mirrored(&sealed);
            let (a, b) = copies(&stored).unwrap();
            assert_eq!((a, b), (&sealed[..], &sealed[..]));
        }
        assert!(copies(&[]).is_none());
        assert!(copies(&vec![0u8; 4096 + 4097]).is_none());
        assert!(copies(&vec![0u8; 8192]).is_some_and(|(a, _)| a.len() == 4096));
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
                open(&key, id, &mirrored(&sealed)),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}
