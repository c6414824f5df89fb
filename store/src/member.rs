//! One running store member: the Raft node, its storage, the group-commit batcher and the read
//! barrier, behind a small API that the gRPC services (and later the control plane) call.
//!
//! Writes: every member accepts them. A batcher coalesces concurrent commands into one Raft
//! entry (one fsync and one replication round for many clients); if this member is not the
//! leader the batch is forwarded to the leader, then this member waits until it has applied the
//! entry itself, so a client reading from it next sees its own write. The leader's batcher takes
//! forwarded batches in with its own clients' commands, so the whole cluster's writes share the
//! leader's few entries in flight instead of each follower batch becoming an entry of its own.
//! Reads: linearizable reads confirm leadership with a quorum (ReadIndex), on a follower by
//! asking the leader for the index to wait for; serializable reads serve local state.

use crate::codec;
use crate::engine::{write_file_durably, EngineError, SharedEngine, SledEngine};
use crate::error::{StoreError, StoreResult};
use crate::ids::{stable_hash, MemberId, Revision};
use crate::mvcc::{Applied, Command, RangeRequest, RangeResponse};
use crate::raft::log_store::LogStore;
use crate::raft::network::{ForwardError, PeerNetwork};
use crate::raft::state_machine::{KvState, StateMachine};
use crate::raft::wal::{Wal, SEGMENT_BYTES};
use crate::raft::{Committed, MemberNode, Proposal, ProposalResult, Raft};
use crate::read_batch::ReadBatcher;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a request may wait for a leader, a quorum and its own application.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
/// Upper bounds on one group-commit batch.
const MAX_BATCH_COMMANDS: usize = 512;
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Batches replicating at once; more requests wait and join the next batch. openraft keeps one
/// AppendEntries in flight per follower, so two batches keep replication busy (one on the wire,
/// the next gathering), and more cover the leader's own log sync, which openraft finishes before
/// it replicates an entry, and the followers' forwarded batches. Measured with 64 clients over
/// all members, each against the one before on fresh cluster pairs: 3 gave 3.5% more put
/// throughput than 2 and a lower p99, 8 gave 3.7% more than 3 (median of six pairs; 2.9% in an
/// earlier run).
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;
/// Bound of the queue in front of the batcher; a full queue makes callers wait (backpressure).
const PROPOSAL_QUEUE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// Everything a member needs to start; the flags of `berth server` map onto it.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub advertise_client_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// (name, peer URL) pairs; a name may appear more than once for several URLs.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// Applied entries between two snapshots.
    pub snapshot_count: u64,
    /// Entries kept after a snapshot so slow followers can catch up without one.
    pub snapshot_catchup_entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("data dir {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("raft: {0}")]
    Raft(String),
}

/// The file in a data dir that says which member of which cluster it holds.
pub(crate) const IDENTITY_FILE: &str = "identity";

/// Who a data dir belongs to, written when it is created and checked on every start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub member_id: u64,
    pub cluster_id: u64,
    pub token: String,
}

impl Identity {
    /// The identity of a member of a cluster formed from `config`'s initial cluster.
    pub fn of_new_cluster(config: &MemberConfig) -> Result<Identity, StartError> {
        let members = initial_members(config)?;
        let my_id = member_id_of(&config.initial_advertise_peer_urls, &config.initial_cluster_token);
        members.get(&my_id.0).filter(|m| m.name == config.name).ok_or_else(|| {
            StartError::Config(format!(
                "--initial-cluster has no entry {}={} matching --name and --initial-advertise-peer-urls",
                config.name,
                config.initial_advertise_peer_urls.join(",")
            ))
        })?;
        Ok(Identity {
            name: config.name.clone(),
            member_id: my_id.0,
            cluster_id: cluster_id_of(&members, &config.initial_cluster_token),
            token: config.initial_cluster_token.clone(),
        })
    }
}

