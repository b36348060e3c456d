//! Restore against snapshots crafted by someone who holds a key to a shared repository, and
//! against targets that already hold links: nothing is created, changed or opened outside the
//! target, no link is written through, and what restore writes stays private until complete.
//! Each crafted repository is built through the library with a valid key and malicious trees,
//! then restored through the real binary (as root where the machine allows, as CI runs).

mod common;

use cairn::repo::tree::{Node, NodeKind};
use common::Env;
use common::crafted::Crafter;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Every entry below `root` with its mode, owner, size, mtime and (for files) content: what a
/// sentinel directory must still show after a restore next to it.
fn listing(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                pending.push(path.clone());
            }
            out.insert(
                path,
                (meta.mode(), meta.uid(), meta.size(), meta.mtime(), content),
            );
        }
    }
    let meta = fs::metadata(root).unwrap();
    out.insert(
        root.to_path_buf(),
        (meta.mode(), meta.uid(), 0, meta.mtime(), Vec::new()),
    );
    out
}

/// A directory holding a private 0700 directory with a private 0600 file: what an escaping
/// restore would change.
fn sentinel(env: &Env) -> PathBuf {
    let dir = env.path("sentinel");
    fs::create_dir_all(dir.join("private")).unwrap();
    fs::write(dir.join("victim"), b"secret").unwrap();
    fs::set_permissions(dir.join("victim"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(dir.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn names_that_are_not_one_path_component_never_leave_the_target() {
    let env = Env::with_repo(&[]);
    let sentinel = sentinel(&env);
    let target = sentinel.join("target");
    let crafter = Crafter::new(&env);
    let absolute = sentinel
        .join("absolute")
        .into_os_string()
        .into_encoded_bytes();
    let escaping_dir = crafter.dir(
        b"..",
        0o777,
        vec![crafter.file(b"escaped", 0o6777, b"written outside")],
    );
    let root = vec![
        crafter.file(b"ok", 0o640, b"fine"),
        escaping_dir,
        crafter.file(b".", 0o644, b"dot"),
        crafter.file(b"", 0o644, b"empty name"),
        crafter.file(b"../victim", 0o6777, b"overwritten"),
        crafter.file(&absolute, 0o644, b"absolute"),
        crafter.file(b"nul\0byte", 0o644, b"nul"),
        crafter.dir(
            b"sub",
            0o755,
            vec![crafter.file(b"../../victim", 0o644, b"x")],
        ),
    ];
    crafter.commit(root);
    let before = listing(&sentinel);

    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore failed: {stderr}");
    assert!(stderr.contains("not valid file names"), "{stderr}");

    assert_eq!(names_in(&target), ["ok", "sub"]);
    assert_eq!(names_in(&target.join("sub")), Vec::<String>::new());
    assert_eq!(fs::read(target.join("ok")).unwrap(), b"fine");
    let mut after = listing(&sentinel);
    after.retain(|path, _| !path.starts_with(&target));
    let mut expected = before;
    // The target's own creation changes its parent's mtime, nothing else.
    let sentinel_after = after[&sentinel].clone();
    expected.get_mut(&sentinel).unwrap().3 = sentinel_after.3;
    assert_eq!(after, expected, "something outside the target changed");

    // ls does not show them, check reports each, repair snapshots drops them.
    let ls = env.ok(&["ls", "latest"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["/ok", "/sub"]);
    let check = env.run(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert_eq!(
        report.matches("`repair snapshots` drops it").count(),
        7,
        "{report}"
    );
    env.ok(&["repair", "snapshots", "--forget"]);
    let check = env.run(&["check"]);
    assert!(
        check.status.success(),
        "check after repair: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn a_file_and_a_link_of_one_name_never_write_through_the_link() {
    let env = Env::with_repo(&[]);
    let sentinel = sentinel(&env);
    let victim = sentinel.join("victim");
    let target = env.path("target");
    let crafter = Crafter::new(&env);
    let link_target = victim.as_os_str().as_encoded_bytes().to_vec();
    let root = vec![
        crafter.file(b"./x", 0o6777, b"payload"),
        Crafter::symlink(b"x", &link_target),
    ];
    crafter.commit(root);
    let before = listing(&sentinel);

    for _ in 0..2 {
        // Twice: the second restore finds the link from the first in place.
        env.restore("latest", &target, &[]);
    }
    assert_eq!(listing(&sentinel), before, "the victim changed");
    assert!(fs::symlink_metadata(target.join("x")).unwrap().is_symlink());
    assert_eq!(names_in(&target), ["x"]);
}

#[test]
fn a_split_directory_naming_one_entry_twice_is_damaged_and_writes_nothing_through() {
    let env = Env::with_repo(&[]);
    let sentinel = sentinel(&env);
    let victim = sentinel.join("victim");
    let target = env.path("target");
    let crafter = Crafter::new(&env);
    // Two pieces both hold `x`: a setuid file first, a link to the victim second.
    let first = vec![crafter.file(b"x", 0o6777, b"payload")];
    let second = vec![Crafter::symlink(
        b"x",
        victim.as_os_str().as_encoded_bytes(),
    )];
    let root = vec![crafter.overlapping_pieces(b"split", first, second)];
    crafter.commit(root);
    let before = listing(&sentinel);

    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pieces overlap"), "{stderr}");
    assert_eq!(listing(&sentinel), before, "the victim changed");
}

#[test]
fn links_already_in_the_target_are_replaced_never_followed() {
    let (env, src) = common::backed_up_tree();
    let sentinel = sentinel(&env);
    let target = env.path("target");
    fs::create_dir_all(&target).unwrap();
    // The snapshot has `dir/` and `small.txt`; the target has links of those names.
    std::os::unix::fs::symlink(&sentinel, target.join("dir")).unwrap();
    std::os::unix::fs::symlink(sentinel.join("victim"), target.join("small.txt")).unwrap();
    // A file where the snapshot has a directory, a directory where it has a file.
    fs::create_dir_all(target.join("empty/inside")).unwrap();
    let before = listing(&sentinel);

    env.restore("latest", &target, &[]);
    assert_eq!(listing(&sentinel), before, "restore wrote through a link");
    common::assert_same_tree(&src, &target.join("src"));
    // The links at the top are untouched by a restore of `src/`; restore `src`'s content at
    // the top to meet them.
    env.restore("latest:src", &target, &[]);
    assert_eq!(listing(&sentinel), before, "restore wrote through a link");
    assert!(fs::symlink_metadata(target.join("dir")).unwrap().is_dir());
    assert_eq!(
        fs::read(target.join("small.txt")).unwrap(),
        b"hello, world\n"
    );
    assert!(
        fs::symlink_metadata(target.join("empty"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn overwrite_never_keeps_existing_entries_and_does_not_follow_them() {
    let (env, src) = common::backed_up_tree();
    let sentinel = sentinel(&env);
    let target = env.path("target");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(sentinel.join("victim"), target.join("small.txt")).unwrap();
    fs::write(target.join("empty"), b"mine").unwrap();
    let before = listing(&sentinel);

    let out = env.restore("latest:src", &target, &["--overwrite", "never"]);
    assert!(out.contains("kept 2 existing entries"), "{out}");
    assert_eq!(listing(&sentinel), before);
    assert!(
        fs::symlink_metadata(target.join("small.txt"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(fs::read(target.join("empty")).unwrap(), b"mine");
    assert_eq!(
        fs::read(target.join("dir/deeper/text.txt")).unwrap(),
        fs::read(src.join("dir/deeper/text.txt")).unwrap()
    );
}

#[test]
fn overwrite_if_newer_and_if_changed_decide_by_mtime_and_size() {
    let (env, src) = common::backed_up_tree();
    let target = env.path("target");
    env.restore("latest:src", &target, &[]);
    // Newer than the snapshot's: kept by if-newer. Same size and mtime, other bytes: kept by
    // if-changed (the documented shortcut), replaced by always.
    fs::write(target.join("small.txt"), b"edited later\n").unwrap();
    let text = target.join("dir/deeper/text.txt");
    let original = fs::metadata(&text).unwrap();
    let mut changed = fs::read(&text).unwrap();
    changed[0] ^= 1;
    fs::write(&text, &changed).unwrap();
    let times = filetime::FileTime::from_last_modification_time(&original);
    filetime::set_file_mtime(&text, times).unwrap();

    env.restore("latest:src", &target, &["--overwrite", "if-newer"]);
    assert_eq!(
        fs::read(target.join("small.txt")).unwrap(),
        b"edited later\n"
    );
    env.restore("latest:src", &target, &["--overwrite", "if-changed"]);
    assert_eq!(fs::read(&text).unwrap(), changed);
    assert_eq!(
        fs::read(target.join("small.txt")).unwrap(),
        b"hello, world\n"
    );
    env.restore("latest:src", &target, &[]);
    assert_eq!(
        fs::read(&text).unwrap(),
        fs::read(src.join("dir/deeper/text.txt")).unwrap()
    );
}

#[test]
fn delete_removes_what_the_snapshot_does_not_have_and_respects_filters() {
    let (env, src) = common::backed_up_tree();
    let target = env.path("target");
    fs::create_dir_all(target.join("dir/extra-dir/below")).unwrap();
    fs::write(target.join("extra-file"), b"x").unwrap();
    fs::write(target.join("dir/extra-dir/below/f"), b"x").unwrap();
    fs::write(target.join("dir/keep.log"), b"x").unwrap();

    let out = env.restore("latest:src", &target, &["--delete", "--exclude", "*.log"]);
    assert!(out.contains("deleted 2 entries"), "{out}");
    assert!(!target.join("extra-file").exists());
    assert!(!target.join("dir/extra-dir").exists());
    assert!(
        target.join("dir/keep.log").exists(),
        "excluded paths are not deleted"
    );
    fs::remove_file(target.join("dir/keep.log")).unwrap();
    let mtime =
        filetime::FileTime::from_last_modification_time(&fs::metadata(src.join("dir")).unwrap());
    filetime::set_file_mtime(target.join("dir"), mtime).unwrap();
    common::assert_same_tree(&src, &target);
}

#[test]
fn a_file_that_cannot_be_completed_stays_private() {
    let (env, _src) = common::backed_up_tree();
    // Beyond what parity heals: it has none left.
    fs::remove_dir_all(env.repo().join("parity")).unwrap();
    // Damage the largest pack (big.bin's data): its files are created but never completed.
    let pack = env
        .repo_files("data")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&pack, bytes).unwrap();
    let target = env.path("target");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let big = target.join("src/dir/big.bin");
    let mode = fs::metadata(&big).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o600, "an incomplete file is readable by others");
}

/// Runs `args` and expects exit code 1 with one `cairn:` line containing `needle`, no panic and
/// no abort (a stack overflow exits 134).
fn fails_cleanly(env: &Env, args: &[&str], needle: &str) {
    let out = env.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("cairn:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(lines[0].contains(needle), "{args:?}: {stderr}");
}

#[test]
fn a_tree_100000_levels_deep_is_refused_without_overflowing_the_stack() {
    let env = Env::with_repo(&[]);
    let crafter = Crafter::new(&env);
    let mut node = crafter.file(b"bottom", 0o644, b"deep");
    for _ in 0..100_000 {
        node = crafter.dir(b"d", 0o755, vec![node]);
    }
    crafter.commit(vec![node]);
    let target = env.path("target");

    fails_cleanly(&env, &["ls", "latest"], "deeper than 1024 levels");
    fails_cleanly(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        "deeper than 1024 levels",
    );
    // repair cuts the tree at the bound and keeps the rest.
    env.ok(&["repair", "snapshots", "--forget"]);
    let listed = env.ok(&["ls", "latest"]);
    assert_eq!(listed.lines().count(), 1023);
}

#[test]
fn a_tree_naming_one_subtree_twice_per_level_is_refused_within_a_budget() {
    let env = Env::with_repo(&[]);
    let crafter = Crafter::new(&env);
    let mut level = vec![crafter.file(b"f", 0o644, b"leaf")];
    for _ in 0..40 {
        let below = crafter.dir(b"a", 0o755, level);
        let mut twin = below.clone();
        twin.name = b"b".to_vec();
        level = vec![below, twin];
    }
    crafter.commit(level);
    let target = env.path("target");

    fails_cleanly(&env, &["ls", "latest"], "expands to more than");
    fails_cleanly(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        "expands to more than",
    );
    // The tree was refused before the walk: nothing was made.
    assert!(!target.exists() || walkdir_count(&target) == 0);
}

fn walkdir_count(root: &Path) -> usize {
    let mut count = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            count += 1;
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            }
        }
    }
    count
}

#[test]
fn include_makes_missing_parents_and_leaves_existing_unselected_directories_alone() {
    let (env, src) = common::backed_up_tree();
    let target = env.path("target");
    // No parent exists yet: restore makes them.
    env.restore("latest", &target, &["--include", "src/dir/deeper/text.txt"]);
    assert_eq!(
        fs::read(target.join("src/dir/deeper/text.txt")).unwrap(),
        fs::read(src.join("dir/deeper/text.txt")).unwrap()
    );
    // An existing directory restore only passes through keeps its owner and mode.
    let other = env.path("other");
    fs::create_dir_all(other.join("src/dir")).unwrap();
    fs::set_permissions(other.join("src/dir"), fs::Permissions::from_mode(0o700)).unwrap();
    env.restore("latest", &other, &["--include", "src/dir/deeper/text.txt"]);
    let mode = fs::metadata(other.join("src/dir")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    // --overwrite never leaves existing directories as they were too.
    let kept = env.path("kept");
    fs::create_dir_all(kept.join("src")).unwrap();
    fs::set_permissions(kept.join("src"), fs::Permissions::from_mode(0o700)).unwrap();
    env.restore("latest", &kept, &["--overwrite", "never"]);
    assert_eq!(
        fs::metadata(kept.join("src")).unwrap().mode() & 0o7777,
        0o700
    );
    assert!(kept.join("src/dir/deeper/text.txt").exists());
}

/// 40 levels of directories that each name the next twice, over `leaf`: 2^40 paths.
fn doubling_tree(
    crafter: &Crafter,
    leaf: Vec<cairn::repo::tree::Node>,
) -> Vec<cairn::repo::tree::Node> {
    let mut level = leaf;
    for _ in 0..40 {
        let below = crafter.dir(b"a", 0o755, level);
        let mut twin = below.clone();
        twin.name = b"b".to_vec();
        level = vec![below, twin];
    }
    level
}

#[test]
fn an_honest_snapshot_of_150000_symlinks_lists_and_restores() {
    // Symlinks are not in the summary's counts: the bound must not depend on them.
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..150_000 {
        std::os::unix::fs::symlink("target", src.join(format!("l{i:06}"))).unwrap();
    }
    env.ok(&["backup", src.to_str().unwrap()]);
    assert_eq!(env.ok(&["ls", "latest"]).lines().count(), 150_001);
    let target = env.path("target");
    env.restore("latest", &target, &[]);
    assert_eq!(fs::read_dir(target.join("src")).unwrap().count(), 150_000);
}

#[test]
fn a_summary_claiming_2_to_the_50_files_does_not_lift_the_walk_bound() {
    let env = Env::with_repo(&[]);
    let crafter = Crafter::new(&env);
    let root = doubling_tree(&crafter, vec![crafter.file(b"f", 0o644, b"leaf")]);
    crafter.commit_claiming(root, 1 << 50, 1 << 50);
    fails_cleanly(&env, &["ls", "latest"], "expands to more than");
}

#[test]
fn chunk_references_and_entries_of_every_kind_count_against_the_bound() {
    // One file node listing 400,000 chunks, named through 300 directories: 120 million chunk
    // references for restore to plan, from a repository of a few kilobytes.
    let env = Env::with_repo(&[]);
    let crafter = Crafter::new(&env);
    let mut big = crafter.file(b"big", 0o644, &[0u8; 4096]);
    big.content = vec![big.content[0]; 400_000];
    big.size = 400_000 * 4096;
    let holder = crafter.dir(b"holder", 0o755, vec![big]);
    let names: Vec<_> = (0..300)
        .map(|i| {
            let mut d = holder.clone();
            d.name = format!("d{i:03}").into_bytes();
            d
        })
        .collect();
    let root = vec![crafter.dir(b"many", 0o755, names)];
    crafter.commit(root);
    let target = env.path("target");
    fails_cleanly(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        "expands to more than",
    );
    assert!(
        !target.join("many").exists(),
        "restore made something before refusing"
    );

    // 200,000 fifos in one directory, named by 400 directories: 80 million entries to list.
    let env = Env::with_repo(&[]);
    let crafter = Crafter::new(&env);
    let fifos: Vec<_> = (0..200_000u32)
        .map(|i| {
            let mut fifo = Node::new(NodeKind::Fifo, 0o644, (0, 0), 0);
            fifo.name = format!("p{i:06}").into_bytes();
            fifo
        })
        .collect();
    let shared = crafter.dir(b"shared", 0o755, fifos);
    let names: Vec<_> = (0..400)
        .map(|i| {
            let mut d = shared.clone();
            d.name = format!("d{i:03}").into_bytes();
            d
        })
        .collect();
    crafter.commit(names);
    fails_cleanly(&env, &["ls", "latest"], "expands to more than");
}

#[test]
fn delete_never_empties_a_file_system_mounted_inside_the_target() {
    if !common::is_root() {
        return;
    }
    let (env, _src) = common::backed_up_tree();
    let target = env.path("target");
    let mount = target.join("extra/mnt");
    fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success());
    fs::write(mount.join("keep"), b"on another file system").unwrap();
    let out = env.run(&[
        "restore",
        "latest:src",
        "--target",
        target.to_str().unwrap(),
        "--delete",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let kept = fs::read(mount.join("keep"));
    let _ = std::process::Command::new("umount").arg(&mount).status();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another file system is mounted below it"),
        "{stderr}"
    );
    assert_eq!(kept.unwrap(), b"on another file system");
}
