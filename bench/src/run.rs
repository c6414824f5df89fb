//! The thin async shell of `berth bench`: opens the connections, runs the client tasks, and
//! hands what it measured to [`report`](crate::report).
//!
//! Shape of a run: setup (connections; leases for `lease-keepalive`; created watchers for
//! `watch`), then `--clients` × `--in-flight` tasks that claim operation numbers from one shared
//! counter until `--total` are claimed, each with one request in flight (a client's tasks share
//! its connection), then teardown. Every task is owned by a `JoinSet` here (dropping it cancels
//! them); every request has a deadline; every server error is counted, never unwrapped. All
//! times are read from one clock, `base`, so that a watcher can time an event against the send
//! time a writer put in the value.

use crate::args::{Plan, Workload};
use crate::keys::{encode_key, filler, key_index, mix, prefix_end, read_stamp, run_prefix, stamp_value};
use crate::rate::TokenBucket;
use crate::report::{EventTally, Report, RunInfo, Tally, WatchOutcome};
use crate::BenchError;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::lease_client::LeaseClient;
use berth_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_proto::etcdserverpb::watch_client::WatchClient;
use berth_proto::mvccpb;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// How long opening one connection may take: a listening server answers in milliseconds, so
/// this only bounds a black-holed address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// After the last put was answered, how long a watcher waits for a further event before it
/// gives up on the ones still missing (and reports them). Generous: events can trail the puts'
/// acknowledgements by a lot on a loaded 2-core machine with many watchers.
const WATCH_DRAIN_IDLE: Duration = Duration::from_secs(10);

/// Runs the plan and returns its report. Fails only if setup fails (an endpoint cannot be
/// reached); errors of operations are counted in the report.
pub async fn execute(plan: &Plan) -> Result<Report, BenchError> {
    let endpoints = match plan.target_leader {
        true => vec![leader_endpoint(&plan.endpoints).await?],
        false => plan.endpoints.clone(),
    };
    let channels = connect(plan.conns, &endpoints).await?;
    let base = Instant::now();
    let (tally, elapsed, watch) = match plan.workload {
        Workload::Put | Workload::Range | Workload::TxnPut => {
            let shared = Shared::new(plan, base, Vec::new(), Tally::default());
            let started = Instant::now();
            join_all(spawn_kv_clients(&shared, &channels)).await;
            let elapsed = started.elapsed();
            (shared.finish(), elapsed, None)
        }
        Workload::LeaseKeepalive => {
            let (tally, elapsed) = lease_keepalive(plan, &channels, base).await;
            (tally, elapsed, None)
        }
        Workload::Watch => {
            let (tally, elapsed, watch) = watch_workload(plan, &channels, base).await;
            (tally, elapsed, Some(watch))
        }
    };
    let info = RunInfo {
        workload: plan.workload,
        endpoints,
        conns: plan.conns,
        clients: plan.clients,
        in_flight: plan.in_flight,
        total: plan.total,
    };
    Ok(Report::build(info, &tally, elapsed, watch.as_ref()))
}

/// Opens `conns` HTTP/2 connections, round-robin over the endpoints.
async fn connect(conns: usize, endpoints: &[String]) -> Result<Vec<Channel>, BenchError> {
    let mut channels = Vec::with_capacity(conns);
    for i in 0..conns {
        channels.push(connect_one(&endpoints[i % endpoints.len()]).await?);
    }
    Ok(channels)
}

async fn connect_one(url: &str) -> Result<Channel, BenchError> {
    let connect_error = |source| BenchError::Connect { url: url.to_string(), source };
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(connect_error)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(connect_error)
}

