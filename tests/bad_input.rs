//! Bad input through the real binary: every case is one clear line on stderr, the documented
//! exit code, no panic, and no partial snapshot.

mod common;

use common::{Env, is_root, pseudo_random};
use std::fs;
use std::process::Output;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<_> = err.lines().filter(|l| l.starts_with("cairn:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
}

fn backed_up() -> Env {
    common::backed_up_tree().0
}

#[test]
fn wrong_password_exits_12() {
    let env = Env::with_repo(&[]);
    let out = env
        .command(&["snapshots"])
        .env("CAIRN_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_one_line_error(&out, 12, "wrong password");
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    assert_one_line_error(&env.run(&["snapshots"]), 10, "no repository at");
}

#[test]
fn init_over_an_existing_repository_is_refused() {
    let env = Env::with_repo(&[]);
    assert_one_line_error(
        &env.run(&["init", "--kdf-time", "1", "--kdf-memory", "1"]),
        1,
        "already exists",
    );
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::with_repo(&[]);
    assert_eq!(env.run(&["backup"]).status.code(), Some(2));
    assert_eq!(env.run(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn key_file_that_is_not_json_is_named() {
    let env = Env::with_repo(&[]);
    let key = env.repo_files("keys").remove(0);
    fs::write(&key, b"\x00\x01 not json").unwrap();
    let name = key.file_name().unwrap().to_str().unwrap().to_string();
    assert_one_line_error(&env.run(&["snapshots"]), 1, &name);
}

#[test]
fn path_that_does_not_exist_fails_without_a_snapshot() {
    let env = Env::with_repo(&[]);
    let missing = env.path("not-there");
    assert_one_line_error(
        &env.run(&["backup", missing.to_str().unwrap()]),
        1,
        "not-there",
    );
    assert!(env.repo_files("snapshots").is_empty());
}

#[test]
fn bit_flipped_pack_names_pack_blob_and_file_and_restores_the_rest() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("victim"), pseudo_random(1, 3 << 20)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("bystander"), b"intact").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let packs = env.repo_files("data");
    let victim_pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(victim_pack).unwrap();
    bytes[1000] ^= 0x20;
    fs::write(victim_pack, bytes).unwrap();
    let target = env.path("restored");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let pack_id = victim_pack.file_name().unwrap().to_str().unwrap();
    assert_one_line_error(&out, 1, pack_id);
    let err = stderr(&out);
    assert!(err.contains("blob ") && err.contains("victim"), "{err}");
    assert_eq!(fs::read(target.join("src/bystander")).unwrap(), b"intact");
}

#[test]
fn truncated_pack_is_reported_by_name() {
    let env = backed_up();
    let packs = env.repo_files("data");
    let pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let len = fs::metadata(pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let target = env.path("restored");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_one_line_error(&out, 1, pack.file_name().unwrap().to_str().unwrap());
}

#[test]
fn damaged_index_segment_is_named() {
    let env = backed_up();
    let index = env.repo_files("index").remove(0);
    let mut bytes = fs::read(&index).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&index, bytes).unwrap();
    let out = env.run(&["ls", "latest"]);
    assert_one_line_error(&out, 1, index.file_name().unwrap().to_str().unwrap());
}

#[test]
fn damaged_and_truncated_snapshot_files_are_named() {
    let env = backed_up();
    let snap = env.repo_files("snapshots").remove(0);
    let bytes = fs::read(&snap).unwrap();
    let name = snap.file_name().unwrap().to_str().unwrap().to_string();
    fs::write(&snap, &bytes[..bytes.len() - 3]).unwrap();
    assert_one_line_error(&env.run(&["snapshots"]), 1, &name);
    fs::write(&snap, b"").unwrap();
    assert_one_line_error(&env.run(&["snapshots"]), 1, &name);
}

#[test]
fn tampered_config_is_refused() {
    let env = Env::with_repo(&[]);
    let config = env.repo().join("config");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace("\"compression\": 3", "\"compression\": 9");
    fs::write(&config, text).unwrap();
    assert_one_line_error(&env.run(&["snapshots"]), 1, "config");
}

#[test]
fn full_disk_fails_cleanly_and_leaves_no_snapshot() {
    if !is_root() {
        eprintln!(
            "needs root to mount a small tmpfs; the faulty-backend test covers ENOSPC without it"
        );
        return;
    }
    let env = Env::new();
    let repo = env.repo();
    fs::create_dir_all(&repo).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let result = std::panic::catch_unwind(|| {
        env.ok(&["init", "--kdf-time", "1", "--kdf-memory", "1"]);
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("big"), pseudo_random(5, 6 << 20)).unwrap();
        let out = env.run(&["backup", src.to_str().unwrap()]);
        assert_one_line_error(&out, 1, "No space left on device");
        assert!(env.repo_files("snapshots").is_empty());
    });
    std::process::Command::new("umount")
        .arg(&repo)
        .status()
        .unwrap();
    result.unwrap();
}
