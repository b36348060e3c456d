//! SHA-256, the one hash every layer names content by: repository objects (packs, index and
//! snapshot files, key files) are named by it, and the backends check what they cache or were
//! sent against it. A module of its own at the bottom, so the backends need not reach up into
//! the repository format for it.

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes`: the name of every content-addressed repository file.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
