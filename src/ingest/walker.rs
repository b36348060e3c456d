//! Reads one file-system entry's metadata into a tree [`Node`]: kind, mode, owners (with names,
//! looked up once per id), times in nanoseconds, inode, device, links, rdev, xattrs and symlink
//! target. Content is the archiver's business.

use crate::repo::tree::{Node, NodeKind, Xattr};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

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

/// The node kind of a file type.
pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::File
    }
}

/// Builds a node from `lstat` metadata, without content or subtree and without xattrs.
pub fn node_from_metadata(name: &OsStr, meta: &Metadata, owners: &OwnerNames) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind: kind_of(meta),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: owners.user(meta.uid()),
        group: owners.group(meta.gid()),
        mtime: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime: nanos(meta.ctime(), meta.ctime_nsec()),
        atime: nanos(meta.atime(), meta.atime_nsec()),
        size: meta.size(),
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        rdev: meta.rdev(),
        xattrs: Vec::new(),
        target: Vec::new(),
        content: Vec::new(),
        subtree: None,
    }
}

/// Reads the extended attributes of `path` (not following symlinks), sorted by name. File
/// systems without xattr support give none rather than an error.
pub fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            out.push(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
