//! A pass-through FUSE file system that fails every read touching a chosen 4 KiB sector of a
//! chosen file with EIO, as a disk that lost those sectors does. A fault belongs to the backing
//! file (its inode), not its name: a file written anew under the same name reads clean, as a
//! sector rewritten on a real disk is remapped.

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECTOR: u64 = 4096;
/// Nothing is cached by the kernel: every lookup and attribute comes from the backing files.
const TTL: Duration = Duration::ZERO;

/// The sectors that fail, by backing inode, and how many reads failed.
#[derive(Default)]
pub struct Faults {
    lost: Mutex<HashSet<(u64, u64)>>,
    failed_reads: AtomicU64,
}

/// The pass-through file system over one backing directory.
struct EioFs {
    faults: Arc<Faults>,
    /// Path of each inode number we handed out (inode 1 is the backing directory).
    paths: Mutex<(Vec<PathBuf>, HashMap<PathBuf, u64>)>,
    files: Mutex<HashMap<u64, File>>,
    next_fh: AtomicU64,
}

/// The file system mounted on a directory; unmounted when dropped.
pub struct EioMount {
    pub dir: PathBuf,
    faults: Arc<Faults>,
    session: Option<BackgroundSession>,
}

impl EioMount {
    /// Mounts the pass-through of `backing` on `dir` (created if missing).
    pub fn start(backing: &Path, dir: &Path) -> EioMount {
        fs::create_dir_all(dir).unwrap();
        let faults = Arc::new(Faults::default());
        let root = backing.canonicalize().unwrap();
        let fs = EioFs {
            faults: faults.clone(),
            paths: Mutex::new((vec![root.clone()], HashMap::from([(root, 1)]))),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![MountOption::FSName("eio-test".into())];
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fs, dir, &config).expect("the EIO file system mounts");
        super::wait_for("the EIO file system", || super::is_mounted(dir));
        EioMount {
            dir: dir.to_path_buf(),
            faults,
            session: Some(session),
        }
    }

    /// Makes sector `sector` of backing file `file` unreadable.
    pub fn lose_sector(&self, file: &Path, sector: u64) {
        let ino = fs::metadata(file).unwrap().ino();
        self.faults.lost.lock().insert((ino, sector));
    }

    /// Reads failed so far.
    pub fn failed_reads(&self) -> u64 {
        self.faults.failed_reads.load(Ordering::Relaxed)
    }
}

impl Drop for EioMount {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}

