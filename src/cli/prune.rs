//! `cairn prune`: frees what no snapshot uses, without a lock (DESIGN §6). A run first
//! deletes the packs earlier runs condemned once the backups open at that time have finished,
//! then condemns what is unused now; `--now` also deletes that at once when no backup, stage
//! or repair is running.

use crate::cli::{Globals, parse_size};
use anyhow::Result;
use cairn::ops::prune::rules::PlanLimits;
use cairn::ops::prune::{PruneOptions, PruneReport, prune};
use cairn::repo::Repository;
use indicatif::HumanBytes;
use std::sync::Arc;

/// Options of `prune`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn prune --dry-run\n  cairn prune --max-unused 10% --max-repack 2GiB"
)]
pub struct Args {
    /// Also delete what this run condemns, at once, when no writer session is open.
    #[arg(long)]
    now: bool,
    /// Show what would be condemned, repacked and freed; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The bounds of phase 1, shared with `forget --prune`.
#[derive(clap::Args, Clone)]
pub struct LimitArgs {
    /// Repack packs with more than this share unused (a percentage: `5%`, `0`, `100`).
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent)]
    max_unused: f64,
    /// Copy at most this many live bytes into new packs per run (`500M`; default unlimited).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_repack: Option<u64>,
}

impl LimitArgs {
    /// The limits as the library takes them.
    pub fn limits(&self) -> PlanLimits {
        PlanLimits {
            max_unused: self.max_unused,
            max_repack: self.max_repack.unwrap_or(u64::MAX),
        }
    }
}

fn parse_percent(text: &str) -> std::result::Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(format!("{text:?}: give a percentage from 0 to 100")),
    }
}

/// Runs `prune`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    let repo = globals.open()?;
    let opts = PruneOptions {
        limits: args.limits.limits(),
        dry_run: args.dry_run,
        now: args.now,
        lease: cairn::repo::writer::Lease::configured(),
    };
    run_with(globals, &repo, &opts)
}

/// Runs a prune with `opts` and reports it.
pub fn run_with(globals: &Globals, repo: &Arc<Repository>, opts: &PruneOptions) -> Result<u8> {
    let report = execute(globals, repo, opts)?;
    if globals.json {
        println!(
            "{}",
            serde_json::json!({ "dry_run": opts.dry_run, "report": report })
        );
    } else if !globals.quiet {
        print_report(&report, opts.dry_run);
    }
    Ok(0)
}

/// The CPU priority prune gives itself: it is maintenance, and a backup running beside it
/// (which it never blocks) should not be slowed by it either.
const PRUNE_NICENESS: i32 = 10;

/// Lowers the CPU priority of every thread of this process (Linux sets it per thread, and
/// the thread pools may already run).
fn lower_priority() {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::id_t>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for thread in threads.into_iter().chain([0]) {
        // SAFETY: setpriority changes only a thread's scheduling priority; a failure (not
        // permitted) leaves it as it was, which is fine.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, thread, PRUNE_NICENESS);
        }
    }
}

/// Runs a prune with `opts` behind a progress bar (also `forget --prune`), at a lower CPU
/// priority than backups.
pub fn execute(
    globals: &Globals,
    repo: &Arc<Repository>,
    opts: &PruneOptions,
) -> Result<PruneReport> {
    lower_priority();
    let bar = globals.progress_bar(Some(0), "{spinner} {msg} {pos}/{len} {wide_bar}");
    let report = prune(repo, opts, &|step, done, total| {
        bar.set_message(step.to_string());
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    Ok(report)
}

/// Prints what a prune did (or, dry, would do).
pub fn print_report(report: &PruneReport, dry_run: bool) {
    let would = if dry_run { "would be " } else { "" };
    println!(
        "{} packs ({}) {would}condemned: nothing in them is used",
        report.condemned_packs,
        HumanBytes(report.condemned_bytes)
    );
    println!(
        "{} packs ({}) {would}repacked: {} of live data {}copied into new packs",
        report.repacked_packs,
        HumanBytes(report.repacked_pack_bytes),
        HumanBytes(report.repacked_live_bytes),
        if dry_run { "would be " } else { "" }
    );
    if report.condemned_parity > 0 {
        println!(
            "{} parity objects without their pack {would}condemned",
            report.condemned_parity
        );
    }
    if report.kept_mixed_packs > 0 {
        println!(
            "{} partly unused packs left for a later run (--max-repack)",
            report.kept_mixed_packs
        );
    }
    if dry_run {
        return;
    }
    if report.sessions_removed > 0 {
        println!(
            "{} session files of writers that stopped removed",
            report.sessions_removed
        );
    }
    if report.revived_packs > 0 {
        println!(
            "{} condemned packs kept: snapshots written since use them",
            report.revived_packs
        );
    }
    println!(
        "{} packs deleted, {} freed",
        report.deleted_packs,
        HumanBytes(report.freed_bytes)
    );
    if report.removed_parity > 0 {
        println!(
            "{} parity objects without their pack removed",
            report.removed_parity
        );
    }
    for waiting in &report.waiting {
        println!("{waiting}");
    }
    if !report.waiting.is_empty() {
        println!("run `cairn prune` again once those have finished to delete the rest");
    }
}
