//! Random bytes from the operating system, for names nobody may guess (temporary files, ids of
//! sessions and garbage files) and for keys and nonces. At the bottom with [`crate::digest`], so
//! the backends need not reach up into the repository format for it.

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source is available");
}