/// Raft timing in milliseconds. The simulation gives each member its own one-millisecond
/// election window, so that no randomness outside the simulation's seed decides an election.
#[derive(Clone, Copy, Debug)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        // openraft bounds every AppendEntries (payload, transfer and the follower's fsync) by the
        // heartbeat interval; 200 ms leaves room for a full 1.5 MiB request on a slow disk.
        // Elections wait at least five missed heartbeats; the maximum keeps etcd's minimum lease
        // TTL (1.5 election timeouts) at 2 s.
        RaftTiming { heartbeat_ms: 200, election_min_ms: 1000, election_max_ms: 1300 }
    }
}

/// What a member is made of besides its configuration and identity: where its bytes go, how it
/// reaches its peers, the clock its leases use. `Member::open` builds them from the data dir;
/// the simulation injects in-memory and simulated ones.
pub struct Parts {
    pub engine: SharedEngine,
    pub network: PeerNetwork,
    pub lease_clock: Arc<dyn crate::lease::LeaseClock>,
    pub timing: RaftTiming,
    pub reads: ReadMode,
    /// Group-commit batches replicating at once: [`MAX_BATCHES_IN_FLIGHT`] but in the chaos
    /// suite's regression for stuck batch slots, which needs few enough that all can be stuck.
    pub batches_in_flight: usize,
}

/// How "linearizable" reads are served. Only the chaos suite sets anything but `Linearizable`:
/// it runs a deliberately broken store to show that its checkers catch the bug.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    #[default]
    Linearizable,
    /// BROKEN ON PURPOSE: serve every read from local state, without a ReadIndex round, so a
    /// partitioned or lagging member answers stale data.
    LocalStateForTesting,
}

/// What every etcd response header carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: MemberId,
    pub revision: Revision,
    pub raft_term: u64,
}

/// The member id etcd-style: derived from the peer URLs and the cluster token.
pub fn member_id_of(peer_urls: &[String], token: &str) -> MemberId {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    MemberId(stable_hash(&[urls.join(",").as_bytes(), token.as_bytes()]))
}

pub(crate) fn cluster_id_of(members: &BTreeMap<u64, MemberNode>, token: &str) -> u64 {
    let ids: Vec<u8> = members.keys().flat_map(|id| id.to_be_bytes()).collect();
    stable_hash(&[&ids, token.as_bytes()])
}

/// The initial cluster as member id → node, grouping repeated names.
pub(crate) fn initial_members(config: &MemberConfig) -> Result<BTreeMap<u64, MemberNode>, StartError> {
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, url) in &config.initial_cluster {
        by_name.entry(name).or_default().push(url.clone());
    }
    let mut members = BTreeMap::new();
    for (name, peer_urls) in by_name {
        let id = member_id_of(&peer_urls, &config.initial_cluster_token);
        // No client URLs: every initial member must propose the very same membership entry (it
        // is log index 0 on all of them, so Raft never reconciles differing copies). Each member
        // publishes its client URLs once it runs (see `cluster`).
        members.insert(id.0, MemberNode { name: name.to_string(), peer_urls, client_urls: Vec::new() });
    }
    Ok(members)
}

/// Handles that need no lock to use: the replicated state and the ways to reach the leader.
#[derive(Clone)]
pub(crate) struct Replicator {
    pub(crate) id: MemberId,
    pub(crate) raft: Raft,
    pub(crate) kv: Arc<KvState>,
    pub(crate) network: PeerNetwork,
}

/// Commands that go into one entry together, and where their results go: one command of a
/// client of this member, or a whole batch that a follower forwarded.
struct Pending {
    commands: Vec<Command>,
    size: usize,
    reply: oneshot::Sender<StoreResult<Committed>>,
}

/// A handle to the running member; cheap to clone.
#[derive(Clone)]
pub struct Member {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) rep: Replicator,
    cluster_id: u64,
    pub(crate) engine: SharedEngine,
    /// Membership administration: the leader's change lock and the publisher task.
    pub(crate) admin: Arc<crate::cluster::Admin>,
    /// Lease deadlines (while leading) and the expiry task.
    pub(crate) lessor: Arc<crate::lease::Lessor>,
    bootstrap: Option<BTreeMap<u64, MemberNode>>,
    proposals: Mutex<Option<mpsc::Sender<Pending>>>,
    batcher: Mutex<Option<JoinHandle<()>>>,
    /// Linearizable reads share ReadIndex rounds through this.
    reads: ReadBatcher,
    read_mode: ReadMode,
    read_task: Mutex<Option<JoinHandle<()>>>,
}

