//! The stage's own cases beyond copying a tree in: every kind of edit between two copies, a
//! file changed after it was stored, kills during commit, storing while the copy runs, the
//! overlay stage's guards, and the FUSE stage's requests per file counted at the kernel.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{Env, assert_same_tree, make_tree, pseudo_random};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::stage::*;
use support::wait_for;

both_kinds!(
    every_kind_of_edit_between_two_copies_comes_out_as_the_second_tree,
    a_file_changed_after_it_was_stored_is_stored_again_whatever_its_mtime_says,
    a_stage_killed_while_committing_leaves_a_clean_repository_and_no_spool,
);

/// Runs `command` with `args` and insists it succeeds.
fn run(command: &str, args: &[&Path]) {
    let out = Command::new(command).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{command} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn every_kind_of_edit_between_two_copies_comes_out_as_the_second_tree(kind: Kind) {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    let at = |p: &str| src.join(p);
    for dir in ["tree/a/x", "tree/b", "tree/c", "tree/e/deep"] {
        fs::create_dir_all(at(dir)).unwrap();
    }
    fs::write(at("tree/a/x/f"), b"in a").unwrap();
    fs::write(at("tree/c/f"), b"in c").unwrap();
    fs::write(at("tree/d"), b"a file to become a directory").unwrap();
    fs::write(at("tree/e/deep/f"), pseudo_random(3, 300_000)).unwrap();
    let first = stage(&env, kind, &["--empty"]);
    rsync(&["-aHX", "--delete"], &src, &first.dir);
    commit(&env, first);

    // Deletions, renames of files and directories, a new hard link to an unchanged file, a
    // directory replaced by a file and the reverse, mode/owner/time/xattr-only changes of
    // unchanged files, a new fifo.
    fs::remove_file(at("dir/many-001")).unwrap();
    fs::rename(at("dir/many-002"), at("dir/renamed")).unwrap();
    fs::rename(at("tree/a"), at("tree/a-renamed")).unwrap();
    fs::hard_link(at("dir/many-003"), at("tree/link-to-3")).unwrap();
    fs::remove_dir_all(at("tree/c")).unwrap();
    fs::write(at("tree/c"), b"a directory before").unwrap();
    fs::remove_file(at("tree/d")).unwrap();
    fs::create_dir(at("tree/d")).unwrap();
    fs::write(at("tree/d/inner"), b"a file before").unwrap();
    fs::set_permissions(at("dir/many-004"), fs::Permissions::from_mode(0o640)).unwrap();
    if common::is_root() {
        std::os::unix::fs::lchown(at("dir/many-005"), Some(1000), Some(1000)).unwrap();
    }
    let old = filetime::FileTime::from_unix_time(1_100_000_000, 5);
    filetime::set_file_times(at("dir/many-006"), old, old).unwrap();
    xattr::set(at("dir/many-008"), "user.added", b"later").unwrap();
    xattr::remove(at("small.txt"), "user.comment").unwrap();
    nix::unistd::mkfifo(
        &at("tree/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let second = stage(&env, kind, &[]);
    rsync(&["-aHX", "--delete"], &src, &second.dir);
    // A directory of the parent renamed in the stage itself (overlayfs refuses with EXDEV and
    // mv copies instead).
    run(
        "mv",
        &[&second.dir.join("tree/e"), &second.dir.join("tree/e-moved")],
    );
    run("mv", &[&at("tree/e"), &at("tree/e-moved")]);
    let moved = filetime::FileTime::from_unix_time(1_200_000_000, 0);
    for tree in [second.dir.join("tree"), at("tree")] {
        filetime::set_file_times(&tree, moved, moved).unwrap();
    }
    let id = commit(&env, second);
    assert_same_tree(&src, &restored(&env, &id));
    env.ok(&["check", "--read-data"]);
}

fn a_file_changed_after_it_was_stored_is_stored_again_whatever_its_mtime_says(kind: Kind) {
    let env = Env::with_repo(&[]);
    let mounted = stage(&env, kind, &["--empty"]);
    let file = mounted.dir.join("f");
    let size = 3 << 20;
    fs::write(&file, pseudo_random(21, size)).unwrap();
    let written = filetime::FileTime::from_last_modification_time(&fs::metadata(&file).unwrap());
    // Time for the overlay stage to chunk and store it.
    std::thread::sleep(Duration::from_millis(500));
    // Emptied and grown back by path, never opened: no close to report; the mtime set back.
    nix::unistd::truncate(&file, 0).unwrap();
    nix::unistd::truncate(&file, size as i64).unwrap();
    filetime::set_file_mtime(&file, written).unwrap();
    // Rewritten in place, same size, and the mtime set back.
    let other = mounted.dir.join("g");
    fs::write(&other, pseudo_random(22, size)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = filetime::FileTime::from_last_modification_time(&fs::metadata(&other).unwrap());
    {
        use std::os::unix::fs::FileExt;
        let handle = fs::OpenOptions::new().write(true).open(&other).unwrap();
        handle.write_all_at(b"changed", 1000).unwrap();
    }
    filetime::set_file_mtime(&other, before).unwrap();
    let id = commit(&env, mounted);
    let out = restored(&env, &id);
    assert!(fs::read(out.join("f")).unwrap() == vec![0u8; size], "f");
    let mut want = pseudo_random(22, size);
    want[1000..1007].copy_from_slice(b"changed");
    assert!(fs::read(out.join("g")).unwrap() == want, "g");
}

fn a_stage_killed_while_committing_leaves_a_clean_repository_and_no_spool(kind: Kind) {
    let env = small_pack_repo();
    let src = env.path("src");
    random_tree(&src, 40);
    let mut mounted = stage(&env, kind, &["--empty"]);
    rsync(&["-a"], &src, &mounted.dir);
    let commit_run = env
        .command(&["stage", "--commit", mounted.dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let pid = nix::unistd::Pid::from_raw(mounted.pid() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = mounted.child.take().unwrap().wait();
    let _ = commit_run.wait_with_output();
    let _ = Command::new("umount").arg("-l").arg(&mounted.dir).status();
    drop(mounted);
    // Killed before the snapshot was written or after: either way a clean repository.
    assert!(snapshot_count(&env) <= 1);
    env.ok(&["check", "--read-data"]);
    // The next stage removes what the killed one left, and leaves nothing itself.
    let again = stage(&env, kind, &["--empty"]);
    rsync(&["-a"], &src, &again.dir);
    let id = commit(&env, again);
    assert_same_tree(&src, &restored(&env, &id));
}

#[test]
fn an_overlay_stage_stores_files_while_the_copy_runs() {
    if !common::is_root() {
        return;
    }
    let env = small_pack_repo();
    let src = env.path("src");
    let total = random_tree(&src, 12);
    let mounted = stage(&env, Kind::Overlay, &["--empty"]);
    rsync(&["-a"], &src, &mounted.dir);
    // Stored before any commit: the watcher chunks each file as rsync closes it.
    wait_for("the copied files stored", || data_bytes(&env) >= total);
    let id = commit(&env, mounted);
    assert_same_tree(&src, &restored(&env, &id));
}

/// The FUSE requests the kernel sent to the connection of the mount on `dir` while `run` ran,
/// by name, from the kernel's FUSE tracepoints; `None` where tracing is not available.
fn fuse_requests(
    dir: &Path,
    run: impl FnOnce(),
) -> Option<std::collections::BTreeMap<String, u64>> {
    use std::os::unix::fs::MetadataExt;
    let tracing = Path::new("/sys/kernel/tracing");
    let enable = tracing.join("events/fuse/fuse_request_send/enable");
    if !common::is_root() || !enable.exists() {
        return None;
    }
    let connection = nix::sys::stat::minor(fs::metadata(dir).unwrap().dev());
    fs::write(tracing.join("tracing_on"), "1").ok()?;
    fs::write(tracing.join("trace"), "").ok()?;
    fs::write(&enable, "1").ok()?;
    run();
    fs::write(&enable, "0").unwrap();
    let trace = fs::read_to_string(tracing.join("trace")).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for line in trace.lines().filter(|l| !l.starts_with('#')) {
        let mine = line.contains(&format!("connection {connection} "));
        let name = line.split('(').nth(1).and_then(|r| r.split(')').next());
        if let (true, Some(name)) = (mine, name) {
            *counts.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    Some(counts)
}

#[test]
fn rsync_inplace_into_a_fuse_stage_without_xattrs_costs_six_requests_per_file() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let files = 300u64;
    for i in 0..files {
        fs::write(src.join(format!("f{i:03}")), format!("file {i}\n")).unwrap();
    }
    let mounted = stage(&env, Kind::Fuse, &["--empty", "--no-xattrs"]);
    let Some(counts) = fuse_requests(&mounted.dir, || {
        rsync(&["-a", "--inplace"], &src, &mounted.dir);
    }) else {
        eprintln!("no FUSE tracepoints here (needs root and tracefs): requests not counted");
        return;
    };
    let total: u64 = counts.values().sum();
    assert_eq!(counts.get("FUSE_CREATE"), Some(&files), "{counts:?}");
    assert!(
        total <= 6 * files + 10,
        "{total} requests for {files} files: {counts:?}"
    );
    assert!(
        counts.get("FUSE_GETXATTR").copied().unwrap_or(0) <= 1,
        "{counts:?}"
    );
    assert_eq!(counts.get("FUSE_OPENDIR"), None, "{counts:?}");
    let id = commit(&env, mounted);
    assert_same_tree(&src, &restored(&env, &id));
}

#[test]
fn an_overlay_stage_refuses_a_link_a_full_directory_and_someone_elses() {
    use std::os::unix::fs::DirBuilderExt;
    if !common::is_root() {
        return;
    }
    let env = Env::with_repo(&[]);
    let spool = spool(&env);
    fs::DirBuilder::new().mode(0o700).create(&spool).unwrap();
    let refused = |dir: &Path, why: &str| {
        let out = env
            .command(&["stage", dir.to_str().unwrap(), "--path", "/src", "--empty"])
            .args(["--spool-dir", spool.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{dir:?} accepted");
        assert!(err.contains(why), "{dir:?}: {err}");
        assert!(!support::is_mounted(dir), "{dir:?} mounted");
    };
    // A link another user planted is followed only to a directory of theirs, which is refused.
    let theirs = env.path("theirs");
    fs::create_dir_all(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    refused(&link, "not a directory of the user running the stage");
    let full = env.path("full");
    fs::create_dir_all(&full).unwrap();
    fs::write(full.join("file"), b"hidden").unwrap();
    refused(&full, "not empty");
    refused(&spool, "the spool directory is inside the stage");
}

#[test]
fn an_overlay_stage_commits_past_a_fifo_closed_after_writing_and_keeps_links_across_directories() {
    if !common::is_root() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    fs::write(src.join("a/x"), b"one inode, two names").unwrap();
    fs::hard_link(src.join("a/x"), src.join("b/y")).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let mounted = stage(&env, Kind::Overlay, &["--parent", "latest"]);
    // A fifo opened for writing and closed: its close is reported, and opening it must not
    // wait for a writer.
    let fifo = mounted.dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    drop(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap(),
    );
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // Changed under one name in place: the other name, in a directory the copy never touched,
    // shows the change too.
    fs::set_permissions(mounted.dir.join("a/x"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("a/x"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        fs::metadata(mounted.dir.join("b/y")).unwrap().mode() & 0o777,
        0o600
    );
    let time = filetime::FileTime::from_unix_time(1_300_000_000, 0);
    for dir in [mounted.dir.clone(), src.clone()] {
        for made in ["fifo", "a", ""] {
            filetime::set_symlink_file_times(dir.join(made), time, time).unwrap();
        }
    }
    let id = commit(&env, mounted);
    assert_same_tree(&src, &restored(&env, &id));
}
