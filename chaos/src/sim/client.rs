//! The simulated clients' view of the cluster: one lazily connected gRPC channel per member,
//! every call bounded by a deadline, and the conversions from etcd's wire types to the
//! checkers' history types.
//!
//! Outcome classification is deliberately conservative: a call counts as certainly not applied
//! ([`CallError::Failed`]) only on an answer that says so ("no leader": the member never found
//! a leader to propose to); anything else that is not an answer (deadline, broken connection,
//! "request timed out") may have taken effect ([`CallError::Unknown`]).

use crate::history::{Event, EventKind, Key, KeyValue, Tick, Value};
use crate::watch_check;
use berth_proto::etcdserverpb as pb;
use berth_proto::etcdserverpb::kv_client::KvClient;
use berth_proto::etcdserverpb::lease_client::LeaseClient;
use berth_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_proto::etcdserverpb::watch_client::WatchClient;
use berth_proto::mvccpb;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
        self.0.fetch_add(1, Ordering::Relaxed);
    }
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

/// One client's channels, one per member host, created on first use (inside the client's
/// simulated host, where the channel's worker task must live).
pub struct Cluster {
    hosts: Vec<String>,
    channels: Vec<Option<Channel>>,
}

impl Cluster {
    pub fn new(hosts: Vec<String>) -> Cluster {
        let channels = hosts.iter().map(|_| None).collect();
        Cluster { hosts, channels }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn host(&self, member: usize) -> &str {
        &self.hosts[member]
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
