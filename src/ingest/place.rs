//! How backup's walk reaches an entry: by its name in a directory the walk holds open, so each
//! look, open and listing resolves one path component instead of the whole path again (path
//! lookups were 3 % of a first backup's CPU), and no directory on the way can be swapped for a
//! link to lead the walk elsewhere; or by its path, for the paths given to backup and for
//! entries deeper than [`MAX_HELD_DIRS`], where holding a descriptor per level would cost
//! descriptors without bound.

use crate::ingest::noatime;
use crate::ingest::walker::EntryStat;
use nix::fcntl::AtFlags;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Directories the walk holds open along one branch: past this depth it goes by paths, as it
/// went everywhere before (and as deep as paths reach).
pub const MAX_HELD_DIRS: usize = 128;

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
    /// another swapped in for it since it was looked at.
    pub fn open_dir(&self, seen: &EntryStat) -> io::Result<File> {
        let dir = match self.within {
            Some((dir, name)) => noatime::open_at(dir, name, libc::O_DIRECTORY)?,
            None => noatime::open_dir(self.path)?,
        };
        let now = dir.metadata()?;
        if (now.dev(), now.ino()) == (seen.dev, seen.ino) {
            Ok(dir)
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
}
