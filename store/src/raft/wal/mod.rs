//! The Raft log as a write-ahead log: records appended to preallocated segments (see
//! [`crate::engine::segments`]), with an in-memory index from entry index to where the entry
//! sits. The newest entries are also kept decoded ([`recent`]), since each is read back soon
//! after it is written; older ones are read back from the segments on demand, so memory grows
//! with the number of entries, not their size.
//!
//! Removing entries never rewrites a segment: truncation and purging are records too, and
//! replaying every segment in order rebuilds the same state. Whole segments are deleted once
//! every entry in them is purged; so that the vote and the purge point are never lost with
//! them, each new segment starts with a checkpoint of both.

pub mod recent;
pub mod record;

use crate::engine::{EngineError, EngineResult, SegmentStore};
use crate::raft::types::{Entry, LogId, Vote};
use openraft::RaftLogId;
use recent::Recent;
use record::{frame, parse, unframe, Record, Span, Tail};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Capacity of a segment: large enough that creating one (a preallocation and two fsyncs) is
/// rare, small enough that a purged one frees its space soon.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// An entry's log id and where its record is.
#[derive(Debug, Clone, Copy)]
struct Location {
    log_id: LogId,
    segment: u64,
    span: Span,
}

/// What replay reads of an entry record: the log id that leads it. The payload after it is
/// left undecoded (bincode stops where the struct ends), so start-up does not decode every
/// entry the log holds just to index it.
#[derive(serde::Deserialize)]
struct EntryHead {
    log_id: LogId,
}

/// What the log holds, rebuilt from the segments at start-up (all but `recent`, which starts
/// empty and fills as entries are written).
#[derive(Default)]
struct State {
    /// The segment appends go to, its capacity, and where in it the next record goes.
    active: u64,
    active_capacity: u64,
    offset: u64,
    /// Every segment and the highest entry index ever written to it.
    segments: BTreeMap<u64, Option<u64>>,
    index: BTreeMap<u64, Location>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// `committed` changed since a record of it was last written (see [`Wal::save_committed`]).
    committed_unwritten: bool,
    last_purged: Option<LogId>,
    /// Segments written since their last sync.
    dirty: BTreeSet<u64>,
    recent: Recent,
}

impl State {
    /// Applies one record (an entry stands for its log id), at start-up or as it is written.
    fn apply(&mut self, segment: u64, span: Span, record: Record<LogId>) {
        match record {
            Record::Entry(log_id) => {
                let index = log_id.index;
                self.index.split_off(&index);
                self.index.insert(index, Location { log_id, segment, span });
                let max = self.segments.entry(segment).or_default();
                *max = (*max).max(Some(index));
            }
            Record::Truncate(from) => {
                self.index.split_off(&from);
            }
            Record::Purge(log_id) => {
                self.index = self.index.split_off(&(log_id.index + 1));
                self.last_purged = self.last_purged.max(Some(log_id));
            }
            Record::Vote(vote) => self.vote = Some(vote),
            Record::Committed(committed) => {
                self.committed = committed;
                self.committed_unwritten = false;
            }
        }
    }

    /// The records that let a new segment stand alone once older ones are deleted.
    fn checkpoint(&self) -> Vec<Record<LogId>> {
        let mut records = Vec::new();
        if let Some(log_id) = self.last_purged {
            records.push(Record::Purge(log_id));
        }
        if let Some(vote) = self.vote {
            records.push(Record::Vote(vote));
        }
        records.push(Record::Committed(self.committed));
        records
    }
}

/// The log, shared by openraft's log storage and its readers.
pub struct Wal {
    segments: Arc<dyn SegmentStore>,
    capacity: u64,
    state: Mutex<State>,
}

fn corrupt(segment: u64, offset: u64, reason: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt { key: format!("log segment {segment} at byte {offset}"), reason: reason.to_string() }
}

