//! One blob, sealed and opened. A sealed blob's associated data is its id and kind, so a
//! ciphertext moved to another id or kind fails authentication; opening re-hashes the plaintext
//! and compares it with the id, so a blob is either exactly what was stored or an error.

use crate::error::Error;
use crate::repo::crypto::MasterKey;
use crate::repo::dictionary::{Dictionary, FindError};
use crate::repo::ids::{BlobId, BlobKind, DictId, PackId};
use crate::repo::witness::Witness;
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

/// The largest plaintext a blob may claim. Bounds the allocation made when opening one, so a
/// damaged length field cannot ask for unbounded memory. Chunks are at most 16 MiB (fastcdc's
/// ceiling) and tree blobs are split at 4 MiB.
pub const MAX_BLOB_LEN: u32 = 32 << 20;

/// Compression must save at least this share of the bytes to be kept (in hundredths).
const MIN_GAIN_PERCENT: usize = 3;

/// What an opened blob's plaintext is checked against.
#[derive(Clone, Copy)]
pub enum Proof<'a> {
    /// Its id, under the repository's key: every reader.
    Id(&'a MasterKey),
    /// What its writer noted while computing the id: the writer's own verification.
    Witnessed(Witness),
}

/// A blob ready to go into a pack.
pub struct SealedBlob {
    /// Its id (keyed hash of plaintext).
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// `nonce ‖ ciphertext ‖ tag`.
    pub bytes: Vec<u8>,
    /// Plaintext length.
    pub raw_len: u32,
    /// Whether the sealed payload is zstd-compressed.
    pub compressed: bool,
}

/// Where a blob's payload is, and what it claims to be, as pack headers and the index record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    /// Its id.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Plaintext length.
    pub raw_len: u32,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
    /// Where it lies in its solid group, when it was sealed in one.
    pub group: Option<GroupPlace>,
}

/// Where a small data blob lies inside its *solid group*: small blobs are concatenated and
/// compressed as one zstd frame, sealed once, because a small file compressed alone starts from
/// an empty window and compresses badly (FORMAT.md, "Solid groups"). Each member is still
/// indexed under its own id and proven by it when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct GroupPlace {
    /// Offset of the blob's plaintext in the group's.
    pub start: u32,
    /// The group's plaintext length (what its frame decompresses to).
    pub len: u32,
}

/// The largest plaintext a solid group may claim: bounds what opening one allocates.
pub const MAX_GROUP_LEN: u32 = 1 << 20;

/// The associated data of a sealed group. It binds no id (a group has none of its own): each
/// member is proven by its id after opening, so a group moved elsewhere yields no wrong bytes.
const GROUP_AAD: &[u8] = b"cairn blob group";

/// Where opening a blob finds the compression dictionary its zstd frame names
/// ([`crate::repo::dictionary`]): the repository, which loads its dictionaries on first need.
pub trait FindDictionary {
    /// The dictionaries with zstd id `zstd_id` (one, unless a crafted repository holds
    /// several: each is tried), or why there is none.
    fn dictionaries(&self, zstd_id: u32) -> Result<Vec<Arc<Dictionary>>, FindError>;
}

/// For readers of blobs that were compressed alone (tests, and packs built in memory).
pub struct NoDictionaries;

impl FindDictionary for NoDictionaries {
    fn dictionaries(&self, zstd_id: u32) -> Result<Vec<Arc<Dictionary>>, FindError> {
        Err(FindError::Missing(format!(
            "its compression dictionary {zstd_id:08x} is not known here"
        )))
    }
}

/// Why a blob did not open.
#[derive(Debug)]
pub enum OpenFailure {
    /// Its bytes are not what its id and the index say: damage, to be healed or salvaged.
    Damaged(String),
    /// It names a compression dictionary that is missing or does not open: its own bytes may
    /// be sound, so neither a heal nor a repair may act on its pack for it.
    NoDictionary(String),
    /// Its dictionary could not be read from the store (listing or reading failed).
    Store(Error),
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailure::Damaged(reason) | OpenFailure::NoDictionary(reason) => f.write_str(reason),
            OpenFailure::Store(error) => write!(f, "its compression dictionary: {error}"),
        }
    }
}

impl OpenFailure {
    /// The repository error for blob `blob` of pack `pack`.
    pub fn into_error(self, pack: PackId, blob: BlobId) -> Error {
        match self {
            OpenFailure::Damaged(reason) => Error::BadBlob { pack, blob, reason },
            OpenFailure::NoDictionary(reason) => Error::NoDictionary { pack, blob, reason },
            OpenFailure::Store(error) => error,
        }
    }
}