/// The endpoint whose member leads: the one whose status names itself as the leader.
/// Endpoints that cannot be reached or do not answer are passed over.
async fn leader_endpoint(endpoints: &[String]) -> Result<String, BenchError> {
    for url in endpoints {
        let Ok(channel) = connect_one(url).await else { continue };
        let mut maintenance = MaintenanceClient::new(channel);
        let mut request = tonic::Request::new(pb::StatusRequest::default());
        request.set_timeout(CONNECT_TIMEOUT);
        if let Ok(status) = maintenance.status(request).await {
            let status = status.into_inner();
            if status.leader != 0 && status.header.map(|h| h.member_id) == Some(status.leader) {
                return Ok(url.clone());
            }
        }
    }
    Err(BenchError::NoLeader(endpoints.to_vec()))
}

/// What the client tasks of one run share.
struct Shared {
    plan: Plan,
    /// The run's one clock.
    base: Instant,
    /// The next operation number to claim.
    next_op: AtomicU64,
    limiter: Option<Mutex<TokenBucket>>,
    /// One tally behind a lock rather than one per client: a histogram is a few hundred KiB,
    /// and the lock is held for nanoseconds per operation that takes tens of microseconds.
    tally: Mutex<Tally>,
    progress: ProgressBar,
    /// Put before every key (the per-run prefix of `watch`; empty otherwise).
    key_prefix: Vec<u8>,
    value: Vec<u8>,
}

impl Shared {
    fn new(plan: &Plan, base: Instant, key_prefix: Vec<u8>, tally: Tally) -> Arc<Shared> {
        Arc::new(Shared {
            plan: plan.clone(),
            base,
            next_op: AtomicU64::new(0),
            limiter: plan.rate.map(|rate| Mutex::new(TokenBucket::new(rate))),
            tally: Mutex::new(tally),
            progress: progress_bar(plan.total),
            key_prefix,
            value: filler(plan.seed, plan.val_size),
        })
    }

    /// Claims the next operation number, or `None` once `--total` are claimed, and waits for
    /// the rate limiter's go.
    async fn claim(&self) -> Option<u64> {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        if op >= self.plan.total {
            return None;
        }
        if let Some(limiter) = &self.limiter {
            let now = self.base.elapsed();
            let wait = limiter.lock().expect("rate limiter lock").reserve(now);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        Some(op)
    }

    /// The key operation `op` touches.
    fn key(&self, op: u64) -> Vec<u8> {
        let index = key_index(self.plan.order, op, mix(self.plan.seed, op));
        let mut key = Vec::with_capacity(self.key_prefix.len() + self.plan.key_size);
        key.extend_from_slice(&self.key_prefix);
        key.resize(self.key_prefix.len() + self.plan.key_size, 0);
        encode_key(index, &mut key[self.key_prefix.len()..]);
        key
    }

    /// Nanoseconds since `base`: the send time a `watch` writer puts in its value.
    fn now_nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records one sent operation's outcome.
    fn record(&self, latency: Duration, outcome: Result<Result<(), Status>, tokio::time::error::Elapsed>) {
        {
            let mut tally = self.tally.lock().expect("tally lock");
            tally.sent += 1;
            match outcome {
                Ok(Ok(())) => tally.ok(latency),
                Ok(Err(status)) => tally.error(&status_message(&status)),
                Err(_) => tally.error(&format!("request timed out after {:?}", self.plan.timeout)),
            }
        }
        self.progress.inc(1);
    }

    fn error(&self, message: &str) {
        self.tally.lock().expect("tally lock").error(message);
    }

    /// The tally, once the run is over.
    fn finish(&self) -> Tally {
        self.progress.finish_and_clear();
        self.tally.lock().expect("tally lock").clone()
    }
}

/// A progress bar on stderr while stdout is a terminal; hidden otherwise, so that redirected
/// output (`--json > file`, a script, a test) gets no escape sequences anywhere.
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} {per_sec} eta {eta}")
            .expect("the progress template is valid"),
    );
    bar
}

/// `Code: message`, the form errors are tallied under.
fn status_message(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// Waits for every task. A panic in a task is a bug in this crate: it is passed on as is.
async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(value) => out.push(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("a bench task was cancelled while its owner waited for it: {e}"),
        }
    }
    out
}