impl Wal {
    /// Replays every segment. A damaged record at the very end of the newest segment is a write
    /// that a crash cut short (it was never acknowledged): it is erased and the log goes on
    /// from there. Damage anywhere else is corruption and refuses to open.
    pub fn open(segments: Arc<dyn SegmentStore>, capacity: u64) -> EngineResult<Wal> {
        let ids = segments.list()?;
        let mut state = State::default();
        for (position, &id) in ids.iter().enumerate() {
            let bytes = segments.read_all(id)?;
            let parsed = parse::<EntryHead>(&bytes);
            state.segments.insert(id, None);
            for (span, record) in parsed.records {
                state.apply(id, span, record.map(|head| head.log_id));
            }
            if let Tail::Damaged { offset, reason } = &parsed.tail {
                if position + 1 != ids.len() {
                    return Err(corrupt(id, *offset, reason));
                }
                tracing::warn!(segment = id, offset, %reason, "erasing a torn write at the end of the log");
                segments.write(id, *offset, &vec![0; bytes.len() - *offset as usize])?;
                segments.sync(id)?;
            }
            (state.active, state.active_capacity, state.offset) = (id, bytes.len() as u64, parsed.end);
        }
        check_contiguous(&state)?;
        let wal = Wal { segments, capacity, state: Mutex::new(state) };
        if ids.is_empty() {
            let mut state = wal.state.lock().expect("wal lock");
            wal.rotate(&mut state, 0)?;
        }
        Ok(wal)
    }

    pub fn vote(&self) -> Option<Vote> {
        self.lock().vote
    }

    pub fn committed(&self) -> Option<LogId> {
        self.lock().committed
    }

    pub fn last_purged(&self) -> Option<LogId> {
        self.lock().last_purged
    }

    /// The id of the last entry, or of the last purged one if no entry is left.
    pub fn last_log_id(&self) -> Option<LogId> {
        let state = self.lock();
        state.index.last_key_value().map(|(_, location)| location.log_id).or(state.last_purged)
    }

