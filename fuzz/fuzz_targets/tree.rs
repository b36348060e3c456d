//! Tree blobs: the decoder must reject, never panic or over-allocate.
#![no_main]
use cairn::repo::ids::BlobId;
use cairn::repo::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data, &BlobId::default()) {
        assert_eq!(Tree::decode(&tree.encode(), &BlobId::default()).ok(), Some(tree));
    }
});
