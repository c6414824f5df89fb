//! One watch stream as an async session: client requests in, replies out, in the order the
//! etcd protocol needs (a watcher's `created` before its events, its cancel after them).
//!
//! The session is not a task. It is polled by whoever consumes its replies — the gRPC response
//! stream — and is dropped with it, so a client that disconnects takes its watchers with it and
//! nothing is left running. A client that stops reading simply stops polling it: its watchers
//! then fill their bounded queues in the hub and fall back to catch-up, while writers go on.

use super::core::{StreamId, WatchId, WatchSpec, Work};
use crate::error::StoreError;
use crate::ids::Revision;
use crate::mvcc::Event;
use crate::raft::state_machine::KvState;
use futures::{Stream, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// A client request, decoded from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Create(CreateRequest),
    Cancel(WatchId),
    /// `WatchProgressRequest`.
    Progress,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRequest {
    /// 0 lets the server choose.
    pub watch_id: i64,
    /// 0 = after the current revision.
    pub start_revision: i64,
    pub spec: WatchSpec,
}

/// What the session sends; the gRPC layer turns each into one or more `WatchResponse`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Created {
        id: WatchId,
        revision: Revision,
    },
    /// `created` and `canceled` at once, with watch id -1 (etcd's answer to a bad create).
    CreateFailed {
        revision: Revision,
        reason: String,
    },
    /// The answer to a cancel request (empty reason), or a watcher the server gave up on.
    Canceled {
        id: WatchId,
        revision: Revision,
        reason: String,
    },
    /// The history the watcher needs is compacted.
    Compacted {
        id: WatchId,
        revision: Revision,
        compact_revision: Revision,
    },
    /// Events of whole revisions; `revision` is the header: the watcher has everything through it.
    Events {
        id: WatchId,
        revision: Revision,
        events: Vec<Arc<Event>>,
        prev_kv: bool,
        fragment: bool,
    },
    Progress {
        id: WatchId,
        revision: Revision,
    },
}

/// What woke the session up.
enum Wake<E> {
    Request(Option<Result<Request, E>>),
    Work,
    Tick,
    Closed,
}

pub struct Session {
    kv: Arc<KvState>,
    stream: StreamId,
    notify: Arc<Notify>,
    closed: watch::Receiver<bool>,
    ticker: Interval,
    /// Replies to requests; at most a couple, since requests are read only when it is empty.
    outbox: VecDeque<Reply>,
    inbound_done: bool,
}

impl Session {
    /// Opens a stream on the member whose applied state is `kv`.
    pub fn open(kv: Arc<KvState>) -> Session {
        let hub = &kv.watch;
        let (stream, notify) = hub.open_stream();
        let period = hub.progress_notify_interval();
        // Up to 10% jitter, as etcd adds, so streams opened together do not tick together;
        // derived from the stream id so that it stays deterministic.
        let jitter = period.mul_f64((stream.0 % 10) as f64 / 100.0);
        let period = period + jitter;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let closed = hub.closed_signal();
        Session { kv, stream, notify, closed, ticker, outbox: VecDeque::new(), inbound_done: false }
    }

    pub fn progress_period(&self) -> Duration {
        self.ticker.period()
    }

    /// The next reply, reading client requests as needed. `Ok(None)` when the client went away;
    /// `Err(Stopped)` when the member is shutting down.
    pub async fn next<S, E>(&mut self, inbound: &mut S) -> Result<Option<Reply>, StoreError>
    where
        S: Stream<Item = Result<Request, E>> + Unpin,
    {
        loop {
            if let Some(reply) = self.outbox.pop_front() {
                return Ok(Some(reply));
            }
            if *self.closed.borrow() {
                return Err(StoreError::Stopped);
            }
            let work = self.kv.watch.with_set(|set| set.next_work(self.stream));
            match work {
                Some(catch_up @ Work::CatchUp { .. }) => {
                    if let Some(reply) = self.catch_up(catch_up).await {
                        return Ok(Some(reply));
                    }
                    continue;
                }
                Some(work) => return Ok(Some(self.reply(work))),
                None => {}
            }
            let wake = tokio::select! {
                biased;
                _ = self.closed.changed() => Wake::Closed,
                request = inbound.next(), if !self.inbound_done => Wake::Request(request),
                _ = self.notify.notified() => Wake::Work,
                _ = self.ticker.tick() => Wake::Tick,
            };
            match wake {
                Wake::Closed | Wake::Work => {}
                Wake::Tick => {
                    let stream = self.stream;
                    self.kv.watch.with_set(|set| set.progress_tick(stream));
                }
                Wake::Request(Some(Ok(request))) => self.handle(request),
                // The client broke the stream: nobody is listening any more.
                Wake::Request(Some(Err(_))) => return Ok(None),
                // The client closed its side; etcd keeps serving the watchers it has.
                Wake::Request(None) => self.inbound_done = true,
            }
        }
    }

