//! Command-line parsing and the glue every command shares: opening the repository, reading the
//! password, progress bars, sizes, error lines and exit codes. Each command lives in its own
//! file and only turns arguments into a library call and its result into output.

mod backup;
mod cat;
mod check;
mod completions;
mod copy;
mod diff;
mod dump;
mod filter;
mod find;
mod forget;
mod init;
mod key;
mod ls;
mod mount;
mod private_dir;
mod prune;
mod quote;
mod repair;
mod restore;
mod scrub;
mod snapshots;
mod stage;
mod stats;

use anyhow::{Context, Result, bail};
use cairn::backend::Backend;
use cairn::repo::Repository;
use clap::{Parser, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Exit code of a backup that committed but could not read every file.
pub const EXIT_PARTIAL: u8 = 3;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Deduplicating, encrypting backups you can mount"
)]
struct Cli {
    /// Repository location: a directory (or local:PATH), s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]
    /// or s3:https://BUCKET.s3.REGION.amazonaws.com[/PREFIX], with credentials as the AWS tools
    /// find them (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE).
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<std::ffi::OsString>,
    /// Read the password from this file (else CAIRN_PASSWORD, else a prompt on a terminal).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Requests to the repository's store in flight at once: parallel pack uploads, and the
    /// least number of parallel readers (restore, check, copy). More helps on a network store.
    #[arg(long, env = "CAIRN_CONNECTIONS", global = true, default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: u16,
    /// Region of an S3 repository whose host name names none (else AWS_REGION,
    /// AWS_DEFAULT_REGION, the AWS profile's region, us-east-1).
    #[arg(long, env = "CAIRN_S3_REGION", global = true, value_name = "REGION")]
    s3_region: Option<String>,
    /// Address S3 buckets as host names (BUCKET.HOST), for stores that require it. AWS
    /// locations written s3:https://BUCKET.s3.REGION.amazonaws.com/... are addressed so anyway.
    #[arg(long, env = "CAIRN_S3_VIRTUAL_HOST", global = true,
          value_parser = clap::builder::FalseyValueParser::new())]
    s3_virtual_host: bool,
    /// Machine-readable JSON output; no progress bars.
    #[arg(long, global = true)]
    json: bool,
    /// At the end, one line on stderr of what the store was asked: calls, bytes each way,
    /// retries, time spent waiting on it (the log at `info` has it always).
    #[arg(long, env = "CAIRN_STATS", global = true)]
    stats: bool,
    /// No progress bars or summaries, errors only.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init(init::Args),
    /// Back up files and directories into a new snapshot.
    Backup(backup::Args),
    /// List snapshots.
    Snapshots(snapshots::Args),
    /// List the files in a snapshot.
    Ls(ls::Args),
    /// Restore a snapshot, or a path in it, into a directory.
    Restore(restore::Args),
    /// Serve snapshots as a read-only file system (FUSE), in the foreground.
    Mount(mount::Args),
    /// Mount a writable tree that becomes a snapshot on `stage --commit` (FUSE, foreground).
    Stage(stage::Args),
    /// Print a repository object as JSON (config, snapshot, tree, blob, index).
    Cat(cat::Args),
    /// Show repository statistics.
    Stats(stats::Args),
    /// Remove snapshots, named or by a retention policy (their data stays until a prune).
    Forget(forget::Args),
    /// Free what no snapshot uses, safely beside running backups (no lock).
    Prune(prune::Args),
    /// Manage the passwords that open the repository.
    Key(key::Args),
    /// Copy snapshots from another repository into this one (verified, resumable).
    Copy(copy::Args),
    /// Find files by name or path across snapshots, with the snapshots each appears in.
    Find(find::Args),
    /// Show what was added, removed and changed between two snapshots.
    Diff(diff::Args),
    /// Write a file, or a directory as a tar or zip archive, to standard output.
    Dump(dump::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Verify the repository: structure, and with --read-data every byte.
    Check(check::Args),
    /// Recover from damage: rebuild the index, salvage packs, rewrite snapshots.
    Repair(repair::Args),
    /// Verify every pack against its name and parity and heal it in place (no password).
    Scrub(scrub::Args),
}

/// Global options every command sees.
pub struct Globals {
    repo: Option<std::ffi::OsString>,
    password_file: Option<PathBuf>,
    /// What an S3 location's URL does not say (`--s3-region`, `--s3-virtual-host`).
    s3: cairn::backend::s3::S3Options,
    /// Store requests in flight at once (`--connections`).
    pub connections: usize,
    /// JSON output requested.
    pub json: bool,
    /// Quiet output requested.
    pub quiet: bool,
}

