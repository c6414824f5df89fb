//! Store members as turmoil hosts: what each member is made of, what survives its crashes, and
//! the host software that runs it (the store, its peer transport and its etcd API).
//!
//! A member's host future owns everything the member runs: turmoil drops that future's runtime,
//! and with it every task, when the host crashes. What a crash must not lose lives in the
//! [`MemberSlot`] outside the host: the engine (whose unsynced writes the harness drops on a
//! crash), the lease clock's skew and the boot counter.
//!
//! Besides the initial members, a run with membership changes has *spare* slots: hosts that
//! exist from the start but run nothing until the harness admits them (once the cluster has
//! committed a `MemberAdd` of their peer URL). A spare then starts as `berth server
//! --initial-cluster-state existing` does: on an empty engine, never bootstrapping, with a
//! member id derived from its own peer URL (so a member added back is a new member).

use super::net::{self, CLIENT_PORT, PEER_PORT};
use super::RunOptions;
use berth_store::engine::{MemoryEngine, SharedEngine};
use berth_store::grpc::client_routes;
use berth_store::lease::LeaseClock;
use berth_store::member::{member_id_of, ClusterState, Identity, Member, MemberConfig, Parts, RaftTiming, ReadMode};
use berth_store::raft::network::PeerNetwork;
use berth_store::raft::transport::peer_server;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The cluster token of every simulated cluster (member ids derive from it and the URLs).
const TOKEN: &str = "berth-chaos";
/// Raft heartbeat in the simulation (the production default).
const HEARTBEAT_MS: u64 = 100;
/// Member `i`'s election timeout is `[BASE + STRIDE·i, BASE + STRIDE·i + 1)` ms: a window of
/// one millisecond, so openraft's unseeded `rand` has nothing to choose, and windows far enough
/// apart that two members rarely time out together.
const ELECTION_BASE_MS: u64 = 600;
const ELECTION_STRIDE_MS: u64 = 150;

/// The host name of member `index` (0-based): `m1`, `m2`, ...
pub fn host_name(index: usize) -> String {
    format!("m{}", index + 1)
}

/// The Raft timing of member `index`.
pub fn timing(index: usize) -> RaftTiming {
    let min = ELECTION_BASE_MS + ELECTION_STRIDE_MS * index as u64;
    RaftTiming { heartbeat_ms: HEARTBEAT_MS, election_min_ms: min, election_max_ms: min + 1 }
}

/// The largest election timeout of a cluster of `members` (what a new leader adds to every
/// lease on promotion, and what bounds an election).
pub fn max_election_ms(members: usize) -> u64 {
    timing(members.saturating_sub(1)).election_max_ms
}

/// Snapshot knobs for the simulation: small, so that a member down for a few seconds of
/// traffic falls behind the leader's retained log and must be sent a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotKnobs {
    pub snapshot_count: u64,
    pub catchup_entries: u64,
}

/// The static description of one member.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    pub index: usize,
    pub host: String,
    pub config: MemberConfig,
    pub identity: Identity,
    pub timing: RaftTiming,
}

/// The peer URL of member `index`.
pub fn peer_url(index: usize) -> String {
    format!("http://{}:{PEER_PORT}", host_name(index))
}

/// The specs of an initial cluster of `members`, followed by `spares` members that may be added
/// to it later (`m{members + 1}`, ...).
pub fn cluster_specs(members: usize, spares: usize, snapshots: SnapshotKnobs) -> Vec<MemberSpec> {
    let initial: Vec<(String, String)> = (0..members).map(|i| (host_name(i), peer_url(i))).collect();
    let config = |index: usize| {
        let host = host_name(index);
        let joins = index >= members;
        // A joining member is started with the members so far plus itself, as etcd's
        // `member add` prints them.
        let mut initial_cluster = initial.clone();
        if joins {
            initial_cluster.push((host.clone(), peer_url(index)));
        }
        MemberConfig {
            name: host.clone(),
            // Never touched: the engine is injected.
            data_dir: PathBuf::from(format!("/sim/{host}")),
            advertise_client_urls: vec![format!("http://{host}:{CLIENT_PORT}")],
            initial_advertise_peer_urls: vec![peer_url(index)],
            initial_cluster,
            initial_cluster_state: if joins { ClusterState::Existing } else { ClusterState::New },
            initial_cluster_token: TOKEN.to_string(),
            snapshot_count: snapshots.snapshot_count,
            snapshot_catchup_entries: snapshots.catchup_entries,
        }
    };
    let founding = Identity::of_new_cluster(&config(0)).expect("a generated cluster is consistent");
    (0..members + spares)
        .map(|index| {
            let config = config(index);
            let identity = if index < members {
                Identity::of_new_cluster(&config).expect("a generated cluster is consistent")
            } else {
                // What a joining `berth server` learns from the cluster it joins (its id) and
                // derives from its own flags (its member id), written to its fresh data dir.
                Identity {
                    name: config.name.clone(),
                    member_id: member_id_of(&config.initial_advertise_peer_urls, TOKEN).0,
                    cluster_id: founding.cluster_id,
                    token: TOKEN.to_string(),
                }
            };
            MemberSpec { index, host: config.name.clone(), config, identity, timing: timing(index) }
        })
        .collect()
}

