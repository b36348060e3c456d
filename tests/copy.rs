//! `cairn copy --from SRC`: between local repositories and onto S3; filters; re-runs skip what
//! is complete; an interruption leaves no partial snapshot and reports nothing it did not
//! finish; a damaged source blob stops that snapshot's copy naming the blob, pack and files;
//! repositories with other parameters are refused naming `--copy-params-from`.

mod common;

use common::proxy::Proxy;
use common::s3::S3Server;
use common::{Env, assert_same_tree, make_tree, pseudo_random};
use std::fs;
use std::os::unix::fs::PermissionsExt;

const SOURCE_PASSWORD: &str = "correct horse";

/// A destination at `location` made with the source's parameters, with its own password.
fn dest_like(source: &Env, location: Option<String>) -> Env {
    let dest = match location {
        Some(location) => Env::at(location),
        None => Env::new(),
    };
    let out = dest
        .command(&[
            "init",
            "--kdf-time",
            "1",
            "--kdf-memory",
            "1",
            "--pack-size",
            "1MiB",
            "--copy-params-from",
            source.repo().to_str().unwrap(),
        ])
        .env("CAIRN_FROM_PASSWORD", SOURCE_PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dest
}

/// Runs `copy --from SOURCE ARGS` into `dest`.
fn copy(dest: &Env, source: &Env, args: &[&str]) -> std::process::Output {
    let from = source.repo();
    let mut all = vec!["--json", "copy", "--from", from.to_str().unwrap()];
    all.extend_from_slice(args);
    dest.command(&all)
        .env("CAIRN_FROM_PASSWORD", SOURCE_PASSWORD)
        .output()
        .unwrap()
}

fn copied(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Each destination snapshot restores to the tree its source snapshot restores to.
fn assert_copies_restore_alike(source: &Env, dest: &Env) {
    let snapshots = dest.json(&["snapshots"]);
    for snap in snapshots.as_array().unwrap() {
        let copy = snap["id"].as_str().unwrap();
        let from = snap["copied_from"]
            .as_str()
            .expect("a copy records its source");
        let (a, b) = (
            source.path(&format!("r-{from}")),
            dest.path(&format!("r-{copy}")),
        );
        source.restore(from, &a, &[]);
        dest.restore(copy, &b, &[]);
        assert_same_tree(&a, &b);
    }
}

fn source_with_snapshots() -> (Env, std::path::PathBuf) {
    let source = Env::with_repo(&["--pack-size", "1MiB"]);
    let src = source.path("src");
    make_tree(&src);
    source.ok(&["backup", "--host", "alpha", src.to_str().unwrap()]);
    fs::write(src.join("dir/new.bin"), pseudo_random(9, 3 << 20)).unwrap();
    source.ok(&[
        "backup",
        "--host",
        "alpha",
        "--tag",
        "t1",
        src.to_str().unwrap(),
    ]);
    source.ok(&["backup", "--host", "beta", src.to_str().unwrap()]);
    (source, src)
}

#[test]
fn copies_between_local_repositories_with_filters_and_reruns_skip() {
    let (source, _src) = source_with_snapshots();
    let dest = dest_like(&source, None);
    let first = copied(&copy(&dest, &source, &["--host", "alpha"]));
    let statuses: Vec<&str> = first
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["copied", "copied"]);
    assert_eq!(dest.snapshot_ids().len(), 2);
    assert_copies_restore_alike(&source, &dest);
    // A re-run sends nothing and says so; a wider one copies only the rest.
    let again = copied(&copy(&dest, &source, &["--host", "alpha"]));
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "already_copied")
    );
    let all = copied(&copy(&dest, &source, &[]));
    let news: Vec<&serde_json::Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "copied")
        .collect();
    assert_eq!(news.len(), 1);
    // The third snapshot shares all its content with the second: at most a few directory
    // trees (times changed by the reads) were new.
    assert!(news[0]["new_bytes"].as_u64().unwrap() < 64 << 10, "{all}");
    assert_eq!(dest.snapshot_ids().len(), 3);
    let tagged = copied(&copy(&dest, &source, &["--tag", "t1"]));
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    dest.ok(&["check", "--read-data"]);
}

