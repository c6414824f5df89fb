//! Integration tests of the etcd Watch API through the project's own generated gRPC client,
//! against real `berth server` processes.
//!
//! Every guarantee is checked mechanically: a watcher's events are compared with the store's
//! history of the same range, rebuilt independently from historical `Range` reads (the state at
//! revision r−1 against the state at r gives the events of r and their `prev_kv`). A watcher is
//! judged on every revision up to the last header revision it was sent, because that is what a
//! client resumes from: ordered, unique, reliable, resumable and bookmarkable all follow from
//! "exactly the history, through the header". Atomicity is checked per response.
//!
//! Each test starts one 3-member cluster (seconds on a 2-core CI machine) and groups checks.

mod common;

use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::watch_client::WatchClient;
use berth_proto::mvccpb;
use common::grpc::{channel, leader_index, put, rev, runtime};
use common::{Cluster, OP_DEADLINE, START_DEADLINE};
use futures::channel::mpsc;
use futures::StreamExt;
use pb::request_op::Request as Op;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

type Kv = KvClient<Channel>;
type Event = mvccpb::Event;

/// How long an expected watch response may take: covers an election and a loaded CI machine.
const RECV_DEADLINE: Duration = Duration::from_secs(30);

/// What a watch response may weigh (a non-fragmenting watcher gets whole revisions).
const MAX_MESSAGE: usize = 64 << 20;

fn kv(url: &str) -> Kv {
    KvClient::new(channel(url)).max_decoding_message_size(MAX_MESSAGE)
}

/// Retries a put until the member answers: the first request after start waits for an election.
async fn ready(kv: &mut Kv) -> i64 {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match kv.put(put("ready/probe", "1")).await {
            Ok(r) => return rev(&r.into_inner().header),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("member never became ready: {e}"),
        }
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    end
}

async fn put_rev(kv: &mut Kv, key: &str, value: &[u8]) -> i64 {
    rev(&kv.put(put(key, value)).await.unwrap().into_inner().header)
}

/// A watch create request on `[key, range_end)` (empty `range_end`: the key alone).
fn watch(key: &str, range_end: Vec<u8>) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest { key: key.as_bytes().to_vec(), range_end, ..Default::default() }
}

fn watch_prefix(prefix: &str) -> pb::WatchCreateRequest {
    watch(prefix, prefix_end(prefix))
}

/// A response in one line, without values (failure messages stay readable).
fn brief(r: &pb::WatchResponse) -> String {
    let revs: Vec<i64> = r.events.iter().map(ev_rev).collect();
    format!(
        "watch_id={} header={} created={} canceled={} compact={} reason={:?} fragment={} events@{:?}",
        r.watch_id,
        r.header.as_ref().map_or(-1, |h| h.revision),
        r.created,
        r.canceled,
        r.compact_revision,
        r.cancel_reason,
        r.fragment,
        revs
    )
}

fn ev_rev(e: &Event) -> i64 {
    e.kv.as_ref().expect("events carry a kv").mod_revision
}

fn ev_key(e: &Event) -> &[u8] {
    &e.kv.as_ref().expect("events carry a kv").key
}

fn is_put(e: &Event) -> bool {
    e.r#type == mvccpb::event::EventType::Put as i32
}

/// One gRPC watch stream driven by the test.
struct Stream {
    tx: mpsc::UnboundedSender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(url: &str) -> Stream {
        Stream::open_on(channel(url)).await
    }

    /// A stream whose client takes at most `window` unread bytes (HTTP/2 flow control): a
    /// client that stops reading then stalls the server's sending after that much, rather than
    /// after hyper's default of megabytes.
    async fn open_with_window(url: &str, window: u32) -> Stream {
        let endpoint = Channel::from_shared(url.to_string())
            .unwrap()
            .initial_stream_window_size(Some(window))
            .initial_connection_window_size(Some(window));
        Stream::open_on(endpoint.connect_lazy()).await
    }

    async fn open_on(channel: Channel) -> Stream {
        let (tx, requests) = mpsc::unbounded();
        let mut client = WatchClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let rx = client.watch(requests).await.expect("open a watch stream").into_inner();
        Stream { tx, rx }
    }

    fn send(&self, request: pb::watch_request::RequestUnion) {
        self.tx.unbounded_send(pb::WatchRequest { request_union: Some(request) }).expect("stream open");
    }

