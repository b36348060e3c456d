//! cairn on a real S3 server (s3s-fs on loopback), through the command line: the whole cycle,
//! and the network faults of the field reports injected by a proxy between cairn and the
//! server — an outage near the end of a long backup (the re-run must send less than 10 % of
//! what the first run sent), resets, stalls, refusals, and a bit flipped in an upload.

mod common;

use common::proxy::Proxy;
use common::s3::S3Server;
use common::{Env, assert_same_tree, make_tree, pseudo_random};
use std::path::Path;
use std::time::Duration;

/// An initialised repository on `location`, with small packs so a backup makes many.
fn s3_repo(location: String, retries: &str) -> Env {
    let env = Env::at(location);
    env.ok(&[
        "init",
        "--kdf-time",
        "1",
        "--kdf-memory",
        "1",
        "--pack-size",
        "1MiB",
        "--retries",
        retries,
    ]);
    env
}

/// `count` incompressible files of 1 MiB under `root`.
fn random_tree(root: &Path, count: u64) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..count {
        std::fs::write(
            root.join(format!("f{i:03}")),
            pseudo_random(100 + i, 1 << 20),
        )
        .unwrap();
    }
}

#[test]
fn the_whole_cycle_runs_on_s3() {
    let server = S3Server::start();
    let env = s3_repo(server.location("cycle"), "5");
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    std::fs::write(src.join("small.txt"), b"changed\n").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(env.snapshot_ids().len(), 2);
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join(src.file_name().unwrap()));
    let checked = env.ok(&["check", "--read-data"]);
    assert!(checked.contains("no errors"), "{checked}");
    env.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(env.snapshot_ids().len(), 1);
    env.ok(&["check", "--read-data"]);
    // The objects are in the bucket under the repository's prefix, as the format names them.
    let objects = server.objects("cycle");
    assert!(objects.iter().any(|o| o == "config"), "{objects:?}");
    assert!(
        objects.iter().any(|o| o.starts_with("data/")),
        "{objects:?}"
    );
}

#[test]
fn a_wrong_s3_location_or_credentials_is_one_line_and_an_exit_code() {
    let server = S3Server::start();
    let env = Env::at("s3:http://127.0.0.1/".into());
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s3:http(s)://HOST[:PORT]/BUCKET"), "{err}");
    let env = Env::at(server.location("nothing-here"));
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10), "no repository there");
    let env = s3_repo(server.location("creds"), "1");
    let out = env
        .command(&["snapshots"])
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn an_outage_near_the_end_fails_cleanly_and_the_rerun_sends_under_a_tenth() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let src = tempfile::tempdir().unwrap();
    random_tree(src.path(), 48);
    let source = src.path().to_str().unwrap();

    // How much a whole backup sends, measured on a repository of its own.
    let clean = s3_repo(server.location_via(proxy.port, "clean"), "2");
    let before = proxy.upstream_bytes();
    clean.ok(&["--connections", "2", "backup", source]);
    let whole = proxy.upstream_bytes() - before;

    // The network goes down when 95 % has been sent and stays down past the retries.
    let env = s3_repo(server.location_via(proxy.port, "cut"), "2");
    let before = proxy.upstream_bytes();
    proxy.cut_after(whole * 95 / 100);
    let out = env
        .command(&["--connections", "2", "backup", source])
        .env("CAIRN_IO_TIMEOUT_SECS", "2")
        .output()
        .unwrap();
    let first = proxy.upstream_bytes() - before;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .lines()
            .last()
            .map(|l| l.starts_with("cairn: ")),
        Some(true)
    );
    proxy.restore();
    assert!(
        env.snapshot_ids().is_empty(),
        "a failed backup left a snapshot"
    );

    let before = proxy.upstream_bytes();
    env.ok(&["--connections", "2", "backup", source]);
    let rerun = proxy.upstream_bytes() - before;
    assert!(
        rerun * 10 < first,
        "the re-run sent {rerun} bytes, the first run {first} (a whole backup {whole})"
    );
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(src.path(), &out.join(src.path().file_name().unwrap()));
    env.ok(&["check", "--read-data"]);
}

#[test]
fn resets_stalls_and_refusals_are_retried_through() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let env = s3_repo(server.location_via(proxy.port, "flaky"), "8");
    let src = env.path("src");
    random_tree(&src, 12);
    proxy.reset_connections(300 << 10, 4);
    proxy.refuse_for(Duration::from_millis(1500));
    let run = std::thread::scope(|scope| {
        let backup = scope.spawn(|| {
            env.command(&["backup", src.to_str().unwrap()])
                .env("CAIRN_IO_TIMEOUT_SECS", "1")
                .output()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(2000));
        proxy.stall_for(Duration::from_millis(2500));
        backup.join().unwrap()
    });
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    proxy.restore();
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join(src.file_name().unwrap()));
    env.ok(&["check", "--read-data"]);
}

#[test]
fn a_bit_flipped_on_the_wire_never_reaches_a_pack_unnoticed() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let env = s3_repo(server.location_via(proxy.port, "flip"), "3");
    let src = env.path("src");
    random_tree(&src, 6);
    // Deep in the body of the first large upload (a pack): the server rejects it (Content-MD5)
    // after storing it; the upload is repeated and replaces it.
    proxy.flip_one_bit_after(512 << 10);
    let out = env.run(&["backup", src.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(proxy.flips(), 1);
    assert!(
        log.contains("BadDigest") && log.contains("retry 1"),
        "{log}"
    );
    let checked = env.ok(&["check", "--read-data"]);
    assert!(checked.contains("no errors"), "{checked}");
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join(src.file_name().unwrap()));
}
