//! The mount and the stage over S3 (a real s3s-fs server on loopback): a snapshot copied out of
//! the mount equals its source in bytes and metadata, read through ranged GETs; a tree rsynced
//! into a stage becomes a snapshot that restores exactly.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::proxy::Proxy;
use common::s3::S3Server;
use common::{Env, assert_same_tree, make_tree};
use std::fs;
use std::process::Command;
use support::Mounted;

fn s3_env(server: &S3Server, name: &str) -> Env {
    let env = Env::at(server.location(name));
    env.ok(&[
        "init",
        "--kdf-time",
        "1",
        "--kdf-memory",
        "1",
        "--pack-size",
        "1MiB",
    ]);
    env
}

#[test]
fn a_snapshot_on_s3_mounts_and_copies_out_exactly() {
    let server = S3Server::start();
    let env = s3_env(&server, "mount");
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    // A small cache: reads stream through it, the whole tree is more than it holds.
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "4MiB"]);
    let out = env.path("copied");
    fs::create_dir_all(&out).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(mnt.dir.join("latest/src"))
        .arg(&out)
        .output()
        .unwrap();
    let cp_err = String::from_utf8_lossy(&cp.stderr);
    assert!(
        cp.status.success() || cp_err.lines().all(|l| l.contains("socket")),
        "{cp_err}"
    );
    assert_same_tree(&src, &out.join("src"));
    mnt.stop();
}

#[test]
fn a_tree_rsynced_into_a_stage_on_s3_becomes_an_exact_snapshot() {
    let server = S3Server::start();
    let env = s3_env(&server, "stage");
    let src = env.path("src");
    make_tree(&src);
    let mounted = Mounted::start(&env, "stage", &["--path", "/src", "--empty"]);
    let rsync = Command::new("rsync")
        .args(["-aHAX", "--modify-window=-1"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", mounted.dir.display()))
        .output()
        .expect("rsync runs (apt-get install rsync)");
    assert!(
        rsync.status.success(),
        "{}",
        String::from_utf8_lossy(&rsync.stderr)
    );
    let id = env
        .ok(&["stage", "--commit", mounted.dir.to_str().unwrap()])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    mounted.wait_exit();
    let target = env.path("restored");
    env.restore(&id, &target, &[]);
    assert_same_tree(&src, &target.join("src"));
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_mount_with_a_cache_dir_reads_again_from_it_and_survives_its_damage() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let env = Env::at(server.location_via(proxy.port, "cached"));
    env.ok(&[
        "init",
        "--kdf-time",
        "1",
        "--kdf-memory",
        "1",
        "--pack-size",
        "1MiB",
    ]);
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    let cache = env.path("disk-cache");
    let args = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "--cache-size",
        "4MiB",
    ];
    let big = fs::read(src.join("dir/big.bin")).unwrap();
    // Bytes the store sent to read the file through a fresh mount.
    let read_through_mount = || {
        let mnt = Mounted::start(&env, "mount", &args);
        let before = proxy.downstream_bytes();
        assert_eq!(
            fs::read(mnt.dir.join("latest/src/dir/big.bin")).unwrap(),
            big
        );
        let sent = proxy.downstream_bytes() - before;
        mnt.stop();
        sent
    };
    let first = read_through_mount();
    let second = read_through_mount();
    assert!(
        second * 4 < first,
        "the first read fetched {first} bytes, the second {second}"
    );
    // The user's directory holds cairn's own private one, and nothing else was touched.
    fs::write(cache.join("mine.txt"), b"the user's file").unwrap();
    let ours = cache.join("cairn-cache");
    let cached: Vec<_> = fs::read_dir(&ours)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().len() == 64)
        .collect();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&ours).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Every cached file damaged: reads still return the right bytes (from the store).
    assert!(cached.len() > 3, "{} files cached", cached.len());
    for entry in &cached {
        let mut bytes = fs::read(entry.path()).unwrap();
        assert!(bytes.len() >= 32, "a cache file starts with its checksum");
        // The checksum, or the last byte of what it covers: either way it no longer checks.
        let at = if bytes.len() > 32 { bytes.len() - 1 } else { 0 };
        bytes[at] ^= 1;
        fs::write(entry.path(), bytes).unwrap();
    }
    read_through_mount();
    assert_eq!(
        fs::read(cache.join("mine.txt")).unwrap(),
        b"the user's file"
    );
}
