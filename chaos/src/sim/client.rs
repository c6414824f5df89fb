//! The simulated clients' view of the cluster: one lazily connected gRPC channel per member,
//! every call bounded by a deadline, the current members to choose from (a [`Directory`] the
//! harness keeps, as a client library keeps its endpoints in sync with `MemberList`), and the
//! conversions from etcd's wire types to the checkers' history types.
//!
//! Outcome classification is deliberately conservative: a call counts as certainly not applied
//! ([`CallError::Failed`]) only on an answer that says so ("no leader": the member never found
//! a leader to propose to); anything else that is not an answer (deadline, broken connection,
//! "request timed out") may have taken effect ([`CallError::Unknown`]).

use crate::history::{Event, EventKind, Key, KeyValue, Tick, Value};
use crate::watch_check;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::cluster_client::ClusterClient;
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::lease_client::LeaseClient;
use berth_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_proto::etcdserverpb::watch_client::WatchClient;
use berth_proto::mvccpb;
use rand::rngs::StdRng;
use rand::Rng;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// The simulation's logical clock: the index of the current simulation step (one step is one
/// millisecond). Every host sees the same value during a step, and a step runs entirely after
/// the previous one, so an event at a smaller tick really happened before one at a larger tick;
/// events at the same tick are treated as concurrent by the checkers.
#[derive(Clone, Debug, Default)]
pub struct SimClock(Arc<AtomicU64>);

impl SimClock {
    pub fn now(&self) -> Tick {
        self.0.load(Ordering::Relaxed)
    }

    /// Called by the harness after every step.
    pub fn advance(&self) {
        let now = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        LOG_TICK.store(now, Ordering::Relaxed);
    }
}

/// The tick of the latest step of any simulation in this process, for stamping log lines with
/// the checkers' time (turmoil's host timers do not match it). Only meaningful while one
/// simulation runs, as in the `berth-chaos` binary.
static LOG_TICK: AtomicU64 = AtomicU64::new(0);

/// See [`LOG_TICK`].
pub fn log_tick() -> Tick {
    LOG_TICK.load(Ordering::Relaxed)
}

/// Why a call has no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Certainly not applied.
    Failed(String),
    /// May or may not have been applied (now or later).
    Unknown(String),
}

impl CallError {
    fn from_status(status: tonic::Status) -> CallError {
        // The member's own answer when it found no leader before proposing anything.
        if status.code() == tonic::Code::Unavailable && status.message() == "etcdserver: no leader" {
            CallError::Failed(status.message().to_string())
        } else {
            CallError::Unknown(format!("{:?}: {}", status.code(), status.message()))
        }
    }
}

/// Runs `call` with a deadline: the client-side bound every simulated RPC needs, since a stalled
/// turmoil connection never fails by itself.
pub async fn with_deadline<T>(
    deadline: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CallError::from_status(status)),
        Err(_) => Err(CallError::Unknown("deadline exceeded".to_string())),
    }
}

/// Which member hosts (by index) are in the cluster now, shared by the harness (which updates
/// it from the committed membership) and the clients (which pick the members they talk to from
/// it). A client keeps talking to a member that left until that member fails it, as a real
/// client would.
#[derive(Debug)]
pub struct Directory(Mutex<Vec<usize>>);

impl Directory {
    pub fn new(members: Vec<usize>) -> Arc<Directory> {
        Arc::new(Directory(Mutex::new(members)))
    }

    pub fn set(&self, members: Vec<usize>) {
        *self.0.lock().expect("directory lock") = members;
    }

    /// The current members, in order.
    pub fn members(&self) -> Vec<usize> {
        self.0.lock().expect("directory lock").clone()
    }
}

/// One client's channels, one per member host (every host that is or may become a member),
/// created on first use (inside the client's simulated host, where the channel's worker task
/// must live).
pub struct Cluster {
    hosts: Vec<String>,
    channels: Vec<Option<Channel>>,
    directory: Arc<Directory>,
}

impl Cluster {
    pub fn new(hosts: Vec<String>, directory: Arc<Directory>) -> Cluster {
        let channels = hosts.iter().map(|_| None).collect();
        Cluster { hosts, channels, directory }
    }

    /// The current members (indexes of [`host`](Self::host)).
    pub fn members(&self) -> Vec<usize> {
        self.directory.members()
    }

    pub fn host(&self, member: usize) -> &str {
        &self.hosts[member]
    }

