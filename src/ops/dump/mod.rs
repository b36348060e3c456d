//! `dump`: a file's bytes, or a directory as an archive (tar or zip), streamed to a writer.
//!
//! Every byte comes through the repository's verified read (AEAD tag and content id), chunk by
//! chunk, so memory is a few chunks whatever the file's size. A file whose chunks do not add up
//! to its recorded size is refused before its header is written: an archive entry's length is
//! declared before its data, and a crafted node must not make the archive lie. Directories are
//! walked by [`crate::ops::walk::walk`], which bounds depth and work.

mod tar;
mod zip;

use crate::error::{Error, Result};
use crate::fetch::reader::FileReader;
use crate::ops::walk::{WalkBudget, walk};
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::index::Index;
use crate::repo::tree::{Node, NodeKind};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

/// Chunks fetched in parallel ahead of the writer.
const READ_AHEAD: usize = 4;

/// The archive formats a directory can be dumped as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveFormat {
    /// POSIX tar with PAX records for long names, nanosecond times, owners' names and xattrs.
    Tar,
    /// Zip (streamed: sizes in data descriptors), deflated, with Unix modes and symlinks.
    Zip,
}

/// A file's content as a reader: verified chunks, a few fetched ahead in parallel.
pub struct FileBytes<'a> {
    repo: &'a Repository,
    index: &'a Index,
    chunks: &'a [BlobId],
    next: usize,
    ready: std::collections::VecDeque<Vec<u8>>,
    at: usize,
}

impl<'a> FileBytes<'a> {
    /// The content of `node`; an error when its chunks are not indexed or do not add up to
    /// its size.
    pub fn new(
        repo: &'a Repository,
        index: &'a Index,
        node: &'a Node,
        path: &Path,
    ) -> Result<Self> {
        let reader = FileReader::new(index, &node.content)?;
        if reader.size() != node.size {
            return Err(Error::Invalid(format!(
                "{}: its chunks hold {} bytes, its size says {}: damaged or crafted, not dumped",
                path.display(),
                reader.size(),
                node.size
            )));
        }
        Ok(FileBytes {
            repo,
            index,
            chunks: &node.content,
            next: 0,
            ready: Default::default(),
            at: 0,
        })
    }

    fn refill(&mut self) -> Result<()> {
        let end = (self.next + READ_AHEAD).min(self.chunks.len());
        let fetched: Vec<Result<Vec<u8>>> = self.chunks[self.next..end]
            .par_iter()
            .map(|id| self.repo.read_indexed(self.index, id).map(|p| p.to_vec()))
            .collect();
        self.next = end;
        for chunk in fetched {
            self.ready.push_back(chunk?);
        }
        Ok(())
    }
}

impl Read for FileBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(chunk) = self.ready.front() {
                if self.at < chunk.len() {
                    let n = buf.len().min(chunk.len() - self.at);
                    buf[..n].copy_from_slice(&chunk[self.at..self.at + n]);
                    self.at += n;
                    return Ok(n);
                }
                self.ready.pop_front();
                self.at = 0;
                continue;
            }
            if self.next == self.chunks.len() {
                return Ok(0);
            }
            self.refill().map_err(std::io::Error::other)?;
        }
    }
}

/// Writes the bytes of the file `node` to `out`.
pub fn dump_file(
    repo: &Repository,
    index: &Index,
    node: &Node,
    path: &Path,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut bytes = FileBytes::new(repo, index, node, path)?;
    std::io::copy(&mut bytes, out).map_err(|e| io_error(path, e))
}

/// One archive being written.
trait Archive {
    /// Adds `node` at `path`; `content` reads a file's bytes, `link_to` is the path of an
    /// earlier entry this file is a hard link of.
    fn add(
        &mut self,
        path: &[u8],
        node: &Node,
        link_to: Option<&[u8]>,
        content: Option<&mut dyn Read>,
    ) -> std::io::Result<()>;

    /// Writes what ends the archive.
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

/// What a dump wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Dumped {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries an archive cannot hold (sockets), left out with a warning each.
    pub skipped: u64,
}

/// Writes `nodes` (a directory's entries, or one node) and everything below them to `out` as an
/// archive; `base` is prefixed to every path inside it (relative, may be empty).
pub fn dump_tree(
    repo: &Repository,
    index: &Index,
    nodes: Vec<Node>,
    base: &Path,
    format: ArchiveFormat,
    out: Box<dyn Write + Send>,
) -> Result<Dumped> {
    let mut archive: Box<dyn Archive> = match format {
        ArchiveFormat::Tar => Box::new(tar::TarArchive::new(out)),
        ArchiveFormat::Zip => Box::new(zip::ZipArchive::new(out)),
    };
    let mut done = Dumped::default();
    // Hard-linked files already written: (device, inode) -> path and content. A node is
    // written as a link only when its content is the same: a crafted tree could give another
    // file the same (device, inode), which must not make it come out with the first's bytes.
    let mut linked: HashMap<(u64, u64), (Vec<u8>, [u8; 32])> = HashMap::new();
    let mut budget = WalkBudget::default();
    walk(repo, index, nodes, base, &mut budget, &mut |path, node| {
        use std::os::unix::ffi::OsStrExt;
        let name = path.as_os_str().as_bytes();
        if node.kind == NodeKind::Socket {
            tracing::warn!("{}: a socket, not put in the archive", path.display());
            done.skipped += 1;
            return Ok(());
        }
        let hard = node.kind == NodeKind::File && node.links > 1;
        let content = if hard { node.content_key() } else { [0; 32] };
        let link_to = match linked.get(&(node.device, node.inode)) {
            Some((first, same)) if hard && *same == content => Some(first.clone()),
            _ => None,
        };
        let result = match (&link_to, node.kind) {
            (None, NodeKind::File) => {
                let mut bytes = FileBytes::new(repo, index, node, path)?;
                done.bytes += node.size;
                archive.add(name, node, None, Some(&mut bytes))
            }
            _ => archive.add(name, node, link_to.as_deref(), None),
        };
        result.map_err(|e| io_error(path, e))?;
        if hard && link_to.is_none() {
            linked
                .entry((node.device, node.inode))
                .or_insert_with(|| (name.to_vec(), content));
        }
        done.entries += 1;
        Ok(())
    })?;
    archive.finish().map_err(|e| io_error(base, e))?;
    Ok(done)
}

/// An I/O error of the dump: a verification failure inside a file's reader keeps its message.
fn io_error(path: &Path, e: std::io::Error) -> Error {
    let path = if path.as_os_str().is_empty() {
        Path::new("the archive")
    } else {
        path
    };
    Error::Invalid(format!("{}: {e}", path.display()))
}

/// Nanoseconds as PAX's decimal seconds (`-1.5` is half a second before the second before
/// 1970).
fn decimal_seconds(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_are_decimal_seconds() {
        assert_eq!(
            decimal_seconds(1_500_000_000_123_456_789),
            "1500000000.123456789"
        );
        assert_eq!(decimal_seconds(0), "0.000000000");
        assert_eq!(decimal_seconds(-1_500_000_000), "-1.500000000");
    }
}
