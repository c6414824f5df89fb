//! The watcher bookkeeping of one member, as a pure state machine: which watchers exist on which
//! stream, which are *synced* (fed live from each applied batch) and which are *unsynced*
//! (catching up from MVCC history), what each one has queued, and what a stream should send next.
//! No IO, clocks, locks or tasks here; [`super::hub`] drives it.
//!
//! The revision arithmetic that makes the etcd guarantees hold:
//! - A synced watcher receives every applied batch (filtered to its range), so its queue always
//!   holds whole revisions in order. `next_rev` is then only a floor (a start revision in the
//!   future).
//! - An unsynced watcher has delivered (or queued) every event below `next_rev` and nothing at
//!   or above it; catch-up reads history from `next_rev`. It rejoins the synced set only with the
//!   store locked against writers, at exactly the revision its history read ended, so no batch
//!   can fall between the two paths.
//! - Every response carries a `through` revision: the watcher has been sent every one of its
//!   events up to and including it. That is the header revision clients resume from
//!   (`through + 1`), so it must never run ahead of what was sent.
//! - Per-watcher queues and the total of all queues are bounded; a push that would exceed
//!   a bound moves the watcher to catch-up instead of blocking the writer or dropping events.

use crate::ids::Revision;
use crate::mvcc::{Event, EventKind, KeyRange, RangeEnd};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

/// A watch stream (one gRPC `Watch` call) of this member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// A watcher's id, unique within its stream; what clients see as `watch_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub i64);

impl WatchId {
    /// etcd's `InvalidWatchID`: the id of a failed create and of a progress notification that
    /// speaks for every watcher of the stream.
    pub const NONE: WatchId = WatchId(-1);
    /// A create request with this id asks the server to choose one.
    pub const AUTO: i64 = 0;
}

impl fmt::Display for WatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

type WatcherKey = (StreamId, WatchId);

/// Limits that keep memory bounded whatever clients do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Events queued for one watcher. A full queue sends the watcher to catch-up.
    pub watcher_queue_events: usize,
    /// Bytes (estimated, see [`event_bytes`]) queued for one watcher.
    pub watcher_queue_bytes: usize,
    /// Bytes queued for all watchers together. Shared events are counted once per watcher, so
    /// this over-estimates real memory; it is the bound that holds with 10,000 watchers.
    pub total_queue_bytes: usize,
    /// Watchers on this member (all streams).
    pub max_watchers: usize,
    /// Events one catch-up step hands to a stream (whole revisions: one revision may exceed it).
    pub catch_up_events: usize,
    /// Queued deliveries are merged into one response up to this many bytes.
    pub response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            watcher_queue_events: 4096,
            watcher_queue_bytes: 1024 * 1024,
            total_queue_bytes: 64 * 1024 * 1024,
            max_watchers: 100_000,
            catch_up_events: 4096,
            response_bytes: 1024 * 1024,
        }
    }
}

/// etcd's NOPUT / NODELETE filters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub no_put: bool,
    pub no_delete: bool,
}

impl Filters {
    pub fn passes(&self, e: &Event) -> bool {
        match e.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

/// What a watcher watches and how it wants it delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    pub range: KeyRange,
    pub filters: Filters,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
}

/// Why a create request failed; the text is etcd's `cancel_reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// etcd answers a negative start revision as if it were compacted.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    NegativeStart,
    #[error("etcdserver: too many watchers")]
    TooManyWatchers,
    #[error("etcdserver: watch stream not found")]
    NoStream,
}

/// Something a stream must send, in this order, for one watcher (or for all of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Events of whole revisions; the watcher has now been sent everything through `through`.
    Events { id: WatchId, through: Revision, events: Vec<Arc<Event>>, prev_kv: bool, fragment: bool },
    /// No events; every later event of `id` (of every watcher when `id` is [`WatchId::NONE`]) has
    /// a revision above `revision`.
    Progress { id: WatchId, revision: Revision },
    /// The watcher needs history it cannot get any more: canceled, with the compacted revision.
    Compacted { id: WatchId, compact_revision: Revision },
    /// The watcher cannot be served (the hub lost track of the store): canceled with a reason.
    Failed { id: WatchId, reason: String },
    /// The watcher's queue is drained and it is behind: read its history and call
    /// [`WatcherSet::finish_catch_up`].
    CatchUp { id: WatchId, range: KeyRange, from: Revision },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Payload {
    Events(Vec<Arc<Event>>),
    Progress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Delivery {
    payload: Payload,
    through: Revision,
    bytes: usize,
}

#[derive(Clone, Debug)]
struct Watcher {
    spec: WatchSpec,
    /// Synced: events below it are skipped (a future start revision). Unsynced: the first
    /// revision not yet delivered or queued.
    next_rev: Revision,
    synced: bool,
    queue: VecDeque<Delivery>,
    queued_events: usize,
    queued_bytes: usize,
    /// Through which revision this watcher's events have been handed to its stream.
    sent_through: Revision,
    /// etcd's progress flag: no events were sent since the last progress tick.
    progress_due: bool,
}

impl Watcher {
    /// Every later event of this watcher has a revision above this one (capped at `current`).
    fn covered_through(&self, current: Revision) -> Revision {
        let raw = if !self.queue.is_empty() {
            self.sent_through
        } else if self.synced {
            current
        } else {
            Revision(self.next_rev.0 - 1)
        };
        raw.min(current)
    }
}

#[derive(Clone, Debug, Default)]
struct Stream {
    next_auto_id: i64,
    /// Watchers with something queued.
    ready: BTreeSet<WatchId>,
    /// Unsynced watchers with nothing queued: they need a catch-up step.
    lagging: BTreeSet<WatchId>,
    /// Where the last delivery came from, so that busy watchers take turns.
    cursor: Option<WatchId>,
    /// A `WatchProgressRequest` waits for every watcher to be covered through this revision.
    progress_pending: Option<Revision>,
    watchers: usize,
}

/// The result of reading one catch-up step from history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// The events with revision `>= from` in the watcher's range, in order, unfiltered, as far
    /// as the store read them: complete through `through` (the store's revision `current` when
    /// it read everything, less when it stopped at its read limit).
    History { events: Vec<Event>, through: Revision, current: Revision },
    /// The history from `from` is compacted up to this revision.
    Compacted(Revision),
}

