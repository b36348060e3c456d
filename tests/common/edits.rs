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

/// Random edit sequences: a random first state, then each next one with one or two paths
/// changed (written, re-moded or deleted), so most of the tree carries over unchanged.
pub fn states(max: usize) -> impl Strategy<Value = Vec<State>> {
    let item = || {
        prop_oneof![
            1 => Just(None),
            2 => (0u8..4, prop_oneof![Just(0o644u32), Just(0o600u32)]).prop_map(Some),
        ]
    };
    let first = proptest::collection::vec(item(), PATHS.len());
    let edits = proptest::collection::vec(
        proptest::collection::vec((0..PATHS.len(), item()), 1..=2),
        0..max,
    );
    (first, edits).prop_map(|(first, edits)| {
        let mut state: State = PATHS
            .iter()
            .zip(first)
            .filter_map(|(p, i)| i.map(|i| (p.to_vec(), i)))
            .collect();
        let mut out = vec![state.clone()];
        for step in edits {
            for (at, item) in step {
                match item {
                    Some(item) => state.insert(PATHS[at].to_vec(), item),
                    None => state.remove(PATHS[at]),
                };
            }
            out.push(state.clone());
        }
        out
    })
}

/// Makes `root` hold exactly `state`, touching only what differs: what did not change keeps
/// its inode and times, so its directories keep their tree ids from one snapshot to the next
/// (as in real use, where most of a tree does not change between backups).
pub fn write_state(root: &Path, state: &State) {
    fs::create_dir_all(root).unwrap();
    let mut dirty: std::collections::BTreeSet<std::path::PathBuf> = Default::default();
    for path in PATHS {
        let file = root.join(OsStr::from_bytes(path));
        let have = fs::read(&file).ok().map(|bytes| {
            (
                bytes,
                fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            )
        });
        match (state.get(path), have) {
            (None, Some(_)) => {
                fs::remove_file(&file).unwrap();
                dirty.insert(file.parent().unwrap().to_path_buf());
            }
            (Some((n, mode)), have) => {
                if have
                    .as_ref()
                    .is_some_and(|(b, m)| *b == content(*n) && m == mode)
                {
                    continue;
                }
                if have.is_none() {
                    // The file's directory gains an entry, and so does the parent of each
                    // directory made for it.
                    let parent = file.parent().unwrap();
                    dirty.insert(parent.to_path_buf());
                    for dir in parent.ancestors().take_while(|d| !d.exists()) {
                        dirty.insert(dir.parent().unwrap().to_path_buf());
                    }
                    fs::create_dir_all(parent).unwrap();
                }
                fs::write(&file, content(*n)).unwrap();
                fs::set_permissions(&file, fs::Permissions::from_mode(*mode)).unwrap();
                filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(mtime(*n), 0))
                    .unwrap();
            }
            (None, None) => {}
        }
    }
    // Directories left empty go, deepest first.
    let mut dirs_below: Vec<std::path::PathBuf> = PATHS
        .iter()
        .flat_map(|p| {
            let file = root.join(OsStr::from_bytes(p));
            file.ancestors()
                .skip(1)
                .take_while(|a| *a != root)
                .map(Path::to_path_buf)
                .collect::<Vec<_>>()
        })
        .collect();
    dirs_below.sort_by_key(|d| (std::cmp::Reverse(d.components().count()), d.clone()));
    dirs_below.dedup();
    for dir in dirs_below {
        if dir.exists() && fs::read_dir(&dir).unwrap().next().is_none() {
            fs::remove_dir(&dir).unwrap();
            dirty.insert(dir.parent().unwrap().to_path_buf());
        }
    }
    for dir in dirty.iter().filter(|d| d.exists()) {
        filetime::set_file_mtime(dir, filetime::FileTime::from_unix_time(DIR_MTIME, 0)).unwrap();
    }
}

/// The modification time of content `n`: a file's time follows its content, so a path whose
/// content did not change between states did not change at all.
pub fn mtime(n: u8) -> i64 {
    1_600_000_000 + i64::from(n)
}

/// Every directory's modification time.
pub const DIR_MTIME: i64 = 1_500_000_000;

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