/// The associated data binding a sealed blob to its id and kind.
fn aad(id: &BlobId, kind: BlobKind) -> [u8; 33] {
    let mut aad = [0u8; 33];
    aad[..32].copy_from_slice(&id.0);
    aad[32] = kind.tag();
    aad
}

thread_local! {
    // zstd contexts are reused per thread: creating one per blob costs more than decompressing
    // a small blob. A dictionary is passed with each call, not attached to the context.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    // One context per dictionary and level in use, each holding the dictionary digested for
    // compression (a few, least recently used first out).
    static DICT_COMPRESSORS: RefCell<Vec<((DictId, i32), zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    static DCTX: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// Decompresses a payload of `raw_len` bytes (more is an error, so a crafted frame cannot ask
/// for more memory), with `dictionary` when its frame names one.
fn decompress(
    payload: &[u8],
    raw_len: usize,
    dictionary: Option<&Dictionary>,
) -> Result<Vec<u8>, String> {
    DCTX.with(|slot| {
        let mut slot = slot.borrow_mut();
        let dctx = slot.get_or_insert_with(zstd::zstd_safe::DCtx::create);
        let mut out = Vec::with_capacity(raw_len);
        let done = match dictionary {
            Some(d) => dctx.decompress_using_ddict(&mut out, payload, d.decoder().as_ddict()),
            None => dctx.decompress(&mut out, payload),
        };
        done.map_err(|code| {
            format!(
                "decompression failed: {}",
                zstd::zstd_safe::get_error_name(code)
            )
        })?;
        Ok(out)
    })
}

/// Compresses `plaintext` at `level`, with `dictionary` when given.
fn compress(plaintext: &[u8], level: i32, dictionary: Option<&Dictionary>) -> Option<Vec<u8>> {
    let Some(dictionary) = dictionary else {
        return COMPRESSOR.with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().map(|(l, _)| *l) != Some(level) {
                *slot = Some((level, compressor_at(level)?));
            }
            let (_, compressor) = slot.as_mut()?;
            compressor.compress(plaintext).ok()
        });
    };
    DICT_COMPRESSORS.with(|slot| {
        let mut compressors = slot.borrow_mut();
        let key = (dictionary.id, level);
        let at = match compressors.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                let mut compressor =
                    zstd::bulk::Compressor::with_dictionary(level, dictionary.bytes()).ok()?;
                // Small blobs read the dictionary's tables in place rather than copy them: the
                // copy costs more than compressing a small file.
                compressor
                    .set_parameter(zstd::zstd_safe::CParameter::ForceAttachDict(
                        zstd::zstd_safe::DictAttachPref::ForceAttach,
                    ))
                    .ok()?;
                if compressors.len() >= DICT_COMPRESSORS_PER_THREAD {
                    compressors.remove(0);
                }
                compressors.push((key, compressor));
                compressors.len() - 1
            }
        };
        let entry = compressors.remove(at);
        compressors.push(entry);
        let (_, compressor) = compressors.last_mut()?;
        compressor.compress(plaintext).ok()
    })
}

/// The hash table of level 1, 2^15 entries where zstd's level 1 has 2^14 for large inputs
/// (zstd still caps a table's entries at twice an input's size rounded up to a power of two,
/// so small blobs and trees get small tables). On linux/ in solid groups (first backup, 2 cores,
/// 3 interleaved rounds): 234 MiB against zstd's level 1's 238 for the same CPU, and 7-10 %
/// less CPU than level 2 (230 MiB). Only the compressor's search differs: the frames are plain
/// zstd frames, read as any other. Compression with a dictionary keeps zstd's own tables: its
/// levels were measured with them (`ingest::level::dictionary_level`), this one was not.
const LEVEL_1_HASH_LOG: u32 = 15;

/// A compression context for `level` (level 1 with [`LEVEL_1_HASH_LOG`]).
fn compressor_at(level: i32) -> Option<zstd::bulk::Compressor<'static>> {
    let mut compressor = zstd::bulk::Compressor::new(level).ok()?;
    if level == 1 {
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::HashLog(LEVEL_1_HASH_LOG))
            .ok()?;
    }
    Some(compressor)
}

/// Dictionary compression contexts one thread keeps (each a few MiB).
const DICT_COMPRESSORS_PER_THREAD: usize = 4;

