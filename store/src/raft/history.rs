//! The MVCC history as the engine keeps it: events packed into chunks of up to [`CHUNK_BYTES`],
//! one engine record per chunk, instead of one record per event. sled's cost is per record (a
//! tree insert, its page bookkeeping), and persisting one record per event took a sixth of a
//! loaded cluster's CPU.
//!
//! A chunk holds events in (revision, sub) order and is keyed by its first one, so chunks never
//! overlap and the chunk holding an event is the last one keyed at or before it. A chunk is a run
//! of frames `[revision i64 BE][sub u32 BE][len u32 LE][sealed event]`, so that compaction can
//! drop events from a chunk without decoding the rest; each event stays sealed (CRC-32) on its
//! own. Persisted events leave out `prev_kv`, which rebuilding the store never reads (it is the
//! key's previous version, persisted already), so an overwrite stores one value, not two.

use crate::codec;
use crate::engine::{keys, seal, Batch, Engine, EngineError, EngineResult};
use crate::ids::{LeaseId, Revision};
use crate::mvcc::{Journal, KeyValue, StoredEvent};
use std::collections::{BTreeMap, BTreeSet};

/// A chunk is closed before it would pass this many bytes. Small enough that sled keeps chunks
/// in its ordinary pages: at 64 KiB it stored many as blobs and held them in memory (a member
/// with a million keys took 840 MiB, against 571 MiB at this size).
pub const CHUNK_BYTES: usize = 4 * 1024;

const FRAME_HEAD: usize = 8 + 4 + 4;

/// Where an event is stored: its revision and its place inside that revision.
type Position = (Revision, u32);

/// One event sealed for storage, with the position it is stored at.
struct Packed {
    revision: Revision,
    sub: u32,
    sealed: Vec<u8>,
}

impl Packed {
    /// Encoded exactly as a [`StoredEvent`] whose `prev_kv` is `None` (bincode encodes a struct
    /// as the tuple of its fields), so it reads back as one.
    fn of(e: &StoredEvent) -> EngineResult<Packed> {
        let sealed = seal(&(e.sub, (&e.event.kind, &e.event.kv, None::<&KeyValue>)))?;
        Ok(Packed { revision: e.event.kv.mod_revision, sub: e.sub, sealed })
    }

    fn position(&self) -> Position {
        (self.revision, self.sub)
    }
}

/// The changes applied since the last persist, gathered until they are written together.
#[derive(Default)]
pub struct Changes {
    /// New events, in (revision, sub) order.
    events: Vec<Packed>,
    /// Stored events dropped by compaction.
    forgotten: Vec<Position>,
    /// Leases granted (their TTL) or revoked (`None`), the last change of each.
    leases: BTreeMap<LeaseId, Option<i64>>,
}

impl Changes {
    /// Adds one applied batch's journal.
    pub fn add(&mut self, journal: &Journal) -> EngineResult<()> {
        for e in &journal.events {
            self.events.push(Packed::of(e)?);
        }
        self.forgotten.extend_from_slice(&journal.forgotten);
        for (id, ttl) in &journal.leases_granted {
            self.leases.insert(*id, Some(*ttl));
        }
        for id in &journal.leases_revoked {
            self.leases.insert(*id, None);
        }
        Ok(())
    }

    /// How many writes this stands for (what makes a persist due sooner).
    pub(crate) fn len(&self) -> usize {
        self.events.len() + self.forgotten.len() + self.leases.len()
    }
}

/// Writes `changes` and the state machine's metadata record in one atomic engine batch: new
/// events as new chunks, and every older chunk that holds a forgotten event rewritten without
/// it (or deleted once empty). Must run after every earlier persist has been written, since it
/// reads the chunks those wrote.
pub fn persist(engine: &dyn Engine, changes: Changes, meta: Vec<u8>) -> EngineResult<()> {
    let Changes { mut events, forgotten, leases } = changes;
    let mut batch = Batch::default();
    let mut forgotten: BTreeSet<Position> = forgotten.into_iter().collect();
    // Events applied and compacted away within the same persist are never written.
    events.retain(|p| !forgotten.remove(&p.position()));
    forget(engine, &forgotten, &mut batch)?;
    pack(&events, &mut batch);
    for (id, ttl) in leases {
        match ttl {
            Some(ttl) => batch.put(keys::lease(id), seal(&(id, ttl))?),
            None => batch.delete(keys::lease(id)),
        }
    }
    batch.put(keys::STATE_MACHINE.to_vec(), meta);
    engine.write(batch)
}

