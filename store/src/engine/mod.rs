//! Where the store's bytes become durable. One ordered key space per member holds the state
//! machine (prefixes in [`keys`]), so a single atomic batch can update data together with the
//! metadata that describes it. Beside it: the Raft log in append-only [`segments`], and
//! snapshots as blobs.
//!
//! Production uses [`SledEngine`]; the simulation and unit tests use [`MemoryEngine`], which
//! survives a simulated crash and loses exactly what was not synced.

pub mod keys;
mod memory;
pub mod segments;
mod sled_engine;

pub use memory::{MemoryEngine, MemorySegments};
pub use segments::{FileSegments, SegmentStore};
pub use sled_engine::{write_file_durably, SledEngine};

use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("storage error: {0}")]
    Io(String),
    #[error("corrupt data under key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl EngineError {
    pub fn corrupt(key: &[u8], reason: impl ToString) -> Self {
        EngineError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason: reason.to_string() }
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

/// Seals a record for the engine ([`crate::codec::seal`]); a value that cannot be encoded is
/// an IO error (nothing was written).
pub fn seal<T: serde::Serialize + ?Sized>(value: &T) -> EngineResult<Vec<u8>> {
    crate::codec::seal(value).map_err(|e| EngineError::Io(e.to_string()))
}

pub type KvPair = (Vec<u8>, Vec<u8>);

/// An atomic group of writes.
#[derive(Debug, Default)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of writes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> EngineResult<Option<Vec<u8>>>;

    /// Entries with `start <= key < end`, in key order.
    fn scan(&self, start: &[u8], end: &[u8]) -> Box<dyn Iterator<Item = EngineResult<KvPair>> + '_>;

    /// The entry with the greatest key in `[start, end)`.
    fn last(&self, start: &[u8], end: &[u8]) -> EngineResult<Option<KvPair>>;

    /// Applies every write of the batch or none of them. Not durable until [`Engine::sync`].
    fn write(&self, batch: Batch) -> EngineResult<()>;

    /// Makes every write so far durable (fsync).
    fn sync(&self) -> EngineResult<()>;

    /// Replaces a named blob with the concatenation of `parts`; durable when it returns.
    fn write_blob(&self, name: &str, parts: &[&[u8]]) -> EngineResult<()>;

    fn read_blob(&self, name: &str) -> EngineResult<Option<Vec<u8>>> {
        self.read_blob_head(name, usize::MAX)
    }

    /// At most the first `len` bytes of a named blob (a header, without reading the rest).
    fn read_blob_head(&self, name: &str, len: usize) -> EngineResult<Option<Vec<u8>>>;

    /// Bytes the key-value database takes on disk (`Status.dbSize`: as in etcd, the backend
    /// database, not the log or snapshots).
    fn size_on_disk(&self) -> u64;

    /// Lets go of what reading the whole key space left cached (start-up reads all of it). Only
    /// while nothing else uses the engine: an iterator still open keeps the database from
    /// closing, and the call then fails.
    fn release_cache(&self) -> EngineResult<()> {
        Ok(())
    }

    /// The log segments kept beside the key space (see [`segments`]).
    fn segments(&self) -> Arc<dyn SegmentStore>;
}

pub type SharedEngine = Arc<dyn Engine>;
