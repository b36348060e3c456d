//! `cairn stage DIR`: a writable mount that becomes a snapshot on `cairn stage --commit DIR`.
//!
//! The stage process listens on a Unix socket named after the mount point; `--commit` and
//! `--abort` from another shell send it one line and print its answer. The stage answers a
//! commit only after the snapshot is stored, so the next command already sees it; then it
//! detaches the mount and exits.

use crate::cli::private_dir::{cache_dir, ensure_private, runtime_dir};
use crate::cli::{Globals, block_stop_signals, fuse_config, parse_label, parse_size, unmount};
use anyhow::{Context, Result, bail};
use cairn::fs::overlay::{Namespace, OverlayOptions, OverlayStage};
use cairn::fs::stage::{Stage, StageFs, StageOptions, StageSnapshot};
use cairn::fs::stage_tree::now_nanos;
use cairn::repo::Repository;
use cairn::repo::ids::SnapshotId;
use cairn::repo::tree::{Node, NodeKind};
use fuser::{MountOption, SessionACL};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod command;

/// Options of `stage`.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cairn stage /mnt/stage --path /home/me   (in another terminal:)\n    rsync -a ~/ /mnt/stage/ && cairn stage --commit /mnt/stage\n  cairn stage /mnt/stage --path /home/me -- rsync -a ~/ /mnt/stage/\n  cairn stage /mnt/stage --path /srv --empty --commit-on-unmount"
)]
pub struct Args {
    /// Empty directory to mount the stage on (or, with --commit/--abort, the stage's mount).
    dir: PathBuf,
    /// Commit the stage mounted on DIR as a snapshot, print its id, and unmount it.
    #[arg(long, conflicts_with = "abort")]
    commit: bool,
    /// Discard the stage mounted on DIR and unmount it.
    #[arg(long)]
    abort: bool,
    /// Start from this snapshot (default: the latest of this host and --path).
    #[arg(long, conflicts_with = "empty")]
    parent: Option<String>,
    /// Start empty.
    #[arg(long)]
    empty: bool,
    /// Host name to record (default: this machine's).
    #[arg(long, value_parser = parse_label)]
    host: Option<String>,
    /// The path the staged tree stands for, as `cairn backup PATH` would record it (default:
    /// the parent's).
    #[arg(long)]
    path: Option<String>,
    /// Tag the snapshot (repeatable).
    #[arg(long, value_parser = parse_label)]
    tag: Vec<String>,
    /// Commit when unmounted (by `fusermount3 -u`, Ctrl-C or SIGTERM) instead of discarding.
    #[arg(long)]
    commit_on_unmount: bool,
    /// Memory for verified chunks of the parent's files (rsync reads them as delta bases).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    cache_size: u64,
    /// Directory for spool files (default: the user's cache, `~/.cache/cairn`, made 0700): an
    /// overlay stage's upper directory, which holds what the copy writes until the commit, or a
    /// FUSE stage's files written out of order (no name, O_TMPFILE, mode 0600).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Serve the stage through FUSE even where overlayfs can be mounted (as root): slower, but
    /// nothing the copy writes is kept on local disk until the commit.
    #[arg(long)]
    fuse: bool,
    /// Let other users (and root) use the stage, the kernel checking modes and owners, so a
    /// service user's stage can be filled by another user's rsync; needs `user_allow_other` in
    /// /etc/fuse.conf for non-root users. An overlay stage is always open to other users as
    /// modes allow.
    #[arg(long)]
    allow_other: bool,
    /// A FUSE stage keeps no extended attributes (new and changed files get none): for trees
    /// without them, the kernel then stops asking for `security.capability` before every write.
    #[arg(long)]
    no_xattrs: bool,
    /// Run COMMAND with the stage mounted on DIR where only it (and what it starts) sees it,
    /// then commit if it succeeds and discard otherwise. Users without root get the overlay
    /// stage this way, in a user namespace of their own.
    #[arg(
        last = true,
        value_name = "COMMAND",
        conflicts_with_all = ["commit", "abort", "fuse", "allow_other", "commit_on_unmount", "no_xattrs"]
    )]
    command: Vec<std::ffi::OsString>,
    /// The namespace COMMAND's stage is mounted in, made by [`Args::enter_namespace`].
    #[arg(skip)]
    namespace: Option<Namespace>,
}

