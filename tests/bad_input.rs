//! Bad input through the real binary: every case is one clear line on stderr, the documented
//! exit code, no panic, and no partial snapshot.

mod common;

use common::{Env, is_root, pseudo_random};
use std::fs;
use std::process::Output;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<_> = err.lines().filter(|l| l.starts_with("cairn:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
}

fn backed_up() -> Env {
    common::backed_up_tree().0
}

/// `cairn snapshots` with a password no key opens.
fn snapshots_with_wrong_password(env: &Env) -> Output {
    env.command(&["snapshots"])
        .env("CAIRN_PASSWORD", "wrong")
        .output()
        .unwrap()
}

#[test]
fn wrong_password_exits_12() {
    let env = Env::with_repo(&[]);
    let out = snapshots_with_wrong_password(&env);
    assert_one_line_error(&out, 12, "wrong password");
}

#[test]
fn missing_repository_exits_10() {
    let env = Env::new();
    assert_one_line_error(&env.run(&["snapshots"]), 10, "no repository at");
}

#[test]
fn init_over_an_existing_repository_is_refused() {
    let env = Env::with_repo(&[]);
    assert_one_line_error(
        &env.run(&["init", "--kdf-time", "1", "--kdf-memory", "1"]),
        1,
        "already exists",
    );
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::with_repo(&[]);
    assert_eq!(env.run(&["backup"]).status.code(), Some(2));
    assert_eq!(env.run(&["no-such-command"]).status.code(), Some(2));
    for subset in ["0/0", "4/3", "150%", "x"] {
        let out = env.run(&["check", "--read-data-subset", subset]);
        assert_eq!(out.status.code(), Some(2), "{subset}: {}", stderr(&out));
    }
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        "/tmp/x",
        "--overwrite",
        "sometimes",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn key_file_that_is_not_json_is_named() {
    let env = Env::with_repo(&[]);
    let key = env.repo_files("keys").remove(0);
    fs::write(&key, b"\x00\x01 not json").unwrap();
    let name = key.file_name().unwrap().to_str().unwrap().to_string();
    assert_one_line_error(&env.run(&["snapshots"]), 1, &name);
}

#[test]
fn path_that_does_not_exist_fails_without_a_snapshot() {
    let env = Env::with_repo(&[]);
    let missing = env.path("not-there");
    assert_one_line_error(
        &env.run(&["backup", missing.to_str().unwrap()]),
        1,
        "not-there",
    );
    assert!(env.repo_files("snapshots").is_empty());
}

#[test]
fn bit_flipped_pack_names_pack_blob_and_file_and_restores_the_rest() {
    // Without parity (with it, the flip heals: `tests/integrity.rs`).
    let env = Env::with_repo(&["--parity", "off"]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("victim"), pseudo_random(1, 3 << 20)).unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    fs::write(src.join("bystander"), b"intact").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let packs = env.repo_files("data");
    let victim_pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(victim_pack).unwrap();
    bytes[1000] ^= 0x20;
    fs::write(victim_pack, bytes).unwrap();
    let target = env.path("restored");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    let pack_id = victim_pack.file_name().unwrap().to_str().unwrap();
    assert_one_line_error(&out, 1, pack_id);
    let err = stderr(&out);
    assert!(err.contains("blob ") && err.contains("victim"), "{err}");
    assert_eq!(fs::read(target.join("src/bystander")).unwrap(), b"intact");
}

#[test]
fn truncated_pack_is_reported_by_name() {
    let env = backed_up();
    let packs = env.repo_files("data");
    let pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let len = fs::metadata(pack).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let target = env.path("restored");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_one_line_error(&out, 1, pack.file_name().unwrap().to_str().unwrap());
}

#[test]
fn damaged_index_segment_is_named() {
    let env = backed_up();
    let index = env.repo_files("index").remove(0);
    let mut bytes = fs::read(&index).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&index, bytes).unwrap();
    let out = env.run(&["ls", "latest"]);
    assert_one_line_error(&out, 1, index.file_name().unwrap().to_str().unwrap());
}

#[test]
fn damaged_and_truncated_snapshot_files_are_named() {
    let env = backed_up();
    let snap = env.repo_files("snapshots").remove(0);
    let bytes = fs::read(&snap).unwrap();
    let name = snap.file_name().unwrap().to_str().unwrap().to_string();
    fs::write(&snap, &bytes[..bytes.len() - 3]).unwrap();
    assert_one_line_error(&env.run(&["snapshots"]), 1, &name);
    fs::write(&snap, b"").unwrap();
    assert_one_line_error(&env.run(&["snapshots"]), 1, &name);
}

#[test]
fn tampered_config_is_refused() {
    let env = Env::with_repo(&["--compression", "2"]);
    let config = env.repo().join("config");
    let stored = fs::read_to_string(&config).unwrap();
    let text = stored.replace("\"compression\": 2", "\"compression\": 9");
    assert_ne!(text, stored, "init chose level 2");
    fs::write(&config, text).unwrap();
    assert_one_line_error(&env.run(&["snapshots"]), 1, "config");
}

#[test]
fn full_disk_fails_cleanly_and_leaves_no_snapshot() {
    if !is_root() {
        eprintln!(
            "needs root to mount a small tmpfs; the faulty-backend test covers ENOSPC without it"
        );
        return;
    }
    let env = Env::new();
    let repo = env.repo();
    fs::create_dir_all(&repo).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let result = std::panic::catch_unwind(|| {
        env.ok(&["init", "--kdf-time", "1", "--kdf-memory", "1"]);
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("big"), pseudo_random(5, 6 << 20)).unwrap();
        let out = env.run(&["backup", src.to_str().unwrap()]);
        assert_one_line_error(&out, 1, "No space left on device");
        assert!(env.repo_files("snapshots").is_empty());
    });
    std::process::Command::new("umount")
        .arg(&repo)
        .status()
        .unwrap();
    result.unwrap();
}