impl Globals {
    fn backend(&self) -> Result<Arc<dyn Backend>> {
        match &self.repo {
            Some(location) => Ok(cairn::backend::open_location(location, &self.s3)?),
            None => bail!("no repository given: use -r/--repo or set CAIRN_REPOSITORY"),
        }
    }

    /// Opens the repository with the user's password.
    pub fn open(&self) -> Result<Arc<Repository>> {
        self.open_through(Ok)
    }

    /// Opens the repository through a layer `wrap` puts in front of its store (a disk cache).
    pub fn open_through(
        &self,
        wrap: impl FnOnce(Arc<dyn Backend>) -> cairn::Result<Arc<dyn Backend>>,
    ) -> Result<Arc<Repository>> {
        let backend = wrap(self.backend()?)?;
        check_reachable(backend.as_ref())?;
        let password = self.password(false)?;
        Ok(Arc::new(Repository::open(backend, &password)?))
    }

    /// The password: from the file, the environment, or a prompt (twice when `confirm`).
    pub fn password(&self, confirm: bool) -> Result<Vec<u8>> {
        if let Some(file) = &self.password_file {
            return read_password_file(file);
        }
        if let Some(pw) = std::env::var_os("CAIRN_PASSWORD") {
            return Ok(std::os::unix::ffi::OsStrExt::as_bytes(pw.as_os_str()).to_vec());
        }
        prompt_password("password: ", confirm)
    }

    /// Whether progress bars may be drawn.
    pub fn show_progress(&self) -> bool {
        !self.json && !self.quiet && std::io::stderr().is_terminal()
    }

    /// A progress bar on stderr, hidden unless progress may be drawn.
    pub fn progress_bar(&self, len: Option<u64>, template: &str) -> ProgressBar {
        let bar = match len {
            Some(len) => ProgressBar::new(len),
            None => ProgressBar::new_spinner(),
        };
        if !self.show_progress() {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// Runs `job` with a progress bar of bytes (of `total`, if known) that the callback `job` is
    /// given advances, cleared when `job` ends: the shape of every job that reads packs.
    pub fn counting_bytes<T>(
        &self,
        total: Option<u64>,
        template: &str,
        job: impl FnOnce(&(dyn Fn(u64) + Sync)) -> T,
    ) -> T {
        let bar = self.progress_bar(total, template);
        let done = std::sync::atomic::AtomicU64::new(0);
        let result = job(&|n| {
            bar.set_position(done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n);
        });
        bar.finish_and_clear();
        result
    }
}

/// Checked before asking for a password, so a wrong path, a missing bucket or refused
/// credentials are not a password prompt: no `config` is no repository, and a failure that
/// cannot pass is reported as it is. A transient one is left to the retrying open.
fn check_reachable(backend: &dyn Backend) -> Result<()> {
    match backend.stat("config") {
        Err(cairn::Error::NotFound(_)) => {
            Err(cairn::Error::NoRepository(backend.location()).into())
        }
        Err(error) if !cairn::backend::retry::is_transient(&error) => Err(error.into()),
        _ => Ok(()),
    }
}

/// Opens a second repository (the source of `copy --from` or `init --copy-params-from`) with
/// its own password: from `password_file`, else `CAIRN_FROM_PASSWORD`, else a prompt naming it.
pub fn open_source(
    globals: &Globals,
    location: &std::ffi::OsStr,
    password_file: Option<&std::path::Path>,
) -> Result<Repository> {
    let backend = cairn::backend::open_location(location, &globals.s3)?;
    check_reachable(backend.as_ref())?;
    let password = match (password_file, std::env::var_os("CAIRN_FROM_PASSWORD")) {
        (Some(file), _) => read_password_file(file)?,
        (None, Some(pw)) => std::os::unix::ffi::OsStrExt::as_bytes(pw.as_os_str()).to_vec(),
        (None, None) => prompt_password(&format!("password of {}: ", backend.location()), false)?,
    };
    Ok(Repository::open(backend, &password)?)
}

/// Runs `work` while a thread refreshes `bar` with `message()` every 200 ms.
pub fn with_ticker<T>(
    bar: &ProgressBar,
    message: impl Fn() -> String + Sync,
    work: impl FnOnce() -> T,
) -> T {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    // The ticker waits on a channel whose sender is dropped when `work` returns or unwinds, so
    // it ends at once: sleeping its 200 ms out, it held every backup, restore and copy up to
    // that long after their work was done (124 ms after a backup's last fsync, seen by strace).
    let (stop, stopped) = channel::<()>();
    let message = &message;
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            loop {
                bar.set_message(message());
                if stopped.recv_timeout(Duration::from_millis(200))
                    != Err(RecvTimeoutError::Timeout)
                {
                    break;
                }
            }
        });
        let _stop = stop;
        work()
    });
    bar.finish_and_clear();
    result
}

