//! The mount's `history/`, mounted for real, against a brute-force reading of every snapshot:
//! every name any snapshot has at a path is listed, each distinct content of a file is shown
//! exactly once, named by the first snapshot that has it, with that snapshot's attributes and
//! the bytes that were backed up.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::Env;
use common::edits::{PATHS, State, content, dirs, states, write_state};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::Mounted;

/// The names in a directory of the mount.
fn names(dir: &Path) -> BTreeSet<Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect()
}

/// A snapshot as `snapshots --json` gives it.
struct Snap {
    /// Its short id, as `forget` takes it.
    short: String,
    /// Its full id in hex, which orders as its bytes do.
    id: String,
    /// Its time, to the nanosecond.
    time: chrono::DateTime<chrono::Utc>,
}

impl Snap {
    /// The name its versions start with: its UTC time to the second, `2026-12-05_14-09-00Z`.
    fn stamp(&self) -> String {
        self.time.format("%Y-%m-%d_%H-%M-%SZ").to_string()
    }
}

/// Backs up each state of `src` in turn; returns each snapshot.
fn back_up_states(env: &Env, src: &Path, states: &[State]) -> Vec<Snap> {
    for state in states {
        write_state(src, state);
        env.ok(&["backup", "-q", src.to_str().unwrap()]);
    }
    env.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Snap {
            short: s["short_id"].as_str().unwrap().to_string(),
            id: s["id"].as_str().unwrap().to_string(),
            time: chrono::DateTime::parse_from_rfc3339(s["time"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc),
        })
        .collect()
}

