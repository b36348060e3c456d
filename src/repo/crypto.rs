//! The master key and the two primitives built on it: sealing (AES-256-GCM with a random nonce
//! and associated data that binds a ciphertext to what it claims to be) and blob ids
//! (HMAC-SHA256 of plaintext). Sealed layout: `nonce(12) ‖ ciphertext ‖ tag(16)`.

use crate::repo::ids::BlobId;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A sealed message that does not authenticate: wrong key, altered bytes, or wrong context.
#[derive(Debug, thiserror::Error)]
#[error("authentication failed (wrong key or damaged data)")]
pub struct OpenError;

/// The master key's secrets as stored (sealed) in key files.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterSecrets {
    /// AES-256-GCM key for every sealed object.
    #[serde(with = "hex_bytes")]
    pub enc: [u8; 32],
    /// HMAC-SHA256 key for blob ids and the config's MAC.
    #[serde(with = "hex_bytes")]
    pub mac: [u8; 32],
    /// Seeds the chunker's gear table so chunk boundaries reveal nothing about content.
    pub gear_seed: u64,
}

impl MasterSecrets {
    /// Fresh random secrets for a new repository.
    pub fn generate() -> Self {
        let mut enc = [0u8; 32];
        let mut mac = [0u8; 32];
        let mut seed = [0u8; 8];
        fill_random(&mut enc);
        fill_random(&mut mac);
        fill_random(&mut seed);
        MasterSecrets {
            enc,
            mac,
            gear_seed: u64::from_le_bytes(seed),
        }
    }
}

/// The unlocked master key, with its ciphers initialised once.
pub struct MasterKey {
    secrets: MasterSecrets,
    cipher: Aes256Gcm,
    mac: Hmac<Sha256>,
}

impl MasterKey {
    /// Prepares the ciphers for `secrets`.
    pub fn new(secrets: MasterSecrets) -> Self {
        let cipher = Aes256Gcm::new_from_slice(&secrets.enc).expect("32-byte AES key");
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&secrets.mac)
            .expect("HMAC takes any key length");
        MasterKey {
            secrets,
            cipher,
            mac,
        }
    }

    /// The secrets, for sealing into a key file.
    pub fn secrets(&self) -> &MasterSecrets {
        &self.secrets
    }

    /// The chunker seed.
    pub fn gear_seed(&self) -> u64 {
        self.secrets.gear_seed
    }

    /// The id of a blob with this plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(self.mac_of(plaintext))
    }

    /// HMAC-SHA256 of `bytes` under the `mac` key.
    pub fn mac_of(&self, bytes: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Appends `nonce ‖ AES-GCM(plaintext, aad) ‖ tag` to `out`, encrypting in place so a pack
    /// is built without an intermediate copy.
    pub fn seal_into(&self, out: &mut Vec<u8>, plaintext: &[u8], aad: &[u8]) {
        seal_with(&self.cipher, out, plaintext, aad)
    }

    /// Seals `plaintext` into a new buffer.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(&mut out, plaintext, aad);
        out
    }

    /// Opens a sealed message in its own buffer, without copying the ciphertext.
    pub fn open_owned(&self, mut sealed: Vec<u8>, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let nonce = Nonce::try_from(&sealed[..NONCE_LEN]).map_err(|_| OpenError)?;
        let tag_at = sealed.len() - TAG_LEN;
        let tag = Tag::try_from(&sealed[tag_at..]).map_err(|_| OpenError)?;
        let body: &mut [u8] = &mut sealed[NONCE_LEN..tag_at];
        self.cipher
            .decrypt_inout_detached(&nonce, aad, body.into(), &tag)
            .map_err(|_| OpenError)?;
        sealed.truncate(tag_at);
        sealed.drain(..NONCE_LEN);
        Ok(sealed)
    }

    /// Opens a sealed message, checking its tag against `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_with(&self.cipher, sealed, aad)
    }
}

/// Seals with a key that is not the master key (the key-file wrapping key).
pub fn seal_with_key(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte AES key");
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    seal_with(&cipher, &mut out, plaintext, aad);
    out
}

/// Opens with a key that is not the master key (the key-file wrapping key).
pub fn open_with_key(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("32-byte AES key");
    open_with(&cipher, sealed, aad)
}

fn seal_with(cipher: &Aes256Gcm, out: &mut Vec<u8>, plaintext: &[u8], aad: &[u8]) {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    out.reserve(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let buffer: &mut [u8] = &mut out[start..];
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), aad, buffer.into())
        .expect("AES-GCM encrypts any message below 64 GiB");
    out.extend_from_slice(&tag);
}

fn open_with(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = Nonce::try_from(nonce).map_err(|_| OpenError)?;
    let tag = Tag::try_from(tag).map_err(|_| OpenError)?;
    let mut plain = ciphertext.to_vec();
    cipher
        .decrypt_inout_detached(&nonce, aad, plain.as_mut_slice().into(), &tag)
        .map_err(|_| OpenError)?;
    Ok(plain)
}

pub use crate::random::fill_random;

/// Serde helper: 32-byte arrays as hex strings in JSON files.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes the bytes as hex.
    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Reads 64 hex digits.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_message_opens_only_with_same_aad() {
        let key = MasterKey::new(MasterSecrets::generate());
        let sealed = key.seal(b"hello", b"ctx-a");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(key.open(&sealed, b"ctx-a").unwrap(), b"hello");
        assert!(key.open(&sealed, b"ctx-b").is_err());
    }

    #[test]
    fn owned_open_equals_borrowed_open() {
        let key = MasterKey::new(MasterSecrets::generate());
        let sealed = key.seal(b"in place", b"ctx");
        assert_eq!(key.open_owned(sealed.clone(), b"ctx").unwrap(), b"in place");
        assert!(key.open_owned(sealed, b"other").is_err());
        assert!(key.open_owned(vec![1, 2, 3], b"ctx").is_err());
    }

    #[test]
    fn flipped_bit_fails_authentication() {
        let key = MasterKey::new(MasterSecrets::generate());
        let mut sealed = key.seal(b"hello world", b"");
        sealed[14] ^= 1;
        assert!(key.open(&sealed, b"").is_err());
        assert!(key.open(&sealed[..5], b"").is_err());
    }

    #[test]
    fn blob_id_is_keyed() {
        let a = MasterKey::new(MasterSecrets::generate());
        let b = MasterKey::new(MasterSecrets::generate());
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
    }
}