    /// Entries with `start <= index < end` that the log holds, in order: the newest from
    /// memory, any older ones from the segments (read without holding the lock).
    pub fn entries(&self, start: u64, end: u64) -> EngineResult<Vec<Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (locations, held) = {
            let state = self.lock();
            let split = state.recent.first().unwrap_or(u64::MAX).clamp(start, end);
            let locations: Vec<Location> = state.index.range(start..split).map(|(_, l)| *l).collect();
            (locations, state.recent.range(split, end))
        };
        let mut entries = Vec::with_capacity(locations.len() + held.len());
        for location in locations {
            entries.push(self.read_entry(location)?);
        }
        entries.extend(held);
        Ok(entries)
    }

    /// Appends entries (not yet durable: see [`Wal::sync`]), after the committed index if it
    /// changed since it was last written, all in one write.
    pub fn append(&self, entries: impl IntoIterator<Item = Entry>) -> EngineResult<()> {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut state = self.lock();
        let committed = state.committed_unwritten.then_some(Record::Committed(state.committed));
        let records: Vec<Record<&Entry>> = committed.into_iter().chain(entries.iter().map(Record::Entry)).collect();
        self.write(&mut state, &records)
    }

    /// Removes entries from `index` on, durably.
    pub fn truncate(&self, index: u64) -> EngineResult<()> {
        self.write_locked(Record::Truncate(index))?;
        self.sync()
    }

    /// Removes entries up to and including `log_id`, and deletes the segments that then hold
    /// no entry. Not synced itself: losing the record only keeps entries a little longer.
    pub fn purge(&self, log_id: LogId) -> EngineResult<()> {
        let mut state = self.lock();
        self.write(&mut state, &[Record::Purge(log_id)])?;
        let removable: Vec<u64> = state
            .segments
            .iter()
            .take_while(|(id, max)| **id != state.active && max.is_none_or(|max| max <= log_id.index))
            .map(|(id, _)| *id)
            .collect();
        if removable.is_empty() {
            return Ok(());
        }
        // The active segment's checkpoint must be durable before the segments it replaces go.
        self.segments.sync(state.active)?;
        for id in removable {
            self.segments.remove(id)?;
            state.segments.remove(&id);
            state.dirty.remove(&id);
        }
        Ok(())
    }

    /// Records the vote, durably.
    pub fn save_vote(&self, vote: Vote) -> EngineResult<()> {
        self.write_locked(Record::Vote(vote))?;
        self.sync()
    }

    /// Records the committed index: a hint a restarted member can do without, so it is written
    /// with the next append or sync rather than on its own (every commit would cost a write).
    pub fn save_committed(&self, committed: Option<LogId>) {
        let mut state = self.lock();
        state.committed = committed;
        state.committed_unwritten = true;
    }

    /// Makes every record written so far durable. Appends may go on meanwhile: the lock is not
    /// held while the disk works.
    pub fn sync(&self) -> EngineResult<()> {
        let dirty = {
            let mut state = self.lock();
            if state.committed_unwritten {
                let committed = Record::Committed(state.committed);
                self.write(&mut state, &[committed])?;
            }
            std::mem::take(&mut state.dirty)
        };
        for id in dirty {
            self.segments.sync(id)?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("wal lock")
    }

    fn write_locked(&self, record: Record<&Entry>) -> EngineResult<()> {
        let mut state = self.lock();
        self.write(&mut state, &[record])
    }

    /// Writes records back to back with one write call (in a new segment if they do not fit).
    fn write(&self, state: &mut State, records: &[Record<&Entry>]) -> EngineResult<()> {
        let frames: Vec<Vec<u8>> = records.iter().map(frame).collect::<Result<_, _>>().map_err(EngineError::Io)?;
        let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
        if state.offset + total > state.active_capacity {
            self.rotate(state, total)?;
        }
        let bytes = frames.concat();
        self.segments.write(state.active, state.offset, &bytes)?;
        state.dirty.insert(state.active);
        let active = state.active;
        for (record, frame) in records.iter().zip(&frames) {
            let span = Span { offset: state.offset, len: frame.len() as u32 };
            state.offset += frame.len() as u64;
            state.apply(active, span, record.clone().map(|entry| *entry.get_log_id()));
            state.recent.mirror(record, frame.len());
        }
        Ok(())
    }

    /// Starts a new segment with room for a record of `need` bytes after the checkpoint (a
    /// record larger than the usual capacity gets a segment of its own size).
    fn rotate(&self, state: &mut State, need: u64) -> EngineResult<()> {
        let checkpoint: Vec<u8> =
            state.checkpoint().iter().map(frame).collect::<Result<Vec<_>, _>>().map_err(EngineError::Io)?.concat();
        let capacity = self.capacity.max(checkpoint.len() as u64 + need);
        let id = state.segments.last_key_value().map_or(1, |(id, _)| id + 1);
        // The segment being closed is synced first, so that only the newest segment can ever
        // end in a torn record (anywhere else that is corruption).
        if state.segments.contains_key(&state.active) {
            self.segments.sync(state.active)?;
            state.dirty.remove(&state.active);
        }
        self.segments.create(id, capacity)?;
        self.segments.write(id, 0, &checkpoint)?;
        state.segments.insert(id, None);
        (state.active, state.active_capacity, state.offset) = (id, capacity, checkpoint.len() as u64);
        state.dirty.insert(id);
        // The checkpoint holds the committed index.
        state.committed_unwritten = false;
        Ok(())
    }

    fn read_entry(&self, location: Location) -> EngineResult<Entry> {
        let bytes = self.segments.read(location.segment, location.span.offset, location.span.len as usize)?;
        match unframe::<Entry>(&bytes) {
            Ok(Record::Entry(entry)) => Ok(entry),
            Ok(_) => Err(corrupt(location.segment, location.span.offset, "the index points at a non-entry record")),
            Err(reason) => Err(corrupt(location.segment, location.span.offset, reason)),
        }
    }
}

