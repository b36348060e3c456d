//! The kernel's overlayfs under an overlay stage: mounting it, freezing it for a commit, and
//! detaching it.
//!
//! The options make every change land in the upper directory as a plain file, directory,
//! whiteout or opaque directory, which is all the commit reads ([`super::upper`]):
//! `redirect_dir=off` (renaming a directory the parent holds fails with EXDEV, and `mv` and
//! file managers copy instead; rsync never renames directories), `metacopy=off` (a chmod copies
//! the whole file up, so no upper file depends on the lower one for its data), `index=off` and
//! `xino=off` (an upper file's inode number is its upper inode's, which the chunker keys its
//! records by), and `volatile` (the upper directory is thrown away after a crash anyway, so
//! nothing is synced to it). `nosuid` and `nodev`: what is copied in is data to back up, not
//! programs or devices to use.

use nix::mount::{MntFlags, MsFlags};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Per-mount flags of the overlay, kept when it is made read-only.
const FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Mounts overlayfs on `target` with the given layers.
pub fn mount_overlay(target: &Path, lower: &Path, upper: &Path, work: &Path) -> io::Result<()> {
    let mut options = Vec::new();
    for (key, path) in [("lowerdir", lower), ("upperdir", upper), ("workdir", work)] {
        options.extend_from_slice(key.as_bytes());
        options.push(b'=');
        options.extend_from_slice(&escaped(path));
        options.push(b',');
    }
    options.extend_from_slice(b"redirect_dir=off,index=off,metacopy=off,xino=off,volatile");
    nix::mount::mount(
        Some("cairn-stage"),
        target,
        Some("overlay"),
        FLAGS,
        Some(options.as_slice()),
    )
    .map_err(io::Error::from)
}

/// A path as overlayfs' option parser reads it back: it splits at `,` and `:` unless escaped
/// with `\`.
fn escaped(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Makes the mount on `target` read-only, so nothing changes while a commit reads the upper
/// directory. The kernel refuses (EBUSY) while a file there is open for writing.
pub fn freeze(target: &Path) -> io::Result<()> {
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | FLAGS,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Detaches the mount on `target` at once; files still open there keep it alive until closed.
pub fn detach(target: &Path) -> io::Result<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_backslashes_in_layer_paths_are_escaped() {
        assert_eq!(
            escaped(Path::new("/a,b:c\\d/e")),
            b"/a\\,b\\:c\\\\d/e".to_vec()
        );
    }
}
