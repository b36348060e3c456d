//! A TCP proxy between cairn and the S3 server that makes loopback behave like a remote store
//! and injects network faults. It delays every byte by half a round trip each way and caps the
//! bandwidth each way ([`Proxy::shape`]), counts the bytes and the HTTP requests that pass
//! (with each request's line, to see what a command asked for), and on command cuts every
//! connection and refuses new ones (an outage), refuses connections for a while, stalls
//! requests, or flips one bit in the body of the next large upload.
//!
//! The benchmarks run the same proxy as a program: `cargo run --release --example netproxy`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
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

/// How the link behaves: a round trip's delay and each direction's bandwidth.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shaping {
    /// Every byte reaches the other side half of this after it was sent.
    pub rtt: Duration,
    /// Bytes per second each way, shared by every connection; 0 for no cap.
    pub bytes_per_sec: u64,
}

struct Shared {
    upstream: AtomicU64,
    downstream: AtomicU64,
    down: AtomicBool,
    flips: AtomicU64,
    faults: Mutex<Faults>,
    shaping: Mutex<Shaping>,
    /// When each direction's link is next free to send ([`Shaping::bytes_per_sec`]): upstream,
    /// downstream.
    link_free: [Mutex<Instant>; 2],
    /// The request line (`GET /bucket/key`) of every HTTP request sent upstream.
    requests: Mutex<Vec<String>>,
}

/// A proxy on its own loopback port, forwarding to `target`.
pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to port `target` without delay.
    pub fn start(target: u16) -> Proxy {
        Proxy::listen(
            TcpListener::bind("127.0.0.1:0").expect("proxy port"),
            target,
        )
    }

    /// A proxy taking connections from `listener`, forwarding to port `target`.
    pub fn listen(listener: TcpListener, target: u16) -> Proxy {
        let port = listener.local_addr().expect("a bound listener").port();
        let shared = Arc::new(Shared {
            upstream: AtomicU64::new(0),
            downstream: AtomicU64::new(0),
            down: AtomicBool::new(false),
            flips: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
            shaping: Mutex::new(Shaping::default()),
            link_free: [Mutex::new(Instant::now()), Mutex::new(Instant::now())],
            requests: Mutex::new(Vec::new()),
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

    /// From now on the link delays and caps as `shaping` says.
    pub fn shape(&self, shaping: Shaping) {
        *self.shared.shaping.lock() = shaping;
    }

    /// HTTP requests sent upstream so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.lock().len()
    }

    /// The request lines (`GET /bucket/prefix/data/…`) sent upstream since the `from`th.
    pub fn request_lines(&self, from: usize) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .get(from..)
            .unwrap_or_default()
            .to_vec()
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

fn serve(shared: Arc<Shared>, mut client: TcpStream, server: TcpStream) {
    let (Ok(client_w), Ok(mut server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let to_client = Link::start(shared.clone(), client_w, Direction::Down);
    let to_server = Link::start(shared.clone(), server, Direction::Up);
    let down = shared.clone();
    // Server to client: copied as is, until either side closes or the network goes down.
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = server_r.read(&mut buf) {
            if n == 0 || down.down.load(Ordering::SeqCst) || !to_client.send(&buf[..n]) {
                break;
            }
            down.downstream.fetch_add(n as u64, Ordering::SeqCst);
        }
    });
    // Client to server: where the faults are.
    let mut buf = vec![0u8; 64 << 10];
    let mut sent: u64 = 0;
    let mut requests = RequestCounter::default();
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
        if shared.down.load(Ordering::SeqCst) {
            break;
        }
        requests.feed(&buf[..n], &shared.requests);
        if !to_server.send(&buf[..n]) {
            break;
        }
        sent += n as u64;
    }
    // Dropping the link ends it once what it holds is delivered (or the network is down).
    drop(to_server);
    if shared.down.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Up = 0,
    Down = 1,
}

/// One direction of one connection: bytes handed to it are written to `out` half a round trip
/// later, no faster than the direction's bandwidth, in order.
struct Link {
    queue: Sender<(Instant, Vec<u8>)>,
}

impl Link {
    fn start(shared: Arc<Shared>, out: TcpStream, direction: Direction) -> Link {
        let (queue, queued) = unbounded();
        std::thread::spawn(move || deliver(&shared, out, direction, &queued));
        Link { queue }
    }

    /// Queues `bytes`; false once the other side is gone.
    fn send(&self, bytes: &[u8]) -> bool {
        self.queue.send((Instant::now(), bytes.to_vec())).is_ok()
    }
}

/// A link's thread: delays, paces and writes what is queued; when the queue ends (or a write
/// fails, or the network goes down) shuts the connection down so both ends see it closed.
fn deliver(
    shared: &Shared,
    mut out: TcpStream,
    direction: Direction,
    queued: &Receiver<(Instant, Vec<u8>)>,
) {
    for (sent_at, bytes) in queued {
        let shaping = *shared.shaping.lock();
        let due = sent_at + shaping.rtt / 2;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if shaping.bytes_per_sec > 0 {
            let takes = Duration::from_secs_f64(bytes.len() as f64 / shaping.bytes_per_sec as f64);
            let done = {
                let mut free = shared.link_free[direction as usize].lock();
                *free = (*free).max(Instant::now()) + takes;
                *free
            };
            let now = Instant::now();
            if done > now {
                std::thread::sleep(done - now);
            }
        }
        if shared.down.load(Ordering::SeqCst) || out.write_all(&bytes).is_err() {
            break;
        }
    }
    let _ = out.shutdown(Shutdown::Both);
}

/// Finds where each HTTP/1.1 request starts in the bytes a connection sends: after the head
/// (up to the blank line) come `Content-Length` bytes of body.
#[derive(Default)]
struct RequestCounter {
    head: Vec<u8>,
    body_left: u64,
}

impl RequestCounter {
    fn feed(&mut self, mut bytes: &[u8], requests: &Mutex<Vec<String>>) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = (self.body_left as usize).min(bytes.len());
                self.body_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let before = self.head.len();
            self.head.extend_from_slice(bytes);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                // Not a head after all (a body sent in chunks): wait for the next one.
                if self.head.len() > 64 << 10 {
                    self.head.clear();
                }
                return;
            };
            let head = String::from_utf8_lossy(&self.head[..end]).to_string();
            let consumed = end + 4 - before;
            self.head.clear();
            bytes = &bytes[consumed..];
            let mut lines = head.lines();
            let line = lines.next().unwrap_or_default();
            requests
                .lock()
                .push(line.rsplit_once(' ').map_or(line, |(l, _)| l).to_string());
            self.body_left = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
}
