//! Random edit sequences of a small tree, for testing what spans snapshots (the mount's
//! `history/`, `find`, `diff`) against a brute-force reading of every state.
//!
//! A state maps each of a few fixed paths (one not UTF-8, some in subdirectories) to a content
//! number and a mode, or to nothing. Contents come from a small set, so a file often gets back
//! a content it had before, and directories come and go with their files.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The paths a state may hold, relative to the tree's root.
pub const PATHS: [&[u8]; 6] = [b"a", b"b\xff\xfe", b"d/c", b"d/e", b"d/f/g", b"h/i"];

/// What one path holds: a content number and a mode.
pub type Item = (u8, u32);

/// One state of the tree.
pub type State = BTreeMap<Vec<u8>, Item>;

/// The bytes of content number `n` (of different sizes, one spanning several chunks).
pub fn content(n: u8) -> Vec<u8> {
    let len = match n {
        0 => 0,
        1 => 13,
        2 => 5000,
        _ => 3 << 20,
    };
    (0..len)
        .map(|i: usize| (i as u8).wrapping_mul(31).wrapping_add(n))
        .collect()
}

/// Random states: each path present with probability about 2/3.
pub fn states(max: usize) -> impl Strategy<Value = Vec<State>> {
    let item = prop_oneof![
        1 => Just(None),
        2 => (0u8..4, prop_oneof![Just(0o644u32), Just(0o600u32)]).prop_map(Some),
    ];
    let state = proptest::collection::vec(item, PATHS.len()).prop_map(|items| {
        PATHS
            .iter()
            .zip(items)
            .filter_map(|(p, i)| i.map(|i| (p.to_vec(), i)))
            .collect::<State>()
    });
    proptest::collection::vec(state, 1..=max)
}

/// Makes `root` hold exactly `state` (everything else in it removed).
pub fn write_state(root: &Path, state: &State) {
    if root.exists() {
        fs::remove_dir_all(root).unwrap();
    }
    fs::create_dir_all(root).unwrap();
    for (path, (n, mode)) in state {
        let file = root.join(OsStr::from_bytes(path));
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(&file, content(*n)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// The directories of `state` (relative paths, the root as empty), each with its entries' names.
pub fn dirs(state: &State) -> BTreeMap<Vec<u8>, std::collections::BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<Vec<u8>, std::collections::BTreeSet<Vec<u8>>> = BTreeMap::new();
    out.entry(Vec::new()).or_default();
    for path in state.keys() {
        let parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
        for depth in 0..parts.len() {
            let dir = parts[..depth].join(&b'/');
            out.entry(dir).or_default().insert(parts[depth].to_vec());
        }
    }
    out
}
