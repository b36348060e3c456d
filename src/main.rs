//! The `cairn` command: parses arguments, runs one command, prints its one-line error if any,
//! and exits with restic's codes (0 ok, 1 error, 2 usage, 3 partial backup, 10 no repository,
//! 12 wrong password).

mod cli;

use std::io::Write;
use std::process::ExitCode;

/// Large buffers (chunks, packs) are allocated and freed by many threads. glibc would otherwise
/// raise its mmap threshold after the first frees and keep freed chunk buffers in per-thread
/// arenas, so resident memory would grow past the configured cache bounds.
fn bound_allocator_retention() {
    // Above the common 1 MiB chunk, so chunk buffers are reused from the heap rather than
    // mapped and zero-filled afresh each time; larger ones are returned to the system at once.
    const MMAP_THRESHOLD: libc::c_int = 4 << 20;
    // Free memory an arena keeps rather than hands back. glibc's default once the threshold
    // above is set, 128 KiB, gave back the buffers of every solid group and chunk as soon as
    // they were freed, and the next ones were faulted in and zeroed afresh: on a first backup of
    // linux/, 545k page faults and 3.6 s of system time against 220k and 2.5 s with 8 MiB, for
    // 15-23 MB more peak RSS (at most this much per arena).
    const TRIM_THRESHOLD: libc::c_int = 8 << 20;
    const ARENAS: libc::c_int = 4;
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Exit code when stdout or stderr is a pipe whose reader went away: what a program killed by
/// SIGPIPE reports, as `cairn ls | head` would with any C tool.
const EXIT_CLOSED_OUTPUT: i32 = 128 + libc::SIGPIPE;

/// A closed stdout or stderr ends cairn quietly rather than with a panic. Rust ignores SIGPIPE,
/// so the print macros panic on a pipe whose reader is gone: the hook turns exactly that panic
/// into a quiet exit. Standard descriptors that are not open at all are opened on /dev/null
/// first, so writes to them succeed and no file cairn opens later takes their number.
fn quiet_on_closed_output() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        let closed = unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF);
        if closed {
            // open() takes the lowest free number: this one. Leaked on purpose, for the process.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                std::mem::forget(null);
            }
        }
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") {
            std::process::exit(EXIT_CLOSED_OUTPUT);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    bound_allocator_retention();
    quiet_on_closed_output();
    match cli::run() {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout went away (`cairn ls | head`): not an error worth a line. Only
        // a failed write to stdout counts; a broken pipe elsewhere (a store) is an error.
        Err(error)
            if error.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<cairn::Error>(),
                    Some(cairn::Error::Io { path, source })
                        if path.as_os_str() == "stdout"
                            && source.kind() == std::io::ErrorKind::BrokenPipe
                )
            }) =>
        {
            ExitCode::from(EXIT_CLOSED_OUTPUT as u8)
        }
        Err(error) => {
            // Not eprintln!: a closed stderr must not turn the error into a panic.
            let _ = writeln!(std::io::stderr(), "cairn: {}", cli::one_line(&error));
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
