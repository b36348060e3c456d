//! Reading the tree being backed up without moving its access times.
//!
//! Snapshots record each entry's access time. Reading a file or listing a directory moves it
//! (under `relatime`, on the first read after a change and once a day after that), so without
//! care a backup's own reads would change what the next backup records: every directory it
//! listed would get a new tree id a day later, unchanged or not, and snapshots would stop
//! sharing trees — the sharing that de-duplicates metadata and lets `history/`, `find` and
//! `diff` skip unchanged directories. Opening with `O_NOATIME` leaves access times alone; the
//! kernel allows it only to the owner (or root), so for others the plain open is used.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn open(path: &Path, flags: i32) -> io::Result<File> {
    let with = OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NOATIME)
        .open(path);
    match with {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            OpenOptions::new().read(true).custom_flags(flags).open(path)
        }
        other => other,
    }
}

/// Opens a file for reading without moving its access time where allowed, only if it is a
/// regular file: opened without blocking, so a FIFO swapped in for the file after it was looked
/// at is refused at once instead of waiting for a writer for ever (one extra `fstat` per file,
/// on backup's hot path, where an `O_PATH` open and a re-open through `/proc` cost three times
/// a plain open). A file under another process's lease is waited for, as a plain open does.
pub fn open_file(path: &Path) -> io::Result<File> {
    regular(|flags| open(path, flags | libc::O_NOFOLLOW | libc::O_NOCTTY))
}

/// [`open_file`] for entry `name` of directory `dir`, as walks by descriptors open files.
pub fn open_file_at(dir: &File, name: &OsStr) -> io::Result<File> {
    regular(|flags| open_at(dir, name, flags))
}

/// Opens with `open` (given the flags to add) without blocking, then, if another process holds
/// a lease, waiting; keeps the file only if it is a regular one.
fn regular(open: impl Fn(i32) -> io::Result<File>) -> io::Result<File> {
    let file = match open(libc::O_NONBLOCK) {
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => open(0)?,
        other => other?,
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file any more")
}

/// Opens for reading, with `flags`, the file `reference` (an `O_PATH` descriptor) refers to,
/// if it is a regular file: through `/proc/self/fd`, so it is that very file, whatever its path
/// names now, and nothing else (a device's driver never runs) — for the dictionary sample's
/// walks, which open files the backup has not looked at.
pub fn reopen_regular(reference: &File, flags: i32) -> io::Result<File> {
    if !reference.metadata()?.is_file() {
        return Err(not_regular());
    }
    let through = Path::new("/proc/self/fd").join(reference.as_raw_fd().to_string());
    open(&through, flags | libc::O_NOCTTY)
}

/// The names in directory `path` (without `.` and `..`), listed without moving its access time
/// where allowed.
pub fn list_dir(path: &Path) -> io::Result<Vec<OsString>> {
    names_of(open_dir(path)?)
}

/// The names in the open directory `dir` (without `.` and `..`), read through a duplicate of
/// its descriptor: `dir` stays open for opening and looking at them. The two share one reading
/// position, so a directory is listed this way once.
pub fn names_in(dir: &File) -> io::Result<Vec<OsString>> {
    names_of(dir.try_clone()?)
}

/// The names in `dir`, which the listing consumes.
fn names_of(dir: File) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for_each_name_in(dir, usize::MAX, |name| {
        names.push(OsStr::from_bytes(name).to_os_string())
    })?;
    Ok(names)
}

/// Opens directory `path` (not a link to one) without moving its access time where allowed.
pub fn open_dir(path: &Path) -> io::Result<File> {
    open(path, libc::O_DIRECTORY | libc::O_NOFOLLOW)
}

/// Opens `name` in directory `dir` with `flags`, never through a link in its last component,
/// without moving its access time where allowed: for walks that go by descriptors, so a
/// directory swapped for a link on the way cannot lead them elsewhere.
pub fn open_at(dir: &File, name: &OsStr, flags: i32) -> io::Result<File> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
    let at = |flags: i32| openat(dir, name, OFlag::from_bits_truncate(flags), Mode::empty());
    match at(flags | libc::O_NOATIME) {
        Err(nix::errno::Errno::EPERM) => at(flags),
        other => other,
    }
    .map(File::from)
    .map_err(io::Error::from)
}

/// Calls `each` with the first `limit` names in the open directory `dir` (without `.` and
/// `..`).
pub fn for_each_name_in(dir: File, limit: usize, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    let mut dir = nix::dir::Dir::from_fd(dir.into()).map_err(io::Error::from)?;
    let mut seen = 0usize;
    for entry in dir.iter() {
        if seen >= limit {
            break;
        }
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            seen += 1;
            each(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A FIFO's open would wait for a writer: it is refused at once.
        let err = open_file(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        std::os::unix::fs::symlink(&fifo, dir.path().join("link")).unwrap();
        assert!(
            open_file(&dir.path().join("link")).is_err(),
            "links are not followed"
        );
        std::fs::write(dir.path().join("f"), b"content").unwrap();
        let mut read = Vec::new();
        io::Read::read_to_end(&mut open_file(&dir.path().join("f")).unwrap(), &mut read).unwrap();
        assert_eq!(read, b"content");
    }

    #[test]
    fn reading_and_listing_leave_access_times_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"content").unwrap();
        // An access time before the modification time: any plain read would move it.
        let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        let new = filetime::FileTime::from_unix_time(1_500_000_000, 0);
        for p in [&file, &dir.path().to_path_buf()] {
            filetime::set_file_times(p, old, new).unwrap();
        }
        let mut read = Vec::new();
        io::Read::read_to_end(&mut open_file(&file).unwrap(), &mut read).unwrap();
        assert_eq!(read, b"content");
        assert_eq!(list_dir(dir.path()).unwrap(), vec![OsString::from("f")]);
        for p in [&file, &dir.path().to_path_buf()] {
            assert_eq!(
                std::fs::metadata(p).unwrap().atime(),
                1_000_000_000,
                "{p:?}"
            );
        }
    }
}
