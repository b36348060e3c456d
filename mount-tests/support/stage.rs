//! Running stages in tests: both kinds, the helpers every stage test uses.
#![allow(dead_code)]

use super::Mounted;
use crate::common::{self, Env, pseudo_random};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which stage a test runs against: every test of a stage's behaviour runs against both.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// overlayfs over the parent's view (the default as root).
    Overlay,
    /// The FUSE stage (`--fuse`; the only one for other users).
    Fuse,
}

/// Generates one test per kind of stage for each function named, in modules `overlay` and
/// `fuse`.
#[macro_export]
macro_rules! both_kinds {
    ($($name:ident),* $(,)?) => {
        mod overlay {
            $(#[test]
            fn $name() {
                super::$name($crate::support::stage::Kind::Overlay)
            })*
        }
        mod fuse {
            $(#[test]
            fn $name() {
                super::$name($crate::support::stage::Kind::Fuse)
            })*
        }
    };
}

/// The stage's spool directory in a test (an overlay stage's upper directory goes there).
pub fn spool(env: &Env) -> PathBuf {
    env.path("spool")
}

/// Starts a stage of `kind` for `/src` (so snapshots restore to `src/`) with `args`; an
/// overlay stage (as root) is checked to be one.
pub fn stage(env: &Env, kind: Kind, args: &[&str]) -> Mounted {
    use std::os::unix::fs::DirBuilderExt;
    let spool = spool(env);
    let _ = fs::DirBuilder::new().mode(0o700).create(&spool);
    let mut all = vec!["--path", "/src", "--spool-dir", spool.to_str().unwrap()];
    if kind == Kind::Fuse {
        all.push("--fuse");
    }
    all.extend_from_slice(args);
    let mounted = Mounted::start(env, "stage", &all);
    if kind == Kind::Overlay && common::is_root() {
        assert_eq!(super::fs_type(&mounted.dir).as_deref(), Some("overlay"));
    }
    mounted
}

/// Nothing is left in the spool once no stage runs.
pub fn assert_spool_empty(env: &Env) {
    let left: Vec<PathBuf> = fs::read_dir(spool(env))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert_eq!(left, Vec::<PathBuf>::new(), "left in the spool");
}

/// rsync compares the times of what it creates (directories, symlinks, fifos) to the second
/// unless told `--modify-window=-1`: a source entry made in the same second as the copy would
/// keep its creation time, on any file system (the "1 run in 30" report). With it, the copy is
/// exact at once, no waiting for the source to age.
pub fn rsync(args: &[&str], from: &Path, to: &Path) -> String {
    let out = Command::new("rsync")
        .arg("--modify-window=-1")
        .args(args)
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()))
        .output()
        .expect("rsync runs (apt-get install rsync)");
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits the stage; returns the snapshot id and waits for the stage process to end.
pub fn commit(env: &Env, mounted: Mounted) -> String {
    let id = env
        .ok(&["stage", "--commit", mounted.dir.to_str().unwrap()])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "{id}");
    mounted.wait_exit();
    assert_spool_empty(env);
    id
}

/// Restores snapshot `spec` and returns its copy of the source.
pub fn restored(env: &Env, spec: &str) -> PathBuf {
    let target = env.path("restored");
    env.restore(spec, &target, &[]);
    target.join("src")
}

/// Bytes of the packs stored: not the temporary files of uploads under way (or cut short by a
/// kill), which are no one's data.
pub fn data_bytes(env: &Env) -> u64 {
    // A pack being written may be renamed between the listing and the stat.
    env.repo_files("data")
        .iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
        })
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

pub fn snapshot_count(env: &Env) -> usize {
    env.json(&["snapshots"]).as_array().unwrap().len()
}

/// A repository with small packs, so a partial run leaves many of them.
pub fn small_pack_repo() -> Env {
    Env::with_repo(&["--pack-size", "1MiB"])
}

pub fn random_tree(root: &Path, files: u64) -> u64 {
    fs::create_dir_all(root).unwrap();
    for i in 0..files {
        fs::write(
            root.join(format!("f{i:03}")),
            pseudo_random(1000 + i, 1 << 20),
        )
        .unwrap();
    }
    files << 20
}

/// A user other than root, for stages that must refuse what that user may not do.
pub const NOBODY: u32 = 65534;
