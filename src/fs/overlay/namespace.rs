//! The private namespaces of `cairn stage DIR -- COMMAND`: the stage is mounted where only
//! COMMAND (and what it starts) can see it, and a user without root mounts overlayfs in a user
//! namespace of their own.
//!
//! The user namespace maps the user to themselves (not to root), so COMMAND runs as the user it
//! always was, with no capability after its `exec`, and every owner it sees and sets is the real
//! one: the stage's files are the user's, and the snapshot records the same owners `cairn backup`
//! would. cairn itself keeps the namespace's capabilities, which are what mounting the parent's
//! view (FUSE) and overlayfs (`userxattr`) there need.

use crate::error::{Error, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use std::path::Path;

/// Where the stage's mounts live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// Root's own mount namespace, or a private copy of it: overlayfs keeps its attributes in
    /// `trusted.overlay.*`, and fanotify reports closed files.
    Root,
    /// A user namespace of the user's: overlayfs keeps its attributes in `user.overlay.*`
    /// (`userxattr`), and inotify reports closed files (fanotify cannot watch a mount there).
    User,
}

impl Namespace {
    /// Where a process of this user mounts what it mounts today, without new namespaces.
    pub fn current() -> Namespace {
        if nix::unistd::geteuid().is_root() {
            Namespace::Root
        } else {
            Namespace::User
        }
    }

    /// overlayfs' own extended attributes start so in the upper directory.
    pub fn overlay_xattrs(self) -> &'static [u8] {
        match self {
            Namespace::Root => b"trusted.overlay.",
            Namespace::User => b"user.overlay.",
        }
    }
}

/// Moves this process into a mount namespace of its own (and, without root, a user namespace of
/// its own first), whose mounts no one outside sees. Must run before any thread is started: the
/// kernel refuses a new user namespace to a process with several threads, and a mount
/// namespace is per thread.
pub fn enter_private() -> Result<Namespace> {
    if threads() != Some(1) {
        return Err(Error::Invalid(
            "the stage's namespace must be made before any thread starts".into(),
        ));
    }
    let namespace = Namespace::current();
    let unshare = |flags: CloneFlags| {
        nix::sched::unshare(flags).map_err(|e| {
            Error::Invalid(format!(
                "making a private mount namespace: {e}{}",
                if namespace == Namespace::User {
                    " (this system does not let users make user namespaces: run without \
                     COMMAND, as a FUSE stage)"
                } else {
                    ""
                }
            ))
        })
    };
    match namespace {
        Namespace::Root => unshare(CloneFlags::CLONE_NEWNS)?,
        Namespace::User => {
            let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
            unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)?;
            // The kernel wants supplementary groups fixed before a group map is written.
            write_map("/proc/self/setgroups", "deny")?;
            write_map("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
            write_map("/proc/self/gid_map", &format!("{gid} {gid} 1"))?;
        }
    }
    // Nothing mounted here propagates back to the namespace we came from.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::Invalid(format!("making the stage's mounts private: {e}")))?;
    Ok(namespace)
}

/// Writes one of the user namespace's maps.
fn write_map(path: &str, line: &str) -> Result<()> {
    std::fs::write(path, line).map_err(|e| Error::io(Path::new(path), e))
}

/// This process's thread count, from the kernel.
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}