    fn create(&self, c: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c));
    }

    fn cancel(&self, watch_id: i64) {
        self.send(pb::watch_request::RequestUnion::CancelRequest(pb::WatchCancelRequest { watch_id }));
    }

    fn progress(&self) {
        self.send(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {}));
    }

    async fn recv(&mut self) -> pb::WatchResponse {
        match tokio::time::timeout(RECV_DEADLINE, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Err(e)) => panic!("the watch stream failed: {e}"),
            Err(_) => panic!("no watch response within {RECV_DEADLINE:?}"),
        }
    }

    /// Creates a watcher and returns the `created` response (asserting that it succeeded).
    async fn created(&mut self, c: pb::WatchCreateRequest) -> pb::WatchResponse {
        self.create(c);
        let r = self.recv().await;
        assert!(r.created && !r.canceled && r.events.is_empty(), "{}", brief(&r));
        r
    }

    /// Reads the responses of watchers 0 and 1 until both are covered through `revision`,
    /// joining fragments; returns per watcher the number of wire responses and the events.
    async fn whole_responses(&mut self, revision: i64) -> BTreeMap<i64, (usize, Vec<Event>)> {
        let mut got: BTreeMap<i64, (usize, Vec<Event>)> = BTreeMap::new();
        let mut through: BTreeMap<i64, i64> = BTreeMap::new();
        let mut open_fragment = None;
        while through.len() < 2 || through.values().any(|t| *t < revision) || open_fragment.is_some() {
            let r = self.recv().await;
            assert!(!r.canceled && [0, 1].contains(&r.watch_id), "{}", brief(&r));
            if r.created {
                assert!(!got.contains_key(&r.watch_id), "events before created: {}", brief(&r));
                continue;
            }
            // A fragmented response is contiguous on the stream.
            assert!(open_fragment.is_none_or(|id| id == r.watch_id), "fragments interleaved: {}", brief(&r));
            open_fragment = r.fragment.then_some(r.watch_id);
            let entry = got.entry(r.watch_id).or_default();
            entry.0 += 1;
            entry.1.extend(r.events);
            through.insert(r.watch_id, rev(&r.header));
        }
        got
    }

    /// Reads responses until watcher `id` has been sent everything through `revision`; returns
    /// its event responses (other watchers' responses are an error here).
    async fn until(&mut self, id: i64, revision: i64) -> Vec<pb::WatchResponse> {
        let mut got = Vec::new();
        loop {
            let r = self.recv().await;
            assert_eq!(r.watch_id, id, "unexpected response {}", brief(&r));
            assert!(!r.canceled, "{}", brief(&r));
            let through = rev(&r.header);
            got.push(r);
            if through >= revision {
                return got;
            }
        }
    }
}

/// The store's history under one prefix, rebuilt from historical reads.
struct History {
    /// Events per revision, in key order (the tests only write multi-key revisions in key
    /// order, so that this is also their order inside the revision).
    events: BTreeMap<i64, Vec<Event>>,
}

