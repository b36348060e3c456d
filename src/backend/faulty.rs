//! A fault-injecting wrapper for tests: fails writes after a number of them (as a full disk
//! does) and flips bits in or shortens what reads return, so tests can prove
//! that every fault becomes a clear error and never a wrong byte or a half-made snapshot.

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
}

/// A backend that misbehaves as its plan says.
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: Mutex<FaultPlan>,
    puts: AtomicU64,
}

impl FaultyBackend {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Self {
        FaultyBackend {
            inner,
            plan: Mutex::new(plan),
            puts: AtomicU64::new(0),
        }
    }

    /// Replaces the plan (e.g. to heal the backend between runs).
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock() = plan;
    }

    fn check_put(&self, name: &str) -> Result<()> {
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
        let mut data = self.inner.get(name, range)?;
        let plan = self.plan.lock().clone();
        if plan.flip_bit_in.is_some_and(|p| name.starts_with(&p)) && !data.is_empty() {
            let middle = data.len() / 2;
            data[middle] ^= 0x04;
        }
        if plan.short_read_in.is_some_and(|p| name.starts_with(&p)) {
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
        self.inner.list(prefix)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }

    fn stat(&self, name: &str) -> Result<u64> {
        self.inner.stat(name)
    }

    fn location(&self) -> String {
        format!("faulty({})", self.inner.location())
    }
}