/// Writes that replace the whole persisted history and every lease (installing a snapshot).
pub fn replace_all(
    engine: &dyn Engine,
    events: &[StoredEvent],
    leases: &[(LeaseId, i64)],
    batch: &mut Batch,
) -> EngineResult<()> {
    for prefix in [keys::CHUNK, keys::LEASE] {
        let (start, end) = keys::all(prefix);
        for item in engine.scan(&start, &end) {
            batch.delete(item?.0);
        }
    }
    let mut packed = events.iter().map(Packed::of).collect::<EngineResult<Vec<_>>>()?;
    packed.sort_by_key(Packed::position);
    pack(&packed, batch);
    for lease in leases {
        batch.put(keys::lease(lease.0), seal(lease)?);
    }
    Ok(())
}

/// Every persisted event, in (revision, sub) order, decoded one chunk at a time.
pub fn events(engine: &dyn Engine) -> impl Iterator<Item = EngineResult<StoredEvent>> + '_ {
    let (start, end) = keys::all(keys::CHUNK);
    engine.scan(&start, &end).flat_map(|item| {
        let decoded: EngineResult<Vec<StoredEvent>> = item.and_then(|(key, chunk)| {
            frames(&key, &chunk)?
                .into_iter()
                .map(|(_, sealed)| codec::open(sealed).map_err(|e| EngineError::corrupt(&key, e)))
                .collect()
        });
        match decoded {
            Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        }
    })
}

/// Refuses a data dir whose history is kept one record per event (the layout before chunks),
/// rather than starting as if it held nothing.
pub fn check_layout(engine: &dyn Engine) -> EngineResult<()> {
    let (start, end) = keys::all(keys::EVENT_BEFORE_CHUNKS);
    match engine.last(&start, &end)? {
        None => Ok(()),
        Some((key, _)) => Err(EngineError::corrupt(
            &key,
            "history stored one record per event, by an earlier Berth; restore a snapshot into a new data dir",
        )),
    }
}

fn pack(events: &[Packed], batch: &mut Batch) {
    let mut rest = events;
    while let Some(first) = rest.first() {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        let mut taken = 0;
        for p in rest {
            if taken > 0 && chunk.len() + FRAME_HEAD + p.sealed.len() > CHUNK_BYTES {
                break;
            }
            chunk.extend_from_slice(&p.revision.0.to_be_bytes());
            chunk.extend_from_slice(&p.sub.to_be_bytes());
            chunk.extend_from_slice(&(p.sealed.len() as u32).to_le_bytes());
            chunk.extend_from_slice(&p.sealed);
            taken += 1;
        }
        batch.put(keys::chunk(first.revision, first.sub), chunk);
        rest = &rest[taken..];
    }
}

/// A chunk that holds forgotten events: its key and bytes, the position of its last event, and
/// the events to drop.
struct Doomed {
    key: Vec<u8>,
    chunk: Vec<u8>,
    last: Position,
    gone: BTreeSet<Position>,
}

/// Rewrites the chunks that hold `forgotten` events without them. The events come in order, so
/// the chunks are found in order too, and one lookup serves every event up to the last one the
/// chunk it found holds. An event found in no chunk is already gone (nothing to do).
fn forget(engine: &dyn Engine, forgotten: &BTreeSet<Position>, batch: &mut Batch) -> EngineResult<()> {
    let (start, _) = keys::all(keys::CHUNK);
    let mut doomed: Vec<Doomed> = Vec::new();
    for &position in forgotten {
        if doomed.last().is_none_or(|d| position > d.last) {
            let mut upto = keys::chunk(position.0, position.1);
            upto.push(0);
            let Some((key, chunk)) = engine.last(&start, &upto)? else { continue };
            if doomed.last().is_none_or(|d| d.key != key) {
                let last = frames(&key, &chunk)?.last().map_or(position, |(p, _)| *p);
                doomed.push(Doomed { key, chunk, last, gone: BTreeSet::new() });
            }
        }
        if let Some(d) = doomed.last_mut() {
            d.gone.insert(position);
        }
    }
    for Doomed { key, chunk, gone, .. } in doomed {
        let mut kept = Vec::with_capacity(chunk.len());
        let mut offset = 0;
        for (position, sealed) in frames(&key, &chunk)? {
            let len = FRAME_HEAD + sealed.len();
            if !gone.contains(&position) {
                kept.extend_from_slice(&chunk[offset..offset + len]);
            }
            offset += len;
        }
        if kept.is_empty() {
            batch.delete(key);
        } else {
            batch.put(key, kept);
        }
    }
    Ok(())
}