#[test]
fn copies_onto_s3_and_an_interrupted_copy_is_never_reported_or_left_partial() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let source = Env::with_repo(&["--pack-size", "1MiB"]);
    let src = source.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24u64 {
        fs::write(src.join(format!("f{i}")), pseudo_random(40 + i, 1 << 20)).unwrap();
    }
    source.ok(&["backup", src.to_str().unwrap()]);
    for i in 24..40u64 {
        fs::write(src.join(format!("f{i}")), pseudo_random(40 + i, 1 << 20)).unwrap();
    }
    source.ok(&["backup", src.to_str().unwrap()]);

    let dest = dest_like(&source, Some(server.location_via(proxy.port, "copy")));
    // The network goes down after about half of everything.
    proxy.cut_after(20 << 20);
    let out = dest
        .command(&["--json", "copy", "--from", source.repo().to_str().unwrap()])
        .env("CAIRN_FROM_PASSWORD", SOURCE_PASSWORD)
        .env("CAIRN_IO_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    let first_sent = proxy.upstream_bytes();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    proxy.restore();
    // Whatever the destination has is complete, and nothing else was claimed.
    let claimed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let present = dest.snapshot_ids();
    for entry in claimed.as_array().unwrap() {
        let copy = entry["copy"].as_str().unwrap();
        assert!(
            present.iter().any(|p| p == copy),
            "reported {copy}, not there"
        );
    }
    assert_eq!(claimed.as_array().unwrap().len(), present.len());
    assert!(present.len() <= 1);
    assert_copies_restore_alike(&source, &dest);

    let rerun = copied(&copy(&dest, &source, &[]));
    let total_sent = proxy.upstream_bytes();
    assert_eq!(dest.snapshot_ids().len(), 2, "{rerun}");
    assert_copies_restore_alike(&source, &dest);
    dest.ok(&["check", "--read-data"]);
    // The re-run sent the rest, not everything again (40 MiB of packs in all).
    assert!(
        total_sent - first_sent < 30 << 20,
        "re-run sent {} bytes after {first_sent}",
        total_sent - first_sent
    );
}

/// Flips a byte `at` bytes into every data pack of `env`'s repository (the large packs; tree
/// packs are small here).
fn damage_packs(env: &Env, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let packs = env.id_files("data");
    let data = packs
        .iter()
        .filter(|p| fs::metadata(p).unwrap().len() > 512 << 10);
    for pack in data {
        fs::set_permissions(pack, fs::Permissions::from_mode(0o600)).unwrap();
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(pack)
            .unwrap();
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[byte[0] ^ 0x40]).unwrap();
    }
}

#[test]
fn a_damaged_source_blob_stops_the_copy_naming_blob_pack_and_file() {
    // Without parity (with it, the copy reads the blob from the healed pack).
    let source = Env::with_repo(&["--pack-size", "1MiB", "--parity", "off"]);
    let src = source.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("precious.bin"), pseudo_random(3, 2 << 20)).unwrap();
    source.ok(&["backup", src.to_str().unwrap()]);
    let dest = dest_like(&source, None);
    damage_packs(&source, 100);
    let out = copy(&dest, &source, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("damaged") && err.contains("precious.bin"),
        "{err}"
    );
    assert!(err.contains("blob ") && err.contains(" in pack "), "{err}");
    assert!(dest.snapshot_ids().is_empty());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("\"copied\""));
}

