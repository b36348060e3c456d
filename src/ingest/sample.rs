//! A sample of the small files a backup is about to read, picked across all of its trees, for
//! training the job's compression dictionary ([`super::dictionary_choice`]).
//!
//! The backup reads its trees in name order, so the first small files it meets are one corner
//! of them — in a Linux tree, `Documentation/` — and a dictionary trained on those compresses
//! the rest little better than none (linux/'s 71,913 files ≤ 32 KiB, zstd level 2: 141.1 MB
//! alone, 133.5 MB with a dictionary trained on the first 2 MiB of them). Random walks from
//! the roots, each taking one entry at random in every directory it enters until it reaches a
//! small file, reach every part of the trees in a few hundred reads: 126.4–128.4 MB (an
//! exactly uniform sample, which needs the whole listing first, gives 124.0 MB).
//!
//! The walks see only what the backup reads: they honour its excludes and
//! `--one-file-system`, follow no link, read with `O_NOATIME` where allowed, and skip what they
//! cannot open. Each directory is read once per visit, at most [`MAX_ENTRIES`] names of it, and
//! a walk goes at most [`MAX_DEPTH`] deep, so a huge or deep tree costs no more than a small one.

use crate::ingest::noatime;
use crate::ingest::patterns::Patterns;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Names of one directory a walk chooses among; the rest of a larger one is not read.
pub const MAX_ENTRIES: usize = 1 << 16;
/// Directories a walk descends through at most.
pub const MAX_DEPTH: usize = 64;
/// Walks at most: one that ends in an empty directory, a large file or one it cannot read takes
/// nothing, and a tree with few small files must not be walked for ever.
const MAX_WALKS: usize = 4096;

/// What the walks may read: the backup's own rules.
pub struct SampleRules {
    /// The paths the backup was given.
    pub roots: Vec<PathBuf>,
    /// Its excludes.
    pub excludes: Patterns,
    /// Whether it stays on each root's file system.
    pub one_file_system: bool,
}

/// Up to about `budget` bytes of files of at most `max_file` bytes, each the end of one random
/// walk from a root (a file given as a root is a walk of its own).
pub fn sample_small_files(rules: &SampleRules, budget: usize, max_file: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::new();
    let mut sample = Vec::new();
    let mut bytes = 0usize;
    for _ in 0..MAX_WALKS {
        if bytes >= budget || rules.roots.is_empty() {
            break;
        }
        let root = &rules.roots[rng.usize(..rules.roots.len())];
        if let Some(file) = walk(rules, root, max_file, &mut rng) {
            bytes += file.len();
            sample.push(file);
        }
    }
    sample
}

/// One walk from `root`: the small file it ends at, if any.
fn walk(
    rules: &SampleRules,
    root: &Path,
    max_file: usize,
    rng: &mut fastrand::Rng,
) -> Option<Vec<u8>> {
    if rules.excludes.matches_path_or_parent(root) {
        return None;
    }
    let root_dev = std::fs::symlink_metadata(root).ok()?.dev();
    let mut path = root.to_path_buf();
    for _ in 0..MAX_DEPTH {
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if rules.one_file_system && meta.dev() != root_dev {
            return None;
        }
        if meta.is_file() {
            return (meta.len() as usize <= max_file)
                .then(|| read_small(&path, max_file))
                .flatten();
        }
        if !meta.is_dir() {
            return None;
        }
        let name = pick_entry(&path, rng)?;
        path.push(&name);
        if rules.excludes.matches(&path, &name) {
            return None;
        }
    }
    None
}

/// One name of directory `dir`, picked uniformly among its first [`MAX_ENTRIES`] (reservoir
/// sampling: one pass, nothing kept but the pick).
fn pick_entry(dir: &Path, rng: &mut fastrand::Rng) -> Option<OsString> {
    let mut picked = None;
    let mut seen = 0usize;
    noatime::for_each_name(dir, MAX_ENTRIES, |name| {
        seen += 1;
        if rng.usize(..seen) == 0 {
            picked = Some(std::ffi::OsStr::from_bytes(name).to_os_string());
        }
    })
    .ok()?;
    picked
}

/// The file at `path` if it is still a regular file of at most `max_file` bytes.
fn read_small(path: &Path, max_file: usize) -> Option<Vec<u8>> {
    let file = noatime::open_file(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(max_file as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    (bytes.len() <= max_file && !bytes.is_empty()).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rules(roots: Vec<PathBuf>, excludes: &[&str]) -> SampleRules {
        SampleRules {
            roots,
            excludes: Patterns::new(excludes).unwrap(),
            one_file_system: false,
        }
    }

    #[test]
    fn walks_reach_every_part_of_the_tree_and_only_small_files() {
        let dir = tempfile::tempdir().unwrap();
        // One big corner first in name order, as Documentation/ is in a Linux tree.
        for (sub, count) in [("a", 400), ("m", 4), ("z", 4)] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
            for i in 0..count {
                fs::write(
                    dir.path().join(sub).join(format!("f{i}")),
                    format!("{sub}{i}"),
                )
                .unwrap();
            }
        }
        fs::write(dir.path().join("m").join("big"), vec![7u8; 5000]).unwrap();
        let sample = sample_small_files(&rules(vec![dir.path().into()], &[]), 300, 1000);
        assert!(
            sample.iter().all(|f| f.len() < 1000),
            "no file over the bound"
        );
        for sub in ["a", "m", "z"] {
            assert!(
                sample.iter().any(|f| f.starts_with(sub.as_bytes())),
                "no file of {sub}/ among {} picked",
                sample.len()
            );
        }
    }

    #[test]
    fn walks_honour_excludes_and_follow_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "outside").unwrap();
        fs::create_dir_all(dir.path().join("keep")).unwrap();
        fs::create_dir_all(dir.path().join("skip")).unwrap();
        fs::write(dir.path().join("keep").join("f"), "kept").unwrap();
        fs::write(dir.path().join("skip").join("f"), "excluded").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("keep/l"))
            .unwrap();
        let sample = sample_small_files(&rules(vec![dir.path().into()], &["skip"]), 64, 100);
        assert!(!sample.is_empty());
        assert!(sample.iter().all(|f| f == b"kept"), "{sample:?}");
    }

    #[test]
    fn nothing_to_sample_ends() {
        let dir = tempfile::tempdir().unwrap();
        assert!(sample_small_files(&rules(vec![dir.path().into()], &[]), 1 << 20, 100).is_empty());
        assert!(sample_small_files(&rules(vec![], &[]), 1 << 20, 100).is_empty());
    }
}
