//! Dumps as zip (the `zip` crate), streamed: sizes go in data descriptors, so nothing is
//! seeked back to. Files are deflated; modes and symlinks are kept as Unix zip tools keep them;
//! times are zip's local time to two seconds. Owners and xattrs have no place in a zip: use tar
//! to keep them.

use super::Archive;
use crate::repo::tree::{Node, NodeKind};
use std::io::{Read, Write};
use zip::write::{SimpleFileOptions, StreamWriter};

/// A zip stream being written.
pub struct ZipArchive {
    writer: zip::ZipWriter<StreamWriter<Box<dyn Write + Send>>>,
}

impl ZipArchive {
    /// A zip stream onto `out`.
    pub fn new(out: Box<dyn Write + Send>) -> ZipArchive {
        ZipArchive {
            writer: zip::ZipWriter::new_stream(out),
        }
    }
}

fn options(node: &Node) -> SimpleFileOptions {
    let time = chrono::DateTime::from_timestamp_nanos(node.mtime).with_timezone(&chrono::Local);
    let mut options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(node.mode & 0o7777)
        .large_file(node.size >= u64::from(u32::MAX));
    use chrono::{Datelike, Timelike};
    if let Ok(dos) = zip::DateTime::from_date_and_time(
        time.year().clamp(1980, 2107) as u16,
        time.month() as u8,
        time.day() as u8,
        time.hour() as u8,
        time.minute() as u8,
        time.second().min(59) as u8,
    ) {
        options = options.last_modified_time(dos);
    }
    options
}

impl Archive for ZipArchive {
    fn add(
        &mut self,
        path: &[u8],
        node: &Node,
        link_to: Option<&[u8]>,
        content: Option<&mut dyn Read>,
    ) -> std::io::Result<()> {
        // Names go in as they are or not at all: replacing bytes that are not UTF-8 could make
        // two entries one (or a file land inside an earlier link), and `\` is a separator to
        // Windows extractors.
        let name = match std::str::from_utf8(path) {
            Ok(name) if !name.contains('\\') => name.to_string(),
            _ => {
                return Err(std::io::Error::other(format!(
                    "{}: a zip holds only UTF-8 names without '\\': use --archive tar",
                    String::from_utf8_lossy(path)
                )));
            }
        };
        let opts = options(node);
        match (node.kind, content) {
            (NodeKind::Dir, _) => self.writer.add_directory(name, opts)?,
            (NodeKind::Symlink, _) => {
                let target = std::str::from_utf8(&node.target).map_err(|_| {
                    std::io::Error::other(format!(
                        "{name}: a link target that is not UTF-8 does not fit a zip: use \
                         --archive tar"
                    ))
                })?;
                self.writer.add_symlink(name, target, opts)?
            }
            (NodeKind::File, Some(reader)) => {
                self.writer.start_file(name, opts)?;
                std::io::copy(reader, &mut self.writer)?;
            }
            (NodeKind::File, None) => {
                // A hard link: zip has none; the first path's bytes are not repeated, a link
                // to it stands in (as `zip --symlinks` would store it).
                let first = std::str::from_utf8(link_to.unwrap_or_default()).unwrap_or_default();
                let target = relative_to(&name, first);
                self.writer.add_symlink(name, target, opts)?
            }
            _ => tracing::warn!("{name}: a device or fifo, not put in the zip"),
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> std::io::Result<()> {
        let mut out = self.writer.finish()?;
        out.flush()
    }
}

/// The path of `target` as seen from the directory of `from` (both archive paths).
fn relative_to(from: &str, target: &str) -> String {
    let depth = from.matches('/').count();
    format!("{}{target}", "../".repeat(depth))
}