    /// The index of the host named `host`, if it is one of the members'.
    pub fn index_of(&self, host: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h == host)
    }

    /// Client `client`'s first member.
    pub fn first(&self, client: u64) -> usize {
        let members = self.members();
        members.get(client as usize % members.len().max(1)).copied().unwrap_or(0)
    }

    /// A current member drawn at random.
    pub fn any(&self, rng: &mut StdRng) -> usize {
        let members = self.members();
        match members.len() {
            0 => 0,
            n => members[rng.gen_range(0..n)],
        }
    }

    /// A current member other than `from` drawn at random (the one after `from` if `from` is
    /// the only one). With the initial membership `0..n` this draws exactly what
    /// `(from + 1 + rng.gen_range(0..n - 1)) % n` does.
    pub fn other(&self, from: usize, rng: &mut StdRng) -> usize {
        let members = self.members();
        match (members.len(), members.iter().position(|m| *m == from)) {
            (0, _) => from,
            (1, _) => members[0],
            (n, Some(p)) => members[(p + 1 + rng.gen_range(0..n - 1)) % n],
            (n, None) => members[rng.gen_range(0..n)],
        }
    }

    /// The current member after `from` in order (the first if `from` is no longer one).
    pub fn after(&self, from: usize) -> usize {
        let members = self.members();
        let next = members.iter().copied().find(|m| *m > from);
        next.or(members.first().copied()).unwrap_or(from)
    }

    fn channel(&mut self, member: usize) -> Channel {
        let host = &self.hosts[member];
        self.channels[member].get_or_insert_with(|| super::net::client_channel(host)).clone()
    }

    /// Drops the channel to `member`, so that the next call opens a new connection (after a
    /// call that timed out, the old one may be stalled).
    pub fn reset(&mut self, member: usize) {
        self.channels[member] = None;
    }

    pub fn kv(&mut self, member: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(member))
    }

    pub fn watch(&mut self, member: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(member))
    }

    pub fn lease(&mut self, member: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(member))
    }

    pub fn maintenance(&mut self, member: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(member))
    }

    pub fn cluster(&mut self, member: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel(member))
    }
}

/// The header revision of a response (0 if the header is missing, which no member sends).
pub fn revision(header: &Option<pb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

pub fn key_value(kv: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: Key(kv.key.clone()),
        value: Value(kv.value.clone()),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

pub fn event(e: &mvccpb::Event) -> Event {
    let kind = if e.r#type == mvccpb::event::EventType::Delete as i32 { EventKind::Delete } else { EventKind::Put };
    Event {
        kind,
        kv: e.kv.as_ref().map(key_value).unwrap_or_else(empty_kv),
        prev_kv: e.prev_kv.as_ref().map(key_value),
    }
}

fn empty_kv() -> KeyValue {
    KeyValue {
        key: Key(Vec::new()),
        value: Value(Vec::new()),
        create_revision: 0,
        mod_revision: 0,
        version: 0,
        lease: 0,
    }
}

pub fn watch_response(r: &pb::WatchResponse) -> watch_check::WatchResponse {
    watch_check::WatchResponse {
        header_revision: revision(&r.header),
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        fragment: r.fragment,
        events: r.events.iter().map(event).collect(),
    }
}

/// The store's own event as the checkers' type (for the true history read from a member).
pub fn store_event(e: &berth_store::mvcc::Event) -> Event {
    let kv = |kv: &berth_store::mvcc::KeyValue| KeyValue {
        key: Key(kv.key.clone()),
        value: Value(kv.value.clone()),
        create_revision: kv.create_revision.0,
        mod_revision: kv.mod_revision.0,
        version: kv.version,
        lease: kv.lease.map_or(0, |l| l.0),
    };
    let kind = match e.kind {
        berth_store::mvcc::EventKind::Put => EventKind::Put,
        berth_store::mvcc::EventKind::Delete => EventKind::Delete,
    };
    Event { kind, kv: kv(&e.kv), prev_kv: e.prev_kv.as_ref().map(kv) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn with_the_initial_membership_members_are_drawn_as_before() {
        // The workloads drew `(from + 1 + rng.gen_range(0..n - 1)) % n` and
        // `rng.gen_range(0..n)` before membership changes existed; the directory must draw the
        // same, so that scenarios without membership changes replay as they did.
        let hosts: Vec<String> = (1..=5).map(|i| format!("m{i}")).collect();
        let cluster = Cluster::new(hosts, Directory::new((0..5).collect()));
        let (mut a, mut b) = (StdRng::seed_from_u64(9), StdRng::seed_from_u64(9));
        for from in (0..5).cycle().take(50) {
            assert_eq!(cluster.other(from, &mut a), (from + 1 + b.gen_range(0..4)) % 5);
            assert_eq!(cluster.any(&mut a), b.gen_range(0..5));
            assert_eq!(cluster.after(from), (from + 1) % 5);
        }
        assert_eq!(cluster.first(7), 2);
    }

    #[test]
    fn members_are_drawn_from_the_current_membership() {
        let hosts: Vec<String> = (1..=5).map(|i| format!("m{i}")).collect();
        let directory = Directory::new(vec![0, 2, 4]);
        let cluster = Cluster::new(hosts, directory.clone());
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            assert!([2, 4].contains(&cluster.other(0, &mut rng)));
            // A member that left: any current one.
            assert!([0, 2, 4].contains(&cluster.other(1, &mut rng)));
            assert!([0, 2, 4].contains(&cluster.any(&mut rng)));
        }
        assert_eq!(cluster.after(4), 0);
        assert_eq!(cluster.after(1), 2);
        directory.set(vec![3]);
        assert_eq!(cluster.other(3, &mut rng), 3, "the only member");
        assert_eq!(cluster.first(5), 3);
        assert_eq!(cluster.index_of("m4"), Some(3));
    }
}
