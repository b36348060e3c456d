//! Dumps as POSIX tar (the `tar` crate): each entry a ustar header, preceded by a PAX record set
//! with what ustar cannot hold — long or non-UTF-8 names and link targets, nanosecond times,
//! large ids, owners' names, and xattrs as `SCHILY.xattr.*` (what GNU tar and bsdtar read).

use super::{Archive, decimal_seconds};
use crate::repo::tree::{Node, NodeKind};
use std::io::{Read, Write};

/// The largest id a ustar header holds (7 octal digits).
const USTAR_ID_MAX: u32 = 0o7777777;
/// The largest size a ustar header holds (11 octal digits); larger ones get a PAX record too.
const USTAR_SIZE_MAX: u64 = 0o77777777777;

/// A tar stream being written.
pub struct TarArchive {
    builder: ::tar::Builder<Box<dyn Write + Send>>,
}

impl TarArchive {
    /// A tar stream onto `out`.
    pub fn new(out: Box<dyn Write + Send>) -> TarArchive {
        TarArchive {
            builder: ::tar::Builder::new(out),
        }
    }
}

impl Archive for TarArchive {
    fn add(
        &mut self,
        path: &[u8],
        node: &Node,
        link_to: Option<&[u8]>,
        content: Option<&mut dyn Read>,
    ) -> std::io::Result<()> {
        let mut header = ::tar::Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let entry_type = match (node.kind, link_to) {
            (NodeKind::File, Some(_)) => ::tar::EntryType::Link,
            (NodeKind::File, None) => ::tar::EntryType::Regular,
            (NodeKind::Dir, _) => ::tar::EntryType::Directory,
            (NodeKind::Symlink, _) => ::tar::EntryType::Symlink,
            (NodeKind::Fifo, _) => ::tar::EntryType::Fifo,
            (NodeKind::CharDevice, _) => ::tar::EntryType::Char,
            (NodeKind::BlockDevice, _) => ::tar::EntryType::Block,
            (NodeKind::Socket, _) => unreachable!("sockets are skipped before"),
        };
        header.set_entry_type(entry_type);
        let mut name = path.to_vec();
        if node.kind == NodeKind::Dir {
            name.push(b'/');
        }
        if set_bytes(&mut header, &name, Field::Path).is_err() {
            pax.push(("path".into(), name));
        }
        let target = match (node.kind, link_to) {
            (NodeKind::Symlink, _) => Some(node.target.clone()),
            (_, Some(first)) => Some(first.to_vec()),
            _ => None,
        };
        if let Some(target) = target
            && set_bytes(&mut header, &target, Field::Link).is_err()
        {
            pax.push(("linkpath".into(), target));
        }
        header.set_mode(node.mode & 0o7777);
        header.set_uid(u64::from(node.uid.min(USTAR_ID_MAX)));
        header.set_gid(u64::from(node.gid.min(USTAR_ID_MAX)));
        if node.uid > USTAR_ID_MAX {
            pax.push(("uid".into(), node.uid.to_string().into_bytes()));
        }
        if node.gid > USTAR_ID_MAX {
            pax.push(("gid".into(), node.gid.to_string().into_bytes()));
        }
        if header.set_username(&node.user).is_err() {
            pax.push(("uname".into(), node.user.clone().into_bytes()));
        }
        if header.set_groupname(&node.group).is_err() {
            pax.push(("gname".into(), node.group.clone().into_bytes()));
        }
        header.set_mtime(node.mtime.max(0) as u64 / 1_000_000_000);
        for (key, time) in [
            ("mtime", node.mtime),
            ("atime", node.atime),
            ("ctime", node.ctime),
        ] {
            pax.push((key.into(), decimal_seconds(time).into_bytes()));
        }
        if matches!(node.kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
            let rdev = node.rdev as libc::dev_t;
            header.set_device_major(libc::major(rdev))?;
            header.set_device_minor(libc::minor(rdev))?;
        }
        for x in &node.xattrs {
            // A PAX key ends at the first '=': a name holding one would come back as another
            // xattr.
            match std::str::from_utf8(&x.name) {
                Ok(name) if !name.contains('=') => {
                    pax.push((format!("SCHILY.xattr.{name}"), x.value.clone()))
                }
                _ => tracing::warn!(
                    "{}: xattr {:?} cannot be put in a tar (not UTF-8, or holds '='): left out",
                    String::from_utf8_lossy(path),
                    String::from_utf8_lossy(&x.name)
                ),
            }
        }
        // Names that are not UTF-8 go in PAX records as raw bytes, which GNU tar and bsdtar
        // read back as they are.
        let size = if content.is_some() { node.size } else { 0 };
        if size > USTAR_SIZE_MAX {
            pax.push(("size".into(), size.to_string().into_bytes()));
        }
        header.set_size(size);
        header.set_cksum();
        self.builder
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        match content {
            Some(reader) => {
                // Exactly `size` bytes, or the archive would be misaligned.
                let mut limited = reader.take(size);
                self.builder.append(&header, &mut limited)?;
                if limited.limit() != 0 {
                    return Err(std::io::Error::other("the file ended before its size"));
                }
                Ok(())
            }
            None => self.builder.append(&header, std::io::empty()),
        }
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.builder.finish()?;
        self.builder.get_mut().flush()
    }
}

enum Field {
    Path,
    Link,
}

/// Sets a name field of a ustar header from bytes; an error when it does not fit (the caller
/// then writes a PAX record, and the header keeps a shortened name for old readers).
fn set_bytes(header: &mut ::tar::Header, value: &[u8], field: Field) -> std::io::Result<()> {
    let ustar = header
        .as_ustar_mut()
        .ok_or_else(|| std::io::Error::other("not a ustar header"))?;
    let (slot, prefix): (&mut [u8], Option<&mut [u8]>) = match field {
        Field::Path => (&mut ustar.name, Some(&mut ustar.prefix)),
        Field::Link => (&mut ustar.linkname, None),
    };
    let fits = value.len() <= slot.len() && !value.contains(&0);
    if fits {
        slot.fill(0);
        slot[..value.len()].copy_from_slice(value);
        return Ok(());
    }
    // A name too long: split at a '/' into prefix and name when possible.
    if let Some(prefix) = prefix
        && let Some(split) = value
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, b)| **b == b'/' && *i <= prefix.len() && value.len() - i - 1 <= slot.len())
            .map(|(i, _)| i)
            .next()
        && split > 0
        && split < value.len() - 1
        && !value.contains(&0)
    {
        prefix.fill(0);
        prefix[..split].copy_from_slice(&value[..split]);
        slot.fill(0);
        slot[..value.len() - split - 1].copy_from_slice(&value[split + 1..]);
        return Ok(());
    }
    let keep = slot.len().min(value.len());
    slot.fill(0);
    slot[..keep].copy_from_slice(&value[..keep]);
    Err(std::io::Error::other("too long"))
}
