//! Backup and restore through the real binary: round trips of trees with every node kind,
//! incremental backups that read nothing unchanged, restores that no cache limits, and the
//! selectors and filters users type.

mod common;

use common::{Env, assert_same_tree, make_tree, pseudo_random};
use std::fs;
use std::os::unix::fs::MetadataExt;

fn summary(out: &serde_json::Value) -> &serde_json::Value {
    &out["summary"]
}

#[test]
fn round_trip_of_every_node_kind_is_exact_in_bytes_and_metadata() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    let out = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(out["warnings"].as_array().unwrap().len(), 0);
    let target = env.path("restored");
    env.restore("latest", &target, &["--verify"]);
    assert_same_tree(&src, &target.join("src"));
}

/// The walk holds at most 256 directories open and goes by paths past them: a tree 600 levels
/// deep, with a file and an extended attribute at every level, backed up by a cairn allowed 512
/// descriptors, round-trips whole (holding a directory per level, it ran out of descriptors).
#[test]
fn a_tree_deeper_than_the_walk_holds_open_round_trips() {
    use std::os::unix::process::CommandExt;
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut dir = src.clone();
    for level in 0..600 {
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), format!("level {level}")).unwrap();
        xattr::set(&dir, "user.level", level.to_string().as_bytes()).unwrap();
        dir.push("d");
    }
    let mut backup = env.command(&["--json", "backup", src.to_str().unwrap()]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        backup.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let done = backup.output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(out["warnings"].as_array().unwrap().len(), 0, "{out}");
    assert_eq!(summary(&out)["files"], 600);
    let target = env.path("restored");
    env.restore("latest", &target, &["--verify"]);
    assert_same_tree(&src, &target.join("src"));
}

/// A tree deeper than snapshots may nest (1,024 levels, what every reader descends) is backed up
/// down to that depth with one warning and exit 3, never a stack overflow (the walk recurses
/// once per level: the workers' default 2 MiB stacks overflowed at 600), and restores.
#[test]
fn a_tree_deeper_than_readers_descend_is_cut_with_a_warning() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mut dir = src.clone();
    for _ in 0..1100 {
        dir.push("d");
    }
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), b"at the bottom").unwrap();
    let done = env.run(&["--json", "backup", src.to_str().unwrap()]);
    assert_eq!(
        done.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    let warnings = out["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].as_str().unwrap().contains("nested deeper than"),
        "{out}"
    );
    let target = env.path("restored");
    env.restore("latest", &target, &[]);
    let depth = walkdir_depth(&target.join("src"));
    assert_eq!(depth, 1021, "levels of d restored under src");
}

/// How many directories deep `root` nests (a chain of single subdirectories).
fn walkdir_depth(root: &std::path::Path) -> usize {
    let mut depth = 0;
    let mut at = root.to_path_buf();
    while at.join("d").is_dir() {
        at.push("d");
        depth += 1;
    }
    depth
}

#[test]
fn sparse_file_is_restored_with_holes() {
    let (env, _) = common::backed_up_tree();
    let target = env.path("restored");
    env.restore("latest", &target, &[]);
    let meta = fs::metadata(target.join("src/sparse")).unwrap();
    assert_eq!(meta.len(), 8 << 20);
    assert!(
        meta.blocks() * 512 < 4 << 20,
        "8 MiB of zeros took {} blocks",
        meta.blocks()
    );
}

#[test]
fn unchanged_rebackup_reads_no_file_and_stores_no_data() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    let first = env.json(&["backup", src.to_str().unwrap()]);
    assert!(summary(&first)["files_read"].as_u64().unwrap() > 150);
    let second = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(summary(&second)["files_read"], 0);
    assert_eq!(summary(&second)["files"], summary(&first)["files"]);
    let data_new = summary(&second)["new_bytes"].as_u64().unwrap();
    assert!(
        data_new < 64 << 10,
        "only trees may change (atime), stored {data_new} bytes"
    );

    fs::write(src.join("dir/many-042"), b"changed content\n").unwrap();
    let third = env.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(summary(&third)["files_read"], 1);
    let target = env.path("restored");
    env.restore("latest", &target, &[]);
    assert_eq!(
        fs::read(target.join("src/dir/many-042")).unwrap(),
        b"changed content\n"
    );
}

