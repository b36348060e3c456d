//! cairn on a real S3 server (s3s-fs on loopback), through the command line: the whole cycle,
//! and the network faults of the field reports injected by a proxy between cairn and the
//! server — an outage near the end of a long backup (the re-run must send less than 10 % of
//! what the first run sent), resets, stalls, refusals, and a bit flipped in an upload.

mod common;

use common::liar::{Liar, Lies};
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
    // Credentials typed into the location, a secret with a `/` in it: refused, and not shown.
    let env = Env::at("s3:https://AKIAEXAMPLE:wJal/rXUtnFEMI@s3.example/bucket".into());
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("credentials do not belong in the location"),
        "{err}"
    );
    assert!(
        !err.contains("wJal") && !err.contains("AKIAEXAMPLE"),
        "{err}"
    );
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
    // Nobody listening: the system's reason, once, in the one line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::at(format!("s3:http://127.0.0.1:{port}/bucket/repo"));
    let out = env.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("cairn:"))
        .unwrap_or_default();
    assert_eq!(line.matches("Connection refused").count(), 1, "{err}");
    for part in line.split(": ") {
        assert_eq!(line.matches(part).count(), 1, "{part:?} repeated in {line}");
    }
}

/// The `cairn:` line of a command that must fail with exit 1, with `extra` in its environment.
fn error_line(env: &Env, args: &[&str], extra: &[(&str, &str)]) -> String {
    let out = env
        .command(args)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("cairn:")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0].to_string()
}

/// A store on loopback that answers every request with `status`, `headers` and `body`, as AWS
/// answers a request for a bucket in another region.
fn fake_store(status: &str, headers: &str, body: &str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = format!(
        "HTTP/1.1 {status}\r\n{headers}content-type: application/xml\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            // The request's head (HEAD and GET have no body), read whole so that closing the
            // connection does not reset it under the answer.
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match std::io::Read::read(&mut client, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = std::io::Write::write_all(&mut client, answer.as_bytes());
        }
    });
    port
}

