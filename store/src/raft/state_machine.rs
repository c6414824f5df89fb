//! The Raft state machine: applies committed entries to the MVCC store and persists what changed
//! in the same engine batch as the applied log id, membership and revisions, so they can never
//! disagree after a crash. Snapshots are the store's retained history at the applied index.
//!
//! Persisting is deferred, as etcd's backend does it: the changes of many applied entries are
//! gathered and written as one batch (laid out by [`history`]) every [`PERSIST_INTERVAL`] or
//! [`PERSIST_OPS`] writes, by the [`Persister`]'s thread, and that write is not synced. Nothing
//! acknowledged depends on it: committed entries are durable in a quorum's logs, a restarted
//! member re-applies the entries after the persisted applied index, and before entries are
//! purged from the log the snapshot that covers them is durable (and installed at start-up when
//! it is newer than the persisted state).

use super::history::{self, Changes};
use super::persister::Persister;
use super::types::*;
use crate::codec;
use crate::engine::{keys, seal, Batch, EngineError, SharedEngine};
use crate::ids::{LeaseId, Revision};
use crate::mvcc::{Mvcc, StoredEvent};
use crate::watch::{WatchConfig, WatchHub};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, StorageIOError};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

const SNAPSHOT_BLOB: &str = "current.snap";

/// The applied state, shared between the state machine (writer) and readers.
pub struct SmState {
    pub mvcc: Mvcc,
    pub applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Metadata persisted with every applied batch.
#[derive(Serialize, Deserialize, Default)]
struct SmMeta {
    applied: Option<LogId>,
    membership: StoredMembership,
    revision: Revision,
    compacted: Revision,
}

/// The body of a snapshot: everything needed to rebuild the store at its index. Read back as
/// it is declared; written by [`SnapshotBody::of`] with `events` streamed from the store.
#[derive(Serialize, Deserialize)]
struct SnapshotBody<E = Vec<StoredEvent>> {
    revision: Revision,
    compacted: Revision,
    leases: Vec<(LeaseId, i64)>,
    events: E,
}

/// Encodes as the sequence of every version the store holds, made one at a time: a snapshot
/// of a big store is never a second copy of its history in memory.
struct Versions<'a>(&'a Mvcc);

impl Serialize for Versions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.version_count()))?;
        for version in self.0.versions() {
            seq.serialize_element(&version)?;
        }
        seq.end()
    }
}

impl SnapshotBody {
    /// The applied state's history, ready to encode (the caller holds the state's lock).
    fn of(state: &SmState) -> SnapshotBody<Versions<'_>> {
        SnapshotBody {
            revision: state.mvcc.revision(),
            compacted: state.mvcc.compacted(),
            leases: state.mvcc.leases().iter().map(|(id, l)| (*id, l.ttl)).collect(),
            events: Versions(&state.mvcc),
        }
    }
}

/// Shared, readable view of the applied state plus a signal of each applied batch.
pub struct KvState {
    pub state: RwLock<SmState>,
    applied_tx: watch::Sender<Revision>,
    /// The member's watchers; fed every applied batch while `state` is still write-locked.
    pub watch: WatchHub,
}

impl KvState {
    /// Notified with the store revision after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.applied_tx.subscribe()
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, SmState> {
        self.state.read().expect("state lock poisoned")
    }
}

fn io_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, openraft::AnyError::error(e.to_string())).into()
}

/// How long applied changes may wait before they are written to the engine.
pub const PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// How many gathered writes make the engine write happen sooner.
pub const PERSIST_OPS: usize = 10_000;

pub struct StateMachine {
    shared: Arc<KvState>,
    engine: SharedEngine,
    /// Changes applied but not yet handed to the persister.
    unpersisted: Changes,
    persister: Persister,
    last_persisted: tokio::time::Instant,
}

impl StateMachine {
    /// Loads the persisted state (or, if the last snapshot is newer than it, the snapshot).
    pub fn open(engine: SharedEngine) -> Result<StateMachine, EngineError> {
        let mut state = load(&engine)?;
        // Usually the persisted state is newer than the last snapshot: then only the snapshot's
        // metadata is read, not the whole blob.
        if read_snapshot_meta(&engine)?.is_some_and(|meta| meta.last_log_id > state.applied) {
            let (meta, data) = read_snapshot_blob(&engine)?.ok_or_else(|| corrupt_blob(&"removed while starting"))?;
            let body: SnapshotBody = codec::open(&data).map_err(|e| corrupt_blob(&e))?;
            persist_snapshot(&engine, &meta, &body)?;
            state = state_of(&meta, body);
        }
        // The whole history was just read; the applied state holds it from now on.
        engine.release_cache()?;
        let (applied_tx, _) = watch::channel(state.mvcc.revision());
        let hub = WatchHub::new(state.mvcc.revision(), WatchConfig::default());
        Ok(StateMachine {
            shared: Arc::new(KvState { state: RwLock::new(state), applied_tx, watch: hub }),
            persister: Persister::new(engine.clone()),
            engine,
            unpersisted: Changes::default(),
            last_persisted: tokio::time::Instant::now(),
        })
    }