#[test]
fn edited_large_file_stores_only_the_changed_chunks() {
    // Small chunks, so the bound holds whatever cut points the repository's random chunker
    // seed gives: an edit changes at most the chunk it falls in and the next (512 KiB each).
    let env = Env::with_repo(&[
        "--chunk-min",
        "64KiB",
        "--chunk-avg",
        "128KiB",
        "--chunk-max",
        "512KiB",
    ]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut data = pseudo_random(7, 12 << 20);
    fs::write(src.join("big"), &data).unwrap();
    env.json(&["backup", src.to_str().unwrap()]);
    data[6 << 20] ^= 1;
    fs::write(src.join("big"), &data).unwrap();
    let second = env.json(&["backup", src.to_str().unwrap()]);
    let new_bytes = summary(&second)["new_bytes"].as_u64().unwrap();
    assert!(
        new_bytes <= (1 << 20) + (64 << 10),
        "a one-byte edit stored {new_bytes} bytes"
    );
}

#[test]
fn repository_with_64mib_packs_restores_with_a_4mib_cache() {
    let env = Env::with_repo(&["--pack-size", "64MiB"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), pseudo_random(3, 90 << 20)).unwrap();
    fs::write(src.join("b"), pseudo_random(4, 3 << 20)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let biggest = env
        .repo_files("data")
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    assert!(
        biggest >= 64 << 20,
        "a pack of {biggest} bytes is not larger than the cache"
    );
    let target = env.path("restored");
    env.restore("latest", &target, &["--cache-size", "4MiB", "--verify"]);
    assert_same_tree(&src, &target.join("src"));
}

#[test]
fn restore_of_a_subpath_with_include_and_exclude() {
    let (env, _) = common::backed_up_tree();
    let target = env.path("part");
    env.restore("latest:src/dir", &target, &["--exclude", "many-*"]);
    assert!(target.join("big.bin").exists());
    assert!(target.join("deeper/text.txt").exists());
    assert!(!target.join("many-001").exists());
    let only = env.path("only");
    env.restore("latest", &only, &["--include", "*.txt"]);
    assert!(only.join("src/small.txt").exists());
    assert!(only.join("src/dir/deeper/text.txt").exists());
    assert!(!only.join("src/dir/big.bin").exists());
}

#[test]
fn snapshot_selectors_filters_and_ls() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    env.ok(&[
        "backup",
        "--tag",
        "first",
        "--host",
        "alpha",
        src.to_str().unwrap(),
    ]);
    fs::write(src.join("new-file"), b"x").unwrap();
    env.ok(&[
        "backup",
        "--tag",
        "second",
        "--host",
        "beta",
        src.to_str().unwrap(),
    ]);
    let all = env.json(&["snapshots"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let tagged = env.json(&["snapshots", "--tag", "first"]);
    assert_eq!(tagged[0]["hostname"], "alpha");
    assert_eq!(
        env.json(&["snapshots", "--host", "beta"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let first_id = tagged[0]["short_id"].as_str().unwrap().to_string();

    let latest = env.ok(&["ls", "latest"]);
    assert!(latest.lines().any(|l| l == "/src/new-file"));
    let previous = env.ok(&["ls", "latest~1"]);
    assert!(!previous.lines().any(|l| l == "/src/new-file"));
    assert_eq!(env.ok(&["ls", &first_id]), previous);
    let sub = env.ok(&["ls", "latest:src/dir/deeper"]);
    assert_eq!(
        sub.lines().collect::<Vec<_>>(),
        ["/src/dir/deeper/text.txt"]
    );
    let long = env.ok(&["ls", "-l", "latest:src/link"]);
    assert!(
        long.starts_with("lrwxrwxrwx") && long.trim_end().ends_with("/src/link -> small.txt"),
        "{long}"
    );
}

#[test]
fn excludes_and_dry_run() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    let exclude_file = env.path("excludes");
    fs::write(&exclude_file, "# comment\n*.bin\n").unwrap();
    let dry = env.json(&["backup", "--dry-run", src.to_str().unwrap()]);
    assert_eq!(dry["snapshot"], serde_json::Value::Null);
    assert!(env.repo_files("snapshots").is_empty());
    assert!(env.repo_files("data").is_empty());
    let pattern = format!("{}/dir/deeper", src.display());
    env.ok(&[
        "backup",
        "--exclude-file",
        exclude_file.to_str().unwrap(),
        "--exclude",
        &pattern,
        src.to_str().unwrap(),
    ]);
    let listing = env.ok(&["ls", "latest"]);
    assert!(!listing.contains("big.bin"));
    assert!(!listing.contains("deeper"));
    assert!(listing.contains("small.txt"));
}

#[test]
fn identical_files_are_stored_once() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = pseudo_random(9, 3 << 20);
    for i in 0..4 {
        fs::write(src.join(format!("copy{i}")), &data).unwrap();
    }
    let out = env.json(&["backup", src.to_str().unwrap()]);
    let new_bytes = summary(&out)["new_bytes"].as_u64().unwrap();
    assert!(
        new_bytes < (3 << 20) + (64 << 10),
        "four copies stored {new_bytes} bytes"
    );
}

#[test]
fn key_add_list_remove_and_passwd() {
    let env = Env::with_repo(&[]);
    let out = env
        .command(&["key", "add", "--kdf-time", "1", "--kdf-memory", "1"])
        .env("CAIRN_NEW_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = env.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let other = env
        .command(&["snapshots"])
        .env("CAIRN_PASSWORD", "second")
        .output()
        .unwrap();
    assert!(other.status.success());
    let current = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        env.run(&["key", "remove", &current[..8]]).status.code(),
        Some(1),
        "the key in use stays"
    );
    let passwd = env
        .command(&["key", "passwd", "--kdf-time", "1", "--kdf-memory", "1"])
        .env("CAIRN_NEW_PASSWORD", "third")
        .output()
        .unwrap();
    assert!(passwd.status.success());
    assert_eq!(
        env.run(&["snapshots"]).status.code(),
        Some(12),
        "old password no longer opens"
    );
    let third = env
        .command(&["snapshots"])
        .env("CAIRN_PASSWORD", "third")
        .output()
        .unwrap();
    assert!(third.status.success());
}

#[test]
fn password_file_is_read() {
    let env = Env::with_repo(&[]);
    let file = env.path("pw");
    fs::write(&file, "correct horse\n").unwrap();
    let out = env
        .command(&["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .arg("--password-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unreadable_file_is_a_warning_the_snapshot_commits_and_exit_is_3() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("readable"), b"fine").unwrap();
    fs::write(src.join("secret"), b"hidden").unwrap();
    fs::set_permissions(
        src.join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let mut cmd = env.command(&["backup", src.to_str().unwrap()]);
    if common::is_root() {
        // Root reads everything: run as nobody, with the scratch area opened up for it.
        for dir in [env.dir.path(), &env.repo(), &src] {
            fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        for sub in ["keys", "data", "index", "snapshots"] {
            let dir = env.repo().join(sub);
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        }
        for key in env
            .repo_files("keys")
            .iter()
            .chain([env.repo().join("config")].iter())
        {
            fs::set_permissions(key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        }
        let program = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut wrapped = std::process::Command::new("setpriv");
        wrapped
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program)
            .args(args);
        wrapped
            .env("CAIRN_REPOSITORY", env.repo())
            .env("CAIRN_PASSWORD", "correct horse");
        cmd = wrapped;
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("secret") && stderr.contains("Permission denied"),
        "{stderr}"
    );
    let snaps = env.json(&["snapshots"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "the snapshot committed");
    assert_eq!(snaps[0]["summary"]["warnings"], 1);
    let target = env.path("restored");
    env.restore("latest", &target, &[]);
    assert_eq!(fs::read(target.join("src/readable")).unwrap(), b"fine");
}

#[test]
fn one_file_system_does_not_descend_into_other_mounts() {
    if !common::is_root() {
        eprintln!("needs root to mount a tmpfs inside the source tree");
        return;
    }
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    let mnt = src.join("other-fs");
    fs::create_dir_all(&mnt).unwrap();
    fs::write(src.join("here"), b"x").unwrap();
    assert!(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    fs::write(mnt.join("elsewhere"), b"y").unwrap();
    let listing = std::panic::catch_unwind(|| {
        env.ok(&["backup", "--one-file-system", src.to_str().unwrap()]);
        env.ok(&["ls", "latest"])
    });
    std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .unwrap();
    let listing = listing.unwrap();
    assert!(
        listing.lines().any(|l| l == "/src/other-fs"),
        "the mount point itself is kept: {listing}"
    );
    assert!(!listing.contains("elsewhere"), "{listing}");
    assert!(listing.contains("/src/here"));
}

#[test]
fn cat_and_stats_describe_the_repository() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("file"), b"some content").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let config = env.json(&["cat", "config"]);
    // Version 3: small files in solid groups, without dictionaries (`init --dictionaries on`
    // adds the field; version 1 and 2 are repositories written before groups).
    assert_eq!(config["version"], 3);
    assert_eq!(config["groups"], true, "{config}");
    assert!(config["dictionaries"].is_null(), "{config}");
    assert_eq!(config["pack_size"], 16 << 20);
    let snap = env.json(&["cat", "snapshot", "latest"]);
    let root = env.json(&["cat", "tree", snap["tree"].as_str().unwrap()]);
    assert_eq!(root["nodes"][0]["name"], "src");
    let dir = env.json(&["cat", "tree", root["nodes"][0]["subtree"].as_str().unwrap()]);
    let blob = dir["nodes"][0]["content"][0].as_str().unwrap().to_string();
    assert_eq!(env.ok(&["cat", "blob", &blob]), "some content");
    let index = env.repo_files("index").remove(0);
    let segment = env.json(&["cat", "index", index.file_name().unwrap().to_str().unwrap()]);
    assert!(!segment["packs"].as_array().unwrap().is_empty());
    let stats = env.json(&["stats"]);
    assert_eq!(stats["snapshots"], 1);
    assert_eq!(stats["data_blobs"], 1);
    assert!(stats["raw_bytes"].as_u64().unwrap() >= 12);
}

#[test]
fn init_groups_off_makes_a_repository_of_the_format_older_builds_read() {
    let env = Env::with_repo(&["--groups", "off"]);
    let config = env.json(&["cat", "config"]);
    assert_eq!(config["version"], 1, "{config}");
    assert!(config.get("groups").is_none(), "{config}");
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    let mut small = 0;
    for index in env.repo_files("index") {
        let segment = env.json(&["cat", "index", index.file_name().unwrap().to_str().unwrap()]);
        for pack in segment["packs"].as_array().unwrap() {
            for blob in pack["blobs"].as_array().unwrap() {
                assert!(blob["group"].is_null(), "{blob}");
                small +=
                    usize::from(blob["kind"] == "Data" && blob["raw_len"].as_u64() < Some(4096));
            }
        }
    }
    // make_tree's small files, each sealed alone.
    assert!(small > 100, "{small} small data blobs");
}

#[test]
fn ls_shows_special_mode_bits_and_quotes_names_as_ls_does() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("sticky")).unwrap();
    fs::write(src.join("setuid"), b"x").unwrap();
    fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(src.join(std::ffi::OsStr::from_bytes(b"esc\x1b[31m")), b"x").unwrap();
    fs::write(src.join("with space"), b"x").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let long = env.ok(&["ls", "-l", "latest"]);
    assert!(!long.contains('\x1b'), "{long}");
    let line = |name: &str| {
        long.lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name}: {long}"))
            .to_string()
    };
    assert!(line("/setuid").starts_with("-rwsr-xr-x"), "{long}");
    assert!(line("/sticky").starts_with("drwxrwxrwt"), "{long}");
    assert!(line("/src/esc'$'\\033''[31m'").contains("'/"), "{long}");
    assert!(line("/src/with space'").contains("'/"), "{long}");
}
