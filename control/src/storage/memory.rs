//! An in-memory [`Storage`] for unit tests of the API shell: etcd's revision rules (one
//! revision per commit, mod revisions per key) without a store process. No watches.

use super::{Entry, Page, Revision, Storage, StorageError, WatchStream, Write};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    revision: Revision,
    keys: BTreeMap<String, Entry>,
}

impl MemoryStorage {
    /// Every key and value, for assertions.
    pub fn dump(&self) -> BTreeMap<String, serde_json::Value> {
        let state = self.state.lock().unwrap();
        state.keys.iter().map(|(k, e)| (k.clone(), serde_json::from_slice(&e.value).unwrap_or_default())).collect()
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<(Option<Entry>, Revision), StorageError>> {
        let state = self.state.lock().unwrap();
        let result = Ok((state.keys.get(key).cloned(), state.revision));
        async move { result }.boxed()
    }

    fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: i64,
        revision: Revision,
    ) -> BoxFuture<'_, Result<Page, StorageError>> {
        let state = self.state.lock().unwrap();
        let from = if start.is_empty() { prefix } else { start };
        let mut entries: Vec<Entry> = state
            .keys
            .range(from.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect();
        let more = limit > 0 && entries.len() as i64 > limit;
        if more {
            entries.truncate(limit as usize);
        }
        let page = Page { entries, revision: if revision > 0 { revision } else { state.revision }, more };
        async move { Ok(page) }.boxed()
    }

    fn commit(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Revision, StorageError>> {
        let mut state = self.state.lock().unwrap();
        let result = match writes.iter().find(|w| !w.holds(state.keys.get(w.key()))) {
            Some(w) => {
                Err(StorageError::Conflict { key: w.key().to_string(), current: state.keys.get(w.key()).cloned() })
            }
            None => {
                state.revision += 1;
                let revision = state.revision;
                for w in writes {
                    match w {
                        Write::Create { key, value } | Write::Update { key, value, .. } => {
                            state.keys.insert(key.clone(), Entry { key, value, mod_revision: revision });
                        }
                        Write::Delete { key, .. } => {
                            state.keys.remove(&key);
                        }
                    }
                }
                Ok(revision)
            }
        };
        async move { result }.boxed()
    }

    fn watch(&self, _prefix: &str, _after: Revision) -> BoxFuture<'_, Result<WatchStream, StorageError>> {
        async { Err(StorageError::Internal("the in-memory test store has no watches".into())) }.boxed()
    }
}
