//! What both FUSE faces answer the same way: snapshot node kinds and times in the kernel's
//! terms, and the size-probe protocol of xattr replies.

use crate::repo::tree::NodeKind;
use fuser::{Errno, FileType, ReplyXattr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the epoch (negative before it) as a `SystemTime`.
pub fn system_time(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(nanos.unsigned_abs())
    }
}

/// The kernel's file type of a node kind.
pub fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

/// Answers an xattr read: the length when asked for 0 bytes, ERANGE when the buffer is too
/// small, else the bytes.
pub fn xattr_reply(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

/// The NUL-separated name list `listxattr` answers with.
pub fn xattr_names(xattrs: &[crate::repo::tree::Xattr]) -> Vec<u8> {
    let mut names = Vec::new();
    for x in xattrs {
        names.extend_from_slice(&x.name);
        names.push(0);
    }
    names
}
