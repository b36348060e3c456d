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
//! The walks read only what the backup may: they honour its excludes and `--one-file-system`,
//! go by descriptors (each directory opened in the one above it, never through a link, so a
//! directory swapped for a link on the way leads nowhere), open only what was a regular file
//! or directory when looked at and is the same one when opened, without blocking (a FIFO or a
//! file under a lease is passed over), and read with `O_NOATIME` where allowed. They are
//! bounded however large, deep or hostile the trees: at most [`MAX_ENTRIES`] names of a
//! directory are read per visit, [`MAX_NAMES`] in all, for at most [`MAX_TIME`], and a run of
//! [`MAX_FRUITLESS`] walks that find nothing ends the sample.

use crate::ingest::noatime;
use crate::ingest::patterns::Patterns;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Names of one directory a walk chooses among; the rest of a larger one is not read.
const MAX_ENTRIES: usize = 4096;
/// Names read in all, by all walks of one sample.
const MAX_NAMES: usize = 1 << 20;
/// How long one sample may take.
const MAX_TIME: Duration = Duration::from_secs(2);
/// Walks in a row that find nothing (an empty directory, a large file, one it may not read)
/// after which the trees are taken to have too few small files to sample.
const MAX_FRUITLESS: usize = 256;
/// Directories a walk descends through at most.
const MAX_DEPTH: usize = 64;

/// What the walks may read: the backup's own rules.
pub struct SampleRules {
    /// The paths the backup was given.
    pub roots: Vec<PathBuf>,
    /// Its excludes.
    pub excludes: Patterns,
    /// Whether it stays on each root's file system.
    pub one_file_system: bool,
}

/// What one sample may still spend, and the files it has (each is taken once: a file given as
/// a root, or one a shallow tree leads to, does not fill the sample with copies).
struct Budget {
    names: usize,
    until: Instant,
    taken: HashSet<(u64, u64)>,
}

