//! An S3 server that lies: an HTTP/1.1 proxy in front of the real test server that rewrites
//! what the server says, as a buggy, lagging or hostile store would. Listings can leave keys out
//! (a store whose listings lag), add a phantom pack of any size, or invent keys without end; a
//! GET can be answered with far more bytes than asked for, whatever its range; a commit can be
//! answered 412, with the object then claiming a terabyte and sending nothing.
//!
//! Every request is forwarded on a connection of its own and every answer closes the client's
//! connection, so each exchange is one request and one response; request headers (and so the
//! signature) pass unchanged.

use parking_lot::Mutex;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// What the store says that is not so; changed while the proxy runs.
#[derive(Clone, Default)]
pub struct Lies {
    /// Listings leave out every key containing one of these.
    pub hide: Vec<String>,
    /// Listings of a prefix containing `data/` add a pack named `ff…ff` of this size.
    pub phantom_pack_size: Option<u64>,
    /// Listings return pages of invented keys, each promising another, without end.
    pub endless_listing: bool,
    /// GETs of keys containing the string are answered with this many bytes, whatever was asked.
    pub long_bodies: Option<(String, u64)>,
    /// Conditional PUTs of keys containing the string are refused (412); HEADs of them claim a
    /// terabyte; GETs of them send their headers and then nothing.
    pub lying_commit: Option<String>,
    /// PUTs of keys containing the string are held, unanswered, until the lie is lifted: a
    /// writer paused at that step, while the test does something else.
    pub hold_puts: Option<String>,
}

/// A lying proxy on its own loopback port.
pub struct Liar {
    pub port: u16,
    lies: Arc<Mutex<Lies>>,
    held: Arc<std::sync::atomic::AtomicU64>,
}

impl Liar {
    /// Starts lying about the server on `target`; at first it tells the truth.
    pub fn start(target: u16) -> Liar {
        let listener = TcpListener::bind("127.0.0.1:0").expect("liar port");
        let port = listener.local_addr().unwrap().port();
        let lies = Arc::new(Mutex::new(Lies::default()));
        let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (shared, counted) = (lies.clone(), held.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (lies, held) = (shared.clone(), counted.clone());
                std::thread::spawn(move || {
                    let _ = exchange(&lies, &held, client, target);
                });
            }
        });
        Liar { port, lies, held }
    }

    /// Requests held so far by [`Lies::hold_puts`].
    pub fn held(&self) -> u64 {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces what the proxy lies about.
    pub fn lie(&self, lies: Lies) {
        *self.lies.lock() = lies;
    }

    /// Tells the truth again.
    pub fn honest(&self) {
        self.lie(Lies::default());
    }
}

