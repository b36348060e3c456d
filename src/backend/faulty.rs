//! A fault-injecting wrapper for tests: fails writes after a number of them (as a full disk
//! does), fails calls transiently (as a flaky network does), flips bits in or shortens what reads
//! return, and "crashes" at step N (every later call fails, as if the process had died), so tests
//! can prove that every fault becomes a clear error and never a wrong byte or a half-made
//! snapshot.

use crate::backend::{Backend, ObjectInfo};
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What to break.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Writes after this many succeed fail with "no space left on device".
    pub fail_puts_after: Option<u64>,
    /// Reads of names starting with this get one bit flipped (at the middle byte).
    pub flip_bit_in: Option<String>,
    /// Reads of names starting with this return one byte less than asked.
    pub short_read_in: Option<String>,
    /// The next this many calls fail with a transient error (connection reset).
    pub transient_failures: u64,
    /// Faults at random calls.
    pub random: Option<RandomFaults>,
    /// Every call after this many fails: the process died at that step.
    pub crash_after_calls: Option<u64>,
}

/// Faults drawn at random, reproducibly from a seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomFaults {
    /// Seeds the draws.
    pub seed: u64,
    /// Chance per call, in thousandths, of each fault: a transient failure of any call, and for
    /// reads a flipped bit and a short read.
    pub per_mille: u64,
}

/// splitmix64: a well-mixed number from a seed and a counter.
fn draw(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A backend that misbehaves as its plan says.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: Mutex<FaultPlan>,
    puts: AtomicU64,
    calls: AtomicU64,
}

impl FaultyBackend {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        FaultyBackend {
            inner,
            plan: Mutex::new(plan),
            puts: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }

    /// Calls made so far: where a plan's `crash_after_calls` counts from.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Replaces the plan (e.g. to heal the backend between runs).
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock() = plan;
    }

    /// Counts a call and fails it when the plan says so; returns the call's number.
    fn check_call(&self, name: &str) -> Result<u64> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let mut plan = self.plan.lock();
        if plan.crash_after_calls.is_some_and(|limit| n >= limit) {
            return Err(Error::Invalid(format!(
                "simulated crash: the process died before touching {name}"
            )));
        }
        let random_failure = plan
            .random
            .is_some_and(|r| draw(r.seed, n * 3) % 1000 < r.per_mille);
        if plan.transient_failures > 0 || random_failure {
            plan.transient_failures = plan.transient_failures.saturating_sub(1);
            return Err(Error::Storage {
                name: name.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            });
        }
        Ok(n)
    }

    fn check_put(&self, name: &str) -> Result<()> {
        self.check_call(name)?;
        let done = self.puts.fetch_add(1, Ordering::SeqCst);
        match self.plan.lock().fail_puts_after {
            Some(limit) if done >= limit => Err(Error::Storage {
                name: name.to_string(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            }),
            _ => Ok(()),
        }
    }
}

impl Backend for FaultyBackend {
    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>> {
        let n = self.check_call(name)?;
        let mut data = self.inner.get(name, range)?;
        let plan = self.plan.lock().clone();
        let chance = |salt: u64| {
            plan.random
                .is_some_and(|r| draw(r.seed, n * 3 + salt) % 1000 < r.per_mille)
        };
        if plan.flip_bit_in.is_some_and(|p| name.starts_with(&p)) && !data.is_empty() {
            let middle = data.len() / 2;
            data[middle] ^= 0x04;
        }
        if chance(1) && !data.is_empty() {
            let at = (draw(n, 7) % data.len() as u64) as usize;
            data[at] ^= 1 << (n % 8);
        }
        if plan.short_read_in.is_some_and(|p| name.starts_with(&p)) || chance(2) {
            data.pop();
        }
        Ok(data)
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        self.check_put(name)?;
        self.inner.put(name, data)
    }

    fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<bool> {
        self.check_put(name)?;
        self.inner.put_if_absent(name, data)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.check_call(prefix)?;
        self.inner.list(prefix)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.check_call(name)?;
        self.inner.delete(name)
    }

    fn stat(&self, name: &str) -> Result<u64> {
        self.check_call(name)?;
        self.inner.stat(name)
    }

    fn location(&self) -> String {
        format!("faulty({})", self.inner.location())
    }
}
