//! The Raft log and vote, kept in the engine. Appends are acknowledged to openraft only once they
//! are fsynced; concurrent appends share one fsync (the flusher coalesces their callbacks).

use super::types::*;
use crate::codec;
use crate::engine::{keys, Batch, SharedEngine};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, StorageIOError};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

fn err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Makes appended entries durable and then tells openraft so.
pub enum Flusher {
    /// Sync on the caller's task: for engines whose sync is cheap (the in-memory engine), and
    /// where OS threads are not allowed (the simulation).
    Inline(SharedEngine),
    /// A thread that fsyncs once for every group of appends that arrived meanwhile.
    Background(Arc<BackgroundFlusher>),
}

pub struct BackgroundFlusher {
    tx: Mutex<Option<mpsc::Sender<LogFlushed<TypeConfig>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BackgroundFlusher {
    pub fn start(engine: SharedEngine) -> Arc<BackgroundFlusher> {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let thread = std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let result = engine.sync();
                    for callback in waiting {
                        let outcome = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::other(e.to_string())),
                        };
                        callback.log_io_completed(outcome);
                    }
                }
            })
            .expect("spawning the log flusher thread");
        Arc::new(BackgroundFlusher { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    fn submit(&self, callback: LogFlushed<TypeConfig>) {
        let tx = self.tx.lock().expect("flusher lock");
        match tx.as_ref() {
            Some(tx) => {
                if let Err(mpsc::SendError(callback)) = tx.send(callback) {
                    callback.log_io_completed(Err(std::io::Error::other("log flusher stopped")));
                }
            }
            None => callback.log_io_completed(Err(std::io::Error::other("log flusher stopped"))),
        }
    }

    /// Stops the thread after it has flushed everything submitted so far.
    pub fn stop(&self) {
        self.tx.lock().expect("flusher lock").take();
        if let Some(thread) = self.thread.lock().expect("flusher lock").take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
pub struct LogStore {
    engine: SharedEngine,
    flusher: Arc<Flusher>,
}

impl LogStore {
    pub fn new(engine: SharedEngine, flusher: Flusher) -> Self {
        LogStore { engine, flusher: Arc::new(flusher) }
    }

    #[allow(clippy::result_large_err)]
    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let subject = || ErrorSubject::Store;
        match self.engine.get(key).map_err(|e| err(subject(), ErrorVerb::Read, e))? {
            Some(bytes) => codec::open(&bytes).map(Some).map_err(|e| err(subject(), ErrorVerb::Read, e)),
            None => Ok(None),
        }
    }

    // openraft's storage traits fix the (large) error type; helpers return it unchanged.
    #[allow(clippy::result_large_err)]
    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<(), StorageError> {
        let subject = || ErrorSubject::Store;
        let mut batch = Batch::default();
        batch.put(key.to_vec(), codec::seal(value).map_err(|e| err(subject(), ErrorVerb::Write, e))?);
        self.engine.write(batch).map_err(|e| err(subject(), ErrorVerb::Write, e))?;
        if sync {
            self.engine.sync().map_err(|e| err(subject(), ErrorVerb::Write, e))?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => keys::log(i + 1),
            Bound::Excluded(i) => keys::log(*i),
            Bound::Unbounded => vec![keys::LOG + 1],
        };
        let mut entries = Vec::new();
        for item in self.engine.scan(&keys::log(start), &end) {
            let (key, value) = item.map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let entry: Entry = codec::open(&value)
                .map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Read, format!("log key {key:?}: {e}")))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(keys::LAST_PURGED)?;
        let (start, end) = keys::all(keys::LOG);
        let last = match self.engine.last(&start, &end).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Read, e))? {
            Some((_, value)) => {
                let entry: Entry = codec::open(&value).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(*entry.get_log_id())
            }
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A vote must be durable before it is acted on, or a member could vote twice in a term.
        self.write_meta(keys::VOTE, vote, true)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(keys::VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a lost value only makes a restarted member re-learn it from the leader.
        self.write_meta(keys::COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(keys::COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Batch::default();
        for entry in entries {
            let bytes = codec::seal(&entry).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put(keys::log(entry.get_log_id().index), bytes);
        }
        self.engine.write(batch).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        match self.flusher.as_ref() {
            Flusher::Inline(engine) => {
                let result = engine.sync().map_err(|e| std::io::Error::other(e.to_string()));
                callback.log_io_completed(result);
            }
            Flusher::Background(flusher) => flusher.submit(callback),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete_logs(keys::log(log_id.index), vec![keys::LOG + 1])?;
        // Synced so that a restart never resurrects entries a new leader overwrote.
        self.engine.sync().map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The state machine shares the engine: syncing here makes everything applied so far (at
        // least up to the snapshot that allows this purge) durable before any entry goes.
        self.engine.sync().map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // Record the purge point first: a crash in between leaves extra entries, never a hole.
        self.write_meta(keys::LAST_PURGED, &log_id, false)?;
        self.delete_logs(keys::log(0), keys::log(log_id.index + 1))
    }
}

impl LogStore {
    #[allow(clippy::result_large_err)]
    fn delete_logs(&self, start: Vec<u8>, end: Vec<u8>) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for item in self.engine.scan(&start, &end) {
            let (key, _) = item.map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
            batch.delete(key);
        }
        self.engine.write(batch).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