/// SIGINT, SIGTERM and SIGHUP: the signals that stop a command.
fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts later, so only
/// a thread that waits on the returned set receives them (the FUSE commands unmount then).
/// Call before any thread starts.
pub fn block_stop_signals() -> Result<nix::sys::signal::SigSet> {
    let signals = stop_signals();
    signals.thread_block().context("blocking signals")?;
    Ok(signals)
}

/// The session settings both FUSE commands use: `options` plus the subtype and kernel
/// permission checks, `acl`, two session threads each with its own /dev/fuse clone.
pub fn fuse_config(mut options: Vec<fuser::MountOption>, acl: fuser::SessionACL) -> fuser::Config {
    options.push(fuser::MountOption::Subtype("cairn".into()));
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = acl;
    config.n_threads = Some(2);
    config.clone_fd = true;
    config
}

/// Unmounts a FUSE mount lazily, so files still open there do not keep the process alive.
pub fn unmount(dir: &std::path::Path) {
    if nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).is_err() {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(dir)
            .status();
    }
}

/// Asks for a password on the terminal; refuses when there is none to ask on.
pub fn prompt_password(prompt: &str, confirm: bool) -> Result<Vec<u8>> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password given: set CAIRN_PASSWORD or CAIRN_PASSWORD_FILE, or use --password-file"
        );
    }
    let first = rpassword::prompt_password(prompt).context("reading password")?;
    if confirm {
        let again = rpassword::prompt_password("again: ").context("reading password")?;
        if again != first {
            bail!("the passwords differ");
        }
    }
    Ok(first.into_bytes())
}

/// A password from the first line of `file`.
pub fn read_password_file(file: &std::path::Path) -> Result<Vec<u8>> {
    let text =
        std::fs::read(file).with_context(|| format!("reading password file {}", file.display()))?;
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    Ok(line.to_vec())
}

