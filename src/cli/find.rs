//! `cairn find PATTERN...`: where a file is, in which snapshots, with what size and time.

use crate::cli::Globals;
use crate::cli::filter::SnapshotFilter;
use crate::cli::quote::quote;
use anyhow::{Result, bail};
use cairn::ingest::patterns::Patterns;
use cairn::ops::find::{Found, find};
use cairn::repo::ids::SnapshotId;
use cairn::repo::snapshot::Snapshot;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

/// Snapshot ids shown in full on a line; more are shortened to the first and last.
const IDS_SHOWN: usize = 4;

/// Options of `find`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn find '*.odt'                  every .odt in every snapshot\n  \
cairn find /home/me/thesis/main.tex  one path (a pattern with / matches whole paths)\n  \
cairn find report.pdf --newest 10 --host laptop"
)]
pub struct Args {
    /// Name globs (`*.rs`, matched against each entry's name, as `backup --exclude` takes
    /// them) or path globs (with a `/`, matched against the whole path from the snapshot root,
    /// `/src/*/main.rs`).
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Search only these snapshots (id prefix, `latest`, `latest~N`; repeatable).
    #[arg(long = "snapshot", short = 's', value_name = "SNAP")]
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: SnapshotFilter,
    /// Search only the N newest of the snapshots chosen.
    #[arg(long, value_name = "N")]
    newest: Option<usize>,
}

/// Runs `find`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let patterns = Patterns::new(&args.patterns)?;
    let repo = globals.open()?;
    let mut chosen: Vec<(SnapshotId, Snapshot)> = if args.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        let mut picked = Vec::new();
        for spec in &args.snapshots {
            let found = repo.find_snapshot(spec)?;
            if !picked.iter().any(|(id, _)| *id == found.0) {
                picked.push(found);
            }
        }
        picked.sort_by_key(|(id, s)| (s.time, *id));
        picked
    };
    chosen.retain(|(_, s)| args.filter.keeps(s));
    if let Some(n) = args.newest {
        chosen.drain(..chosen.len().saturating_sub(n));
    }
    if chosen.is_empty() {
        bail!("no snapshot to search: none passes the filters given");
    }
    let index = repo.load_index()?;
    let snapshots: Vec<Snapshot> = chosen.iter().map(|(_, s)| s.clone()).collect();
    let findings = find(&repo, &index, &snapshots, &patterns)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write_err = |e| cairn::Error::io("stdout", e);
    if globals.json {
        let list: Vec<serde_json::Value> = findings
            .found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "path": String::from_utf8_lossy(f.path.as_os_str().as_bytes()),
                    "type": format!("{:?}", f.kind).to_lowercase(),
                    "size": f.size,
                    "mtime": time_text(f.mtime),
                    "snapshots": f.positions().map(|p| chosen[p as usize].0.to_hex()).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(list)).map_err(write_err)?;
    } else {
        for f in &findings.found {
            writeln!(out, "{}", line(f, &chosen)).map_err(write_err)?;
        }
        if !globals.quiet {
            eprintln!(
                "{} matches in {} snapshots ({} directories read, {} shared ones skipped)",
                findings.found.len(),
                chosen.len(),
                findings.trees_read,
                findings.trees_reused
            );
        }
    }
    out.flush().map_err(write_err)?;
    Ok(0)
}

/// A time as local date and time to the second.
fn time_text(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// One match on a line: time, size, path, and the snapshots it is in.
fn line(found: &Found, chosen: &[(SnapshotId, Snapshot)]) -> String {
    let ids: Vec<String> = found
        .positions()
        .map(|p| chosen[p as usize].0.short())
        .collect();
    let shown = if ids.len() <= IDS_SHOWN {
        ids.join(" ")
    } else {
        format!("{} … {}", ids[0], ids[ids.len() - 1])
    };
    format!(
        "{}  {:>12}  {}  in {} snapshot{}: {shown}",
        time_text(found.mtime),
        found.size,
        quote(found.path.as_os_str().as_bytes()),
        ids.len(),
        if ids.len() == 1 { "" } else { "s" },
    )
}