impl Member {
    /// Opens the data dir and creates the Raft node. Call [`Member::bootstrap`] once the peer
    /// transport is serving.
    pub async fn open(config: &MemberConfig) -> Result<Member, StartError> {
        Self::open_with_clock(config, Arc::new(crate::lease::TokioClock)).await
    }

    /// [`Member::open`] with the clock lease deadlines are measured by (simulations skew it).
    pub async fn open_with_clock(
        config: &MemberConfig,
        lease_clock: Arc<dyn crate::lease::LeaseClock>,
    ) -> Result<Member, StartError> {
        let dir = config.data_dir.display().to_string();
        let data_err = |reason: String| StartError::DataDir { dir: dir.clone(), reason };
        std::fs::create_dir_all(&config.data_dir).map_err(|e| data_err(format!("cannot create it: {e}")))?;
        let my_id = member_id_of(&config.initial_advertise_peer_urls, &config.initial_cluster_token);
        // The identity is checked before the database is even opened, so that starting the
        // wrong member on a data dir changes nothing in it.
        let identity_path = config.data_dir.join(IDENTITY_FILE);
        let identity = match std::fs::read(&identity_path) {
            Ok(bytes) => {
                let id: Identity = codec::open(&bytes).map_err(|e| data_err(format!("{IDENTITY_FILE}: {e}")))?;
                if id.name != config.name {
                    return Err(data_err(format!(
                        "belongs to member '{}', not '{}' (use the --name it was created with, or another --data-dir)",
                        id.name, config.name
                    )));
                }
                if id.token != config.initial_cluster_token {
                    return Err(data_err(format!(
                        "belongs to the cluster created with --initial-cluster-token '{}', not '{}'",
                        id.token, config.initial_cluster_token
                    )));
                }
                id
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if config.data_dir.join("member").exists() {
                    return Err(data_err(format!("has a database but no {IDENTITY_FILE} file: refusing to guess")));
                }
                // Validates that this member is in `--initial-cluster` under its name.
                let mut id = Identity::of_new_cluster(config)?;
                tracing::info!(member = %my_id, name = %id.name, "initializing a new data dir");
                // A joining member takes the id of the cluster it joins, which was derived from
                // that cluster's initial members, not from this member's flags.
                if config.initial_cluster_state == ClusterState::Existing {
                    let others: Vec<String> = initial_members(config)?
                        .into_iter()
                        .filter(|(id, _)| *id != my_id.0)
                        .flat_map(|(_, m)| m.peer_urls)
                        .collect();
                    id.cluster_id = crate::cluster::join_cluster(&others, my_id).await.map_err(StartError::Config)?;
                }
                let bytes = codec::seal(&id).map_err(|e| data_err(e.to_string()))?;
                write_file_durably(&identity_path, &[&bytes]).map_err(|e| data_err(format!("{IDENTITY_FILE}: {e}")))?;
                id
            }
            Err(e) => return Err(data_err(format!("{IDENTITY_FILE}: {e}"))),
        };
        let engine: SharedEngine = Arc::new(
            SledEngine::open(&config.data_dir.join("member"))
                .map_err(|e| data_err(format!("{e} (is another berth process using this data dir?)")))?,
        );
        let parts = Parts {
            engine,
            network: PeerNetwork::default(),
            lease_clock,
            timing: RaftTiming::default(),
            reads: ReadMode::Linearizable,
            batches_in_flight: MAX_BATCHES_IN_FLIGHT,
        };
        Member::start(config, identity, parts).await
    }

