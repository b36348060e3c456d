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
    wait_for("the copied files stored", || {
        data_bytes(&env) >= stored_while_copying(total)
    });
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

/// `cairn stage DIR --path /src --spool-dir SPOOL ARGS -- sh -c SCRIPT` as the scratch area's
/// user, on a fresh `DIR` of that user's; returns the command and `DIR`.
fn stage_running(env: &Env, args: &[&str], script: &str) -> (Command, std::path::PathBuf) {
    stage_running_argv(env, args, &["sh", "-c", script])
}

/// `cairn stage DIR ... ARGS -- COMMAND...` as [`stage_running`] makes it.
fn stage_running_argv(env: &Env, args: &[&str], argv: &[&str]) -> (Command, std::path::PathBuf) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = env.path("stage-mnt");
    let spool = spool(env);
    for (made, mode) in [(&dir, 0o755), (&spool, 0o700)] {
        let _ = fs::DirBuilder::new().mode(mode).create(made);
        if let Some(uid) = env.user {
            std::os::unix::fs::chown(made, Some(uid), Some(uid)).unwrap();
        }
    }
    let mut all = vec!["stage", dir.to_str().unwrap(), "--path", "/src"];
    all.extend_from_slice(&["--spool-dir", spool.to_str().unwrap()]);
    all.extend_from_slice(args);
    all.push("--");
    all.extend_from_slice(argv);
    (env.command(&all), dir)
}

/// Runs a staged command to its end; returns the snapshot id it printed.
fn committed(command: &mut Command) -> String {
    let out = command.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id} {err}");
    id
}

/// The script's copy: rsync of `from` into the stage, links, extended attributes and deletions
/// too, exact to the nanosecond.
fn rsync_script(from: &Path, to: &Path) -> String {
    format!(
        "rsync -aHX --delete --modify-window=-1 {}/ {}/",
        from.display(),
        to.display()
    )
}

#[test]
fn a_stage_with_a_command_is_seen_by_that_command_alone_and_committed_when_it_succeeds() {
    if !common::is_root() {
        return;
    }
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    let (ready, go) = (env.path("ready"), env.path("go"));
    let script = format!(
        "touch {ready} && while [ ! -e {go} ]; do sleep 0.05; done && {}",
        rsync_script(&src, &env.path("stage-mnt")),
        ready = ready.display(),
        go = go.display()
    );
    let (mut command, dir) = stage_running(&env, &["--empty"], &script);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the command to start", || ready.exists());
    // Mounted in the command's own mount namespace: not here.
    assert_eq!(support::fs_type(&dir), None);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_same_tree(&src, &restored(&env, &id));
    assert_spool_empty(&env);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);

    // Started from inside DIR, COMMAND works in the stage, not in the directory under it.
    let (mut command, _) = stage_running(&env, &[], "echo made > made-here");
    let id = committed(command.current_dir(&dir));
    let listing = env.ok(&["ls", &id]);
    assert!(listing.lines().any(|l| l == "/src/made-here"), "{listing}");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_user_without_root_stages_through_a_command_in_a_user_namespace() {
    use std::os::unix::fs::PermissionsExt;
    if !common::is_root() {
        return;
    }
    let env = small_pack_repo();
    let src = env.path("src");
    // Files in a directory the copy makes: each is stored as it is closed, those closed before
    // the directory was watched when it is.
    let total = random_tree(&src.join("sub"), 12);
    fs::write(src.join("note"), b"first").unwrap();
    fs::write(src.join("gone"), b"deleted later").unwrap();
    std::os::unix::fs::symlink("note", src.join("link")).unwrap();
    let env = env.handed_to(NOBODY);
    let copied = env.path("copied");
    let go = env.path("go");
    let script = format!(
        "{} && touch {copied} && while [ ! -e {go} ]; do sleep 0.05; done",
        rsync_script(&src, &env.path("stage-mnt")),
        copied = copied.display(),
        go = go.display()
    );
    let (mut command, _) = stage_running(&env, &["--empty"], &script);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the copy", || copied.exists());
    wait_for("the copied files stored", || {
        data_bytes(&env) >= stored_while_copying(total)
    });
    fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_same_tree(&src, &restored(&env, &id));
    assert_spool_empty(&env);

    // An edited copy over that snapshot: changed, deleted, new, renamed, mode and xattr only.
    fs::write(src.join("note"), b"second, longer").unwrap();
    fs::remove_file(src.join("gone")).unwrap();
    fs::create_dir_all(src.join("new/deeper")).unwrap();
    fs::write(src.join("new/deeper/file"), b"new").unwrap();
    fs::rename(src.join("sub/f000"), src.join("sub/renamed")).unwrap();
    fs::set_permissions(src.join("sub/f001"), fs::Permissions::from_mode(0o600)).unwrap();
    xattr::set(src.join("sub/f002"), "user.tag", b"kept").unwrap();
    run("chown", &[Path::new("-R"), Path::new("65534:65534"), &src]);
    let (mut command, _) = stage_running(&env, &[], &rsync_script(&src, &env.path("stage-mnt")));
    let id = committed(&mut command);
    fs::remove_dir_all(env.path("restored")).unwrap();
    assert_same_tree(&src, &restored(&env, &id));
    assert_spool_empty(&env);
}

#[test]
fn a_staged_command_that_fails_or_is_stopped_commits_nothing() {
    if !common::is_root() {
        return;
    }
    let env = Env::with_repo(&[]);
    let dir = env.path("stage-mnt");
    let script = format!("touch {}/half && exit 23", dir.display());
    let (mut command, _) = stage_running(&env, &["--empty"], &script);
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(23));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sh exited with status 23: stage discarded"),
        "{err}"
    );

    let (mut command, _) = stage_running_argv(&env, &["--empty"], &["no-such-program-anywhere"]);
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(127));

    // Stopped: COMMAND gets the signal (it does not inherit cairn's blocked stop signals), and
    // cairn ends with it.
    let started = env.path("started");
    let script = format!(
        "touch {}/half {} && exec sleep 30",
        dir.display(),
        started.display()
    );
    let (mut command, _) = stage_running(&env, &["--empty"], &script);
    let mut child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the command to start", || started.exists());
    let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
    let sleeper = children.split_whitespace().next().expect("COMMAND runs");
    let status = fs::read_to_string(format!("/proc/{sleeper}/status")).unwrap();
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    let stop_signals = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM]
        .iter()
        .fold(0u64, |mask, s| mask | 1 << (s - 1));
    assert_eq!(blocked & stop_signals, 0, "COMMAND blocks {blocked:x}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("cairn to end", || child.try_wait().unwrap().is_some());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cairn was stopped: stage discarded"), "{err}");
    assert_eq!(snapshot_count(&env), 0);
    assert_spool_empty(&env);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

/// What must be in stored packs once `total` bytes of incompressible files were copied and
/// before the commit: all but the open pack (1 MiB in these repositories) and the solid group
/// being gathered (files' tails of at most 128 KiB, sealed once the group reaches half a pack:
/// at most 640 KiB), both stored when full or at the commit. Whether the last files' tails are in
/// them depends on where the chunker, seeded per repository, cut the files.
fn stored_while_copying(total: u64) -> u64 {
    total - (1 << 20) - (640 << 10)
}
