//! The restore target as an open directory: every entry restore creates, opens, replaces or
//! changes is reached from the target's descriptor, never by a path string given to the kernel
//! whole, and never through a symbolic link.
//!
//! Why: a snapshot may have been written by anyone who holds a key, and the target may already
//! hold links (`etc -> /`), or gain them while the restore runs from a snapshot that has both a
//! file and a link of one name. So directories are resolved with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` (component by component with `O_NOFOLLOW` where the kernel lacks it or
//! the path is longer than the kernel takes), entries are created with `O_EXCL | O_NOFOLLOW` after
//! whatever stood there is removed (a link is removed, never written through), and modes, owners,
//! times and xattrs are set on an open descriptor or with the no-follow variants. Files and
//! directories are created private (0600 / 0700) and get their recorded mode only once complete.
//!
//! What it does not do: decide what to restore or whether to replace (the restore module does),
//! or check names (trees are read through `Repository::read_tree`, which drops invalid ones; the
//! paths given here consist of normal components only and this module refuses anything else).

use crate::repo::tree::{Node, NodeKind};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags, fstatat};
use nix::sys::time::TimeSpec;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

/// Mode of a file while restore writes it: only its owner can open it.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of a directory while restore fills it: only its owner can enter it.
pub const PRIVATE_DIR: u32 = 0o700;

/// Which inode an entry is: restore notes it when it makes (or keeps) an entry and sets
/// metadata only on that inode, so an entry swapped in by someone who can write the directory
/// (a directory of another user's, already in the target) never gets the recorded owner and
/// mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(stat: &FileStat) -> Identity {
        Identity {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }

    /// The identity of the open `file`.
    pub fn of_file(file: &File) -> io::Result<Identity> {
        Ok(Identity::of(&nix::sys::stat::fstat(file)?))
    }
}

/// What stands at a name in the target before restore puts something there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Existing {
    /// Which inode it is.
    pub identity: Identity,
    /// The entry's type bits (`S_IFMT` of its mode).
    pub format: u32,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds since the epoch.
    pub mtime: i64,
}

impl Existing {
    fn of(stat: &FileStat) -> Existing {
        Existing {
            identity: Identity::of(stat),
            format: stat.st_mode & libc::S_IFMT,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime: stat.st_mtime.saturating_mul(1_000_000_000) + stat.st_mtime_nsec,
        }
    }

    /// Whether it is a directory (not a link to one).
    pub fn is_dir(&self) -> bool {
        self.format == libc::S_IFDIR
    }

    /// Whether it is what `kind` restores to.
    pub fn is_kind(&self, kind: NodeKind) -> bool {
        self.format
            == match kind {
                NodeKind::File => libc::S_IFREG,
                NodeKind::Dir => libc::S_IFDIR,
                NodeKind::Symlink => libc::S_IFLNK,
                NodeKind::Fifo => libc::S_IFIFO,
                NodeKind::Socket => libc::S_IFSOCK,
                NodeKind::CharDevice => libc::S_IFCHR,
                NodeKind::BlockDevice => libc::S_IFBLK,
            }
    }
}

/// The directory restore writes into, held open.
pub struct Target {
    root: OwnedFd,
    /// Cleared when the kernel has no `openat2`; later lookups go component by component.
    has_openat2: AtomicBool,
}

/// Flags every directory open uses: a directory, never a link, not inherited by children.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

