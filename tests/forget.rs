//! `cairn forget` through the real binary: policies per group, named snapshots, dry runs, JSON,
//! and that only snapshot files go (the data stays; check passes; the rest restores).

mod common;

use common::{Env, assert_same_tree};
use std::fs;

/// A repository with `n` snapshots of `src` (changed between them) and one of `other`.
fn repo_with_snapshots(n: usize) -> (Env, std::path::PathBuf) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        fs::write(src.join("file"), format!("version {i}")).unwrap();
        env.ok(&["backup", src.to_str().unwrap()]);
    }
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("f"), b"other").unwrap();
    env.ok(&["backup", other.to_str().unwrap()]);
    (env, src)
}

#[test]
fn keep_last_applies_to_each_group_and_a_dry_run_removes_nothing() {
    let (env, src) = repo_with_snapshots(5);
    let before = env.snapshot_ids();
    assert_eq!(before.len(), 6);
    let out = env.ok(&["forget", "--keep-last", "2", "--dry-run"]);
    assert!(out.contains("would remove 3 snapshots"), "{out}");
    assert!(
        out.contains("keep 2 snapshots") && out.contains("keep 1 snapshots"),
        "{out}"
    );
    assert_eq!(env.snapshot_ids(), before);

    let out = env.ok(&["forget", "--keep-last", "2"]);
    assert!(out.contains("removed 3 snapshots"), "{out}");
    // The two newest of src (ids listed oldest first) and the one of other remain.
    let after = env.snapshot_ids();
    assert_eq!(
        after,
        [before[3].clone(), before[4].clone(), before[5].clone()]
    );
    env.ok(&["check", "--read-data"]);
    let target = env.path("restored");
    env.restore(&before[4][..8], &target, &[]);
    assert_same_tree(&src, &target.join("src"));
}

#[test]
fn named_snapshots_are_removed_and_json_lists_every_reason() {
    let (env, _src) = repo_with_snapshots(3);
    let before = env.snapshot_ids();
    env.ok(&["forget", &before[0][..8]]);
    assert_eq!(env.snapshot_ids(), before[1..]);

    let report = env.json(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-daily",
        "1",
        "--dry-run",
    ]);
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let src_group = groups
        .iter()
        .find(|g| g["keep"].as_array().unwrap().len() + g["remove"].as_array().unwrap().len() == 2)
        .unwrap();
    let newest = &src_group["keep"][0];
    assert_eq!(
        newest["reasons"],
        serde_json::json!(["last snapshot", "daily snapshot"])
    );
    assert_eq!(report["removed"].as_array().unwrap().len(), 1);
    assert_eq!(env.snapshot_ids().len(), 3, "a dry run removed something");
}

#[test]
fn filters_limit_what_a_policy_touches_and_an_empty_policy_removes_nothing() {
    let (env, _src) = repo_with_snapshots(3);
    let other = env.path("other");
    let out = env.ok(&[
        "forget",
        "--keep-last",
        "1",
        "--path",
        other.to_str().unwrap(),
    ]);
    assert!(out.contains("removed 0 snapshots"), "{out}");
    assert_eq!(env.snapshot_ids().len(), 4);
    let out = env.run(&["forget"]);
    assert!(out.status.success());
    assert_eq!(env.snapshot_ids().len(), 4);
    let out = env.run(&["forget", "latest", "--keep-last", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        env.run(&["forget", "--keep-within", "1w"]).status.code(),
        Some(2)
    );
}

#[test]
fn stats_shows_what_forgotten_snapshots_left_unused() {
    let (env, _src) = repo_with_snapshots(3);
    let before = env.json(&["stats"]);
    assert_eq!(before["usage"]["unused_blobs"], 0, "{before}");
    assert_eq!(before["usage"]["unused_packs"], 0, "{before}");
    env.ok(&["forget", "--keep-last", "1"]);
    let after = env.json(&["stats"]);
    // Two versions of the file (a data blob each) and their two trees each (src/ and the root).
    assert_eq!(after["usage"]["unused_blobs"], 6, "{after}");
    assert!(
        after["usage"]["unused_bytes"].as_u64().unwrap() > 0,
        "{after}"
    );
    let text = env.ok(&["stats"]);
    assert!(text.contains("unused:           6 blobs"), "{text}");
}
