//! The narrow storage interface the API server is written against: ranges, compare-and-swap
//! writes on `mod_revision`, and watches from a revision. Everything Kubernetes-specific (keys,
//! JSON, resourceVersions) lives above it, so the same API server runs on the local member, on
//! a remote Berth cluster or on a real etcd.

pub mod etcd;
#[cfg(test)]
pub mod memory;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

/// A store revision (etcd's `int64` revision; the store starts at 1).
pub type Revision = i64;

/// One key as read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: Revision,
}

/// One page of a range read.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// The store revision the page was read at.
    pub revision: Revision,
    /// More keys follow the last one returned.
    pub more: bool,
}

/// A change to one key, as a watch reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put { entry: Entry, prev: Option<Entry> },
    Delete { key: String, revision: Revision, prev: Option<Entry> },
}

/// What one watch response carries: changes (all of one or more whole revisions) or, when
/// `changes` is empty, a progress notification saying nothing up to `revision` was missed.
#[derive(Clone, Debug, Default)]
pub struct WatchBatch {
    pub revision: Revision,
    pub changes: Vec<Change>,
}

pub type WatchStream = BoxStream<'static, Result<WatchBatch, StorageError>>;

/// One conditional write of a [`Storage::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Write `key` only if it does not exist.
    Create { key: String, value: Vec<u8> },
    /// Write `key` only if its mod revision is still `expected`.
    Update { key: String, value: Vec<u8>, expected: Revision },
    /// Delete `key` only if its mod revision is still `expected`.
    Delete { key: String, expected: Revision },
}

impl Write {
    pub fn key(&self) -> &str {
        match self {
            Write::Create { key, .. } | Write::Update { key, .. } | Write::Delete { key, .. } => key,
        }
    }

    /// Whether the condition holds for what the key holds now (`None`: missing).
    pub fn holds(&self, current: Option<&Entry>) -> bool {
        match (self, current) {
            (Write::Create { .. }, current) => current.is_none(),
            (Write::Update { expected, .. } | Write::Delete { expected, .. }, Some(e)) => e.mod_revision == *expected,
            (_, None) => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// A compare-and-swap failed on `key`; `current` is what that key holds now.
    #[error("the object was modified concurrently")]
    Conflict { key: String, current: Option<Entry> },
    #[error("required revision has been compacted (compacted at {compact_revision})")]
    Compacted { compact_revision: Revision },
    #[error("required revision is a future revision")]
    FutureRevision,
    /// No quorum, no leader, timed out, connection refused: the outcome of a write is unknown.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Internal(String),
}

/// The store as the API server needs it. Keys are UTF-8 (`/registry/...`).
pub trait Storage: Send + Sync + 'static {
    /// Reads one key at the current revision; also returns that revision.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<(Option<Entry>, Revision), StorageError>>;
    /// Reads up to `limit` keys (0 = no limit) under `prefix`, starting at `start` (inclusive;
    /// empty = the prefix itself), at `revision` (0 = current).
    fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: i64,
        revision: Revision,
    ) -> BoxFuture<'_, Result<Page, StorageError>>;
    /// Applies every write, atomically and at one revision, if every condition holds; else
    /// nothing, and the error names the first write whose condition failed. Returns the new
    /// revision. Keys must be distinct.
    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Revision, StorageError>>;
    /// Writes `key` only if it does not exist; returns the new revision.
    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<Revision, StorageError>> {
        self.commit(vec![Write::Create { key: key.to_string(), value }])
    }
    /// Writes `key` only if its mod revision is still `expected`; returns the new revision.
    fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> BoxFuture<'_, Result<Revision, StorageError>> {
        self.commit(vec![Write::Update { key: key.to_string(), value, expected }])
    }
    /// Deletes `key` only if its mod revision is still `expected`; returns the new revision.
    fn delete(&self, key: &str, expected: Revision) -> BoxFuture<'_, Result<Revision, StorageError>> {
        self.commit(vec![Write::Delete { key: key.to_string(), expected }])
    }
    /// Streams every change under `prefix` with a revision greater than `after`, plus progress
    /// notifications. The first item is an error if `after` is compacted.
    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, Result<WatchStream, StorageError>>;
}

/// The end of the key range holding every key that starts with `prefix` (etcd's convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // An all-0xff prefix: every key from it on ("\0" = no upper bound).
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