/// A missing bucket, an unknown key, a wrong secret, a bucket in another region and a store
/// nobody answers for each end in one line that names what to fix, the cause once.
#[test]
fn each_refusal_is_one_line_naming_what_to_fix() {
    let server = S3Server::start();
    let missing = Env::at(format!(
        "s3:http://127.0.0.1:{}/no-such-bucket/r",
        server.port
    ));
    let err = error_line(&missing, &["snapshots"], &[]);
    assert!(
        err.contains("bucket no-such-bucket does not exist"),
        "{err}"
    );
    assert_eq!(err.matches("NoSuchBucket").count(), 1, "{err}");

    let env = s3_repo(server.location("creds"), "1");
    let err = error_line(&env, &["snapshots"], &[("AWS_SECRET_ACCESS_KEY", "wrong")]);
    assert!(err.contains("check AWS_SECRET_ACCESS_KEY"), "{err}");
    assert_eq!(err.matches("SignatureDoesNotMatch").count(), 1, "{err}");
    let err = error_line(&env, &["snapshots"], &[("AWS_ACCESS_KEY_ID", "nobody")]);
    assert!(err.contains("check AWS_ACCESS_KEY_ID"), "{err}");

    let redirect = fake_store(
        "301 Moved Permanently",
        "x-amz-bucket-region: eu-west-1\r\n",
        "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access \
         must be addressed using the specified endpoint.</Message></Error>",
    );
    let elsewhere = Env::at(format!("s3:http://127.0.0.1:{redirect}/bkt/r"));
    let err = error_line(&elsewhere, &["snapshots"], &[]);
    assert!(
        err.contains("in region eu-west-1, not us-east-1: set --s3-region eu-west-1"),
        "{err}"
    );
    let malformed = fake_store(
        "400 Bad Request",
        "",
        "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is \
         malformed; the region 'us-east-1' is wrong; expecting 'ap-south-1'</Message>\
         <Region>ap-south-1</Region></Error>",
    );
    let elsewhere = Env::at(format!("s3:http://127.0.0.1:{malformed}/bkt/r"));
    let err = error_line(&elsewhere, &["snapshots"], &[]);
    assert!(err.contains("set --s3-region ap-south-1"), "{err}");
    let err = error_line(&elsewhere, &["snapshots", "--s3-region", "ap-south-1"], &[]);
    assert!(
        err.contains("AuthorizationHeaderMalformed"),
        "the fake store refuses any region: {err}"
    );

    let nobody = common::s3::free_port();
    let gone = Env::at(format!("s3:http://127.0.0.1:{nobody}/bkt/r"));
    let err = error_line(&gone, &["snapshots"], &[]);
    assert!(
        err.contains(&format!("cannot reach http://127.0.0.1:{nobody}")),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
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

/// A repository on the real server reached through a proxy that lies (issue 22).
fn lying_repo(server: &S3Server, name: &str) -> (Liar, Env) {
    let liar = Liar::start(server.port);
    let env = s3_repo(server.location_via(liar.port, name), "1");
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    (liar, env)
}

/// Fails with exit 1, naming `expect` in an error line (or check's report), with no panic and
/// a peak RSS under `max_mib`.
fn fails_bounded(env: &Env, args: &[&str], extra_env: &[(&str, &str)], expect: &str, max_mib: u64) {
    let mut cmd = env.command(args);
    cmd.envs(extra_env.iter().copied());
    let (status, stderr, peak_kib) = Env::measured(cmd);
    assert_eq!(status.code(), Some(1), "cairn {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "cairn {args:?}: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("cairn:") || l.contains("more than"))
        .collect();
    assert!(!errors.is_empty(), "cairn {args:?}: {stderr}");
    assert!(
        errors.iter().any(|e| e.contains(expect)),
        "cairn {args:?}: {stderr}"
    );
    assert!(
        peak_kib < max_mib << 10,
        "cairn {args:?} peaked at {} MiB",
        peak_kib >> 10
    );
}

/// Issue 22, item 4: GETs answered with 1 GiB whatever was asked (a range, or a snapshot
/// file of a few hundred bytes) are read only as far as what was asked, then refused in one
/// line: restore, check --read-data and snapshots stay within a bounded memory.
#[test]
fn bodies_far_longer_than_asked_are_refused_in_bounded_memory() {
    let server = S3Server::start();
    let (liar, env) = lying_repo(&server, "long");
    let target = env.path("out");
    for (key, args) in [
        (
            "/data/",
            vec!["restore", "latest", "--target", target.to_str().unwrap()],
        ),
        ("/data/", vec!["check", "--read-data"]),
        ("/snapshots/", vec!["snapshots"]),
    ] {
        liar.lie(Lies {
            long_bodies: Some((key.to_string(), 1 << 30)),
            ..Lies::default()
        });
        fails_bounded(&env, &args, &[], "more than the", 300);
    }
    liar.honest();
    env.ok(&["check", "--read-data"]);
}

/// Issue 22, item 4: a server that lists keys without end is refused past the bound on one
/// listing, in bounded memory; a phantom pack of a terabyte in a listing is not read by the
/// adoption of unindexed packs.
#[test]
fn endless_listings_are_refused_and_a_phantom_pack_is_not_read() {
    let server = S3Server::start();
    let (liar, env) = lying_repo(&server, "listing");
    liar.lie(Lies {
        endless_listing: true,
        ..Lies::default()
    });
    fails_bounded(
        &env,
        &["snapshots"],
        &[("CAIRN_MAX_LISTED", "200000")],
        "lists more than 200000 objects",
        300,
    );
    liar.lie(Lies {
        phantom_pack_size: Some(1 << 40),
        ..Lies::default()
    });
    let src = env.path("src");
    std::fs::write(src.join("new.txt"), b"a change").unwrap();
    let mut cmd = env.command(&["backup", src.to_str().unwrap()]);
    cmd.env("CAIRN_IO_TIMEOUT_SECS", "5");
    let (status, stderr, _) = Env::measured(cmd);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("not re-used"), "{stderr}");
}

/// Issue 22, item 5: a commit answered 412, then a HEAD claiming a terabyte and a GET whose
/// body never comes: the command ends within its configured timeouts (here 2 s a stall, one
/// retry), with one line, instead of waiting as long as the claimed size would take.
#[test]
fn a_commit_answered_with_a_stalled_terabyte_ends_within_the_timeouts() {
    let server = S3Server::start();
    let (liar, env) = lying_repo(&server, "stall");
    liar.lie(Lies {
        lying_commit: Some("/snapshots/".into()),
        ..Lies::default()
    });
    let src = env.path("src");
    std::fs::write(src.join("new.txt"), b"a change").unwrap();
    let started = std::time::Instant::now();
    fails_bounded(
        &env,
        &["backup", "--force", src.to_str().unwrap()],
        &[("CAIRN_IO_TIMEOUT_SECS", "2")],
        "",
        300,
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    liar.honest();
    env.ok(&["check"]);
}

/// Issue 22, item 2(b), on a real store: right after a backup, a snapshot listing that lags
/// names nothing while the index names packs; prune refuses, deleting nothing.
#[test]
fn a_lagging_snapshot_listing_on_s3_stops_prune() {
    let server = S3Server::start();
    let (liar, env) = lying_repo(&server, "lagging");
    liar.lie(Lies {
        hide: vec!["/snapshots/".into()],
        ..Lies::default()
    });
    let packs = server
        .objects("lagging")
        .iter()
        .filter(|o| o.starts_with("data/"))
        .count();
    let out = env.run(&["prune", "--now"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lists no snapshot"),
        "{out:?}"
    );
    liar.honest();
    let after = server
        .objects("lagging")
        .iter()
        .filter(|o| o.starts_with("data/"))
        .count();
    assert_eq!(after, packs);
    env.ok(&["check", "--read-data"]);
}

/// Issue 22, item 6: no command prints the secret key, at the most verbose log level.
#[test]
fn no_command_logs_the_secret_key_at_any_level() {
    let server = S3Server::start();
    let env = s3_repo(server.location("secret"), "1");
    let src = env.path("src");
    make_tree(&src);
    let out_dir = env.path("out");
    let dest = Env::at(server.location("secret-copy"));
    let from = server.location("secret");
    let src = src.to_str().unwrap();
    let runs: Vec<(&Env, Vec<&str>)> = vec![
        (&env, vec!["backup", src]),
        (&env, vec!["backup", src]),
        (&env, vec!["snapshots"]),
        (&env, vec!["ls", "latest"]),
        (
            &env,
            vec!["restore", "latest", "--target", out_dir.to_str().unwrap()],
        ),
        (&env, vec!["check", "--read-data"]),
        (&env, vec!["stats"]),
        (&env, vec!["cat", "config"]),
        (&env, vec!["find", "*.bin"]),
        (&env, vec!["diff", "latest", "latest"]),
        (&env, vec!["key", "list"]),
        (&env, vec!["forget", "--keep-last", "1", "--prune"]),
        (
            &dest,
            vec![
                "init",
                "--kdf-time",
                "1",
                "--kdf-memory",
                "1",
                "--copy-params-from",
                &from,
            ],
        ),
        (&dest, vec!["copy", "--from", &from]),
    ];
    let mut logged = String::new();
    for (on, args) in runs {
        let out = on
            .command(&args)
            .env("CAIRN_LOG", "trace")
            .env("CAIRN_FROM_PASSWORD", "correct horse")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        logged.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        logged.len() > 10_000,
        "trace logging printed little: {logged}"
    );
    assert!(
        !logged.contains(common::s3::SECRET_KEY),
        "the secret key reached a log"
    );
}

/// Issue 22, item 2(a), on a real store: a backup that re-uses a forgotten snapshot's data is
/// held at its commit while a `prune --now` whose session listing lags (the backup's session is
/// not in it) deletes that data. The backup then finds its data gone, removes its snapshot and
/// fails; it does not print "saved".
#[test]
fn a_backup_beside_a_prune_whose_session_listing_lags_does_not_report_deleted_data_saved() {
    let server = S3Server::start();
    let liar = Liar::start(server.port);
    let env = s3_repo(server.location_via(liar.port, "race"), "1");
    let old = env.path("old");
    random_tree(&old, 3);
    let kept = env.path("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("k.bin"), pseudo_random(7, 1 << 20)).unwrap();
    env.ok(&["backup", old.to_str().unwrap()]);
    env.ok(&["backup", kept.to_str().unwrap()]);
    let forgotten = env.snapshot_ids()[0].clone();
    env.ok(&["forget", &forgotten]);
    liar.lie(Lies {
        hold_puts: Some("/snapshots/".into()),
        ..Lies::default()
    });
    let backup = env
        .command(&["backup", old.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while liar.held() == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the backup never committed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    liar.lie(Lies {
        hold_puts: Some("/snapshots/".into()),
        hide: vec!["/sessions/".into()],
        ..Lies::default()
    });
    let pruned = env.json(&["prune", "--now"]);
    assert!(
        pruned["report"]["deleted_packs"].as_u64().unwrap() >= 3,
        "{pruned}"
    );
    liar.honest();
    let out = backup.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("saved"), "{stdout}");
    assert!(
        stderr.contains("not committed") && stderr.contains("it was removed"),
        "{stderr}"
    );
    assert_eq!(env.snapshot_ids().len(), 1);
    env.ok(&["check", "--read-data"]);
}

/// Issue 23: a walk of a snapshot's directories reads the trees stored around each one in the
/// same request, so restore and find of 104 directories make a few requests, not one (or two)
/// per directory; restore asks no pack's size before reading it, and no repository file is
/// sized before it is read (11 and 9 requests; 17 and 13 when they were).
#[test]
fn restore_and_find_read_a_hundred_directories_in_a_few_requests() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let env = s3_repo(server.location_via(proxy.port, "walk"), "1");
    let src = env.path("src");
    for a in 0..4 {
        for b in 0..5 {
            for c in 0..4 {
                let dir = src.join(format!("t/a{a}/b{b}/c{c}"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("leaf"), format!("{a}{b}{c}")).unwrap();
            }
        }
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let before = proxy.requests();
    let target = env.path("restored");
    env.restore("latest", &target, &[]);
    let restore = proxy.requests() - before;
    assert_same_tree(&src, &target.join("src"));
    let before = proxy.requests();
    let found = env.ok(&["find", "leaf"]);
    let find = proxy.requests() - before;
    assert_eq!(
        found.lines().filter(|l| l.contains("/leaf")).count(),
        80,
        "{found}"
    );
    assert!(
        restore < 13 && find < 11,
        "restore made {restore} requests, find {find}: {:#?}",
        proxy.request_lines(before)
    );
}

#[test]
fn a_damaged_pack_on_s3_is_healed_from_its_parity_and_written_back() {
    let server = S3Server::start();
    let env = s3_repo(server.location("heal"), "3");
    let src = env.path("src");
    random_tree(&src, 3);
    env.ok(&["backup", src.to_str().unwrap()]);
    let pack = server
        .objects("heal")
        .into_iter()
        .filter(|o| o.starts_with("data/"))
        .max_by_key(|o| {
            std::fs::metadata(server.object_path("heal", o))
                .unwrap()
                .len()
        })
        .unwrap();
    let path = server.object_path("heal", &pack);
    let original = std::fs::read(&path).unwrap();
    let mut damaged = original.clone();
    for sector in [3usize, 40, 100] {
        damaged[sector * 4096..sector * 4096 + 4096].fill(0);
    }
    damaged[200 * 4096 + 17] ^= 0x10;
    std::fs::write(&path, &damaged).unwrap();
    let said = env.run(&["check", "--read-data"]);
    assert!(
        String::from_utf8_lossy(&said.stdout).contains("4 bad sectors, repairable"),
        "{}",
        String::from_utf8_lossy(&said.stdout)
    );
    // Read, it heals in memory; the object in the bucket is left as it is.
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join(src.file_name().unwrap()));
    assert!(std::fs::read(&path).unwrap() == damaged);
    // Repaired, it is written back through the store's PUT with its upload checks.
    let repaired = env.ok(&["repair", "packs"]);
    assert!(repaired.contains("healed from its parity"), "{repaired}");
    assert!(
        std::fs::read(&path).unwrap() == original,
        "byte-exact again"
    );
    env.ok(&["check", "--read-data"]);
}
