//! The S3 backend: a repository in a bucket of any S3-compatible store (AWS, MinIO, Ceph,
//! Garage, Backblaze, Wasabi), through opendal's S3 service, the library rustic uses.
//!
//! Each call runs on a small tokio runtime owned by the backend, so the synchronous
//! [`Backend`] callers (uploader threads, fetch workers) each hold one request in flight: the
//! number of connections is the number of calling threads. Errors keep their meaning: a
//! missing object is [`Error::NotFound`], a network or server failure a transient storage error
//! the retry layer tries again, a refusal (credentials, bucket) a permanent one.
//!
//! Nothing damaged on the wire is stored silently: every upload carries `Content-MD5`, which
//! the server checks before it answers, and every `put` then reads the stored object's length
//! and ETag back and compares them with what was sent (a mismatch is a transient error, so the
//! upload is repeated). `put_if_absent` is a conditional PUT (`If-None-Match: *`).

use crate::backend::{Backend, ObjectInfo};
use crate::digest::sha256;
use crate::error::{Error, Result};
use futures::TryStreamExt;
use md5::{Digest, Md5};
use opendal::{ErrorKind as DalKind, Operator};
use std::io::ErrorKind;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod credentials;
mod errors;
mod location;

pub use credentials::S3Credentials;
pub use location::{LocationError, S3Location};

/// S3 settings a location's URL does not carry (`--s3-region`, `--s3-virtual-host`).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// The region to sign for when the location's host names none.
    pub region: Option<String>,
    /// Address the bucket as a host name (`BUCKET.HOST`), for stores that require it.
    pub virtual_host: bool,
}

/// How long one call may take before it counts as a (transient) failure: a stalled connection
/// must end in an error the retry layer sees, never in a hang. A call with a body gets `call`
/// plus the time its bytes take at [`S3Timeouts::MIN_RATE`], so a 16 MiB pack on a slow uplink
/// is not cut off while it is still moving. Those bytes are what cairn sends, the range it
/// asked for, or the size a whole file's kind allows at most (the size the store states, only
/// when smaller); a read that receives nothing for `call` ends too, so no answer stretches a
/// wait. Each attempt has its own deadline; the retry layer makes at most `init --retries`
/// more.
#[derive(Clone, Copy, Debug)]
pub struct S3Timeouts {
    /// A call without a body (stat, delete, a listing page), the base of one with a body, and
    /// the longest a body may stall.
    pub call: Duration,
}

impl S3Timeouts {
    /// Bytes per second a transfer is allowed to be as slow as (256 KiB/s, 2 Mbit/s).
    pub const MIN_RATE: u64 = 256 << 10;

    /// 60 s, or `CAIRN_IO_TIMEOUT_SECS` (the fault tests stall connections for seconds, not
    /// minutes).
    pub fn configured() -> S3Timeouts {
        let secs = std::env::var("CAIRN_IO_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(60);
        S3Timeouts {
            call: Duration::from_secs(secs.max(1)),
        }
    }

    /// The time allowed for a call moving `bytes`.
    pub fn for_bytes(&self, bytes: u64) -> Duration {
        self.call + Duration::from_secs(bytes / Self::MIN_RATE)
    }
}

/// A repository in an S3 bucket.
pub struct S3Backend {
    runtime: tokio::runtime::Runtime,
    operator: Operator,
    location: S3Location,
    /// The region requests are signed for.
    region: String,
    timeouts: S3Timeouts,
    /// Set once a stored object's ETag is found not to be its MD5 (SSE-KMS and SSE-C buckets):
    /// from then on only the length is compared (the server has checked Content-MD5).
    etag_not_md5: AtomicBool,
    /// Set once a failed HEAD has been asked again as a listing (see [`S3Backend::explained`]).
    probed: AtomicBool,
}

impl S3Backend {
    /// A backend for `location`. Addressing is path-style, which every S3-compatible server
    /// accepts, unless the location asks for virtual-host style. Requests are signed for the
    /// region the location's host names, else for `credentials.region`.
    pub fn new(
        location: S3Location,
        credentials: S3Credentials,
        timeouts: S3Timeouts,
    ) -> Result<S3Backend> {
        opendal::install_default();
        let region = location
            .region
            .clone()
            .unwrap_or_else(|| credentials.region.clone());
        let mut builder = opendal::services::S3::default()
            .endpoint(&location.endpoint)
            .bucket(&location.bucket)
            .root(&format!("/{}", location.prefix))
            .region(&region)
            .checksum_algorithm("md5");
        if location.virtual_host {
            if location.bucket.contains('.') {
                return Err(Error::Invalid(format!(
                    "{location}: a bucket name with dots cannot be a host name: address it \
                     path-style (without --s3-virtual-host)"
                )));
            }
            builder = builder.enable_virtual_host_style();
        }
        if let Some((id, secret)) = &credentials.keys {
            builder = builder.access_key_id(id).secret_access_key(secret);
        }
        let invalid = |e: opendal::Error| Error::Invalid(format!("{location}: {e}"));
        let operator = Operator::new(builder).map_err(invalid)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Invalid(format!("starting the S3 client: {e}")))?;
        Ok(S3Backend {
            runtime,
            operator,
            location,
            region,
            timeouts,
            etag_not_md5: AtomicBool::new(false),
            probed: AtomicBool::new(false),
        })
    }

