//! `cairn stage DIR -- COMMAND...`: the stage mounted for one command, committed if it succeeds.
//!
//! The stage lives in a mount namespace of its own ([`cairn::fs::overlay::namespace`]), so only
//! COMMAND and what it starts see it, and nothing is left mounted however cairn ends. A user
//! without root gets the overlay stage this way, in a user namespace that maps the user to
//! themselves: COMMAND runs as that user, with no more rights than without cairn.

use super::{Args, Prepared, prepare};
use crate::cli::{Globals, block_stop_signals};
use anyhow::{Context, Result, bail};
use cairn::fs::overlay::{OverlayOptions, OverlayStage};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs COMMAND in a stage on `args.dir` and commits what it leaves there if it succeeds.
pub fn run(globals: &Globals, args: &Args) -> Result<u8> {
    let Some(namespace) = args.namespace else {
        bail!("the stage's namespace was not made before the threads started");
    };
    let signals = block_stop_signals()?;
    let Prepared {
        repo,
        root,
        snapshot,
        spool_dir,
        cache_bytes,
    } = prepare(globals, args)?;
    let opts = OverlayOptions {
        spool_base: spool_dir,
        cache_bytes,
        parallel_uploads: globals.connections,
        namespace,
    };
    let (stage, session) = OverlayStage::mount(repo, root, snapshot, opts, &args.dir)?;
    let stage = Arc::new(stage);

    let program = &args.command[0];
    let shown = program.to_string_lossy().into_owned();
    let ended = match Command::new(program).args(&args.command[1..]).spawn() {
        Ok(child) => wait_forwarding(child, signals, &shown),
        Err(e) => Err(anyhow::Error::new(e).context(format!("running {shown}"))),
    };
    let mut keep_copy = false;
    let outcome = match ended {
        Ok(Ended::Succeeded) => match stage.commit() {
            Ok(id) => {
                if globals.json {
                    println!("{}", serde_json::json!({ "id": id.to_string() }));
                } else {
                    println!("{id}");
                }
                Ok(0)
            }
            Err(e) => {
                keep_copy = true;
                Err(e.into())
            }
        },
        Ok(Ended::Failed(why, code)) => {
            stage.abort();
            eprintln!("cairn: {why}: stage discarded");
            Ok(code)
        }
        Err(e) => {
            stage.abort();
            Err(e.context("stage discarded"))
        }
    };
    stage.release();
    // As in `serve`: a shell still inside the detached overlay keeps the view's session.
    std::mem::forget(session);
    if keep_copy {
        eprintln!(
            "the stage's copy is kept in {}",
            stage.spool_dir().display()
        );
    } else {
        stage.clean_up();
    }
    outcome
}

/// How COMMAND ended.
enum Ended {
    /// Exit status 0: the stage is committed.
    Succeeded,
    /// Anything else, said in words, with the exit code cairn passes on.
    Failed(String, u8),
}

/// Waits for COMMAND; a stop signal cairn receives (SIGINT, SIGTERM, SIGHUP) is passed on to it,
/// and the stage is then discarded whatever COMMAND does.
fn wait_forwarding(
    mut child: std::process::Child,
    signals: nix::sys::signal::SigSet,
    shown: &str,
) -> Result<Ended> {
    // A descriptor of the process, not its number: once it is reaped, the number may be
    // another process's.
    let pidfd = pidfd_open(child.id()).context("watching the command")?;
    let stopped = Arc::new(AtomicBool::new(false));
    {
        let stopped = stopped.clone();
        std::thread::spawn(move || {
            while let Ok(signal) = signals.wait() {
                stopped.store(true, Ordering::SeqCst);
                // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        signal as libc::c_int,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
            }
        });
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    if stopped.load(Ordering::SeqCst) {
        return Ok(Ended::Failed("cairn was stopped".into(), exit_code(status)));
    }
    if status.success() {
        return Ok(Ended::Succeeded);
    }
    Ok(Ended::Failed(
        format!("{shown} {}", describe(status)),
        exit_code(status),
    ))
}

/// `pidfd_open(2)`.
fn pidfd_open(pid: u32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open with a process number and no flags; a non-negative result is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    match i32::try_from(fd) {
        // SAFETY: the kernel just gave us this descriptor.
        Ok(fd) if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        _ => bail!("pidfd_open: {}", std::io::Error::last_os_error()),
    }
}

/// "exited with status 23" or "was killed by signal 9".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended ({status})"),
    }
}

/// The exit code a shell would report for COMMAND: its own, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1)
}