/// Blobs at least this large are first probed with a sample: compressing incompressible data
/// (media, archives, encrypted files) costs as much CPU as compressing text and saves nothing.
const PROBE_MIN_LEN: usize = 256 << 10;
/// Bytes compressed to probe a large blob.
const PROBE_LEN: usize = 32 << 10;

/// Whether a sample from the middle of `plaintext` compresses by the minimum gain.
fn looks_compressible(plaintext: &[u8], level: i32) -> bool {
    if plaintext.len() < PROBE_MIN_LEN {
        return true;
    }
    let start = plaintext.len() / 2 - PROBE_LEN / 2;
    let sample = &plaintext[start..start + PROBE_LEN];
    compress(sample, level, None)
        .is_some_and(|c| c.len() * 100 <= sample.len() * (100 - MIN_GAIN_PERCENT))
}

/// How a blob is compressed: the zstd level, and the repository dictionary to compress with.
#[derive(Clone, Copy, Default)]
pub struct Compression<'a> {
    /// zstd level.
    pub level: i32,
    /// The dictionary, for small data blobs when the repository has one suited to them.
    pub dictionary: Option<&'a Dictionary>,
}

impl Compression<'_> {
    /// Compression at `level`, without a dictionary.
    pub fn level(level: i32) -> Compression<'static> {
        Compression {
            level,
            dictionary: None,
        }
    }
}

/// Compresses `plaintext` as `how` says; `None` when that saves less than 3 %.
pub fn compressed(plaintext: &[u8], how: Compression) -> Option<Vec<u8>> {
    Some(plaintext)
        .filter(|p| looks_compressible(p, how.level))
        .and_then(|p| compress(p, how.level, how.dictionary))
        .filter(|c| c.len() * 100 <= plaintext.len() * (100 - MIN_GAIN_PERCENT))
}

/// Compresses (when it gains at least 3 %) and seals `plaintext`, whose id the caller computed.
pub fn seal_blob(
    key: &MasterKey,
    id: BlobId,
    kind: BlobKind,
    plaintext: &[u8],
    how: Compression,
) -> SealedBlob {
    let raw_len = u32::try_from(plaintext.len()).expect("blobs are far below 4 GiB");
    let packed = compressed(plaintext, how);
    let compressed = packed.is_some();
    let payload = packed.as_deref().unwrap_or(plaintext);
    SealedBlob {
        id,
        kind,
        bytes: key.seal(payload, &aad(&id, kind)),
        raw_len,
        compressed,
    }
}

/// Compressed and sealed plaintext of a solid group ([`GroupPlace`]): its members'
/// plaintexts back to back.
pub struct SealedGroup {
    /// `nonce ‖ ciphertext ‖ tag`.
    pub bytes: Vec<u8>,
    /// Length of the concatenated plaintext.
    pub raw_len: u32,
    /// Whether the payload is zstd-compressed.
    pub compressed: bool,
}

/// Compresses (when it gains at least 3 %) and seals the concatenated plaintext of a solid
/// group. No sample is probed first, as for a large blob: a group is small files, mostly text,
/// and the probe would cost an eighth more compression for every group to spare the few of
/// media files.
pub fn seal_group(key: &MasterKey, plaintext: &[u8], how: Compression) -> SealedGroup {
    let raw_len = u32::try_from(plaintext.len()).expect("groups are far below 4 GiB");
    let packed = compress(plaintext, how.level, how.dictionary)
        .filter(|c| c.len() * 100 <= plaintext.len() * (100 - MIN_GAIN_PERCENT));
    let compressed = packed.is_some();
    let payload = packed.as_deref().unwrap_or(plaintext);
    SealedGroup {
        bytes: key.seal(payload, GROUP_AAD),
        raw_len,
        compressed,
    }
}

/// Opens a sealed blob and proves it is the plaintext of `meta.id`. The error string says which
/// check failed; callers add the pack and blob to it. A member of a solid group is opened by
/// opening its group (callers reading several members keep the group: [`open_group`]).
pub fn open_blob(
    key: &MasterKey,
    dictionaries: &dyn FindDictionary,
    meta: &BlobMeta,
    sealed: &[u8],
) -> Result<Vec<u8>, OpenFailure> {
    open_proven(
        Proof::Id(key),
        key,
        dictionaries,
        meta,
        Cow::Borrowed(sealed),
    )
}

