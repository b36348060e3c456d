//! Pack trailers and headers: arbitrary bytes as a whole pack, and as a header's plaintext.
#![no_main]
use cairn::repo::crypto::{MasterKey, MasterSecrets};
use cairn::repo::ids::PackId;
use cairn::repo::pack::{decode_header, read_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::new(MasterSecrets { enc: [1; 32], mac: [2; 32], gear_seed: 3 });
    let _ = read_header(&key, &PackId::default(), data);
    if let Ok(entries) = decode_header(data, "fuzz") {
        // What a header claims is checked before anyone reads by it, without panicking.
        for entry in &entries {
            let _ = (entry.implausible(), entry.open_bytes(), entry.stored_share());
        }
    }
});
