//! The threads that answer reads.
//!
//! Two plain queues and threads that sleep on them: reads someone waits for, and work done
//! ahead of need (prefetch), taken only when no read waits. rayon's pool was the first choice,
//! but its idle workers spin (`sched_yield`) before sleeping: a `cp -a` of many small files
//! wakes them once per file, and the spinning took a quarter of the machine's time away from the
//! session threads.

use crossbeam_channel::{Receiver, Sender, select_biased, unbounded};

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the worker threads; clones share them. The threads end when every handle is gone.
#[derive(Clone)]
pub struct Workers {
    jobs: Sender<Job>,
    ahead: Sender<Job>,
}

impl Workers {
    /// Starts `count` threads named `<name>-<n>`.
    pub fn start(count: usize, name: &str) -> std::io::Result<Workers> {
        let (jobs, job_queue) = unbounded::<Job>();
        let (ahead, ahead_queue) = unbounded::<Job>();
        for n in 0..count.max(1) {
            let (job_queue, ahead_queue) = (job_queue.clone(), ahead_queue.clone());
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&job_queue, &ahead_queue))?;
        }
        Ok(Workers { jobs, ahead })
    }

    /// Runs `job` on a worker, before any job queued with [`Workers::spawn_ahead`].
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        // Sending fails only when no worker is left, which the handle itself prevents.
        let _ = self.jobs.send(Box::new(job));
    }

    /// Runs `job` on a worker when no job of [`Workers::spawn`] waits.
    pub fn spawn_ahead(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.ahead.send(Box::new(job));
    }
}

/// A worker's loop: urgent jobs first, then jobs ahead of need; ends when the handles are gone.
fn work(jobs: &Receiver<Job>, ahead: &Receiver<Job>) {
    loop {
        let job = select_biased! {
            recv(jobs) -> job => job,
            recv(ahead) -> job => job,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
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

    #[test]
    fn waiting_reads_go_before_work_ahead() {
        let workers = Workers::start(1, "test").unwrap();
        let (gate, opened) = unbounded::<()>();
        let (done, order) = unbounded();
        // Hold the only worker until both kinds are queued.
        workers.spawn(move || opened.recv().unwrap());
        for i in 0..3 {
            let done = done.clone();
            workers.spawn_ahead(move || done.send(("ahead", i)).unwrap());
        }
        for i in 0..3 {
            let done = done.clone();
            workers.spawn(move || done.send(("read", i)).unwrap());
        }
        gate.send(()).unwrap();
        let got: Vec<_> = order.iter().take(6).collect();
        assert_eq!(
            got,
            [
                ("read", 0),
                ("read", 1),
                ("read", 2),
                ("ahead", 0),
                ("ahead", 1),
                ("ahead", 2)
            ]
        );
    }
}