/// Checks `history/src` of a mount of the snapshots of `states` against the states.
fn check_history(mnt: &Path, states: &[State], snaps: &[Snap]) {
    assert_eq!(snaps.len(), states.len());
    let root = mnt.join("history/src");
    // Directories: every name any snapshot has there.
    let mut merged: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for state in states {
        for (dir, entries) in dirs(state) {
            merged.entry(dir).or_default().extend(entries);
        }
    }
    for (dir, expected) in &merged {
        let shown = names(&root.join(OsStr::from_bytes(dir)));
        let expected_names: BTreeSet<Vec<u8>> = expected.clone();
        // A path that was a file shows its versions as well as any entries it had as a
        // directory; these paths are never both.
        assert_eq!(
            shown,
            expected_names,
            "history of {:?}",
            String::from_utf8_lossy(dir)
        );
    }
    // Files: each distinct content once, first snapshot's time and mode, right bytes.
    for path in PATHS {
        let mut versions: Vec<(u8, usize)> = Vec::new();
        for (i, state) in states.iter().enumerate() {
            if let Some((n, _)) = state.get(path)
                && !versions.iter().any(|(m, _)| m == n)
            {
                versions.push((*n, i));
            }
        }
        let dir = root.join(OsStr::from_bytes(path));
        if versions.is_empty() {
            assert!(!dir.exists(), "{} shown but never backed up", dir.display());
            continue;
        }
        let shown = names(&dir);
        assert_eq!(shown.len(), versions.len(), "versions of {}", dir.display());
        let mut seen = BTreeSet::new();
        for (n, first) in &versions {
            // Snapshot `2026-12-05T15:09:00+01:00` names a version `2026-12-05_14-09-00Z`, with
            // the file's extension; versions of the same second are numbered in time order.
            let stamp = snaps[*first].stamp();
            let mut twins: Vec<&Snap> = versions
                .iter()
                .map(|(_, other)| &snaps[*other])
                .filter(|other| other.stamp() == stamp)
                .collect();
            twins.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
            let ext = cairn::fs::history::extension(path);
            let label = match twins.iter().position(|s| s.id == snaps[*first].id) {
                Some(at) if twins.len() > 1 => {
                    let width = twins.len().to_string().len();
                    format!("{stamp}-{:0width$}{ext}", at + 1)
                }
                _ => format!("{stamp}{ext}"),
            };
            let file = dir.join(&label);
            assert!(
                shown.contains(label.as_bytes()),
                "{}: no version {label} in {:?}",
                dir.display(),
                shown
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<Vec<_>>()
            );
            assert_eq!(fs::read(&file).unwrap(), content(*n), "{}", file.display());
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, states[*first][path].1, "{}", file.display());
            seen.insert(label);
        }
        assert_eq!(seen.len(), versions.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn history_shows_every_version_once_with_its_bytes(states in states(6)) {
        let env = Env::with_repo(&[]);
        let src = env.path("src");
        let snaps = back_up_states(&env, &src, &states);
        let mnt = Mounted::start(&env, "mount", &[]);
        check_history(&mnt.dir, &states, &snaps);
        mnt.stop();
    }
}

#[test]
fn a_file_deleted_and_back_and_paths_in_some_snapshots_only() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let s = |items: &[(&[u8], u8)]| -> State {
        items
            .iter()
            .map(|(p, n)| (p.to_vec(), (*n, 0o644)))
            .collect()
    };
    let states = vec![
        s(&[(b"a", 1), (b"d/c", 1)]),
        s(&[(b"a", 2)]),
        s(&[(b"d/c", 1), (b"b\xff\xfe", 3)]),
        s(&[(b"a", 1), (b"d/c", 2)]),
    ];
    let snaps = back_up_states(&env, &src, &states);
    // Another path backed up once: history/ merges every snapshot's root.
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("x"), b"x").unwrap();
    fs::write(other.join("notes.txt"), b"n").unwrap();
    env.ok(&["backup", "-q", other.to_str().unwrap()]);
    let mnt = Mounted::start(&env, "mount", &[]);
    assert_eq!(
        names(&mnt.dir.join("history")),
        BTreeSet::from([b"other".to_vec(), b"src".to_vec()])
    );
    check_history(&mnt.dir, &states, &snaps);
    // `a` had 1, then 2, was deleted, came back as 1: two versions, the first one's bytes.
    assert_eq!(names(&mnt.dir.join("history/src/a")).len(), 2);
    assert_eq!(
        fs::read_dir(mnt.dir.join("history/other/x"))
            .unwrap()
            .count(),
        1
    );
    // A version keeps its file's extension and has no character FAT or SMB refuse.
    let notes: Vec<String> = names(&mnt.dir.join("history/other/notes.txt"))
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .collect();
    assert_eq!(notes.len(), 1);
    assert!(notes[0].ends_with(".txt"), "{notes:?}");
    assert!(
        !notes[0].contains([':', '\\', '*', '?', '"', '<', '>', '|']),
        "{notes:?}"
    );
    // A snapshot made while mounted adds its version within the view's refresh.
    write_state(&src, &s(&[(b"a", 0)]));
    env.ok(&["backup", "-q", src.to_str().unwrap()]);
    support::wait_for("the new version", || {
        names(&mnt.dir.join("history/src/a")).len() == 3
    });
    // Forgetting the second snapshot (the only one with a = 2) takes that version away from
    // listings the kernel had cached.
    env.ok(&["forget", &snaps[1].short]);
    support::wait_for("the forgotten version to go", || {
        names(&mnt.dir.join("history/src/a")).len() == 2
    });
    mnt.stop();
}

#[test]
fn a_merge_larger_than_the_cache_allows_is_eio_not_memory() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let many = src.join("many");
    fs::create_dir_all(&many).unwrap();
    for round in 0..3 {
        for i in 0..2000 {
            fs::write(many.join(format!("file-{i:04}")), format!("{round} {i}")).unwrap();
        }
        env.ok(&["backup", "-q", src.to_str().unwrap()]);
    }
    // 6,000 versions do not fit a quarter of a 1 MiB cache.
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "1MiB"]);
    // The directory opens (no round trip) and reading it fails.
    let listed: Vec<Option<i32>> = fs::read_dir(mnt.dir.join("history/src/many"))
        .unwrap()
        .map(|e| e.err().and_then(|e| e.raw_os_error()))
        .collect();
    assert_eq!(listed, [Some(libc::EIO)], "a merge over budget must fail");
    support::wait_for("the log line", || mnt.log().contains("--cache-size"));
    // The snapshots themselves still read.
    assert_eq!(
        fs::read_dir(mnt.dir.join("latest/src/many"))
            .unwrap()
            .count(),
        2000
    );
    mnt.stop();
    // With room, the same directory lists.
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "64MiB"]);
    assert_eq!(
        fs::read_dir(mnt.dir.join("history/src/many"))
            .unwrap()
            .count(),
        2000
    );
    assert_eq!(
        fs::read_dir(mnt.dir.join("history/src/many/file-0007"))
            .unwrap()
            .count(),
        3
    );
    mnt.stop();
}