    /// Starts a member on the given parts. Call [`Member::bootstrap`] once the peer transport
    /// is serving.
    pub async fn start(config: &MemberConfig, identity: Identity, parts: Parts) -> Result<Member, StartError> {
        let Parts { engine, network, lease_clock, timing, reads: read_mode, batches_in_flight } = parts;
        let data_err = |reason: String| StartError::DataDir { dir: config.data_dir.display().to_string(), reason };
        let members = initial_members(config)?;
        let mut bootstrap = None;
        let sm = StateMachine::open(engine.clone()).map_err(|e: EngineError| data_err(e.to_string()))?;
        let kv = sm.shared();
        let never_initialized = kv.read().membership.membership().voter_ids().next().is_none();
        if never_initialized && config.initial_cluster_state == ClusterState::New {
            bootstrap = Some(members);
        }

        let wal = Arc::new(Wal::open(engine.segments(), SEGMENT_BYTES).map_err(|e| data_err(e.to_string()))?);
        let log_store = LogStore::new(wal, engine.clone());
        let raft_config = openraft::Config {
            cluster_name: identity.token.clone(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            // Each entry is a batch of up to MAX_BATCH_BYTES; keep one AppendEntries bounded.
            max_payload_entries: 32,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            max_in_snapshot_log_to_keep: config.snapshot_catchup_entries,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let raft = Raft::new(identity.member_id, Arc::new(raft_config), network.clone(), log_store, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let rep = Replicator { id: MemberId(identity.member_id), raft, kv, network };
        let lessor = Arc::new(crate::lease::Lessor::new(rep.id, rep.raft.config(), lease_clock));
        let admin = Arc::new(crate::cluster::Admin::new(
            identity.token.clone(),
            identity.cluster_id,
            identity.name.clone(),
            config.advertise_client_urls.clone(),
        ));
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE);
        let batcher = tokio::spawn(batch_loop(rx, rep.clone(), batches_in_flight));
        let barrier_rep = rep.clone();
        let (reads, read_task) = ReadBatcher::start(move || {
            let rep = barrier_rep.clone();
            async move { rep.read_barrier().await }
        });
        Ok(Member {
            inner: Arc::new(Inner {
                rep,
                cluster_id: identity.cluster_id,
                engine,
                admin,
                lessor,
                bootstrap,
                proposals: Mutex::new(Some(tx)),
                batcher: Mutex::new(Some(batcher)),
                reads,
                read_mode,
                read_task: Mutex::new(Some(read_task)),
            }),
        })
    }

    /// Forms the initial cluster on first start (every initial member does this with the same
    /// configuration, which openraft allows).
    pub async fn bootstrap(&self) -> Result<(), StartError> {
        if let Some(members) = &self.inner.bootstrap {
            match self.inner.rep.raft.initialize(members.clone()).await {
                Ok(()) => {}
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        // Now that peers can reach this member, it can publish its client URLs.
        self.inner.admin.start(self.inner.rep.clone());
        self.inner.lessor.start(self);
        Ok(())
    }

    /// Resolves once this member has been removed from the cluster (it should then stop, as an
    /// etcd member does).
    pub async fn removed(&self) {
        self.inner.admin.removed().await
    }

    pub fn id(&self) -> MemberId {
        self.inner.rep.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.rep.raft
    }

    pub fn kv(&self) -> &Arc<KvState> {
        &self.inner.rep.kv
    }

    /// The watchers of this member (served from its own applied state).
    pub fn watch_hub(&self) -> &crate::watch::WatchHub {
        &self.inner.rep.kv.watch
    }

    pub fn lessor(&self) -> &Arc<crate::lease::Lessor> {
        &self.inner.lessor
    }

    /// Returns once this member has applied everything committed before the call (ReadIndex).
    pub async fn read_barrier(&self) -> StoreResult<()> {
        self.inner.reads.barrier().await
    }

    pub fn engine(&self) -> &SharedEngine {
        &self.inner.engine
    }

    /// The response header for a response at `revision`.
    pub fn header(&self, revision: Revision) -> Header {
        Header {
            cluster_id: self.inner.cluster_id,
            member_id: self.inner.rep.id,
            revision,
            raft_term: self.inner.rep.raft.metrics().borrow().current_term,
        }
    }

    /// A read. Linearizable unless `serializable`, in which case it serves local state.
    /// Returns the store's current revision at the time of the read (for the header) with the
    /// response.
    pub async fn range(&self, req: RangeRequest, serializable: bool) -> StoreResult<(Revision, RangeResponse)> {
        if !serializable && self.inner.read_mode == ReadMode::Linearizable {
            self.inner.reads.barrier().await?;
        }
        let state = self.inner.rep.kv.read();
        let resp = state.mvcc.range(&req)?;
        Ok((state.mvcc.revision(), resp))
    }

    /// Replicates a command through Raft (forwarded to the leader when this member is not it)
    /// and returns its result once applied here.
    pub async fn propose(&self, command: Command) -> StoreResult<Applied> {
        let (_, ProposalResult { mut results }) = self.propose_together(vec![command]).await?;
        results.pop().unwrap_or_else(|| Err(StoreError::Internal("a command applied without a result".into())))
    }

    /// Replicates commands in one entry (with whatever else is queued) and returns the entry's
    /// index and their results once applied here.
    pub(crate) async fn propose_together(&self, commands: Vec<Command>) -> StoreResult<Committed> {
        let mut size = 0;
        for command in &commands {
            size += bincode::serialized_size(command).map_err(|e| StoreError::Internal(e.to_string()))? as usize;
        }
        let (reply, rx) = oneshot::channel();
        let tx = self.inner.proposals.lock().expect("proposals lock").clone().ok_or(StoreError::Stopped)?;
        tx.send(Pending { commands, size, reply }).await.map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Stops accepting proposals, lets queued ones finish, stops Raft and makes everything durable.
    pub async fn shutdown(&self) {
        // Ends the watch streams still open (their sessions see the signal and finish).
        self.inner.rep.kv.watch.close();
        // First, so that no revoke of an expired lease is proposed while the rest stops.
        self.inner.lessor.stop().await;
        self.inner.admin.stop().await;
        self.inner.proposals.lock().expect("proposals lock").take();
        let batcher = self.inner.batcher.lock().expect("batcher lock").take();
        if let Some(batcher) = batcher {
            let _ = batcher.await;
        }
        // Reads still waiting for a barrier fail with "server stopped".
        let read_task = self.inner.read_task.lock().expect("read task lock").take();
        if let Some(read_task) = read_task {
            read_task.abort();
            let _ = read_task.await;
        }
        if let Err(e) = self.inner.rep.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        if let Err(e) = self.inner.engine.sync() {
            tracing::error!("final sync failed: {e}");
        }
    }
}

/// Collects queued commands into batches and replicates up to `slots` of them at once. Waiting
/// for a free slot is what lets a batch grow under load.
async fn batch_loop(mut rx: mpsc::Receiver<Pending>, rep: Replicator, slots: usize) {
    let slots = Arc::new(Semaphore::new(slots.max(1)));
    let mut in_flight = tokio::task::JoinSet::new();
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        let permit: OwnedSemaphorePermit = slots.clone().acquire_owned().await.expect("semaphore never closed");
        let (mut count, mut bytes) = (first.commands.len(), first.size);
        let mut batch = vec![first];
        while count < MAX_BATCH_COMMANDS {
            match rx.try_recv() {
                Ok(p) if count + p.commands.len() > MAX_BATCH_COMMANDS || bytes + p.size > MAX_BATCH_BYTES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    count += p.commands.len();
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let rep = rep.clone();
        in_flight.spawn(async move {
            rep.run_batch(batch).await;
            drop(permit);
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

impl Replicator {
    async fn run_batch(&self, batch: Vec<Pending>) {
        let mut commands = Vec::with_capacity(batch.iter().map(|p| p.commands.len()).sum());
        let mut replies = Vec::with_capacity(batch.len());
        for p in batch {
            replies.push((p.commands.len(), p.reply));
            commands.extend(p.commands);
        }
        let count = commands.len();
        match self.submit(Proposal { commands: commands.into() }).await {
            Ok((index, result)) if result.results.len() == count => {
                let mut results = result.results.into_iter();
                for (n, reply) in replies {
                    let _ = reply.send(Ok((index, ProposalResult { results: results.by_ref().take(n).collect() })));
                }
            }
            Ok((_, result)) => {
                let e = StoreError::Internal(format!("{count} commands applied as {}", result.results.len()));
                replies.into_iter().for_each(|(_, r)| drop(r.send(Err(e.clone()))));
            }
            Err(e) => replies.into_iter().for_each(|(_, r)| drop(r.send(Err(e.clone())))),
        }
    }

    /// Waits until a leader is known, returning its id and peer URL.
    pub(crate) async fn leader(&self, deadline: Instant) -> StoreResult<(u64, String)> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(leader) = m.current_leader {
                    if let Some(node) = m.membership_config.membership().get_node(&leader) {
                        return Ok((leader, node.peer_urls.first().cloned().unwrap_or_default()));
                    }
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StoreError::Stopped),
                Err(_) => return Err(StoreError::NoLeader),
            }
        }
    }

    /// Replicates one entry, retrying only where the entry was certainly not appended.
    async fn submit(&self, proposal: Proposal) -> StoreResult<Committed> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let (leader, url) = self.leader(deadline).await?;
            if leader == self.id.0 {
                // Bounded: an entry a leader appended and then lost (it stepped down and the entry
                // was overwritten) may never be answered, and a batch slot must not wait forever.
                let written = tokio::time::timeout_at(deadline, self.raft.client_write(proposal.clone()))
                    .await
                    .map_err(|_| StoreError::Timeout)?;
                match written {
                    Ok(written) => return Ok((written.log_id.index, written.data)),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                    Err(RaftError::APIError(e)) => return Err(StoreError::Internal(e.to_string())),
                    Err(RaftError::Fatal(_)) => return Err(StoreError::Stopped),
                }
            } else {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match self.inner_forward(&url, &proposal, remaining).await {
                    Forwarded::Done(index, result) => {
                        // Apply locally before answering, so this member serves the write next.
                        let _ = self.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "forwarded").await;
                        return Ok((index, result));
                    }
                    Forwarded::Retry => {}
                    Forwarded::Fail(e) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            // The leader just changed or is unreachable: give the election a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn inner_forward(&self, url: &str, proposal: &Proposal, timeout: Duration) -> Forwarded {
        match self.network.propose(url, &proposal.commands, timeout).await {
            Ok(Ok((index, result))) => Forwarded::Done(index, result),
            Ok(Err(ForwardError::NotLeader)) => Forwarded::Retry,
            // A leader that stopped may have appended and replicated the entry before it did;
            // its successor can still commit it, so a retry could apply the command twice.
            Ok(Err(ForwardError::Stopped)) => Forwarded::Fail(StoreError::Timeout),
            Ok(Err(ForwardError::Failed(msg))) => Forwarded::Fail(StoreError::Internal(msg)),
            Err(status) if never_sent(&status) => Forwarded::Retry,
            // The leader may or may not have the entry: report the unknown outcome as etcd does.
            Err(_) => Forwarded::Fail(StoreError::Timeout),
        }
    }

    /// Returns once this member has applied everything committed before the call began.
    pub(crate) async fn read_barrier(&self) -> StoreResult<()> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let (leader, url) = self.leader(deadline).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if leader == self.id.0 {
                match tokio::time::timeout(remaining, self.raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err(RaftError::Fatal(_))) => return Err(StoreError::Stopped),
                    Ok(Err(_)) => {}
                    Err(_) => return Err(StoreError::Timeout),
                }
            } else {
                // Reads have no side effects: any failure is retried until the deadline.
                if let Ok(Ok(index)) = self.network.read_index(&url, remaining).await {
                    return match self.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "read").await {
                        Ok(_) => Ok(()),
                        Err(_) => Err(StoreError::Timeout),
                    };
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

enum Forwarded {
    Done(u64, ProposalResult),
    Retry,
    Fail(StoreError),
}

/// Whether a failed forward certainly never reached the leader (connection refused), so that
/// sending it again cannot apply it twice.
pub(crate) fn never_sent(status: &tonic::Status) -> bool {
    use std::error::Error;
    let mut source: Option<&(dyn Error + 'static)> = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}
