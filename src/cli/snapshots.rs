//! `cairn snapshots`: list snapshots, optionally filtered.

use crate::cli::Globals;
use anyhow::{Result, bail};
use indicatif::HumanBytes;

/// Options of `snapshots`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn snapshots\n  cairn snapshots --host laptop --tag daily --json"
)]
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
    // Every file on its own: the good ones are listed, a damaged one fails the command after.
    let mut damaged = Vec::new();
    let mut all = Vec::new();
    for (_, opened) in repo.snapshot_files()? {
        match opened {
            Ok(snapshot) => all.push(snapshot),
            Err(e @ cairn::Error::Corrupt { .. }) => damaged.push(e),
            Err(e) => return Err(e.into()),
        }
    }
    all.sort_by_key(|(id, s)| (s.time, *id));
    let snaps: Vec<_> = all
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
                    "copied_from": s.copied_from.map(|c| c.to_hex()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return fail_on_damage(damaged);
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
    fail_on_damage(damaged)
}

/// The command's result: an error naming the first damaged snapshot file, if any.
fn fail_on_damage(damaged: Vec<cairn::Error>) -> Result<u8> {
    match damaged.len() {
        0 => Ok(0),
        1 => Err(damaged.into_iter().next().expect("one").into()),
        n => bail!("{n} snapshot files are damaged; first: {}", damaged[0]),
    }
}
