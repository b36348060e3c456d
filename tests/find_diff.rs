//! `find` and `diff` against brute force over random edit sequences: every match with exactly
//! the snapshots it is in, every change with its kind; and both on names that are not UTF-8.

mod common;

use common::Env;
use common::edits::{PATHS, State, content, dirs, mtime, states, write_state};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Backs up each state of `src`; returns the snapshots' ids, oldest first.
fn back_up(env: &Env, states: &[State]) -> Vec<String> {
    let src = env.path("src");
    for state in states {
        write_state(&src, state);
        env.ok(&["backup", "-q", src.to_str().unwrap()]);
    }
    env.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The path of `rel` in the snapshots, as find and diff print it (lossy for non-UTF-8 names).
fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        "/src".into()
    } else {
        format!("/src/{}", String::from_utf8_lossy(rel))
    }
}

/// What `find` must report for name `name` over `states`: (path, type, size, mtime) → ids.
fn expected_find(
    states: &[State],
    ids: &[String],
    name: &[u8],
) -> BTreeMap<(String, String, u64), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String, u64), BTreeSet<String>> = BTreeMap::new();
    for (state, id) in states.iter().zip(ids) {
        for (path, (n, _)) in state {
            if path.rsplit(|b| *b == b'/').next() == Some(name) {
                out.entry((shown(path), "file".into(), content(*n).len() as u64))
                    .or_default()
                    .insert(id.clone());
            }
        }
        for dir in dirs(state).keys() {
            if !dir.is_empty() && dir.rsplit(|b| *b == b'/').next() == Some(name) {
                out.entry((shown(dir), "dir".into(), 0))
                    .or_default()
                    .insert(id.clone());
            }
        }
    }
    out
}

fn found(env: &Env, args: &[&str]) -> BTreeMap<(String, String, u64), BTreeSet<String>> {
    let mut all = vec!["find"];
    all.extend_from_slice(args);
    let mut out: BTreeMap<(String, String, u64), BTreeSet<String>> = BTreeMap::new();
    for m in env.json(&all).as_array().unwrap() {
        let key = (
            m["path"].as_str().unwrap().to_string(),
            m["type"].as_str().unwrap().to_string(),
            // A directory's size is the file system's business.
            if m["type"] == "dir" {
                0
            } else {
                m["size"].as_u64().unwrap()
            },
        );
        let ids: BTreeSet<String> = m["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect();
        // Files' times follow their contents and directories' are fixed: one entry per key.
        assert!(out.insert(key.clone(), ids).is_none(), "{key:?} twice");
    }
    out
}

/// What `diff` must report between two states: path → change.
fn expected_diff(before: &State, after: &State) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for path in PATHS {
        let change = match (before.get(path), after.get(path)) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some((a, _)), Some((b, _))) if a != b => "modified",
            (Some((_, m)), Some((_, n))) if m != n => "metadata",
            _ => continue,
        };
        out.insert(shown(path), change.to_string());
    }
    let (old, new) = (dirs(before), dirs(after));
    for dir in old.keys().chain(new.keys()) {
        match (old.contains_key(dir), new.contains_key(dir)) {
            (true, false) => out.insert(shown(dir), "removed".into()),
            (false, true) => out.insert(shown(dir), "added".into()),
            _ => None,
        };
    }
    out
}