impl Target {
    /// Opens `path` (creating it and missing parents, private, when absent). The target path
    /// itself is the user's choice and is followed like any path they type.
    pub fn open(path: &Path) -> io::Result<Target> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(path)?;
        let root = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Target {
            root,
            has_openat2: AtomicBool::new(true),
        })
    }

    /// The target directory itself.
    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens the directory `rel` below the target without following any link on the way.
    pub fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        check_relative(rel)?;
        if rel.as_os_str().is_empty() {
            return self.root.try_clone();
        }
        self.open_beneath(rel, dir_flags(), Mode::empty())
    }

    /// Opens `rel`'s parent directory and returns it with `rel`'s last component.
    pub fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let dir = self.dir(rel.parent().unwrap_or(Path::new("")))?;
        Ok((dir, name))
    }

    /// Opens the regular file `rel` for writing, never through a link.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        self.open_regular(rel, OFlag::O_WRONLY)
    }

    /// Opens the regular file `rel` for reading, never through a link.
    pub fn read_file(&self, rel: &Path) -> io::Result<File> {
        self.open_regular(rel, OFlag::O_RDONLY)
    }

    fn open_regular(&self, rel: &Path, access: OFlag) -> io::Result<File> {
        check_relative(rel)?;
        let flags = access | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let file = File::from(self.open_beneath(rel, flags, Mode::empty())?);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file: left as found"));
        }
        Ok(file)
    }

    /// `openat2` beneath the root with no links, or component by component where that fails
    /// for want of the system call or for a path longer than PATH_MAX.
    fn open_beneath(&self, rel: &Path, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
        if self.has_openat2.load(Ordering::Relaxed) {
            let how = OpenHow::new().flags(flags).mode(mode).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            match openat2(self.root.as_fd(), rel, how) {
                Ok(fd) => return Ok(fd),
                Err(Errno::ENOSYS) => self.has_openat2.store(false, Ordering::Relaxed),
                Err(Errno::ENAMETOOLONG) => {}
                // Another link, or a crossing out of the target, is refused with ELOOP / EXDEV.
                Err(e) => return Err(e.into()),
            }
        }
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let mut dir = self.root.try_clone()?;
        for component in rel.parent().unwrap_or(Path::new("")).components() {
            dir = openat(
                dir.as_fd(),
                component.as_os_str(),
                dir_flags(),
                Mode::empty(),
            )?;
        }
        Ok(openat(dir.as_fd(), name, flags | OFlag::O_NOFOLLOW, mode)?)
    }
}

/// Refuses a path that is not made of plain names: restore never builds one, so one here is a bug.
fn check_relative(rel: &Path) -> io::Result<()> {
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a path below the target", rel.display()),
        ))
    }
}

/// What stands at `name` in `dir`, without following a link.
pub fn existing(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Existing>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(Existing::of(&stat))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from `dir`: a link or file is unlinked (never followed), a directory is
/// emptied and removed, depth first, each level opened from the one above it. A directory with
/// another file system mounted below it is refused, untouched below the mount.
pub fn remove(dir: BorrowedFd<'_>, name: &OsStr, what: Existing) -> io::Result<()> {
    use nix::unistd::{UnlinkatFlags, unlinkat};
    if !what.is_dir() {
        return Ok(unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?);
    }
    // Open directories from the one being removed down to the one being emptied; a loop, not
    // recursion, so a deep tree in the target cannot overflow the stack.
    let mut stack: Vec<(OwnedFd, std::ffi::OsString)> = Vec::new();
    let first = openat(dir, name, dir_flags(), Mode::empty())?;
    stack.push((first, name.to_os_string()));
    while let Some((current, _)) = stack.last() {
        let mut subdir = None;
        let mut listing = nix::dir::Dir::from_fd(current.try_clone()?)?;
        for entry in listing.iter() {
            let entry = entry?;
            let entry_name = OsStr::from_bytes(entry.file_name().to_bytes());
            if entry_name == "." || entry_name == ".." {
                continue;
            }
            let stat = fstatat(current.as_fd(), entry_name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if stat.st_dev != what.identity.dev {
                // Another file system mounted inside: never emptied by a restore.
                return Err(io::Error::other(format!(
                    "{}: another file system is mounted below it: not removed",
                    name.to_string_lossy()
                )));
            }
            if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
                subdir = Some(entry_name.to_os_string());
                break;
            }
            unlinkat(current.as_fd(), entry_name, UnlinkatFlags::NoRemoveDir)?;
        }
        match subdir {
            Some(sub) => {
                let below = openat(current.as_fd(), sub.as_os_str(), dir_flags(), Mode::empty())?;
                stack.push((below, sub));
            }
            None => {
                let (_, emptied) = stack.pop().expect("the loop holds an entry");
                let parent = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(dir);
                unlinkat(parent, emptied.as_os_str(), UnlinkatFlags::RemoveDir)?;
            }
        }
    }
    Ok(())
}

/// Creates directory `name` in `dir`, private until its metadata is applied; returns which
/// inode it is.
pub fn make_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Identity> {
    nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(PRIVATE_DIR))?;
    identity_of(dir, name, NodeKind::Dir)
}

