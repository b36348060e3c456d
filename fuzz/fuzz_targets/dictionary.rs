//! Compression dictionaries: arbitrary bytes as a stored `dicts/` object (both copies looked
//! for at every sector boundary, then opened), as a dictionary's content (which zstd parses),
//! and as an object name.
#![no_main]
use cairn::repo::crypto::{MasterKey, MasterSecrets};
use cairn::repo::dictionary;
use cairn::repo::ids::{DictId, sha256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::new(MasterSecrets { enc: [1; 32], mac: [2; 32], gear_seed: 3 });
    // Under a name its first copy (if its length prefix is honest) would match.
    let len = data.get(..4).map_or(0, |l| u32::from_le_bytes(l.try_into().unwrap()) as usize);
    let named = DictId(sha256(data.get(4..4 + len).unwrap_or_default()));
    for id in [DictId::default(), named] {
        let _ = dictionary::inspect(&id, data);
        let _ = dictionary::open(&key, 0x8000_0000, id, data);
    }
    let _ = dictionary::seal(&key, data.to_vec());
    let _ = dictionary::parse_name(&String::from_utf8_lossy(data));
});
