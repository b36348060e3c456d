//! Compression dictionaries (issue 26) end to end through the binary: every reader of blobs
//! compressed with and without one, a repository written before them, a damaged, missing or
//! crafted dictionary, prune keeping them, and `--compression auto` under a slow store.

mod common;

use cairn::backend::local::LocalBackend;
use cairn::repo::Repository;
use cairn::repo::config::Params;
use common::proxy::{Proxy, Shaping};
use common::s3::S3Server;
use common::{Env, FAST_KDF, assert_same_tree, pseudo_random};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Small source-like files (a dictionary's case, more than a sample's worth), a large text file
/// and an incompressible one (both compressed alone or stored raw).
fn source_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("drivers/d{}", i % 7));
        fs::create_dir_all(&dir).unwrap();
        let body: String = (0..40 + i % 30)
            .map(|line| {
                format!(
                    "static int probe_{i}_{line}(struct device *dev, unsigned long flags)\n{{\n\tif \
                     (flags & {line:#x})\n\t\treturn dev_err_probe(dev, -ENODEV, \"no {i}\");\n\t\
                     return 0;\n}}\n"
                )
            })
            .collect();
        fs::write(dir.join(format!("f{i}.c")), body).unwrap();
    }
    fs::write(
        root.join("large.txt"),
        "a line of a large log file\n".repeat(40_000),
    )
    .unwrap();
    fs::write(root.join("noise.bin"), pseudo_random(7, 300_000)).unwrap();
}

fn dictionaries(env: &Env) -> Vec<std::path::PathBuf> {
    env.repo_files("dicts")
}

fn packs_bytes(env: &Env) -> u64 {
    env.repo_files("data")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_reader_round_trips_blobs_compressed_with_and_without_a_dictionary() {
    let env = Env::with_repo(&["--dictionaries", "on"]);
    let src = env.path("src");
    source_tree(&src, 400);
    env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(
        dictionaries(&env).len(),
        1,
        "one dictionary trained and stored"
    );

    // The same backup without dictionaries, at the level blobs compressed with one get, is
    // larger: blobs were compressed with it.
    let plain = Env::with_repo(&["--dictionaries", "off", "--compression", "1"]);
    plain.ok(&["backup", src.to_str().unwrap()]);
    assert!(dictionaries(&plain).is_empty());
    let (with, without) = (packs_bytes(&env), packs_bytes(&plain));
    assert!(
        with < without,
        "packs: {with} bytes with a dictionary, {without} without"
    );

    // restore
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join("src"));
    // dump (one small file, one large)
    for file in ["drivers/d3/f10.c", "large.txt", "noise.bin"] {
        let path = src.join(file);
        let dumped = env
            .command(&["dump", &format!("latest:src/{file}")])
            .output()
            .unwrap();
        assert!(dumped.status.success());
        assert_eq!(dumped.stdout, fs::read(&path).unwrap(), "{file}");
    }
    // check --read-data
    let checked = env.ok(&["check", "--read-data"]);
    assert!(checked.contains("no errors"), "{checked}");
    // copy into a second repository, restored from there
    let dest = Env::new();
    let made = dest
        .command(&[
            "init",
            "--kdf-time",
            "1",
            "--kdf-memory",
            "1",
            "--copy-params-from",
        ])
        .arg(env.repo())
        .env("CAIRN_FROM_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let copied = dest
        .command(&["copy", "--from", env.repo().to_str().unwrap()])
        .env("CAIRN_FROM_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let out2 = dest.path("out");
    dest.restore("latest", &out2, &[]);
    assert_same_tree(&src, &out2.join("src"));
    assert!(dest.ok(&["check", "--read-data"]).contains("no errors"));
}

/// A repository made by the library with `params` (as an older build's config would say), and
/// a source tree of 400 files backed up into it by the binary.
fn backed_up_with(params: Params) -> (Env, std::path::PathBuf) {
    let env = Env::new();
    Repository::init(
        Arc::new(LocalBackend::new(env.repo())),
        b"correct horse",
        FAST_KDF,
        params,
    )
    .unwrap();
    let src = env.path("src");
    source_tree(&src, 400);
    env.ok(&["backup", src.to_str().unwrap()]);
    (env, src)
}

#[test]
fn a_repository_written_before_dictionaries_reads_and_grows_unchanged() {
    // A config without the field, as every build before dictionaries wrote it (and before
    // solid groups, which came after).
    let (env, src) = backed_up_with(Params {
        dictionaries: None,
        groups: None,
        ..Params::default()
    });
    assert!(dictionaries(&env).is_empty(), "such a repository gets none");
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join("src"));
    assert!(env.ok(&["check", "--read-data"]).contains("no errors"));
}

#[test]
fn a_repository_written_before_solid_groups_grows_in_the_format_older_builds_read() {
    // A config with dictionaries and without groups (version 2), as builds between the two
    // wrote it: small blobs are compressed with a dictionary, each alone.
    let (env, src) = backed_up_with(Params {
        groups: None,
        dictionaries: Some(true),
        ..Params::default()
    });
    assert_eq!(env.json(&["cat", "config"])["version"], 2);
    assert_eq!(dictionaries(&env).len(), 1);
    let mut blobs = 0;
    for index in env.repo_files("index") {
        let name = index.file_name().unwrap().to_str().unwrap().to_string();
        let segment = env.json(&["cat", "index", &name]);
        for pack in segment["packs"].as_array().unwrap() {
            for blob in pack["blobs"].as_array().unwrap() {
                assert!(blob["group"].is_null(), "{blob}");
                blobs += 1;
            }
        }
    }
    assert!(blobs > 400, "{blobs} blobs indexed");
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join("src"));
    assert!(env.ok(&["check", "--read-data"]).contains("no errors"));
}

