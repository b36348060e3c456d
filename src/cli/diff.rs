//! `cairn diff SNAP1 SNAP2 [PATH]`: what was added, removed and changed between two snapshots.

use crate::cli::Globals;
use crate::cli::quote::quote;
use anyhow::Result;
use cairn::ops::diff::{Change, DiffSummary, Difference, diff};
use cairn::ops::walk::lookup;
use cairn::repo::tree::{Node, NodeKind};
use indicatif::HumanBytes;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Options of `diff`.
#[derive(clap::Args)]
#[command(
    after_help = "Lines start with + (added), - (removed), M (content changed) or U \
(metadata only: mode, owner, time, xattrs).\n\nExamples:\n  cairn diff latest~1 latest        \
what the last backup changed\n  cairn diff 1a2b3c4d latest /home/me/src --json"
)]
pub struct Args {
    /// The snapshot before (id prefix, `latest`, `latest~N`).
    before: String,
    /// The snapshot after.
    after: String,
    /// Compare only this path (a directory or a file) in both.
    path: Option<String>,
}

/// Runs `diff`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let (_, before) = repo.find_snapshot(&args.before)?;
    let (_, after) = repo.find_snapshot(&args.after)?;
    let index = repo.load_index()?;
    // `.` and repeated slashes name nothing: the path is its normal components under `/`.
    let mut path = PathBuf::from("/");
    for component in Path::new(args.path.as_deref().unwrap_or("")).components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::ParentDir => anyhow::bail!("a path to compare may not contain '..'"),
            _ => {}
        }
    }
    // The whole snapshots compare their roots' entries; a path compares its node on each side.
    let (old, new, base): (Vec<Node>, Vec<Node>, &Path) = match path.parent() {
        None => (
            repo.read_tree(&index, &before.tree)?,
            repo.read_tree(&index, &after.tree)?,
            &path,
        ),
        Some(parent) => {
            let old = lookup(&repo, &index, &before, &path)?;
            let new = lookup(&repo, &index, &after, &path)?;
            if old.is_none() && new.is_none() {
                anyhow::bail!("{} is in neither snapshot", path.display());
            }
            (old.into_iter().collect(), new.into_iter().collect(), parent)
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let io = |e| cairn::Error::io("stdout", e);
    let json = globals.json;
    if json {
        write!(out, "{{\"changes\":[").map_err(io)?;
    }
    let mut first = true;
    let summary = diff(&repo, &index, old, new, base, &mut |d: &Difference| {
        let shown = d.after.or(d.before).expect("a side");
        if json {
            let item = serde_json::json!({
                "path": String::from_utf8_lossy(d.path.as_os_str().as_bytes()),
                "change": d.change,
                "type": format!("{:?}", shown.kind).to_lowercase(),
                "size_before": d.before.map(|n| n.size),
                "size_after": d.after.map(|n| n.size),
            });
            write!(out, "{}{item}", if first { "" } else { "," }).map_err(io)?;
            first = false;
        } else {
            let mark = match d.change {
                Change::Added => '+',
                Change::Removed => '-',
                Change::Modified => 'M',
                Change::Metadata => 'U',
            };
            let slash = if shown.kind == NodeKind::Dir { "/" } else { "" };
            writeln!(
                out,
                "{mark}    {}{slash}",
                quote(d.path.as_os_str().as_bytes())
            )
            .map_err(io)?;
        }
        Ok(())
    })?;
    if json {
        writeln!(out, "],\"summary\":{}}}", serde_json::to_string(&summary)?).map_err(io)?;
    } else if !globals.quiet {
        write_summary(&mut out, &summary).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(0)
}

fn write_summary(out: &mut impl Write, s: &DiffSummary) -> std::io::Result<()> {
    writeln!(out)?;
    for (what, c) in [("Files", s.files), ("Dirs", s.dirs), ("Others", s.others)] {
        writeln!(
            out,
            "{what:<7} {:>8} new {:>8} removed {:>8} changed {:>8} metadata only",
            c.added, c.removed, c.modified, c.metadata
        )?;
    }
    writeln!(
        out,
        "Added:   {}\nRemoved: {}\nChanged: {} before, {} after\n({} unchanged directories skipped)",
        HumanBytes(s.added_bytes),
        HumanBytes(s.removed_bytes),
        HumanBytes(s.modified_bytes_before),
        HumanBytes(s.modified_bytes_after),
        s.trees_skipped
    )
}
