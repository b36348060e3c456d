//! One blob, sealed and opened. A sealed blob's associated data is its id and kind, so a
//! ciphertext moved to another id or kind fails authentication; opening re-hashes the plaintext
//! and compares it with the id, so a blob is either exactly what was stored or an error.

use crate::repo::crypto::MasterKey;
use crate::repo::ids::{BlobId, BlobKind};
use std::cell::RefCell;

/// The largest plaintext a blob may claim. Bounds the allocation made when opening one, so a
/// damaged length field cannot ask for unbounded memory. Chunks are at most 16 MiB (fastcdc's
/// ceiling) and tree blobs are split at 4 MiB.
pub const MAX_BLOB_LEN: u32 = 32 << 20;

/// Compression must save at least this share of the bytes to be kept (in hundredths).
const MIN_GAIN_PERCENT: usize = 3;

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
    // a small blob.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn decompress(payload: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut()
            .expect("set above")
            .decompress(payload, raw_len)
    })
}

fn compress(plaintext: &[u8], level: i32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        compressor.compress(plaintext).ok()
    })
}

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
    compress(sample, level)
        .is_some_and(|c| c.len() * 100 <= sample.len() * (100 - MIN_GAIN_PERCENT))
}

/// Compresses (when it gains at least 3 %) and seals `plaintext`, whose id the caller computed.
pub fn seal_blob(
    key: &MasterKey,
    id: BlobId,
    kind: BlobKind,
    plaintext: &[u8],
    level: i32,
) -> SealedBlob {
    let raw_len = u32::try_from(plaintext.len()).expect("blobs are far below 4 GiB");
    let packed = Some(plaintext)
        .filter(|p| looks_compressible(p, level))
        .and_then(|p| compress(p, level))
        .filter(|c| c.len() * 100 <= plaintext.len() * (100 - MIN_GAIN_PERCENT));
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

/// Opens a sealed blob and proves it is the plaintext of `meta.id`. The error string says which
/// check failed; callers add the pack and blob to it.
pub fn open_blob(key: &MasterKey, meta: &BlobMeta, sealed: &[u8]) -> Result<Vec<u8>, String> {
    check_claim(meta)?;
    let payload = key
        .open(sealed, &aad(&meta.id, meta.kind))
        .map_err(|e| e.to_string())?;
    finish_open(key, meta, payload)
}

/// [`open_blob`] on a buffer the caller owns: decrypts in place, without copying.
pub fn open_blob_owned(
    key: &MasterKey,
    meta: &BlobMeta,
    sealed: Vec<u8>,
) -> Result<Vec<u8>, String> {
    check_claim(meta)?;
    let payload = key
        .open_owned(sealed, &aad(&meta.id, meta.kind))
        .map_err(|e| e.to_string())?;
    finish_open(key, meta, payload)
}

fn check_claim(meta: &BlobMeta) -> Result<(), String> {
    if meta.raw_len > MAX_BLOB_LEN {
        return Err(format!(
            "claimed length {} exceeds the {} byte limit",
            meta.raw_len, MAX_BLOB_LEN
        ));
    }
    Ok(())
}

/// Decompresses an opened payload and checks its length and id.
fn finish_open(key: &MasterKey, meta: &BlobMeta, payload: Vec<u8>) -> Result<Vec<u8>, String> {
    let plaintext = if meta.compressed {
        decompress(&payload, meta.raw_len as usize)
            .map_err(|e| format!("decompression failed: {e}"))?
    } else {
        payload
    };
    if plaintext.len() != meta.raw_len as usize {
        return Err(format!(
            "length {} differs from the recorded {}",
            plaintext.len(),
            meta.raw_len
        ));
    }
    if key.blob_id(&plaintext) != meta.id {
        return Err("content does not match its id".into());
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::MasterSecrets;

    fn meta_of(blob: &SealedBlob) -> BlobMeta {
        BlobMeta {
            id: blob.id,
            kind: blob.kind,
            raw_len: blob.raw_len,
            compressed: blob.compressed,
        }
    }

    #[test]
    fn compressible_blob_round_trips_compressed() {
        let key = MasterKey::new(MasterSecrets::generate());
        let data = vec![7u8; 100_000];
        let blob = seal_blob(&key, key.blob_id(&data), BlobKind::Data, &data, 3);
        assert!(blob.compressed);
        assert!(blob.bytes.len() < 1000);
        assert_eq!(open_blob(&key, &meta_of(&blob), &blob.bytes).unwrap(), data);
    }

    #[test]
    fn incompressible_blob_is_stored_raw() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut data = vec![0u8; 10_000];
        crate::repo::crypto::fill_random(&mut data);
        let blob = seal_blob(&key, key.blob_id(&data), BlobKind::Data, &data, 3);
        assert!(!blob.compressed);
        assert_eq!(open_blob(&key, &meta_of(&blob), &blob.bytes).unwrap(), data);
    }

    #[test]
    fn large_incompressible_blob_skips_compression_large_text_does_not() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut noise = vec![0u8; 1 << 20];
        crate::repo::crypto::fill_random(&mut noise);
        assert!(!seal_blob(&key, key.blob_id(&noise), BlobKind::Data, &noise, 3).compressed);
        let text = "some text that repeats. ".repeat(50_000).into_bytes();
        let blob = seal_blob(&key, key.blob_id(&text), BlobKind::Data, &text, 3);
        assert!(blob.compressed);
        assert_eq!(open_blob(&key, &meta_of(&blob), &blob.bytes).unwrap(), text);
    }

    #[test]
    fn blob_under_another_id_or_kind_fails() {
        let key = MasterKey::new(MasterSecrets::generate());
        let blob = seal_blob(&key, key.blob_id(b"abc"), BlobKind::Data, b"abc", 3);
        let mut meta = meta_of(&blob);
        meta.kind = BlobKind::Tree;
        assert!(open_blob(&key, &meta, &blob.bytes).is_err());
        let mut meta = meta_of(&blob);
        meta.id = key.blob_id(b"abd");
        assert!(open_blob(&key, &meta, &blob.bytes).is_err());
    }

    #[test]
    fn sealed_with_wrong_id_fails_the_content_check() {
        // The AEAD binds the claimed id, but only the re-hash proves the plaintext matches it:
        // this is the check that catches corruption between hashing and sealing.
        let key = MasterKey::new(MasterSecrets::generate());
        let wrong = key.blob_id(b"other");
        let blob = seal_blob(&key, wrong, BlobKind::Data, b"abc", 3);
        let err = open_blob(&key, &meta_of(&blob), &blob.bytes).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }
}
