//! The packer's sealer threads: blobs hashed by the producers are compressed and encrypted
//! here, their plaintext bounded in flight ([`crate::ingest::IngestLimits::sealing_bytes`]).

use crate::error::{Error, Result};
use crate::repo::ids::{BlobId, BlobKind};
use crate::repo::witness::Witness;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Gives a sealer job's bytes back when dropped, also while unwinding from a panic in its
/// sealing (a producer or `locate` would otherwise wait for them for ever).
struct Releasing<'a>(&'a InFlight, usize);

impl Drop for Releasing<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// One blob waiting for a sealer thread.
pub struct SealJob {
    /// Data or tree.
    pub kind: BlobKind,
    /// Its id.
    pub id: BlobId,
    /// What was noted while its id was computed.
    pub witness: Witness,
    /// Its plaintext.
    pub plaintext: Vec<u8>,
}

/// Plaintext bytes handed to the sealer threads and not yet in a pack: bounded, and awaited
/// when a blob must be readable (locate) or the job ends.
#[derive(Default)]
struct InFlight {
    bytes: Mutex<usize>,
    changed: Condvar,
}

impl InFlight {
    /// Waits until `len` more bytes fit under `limit` (a blob larger than the limit waits for an
    /// empty queue rather than forever), then counts them.
    fn acquire(&self, len: usize, limit: usize) {
        let mut bytes = self.bytes.lock();
        while *bytes > 0 && *bytes + len > limit {
            self.changed.wait(&mut bytes);
        }
        *bytes += len;
    }

    fn release(&self, len: usize) {
        *self.bytes.lock() -= len;
        self.changed.notify_all();
    }

    fn wait_idle(&self) {
        let mut bytes = self.bytes.lock();
        while *bytes > 0 {
            self.changed.wait(&mut bytes);
        }
    }
}

/// Background threads that compress and encrypt blobs for [`Packer::add`](super::packer::Packer::add).
pub struct Sealers {
    jobs: Option<Sender<SealJob>>,
    threads: Vec<JoinHandle<()>>,
    in_flight: Arc<InFlight>,
    limit: usize,
}

impl Sealers {
    /// Starts `count` threads that hand each job to `seal`; a job's bytes count as in flight
    /// until `seal` returns (or unwinds).
    pub fn start(
        count: usize,
        limit: usize,
        seal: impl Fn(SealJob) + Clone + Send + 'static,
    ) -> Sealers {
        let (tx, rx): (Sender<SealJob>, Receiver<SealJob>) = crossbeam_channel::unbounded();
        let in_flight = Arc::new(InFlight::default());
        let threads = (0..count)
            .map(|_| {
                let rx = rx.clone();
                let seal = seal.clone();
                let in_flight = in_flight.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        let _releasing = Releasing(&in_flight, job.plaintext.len());
                        seal(job);
                    }
                })
            })
            .collect();
        Sealers {
            jobs: Some(tx),
            threads,
            in_flight,
            limit,
        }
    }

    /// Waits until every queued job is sealed.
    pub fn wait_idle(&self) {
        self.in_flight.wait_idle();
    }

    /// Queues one job, waiting while the bytes in flight are over the limit.
    pub fn submit(&self, job: SealJob) -> Result<()> {
        let len = job.plaintext.len();
        self.in_flight.acquire(len, self.limit);
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.in_flight.release(len);
            return Err(Error::Invalid("sealer threads stopped".into()));
        }
        Ok(())
    }

    /// Seals what is queued and stops the threads.
    pub fn stop(&mut self) -> bool {
        drop(self.jobs.take());
        let mut clean = true;
        for handle in self.threads.drain(..) {
            clean &= handle.join().is_ok();
        }
        clean
    }
}