    /// Runs one opendal call moving about `bytes` to completion on the backend's runtime, or
    /// ends it with a temporary error when it takes longer than its share of time.
    fn run<T>(
        &self,
        bytes: u64,
        call: impl Future<Output = opendal::Result<T>>,
    ) -> opendal::Result<T> {
        let limit = self.timeouts.for_bytes(bytes);
        self.runtime.block_on(async {
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(opendal::Error::new(
                    DalKind::Unexpected,
                    format!("no answer within {} s", limit.as_secs()),
                )
                .set_temporary()),
            }
        })
    }

    /// Every entry under `dir`, each step of the listing (a page, at most) within the time of
    /// one call: a large directory takes as many steps as it needs, a stalled one ends, and one
    /// that lists more than [`max_listed`] objects (a server inventing keys without end) is
    /// refused.
    ///
    /// A listing as a whole must also keep moving: past its first call it may take a second per
    /// [`MIN_LISTED_PER_SEC`] entries received, so a server that sends a key a page, each just
    /// inside the timeout, cannot hold a command for months.
    fn list_paged(&self, dir: &str) -> opendal::Result<Vec<ObjectInfo>> {
        let started = std::time::Instant::now();
        let mut lister = self.run(0, async {
            self.operator.lister_with(dir).recursive(true).await
        })?;
        let most = max_listed();
        let refused = |what: String| opendal::Error::new(DalKind::Unexpected, what);
        let mut out = Vec::new();
        while let Some(entry) = self.run(0, lister.try_next())? {
            if out.len() >= most {
                return Err(refused(format!(
                    "the store lists more than {most} objects under {dir}: refused (set \
                     CAIRN_MAX_LISTED for a larger repository)"
                )));
            }
            let allowed =
                self.timeouts.call + Duration::from_secs(out.len() as u64 / MIN_LISTED_PER_SEC);
            if started.elapsed() > allowed {
                return Err(refused(format!(
                    "listing {dir} is slower than {MIN_LISTED_PER_SEC} objects a second: the \
                     store stalls"
                ))
                .set_temporary());
            }
            if entry.metadata().is_file() {
                out.push(ObjectInfo {
                    size: entry.metadata().content_length(),
                    name: entry.path().trim_start_matches('/').to_string(),
                });
            }
        }
        Ok(out)
    }

    /// Reads `range` of `name`, or all of it for `None`, refusing more than `limit` bytes:
    /// the body is read as it arrives and the read ends, with a one-line error, the moment the
    /// server sends more than that (a GET that ignores its range, a body far longer than
    /// asked), so memory follows what cairn asked for, never what the server sends. The whole
    /// read has one deadline, set by `limit`, and a body that stalls for [`S3Timeouts::call`]
    /// ends it whatever the deadline.
    fn read_capped(&self, name: &str, range: Option<Range<u64>>, limit: u64) -> Result<Vec<u8>> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeouts.for_bytes(limit);
        let stall = self.timeouts.call;
        let late = |what: &str| {
            self.storage_error(
                name,
                opendal::Error::new(DalKind::Unexpected, what.to_string()).set_temporary(),
            )
        };
        self.runtime.block_on(async {
            let reader = tokio::time::timeout_at(deadline.min(started + stall), async {
                self.operator.reader_with(name).await
            })
            .await
            .map_err(|_| late("no answer in time"))?
            .map_err(|e| self.storage_error(name, e))?;
            let body = match range {
                Some(range) => reader.into_bytes_stream(range).await,
                None => reader.into_bytes_stream(..).await,
            }
            .map_err(|e| self.storage_error(name, e))?;
            futures::pin_mut!(body);
            let mut out = Vec::new();
            loop {
                let wait = deadline.min(tokio::time::Instant::now() + stall);
                let next = tokio::time::timeout_at(wait, futures::StreamExt::next(&mut body))
                    .await
                    .map_err(|_| {
                        late(&format!(
                            "body stalled or slower than {} KiB/s",
                            S3Timeouts::MIN_RATE >> 10
                        ))
                    })?;
                match next {
                    None => return Ok(out),
                    Some(Err(e)) => return Err(self.body_error(name, e)),
                    Some(Ok(bytes)) => {
                        if (out.len() + bytes.len()) as u64 > limit {
                            return Err(Error::Storage {
                                name: name.to_string(),
                                source: std::io::Error::new(
                                    ErrorKind::InvalidData,
                                    format!(
                                        "the server sent more than the {limit} bytes asked for; \
                                         read stopped"
                                    ),
                                ),
                            });
                        }
                        out.extend_from_slice(&bytes);
                    }
                }
            }
        })
    }

    /// Reads back what a put stored and compares its length and ETag (the MD5 of the body for a
    /// single-part upload; other ETag forms are not digests and only the length is compared).
    fn confirm_stored(&self, name: &str, data: &[u8]) -> Result<()> {
        let meta = self
            .run(0, self.operator.stat(name))
            .map_err(|e| self.storage_error(name, e))?;
        if meta.content_length() != data.len() as u64 {
            let what = format!(
                "stored {} bytes, sent {}",
                meta.content_length(),
                data.len()
            );
            return Err(wire_damage(name, what));
        }
        let Some(etag) = meta
            .etag()
            .map(|t| t.trim_matches('"').to_ascii_lowercase())
        else {
            return Ok(());
        };
        let looks_like_md5 = etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit());
        if !looks_like_md5 || self.etag_not_md5.load(Ordering::Relaxed) {
            return Ok(());
        }
        let sent = hex::encode(Md5::digest(data));
        if etag == sent {
            return Ok(());
        }
        // Either the bytes differ, or this store's ETags are not MD5s (encrypted buckets): the
        // stored object itself decides, once.
        let stored = self.read_capped(name, None, data.len() as u64 + 1)?;
        if stored == data {
            tracing::info!(
                "{}: ETags are not MD5 digests here; comparing lengths",
                self.location
            );
            self.etag_not_md5.store(true, Ordering::Relaxed);
            return Ok(());
        }
        Err(wire_damage(name, format!("stored MD5 {etag}, sent {sent}")))
    }
}

