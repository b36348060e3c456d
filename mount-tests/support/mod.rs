//! Running `cairn mount` and `cairn stage` for real in tests: start, wait for the mount, stop,
//! and never leave a mount behind.
#![allow(dead_code)]

pub mod eio_fs;
pub mod stage;

use crate::common::Env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A running `cairn mount` or `cairn stage`.
pub struct Mounted {
    pub child: Option<Child>,
    pub dir: PathBuf,
    log: PathBuf,
}

pub fn is_mounted(dir: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.to_str().unwrap();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(dir))
}

/// The file system type mounted on `dir`, if any (the last mount there).
pub fn fs_type(dir: &Path) -> Option<String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.to_str().unwrap();
    mounts
        .lines()
        .rfind(|l| l.split_whitespace().nth(1) == Some(dir))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
}

pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Mounted {
    /// Runs `cairn COMMAND DIR ARGS...` on a fresh `mnt` directory and waits for the mount.
    pub fn start(env: &Env, command: &str, args: &[&str]) -> Mounted {
        let dir = env.path(&format!("{command}-mnt"));
        fs::create_dir_all(&dir).unwrap();
        if let Some(uid) = env.user {
            let id = Some(nix::unistd::Uid::from_raw(uid));
            nix::unistd::chown(&dir, id, Some(nix::unistd::Gid::from_raw(uid))).unwrap();
        }
        let log = env.path(&format!("{command}.log"));
        let mut all = vec![command, dir.to_str().unwrap()];
        all.extend_from_slice(args);
        let child = env
            .command(&all)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("cairn mount starts");
        let mut mounted = Mounted {
            child: Some(child),
            dir,
            log,
        };
        wait_for("the mount", || {
            if let Some(status) = mounted.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "cairn {command} exited with {status}: {}",
                    fs::read_to_string(&mounted.log).unwrap_or_default()
                );
            }
            is_mounted(&mounted.dir)
        });
        mounted
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and insists the process ends by itself and the mount is gone.
    pub fn stop(self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.wait_exit();
    }

    /// Waits for the process to end by itself, successfully, leaving no mount behind.
    pub fn wait_exit(mut self) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cairn did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "exit status {status}: {}", self.log());
        wait_for("the unmount", || !is_mounted(&self.dir));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.dir)
                .status();
            // An overlay stage's mount outlives its process.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Peak resident memory of a process, from /proc.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}
