//! `cairn ls SNAP[:PATH]`: list the nodes of a snapshot.

use crate::cli::quote::quote;
use crate::cli::{Globals, split_snapshot_path};
use anyhow::Result;
use cairn::ops::walk::{WalkBudget, resolve, walk};
use cairn::repo::tree::{Node, NodeKind};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Options of `ls`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  cairn ls latest\n  cairn ls latest~2:home/me/src -l")]
pub struct Args {
    /// Snapshot (id prefix, `latest`, `latest~N`), optionally with `:PATH` inside it.
    snapshot: String,
    /// Long listing: mode, owner, size, time.
    #[arg(short, long)]
    long: bool,
}

fn mode_string(node: &Node) -> String {
    let kind = match node.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::File => '-',
    };
    let mut out = String::from(kind);
    // Each class's special bit shows in its execute column, as ls shows it: s/S for setuid and
    // setgid, t/T for sticky (lower case when execute is set too).
    for (shift, special, mark) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (node.mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(match (node.mode & special != 0, bits & 1 != 0) {
            (true, true) => mark,
            (true, false) => mark.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    out
}

/// Runs `ls`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let (spec, path) = split_snapshot_path(&args.snapshot);
    let (_, snapshot) = repo.find_snapshot(spec)?;
    let index = repo.load_index()?;
    let start = resolve(&repo, &index, &snapshot, Path::new(path))?;
    let base = Path::new("/").join(path.trim_start_matches('/'));
    let base = if start.node.as_ref().is_some_and(|n| n.kind != NodeKind::Dir) {
        base.parent().unwrap_or(Path::new("/")).to_path_buf()
    } else {
        base
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut budget = WalkBudget::default();
    walk(
        &repo,
        &index,
        start.nodes,
        &base,
        &mut budget,
        &mut |p, node| {
            let line = if globals.json {
                serde_json::json!({
                    "path": p.to_string_lossy(), "type": format!("{:?}", node.kind).to_lowercase(),
                    "mode": node.mode, "uid": node.uid, "gid": node.gid, "size": node.size,
                    "mtime": node.mtime, "target": String::from_utf8_lossy(&node.target),
                })
                .to_string()
            } else if args.long {
                let time = chrono::DateTime::from_timestamp_nanos(node.mtime)
                    .with_timezone(&chrono::Local);
                let target = if node.kind == NodeKind::Symlink {
                    format!(" -> {}", quote(&node.target))
                } else {
                    String::new()
                };
                format!(
                    "{} {:>8} {:>8} {:>12} {} {}{target}",
                    mode_string(node),
                    if node.user.is_empty() {
                        node.uid.to_string()
                    } else {
                        node.user.clone()
                    },
                    if node.group.is_empty() {
                        node.gid.to_string()
                    } else {
                        node.group.clone()
                    },
                    node.size,
                    time.format("%Y-%m-%d %H:%M:%S"),
                    quote(p.as_os_str().as_bytes())
                )
            } else {
                quote(p.as_os_str().as_bytes())
            };
            writeln!(out, "{line}").map_err(|e| cairn::Error::io("stdout", e))
        },
    )?;
    out.flush().map_err(|e| cairn::Error::io("stdout", e))?;
    Ok(0)
}