#[test]
fn a_lost_dictionary_is_named_with_its_files_and_restore_fails_only_those() {
    let env = Env::with_repo(&["--dictionaries", "on"]);
    let src = env.path("src");
    source_tree(&src, 400);
    env.ok(&["backup", src.to_str().unwrap()]);
    let dicts = dictionaries(&env);
    assert_eq!(dicts.len(), 1);

    // One damaged copy: reported as repairable, reads are unaffected, scrub mends it.
    let stored = fs::read(&dicts[0]).unwrap();
    let mut damaged = stored.clone();
    damaged[100] ^= 1;
    fs::set_permissions(
        &dicts[0],
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs::write(&dicts[0], &damaged).unwrap();
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("repairable from its other copy"));
    env.restore("latest", &env.path("out1"), &[]);
    let scrubbed = env.ok(&["scrub"]);
    assert!(scrubbed.contains("rewritten from the other"), "{scrubbed}");
    assert_eq!(fs::read(&dicts[0]).unwrap(), stored);

    // Both copies damaged: check names the dictionary, and with --read-data the blobs and files.
    let last = damaged.len() - 100;
    damaged[last] ^= 1;
    fs::write(&dicts[0], &damaged).unwrap();
    let out = env.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("neither copy matches its name"), "{report}");
    assert!(report.contains("compression dictionary"), "{report}");
    assert!(report.contains("f10.c"), "{report}");
    // repair does not take those blobs for lost: it touches no pack until the dictionary is back.
    let packs = env.repo_files("data");
    let out = env.run(&["repair", "packs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("restore the compression dictionary"));
    assert_eq!(env.repo_files("data"), packs);

    // Missing: restore fails each small file with one line and restores the rest.
    fs::remove_file(&dicts[0]).unwrap();
    let target = env.path("out2");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let failed = err
        .lines()
        .filter(|l| l.contains("compression dictionary"))
        .count();
    assert!(failed >= 100, "one line per file that needs it: {err}");
    let restored = target.join("src");
    for file in ["large.txt", "noise.bin"] {
        assert_eq!(
            fs::read(restored.join(file)).unwrap(),
            fs::read(src.join(file)).unwrap()
        );
    }
}

#[test]
fn prune_keeps_every_dictionary_a_live_blob_names() {
    let env = Env::with_repo(&["--dictionaries", "on"]);
    let src = env.path("src");
    source_tree(&src, 400);
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = env.snapshot_ids();
    // A second tree, other small files: a second backup re-uses the dictionary or trains one.
    for i in 0..400 {
        let path = src.join(format!("drivers/d{}/f{i}.c", i % 7));
        let mut text = fs::read(&path).unwrap();
        text.extend_from_slice(format!("/* edited {i} */\n").as_bytes());
        fs::write(path, text).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    let dicts_before = dictionaries(&env);
    env.ok(&["forget", &first[0]]);
    env.ok(&["prune"]);
    assert_eq!(dictionaries(&env), dicts_before);
    assert!(env.ok(&["check", "--read-data"]).contains("no errors"));
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn crafted_dictionary_objects_are_refused_in_one_line_with_bounded_memory() {
    let env = Env::with_repo(&["--dictionaries", "on"]);
    let src = env.path("src");
    source_tree(&src, 400);
    fs::create_dir_all(env.repo().join("dicts")).unwrap();
    // Huge (sparse: costs no disk) and malformed, under names that are valid ids.
    let huge = env
        .repo()
        .join("dicts")
        .join(format!("8000aaaa-{}", "aa".repeat(32)));
    fs::File::create(&huge).unwrap().set_len(4 << 30).unwrap();
    fs::write(
        env.repo()
            .join("dicts")
            .join(format!("8000bbbb-{}", "bb".repeat(32))),
        b"not a dictionary",
    )
    .unwrap();

    let (status, stderr, peak_kib) = Env::measured(env.command(&["backup", src.to_str().unwrap()]));
    assert!(status.success(), "{stderr}");
    assert!(peak_kib < 300 << 10, "peak {peak_kib} KiB");
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = report.lines().filter(|l| l.contains("dicts/")).collect();
    assert_eq!(lines.len(), 2, "{report}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&"aa".repeat(32)) && l.contains("refused unread")),
        "{report}"
    );
    // The backup trained and used a dictionary of its own beside them: restores byte-exact,
    // also after junk under its own zstd id, sorted before it, was added (by anyone who can
    // write to the store): the reader reads past what does not open.
    let real = dictionaries(&env)
        .into_iter()
        .find(|p| {
            !p.to_str().unwrap().contains("8000aaaa") && !p.to_str().unwrap().contains("8000bbbb")
        })
        .unwrap();
    let zstd_id = real.file_name().unwrap().to_str().unwrap()[..8].to_string();
    for n in 0..6 {
        let junk = env
            .repo()
            .join("dicts")
            .join(format!("{zstd_id}-{}{n}", "0".repeat(63)));
        fs::write(junk, b"junk").unwrap();
    }
    let out = env.path("out");
    env.restore("latest", &out, &[]);
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn auto_compression_raises_the_level_while_the_store_is_slow() {
    let server = S3Server::start();
    let proxy = Proxy::start(server.port);
    let src = tempfile::tempdir().unwrap();
    // Real text (this crate's sources, each line numbered so copies differ), in chunks too
    // large for a dictionary, and small packs: uploads queue behind the slow link early.
    let mut sources = walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    sources.sort();
    for copy in 0..8 {
        let mut text = String::new();
        for (n, line) in sources
            .iter()
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .enumerate()
        {
            text.push_str(&format!("{copy}{n:06}|{line}\n"));
        }
        fs::write(src.path().join(format!("sources{copy}.txt")), text).unwrap();
    }
    let backup = |name: &str, compression: &str| -> (String, u64) {
        let env = Env::at(server.location_via(proxy.port, name));
        env.ok(&[
            "init",
            "--kdf-time",
            "1",
            "--kdf-memory",
            "1",
            "--pack-size",
            "64KiB",
        ]);
        let before = proxy.upstream_bytes();
        let out = env.ok(&[
            "--connections",
            "1",
            "backup",
            "--compression",
            compression,
            src.path().to_str().unwrap(),
        ]);
        (out, proxy.upstream_bytes() - before)
    };
    // A link far slower than compression: 1 MB/s.
    proxy.shape(Shaping {
        rtt: Duration::from_millis(10),
        bytes_per_sec: 1 << 20,
    });
    // Against the repository's level, where auto starts.
    let (fixed, fixed_sent) = backup("fixed", "1");
    let (auto, auto_sent) = backup("auto", "auto");
    assert!(fixed.contains("compression up to level 1"), "{fixed}");
    let top: i32 = auto
        .split("compression up to level ")
        .nth(1)
        .and_then(|rest| {
            rest.trim_end_matches(|c: char| !c.is_ascii_digit())
                .split(')')
                .next()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{auto}"));
    assert!(top > 1, "the level rose: {auto}");
    // Sending less over the capped link is what makes it no slower.
    assert!(
        auto_sent < fixed_sent,
        "auto sent {auto_sent}, fixed {fixed_sent}: {auto}"
    );
}
