//! How backup's walk reaches an entry: by its name in a directory the walk holds open, so each
//! look, open and listing resolves one path component instead of the whole path again (path
//! lookups were 3.6 % of a first backup's CPU, 2.1 % after), and the directory it is in cannot
//! be swapped for a link meanwhile; or by its path, for the paths given to backup and whenever
//! the walk already holds [`MAX_HELD_DIRS`] directories: without a cap it would hold
//! descriptors without bound (a branch holds every directory above it while its entries are
//! visited, and rayon may run many branches on one thread's stack).

use crate::ingest::noatime;
use crate::ingest::walker::EntryStat;
use nix::fcntl::AtFlags;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Directories the whole walk holds open at once: a quarter of the usual soft limit of 1,024
/// descriptors, leaving the rest to the files being read and the repository. Past it the walk
/// goes by paths, as it went everywhere before.
pub const MAX_HELD_DIRS: usize = 256;

/// Counts the directories the walk holds open against [`MAX_HELD_DIRS`].
#[derive(Default)]
pub struct HeldDirs(AtomicUsize);

impl HeldDirs {
    /// Holds `dir` open if the budget allows; otherwise closes it.
    pub fn hold(&self, dir: File) -> Option<HeldDir<'_>> {
        if self.0.fetch_add(1, Ordering::Relaxed) < MAX_HELD_DIRS {
            Some(HeldDir { dir, count: self })
        } else {
            self.0.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

/// A directory the walk holds open, given back to the budget when dropped.
pub struct HeldDir<'a> {
    /// The open directory.
    pub dir: File,
    count: &'a HeldDirs,
}

impl Drop for HeldDir<'_> {
    fn drop(&mut self) {
        self.count.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One entry of the tree being backed up.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    /// Its path: for messages and exclude patterns, and to reach it when `within` is `None`.
    pub path: &'a Path,
    within: Option<(&'a File, &'a OsStr)>,
}

impl<'a> Place<'a> {
    /// The entry at `path`, reached by it.
    pub fn path(path: &'a Path) -> Self {
        Place { path, within: None }
    }

    /// Entry `name` of the open directory `dir`, whose path is `path`.
    pub fn in_dir(dir: &'a File, name: &'a OsStr, path: &'a Path) -> Self {
        Place {
            path,
            within: Some((dir, name)),
        }
    }

    /// Its status, not following a link.
    pub fn stat(&self) -> io::Result<EntryStat> {
        match self.within {
            Some((dir, name)) => nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|st| EntryStat::from(&st))
                .map_err(io::Error::from),
            None => std::fs::symlink_metadata(self.path).map(|meta| EntryStat::from(&meta)),
        }
    }

    /// Opens it for reading if it is a regular file (see [`noatime::open_file`]).
    pub fn open_file(&self) -> io::Result<File> {
        match self.within {
            Some((dir, name)) => noatime::open_file_at(dir, name),
            None => noatime::open_file(self.path),
        }
    }

    /// Opens it if it is a directory, not through a link, and the one `seen` describes: not
    /// another swapped in for it since it was looked at. Or the root of a file system mounted
    /// on it since: looking does not trigger an automount (autofs, systemd's automounts, NFS
    /// submounts) and opening does, as listing by path always did. Returns the directory and
    /// the device it is on (another than `seen`'s when it was such a mount).
    pub fn open_dir(&self, seen: &EntryStat) -> io::Result<(File, u64)> {
        let dir = match self.within {
            Some((dir, name)) => noatime::open_at(dir, name, libc::O_DIRECTORY)?,
            None => noatime::open_dir(self.path)?,
        };
        let now = dir.metadata()?;
        let opened = (now.dev(), now.ino());
        if opened == (seen.dev, seen.ino) {
            return Ok((dir, now.dev()));
        }
        let mounted = now.dev() != seen.dev
            && is_mount_root(&dir)
            && self
                .stat()
                .is_ok_and(|again| (again.dev, again.ino) == opened);
        if mounted {
            Ok((dir, now.dev()))
        } else {
            Err(io::Error::other("replaced while being backed up"))
        }
    }

    /// The target of the link it is.
    pub fn read_link(&self) -> io::Result<Vec<u8>> {
        match self.within {
            Some((dir, name)) => nix::fcntl::readlinkat(dir, name)
                .map(|target| target.into_vec())
                .map_err(io::Error::from),
            None => std::fs::read_link(self.path).map(|target| target.into_os_string().into_vec()),
        }
    }
}