/// One catch-up step: whole revisions, at most about `limit` events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatchUpPlan {
    pub events: Vec<Event>,
    /// The watcher is covered through here after sending `events`.
    pub through: Revision,
    /// Nothing is left to read: the watcher can rejoin the synced set.
    pub complete: bool,
}

/// Filters `history` (complete through `through`) and cuts a prefix of whole revisions with at
/// most `limit` events (or one revision, if that alone is larger).
pub fn plan_catch_up(history: Vec<Event>, filters: Filters, through: Revision, limit: usize) -> CatchUpPlan {
    let mut events = Vec::new();
    let mut rest = history.into_iter().filter(|e| filters.passes(e)).peekable();
    while let Some(next) = rest.peek() {
        let rev = next.kv.mod_revision;
        let same_revision = events.last().is_some_and(|e: &Event| e.kv.mod_revision == rev);
        if events.len() >= limit.max(1) && !same_revision {
            return CatchUpPlan { events, through: Revision(rev.0 - 1), complete: false };
        }
        events.extend(rest.next());
    }
    CatchUpPlan { events, through, complete: true }
}

/// Estimated memory of a queued event: its bytes plus a fixed overhead for the allocations.
pub fn event_bytes(e: &Event) -> usize {
    const OVERHEAD: usize = 96;
    let kv = e.kv.key.len() + e.kv.value.len();
    let prev = e.prev_kv.as_ref().map_or(0, |p| p.key.len() + p.value.len());
    OVERHEAD + kv + prev
}

/// Every watcher of a member and the index that routes applied events to the synced ones.
#[derive(Debug)]
pub struct WatcherSet {
    limits: Limits,
    /// The last revision published to the set (equals the store's revision whenever the store
    /// is not being written).
    revision: Revision,
    watchers: BTreeMap<WatcherKey, Watcher>,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: u64,
    /// Synced single-key watchers by key.
    single: BTreeMap<Vec<u8>, BTreeSet<WatcherKey>>,
    /// Synced range watchers.
    ranged: BTreeSet<WatcherKey>,
    total_bytes: usize,
}

impl WatcherSet {
    /// How many events one catch-up step reads at most (about: revisions stay whole).
    pub fn catch_up_limit(&self) -> usize {
        self.limits.catch_up_events
    }

    pub fn new(revision: Revision, limits: Limits) -> Self {
        WatcherSet {
            limits,
            revision,
            watchers: BTreeMap::new(),
            streams: BTreeMap::new(),
            next_stream: 0,
            single: BTreeMap::new(),
            ranged: BTreeSet::new(),
            total_bytes: 0,
        }
    }

    pub fn revision(&self) -> Revision {
        self.revision
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    pub fn unsynced_count(&self) -> usize {
        self.watchers.values().filter(|w| !w.synced).count()
    }

    /// Bytes queued for all watchers together; never above [`Limits::total_queue_bytes`].
    pub fn queued_bytes(&self) -> usize {
        self.total_bytes
    }

    pub fn open_stream(&mut self) -> StreamId {
        let id = StreamId(self.next_stream);
        self.next_stream += 1;
        self.streams.insert(id, Stream::default());
        id
    }

    /// Drops a stream and every watcher on it.
    pub fn close_stream(&mut self, stream: StreamId) {
        let ids: Vec<WatcherKey> = self.keys_of(stream).collect();
        for key in ids {
            self.remove(key);
        }
        self.streams.remove(&stream);
    }

    fn keys_of(&self, stream: StreamId) -> impl Iterator<Item = WatcherKey> + '_ {
        self.watchers.range((stream, WatchId(i64::MIN))..=(stream, WatchId(i64::MAX))).map(|(k, _)| *k)
    }

    /// Creates a watcher. `start_revision` follows etcd: 0 = after the current revision.
    /// Returns the id and the revision the `created` response carries.
    pub fn create(
        &mut self,
        stream: StreamId,
        requested: i64,
        spec: WatchSpec,
        start_revision: i64,
    ) -> Result<(WatchId, Revision), CreateError> {
        if start_revision < 0 {
            return Err(CreateError::NegativeStart);
        }
        if spec.range.is_empty() {
            return Err(CreateError::EmptyRange);
        }
        if self.watchers.len() >= self.limits.max_watchers {
            return Err(CreateError::TooManyWatchers);
        }
        let s = self.streams.get_mut(&stream).ok_or(CreateError::NoStream)?;
        let id = if requested == WatchId::AUTO {
            // etcd: ids count up from 0 per stream, skipping ones the client chose.
            while self.watchers.contains_key(&(stream, WatchId(s.next_auto_id))) {
                s.next_auto_id += 1;
            }
            s.next_auto_id += 1;
            WatchId(s.next_auto_id - 1)
        } else if self.watchers.contains_key(&(stream, WatchId(requested))) {
            return Err(CreateError::DuplicateId);
        } else {
            WatchId(requested)
        };
        // As etcd: a start at or below the current revision replays history; anything else
        // (0 = "from now", or a future revision) is fed live from the next batch on.
        let (synced, next_rev) = match start_revision {
            0 => (true, self.revision.next()),
            s if s > self.revision.0 => (true, Revision(s)),
            s => (false, Revision(s)),
        };
        let watcher = Watcher {
            spec,
            next_rev,
            synced,
            queue: VecDeque::new(),
            queued_events: 0,
            queued_bytes: 0,
            sent_through: Revision(next_rev.0 - 1),
            progress_due: true,
        };
        s.watchers += 1;
        if !synced {
            s.lagging.insert(id);
        }
        let key = (stream, id);
        self.watchers.insert(key, watcher);
        if synced {
            self.index(key);
        }
        Ok((id, self.revision))
    }

