//! The writable stage, mounted for real: what rsync and cp put into it becomes a snapshot equal
//! to the source; a second rsync stores only what changed; a stage killed mid-rsync leaves no
//! snapshot and a clean repository whose packs the next stage re-uses; --abort commits nothing;
//! and a large file streams through in bounded memory. Each runs against both kinds of stage.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{Env, assert_same_tree, make_tree, pseudo_random};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::stage::*;
use support::{Mounted, peak_rss_kib, wait_for};

both_kinds!(
    rsync_of_every_node_kind_commits_a_snapshot_equal_to_the_source,
    a_second_rsync_of_an_edited_tree_transfers_and_stores_only_the_changes,
    a_directory_listed_in_many_replies_shows_every_entry_once_with_its_attributes,
    cp_a_into_an_empty_stage_works_the_same,
    out_of_order_writes_in_place_edits_and_reads_of_files_just_written,
    kill_9_mid_rsync_leaves_no_snapshot_a_clean_check_and_little_to_store_again,
    abort_commits_nothing,
    commit_on_unmount_commits_when_unmounted,
    a_2_gib_file_streams_through_the_stage_in_bounded_memory,
    the_control_socket_is_private_and_no_failed_or_killed_stage_leaves_one_in_the_way,
    link_counts_and_ctimes_follow_links_renames_and_moves_as_on_ext4,
    fifo_and_symlink_times_set_in_a_stage_survive_commit_and_restore_to_the_nanosecond,
    a_tree_copied_the_moment_it_is_made_keeps_every_time_through_stage_and_restore,
    an_acl_sets_the_mode_and_a_later_chmod_narrows_it_through_restore,
);

fn rsync_of_every_node_kind_commits_a_snapshot_equal_to_the_source(kind: Kind) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    let mounted = stage(&env, kind, &["--empty", "--host", "h1", "--tag", "t1"]);
    rsync(&["-aHX", "--delete"], &src, &mounted.dir);
    let id = commit(&env, mounted);
    assert_same_tree(&src, &restored(&env, &id));
    env.ok(&["check", "--read-data"]);
    let snapshot = &env.json(&["snapshots"])[0];
    assert_eq!(snapshot["hostname"], "h1");
    assert_eq!(snapshot["tags"], serde_json::json!(["t1"]));
    assert_eq!(snapshot["paths"], serde_json::json!(["/src"]));
    // The same snapshot through the read-only view.
    let view = Mounted::start(&env, "mount", &[&id[..8]]);
    assert_same_tree(&src, &view.dir.join("src"));
    view.stop();
}

fn a_second_rsync_of_an_edited_tree_transfers_and_stores_only_the_changes(kind: Kind) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20u64 {
        fs::write(src.join(format!("d/f{i}")), pseudo_random(i, 1 << 20)).unwrap();
    }
    let first = stage(&env, kind, &["--empty"]);
    rsync(&["-a"], &src, &first.dir);
    commit(&env, first);
    let before = data_bytes(&env);
    // An unchanged tree: rsync finds every size and mtime equal and sends nothing.
    let unchanged = stage(&env, kind, &[]);
    let stats = rsync(&["-a", "--stats"], &src, &unchanged.dir);
    assert!(
        stats.contains("Number of regular files transferred: 0"),
        "{stats}"
    );
    commit(&env, unchanged);
    // Edit one file, add one, delete one.
    fs::write(src.join("d/f3"), pseudo_random(99, 1 << 20)).unwrap();
    fs::write(src.join("d/new"), b"new file").unwrap();
    fs::remove_file(src.join("d/f7")).unwrap();
    let edited = stage(&env, kind, &[]);
    let stats = rsync(&["-a", "--delete", "--stats"], &src, &edited.dir);
    assert!(
        stats.contains("Number of regular files transferred: 2"),
        "{stats}"
    );
    let id = commit(&env, edited);
    let stored = data_bytes(&env) - before;
    assert!(stored < 2 << 20, "{stored} bytes stored for a 1 MiB edit");
    assert_same_tree(&src, &restored(&env, &id));
    assert_eq!(snapshot_count(&env), 3);
}