/// [`open_blob`] on a buffer the caller owns: decrypts in place, without copying.
pub fn open_blob_owned(
    key: &MasterKey,
    dictionaries: &dyn FindDictionary,
    meta: &BlobMeta,
    sealed: Vec<u8>,
) -> Result<Vec<u8>, OpenFailure> {
    open_proven(Proof::Id(key), key, dictionaries, meta, Cow::Owned(sealed))
}

/// Opens a sealed blob, or its group for a member of one, and proves it by `proof`: by its id
/// ([`open_blob`]), or, for the writer's verification before upload, by what the writer noted
/// while computing the id ([`Witness`]), not by computing the id again. A borrowed buffer is
/// decrypted into a copy of its ciphertext, an owned one in place.
pub fn open_proven(
    proof: Proof,
    key: &MasterKey,
    dictionaries: &dyn FindDictionary,
    meta: &BlobMeta,
    sealed: Cow<[u8]>,
) -> Result<Vec<u8>, OpenFailure> {
    if meta.group.is_some() {
        return open_group_member(proof, key, dictionaries, meta, sealed).map(|(_, member)| member);
    }
    let payload = open_payload(key, meta, sealed)?;
    finish_open(
        dictionaries,
        meta.compressed,
        meta.raw_len,
        payload,
        |plain| prove(proof, meta, &plain).map(|()| plain),
    )
}

/// [`open_group`], and member `meta` (proven there) copied out of the group.
pub fn open_group_member(
    proof: Proof,
    key: &MasterKey,
    dictionaries: &dyn FindDictionary,
    meta: &BlobMeta,
    sealed: Cow<[u8]>,
) -> Result<(Vec<u8>, Vec<u8>), OpenFailure> {
    let group = open_group(proof, key, dictionaries, meta, sealed)?;
    let member = member_of(&group, meta)
        .map_err(OpenFailure::Damaged)?
        .to_vec();
    Ok((group, member))
}

/// Opens the solid group that member `meta` was sealed in and returns the group's whole
/// plaintext, after proving that member by `proof`: a reader wanting several members opens
/// (and decompresses) the group once and takes the others with [`group_member`].
pub fn open_group(
    proof: Proof,
    key: &MasterKey,
    dictionaries: &dyn FindDictionary,
    meta: &BlobMeta,
    sealed: Cow<[u8]>,
) -> Result<Vec<u8>, OpenFailure> {
    let place = meta
        .group
        .ok_or_else(|| OpenFailure::Damaged("not a member of a solid group".into()))?;
    let payload = open_payload(key, meta, sealed)?;
    let whole = |group: Vec<u8>| {
        if group.len() != place.len as usize {
            return Err(format!(
                "its group's length {} differs from the recorded {}",
                group.len(),
                place.len
            ));
        }
        Ok(group)
    };
    let proven = |group: Vec<u8>| {
        let group = whole(group)?;
        prove(proof, meta, member_of(&group, meta)?).map(|()| group)
    };
    // Each dictionary the frame's name finds is tried until one gives the member, as for a
    // blob alone; the payload is kept for a second look only when there is a dictionary.
    let named = meta.compressed && zstd::zstd_safe::get_dict_id_from_frame(&payload).is_some();
    let again = named.then(|| payload.clone());
    match (
        finish_open(dictionaries, meta.compressed, place.len, payload, proven),
        again,
    ) {
        // None gave the member. If one opens the group whole, the member is not what its
        // entry says: damage (a writer's fault or a lying entry), not a dictionary that does
        // not fit.
        (Err(OpenFailure::NoDictionary(reason)), Some(payload)) => {
            let group = finish_open(dictionaries, true, place.len, payload, whole)
                .map_err(|_| OpenFailure::NoDictionary(reason))?;
            member_of(&group, meta)
                .and_then(|member| prove(proof, meta, member))
                .map_err(OpenFailure::Damaged)?;
            Ok(group)
        }
        // Without a dictionary, every failure to give the member is damage.
        (opened, _) => opened,
    }
}

/// Member `meta` of an opened solid group's plaintext, proven by `proof`.
pub fn group_member(group: &[u8], meta: &BlobMeta, proof: Proof) -> Result<Vec<u8>, OpenFailure> {
    proven_member(group, meta, proof).map(<[u8]>::to_vec)
}

