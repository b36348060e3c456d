//! The private namespaces of `cairn stage DIR -- COMMAND`: the stage is mounted where only
//! COMMAND (and what it starts) can see it, and a user without root mounts overlayfs in a user
//! namespace of their own.
//!
//! The user namespace maps the user to themselves (not to root), so COMMAND runs as the user it
//! always was, with no capability after its `exec`, and the owners it sees and sets are the real
//! ones — but only the user and their primary group exist there: a user may not map more
//! without a privileged helper, so files of other owners and groups show as `nobody` and cannot
//! be given to them ([`unmapped_groups`]). cairn itself keeps the namespace's capabilities,
//! which are what mounting the parent's view (FUSE) and overlayfs (`userxattr`) there need.

use crate::error::{Error, Result};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

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
    // Where user namespaces are off, or granted without rights (AppArmor's
    // `apparmor_restrict_unprivileged_userns`), any step below may fail.
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        let hint = match namespace {
            Namespace::User => {
                " (this system does not let users mount in a namespace of their own: run the \
                 stage without COMMAND, as a FUSE stage)"
            }
            Namespace::Root => "",
        };
        Error::Invalid(format!("{what}: {e}{hint}"))
    };
    match namespace {
        Namespace::Root => nix::sched::unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| refused("making a private mount namespace", &e))?,
        Namespace::User => {
            let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
            nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                .map_err(|e| refused("making a user namespace", &e))?;
            // The kernel wants supplementary groups fixed before a group map is written.
            for (path, line) in [
                ("/proc/self/setgroups", "deny".to_string()),
                ("/proc/self/uid_map", format!("{uid} {uid} 1")),
                ("/proc/self/gid_map", format!("{gid} {gid} 1")),
            ] {
                std::fs::write(path, line).map_err(|e| refused(path, &e))?;
            }
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
    .map_err(|e| refused("making the stage's mounts private", &e))?;
    Ok(namespace)
}

/// The groups, other than the user's own, that files may belong to outside the user namespace
/// but not inside it (only the user and their primary group are mapped there).
pub fn unmapped_groups() -> Vec<u32> {
    let own = nix::unistd::getegid();
    nix::unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .filter(|g| *g != own)
        .map(|g| g.as_raw())
        .collect()
}

/// This process's thread count, from the kernel.
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}
