//! What the stage lets its caller do: what the same user could do on a real file system.
//!
//! Why: the stage runs without `default_permissions` (the kernel's checks cost two round trips
//! per file rsync copies), so nothing but this module stops a request. A stage run by root may
//! do anything root may. A stage run by anyone else must refuse what that user could not do on
//! ext4 — give a file away (`chown` to another user, or to a group they are not in), change the
//! mode of a file they do not own, make device nodes — or a user could commit a root-owned
//! setuid file that root later restores as a real setuid-root binary. Names longer than NAME_MAX
//! are refused with ENAMETOOLONG, as every Linux file system does.

use crate::repo::tree::{MAX_NAME_LEN, Node, NodeKind};
use fuser::Errno;
use std::ffi::OsStr;

/// Who the stage answers for: the user running it (only they can reach it).
pub struct Caller {
    root: bool,
    uid: u32,
    /// Effective and supplementary groups.
    groups: Vec<u32>,
}

impl Caller {
    /// The user running this process.
    pub fn current() -> Caller {
        let uid = nix::unistd::geteuid().as_raw();
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        groups.push(nix::unistd::getegid().as_raw());
        Caller {
            root: uid == 0,
            uid,
            groups,
        }
    }

    /// May `node` become owned by `uid` and `gid` (either unchanged when `None`)?
    pub fn may_chown(&self, node: &Node, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
        if self.root {
            return Ok(());
        }
        let gives_away = uid.is_some_and(|u| u != node.uid);
        let foreign_group = gid.is_some_and(|g| g != node.gid && !self.groups.contains(&g));
        let changes = uid.is_some_and(|u| u != node.uid) || gid.is_some_and(|g| g != node.gid);
        if gives_away || foreign_group || (changes && node.uid != self.uid) {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// The mode `node` gets from a chmod to `mode`, or EPERM when the caller does not own it.
    /// Like Linux, a setgid bit on a file of a group the caller is not in is dropped silently.
    pub fn chmod(&self, node: &Node, mode: u32) -> Result<u32, Errno> {
        let mode = mode & 0o7777;
        if self.root {
            return Ok(mode);
        }
        if node.uid != self.uid {
            return Err(Errno::EPERM);
        }
        if node.kind != NodeKind::Dir && !self.groups.contains(&node.gid) {
            return Ok(mode & !libc::S_ISGID);
        }
        Ok(mode)
    }

    /// May the caller make a node of `kind`? Only root makes device nodes.
    pub fn may_make(&self, kind: NodeKind) -> Result<(), Errno> {
        match kind {
            NodeKind::CharDevice | NodeKind::BlockDevice if !self.root => Err(Errno::EPERM),
            _ => Ok(()),
        }
    }
}

/// The mode left after an owner change of a non-directory: Linux clears setuid, and setgid
/// when the group may execute, so a file given to another owner never carries the old one's
/// privileges.
pub fn mode_after_chown(node: &Node) -> u32 {
    if node.kind == NodeKind::Dir {
        return node.mode;
    }
    let mut mode = node.mode & !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// ENAMETOOLONG for a name longer than NAME_MAX.
pub fn check_name(name: &OsStr) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;
    if name.as_bytes().len() > MAX_NAME_LEN {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Caller {
        Caller {
            root: false,
            uid: 1000,
            groups: vec![1000, 27],
        }
    }

    fn owned_by(uid: u32, gid: u32, mode: u32) -> Node {
        Node::new(NodeKind::File, mode, (uid, gid), 0)
    }

    #[test]
    fn a_user_cannot_give_a_file_away_or_chmod_another_users_file() {
        let mine = owned_by(1000, 1000, 0o644);
        assert_eq!(user().may_chown(&mine, Some(0), None), Err(Errno::EPERM));
        assert_eq!(user().may_chown(&mine, None, Some(0)), Err(Errno::EPERM));
        assert_eq!(user().may_chown(&mine, Some(1000), Some(27)), Ok(()));
        let roots = owned_by(0, 0, 0o644);
        assert_eq!(user().may_chown(&roots, Some(0), Some(0)), Ok(()));
        assert_eq!(user().may_chown(&roots, None, Some(27)), Err(Errno::EPERM));
        assert_eq!(user().chmod(&roots, 0o4755), Err(Errno::EPERM));
        assert_eq!(user().chmod(&mine, 0o4755), Ok(0o4755));
        assert_eq!(user().chmod(&owned_by(1000, 5, 0), 0o2755), Ok(0o0755));
        assert_eq!(user().may_make(NodeKind::CharDevice), Err(Errno::EPERM));
        assert_eq!(user().may_make(NodeKind::Fifo), Ok(()));
    }

    #[test]
    fn an_owner_change_clears_setuid_and_group_executable_setgid() {
        assert_eq!(mode_after_chown(&owned_by(0, 0, 0o6755)), 0o0755);
        assert_eq!(mode_after_chown(&owned_by(0, 0, 0o2745)), 0o2745);
    }
}
