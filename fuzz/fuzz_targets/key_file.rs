//! Key files: JSON parsing only (unlocking runs argon2 with the file's own costs, which the
//! parser bounds but which are too slow to fuzz).
#![no_main]
use cairn::repo::keys::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = KeyFile::parse("keys/fuzz", data);
});