/// Whether `dir` is the root of a mount (statx's `STATX_ATTR_MOUNT_ROOT`, Linux 5.8): what an
/// automount puts at a name, and what no other user's rename can (a btrfs subvolume moved in
/// is on another device too, but is no mount).
fn is_mount_root(dir: &File) -> bool {
    let root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    // SAFETY: an empty path with AT_EMPTY_PATH asks about the descriptor itself; the kernel
    // fills at most the one zeroed `statx` it is given, which stays ours.
    let attributes = unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let asked = libc::statx(
            dir.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            0,
            &mut stx,
        );
        (asked == 0).then_some((stx.stx_attributes_mask, stx.stx_attributes))
    };
    attributes.is_some_and(|(known, set)| known & root != 0 && set & root != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn by_name_in_a_directory_and_by_path_an_entry_is_the_same() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("sub")).unwrap();
        fs::write(root.path().join("sub/file"), b"content").unwrap();
        std::os::unix::fs::symlink("file", root.path().join("sub/link")).unwrap();
        let by_path = |name: &str| {
            Place::path(&root.path().join("sub").join(name))
                .stat()
                .unwrap()
        };
        let sub = noatime::open_dir(&root.path().join("sub")).unwrap();
        for name in ["file", "link"] {
            let path = root.path().join("sub").join(name);
            let place = Place::in_dir(&sub, OsStr::new(name), &path);
            let stat = place.stat().unwrap();
            assert_eq!((stat.ino, stat.mode, stat.size), {
                let p = by_path(name);
                (p.ino, p.mode, p.size)
            });
        }
        let link = root.path().join("sub/link");
        assert_eq!(
            Place::in_dir(&sub, OsStr::new("link"), &link)
                .read_link()
                .unwrap(),
            b"file"
        );
        assert_eq!(Place::path(&link).read_link().unwrap(), b"file");
        let err = Place::in_dir(&sub, OsStr::new("link"), &link)
            .open_file()
            .unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ELOOP),
            "links are not followed: {err}"
        );
    }

    #[test]
    fn a_directory_swapped_in_after_it_was_looked_at_is_not_opened() {
        let root = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            fs::create_dir(root.path().join(name)).unwrap();
        }
        let top = noatime::open_dir(root.path()).unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        let seen_a = Place::in_dir(&top, OsStr::new("a"), &a).stat().unwrap();
        assert!(
            Place::in_dir(&top, OsStr::new("a"), &a)
                .open_dir(&seen_a)
                .is_ok()
        );
        fs::rename(&b, &a).unwrap();
        let err = Place::in_dir(&top, OsStr::new("a"), &a)
            .open_dir(&seen_a)
            .unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        assert!(Place::path(&a).open_dir(&seen_a).is_err());
    }

    /// What an automount does: a file system appears on a directory after the walk looked at
    /// it and before it opens it. (As root: mounts a tmpfs.)
    #[test]
    fn a_file_system_mounted_on_a_directory_after_it_was_looked_at_is_opened() {
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        let root = tempfile::tempdir().unwrap();
        let point = root.path().join("point");
        fs::create_dir(&point).unwrap();
        let top = noatime::open_dir(root.path()).unwrap();
        let place = Place::in_dir(&top, OsStr::new("point"), &point);
        let seen = place.stat().unwrap();
        let mounted = mount(
            Some("tmpfs"),
            &point,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        );
        if mounted == Err(nix::errno::Errno::EPERM) {
            eprintln!("not root: mounting a tmpfs is not allowed, nothing to test");
            return;
        }
        mounted.unwrap();
        /// Unmounts however the test ends, so the temporary directory can go.
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = umount2(self.0, MntFlags::MNT_DETACH);
            }
        }
        let _unmount = Unmount(&point);
        fs::write(point.join("inside"), b"x").unwrap();
        let (dir, dev) = place.open_dir(&seen).unwrap();
        assert_ne!(dev, seen.dev, "the device of the file system mounted there");
        let names = noatime::names_in(&dir).unwrap();
        assert_eq!(names, vec![std::ffi::OsString::from("inside")]);
        let plain = root.path().join("plain");
        fs::create_dir(&plain).unwrap();
        assert!(!is_mount_root(&noatime::open_dir(&plain).unwrap()));
        assert!(is_mount_root(&dir));
    }

    #[test]
    fn the_walk_holds_at_most_its_budget_of_directories() {
        let root = tempfile::tempdir().unwrap();
        let held = HeldDirs::default();
        let open = || noatime::open_dir(root.path()).unwrap();
        let kept: Vec<HeldDir> = (0..MAX_HELD_DIRS)
            .map_while(|_| held.hold(open()))
            .collect();
        assert_eq!(kept.len(), MAX_HELD_DIRS);
        assert!(held.hold(open()).is_none(), "one past the budget");
        drop(kept);
        assert!(held.hold(open()).is_some(), "given back when dropped");
    }
}
