//! Shared helpers for the integration tests: a temporary repository driven through the real
//! `cairn` binary, a generator of trees with every node kind, and a byte-and-metadata
//! comparison of two trees.
#![allow(dead_code)]

pub mod crafted;
pub mod damage;
pub mod edits;
pub mod liar;
pub mod proxy;
pub mod s3;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Key derivation cheap enough for tests that open repositories through the library.
pub const FAST_KDF: cairn::repo::keys::KdfParams = cairn::repo::keys::KdfParams {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// A repository in a temporary directory plus a scratch area.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// A repository location other than the local `repo` directory (an S3 one).
    pub location: Option<String>,
    /// Runs cairn as this user instead of the test's (see [`Env::handed_to`]).
    pub user: Option<u32>,
}

impl Env {
    /// A fresh scratch area, with no repository yet.
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            location: None,
            user: None,
        }
    }

    /// A scratch area whose repository is at `location` (not yet initialised).
    pub fn at(location: String) -> Env {
        Env {
            location: Some(location),
            ..Env::new()
        }
    }

    /// A scratch area with an initialised repository (cheap key derivation for speed).
    pub fn with_repo(extra: &[&str]) -> Env {
        let env = Env::new();
        let mut args = vec!["init", "--kdf-time", "1", "--kdf-memory", "1"];
        args.extend_from_slice(extra);
        env.ok(&args);
        env
    }

    /// The same scratch area, handed (with the repository) to user `uid`, whom cairn then runs
    /// as, with a home of its own in the scratch area and no runtime directory. Needs root.
    pub fn handed_to(mut self, uid: u32) -> Env {
        fs::create_dir_all(self.path("home")).unwrap();
        let status = Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        self.user = Some(uid);
        self
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs cairn with the repository and password in the environment.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cairn runs")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        let location = match &self.location {
            Some(location) => std::ffi::OsString::from(location),
            None => self.repo().into_os_string(),
        };
        cmd.args(args)
            .env("CAIRN_REPOSITORY", location)
            .envs(s3::S3Server::env())
            .env("CAIRN_PASSWORD", "correct horse")
            .env_remove("CAIRN_PASSWORD_FILE");
        if let Some(uid) = self.user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid)
                .gid(uid)
                .env("HOME", self.path("home"))
                .env_remove("XDG_RUNTIME_DIR")
                .env_remove("XDG_CACHE_HOME");
        }
        cmd
    }

    /// Runs `cmd` to its end and returns its exit status, its standard error (after its
    /// standard output) and the peak resident memory of that one process in KiB (from `wait4`,
    /// which reports it for exactly the child waited for).
    // The child is waited for by wait4, which clippy does not see.
    #[allow(clippy::zombie_processes)]
    pub fn measured(mut cmd: Command) -> (std::process::ExitStatus, String, u64) {
        use std::os::unix::process::ExitStatusExt;
        let out = tempfile::NamedTempFile::new().unwrap();
        let err = tempfile::NamedTempFile::new().unwrap();
        let child = cmd
            .stdout(out.reopen().unwrap())
            .stderr(err.reopen().unwrap())
            .spawn()
            .expect("cairn runs");
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child, once; std never waits for it after this.
        let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(waited, child.id() as i32, "wait4");
        let stderr = fs::read_to_string(out.path()).unwrap_or_default()
            + &fs::read_to_string(err.path()).unwrap_or_default();
        (
            std::process::ExitStatus::from_raw(status),
            stderr,
            usage.ru_maxrss as u64,
        )
    }

    /// Runs cairn and insists on exit code 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cairn {args:?} failed with {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Restores `spec` into `target` with `extra` options, insisting on success.
    pub fn restore(&self, spec: &str, target: &Path, extra: &[&str]) -> String {
        let mut args = vec![
            "restore",
            spec,
            "--target",
            target.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// Runs cairn with `--json` and parses its output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("json output")
    }

    /// Every snapshot's full id, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .expect("a list of snapshots")
            .iter()
            .map(|s| s["id"].as_str().expect("an id").to_string())
            .collect()
    }

    /// The files under the repository's `dir` whose name is an id (64 hex digits): packs,
    /// index files, snapshots, sessions, garbage files — not markers, claims or recorded
    /// sessions beside them.
    pub fn id_files(&self, dir: &str) -> Vec<PathBuf> {
        self.repo_files(dir)
            .into_iter()
            .filter(|f| f.file_name().is_some_and(|n| n.len() == 64))
            .collect()
    }

    /// Every file under the repository's `dir` (e.g. `data`, `index`).
    pub fn repo_files(&self, dir: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        collect_files(&self.repo().join(dir), &mut out);
        out.sort();
        out
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A repository holding one snapshot of a [`make_tree`] tree at `src`.
pub fn backed_up_tree() -> (Env, PathBuf) {
    let env = Env::with_repo(&[]);
    let src = env.path("src");
    make_tree(&src);
    env.ok(&["backup", src.to_str().unwrap()]);
    (env, src)
}

/// Deterministic pseudo-random bytes (xorshift), so trees are the same on every run.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Builds a tree with every node kind cairn records: small, empty, multi-chunk and sparse
/// files, a directory with many entries, symlinks, hard links, a fifo, a socket, a character
/// device (as root), a non-UTF-8 name, xattrs, odd modes, owners (as root) and old times.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/deeper")).unwrap();
    fs::write(root.join("small.txt"), b"hello, world\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("dir/big.bin"), pseudo_random(1, 5 << 20)).unwrap();
    fs::write(root.join("dir/deeper/text.txt"), "line\n".repeat(20_000)).unwrap();
    for i in 0..150 {
        fs::write(root.join(format!("dir/many-{i:03}")), format!("file {i}\n")).unwrap();
    }
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"tail", (8 << 20) - 4).unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    fs::hard_link(root.join("small.txt"), root.join("dir/hardlink")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9-latin1")),
        b"bytes name",
    )
    .unwrap();
    xattr::set(root.join("small.txt"), "user.comment", b"kept").unwrap();
    xattr::set(root.join("dir"), "user.dir", b"\x00\xffbinary").unwrap();
    fs::set_permissions(
        root.join("dir/deeper/text.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(root.join("empty"), fs::Permissions::from_mode(0o4755)).unwrap();
    if is_root() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        mknod(
            &root.join("null-device"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .unwrap();
        std::os::unix::fs::lchown(root.join("dir/many-007"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link"), Some(4321), Some(8765)).unwrap();
    }
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 123_456_789);
    filetime::set_file_times(root.join("dir/deeper/text.txt"), old, old).unwrap();
    filetime::set_symlink_file_times(root.join("link"), old, old).unwrap();
    filetime::set_file_times(root.join("dir/deeper"), old, old).unwrap();
}

/// What is compared for each path: kind, mode, owner, size, mtime, content or target, xattrs,
/// device number, and which paths share an inode.
#[derive(Debug, PartialEq)]
pub struct Entry {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    content: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    rdev: u64,
    link_group: usize,
}

/// Describes a tree for comparison; sockets are left out (they cannot be restored).
pub fn describe(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: Vec<u64> = Vec::new();
    describe_into(root, root, &mut out, &mut inodes);
    out
}

fn describe_into(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<Vec<u8>, Entry>,
    inodes: &mut Vec<u64>,
) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            continue;
        }
        let kind = format!("{ft:?}")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        let content = if ft.is_file() {
            fs::read(&path).unwrap()
        } else if ft.is_symlink() {
            fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&path)
            .unwrap()
            .map(|n| {
                (
                    n.as_bytes().to_vec(),
                    xattr::get(&path, &n).unwrap().unwrap_or_default(),
                )
            })
            .collect();
        xattrs.sort();
        let link_group = if ft.is_file() && meta.nlink() > 1 {
            match inodes.iter().position(|&i| i == meta.ino()) {
                Some(at) => at + 1,
                None => {
                    inodes.push(meta.ino());
                    inodes.len()
                }
            }
        } else {
            0
        };
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        out.insert(
            rel,
            Entry {
                kind: format!("{}{}", kind, if ft.is_fifo() { "fifo" } else { "" }),
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
                size: if ft.is_dir() { 0 } else { meta.size() },
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content,
                xattrs,
                rdev: meta.rdev(),
                link_group,
            },
        );
        if ft.is_dir() {
            describe_into(root, &path, out, inodes);
        }
    }
}

/// Asserts two trees are equal in bytes and metadata, naming the first difference.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let want = describe(expected);
    let got = describe(actual);
    let want_names: Vec<_> = want
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    let got_names: Vec<_> = got
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(want_names, got_names, "different paths");
    for (path, entry) in &want {
        assert_eq!(
            Some(entry),
            got.get(path),
            "difference at {}",
            String::from_utf8_lossy(path)
        );
    }
}