impl History {
    /// Reads the state of `prefix` at every revision from `from - 1` to `to` on one member.
    async fn read(kv: &mut Kv, prefix: &str, from: i64, to: i64) -> History {
        // A linearizable read first: the member has then applied `to`, and serializable reads
        // at older revisions are exact.
        kv.range(pb::RangeRequest { key: b"ready/probe".to_vec(), ..Default::default() }).await.unwrap();
        // Many reads in flight at once on the one connection: each round trip is slow compared
        // with the work it does.
        let reads = (from - 1..=to).map(|r| {
            let mut kv = kv.clone();
            async move {
                let req = pb::RangeRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix),
                    revision: r,
                    serializable: true,
                    ..Default::default()
                };
                let resp = kv.range(req).await.unwrap_or_else(|e| panic!("historical read at {r}: {e}")).into_inner();
                (r, resp.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect::<BTreeMap<_, _>>())
            }
        });
        let states: BTreeMap<i64, BTreeMap<Vec<u8>, mvccpb::KeyValue>> =
            futures::stream::iter(reads).buffer_unordered(32).collect().await;
        let mut events = BTreeMap::new();
        for r in from..=to {
            let (before, after) = (&states[&(r - 1)], &states[&r]);
            let keys: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
            let mut at = Vec::new();
            for key in keys {
                let prev_kv = before.get(key).cloned();
                match after.get(key) {
                    Some(kv) if kv.mod_revision == r => {
                        at.push(Event { r#type: mvccpb::event::EventType::Put as i32, kv: Some(kv.clone()), prev_kv })
                    }
                    Some(_) => {}
                    None if prev_kv.is_some() => at.push(Event {
                        r#type: mvccpb::event::EventType::Delete as i32,
                        kv: Some(mvccpb::KeyValue { key: key.clone(), mod_revision: r, ..Default::default() }),
                        prev_kv,
                    }),
                    None => {}
                }
            }
            if !at.is_empty() {
                events.insert(r, at);
            }
        }
        History { events }
    }

    /// What a watcher of `spec` must have been sent, from `start` through `through`.
    fn expected(&self, spec: &pb::WatchCreateRequest, start: i64, through: i64) -> Vec<Event> {
        let no_put = spec.filters.contains(&(pb::watch_create_request::FilterType::Noput as i32));
        let no_delete = spec.filters.contains(&(pb::watch_create_request::FilterType::Nodelete as i32));
        let in_range = |key: &[u8]| {
            if spec.range_end.is_empty() {
                key == spec.key.as_slice()
            } else {
                key >= spec.key.as_slice() && key < spec.range_end.as_slice()
            }
        };
        self.events
            .range(start..=through)
            .flat_map(|(_, evs)| evs.iter())
            .filter(|e| in_range(ev_key(e)) && if is_put(e) { !no_put } else { !no_delete })
            .map(|e| {
                let mut e = e.clone();
                if !spec.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// Asserts that no response split a revision: each revision in a response comes with all of the
/// events `expected` has for it.
fn assert_atomic(what: &str, responses: &[Vec<Event>], expected: &[Event]) {
    let mut per_rev: BTreeMap<i64, usize> = BTreeMap::new();
    for e in expected {
        *per_rev.entry(ev_rev(e)).or_default() += 1;
    }
    for (i, events) in responses.iter().enumerate() {
        let mut here: BTreeMap<i64, usize> = BTreeMap::new();
        for e in events {
            *here.entry(ev_rev(e)).or_default() += 1;
        }
        for (r, n) in here {
            assert_eq!(Some(&n), per_rev.get(&r), "{what}: response {i} has {n} events of revision {r}");
        }
    }
}

/// Asserts that a watcher got exactly `expected`, in whole revisions.
fn assert_watcher(what: &str, responses: &[pb::WatchResponse], expected: &[Event]) {
    let per_response: Vec<Vec<Event>> = responses.iter().map(|r| r.events.clone()).collect();
    let got: Vec<Event> = per_response.iter().flatten().cloned().collect();
    if got != expected {
        let show = |evs: &[Event]| {
            evs.iter().map(|e| format!("{}@{}", String::from_utf8_lossy(ev_key(e)), ev_rev(e))).collect::<Vec<_>>()
        };
        panic!("{what}: got {:?}\nexpected {:?}", show(&got), show(expected));
    }
    assert_atomic(what, &per_response, expected);
}

/// Where two event lists first differ, without printing values.
fn first_difference<T: PartialEq>(got: &[T], expected: &[T]) -> String {
    match got.iter().zip(expected).position(|(a, b)| a != b) {
        Some(i) => format!("first difference at event {i} (of {} got, {} expected)", got.len(), expected.len()),
        None => format!("{} events got, {} expected", got.len(), expected.len()),
    }
}

/// Creates, ids, errors, cancel, filters, prev_kv, atomic txns, historical and future starts,
/// progress requests, fragmentation and compaction, each against the store's own history.
#[test]
fn watch_protocol_against_history() {
    let cluster = Cluster::start(3);
    let rt = runtime();
    rt.block_on(async {
        let url = cluster.client_url(0);
        let mut kv = kv(&url);
        let first = ready(&mut kv).await + 1;
        let mut s = Stream::open(&url).await;

        // Ids: the server counts from 0; a client's choice is kept; the header is the revision
        // the watch starts after.
        let plain = s.created(watch_prefix("sem/")).await;
        assert_eq!(plain.watch_id, 0);
        assert!(rev(&plain.header) >= first - 1, "{}", brief(&plain));
        let header = plain.header.unwrap();
        assert_ne!((header.cluster_id, header.member_id, header.raft_term), (0, 0, 0), "a full header");
        assert_eq!(s.created(watch_prefix("sem/")).await.watch_id, 1);
        let prev_kv = pb::WatchCreateRequest { watch_id: 7, prev_kv: true, ..watch_prefix("sem/") };
        assert_eq!(s.created(prev_kv.clone()).await.watch_id, 7);
        let no_put = pb::WatchCreateRequest { filters: vec![0], ..watch_prefix("sem/") };
        assert_eq!(s.created(no_put.clone()).await.watch_id, 2, "auto ids skip nothing but taken ones");
        let no_delete = pb::WatchCreateRequest { filters: vec![1], ..watch_prefix("sem/") };
        assert_eq!(s.created(no_delete.clone()).await.watch_id, 3);

        // Refused creates: created and canceled at once, watch id -1, etcd's reasons.
        for (bad, reason) in [
            (
                pb::WatchCreateRequest { watch_id: 7, ..watch_prefix("sem/") },
                "mvcc: duplicate watch ID provided on the WatchStream",
            ),
            (watch("b", b"a".to_vec()), "mvcc: watcher range is empty"),
            (
                pb::WatchCreateRequest { start_revision: -1, ..watch_prefix("sem/") },
                "etcdserver: mvcc: required revision has been compacted",
            ),
        ] {
            s.create(bad);
            let r = s.recv().await;
            assert!(r.created && r.canceled, "{}", brief(&r));
            assert_eq!((r.watch_id, r.cancel_reason.as_str()), (-1, reason));
        }

        // Cancel answers once; a cancel of an unknown id gets no answer at all, which the next
        // response (a progress answer) shows.
        s.cancel(1);
        let r = s.recv().await;
        assert!(r.canceled && !r.created && r.watch_id == 1, "{}", brief(&r));
        s.cancel(1);
        s.cancel(999);
        s.progress();
        let r = s.recv().await;
        assert_eq!((r.watch_id, r.canceled, r.created, r.events.len()), (-1, false, false, 0), "{}", brief(&r));

        // Writes: put, overwrite, delete, a two-key txn (one revision), a range delete of two keys.
        let r1 = put_rev(&mut kv, "sem/k", b"v1").await;
        let r2 = put_rev(&mut kv, "sem/k", b"v2").await;
        kv.delete_range(pb::DeleteRangeRequest { key: b"sem/k".to_vec(), ..Default::default() }).await.unwrap();
        let txn = pb::TxnRequest {
            success: vec![
                pb::RequestOp { request: Some(Op::RequestPut(put("sem/x", "1"))) },
                pb::RequestOp { request: Some(Op::RequestPut(put("sem/y", "2"))) },
            ],
            ..Default::default()
        };
        let r4 = rev(&kv.txn(txn).await.unwrap().into_inner().header);
        let del = pb::DeleteRangeRequest { key: b"sem/x".to_vec(), range_end: b"sem/z".to_vec(), ..Default::default() };
        let r5 = rev(&kv.delete_range(del).await.unwrap().into_inner().header);
        assert!(r1 < r2 && r2 < r4 && r4 < r5);

        // Responses of several watchers interleave; sort them out per watcher. A progress answer
        // at or above r5 says every watcher has been sent everything through r5.
        let mut by_id: BTreeMap<i64, Vec<pb::WatchResponse>> = BTreeMap::new();
        s.progress();
        loop {
            let r = s.recv().await;
            assert!(!r.created && !r.canceled, "{}", brief(&r));
            if r.watch_id == -1 {
                assert!(r.events.is_empty());
                if rev(&r.header) >= r5 {
                    break;
                }
                s.progress();
                continue;
            }
            assert!(!r.events.is_empty(), "{}", brief(&r));
            by_id.entry(r.watch_id).or_default().push(r);
        }
        let history = History::read(&mut kv, "sem/", r1, r5).await;
        let specs = [(0, watch_prefix("sem/")), (7, prev_kv.clone()), (2, no_put), (3, no_delete)];
        for (id, spec) in &specs {
            assert_watcher(&format!("watcher {id}"), &by_id[id], &history.expected(spec, r1, r5));
        }
        // Spot checks of what the comparison covers, in etcd's terms.
        let all: Vec<&Event> = by_id[&7].iter().flat_map(|r| &r.events).collect();
        assert_eq!(all.len(), 7);
        assert_eq!(all[0].prev_kv, None, "a create has no previous value");
        assert_eq!(all[1].prev_kv.as_ref().map(|p| (p.value.as_slice(), p.mod_revision)), Some((&b"v1"[..], r1)));
        assert!(!is_put(all[2]) && all[2].prev_kv.as_ref().unwrap().value == b"v2");
        assert!(by_id[&0].iter().flat_map(|r| &r.events).all(|e| e.prev_kv.is_none()));
        assert!(by_id[&2].iter().flat_map(|r| &r.events).all(|e| !is_put(e)), "NOPUT");
        assert!(by_id[&3].iter().flat_map(|r| &r.events).all(is_put), "NODELETE");

        // Historical start: the same events again, from the store's history.
        let replay = pb::WatchCreateRequest { watch_id: 20, start_revision: r1, ..prev_kv.clone() };
        s.created(replay.clone()).await;
        let got = s.until(20, r5).await;
        assert_watcher("replay from r1", &got, &history.expected(&replay, r1, r5));

        // Future start: only revisions from it on.
        s.cancel(0);
        s.cancel(2);
        s.cancel(3);
        s.cancel(7);
        s.cancel(20);
        for _ in 0..5 {
            assert!(s.recv().await.canceled);
        }
        let future = pb::WatchCreateRequest { watch_id: 30, start_revision: r5 + 3, ..watch_prefix("sem/") };
        s.created(future.clone()).await;
        let mut writes = Vec::new();
        for i in 0..4 {
            writes.push(put_rev(&mut kv, &format!("sem/f{i}"), b"f").await);
        }
        let last = writes[3];
        let got = s.until(30, last).await;
        let history = History::read(&mut kv, "sem/", r1, last).await;
        let expected = history.expected(&future, r5 + 3, last);
        assert_watcher("future start", &got, &expected);
        assert_eq!(expected.len(), writes.iter().filter(|r| **r >= r5 + 3).count());

        // A progress request answers with a revision every later event exceeds.
        s.progress();
        let r = s.recv().await;
        assert_eq!((r.watch_id, r.events.len()), (-1, 0), "{}", brief(&r));
        let progress = rev(&r.header);
        assert!(progress >= last, "{progress} < {last}");
        let after = put_rev(&mut kv, "sem/after-progress", b"p").await;
        let got = s.until(30, after).await;
        assert!(got.iter().flat_map(|r| &r.events).all(|e| ev_rev(e) > progress));

        // Fragments. 160 values of 16 KiB: replayed from history they make one 2.6 MB response,
        // and deleted in one revision (with prev_kv) a 2.6 MB revision. Above etcd's 2 MiB a
        // fragmenting watcher gets them in pieces, the other whole. (Values stay small because
        // each write is its own Raft entry.)
        let writes = write_many(&cluster, &["frag/"], 4, 40, 16 * 1024).await;
        let first_frag = writes[0].0;
        let mut f = Stream::open(&url).await;
        let big = pb::WatchCreateRequest { prev_kv: true, start_revision: first_frag, ..watch_prefix("frag/") };
        // Both creates go out first: a watcher replaying history may be sent events before the
        // stream reads the next request.
        f.create(pb::WatchCreateRequest { fragment: true, ..big.clone() });
        f.create(pb::WatchCreateRequest { fragment: false, ..big.clone() });
        let replayed = f.whole_responses(writes.last().unwrap().0).await;
        let del =
            pb::DeleteRangeRequest { key: b"frag/".to_vec(), range_end: prefix_end("frag/"), ..Default::default() };
        let rd = rev(&kv.delete_range(del).await.unwrap().into_inner().header);
        let deleted = f.whole_responses(rd).await;
        let summary = |e: &Event| {
            let prev = e.prev_kv.as_ref().map(|p| (p.mod_revision, p.value.clone()));
            (is_put(e), ev_rev(e), ev_key(e).to_vec(), e.kv.as_ref().unwrap().value.clone(), prev)
        };
        let puts: Vec<_> = writes.iter().map(|(r, k, v)| (true, *r, k.clone(), v.clone(), None)).collect();
        let mut dels: Vec<_> =
            writes.iter().map(|(r, k, v)| (false, rd, k.clone(), Vec::new(), Some((*r, v.clone())))).collect();
        dels.sort_by(|a, b| a.2.cmp(&b.2));
        for (phase, got, expected) in [("replay", &replayed, &puts), ("delete", &deleted, &dels)] {
            for id in [0, 1] {
                let (pieces, events) = &got[&id];
                let got: Vec<_> = events.iter().map(summary).collect();
                assert!(&got == expected, "{phase}, watcher {id}: {}", first_difference(&got, expected));
                if id == 0 {
                    assert!(*pieces >= 2, "{phase}: 2.6 MB is fragmented ({pieces} piece(s))");
                } else {
                    assert_eq!(*pieces, 1, "{phase}: without fragment, one response");
                }
            }
        }

        // Compaction: a start below the compacted revision is created, then canceled with it.
        let compact_at = put_rev(&mut kv, "sem/compact", b"c").await;
        kv.compact(pb::CompactionRequest { revision: compact_at, physical: false }).await.unwrap();
        // On another member: a linearizable read there returns once it applied the compaction.
        let member1 = cluster.client_url(1);
        self::kv(&member1).range(pb::RangeRequest { key: b"x".to_vec(), ..Default::default() }).await.unwrap();
        let mut c = Stream::open(&member1).await;
        let too_old = pb::WatchCreateRequest { watch_id: 5, start_revision: compact_at - 1, ..watch_prefix("sem/") };
        c.created(too_old).await;
        let canceled = c.recv().await;
        assert!(canceled.canceled && !canceled.created, "{}", brief(&canceled));
        assert_eq!((canceled.watch_id, canceled.compact_revision), (5, compact_at), "{}", brief(&canceled));
        assert!(canceled.events.is_empty() && canceled.cancel_reason.is_empty());
        // From the compaction revision itself, history is still there.
        let at = pb::WatchCreateRequest { watch_id: 6, start_revision: compact_at, ..watch_prefix("sem/") };
        c.created(at).await;
        let got = c.until(6, compact_at).await;
        assert_eq!(got.iter().flat_map(|r| &r.events).map(ev_rev).collect::<Vec<_>>(), [compact_at]);
    });
}

/// Slow watchers: a stream whose client stops reading never blocks writers, falls back to
/// history and loses nothing; if the history it needs is compacted meanwhile, it is canceled
/// with the compact revision after the events it could still be sent.
#[test]
fn slow_watchers_catch_up_or_are_canceled_when_compacted() {
    let cluster = Cluster::start(3);
    let rt = runtime();
    rt.block_on(async {
        let mut kv0 = kv(&cluster.client_url(0));
        ready(&mut kv0).await;

        // Two stalled streams (each on its own connection, with a 64 KiB window) on member 1.
        let member = 1;
        let window = 64 * 1024;
        let mut slow = Stream::open_with_window(&cluster.client_url(member), window).await;
        let start = rev(&slow.created(watch_prefix("slow/")).await.header) + 1;
        let mut lag = Stream::open_with_window(&cluster.client_url(member), window).await;
        lag.created(watch_prefix("lag/")).await;

        // 2.4 MB under each prefix (304 writes of 8 KiB, from 8 writers): twice what flow
        // control and a watcher's queue (1 MiB) hold. The writes complete although nobody reads
        // the watch streams.
        let writes = write_many(&cluster, &["slow/", "lag/"], 8, 38, 8 * 1024).await;

        // The slow stream, read now: exactly the writes under slow/, in revision order, once each.
        let expected: Vec<(i64, Vec<u8>, Vec<u8>)> =
            writes.iter().filter(|w| w.1.starts_with(b"slow/")).cloned().collect();
        let last = expected.last().unwrap().0;
        let mut got = Vec::new();
        let mut through = start - 1;
        while through < last {
            let r = slow.recv().await;
            assert!(!r.canceled, "{}", brief(&r));
            assert!(r.events.first().is_none_or(|e| ev_rev(e) > through), "a duplicate or out of order event");
            through = rev(&r.header);
            got.extend(r.events.iter().map(|e| (ev_rev(e), ev_key(e).to_vec(), e.kv.as_ref().unwrap().value.clone())));
        }
        assert_eq!(got.len(), expected.len(), "every write under slow/ reached the slow watcher");
        assert!(got == expected, "slow watcher: {}", first_difference(&got, &expected));

        // Compact past everything the lagging watcher still has to read (a write after the last
        // one under lag/, so that its next revision is strictly below the compaction).
        let compact_at = put_rev(&mut kv0, "other/after", b"x").await;
        kv0.compact(pb::CompactionRequest { revision: compact_at, physical: false }).await.unwrap();
        // A linearizable read on member 1 returns once it has applied the compaction.
        kv(&cluster.client_url(member))
            .range(pb::RangeRequest { key: b"x".to_vec(), ..Default::default() })
            .await
            .unwrap();

        // The lagging stream: a gap-free prefix of the writes under lag/, then the cancel.
        let expected: Vec<(i64, Vec<u8>, Vec<u8>)> =
            writes.iter().filter(|w| w.1.starts_with(b"lag/")).cloned().collect();
        let mut got = Vec::new();
        let canceled = loop {
            let r = lag.recv().await;
            if r.canceled {
                break r;
            }
            got.extend(r.events.iter().map(|e| (ev_rev(e), ev_key(e).to_vec(), e.kv.as_ref().unwrap().value.clone())));
        };
        assert_eq!(canceled.compact_revision, compact_at, "{}", brief(&canceled));
        assert!(got.len() < expected.len(), "the stalled watcher fell behind the compaction ({} events)", got.len());
        assert!(got == expected[..got.len()], "lagging watcher: {}", first_difference(&got, &expected[..got.len()]));

        // Both watchers went through the catch-up path on the server.
        let log = cluster.log(member);
        assert!(log.matches("slow watcher moved to catch-up").count() >= 2, "no catch-up logged on member {member}");
    });
}

/// `writers` tasks each write `per_writer` values of `size` bytes under each prefix (rotating
/// through the members); returns (revision, key, value) of every write, in revision order.
async fn write_many(
    cluster: &Cluster,
    prefixes: &[&str],
    writers: usize,
    per_writer: usize,
    size: usize,
) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let mut kv = kv(&cluster.client_url(w % cluster.len()));
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        tasks.spawn(async move {
            let mut done = Vec::new();
            for i in 0..per_writer {
                for p in &prefixes {
                    let key = format!("{p}{w}/{i:04}").into_bytes();
                    let mut value = format!("{w}-{i}-").into_bytes();
                    value.resize(size, b'.');
                    let r = kv.put(put(key.clone(), value.clone())).await.expect("writes go on while watchers stall");
                    done.push((rev(&r.into_inner().header), key, value));
                }
            }
            done
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all.sort();
    all
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: u64 = 20;

fn key(i: u64) -> Vec<u8> {
    format!("rnd/k{i:02}").into_bytes()
}

/// One random write: puts, deletes, multi-key txns (ops in key order) and range deletes.
fn random_op(rng: &mut Rng, n: usize) -> pb::TxnRequest {
    let value = || format!("v{n}").into_bytes();
    let op = |r: Op| pb::RequestOp { request: Some(r) };
    let ops = match rng.below(10) {
        0..=4 => vec![op(Op::RequestPut(put(key(rng.below(KEYS)), value())))],
        5 => {
            vec![op(Op::RequestDeleteRange(pb::DeleteRangeRequest { key: key(rng.below(KEYS)), ..Default::default() }))]
        }
        6..=8 => {
            let keys: BTreeSet<u64> = (0..2 + rng.below(3)).map(|_| rng.below(KEYS)).collect();
            keys.into_iter()
                .map(|k| {
                    if rng.below(5) == 0 {
                        op(Op::RequestDeleteRange(pb::DeleteRangeRequest { key: key(k), ..Default::default() }))
                    } else {
                        op(Op::RequestPut(put(key(k), value())))
                    }
                })
                .collect()
        }
        _ => {
            let a = rng.below(KEYS);
            let b = a + 1 + rng.below(4);
            vec![op(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key(a),
                range_end: key(b),
                ..Default::default()
            }))]
        }
    };
    pb::TxnRequest { success: ops, ..Default::default() }
}

/// What the test knows about one watcher.
struct Record {
    spec: pb::WatchCreateRequest,
    /// The first revision it watches (known once created when it started "from now").
    start: Option<i64>,
    responses: Vec<pb::WatchResponse>,
    /// Everything through here was sent (the highest header seen).
    through: i64,
    /// Its `created` arrived on the current stream. A stream-wide progress answer speaks only for
    /// those: a create still in flight may be served after the answer was decided.
    created: bool,
    /// Guarantee violations seen as responses arrived.
    violations: Vec<String>,
}

/// The watchers of one stream, shared with the task that reads it.
#[derive(Default)]
struct StreamLog {
    watchers: BTreeMap<i64, Record>,
    /// Header revisions of the stream-wide progress answers.
    progress: Vec<i64>,
    /// Why the stream ended, if it did.
    ended: Option<String>,
}

/// Reads a stream until it ends, checking each response on arrival against what came before.
async fn read_stream(mut rx: tonic::Streaming<pb::WatchResponse>, log: Arc<Mutex<StreamLog>>) {
    loop {
        let r = match rx.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                log.lock().unwrap().ended = Some("end of stream".into());
                return;
            }
            Err(e) => {
                log.lock().unwrap().ended = Some(e.to_string());
                return;
            }
        };
        let mut log = log.lock().unwrap();
        let header = rev(&r.header);
        if r.watch_id == -1 {
            assert!(!r.created, "a refused create: {}", brief(&r));
            for w in log.watchers.values_mut().filter(|w| w.created) {
                w.through = w.through.max(header);
            }
            log.progress.push(header);
            continue;
        }
        let w = log
            .watchers
            .get_mut(&r.watch_id)
            .unwrap_or_else(|| panic!("response for an unknown watcher {}", brief(&r)));
        if r.created {
            assert!(!r.canceled, "{}", brief(&r));
            w.created = true;
            if w.start.is_none() {
                w.start = Some(header + 1);
                w.through = header;
            }
            continue;
        }
        if r.canceled {
            w.violations.push(format!("canceled: {}", brief(&r)));
            continue;
        }
        if let Some(first) = r.events.first() {
            if ev_rev(first) <= w.through {
                w.violations.push(format!("event at {} after header {}", ev_rev(first), w.through));
            }
        }
        if let Some(last) = r.events.last() {
            if ev_rev(last) > header {
                w.violations.push(format!("event at {} above its header {header}", ev_rev(last)));
            }
        }
        w.through = w.through.max(header);
        w.responses.push(r);
    }
}

/// 1,000 watchers over five streams on the three members, random writes (puts, deletes,
/// multi-key txns, range deletes) through every member, progress requests on the way, and the
/// leader killed in the middle. The streams of the surviving members go on; those of the dead
/// member are resumed elsewhere from their last header + 1. Every watcher must end up with
/// exactly its history.
#[test]
fn thousand_watchers_across_a_leader_kill() {
    const STREAMS: [usize; 5] = [0, 1, 2, 0, 1];
    const PER_STREAM: i64 = 200;
    const WRITERS: usize = 16;
    const OPS_PER_WRITER: usize = 50;

    let mut cluster = Cluster::start(3);
    let rt = runtime();
    rt.block_on(async {
        let mut kv0 = kv(&cluster.client_url(0));
        ready(&mut kv0).await;
        for i in 1..3 {
            ready(&mut kv(&cluster.client_url(i))).await;
        }
        // A little history for the watchers that start in the past.
        let mut base = 0;
        for k in 0..KEYS {
            base = put_rev(&mut kv0, std::str::from_utf8(&key(k)).unwrap(), b"init").await;
        }

        let spec_of = |j: i64| {
            let mut c = match j % 3 {
                0 => watch_prefix("rnd/"),
                1 => watch(std::str::from_utf8(&key(j as u64 % KEYS)).unwrap(), Vec::new()),
                _ => watch("rnd/k05", key(12)),
            };
            c.watch_id = j;
            c.prev_kv = j % 2 == 0;
            c.filters = match j % 5 {
                3 => vec![0],
                4 => vec![1],
                _ => vec![],
            };
            if j % 4 == 0 {
                c.start_revision = base - 10;
            }
            c
        };

        let mut senders = Vec::new();
        let mut logs = Vec::new();
        let mut readers = Vec::new();
        let mut on_member = Vec::new();
        for &m in &STREAMS {
            let Stream { tx, rx } = Stream::open(&cluster.client_url(m)).await;
            let log = Arc::new(Mutex::new(StreamLog::default()));
            readers.push(tokio::spawn(read_stream(rx, log.clone())));
            senders.push(tx);
            logs.push(log);
            on_member.push(m);
        }
        let create = |senders: &Vec<mpsc::UnboundedSender<pb::WatchRequest>>,
                      logs: &Vec<Arc<Mutex<StreamLog>>>,
                      s: usize,
                      c: pb::WatchCreateRequest| {
            let start = (c.start_revision > 0).then_some(c.start_revision);
            let through = start.map_or(0, |s| s - 1);
            logs[s].lock().unwrap().watchers.insert(
                c.watch_id,
                Record { spec: c.clone(), start, responses: vec![], through, created: false, violations: vec![] },
            );
            let req = pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(c)) };
            senders[s].unbounded_send(req).unwrap();
        };
        // Most watchers exist before the writes; the rest join while they run.
        let early = PER_STREAM * 4 / 5;
        for s in 0..STREAMS.len() {
            for j in 0..early {
                create(&senders, &logs, s, spec_of(j));
            }
        }
        let total: usize = logs.iter().map(|l| l.lock().unwrap().watchers.len()).sum();
        assert_eq!(total, STREAMS.len() * early as usize);

        // Writers: every member takes writes; after the kill only the live ones are used. A
        // failed write is not retried (its outcome may be unknown; the history decides).
        let live: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0, 1, 2]));
        let done_ops = Arc::new(AtomicUsize::new(0));
        let urls: Vec<String> = (0..3).map(|i| cluster.client_url(i)).collect();
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let (live, done_ops, urls) = (live.clone(), done_ops.clone(), urls.clone());
            writers.spawn(async move {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                let clients: Vec<Kv> = urls.iter().map(|u| kv(u)).collect();
                for n in 0..OPS_PER_WRITER {
                    let txn = random_op(&mut rng, w * OPS_PER_WRITER + n);
                    let target = {
                        let live = live.lock().unwrap();
                        live[n % live.len()]
                    };
                    let mut request = tonic::Request::new(txn);
                    request.set_timeout(Duration::from_secs(10));
                    let _ = clients[target].clone().txn(request).await;
                    done_ops.fetch_add(1, Ordering::Relaxed);
                }
            });
        }

        let total_ops = WRITERS * OPS_PER_WRITER;
        wait_ops(&done_ops, total_ops / 5, &senders).await;
        for s in 0..STREAMS.len() {
            for j in early..PER_STREAM {
                create(&senders, &logs, s, spec_of(j));
            }
        }
        wait_ops(&done_ops, total_ops * 2 / 5, &senders).await;

        // Kill the leader.
        let leader = poll_leader(&cluster, &[0, 1, 2]).await;
        cluster.kill(leader);
        live.lock().unwrap().retain(|m| *m != leader);
        let survivors = live.lock().unwrap().clone();
        eprintln!("killed the leader, member {leader}, after {} writes", done_ops.load(Ordering::Relaxed));

        // Resume the dead member's streams on the survivors, from each watcher's header + 1.
        for s in 0..STREAMS.len() {
            if on_member[s] != leader {
                continue;
            }
            let reader = std::mem::replace(&mut readers[s], tokio::spawn(async {}));
            tokio::time::timeout(RECV_DEADLINE, reader).await.expect("the dead member's stream ends").unwrap();
            let target = survivors[s % survivors.len()];
            let Stream { tx, rx } = Stream::open(&cluster.client_url(target)).await;
            let log = logs[s].clone();
            let resumes: Vec<pb::WatchCreateRequest> = {
                let mut log = log.lock().unwrap();
                log.ended = None;
                log.watchers.values_mut().for_each(|w| w.created = false);
                log.watchers
                    .values()
                    .map(|w| pb::WatchCreateRequest {
                        // Not created yet: its original request; else from its last header + 1.
                        start_revision: w.start.map_or(w.spec.start_revision, |_| w.through + 1),
                        ..w.spec.clone()
                    })
                    .collect()
            };
            readers[s] = tokio::spawn(read_stream(rx, log));
            for c in resumes {
                tx.unbounded_send(pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(c)),
                })
                .unwrap();
            }
            senders[s] = tx;
            on_member[s] = target;
        }

        wait_ops(&done_ops, total_ops, &senders).await;
        while writers.join_next().await.is_some() {}
        let mut kv_live = kv(&cluster.client_url(survivors[0]));
        let end = rev(&kv_live
            .range(pb::RangeRequest { key: b"rnd/".to_vec(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .header);

        // Every stream answers a progress request at or above the last revision: every watcher
        // has then been sent everything.
        for (s, tx) in senders.iter().enumerate() {
            let deadline = Instant::now() + RECV_DEADLINE;
            loop {
                let seen = logs[s].lock().unwrap().progress.len();
                tx.unbounded_send(pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                })
                .unwrap();
                while logs[s].lock().unwrap().progress.len() == seen {
                    assert!(Instant::now() < deadline, "stream {s} answers no progress request");
                    if let Some(why) = &logs[s].lock().unwrap().ended {
                        panic!("stream {s} on member {} ended: {why}", on_member[s]);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if logs[s].lock().unwrap().progress.last().is_some_and(|p| *p >= end) {
                    break;
                }
            }
        }

        let history = History::read(&mut kv_live, "rnd/", base - 10, end).await;
        let mut watchers = 0;
        let mut events = 0;
        for (s, log) in logs.iter().enumerate() {
            let log = log.lock().unwrap();
            assert!(log.ended.is_none(), "stream {s} ended: {:?}", log.ended);
            for (id, w) in &log.watchers {
                let what = format!("stream {s} (member {}) watcher {id}", on_member[s]);
                assert!(w.violations.is_empty(), "{what}: {:?}", w.violations);
                let start = w.start.unwrap_or_else(|| panic!("{what} was never created"));
                assert!(w.through >= end, "{what} is covered only through {}", w.through);
                let expected = history.expected(&w.spec, start, w.through);
                assert_watcher(&what, &w.responses, &expected);
                watchers += 1;
                events += expected.len();
            }
        }
        assert_eq!(watchers, STREAMS.len() * PER_STREAM as usize);
        assert!(events > 10_000, "the watchers saw a real workload ({events} events)");
        eprintln!("{watchers} watchers checked against {} revisions, {events} events", end - base + 10);
        for r in readers {
            r.abort();
        }
    });
}

/// Waits until `n` writes were done, sending progress requests on every stream meanwhile (their
/// answers are checked against the events that follow them).
async fn wait_ops(done_ops: &AtomicUsize, n: usize, senders: &[mpsc::UnboundedSender<pb::WatchRequest>]) {
    let deadline = Instant::now() + OP_DEADLINE * 4;
    while done_ops.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "writers stalled at {}", done_ops.load(Ordering::Relaxed));
        for tx in senders {
            let _ = tx.unbounded_send(pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn poll_leader(cluster: &Cluster, live: &[usize]) -> usize {
    let deadline = Instant::now() + OP_DEADLINE;
    loop {
        if let Some(l) = leader_index(cluster, live).await {
            return l;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