/// [`group_member`] in place: for checks, which need the proof and not a copy.
pub fn proven_member<'g>(
    group: &'g [u8],
    meta: &BlobMeta,
    proof: Proof,
) -> Result<&'g [u8], OpenFailure> {
    member_of(group, meta)
        .and_then(|member| prove(proof, meta, member).map(|()| member))
        .map_err(OpenFailure::Damaged)
}

/// Where member `meta` lies in its group's plaintext.
fn member_of<'g>(group: &'g [u8], meta: &BlobMeta) -> Result<&'g [u8], String> {
    let place = meta.group.ok_or("not a member of a solid group")?;
    let start = place.start as usize;
    group
        .get(start..start + meta.raw_len as usize)
        .ok_or_else(|| format!("it lies outside its group ({} bytes)", group.len()))
}

/// The payload of a sealed blob or group, after its claimed lengths are checked against the
/// limits.
fn open_payload(
    key: &MasterKey,
    meta: &BlobMeta,
    sealed: Cow<[u8]>,
) -> Result<Vec<u8>, OpenFailure> {
    check_claim(meta)?;
    let blob_aad;
    let aad = match meta.group {
        Some(_) => GROUP_AAD,
        None => {
            blob_aad = aad(&meta.id, meta.kind);
            &blob_aad[..]
        }
    };
    let opened = match sealed {
        Cow::Borrowed(sealed) => key.open(sealed, aad),
        Cow::Owned(sealed) => key.open_owned(sealed, aad),
    };
    opened.map_err(|e| OpenFailure::Damaged(e.to_string()))
}

fn check_claim(meta: &BlobMeta) -> Result<(), OpenFailure> {
    if meta.raw_len > MAX_BLOB_LEN {
        return Err(OpenFailure::Damaged(format!(
            "claimed length {} exceeds the {} byte limit",
            meta.raw_len, MAX_BLOB_LEN
        )));
    }
    if let Some(place) = meta.group
        && (place.len > MAX_GROUP_LEN
            || u64::from(place.start) + u64::from(meta.raw_len) > u64::from(place.len))
    {
        return Err(OpenFailure::Damaged(format!(
            "claimed place {}+{} in a group of {} exceeds the group or its {} byte limit",
            place.start, meta.raw_len, place.len, MAX_GROUP_LEN
        )));
    }
    Ok(())
}

/// Decompresses an opened payload of `raw_len` bytes and hands it to `accept`, which checks it
/// (its length and id). A payload naming a dictionary is tried with each the repository has
/// under that name until one gives what `accept` takes.
fn finish_open<T>(
    dictionaries: &dyn FindDictionary,
    compressed: bool,
    raw_len: u32,
    payload: Vec<u8>,
    accept: impl Fn(Vec<u8>) -> Result<T, String>,
) -> Result<T, OpenFailure> {
    if !compressed {
        return accept(payload).map_err(OpenFailure::Damaged);
    }
    let Some(zstd_id) = zstd::zstd_safe::get_dict_id_from_frame(&payload) else {
        return decompress(&payload, raw_len as usize, None)
            .and_then(&accept)
            .map_err(OpenFailure::Damaged);
    };
    let candidates = dictionaries
        .dictionaries(zstd_id.get())
        .map_err(|e| match e {
            FindError::Missing(reason) => OpenFailure::NoDictionary(reason),
            FindError::Store(error) => OpenFailure::Store(error),
        })?;
    let mut last = OpenFailure::NoDictionary(format!(
        "its compression dictionary {:08x} is not in the repository",
        zstd_id.get()
    ));
    for dictionary in candidates {
        // The tag proved the payload is what its writer sealed: failing with this dictionary
        // says the dictionary is not the blob's, not that the pack is damaged.
        match decompress(&payload, raw_len as usize, Some(&dictionary)).and_then(&accept) {
            Ok(plaintext) => return Ok(plaintext),
            Err(reason) => {
                last = OpenFailure::NoDictionary(format!(
                    "it does not open with compression dictionary {} ({reason})",
                    crate::repo::dictionary::dict_name(dictionary.zstd_id, &dictionary.id)
                ))
            }
        }
    }
    Err(last)
}

