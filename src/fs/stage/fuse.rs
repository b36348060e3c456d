//! The FUSE face of the stage: each request checked (names, what the caller may do) and
//! answered from the stage's tree and file bodies.

use super::*;
use entries::{absent, nanos_of};
use privilege::{check_name, mode_after_chown};

/// A refusal of the caller's request, carried through the tree's error type.
fn refused(errno: Errno) -> TreeError {
    TreeError::Errno(errno.code())
}

/// The FUSE face of a [`Stage`].
pub struct StageFs {
    stage: Arc<Stage>,
    /// The kernel agreed to skip open and release when open answers ENOSYS (from then on it
    /// sends no release for created files either). rsync opens every file it copied a second
    /// time, to chmod it: three round trips per file saved.
    no_open: bool,
    /// The kernel agreed to skip opendir and releasedir when opendir answers ENOSYS (listings
    /// need no handle): two round trips per directory listed.
    no_opendir: bool,
    /// Extended attributes are kept; when not (`--no-xattrs`), every xattr request answers
    /// ENOSYS once and the kernel stops asking, `security.capability` before each write
    /// included.
    xattrs: bool,
}

impl StageFs {
    /// The FUSE face of `stage`, keeping extended attributes or not.
    pub fn new(stage: Arc<Stage>, xattrs: bool) -> StageFs {
        StageFs {
            stage,
            no_open: false,
            no_opendir: false,
            xattrs,
        }
    }
}

