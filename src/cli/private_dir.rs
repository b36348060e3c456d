//! Directories only the current user can enter: where the stage's control socket and spool
//! files go.
//!
//! Why not `/tmp` itself: another local user can create a predictable name there first (a
//! socket path taken stops every stage from starting) or watch it with inotify and open a
//! spool file in the moment between its creation and unlinking. So the socket goes to
//! `$XDG_RUNTIME_DIR` (a per-user 0700 tmpfs made at login) and spool files to the user's cache
//! directory, each in a `cairn` directory made 0700; a directory someone else made, a link, or
//! one open to others is refused rather than used.

use anyhow::{Result, bail};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the stage's control socket goes: `$XDG_RUNTIME_DIR/cairn` when that directory is the
/// user's, else [`cache_dir`].
pub fn runtime_dir() -> Result<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    if let Some(runtime) = env_dir("XDG_RUNTIME_DIR")
        && is_private(&runtime, uid)
    {
        let dir = runtime.join("cairn");
        if ensure_private(&dir, uid).is_ok() {
            return Ok(dir);
        }
    }
    cache_dir()
}

/// Where spool files go (on disk, not in a RAM-backed runtime directory: a spool holds a whole
/// file): `$XDG_CACHE_HOME/cairn`, else `$HOME/.cache/cairn`, else `/tmp/cairn-<uid>`. Each is
/// made 0700 if missing and refused unless it is a private directory of this user; only the
/// last is in a directory others can write, which is why it comes last.
pub fn cache_dir() -> Result<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let home_cache = env_dir("HOME").map(|home| home.join(".cache"));
    for base in [env_dir("XDG_CACHE_HOME"), home_cache]
        .into_iter()
        .flatten()
    {
        if std::fs::create_dir_all(&base).is_ok() {
            let dir = base.join("cairn");
            if ensure_private(&dir, uid).is_ok() {
                return Ok(dir);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("cairn-{uid}"));
    ensure_private(&dir, uid)?;
    Ok(dir)
}

/// An absolute directory named by environment variable `name`.
fn env_dir(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Makes `dir` (0700) unless it exists, then insists it is a private directory of `uid`.
pub fn ensure_private(dir: &Path, uid: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => bail!("making {}: {e}", dir.display()),
    }
    if !is_private(dir, uid) {
        bail!(
            "{} is not a private directory of this user (a link, someone else's, or open to \
             others): refusing to use it",
            dir.display()
        );
    }
    Ok(())
}

/// Whether `dir` is a directory (not a link) owned by `uid` that no one else may enter.
fn is_private(dir: &Path, uid: u32) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
}