    fn handle(&mut self, request: Request) {
        let stream = self.stream;
        let reply = self.kv.watch.with_set(|set| match request {
            Request::Create(c) => match set.create(stream, c.watch_id, c.spec, c.start_revision) {
                Ok((id, revision)) => Some(Reply::Created { id, revision }),
                Err(e) => Some(Reply::CreateFailed { revision: set.revision(), reason: e.to_string() }),
            },
            // etcd answers only a cancel of a watcher that exists.
            Request::Cancel(id) => {
                set.cancel(stream, id).then(|| Reply::Canceled { id, revision: set.revision(), reason: String::new() })
            }
            Request::Progress => {
                set.request_progress(stream);
                None
            }
        });
        self.outbox.extend(reply);
    }

    async fn catch_up(&mut self, work: Work) -> Option<Reply> {
        let hub = &self.kv.watch;
        let _permit = hub.catch_up_permit().await;
        let done = read_history_step(&self.kv, self.stream, &work);
        done.map(|w| self.reply(w))
    }

    fn reply(&self, work: Work) -> Reply {
        let current = || self.kv.watch.with_set(|set| set.revision());
        match work {
            Work::Events { id, through, events, prev_kv, fragment } => {
                Reply::Events { id, revision: through, events, prev_kv, fragment }
            }
            Work::Progress { id, revision } => Reply::Progress { id, revision },
            Work::Compacted { id, compact_revision } => Reply::Compacted { id, revision: current(), compact_revision },
            Work::Failed { id, reason } => Reply::Canceled { id, revision: current(), reason },
            Work::CatchUp { .. } => unreachable!("catch-up work is handled by the session itself"),
        }
    }
}

/// Holds the state read lock only inside this function, never across an await.
fn read_history_step(kv: &KvState, stream: StreamId, work: &Work) -> Option<Work> {
    let state = kv.read();
    kv.watch.catch_up_step(&state.mvcc, stream, work)
}

impl Drop for Session {
    fn drop(&mut self) {
        self.kv.watch.close_stream(self.stream);
    }
}

#[cfg(test)]
mod tests {
    //! The session over a real state machine (memory engine): events arrive through `apply`
    //! and `install_snapshot` exactly as in a running member.
    use super::*;
    use crate::engine::{MemoryEngine, SharedEngine};
    use crate::mvcc::{Command, KeyRange, PutRequest};
    use crate::raft::state_machine::StateMachine;
    use crate::raft::{Entry, LogId, Proposal};
    use crate::watch::Filters;
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::collections::BTreeSet;
    use std::convert::Infallible;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::UnboundedReceiverStream;

    struct Harness {
        sm: StateMachine,
        index: u64,
    }

    impl Harness {
        fn new() -> Harness {
            let engine: SharedEngine = Arc::new(MemoryEngine::new());
            Harness { sm: StateMachine::open(engine).unwrap(), index: 0 }
        }

