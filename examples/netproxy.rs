//! The tests' network proxy as a program, for the benchmarks: a remote store on loopback.
//!
//! ```text
//! netproxy --listen PORT --to PORT [--rtt 20ms] [--bandwidth 100MB] [--counts FILE]
//!          [--requests FILE]
//! ```
//!
//! Every byte is delayed by half the round trip each way and each direction is capped at the
//! bandwidth (bytes a second); `--counts` keeps `REQUESTS UP_BYTES DOWN_BYTES` in FILE,
//! rewritten every 100 ms, for the benchmark to read after each step; `--requests` appends each
//! request's line (`GET /bucket/key`) to FILE, to see what a command asked for.

#[path = "../tests/common/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::net::TcpListener;
use std::time::Duration;

fn main() {
    if let Err(e) = run() {
        eprintln!("netproxy: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut to, mut counts, mut lines) = (None, None, None, None);
    let mut shaping = proxy::Shaping::default();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(port(&value)?),
            "--to" => to = Some(port(&value)?),
            "--rtt" => shaping.rtt = millis(&value)?,
            "--bandwidth" => shaping.bytes_per_sec = bytes(&value)?,
            "--counts" => counts = Some(value),
            "--requests" => lines = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let (listen, to) = listen.zip(to).ok_or("--listen and --to are required")?;
    let listener =
        TcpListener::bind(("127.0.0.1", listen)).map_err(|e| format!("port {listen}: {e}"))?;
    let proxy = proxy::Proxy::listen(listener, to);
    proxy.shape(shaping);
    let mut logged = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(file) = &lines {
            let new = proxy.request_lines(logged);
            logged += new.len();
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .map_err(|e| format!("{file}: {e}"))?;
            for line in new {
                std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())
                    .map_err(|e| format!("{file}: {e}"))?;
            }
        }
        if let Some(file) = &counts {
            let line = format!(
                "{} {} {}\n",
                proxy.requests(),
                proxy.upstream_bytes(),
                proxy.downstream_bytes()
            );
            // Replaced whole, never seen half written by a reader (a benchmark step that read
            // the file mid-write counted thousands of requests less than none).
            let fresh = format!("{file}.new");
            std::fs::write(&fresh, line).map_err(|e| format!("{fresh}: {e}"))?;
            std::fs::rename(&fresh, file).map_err(|e| format!("{file}: {e}"))?;
        }
    }
}

fn port(value: &str) -> Result<u16, String> {
    value.parse().map_err(|_| format!("not a port: {value}"))
}

/// `20ms`, `0.5s` or a number of milliseconds.
fn millis(value: &str) -> Result<Duration, String> {
    let bad = || format!("not a duration: {value}");
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1.0)
    } else {
        (value, 1e-3)
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
}

/// `100MB` (a second), `1GB`, `500KB` or a number of bytes.
fn bytes(value: &str) -> Result<u64, String> {
    let units = [("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1.0)];
    let (number, scale) = units
        .iter()
        .find_map(|(unit, scale)| value.strip_suffix(unit).map(|n| (n, *scale)))
        .unwrap_or((value, 1.0));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("not a bandwidth: {value}"))?;
    Ok((n * scale) as u64)
}