/// The frames of a chunk: each event's position and sealed bytes.
fn frames<'a>(key: &[u8], chunk: &'a [u8]) -> EngineResult<Vec<(Position, &'a [u8])>> {
    let mut out = Vec::new();
    let mut rest = chunk;
    while !rest.is_empty() {
        let (head, body) = rest.split_at_checked(FRAME_HEAD).ok_or_else(|| EngineError::corrupt(key, "cut frame"))?;
        let revision = Revision(i64::from_be_bytes(head[..8].try_into().expect("eight bytes")));
        let sub = u32::from_be_bytes(head[8..12].try_into().expect("four bytes"));
        let len = u32::from_le_bytes(head[12..].try_into().expect("four bytes")) as usize;
        let (sealed, after) = body.split_at_checked(len).ok_or_else(|| EngineError::corrupt(key, "cut event"))?;
        out.push(((revision, sub), sealed));
        rest = after;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemoryEngine;
    use crate::mvcc::{Command, DeleteRangeRequest, KeyRange, Mvcc, PutRequest};

    fn put(key: String, value: &str) -> Command {
        let value = value.into();
        Command::Put(PutRequest {
            key: key.into_bytes(),
            value,
            lease: None,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        })
    }

    /// Applies `commands` one persist each (as the state machine would over time) and checks that
    /// what the engine holds rebuilds the same store, including the leases.
    fn persisted_equals_applied(steps: &[Vec<Command>]) {
        let engine = MemoryEngine::new();
        let mut mvcc = Mvcc::default();
        for step in steps {
            let mut changes = Changes::default();
            for command in step {
                let _ = mvcc.apply(command);
                changes.add(&mvcc.take_journal()).unwrap();
            }
            persist(&engine, changes, b"meta".to_vec()).unwrap();
        }
        let events: Vec<StoredEvent> = events(&engine).collect::<EngineResult<_>>().unwrap();
        let (start, end) = keys::all(keys::LEASE);
        let leases: Vec<(LeaseId, i64)> =
            engine.scan(&start, &end).map(|item| codec::open(&item.unwrap().1).unwrap()).collect();
        let rebuilt = Mvcc::restore(events, leases, mvcc.revision(), mvcc.compacted());
        assert_eq!(rebuilt.stored_events(), mvcc.stored_events());
        assert_eq!(rebuilt.leases(), mvcc.leases());
    }

    #[test]
    fn chunks_rebuild_the_store_across_overwrites_deletes_leases_and_compactions() {
        let value = "v".repeat(100); // about twenty events a chunk
        let mut steps = Vec::new();
        for round in 0..6 {
            let mut step = vec![Command::LeaseGrant { id: LeaseId(round + 1), ttl: 60 }];
            step.extend((0..300).map(|k| put(format!("k{:03}", (k * 7 + round) % 250), &value)));
            step.push(Command::DeleteRange(DeleteRangeRequest {
                range: KeyRange::from_wire(b"k1".to_vec(), b"k2".to_vec()),
                prev_kv: false,
            }));
            if round >= 2 {
                step.push(Command::LeaseRevoke { id: LeaseId(round - 1) });
                // Compaction forgets events in chunks written by earlier persists and in this one.
                step.push(Command::Compact { revision: Revision(250 * round) });
            }
            steps.push(step);
        }
        persisted_equals_applied(&steps);
    }

    #[test]
    fn a_compaction_in_the_same_persist_never_writes_what_it_forgets() {
        let steps = vec![vec![
            put("a".into(), "1"),
            put("a".into(), "2"),
            put("a".into(), "3"),
            Command::Compact { revision: Revision(4) },
        ]];
        persisted_equals_applied(&steps);
    }

    #[test]
    fn a_cut_chunk_is_corrupt_and_an_old_layout_is_refused() {
        let engine = MemoryEngine::new();
        let mut mvcc = Mvcc::default();
        mvcc.apply(&put("a".into(), "1")).unwrap();
        let mut changes = Changes::default();
        changes.add(&mvcc.take_journal()).unwrap();
        persist(&engine, changes, Vec::new()).unwrap();
        let (start, end) = keys::all(keys::CHUNK);
        let (key, chunk) = engine.scan(&start, &end).next().unwrap().unwrap();
        let mut batch = Batch::default();
        batch.put(key, chunk[..chunk.len() - 1].to_vec());
        engine.write(batch).unwrap();
        assert!(matches!(events(&engine).next(), Some(Err(EngineError::Corrupt { .. }))));

        assert!(check_layout(&engine).is_ok());
        let mut batch = Batch::default();
        batch.put(vec![keys::EVENT_BEFORE_CHUNKS, 0, 1], Vec::new());
        engine.write(batch).unwrap();
        assert!(matches!(check_layout(&engine), Err(EngineError::Corrupt { .. })));
    }
}
