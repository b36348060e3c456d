//! A real S3 server for the tests: `cairn-s3-server` (s3s-fs with TCP_NODELAY, built from
//! `tools/s3-server`; `.ci/run` installs it) on a free loopback port, over a temporary
//! directory, stopped when dropped. A test that needs it fails, naming the install command,
//! when it is missing: an S3 test that silently passes without a server would test nothing.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "cairn-test-access";
pub const SECRET_KEY: &str = "cairn-test-secret";
pub const BUCKET: &str = "cairn-test";

/// A running server; its bucket [`BUCKET`] exists.
pub struct S3Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_S3_SERVER") {
        return PathBuf::from(path);
    }
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")))
        .map(|dir| dir.join("cairn-s3-server"))
        .find(|p| p.is_file());
    in_path.unwrap_or_else(|| {
        panic!(
            "cairn-s3-server not found: install it with \
             `cargo install --locked --path tools/s3-server` (or set CAIRN_S3_SERVER)"
        )
    })
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join(BUCKET)).expect("bucket");
        let port = free_port();
        let child = Command::new(server_binary())
            .args(["--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cairn-s3-server starts");
        let server = S3Server { child, dir, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "S3 server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The location of a repository named `name` in the bucket, reached through `port` (the
    /// server's own, or a proxy's in front of it).
    pub fn location_via(&self, port: u16, name: &str) -> String {
        format!("s3:http://127.0.0.1:{port}/{BUCKET}/{name}")
    }

    pub fn location(&self, name: &str) -> String {
        self.location_via(self.port, name)
    }

    /// The environment cairn needs to reach the server.
    pub fn env() -> [(&'static str, &'static str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
    }

    /// Where the server keeps object `object` of the repository `name` (to damage it).
    pub fn object_path(&self, name: &str, object: &str) -> std::path::PathBuf {
        self.dir.path().join(BUCKET).join(name).join(object)
    }

    /// The files the server stores for the repository `name`, by name within it.
    pub fn objects(&self, name: &str) -> Vec<String> {
        let root = self.dir.path().join(BUCKET).join(name);
        let mut out = Vec::new();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(rel) = path.strip_prefix(&root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