fn a_directory_listed_in_many_replies_shows_every_entry_once_with_its_attributes(kind: Kind) {
    let env = Env::with_repo(&[]);
    let mounted = stage(&env, kind, &["--empty"]);
    let dir = mounted.dir.join("many");
    fs::create_dir(&dir).unwrap();
    for i in 0..3000u32 {
        fs::write(
            dir.join(format!("entry-with-a-long-name-{i:05}")),
            i.to_le_bytes(),
        )
        .unwrap();
    }
    let mut listed: Vec<(String, u64)> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed.len(), 3000);
    assert!(listed.iter().all(|(_, len)| *len == 4));
    assert_eq!(listed[0].0, "entry-with-a-long-name-00000");
    assert_eq!(listed[2999].0, "entry-with-a-long-name-02999");
    let id = commit(&env, mounted);
    let restored = restored(&env, &id);
    assert_eq!(fs::read_dir(restored.join("many")).unwrap().count(), 3000);
}

fn cp_a_into_an_empty_stage_works_the_same(kind: Kind) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    fs::remove_file(src.join("socket")).unwrap(); // cp cannot copy a socket; rsync can
    let mounted = stage(&env, kind, &["--empty"]);
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(&mounted.dir)
        .output()
        .unwrap();
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let id = commit(&env, mounted);
    // cp -a sets permissions by writing each file's ACL: the snapshot records the mode.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(src.join("small.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    let listed = env.ok(&["ls", &id[..8], "--json"]);
    let small = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["path"].as_str().unwrap().ends_with("/small.txt"))
        .unwrap();
    assert_eq!(small["mode"], mode, "{small}");
    assert_same_tree(&src, &restored(&env, &id));
}

fn out_of_order_writes_in_place_edits_and_reads_of_files_just_written(kind: Kind) {
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;
    let env = Env::with_repo(&[]);
    let mounted = stage(&env, kind, &["--empty"]);
    let dir = mounted.dir.clone();
    // Written back to front: spooled, stored on close.
    let mut backwards = pseudo_random(7, 3 << 20);
    {
        let file = fs::File::create(dir.join("backwards")).unwrap();
        for piece in (0..3).rev() {
            let range = piece << 20..(piece + 1) << 20;
            file.write_all_at(&backwards[range.clone()], range.start as u64)
                .unwrap();
        }
    }
    // Written in order and read back through a second handle before the writer closes: the
    // chunks are still in the stage's open pack.
    let mut big = pseudo_random(8, 40 << 20);
    {
        let mut writer = fs::File::create(dir.join("big")).unwrap();
        writer.write_all(&big).unwrap();
        let mut back = Vec::new();
        fs::File::open(dir.join("big"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == big, "read back differs");
    }
    // Edits inside stored files, and a truncation to a non-zero length.
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("big"))
        .unwrap()
        .write_all_at(b"EDIT", 1000)
        .unwrap();
    big[1000..1004].copy_from_slice(b"EDIT");
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("backwards"))
        .unwrap()
        .set_len((2 << 20) + 5)
        .unwrap();
    backwards.truncate((2 << 20) + 5);
    let id = commit(&env, mounted);
    let out = restored(&env, &id);
    assert!(fs::read(out.join("big")).unwrap() == big, "big differs");
    assert!(
        fs::read(out.join("backwards")).unwrap() == backwards,
        "backwards differs"
    );
}

fn kill_9_mid_rsync_leaves_no_snapshot_a_clean_check_and_little_to_store_again(kind: Kind) {
    let env = small_pack_repo();
    let src = env.path("src");
    let total = random_tree(&src, 60);
    let mut mounted = stage(&env, kind, &["--empty"]);
    let mut rsync = Command::new("rsync")
        .args(["-a", "--bwlimit=20000"])
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", mounted.dir.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("half the data stored", || data_bytes(&env) > total / 3);
    let pid = nix::unistd::Pid::from_raw(mounted.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = mounted.child.take().unwrap().wait();
    let _ = rsync.wait();
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(&mounted.dir)
        .status();
    let _ = Command::new("umount").arg("-l").arg(&mounted.dir).status();
    drop(mounted);
    assert_eq!(snapshot_count(&env), 0);
    env.ok(&["check", "--read-data"]);
    let first = data_bytes(&env);
    let again = stage(&env, kind, &["--empty"]);
    self::rsync(&["-a"], &src, &again.dir);
    let id = commit(&env, again);
    let second = data_bytes(&env) - first;
    // The second run stores what the first did not, plus at most what was in flight.
    let repeated = (first + second).saturating_sub(total);
    assert!(
        repeated * 10 < total,
        "{repeated} of {total} bytes stored twice (first run {first}, second {second})"
    );
    env.ok(&["check", "--read-data"]);
    assert_same_tree(&src, &restored(&env, &id));
}

fn abort_commits_nothing(kind: Kind) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    let snapshots = env.json(&["snapshots"]);
    fs::write(src.join("small.txt"), b"changed").unwrap();
    let mounted = stage(&env, kind, &[]);
    rsync(&["-a"], &src, &mounted.dir);
    env.ok(&["stage", "--abort", mounted.dir.to_str().unwrap()]);
    mounted.wait_exit();
    assert_eq!(env.json(&["snapshots"]), snapshots);
    env.ok(&["check"]);
    // Unmounting without --commit discards too, and says so.
    let mounted = stage(&env, kind, &[]);
    mounted.stop();
    assert_eq!(env.json(&["snapshots"]), snapshots);
    let log = fs::read_to_string(env.path("stage.log")).unwrap();
    assert!(log.contains("stage discarded"), "{log}");
}