fn reply_empty(reply: ReplyEmpty, done: Result<(), Errno>) {
    match done {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

fn attr(ino: u64, meta: &fs::Metadata) -> FileAttr {
    let kind = if meta.is_dir() {
        FileType::Directory
    } else if meta.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl EioFs {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let paths = self.paths.lock();
        paths
            .0
            .get((ino.0 as usize).wrapping_sub(1))
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn intern(&self, path: PathBuf) -> u64 {
        let mut paths = self.paths.lock();
        if let Some(&ino) = paths.1.get(&path) {
            return ino;
        }
        paths.0.push(path.clone());
        let ino = paths.0.len() as u64;
        paths.1.insert(path, ino);
        ino
    }

    fn entry(&self, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(&path).map_err(errno)?;
        Ok(attr(self.intern(path), &meta))
    }

    fn keep(&self, file: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().insert(fh, file);
        FileHandle(fh)
    }

    /// Removes `name` in `parent` with `how` and forgets its path.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        how: impl Fn(&Path) -> std::io::Result<()>,
    ) -> Result<(), Errno> {
        let path = self.child(parent, name)?;
        let gone = self.backing_ino(&path);
        how(&path).map_err(errno)?;
        self.forget_faults(gone);
        self.forget_path(&path);
        Ok(())
    }

    /// The backing inode number of `path`, if it exists.
    fn backing_ino(&self, path: &Path) -> Option<u64> {
        fs::symlink_metadata(path).ok().map(|m| m.ino())
    }

    /// Drops the faults of a backing file that is gone: its inode number may be given to the
    /// next file created, which must read clean.
    fn forget_faults(&self, ino: Option<u64>) {
        if let Some(ino) = ino {
            self.faults.lost.lock().retain(|(i, _)| *i != ino);
        }
    }

    fn forget_path(&self, path: &Path) {
        let mut paths = self.paths.lock();
        if let Some(ino) = paths.1.remove(path) {
            paths.0[ino as usize - 1] = PathBuf::from("/nonexistent/forgotten");
        }
    }
}

impl Filesystem for EioFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|p| self.entry(p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let got = self
            .path(ino)
            .and_then(|p| fs::symlink_metadata(p).map_err(errno));
        match got {
            Ok(meta) => reply.attr(&TTL, &attr(ino.0, &meta)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let done = self.path(ino).and_then(|path| {
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(errno)?;
            }
            if let Some(size) = size {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(size))
                    .map_err(errno)?;
            }
            fs::symlink_metadata(&path).map_err(errno)
        });
        match done {
            Ok(meta) => reply.attr(&TTL, &attr(ino.0, &meta)),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Ok(dir) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        let listed = match fs::read_dir(&dir) {
            Ok(listed) => listed,
            Err(e) => return reply.error(errno(e)),
        };
        let mut names: Vec<_> = listed.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            entries.push((self.intern(entry.path()), kind, entry.file_name()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.path(ino).and_then(|path| {
            let access = flags.0 & libc::O_ACCMODE;
            OpenOptions::new()
                .read(access != libc::O_WRONLY)
                .write(access != libc::O_RDONLY)
                .open(path)
                .map_err(errno)
        });
        match opened {
            // Direct I/O: each read reaches this file system as asked, so a lost sector fails
            // only the reads that touch it, not a whole readahead window.
            Ok(file) => reply.opened(self.keep(file), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let files = self.files.lock();
        let Some(file) = files.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let backing = file
            .metadata()
            .map(|m| (m.ino(), m.len()))
            .unwrap_or((0, 0));
        let end = (offset + u64::from(size)).min(backing.1).max(offset + 1);
        let lost = self.faults.lost.lock();
        if (offset / SECTOR..end.div_ceil(SECTOR)).any(|s| lost.contains(&(backing.0, s))) {
            self.faults.failed_reads.fetch_add(1, Ordering::Relaxed);
            return reply.error(Errno::EIO);
        }
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..got]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let files = self.files.lock();
        match files.get(&fh.0).map(|f| f.write_all_at(data, offset)) {
            Some(Ok(())) => reply.written(data.len() as u32),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::EBADF),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let files = self.files.lock();
        match files.get(&fh.0).map(|f| f.sync_all()) {
            Some(Ok(())) => reply.ok(),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().remove(&fh.0);
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = self.child(parent, name).and_then(|path| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .create_new(flags & libc::O_EXCL != 0)
                .truncate(flags & libc::O_TRUNC != 0)
                .mode(mode & !umask)
                .open(&path)
                .map_err(errno)?;
            Ok((self.entry(path)?, file))
        });
        match created {
            Ok((attr, file)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                self.keep(file),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.child(parent, name).and_then(|path| {
            fs::DirBuilder::new()
                .mode(mode & !umask)
                .create(&path)
                .map_err(errno)?;
            self.entry(path)
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove(parent, name, |p| fs::remove_file(p)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.remove(parent, name, |p| fs::remove_dir(p)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let renamed = self.child(parent, name).and_then(|from| {
            let to = self.child(newparent, newname)?;
            let replaced = self.backing_ino(&to);
            fs::rename(&from, &to).map_err(errno)?;
            self.forget_faults(replaced);
            // The replaced file's inode is gone; the renamed one keeps its number.
            self.forget_path(&to);
            let mut paths = self.paths.lock();
            if let Some(ino) = paths.1.remove(&from) {
                paths.0[ino as usize - 1] = to.clone();
                paths.1.insert(to, ino);
            }
            Ok(())
        });
        match renamed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let linked = self.path(ino).and_then(|from| {
            let to = self.child(newparent, newname)?;
            fs::hard_link(&from, &to).map_err(errno)?;
            self.entry(to)
        });
        match linked {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}
