//! The kernel's overlayfs under an overlay stage: mounting it, freezing it for a commit, and
//! detaching it.
//!
//! The options make every change land in the upper directory as a plain file, directory,
//! whiteout or opaque directory, which is all the commit reads ([`super::upper`]):
//! `redirect_dir=nofollow` (renaming a directory the parent holds fails with EXDEV, and `mv` and
//! file managers copy instead; rsync never renames directories), `metacopy=off` (a chmod copies
//! the whole file up, so no upper file depends on the lower one for its data), `index=on` (a
//! file the parent holds under several names keeps them all when one is changed: the others
//! show the copy too, and the commit finds them through the overlay), `xino=off` (a new file's
//! inode number is its upper inode's, which the chunker keys its records by), and `volatile`
//! (the upper directory is thrown away after a crash anyway, so nothing is synced to it). `nosuid` and `nodev`: what is copied in is data to back up, not
//! programs or devices to use.

use super::namespace::Namespace;
use nix::mount::{MntFlags, MsFlags};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Per-mount flags of the overlay, kept when it is made read-only.
const FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Mounts overlayfs on `target` with the given layers; in a user namespace it keeps its own
/// attributes in `user.overlay.*` (`userxattr`: `trusted.*` is root's).
pub fn mount_overlay(target: &Path, layers: [&Path; 3], namespace: Namespace) -> io::Result<()> {
    let [lower, upper, work] = layers;
    let mut options = Vec::new();
    for (key, path) in [("lowerdir", lower), ("upperdir", upper), ("workdir", work)] {
        options.extend_from_slice(key.as_bytes());
        options.push(b'=');
        options.extend_from_slice(&escaped(path));
        options.push(b',');
    }
    options.extend_from_slice(b"redirect_dir=nofollow,metacopy=off,xino=off,volatile");
    // In a user namespace overlayfs cannot index (it needs file handles, which only root may
    // open) and says so in the kernel log at every mount: not asked for there.
    options.extend_from_slice(match namespace {
        Namespace::Root => b",index=on",
        Namespace::User => b",userxattr",
    });
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

/// `open_tree(2)`: a copy of the mount, detached from every directory.
const OPEN_TREE_CLONE: libc::c_uint = 1;
/// `fspick(2)`: the mount the descriptor itself stands for.
const FSPICK_EMPTY_PATH: libc::c_uint = 8;
/// `fspick(2)`: close on exec.
const FSPICK_CLOEXEC: libc::c_uint = 1;
/// `fsconfig(2)`: set a flag option.
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
/// `fsconfig(2)`: apply the options to the live superblock.
const FSCONFIG_CMD_RECONFIGURE: libc::c_uint = 7;

/// A private copy of the overlay mounted on `target`, taken as soon as it is mounted: the commit
/// reads the stage through it, whatever the user later mounts inside or over the stage's
/// directory, and whether or not the user unmounted it.
pub fn clone_tree(target: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(target.as_os_str().as_bytes())?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree with a valid C string; a non-negative result is a descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    owned(fd)
}

/// Makes the stage's file system read-only, every mount of it at once (the user's, copies in
/// other mount namespaces, ours), so nothing changes while a commit reads it. The kernel refuses
/// (EBUSY) while a file there is open for writing.
pub fn freeze(tree: &OwnedFd) -> io::Result<()> {
    let empty = CString::default();
    // SAFETY: fspick on a descriptor we own; a non-negative result is a descriptor we own.
    let picked = owned(unsafe {
        libc::syscall(
            libc::SYS_fspick,
            tree.as_raw_fd(),
            empty.as_ptr(),
            FSPICK_EMPTY_PATH | FSPICK_CLOEXEC,
        )
    })?;
    let ro = CString::new("ro")?;
    for (command, key) in [
        (FSCONFIG_SET_FLAG, ro.as_ptr()),
        (FSCONFIG_CMD_RECONFIGURE, std::ptr::null()),
    ] {
        // SAFETY: fsconfig on the context fspick gave, with a valid key or none.
        let done = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                picked.as_raw_fd(),
                command,
                key,
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A syscall's descriptor, or its error.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Detaches the mount on `target` at once; files still open there keep it alive until closed.
pub fn detach(target: &Path) -> io::Result<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Whether `target` is where overlayfs with upper directory `upper` is mounted now (the user
/// may have unmounted it).
pub fn is_mounted(target: &Path, upper: &Path) -> bool {
    let Ok(table) = std::fs::read("/proc/self/mountinfo") else {
        // Unknown is not gone: the stage stays until told otherwise.
        return true;
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
            .and_then(|dash| fields.get(dash + 3));
        point.as_deref() == Some(target.as_os_str().as_bytes())
            && options.is_some_and(|o| {
                o.split(|&b| b == b',')
                    .any(|opt| unescape_octal(opt) == wanted)
            })
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
