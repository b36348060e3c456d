//! The mount and the stage over S3 (a real s3s-fs server on loopback): a snapshot copied out of
//! the mount equals its source in bytes and metadata, read through ranged GETs; a tree rsynced
//! into a stage becomes a snapshot that restores exactly. Behind a proxy that delays every
//! request (issue 23), a walk through the mount costs a few requests, not one per file or
//! directory, within the cache's memory, and damage is still reported by the file it hits.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::proxy::{Proxy, Shaping};
use common::s3::S3Server;
use common::{Env, assert_same_tree, make_tree, pseudo_random};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{Mounted, peak_rss_kib};

/// A repository initialised at `location` (cheap key derivation, packs of `pack_size`).
fn init_at(location: String, pack_size: &str) -> Env {
    let env = Env::at(location);
    env.ok(&[
        "init",
        "--kdf-time",
        "1",
        "--kdf-memory",
        "1",
        "--pack-size",
        pack_size,
    ]);
    env
}

fn s3_env(server: &S3Server, name: &str) -> Env {
    init_at(server.location(name), "1MiB")
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
    support::stage::rsync(&["-aHAX"], &src, &mounted.dir);
    let id = support::stage::commit(&env, mounted);
    let target = env.path("restored");
    env.restore(&id, &target, &[]);
    assert_same_tree(&src, &target.join("src"));
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_mount_with_a_cache_dir_reads_again_from_it_and_survives_its_damage() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let env = init_at(server.location_via(proxy.port, "cached"), "1MiB");
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

/// A repository on the S3 server reached through a proxy whose link has a round trip of
/// `rtt_ms` (small in tests, so they stay short), with `tree` backed up into it.
fn remote_repo(
    name: &str,
    rtt_ms: u64,
    tree: impl FnOnce(&Path),
) -> (S3Server, Proxy, Env, PathBuf) {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let env = init_at(server.location_via(proxy.port, name), "4MiB");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    proxy.shape(Shaping {
        rtt: Duration::from_millis(rtt_ms),
        bytes_per_sec: 0,
    });
    (server, proxy, env, src)
}

/// `count` small files of 200 to 3,000 bytes in `dir`.
fn small_files(dir: &Path, count: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..count {
        let len = 200 + (i * 7919) % 2800;
        fs::write(
            dir.join(format!("f{i:04}.txt")),
            pseudo_random(i, len as usize),
        )
        .unwrap();
    }
}

/// `cp -a` of `from` into a new directory `to`: cp's stderr lines.
fn cp_a(from: &Path, to: &Path) -> Vec<String> {
    fs::create_dir_all(to).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    String::from_utf8_lossy(&cp.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_directory_of_a_thousand_small_files_comes_out_of_a_remote_mount_in_a_few_requests() {
    let (_server, proxy, env, src) =
        remote_repo("small", 5, |src| small_files(&src.join("many"), 1000));
    let mnt = Mounted::start(&env, "mount", &[]);
    let before = proxy.requests();
    let out = env.path("out");
    let errors = cp_a(&mnt.dir.join("latest/src/many"), &out);
    let made = proxy.requests() - before;
    assert!(errors.is_empty(), "{errors:?}");
    assert_same_tree(&src.join("many"), &out.join("many"));
    assert!(
        made < 20,
        "{made} requests for 1,000 files: {:#?}",
        proxy.request_lines(before)
    );
    mnt.stop();
}

#[test]
fn a_tree_of_a_hundred_directories_is_walked_in_a_few_requests_per_level() {
    let (_server, proxy, env, src) = remote_repo("dirs", 5, |src| {
        for a in 0..4 {
            for b in 0..5 {
                for c in 0..4 {
                    let dir = src.join(format!("t/a{a}/b{b}/c{c}"));
                    fs::create_dir_all(&dir).unwrap();
                    fs::write(dir.join("leaf"), format!("{a}{b}{c}")).unwrap();
                }
            }
        }
    });
    let mnt = Mounted::start(&env, "mount", &[]);
    // The path down to t/ first, then the walk of t/ and its 104 directories on 3 levels.
    assert!(mnt.dir.join("latest/src/t").is_dir());
    let before = proxy.requests();
    let found = Command::new("find")
        .arg(mnt.dir.join("latest/src/t"))
        .output()
        .unwrap();
    let made = proxy.requests() - before;
    assert!(found.status.success());
    let listed = String::from_utf8_lossy(&found.stdout).lines().count();
    assert_eq!(
        listed,
        1 + 4 + 20 + 80 + 80,
        "t, its directories and the leaves"
    );
    assert!(
        made < 3 * 3,
        "{made} requests for 3 levels: {:#?}",
        proxy.request_lines(before)
    );
    mnt.stop();
    // `ls -lR` of the same tree through a fresh mount sees what the source has.
    let mnt = Mounted::start(&env, "mount", &[]);
    let out = env.path("copied");
    assert!(cp_a(&mnt.dir.join("latest/src/t"), &out).is_empty());
    assert_same_tree(&src.join("t"), &out.join("t"));
    mnt.stop();
}

#[test]
fn a_damaged_pack_read_ahead_fails_only_its_file_and_names_it() {
    let (server, _proxy, env, src) =
        remote_repo("damaged", 1, |src| small_files(&src.join("many"), 300));
    let pack = server
        .objects("damaged")
        .into_iter()
        .filter(|o| o.starts_with("data/"))
        .max_by_key(|o| {
            fs::metadata(server.object_path("damaged", o))
                .unwrap()
                .len()
        })
        .unwrap();
    let path = server.object_path("damaged", &pack);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    // Beyond what parity heals: this pack has none.
    let parity = pack.replacen("data/", "parity/", 1);
    fs::remove_file(server.object_path("damaged", &parity)).unwrap();

    let mnt = Mounted::start(&env, "mount", &[]);
    let out = env.path("out");
    let errors = cp_a(&mnt.dir.join("latest/src/many"), &out);
    // The flip lands in one solid group (small files are sealed together, about half a 1 MiB
    // pack of them): its files fail, each with one error, and every other file is read whole.
    assert!(!errors.is_empty(), "no file failed");
    assert!(
        errors.iter().all(|e| e.contains("Input/output error")),
        "{errors:?}"
    );
    let failed: Vec<String> = errors
        .iter()
        .map(|e| {
            let path = e.split('\'').nth(1).unwrap();
            Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let failed_bytes: u64 = failed
        .iter()
        .map(|name| fs::metadata(src.join("many").join(name)).unwrap().len())
        .sum();
    assert!(
        failed_bytes <= (512 + 128) << 10,
        "{} files of {failed_bytes} bytes failed: more than one group holds",
        failed.len()
    );
    for entry in fs::read_dir(src.join("many")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !failed.contains(&name) {
            assert_eq!(
                fs::read(entry.path()).unwrap(),
                fs::read(out.join("many").join(&name)).unwrap(),
                "{name}"
            );
        }
    }
    let log = mnt.log();
    let pack_id = pack.rsplit('/').next().unwrap();
    assert!(
        log.contains(&format!("src/many/{}", failed[0])) && log.contains(pack_id),
        "{log}"
    );
    mnt.stop();
}

#[test]
fn reading_ahead_of_a_remote_copy_stays_within_the_cache_budget() {
    let (_server, _proxy, env, src) = remote_repo("budget", 2, |src| {
        for d in 0..4 {
            let dir = src.join(format!("d{d}"));
            small_files(&dir, 200);
            for f in 0..6 {
                let data = pseudo_random(100 * d + f, 3 << 20);
                fs::write(dir.join(format!("big{f}.bin")), data).unwrap();
            }
        }
    });
    let mnt = Mounted::start(&env, "mount", &["--cache-size", "16MiB"]);
    let out = env.path("out");
    assert!(cp_a(&mnt.dir.join("latest/src"), &out).is_empty());
    assert_same_tree(&src, &out.join("src"));
    let peak_mib = peak_rss_kib(mnt.pid()) / 1024;
    assert!(
        peak_mib <= 16 + 64,
        "peak RSS {peak_mib} MiB with a 16 MiB cache"
    );
    mnt.stop();
}