/// The request loops of `put`, `range`, `txn-put` and of the writers of `watch`: `--in-flight`
/// per client, client i's on connection i mod N.
fn spawn_kv_clients(shared: &Arc<Shared>, channels: &[Channel]) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for client in 0..shared.plan.clients {
        for _ in 0..shared.plan.in_flight {
            tasks.spawn(kv_client(shared.clone(), channels[client % channels.len()].clone()));
        }
    }
    tasks
}

/// One request loop of a client (see [`spawn_kv_clients`]): one request at a time until the
/// operations run out.
async fn kv_client(shared: Arc<Shared>, channel: Channel) {
    let mut kv = KvClient::new(channel);
    let plan = &shared.plan;
    while let Some(op) = shared.claim().await {
        let key = shared.key(op);
        let mut value = shared.value.clone();
        let started = Instant::now();
        let request = async {
            match plan.workload {
                Workload::Put => kv.put(pb::PutRequest { key, value, ..Default::default() }).await.map(drop),
                Workload::Watch => {
                    // Stamped as late as possible, so the put→event latency covers the request.
                    stamp_value(&mut value, shared.now_nanos());
                    kv.put(pb::PutRequest { key, value, ..Default::default() }).await.map(drop)
                }
                Workload::Range => kv
                    .range(pb::RangeRequest { key, serializable: plan.serializable, ..Default::default() })
                    .await
                    .map(drop),
                Workload::TxnPut => {
                    let put = pb::PutRequest { key, value, ..Default::default() };
                    let txn = pb::TxnRequest {
                        success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put)) }],
                        ..Default::default()
                    };
                    kv.txn(txn).await.map(drop)
                }
                Workload::LeaseKeepalive => unreachable!("lease-keepalive has its own clients"),
            }
        };
        let outcome = tokio::time::timeout(plan.timeout, request).await;
        shared.record(started.elapsed(), outcome);
    }
}

/// `lease-keepalive`: grants one lease per client (not timed), then the clients send
/// keep-alives on their own `LeaseKeepAlive` streams, then the leases are revoked.
async fn lease_keepalive(plan: &Plan, channels: &[Channel], base: Instant) -> (Tally, Duration) {
    let timeout = plan.timeout;
    let mut grants = JoinSet::new();
    for client in 0..plan.clients {
        let mut lease = LeaseClient::new(channels[client % channels.len()].clone());
        let ttl = plan.lease_ttl;
        grants.spawn(async move {
            let grant = lease.lease_grant(pb::LeaseGrantRequest { ttl, id: 0 });
            match tokio::time::timeout(timeout, grant).await {
                Ok(Ok(response)) => Ok((client, response.into_inner().id)),
                Ok(Err(status)) => Err(format!("lease grant: {}", status_message(&status))),
                Err(_) => Err(format!("lease grant: timed out after {timeout:?}")),
            }
        });
    }
    let mut setup = Tally::default();
    let mut leases = Vec::new();
    for grant in join_all(grants).await {
        match grant {
            Ok(lease) => leases.push(lease),
            Err(message) => setup.error(&message),
        }
    }
    let shared = Shared::new(plan, base, Vec::new(), setup);
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for &(client, id) in &leases {
        clients.spawn(keepalive_client(shared.clone(), channels[client % channels.len()].clone(), id));
    }
    join_all(clients).await;
    let elapsed = started.elapsed();
    let mut revokes = JoinSet::new();
    for &(client, id) in &leases {
        let mut lease = LeaseClient::new(channels[client % channels.len()].clone());
        revokes.spawn(
            async move { tokio::time::timeout(timeout, lease.lease_revoke(pb::LeaseRevokeRequest { id })).await },
        );
    }
    for revoke in join_all(revokes).await {
        match revoke {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => shared.error(&format!("lease revoke: {}", status_message(&status))),
            Err(_) => shared.error(&format!("lease revoke: timed out after {timeout:?}")),
        }
    }
    (shared.finish(), elapsed)
}