#[test]
fn repositories_with_other_parameters_are_refused_naming_copy_params_from() {
    let (source, _) = source_with_snapshots();
    let dest = Env::with_repo(&[]);
    let out = copy(&dest, &source, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--copy-params-from"), "{err}");
    assert!(dest.snapshot_ids().is_empty());
}

#[test]
fn a_wrong_source_password_is_exit_12_and_copies_nothing() {
    let (source, _) = source_with_snapshots();
    let dest = dest_like(&source, None);
    let out = dest
        .command(&["copy", "--from", source.repo().to_str().unwrap()])
        .env("CAIRN_FROM_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(dest.snapshot_ids().is_empty());
}

#[test]
fn a_repaired_copy_is_copied_again_not_taken_for_complete() {
    let source = Env::with_repo(&["--pack-size", "1MiB"]);
    let src = source.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("kept.txt"),
        b"small and in a tree pack? no: a data pack\n",
    )
    .unwrap();
    fs::write(src.join("big.bin"), pseudo_random(5, 2 << 20)).unwrap();
    source.ok(&["backup", src.to_str().unwrap()]);
    let dest = dest_like(&source, None);
    copied(&copy(&dest, &source, &[]));
    // The copy is damaged beyond what parity heals (it has none left) and repaired: what
    // remains is no longer a complete copy.
    damage_packs(&dest, 100);
    fs::remove_dir_all(dest.repo().join("parity")).unwrap();
    let _ = dest.run(&["repair", "packs"]);
    dest.ok(&["repair", "snapshots", "--forget"]);
    let again = copied(&copy(&dest, &source, &[]));
    assert_eq!(again[0]["status"], "copied", "{again}");
    let latest = dest.json(&["snapshots"]);
    let complete = latest
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == again[0]["copy"])
        .unwrap();
    let out = dest.path("out");
    dest.restore(complete["id"].as_str().unwrap(), &out, &[]);
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn a_source_snapshot_that_does_not_read_fails_the_run_after_the_rest_is_copied() {
    let (source, _) = source_with_snapshots();
    let dest = dest_like(&source, None);
    let files = source.id_files("snapshots");
    fs::set_permissions(&files[0], fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&files[0], b"not a snapshot").unwrap();
    let out = copy(&dest, &source, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(err.lines().last().unwrap().contains(name), "{err}");
    assert_eq!(dest.snapshot_ids().len(), 2);
}

/// Issue 22, item 8: entries whose names readers refuse (`..`, a `/` inside) are left out of
/// the copy, each named, so the destination checks clean; the copy restores as its source does
/// and a re-run recognises it as complete.
#[test]
fn names_readers_refuse_are_left_out_of_a_copy_naming_each() {
    let source = Env::with_repo(&["--pack-size", "1MiB"]);
    let crafter = common::crafted::Crafter::new(&source);
    let inner = vec![
        crafter.file(b"kept", 0o644, b"kept below"),
        crafter.file(b"..", 0o644, b"climbs out"),
    ];
    let root = vec![
        crafter.file(b"good.txt", 0o644, b"fine"),
        crafter.file(b"..", 0o644, b"escape"),
        crafter.file(b"a/b", 0o644, b"slash"),
        crafter.dir(b"sub", 0o755, inner),
    ];
    crafter.commit(root);
    let dest = dest_like(&source, None);
    let report = copied(&copy(&dest, &source, &[]));
    assert_eq!(report[0]["status"], "copied", "{report}");
    let mut dropped: Vec<String> = report[0]["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    dropped.sort();
    assert_eq!(dropped, ["/\"..\"", "/\"a/b\"", "/sub/\"..\""], "{report}");
    let checked = dest.json(&["check", "--read-data"]);
    assert_eq!(
        checked["problems"].as_array().unwrap().len(),
        0,
        "{checked}"
    );
    assert_copies_restore_alike(&source, &dest);
    let again = copied(&copy(&dest, &source, &[]));
    assert_eq!(again[0]["status"], "already_copied", "{again}");
    // In text, each left-out entry is a warning line of its own.
    let other = dest_like(&source, None);
    let out = other
        .command(&["copy", "--from", source.repo().to_str().unwrap()])
        .env("CAIRN_FROM_PASSWORD", SOURCE_PASSWORD)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("left out").count(), 3, "{err}");
}