/// A request or response head: first line and headers (names in lower case).
struct Head {
    first: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn read(reader: &mut impl BufRead) -> std::io::Result<Option<Head>> {
        let mut first = String::new();
        if reader.read_line(&mut first)? == 0 {
            return Ok(None);
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        Ok(Some(Head {
            first: first.trim_end().to_string(),
            headers,
        }))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body that follows this head: by its length, or chunked.
    fn read_body(&self, reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        if self
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .unwrap_or(0);
                let mut chunk = vec![0u8; size + 2];
                reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = self.header("content-length") {
            body.resize(len.parse().unwrap_or(0), 0);
            reader.read_exact(&mut body)?;
        }
        Ok(body)
    }
}

/// One request from `client`, answered truly or not, then the connection closed.
fn exchange(
    lies: &Mutex<Lies>,
    held: &std::sync::atomic::AtomicU64,
    client: TcpStream,
    target: u16,
) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let Some(request) = Head::read(&mut from_client)? else {
        return Ok(());
    };
    let body = request.read_body(&mut from_client)?;
    let mut parts = request.first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let holds = |lies: &Lies| {
        method == "PUT"
            && lies
                .hold_puts
                .as_ref()
                .is_some_and(|k| path.contains(k.as_str()))
    };
    if holds(&lies.lock()) {
        held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while holds(&lies.lock()) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let lies = lies.lock().clone();
    let listing = method == "GET" && path.contains("list-type=");

    if let Some(key) = &lies.lying_commit
        && path.contains(key.as_str())
        && !listing
    {
        match method.as_str() {
            "PUT" if request.header("if-none-match").is_some() => {
                let error = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>\
                             PreconditionFailed</Code><Message>At least one of the pre-conditions \
                             you specified did not hold</Message></Error>";
                return respond(&mut to_client, "412 Precondition Failed", error.as_bytes());
            }
            "HEAD" | "GET" => {
                write!(
                    to_client,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: \"0\"\r\nlast-modified: Thu, \
                     01 Jan 2026 00:00:00 GMT\r\ncontent-type: application/octet-stream\r\n\r\n",
                    1u64 << 40
                )?;
                to_client.flush()?;
                if method == "GET" {
                    // Headers, then nothing: hold the connection until the client gives up.
                    let _ = to_client.set_read_timeout(Some(Duration::from_secs(600)));
                    let mut byte = [0u8; 1];
                    let _ = from_client.read(&mut byte);
                }
                return Ok(());
            }
            _ => {}
        }
    }
    if let Some((key, len)) = &lies.long_bodies
        && method == "GET"
        && path.contains(key.as_str())
        && !listing
    {
        write!(
            to_client,
            "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\netag: \"0\"\r\nlast-modified: Thu, 01 Jan \
             2026 00:00:00 GMT\r\ncontent-type: application/octet-stream\r\n\r\n"
        )?;
        let zeros = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < *len {
            let n = zeros.len().min((*len - sent) as usize);
            to_client.write_all(&zeros[..n])?;
            sent += n as u64;
        }
        return Ok(());
    }
    if listing && lies.endless_listing {
        return respond(&mut to_client, "200 OK", &endless_page(&path));
    }

    // The truth, fetched, then edited.
    let mut upstream = TcpStream::connect(("127.0.0.1", target))?;
    let _ = upstream.set_nodelay(true);
    write!(upstream, "{}\r\n", request.first)?;
    for (name, value) in &request.headers {
        write!(upstream, "{name}: {value}\r\n")?;
    }
    write!(upstream, "\r\n")?;
    upstream.write_all(&body)?;
    upstream.flush()?;
    let mut from_server = BufReader::new(upstream.try_clone()?);
    let Some(response) = Head::read(&mut from_server)? else {
        return Ok(());
    };
    let mut answer = if method == "HEAD" {
        Vec::new()
    } else {
        response.read_body(&mut from_server)?
    };
    let _ = upstream.shutdown(Shutdown::Both);
    if listing {
        answer = edit_listing(&answer, &path, &lies);
    }
    let status = response.first.split_once(' ').map_or("", |(_, s)| s);
    write!(to_client, "HTTP/1.1 {status}\r\n")?;
    for (name, value) in &response.headers {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            write!(to_client, "{name}: {value}\r\n")?;
        }
    }
    let length = match (method.as_str(), response.header("content-length")) {
        ("HEAD", Some(len)) => len.to_string(),
        _ => answer.len().to_string(),
    };
    write!(
        to_client,
        "content-length: {length}\r\nconnection: close\r\n\r\n"
    )?;
    to_client.write_all(&answer)?;
    to_client.flush()?;
    let _ = to_client.shutdown(Shutdown::Both);
    Ok(())
}

fn respond(client: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        client,
        "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: \
         close\r\n\r\n",
        body.len()
    )?;
    client.write_all(body)?;
    client.flush()
}

/// The value of query parameter `name` in `path`, percent-decoded.
fn query(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))?;
    let mut out = Vec::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&raw[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn contents(key: &str, size: u64) -> String {
    format!(
        "<Contents><Key>{key}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>\
         <ETag>\"0\"</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
    )
}

/// A listing page of 1,000 invented keys that promises another.
fn endless_page(path: &str) -> Vec<u8> {
    let prefix = query(path, "prefix").unwrap_or_default();
    let page: u64 = query(path, "continuation-token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult \
         xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name><Prefix>{prefix}</Prefix>\
         <KeyCount>1000</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>\
         <ContinuationToken>{page}</ContinuationToken>\
         <NextContinuationToken>{}</NextContinuationToken>",
        page + 1
    );
    for i in 0..1000u64 {
        xml.push_str(&contents(&format!("{prefix}{:064x}", page * 1000 + i), 1));
    }
    xml.push_str("</ListBucketResult>");
    xml.into_bytes()
}

/// A true listing with hidden keys left out and the phantom pack added.
fn edit_listing(xml: &[u8], path: &str, lies: &Lies) -> Vec<u8> {
    let text = String::from_utf8_lossy(xml).into_owned();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("<Contents>") {
        let Some(len) = rest[start..].find("</Contents>") else {
            break;
        };
        let end = start + len + "</Contents>".len();
        out.push_str(&rest[..start]);
        let entry = &rest[start..end];
        if !lies.hide.iter().any(|h| entry.contains(h.as_str())) {
            out.push_str(entry);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    let prefix = query(path, "prefix").unwrap_or_default();
    if let Some(size) = lies.phantom_pack_size
        && prefix.contains("data/")
    {
        let phantom = contents(&format!("{prefix}ff/{}", "f".repeat(64)), size);
        match out.find("<Contents>") {
            Some(at) => out.insert_str(at, &phantom),
            None => {
                let at = out.rfind("</ListBucketResult>").unwrap_or(out.len());
                out.insert_str(at, &phantom);
            }
        }
    }
    out.into_bytes()
}