        /// Applies one entry of puts, one revision each.
        async fn put(&mut self, puts: &[(&str, &str)]) {
            self.index += 1;
            let commands: Vec<_> = puts.iter().map(|(k, v)| Command::Put(PutRequest::new(*k, *v))).collect();
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 0), self.index),
                payload: EntryPayload::Normal(Proposal { commands: commands.into() }),
            };
            self.sm.apply(vec![entry]).await.unwrap();
        }

        fn kv(&self) -> Arc<KvState> {
            self.sm.shared()
        }
    }

    type Inbound = UnboundedReceiverStream<Result<Request, Infallible>>;

    fn client() -> (mpsc::UnboundedSender<Result<Request, Infallible>>, Inbound) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, UnboundedReceiverStream::new(rx))
    }

    fn create(start_revision: i64, progress_notify: bool) -> Request {
        Request::Create(CreateRequest {
            watch_id: 0,
            start_revision,
            spec: WatchSpec {
                range: KeyRange::prefix(b"k"),
                filters: Filters::default(),
                prev_kv: true,
                progress_notify,
                fragment: false,
            },
        })
    }

    async fn next(session: &mut Session, inbound: &mut Inbound) -> Reply {
        session.next(inbound).await.unwrap().expect("the session goes on")
    }

    /// (revision, value) of every event, from replies until `last` is covered.
    async fn events_through(session: &mut Session, inbound: &mut Inbound, last: i64) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        loop {
            match next(session, inbound).await {
                Reply::Events { events, revision, .. } => {
                    out.extend(
                        events.iter().map(|e| (e.kv.mod_revision.0, String::from_utf8(e.kv.value.clone()).unwrap())),
                    );
                    if revision.0 >= last {
                        return out;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn applied_batches_reach_a_watcher_with_prev_kv() {
        let mut h = Harness::new();
        let (tx, mut inbound) = client();
        let mut session = Session::open(h.kv());
        tx.send(Ok(create(0, false))).unwrap();
        assert_eq!(next(&mut session, &mut inbound).await, Reply::Created { id: WatchId(0), revision: Revision(1) });
        h.put(&[("k1", "a"), ("x", "ignored"), ("k1", "b")]).await;
        match next(&mut session, &mut inbound).await {
            Reply::Events { revision, events, prev_kv, .. } => {
                assert_eq!(revision, Revision(4));
                assert!(prev_kv);
                assert_eq!(events.len(), 2);
                assert_eq!(events[1].prev_kv.as_ref().map(|p| p.value.clone()), Some(b"a".to_vec()));
            }
            other => panic!("{other:?}"),
        }
        tx.send(Ok(Request::Cancel(WatchId(0)))).unwrap();
        assert!(matches!(next(&mut session, &mut inbound).await, Reply::Canceled { id: WatchId(0), .. }));
        assert_eq!(h.kv().watch.watcher_count(), 0);
        drop(session);
    }

    #[tokio::test]
    async fn periodic_progress_follows_the_configured_interval() {
        let mut h = Harness::new();
        // etcd's floor: anything shorter is raised to 100 ms.
        h.kv().watch.set_progress_notify_interval(Duration::from_millis(1));
        assert_eq!(h.kv().watch.progress_notify_interval(), Duration::from_millis(100));
        h.kv().watch.set_progress_notify_interval(Duration::from_millis(200));
        let (tx, mut inbound) = client();
        let mut session = Session::open(h.kv());
        let period = session.progress_period();
        assert!(period >= Duration::from_millis(200) && period < Duration::from_millis(220), "{period:?}");
        let started = tokio::time::Instant::now();
        tx.send(Ok(create(0, true))).unwrap();
        next(&mut session, &mut inbound).await;
        h.put(&[("other", "v")]).await;
        assert_eq!(next(&mut session, &mut inbound).await, Reply::Progress { id: WatchId(0), revision: Revision(2) });
        // A timer never fires early, so this cannot flake.
        assert!(started.elapsed() >= period, "{:?}", started.elapsed());
        // A progress request answers at once, for the whole stream.
        tx.send(Ok(Request::Progress)).unwrap();
        assert_eq!(
            next(&mut session, &mut inbound).await,
            Reply::Progress { id: WatchId::NONE, revision: Revision(2) }
        );
    }

    #[tokio::test]
    async fn a_stalled_reader_loses_nothing_and_writers_never_wait() {
        let mut h = Harness::new();
        let (tx, mut inbound) = client();
        let mut session = Session::open(h.kv());
        tx.send(Ok(create(0, false))).unwrap();
        next(&mut session, &mut inbound).await;
        // Far more than one watcher may queue; the session is not polled meanwhile.
        let value = "v".repeat(512);
        for i in 0..3000 {
            h.put(&[("k", &format!("{i}{value}"))]).await;
        }
        assert_eq!(h.kv().watch.unsynced_count(), 1, "the watcher fell back to history");
        let got = events_through(&mut session, &mut inbound, 3001).await;
        let revisions: Vec<i64> = got.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, (2..=3001).collect::<Vec<_>>());
        assert_eq!(h.kv().watch.unsynced_count(), 0, "caught up and live again");
        h.put(&[("k", "after")]).await;
        assert_eq!(events_through(&mut session, &mut inbound, 3002).await, [(3002, "after".to_string())]);
    }

    #[tokio::test]
    async fn a_half_closed_client_is_still_served_and_a_dropped_stream_frees_its_watchers() {
        let mut h = Harness::new();
        let (tx, mut inbound) = client();
        let mut session = Session::open(h.kv());
        tx.send(Ok(create(0, false))).unwrap();
        tx.send(Ok(create(0, false))).unwrap();
        drop(tx);
        next(&mut session, &mut inbound).await;
        next(&mut session, &mut inbound).await;
        h.put(&[("k", "v")]).await;
        // Both watchers are served although the client sends nothing more, as etcd does.
        let mut ids = BTreeSet::new();
        for _ in 0..2 {
            match next(&mut session, &mut inbound).await {
                Reply::Events { id, .. } => ids.insert(id),
                other => panic!("{other:?}"),
            };
        }
        assert_eq!(ids, BTreeSet::from([WatchId(0), WatchId(1)]));
        assert_eq!(h.kv().watch.watcher_count(), 2);
        drop(session);
        assert_eq!(h.kv().watch.watcher_count(), 0, "the stream's watchers went with it");
    }

    #[tokio::test]
    async fn a_snapshot_install_continues_watchers_from_the_new_history() {
        // The leader's state machine, ahead of the watcher's member.
        let mut leader = Harness::new();
        for v in ["1", "2", "3", "4", "5"] {
            leader.put(&[("k", v)]).await;
        }
        let snapshot = leader.sm.get_snapshot_builder().await.build_snapshot().await.unwrap();

        let mut h = Harness::new();
        h.put(&[("k", "1")]).await;
        let (tx, mut inbound) = client();
        let mut session = Session::open(h.kv());
        tx.send(Ok(create(0, false))).unwrap();
        assert!(matches!(next(&mut session, &mut inbound).await, Reply::Created { revision: Revision(2), .. }));
        h.sm.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        let got = events_through(&mut session, &mut inbound, 6).await;
        assert_eq!(got, [(3, "2".into()), (4, "3".into()), (5, "4".into()), (6, "5".into())]);
    }

    #[tokio::test]
    async fn compacted_start_is_created_then_canceled_and_shutdown_ends_the_stream() {
        let mut h = Harness::new();
        h.put(&[("k", "1"), ("k", "2"), ("k", "3")]).await;
        h.index += 1;
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), h.index),
            payload: EntryPayload::Normal(Proposal {
                commands: vec![Command::Compact { revision: Revision(3) }].into(),
            }),
        };
        h.sm.apply(vec![entry]).await.unwrap();
        let (tx, mut inbound) = client();
        let mut session = Session::open(h.kv());
        tx.send(Ok(create(2, false))).unwrap();
        assert!(matches!(next(&mut session, &mut inbound).await, Reply::Created { id: WatchId(0), .. }));
        assert_eq!(
            next(&mut session, &mut inbound).await,
            Reply::Compacted { id: WatchId(0), revision: Revision(4), compact_revision: Revision(3) }
        );
        // From the compaction revision itself, history is still there.
        tx.send(Ok(create(3, false))).unwrap();
        assert!(matches!(next(&mut session, &mut inbound).await, Reply::Created { .. }));
        assert_eq!(events_through(&mut session, &mut inbound, 4).await, [(3, "2".into()), (4, "3".into())]);
        h.kv().watch.close();
        assert_eq!(session.next(&mut inbound).await, Err(StoreError::Stopped));
    }
}