/// Which inode `name` in `dir` is, insisting it is of `kind` (not a link put in its place).
fn identity_of(dir: BorrowedFd<'_>, name: &OsStr, kind: NodeKind) -> io::Result<Identity> {
    let stat = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if !Existing::of(&stat).is_kind(kind) {
        return Err(replaced());
    }
    Ok(Identity::of(&stat))
}

/// Creates the regular file `name` in `dir`, private, failing if anything stands there.
pub fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(PRIVATE_FILE),
    )?;
    Ok(File::from(fd))
}

/// Creates a symlink, fifo or device node `name` in `dir` (fifos and devices private until
/// their metadata is applied); returns which inode it is. Sockets are not re-created: they
/// belong to a listening process.
pub fn create_special(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    node: &Node,
) -> io::Result<Option<Identity>> {
    let private = Mode::from_bits_truncate(PRIVATE_FILE);
    match node.kind {
        NodeKind::Symlink => nix::unistd::symlinkat(OsStr::from_bytes(&node.target), dir, name)?,
        NodeKind::Fifo => nix::unistd::mkfifoat(dir, name, private)?,
        NodeKind::CharDevice => {
            nix::sys::stat::mknodat(dir, name, SFlag::S_IFCHR, private, node.rdev)?
        }
        NodeKind::BlockDevice => {
            nix::sys::stat::mknodat(dir, name, SFlag::S_IFBLK, private, node.rdev)?
        }
        NodeKind::Socket | NodeKind::File | NodeKind::Dir => return Ok(None),
    }
    identity_of(dir, name, node.kind).map(Some)
}

/// Hard-links `from_name` in `from_dir` as `name` in `dir` (linkat does not follow links).
pub fn hard_link(
    from_dir: BorrowedFd<'_>,
    from_name: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    Ok(nix::unistd::linkat(
        from_dir,
        from_name,
        dir,
        name,
        AtFlags::empty(),
    )?)
}