fn commit_on_unmount_commits_when_unmounted(kind: Kind) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    let mounted = stage(&env, kind, &["--empty", "--commit-on-unmount"]);
    rsync(&["-aHX"], &src, &mounted.dir);
    mounted.stop();
    assert_eq!(snapshot_count(&env), 1);
    assert_same_tree(&src, &restored(&env, "latest"));
    assert_spool_empty(&env);
    // Unmounted by the user rather than stopped, after a change to a file the parent holds
    // under two names (small.txt and dir/hardlink).
    fs::write(src.join("small.txt"), b"changed under one name\n").unwrap();
    fs::write(src.join("dir/new"), b"new").unwrap();
    let mounted = stage(&env, kind, &["--commit-on-unmount"]);
    rsync(&["-aHX"], &src, &mounted.dir);
    let unmount = match kind {
        Kind::Fuse => Command::new("fusermount3")
            .arg("-u")
            .arg(&mounted.dir)
            .status(),
        // Lazily: a plain umount is refused while the watcher still reads a file just closed.
        Kind::Overlay => Command::new("umount").arg("-l").arg(&mounted.dir).status(),
    };
    assert!(unmount.unwrap().success());
    mounted.wait_exit();
    assert_eq!(snapshot_count(&env), 2);
    fs::remove_dir_all(env.path("restored")).unwrap();
    assert_same_tree(&src, &restored(&env, "latest"));
    assert_spool_empty(&env);
}

fn a_2_gib_file_streams_through_the_stage_in_bounded_memory(kind: Kind) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big: PathBuf = src.join("big");
    {
        let file = fs::File::create(&big).unwrap();
        let block = pseudo_random(5, 8 << 20);
        for i in 0..256u64 {
            // Each 8 MiB block differs, so nothing dedups and every byte is stored.
            let mut block = block.clone();
            block[..8].copy_from_slice(&i.to_le_bytes());
            std::os::unix::fs::FileExt::write_all_at(&file, &block, i * (8 << 20)).unwrap();
        }
    }
    let mounted = stage(&env, kind, &["--empty"]);
    rsync(&["-a"], &src, &mounted.dir);
    let rss = peak_rss_kib(mounted.pid());
    assert!(rss < 256 << 10, "stage peak RSS {rss} KiB");
    assert_eq!(
        fs::metadata(mounted.dir.join("big")).unwrap().len(),
        2 << 30
    );
    commit(&env, mounted);
    let snapshots = env.json(&["snapshots"]);
    assert_eq!(snapshots[0]["summary"]["bytes"], 2u64 << 30);
}

