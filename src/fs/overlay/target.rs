//! The directory an overlay stage is mounted on, checked before root mounts anything there.
//!
//! overlayfs is open to every user as modes allow, and its root takes the parent root's owner:
//! mounted through a link another user planted (`/tmp/stage -> /etc`), it would hand that user
//! a writable copy of a system directory. So the path is resolved once, opened without
//! following any link, must be an empty directory of the user running the stage, and the mount
//! goes through that descriptor.

use crate::error::{Error, Result};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The stage's directory, resolved and held open.
pub struct StageDir {
    /// Its path with every link resolved (what /proc/self/mountinfo shows).
    pub path: PathBuf,
    fd: OwnedFd,
}

impl StageDir {
    /// Opens and checks `dir`; `spool` (the spool's base) must not be inside it.
    pub fn open(dir: &Path, spool: &Path) -> Result<StageDir> {
        let refuse = |why: &str| Err(Error::Invalid(format!("{}: {why}", dir.display())));
        let path = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = openat2(nix::fcntl::AT_FDCWD, &path, how).map_err(|e| match e {
            nix::Error::ELOOP => Error::Invalid(format!(
                "{}: a link changed while the stage started",
                dir.display()
            )),
            e => Error::io(dir, e.into()),
        })?;
        let meta = nix::sys::stat::fstat(&fd).map_err(|e| Error::io(dir, e.into()))?;
        if meta.st_uid != nix::unistd::geteuid().as_raw() {
            return refuse("not a directory of the user running the stage");
        }
        let listing = fd.try_clone().map_err(|e| Error::io(dir, e))?;
        let mut entries = nix::dir::Dir::from_fd(listing).map_err(|e| Error::io(dir, e.into()))?;
        let occupied = entries.iter().flatten().any(|e| {
            let name = e.file_name().to_bytes();
            name != b"." && name != b".."
        });
        if occupied {
            return refuse("not empty (a stage hides nothing)");
        }
        let spool = std::fs::canonicalize(spool).map_err(|e| Error::io(spool, e))?;
        if spool.starts_with(&path) {
            return refuse("the spool directory is inside the stage");
        }
        Ok(StageDir { path, fd })
    }

    /// A path that names the opened directory itself, whatever happens to its name.
    pub fn by_descriptor(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}