impl Args {
    /// With COMMAND, moves this process into the namespaces its stage is mounted in. Must run
    /// before any thread starts.
    pub fn enter_namespace(&mut self) -> Result<()> {
        use cairn::fs::overlay::namespace;
        if self.command.is_empty() || self.commit || self.abort {
            return Ok(());
        }
        // Read before the namespace hides them.
        let groups = namespace::unmapped_groups();
        let entered = namespace::enter_private()?;
        if entered == Namespace::User && !groups.is_empty() {
            eprintln!(
                "cairn: warning: in the stage only your user and primary group exist: files of \
                 your other groups ({}) get your primary group, and a parent's files of other \
                 owners cannot be changed (stage without COMMAND to keep them)",
                groups
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.namespace = Some(entered);
        Ok(())
    }
}

/// A mounted stage of either kind.
enum Mounted {
    /// Served through FUSE: every request of the copy is answered by cairn.
    Fuse(Arc<Stage>),
    /// The kernel's overlayfs over the parent's view.
    Overlay(Arc<OverlayStage>),
}

impl Mounted {
    fn commit(&self) -> cairn::error::Result<SnapshotId> {
        match self {
            Mounted::Fuse(stage) => stage.commit(),
            Mounted::Overlay(stage) => stage.commit(),
        }
    }

    fn abort(&self) {
        match self {
            Mounted::Fuse(stage) => stage.abort(),
            Mounted::Overlay(stage) => stage.abort(),
        }
    }

    fn clone(&self) -> Mounted {
        match self {
            Mounted::Fuse(stage) => Mounted::Fuse(stage.clone()),
            Mounted::Overlay(stage) => Mounted::Overlay(stage.clone()),
        }
    }
}

/// The control socket of the stage mounted on `dir`, in the user's private directory.
fn socket_path(dir: &Path) -> Result<PathBuf> {
    // `/mnt/stage/` and `/mnt/../mnt/stage` name the same stage.
    let absolute = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .with_context(|| format!("resolving {}", dir.display()))?;
    let digest = Sha256::digest(absolute.as_os_str().as_bytes());
    Ok(runtime_dir()?.join(format!("stage-{}.sock", hex::encode(&digest[..8]))))
}

/// The bound control socket; its file is removed however the stage ends (a failed mount
/// included), so no stale socket is left behind.
struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the socket for the stage on `dir`, refusing if a live stage already answers there.
    fn bind(dir: &Path) -> Result<ControlSocket> {
        let path = socket_path(dir)?;
        if UnixStream::connect(&path).is_ok() {
            bail!("a stage is already mounted on {}", dir.display());
        }
        // Left by a stage that was killed: nothing listens on it.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        let socket = ControlSocket { listener, path };
        // Only the stage's owner may commit or abort it (its directory is private too).
        std::fs::set_permissions(&socket.path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", socket.path.display()))?;
        Ok(socket)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs `stage`.
pub fn run(globals: &Globals, args: Args) -> Result<u8> {
    if args.commit || args.abort {
        return control(
            globals,
            &args.dir,
            if args.commit { "commit" } else { "abort" },
        );
    }
    if !args.command.is_empty() {
        return command::run(globals, &args);
    }
    serve(globals, args)
}

/// Sends `command` to the stage on `dir` and prints its answer.
fn control(globals: &Globals, dir: &Path, command: &str) -> Result<u8> {
    let socket = socket_path(dir)?;
    let mut stream = UnixStream::connect(&socket).with_context(|| {
        format!(
            "no stage is mounted on {} ({})",
            dir.display(),
            socket.display()
        )
    })?;
    writeln!(stream, "{command}")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    let answer = answer.trim_end();
    match answer.split_once(' ') {
        Some(("ok", id)) if command == "commit" => {
            if globals.json {
                println!("{}", serde_json::json!({ "id": id }));
            } else {
                println!("{id}");
            }
            Ok(0)
        }
        _ if answer == "ok" => {
            if !globals.quiet {
                eprintln!("stage on {} discarded", dir.display());
            }
            Ok(0)
        }
        Some(("error", reason)) => bail!("{command} failed: {reason}"),
        _ => bail!("{command}: unexpected answer {answer:?}"),
    }
}

/// The directory node the stage starts from, and the snapshot it comes from.
fn starting_point(
    repo: &Repository,
    args: &Args,
    hostname: &str,
) -> Result<(Option<SnapshotId>, Option<Node>, String)> {
    let parent = if args.empty {
        None
    } else if let Some(spec) = &args.parent {
        Some(repo.find_snapshot(spec)?)
    } else {
        let Some(path) = &args.path else {
            bail!("give --path (the path the staged tree stands for), --parent or --empty");
        };
        repo.snapshots()?
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == hostname && s.paths == [path.clone()])
    };
    let path = match (&args.path, &parent) {
        (Some(path), _) => path.clone(),
        (None, Some((_, snap))) if snap.paths.len() == 1 => snap.paths[0].clone(),
        (None, Some(_)) => bail!("the parent has several paths: give --path"),
        (None, None) => bail!("give --path (the path the staged tree stands for)"),
    };
    let Some((id, snapshot)) = parent else {
        return Ok((None, None, path));
    };
    let name = Path::new(&path)
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let index = repo.load_index()?;
    let top = repo.read_tree(&index, &snapshot.tree)?;
    let Some(root) = top
        .iter()
        .find(|n| n.name == name && n.kind == NodeKind::Dir)
    else {
        let held: Vec<String> = top
            .iter()
            .filter(|n| n.kind == NodeKind::Dir)
            .map(|n| String::from_utf8_lossy(&n.name).into_owned())
            .collect();
        bail!(
            "--path {path}: snapshot {} has no directory {:?} at its root (it has: {})",
            id.short(),
            String::from_utf8_lossy(&name),
            if held.is_empty() {
                "none".to_string()
            } else {
                held.join(", ")
            }
        );
    };
    Ok((Some(id), Some(root.clone()), path))
}

/// An empty directory owned by whoever runs the stage.
fn empty_root() -> Node {
    let owner = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    Node::new(NodeKind::Dir, 0o755, owner, now_nanos())
}

/// What a stage starts from, whatever its kind.
struct Prepared {
    repo: Arc<Repository>,
    root: Node,
    snapshot: StageSnapshot,
    spool_dir: PathBuf,
    cache_bytes: usize,
}

/// Opens the repository and finds the parent, the spool and the snapshot's record.
fn prepare(globals: &Globals, args: &Args) -> Result<Prepared> {
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let repo = globals.open()?;
    let hostname = args
        .host
        .clone()
        .unwrap_or_else(cairn::repo::identity::hostname);
    let (parent, root, path) = starting_point(&repo, args, &hostname)?;
    let spool_dir = match &args.spool_dir {
        // An overlay stage's upper directory holds every file copied in: only the user may
        // enter where it goes.
        Some(dir) => {
            ensure_private(dir, nix::unistd::geteuid().as_raw())?;
            dir.clone()
        }
        None => cache_dir()?,
    };
    let snapshot = StageSnapshot {
        hostname,
        path,
        tags: args.tag.clone(),
        parent,
    };
    Ok(Prepared {
        repo,
        root: root.unwrap_or_else(empty_root),
        snapshot,
        spool_dir,
        cache_bytes: usize::try_from(args.cache_size).unwrap_or(usize::MAX),
    })
}

impl Prepared {
    /// Mounts an overlay stage from here on `dir`, in `namespace`.
    fn mount_overlay(
        self,
        globals: &Globals,
        namespace: Namespace,
        dir: &Path,
    ) -> Result<(OverlayStage, fuser::BackgroundSession)> {
        let opts = OverlayOptions {
            spool_base: self.spool_dir,
            cache_bytes: self.cache_bytes,
            parallel_uploads: globals.connections,
            namespace,
        };
        Ok(OverlayStage::mount(
            self.repo,
            self.root,
            self.snapshot,
            opts,
            dir,
        )?)
    }
}

/// Mounts the stage and serves it until a commit, an abort or an unmount.
fn serve(globals: &Globals, args: Args) -> Result<u8> {
    let signals = block_stop_signals()?;
    let prepared = prepare(globals, &args)?;
    let parent = prepared.snapshot.parent;

    let socket = ControlSocket::bind(&args.dir)?;
    let (stage, session) = if args.fuse || !nix::unistd::geteuid().is_root() {
        let opts = StageOptions {
            cache_bytes: prepared.cache_bytes,
            spool_dir: prepared.spool_dir,
            parallel_uploads: globals.connections,
        };
        let stage = Arc::new(Stage::new(
            prepared.repo,
            prepared.root,
            prepared.snapshot,
            opts,
        )?);
        // No `default_permissions` unless others may use the stage: only the owner reaches
        // it, and with it the kernel re-reads a directory's attributes after every create and
        // rename in it before the next permission check, two round trips per file rsync
        // copies. With `--allow-other` the kernel checks every user's requests.
        let mut options = vec![MountOption::RW, MountOption::FSName("cairn-stage".into())];
        let acl = if args.allow_other {
            options.push(MountOption::DefaultPermissions);
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        let mut config = fuse_config(options, acl);
        config.n_threads = Some(FUSE_STAGE_THREADS);
        let fs = StageFs::new(stage.clone(), !args.no_xattrs);
        let session = fuser::spawn_mount(fs, &args.dir, &config)
            .with_context(|| format!("mounting on {}", args.dir.display()))?;
        (Mounted::Fuse(stage), session)
    } else {
        let (stage, session) = prepared.mount_overlay(globals, Namespace::Root, &args.dir)?;
        (Mounted::Overlay(Arc::new(stage)), session)
    };
    if !globals.quiet {
        eprintln!(
            "stage on {}{}; `cairn stage --commit {}` commits it, `--abort` discards it",
            args.dir.display(),
            parent.map_or(String::new(), |p| format!(" (from snapshot {})", p.short())),
            args.dir.display()
        );
    }

    let decided = Arc::new(AtomicBool::new(false));
    {
        let (stage, decided, dir) = (stage.clone(), decided.clone(), args.dir.clone());
        let listener = socket.listener.try_clone().context("control socket")?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if answer(&stage, stream, &dir, &decided) {
                    break;
                }
            }
        });
    }
    let stopped = Arc::new(AtomicBool::new(false));
    {
        let (dir, stopped) = (args.dir.clone(), stopped.clone());
        let fuse = matches!(stage, Mounted::Fuse(_));
        std::thread::spawn(move || {
            if signals.wait().is_ok() {
                stopped.store(true, Ordering::SeqCst);
                // An overlay stage is committed or discarded while still mounted, then
                // unmounted (below).
                if fuse {
                    unmount(&dir);
                }
            }
        });
    }
    let Mounted::Overlay(overlay) = &stage else {
        session.join().context("file system session")?;
        drop(socket);
        return decide(globals, &args, &stage, &decided);
    };
    // Until a commit or abort, a stop signal, or the user unmounts the overlay.
    while !decided.load(Ordering::SeqCst) && !stopped.load(Ordering::SeqCst) && overlay.is_mounted()
    {
        std::thread::sleep(OVERLAY_POLL);
    }
    drop(socket);
    let outcome = decide(globals, &args, &stage, &decided);
    overlay.release();
    // Not joined: a shell still inside the detached overlay would keep the view's session (and
    // this process) alive; when this process exits, reads there fail with ENOTCONN instead.
    std::mem::forget(session);
    match &outcome {
        Ok(_) => overlay.clean_up(),
        // What the copy wrote stays until the next overlay stage starts.
        Err(_) => eprintln!(
            "the stage's copy is kept in {}",
            overlay.spool_dir().display()
        ),
    }
    outcome
}

/// Threads answering a FUSE stage's requests. rsync waits on each request in turn, so a second
/// thread only wakes the other CPU: rsync of linux/ into a FUSE stage plus commit took 28.7 and
/// 28.0 s with one thread against 30.3 and 29.8 s with two (interleaved). Nothing a request
/// waits for needs another request answered.
const FUSE_STAGE_THREADS: usize = 1;

/// How often a waiting overlay stage looks whether the user unmounted it.
const OVERLAY_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// What happens once the stage is unmounted: nothing if a commit or abort already decided,
/// otherwise a commit (`--commit-on-unmount`) or a discard.
fn decide(globals: &Globals, args: &Args, stage: &Mounted, decided: &AtomicBool) -> Result<u8> {
    if decided.load(Ordering::SeqCst) {
        return Ok(0);
    }
    if args.commit_on_unmount {
        let id = stage.commit()?;
        println!("{id}");
        return Ok(0);
    }
    stage.abort();
    if !globals.quiet {
        eprintln!(
            "unmounted without --commit: stage discarded (start it with --commit-on-unmount to commit instead)"
        );
    }
    Ok(0)
}

/// Handles one control connection; true when the stage is done (committed or aborted).
fn answer(stage: &Mounted, stream: UnixStream, dir: &Path, decided: &AtomicBool) -> bool {
    let mut line = String::new();
    let Ok(reader) = stream.try_clone() else {
        return false;
    };
    if BufReader::new(reader).read_line(&mut line).is_err() {
        return false;
    }
    let (reply, done) = match line.trim() {
        "commit" => match stage.commit() {
            Ok(id) => (format!("ok {id}"), true),
            Err(e) => (format!("error {e}"), false),
        },
        "abort" => {
            stage.abort();
            ("ok".to_string(), true)
        }
        other => (format!("error unknown command {other:?}"), false),
    };
    // Answer first: the unmount ends the session and with it this process.
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
    if done {
        decided.store(true, Ordering::SeqCst);
        unmount(dir);
    }
    done
}