/// Runs `sh -c script` in `dir` as user `uid`; returns whether it succeeded and its stderr.
fn sh_as(uid: u32, dir: &Path, script: &str) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Non-root FUSE mounts need /dev/fuse open to other users (Debian's default; `.ci/run` sets it
/// where a container left it root-only).
fn fuse_open_to_users() -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata("/dev/fuse").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

#[test]
fn a_stage_run_by_a_user_refuses_what_the_user_could_not_do_on_a_real_file_system() {
    if !common::is_root() {
        return;
    }
    assert!(
        fuse_open_to_users(),
        "/dev/fuse must be usable by other users (chmod 0666 /dev/fuse, as .ci/run does)"
    );
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("rootdir")).unwrap();
    fs::write(src.join("roots"), b"root's file").unwrap();
    // The staged directory is the user's; a file and a directory in it are root's.
    nix::unistd::chown(&src, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let env = env.handed_to(NOBODY);
    let mounted = Mounted::start(&env, "stage", &["--parent", "latest"]);
    let long = "n".repeat(256);
    let refused = [
        "touch mine && chown 0 mine".to_string(),
        "touch mine2 && chgrp 0 mine2".to_string(),
        "chmod 4777 roots".to_string(),
        "mknod dev c 1 3".to_string(),
        format!("touch {long}"),
        format!("mkdir {long}"),
        format!("ln -s target {long}"),
        format!("ln roots {long}"),
        format!("touch moved && mv moved {long}"),
        format!("mkfifo {long}"),
        "echo more >> roots".to_string(),
        "truncate -s 1 roots".to_string(),
        "touch -d 2001-01-01 roots".to_string(),
        "setfattr -n user.x -v 1 roots".to_string(),
        "touch rootdir/new".to_string(),
        "ln roots hardlink-to-roots".to_string(),
        "mkdir rootdir/new".to_string(),
    ];
    for script in &refused {
        let (ok, err) = sh_as(NOBODY, &mounted.dir, script);
        assert!(!ok, "{script:?} was allowed");
        assert!(
            // A write is refused when it arrives (the stage sees no opens); some tools report
            // the refused write as an I/O error.
            [
                "Operation not permitted",
                "File name too long",
                "Permission denied",
                "I/O error"
            ]
            .iter()
            .any(|e| err.contains(e)),
            "{script:?}: {err}"
        );
    }
    let (ok, err) = sh_as(NOBODY, &mounted.dir, "chmod 4755 mine && mkfifo fifo");
    assert!(ok, "{err}");
    commit(&env, mounted);
    let listing: Vec<serde_json::Value> = env
        .ok(&["ls", "latest", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entry = |name: &str| {
        listing
            .iter()
            .find(|e| e["path"].as_str().unwrap().ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} not in {listing:?}"))
            .clone()
    };
    assert_eq!(entry("mine")["uid"], NOBODY);
    assert_eq!(entry("mine")["mode"], 0o4755);
    assert_eq!(entry("mine2")["gid"], NOBODY);
    assert_eq!(entry("roots")["uid"], 0);
    assert_eq!(entry("roots")["mode"], 0o644);
    assert_eq!(entry("roots")["size"], 11, "root's file was changed");
}

fn the_control_socket_is_private_and_no_failed_or_killed_stage_leaves_one_in_the_way(kind: Kind) {
    let env = Env::with_repo(&[]);
    let home = env.path("home");
    fs::create_dir_all(&home).unwrap();
    // cairn with a home of its own and no runtime directory: its socket goes to the home.
    let in_home = |args: &[&str]| {
        let mut args = args.to_vec();
        if kind == Kind::Fuse && args.get(1) != Some(&"--commit") {
            args.push("--fuse");
        }
        let mut command = env.command(&args);
        command
            .env("HOME", &home)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CACHE_HOME")
            .stderr(std::process::Stdio::piped());
        command
    };
    let run = |args: &[&str]| in_home(args).output().unwrap();
    let sockets = || -> Vec<PathBuf> {
        fs::read_dir(home.join(".cache/cairn"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    // A mount that fails leaves no socket behind.
    let out = run(&[
        "stage",
        env.path("missing").to_str().unwrap(),
        "--path",
        "/src",
    ]);
    assert!(!out.status.success());
    assert_eq!(sockets(), Vec::<PathBuf>::new());

    // A running stage's socket is 0600 in a 0700 directory of its user.
    let dir = env.path("mnt");
    fs::create_dir_all(&dir).unwrap();
    let mut child = in_home(&["stage", dir.to_str().unwrap(), "--path", "/src"])
        .spawn()
        .unwrap();
    wait_for("the stage", || support::is_mounted(&dir));
    use std::os::unix::fs::PermissionsExt;
    let socket = sockets()
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "sock"))
        .expect("a control socket");
    assert_eq!(
        fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let private = fs::metadata(home.join(".cache/cairn")).unwrap();
    assert_eq!(private.permissions().mode() & 0o777, 0o700);

    // A second stage on the same directory is refused while the first answers.
    let out = run(&["stage", dir.to_str().unwrap(), "--path", "/src"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already mounted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Killed, it leaves its socket; the next stage replaces it and commits through it.
    child.kill().unwrap();
    child.wait().unwrap();
    // A killed FUSE stage's mount answers ENOTCONN until unmounted; a killed overlay stage's
    // overlay stays mounted (over a dead view) and its spool stays, until then.
    let _ = Command::new("umount").arg("-l").arg(&dir).status();
    wait_for("the unmount", || !support::is_mounted(&dir));
    let left = sockets();
    assert_eq!(
        left.iter()
            .filter(|p| p.extension().is_some_and(|e| e == "sock"))
            .count(),
        1,
        "{left:?}"
    );
    let mut child = in_home(&["stage", dir.to_str().unwrap(), "--path", "/src", "--empty"])
        .spawn()
        .unwrap();
    wait_for("the second stage", || support::is_mounted(&dir));
    fs::write(dir.join("f"), b"x").unwrap();
    let out = run(&["stage", "--commit", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(child.wait().unwrap().success());
    assert_eq!(sockets(), Vec::<PathBuf>::new());
}

fn link_counts_and_ctimes_follow_links_renames_and_moves_as_on_ext4(kind: Kind) {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo(&[]);
    let mounted = stage(&env, kind, &["--empty"]);
    let at = |p: &str| mounted.dir.join(p);
    let nlink = |p: &str| fs::symlink_metadata(at(p)).unwrap().nlink();
    let ctime = |p: &str| {
        let m = fs::symlink_metadata(at(p)).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    let tick = || std::thread::sleep(Duration::from_millis(20));
    fs::create_dir_all(at("a/sub")).unwrap();
    fs::create_dir(at("b")).unwrap();
    assert_eq!((nlink("a"), nlink("b")), (3, 2));
    // overlayfs shows a directory merged with the parent's (the root here) with one link, as
    // file systems that do not count subdirectories do (find and du know to ignore it).
    let root_links = if kind == Kind::Overlay && common::is_root() {
        1
    } else {
        4
    };
    assert_eq!(nlink(""), root_links);
    fs::rename(at("a/sub"), at("b/sub")).unwrap();
    assert_eq!((nlink("a"), nlink("b")), (2, 3));

    fs::write(at("f"), b"x").unwrap();
    let before = ctime("f");
    tick();
    fs::hard_link(at("f"), at("g")).unwrap();
    assert_eq!(nlink("f"), 2);
    assert!(ctime("f") > before, "link left the ctime");
    let before = ctime("g");
    tick();
    fs::remove_file(at("f")).unwrap();
    assert_eq!(nlink("g"), 1);
    assert!(
        ctime("g") > before,
        "unlink left the remaining link's ctime"
    );
    let (before, dir_before) = (ctime("g"), ctime("b"));
    tick();
    fs::rename(at("g"), at("b/g")).unwrap();
    assert!(ctime("b/g") > before, "rename left the ctime");
    assert!(
        ctime("b") > dir_before,
        "rename left the new parent's ctime"
    );
    mounted.stop();
}

fn fifo_and_symlink_times_set_in_a_stage_survive_commit_and_restore_to_the_nanosecond(kind: Kind) {
    use std::os::unix::fs::MetadataExt;
    let env = Env::with_repo(&[]);
    let mounted = stage(&env, kind, &["--empty"]);
    nix::unistd::mkfifo(
        &mounted.dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink("target", mounted.dir.join("link")).unwrap();
    let times = [
        (
            "fifo",
            filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789),
        ),
        (
            "link",
            filetime::FileTime::from_unix_time(1_500_000_000, 987_654_321),
        ),
    ];
    for (name, time) in times {
        filetime::set_symlink_file_times(mounted.dir.join(name), time, time).unwrap();
    }
    commit(&env, mounted);
    let restored = restored(&env, "latest");
    for (name, time) in times {
        let meta = fs::symlink_metadata(restored.join(name)).unwrap();
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec() as u32),
            (time.unix_seconds(), time.nanoseconds()),
            "{name}"
        );
    }
}

fn a_tree_copied_the_moment_it_is_made_keeps_every_time_through_stage_and_restore(kind: Kind) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    std::os::unix::fs::symlink("dir", src.join("link")).unwrap();
    fs::write(src.join("dir/file"), b"x").unwrap();
    let mounted = stage(&env, kind, &["--empty"]);
    rsync(&["-aHX"], &src, &mounted.dir);
    commit(&env, mounted);
    assert_same_tree(&src, &restored(&env, "latest"));
}

fn an_acl_sets_the_mode_and_a_later_chmod_narrows_it_through_restore(kind: Kind) {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo(&[]);
    let mounted = stage(&env, kind, &["--empty"]);
    let file = mounted.dir.join("f");
    fs::write(&file, b"acl").unwrap();
    // user::rw-, user:nobody:rw-, group::r--, mask::rw-, other::r-- (the xattr form).
    let acl = "0x0200000001000600ffffffff02000600feff000004000400ffffffff10000600ffffffff20000400ffffffff";
    let set = Command::new("setfattr")
        .args(["-n", "system.posix_acl_access", "-v", acl])
        .arg(&file)
        .status()
        .unwrap();
    assert!(set.success());
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&file),
        0o664,
        "the ACL's mask and other bits set the mode"
    );
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let id = commit(&env, mounted);
    let restored = restored(&env, &id[..8]);
    assert_eq!(
        mode(&restored.join("f")),
        0o600,
        "a stale ACL widened the restored mode"
    );
}
