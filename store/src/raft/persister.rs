//! Writes the state machine's deferred batches to the engine on a thread of their own, in the
//! order they were applied, so that applying entries never waits for sled: a batch of ten
//! thousand writes takes sled milliseconds, and every request committed meanwhile waited for
//! it when the write was made on the applying task.
//!
//! Only on a multi-threaded runtime (a server, see [`super::on_worker_threads`]). On a
//! current-thread runtime (the deterministic simulation, unit tests) batches are written in
//! place, so that what a simulated crash finds persisted depends on nothing but the seed.

use super::history::{self, Changes};
use crate::engine::{EngineError, EngineResult, SharedEngine};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How many batches may wait for the thread before applying waits for it in turn.
const QUEUE: usize = 4;

enum Job {
    Write(Changes, Vec<u8>),
    /// Answered once every batch queued before it is written.
    Drain(SyncSender<()>),
}

pub struct Persister {
    engine: SharedEngine,
    thread: Option<Worker>,
}

struct Worker {
    jobs: SyncSender<Job>,
    handle: JoinHandle<()>,
    /// Why the first write that failed did: every later call reports it.
    failed: Arc<Mutex<Option<String>>>,
}

impl Persister {
    pub fn new(engine: SharedEngine) -> Persister {
        let thread = super::on_worker_threads().then(|| {
            let (jobs, rx) = sync_channel(QUEUE);
            let failed = Arc::new(Mutex::new(None));
            let (engine, slot) = (engine.clone(), failed.clone());
            let handle = std::thread::Builder::new()
                .name("berth-persist".into())
                .spawn(move || work(&engine, rx, &slot))
                .expect("spawn the persisting thread");
            Worker { jobs, handle, failed }
        });
        Persister { engine, thread }
    }

    /// Persists `changes` with the state machine's metadata record `meta`, after everything
    /// handed over before them (not synced).
    pub fn write(&self, changes: Changes, meta: Vec<u8>) -> EngineResult<()> {
        match &self.thread {
            None => history::persist(self.engine.as_ref(), changes, meta),
            Some(worker) => {
                worker.check()?;
                worker.jobs.send(Job::Write(changes, meta)).map_err(|_| stopped())
            }
        }
    }

    /// Returns once every batch handed over so far is written (blocking the caller).
    pub fn drain(&self) -> EngineResult<()> {
        let Some(worker) = &self.thread else { return Ok(()) };
        let (done, wait) = sync_channel(1);
        worker.jobs.send(Job::Drain(done)).map_err(|_| stopped())?;
        wait.recv().map_err(|_| stopped())?;
        worker.check()
    }
}

impl Worker {
    fn check(&self) -> EngineResult<()> {
        match &*self.failed.lock().expect("persister lock") {
            Some(reason) => Err(EngineError::Io(reason.clone())),
            None => Ok(()),
        }
    }
}

impl Drop for Persister {
    /// Writes what is queued before the engine is synced and closed.
    fn drop(&mut self) {
        if let Some(Worker { jobs, handle, .. }) = self.thread.take() {
            drop(jobs);
            let _ = handle.join();
        }
    }
}

fn work(engine: &SharedEngine, jobs: Receiver<Job>, failed: &Mutex<Option<String>>) {
    for job in jobs {
        match job {
            Job::Write(changes, meta) => {
                if failed.lock().expect("persister lock").is_some() {
                    continue;
                }
                if let Err(e) = history::persist(engine.as_ref(), changes, meta) {
                    tracing::error!("persisting applied state failed: {e}");
                    *failed.lock().expect("persister lock") = Some(e.to_string());
                }
            }
            Job::Drain(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn stopped() -> EngineError {
    EngineError::Io("the persisting thread stopped".into())
}