/// Parses a size such as `4M`, `64MiB`, `1G` or `4096`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown size unit in {text:?}")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a host name or tag: each becomes a directory name under the mount's `hosts/` and
/// `tags/`, so it must be one: not empty, not `.` or `..`, no `/`, no NUL or other control
/// characters, at most 255 bytes.
pub fn parse_label(text: &str) -> std::result::Result<String, String> {
    if let Some(reason) = cairn::repo::tree::invalid_name(text.as_bytes()) {
        return Err(format!("{text:?}: {reason}"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{text:?}: contains control characters"));
    }
    Ok(text.to_string())
}

/// Splits `SNAP[:PATH]`.
pub fn split_snapshot_path(spec: &str) -> (&str, &str) {
    spec.split_once(':').unwrap_or((spec, ""))
}

/// Stack of each worker: backup's walk recurses once per directory level on them (about
/// 3.5 KiB a level; the default 2 MiB overflowed at 600), up to its 1,022 levels, and a worker
/// waiting on a join may run other branches on the same stack. Only the pages used are
/// resident.
const WORKER_STACK: usize = 64 << 20;

/// The crates whose log records may carry credentials: the request signer's debug lines print
/// the credential provider, secret key included, and the HTTP stack's trace lines print signed
/// requests. They are dropped whatever `CAIRN_LOG` asks for, so no secret reaches a log.
const SECRET_BEARING: [&str; 5] = ["reqsign", "reqwest", "hyper", "h2", "rustls"];

/// Logs to stderr at `directives` (`CAIRN_LOG`), with [`SECRET_BEARING`] crates silenced. The
/// `log` records of dependencies (fuser, the S3 stack) come through a bridge set to the same
/// most verbose level, so a disabled record costs a level comparison: fuser logs every FUSE
/// request at debug level, and letting those through to the filter cost the mount a fifth of
/// its speed in `cp -a`.
fn init_logging(directives: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_new(directives).unwrap_or_default();
    for crate_name in SECRET_BEARING {
        if let Ok(off) = format!("{crate_name}=off").parse() {
            filter = filter.add_directive(off);
        }
    }
    let most = filter
        .max_level_hint()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::TRACE);
    {
        use tracing_log::AsLog;
        let _ = tracing_log::LogTracer::builder()
            .ignore_all(SECRET_BEARING)
            .with_max_level(most.as_log())
            .init();
    }
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Runs the command line; returns the exit code.
pub fn run() -> Result<u8> {
    let mut cli = Cli::parse();
    // fuser warns when its own unmount finds the file system already unmounted by ours.
    let level = std::env::var("CAIRN_LOG").unwrap_or_else(|_| "warn,fuser=error".into());
    init_logging(&level);
    // Before any thread starts: the kernel makes a user namespace only for a process with one.
    if let Command::Stage(args) = &mut cli.command {
        args.enter_namespace()?;
    }
    // Parallel readers block on the store: at least one per connection, so a network store's
    // latency is overlapped, and at least one per core for the work between reads.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The workers start now, before a FUSE command blocks the stop signals in its threads, so
    // each blocks them itself: a SIGTERM must reach the thread that unmounts, never a worker
    // (whose default action would kill the process with the mount still up).
    // Fails only if a pool exists already, which nothing before this line makes.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.max(usize::from(cli.connections)))
        .spawn_handler(|worker| {
            std::thread::Builder::new()
                .name(format!("cairn-worker-{}", worker.index()))
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    let _ = stop_signals().thread_block();
                    worker.run()
                })
                .map(drop)
        })
        .build_global();
    let stats = cli.stats;
    let globals = Globals {
        repo: cli.repo,
        password_file: cli.password_file,
        s3: cairn::backend::s3::S3Options {
            region: cli.s3_region,
            virtual_host: cli.s3_virtual_host,
        },
        connections: usize::from(cli.connections),
        json: cli.json,
        quiet: cli.quiet,
    };
    let result = match cli.command {
        Command::Init(args) => init::run(&globals, args),
        Command::Backup(args) => backup::run(&globals, args),
        Command::Snapshots(args) => snapshots::run(&globals, args),
        Command::Forget(args) => forget::run(&globals, args),
        Command::Prune(args) => prune::run(&globals, args),
        Command::Ls(args) => ls::run(&globals, args),
        Command::Restore(args) => restore::run(&globals, args),
        Command::Mount(args) => mount::run(&globals, args),
        Command::Stage(args) => stage::run(&globals, args),
        Command::Cat(args) => cat::run(&globals, args),
        Command::Stats(args) => stats::run(&globals, args),
        Command::Key(args) => key::run(&globals, args),
        Command::Check(args) => check::run(&globals, args),
        Command::Scrub(args) => scrub::run(&globals, args),
        Command::Copy(args) => copy::run(&globals, args),
        Command::Find(args) => find::run(&globals, args),
        Command::Diff(args) => diff::run(&globals, args),
        Command::Dump(args) => dump::run(&globals, args),
        Command::Completions(args) => completions::run(args),
        Command::Repair(args) => repair::run(&globals, args),
    };
    let line = store_stats_line(&cairn::backend::stats::store_stats().now());
    tracing::info!("{line}");
    if stats {
        eprintln!("{line}");
    }
    result
}

/// The `--stats` line.
fn store_stats_line(counted: &cairn::backend::stats::Counted) -> String {
    format!(
        "store: {} calls ({} retried), {} read, {} written, {:.1} s waiting",
        counted.calls,
        counted.retries,
        HumanBytes(counted.read),
        HumanBytes(counted.written),
        counted.waited.as_secs_f64()
    )
}

/// What a progress bar says of the store: bytes received and their rate.
pub fn store_traffic(rate: &cairn::backend::stats::ReadRate) -> String {
    let (read, per_sec) = rate.read_and_rate();
    format!(
        "{} from the store at {}/s",
        HumanBytes(read),
        HumanBytes(per_sec)
    )
}

/// The error as one line: its chain joined with `: `, each cause once. An error that shows its
/// cause in its own message (`storage error on config: <cause>`) also gives it as its source,
/// which would otherwise be printed a second time.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string().replace('\n', " ");
        if text.is_empty() || line.contains(text.as_str()) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// restic's exit codes for the library errors that have one.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    match error.downcast_ref::<cairn::Error>() {
        Some(cairn::Error::NoRepository(_)) => 10,
        Some(cairn::Error::WrongPassword) => 12,
        _ => 1,
    }
}