    /// Removes a watcher; false if the stream has no watcher with that id.
    pub fn cancel(&mut self, stream: StreamId, id: WatchId) -> bool {
        self.remove((stream, id))
    }

    fn remove(&mut self, key: WatcherKey) -> bool {
        let Some(w) = self.watchers.remove(&key) else { return false };
        if w.synced {
            self.unindex(key, &w.spec.range);
        }
        self.total_bytes -= w.queued_bytes;
        if let Some(s) = self.streams.get_mut(&key.0) {
            s.watchers -= 1;
            s.ready.remove(&key.1);
            s.lagging.remove(&key.1);
        }
        true
    }

    fn index(&mut self, key: WatcherKey) {
        let range = &self.watchers[&key].spec.range;
        match range.end {
            RangeEnd::Single => {
                self.single.entry(range.start.clone()).or_default().insert(key);
            }
            _ => {
                self.ranged.insert(key);
            }
        }
    }

    fn unindex(&mut self, key: WatcherKey, range: &KeyRange) {
        match range.end {
            RangeEnd::Single => {
                if let Some(set) = self.single.get_mut(&range.start) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.single.remove(&range.start);
                    }
                }
            }
            _ => {
                self.ranged.remove(&key);
            }
        }
    }

    /// Feeds one applied batch (every event of it, in revision order) to the synced watchers.
    /// `revision` is the store's revision after the batch. Returns the streams that have new
    /// work. Never blocks and never fails: a watcher that cannot take more goes to catch-up.
    pub fn publish(&mut self, revision: Revision, events: &[Arc<Event>]) -> BTreeSet<StreamId> {
        assert!(revision >= self.revision, "published revision went back: {revision} < {}", self.revision);
        let mut wake = BTreeSet::new();
        if !events.is_empty() {
            for (key, indexes) in self.route(events) {
                if self.offer(key, revision, events, &indexes) {
                    wake.insert(key.0);
                }
            }
        }
        self.revision = revision;
        wake
    }

    /// Which synced watcher gets which events (indexes into `events`, in order). A watcher is
    /// indexed either by its key or as a range, never both, so each list is built in one place.
    fn route(&self, events: &[Arc<Event>]) -> BTreeMap<WatcherKey, Vec<usize>> {
        let mut routed: BTreeMap<WatcherKey, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            if let Some(keys) = self.single.get(&e.kv.key) {
                for key in keys {
                    routed.entry(*key).or_default().push(i);
                }
            }
        }
        if !self.ranged.is_empty() {
            // Each range watcher finds its events by binary search over the batch sorted by key:
            // O(range watchers × log(events)) instead of O(range watchers × events).
            let mut by_key: Vec<usize> = (0..events.len()).collect();
            by_key.sort_by(|a, b| events[*a].kv.key.cmp(&events[*b].kv.key));
            for key in &self.ranged {
                let range = &self.watchers[key].spec.range;
                let first = by_key.partition_point(|i| events[*i].kv.key < range.start);
                let mut mine: Vec<usize> =
                    by_key[first..].iter().copied().take_while(|i| range.contains(&events[*i].kv.key)).collect();
                if !mine.is_empty() {
                    mine.sort_unstable();
                    routed.entry(*key).or_default().extend(mine);
                }
            }
        }
        routed
    }

    /// Queues a watcher's share of a batch, or moves it to catch-up. True if its stream has new
    /// work.
    fn offer(&mut self, key: WatcherKey, revision: Revision, events: &[Arc<Event>], indexes: &[usize]) -> bool {
        let w = self.watchers.get(&key).expect("routed watchers exist");
        let mine: Vec<Arc<Event>> = indexes
            .iter()
            .map(|i| &events[*i])
            .filter(|e| e.kv.mod_revision >= w.next_rev && w.spec.filters.passes(e))
            .cloned()
            .collect();
        let Some(first) = mine.first() else { return false };
        let first_rev = first.kv.mod_revision;
        let bytes: usize = mine.iter().map(|e| event_bytes(e)).sum();
        // An empty queue takes any one delivery, so that a single revision larger than the
        // per-watcher bound does not force every such watcher through history.
        let fits_watcher = w.queue.is_empty()
            || (w.queued_events + mine.len() <= self.limits.watcher_queue_events
                && w.queued_bytes + bytes <= self.limits.watcher_queue_bytes);
        let fits_total = self.total_bytes + bytes <= self.limits.total_queue_bytes;
        let stream = self.streams.get_mut(&key.0).expect("watchers belong to open streams");
        if fits_watcher && fits_total {
            let w = self.watchers.get_mut(&key).expect("routed watchers exist");
            w.queued_events += mine.len();
            w.queued_bytes += bytes;
            w.queue.push_back(Delivery { payload: Payload::Events(mine), through: revision, bytes });
            self.total_bytes += bytes;
            stream.ready.insert(key.1);
            return true;
        }
        // Fell behind: everything below `first_rev` is queued already; the rest comes from history.
        let w = self.watchers.get_mut(&key).expect("routed watchers exist");
        w.synced = false;
        w.next_rev = first_rev;
        if w.queue.is_empty() {
            stream.lagging.insert(key.1);
        }
        let range = w.spec.range.clone();
        self.unindex(key, &range);
        tracing::info!(
            stream = key.0 .0,
            watch_id = key.1 .0,
            from = first_rev.0,
            "slow watcher moved to catch-up from history"
        );
        true
    }

    /// The store was replaced by a snapshot at `revision`: the batches in between were never
    /// published, so every synced watcher catches up from history. Returns the streams to wake.
    pub fn restore(&mut self, revision: Revision) -> BTreeSet<StreamId> {
        let synced: Vec<WatcherKey> = self.watchers.iter().filter(|(_, w)| w.synced).map(|(k, _)| *k).collect();
        let after = self.revision.next();
        for key in &synced {
            let w = self.watchers.get_mut(key).expect("listed above");
            w.synced = false;
            w.next_rev = w.next_rev.max(after);
            let empty = w.queue.is_empty();
            let range = w.spec.range.clone();
            self.unindex(*key, &range);
            if empty {
                self.streams.get_mut(&key.0).expect("open stream").lagging.insert(key.1);
            }
        }
        self.revision = self.revision.max(revision);
        synced.into_iter().map(|(s, _)| s).collect()
    }

    /// A periodic progress tick of `stream`: every synced watcher that asked for progress
    /// notifications and was sent no events since the last tick gets one.
    pub fn progress_tick(&mut self, stream: StreamId) -> bool {
        let keys: Vec<WatcherKey> = self.keys_of(stream).collect();
        let mut queued = false;
        for key in keys {
            let w = self.watchers.get_mut(&key).expect("listed above");
            if !w.spec.progress_notify {
                continue;
            }
            // A non-empty queue means events are on their way, which says more than progress.
            if w.progress_due && w.synced && w.queue.is_empty() {
                w.queue.push_back(Delivery { payload: Payload::Progress, through: self.revision, bytes: 0 });
                self.streams.get_mut(&stream).expect("open stream").ready.insert(key.1);
                queued = true;
            }
            w.progress_due = true;
        }
        queued
    }

    /// A `WatchProgressRequest`: answered (once) as soon as every watcher of the stream has been
    /// sent everything up to the current revision. Like etcd, a stream without watchers gets no
    /// answer.
    pub fn request_progress(&mut self, stream: StreamId) {
        let current = self.revision;
        if let Some(s) = self.streams.get_mut(&stream) {
            s.progress_pending = Some(s.progress_pending.map_or(current, |p| p.min(current)));
        }
    }

    /// What `stream` should send next, if anything: queued deliveries first (watchers taking
    /// turns), then catch-up steps, then a pending progress answer.
    pub fn next_work(&mut self, stream: StreamId) -> Option<Work> {
        let s = self.streams.get(&stream)?;
        let next_ready = match s.cursor {
            Some(c) => s.ready.range(WatchId(c.0.saturating_add(1))..).next().or_else(|| s.ready.iter().next()),
            None => s.ready.iter().next(),
        };
        if let Some(id) = next_ready.copied() {
            return Some(self.pop((stream, id)));
        }
        if let Some(id) = s.lagging.iter().next().copied() {
            let w = &self.watchers[&(stream, id)];
            return Some(Work::CatchUp { id, range: w.spec.range.clone(), from: w.next_rev });
        }
        let target = s.progress_pending?;
        if s.watchers == 0 {
            self.streams.get_mut(&stream).expect("checked above").progress_pending = None;
            return None;
        }
        let covered = self.keys_of(stream).map(|k| self.watchers[&k].covered_through(self.revision)).min()?;
        if covered < target {
            return None;
        }
        self.streams.get_mut(&stream).expect("checked above").progress_pending = None;
        Some(Work::Progress { id: WatchId::NONE, revision: covered })
    }

    /// Takes the next response's worth of deliveries from a watcher's queue.
    fn pop(&mut self, key: WatcherKey) -> Work {
        let limit = self.limits.response_bytes;
        let w = self.watchers.get_mut(&key).expect("ready watchers exist");
        let first = w.queue.pop_front().expect("ready watchers have a queue");
        let mut through = first.through;
        let mut taken_bytes = first.bytes;
        let work = match first.payload {
            // Progress is sent on its own so clients see it as a progress notification.
            Payload::Progress => Work::Progress { id: key.1, revision: through },
            Payload::Events(mut events) => {
                while let Some(next) = w.queue.front() {
                    if taken_bytes + next.bytes > limit || next.payload == Payload::Progress {
                        break;
                    }
                    let next = w.queue.pop_front().expect("front exists");
                    taken_bytes += next.bytes;
                    through = next.through;
                    if let Payload::Events(more) = next.payload {
                        events.extend(more);
                    }
                }
                w.queued_events -= events.len();
                w.progress_due = false;
                Work::Events { id: key.1, through, events, prev_kv: w.spec.prev_kv, fragment: w.spec.fragment }
            }
        };
        w.queued_bytes -= taken_bytes;
        w.sent_through = w.sent_through.max(through);
        self.total_bytes -= taken_bytes;
        let empty = w.queue.is_empty();
        let synced = w.synced;
        let s = self.streams.get_mut(&key.0).expect("open stream");
        s.cursor = Some(key.1);
        if empty {
            s.ready.remove(&key.1);
            if !synced {
                s.lagging.insert(key.1);
            }
        }
        work
    }

    /// Applies one catch-up step read from history for a [`Work::CatchUp`] watcher. Must be
    /// called with the store locked against writers, `current` being its revision, so that a
    /// watcher that is now complete rejoins the synced set exactly where its history ended.
    /// Returns what to send (nothing if the step found no events).
    pub fn finish_catch_up(&mut self, stream: StreamId, id: WatchId, step: CatchUp) -> Option<Work> {
        let key = (stream, id);
        let w = self.watchers.get(&key)?;
        if w.synced || !w.queue.is_empty() {
            // Nothing to do (a concurrent change already served it); not an error.
            return None;
        }
        let filters = w.spec.filters;
        let (history, read_through) = match step {
            CatchUp::Compacted(compact_revision) => {
                self.remove(key);
                return Some(Work::Compacted { id, compact_revision });
            }
            CatchUp::History { events, current, .. } if current != self.revision => {
                // The hub missed a batch (its store write failed): it cannot vouch for gaps.
                tracing::error!(store = current.0, hub = self.revision.0, "watch hub is out of step with the store");
                drop(events);
                self.remove(key);
                return Some(Work::Failed { id, reason: "etcdserver: watch hub lost track of the store".into() });
            }
            CatchUp::History { events, through, .. } => (events, through),
        };
        let mut plan = plan_catch_up(history, filters, read_through, self.limits.catch_up_events);
        // What the store left unread is still to come.
        plan.complete &= read_through == self.revision;
        let w = self.watchers.get_mut(&key).expect("checked above");
        let (prev_kv, fragment) = (w.spec.prev_kv, w.spec.fragment);
        if plan.complete {
            w.synced = true;
            w.next_rev = w.next_rev.max(self.revision.next());
            self.streams.get_mut(&stream).expect("open stream").lagging.remove(&id);
            self.index(key);
        } else {
            w.next_rev = plan.through.next();
        }
        let w = self.watchers.get_mut(&key).expect("checked above");
        w.sent_through = w.sent_through.max(plan.through);
        if plan.events.is_empty() {
            return None;
        }
        w.progress_due = false;
        let events = plan.events.into_iter().map(Arc::new).collect();
        Some(Work::Events { id, through: plan.through, events, prev_kv, fragment })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LeaseId;
    use crate::mvcc::KeyValue;

    fn put(key: &str, value: &str, rev: i64) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                create_revision: Revision(rev),
                mod_revision: Revision(rev),
                version: 1,
                lease: None::<LeaseId>,
            },
            prev_kv: None,
        }
    }

    fn del(key: &str, rev: i64) -> Event {
        let mut e = put(key, "", rev);
        e.kind = EventKind::Delete;
        e.kv.create_revision = Revision(0);
        e.kv.version = 0;
        e
    }

    fn spec(range: KeyRange) -> WatchSpec {
        WatchSpec { range, filters: Filters::default(), prev_kv: false, progress_notify: false, fragment: false }
    }

    fn arcs(events: Vec<Event>) -> Vec<Arc<Event>> {
        events.into_iter().map(Arc::new).collect()
    }

    /// Drains a stream, returning (id, through, event (key, revision) list) per events response.
    fn drain(set: &mut WatcherSet, s: StreamId) -> Vec<Work> {
        let mut out = Vec::new();
        while let Some(w) = set.next_work(s) {
            if matches!(w, Work::CatchUp { .. }) {
                out.push(w);
                break;
            }
            out.push(w);
        }
        out
    }

    fn revs(work: &Work) -> Vec<i64> {
        match work {
            Work::Events { events, .. } => events.iter().map(|e| e.kv.mod_revision.0).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn auto_ids_count_from_zero_and_skip_chosen_ones() {
        let mut set = WatcherSet::new(Revision(5), Limits::default());
        let s = set.open_stream();
        let range = || spec(KeyRange::single(b"k".to_vec()));
        assert_eq!(set.create(s, 1, range(), 0), Ok((WatchId(1), Revision(5))));
        assert_eq!(set.create(s, 0, range(), 0).unwrap().0, WatchId(0));
        assert_eq!(set.create(s, 0, range(), 0).unwrap().0, WatchId(2), "1 was taken by the client");
        assert_eq!(set.create(s, 2, range(), 0), Err(CreateError::DuplicateId));
        // Ids are per stream.
        let other = set.open_stream();
        assert_eq!(set.create(other, 0, range(), 0).unwrap().0, WatchId(0));
        assert_eq!(set.create(other, 1, range(), 0).unwrap().0, WatchId(1));
        assert!(set.cancel(s, WatchId(1)));
        assert!(!set.cancel(s, WatchId(1)), "a second cancel finds nothing");
        assert_eq!(set.create(s, 1, range(), 0).unwrap().0, WatchId(1), "a canceled id is free again");
    }

    #[test]
    fn create_rejections_match_etcd() {
        let mut set = WatcherSet::new(Revision(5), Limits { max_watchers: 1, ..Limits::default() });
        let s = set.open_stream();
        let backwards = spec(KeyRange::from_wire(b"b".to_vec(), b"a".to_vec()));
        assert_eq!(set.create(s, 0, backwards, 0), Err(CreateError::EmptyRange));
        assert_eq!(CreateError::EmptyRange.to_string(), "mvcc: watcher range is empty");
        assert_eq!(set.create(s, 0, spec(KeyRange::single(b"k".to_vec())), -1), Err(CreateError::NegativeStart));
        assert_eq!(CreateError::DuplicateId.to_string(), "mvcc: duplicate watch ID provided on the WatchStream");
        set.create(s, 0, spec(KeyRange::single(b"k".to_vec())), 0).unwrap();
        assert_eq!(set.create(s, 0, spec(KeyRange::single(b"k".to_vec())), 0), Err(CreateError::TooManyWatchers));
        assert_eq!(set.watcher_count(), 1);
    }

    #[test]
    fn live_events_are_routed_by_range_filtered_and_whole() {
        let mut set = WatcherSet::new(Revision(1), Limits::default());
        let s = set.open_stream();
        let single = set.create(s, 0, spec(KeyRange::single(b"a/1".to_vec())), 0).unwrap().0;
        let prefix = set.create(s, 0, spec(KeyRange::prefix(b"a/")), 0).unwrap().0;
        let mut no_put = spec(KeyRange::from_wire(b"a".to_vec(), vec![0]));
        no_put.filters.no_put = true;
        let deletes = set.create(s, 0, no_put, 0).unwrap().0;
        // One batch: revision 2 is a txn of two keys, 3 a delete, 4 a key outside everything.
        let batch = arcs(vec![put("a/2", "x", 2), put("a/1", "y", 2), del("a/1", 3), put("0", "z", 4)]);
        assert_eq!(set.publish(Revision(4), &batch), BTreeSet::from([s]));
        let work = drain(&mut set, s);
        let by_id = |id: WatchId| work.iter().find(|w| matches!(w, Work::Events { id: i, .. } if *i == id)).unwrap();
        assert_eq!(revs(by_id(single)), [2, 3]);
        assert_eq!(revs(by_id(prefix)), [2, 2, 3], "both events of revision 2, in their order");
        match by_id(prefix) {
            Work::Events { events, through, .. } => {
                assert_eq!(events[0].kv.key, b"a/2");
                assert_eq!(*through, Revision(4));
            }
            _ => unreachable!(),
        }
        assert_eq!(revs(by_id(deletes)), [3]);
        assert_eq!(work.len(), 3);
        assert_eq!(set.queued_bytes(), 0);
    }

    #[test]
    fn history_start_catches_up_then_rejoins_without_gap_or_duplicate() {
        let mut set = WatcherSet::new(Revision(10), Limits { catch_up_events: 2, ..Limits::default() });
        let s = set.open_stream();
        let (id, header) = set.create(s, 0, spec(KeyRange::prefix(b"k")), 4).unwrap();
        assert_eq!(header, Revision(10));
        let Some(Work::CatchUp { from, .. }) = set.next_work(s) else { panic!("expected a catch-up") };
        assert_eq!(from, Revision(4));
        let history = vec![put("k1", "a", 4), put("k2", "b", 6), put("k3", "c", 6), put("k1", "d", 9)];
        // The limit (2) is checked only where a new revision starts: revision 4 (1 event), then
        // all of revision 6 (3 events in total), then a stop before 9.
        let step = set.finish_catch_up(
            s,
            id,
            CatchUp::History { events: history.clone(), through: Revision(10), current: Revision(10) },
        );
        let Some(Work::Events { through, events, .. }) = step else { panic!("expected events") };
        assert_eq!(events.len(), 3);
        assert_eq!(through, Revision(8), "covered up to just before the next event");
        let Some(Work::CatchUp { from, .. }) = set.next_work(s) else { panic!("still behind") };
        assert_eq!(from, Revision(9));
        let rest: Vec<Event> = history.into_iter().filter(|e| e.kv.mod_revision >= from).collect();
        let step =
            set.finish_catch_up(s, id, CatchUp::History { events: rest, through: Revision(10), current: Revision(10) });
        assert!(matches!(step, Some(Work::Events { through: Revision(10), .. })));
        assert_eq!(set.next_work(s), None, "synced now");
        // A batch at 11 arrives live, exactly once.
        set.publish(Revision(11), &arcs(vec![put("k2", "e", 11)]));
        assert_eq!(revs(&set.next_work(s).unwrap()), [11]);
    }

    #[test]
    fn a_history_the_store_read_only_in_part_leaves_the_watcher_catching_up() {
        let mut set = WatcherSet::new(Revision(10), Limits::default());
        let s = set.open_stream();
        let (id, _) = set.create(s, 0, spec(KeyRange::prefix(b"k")), 4).unwrap();
        let Some(Work::CatchUp { .. }) = set.next_work(s) else { panic!("expected a catch-up") };
        // The store stopped reading after revision 6 (its limit), though it is at 10.
        let part = vec![put("k1", "a", 4), put("k2", "b", 6)];
        let step =
            set.finish_catch_up(s, id, CatchUp::History { events: part, through: Revision(6), current: Revision(10) });
        assert!(matches!(step, Some(Work::Events { through: Revision(6), .. })));
        let Some(Work::CatchUp { from, .. }) = set.next_work(s) else { panic!("the rest is still to read") };
        assert_eq!(from, Revision(7));
        let rest = vec![put("k1", "c", 9)];
        let step =
            set.finish_catch_up(s, id, CatchUp::History { events: rest, through: Revision(10), current: Revision(10) });
        assert!(matches!(step, Some(Work::Events { through: Revision(10), .. })));
        assert_eq!(set.next_work(s), None, "synced now");
    }

    #[test]
    fn plan_keeps_revisions_whole_and_filters() {
        let h = vec![put("a", "1", 2), del("b", 2), put("c", "1", 3), del("a", 4)];
        let p = plan_catch_up(h.clone(), Filters::default(), Revision(9), 1);
        assert_eq!(p.events.len(), 2, "revision 2 stays whole even over the limit");
        assert_eq!((p.through, p.complete), (Revision(2), false));
        let p = plan_catch_up(h.clone(), Filters { no_put: true, no_delete: false }, Revision(9), 10);
        assert_eq!(p.events.iter().map(|e| e.kv.mod_revision.0).collect::<Vec<_>>(), [2, 4]);
        assert_eq!((p.through, p.complete), (Revision(9), true));
        let p = plan_catch_up(Vec::new(), Filters::default(), Revision(9), 10);
        assert_eq!((p.events.len(), p.through, p.complete), (0, Revision(9), true));
    }

    #[test]
    fn compacted_history_cancels_the_watcher() {
        let mut set = WatcherSet::new(Revision(10), Limits::default());
        let s = set.open_stream();
        let (id, _) = set.create(s, 0, spec(KeyRange::single(b"k".to_vec())), 2).unwrap();
        assert!(matches!(set.next_work(s), Some(Work::CatchUp { .. })));
        assert_eq!(
            set.finish_catch_up(s, id, CatchUp::Compacted(Revision(5))),
            Some(Work::Compacted { id, compact_revision: Revision(5) })
        );
        assert_eq!(set.watcher_count(), 0);
        assert_eq!(set.next_work(s), None);
    }

    #[test]
    fn a_full_queue_moves_the_watcher_to_catch_up_from_the_first_unqueued_revision() {
        let limits = Limits { watcher_queue_events: 2, ..Limits::default() };
        let mut set = WatcherSet::new(Revision(1), limits);
        let s = set.open_stream();
        let (id, _) = set.create(s, 0, spec(KeyRange::prefix(b"")), 0).unwrap();
        for rev in 2..=6 {
            set.publish(Revision(rev), &arcs(vec![put("k", "v", rev)]));
        }
        assert_eq!(set.unsynced_count(), 1);
        // Queued: revisions 2 and 3 (the limit), then catch-up from 4.
        let first = set.next_work(s).unwrap();
        assert_eq!(revs(&first), [2, 3]);
        assert!(matches!(first, Work::Events { through: Revision(3), .. }));
        let Some(Work::CatchUp { from, .. }) = set.next_work(s) else { panic!("expected catch-up") };
        assert_eq!(from, Revision(4));
        let history = (4..=6).map(|r| put("k", "v", r)).collect();
        let step = set.finish_catch_up(
            s,
            id,
            CatchUp::History { events: history, through: Revision(6), current: Revision(6) },
        );
        assert_eq!(revs(&step.unwrap()), [4, 5, 6]);
        assert_eq!(set.unsynced_count(), 0);
    }

    #[test]
    fn restore_sends_synced_watchers_to_history_after_the_last_published_revision() {
        let mut set = WatcherSet::new(Revision(3), Limits::default());
        let s = set.open_stream();
        let (now, _) = set.create(s, 0, spec(KeyRange::prefix(b"")), 0).unwrap();
        let (future, _) = set.create(s, 0, spec(KeyRange::prefix(b"")), 50).unwrap();
        assert_eq!(set.restore(Revision(20)), BTreeSet::from([s]));
        assert_eq!(set.revision(), Revision(20));
        let Some(Work::CatchUp { id, from, .. }) = set.next_work(s) else { panic!() };
        assert_eq!((id, from), (now, Revision(4)));
        set.finish_catch_up(s, id, CatchUp::History { events: vec![], through: Revision(20), current: Revision(20) });
        let Some(Work::CatchUp { id, from, .. }) = set.next_work(s) else { panic!() };
        assert_eq!((id, from), (future, Revision(50)), "a future start survives a restore");
        set.finish_catch_up(s, id, CatchUp::History { events: vec![], through: Revision(20), current: Revision(20) });
        assert_eq!(set.unsynced_count(), 0);
        set.publish(Revision(21), &arcs(vec![put("k", "v", 21)]));
        let work = drain(&mut set, s);
        assert_eq!(work.len(), 1, "only the watcher from now sees revision 21: {work:?}");
    }

    #[test]
    fn a_hub_out_of_step_with_the_store_fails_the_watcher_instead_of_skipping() {
        let mut set = WatcherSet::new(Revision(3), Limits::default());
        let s = set.open_stream();
        let (id, _) = set.create(s, 0, spec(KeyRange::prefix(b"")), 1).unwrap();
        let step =
            set.finish_catch_up(s, id, CatchUp::History { events: vec![], through: Revision(4), current: Revision(4) });
        assert!(matches!(step, Some(Work::Failed { .. })));
        assert_eq!(set.watcher_count(), 0);
    }

    #[test]
    fn progress_request_waits_until_every_watcher_is_covered() {
        let mut set = WatcherSet::new(Revision(5), Limits::default());
        let s = set.open_stream();
        set.request_progress(s);
        assert_eq!(set.next_work(s), None, "no watchers: no answer, as etcd");
        let (live, _) = set.create(s, 0, spec(KeyRange::prefix(b"")), 0).unwrap();
        let (behind, _) = set.create(s, 0, spec(KeyRange::prefix(b"")), 2).unwrap();
        set.publish(Revision(6), &arcs(vec![put("k", "v", 6)]));
        set.request_progress(s);
        // The live watcher's event first, then the behind one's catch-up; only then progress.
        assert!(matches!(set.next_work(s), Some(Work::Events { id, .. }) if id == live));
        let Some(Work::CatchUp { id, .. }) = set.next_work(s) else { panic!() };
        assert_eq!(id, behind);
        let history = vec![put("k", "a", 3), put("k", "v", 6)];
        let step = set.finish_catch_up(
            s,
            id,
            CatchUp::History { events: history, through: Revision(6), current: Revision(6) },
        );
        assert!(matches!(step, Some(Work::Events { through: Revision(6), .. })));
        assert_eq!(set.next_work(s), Some(Work::Progress { id: WatchId::NONE, revision: Revision(6) }));
        assert_eq!(set.next_work(s), None, "answered once");
    }

    #[test]
    fn progress_answer_is_never_ahead_of_a_queued_event() {
        let mut set = WatcherSet::new(Revision(5), Limits::default());
        let s = set.open_stream();
        set.create(s, 0, spec(KeyRange::prefix(b"")), 0).unwrap();
        set.publish(Revision(6), &arcs(vec![put("k", "v", 6)]));
        set.request_progress(s);
        set.publish(Revision(7), &arcs(vec![put("k", "v", 7)]));
        let first = set.next_work(s).unwrap();
        assert_eq!(revs(&first), [6, 7], "merged deliveries");
        assert_eq!(set.next_work(s), Some(Work::Progress { id: WatchId::NONE, revision: Revision(7) }));
    }

    #[test]
    fn periodic_progress_only_for_idle_synced_watchers_that_asked() {
        let mut set = WatcherSet::new(Revision(5), Limits::default());
        let s = set.open_stream();
        let mut asked = spec(KeyRange::single(b"a".to_vec()));
        asked.progress_notify = true;
        let (idle, _) = set.create(s, 0, asked.clone(), 0).unwrap();
        let (busy, _) = set.create(s, 0, asked, 0).unwrap();
        set.create(s, 0, spec(KeyRange::single(b"a".to_vec())), 0).unwrap();
        // Busy gets its own key's events.
        set.cancel(s, busy);
        let mut busy_spec = spec(KeyRange::single(b"b".to_vec()));
        busy_spec.progress_notify = true;
        set.create(s, busy.0, busy_spec, 0).unwrap();
        set.publish(Revision(6), &arcs(vec![put("b", "v", 6)]));
        drain(&mut set, s);
        set.progress_tick(s);
        let work = drain(&mut set, s);
        assert_eq!(work, [Work::Progress { id: idle, revision: Revision(6) }], "busy sent events since the last tick");
        set.progress_tick(s);
        let work = drain(&mut set, s);
        assert_eq!(work.len(), 2, "both idle now: {work:?}");
    }

    #[test]
    fn memory_stays_bounded_with_ten_thousand_stuck_watchers() {
        let limits = Limits::default();
        let total_limit = limits.total_queue_bytes;
        let mut set = WatcherSet::new(Revision(1), limits);
        let streams: Vec<StreamId> = (0..10).map(|_| set.open_stream()).collect();
        for i in 0..10_000 {
            let range = if i % 2 == 0 { KeyRange::prefix(b"k") } else { KeyRange::single(b"k5".to_vec()) };
            set.create(streams[i % 10], 0, spec(range), 0).unwrap();
        }
        let value = "x".repeat(1024);
        for rev in 2..200 {
            set.publish(Revision(rev), &arcs(vec![put(&format!("k{}", rev % 10), &value, rev)]));
            assert!(set.queued_bytes() <= total_limit, "{} > {total_limit}", set.queued_bytes());
        }
        assert!(set.unsynced_count() > 5_000, "most watchers had to fall back to history");
        // Closing the streams frees everything.
        for s in streams {
            set.close_stream(s);
        }
        assert_eq!((set.watcher_count(), set.queued_bytes()), (0, 0));
    }

    /// Model check: random creates, batches, drains, catch-ups (from a full history kept here)
    /// and cancels; every watcher must receive exactly its history, in order, in whole
    /// revisions, with `through` never ahead of what it was sent.
    #[test]
    fn random_model_every_watcher_sees_exactly_its_history() {
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config { cases: 64, ..Config::default() });
        let ops = proptest::collection::vec((0u8..6, 0u8..8, 0u8..4), 1..300);
        runner
            .run(&ops, |ops| {
                check_model(ops);
                Ok(())
            })
            .unwrap();
    }

    fn check_model(ops: Vec<(u8, u8, u8)>) {
        let limits = Limits {
            watcher_queue_events: 3,
            watcher_queue_bytes: 2_000,
            total_queue_bytes: 4_000,
            max_watchers: 10,
            catch_up_events: 2,
            response_bytes: 500,
        };
        let mut set = WatcherSet::new(Revision(1), limits);
        let s = set.open_stream();
        let mut history: Vec<Event> = Vec::new();
        let mut rev = 1i64;
        // Per watcher: (range, start, filters, received events, last through).
        struct Seen {
            range: KeyRange,
            filters: Filters,
            start: i64,
            events: Vec<Event>,
            through: i64,
            alive: bool,
        }
        let mut seen: BTreeMap<WatchId, Seen> = BTreeMap::new();
        let keys = ["a", "b", "c", "d"];
        /// Handles up to `n` work items; returns how many there were.
        fn serve(
            set: &mut WatcherSet,
            s: StreamId,
            seen: &mut BTreeMap<WatchId, Seen>,
            history: &[Event],
            n: u8,
        ) -> u8 {
            for done in 0..n {
                match set.next_work(s) {
                    None => return done,
                    Some(Work::CatchUp { id, range, from }) => {
                        let events = history
                            .iter()
                            .filter(|e| range.contains(&e.kv.key) && e.kv.mod_revision >= from)
                            .cloned()
                            .collect();
                        let current = set.revision();
                        if let Some(w) =
                            set.finish_catch_up(s, id, CatchUp::History { events, through: current, current })
                        {
                            record(seen, w);
                        }
                    }
                    Some(w) => record(seen, w),
                }
            }
            n
        }
        fn record(seen: &mut BTreeMap<WatchId, Seen>, w: Work) {
            match w {
                Work::Events { id, through, events, .. } => {
                    let entry = seen.get_mut(&id).unwrap();
                    let first = events[0].kv.mod_revision.0;
                    assert!(first > entry.through, "event {first} at or below an earlier through {}", entry.through);
                    assert!(through.0 >= events.last().unwrap().kv.mod_revision.0);
                    entry.through = through.0;
                    entry.events.extend(events.iter().map(|e| (**e).clone()));
                }
                Work::Progress { id, revision } => {
                    // A watcher whose start is in the future is covered up to its start already;
                    // progress may report less (the current revision) without being wrong.
                    for (_, entry) in seen.iter_mut().filter(|(i, w)| w.alive && (id == WatchId::NONE || **i == id)) {
                        entry.through = entry.through.max(revision.0);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        for (op, a, b) in ops {
            match op {
                0 if seen.values().filter(|w| w.alive).count() < 10 => {
                    let range = match a % 3 {
                        0 => KeyRange::single(keys[b as usize].as_bytes().to_vec()),
                        1 => KeyRange::from_wire(b"b".to_vec(), b"d".to_vec()),
                        _ => KeyRange::prefix(b""),
                    };
                    let filters = Filters { no_put: a == 4, no_delete: a == 5 };
                    let start = match (a, b) {
                        (_, 0) => 0,
                        (7, _) => rev + 2,
                        _ => (rev - i64::from(a)).max(1),
                    };
                    let mut sp = spec(range.clone());
                    sp.filters = filters;
                    let (id, header) = set.create(s, 0, sp, start).unwrap();
                    let start = if start == 0 { header.0 + 1 } else { start };
                    seen.insert(id, Seen { range, filters, start, events: vec![], through: start - 1, alive: true });
                }
                1 | 2 => {
                    rev += 1;
                    let mut batch = Vec::new();
                    for (i, k) in keys.iter().enumerate() {
                        if (a >> i) & 1 == 1 {
                            batch.push(if b == 0 { del(k, rev) } else { put(k, "v", rev) });
                        }
                    }
                    if op == 2 {
                        // A second revision in the same batch.
                        rev += 1;
                        batch.push(put(keys[(b % 4) as usize], "w", rev));
                    }
                    history.extend(batch.iter().cloned());
                    set.publish(Revision(rev), &arcs(batch));
                }
                3 => {
                    serve(&mut set, s, &mut seen, &history, a + 1);
                }
                4 => {
                    if let Some((id, w)) = seen.iter_mut().filter(|(_, w)| w.alive).nth(a as usize) {
                        assert!(set.cancel(s, *id));
                        w.alive = false;
                    }
                }
                _ => {
                    set.progress_tick(s);
                }
            }
        }
        // Serve everything, then ask for progress: every live watcher is then covered through
        // the last revision.
        set.request_progress(s);
        while serve(&mut set, s, &mut seen, &history, u8::MAX) > 0 {}
        for (id, w) in &seen {
            let expected: Vec<Event> = history
                .iter()
                .filter(|e| {
                    w.range.contains(&e.kv.key)
                        && e.kv.mod_revision.0 >= w.start
                        && e.kv.mod_revision.0 <= w.through
                        && w.filters.passes(e)
                })
                .cloned()
                .collect();
            assert_eq!(w.events, expected, "watcher {id}");
            if w.alive {
                assert_eq!(w.through, rev.max(w.start - 1), "live watcher {id} is covered through the last revision");
            }
        }
    }
}