/// Whether `plaintext` has the length `meta` records and is what `proof` says.
fn prove(proof: Proof, meta: &BlobMeta, plaintext: &[u8]) -> Result<(), String> {
    if plaintext.len() != meta.raw_len as usize {
        return Err(format!(
            "length {} differs from the recorded {}",
            plaintext.len(),
            meta.raw_len
        ));
    }
    match proof {
        Proof::Id(key) if key.blob_id(plaintext) != meta.id => {
            Err("content does not match its id".into())
        }
        Proof::Witnessed(witness) => witness.attest(&meta.id.0, plaintext).map_err(Into::into),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterSecrets;

    #[test]
    fn level_1_searches_a_larger_table_than_zstd_s_own() {
        // Text of 6,000 distinct words in a shuffled order: repeats lie far apart, where a
        // larger hash table finds matches the smaller one has overwritten.
        let words: Vec<String> = (0..6000u32)
            .map(|w| format!("w{}x{}", w * 7919, w % 97))
            .collect();
        let mut state = 1u64;
        let mut text = Vec::new();
        while text.len() < 800 << 10 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.extend_from_slice(words[(state >> 33) as usize % words.len()].as_bytes());
            text.push(b' ');
        }
        let ours = compress(&text, 1, None).unwrap();
        let zstd_1 = zstd::bulk::compress(&text, 1).unwrap();
        assert!(
            ours.len() < zstd_1.len(),
            "{} against {}",
            ours.len(),
            zstd_1.len()
        );
        assert_eq!(zstd::bulk::decompress(&ours, text.len()).unwrap(), text);
    }

    fn meta_of(blob: &SealedBlob) -> BlobMeta {
        BlobMeta {
            id: blob.id,
            kind: blob.kind,
            raw_len: blob.raw_len,
            compressed: blob.compressed,
            group: None,
        }
    }

    #[test]
    fn compressible_blob_round_trips_compressed() {
        let key = MasterKey::new(MasterSecrets::generate());
        let data = vec![7u8; 100_000];
        let blob = seal_blob(
            &key,
            key.blob_id(&data),
            BlobKind::Data,
            &data,
            Compression::level(3),
        );
        assert!(blob.compressed);
        assert!(blob.bytes.len() < 1000);
        assert_eq!(
            open_blob(&key, &NoDictionaries, &meta_of(&blob), &blob.bytes).unwrap(),
            data
        );
    }

    #[test]
    fn incompressible_blob_is_stored_raw() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut data = vec![0u8; 10_000];
        crate::repo::crypto::fill_random(&mut data);
        let blob = seal_blob(
            &key,
            key.blob_id(&data),
            BlobKind::Data,
            &data,
            Compression::level(3),
        );
        assert!(!blob.compressed);
        assert_eq!(
            open_blob(&key, &NoDictionaries, &meta_of(&blob), &blob.bytes).unwrap(),
            data
        );
    }

    #[test]
    fn large_incompressible_blob_skips_compression_large_text_does_not() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut noise = vec![0u8; 1 << 20];
        crate::repo::crypto::fill_random(&mut noise);
        assert!(
            !seal_blob(
                &key,
                key.blob_id(&noise),
                BlobKind::Data,
                &noise,
                Compression::level(3)
            )
            .compressed
        );
        let text = "some text that repeats. ".repeat(50_000).into_bytes();
        let blob = seal_blob(
            &key,
            key.blob_id(&text),
            BlobKind::Data,
            &text,
            Compression::level(3),
        );
        assert!(blob.compressed);
        assert_eq!(
            open_blob(&key, &NoDictionaries, &meta_of(&blob), &blob.bytes).unwrap(),
            text
        );
    }

    #[test]
    fn blob_under_another_id_or_kind_fails() {
        let key = MasterKey::new(MasterSecrets::generate());
        let blob = seal_blob(
            &key,
            key.blob_id(b"abc"),
            BlobKind::Data,
            b"abc",
            Compression::level(3),
        );
        let mut meta = meta_of(&blob);
        meta.kind = BlobKind::Tree;
        assert!(open_blob(&key, &NoDictionaries, &meta, &blob.bytes).is_err());
        let mut meta = meta_of(&blob);
        meta.id = key.blob_id(b"abd");
        assert!(open_blob(&key, &NoDictionaries, &meta, &blob.bytes).is_err());
    }

    #[test]
    fn sealed_with_wrong_id_fails_the_content_check() {
        // The AEAD binds the claimed id, but only the re-hash proves the plaintext matches it:
        // this is the check that catches corruption between hashing and sealing.
        let key = MasterKey::new(MasterSecrets::generate());
        let wrong = key.blob_id(b"other");
        let blob = seal_blob(&key, wrong, BlobKind::Data, b"abc", Compression::level(3));
        let err = open_blob(&key, &NoDictionaries, &meta_of(&blob), &blob.bytes).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
