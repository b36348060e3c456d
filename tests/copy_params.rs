//! `init --copy-params-from` (issue 15, first part): a repository made with another's chunker
//! and blob-id parameters chunks and names the same data the same way — so copies between the
//! two de-duplicate — while its password, encryption key and config are its own.

mod common;

use common::{Env, pseudo_random};
use std::fs;

fn tree_of_latest(env: &Env, repo: &std::path::Path, password: &str) -> String {
    let out = env
        .command(&[
            "--json",
            "-r",
            repo.to_str().unwrap(),
            "cat",
            "snapshot",
            "latest",
        ])
        .env("CAIRN_PASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    snapshot["tree"].as_str().unwrap().to_string()
}

#[test]
fn a_repository_made_with_copied_params_names_data_alike_with_keys_of_its_own() {
    let a = Env::with_repo(&[
        "--chunk-min",
        "64KiB",
        "--chunk-avg",
        "128KiB",
        "--chunk-max",
        "256KiB",
    ]);
    let src = a.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), pseudo_random(7, 3 << 20)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    // Twice: the first backup's reads set access times, which trees record.
    a.ok(&["backup", src.to_str().unwrap()]);
    a.ok(&["backup", src.to_str().unwrap()]);
    let b = a.path("b");
    let init = |extra: &[&str], from_password: &str| {
        let mut args = vec![
            "init",
            "-r",
            b.to_str().unwrap(),
            "--kdf-time",
            "1",
            "--kdf-memory",
            "1",
        ];
        args.extend_from_slice(extra);
        a.command(&args)
            .env("CAIRN_PASSWORD", "another password")
            .env("CAIRN_FROM_PASSWORD", from_password)
            .output()
            .unwrap()
    };
    let from = a.repo();
    let from = from.to_str().unwrap();

    // A wrong password for the source: nothing is made.
    let out = init(&["--copy-params-from", from], "wrong");
    assert_eq!(
        out.status.code(),
        Some(12),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!b.join("config").exists());
    // Chunk sizes come from the source: giving them too is refused.
    let out = init(
        &["--copy-params-from", from, "--chunk-min", "1MiB"],
        "correct horse",
    );
    assert_eq!(out.status.code(), Some(2));

    let out = init(&["--copy-params-from", from], "correct horse");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup = a
        .command(&["-r", b.to_str().unwrap(), "backup", src.to_str().unwrap()])
        .env("CAIRN_PASSWORD", "another password")
        .output()
        .unwrap();
    assert!(backup.status.success());
    // The same trees and chunks: the same root tree id in both repositories.
    assert_eq!(
        tree_of_latest(&a, &b, "another password"),
        tree_of_latest(&a, &a.repo(), "correct horse")
    );
    // Its own password and keys: the source's password does not open it, and its sealed
    // files are not the source's.
    let out = a
        .command(&["-r", b.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    let config_a: serde_json::Value =
        serde_json::from_str(&a.ok(&["--json", "cat", "config"])).unwrap();
    let out = a
        .command(&["--json", "-r", b.to_str().unwrap(), "cat", "config"])
        .env("CAIRN_PASSWORD", "another password")
        .output()
        .unwrap();
    let config_b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(config_a["id"], config_b["id"]);
    for param in ["chunk_min", "chunk_avg", "chunk_max", "tree_split_size"] {
        assert_eq!(config_a[param], config_b[param], "{param}");
    }
    assert_eq!(config_b["chunk_min"], 64 << 10);
}
