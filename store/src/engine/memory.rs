//! An in-memory engine for tests and the deterministic simulation. It keeps what was synced
//! apart from what was only written, so [`MemoryEngine::crash`] can drop exactly the unsynced
//! writes, as a power loss would.

use super::{Batch, Engine, EngineResult, KvPair};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryEngine {
    inner: Mutex<Inner>,
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

    /// Forgets every write that was not synced.
    pub fn crash(&self) {
        let mut inner = self.inner.lock().expect("engine lock");
        inner.unsynced.clear();
        inner.live = inner.synced.clone();
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

    fn write_blob(&self, name: &str, data: &[u8]) -> EngineResult<()> {
        self.inner.lock().expect("engine lock").blobs.insert(name.to_string(), data.to_vec());
        Ok(())
    }

    fn read_blob(&self, name: &str) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.inner.lock().expect("engine lock").blobs.get(name).cloned())
    }

    fn size_on_disk(&self) -> u64 {
        let inner = self.inner.lock().expect("engine lock");
        inner.synced.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum()
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
}