#[test]
fn repository_directories_are_0700_and_files_0400_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let out = env
        .command(&["init", "--kdf-time", "1", "--kdf-memory", "1"])
        .pre_exec_umask(0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let out = env
        .command(&["backup", src.to_str().unwrap()])
        .pre_exec_umask(0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut pending = vec![env.repo()];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
                assert_eq!(mode, 0o400, "{}", path.display());
                files += 1;
            }
        }
    }
    // config, a key, a data pack, a tree pack, an index file, a snapshot.
    assert!(files >= 6, "{files} files");
}

/// Sets the child's umask before it runs.
trait UmaskExt {
    fn pre_exec_umask(&mut self, mask: u32) -> &mut Self;
}

impl UmaskExt for std::process::Command {
    fn pre_exec_umask(&mut self, mask: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe and touches nothing shared.
        unsafe {
            self.pre_exec(move || {
                libc::umask(mask);
                Ok(())
            })
        }
    }
}

/// Runs `args` under a 1.5 GiB address-space limit (reading a 3 GiB file whole could not
/// fit) and a 20-second deadline (a FIFO opened for reading blocks forever).
fn run_bounded(env: &Env, args: &[&str]) -> Output {
    let mut child = env.command(args);
    child
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        child.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 3 << 29,
                rlim_max: 3 << 29,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let mut child = child.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("cairn {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Replaces a repository file by `make(path)`.
fn replace(path: &std::path::Path, make: impl FnOnce(&std::path::Path)) {
    fs::remove_file(path).unwrap();
    make(path);
}

#[test]
fn a_key_file_linked_to_dev_zero_is_refused_unread() {
    let env = backed_up();
    let key = env.repo_files("keys").remove(0);
    replace(&key, |p| {
        std::os::unix::fs::symlink("/dev/zero", p).unwrap()
    });
    assert_one_line_error(&run_bounded(&env, &["snapshots"]), 1, "not a regular file");
}

#[test]
fn a_config_that_is_a_fifo_is_refused_without_hanging() {
    let env = backed_up();
    replace(&env.repo().join("config"), |p| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
    });
    assert_one_line_error(&run_bounded(&env, &["snapshots"]), 1, "not a regular file");
}

#[test]
fn a_3_gib_snapshot_or_index_file_is_refused_unread() {
    for (dir, command) in [
        ("snapshots", &["snapshots"][..]),
        ("index", &["ls", "latest"]),
    ] {
        let env = backed_up();
        let file = env.repo_files(dir).remove(0);
        let huge = fs::OpenOptions::new().write(true).open(&file).unwrap();
        huge.set_len(3 << 30).unwrap();
        assert_one_line_error(
            &run_bounded(&env, command),
            1,
            "more than such a file can hold",
        );
    }
}

#[test]
fn hosts_and_tags_that_cannot_be_directory_names_are_refused() {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for bad in [
        &["--host", "../x"][..],
        &["--host", ""],
        &["--tag", ""],
        &["--tag", "a/b"],
        &["--tag", ".."],
        &["--tag", "bell\x07"],
    ] {
        let mut args = vec!["backup", src.to_str().unwrap()];
        args.extend_from_slice(bad);
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    assert!(env.repo_files("snapshots").is_empty());
}

#[test]
fn a_closed_output_ends_cairn_quietly_not_with_a_panic() {
    use std::process::Stdio;
    let env = backed_up();
    // stderr a pipe nobody reads any more, on an error: the error's own exit code, no panic.
    let mut child = Env::new()
        .command(&["snapshots"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(10));
    // stdout a pipe whose reader left (`cairn ls | head -0`): the code a SIGPIPE would give.
    let mut child = env
        .command(&["ls", "latest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, "");
    assert_eq!(out.status.code(), Some(141));
    // stderr closed altogether (`2>&-`): cairn still runs and reports by its exit code.
    let mut command = env.command(&["snapshots"]);
    command.env("CAIRN_PASSWORD", "wrong").stdout(Stdio::null());
    // SAFETY: close is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::close(2);
            Ok(())
        });
    }
    assert_eq!(command.status().unwrap().code(), Some(12));
}

#[test]
fn a_stage_whose_path_is_not_a_directory_of_the_parent_is_refused_not_started_empty() {
    let env = backed_up();
    let dir = env.path("mnt");
    fs::create_dir_all(&dir).unwrap();
    let out = env.run(&[
        "stage",
        dir.to_str().unwrap(),
        "--parent",
        "latest",
        "--path",
        "/no/such",
    ]);
    assert_one_line_error(
        &out,
        1,
        "has no directory \"such\" at its root (it has: src)",
    );
}

#[test]
fn an_index_entry_claiming_a_blob_larger_than_cairn_writes_is_refused_unread() {
    use cairn::backend::local::LocalBackend;
    use cairn::repo::Repository;
    use cairn::repo::ids::{BlobKind, PackId};
    use cairn::repo::index::{Segment, SegmentPack};
    use std::sync::Arc;
    let env = backed_up();
    let repo = Repository::open(Arc::new(LocalBackend::new(env.repo())), b"correct horse").unwrap();
    // A key holder points every data blob at 1 GiB of a sparse "pack", listed first.
    let fake = PackId([0xee; 32]);
    let dir = env.repo().join("data/ee");
    fs::create_dir_all(&dir).unwrap();
    fs::File::create(dir.join(fake.to_hex()))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let mut packs = vec![SegmentPack {
        pack: fake,
        blobs: Vec::new(),
    }];
    for (_, segment) in repo.index_files().unwrap() {
        for pack in segment.unwrap().packs {
            for entry in pack.blobs.iter().filter(|e| e.kind == BlobKind::Data) {
                let mut huge = *entry;
                huge.offset = 0;
                huge.sealed_len = (1 << 30) - 1;
                packs[0].blobs.push(huge);
            }
            packs.push(pack);
        }
    }
    for old in env.repo_files("index") {
        fs::remove_file(old).unwrap();
    }
    repo.save_index_segment(&Segment { packs }).unwrap();
    let target = env.path("target");
    let out = run_bounded(
        &env,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_one_line_error(&out, 1, "more than a Data blob can hold");
}

#[test]
fn one_damaged_snapshot_file_does_not_hide_the_others() {
    let (env, src) = common::backed_up_tree();
    fs::write(src.join("small.txt"), b"second").unwrap();
    env.ok(&["backup", src.to_str().unwrap()]);
    let first = env.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let damaged = env.repo().join("snapshots").join(&first);
    fs::remove_file(&damaged).unwrap();
    fs::write(&damaged, b"junk").unwrap();
    // Listing shows the good one and fails naming the bad one; restore and ls of the good work.
    let out = env.run(&["snapshots"]);
    assert_one_line_error(&out, 1, &first);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 snapshots"));
    let target = env.path("target");
    let good = fs::read_dir(env.repo().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| *n != first)
        .unwrap();
    env.restore(&good[..8], &target, &[]);
    // A stray copy sharing the good one's digits does not make its full id ambiguous.
    let snapshots = env.repo().join("snapshots");
    fs::copy(snapshots.join(&good), snapshots.join(format!("{good}.bak"))).unwrap();
    env.ok(&["ls", &good]);
    fs::remove_file(snapshots.join(format!("{good}.bak"))).unwrap();
    assert_eq!(fs::read(target.join("src/small.txt")).unwrap(), b"second");
    // `latest` could be the damaged one: refused rather than guessed (forget latest must not
    // remove an older snapshot).
    assert_one_line_error(
        &env.run(&["forget", "latest"]),
        1,
        "could name the wrong snapshot",
    );
    // Named by its id, the damaged one is an error naming it, never another snapshot; forget
    // removes it by its full id.
    assert_one_line_error(&env.run(&["ls", &first[..8]]), 1, &first);
    assert_one_line_error(&env.run(&["forget", &first[..8]]), 1, "full id");
    env.ok(&["forget", &first]);
    assert!(!damaged.exists());
    env.ok(&["snapshots"]);
}

/// Issue 22, item 8: a key file damaged on the store (one digit of its salt changed, still
/// well-formed JSON) no longer hashes to its name: reported as damaged, exit 1, not taken for a
/// wrong password (exit 12).
#[test]
fn a_damaged_key_file_is_named_not_taken_for_a_wrong_password() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_repo(&[]);
    let key = env.repo_files("keys").remove(0);
    let mut text = fs::read_to_string(&key).unwrap();
    let at = text.find("\"salt\": \"").unwrap() + "\"salt\": \"".len();
    let digit = if &text[at..at + 1] == "0" { "1" } else { "0" };
    text.replace_range(at..at + 1, digit);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&key, text).unwrap();
    let name = key.file_name().unwrap().to_str().unwrap().to_string();
    let out = env.run(&["snapshots"]);
    assert_one_line_error(&out, 1, &name);
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
}

/// A stray file in `keys/` is skipped, and beside an intact key a damaged one does not turn a
/// wrong password into a report of damage: the password is wrong (exit 12), the damage a
/// warning.
#[test]
fn a_wrong_password_beside_a_stray_or_damaged_key_file_is_still_exit_12() {
    let env = Env::with_repo(&[]);
    let key = env.repo_files("keys").remove(0);
    fs::write(env.repo().join("keys/README"), b"stray").unwrap();
    fs::write(
        env.repo().join("keys").join("ab".repeat(32)),
        fs::read(&key).unwrap(),
    )
    .unwrap();
    let out = snapshots_with_wrong_password(&env);
    assert_one_line_error(&out, 12, "wrong password");
    assert!(
        stderr(&out).contains("keys/README: not a key file name"),
        "{}",
        stderr(&out)
    );
    env.ok(&["snapshots"]);
}
