//! The kernel's overlayfs under an overlay stage: mounting it, freezing it for a commit, and
//! detaching it.
//!
//! The options make every change land in the upper directory as a plain file, directory,
//! whiteout or opaque directory, which is all the commit reads ([`super::upper`]):
//! `redirect_dir=off` (renaming a directory the parent holds fails with EXDEV, and `mv` and
//! file managers copy instead; rsync never renames directories), `metacopy=off` (a chmod copies
//! the whole file up, so no upper file depends on the lower one for its data), `index=on` (a
//! file the parent holds under several names keeps them all when one is changed: the others
//! show the copy too, and the commit finds them through the overlay), `xino=off` (a new file's
//! inode number is its upper inode's, which the chunker keys its records by), and `volatile`
//! (the upper directory is thrown away after a crash anyway, so nothing is synced to it). `nosuid` and `nodev`: what is copied in is data to back up, not
//! programs or devices to use.

use nix::mount::{MntFlags, MsFlags};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Per-mount flags of the overlay, kept when it is made read-only.
const FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Mounts overlayfs on `target` with the given layers, read-only if asked (to read a stage
/// whose mount the user took away).
pub fn mount_overlay(
    target: &Path,
    lower: &Path,
    upper: &Path,
    work: &Path,
    read_only: bool,
) -> io::Result<()> {
    let mut options = Vec::new();
    for (key, path) in [("lowerdir", lower), ("upperdir", upper), ("workdir", work)] {
        options.extend_from_slice(key.as_bytes());
        options.push(b'=');
        options.extend_from_slice(&escaped(path));
        options.push(b',');
    }
    options.extend_from_slice(b"redirect_dir=off,index=on,metacopy=off,xino=off,volatile");
    let flags = if read_only {
        FLAGS | MsFlags::MS_RDONLY
    } else {
        FLAGS
    };
    nix::mount::mount(
        Some("cairn-stage"),
        target,
        Some("overlay"),
        flags,
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

/// Whether `target` is where overlayfs with upper directory `upper` is mounted now (the user
/// may have unmounted it).
pub fn is_mounted(target: &Path, upper: &Path) -> bool {
    let Ok(table) = std::fs::read("/proc/self/mountinfo") else {
        return false;
    };
    let mut wanted = b"upperdir=".to_vec();
    wanted.extend_from_slice(upper.as_os_str().as_bytes());
    table.split(|&b| b == b'\n').any(|line| {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let point = fields.get(4).map(|f| unescape_octal(f));
        // After the optional fields: "-", the type, the source, the super options.
        let options = fields
            .iter()
            .position(|f| *f == b"-")
            .and_then(|dash| fields.get(dash + 3))
            .map(|f| unescape_octal(f));
        point.as_deref() == Some(target.as_os_str().as_bytes())
            && options.is_some_and(|o| o.split(|&b| b == b',').any(|opt| opt == wanted.as_slice()))
    })
}

/// A mountinfo field as the path it stands for: `\ooo` is the byte of that octal number.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let digits = field.get(i + 1..i + 4);
        let code = digits
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')));
        match code.and_then(|c| u8::try_from(c).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
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

    #[test]
    fn mountinfo_escapes_are_read_back() {
        assert_eq!(
            unescape_octal(b"/mnt/a\\040b\\134c\\9"),
            b"/mnt/a b\\c\\9".to_vec()
        );
    }
}
