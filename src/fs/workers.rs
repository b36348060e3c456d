//! The threads that answer reads.
//!
//! A plain queue and threads that sleep on it. rayon's pool was the first choice, but its idle
//! workers spin (`sched_yield`) before sleeping: a `cp -a` of many small files wakes them once per
//! file, and the spinning took a quarter of the machine's time away from the session threads.

use crossbeam_channel::{Sender, unbounded};

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the worker threads; clones share them. The threads end when every handle is gone.
#[derive(Clone)]
pub struct Workers {
    jobs: Sender<Job>,
}

impl Workers {
    /// Starts `count` threads named `<name>-<n>`.
    pub fn start(count: usize, name: &str) -> std::io::Result<Workers> {
        let (jobs, queue) = unbounded::<Job>();
        for n in 0..count.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    for job in queue {
                        job();
                    }
                })?;
        }
        Ok(Workers { jobs })
    }

    /// Runs `job` on a worker.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        // Sending fails only when no worker is left, which the handle itself prevents.
        let _ = self.jobs.send(Box::new(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs() {
        let workers = Workers::start(3, "test").unwrap();
        let (done, results) = unbounded();
        for i in 0..100 {
            let done = done.clone();
            workers.spawn(move || done.send(i).unwrap());
        }
        let mut got: Vec<i32> = results.iter().take(100).collect();
        got.sort();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}
