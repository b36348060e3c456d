//! `cairn dump SNAP[:PATH]`: a file's bytes, or a directory as a tar or zip stream, on standard
//! output, every byte verified.

use crate::cli::{Globals, split_snapshot_path};
use anyhow::{Result, bail};
use cairn::ops::dump::{ArchiveFormat, dump_file, dump_tree};
use cairn::ops::walk::lookup;
use cairn::repo::tree::NodeKind;
use std::io::{IsTerminal, Write};
use std::path::Path;

/// Options of `dump`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn dump latest:home/me/notes.txt > notes.txt\n  \
cairn dump latest:home/me/project | tar -x --xattrs -C /tmp/restored\n  \
cairn dump 1a2b3c4d:srv/www --archive zip > www.zip"
)]
pub struct Args {
    /// Snapshot (id prefix, `latest`, `latest~N`), optionally with `:PATH` inside it.
    snapshot: String,
    /// The archive a directory is written as (tar when not given); given for a file, the file
    /// is written as an archive of one entry.
    #[arg(long, value_enum)]
    archive: Option<ArchiveFormat>,
}

/// Runs `dump`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let (spec, path) = split_snapshot_path(&args.snapshot);
    let (_, snapshot) = repo.find_snapshot(spec)?;
    let index = repo.load_index()?;
    let inside = Path::new(path.trim_start_matches('/'));
    let (nodes, node) = if inside.as_os_str().is_empty() {
        (repo.read_tree(&index, &snapshot.tree)?, None)
    } else {
        match lookup(&repo, &index, &snapshot, inside)? {
            Some(node) => (Vec::new(), Some(node)),
            None => bail!("{path} is not in the snapshot"),
        }
    };
    let stdout = std::io::stdout();
    if let Some(node) = &node {
        match node.kind {
            NodeKind::File if args.archive.is_none() => {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                dump_file(&repo, &index, node, inside, &mut out)?;
                out.flush()?;
                return Ok(0);
            }
            NodeKind::Dir | NodeKind::File => {}
            other => bail!(
                "{path} is a {}: only files and directories can be dumped",
                format!("{other:?}").to_lowercase()
            ),
        }
    }
    if stdout.is_terminal() {
        bail!("not writing an archive to a terminal: redirect standard output to a file or a pipe");
    }
    let out = Box::new(std::io::BufWriter::with_capacity(1 << 20, stdout));
    let nodes = match node {
        Some(node) => vec![node],
        None => nodes,
    };
    let format = args.archive.unwrap_or(ArchiveFormat::Tar);
    let dumped = dump_tree(&repo, &index, nodes, Path::new(""), format, out)?;
    if !globals.quiet {
        eprintln!(
            "{} entries, {} of files{}",
            dumped.entries,
            indicatif::HumanBytes(dumped.bytes),
            if dumped.skipped > 0 {
                format!(", {} sockets left out", dumped.skipped)
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}
