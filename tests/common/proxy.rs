//! A TCP proxy between cairn and the S3 server that injects network faults: it counts the bytes
//! sent upstream (what cairn uploads), and on command cuts every connection and refuses new
//! ones (an outage), refuses connections for a while, stalls requests, or flips one bit in the
//! body of the next large upload.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Faults to inject, changed while the proxy runs.
#[derive(Default)]
struct Faults {
    /// Upstream bytes after which the network goes down (every connection cut, new ones
    /// refused) until [`Proxy::restore`].
    cut_after: Option<u64>,
    /// New connections are refused until then.
    refuse_until: Option<Instant>,
    /// Upstream data is held until then.
    stall_until: Option<Instant>,
    /// Flip one bit of the next connection that has sent this many bytes (deep in a body).
    flip_after: Option<u64>,
    /// Cut each connection once it has sent this many bytes, this many times.
    resets: Option<(u64, u32)>,
}

struct Shared {
    upstream: AtomicU64,
    downstream: AtomicU64,
    down: AtomicBool,
    flips: AtomicU64,
    faults: Mutex<Faults>,
}

/// A proxy on its own loopback port, forwarding to `target`.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: AtomicU64::new(0),
            downstream: AtomicU64::new(0),
            down: AtomicBool::new(false),
            flips: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let refused = {
                    let faults = accepting.faults.lock();
                    accepting.down.load(Ordering::SeqCst)
                        || faults.refuse_until.is_some_and(|t| Instant::now() < t)
                };
                if refused {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let shared = accepting.clone();
                std::thread::spawn(move || serve(shared, client, server));
            }
        });
        Proxy { port, shared }
    }

    /// Bytes forwarded to the server so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.shared.upstream.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the server so far.
    pub fn downstream_bytes(&self) -> u64 {
        self.shared.downstream.load(Ordering::SeqCst)
    }

    /// Bits flipped so far.
    pub fn flips(&self) -> u64 {
        self.shared.flips.load(Ordering::SeqCst)
    }

    /// The network goes down once `bytes` more have gone upstream.
    pub fn cut_after(&self, bytes: u64) {
        self.shared.faults.lock().cut_after = Some(self.upstream_bytes() + bytes);
    }

    /// The network is back, faults cleared.
    pub fn restore(&self) {
        *self.shared.faults.lock() = Faults::default();
        self.shared.down.store(false, Ordering::SeqCst);
    }

    pub fn refuse_for(&self, duration: Duration) {
        self.shared.faults.lock().refuse_until = Some(Instant::now() + duration);
    }

    pub fn stall_for(&self, duration: Duration) {
        self.shared.faults.lock().stall_until = Some(Instant::now() + duration);
    }

    /// Flips a bit in the next connection that sends more than `bytes` (in one request body).
    pub fn flip_one_bit_after(&self, bytes: u64) {
        self.shared.faults.lock().flip_after = Some(bytes);
    }

    /// Cuts connections mid-transfer, each after `bytes`, `times` times.
    pub fn reset_connections(&self, bytes: u64, times: u32) {
        self.shared.faults.lock().resets = Some((bytes, times));
    }
}

fn serve(shared: Arc<Shared>, mut client: TcpStream, mut server: TcpStream) {
    let (Ok(mut client_w), Ok(mut server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (c2, s2) = (client.try_clone().ok(), server.try_clone().ok());
    let down = shared.clone();
    // Server to client: copied as is, until either side closes or the network goes down.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = server_r.read(&mut buf) {
            if n == 0 || down.down.load(Ordering::SeqCst) || client_w.write_all(&buf[..n]).is_err()
            {
                break;
            }
            down.downstream.fetch_add(n as u64, Ordering::SeqCst);
        }
        let _ = client_w.shutdown(Shutdown::Both);
        if let Some(s) = s2 {
            let _ = s.shutdown(Shutdown::Both);
        }
    });
    // Client to server: where the faults are.
    let mut buf = vec![0u8; 64 << 10];
    let mut sent: u64 = 0;
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let stall = shared.faults.lock().stall_until;
        if let Some(until) = stall {
            let now = Instant::now();
            if now < until {
                std::thread::sleep(until - now);
            }
        }
        {
            let mut faults = shared.faults.lock();
            if let Some(at) = faults.flip_after
                && sent + n as u64 > at
            {
                let i = (at.saturating_sub(sent) as usize).min(n - 1);
                buf[i] ^= 0x10;
                faults.flip_after = None;
                shared.flips.fetch_add(1, Ordering::SeqCst);
            }
            if let Some((at, times)) = faults.resets
                && times > 0
                && sent + n as u64 > at
            {
                faults.resets = (times > 1).then_some((at, times - 1));
                break;
            }
        }
        let total = shared.upstream.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let cut = shared.faults.lock().cut_after.is_some_and(|at| total > at);
        if cut {
            shared.down.store(true, Ordering::SeqCst);
        }
        if shared.down.load(Ordering::SeqCst) || server.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = server.shutdown(Shutdown::Both);
    if let Some(c) = c2 {
        let _ = c.shutdown(Shutdown::Both);
    }
}