/// Entries a second a listing must average past its first call (see `list_paged`).
const MIN_LISTED_PER_SEC: u64 = 100;

/// Most objects one listing may return: 10 million (about a gigabyte of names), a repository
/// of 150 TB in 16 MiB packs; `CAIRN_MAX_LISTED` sets another bound.
fn max_listed() -> usize {
    std::env::var("CAIRN_MAX_LISTED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000)
}

/// A stored object that differs from what was sent: transient, so the put is repeated.
fn wire_damage(name: &str, what: String) -> Error {
    Error::Storage {
        name: name.to_string(),
        source: std::io::Error::other(format!("damaged in transfer: {what}")),
    }
}

/// The most bytes a whole-object read takes: the largest limit of any kind of repository file
/// (index and garbage files, docs/FORMAT.md).
pub const MAX_WHOLE_READ: u64 = 256 << 20;

/// Longest store error message shown.
const MAX_MESSAGE: usize = 300;

fn short_read(name: &str, got: usize, wanted: u64) -> Error {
    Error::Storage {
        name: name.to_string(),
        source: std::io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("read {got} of {wanted} bytes"),
        ),
    }
}

impl Backend for S3Backend {
    /// A whole object is read as [`Backend::get_bounded`] with the largest limit any kind has
    /// ([`MAX_WHOLE_READ`]); a range is read stopping at its length.
    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let Some(range) = range else {
            return self.get_bounded(name, MAX_WHOLE_READ);
        };
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = range.end - range.start;
        let bytes = self.read_capped(name, Some(range), wanted)?;
        if bytes.len() as u64 != wanted {
            return Err(short_read(name, bytes.len(), wanted));
        }
        Ok(bytes)
    }

    fn get_bounded(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        // One request, not a size asked first: the body is read as it arrives and the read
        // stops the moment it passes `limit`, so a larger object costs at most `limit` bytes
        // and never more memory; the time allowed follows `limit`, and a stall ends it sooner.
        match self.read_capped(name, None, limit) {
            Err(Error::Storage { source, .. }) if source.kind() == ErrorKind::InvalidData => {
                Err(Error::corrupt(
                    name,
                    format!("more than the {limit} bytes such a file can hold: read stopped"),
                ))
            }
            other => other,
        }
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.run(data.len() as u64, self.operator.write(name, data.to_vec()))
            .map_err(|e| self.storage_error(name, e))?;
        self.confirm_stored(name, data)
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool> {
        let written = self.run(data.len() as u64, async {
            self.operator
                .write_with(name, data.to_vec())
                .if_not_exists(true)
                .await
        });
        match written {
            Ok(_) => self.confirm_stored(name, data).map(|()| true),
            // The name is taken. When the taker is this very call (an earlier attempt stored it
            // and its answer was lost), the stored bytes are ours: that is a success, not a
            // conflict, or a retried commit would report a snapshot it did write as not written.
            // Only as many bytes as were sent (and one more) are read back: a longer object is
            // someone else's.
            Err(e) if e.kind() == DalKind::ConditionNotMatch => {
                let stored = match self.read_capped(name, None, data.len() as u64 + 1) {
                    Err(Error::Storage { source, .. })
                        if source.kind() == ErrorKind::InvalidData =>
                    {
                        return Ok(false);
                    }
                    other => other?,
                };
                Ok(stored == data)
            }
            // The server checked the condition (the name was free), then found the body
            // damaged; a server that stores before it checks (s3s-fs) may now hold damaged
            // bytes under the name, which would make the retry a "conflict". When the name is
            // the hash of the content (snapshots) and what is stored does not hash to it, it is
            // such a leftover and is removed; anything else is left as it is.
            Err(e) if e.message().contains("BadDigest") => {
                let error = self.storage_error(name, e);
                let id = name.rsplit('/').next().unwrap_or_default();
                if id.len() == 64
                    && let Ok(stored) = self.read_capped(name, None, data.len() as u64)
                    && hex::encode(sha256(&stored)) != id
                {
                    let _ = self.delete(name);
                }
                Err(error)
            }
            Err(e) => Err(self.storage_error(name, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        let mut out = match self.list_paged(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == DalKind::NotFound => Vec::new(),
            Err(e) => return Err(self.storage_error(prefix, e)),
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self.run(0, self.operator.delete(name)) {
            Err(e) if e.kind() != DalKind::NotFound => Err(self.storage_error(name, e)),
            _ => Ok(()),
        }
    }

    fn stat(&self, name: &str) -> Result<u64> {
        self.run(0, self.operator.stat(name))
            .map(|meta| meta.content_length())
            .map_err(|e| self.storage_error(name, self.explained(e)))
    }

    fn location(&self) -> String {
        self.location.to_string()
    }
}
