//! Index segments: the plaintext decoder, then the in-memory index built from whatever parsed.
#![no_main]
use cairn::repo::index::{Index, Segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(segment) = cairn::repo::serial::decode::<Segment>(data, "fuzz") {
        let index = Index::from_segments(vec![segment]);
        for at in index.iter() {
            assert_eq!(index.get(&at.entry.id).map(|l| l.entry.id), Some(at.entry.id));
        }
    }
});
