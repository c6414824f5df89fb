//! The watch hub of one member: the [`WatcherSet`] behind a mutex, the wake-up signal of each
//! stream, the bound on concurrent history reads, and the shutdown signal.
//!
//! Lock order: the state machine's state lock, then the hub's mutex — never the other way round.
//! The state machine publishes each batch (and a snapshot install) while it still holds the
//! state write lock, so whenever a reader holds the state lock the hub has seen exactly the
//! batches the store has applied. Catch-up relies on that to rejoin the live path without a gap.
//! Nothing here waits on a client: publishing only queues and wakes.

use super::core::{CatchUp, Limits, StreamId, WatcherSet, Work};
use crate::error::StoreError;
use crate::ids::Revision;
use crate::mvcc::{Event, Mvcc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};

/// etcd's default `--experimental-watch-progress-notify-interval`.
pub const DEFAULT_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// etcd refuses shorter progress intervals too; it keeps a misconfiguration from flooding.
pub const MIN_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_millis(100);

/// History reads (catch-up steps) running at once on a member. Each materialises a watcher's
/// history under the store's read lock, so their number bounds both memory and writer stalls.
const CATCH_UP_CONCURRENCY: usize = 2;

#[derive(Clone, Debug)]
pub struct WatchConfig {
    pub limits: Limits,
    pub progress_notify_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { limits: Limits::default(), progress_notify_interval: DEFAULT_PROGRESS_NOTIFY_INTERVAL }
    }
}

struct Inner {
    set: WatcherSet,
    wakers: BTreeMap<StreamId, Arc<Notify>>,
}

pub struct WatchHub {
    inner: Mutex<Inner>,
    catch_up: Semaphore,
    progress_interval_ms: AtomicU64,
    closed: watch::Sender<bool>,
}

impl WatchHub {
    /// A hub for a store at `revision`.
    pub fn new(revision: Revision, config: WatchConfig) -> WatchHub {
        let hub = WatchHub {
            inner: Mutex::new(Inner { set: WatcherSet::new(revision, config.limits), wakers: BTreeMap::new() }),
            catch_up: Semaphore::new(CATCH_UP_CONCURRENCY),
            progress_interval_ms: AtomicU64::new(0),
            closed: watch::channel(false).0,
        };
        hub.set_progress_notify_interval(config.progress_notify_interval);
        hub
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a broken invariant of the core; nothing can be
        // trusted after it, so the poison is propagated.
        self.inner.lock().expect("watch hub lock poisoned")
    }

    /// Hands one applied, persisted batch to the watchers. Call with the state write lock held,
    /// `revision` being the store's revision after the batch.
    pub fn publish(&self, revision: Revision, events: Vec<Event>) {
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let mut inner = self.lock();
        let wake = inner.set.publish(revision, &events);
        for stream in wake {
            if let Some(notify) = inner.wakers.get(&stream) {
                notify.notify_one();
            }
        }
    }

    /// The store was replaced by a snapshot at `revision` (call with the state write lock held):
    /// every watcher continues from history or is canceled if that history is compacted.
    pub fn restore(&self, revision: Revision) {
        let mut inner = self.lock();
        let wake = inner.set.restore(revision);
        for stream in wake {
            if let Some(notify) = inner.wakers.get(&stream) {
                notify.notify_one();
            }
        }
    }

    /// Ends every watch stream (member shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    pub(crate) fn closed_signal(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Period of the progress notifications of watchers that ask for them (etcd:
    /// `--experimental-watch-progress-notify-interval`). Applies to streams opened afterwards.
    /// Values below [`MIN_PROGRESS_NOTIFY_INTERVAL`] are raised to it, as etcd does.
    pub fn set_progress_notify_interval(&self, interval: Duration) {
        let interval = interval.max(MIN_PROGRESS_NOTIFY_INTERVAL);
        self.progress_interval_ms.store(interval.as_millis().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn progress_notify_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms.load(Ordering::Relaxed))
    }

    pub fn watcher_count(&self) -> usize {
        self.lock().set.watcher_count()
    }

    /// Watchers currently catching up from history.
    pub fn unsynced_count(&self) -> usize {
        self.lock().set.unsynced_count()
    }

    pub(crate) fn open_stream(&self) -> (StreamId, Arc<Notify>) {
        let mut inner = self.lock();
        let id = inner.set.open_stream();
        let notify = Arc::new(Notify::new());
        inner.wakers.insert(id, notify.clone());
        (id, notify)
    }

    pub(crate) fn close_stream(&self, stream: StreamId) {
        let mut inner = self.lock();
        inner.set.close_stream(stream);
        inner.wakers.remove(&stream);
    }

    /// Runs `f` on the watcher set under the hub's lock.
    pub(crate) fn with_set<R>(&self, f: impl FnOnce(&mut WatcherSet) -> R) -> R {
        f(&mut self.lock().set)
    }

    /// One catch-up step for a [`Work::CatchUp`] watcher: reads its history from `mvcc` (the
    /// caller holds the state lock, which is what makes rejoining the live path gap-free).
    pub(crate) fn catch_up_step(&self, mvcc: &Mvcc, stream: StreamId, work: &Work) -> Option<Work> {
        let Work::CatchUp { id, range, from } = work else { return None };
        let limit = self.with_set(|set| set.catch_up_limit());
        let step = match mvcc.events_since(range, *from, limit) {
            Ok((events, through)) => CatchUp::History { events, through, current: mvcc.revision() },
            Err(StoreError::Compacted) => CatchUp::Compacted(mvcc.compacted()),
            Err(other) => {
                // `events_since` fails only for compaction today; anything else is treated as a
                // history the watcher cannot have, which cancels it rather than skipping events.
                tracing::error!("reading watch history failed: {other}");
                CatchUp::Compacted(mvcc.compacted())
            }
        };
        self.with_set(|set| set.finish_catch_up(stream, *id, step))
    }

    /// Waits for a free catch-up slot.
    pub(crate) async fn catch_up_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.catch_up.acquire().await.expect("the catch-up semaphore is never closed")
    }
}