/// The request and response halves of one open `LeaseKeepAlive` stream.
struct KeepAliveStream {
    requests: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    responses: Streaming<pb::LeaseKeepAliveResponse>,
}

async fn keepalive_client(shared: Arc<Shared>, channel: Channel, id: i64) {
    let mut lease = LeaseClient::new(channel);
    let mut stream = None;
    while shared.claim().await.is_some() {
        let started = Instant::now();
        let outcome = tokio::time::timeout(shared.plan.timeout, keep_alive(&mut lease, &mut stream, id)).await;
        if !matches!(outcome, Ok(Ok(()))) {
            // Start over on a fresh stream: after a timeout the late answer would otherwise be
            // taken for the next request's.
            stream = None;
        }
        shared.record(started.elapsed(), outcome);
    }
}

/// Sends one keep-alive for lease `id` and waits for its answer, opening the stream first if
/// there is none.
async fn keep_alive(
    lease: &mut LeaseClient<Channel>,
    stream: &mut Option<KeepAliveStream>,
    id: i64,
) -> Result<(), Status> {
    let request = pb::LeaseKeepAliveRequest { id };
    let open = match stream {
        Some(open) => {
            open.requests.send(request).await.map_err(|_| Status::unavailable("keep-alive stream closed"))?;
            open
        }
        None => {
            // The request is queued before the call: tonic's call returns once the server has
            // sent its response headers, and a Go gRPC server (etcd) sends those only with its
            // first message, i.e. after it has read a request.
            let (requests, rx) = mpsc::channel(1);
            requests.try_send(request).expect("a new channel has room for one request");
            let responses = lease.lease_keep_alive(ReceiverStream::new(rx)).await?.into_inner();
            stream.insert(KeepAliveStream { requests, responses })
        }
    };
    match open.responses.message().await? {
        Some(response) if response.ttl > 0 => Ok(()),
        // etcd answers a keep-alive for an unknown lease with TTL 0 rather than an error.
        Some(_) => Err(Status::not_found("keep-alive answered with TTL 0: the lease is gone")),
        None => Err(Status::unavailable("keep-alive stream ended by the server")),
    }
}

/// `watch`: creates the watchers, then runs the writers; when the writers are done, tells the
/// watchers how many events to expect and waits for them to see those (or give up).
async fn watch_workload(plan: &Plan, channels: &[Channel], base: Instant) -> (Tally, Duration, WatchOutcome) {
    let prefix = run_prefix(&plan.prefix, rand::random());
    let events = Arc::new(Mutex::new(EventTally::default()));
    let (expected_tx, expected_rx) = watch::channel(None);
    let mut watchers = JoinSet::new();
    let mut ready = Vec::with_capacity(plan.watchers);
    for w in 0..plan.watchers {
        let (ready_tx, ready_rx) = oneshot::channel();
        ready.push(ready_rx);
        watchers.spawn(watcher(Watcher {
            client: WatchClient::new(channels[w % channels.len()].clone()),
            prefix: prefix.clone(),
            timeout: plan.timeout,
            base,
            ready: ready_tx,
            expected: expected_rx.clone(),
            events: events.clone(),
        }));
    }
    let mut setup = Tally::default();
    let mut created = 0u64;
    for ready_rx in ready {
        match ready_rx.await {
            Ok(Ok(())) => created += 1,
            Ok(Err(message)) => setup.error(&message),
            // The watcher ended without saying: it panicked, which join_all passes on below.
            Err(_) => {}
        }
    }
    let shared = Shared::new(plan, base, prefix, setup);
    let started_at = base.elapsed();
    let started = Instant::now();
    join_all(spawn_kv_clients(&shared, channels)).await;
    let elapsed = started.elapsed();
    let puts = shared.tally.lock().expect("tally lock").ok;
    // Every created watcher sees every successful put (and possibly a timed-out one that was
    // applied anyway, which it ignores once it has its count).
    let _ = expected_tx.send(Some(puts));
    for failure in join_all(watchers).await.into_iter().flatten() {
        shared.error(&failure);
    }
    let events = events.lock().expect("event tally lock").clone();
    let outcome = WatchOutcome { watchers: created, started: started_at, expected: puts * created, events };
    (shared.finish(), elapsed, outcome)
}