impl Filesystem for StageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // Clearing setuid/setgid on write is ours to do; otherwise the kernel asks for
        // `security.capability` before every write.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        self.no_open = config
            .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
            .is_ok();
        self.no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        // Listings carry attributes: rsync's lstat of every file it compares costs no lookup.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Err(e) = check_name(name) {
            return reply.error(e);
        }
        let found = self.stage.with_store(|store| {
            let mut tree = self.stage.tree.lock();
            let ino = tree.lookup(parent.0, name.as_bytes(), store)?;
            Ok(self.stage.attr(ino, tree.get(ino)?))
        });
        match found.and_then(|r| r.map_err(errno_of)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            // A negative entry the kernel may keep: every creation goes through it, so it
            // never goes stale. rsync and cp look up each name before creating it.
            Err(Errno::ENOENT) => reply.entry(&TTL, &absent(), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.stage.tree.lock().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let tree = self.stage.tree.lock();
        match tree.get(ino.0) {
            Ok(inode) => reply.attr(&TTL, &self.stage.attr(ino.0, inode)),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Every check before any change: a refused setattr changes nothing.
        let allowed = (|| {
            let tree = self.stage.tree.lock();
            let node = &tree.get(ino.0).map_err(errno_of)?.node;
            let caller = &self.stage.caller;
            if size.is_some() {
                caller.may_write(node)?;
            }
            for time in [atime, mtime].into_iter().flatten() {
                caller.may_set_times(node, matches!(time, TimeOrNow::SpecificTime(_)))?;
            }
            caller.may_chown(node, uid, gid)?;
            mode.map(|m| caller.chmod(node, m)).transpose()?;
            Ok(())
        })();
        if let Err(e) = allowed {
            return reply.error(e);
        }
        if let Some(size) = size {
            let truncated = self.stage.body(ino.0).and_then(|body| {
                self.stage
                    .changing(|store| Ok(body.lock().truncate(store, size)?))
            });
            if let Err(e) = truncated {
                return reply.error(e);
            }
        }
        let changed = self.stage.changing(|_| {
            let mut tree = self.stage.tree.lock();
            let inode = tree.get_mut(ino.0)?;
            let node = &mut inode.node;
            let caller = &self.stage.caller;
            caller.may_chown(node, uid, gid).map_err(refused)?;
            let new_mode = mode
                .map(|m| caller.chmod(node, m))
                .transpose()
                .map_err(refused)?;
            if uid.is_some_and(|u| u != node.uid) || gid.is_some_and(|g| g != node.gid) {
                node.mode = mode_after_chown(node);
            }
            if let Some(uid) = uid {
                node.uid = uid;
                node.user = self.stage.owners.user(uid);
            }
            if let Some(gid) = gid {
                node.gid = gid;
                node.group = self.stage.owners.group(gid);
            }
            if let Some(mode) = new_mode {
                node.mode = mode;
                // As the kernel does on chmod, an extended ACL follows the new mode (restore
                // sets the ACL too: a stale one would widen what chmod narrowed).
                for x in node.xattrs.iter_mut() {
                    if x.name == b"system.posix_acl_access"
                        && let Some(updated) = acl::with_mode(&x.value, mode)
                    {
                        x.value = updated;
                    }
                }
            }
            if let Some(atime) = atime {
                node.atime = nanos_of(atime);
            }
            if let Some(mtime) = mtime {
                node.mtime = nanos_of(mtime);
            } else if size.is_some() {
                node.mtime = now_nanos();
            }
            node.ctime = now_nanos();
            Ok(self.stage.attr(ino.0, inode))
        });
        match changed {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let tree = self.stage.tree.lock();
        match tree.get(ino.0) {
            Ok(inode) if inode.node.kind == NodeKind::Symlink => reply.data(&inode.node.target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => return reply.error(Errno::EINVAL),
        };
        if let Err(e) = self.stage.caller.may_make(kind) {
            return reply.error(e);
        }
        let mut node = self.stage.new_node(req, kind, mode & !umask);
        node.rdev = u64::from(rdev);
        self.stage.make(parent, name, node, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let node = self.stage.new_node(req, NodeKind::Dir, mode & !umask);
        self.stage.make(parent, name, node, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stage.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.stage.remove(parent, name, true, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let mut node = self.stage.new_node(req, NodeKind::Symlink, 0o777);
        node.target = target.as_os_str().as_bytes().to_vec();
        node.size = node.target.len() as u64;
        self.stage.make(parent, link_name, node, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return reply.error(Errno::EINVAL);
        }
        let allowed = check_name(newname)
            .and_then(|()| self.stage.may_change_dir(parent.0, name.as_bytes()))
            .and_then(|()| self.stage.may_change_dir(newparent.0, newname.as_bytes()))
            .and_then(|()| {
                if parent == newparent {
                    Ok(())
                } else {
                    self.stage.may_reparent(parent.0, name.as_bytes())
                }
            });
        if let Err(e) = allowed {
            return reply.error(e);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.stage.changing(|store| {
            self.stage.tree.lock().rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                no_replace,
                store,
            )
        }) {
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
        let allowed = check_name(newname)
            .and_then(|()| self.stage.may_change_dir(newparent.0, newname.as_bytes()))
            .and_then(|()| {
                let tree = self.stage.tree.lock();
                let node = &tree.get(ino.0).map_err(errno_of)?.node;
                self.stage.caller.may_link(node)
            });
        if let Err(e) = allowed {
            return reply.error(e);
        }
        let linked = self.stage.changing(|store| {
            let mut tree = self.stage.tree.lock();
            tree.link(ino.0, newparent.0, newname.as_bytes(), store)?;
            Ok(self.stage.attr(ino.0, tree.get(ino.0)?))
        });
        match linked {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut tree = self.stage.tree.lock();
        match tree.get_mut(ino.0) {
            // ENOSYS tells a kernel that agreed to it never to send open or release again; files
            // written without a reported open are stored by `Stage::wrote_unopened`.
            Ok(inode) if inode.body.is_some() && self.no_open => reply.error(Errno::ENOSYS),
            Ok(inode) if inode.body.is_some() => {
                inode.opens += 1;
                reply.opened(FileHandle(0), FopenFlags::empty());
            }
            Ok(_) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(errno_of(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let allowed =
            check_name(name).and_then(|()| self.stage.may_change_dir(parent.0, name.as_bytes()));
        if let Err(e) = allowed {
            return reply.error(e);
        }
        let node = self.stage.new_node(req, NodeKind::File, mode & !umask);
        let made = self.stage.changing(|store| {
            let mut tree = self.stage.tree.lock();
            let ino = tree.insert(parent.0, name.as_bytes(), node, store)?;
            let inode = tree.get_mut(ino)?;
            // Once opens are not reported, neither is the release of a created file.
            if !self.no_open {
                inode.opens += 1;
            }
            Ok(self.stage.attr(ino, inode))
        });
        match made {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let read = self.stage.body(ino.0).and_then(|body| {
            self.stage
                .with_store(|store| body.lock().read(store, offset, size as usize))
        });
        match read {
            Ok(Ok(data)) => reply.data(&data),
            Ok(Err(e)) => reply.error(errno_of(TreeError::Repo(e))),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let written = self
            .stage
            .may_write(ino.0)
            .and_then(|()| self.stage.body(ino.0))
            .and_then(|body| {
                self.stage
                    .changing(|store| Ok(body.lock().write(store, offset, data)?))
            });
        match written {
            Ok(()) => {
                let unopened = match self.stage.tree.lock().get_mut(ino.0) {
                    Ok(inode) => {
                        inode.node.mtime = now_nanos();
                        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                            inode.node.mode &= !0o6000;
                        }
                        inode.opens == 0
                    }
                    Err(_) => false,
                };
                if unopened {
                    self.stage.wrote_unopened(ino.0);
                }
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Content is stored on release; ENOSYS stops the kernel sending flush at all.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let last = {
            let mut tree = self.stage.tree.lock();
            match tree.get_mut(ino.0) {
                Ok(inode) => {
                    inode.opens = inode.opens.saturating_sub(1);
                    (inode.opens == 0).then(|| inode.body.clone()).flatten()
                }
                Err(_) => None,
            }
        };
        // The last handle closed: the cutting thread cuts what is left of the content now rather
        // than at commit (the packer's sealer thread compresses and encrypts it).
        if let Some(body) = last
            && let Ok(Err(e)) = self.stage.with_store(|store| body.lock().close(store))
        {
            tracing::error!("stage: storing a closed file: {e}");
            return reply.error(Errno::EIO);
        }
        self.stage.tree.lock().reap(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Durability comes with the commit; until then a stage is a scratch area.
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.stage.list(ino.0, offset, |child, at, name, inode| {
            reply.add(INodeNo(child), at, file_type(inode.node.kind), name)
        });
        match listed {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.stage.list(ino.0, offset, |child, at, name, inode| {
            let attr = self.stage.attr(child, inode);
            reply.add(INodeNo(child), at, name, &TTL, &attr, Generation(0))
        });
        match listed {
            Ok(sent) => {
                // The kernel counts a lookup for every entry it was sent except `.` and `..`.
                let mut tree = self.stage.tree.lock();
                for child in sent {
                    tree.remember(child);
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // The repository's store has the room; report plenty, so copy tools do not refuse.
        let blocks = 1u64 << 40;
        reply.statfs(blocks, blocks, blocks, 1 << 32, 1 << 32, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        if let Err(e) = self.stage.may_write(ino.0) {
            return reply.error(e);
        }
        let set = self.stage.changing(|_| {
            let mut tree = self.stage.tree.lock();
            let node = &mut tree.get_mut(ino.0)?.node;
            let name = name.as_bytes();
            // An access ACL sets the mode (cp -a sets permissions this way); one that says no
            // more than a mode is not kept as an xattr, as on a file system with ACLs.
            if name == b"system.posix_acl_access"
                && let Some(acl) = acl::access_acl_mode(value)
            {
                let mode = (node.mode & !0o777) | acl.permissions;
                node.mode = self.stage.caller.chmod(node, mode).map_err(refused)?;
                node.ctime = now_nanos();
                // The kernel takes no create/replace flags for ACLs: set or replaced, as given.
                node.xattrs.retain(|x| x.name != name);
                if !acl.minimal {
                    let at = node
                        .xattrs
                        .binary_search_by(|x| x.name.as_slice().cmp(name))
                        .unwrap_or_else(|i| i);
                    node.xattrs.insert(
                        at,
                        Xattr {
                            name: name.to_vec(),
                            value: value.to_vec(),
                        },
                    );
                }
                return Ok(());
            }
            let at = node
                .xattrs
                .binary_search_by(|x| x.name.as_slice().cmp(name));
            match at {
                Ok(_) if flags & libc::XATTR_CREATE != 0 => Err(TreeError::Errno(libc::EEXIST)),
                Err(_) if flags & libc::XATTR_REPLACE != 0 => Err(TreeError::Errno(libc::ENODATA)),
                Ok(i) => {
                    node.xattrs[i].value = value.to_vec();
                    Ok(())
                }
                Err(i) => {
                    node.xattrs.insert(
                        i,
                        Xattr {
                            name: name.to_vec(),
                            value: value.to_vec(),
                        },
                    );
                    Ok(())
                }
            }
        });
        match set {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let tree = self.stage.tree.lock();
        let inode = match tree.get(ino.0) {
            Ok(inode) => inode,
            Err(e) => return reply.error(errno_of(e)),
        };
        let Some(x) = inode.node.xattrs.iter().find(|x| x.name == name.as_bytes()) else {
            return reply.error(Errno::NO_XATTR);
        };
        xattr_reply(&x.value, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let tree = self.stage.tree.lock();
        let inode = match tree.get(ino.0) {
            Ok(inode) => inode,
            Err(e) => return reply.error(errno_of(e)),
        };
        xattr_reply(&xattr_names(&inode.node.xattrs), size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        if let Err(e) = self.stage.may_write(ino.0) {
            return reply.error(e);
        }
        let removed = self.stage.changing(|_| {
            let mut tree = self.stage.tree.lock();
            let node = &mut tree.get_mut(ino.0)?.node;
            match node.xattrs.iter().position(|x| x.name == name.as_bytes()) {
                Some(i) => {
                    node.xattrs.remove(i);
                    Ok(())
                }
                None => Err(TreeError::Errno(libc::ENODATA)),
            }
        });
        match removed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