    pub fn shared(&self) -> Arc<KvState> {
        self.shared.clone()
    }
}

fn load(engine: &SharedEngine) -> Result<SmState, EngineError> {
    let meta: SmMeta = match engine.get(keys::STATE_MACHINE)? {
        Some(bytes) => codec::open(&bytes).map_err(|e| EngineError::corrupt(keys::STATE_MACHINE, e))?,
        None => SmMeta { revision: Revision::INITIAL, ..SmMeta::default() },
    };
    history::check_layout(engine.as_ref())?;
    // The events are decoded as the store is rebuilt, a chunk at a time, rather than collected
    // first: a member with a big store does not hold its history twice while starting.
    let mut failure = None;
    let events = history::events(engine.as_ref()).map_while(|item| item.map_err(|e| failure = Some(e)).ok());
    let (start, end) = keys::all(keys::LEASE);
    let mut leases = Vec::new();
    for item in engine.scan(&start, &end) {
        let (key, value) = item?;
        leases.push(codec::open::<(LeaseId, i64)>(&value).map_err(|e| EngineError::corrupt(&key, e))?);
    }
    let mvcc = Mvcc::restore(events, leases, meta.revision, meta.compacted);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(SmState { mvcc, applied: meta.applied, membership: meta.membership })
}

fn meta_record(state: &SmState) -> Result<Vec<u8>, EngineError> {
    let meta = SmMeta {
        applied: state.applied,
        membership: state.membership.clone(),
        revision: state.mvcc.revision(),
        compacted: state.mvcc.compacted(),
    };
    seal(&meta)
}

fn state_of(meta: &SnapshotMeta, body: SnapshotBody) -> SmState {
    SmState {
        mvcc: Mvcc::restore(body.events, body.leases, body.revision, body.compacted),
        applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
    }
}

/// Replaces the persisted state machine by a snapshot's content, atomically.
fn persist_snapshot(engine: &SharedEngine, meta: &SnapshotMeta, body: &SnapshotBody) -> Result<(), EngineError> {
    let mut batch = Batch::default();
    history::replace_all(engine.as_ref(), &body.events, &body.leases, &mut batch)?;
    let sm_meta = SmMeta {
        applied: meta.last_log_id,
        membership: meta.last_membership.clone(),
        revision: body.revision,
        compacted: body.compacted,
    };
    batch.put(keys::STATE_MACHINE.to_vec(), seal(&sm_meta)?);
    engine.write(batch)?;
    engine.sync()
}

/// Stores a snapshot as its sealed metadata (length first) followed by its body exactly as it
/// is sent to peers (sealed itself), so that writing one never copies the body.
fn write_snapshot_blob(engine: &SharedEngine, meta: &SnapshotMeta, data: &[u8]) -> Result<(), EngineError> {
    let meta = seal(meta)?;
    engine.write_blob(SNAPSHOT_BLOB, &[&(meta.len() as u64).to_le_bytes(), &meta, data])
}

fn corrupt_blob(reason: &dyn std::fmt::Display) -> EngineError {
    EngineError::corrupt(SNAPSHOT_BLOB.as_bytes(), reason)
}

/// Where the metadata of a snapshot blob starting with `head` ends (its length comes first).
fn meta_end(head: &[u8]) -> Result<usize, EngineError> {
    head.get(..8)
        .and_then(|b| (u64::from_le_bytes(b.try_into().expect("eight bytes")) as usize).checked_add(8))
        .ok_or_else(|| corrupt_blob(&"shorter than its metadata"))
}

/// The metadata at the front of a snapshot blob, and where the body starts.
fn snapshot_meta(bytes: &[u8]) -> Result<(SnapshotMeta, usize), EngineError> {
    let end = meta_end(bytes)?;
    let sealed = bytes.get(8..end).ok_or_else(|| corrupt_blob(&"shorter than its metadata"))?;
    Ok((codec::open(sealed).map_err(|e| corrupt_blob(&e))?, end))
}

fn read_snapshot_blob(engine: &SharedEngine) -> Result<Option<(SnapshotMeta, Vec<u8>)>, EngineError> {
    let Some(mut bytes) = engine.read_blob(SNAPSHOT_BLOB)? else { return Ok(None) };
    let (meta, body_start) = snapshot_meta(&bytes)?;
    bytes.drain(..body_start);
    Ok(Some((meta, bytes)))
}

