//! What the stage lets its caller do: what the same user could do on a real file system.
//! (Mode bits are checked as the kernel's `default_permissions` would; ACLs are not.)
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
    /// Like Linux, a setgid bit on a file or directory of a group the caller is not in is
    /// dropped silently. (A non-owner's write clears setuid through the write itself: the
    /// stage negotiates FUSE_HANDLE_KILLPRIV_V2.)
    pub fn chmod(&self, node: &Node, mode: u32) -> Result<u32, Errno> {
        let mode = mode & 0o7777;
        if self.root {
            return Ok(mode);
        }
        if node.uid != self.uid {
            return Err(Errno::EPERM);
        }
        if !self.groups.contains(&node.gid) {
            return Ok(mode & !libc::S_ISGID);
        }
        Ok(mode)
    }

    /// Whether the caller is root, whom no check stops.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// Whether `node`'s mode grants the caller `want` (read 4, write 2, execute 1): the owner's
    /// bits if the caller owns it, else the group's if the caller is in its group, else the
    /// others'.
    fn granted(&self, node: &Node, want: u32) -> bool {
        let shift = if node.uid == self.uid {
            6
        } else if self.groups.contains(&node.gid) {
            3
        } else {
            0
        };
        (node.mode >> shift) & want == want
    }

    /// May the caller change `node`'s content (write, truncate) or its xattrs? EACCES unless
    /// the caller owns it or the mode grants write. (The stage sees no opens, and a file
    /// created read-only is written through the descriptor its creation returned, which a
    /// real file system allows: so the owner may always.)
    pub fn may_write(&self, node: &Node) -> Result<(), Errno> {
        if self.root || node.uid == self.uid || self.granted(node, 2) {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// May the caller add or remove a name in directory `dir` (`victim` being what a removal or
    /// a replacing rename takes away)? Write and search permission on the directory, and in a
    /// sticky directory the caller must own the directory or the victim.
    pub fn may_change_dir(&self, dir: &Node, victim: Option<&Node>) -> Result<(), Errno> {
        if self.root {
            return Ok(());
        }
        if !self.granted(dir, 3) {
            return Err(Errno::EACCES);
        }
        let sticky = dir.mode & libc::S_ISVTX != 0;
        if sticky
            && let Some(victim) = victim
            && dir.uid != self.uid
            && victim.uid != self.uid
        {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// May the caller set `node`'s times: to given times only as its owner (EPERM), to now
    /// also with write permission (EACCES otherwise).
    pub fn may_set_times(&self, node: &Node, explicit: bool) -> Result<(), Errno> {
        if self.root || node.uid == self.uid {
            Ok(())
        } else if explicit {
            Err(Errno::EPERM)
        } else {
            self.may_write(node)
        }
    }

    /// May the caller move directory `dir` to another parent? Its `..` changes, which needs
    /// write permission on it (owning it is not enough), as on ext4.
    pub fn may_reparent(&self, dir: &Node) -> Result<(), Errno> {
        if self.root || self.granted(dir, 2) {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// May the caller give `node` another name? As Linux's protected_hardlinks (on by
    /// default): its owner may, anyone else only for a regular file without setuid (or
    /// executable setgid) that they may read and write.
    pub fn may_link(&self, node: &Node) -> Result<(), Errno> {
        let privileged = node.mode & libc::S_ISUID != 0
            || node.mode & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP);
        if self.root
            || node.uid == self.uid
            || (node.kind == NodeKind::File && !privileged && self.granted(node, 6))
        {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
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
        assert_eq!(
            user().chmod(&owned_by(0, 0, 0o4755), 0o0755),
            Err(Errno::EPERM)
        );
        assert_eq!(user().may_make(NodeKind::CharDevice), Err(Errno::EPERM));
        assert_eq!(user().may_make(NodeKind::Fifo), Ok(()));
    }

    #[test]
    fn writes_names_and_times_follow_the_mode_bits_as_on_ext4() {
        let roots = owned_by(0, 0, 0o644);
        assert_eq!(user().may_write(&roots), Err(Errno::EACCES));
        assert_eq!(user().may_write(&owned_by(0, 27, 0o664)), Ok(()));
        assert_eq!(user().may_write(&owned_by(0, 0, 0o666)), Ok(()));
        let root_dir = Node::new(NodeKind::Dir, 0o755, (0, 0), 0);
        assert_eq!(user().may_change_dir(&root_dir, None), Err(Errno::EACCES));
        let tmp = Node::new(NodeKind::Dir, 0o1777, (0, 0), 0);
        assert_eq!(user().may_change_dir(&tmp, None), Ok(()));
        assert_eq!(user().may_change_dir(&tmp, Some(&roots)), Err(Errno::EPERM));
        assert_eq!(
            user().may_change_dir(&tmp, Some(&owned_by(1000, 1000, 0o600))),
            Ok(())
        );
        assert_eq!(user().may_set_times(&roots, true), Err(Errno::EPERM));
        assert_eq!(user().may_link(&roots), Err(Errno::EPERM));
        assert_eq!(user().may_link(&owned_by(0, 0, 0o666)), Ok(()));
        assert_eq!(user().may_link(&owned_by(0, 0, 0o4777)), Err(Errno::EPERM));
        assert_eq!(user().may_set_times(&owned_by(0, 0, 0o666), false), Ok(()));
    }

    #[test]
    fn an_owner_change_clears_setuid_and_group_executable_setgid() {
        assert_eq!(mode_after_chown(&owned_by(0, 0, 0o6755)), 0o0755);
        assert_eq!(mode_after_chown(&owned_by(0, 0, 0o2745)), 0o2745);
    }
}
