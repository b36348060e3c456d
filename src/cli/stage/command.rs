//! `cairn stage DIR -- COMMAND...`: the stage mounted for one command, committed if it succeeds.
//!
//! The stage lives in a mount namespace of its own ([`cairn::fs::overlay::namespace`]), so only
//! COMMAND and what it starts see it, and nothing is left mounted however cairn ends. A user
//! without root gets the overlay stage this way, in a user namespace that maps the user to
//! themselves: COMMAND runs as that user, with no more rights than without cairn.

use super::{Args, prepare};
use crate::cli::{Globals, block_stop_signals};
use anyhow::{Context, Result, bail};
use cairn::fs::overlay::OverlayStage;
use cairn::repo::ids::SnapshotId;
use nix::sys::signal::SigSet;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs COMMAND in a stage on `args.dir` and commits what it leaves there if it succeeds.
pub fn run(globals: &Globals, args: &Args) -> Result<u8> {
    let Some(namespace) = args.namespace else {
        bail!("the stage's namespace was not made before the threads started");
    };
    let signals = block_stop_signals()?;
    let (stage, session) = prepare(globals, args)?.mount_overlay(globals, namespace, &args.dir)?;
    let stage = Arc::new(stage);

    let shown = args.command[0].to_string_lossy().into_owned();
    let ended = match spawn(&args.command, signals) {
        Ok(child) => wait_forwarding(child, signals, &shown),
        Err(e) => Ok(Ended::Failed(
            format!("cannot run {shown}: {e}"),
            // What a shell answers: not found, or found but not runnable.
            if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
        )),
    };
    let outcome = match ended {
        Ok(Ended::Succeeded) => commit_when_closed(&stage).map(|id| {
            if globals.json {
                println!("{}", serde_json::json!({ "id": id.to_string() }));
            } else {
                println!("{id}");
            }
            0
        }),
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
    // Nothing can commit this stage later: its copy goes whatever happened.
    stage.clean_up();
    outcome
}

/// How long a process COMMAND left behind may keep a file in the stage open for writing.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Commits the stage once no file in it is open for writing (a process COMMAND started in the
/// background may still be closing one), waiting up to [`CLOSE_WAIT`].
fn commit_when_closed(stage: &OverlayStage) -> Result<SnapshotId> {
    let started = std::time::Instant::now();
    while stage.make_read_only().is_err() && started.elapsed() < CLOSE_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    match stage.commit() {
        Ok(id) => Ok(id),
        Err(e) => {
            stage.abort();
            Err(anyhow::Error::from(e).context("stage discarded"))
        }
    }
}

/// Starts COMMAND as the shell that started cairn would have: with the stop signals cairn
/// blocks in its own threads unblocked, in the working directory found again by name (so a
/// COMMAND started from inside DIR works in the stage, not in the directory under it), without
/// the repositories' passwords, and killed if cairn dies (its stage is gone then).
fn spawn(command: &[OsString], signals: SigSet) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&command[0]);
    child
        .args(&command[1..])
        .env_remove("CAIRN_PASSWORD")
        .env_remove("CAIRN_FROM_PASSWORD");
    if let Ok(dir) = std::env::current_dir() {
        child.current_dir(dir);
    }
    // SAFETY: between fork and exec only async-signal-safe calls: pthread_sigmask and prctl.
    unsafe {
        child.pre_exec(move || {
            signals.thread_unblock()?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    child.spawn()
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
fn wait_forwarding(mut child: Child, signals: SigSet, shown: &str) -> Result<Ended> {
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