/// The current snapshot's metadata, reading no more of the blob than its front.
fn read_snapshot_meta(engine: &SharedEngine) -> Result<Option<SnapshotMeta>, EngineError> {
    let Some(length) = engine.read_blob_head(SNAPSHOT_BLOB, 8)? else { return Ok(None) };
    let head = engine.read_blob_head(SNAPSHOT_BLOB, meta_end(&length)?)?.unwrap_or_default();
    Ok(Some(snapshot_meta(&head)?.0))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.read();
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let revision = {
            let mut state = self.shared.state.write().expect("state lock poisoned");
            for entry in entries {
                let log_id = *entry.get_log_id();
                state.applied = Some(log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => ProposalResult::default(),
                    EntryPayload::Normal(proposal) => {
                        // Through the fence: a lease expiry holds only in its deciding leader's entry.
                        let apply = |c| crate::lease::fence::apply(&mut state.mvcc, c, &log_id.leader_id);
                        ProposalResult { results: proposal.commands.iter().map(apply).collect() }
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(log_id), m);
                        ProposalResult::default()
                    }
                };
                responses.push(result);
            }
            let journal = state.mvcc.take_journal();
            self.unpersisted.add(&journal).map_err(|e| io_err(ErrorVerb::Write, e))?;
            if self.unpersisted.len() >= PERSIST_OPS || self.last_persisted.elapsed() >= PERSIST_INTERVAL {
                // Handed over while holding the lock, so persisted order equals applied order.
                let changes = std::mem::take(&mut self.unpersisted);
                let meta = meta_record(&state).map_err(|e| io_err(ErrorVerb::Write, e))?;
                self.persister.write(changes, meta).map_err(|e| io_err(ErrorVerb::Write, e))?;
                self.last_persisted = tokio::time::Instant::now();
            }
            // Watchers see a batch once it is committed (durable on a quorum's logs), and
            // before the lock is released, so that any reader of the state finds the watch hub
            // at the same revision.
            let events = journal.events.into_iter().map(|e| e.event).collect();
            self.shared.watch.publish(state.mvcc.revision(), events);
            state.mvcc.revision()
        };
        self.shared.applied_tx.send_replace(revision);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone(), engine: self.engine.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[allow(clippy::result_large_err)] // openraft fixes the error type
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // The snapshot replaces the state those changes were made to.
        self.unpersisted = Changes::default();
        let (engine, persister) = (self.engine.clone(), &self.persister);
        let installed = off_the_runtime(|| -> Result<SmState, StorageError> {
            // Batches still queued predate the snapshot: written after it, they would undo it.
            persister.drain().map_err(|e| io_err(ErrorVerb::Write, e))?;
            let body: SnapshotBody = codec::open(&data).map_err(|e| io_err(ErrorVerb::Read, e))?;
            tracing::info!(snapshot = %meta.snapshot_id, revision = %body.revision, bytes = data.len(), "installing snapshot");
            persist_snapshot(&engine, meta, &body).map_err(|e| io_err(ErrorVerb::Write, e))?;
            write_snapshot_blob(&engine, meta, &data).map_err(|e| io_err(ErrorVerb::Write, e))?;
            Ok(state_of(meta, body))
        })?;
        let revision = {
            let mut state = self.shared.state.write().expect("state lock poisoned");
            *state = installed;
            // The batches the snapshot covers were never published: watchers continue from its
            // history (or are canceled where that history is compacted).
            self.shared.watch.restore(state.mvcc.revision());
            state.mvcc.revision()
        };
        self.shared.applied_tx.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let found = read_snapshot_blob(&self.engine).map_err(|e| io_err(ErrorVerb::Read, e))?;
        Ok(found.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

/// The snapshot body of the applied state (what a Raft snapshot carries besides its metadata):
/// the payload of a backup streamed by `Maintenance.Snapshot`.
pub(crate) fn backup_data(state: &SmState) -> Result<Vec<u8>, codec::CodecError> {
    codec::seal(&SnapshotBody::of(state))
}

/// Seeds a fresh engine with a backup payload as its current snapshot, with `meta`;
/// [`StateMachine::open`] then installs it (it is newer than the empty state). Returns the
/// revision the backup holds. Used by `berth snapshot restore`.
pub(crate) fn seed_from_backup(
    engine: &SharedEngine,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<Revision, EngineError> {
    let body: SnapshotBody = codec::open(data).map_err(|e| EngineError::corrupt(b"backup payload", e))?;
    write_snapshot_blob(engine, meta, data)?;
    Ok(body.revision)
}

pub struct SnapshotBuilder {
    shared: Arc<KvState>,
    engine: SharedEngine,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    #[allow(clippy::result_large_err)] // openraft fixes the error type
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (shared, engine) = (self.shared.clone(), self.engine.clone());
        off_the_runtime(move || build_snapshot(&shared, &engine))
    }
}

/// Runs `work` (long, blocking: copying, encoding and writing a whole snapshot) without
/// stalling the tasks that share its worker thread. On a member's multi-threaded runtime the
/// other tasks move to another worker meanwhile; otherwise (a single-threaded runtime, as in
/// the deterministic simulation, where snapshots are small) it simply runs in place.
///
/// Why it matters: a member busy for longer than an election timeout misses its heartbeats,
/// then starts an election and deposes a healthy leader. With a million keys, building a
/// snapshot inline did exactly that, every snapshot.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    if super::on_worker_threads() {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

// openraft's storage traits fix the (large) error type; helpers return it unchanged.
#[allow(clippy::result_large_err)]
fn build_snapshot(shared: &KvState, engine: &SharedEngine) -> Result<Snapshot<TypeConfig>, StorageError> {
    // The read lock gives a consistent view; apply waits while the history is encoded (which
    // costs about what copying it would, without the copy).
    let (meta, data) = {
        let state = shared.read();
        let id = match state.applied {
            Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
            None => "empty".to_string(),
        };
        let meta =
            SnapshotMeta { last_log_id: state.applied, last_membership: state.membership.clone(), snapshot_id: id };
        (meta, codec::seal(&SnapshotBody::of(&state)).map_err(|e| io_err(ErrorVerb::Write, e))?)
    };
    write_snapshot_blob(engine, &meta, &data).map_err(|e| io_err(ErrorVerb::Write, e))?;
    Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryEngine;
    use crate::mvcc::{Command, DeleteRangeRequest, KeyRange, PutRequest};

    fn put_with(key: &str, value: &str, lease: Option<LeaseId>) -> Command {
        let (key, value) = (key.into(), value.into());
        Command::Put(PutRequest { key, value, lease, prev_kv: false, ignore_value: false, ignore_lease: false })
    }

    fn put(key: &str, value: &str) -> Command {
        put_with(key, value, None)
    }

    /// A store with overwrites, a delete and a lease: every shape a version can have.
    fn store() -> Mvcc {
        let mut mvcc = Mvcc::default();
        let commands = [
            Command::LeaseGrant { id: LeaseId(9), ttl: 30 },
            put("a", "1"),
            put("b", "2"),
            put("a", "3"),
            put_with("c", "4", Some(LeaseId(9))),
            Command::DeleteRange(DeleteRangeRequest { range: KeyRange::single("b"), prev_kv: false }),
        ];
        for command in &commands {
            mvcc.apply(command).unwrap();
        }
        mvcc
    }

    #[test]
    fn a_snapshot_encoded_from_the_store_rebuilds_the_same_store() {
        let mvcc = store();
        let state = SmState { mvcc: mvcc.clone(), applied: None, membership: StoredMembership::default() };
        let data = codec::seal(&SnapshotBody::of(&state)).unwrap();
        let body: SnapshotBody = codec::open(&data).unwrap();
        assert_eq!(body.events.len(), mvcc.stored_events().len());
        let rebuilt = state_of(&SnapshotMeta::default(), body).mvcc;
        assert_eq!(rebuilt.stored_events(), mvcc.stored_events());
        assert_eq!(rebuilt.leases(), mvcc.leases());
        assert_eq!((rebuilt.revision(), rebuilt.compacted()), (mvcc.revision(), mvcc.compacted()));
    }

    #[test]
    fn the_snapshot_blob_reads_back_and_a_cut_one_is_corrupt() {
        let engine: SharedEngine = Arc::new(MemoryEngine::new());
        let meta = SnapshotMeta { snapshot_id: "1-7".into(), ..SnapshotMeta::default() };
        write_snapshot_blob(&engine, &meta, b"body").unwrap();
        let (read, data) = read_snapshot_blob(&engine).unwrap().unwrap();
        assert_eq!((read.snapshot_id.as_str(), data.as_slice()), ("1-7", b"body".as_slice()));
        assert_eq!(read_snapshot_meta(&engine).unwrap().unwrap(), read);

        let whole = engine.read_blob(SNAPSHOT_BLOB).unwrap().unwrap();
        engine.write_blob(SNAPSHOT_BLOB, &[&whole[..12]]).unwrap();
        assert!(matches!(read_snapshot_blob(&engine), Err(EngineError::Corrupt { .. })));
        assert!(matches!(read_snapshot_meta(&engine), Err(EngineError::Corrupt { .. })));
    }
}
