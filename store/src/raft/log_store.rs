//! openraft's log storage over the write-ahead log ([`super::wal`]). Appends are acknowledged to
//! openraft only once they are synced.
//!
//! The sync runs on the appending task. A syncing thread that coalesced concurrent appends was
//! tried: with group commit above (one entry carries many requests) there is little left to
//! coalesce, and handing every append to a thread and back doubled the p90 latency of a single
//! client's puts on a loaded 2-core machine, for the same throughput. Nor would acknowledging
//! later let replication start sooner: openraft 0.9's core waits for this callback before it
//! hands the entries to replication.

use super::types::*;
use super::wal::Wal;
use crate::engine::{EngineError, SharedEngine};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, StorageIOError};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

fn err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: EngineError) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    /// The state machine's engine: synced before a purge (see [`RaftLogStorage::purge`]).
    engine: SharedEngine,
}

impl LogStore {
    pub fn new(wal: Arc<Wal>, engine: SharedEngine) -> Self {
        LogStore { wal, engine }
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
            Bound::Included(i) => i + 1,
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.wal.entries(start, end).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState { last_purged_log_id: self.wal.last_purged(), last_log_id: self.wal.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A vote must be durable before it is acted on, or a member could vote twice in a term.
        self.wal.save_vote(*vote).map_err(|e| err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        // Restarted, a member never resumes as the established leader of its old term, though
        // openraft would: it would serve linearizable reads at a read index built from the
        // committed index it restored, which is a hint saved without a sync and can lie below
        // writes it already acknowledged. Handing back the vote as not committed keeps the
        // promise it made in that term (no second vote in it) and makes the member win a new
        // term, with a fresh entry of its own, before it leads again.
        Ok(self.wal.vote().map(|vote| {
            if vote.is_committed() {
                Vote::new(vote.leader_id().term, vote.leader_id().node_id)
            } else {
                vote
            }
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a lost value only makes a restarted member re-learn it from the leader.
        self.wal.save_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.wal.committed())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.wal.append(entries).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        callback.log_io_completed(self.wal.sync().map_err(|e| std::io::Error::other(e.to_string())));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Synced so that a restart never resurrects entries a new leader overwrote.
        self.wal.truncate(log_id.index).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Safety does not need this sync: openraft purges only entries that a durable snapshot
        // covers, and a snapshot newer than the persisted state is installed at start-up. The
        // sync makes the state the state machine has persisted so far durable, so that after a
        // power loss that snapshot rarely has to be installed (which rewrites the whole store).
        self.engine.sync().map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.wal.purge(log_id).map_err(|e| err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