/// What one watcher task needs.
struct Watcher {
    client: WatchClient<Channel>,
    prefix: Vec<u8>,
    timeout: Duration,
    base: Instant,
    /// Told once the watch is created (or could not be).
    ready: oneshot::Sender<Result<(), String>>,
    /// `Some(n)` once the writers are done and `n` puts succeeded.
    expected: watch::Receiver<Option<u64>>,
    events: Arc<Mutex<EventTally>>,
}

/// Watches the prefix until it has seen as many put events as there were successful puts.
/// Returns what went wrong, if anything.
async fn watcher(w: Watcher) -> Option<String> {
    let Watcher { mut client, prefix, timeout, base, ready, mut expected, events } = w;
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            range_end: prefix_end(&prefix),
            key: prefix,
            ..Default::default()
        })),
    };
    // Queued before the call for the same reason as a keep-alive (see `keep_alive`); `requests`
    // lives as long as this function, so the request half of the stream stays open.
    let (requests, rx) = mpsc::channel(1);
    requests.try_send(create).expect("a new channel has room for one request");
    let created = tokio::time::timeout(timeout, async {
        let mut stream = client.watch(ReceiverStream::new(rx)).await?.into_inner();
        loop {
            match stream.message().await? {
                Some(r) if r.canceled => return Err(Status::internal(format!("watch canceled: {}", r.cancel_reason))),
                Some(r) if r.created => return Ok(stream),
                Some(_) => continue,
                None => return Err(Status::unavailable("watch stream ended before the watch was created")),
            }
        }
    })
    .await;
    let mut stream = match created {
        Ok(Ok(stream)) => stream,
        Ok(Err(status)) => {
            let _ = ready.send(Err(format!("watch create: {}", status_message(&status))));
            return None;
        }
        Err(_) => {
            let _ = ready.send(Err(format!("watch create: timed out after {timeout:?}")));
            return None;
        }
    };
    let _ = ready.send(Ok(()));
    let mut seen = 0u64;
    loop {
        let target = *expected.borrow_and_update();
        let message = match target {
            Some(n) if seen >= n => return None,
            Some(_) => match tokio::time::timeout(WATCH_DRAIN_IDLE, stream.message()).await {
                Ok(message) => message,
                Err(_) => {
                    return Some(format!(
                        "watch: events missing, none arrived for {WATCH_DRAIN_IDLE:?} after the last put"
                    ))
                }
            },
            // `message` is cancel-safe (it polls the stream, which keeps its own state).
            None => tokio::select! {
                message = stream.message() => message,
                changed = expected.changed() => match changed {
                    Ok(()) => continue,
                    Err(_) => return None, // The run is being torn down.
                },
            },
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return Some("watch stream ended by the server".to_owned()),
            Err(status) => return Some(format!("watch: {}", status_message(&status))),
        };
        if response.canceled {
            return Some(format!("watch canceled: {}", response.cancel_reason));
        }
        let received = base.elapsed();
        let mut tally = events.lock().expect("event tally lock");
        for event in response.events {
            if event.r#type != mvccpb::event::EventType::Put as i32 {
                continue;
            }
            if let Some(sent) = event.kv.as_ref().and_then(|kv| read_stamp(&kv.value)) {
                tally.event(Duration::from_nanos(sent), received);
                seen += 1;
            }
        }
    }
}
