//! The stage's entries as the file-system operations see them: making and removing names,
//! listing directories, their attributes, file bodies, and the errors they answer with.

use super::*;

impl Stage {
    pub(super) fn attr(&self, ino: u64, inode: &Inode) -> FileAttr {
        let node = &inode.node;
        let size = inode.size();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: system_time(node.atime),
            mtime: system_time(node.mtime),
            ctime: system_time(node.ctime),
            crtime: system_time(node.mtime),
            kind: file_type(node.kind),
            perm: (node.mode & 0o7777) as u16,
            nlink: if inode.unlinked() {
                0
            } else {
                node.links.clamp(1, u64::from(u32::MAX)) as u32
            },
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev as u32,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    /// A fresh node of `kind` owned by the caller.
    pub(super) fn new_node(&self, req: &Request, kind: NodeKind, mode: u32) -> Node {
        let mut node = Node::new(kind, mode, (req.uid(), req.gid()), now_nanos());
        node.user = self.owners.user(req.uid());
        node.group = self.owners.group(req.gid());
        node
    }

    /// Adds a new node and answers with its entry.
    pub(super) fn make(&self, parent: INodeNo, name: &OsStr, node: Node, reply: ReplyEntry) {
        if let Err(e) = privilege::check_name(name)
            .and_then(|()| self.may_change_dir(parent.0, name.as_bytes()))
        {
            return reply.error(e);
        }
        let made = self.changing(|store| {
            let mut tree = self.tree.lock();
            let ino = tree.insert(parent.0, name.as_bytes(), node, store)?;
            Ok(self.attr(ino, tree.get(ino)?))
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// Removes a name: a directory (rmdir) when `dir`, else anything else (unlink).
    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        if let Err(e) = self.may_change_dir(parent.0, name.as_bytes()) {
            return reply.error(e);
        }
        match self.changing(|store| {
            self.tree
                .lock()
                .remove(parent.0, name.as_bytes(), dir, store)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Notes a write to `ino` through an open the kernel will not report closed. No release
    /// will store its content, so the least recently written of such files beyond
    /// [`UNRELEASED_FILES`] is stored now (the commit stores the rest): memory stays bounded. A
    /// later write to a file stored this way spools it, which is correct, only slower.
    pub(super) fn wrote_unopened(&self, ino: u64) {
        let evicted = {
            let mut unreleased = self.unreleased.lock();
            if unreleased.back() == Some(&ino) {
                return;
            }
            unreleased.retain(|&i| i != ino);
            unreleased.push_back(ino);
            if unreleased.len() <= UNRELEASED_FILES {
                return;
            }
            unreleased.pop_front()
        };
        let Some(oldest) = evicted else { return };
        if let Ok(body) = self.body(oldest)
            && let Ok(Err(e)) = self.with_store(|store| body.lock().close(store))
        {
            // The content stays where it was; the commit tries again and reports it.
            tracing::error!("stage: storing a written file: {e}");
        }
    }

    /// Calls `add(ino, next offset, name, inode)` for the entries of directory `dir` from
    /// `offset` on (0 and 1 are `.` and `..`, shown as the directory itself) until it returns
    /// true (the reply is full); returns the entries other than the dots that were added.
    pub(super) fn list(
        &self,
        dir: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, &OsStr, &Inode) -> bool,
    ) -> std::result::Result<Vec<u64>, Errno> {
        let mut sent = Vec::new();
        self.with_store(|store| {
            let mut tree = self.tree.lock();
            let this = tree.get(dir)?;
            if this.node.kind != NodeKind::Dir {
                return Err(TreeError::Errno(libc::ENOTDIR));
            }
            for (at, name) in [(0, "."), (1, "..")] {
                if offset <= at && add(dir, at + 1, OsStr::new(name), this) {
                    return Ok(());
                }
            }
            let skip = offset.saturating_sub(2) as usize;
            let mut at = skip as u64 + 2;
            tree.list(dir, skip, store, |name, child, inode| {
                at += 1;
                let full = add(child, at, OsStr::from_bytes(name), inode);
                if !full {
                    sent.push(child);
                }
                full
            })
        })?
        .map_err(errno_of)?;
        Ok(sent)
    }

    /// Refuses, for a caller other than root, adding or removing `name` in directory `dir`
    /// where the caller could not on a real file system (the name's current inode, if any,
    /// is what a removal or a replacing rename would take away).
    pub(super) fn may_change_dir(&self, dir: u64, name: &[u8]) -> std::result::Result<(), Errno> {
        if self.caller.is_root() {
            return Ok(());
        }
        let nodes = self.with_store(|store| {
            let mut tree = self.tree.lock();
            let victim = match tree.child(dir, name, store)? {
                Some(ino) => Some(tree.get(ino)?.node.clone()),
                None => None,
            };
            Ok::<_, TreeError>((tree.get(dir)?.node.clone(), victim))
        })?;
        let (dir, victim) = nodes.map_err(errno_of)?;
        self.caller.may_change_dir(&dir, victim.as_ref())
    }

    /// Refuses, for a caller other than root, moving directory `name` of `parent` to another
    /// parent without write permission on it.
    pub(super) fn may_reparent(&self, parent: u64, name: &[u8]) -> std::result::Result<(), Errno> {
        if self.caller.is_root() {
            return Ok(());
        }
        let moved = self.with_store(|store| {
            let mut tree = self.tree.lock();
            match tree.child(parent, name, store)? {
                Some(ino) => Ok::<_, TreeError>(Some(tree.get(ino)?.node.clone())),
                None => Ok(None),
            }
        })?;
        match moved.map_err(errno_of)? {
            Some(node) if node.kind == NodeKind::Dir => self.caller.may_reparent(&node),
            _ => Ok(()),
        }
    }

    /// Refuses, for a caller other than root, changing the content or xattrs of `ino` without
    /// write permission.
    pub(super) fn may_write(&self, ino: u64) -> std::result::Result<(), Errno> {
        if self.caller.is_root() {
            return Ok(());
        }
        let tree = self.tree.lock();
        let node = &tree.get(ino).map_err(errno_of)?.node;
        self.caller.may_write(node)
    }

    /// The body of file `ino`.
    pub(super) fn body(
        &self,
        ino: u64,
    ) -> std::result::Result<Arc<Mutex<crate::fs::stage_file::Body>>, Errno> {
        let tree = self.tree.lock();
        let inode = tree.get(ino).map_err(errno_of)?;
        inode.body.clone().ok_or(Errno::EISDIR)
    }
}

pub(super) fn errno_of(error: TreeError) -> Errno {
    match error {
        TreeError::Errno(code) => Errno::from_i32(code),
        TreeError::Repo(e) => {
            tracing::error!("stage: {e}");
            match e {
                Error::Storage { source, .. } | Error::Io { source, .. }
                    if source.raw_os_error() == Some(libc::ENOSPC) =>
                {
                    Errno::ENOSPC
                }
                // A length the spool's file system cannot hold.
                Error::Storage { source, .. } | Error::Io { source, .. }
                    if source.raw_os_error() == Some(libc::EFBIG) =>
                {
                    Errno::EFBIG
                }
                _ => Errno::EIO,
            }
        }
    }
}

pub(super) fn nanos_of(time: TimeOrNow) -> i64 {
    match time {
        TimeOrNow::Now => now_nanos(),
        TimeOrNow::SpecificTime(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        },
    }
}

/// The attributes of a negative entry: inode 0 means "no such name".
pub(super) fn absent() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}
