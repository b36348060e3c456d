//! Snapshot manifests: the plaintext decoder.
#![no_main]
use cairn::repo::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::decode(data, "fuzz");
});