fn diffed(env: &Env, a: &str, b: &str) -> BTreeMap<String, String> {
    let report = env.json(&["diff", a, b]);
    let mut out = BTreeMap::new();
    for c in report["changes"].as_array().unwrap() {
        let path = c["path"].as_str().unwrap().to_string();
        assert!(
            out.insert(path.clone(), c["change"].as_str().unwrap().to_string())
                .is_none(),
            "{path} twice"
        );
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn find_and_diff_equal_brute_force(states in states(6)) {
        let env = Env::with_repo(&[]);
        let ids = back_up(&env, &states);
        prop_assert_eq!(ids.len(), states.len());
        for name in [&b"a"[..], b"c", b"g", b"d", b"b\xff\xfe"] {
            let pattern = String::from_utf8_lossy(name).into_owned();
            if !name.is_ascii() {
                // A pattern is text: the name that is not UTF-8 is found by a glob.
                let got = found(&env, &["b*"]);
                prop_assert_eq!(got, expected_find(&states, &ids, name));
                continue;
            }
            prop_assert_eq!(found(&env, &[&pattern]), expected_find(&states, &ids, name), "find {}", pattern);
        }
        for pair in ids.windows(2).zip(states.windows(2)) {
            let ((a, b), (sa, sb)) = ((&pair.0[0], &pair.0[1]), (&pair.1[0], &pair.1[1]));
            prop_assert_eq!(diffed(&env, a, b), expected_diff(sa, sb));
        }
        let (first, last) = (&ids[0], &ids[ids.len() - 1]);
        prop_assert_eq!(diffed(&env, first, last), expected_diff(&states[0], &states[states.len() - 1]));
    }
}

#[test]
fn find_narrows_by_snapshot_and_newest_and_path_globs_match_whole_paths() {
    let env = Env::with_repo(&[]);
    let s = |items: &[(&[u8], u8)]| -> State {
        items
            .iter()
            .map(|(p, n)| (p.to_vec(), (*n, 0o644)))
            .collect()
    };
    let states = [
        s(&[(b"a", 1), (b"d/c", 1)]),
        s(&[(b"a", 1), (b"d/c", 2)]),
        s(&[(b"a", 2), (b"d/c", 2), (b"h/i", 1)]),
    ];
    let ids = back_up(&env, &states);
    let all = found(&env, &["a"]);
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[&("/src/a".into(), "file".into(), 13)],
        BTreeSet::from([ids[0].clone(), ids[1].clone()])
    );
    let newest = found(&env, &["a", "--newest", "1"]);
    assert_eq!(newest.len(), 1);
    assert_eq!(
        newest[&("/src/a".into(), "file".into(), 5000)],
        BTreeSet::from([ids[2].clone()])
    );
    let one = found(&env, &["c", "--snapshot", &ids[0][..8]]);
    assert_eq!(one.len(), 1);
    // A path glob matches whole paths: /src/d/* is d's entries, not a's.
    let paths: BTreeSet<String> = found(&env, &["/src/*/c", "/src/h"])
        .into_keys()
        .map(|k| k.0)
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from(["/src/d/c".to_string(), "/src/h".to_string()])
    );
    // Text output names the snapshots; nothing found is not an error.
    let text = env.ok(&["find", "i"]);
    assert!(
        text.contains("/src/h/i") && text.contains(&ids[2][..8]),
        "{text}"
    );
    assert_eq!(env.ok(&["find", "nothing-like-it"]), "");
    // A diff of one path: only what changed below it.
    let d = diffed_path(&env, &ids[0], &ids[2], "src/d");
    assert_eq!(
        d,
        BTreeMap::from([("/src/d/c".to_string(), "modified".to_string())])
    );
    let out = env.run(&["diff", &ids[0], &ids[2], "src/nowhere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in neither snapshot"));
    let text = env.ok(&["diff", &ids[0], &ids[2]]);
    assert!(
        text.contains("M    /src/a\n") && text.contains("+    /src/h/\n"),
        "{text}"
    );
    assert!(text.contains("Added:   13 B"), "{text}");
}

fn diffed_path(env: &Env, a: &str, b: &str, path: &str) -> BTreeMap<String, String> {
    let report = env.json(&["diff", a, b, path]);
    report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn equal_snapshots_diff_empty_without_reading_a_tree() {
    let env = Env::with_repo(&[]);
    let s: State = [(b"d/c".to_vec(), (1u8, 0o644))].into_iter().collect();
    back_up(&env, &[s]);
    // The same tree again, untouched: the first backup's reads did not move access times
    // (which snapshots record), so the trees are the same.
    env.ok(&["backup", "-q", "--force", env.path("src").to_str().unwrap()]);
    let ids = env.snapshot_ids();
    let report = env.json(&["diff", &ids[0], &ids[1]]);
    assert_eq!(report["changes"].as_array().unwrap().len(), 0);
    assert_eq!(report["summary"]["trees_skipped"], 1, "{report}");
    let _ = mtime(0);
}
