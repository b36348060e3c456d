//! What a writer notes while it names bytes (a blob's plaintext and its id, a pack's bytes and
//! its SHA-256), so that it can prove, cheaply, before the upload, that what it is about to
//! store is still what it named.
//!
//! The check is for memory that changes between hashing and upload (bad RAM): the backup's
//! original answer was to compute every id a second time from the re-read bytes, which cost as
//! much as the rest of that verification. A [`Witness`] is two xxh3-128 digests, one of the
//! bytes taken just before the name is computed, one of the name (with the first) taken just
//! after: a change to the bytes after the first digest, or to the name after the second, shows
//! (a random change escapes xxh3-128 with odds of 2^-128); a change before the first digest
//! the second computation of the id could not catch either. What it gives up is a fault inside
//! the one computation of the name itself, which readers still catch: every blob is proven by
//! its id when read, every pack by its hash when checked or healed. Witnesses are never stored.

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

/// The digests a writer took around naming some bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Witness {
    bytes: u128,
    named: u128,
}

impl Witness {
    /// Names `bytes` with `name_of`, digesting them just before and the name just after.
    pub fn name(bytes: &[u8], name_of: impl FnOnce(&[u8]) -> [u8; 32]) -> ([u8; 32], Witness) {
        let digest = xxh3_128(bytes);
        let name = name_of(bytes);
        let named = bind(&name, digest);
        (
            name,
            Witness {
                bytes: digest,
                named,
            },
        )
    }

    /// Whether `bytes` named `name` are what was named, or why not.
    pub fn attest(&self, name: &[u8; 32], bytes: &[u8]) -> Result<(), &'static str> {
        if xxh3_128(bytes) != self.bytes {
            return Err("content differs from the bytes its id was computed from");
        }
        if bind(name, self.bytes) != self.named {
            return Err("its id differs from the one computed from its content");
        }
        Ok(())
    }
}

fn bind(name: &[u8; 32], digest: u128) -> u128 {
    let mut hasher = Xxh3::new();
    hasher.update(name);
    hasher.update(&digest.to_le_bytes());
    hasher.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(bytes: &[u8]) -> [u8; 32] {
        crate::repo::ids::sha256(bytes)
    }

    #[test]
    fn changed_bytes_and_changed_names_are_told_apart() {
        let (name, witness) = Witness::name(b"some bytes", name_of);
        assert_eq!(witness.attest(&name, b"some bytes"), Ok(()));
        let err = witness.attest(&name, b"some bytez").unwrap_err();
        assert!(err.contains("content differs"), "{err}");
        let mut flipped = name;
        flipped[7] ^= 0x20;
        let err = witness.attest(&flipped, b"some bytes").unwrap_err();
        assert!(err.contains("its id differs"), "{err}");
    }
}
