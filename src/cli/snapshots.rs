//! `cairn snapshots`: list snapshots, optionally filtered.

use crate::cli::Globals;
use anyhow::Result;
use indicatif::HumanBytes;

/// Options of `snapshots`.
#[derive(clap::Args)]
pub struct Args {
    /// Only snapshots of this host.
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only snapshots that include this path.
    #[arg(long)]
    path: Option<String>,
}

/// Runs `snapshots`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| args.host.as_ref().is_none_or(|h| &s.hostname == h))
        .filter(|(_, s)| args.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
        .filter(|(_, s)| args.path.as_ref().is_none_or(|p| s.paths.contains(p)))
        .collect();
    if globals.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(), "short_id": id.short(), "time": s.local_time().to_rfc3339(),
                    "hostname": s.hostname, "username": s.username, "paths": s.paths, "tags": s.tags,
                    "parent": s.parent.map(|p| p.to_hex()), "tree": s.tree.to_hex(), "summary": s.summary,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(0);
    }
    println!(
        "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  paths",
        "id", "time", "host", "tags", "size"
    );
    for (id, s) in &snaps {
        println!(
            "{:<8}  {:<19}  {:<12}  {:<12}  {:>10}  {}",
            id.short(),
            s.local_time().format("%Y-%m-%d %H:%M:%S"),
            s.hostname,
            s.tags.join(","),
            HumanBytes(s.summary.bytes).to_string(),
            s.paths.join(" ")
        );
    }
    if !globals.quiet {
        println!("{} snapshots", snaps.len());
    }
    Ok(0)
}
