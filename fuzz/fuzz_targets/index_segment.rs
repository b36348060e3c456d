//! Index segments: the plaintext decoder, then the in-memory index built from whatever parsed.
#![no_main]
use cairn::repo::index::{Index, Segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(segment) = cairn::repo::serial::decode::<Segment>(data, "fuzz") {
        let index = Index::from_segments(vec![segment]);
        for at in index.iter() {
            assert_eq!(index.get(&at.entry.id).map(|l| l.entry.id), Some(at.entry.id));
            // Every location of a blob is kept, the first listed first.
            let locations = index.locations(&at.entry.id);
            assert_eq!(locations.first().map(|l| l.pack), Some(at.pack));
            assert!(locations.iter().all(|l| l.entry.id == at.entry.id));
        }
    }
});