/// After replay the entries must run without gaps, starting right after the purge point.
fn check_contiguous(state: &State) -> EngineResult<()> {
    let mut expected = state.last_purged.map(|l| l.index + 1);
    for (&index, location) in &state.index {
        if expected.is_some_and(|e| e != index) {
            return Err(corrupt(location.segment, location.span.offset, format!("entry {index} follows a gap")));
        }
        expected = Some(index + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, MemoryEngine};
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn entry(index: u64) -> Entry {
        Entry { log_id: log_id(index), payload: EntryPayload::Blank }
    }

    fn indexes(wal: &Wal) -> Vec<u64> {
        wal.entries(0, u64::MAX).unwrap().iter().map(|e| e.log_id.index).collect()
    }

    /// Small segments, so that a few entries rotate through several of them.
    const SMALL: u64 = 160;

    /// Appends entries one call each: an append's records go to one segment together.
    fn append_each(wal: &Wal, indexes: std::ops::Range<u64>) {
        indexes.for_each(|i| wal.append([entry(i)]).unwrap());
    }

    #[test]
    fn appends_survive_a_reopen_and_rotate_through_segments() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        wal.save_vote(Vote::new(3, 7)).unwrap();
        append_each(&wal, 0..20);
        wal.save_committed(Some(log_id(15)));
        wal.sync().unwrap();
        assert!(engine.segments().list().unwrap().len() > 3, "small segments rotate");
        assert_eq!(wal.entries(5, 8).unwrap(), vec![entry(5), entry(6), entry(7)]);

        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        assert_eq!(indexes(&wal), (0..20).collect::<Vec<_>>());
        assert_eq!((wal.vote(), wal.committed()), (Some(Vote::new(3, 7)), Some(log_id(15))));
        assert_eq!(wal.last_log_id(), Some(log_id(19)));
    }

    #[test]
    fn the_committed_index_is_written_with_the_next_append_or_sync() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        wal.append((0..3).map(entry)).unwrap();
        wal.save_committed(Some(log_id(2)));
        wal.append((3..5).map(entry)).unwrap();
        let segments = engine.segments();
        let id = *segments.list().unwrap().last().unwrap();
        let written: Vec<Record<LogId>> = parse::<Entry>(&segments.read_all(id).unwrap())
            .records
            .into_iter()
            .map(|(_, r)| r.map(|e| e.log_id))
            .filter(|r| !matches!(r, Record::Committed(None)))
            .collect();
        let expected = [
            Record::Entry(log_id(0)),
            Record::Entry(log_id(1)),
            Record::Entry(log_id(2)),
            Record::Committed(Some(log_id(2))),
            Record::Entry(log_id(3)),
            Record::Entry(log_id(4)),
        ];
        assert_eq!(written, expected);
        // Written once: a later append does not repeat it.
        wal.append([entry(5)]).unwrap();
        wal.save_committed(Some(log_id(5)));
        wal.sync().unwrap();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        assert_eq!(wal.committed(), Some(log_id(5)));
        let records = parse::<Entry>(&segments.read_all(id).unwrap()).records;
        assert_eq!(records.iter().filter(|(_, r)| matches!(r, Record::Committed(Some(_)))).count(), 2);
    }

    #[test]
    fn purge_deletes_whole_segments_and_keeps_the_vote_and_purge_point() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        wal.save_vote(Vote::new(2, 1)).unwrap();
        append_each(&wal, 0..30);
        let before = engine.segments().list().unwrap();
        wal.purge(log_id(24)).unwrap();
        wal.sync().unwrap();
        let after = engine.segments().list().unwrap();
        assert!(after.len() < before.len() && after[0] > before[0], "{before:?} -> {after:?}");
        assert_eq!(indexes(&wal), (25..30).collect::<Vec<_>>());

        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        assert_eq!(indexes(&wal), (25..30).collect::<Vec<_>>());
        assert_eq!((wal.vote(), wal.last_purged()), (Some(Vote::new(2, 1)), Some(log_id(24))));
        // Everything purged: the last log id is the purge point.
        wal.purge(log_id(29)).unwrap();
        assert_eq!(wal.last_log_id(), Some(log_id(29)));
    }

    #[test]
    fn truncation_replaces_entries_across_a_reopen() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        wal.append((0..10).map(entry)).unwrap();
        wal.truncate(6).unwrap();
        let replacement = Entry { log_id: LogId::new(CommittedLeaderId::new(2, 3), 6), payload: EntryPayload::Blank };
        wal.append([replacement.clone()]).unwrap();
        wal.sync().unwrap();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        assert_eq!(indexes(&wal), (0..7).collect::<Vec<_>>());
        assert_eq!(wal.entries(6, 7).unwrap(), vec![replacement]);
    }

    #[test]
    fn a_crash_loses_only_unsynced_appends_and_a_torn_tail_is_erased() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        wal.append((0..5).map(entry)).unwrap();
        wal.sync().unwrap();
        wal.append((5..8).map(entry)).unwrap();
        engine.crash();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        assert_eq!(indexes(&wal), (0..5).collect::<Vec<_>>());

        // Half a record after the last good one, as a crash in mid-write leaves it.
        let segments = engine.segments();
        let id = *segments.list().unwrap().last().unwrap();
        let end = parse::<Entry>(&segments.read_all(id).unwrap()).end;
        let torn = frame(&Record::Entry(&entry(5))).unwrap();
        segments.write(id, end, &torn[..torn.len() / 2]).unwrap();
        segments.sync(id).unwrap();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        assert_eq!(indexes(&wal), (0..5).collect::<Vec<_>>());
        wal.append((5..7).map(entry)).unwrap();
        wal.sync().unwrap();
        let wal = Wal::open(engine.segments(), SEGMENT_BYTES).unwrap();
        assert_eq!(indexes(&wal), (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn damage_before_the_end_of_the_log_refuses_to_open() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        append_each(&wal, 0..20);
        wal.sync().unwrap();
        let segments = engine.segments();
        let first = segments.list().unwrap()[0];
        let mut bytes = segments.read_all(first).unwrap();
        bytes[record::HEADER_LEN + 2] ^= 0xff;
        segments.write(first, 0, &bytes[..record::HEADER_LEN + 3]).unwrap();
        segments.sync(first).unwrap();
        let error = Wal::open(engine.segments(), SMALL).err().expect("corruption is refused");
        assert!(matches!(error, EngineError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn reads_join_entries_from_the_segments_and_from_memory() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        append_each(&wal, 0..10);
        wal.sync().unwrap();
        // Reopened, nothing is held in memory: 0..10 come from the segments, 10..15 from memory.
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        append_each(&wal, 10..15);
        assert_eq!(wal.lock().recent.first(), Some(10));
        assert_eq!(indexes(&wal), (0..15).collect::<Vec<_>>());
        assert_eq!(wal.entries(8, 12).unwrap(), (8..12).map(entry).collect::<Vec<_>>());
        // Truncation and purges reach both, and an overwrite is what a read finds.
        wal.truncate(12).unwrap();
        let replacement = Entry { log_id: LogId::new(CommittedLeaderId::new(2, 1), 12), payload: EntryPayload::Blank };
        wal.append([replacement.clone()]).unwrap();
        wal.purge(log_id(10)).unwrap();
        assert_eq!(wal.entries(0, 20).unwrap(), vec![entry(11), replacement.clone()]);
        wal.sync().unwrap();
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        assert_eq!(wal.entries(0, 20).unwrap(), vec![entry(11), replacement]);
    }

    #[test]
    fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
        let engine = MemoryEngine::new();
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        let big = Entry {
            log_id: log_id(0),
            payload: EntryPayload::Normal(crate::raft::types::Proposal {
                commands: vec![crate::mvcc::Command::Compact { revision: crate::ids::Revision(1) }; 40].into(),
            }),
        };
        wal.append([big.clone(), entry(1)]).unwrap();
        wal.sync().unwrap();
        let wal = Wal::open(engine.segments(), SMALL).unwrap();
        assert_eq!(wal.entries(0, 2).unwrap(), vec![big, entry(1)]);
    }
}
