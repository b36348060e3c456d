//! Reads one file-system entry's metadata into a tree [`Node`]: kind, mode, owners (with names,
//! looked up once per id), times in nanoseconds, inode, device, links, rdev, xattrs and symlink
//! target. Content is the archiver's business.

use crate::repo::tree::{Node, NodeKind, Xattr};
use nix::sys::stat::FileStat;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use xattr::FileExt;

/// Caches uid → user name and gid → group name lookups for one job.
#[derive(Default)]
pub struct OwnerNames {
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

impl OwnerNames {
    /// The name of user `uid`, or empty when it has none here.
    pub fn user(&self, uid: u32) -> String {
        self.users
            .lock()
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    /// The name of group `gid`, or empty when it has none here.
    pub fn group(&self, gid: u32) -> String {
        self.groups
            .lock()
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

/// Nanoseconds since the epoch from seconds and nanoseconds, as nodes record times.
pub fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// An entry's status as a node records it, read by path (`lstat`, as [`Metadata`]) or by name
/// in a directory the walk holds open (`fstatat`, as [`FileStat`]): one builder serves both.
#[derive(Clone, Copy, Debug)]
pub struct EntryStat {
    /// `st_mode`: the kind and the permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime: i64,
    /// Access time, nanoseconds since the epoch.
    pub atime: i64,
    /// Size in bytes.
    pub size: u64,
    /// Inode number.
    pub ino: u64,
    /// Device of the file system holding it.
    pub dev: u64,
    /// Hard links.
    pub nlink: u64,
    /// Device a device node stands for.
    pub rdev: u64,
}

impl From<&Metadata> for EntryStat {
    fn from(meta: &Metadata) -> Self {
        EntryStat {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime: nanos(meta.ctime(), meta.ctime_nsec()),
            atime: nanos(meta.atime(), meta.atime_nsec()),
            size: meta.size(),
            ino: meta.ino(),
            dev: meta.dev(),
            nlink: meta.nlink(),
            rdev: meta.rdev(),
        }
    }
}

// The widths of `stat`'s fields differ between architectures: what is a conversion on one is
// none on another.
#[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
impl From<&FileStat> for EntryStat {
    fn from(st: &FileStat) -> Self {
        EntryStat {
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: nanos(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: nanos(st.st_ctime as i64, st.st_ctime_nsec as i64),
            atime: nanos(st.st_atime as i64, st.st_atime_nsec as i64),
            size: u64::try_from(st.st_size).unwrap_or(0),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        }
    }
}

impl EntryStat {
    /// The node kind its mode says.
    pub fn kind(&self) -> NodeKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => NodeKind::Dir,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => NodeKind::File,
        }
    }
}

/// Builds a node from an entry's status, without content or subtree and without xattrs.
pub fn node_from_stat(name: &OsStr, stat: &EntryStat, owners: &OwnerNames) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: stat.kind(),
        mode: stat.mode & 0o7777,
        uid: stat.uid,
        gid: stat.gid,
        user: owners.user(stat.uid),
        group: owners.group(stat.gid),
        mtime: stat.mtime,
        ctime: stat.ctime,
        atime: stat.atime,
        size: stat.size,
        inode: stat.ino,
        device: stat.dev,
        links: stat.nlink,
        rdev: stat.rdev,
        xattrs: Vec::new(),
        target: Vec::new(),
        content: Vec::new(),
        subtree: None,
    }
}

/// Reads the extended attributes of `path` (not following symlinks), sorted by name. File
/// systems without xattr support give none rather than an error.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    sorted_xattrs(xattr::list(path), |name| xattr::get(path, name))
}

/// [`read_xattrs`] of an open file or directory: its path is not resolved again.
pub fn read_xattrs_of(file: &File) -> io::Result<Vec<Xattr>> {
    sorted_xattrs(file.list_xattr(), |name| file.get_xattr(name))
}

fn sorted_xattrs(
    names: io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> io::Result<Vec<Xattr>> {
    let names = match names {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = get(&name)? {
            out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
