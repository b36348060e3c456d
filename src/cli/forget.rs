//! `cairn forget`: remove snapshots, named or by a retention policy applied to each group of
//! snapshots (by host and paths unless `--group-by` says otherwise). Only snapshot files are
//! removed; their data stays until a prune finds it unused.

use crate::cli::Globals;
use crate::cli::filter::{SnapshotFilter, tag_lists};
use anyhow::{Result, bail};
use cairn::ops::forget::{Age, Count, GroupBy, GroupKey, Policy, Verdict, apply, group};
use cairn::repo::ids::SnapshotId;
use cairn::repo::snapshot::Snapshot;
use std::collections::HashMap;

/// Options of `forget`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --prune\n  cairn forget 1a2b3c4d --dry-run"
)]
pub struct Args {
    /// Snapshots to remove (id prefixes, `latest`, `latest~N`); instead of a policy.
    snapshots: Vec<String>,
    /// Keep the N newest snapshots (`unlimited`: all).
    #[arg(short = 'l', long, value_name = "N", default_value = "0")]
    keep_last: Count,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(short = 'H', long, value_name = "N", default_value = "0")]
    keep_hourly: Count,
    /// Keep the newest snapshot of each of the N newest days that have one.
    #[arg(short = 'd', long, value_name = "N", default_value = "0")]
    keep_daily: Count,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[arg(short = 'w', long, value_name = "N", default_value = "0")]
    keep_weekly: Count,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(short = 'm', long, value_name = "N", default_value = "0")]
    keep_monthly: Count,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[arg(short = 'y', long, value_name = "N", default_value = "0")]
    keep_yearly: Count,
    /// Keep snapshots younger than this relative to the newest (e.g. 1y5m7d2h; m = months).
    #[arg(long, value_name = "AGE")]
    keep_within: Option<Age>,
    /// Keep snapshots with all of these tags (`a,b`; repeatable: any of the lists).
    #[arg(long, value_name = "TAGS")]
    keep_tag: Vec<String>,
    /// Group snapshots by these before applying the policy (`host,paths,tags`; '' for one group).
    #[arg(long, default_value = "host,paths")]
    group_by: GroupBy,
    #[command(flatten)]
    filter: SnapshotFilter,
    /// Show what would be kept and removed, remove nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Then prune: free the data no snapshot uses any more (at once when no backup runs).
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    limits: crate::cli::prune::LimitArgs,
}

/// The snapshot `spec` names. A damaged snapshot file cannot be read, so it is found by its
/// full id alone: that is how it is forgotten.
fn named_snapshot(repo: &cairn::repo::Repository, spec: &str) -> Result<SnapshotId> {
    match repo.find_snapshot(spec) {
        Ok((id, _)) => Ok(id),
        Err(e @ cairn::Error::Corrupt { .. }) => match SnapshotId::from_hex(spec) {
            Ok(id) => Ok(id),
            Err(_) => bail!("{e} (give its full id to forget it)"),
        },
        Err(e) => Err(e.into()),
    }
}

/// Runs `forget`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let policy = Policy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within: args.keep_within,
        tags: tag_lists(&args.keep_tag),
    };
    if !args.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give snapshot ids or --keep-* rules, not both");
        }
        let mut ids = Vec::new();
        for spec in &args.snapshots {
            ids.push(named_snapshot(&repo, spec)?);
        }
        ids.sort();
        ids.dedup();
        return finish(globals, &repo, &args, &ids, Vec::new());
    }
    if policy.is_empty() {
        eprintln!("no policy given (--keep-*) and no snapshot named: nothing is removed");
        return Ok(0);
    }
    let selected: Vec<(SnapshotId, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| args.filter.keeps(s))
        .collect();
    let times: HashMap<SnapshotId, Snapshot> =
        selected.iter().map(|(id, s)| (*id, s.clone())).collect();
    let now = cairn::fs::stage_tree::now_nanos();
    let mut groups = Vec::new();
    let mut remove = Vec::new();
    for (key, members) in group(selected, args.group_by) {
        let verdicts = apply(&policy, &members, &chrono::Local, now);
        remove.extend(verdicts.iter().filter(|v| !v.kept()).map(|v| v.id));
        groups.push((key, verdicts));
    }
    report(globals, &groups, &times);
    remove.sort();
    finish(globals, &repo, &args, &remove, groups)
}

/// Prints each group's verdicts, as `restic forget` does.
fn report(
    globals: &Globals,
    groups: &[(GroupKey, Vec<Verdict>)],
    snapshots: &HashMap<SnapshotId, Snapshot>,
) {
    if globals.json || globals.quiet {
        return;
    }
    for (key, verdicts) in groups {
        let mut label = Vec::new();
        if let Some(host) = &key.host {
            label.push(format!("host [{host}]"));
        }
        if let Some(paths) = &key.paths {
            label.push(format!("paths [{}]", paths.join(", ")));
        }
        if let Some(tags) = &key.tags {
            label.push(format!("tags [{}]", tags.join(", ")));
        }
        if !label.is_empty() {
            println!("snapshots for {}:", label.join(", "));
        }
        for keep in [true, false] {
            let chosen: Vec<&Verdict> = verdicts.iter().filter(|v| v.kept() == keep).collect();
            println!(
                "{} {} snapshots:",
                if keep { "keep" } else { "remove" },
                chosen.len()
            );
            for verdict in chosen {
                let s = &snapshots[&verdict.id];
                println!(
                    "  {}  {}  {:<12} {}",
                    verdict.id.short(),
                    s.local_time().format("%Y-%m-%d %H:%M:%S"),
                    s.hostname,
                    verdict.reasons.join(", ")
                );
            }
        }
        println!();
    }
}

/// Removes `ids` (unless a dry run) and reports it.
fn finish(
    globals: &Globals,
    repo: &std::sync::Arc<cairn::repo::Repository>,
    args: &Args,
    ids: &[SnapshotId],
    groups: Vec<(GroupKey, Vec<Verdict>)>,
) -> Result<u8> {
    if !args.dry_run {
        cairn::ops::forget::remove_snapshots(repo, ids)?;
    }
    let pruned = if args.prune && !args.dry_run {
        let opts = cairn::ops::prune::PruneOptions {
            limits: args.limits.limits(),
            dry_run: false,
            now: true,
            lease: cairn::repo::writer::Lease::configured(),
        };
        Some(crate::cli::prune::execute(globals, repo, &opts)?)
    } else {
        None
    };
    if globals.json {
        let groups: Vec<serde_json::Value> = groups
            .iter()
            .map(|(key, verdicts)| {
                let list = |keep: bool| -> Vec<serde_json::Value> {
                    verdicts
                        .iter()
                        .filter(|v| v.kept() == keep)
                        .map(|v| serde_json::json!({ "id": v.id.to_hex(), "reasons": v.reasons }))
                        .collect()
                };
                serde_json::json!({
                    "host": key.host, "paths": key.paths, "tags": key.tags,
                    "keep": list(true), "remove": list(false),
                })
            })
            .collect();
        let removed: Vec<String> = ids.iter().map(|id| id.to_hex()).collect();
        println!(
            "{}",
            serde_json::json!({
                "dry_run": args.dry_run, "groups": groups, "removed": removed, "prune": pruned,
            })
        );
    } else if !globals.quiet {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        println!("{verb} {} snapshots", ids.len());
        if let Some(report) = &pruned {
            crate::cli::prune::print_report(report, false);
        }
    }
    Ok(0)
}