/// Applies `node`'s owner (as root), xattrs, mode and times to `name` in `dir`, in that order:
/// chown clears setuid bits, xattrs need the owner's write permission a read-only mode would
/// take away (and an ACL sets mode bits: the recorded mode comes after), and setting xattrs or
/// the mode changes ctime, not mtime. Files and
/// directories are opened (no-follow) and changed through the descriptor; fifos and devices
/// through an `O_PATH` descriptor; symlinks with the no-follow calls on their name. The entry
/// must be the inode restore made or kept (`expected`): anything else — a link or a file put in
/// its place — is refused untouched.
pub fn apply_metadata(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    node: &Node,
    expected: Identity,
    as_root: bool,
) -> io::Result<()> {
    let times = [timespec(node.atime), timespec(node.mtime)];
    if node.kind == NodeKind::Symlink {
        if identity_of(dir, name, NodeKind::Symlink)? != expected {
            return Err(replaced());
        }
        if as_root {
            nix::unistd::fchownat(
                dir,
                name,
                Some(node.uid.into()),
                Some(node.gid.into()),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if !node.xattrs.is_empty() {
            // lsetxattr on "/proc/self/fd/DIR/NAME": the descriptor's magic link leads to the
            // directory itself, and the last component is not followed.
            let path = Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
            for xattr in &node.xattrs {
                xattr::set(&path, OsStr::from_bytes(&xattr.name), &xattr.value)?;
            }
        }
        return Ok(nix::sys::stat::utimensat(
            dir,
            name,
            &times[0],
            &times[1],
            UtimensatFlags::NoFollowSymlink,
        )?);
    }
    let flags = match node.kind {
        NodeKind::Dir => dir_flags(),
        NodeKind::File => {
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK
        }
        _ => OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
    };
    let fd = openat(dir, name, flags, Mode::empty())?;
    let stat = nix::sys::stat::fstat(&fd)?;
    if !Existing::of(&stat).is_kind(node.kind) || Identity::of(&stat) != expected {
        return Err(replaced());
    }
    let mode = Mode::from_bits_truncate(node.mode & 0o7777);
    if flags.contains(OFlag::O_PATH) {
        // A descriptor opened with O_PATH takes no fchmod or fsetxattr; its /proc link names
        // exactly the inode it holds.
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if as_root {
            nix::unistd::fchownat(
                &fd,
                "",
                Some(node.uid.into()),
                Some(node.gid.into()),
                AtFlags::AT_EMPTY_PATH,
            )?;
        }
        // Through the magic link to the inode it holds (set_deref: the link is the path);
        // the mode after the xattrs, as for files.
        for x in &node.xattrs {
            xattr::set_deref(&path, OsStr::from_bytes(&x.name), &x.value)?;
        }
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            path.as_str(),
            mode,
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
        return Ok(nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path.as_str(),
            &times[0],
            &times[1],
            UtimensatFlags::FollowSymlink,
        )?);
    }
    apply_on_descriptor(&File::from(fd), node, as_root)
}

/// Applies `node`'s owner (as root), mode, xattrs and times through the open `file` — the
/// descriptor restore created the file with, or one it checked is the inode it made.
pub fn apply_on_descriptor(file: &File, node: &Node, as_root: bool) -> io::Result<()> {
    // chown first (it clears setuid bits and security.capability), xattrs while the file is
    // still writable to its owner (ACLs included: setting one sets mode bits), then the
    // recorded mode — last, so the file ends with the mode the snapshot shows — then times.
    if as_root {
        nix::unistd::fchown(file, Some(node.uid.into()), Some(node.gid.into()))?;
    }
    for x in &node.xattrs {
        xattr::FileExt::set_xattr(file, OsStr::from_bytes(&x.name), &x.value)?;
    }
    nix::sys::stat::fchmod(file, Mode::from_bits_truncate(node.mode & 0o7777))?;
    let times = [timespec(node.atime), timespec(node.mtime)];
    Ok(nix::sys::stat::futimens(file, &times[0], &times[1])?)
}

/// The error for an entry that is no longer the one restore made.
pub fn replaced() -> io::Error {
    io::Error::other("replaced by something else while restoring: left as found")
}

fn timespec(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn metadata_is_never_set_on_an_entry_swapped_in_after_restore_made_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::open(dir.path()).unwrap();
        let made = create_file(target.root(), OsStr::new("f")).unwrap();
        let identity = Identity::of_file(&made).unwrap();
        // Someone who can write the directory moves restore's file away and puts their own.
        std::fs::rename(dir.path().join("f"), dir.path().join("moved")).unwrap();
        std::fs::write(dir.path().join("f"), b"theirs").unwrap();
        std::fs::set_permissions(dir.path().join("f"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let mut node = Node::new(NodeKind::File, 0o4755, (0, 0), 0);
        node.name = b"f".to_vec();
        let refused = apply_metadata(target.root(), OsStr::new("f"), &node, identity, false);
        assert!(refused.is_err());
        let mode = std::fs::metadata(dir.path().join("f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o7777,
            0o644,
            "the swapped-in file got the recorded mode"
        );
        // Restore's own file, found where it was made, takes it.
        std::fs::rename(dir.path().join("moved"), dir.path().join("f")).unwrap();
        apply_metadata(target.root(), OsStr::new("f"), &node, identity, false).unwrap();
        let mode = std::fs::metadata(dir.path().join("f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o4755);
    }
}
