//! An in-memory engine for tests and the deterministic simulation. It keeps what was synced
//! apart from what was only written, so [`MemoryEngine::crash`] can drop exactly the unsynced
//! writes, as a power loss would.

use super::segments::SegmentStore;
use super::{Batch, Engine, EngineError, EngineResult, KvPair};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct MemoryEngine {
    inner: Mutex<Inner>,
    segments: Arc<MemorySegments>,
}

#[derive(Default, Clone)]
struct Inner {
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Batches written since the last sync, oldest first.
    unsynced: Vec<Batch>,
    synced: BTreeMap<Vec<u8>, Vec<u8>>,
    blobs: BTreeMap<String, Vec<u8>>,
}

impl Clone for Batch {
    fn clone(&self) -> Self {
        Batch { ops: self.ops.clone() }
    }
}

fn apply(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &Batch) {
    for (key, value) in &batch.ops {
        match value {
            Some(v) => map.insert(key.clone(), v.clone()),
            None => map.remove(key),
        };
    }
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every write that was not synced, in the key space and in the log segments.
    pub fn crash(&self) {
        let mut inner = self.inner.lock().expect("engine lock");
        inner.unsynced.clear();
        inner.live = inner.synced.clone();
        self.segments.crash();
    }
}

/// Log segments in memory. Only the bytes written so far are stored (the rest of a segment's
/// capacity reads as zeros), and each segment keeps its synced content apart from its live one.
#[derive(Default)]
pub struct MemorySegments {
    segments: Mutex<BTreeMap<u64, MemorySegment>>,
}

#[derive(Default)]
struct MemorySegment {
    capacity: u64,
    live: Vec<u8>,
    synced: Vec<u8>,
    /// The lowest offset written since the last sync.
    dirty_from: Option<usize>,
}

impl MemorySegments {
    fn crash(&self) {
        for segment in self.segments.lock().expect("segments lock").values_mut() {
            segment.live = segment.synced.clone();
            segment.dirty_from = None;
        }
    }

    fn with<T>(&self, id: u64, f: impl FnOnce(&mut MemorySegment) -> EngineResult<T>) -> EngineResult<T> {
        match self.segments.lock().expect("segments lock").get_mut(&id) {
            Some(segment) => f(segment),
            None => Err(EngineError::Io(format!("no log segment {id}"))),
        }
    }
}

impl SegmentStore for MemorySegments {
    fn list(&self) -> EngineResult<Vec<u64>> {
        Ok(self.segments.lock().expect("segments lock").keys().copied().collect())
    }

    fn create(&self, id: u64, capacity: u64) -> EngineResult<()> {
        let segment = MemorySegment { capacity, ..MemorySegment::default() };
        self.segments.lock().expect("segments lock").insert(id, segment);
        Ok(())
    }

    fn read_all(&self, id: u64) -> EngineResult<Vec<u8>> {
        self.with(id, |s| {
            let mut all = s.live.clone();
            all.resize(s.capacity as usize, 0);
            Ok(all)
        })
    }

    fn read(&self, id: u64, offset: u64, len: usize) -> EngineResult<Vec<u8>> {
        self.with(id, |s| {
            let start = (offset as usize).min(s.live.len());
            let mut bytes = s.live[start..(start + len).min(s.live.len())].to_vec();
            bytes.resize(len, 0);
            Ok(bytes)
        })
    }

    fn write(&self, id: u64, offset: u64, data: &[u8]) -> EngineResult<()> {
        self.with(id, |s| {
            let (start, end) = (offset as usize, offset as usize + data.len());
            if end as u64 > s.capacity {
                return Err(EngineError::Io(format!("write past the end of log segment {id}")));
            }
            if s.live.len() < end {
                s.live.resize(end, 0);
            }
            s.live[start..end].copy_from_slice(data);
            s.dirty_from = Some(s.dirty_from.map_or(start, |from| from.min(start)));
            Ok(())
        })
    }

    fn sync(&self, id: u64) -> EngineResult<()> {
        let mut segments = self.segments.lock().expect("segments lock");
        if let Some(s) = segments.get_mut(&id) {
            if let Some(from) = s.dirty_from.take() {
                s.synced.resize(s.live.len(), 0);
                s.synced[from..].copy_from_slice(&s.live[from..]);
            }
        }
        Ok(())
    }

    fn remove(&self, id: u64) -> EngineResult<()> {
        self.segments.lock().expect("segments lock").remove(&id);
        Ok(())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.inner.lock().expect("engine lock").live.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = EngineResult<KvPair>> + '_> {
        let inner = self.inner.lock().expect("engine lock");
        let items: Vec<_> =
            inner.live.range(start.to_vec()..end.to_vec()).map(|(k, v)| Ok((k.clone(), v.clone()))).collect();
        Box::new(items.into_iter())
    }

    fn last(&self, start: &[u8], end: &[u8]) -> EngineResult<Option<KvPair>> {
        let inner = self.inner.lock().expect("engine lock");
        Ok(inner.live.range(start.to_vec()..end.to_vec()).next_back().map(|(k, v)| (k.clone(), v.clone())))
    }

    fn write(&self, batch: Batch) -> EngineResult<()> {
        let mut inner = self.inner.lock().expect("engine lock");
        apply(&mut inner.live, &batch);
        inner.unsynced.push(batch);
        Ok(())
    }

    fn sync(&self) -> EngineResult<()> {
        let mut inner = self.inner.lock().expect("engine lock");
        let pending = std::mem::take(&mut inner.unsynced);
        for batch in &pending {
            apply(&mut inner.synced, batch);
        }
        Ok(())
    }

    fn write_blob(&self, name: &str, parts: &[&[u8]]) -> EngineResult<()> {
        self.inner.lock().expect("engine lock").blobs.insert(name.to_string(), parts.concat());
        Ok(())
    }

    fn read_blob_head(&self, name: &str, len: usize) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.inner.lock().expect("engine lock").blobs.get(name).map(|b| b[..b.len().min(len)].to_vec()))
    }

    fn size_on_disk(&self) -> u64 {
        let inner = self.inner.lock().expect("engine lock");
        inner.synced.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }

    fn segments(&self) -> Arc<dyn SegmentStore> {
        self.segments.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loses_exactly_the_unsynced_writes() {
        let e = MemoryEngine::new();
        let mut b = Batch::default();
        b.put(b"a".to_vec(), b"1".to_vec());
        e.write(b).unwrap();
        e.sync().unwrap();
        let mut b = Batch::default();
        b.put(b"b".to_vec(), b"2".to_vec());
        b.delete(b"a".to_vec());
        e.write(b).unwrap();
        assert_eq!(e.get(b"a").unwrap(), None);
        e.crash();
        assert_eq!(e.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(b"b").unwrap(), None);
    }

    #[test]
    fn crash_loses_exactly_the_unsynced_segment_bytes() {
        let e = MemoryEngine::new();
        let segments = e.segments();
        segments.create(1, 64).unwrap();
        segments.write(1, 0, b"durable").unwrap();
        segments.sync(1).unwrap();
        segments.write(1, 7, b"-lost").unwrap();
        assert_eq!(segments.read(1, 0, 12).unwrap(), b"durable-lost");
        e.crash();
        assert_eq!(segments.read(1, 0, 12).unwrap(), b"durable\0\0\0\0\0");
        assert_eq!(segments.read_all(1).unwrap().len(), 64);
        assert!(segments.write(1, 60, b"too long").is_err());
    }
}