/// A lease clock on tokio's (simulated) clock, shifted by a skew the nemesis changes.
pub struct SkewedClock {
    skew_ms: Arc<AtomicI64>,
}

impl LeaseClock for SkewedClock {
    fn now(&self) -> Instant {
        let now = Instant::now();
        let skew = self.skew_ms.load(Ordering::Relaxed);
        let by = Duration::from_millis(skew.unsigned_abs());
        if skew >= 0 {
            now.checked_add(by).unwrap_or(now)
        } else {
            now.checked_sub(by).unwrap_or(now)
        }
    }

    /// Simulated wall time (the simulation's epoch is fixed), so lease ids are the same in
    /// every replay and still move on across restarts.
    fn seed_millis(&self) -> u64 {
        turmoil::since_epoch().map_or(0, |d| d.as_millis() as u64)
    }
}

/// One member's state that outlives crashes of its host, shared by the harness and the host.
pub struct MemberSlot {
    pub spec: MemberSpec,
    pub engine: Arc<MemoryEngine>,
    /// The lease clock's skew in milliseconds.
    pub skew_ms: Arc<AtomicI64>,
    /// Starts so far (the invariant checker tells runs of one member apart by it).
    pub boots: AtomicU64,
    /// The running member, once it serves; taken by the harness before it crashes the host, so
    /// that nothing outside the host keeps the dead member's handles alive.
    pub running: Mutex<Option<Member>>,
    pub read_mode: ReadMode,
    pub batches_in_flight: usize,
    /// Whether the host may run its member: from the start for an initial member, once the
    /// cluster added it for a spare.
    admitted: watch::Sender<bool>,
}

impl MemberSlot {
    pub fn new(spec: MemberSpec, options: &RunOptions, admitted: bool) -> Arc<MemberSlot> {
        Arc::new(MemberSlot {
            spec,
            engine: Arc::new(MemoryEngine::new()),
            skew_ms: Arc::new(AtomicI64::new(0)),
            boots: AtomicU64::new(0),
            running: Mutex::new(None),
            read_mode: options.read_mode,
            batches_in_flight: options.batches_in_flight,
            admitted: watch::channel(admitted).0,
        })
    }

    /// Lets the host start its member (a spare the cluster just added); returns whether it was
    /// not admitted before.
    pub fn admit(&self) -> bool {
        !self.admitted.send_replace(true)
    }

    pub fn is_admitted(&self) -> bool {
        *self.admitted.borrow()
    }

    /// The running member, if it serves.
    pub fn member(&self) -> Option<Member> {
        self.running.lock().expect("slot lock").clone()
    }

    /// Forgets the running member (before a crash).
    pub fn clear(&self) {
        self.running.lock().expect("slot lock").take();
    }
}

/// The host software of a member: start the store on the slot's engine, serve the peer
/// transport, join or form the cluster, serve the etcd API, run until removed.
pub async fn run_member(slot: Arc<MemberSlot>) -> turmoil::Result {
    // A spare waits, bound to nothing (a peer dialing it is refused), until it is added.
    let mut admitted = slot.admitted.subscribe();
    if admitted.wait_for(|a| *a).await.is_err() {
        return Ok(());
    }
    slot.boots.fetch_add(1, Ordering::Relaxed);
    let spec = &slot.spec;
    let engine: SharedEngine = slot.engine.clone();
    let parts = Parts {
        engine,
        network: PeerNetwork::with_connector(Arc::new(net::peer_channel)),
        lease_clock: Arc::new(SkewedClock { skew_ms: slot.skew_ms.clone() }),
        timing: spec.timing,
        reads: slot.read_mode,
        batches_in_flight: slot.batches_in_flight,
    };
    let member = Member::start(&spec.config, spec.identity.clone(), parts).await?;
    // Every task of the member's servers is owned here and dies with the host.
    let mut servers = JoinSet::new();
    let peers = net::incoming(PEER_PORT).await?;
    servers.spawn(net::server().add_service(peer_server(member.clone())).serve_with_incoming(peers));
    member.bootstrap().await?;
    let clients = net::incoming(CLIENT_PORT).await?;
    servers.spawn(net::server().add_routes(client_routes(&member)).serve_with_incoming(clients));
    *slot.running.lock().expect("slot lock") = Some(member.clone());
    let outcome: turmoil::Result = tokio::select! {
        // As a production server does: a member removed from the cluster stops.
        _ = member.removed() => Ok(()),
        ended = servers.join_next() => Err(format!("{}: a server ended: {ended:?}", spec.host).into()),
    };
    slot.clear();
    servers.shutdown().await;
    member.shutdown().await;
    outcome
}