/// Up to about `budget` bytes of files of at most `max_file` bytes, each the end of one random
/// walk from a root (a file given as a root is a walk of its own).
pub fn sample_small_files(rules: &SampleRules, budget: usize, max_file: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::new();
    let mut spend = Budget {
        names: MAX_NAMES,
        until: Instant::now() + MAX_TIME,
        taken: HashSet::new(),
    };
    let (mut sample, mut bytes, mut fruitless) = (Vec::new(), 0usize, 0usize);
    while bytes < budget
        && fruitless < MAX_FRUITLESS
        && spend.names > 0
        && Instant::now() < spend.until
        && !rules.roots.is_empty()
    {
        let root = &rules.roots[rng.usize(..rules.roots.len())];
        match walk(rules, root, max_file, &mut rng, &mut spend) {
            Some(file) => {
                bytes += file.len();
                sample.push(file);
                fruitless = 0;
            }
            None => fruitless += 1,
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
    spend: &mut Budget,
) -> Option<Vec<u8>> {
    if rules.excludes.matches_path_or_parent(root) {
        return None;
    }
    if std::fs::symlink_metadata(root).ok()?.is_file() {
        let parent = noatime::open_dir(root.parent()?).ok()?;
        return match open_seen(&parent, root.file_name()?, max_file, None)? {
            Seen::File(file, meta) => take(file, &meta, max_file, spend),
            Seen::Dir(..) => None,
        };
    }
    let mut dir = noatime::open_dir(root).ok()?;
    let root_dev = dir.metadata().ok()?.dev();
    let mut path = root.to_path_buf();
    for _ in 0..MAX_DEPTH {
        let name = pick_entry(&dir, rng, spend)?;
        path.push(&name);
        if rules.excludes.matches(&path, &name) {
            return None;
        }
        let device = rules.one_file_system.then_some(root_dev);
        match open_seen(&dir, &name, max_file, device)? {
            Seen::File(file, meta) => return take(file, &meta, max_file, spend),
            Seen::Dir(sub) => dir = sub,
        }
    }
    None
}

/// An entry a walk opened.
enum Seen {
    File(File, std::fs::Metadata),
    Dir(File),
}

/// Opens entry `name` of `dir` if it is a directory or a regular file of at most `max_file`
/// bytes (on `device`, when given), and the same one when opened as when looked at (not one
/// swapped in between). Nothing else is ever opened, not even for a moment: a directory is
/// opened with `O_DIRECTORY`, which fails before any other kind is opened, and a file first
/// as a bare reference (`O_PATH`, which opens nothing), checked, then read through that
/// reference without blocking (a file under another process's lease is passed over).
fn open_seen(dir: &File, name: &OsStr, max_file: usize, device: Option<u64>) -> Option<Seen> {
    let seen = nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    if device.is_some_and(|device| device != seen.st_dev) {
        return None;
    }
    let kind = seen.st_mode & libc::S_IFMT;
    let flags = match kind {
        libc::S_IFDIR => libc::O_DIRECTORY,
        libc::S_IFREG if u64::try_from(seen.st_size).ok()? <= max_file as u64 => libc::O_PATH,
        _ => return None,
    };
    let opened = noatime::open_at(dir, name, flags).ok()?;
    let meta = opened.metadata().ok()?;
    if (meta.dev(), meta.ino()) != (seen.st_dev, seen.st_ino) {
        return None;
    }
    if kind == libc::S_IFDIR {
        return Some(Seen::Dir(opened));
    }
    let file = noatime::reopen_regular(&opened, libc::O_NONBLOCK).ok()?;
    Some(Seen::File(file, meta))
}

/// One name of directory `dir`, picked uniformly among its first [`MAX_ENTRIES`] (reservoir
/// sampling: one pass, nothing kept but the pick).
fn pick_entry(dir: &File, rng: &mut fastrand::Rng, spend: &mut Budget) -> Option<OsString> {
    let limit = MAX_ENTRIES.min(spend.names);
    let mut picked = None;
    let mut seen = 0usize;
    noatime::for_each_name_in(dir.try_clone().ok()?, limit, |name| {
        seen += 1;
        if rng.usize(..seen) == 0 {
            picked = Some(OsStr::from_bytes(name).to_os_string());
        }
    })
    .ok()?;
    spend.names = spend.names.saturating_sub(seen.max(1));
    picked
}

/// The open small regular `file`, read, unless taken before; None if it grew past `max_file`.
fn take(
    file: File,
    meta: &std::fs::Metadata,
    max_file: usize,
    spend: &mut Budget,
) -> Option<Vec<u8>> {
    if !spend.taken.insert((meta.dev(), meta.ino())) {
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
        // A FIFO is never opened (opening one blocks until a writer comes).
        nix::unistd::mkfifo(
            &dir.path().join("keep/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let sample = sample_small_files(&rules(vec![dir.path().into()], &["skip"]), 64, 100);
        assert!(!sample.is_empty());
        assert!(sample.iter().all(|f| f == b"kept"), "{sample:?}");
    }

    #[test]
    fn trees_without_small_files_end_the_sample() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            fs::write(dir.path().join(format!("big{i}")), vec![1u8; 2000]).unwrap();
        }
        let sample = sample_small_files(&rules(vec![dir.path().into()], &[]), 1 << 20, 1000);
        assert!(sample.is_empty());
    }

    #[test]
    fn a_file_given_as_a_root_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        fs::write(&file, "127.0.0.1 localhost").unwrap();
        let sample = sample_small_files(&rules(vec![file], &[]), 1 << 20, 100);
        assert_eq!(sample, vec![b"127.0.0.1 localhost".to_vec()]);
    }

    #[test]
    fn only_directories_and_small_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let d = File::open(dir.path()).unwrap();
        fs::write(dir.path().join("small"), "s").unwrap();
        fs::write(dir.path().join("large"), "large").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("small", dir.path().join("link")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let open = |name: &str| open_seen(&d, OsStr::new(name), 2, None);
        assert!(matches!(open("small"), Some(Seen::File(..))));
        assert!(matches!(open("sub"), Some(Seen::Dir(..))));
        for name in ["large", "link", "fifo", "missing"] {
            assert!(open(name).is_none(), "{name}");
        }
        let elsewhere = Some(d.metadata().unwrap().dev() + 1);
        assert!(
            open_seen(&d, OsStr::new("sub"), 2, elsewhere).is_none(),
            "another device"
        );
    }

    #[test]
    fn nothing_to_sample_ends() {
        let dir = tempfile::tempdir().unwrap();
        assert!(sample_small_files(&rules(vec![dir.path().into()], &[]), 1 << 20, 100).is_empty());
        assert!(sample_small_files(&rules(vec![], &[]), 1 << 20, 100).is_empty());
    }
}
