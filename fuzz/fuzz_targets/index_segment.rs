//! Index segments: the plaintext decoder, then the in-memory index built from whatever parsed
//! and passed the checks a stored segment passes.
#![no_main]
use cairn::repo::index::{Index, Segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(segment) = Segment::decode(data, "fuzz") else {
        return;
    };
    if segment.packs.iter().flat_map(|p| &p.blobs).any(|e| e.implausible().is_some()) {
        return;
    }
    let index = Index::from_segments(vec![segment.clone()]);
    for at in index.iter() {
        assert_eq!(index.get(&at.entry.id).map(|l| l.entry.id), Some(at.entry.id));
        // Every location of a blob is kept, the first listed first.
        let locations = index.locations(&at.entry.id);
        assert_eq!(locations.first().map(|l| l.pack), Some(at.pack));
        assert!(locations.iter().all(|l| l.entry.id == at.entry.id));
        // The index keeps every field, a member's place in its solid group too.
        let listed = segment.packs.iter().filter(|p| p.pack == at.pack);
        assert!(listed.flat_map(|p| &p.blobs).any(|e| *e == at.entry));
    }
});
