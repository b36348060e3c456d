//! The overlay stage's private directory: the upper and work directories overlayfs writes,
//! and the mount point of the parent's view. One per running stage, in the user's 0700 cache
//! directory, itself 0700, named at random and locked while its stage runs. A stage killed
//! before it could clean up leaves one unlocked: the next overlay stage detaches whatever is
//! still mounted from it and removes it, so the spool is empty once no stage runs.

use crate::error::{Error, Result};
use std::fs::{DirBuilder, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Directory names of overlay stages start so.
const PREFIX: &str = "overlay-";
/// The lock file held while the stage runs.
const LOCK: &str = "lock";

/// A running stage's directory; removed when dropped.
pub struct Spool {
    dir: PathBuf,
    /// Held (flock) for the stage's life: a stale spool is one whose lock is free.
    _lock: File,
}

impl Spool {
    /// Removes spools of stages that are gone, then makes a new one under `base` (a private
    /// directory of this user).
    pub fn create(base: &Path) -> Result<Spool> {
        let base = &std::path::absolute(base).map_err(|e| Error::io(base, e))?;
        remove_stale(base);
        let mut name = [0u8; 8];
        crate::random::fill_random(&mut name);
        let name = hex::encode(name);
        let private = |path: &Path| {
            DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(|e| Error::io(path, e))
        };
        // Made and locked under a name no other stage takes for stale, then named.
        let making = base.join(format!(".new-{name}"));
        private(&making)?;
        let lock = File::create_new(making.join(LOCK)).map_err(|e| Error::io(&making, e))?;
        if !try_lock(&lock) {
            return Err(Error::Invalid(format!("cannot lock {}", making.display())));
        }
        let dir = base.join(format!("{PREFIX}{name}"));
        std::fs::rename(&making, &dir).map_err(|e| Error::io(&dir, e))?;
        let spool = Spool { dir, _lock: lock };
        for sub in ["upper", "work", "lower"] {
            private(&spool.dir.join(sub))?;
        }
        Ok(spool)
    }

    /// The spool itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where overlayfs keeps what changed.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    /// overlayfs' work directory (on the upper directory's file system).
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Where the parent's view is mounted, the overlay's lower layer.
    pub fn lower(&self) -> PathBuf {
        self.dir.join("lower")
    }

    /// Whether overlayfs indexed a copied-up file (one the parent holds under several names).
    pub fn has_index_entries(&self) -> bool {
        std::fs::read_dir(self.work().join("index")).is_ok_and(|mut d| d.next().is_some())
    }

    /// Removes the spool with whatever the copy left in it (the stage's mounts must be gone).
    pub fn remove(&self) {
        match remove_tree(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "cannot remove the stage's spool {}: {e}",
                self.dir.display()
            ),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes `dir` and everything in it. overlayfs makes its work directory's own directories
/// mode 000, which a user without root cannot enter to empty: those are opened up first.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let mut dirs = vec![dir.to_path_buf()];
            while let Some(dir) = dirs.pop() {
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                // The file type of the entry itself: a link is never followed.
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            std::fs::remove_dir_all(dir)
        }
        done => done,
    }
}

fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a descriptor this process owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Detaches and removes the spools under `base` whose stage is gone (their lock is free).
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let is_spool = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX));
        if !is_spool || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let stale = File::open(dir.join(LOCK)).map_or(true, |lock| try_lock(&lock));
        if !stale {
            continue;
        }
        detach_mounts_of(&dir);
        match remove_tree(&dir) {
            Ok(()) => tracing::info!("removed {} left by a stage that was killed", dir.display()),
            Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
        }
    }
}

/// Detaches every mount still using `dir`: the overlay of a killed stage (its upper directory is
/// in `dir`) and the view it left mounted there.
fn detach_mounts_of(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Some(dir) = dir.to_str() else {
        return;
    };
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else {
            continue;
        };
        let within = |p: &str| p == dir || p.starts_with(&format!("{dir}/"));
        let uses = line.contains(&format!("upperdir={dir}/")) || within(point);
        if uses {
            // mountinfo escapes spaces and such in octal; such a path is left for `umount`.
            let _ = crate::fs::overlay::mount::detach(Path::new(point));
        }
    }
}
