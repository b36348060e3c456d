//! Tree blobs: the decoder must reject, never panic or over-allocate, and a name readers accept
//! must be a single path component.
#![no_main]
use cairn::repo::ids::BlobId;
use cairn::repo::tree::{Tree, invalid_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode(data, &BlobId::default()) {
        // A name readers accept is one path component: nothing restore could climb out with.
        if let Tree::Nodes(nodes) = &tree {
            for node in nodes.iter().filter(|n| invalid_name(&n.name).is_none()) {
                let name = node.name.as_slice();
                assert!(!name.is_empty() && name != b"." && name != b"..");
                assert!(!name.contains(&b'/') && !name.contains(&0) && name.len() <= 255);
            }
        }
        assert_eq!(Tree::decode(&tree.encode(), &BlobId::default()).ok(), Some(tree));
    }
});
