//! The production engine: one sled tree (so a batch is atomic), snapshot files and the Raft
//! log's segment files. `sync` is sled's `flush`, which fsyncs the whole database: costly, so
//! the write path syncs only the log segments and sled is synced before the log is purged.
//!
//! sled's page cache does not keep to its capacity: its LRU looks at a shard's accesses only
//! once 64 of them are queued, and with 256 shards a full read leaves nearly every page it touched
//! cached (a member that read a million keys' history at start-up kept 300 MiB of it). The
//! database is therefore reopened after such a read ([`Engine::release_cache`]), which is the only
//! way sled lets go of its cache.

use super::segments::{FileSegments, SegmentStore};
use super::{Batch, Engine, EngineError, EngineResult, KvPair};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Reopening the database retries this often, this far apart (5 s in all), while the closed one
/// still holds its lock.
const REOPEN_ATTEMPTS: u32 = 1000;
const REOPEN_PAUSE: Duration = Duration::from_millis(5);

pub struct SledEngine {
    /// Behind a lock only so that [`Engine::release_cache`] can close the database and open it
    /// again; every other use takes a cheap clone (sled's handles are reference counted). `None`
    /// only if reopening failed.
    db: RwLock<Option<sled::Db>>,
    blob_dir: PathBuf,
    dir: PathBuf,
    segments: Arc<FileSegments>,
}

fn io(e: impl std::fmt::Display) -> EngineError {
    EngineError::Io(e.to_string())
}

impl SledEngine {
    /// Opens (or creates) the engine under `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> EngineResult<SledEngine> {
        let blob_dir = dir.join("snap");
        fs::create_dir_all(&blob_dir).map_err(|e| io(format!("cannot create {}: {e}", blob_dir.display())))?;
        let db = open_db(dir)?;
        let segments = Arc::new(FileSegments::open(&dir.join("wal"))?);
        Ok(SledEngine { db: RwLock::new(Some(db)), blob_dir, dir: dir.to_path_buf(), segments })
    }

    fn db(&self) -> EngineResult<sled::Db> {
        let db = self.db.read().expect("sled handle lock poisoned").clone();
        db.ok_or_else(|| io(format!("the database in {} is closed: reopening it failed", self.dir.display())))
    }
}

fn open_db(dir: &Path) -> EngineResult<sled::Db> {
    sled::Config::new()
        .path(dir.join("db"))
        // sled keeps every write that it has not flushed in memory, so its own flusher writes
        // them out every second, as etcd's backend commits every 100 ms. Nothing waits on it:
        // acknowledged writes are durable in the log, which the state machine's persisted state
        // only shortens (explicit syncs come before the log is purged).
        .flush_every_ms(Some(1000))
        // Requests are never served from here: the applied state is in memory, and sled is read
        // only at start-up and when an installed snapshot replaces its content. A large page
        // cache would only hold a second copy of the data (and sled counts the capacity in
        // on-disk bytes, while its in-memory nodes take more than that).
        .cache_capacity(4 * 1024 * 1024)
        .open()
        .map_err(|e| io(format!("cannot open the database in {}: {e}", dir.display())))
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.db()?.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = EngineResult<KvPair>> + '_> {
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(db.range(start..end).map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(io)))
    }

    fn last(&self, start: &[u8], end: &[u8]) -> EngineResult<Option<KvPair>> {
        match self.db()?.range(start..end).next_back() {
            Some(r) => r.map(|(k, v)| Some((k.to_vec(), v.to_vec()))).map_err(io),
            None => Ok(None),
        }
    }

    fn write(&self, batch: Batch) -> EngineResult<()> {
        let mut b = sled::Batch::default();
        for (key, value) in batch.ops {
            match value {
                Some(v) => b.insert(key, v),
                None => b.remove(key),
            }
        }
        self.db()?.apply_batch(b).map_err(io)
    }

    fn sync(&self) -> EngineResult<()> {
        self.db()?.flush().map(|_| ()).map_err(io)
    }

    fn release_cache(&self) -> EngineResult<()> {
        let mut db = self.db.write().expect("sled handle lock poisoned");
        if let Some(open) = db.take() {
            let flushed = open.flush();
            // Closed here, before it opens again: an open database holds the directory's lock.
            drop(open);
            flushed.map_err(io)?;
        }
        // sled's IO threads may still hold the closed database (and its lock) for a moment. sled
        // reports a held lock only as a message, so any failure to open is retried; a lasting one
        // is reported once the attempts run out.
        let mut attempt = 1;
        let reopened = loop {
            match open_db(&self.dir) {
                Ok(reopened) => break reopened,
                Err(_) if attempt < REOPEN_ATTEMPTS => std::thread::sleep(REOPEN_PAUSE),
                Err(e) => return Err(e),
            }
            attempt += 1;
        };
        *db = Some(reopened);
        Ok(())
    }

    fn write_blob(&self, name: &str, parts: &[&[u8]]) -> EngineResult<()> {
        write_file_durably(&self.blob_dir.join(name), parts).map_err(io)
    }

    fn read_blob_head(&self, name: &str, len: usize) -> EngineResult<Option<Vec<u8>>> {
        let file = match fs::File::open(self.blob_dir.join(name)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let size = file.metadata().map_err(io)?.len();
        let mut data = Vec::with_capacity(size.min(len as u64) as usize);
        file.take(len as u64).read_to_end(&mut data).map_err(io)?;
        Ok(Some(data))
    }

    fn size_on_disk(&self) -> u64 {
        dir_size(&self.dir.join("db"))
    }

    fn segments(&self) -> Arc<dyn SegmentStore> {
        self.segments.clone()
    }
}

/// Replaces `path` with `data` so that a crash leaves either the old or the new content: write
/// aside, fsync, rename over, fsync the directory.
pub fn write_file_durably(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|d| d.sync_all())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(engine: &SledEngine) -> Vec<KvPair> {
        engine.scan(b"", &[0xff]).collect::<EngineResult<_>>().unwrap()
    }

    /// Reopening to drop the cache loses nothing, not even writes sled had not flushed yet, and
    /// the engine takes writes after it as before.
    #[test]
    fn releasing_the_cache_keeps_every_record_and_the_engine_usable() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        batch.put(b"a".to_vec(), b"1".to_vec());
        batch.put(b"b".to_vec(), b"2".to_vec());
        engine.write(batch).unwrap();
        engine.release_cache().unwrap();
        assert_eq!(pairs(&engine), vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);

        let mut batch = Batch::default();
        batch.delete(b"a".to_vec());
        batch.put(b"c".to_vec(), b"3".to_vec());
        engine.write(batch).unwrap();
        // Reopened again and again right after writes, it keeps every one of them.
        for round in 0..20u8 {
            let mut batch = Batch::default();
            batch.put(vec![b'r', round], vec![round; 4096]);
            engine.write(batch).unwrap();
            engine.release_cache().unwrap();
        }
        engine.sync().unwrap();
        assert_eq!(engine.get(b"c").unwrap(), Some(b"3".to_vec()));
        drop(engine);
        let reopened = SledEngine::open(dir.path()).unwrap();
        let kept: Vec<Vec<u8>> = pairs(&reopened).into_iter().map(|(key, _)| key).collect();
        let mut expected = vec![b"b".to_vec(), b"c".to_vec()];
        expected.extend((0..20u8).map(|round| vec![b'r', round]));
        assert_eq!(kept, expected);
    }
}
